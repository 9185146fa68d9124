//! `cpt prepare --config FILE`: tokenize the config's sources into cached token shards.
use std::path::PathBuf;

use anyhow::{Context, Result};

use cpt::data::config::DataConfig;
use cpt::data::prepare::{format_report, prepare, PrepareOptions};
use cpt::data::tokenize::{SpecialOverrides, TextTokenizer};

#[derive(clap::Args)]
pub struct PrepareArgs {
    /// A training config (its `model.path` and `data:` section) or a standalone data config.
    #[arg(long)]
    pub config: PathBuf,
    /// Shard cache directory (default: `data.cache_dir`, else `data-cache` beside the run).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// tokenizer.json or a model directory (default: `data.tokenizer`, else `model.path`).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Rebuild every source even when its manifest matches.
    #[arg(long)]
    pub force: bool,
    /// Print the per-source report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Loads the config and the tokenizer the way `prepare` and `data inspect` both need.
pub fn load(config: &std::path::Path, tokenizer: Option<PathBuf>) -> Result<(cpt::data::config::LoadedDataConfig, TextTokenizer)> {
    let loaded = DataConfig::load(config)?;
    let path = tokenizer.or_else(|| loaded.tokenizer_path().map(PathBuf::from)).with_context(|| {
        format!("{}: no tokenizer: set `data.tokenizer` or `model.path`, or pass --tokenizer", config.display())
    })?;
    let overrides = SpecialOverrides { bos_token: loaded.data.bos_token.clone(), eos_token: loaded.data.eos_token.clone() };
    let tok = TextTokenizer::load(&path, &overrides)?;
    Ok((loaded, tok))
}

pub fn run(args: PrepareArgs) -> Result<()> {
    let (loaded, tok) = load(&args.config, args.tokenizer)?;
    let cache_dir = args.cache_dir.unwrap_or_else(|| loaded.cache_dir());
    let opts = PrepareOptions { cache_dir, progress: !args.quiet && !args.json, force: args.force };
    let report = prepare(&loaded.data, &tok, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_report(&report));
        println!("shards in {}", report.cache_dir.display());
    }
    Ok(())
}
