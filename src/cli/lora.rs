//! `cpt lora merge`.
use std::path::PathBuf;

use anyhow::{Context, Result};
use cpt::model::io::parse_dtype;
use cpt::model::lora::merge::merge_to_dir;

#[derive(clap::Subcommand)]
pub enum LoraCommand {
    /// Merge a PEFT LoRA adapter (written by cpt or PEFT) into its base model and write a
    /// plain Hugging Face model directory.
    Merge(MergeArgs),
}

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The base model directory (Hugging Face layout).
    #[arg(long)]
    base: PathBuf,
    /// The adapter directory (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    adapter: PathBuf,
    /// Output directory (replaced atomically if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Stored dtype of the merged weights: f32, bf16 or f16 (default: the base's).
    #[arg(long)]
    dtype: Option<String>,
    /// Shard the weights above this many bytes.
    #[arg(long, default_value_t = 5_000_000_000)]
    max_shard_bytes: u64,
}

pub fn run(command: LoraCommand) -> Result<()> {
    match command {
        LoraCommand::Merge(args) => {
            let dtype = args.dtype.as_deref().map(parse_dtype).transpose().context("--dtype")?;
            let report = merge_to_dir(&args.base, &args.adapter, &args.out, dtype, args.max_shard_bytes)?;
            let untied = if report.untied { "; embeddings and head were trained as separate copies, so the model is saved untied" } else { "" };
            println!(
                "merged {} adapted layers into {} ({:?}){untied}",
                report.adapted_layers,
                args.out.display(),
                report.dtype
            );
            Ok(())
        }
    }
}
