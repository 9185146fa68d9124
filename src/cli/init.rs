//! `cpt init`: a randomly initialised model in Hugging Face layout, with a tokenizer.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use cpt::model::init::{init_model_dir, preset, InitSpec, SizeOverrides, TokenizerSource};
use cpt::model::io::parse_dtype;
use cpt::model::Architecture;

/// Sizes come from --preset, each overridable; the tokenizer is given (--tokenizer) or
/// trained as a byte-level BPE on text files (--train-tokenizer).
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Size preset: tiny (CI-fast, ~0.1M params), small-10m, small-100m.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Architecture: llama, qwen2 (q/k/v biases) or mistral.
    #[arg(long, default_value = "llama")]
    pub arch: String,
    /// Output directory (must be empty or absent unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// tokenizer.json, or a directory with tokenizer.json (+ tokenizer_config.json).
    #[arg(long, conflicts_with = "train_tokenizer")]
    pub tokenizer: Option<PathBuf>,
    /// Train a byte-level BPE tokenizer on these text files.
    #[arg(long, num_args = 1..)]
    pub train_tokenizer: Vec<PathBuf>,
    /// BPE vocabulary size when training (default: the preset's); with --tokenizer, the
    /// model's vocabulary (at least the tokenizer's; extra rows are padding).
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stored weight dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[arg(long)]
    pub hidden_size: Option<usize>,
    #[arg(long)]
    pub intermediate_size: Option<usize>,
    #[arg(long)]
    pub num_layers: Option<usize>,
    #[arg(long)]
    pub num_heads: Option<usize>,
    #[arg(long)]
    pub num_kv_heads: Option<usize>,
    #[arg(long)]
    pub head_dim: Option<usize>,
    #[arg(long)]
    pub max_position_embeddings: Option<usize>,
    #[arg(long)]
    pub rope_theta: Option<f64>,
    /// Tie the output head to the embeddings (true/false; default: the preset's).
    #[arg(long)]
    pub tie_embeddings: Option<bool>,
    /// Overwrite a non-empty output directory.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: InitArgs) -> Result<()> {
    let preset = preset(&a.preset)?;
    let arch = Architecture::parse(&a.arch)?;
    let tokenizer = match (a.tokenizer, a.train_tokenizer.is_empty()) {
        (Some(path), true) => TokenizerSource::Existing(path),
        (None, false) => TokenizerSource::Train {
            files: a.train_tokenizer,
            vocab_size: a.vocab_size.unwrap_or(preset.default_vocab_size),
        },
        (None, true) => bail!("give --tokenizer PATH or --train-tokenizer FILES..."),
        (Some(_), false) => bail!("give only one of --tokenizer and --train-tokenizer"),
    };
    let model_vocab = match tokenizer {
        TokenizerSource::Existing(_) => a.vocab_size,
        TokenizerSource::Train { .. } => None,
    };
    let spec = InitSpec {
        arch,
        preset,
        sizes: SizeOverrides {
            hidden_size: a.hidden_size,
            intermediate_size: a.intermediate_size,
            num_hidden_layers: a.num_layers,
            num_attention_heads: a.num_heads,
            num_key_value_heads: a.num_kv_heads,
            head_dim: a.head_dim,
            max_position_embeddings: a.max_position_embeddings,
            rope_theta: a.rope_theta,
            tie_word_embeddings: a.tie_embeddings,
        },
        tokenizer,
        vocab_size: model_vocab,
        out: a.out.clone(),
        seed: a.seed,
        dtype: parse_dtype(&a.dtype)?,
        force: a.force,
    };
    let s = init_model_dir(&spec)?;
    let c = &s.config;
    println!(
        "wrote {} ({}, {} layers, hidden {}, heads {}/{} kv, vocab {}): {} parameters ({} non-embedding)",
        a.out.display(),
        c.architecture.hf_class(),
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        s.parameters,
        s.non_embedding_parameters
    );
    Ok(())
}
