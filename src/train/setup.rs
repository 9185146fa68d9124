//! What a run needs before its first step and around its loop: the base model (created by
//! `cpt init` when the config asks for it), the freeze masks of a post-extension warm-up.
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{FreezeConfig, FreezeTarget, TrainConfig};
use crate::model::causal_lm::CausalLm;
use crate::model::init::{init_model_dir, preset, InitSpec, SizeOverrides, TokenizerSource};
use crate::model::Architecture;
use crate::train::optim::UpdateMask;

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

/// Text files to train a tokenizer on: `.txt`/`.md` files as they are, and the `text` field
/// of `.jsonl` files (written to one plain file in `scratch`), from a file or a directory tree.
fn tokenizer_training_files(corpus: &Path, scratch: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    collect_files(corpus, &mut found)?;
    found.sort();
    let mut plain = Vec::new();
    let extracted = scratch.join("jsonl_text.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&extracted)?);
    let mut extracted_any = false;
    for file in found {
        match file.extension().and_then(|e| e.to_str()) {
            Some("txt" | "md") => plain.push(file),
            Some("jsonl") => {
                let reader = std::io::BufReader::new(std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?);
                for (i, line) in reader.lines().enumerate() {
                    let line = line.with_context(|| format!("{}:{}", file.display(), i + 1))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let value: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("{}:{}: not JSON", file.display(), i + 1))?;
                    if let Some(text) = value.get("text").and_then(|t| t.as_str()) {
                        writeln!(out, "{text}")?;
                        extracted_any = true;
                    }
                }
            }
            _ => {}
        }
    }
    out.flush()?;
    if extracted_any {
        plain.push(extracted);
    }
    if plain.is_empty() {
        bail!("{}: no .txt, .md or .jsonl files to train a tokenizer on", corpus.display());
    }
    Ok(plain)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path).with_context(|| format!("{} is neither a file nor a readable directory", path.display()))?;
    for entry in entries {
        collect_files(&entry?.path(), out)?;
    }
    Ok(())
}

/// The optimiser masks of the freeze warm-up: only the embeddings and lm_head train, or only
/// the rows of the vocabulary added by `cpt vocab extend`.
pub fn freeze_masks(cfg: &TrainConfig, model: &CausalLm, freeze: &FreezeConfig) -> Result<Vec<(String, UpdateMask)>> {
    let is_embedding = |name: &str| name == "model.embed_tokens.weight" || name == "lm_head.weight";
    let params = model.named_parameters();
    let old_vocab = match freeze.train_only {
        FreezeTarget::Embeddings => None,
        FreezeTarget::NewVocabRows => Some(freeze_old_vocab_size(cfg, freeze)?),
    };
    params
        .iter()
        .map(|(name, var)| {
            let mask = if !is_embedding(name) {
                UpdateMask::Frozen
            } else if let Some(old) = old_vocab {
                let rows = var.dims()[0];
                if old >= rows {
                    bail!("freeze.train_only: new_vocab_rows, but `{name}` has {rows} rows and the old vocabulary {old}: no new rows to train");
                }
                UpdateMask::Rows((old as u32..rows as u32).collect())
            } else {
                UpdateMask::All
            };
            Ok((name.clone(), mask))
        })
        .collect()
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
