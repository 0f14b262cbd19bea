//! `svcnet node`: the node agent alone, in the network namespace it is started in, against any
//! Kubernetes API server (its kubeconfig's): pods, the node's API, the Service proxy and
//! NetworkPolicy enforcement, as `svcnet up` runs them per simulated node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    use svcnet_node::network::{NodeConfig, NodeNetwork, Overlay, Uplink};

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
    let overlay = match args.overlay.as_str() {
        "routes" | "none" => Overlay::None,
        "vxlan" => Overlay::Vxlan,
        other => anyhow::bail!("--overlay: {other:?} is not one of routes, vxlan"),
    };
    let uplink = match &args.uplink {
        Some(device) => Uplink::Device { name: device.clone(), node_ip: args.node_ip },
        None => Uplink::DefaultRoute,
    };
    let cluster_cidr = args.cluster_cidr.parse().map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    std::fs::create_dir_all(&args.state_dir)?;
    let network_config = NodeConfig { state_dir: args.state_dir.join("network"), cluster_cidr, overlay };
    let network = Arc::new(NodeNetwork::in_current_netns(&name, uplink, network_config).await.context("setting up the node network")?);
    let node_ip = network.node_ip();

    let registry = Arc::new(svcnet_node::kubelet::Registry::default());
    let listener = svcnet_node::server::bind_in(&network.netns(), SocketAddr::new(node_ip.into(), args.kubelet_port))?;
    let server_config = svcnet_node::server::ServerConfig { token: token.unwrap_or_default(), hosts: vec![name.clone(), node_ip.to_string()] };
    let runtime: Arc<dyn svcnet_node::runtime::PodRuntime> = registry.clone();
    let api = tokio::spawn(svcnet_node::server::serve(listener, runtime, server_config));

    let kubelet_config = svcnet_node::kubelet::KubeletConfig {
        node_name: name.clone(),
        node_ip,
        state_dir: args.state_dir.clone(),
        dns: svcnet_node::kubelet::dns::ClusterDns {
            nameservers: vec![args.cluster_dns.to_string()],
            domain: args.cluster_domain.clone(),
            host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        },
        kubelet_port: args.kubelet_port,
        agnhost: std::env::current_exe().ok(),
        labels: Default::default(),
    };
    let networking: Arc<dyn svcnet_node::kubelet::PodNetworking> = network.clone();
    let mut proxy = svcnet_proxy::ProxyConfig::new(name.clone(), None, vec![node_ip.into()]);
    proxy.cluster_cidrs = vec![ipnet::IpNet::V4(cluster_cidr)];
    let netpol = svcnet_netpol::NetpolConfig::new(name.clone(), None);
    println!("node {name}: {node_ip}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = svcnet_node::kubelet::run(client.clone(), kubelet_config, networking, registry) => r,
        r = svcnet_proxy::run(client.clone(), proxy) => r.map_err(Into::into),
        r = svcnet_netpol::run(client.clone(), netpol) => r.map_err(Into::into),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    api.abort();
    if let Ok(network) = Arc::try_unwrap(network) {
        network.remove().await?;
    }
    result
}
