//! `svcnet node`: the node agent alone, in the network namespace it is started in, against any
//! Kubernetes API server (its kubeconfig's): pods, the node's API, the Service proxy and
//! NetworkPolicy enforcement, as `svcnet up` runs them per simulated node.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The kubeconfig of the API server to register with (default: the usual lookup).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The Node's name (default: this machine's hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// The uplink device (default: the device of the default route).
    #[arg(long)]
    pub uplink: Option<String>,
    /// The node's InternalIP (default: the uplink's first IPv4 address).
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// Where pods' files and the address allocation live.
    #[arg(long, default_value = "/var/lib/svcnet-node")]
    pub state_dir: PathBuf,
    /// The cluster CIDR (pod traffic leaving it is masqueraded).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// `routes` or `vxlan`.
    #[arg(long, default_value = "routes")]
    pub overlay: String,
    /// The cluster DNS address written into pods' resolv.conf.
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: IpAddr,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The port of the node's API (logs, exec, port-forward).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    use svcnet_node::network::{NodeConfig, NodeNetwork, Uplink};

    let kubeconfig = match &args.kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path)?,
        None => kube::config::Kubeconfig::read()?,
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &kube::config::KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    // The node's API accepts the same bearer token the agent's kubeconfig carries (the API
    // server presents it when it proxies logs, exec and port-forward).
    let token = kubeconfig
        .auth_infos
        .iter()
        .filter_map(|a| a.auth_info.as_ref())
        .find_map(|i| serde_json::to_value(i).ok()?.get("token")?.as_str().map(str::to_string));
    let name = match args.name.clone() {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_string(),
    };
    let overlay = parse_overlay(&args.overlay)?;
    let uplink = match &args.uplink {
        Some(device) => Uplink::Device { name: device.clone(), node_ip: args.node_ip },
        None => Uplink::DefaultRoute,
    };
    let cluster_cidr = args.cluster_cidr.parse().map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    std::fs::create_dir_all(&args.state_dir)?;
    let network_config = NodeConfig { state_dir: args.state_dir.join("network"), cluster_cidr, overlay };
    let network = Arc::new(NodeNetwork::in_current_netns(&name, uplink, network_config).await.context("setting up the node network")?);
    println!("node {name}: {}", network.node_ip());
    let agent = crate::agent::Agent {
        name,
        network: network.clone(),
        netns_name: None,
        state_dir: args.state_dir.clone(),
        cluster_dns: args.cluster_dns,
        cluster_domain: args.cluster_domain.clone(),
        cluster_cidr,
        token: token.unwrap_or_default(),
        kubelet_port: args.kubelet_port,
    };
    let mut tasks = tokio::task::JoinSet::new();
    crate::agent::spawn(&client, agent, &mut tasks)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stopped_on_its_own = tokio::select! {
        _ = tasks.join_next() => true,
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => false,
    };
    tasks.shutdown().await;
    // The proxy's and NetworkPolicy's tables go with the pods they served (a restarted agent
    // writes them again in its first full sync).
    if let Err(error) = svcnet_proxy::nft::NodeNamespace::new(None).delete_table().await {
        tracing::warn!(%error, "removing the Service proxy's table");
    }
    if let Err(error) = svcnet_netpol::runner::remove_table(None).await {
        tracing::warn!(%error, "removing the NetworkPolicy table");
    }
    // The proxy released the LoadBalancer IPs it held when its task was dropped.
    if let Ok(network) = Arc::try_unwrap(network) {
        network.remove().await?;
    }
    if stopped_on_its_own {
        anyhow::bail!("a part of the node agent stopped (see the log)");
    }
    Ok(())
}

/// `--overlay`: `routes` (one L2 segment) or `vxlan`.
pub fn parse_overlay(text: &str) -> anyhow::Result<svcnet_node::network::Overlay> {
    use svcnet_node::network::Overlay;
    match text {
        "routes" | "none" => Ok(Overlay::None),
        "vxlan" => Ok(Overlay::Vxlan),
        other => anyhow::bail!("--overlay: {other:?} is not one of routes, vxlan"),
    }
}
