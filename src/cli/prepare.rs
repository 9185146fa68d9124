//! `cpt prepare` (skeleton: filled in by its issue).
#[derive(clap::Args)]
pub struct PrepareArgs {}

pub fn run(_args: PrepareArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cpt prepare` is not built yet")
}
