//! What runs on a node, for `svcnet up` (per simulated node) and `svcnet node` alike: the
//! kubelet, the node's API, the Service proxy and NetworkPolicy enforcement, each a client of the
//! Kubernetes API.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use svcnet_node::network::NodeNetwork;

/// The port of the node's API (the kubelet's).
pub const KUBELET_PORT: u16 = 10250;

/// One node's agent.
pub struct Agent {
    pub name: String,
    pub network: Arc<NodeNetwork>,
    /// The node's namespace by name (`ip netns`), or `None` for the current one.
    pub netns_name: Option<String>,
    /// Pods' files.
    pub state_dir: PathBuf,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The bearer token the node's API accepts (the one the API server presents).
    pub token: String,
    pub kubelet_port: u16,
}

/// Starts the agent's parts as tasks of `tasks`; each logs why it stopped.
pub fn spawn(client: &kube::Client, agent: Agent, tasks: &mut tokio::task::JoinSet<()>) -> anyhow::Result<()> {
    let Agent { name, network, netns_name, state_dir, cluster_dns, cluster_domain, cluster_cidr, token, kubelet_port } = agent;
    let node_ip = network.node_ip();

    let registry = Arc::new(svcnet_node::kubelet::Registry::default());
    let listener = svcnet_node::server::bind_in(&network.netns(), SocketAddr::new(node_ip.into(), kubelet_port))?;
    let server_config = svcnet_node::server::ServerConfig { token, hosts: vec![name.clone(), node_ip.to_string()] };
    let runtime: Arc<dyn svcnet_node::runtime::PodRuntime> = registry.clone();
    spawn_logged(tasks, format!("{name}: node API"), async move { Ok(svcnet_node::server::serve(listener, runtime, server_config).await?) });

    let kubelet_config = svcnet_node::kubelet::KubeletConfig {
        node_name: name.clone(),
        node_ip,
        state_dir,
        dns: svcnet_node::kubelet::dns::ClusterDns {
            nameservers: vec![cluster_dns.to_string()],
            domain: cluster_domain,
            host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        },
        kubelet_port,
        agnhost: std::env::current_exe().ok(),
        labels: Default::default(),
    };
    let uplink = network.uplink().to_string();
    let networking: Arc<dyn svcnet_node::kubelet::PodNetworking> = network;
    spawn_logged(tasks, format!("{name}: kubelet"), svcnet_node::kubelet::run(client.clone(), kubelet_config, networking, registry));

    let mut proxy = svcnet_proxy::ProxyConfig::new(name.clone(), netns_name.clone(), vec![node_ip.into()]);
    proxy.cluster_cidrs = vec![ipnet::IpNet::V4(cluster_cidr)];
    // LoadBalancer IPs are held on the node's uplink (eth0 on simulated nodes; any name on a
    // machine running `svcnet node`).
    proxy.lb_interface = Some(uplink);
    let client_proxy = client.clone();
    spawn_logged(tasks, format!("{name}: service proxy"), async move { Ok(svcnet_proxy::run(client_proxy, proxy).await?) });

    let netpol = svcnet_netpol::NetpolConfig::new(name.clone(), netns_name);
    let client_netpol = client.clone();
    spawn_logged(tasks, format!("{name}: network policy"), async move { Ok(svcnet_netpol::run(client_netpol, netpol).await?) });
    Ok(())
}

fn spawn_logged<F>(tasks: &mut tokio::task::JoinSet<()>, what: String, future: F)
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tasks.spawn(async move {
        if let Err(error) = future.await {
            tracing::error!(error = format!("{error:#}"), "{what} stopped");
        }
    });
}
