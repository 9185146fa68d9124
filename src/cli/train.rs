//! `cpt train` (skeleton: filled in by its issue).
#[derive(clap::Args)]
pub struct TrainArgs {}

pub fn run(_args: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cpt train` is not built yet")
}
