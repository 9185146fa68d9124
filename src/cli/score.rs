//! `cpt score` (skeleton: filled in by its issue).
#[derive(clap::Args)]
pub struct ScoreArgs {}

pub fn run(_args: ScoreArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cpt score` is not built yet")
}
