//! `cpt sweep`: expand a grid over a base config, train every run, collect results and charts.
use anyhow::{bail, Context, Result};
use cpt::sweep::plan::Sweep;
use cpt::sweep::runner::{Outcome, RunnerOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SweepArgs {
    /// The base training config (YAML) every run starts from.
    #[arg(long)]
    pub config: PathBuf,
    /// The grid file: axes of config paths and values (see docs/sweep.md).
    #[arg(long)]
    pub grid: PathBuf,
    /// The sweep directory (runs/, sweep_state.json, results.{json,csv}, charts/).
    #[arg(long)]
    pub out: PathBuf,
    /// Runs trained at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Accelerator ids handed out round-robin to run slots as CUDA_VISIBLE_DEVICES, e.g. `0,1`.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// The trainer command (`--config <file>` is appended); default: the environment
    /// variable CPT_SWEEP_TRAINER, else this binary's `train`.
    #[arg(long)]
    pub trainer_cmd: Option<String>,
    /// Override a base-config key for every run: `path.to.key=value` (repeatable).
    #[arg(long = "set")]
    pub sets: Vec<String>,
    /// Lay the runs out and print the plan without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Only collect results and draw charts from the runs already there.
    #[arg(long)]
    pub collect_only: bool,
    /// Chart format: svg or png.
    #[arg(long, default_value = "svg")]
    pub chart_format: String,
}

pub fn run(args: SweepArgs) -> Result<()> {
    if !matches!(args.chart_format.as_str(), "svg" | "png") {
        bail!("--chart-format must be svg or png, not `{}`", args.chart_format);
    }
    let sweep = Sweep::prepare(&args.out, &args.config, &args.sets, &args.grid)?;
    let finished = sweep.runs.iter().filter(|r| r.finished).count();
    println!("sweep {}: {} runs ({} finished, {} to run)", args.out.display(), sweep.runs.len(), finished, sweep.runs.len() - finished);
    let custom_trainer = args.trainer_cmd.clone().or_else(|| std::env::var("CPT_SWEEP_TRAINER").ok());
    // Another trainer reads its own kind of config; cpt's own is checked before any run.
    if custom_trainer.is_none() && !args.collect_only {
        sweep.validate_configs()?;
    }
    if args.dry_run {
        for r in &sweep.runs {
            let sets: Vec<String> = r.plan.overrides.iter().map(|(k, v)| format!("{k}={}", serde_yaml::to_string(v).unwrap_or_default().trim())).collect();
            println!("  {} {} [{}]", if r.finished { "done   " } else { "pending" }, r.plan.id, sets.join(", "));
        }
        return Ok(());
    }
    let mut failure = None;
    if !args.collect_only {
        let trainer = match custom_trainer {
            Some(cmd) => cmd.split_whitespace().map(String::from).collect(),
            None => {
                let exe = std::env::current_exe().context("finding the cpt binary to run `cpt train`")?;
                vec![exe.to_string_lossy().into_owned(), "train".to_string()]
            }
        };
        let opts = RunnerOptions { trainer, parallel: args.parallel, devices: args.devices.clone() };
        let report = sweep.run(&opts)?;
        let failed: Vec<&str> = report.outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Failed(_))).map(|(id, _)| id.as_str()).collect();
        println!(
            "ran {} runs: {} finished now, {} already finished, {} failed",
            report.count(|o| !matches!(o, Outcome::AlreadyFinished | Outcome::NotStarted)),
            report.count(|o| *o == Outcome::Finished),
            report.count(|o| *o == Outcome::AlreadyFinished),
            failed.len()
        );
        if report.interrupted {
            failure = Some("the sweep was interrupted; run the same command again to continue where it stopped".to_string());
        } else if !failed.is_empty() {
            failure = Some(format!("{} runs failed ({}); see their train.log; run the same command again to retry them", failed.len(), failed.join(", ")));
        }
    }
    let results = sweep.collect()?;
    println!("results: {} and {}", args.out.join("results.json").display(), args.out.join("results.csv").display());
    match sweep.charts(&results, &args.chart_format) {
        Ok(files) => {
            for f in files {
                println!("chart: {}", f.display());
            }
        }
        Err(e) => eprintln!("warning: charts skipped: {e:#}"),
    }
    match failure {
        Some(f) => bail!(f),
        None => Ok(()),
    }
}
