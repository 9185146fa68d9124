//! `cpt plot` (skeleton: filled in by its issue).
#[derive(clap::Args)]
pub struct PlotArgs {}

pub fn run(_args: PlotArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cpt plot` is not built yet")
}
