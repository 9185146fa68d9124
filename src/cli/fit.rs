//! `cpt fit`: laws fitted to sweep results (mixing, learning rate, compute) and the
//! recommendation for the full model.
use anyhow::{Context, Result};
use cpt::sweep::analysis::{self, ConstraintSpec, MixingSpec};
use cpt::sweep::recommend::{recommend, RecommendSpec};
use cpt::sweep::results::ResultSet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct FitArgs {
    #[command(subcommand)]
    pub command: FitCommand,
}

#[derive(clap::Subcommand)]
pub enum FitCommand {
    /// Per-source loss over mixture shares (data mixing law), the best mixture under
    /// constraints, and the critical replay share.
    Mixing(MixingArgs),
    /// The best learning rate as a function of the additional-language ratio (ALMR).
    Lr(LrArgs),
    /// Loss against training compute, L(C) = E + A C^-alpha, with a prediction.
    Compute(ComputeArgs),
    /// A ready-to-run config for the full model, with the evidence beside it.
    Recommend(RecommendArgs),
}

#[derive(clap::Args)]
pub struct MixingArgs {
    /// results.json (or .csv) from `cpt sweep`.
    #[arg(long)]
    pub results: PathBuf,
    /// A mixture component and the results column holding its share: `zh=zh_ratio` (repeatable).
    #[arg(long = "share", required = true)]
    pub shares: Vec<String>,
    /// Name of the implied remaining component (1 - the given shares).
    #[arg(long)]
    pub rest: Option<String>,
    /// Sources to fit (default: every validation source).
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Which loss: final or best.
    #[arg(long, default_value = "final")]
    pub metric: String,
    /// Target to minimise: a source (`zh`) or a weighted sum (`0.7*zh+0.3*en`).
    #[arg(long)]
    pub minimise: Option<String>,
    /// `en<=base+0.05`, `en<=base*1.02` or `en<=2.4` (repeatable).
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// The starting model's loss: `en=2.31` (default: runs' step-0 validation loss).
    #[arg(long = "base")]
    pub base: Vec<String>,
    /// Report the smallest share of this component that meets the constraints.
    #[arg(long)]
    pub replay: Option<String>,
    /// Use only runs with COLUMN=VALUE, e.g. `lr=0.003` (repeatable): the law has no LR term.
    #[arg(long = "where")]
    pub filters: Vec<String>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct LrArgs {
    #[arg(long)]
    pub results: PathBuf,
    /// Column of the additional-language ratio.
    #[arg(long)]
    pub ratio: String,
    /// Column of the learning rate.
    #[arg(long)]
    pub lr: String,
    /// Column of the loss to minimise, e.g. `val.zh.final`.
    #[arg(long)]
    pub loss: String,
    /// Extra ratios to report the best LR at.
    #[arg(long, value_delimiter = ',')]
    pub at: Vec<f64>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ComputeArgs {
    #[arg(long)]
    pub results: PathBuf,
    #[arg(long, default_value = "flops")]
    pub flops: String,
    /// Column of the loss, e.g. `val.zh.final`.
    #[arg(long)]
    pub loss: String,
    /// Predict at this many training FLOPs.
    #[arg(long, conflicts_with_all = ["target_params", "target_tokens"])]
    pub target_flops: Option<f64>,
    /// Predict for a model of this many (non-embedding) parameters... (C = 6 N D)
    #[arg(long, requires = "target_tokens")]
    pub target_params: Option<f64>,
    /// ...trained on this many tokens.
    #[arg(long, requires = "target_params")]
    pub target_tokens: Option<f64>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RecommendArgs {
    /// The sweep directory (`cpt sweep --out`).
    #[arg(long)]
    pub sweep: PathBuf,
    /// Grid axis holding the additional-language share.
    #[arg(long)]
    pub ratio_axis: String,
    /// Grid axis holding the peak learning rate.
    #[arg(long)]
    pub lr_axis: Option<String>,
    /// Source whose validation loss is minimised.
    #[arg(long)]
    pub minimise: String,
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    #[arg(long = "base")]
    pub base: Vec<String>,
    #[arg(long, default_value = "final")]
    pub metric: String,
    /// Overrides for the full model: `model.path=...`, token budget, output dir (repeatable).
    #[arg(long = "set")]
    pub sets: Vec<String>,
    /// Where recommended.yaml and recommendation.md go.
    #[arg(long)]
    pub out: PathBuf,
}

fn parse_pairs(items: &[String], what: &str) -> Result<BTreeMap<String, f64>> {
    items
        .iter()
        .map(|s| {
            let (k, v) = s.split_once('=').with_context(|| format!("{what} `{s}`: expected NAME=NUMBER"))?;
            Ok((k.trim().to_string(), v.trim().parse::<f64>().with_context(|| format!("{what} `{s}`: `{v}` is not a number"))?))
        })
        .collect()
}

fn write_json(path: &Option<PathBuf>, value: &impl serde::Serialize) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(value)?).with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn load(path: &Path) -> Result<ResultSet> {
    ResultSet::from_file(path)
}

pub fn run(args: FitArgs) -> Result<()> {
    match args.command {
        FitCommand::Mixing(a) => {
            let results = load(&a.results)?.filter(&a.filters).with_context(|| format!("in {}", a.results.display()))?;
            let shares = a
                .shares
                .iter()
                .map(|s| s.split_once('=').map(|(c, col)| (c.trim().to_string(), col.trim().to_string())).with_context(|| format!("--share `{s}`: expected COMPONENT=COLUMN")))
                .collect::<Result<Vec<_>>>()?;
            let spec = MixingSpec {
                shares,
                rest: a.rest,
                sources: a.sources,
                metric: a.metric,
                minimise: a.minimise.as_deref().map(analysis::parse_target).transpose()?,
                constraints: a.constraints.iter().map(|c| ConstraintSpec::parse(c)).collect::<Result<_>>()?,
                base: parse_pairs(&a.base, "--base")?,
                replay: a.replay,
            };
            let report = analysis::mixing(&results, &spec).with_context(|| format!("fitting mixing laws to {}", a.results.display()))?;
            print!("{}", report.render());
            write_json(&a.json, &report)
        }
        FitCommand::Lr(a) => {
            let results = load(&a.results)?;
            let report = analysis::learning_rate(&results, &a.ratio, &a.lr, &a.loss, &a.at).with_context(|| format!("in {}", a.results.display()))?;
            print!("{}", report.render());
            write_json(&a.json, &report)
        }
        FitCommand::Compute(a) => {
            let results = load(&a.results)?;
            let (target, note) = match (a.target_flops, a.target_params, a.target_tokens) {
                (Some(c), _, _) => (Some(c), None),
                (None, Some(n), Some(d)) => (Some(6.0 * n * d), Some(format!("N = {n:.3e} parameters x D = {d:.3e} tokens, C = 6ND = {:.3e} FLOPs", 6.0 * n * d))),
                _ => (None, None),
            };
            let report = analysis::compute(&results, &a.flops, &a.loss, target, note).with_context(|| format!("in {}", a.results.display()))?;
            print!("{}", report.render());
            write_json(&a.json, &report)
        }
        FitCommand::Recommend(a) => {
            let spec = RecommendSpec {
                sweep_dir: a.sweep,
                ratio_axis: a.ratio_axis,
                lr_axis: a.lr_axis,
                minimise: a.minimise,
                constraints: a.constraints.iter().map(|c| ConstraintSpec::parse(c)).collect::<Result<_>>()?,
                base: parse_pairs(&a.base, "--base")?,
                metric: a.metric,
                sets: a.sets,
                out_dir: a.out,
            };
            let rec = recommend(&spec)?;
            print!("{}", rec.report);
            println!("config: {}\nreport: {}", rec.config_path.display(), rec.report_path.display());
            Ok(())
        }
    }
}
