//! What a run with a `lora:` section does differently: the model it trains (the frozen base
//! of `model.path` plus adapters that start fresh, from `lora.init_from`, or from the
//! checkpoint being resumed), what a checkpoint holds (the adapter in PEFT's layout), and the
//! dropout state a resume restores. The optimiser and the checkpoint code see only the
//! trainable tensors, as in a full run.
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};

use crate::config::TrainConfig;
use crate::model::lora::{peft, LoraConfig, LoraSetup};
use crate::model::{CausalLm, ModelConfig};

/// Loads the model a run trains: every weight trainable (no `lora:` section; from the
/// checkpoint when resuming), or the base with adapters.
pub fn load_model(cfg: &TrainConfig, resume_from: Option<&Path>, device: &Device, dtype: DType) -> Result<CausalLm> {
    let Some(lora) = &cfg.lora else {
        let dir = resume_from.unwrap_or(&cfg.model.path);
        return CausalLm::from_pretrained(dir, device, dtype).with_context(|| format!("loading the model from {}", dir.display()));
    };
    let setup = setup(cfg, lora, resume_from)?;
    CausalLm::from_pretrained_lora(&cfg.model.path, device, dtype, &setup)
        .with_context(|| format!("loading the base model {} for LoRA", cfg.model.path.display()))
}

/// The adapters' starting point and settings: a resumed checkpoint's adapter, else
/// `lora.init_from`, else PEFT's initialisation seeded by `run.seed`.
fn setup(cfg: &TrainConfig, lora: &LoraConfig, resume_from: Option<&Path>) -> Result<LoraSetup> {
    let model_config = ModelConfig::from_file(&cfg.model.path.join("config.json"))?;
    let (adapter, field) = match (resume_from, &lora.init_from) {
        (Some(dir), _) => (Some(peft::read(dir).with_context(|| format!("the checkpoint {} holds no readable adapter", dir.display()))?), "the resumed checkpoint"),
        (None, Some(dir)) => (Some(peft::read(dir).context("lora.init_from")?), "lora.init_from"),
        (None, None) => (None, ""),
    };
    let settings = lora
        .resolve(adapter.as_ref().map(|a| &a.settings), &model_config)
        .with_context(|| if field.is_empty() { "lora".to_string() } else { format!("lora: the section disagrees with the adapter of {field}") })?;
    Ok(LoraSetup { settings, adapter, seed: cfg.run.seed })
}

/// Writes the model part of a checkpoint: the adapter in PEFT's layout with a LoRA run, the
/// whole model in Hugging Face layout otherwise.
pub fn save_model(cfg: &TrainConfig, model: &CausalLm, dir: &Path) -> Result<()> {
    if model.lora_settings().is_some() {
        return model.save_adapter(dir, cfg.checkpoint.dtype.to_candle(), Some(&cfg.model.path), Some(&cfg.model.path));
    }
    let save = crate::model::SaveOptions {
        dtype: cfg.checkpoint.dtype.to_candle(),
        max_shard_bytes: cfg.checkpoint.max_shard_bytes.get(),
        assets_from: Some(cfg.model.path.clone()),
    };
    model.save_pretrained(dir, &save)
}

/// The loop's random state for `TrainerState::rng`: the seed, and how many training forwards
/// drew adapter dropout masks.
pub fn rng_state(cfg: &TrainConfig, model: &CausalLm) -> serde_json::Value {
    serde_json::json!({ "seed": cfg.run.seed, "lora_dropout_draws": model.lora_dropout_draws() })
}

/// Restores what `rng_state` saved.
pub fn restore_rng(model: &CausalLm, rng: &serde_json::Value) {
    model.set_lora_dropout_draws(rng.get("lora_dropout_draws").and_then(|v| v.as_u64()).unwrap_or(0));
}

/// One line for the start of a run: what trains.
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
