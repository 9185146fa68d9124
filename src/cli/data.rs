//! `cpt data` (skeleton: filled in by its issue).
#[derive(clap::Subcommand)]
pub enum DataCommand {}

pub fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {}
}
