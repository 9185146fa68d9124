//! `cpt sweep` (skeleton: filled in by its issue).
#[derive(clap::Args)]
pub struct SweepArgs {}

pub fn run(_args: SweepArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cpt sweep` is not built yet")
}
