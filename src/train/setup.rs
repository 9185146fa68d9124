//! What a run needs before its first step and around its loop: the base model (created by
//! `cpt init` when the config asks for it), the freeze masks of a post-extension warm-up.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{FreezeConfig, FreezeTarget, TrainConfig};
use crate::model::causal_lm::CausalLm;
use crate::model::init::{init_model_dir, preset, InitSpec, SizeOverrides, TokenizerSource};
use crate::model::Architecture;
use crate::train::optim::Optimizer;
use crate::vocab::corpus::{expand_paths, read_documents};

/// Makes sure `model.path` holds a model; creates it from `model.init` when it is missing.
pub fn ensure_model(cfg: &TrainConfig) -> Result<()> {
    let path = &cfg.model.path;
    if path.join("config.json").is_file() {
        return Ok(());
    }
    let Some(init) = &cfg.model.init else {
        bail!(
            "model.path: {} holds no config.json; point it at a Hugging Face model directory, or add model.init to create one",
            path.display()
        );
    };
    let preset = preset(&init.preset).context("model.init.preset")?;
    let arch = Architecture::parse(init.arch.as_deref().unwrap_or("llama")).context("model.init.arch")?;
    let Some(corpus) = &init.tokenizer_corpus else {
        bail!("model.init.tokenizer_corpus: needed to train the new model's tokenizer");
    };
    let scratch = tempfile::tempdir().context("creating a scratch directory for tokenizer training")?;
    let files = tokenizer_training_files(corpus, scratch.path()).context("model.init.tokenizer_corpus")?;
    eprintln!("model.path {} is missing: creating a `{}` {} model (cpt init)", path.display(), init.preset, arch.hf_class());
    let spec = InitSpec {
        arch,
        preset,
        sizes: SizeOverrides::default(),
        tokenizer: TokenizerSource::Train { files, vocab_size: init.vocab_size.unwrap_or(preset.default_vocab_size) },
        vocab_size: None,
        out: path.clone(),
        seed: cfg.run.seed,
        dtype: candle_core::DType::F32,
        force: false,
    };
    init_model_dir(&spec)?;
    Ok(())
}

/// Chooses candle's CPU thread count from the model's size (see `util::threads`).
pub fn configure_threads(cfg: &TrainConfig) -> Result<()> {
    let config = crate::model::config::ModelConfig::from_file(&cfg.model.path.join("config.json"))?;
    let parameters = crate::model::causal_lm::parameter_specs(&config).iter().map(|(_, shape, _)| shape.iter().product::<usize>()).sum();
    crate::util::threads::configure_cpu_threads(parameters, cfg.run.cpu_threads);
    Ok(())
}

/// The text to train a tokenizer on, from a file or directory of `.jsonl` (`text` field) and
/// `.txt` files (read as `cpt vocab` reads corpora), written to one plain file in `scratch`.
fn tokenizer_training_files(corpus: &Path, scratch: &Path) -> Result<Vec<PathBuf>> {
    let files = expand_paths(&[corpus.to_path_buf()])?;
    let docs = read_documents(&files)?;
    if docs.is_empty() {
        bail!("{}: no documents to train a tokenizer on", corpus.display());
    }
    let plain = scratch.join("tokenizer_corpus.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&plain)?);
    for doc in &docs {
        writeln!(out, "{}", doc.text)?;
    }
    out.flush()?;
    Ok(vec![plain])
}

/// Starts the freeze warm-up: only the embeddings and lm_head train, or only the rows of
/// the vocabulary added by `cpt vocab extend`.
pub fn start_freeze(cfg: &TrainConfig, model: &CausalLm, optimizer: &mut Optimizer, freeze: &FreezeConfig) -> Result<()> {
    let new_rows: Vec<u32> = match freeze.train_only {
        FreezeTarget::Embeddings => Vec::new(),
        FreezeTarget::NewVocabRows => {
            let old = freeze_old_vocab_size(cfg, freeze)?;
            let rows = model.config().vocab_size;
            if old >= rows {
                bail!("freeze.train_only: new_vocab_rows, but the model has {rows} vocabulary rows and the old vocabulary {old}: no new rows to train");
            }
            (old as u32..rows as u32).collect()
        }
    };
    if model.lora_settings().is_some() {
        // With LoRA the adapters keep training; the saved modules train only their new rows.
        return optimizer.restrict_vocab_rows(&new_rows).context("freeze: with lora, list embed_tokens and/or lm_head in lora.modules_to_save");
    }
    optimizer.freeze_for(freeze.train_only, &new_rows)
}

fn freeze_old_vocab_size(cfg: &TrainConfig, freeze: &FreezeConfig) -> Result<usize> {
    if let Some(n) = freeze.old_vocab_size {
        return Ok(n);
    }
    crate::vocab::extend::recorded_old_id_space(&cfg.model.path)?.with_context(|| {
        format!(
            "freeze.old_vocab_size is not set and {} records no vocabulary extension (written by `cpt vocab extend`)",
            cfg.model.path.display()
        )
    })
}
