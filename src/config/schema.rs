//! The training config schema: one struct per YAML section. Every struct rejects unknown
//! keys; every section except `model`, `data` and `train` has defaults.
use super::Count;
use crate::data::config::DataConfig;
pub use crate::dist::config::ParallelConfig;
use crate::kernels::KernelSettings;
use crate::model::lora::LoraConfig;
use crate::train::schedule::{DecayShape, Unit};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The root of a training YAML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default)]
    pub run: RunConfig,
    pub model: ModelConfigSection,
    /// Sources, stages and sampler options (`crate::data::config`).
    pub data: DataConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    pub train: TrainBudget,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub validation: ValidationConfig,
    #[serde(default)]
    pub guard: GuardConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// Which implementation of the model's ops trains (composed or fused kernels), and
    /// recomputation of activations (docs/cuda.md).
    #[serde(default)]
    pub kernels: KernelSettings,
    /// Train only part of the model for the first steps (after vocabulary extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<FreezeConfig>,
    /// Data parallelism across ranks: ZeRO stage, buckets, the lost-rank timeout
    /// (docs/distributed.md). Left out of saved configs while at its defaults.
    #[serde(default, skip_serializing_if = "ParallelConfig::is_default")]
    pub parallel: ParallelConfig,
    /// Train LoRA adapters (and `modules_to_save`) instead of every weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

/// Dtype for the forward/backward pass (master weights and moments are always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DTypeName {
    #[default]
    F32,
    Bf16,
    F16,
}

impl DTypeName {
    pub fn to_candle(self) -> candle_core::DType {
        match self {
            DTypeName::F32 => candle_core::DType::F32,
            DTypeName::Bf16 => candle_core::DType::BF16,
            DTypeName::F16 => candle_core::DType::F16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The run directory: config.yaml, metrics.jsonl, checkpoints/, tb/.
    pub out_dir: PathBuf,
    pub seed: u64,
    pub device: DeviceKind,
    /// Compute dtype of the forward/backward pass.
    pub dtype: DTypeName,
    /// Threads for candle's CPU kernels (default: 1 for models under 20M parameters, where
    /// thread synchronisation outweighs the gain; all cores otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<usize>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { out_dir: PathBuf::from("runs/cpt"), seed: 0, device: DeviceKind::Cpu, dtype: DTypeName::F32, cpu_threads: None }
    }
}

/// The `model:` section: where the base model lives, and how to create it when missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfigSection {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer).
    pub path: PathBuf,
    /// Create the model with `cpt init` when `path` does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// A size preset known to `cpt init` (e.g. `tiny`).
    pub preset: String,
    /// Architecture: llama, qwen2 or mistral (the preset's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Text to train a tokenizer on when the preset has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_corpus: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimKind {
    #[default]
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub kind: OptimKind,
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// Also decay the input embeddings (norms and biases are never decayed).
    pub decay_embeddings: bool,
    /// SGD only.
    pub momentum: f64,
    pub nesterov: bool,
    /// Global gradient-norm clipping threshold; `null` turns clipping off.
    pub grad_clip: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            kind: OptimKind::Adamw,
            lr: 3e-4,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.1,
            decay_embeddings: false,
            momentum: 0.0,
            nesterov: false,
            grad_clip: Some(1.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    #[default]
    Cosine,
    Linear,
    Wsd,
    Constant,
    Rewarm,
}

/// See `train::schedule` for the formulas. Lengths are counts in `unit`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    pub unit: Unit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_fraction: Option<f64>,
    /// Length of the schedule; the training budget when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<Count>,
    /// WSD: length of the decay phase (or `decay_fraction` of the total).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_fraction: Option<f64>,
    /// WSD: linear, cosine, exponential, 1-sqrt. rewarm: cosine or linear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_shape: Option<DecayShape>,
    /// The floor, absolute or as a fraction of `optim.lr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_lr_ratio: Option<f64>,
    /// Where warmup starts (0 when absent; required for rewarm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_lr: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Sequences per forward/backward.
    pub micro_batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Micro-batches per optimiser step (or give `tokens_per_step`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_accum: Option<usize>,
    /// Tokens per optimiser step; must be a multiple of micro_batch * seq_len.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_step: Option<Count>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { micro_batch: 8, seq_len: 512, grad_accum: None, tokens_per_step: None }
    }
}

/// How long to train: exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrainBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<Count>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_steps: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_tokens: Option<Count>,
    /// Complete checkpoints kept; older ones are deleted after a new one is committed.
    pub keep_last: usize,
    /// Dtype of the saved model weights. Exact resume needs f32 (the master weights).
    pub dtype: DTypeName,
    /// Shard size of the saved safetensors (HF index written when sharded).
    pub max_shard_bytes: Count,
    /// Also save when training ends.
    pub at_end: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_steps: None,
            every_tokens: None,
            keep_last: 3,
            dtype: DTypeName::F32,
            max_shard_bytes: Count(5_000_000_000),
            at_end: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// One metrics record every this many steps.
    pub every_steps: Count,
    pub tensorboard: bool,
    pub progress_bar: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { every_steps: Count(1), tensorboard: true, progress_bar: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Validate every this many steps (never when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_steps: Option<Count>,
    /// Held-out windows per source.
    pub max_windows: usize,
    /// Also validate before the first step.
    pub at_start: bool,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self { every_steps: None, max_windows: 16, at_start: false }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Skip a step whose loss exceeds mean + spike_sigma * std of the last `window`
    /// accepted losses (`null`: no spike detection).
    pub spike_sigma: Option<f64>,
    pub window: usize,
    /// Accepted steps needed before spike detection starts.
    pub min_history: usize,
    /// Stop the run (with a checkpoint) after this many skipped steps in a row.
    pub max_consecutive_skips: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self { spike_sigma: Some(6.0), window: 100, min_history: 20, max_consecutive_skips: 5 }
    }
}

/// The `eval:` section: benchmarks and perplexity sets run during training.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_steps: Option<Count>,
    /// Padded tokens per forward while scoring.
    pub batch_tokens: usize,
    /// Task specs, typed by the evaluation module (`eval::training::parse_tasks`).
    pub tasks: Vec<serde_yaml::Value>,
    /// Text generated from fixed prompts during training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate: Option<SamplesConfig>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { every_steps: None, batch_tokens: 4096, tasks: Vec::new(), generate: None }
    }
}

/// `eval.generate`: what the model writes after each prompt, every `every_steps` steps (and
/// at the end), logged to the metrics JSONL and to TensorBoard as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplesConfig {
    pub prompts: Vec<String>,
    pub every_steps: Count,
    #[serde(default = "default_sample_tokens")]
    pub max_new_tokens: usize,
    /// 0: greedy decoding.
    #[serde(default)]
    pub temperature: f32,
    /// Seed of the sampling streams (with a temperature).
    #[serde(default)]
    pub seed: u64,
}

fn default_sample_tokens() -> usize {
    64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreezeTarget {
    /// Only `embed_tokens` and `lm_head` train.
    Embeddings,
    /// Only the rows of new vocabulary entries in `embed_tokens` / `lm_head` train.
    NewVocabRows,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    pub train_only: FreezeTarget,
    /// For this many optimiser steps; then everything trains.
    pub steps: Count,
    /// First id of the new rows (`new_vocab_rows`); by default read from the
    /// `vocab_extension.json` that `cpt vocab extend` writes into the model directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_vocab_size: Option<usize>,
}
