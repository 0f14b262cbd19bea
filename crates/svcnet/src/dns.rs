//! `svcnet dns`, and the cluster DNS server that `svcnet up` starts.

/// `svcnet dns`.
#[derive(clap::Args)]
pub struct DnsArgs {}

/// The DNS flags of `svcnet up`.
#[derive(clap::Args)]
pub struct UpDnsArgs {}

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

pub async fn run(_args: DnsArgs) -> anyhow::Result<()> {
    anyhow::bail!("svcnet dns: not built yet")
}

/// Starts cluster DNS for `svcnet up`; the returned task serves until aborted.
pub async fn start_in_up(_args: &UpDnsArgs, _context: UpDnsContext) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async {}))
}
