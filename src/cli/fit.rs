//! `cpt fit` (skeleton: filled in by its issue).
#[derive(clap::Args)]
pub struct FitArgs {}

pub fn run(_args: FitArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cpt fit` is not built yet")
}
