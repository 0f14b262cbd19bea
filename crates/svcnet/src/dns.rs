//! `svcnet dns`, and the cluster DNS server that `svcnet up` starts.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use svcnet_dns::{DnsConfig, DnsServer, Metrics, kube_dns};

/// How often `svcnet up` checks that `kube-system/kube-dns` and its EndpointSlice are still what
/// they should be (someone may have deleted or edited them).
const KUBE_DNS_RECHECK: Duration = Duration::from_secs(30);
/// How soon to try again when the API server refused.
const KUBE_DNS_RETRY: Duration = Duration::from_secs(2);

/// `svcnet dns`.
#[derive(clap::Args)]
pub struct DnsArgs {
    /// The API server to serve the cluster of. Default: `$KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address to answer on, UDP and TCP; may be repeated. Port 0 picks a free port.
    #[arg(long = "listen", default_value = "127.0.0.1:53")]
    pub listen: Vec<SocketAddr>,
    /// The cluster zone.
    #[arg(long, default_value = "cluster.local")]
    pub zone: String,
    /// TTL of every answer (and the negative-caching TTL in the SOA).
    #[arg(long, default_value_t = 5)]
    pub ttl: u32,
    /// Resolver for names outside the zone (`IP` or `IP:PORT`); may be repeated. Default: the
    /// nameservers of /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_parser = parse_upstream)]
    pub dns_upstream: Vec<SocketAddr>,
    /// Serve Prometheus metrics (CoreDNS's names) at http://ADDR/metrics.
    #[arg(long)]
    pub dns_metrics_addr: Option<SocketAddr>,
}

/// The DNS flags of `svcnet up`.
#[derive(clap::Args)]
pub struct UpDnsArgs {
    /// Loopback address the cluster DNS answers on for the host (UDP and TCP); port 0 picks a
    /// free port, printed at startup.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dns_addr: SocketAddr,
    /// Resolver for names outside the cluster zone (`IP` or `IP:PORT`); may be repeated.
    /// Default: the nameservers of /etc/resolv.conf.
    #[arg(long = "dns-upstream", value_parser = parse_upstream)]
    pub dns_upstream: Vec<SocketAddr>,
    /// The cluster zone.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// TTL of every cluster DNS answer.
    #[arg(long, default_value_t = 5)]
    pub dns_ttl: u32,
    /// Where cluster DNS serves Prometheus metrics (http://ADDR/metrics), printed at startup.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dns_metrics_addr: SocketAddr,
}

/// What `svcnet up` knows when it starts cluster DNS.
pub struct UpDnsContext {
    /// A client of the local API server.
    pub client: kube::Client,
    /// `--service-cluster-ip-range`: `kube-dns` gets its tenth address.
    pub service_cluster_ip_range: String,
    /// The host's address on the node network (the `svcnet0` bridge), when nodes run: pods reach
    /// the DNS server there, through the `kube-dns` Service.
    pub node_facing: Option<std::net::IpAddr>,
}

/// `IP` (port 53) or `IP:PORT`.
fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)).map_err(|_| format!("{s:?} is neither IP nor IP:PORT"))
}

fn upstreams(flags: &[SocketAddr]) -> Vec<SocketAddr> {
    if flags.is_empty() { svcnet_dns::config::system_upstreams() } else { flags.to_vec() }
}

/// Binds the metrics listener and serves it in the background; returns its address.
async fn start_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("DNS metrics: cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = svcnet_dns::metrics::serve_http(listener, metrics).await {
            tracing::error!(%error, "DNS metrics listener failed");
        }
    });
    Ok((local, task))
}

pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let client = match &args.kubeconfig {
        Some(path) => crate::up::local_client(path).await.with_context(|| format!("reading {}", path.display()))?,
        None => kube::Client::try_default().await.context("no --kubeconfig, and no default kubeconfig or in-cluster config")?,
    };
    let config =
        DnsConfig { listen: args.listen.clone(), zone: args.zone.clone(), ttl: args.ttl, upstreams: upstreams(&args.dns_upstream), ..DnsConfig::default() };
    let server = DnsServer::bind(config).await?;
    for addr in server.local_addrs() {
        println!("cluster DNS on {addr}");
    }
    let metrics = match args.dns_metrics_addr {
        Some(addr) => {
            let (local, task) = start_metrics(addr, server.metrics()).await?;
            println!("DNS metrics on http://{local}/metrics");
            Some(task)
        }
        None => None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = server.serve(client) => r.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    if let Some(task) = metrics {
        task.abort();
    }
    result
}

/// Starts cluster DNS for `svcnet up`; the returned task serves until aborted.
///
/// It listens on `--dns-addr` (printed, for the host) and, with `node_facing`, on
/// `node_facing:53` for pods; serves metrics on `--dns-metrics-addr` (printed); and keeps the
/// `kube-system/kube-dns` Service (always: pods' resolv.conf names its ClusterIP) and, with
/// `node_facing`, its EndpointSlice pointing at `node_facing:53`.
pub async fn start_in_up(args: &UpDnsArgs, context: UpDnsContext) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let cluster_ip = kube_dns::cluster_dns_ip(&context.service_cluster_ip_range)?;
    let mut listen = vec![args.dns_addr];
    if let Some(ip) = context.node_facing {
        listen.push(SocketAddr::new(ip, 53));
    }
    let config = DnsConfig { listen, zone: args.cluster_domain.clone(), ttl: args.dns_ttl, upstreams: upstreams(&args.dns_upstream), ..DnsConfig::default() };
    let server = DnsServer::bind(config).await?;
    // kube-dns is in place before svcnet up says DNS is up (pods' resolv.conf and anyone counting
    // the service range's free addresses can rely on it); the keeper below then re-checks it.
    let mut first_pause = KUBE_DNS_RECHECK;
    if let Err(error) = kube_dns::ensure(&context.client, cluster_ip, context.node_facing).await {
        tracing::warn!(%error, "cannot put the kube-dns Service in place; retrying");
        first_pause = KUBE_DNS_RETRY;
    }
    let local = server.local_addr();
    let zone = args.cluster_domain.trim_end_matches('.');
    println!("cluster DNS on {local} (try: dig @{} -p {} backend.default.svc.{zone})", local.ip(), local.port());
    let (metrics_addr, metrics) = start_metrics(args.dns_metrics_addr, server.metrics()).await?;
    println!("cluster DNS metrics on http://{metrics_addr}/metrics");

    let client = context.client;
    let node_facing = context.node_facing;
    let keeper = {
        let client = client.clone();
        async move {
            tokio::time::sleep(first_pause).await;
            loop {
                let pause = match kube_dns::ensure(&client, cluster_ip, node_facing).await {
                    Ok(()) => {
                        tracing::debug!(%cluster_ip, ?node_facing, "kube-dns Service in place");
                        KUBE_DNS_RECHECK
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot put the kube-dns Service in place; retrying");
                        KUBE_DNS_RETRY
                    }
                };
                tokio::time::sleep(pause).await;
            }
        }
    };
    Ok(tokio::spawn(async move {
        // Aborting this task drops these futures; the metrics listener is its own task.
        let _metrics = AbortOnDrop(metrics);
        tokio::select! {
            r = server.serve(client) => if let Err(error) = r { tracing::error!(%error, "cluster DNS stopped") },
            () = keeper => {}
        }
    }))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
