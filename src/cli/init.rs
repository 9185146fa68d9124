//! `cpt init` (skeleton: filled in by its issue).
#[derive(clap::Args)]
pub struct InitArgs {}

pub fn run(_args: InitArgs) -> anyhow::Result<()> {
    anyhow::bail!("`cpt init` is not built yet")
}
