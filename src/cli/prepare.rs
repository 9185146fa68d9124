//! `cpt prepare --config FILE`: tokenize the config's sources into cached token shards.
use std::path::PathBuf;

use anyhow::{Context, Result};

use cpt::data::config::{DataConfig, LoadedDataConfig};
use cpt::data::prepare::{format_report, prepare, PrepareOptions};
use cpt::tokenizer::Tokenizer;

/// Which data, tokenizer and shard cache `prepare` and `data inspect` work on.
#[derive(clap::Args)]
pub struct DataInputArgs {
    /// A training config (its `model.path` and `data:` section) or a standalone data config.
    #[arg(long)]
    pub config: PathBuf,
    /// Shard cache directory (default: `data.cache_dir`, else `data-cache` beside the run).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// tokenizer.json or a model directory (default: `data.tokenizer`, else `model.path`).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

/// The loaded data config, its tokenizer and the shard cache directory.
pub struct DataInput {
    pub loaded: LoadedDataConfig,
    pub tokenizer: Tokenizer,
    pub cache_dir: PathBuf,
}

impl DataInputArgs {
    pub fn load(&self) -> Result<DataInput> {
        let loaded = DataConfig::load(&self.config)?;
        let path = self.tokenizer.clone().or_else(|| loaded.tokenizer_path().map(PathBuf::from)).with_context(|| {
            format!("{}: no tokenizer: set `data.tokenizer` or `model.path`, or pass --tokenizer", self.config.display())
        })?;
        let tokenizer = Tokenizer::load(&path, &loaded.data.special_overrides())?;
        let cache_dir = self.cache_dir.clone().unwrap_or_else(|| loaded.cache_dir());
        Ok(DataInput { loaded, tokenizer, cache_dir })
    }
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub input: DataInputArgs,
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

pub fn run(args: PrepareArgs) -> Result<()> {
    let DataInput { loaded, tokenizer, cache_dir } = args.input.load()?;
    let opts = PrepareOptions { cache_dir, progress: !args.quiet && !args.json, force: args.force };
    let report = prepare(&loaded.data, &tokenizer, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_report(&report));
        println!("tokenizer {}: {}", tokenizer.path().display(), tokenizer.special_tokens());
        println!("shards in {}", report.cache_dir.display());
    }
    Ok(())
}
