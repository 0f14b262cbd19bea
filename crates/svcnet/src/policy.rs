//! `svcnet policy`: NetworkPolicy explained.

#[derive(clap::Subcommand)]
pub enum PolicyCommand {}

pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {}
}
