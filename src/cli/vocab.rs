//! `cpt vocab` (skeleton: filled in by its issue).
#[derive(clap::Subcommand)]
pub enum VocabCommand {}

pub fn run(command: VocabCommand) -> anyhow::Result<()> {
    match command {}
}
