//! The model a run trains, as the loop sees it: how it loads, which tensors train, what a
//! checkpoint holds of it and what random state it carries between steps. A `lora:` section
//! changes what these return (a frozen base with adapters that start fresh, from
//! `lora.init_from` or from the resumed checkpoint; a PEFT adapter in each checkpoint; the
//! adapters' dropout draws), never the loop itself.
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};

use crate::config::TrainConfig;
use crate::model::lora::{peft, LoraConfig, LoraSetup};
use crate::model::{CausalLm, ModelConfig, SaveOptions};

/// Key of the dropout draw counter in `TrainerState::rng` (LoRA runs only).
const DROPOUT_DRAWS_KEY: &str = "lora_dropout_draws";

/// The model of a run: every weight an f32 master (from the checkpoint when resuming), or
/// the frozen base of `model.path` with adapters.
pub fn load(cfg: &TrainConfig, resume_from: Option<&Path>, device: &Device, dtype: DType) -> Result<CausalLm> {
    let Some(lora) = &cfg.lora else {
        let dir = resume_from.unwrap_or(&cfg.model.path);
        return CausalLm::from_pretrained(dir, device, dtype).with_context(|| format!("loading the model from {}", dir.display()));
    };
    let setup = lora_setup(cfg, lora, resume_from)?;
    CausalLm::from_pretrained_lora(&cfg.model.path, device, dtype, &setup)
        .with_context(|| format!("loading the base model {} for LoRA", cfg.model.path.display()))
}

/// The parameters the optimiser updates and the backward collects gradients for: the model's
/// f32 master weights (all of them, or the adapters and saved modules with LoRA; a `freeze:`
/// phase masks some inside the optimiser).
pub fn trainable(model: &CausalLm) -> &[(String, Var)] {
    model.named_parameters()
}

/// Writes the model part of a checkpoint: the whole model in Hugging Face layout, or the
/// adapter in PEFT's layout (with the base's tokenizer files) for a LoRA run. `weights`: the
/// trainable tensors to write instead of the model's own (the f32 masters gathered from the
/// ranks when the optimiser state is sharded).
pub fn save(cfg: &TrainConfig, model: &CausalLm, dir: &Path, weights: Option<&[(String, Tensor)]>) -> Result<()> {
    let dtype = cfg.checkpoint.dtype.to_candle();
    if model.lora_settings().is_some() {
        let (base, assets) = (Some(cfg.model.path.as_path()), Some(cfg.model.path.as_path()));
        return match weights {
            Some(w) => model.save_adapter_tensors(dir, dtype, w, base, assets),
            None => model.save_adapter(dir, dtype, base, assets),
        };
    }
    let save = SaveOptions { dtype, max_shard_bytes: cfg.checkpoint.max_shard_bytes.get(), assets_from: Some(cfg.model.path.clone()) };
    match weights {
        Some(w) => model.save_pretrained_tensors(dir, w, &save),
        None => model.save_pretrained(dir, &save),
    }
}

/// The random state a checkpoint keeps (`TrainerState::rng`): the seed, and for a LoRA run how
/// many training forwards drew adapter dropout masks. Shuffles live in the sampler's state.
pub fn random_state(cfg: &TrainConfig, model: &CausalLm) -> serde_json::Value {
    let mut rng = serde_json::json!({ "seed": cfg.run.seed });
    if model.lora_settings().is_some() {
        rng[DROPOUT_DRAWS_KEY] = model.lora_dropout_draws().into();
    }
    rng
}

/// Puts back what `random_state` saved.
pub fn restore_random_state(model: &CausalLm, rng: &serde_json::Value) -> Result<()> {
    if model.lora_settings().is_none() {
        return Ok(());
    }
    let draws = rng
        .get(DROPOUT_DRAWS_KEY)
        .and_then(|v| v.as_u64())
        .with_context(|| format!("trainer_state: rng.{DROPOUT_DRAWS_KEY} is missing (not a checkpoint of a LoRA run?)"))?;
    model.set_lora_dropout_draws(draws);
    Ok(())
}

/// What trains, for the line a run starts with.
pub fn describe(model: &CausalLm, dtype: DType) -> String {
    match model.lora_settings() {
        None => "master weights f32".to_string(),
        Some(s) => format!(
            "LoRA r {} alpha {} ({:.2}M trainable of {:.1}M; base frozen in {dtype:?})",
            s.rank,
            s.alpha,
            model.num_trainable() as f64 / 1e6,
            model.num_parameters() as f64 / 1e6
        ),
    }
}

/// The adapters' starting point and settings: a resumed checkpoint's adapter, else
/// `lora.init_from`, else PEFT's initialisation seeded by `run.seed`.
fn lora_setup(cfg: &TrainConfig, lora: &LoraConfig, resume_from: Option<&Path>) -> Result<LoraSetup> {
    let model_config = ModelConfig::from_file(&cfg.model.path.join("config.json"))?;
    let (adapter, field) = match (resume_from, &lora.init_from) {
        (Some(dir), _) => (
            Some(peft::read(dir).with_context(|| format!("the checkpoint {} holds no readable adapter", dir.display()))?),
            "the resumed checkpoint",
        ),
        (None, Some(dir)) => (Some(peft::read(dir).context("lora.init_from")?), "lora.init_from"),
        (None, None) => (None, ""),
    };
    let settings = lora.resolve(adapter.as_ref().map(|a| &a.settings), &model_config).with_context(|| {
        if field.is_empty() {
            "lora".to_string()
        } else {
            format!("lora: the section disagrees with the adapter of {field}")
        }
    })?;
    Ok(LoraSetup { settings, adapter, seed: cfg.run.seed })
}
