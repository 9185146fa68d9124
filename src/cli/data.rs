//! `cpt data inspect --config FILE`: the data plan per stage without training.
use anyhow::Result;

use cpt::data::inspect::{format_inspect, inspect};
use cpt::data::prepare::{prepare, PrepareOptions, PreparedData};

use super::prepare::{DataInput, DataInputArgs};

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Planned and realised tokens per stage, source and group; epochs; first windows.
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub input: DataInputArgs,
    /// Window length (default: the config's `batch.seq_len`, else 2048).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Sampler seed (default: the config's `run.seed`, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How many of the first windows to decode.
    #[arg(long, default_value_t = 2)]
    pub windows: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Inspect(args) => run_inspect(args),
    }
}

fn run_inspect(args: InspectArgs) -> Result<()> {
    let DataInput { loaded, tokenizer: tok, cache_dir } = args.input.load()?;
    // Prepared shards are reused; anything missing or stale is (re)built first.
    let opts = PrepareOptions { cache_dir: cache_dir.clone(), progress: !args.json, force: false };
    prepare(&loaded.data, &tok, &opts)?;
    let data = PreparedData::open(&cache_dir, &loaded.data, Some(&tok))?;
    let seq_len = args.seq_len.or(loaded.seq_len).unwrap_or(2048);
    let seed = args.seed.or(loaded.seed).unwrap_or(0);
    let report = inspect(&loaded.data, data, seq_len, seed, args.windows, Some(&tok))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_inspect(&report));
    }
    Ok(())
}
