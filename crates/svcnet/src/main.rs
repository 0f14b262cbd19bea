//! `svcnet`: Kubernetes Services and Networking in one binary.

use clap::{Parser, Subcommand};

mod agent;
mod agnhost;
mod dns;
mod node;
mod policy;
mod up;

#[derive(Parser)]
#[command(name = "svcnet", version, about = "Kubernetes Services and Networking in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the API server, controllers, cluster DNS and node agents in the foreground, on an
    /// embedded store.
    Up(up::UpArgs),
    /// Run the node agent alone, in the network namespace it is started in, against any
    /// Kubernetes API server.
    Node(node::NodeArgs),
    /// Run the cluster DNS server alone against any Kubernetes API server.
    Dns(dns::DnsArgs),
    /// Explain NetworkPolicies: the connectivity matrix, and why one flow is allowed or denied.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// A test workload in the manner of upstream's agnhost: servers and probes that need nothing
    /// but this binary.
    #[command(subcommand)]
    Agnhost(agnhost::AgnhostCommand),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Up(args) => rt.block_on(up::up(args)),
        Command::Node(args) => rt.block_on(node::run(args)),
        Command::Dns(args) => rt.block_on(dns::run(args)),
        Command::Policy(command) => rt.block_on(policy::run(command)),
        Command::Agnhost(command) => rt.block_on(agnhost::run(command)),
    }
}
