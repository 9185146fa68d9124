//! `cpt train`: continue pre-training a model as a YAML config describes.
use std::path::PathBuf;

use anyhow::Result;

use cpt::config::load_config;
use cpt::train::trainer::{train, Ending, Resume, TrainOptions};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  cpt train --config configs/tiny.yaml\n  cpt train --config configs/tiny.yaml --set optim.lr=1e-3 --set run.out_dir=runs/lr1e-3\n  cpt train --config configs/tiny.yaml --resume            # newest complete checkpoint\n  cpt train --config configs/tiny.yaml --resume runs/tiny/checkpoints/step-00000100")]
pub struct TrainArgs {
    /// The training YAML (model, data, optim, schedule, batch, train, checkpoint, logging, validation).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config value: `path.to.key=value` (the value is parsed as YAML). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from a checkpoint: the run's newest complete one, or the directory given.
    #[arg(long, value_name = "CHECKPOINT", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// No progress bar (log lines only).
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cfg = load_config(&args.config, &args.set)?;
    let resume = match args.resume {
        None => Resume::Fresh,
        Some(None) => Resume::Latest,
        Some(Some(p)) => Resume::From(p),
    };
    let outcome = train(&cfg, &TrainOptions { resume, progress: !args.no_progress })?;
    if outcome.ending == Ending::Interrupted {
        std::process::exit(130);
    }
    Ok(())
}
