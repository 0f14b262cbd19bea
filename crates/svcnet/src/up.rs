//! `svcnet up`: everything in one process on an embedded store.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Directory for the store, certificates, token and kubeconfig.
    #[arg(long, default_value = "/var/lib/svcnet", env = "SVCNET_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address of the Kubernetes API (HTTPS); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub api_addr: SocketAddr,
    /// Extra names or addresses for the API server's certificate.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// How many recent changes watches can resume from; older resourceVersions get 410 Expired
    /// (kube-apiserver keeps about five minutes of history in its watch cache).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_history: u64,
    /// The range ClusterIPs are allocated from (IPv4). The `kubernetes` Service gets its first
    /// address; cluster DNS conventionally takes the tenth.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// The range NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Addresses for LoadBalancer Services, as a CIDR or FIRST-LAST range; may be repeated.
    /// Kept as the IPAddressPool `svcnet-up`; more pools can be added as API objects.
    #[arg(long = "lb-pool")]
    pub lb_pools: Vec<String>,
    /// How many nodes to simulate on this machine, each a network namespace on the host bridge
    /// running the node agent (pods, Service proxy, NetworkPolicy); 0 runs only the control plane.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// The host bridge the nodes are attached to (at most 8 characters).
    #[arg(long, default_value = "svcnet0")]
    pub bridge: String,
    /// The node network: the host takes its first address, node-N the (N+1)th.
    #[arg(long, default_value = "172.30.0.0/16")]
    pub node_cidr: String,
    /// The pod network: each node gets a /24 of it as its podCIDR.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// How nodes reach each other's pods: `routes` (one L2 segment) or `vxlan` (an overlay).
    #[arg(long, default_value = "routes")]
    pub overlay: String,
    #[command(flatten)]
    pub dns: crate::dns::UpDnsArgs,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let options = svcnet_store::RedbStoreOptions { event_log_size: args.watch_history, ..Default::default() };
    let store = svcnet_store::RedbStore::open_with(&args.data_dir.join("store.redb"), options).context("opening the store")?;
    let store: Arc<dyn svcnet_store::Storage> = store;
    let service_ranges = svcnet_apiserver::service_alloc::ServiceRanges::parse(&args.service_cluster_ip_range, &args.service_node_port_range)?;
    let config = svcnet_apiserver::Config { listen: args.api_addr, data_dir: args.data_dir.clone(), extra_sans: args.tls_sans.clone(), service_ranges };
    let server = svcnet_apiserver::ApiServer::start(config, store).await?;
    // The first line on stdout is for people and for scripts alike.
    println!("svcnet API server listening on https://{}", server.local_addr);
    println!("export KUBECONFIG={}", server.kubeconfig.display());
    tracing::info!(addr = %server.local_addr, kubeconfig = %server.kubeconfig.display(), "serving");

    // The controllers are API clients like any other: they reach the server through its
    // kubeconfig, so they would run unchanged against another API server.
    let client = local_client(&server.kubeconfig).await?;
    ensure_flag_pool(&client, &args.lb_pools).await?;
    let cluster_cidr = svcnet_controllers::nodes::ClusterCidr::parse(&args.cluster_cidr).map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    let controller_config = svcnet_controllers::Config { cluster_cidr: Some(cluster_cidr) };
    let controllers = tokio::spawn(svcnet_controllers::run_with(client.clone(), controller_config));
    // The nodes: a host bridge, and per node a namespace running the node agent, the Service
    // proxy and NetworkPolicy enforcement, each a client of the API like any other.
    let mut nodes = Nodes::default();
    if args.nodes > 0 {
        nodes = start_nodes(&args, &client).await?;
    }
    let node_facing = nodes.host.as_ref().map(|h| std::net::IpAddr::V4(h.host_ip()));
    let dns_context = crate::dns::UpDnsContext { client: client.clone(), service_cluster_ip_range: args.service_cluster_ip_range.clone(), node_facing };
    let dns = crate::dns::start_in_up(&args.dns, dns_context).await?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    controllers.abort();
    dns.abort();
    nodes.stop().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// A `kube` client for the kubeconfig `svcnet up` wrote.
pub async fn local_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Makes the IPAddressPool `svcnet-up` hold exactly the `--lb-pool` ranges (and removes it when
/// none are given), so that the flags behave like configuration.
async fn ensure_flag_pool(client: &kube::Client, ranges: &[String]) -> anyhow::Result<()> {
    use kube::api::{Api, DeleteParams, Patch, PatchParams};

    use svcnet_api::svcnet_io::{AddressRange, IPAddressPool};
    const NAME: &str = "svcnet-up";
    for r in ranges {
        AddressRange::parse(r).map_err(|e| anyhow::anyhow!("--lb-pool: {e}"))?;
    }
    let api: Api<IPAddressPool> = Api::all(client.clone());
    if ranges.is_empty() {
        match api.delete(NAME, &DeleteParams::default()).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let pool = serde_json::json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": NAME, "labels": {"app.kubernetes.io/managed-by": "svcnet-up"}},
        "spec": {"addresses": ranges, "autoAssign": true}
    });
    if api.get_opt(NAME).await?.is_some() {
        api.patch(NAME, &PatchParams::default(), &Patch::Merge(&pool)).await?;
    } else {
        api.create(&Default::default(), &serde_json::from_value(pool)?).await?;
    }
    Ok(())
}

/// What `svcnet up` runs for its nodes.
#[derive(Default)]
struct Nodes {
    host: Option<svcnet_node::network::HostNetwork>,
    networks: Vec<Arc<svcnet_node::network::NodeNetwork>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Nodes {
    /// Stops every agent (their pods' processes are killed with them) and removes every
    /// namespace, link and table the nodes made.
    async fn stop(mut self) {
        self.tasks.shutdown().await;
        for network in self.networks.drain(..) {
            match Arc::try_unwrap(network) {
                Ok(network) => {
                    if let Err(error) = network.remove().await {
                        tracing::warn!(%error, "removing a node network");
                    }
                }
                Err(_) => tracing::warn!("a node network is still in use; removed with the host network"),
            }
        }
        if let Some(host) = self.host.take()
            && let Err(error) = host.shutdown().await
        {
            tracing::warn!(%error, "removing the host bridge");
        }
    }
}

async fn start_nodes(args: &UpArgs, client: &kube::Client) -> anyhow::Result<Nodes> {
    use svcnet_node::network::{HostConfig, HostNetwork, NodeConfig};

    let overlay = crate::node::parse_overlay(&args.overlay)?;
    let node_network = args.node_cidr.parse().map_err(|e| anyhow::anyhow!("--node-cidr {:?}: {e}", args.node_cidr))?;
    let cluster_cidr: ipnet::Ipv4Net = args.cluster_cidr.parse().map_err(|e| anyhow::anyhow!("--cluster-cidr {:?}: {e}", args.cluster_cidr))?;
    let host = HostNetwork::create(HostConfig { bridge: args.bridge.clone(), node_network }).await.context("creating the host bridge")?;
    let token = std::fs::read_to_string(args.data_dir.join("token")).context("reading the API token")?.trim().to_string();
    let cluster_dns = svcnet_dns::kube_dns::cluster_dns_ip(&args.service_cluster_ip_range).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut nodes = Nodes::default();
    for index in 1..=args.nodes {
        let name = format!("node-{index}");
        let state_dir = args.data_dir.join("nodes").join(&name);
        std::fs::create_dir_all(&state_dir)?;
        let config = NodeConfig { state_dir: state_dir.join("network"), cluster_cidr, overlay };
        let network = Arc::new(host.create_node(&name, index, config).await.with_context(|| format!("creating node {name}"))?);
        // Frames between isolated bridge ports must not be handed to the IP hooks a second time
        // when some process on the machine loaded br_netfilter.
        let _ = network.netns().set_sysctl("net/bridge/bridge-nf-call-iptables", "0");
        let netns_name = host.node_netns_name(&name);
        println!("node {name}: {} (namespace {netns_name})", network.node_ip());
        let agent = crate::agent::Agent {
            name,
            network: network.clone(),
            netns_name: Some(netns_name),
            state_dir,
            cluster_dns,
            cluster_domain: args.dns.cluster_domain.clone(),
            cluster_cidr,
            token: token.clone(),
            kubelet_port: crate::agent::KUBELET_PORT,
        };
        crate::agent::spawn(client, agent, &mut nodes.tasks)?;
        nodes.networks.push(network);
    }
    nodes.host = Some(host);
    Ok(nodes)
}
