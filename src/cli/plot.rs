//! `cpt plot`: charts of a metrics JSONL file.
use cpt::train::plot::{plot_metrics, PlotFormat};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// The metrics file of a run (`<run dir>/metrics.jsonl`).
    #[arg(long)]
    pub metrics: PathBuf,
    /// Where to write the charts (default: `plots/` next to the metrics file).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// png or svg.
    #[arg(long, default_value = "png")]
    pub format: PlotFormat,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let out = args.out.unwrap_or_else(|| {
        args.metrics.parent().map(|p| p.join("plots")).unwrap_or_else(|| PathBuf::from("plots"))
    });
    for path in plot_metrics(&args.metrics, &out, args.format)? {
        println!("{}", path.display());
    }
    Ok(())
}
