//! `cpt plan --config FILE --devices N --device-memory 80GiB`: predicted memory per device
//! for ZeRO 0, 1 and 3, with and without recomputation, term by term.
use std::path::PathBuf;

use anyhow::{Context, Result};

use cpt::config::count::parse_count;
use cpt::config::load_config;
use cpt::config::schema::{DeviceKind, OptimKind};
use cpt::dist::plan::{plan_all, render, LoraCounts, PlanInput, GIB};
use cpt::model::lora::{targets, LoraConfig};
use cpt::model::init::{build_config, preset, SizeOverrides};
use cpt::model::{Architecture, ModelConfig};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  cpt plan --config configs/synE.yaml --devices 8 --device-memory 80GiB\n  cpt plan --config configs/tiny.yaml --devices 2 --device-memory 4GiB --set batch.micro_batch=16")]
pub struct PlanArgs {
    /// The training YAML (model, batch, kernels, optim, parallel).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config value: `path.to.key=value`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Data-parallel ranks (one per device).
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Memory of one device, e.g. `80GiB`, `24GiB`.
    #[arg(long, value_parser = parse_memory)]
    pub device_memory: u64,
    /// Bytes the runtime takes before any tensor (default: 0.5 GiB on a GPU for the CUDA
    /// context and cuBLAS workspaces; 0.05 GiB on a CPU).
    #[arg(long, value_parser = parse_memory)]
    pub runtime: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_memory(text: &str) -> std::result::Result<u64, String> {
    parse_count(text)
}

pub fn run(args: PlanArgs) -> Result<()> {
    let cfg = load_config(&args.config, &args.set)?;
    let model = model_config(&cfg)?;
    let lora = cfg.lora.as_ref().map(|l| lora_counts(l, &model)).transpose().context("lora")?;
    let gpu = cfg.run.device == DeviceKind::Cuda;
    let moments = match cfg.optim.kind {
        OptimKind::Adamw => 2,
        OptimKind::Sgd if cfg.optim.momentum != 0.0 => 1,
        OptimKind::Sgd => 0,
    };
    let input = PlanInput {
        model,
        micro_batch: cfg.batch.micro_batch,
        seq_len: cfg.batch.seq_len,
        grad_accum: cfg.grad_accum() as usize,
        compute: cfg.run.dtype.to_candle(),
        kernels: cfg.kernels,
        moments,
        devices: args.devices.max(1),
        device_memory: args.device_memory as f64,
        runtime_bytes: args.runtime.map(|b| b as f64).unwrap_or(if gpu { 0.5 * GIB } else { 0.05 * GIB }),
        bucket_elems: cfg.parallel.bucket_elems(),
        lora,
    };
    let plans = plan_all(&input);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plans)?);
    } else {
        print!("{}", render(&input, &plans));
    }
    Ok(())
}

/// What the `lora:` section trains on `model`: adapters on its resolved target layers and
/// the saved modules.
fn lora_counts(lora: &LoraConfig, model: &ModelConfig) -> Result<LoraCounts> {
    let settings = lora.resolve(None, model)?;
    let sites = targets::resolve(model, &settings.targets)?;
    let adapter_sizes: Vec<f64> = sites
        .iter()
        .flat_map(|site| {
            let (out, inp) = site.kind.shape(model);
            [(settings.rank * inp) as f64, (settings.rank * out) as f64]
        })
        .collect();
    let saved: Vec<f64> =
        settings.modules_to_save.iter().map(|_| (model.vocab_size * model.hidden_size) as f64).collect();
    // A fold from +0.0: an empty float `sum` is -0.0, which would print as "-0.0M".
    let total = |v: &[f64]| v.iter().fold(0.0, |a, b| a + b);
    Ok(LoraCounts {
        adapters: total(&adapter_sizes),
        saved: total(&saved),
        largest: adapter_sizes.iter().chain(&saved).copied().fold(0.0, f64::max),
    })
}

/// The model's `config.json`, or the one `model.init` would create.
fn model_config(cfg: &cpt::config::TrainConfig) -> Result<ModelConfig> {
    let path = cfg.model.path.join("config.json");
    if path.is_file() {
        return ModelConfig::from_file(&path);
    }
    let init = cfg.model.init.as_ref().with_context(|| {
        format!("{} does not exist and the config has no model.init to say what it would be", path.display())
    })?;
    let preset = preset(&init.preset).context("model.init.preset")?;
    let arch = Architecture::parse(init.arch.as_deref().unwrap_or("llama")).context("model.init.arch")?;
    let vocab = init.vocab_size.unwrap_or(preset.default_vocab_size);
    build_config(arch, &preset, &SizeOverrides::default(), vocab, None, None)
}
