//! `cpt eval` (skeleton: filled in by its issue).
#[derive(clap::Args)]
pub struct EvalArgs {}

pub fn run(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cpt eval` is not built yet")
}
