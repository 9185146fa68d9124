//! What a run needs before its first step: the device, the base model (created by `cpt init`
//! when the config asks for it), the CPU thread count, the tokenized data and its sampler,
//! and the start line.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use crate::config::TrainConfig;
use crate::data::prepare::{prepare, PrepareOptions, PreparedData};
use crate::data::sampler::Sampler;
use crate::dist::{Launch, World};
use crate::kernels::device_info;
use crate::model::causal_lm::CausalLm;
use crate::model::init::{init_model_dir, preset, InitSpec, SizeOverrides, TokenizerSource};
use crate::model::Architecture;
use crate::vocab::corpus::{expand_paths, read_documents};

/// The device of `run.device`; on GPUs `cuda:LOCAL_RANK` (one rank per device; 0 alone).
pub fn select_device(cfg: &TrainConfig, launch: &Launch) -> Result<Device> {
    use crate::config::schema::DeviceKind;
    let name = match cfg.run.device {
        DeviceKind::Cpu => "cpu".to_string(),
        DeviceKind::Cuda => format!("cuda:{}", launch.local_rank),
    };
    device_info::select(&name).context("run.device")
}

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
    let parameters = crate::model::params::parameter_specs(&config).iter().map(|(_, shape, _)| shape.iter().product::<usize>()).sum();
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

/// Tokenizes the configured sources (reusing cached shards) and opens the sampler. With
/// several ranks only rank 0 tokenizes; the others wait for the cache.
pub fn open_sampler(cfg: &TrainConfig, model: &CausalLm, world: &World) -> Result<Sampler> {
    let data = &cfg.data;
    let tokenizer = data.open_tokenizer(&cfg.model.path)?;
    if tokenizer.vocab_size() > model.config().vocab_size {
        bail!(
            "the tokenizer {} has {} tokens but the model's vocab_size is {}",
            tokenizer.path().display(),
            tokenizer.vocab_size(),
            model.config().vocab_size
        );
    }
    let cache_dir = data.cache_dir.clone().unwrap_or_else(|| cfg.run.out_dir.join("data"));
    let opts = PrepareOptions { cache_dir: cache_dir.clone(), progress: cfg.logging.progress_bar && world.is_main(), force: false };
    world.main_first(|| prepare(data, &tokenizer, &opts).map(|_| ()))?;
    let prepared = PreparedData::open(&cache_dir, data, Some(&tokenizer))?;
    Sampler::new(data, prepared, cfg.batch.seq_len, cfg.run.seed)
}

/// 6N + 12 L H Q T per trained token (PaLM appendix B), N without the input embeddings.
pub fn flops_per_token(model: &CausalLm, seq_len: usize) -> f64 {
    let c = model.config();
    let embed = (c.vocab_size * c.hidden_size) as f64;
    let tied_head = if c.tie_word_embeddings { embed } else { 0.0 };
    let n = model.num_parameters() as f64 - embed + tied_head;
    6.0 * n + 12.0 * (c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq_len) as f64
}

/// The line a run starts with: model, size, device, dtypes, kernels, budget, run directory
/// (and with several ranks, how a step is split over them).
pub fn print_start(cfg: &TrainConfig, model: &CausalLm, device: &Device, dtype: DType, world: &World) {
    let device_line = device_info::describe(device).unwrap_or_else(|e| format!("{device:?} ({e})"));
    if world.size() > 1 {
        eprintln!(
            "data parallel: {} ranks x {} micro-batch(es) of {} per step, ZeRO-{}",
            world.size(),
            cfg.grad_accum() as usize / world.size(),
            cfg.batch.micro_batch,
            cfg.parallel.zero.number()
        );
    }
    eprintln!(
        "cpt train: {} ({:.1}M parameters) on {}, compute {:?}, {}, kernels {}; {} steps x {} tokens -> {}",
        cfg.model.path.display(),
        model.num_parameters() as f64 / 1e6,
        device_line,
        dtype,
        super::trained_model::describe(model, dtype),
        model.kernels().describe(),
        cfg.total_steps(),
        cfg.tokens_per_step(),
        cfg.run.out_dir.display()
    );
}
