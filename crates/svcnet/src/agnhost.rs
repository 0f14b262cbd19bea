//! `svcnet agnhost`: test servers and probes.

#[derive(clap::Subcommand)]
pub enum AgnhostCommand {}

pub async fn run(command: AgnhostCommand) -> anyhow::Result<()> {
    match command {}
}
