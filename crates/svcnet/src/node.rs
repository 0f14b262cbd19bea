//! `svcnet node`: the node agent alone.

#[derive(clap::Args)]
pub struct NodeArgs {}

pub async fn run(_args: NodeArgs) -> anyhow::Result<()> {
    anyhow::bail!("svcnet node: not built yet")
}
