//! The model options `cpt eval` and `cpt score` share, and loading the model they describe.
use std::path::PathBuf;

use anyhow::{Context, Result};

use cpt::eval::loglik::EngineOptions;
use cpt::eval::model_adapter::CandleLm;
use cpt::kernels::device_info;
use cpt::model::io::parse_dtype;
use cpt::model::Tokenizer;

#[derive(clap::Args)]
pub struct ScoringModelArgs {
    /// Model directory in Hugging Face layout (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory to apply to the model (unmerged).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Context length (default: the model's max_position_embeddings).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Padded tokens per forward pass.
    #[arg(long, default_value_t = 4096)]
    pub batch_tokens: usize,
    /// cpu, auto, cuda or cuda:<index>.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// A model ready to score, with its tokenizer and batching.
pub struct ScoringModel {
    pub lm: CandleLm,
    pub tokenizer: Tokenizer,
    pub engine: EngineOptions,
}

impl ScoringModelArgs {
    pub fn load(&self) -> Result<ScoringModel> {
        let device = device_info::select(&self.device).context("--device")?;
        let dtype = parse_dtype(&self.dtype).context("--dtype")?;
        let lm = CandleLm::load_with_adapter(&self.model, self.adapter.as_deref(), &device, dtype, self.max_len)?;
        let tokenizer = Tokenizer::from_dir(&self.model)
            .with_context(|| format!("loading the tokenizer of {}", self.model.display()))?;
        Ok(ScoringModel { lm, tokenizer, engine: EngineOptions { batch_tokens: self.batch_tokens.max(1) } })
    }
}
