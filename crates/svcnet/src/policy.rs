//! `svcnet policy`: NetworkPolicy explained, for a live cluster or offline for a folder of YAML.

use std::path::PathBuf;

use anyhow::Context;
use svcnet_netpol::matrix::Matrix;
use svcnet_netpol::objects::Objects;
use svcnet_netpol::{Cluster, PortProtocol, engine};

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// The connectivity truth table: which pod may open a connection to which, for each port
    /// (rows: from, columns: to).
    Matrix(MatrixArgs),
    /// Why one flow is allowed or denied: the policies that select each side and the rule that
    /// allows it, or why none does.
    Explain(ExplainArgs),
}

/// Where the objects come from.
#[derive(clap::Args)]
pub struct Source {
    /// A kubeconfig for the live cluster (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, conflicts_with = "offline")]
    pub kubeconfig: Option<PathBuf>,
    /// A folder (or file) of YAML/JSON with Namespaces, Pods (with status.podIP) and
    /// NetworkPolicies, instead of a cluster.
    #[arg(long)]
    pub offline: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub source: Source,
    /// Only pods of these namespaces (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// The ports, as PORT/PROTOCOL (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "80/TCP,81/TCP,80/UDP,81/UDP")]
    pub ports: Vec<String>,
    /// `text` or `svg`.
    #[arg(long, default_value = "text", value_parser = ["text", "svg"])]
    pub format: String,
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: Source,
    /// The source: NAMESPACE/POD or an IP address.
    #[arg(long)]
    pub from: String,
    /// The destination: NAMESPACE/POD or an IP address.
    #[arg(long)]
    pub to: String,
    /// PORT/PROTOCOL, e.g. 80/TCP.
    #[arg(long)]
    pub port: String,
}

pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Matrix(args) => {
            let cluster = load(&args.source).await?;
            let ports = args.ports.iter().map(|p| PortProtocol::parse(p)).collect::<Result<Vec<_>, _>>()?;
            for ns in &args.namespaces {
                anyhow::ensure!(cluster.namespace(ns).is_some(), "namespace {ns:?} not found");
            }
            let matrix = Matrix::compute(&cluster, &args.namespaces, &ports);
            let out = match args.format.as_str() {
                "svg" => matrix.to_svg(&title(&cluster)),
                _ => matrix.to_text(),
            };
            match &args.output {
                Some(path) => std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{out}"),
            }
            Ok(())
        }
        PolicyCommand::Explain(args) => {
            let cluster = load(&args.source).await?;
            let from = engine::parse_endpoint(&args.from)?;
            let to = engine::parse_endpoint(&args.to)?;
            for e in [&from, &to] {
                if let svcnet_netpol::Endpoint::Pod(k) = e {
                    anyhow::ensure!(cluster.pod(k).is_some(), "pod {k} not found");
                }
            }
            let verdict = cluster.evaluate(&from, &to, PortProtocol::parse(&args.port)?);
            print!("{}", cluster.explain(&verdict));
            Ok(())
        }
    }
}

fn title(cluster: &Cluster) -> String {
    let names: Vec<String> = cluster.policies().map(|p| p.key.to_string()).collect();
    if names.is_empty() { "NetworkPolicy connectivity (no policies)".into() } else { format!("NetworkPolicy connectivity: {}", names.join(", ")) }
}

/// The cluster from files or from the API.
async fn load(source: &Source) -> anyhow::Result<Cluster> {
    let objects = match &source.offline {
        Some(dir) => Objects::read_dir(dir)?,
        None => live(source.kubeconfig.as_deref()).await?,
    };
    let (cluster, errors) = objects.cluster();
    for e in errors {
        eprintln!("warning: {e}");
    }
    Ok(cluster)
}

async fn live(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Objects> {
    let client = match kubeconfig {
        Some(path) => crate::up::local_client(path).await?,
        None => kube::Client::try_default().await.context("connecting to the cluster (give --kubeconfig or --offline)")?,
    };
    Ok(Objects::list(&client).await?)
}
