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
    #[command(flatten)]
    pub dns: crate::dns::UpDnsArgs,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let options = svcnet_store::RedbStoreOptions { event_log_size: args.watch_history, ..Default::default() };
    let store = svcnet_store::RedbStore::open_with(&args.data_dir.join("store.redb"), options).context("opening the store")?;
    let store: Arc<dyn svcnet_store::Storage> = store;
    let service_ranges = svcnet_apiserver::service_alloc::ServiceRanges::parse(&args.service_cluster_ip_range, &args.service_node_port_range)?;
    let config = svcnet_apiserver::Config { listen: args.api_addr, data_dir: args.data_dir.clone(), extra_sans: args.tls_sans, service_ranges };
    let server = svcnet_apiserver::ApiServer::start(config, store).await?;
    // The first line on stdout is for people and for scripts alike.
    println!("svcnet API server listening on https://{}", server.local_addr);
    println!("export KUBECONFIG={}", server.kubeconfig.display());
    tracing::info!(addr = %server.local_addr, kubeconfig = %server.kubeconfig.display(), "serving");

    // The controllers are API clients like any other: they reach the server through its
    // kubeconfig, so they would run unchanged against another API server.
    let client = local_client(&server.kubeconfig).await?;
    ensure_flag_pool(&client, &args.lb_pools).await?;
    let controllers = tokio::spawn(svcnet_controllers::run(client.clone()));
    let dns_context = crate::dns::UpDnsContext { client: client.clone(), service_cluster_ip_range: args.service_cluster_ip_range.clone(), node_facing: None };
    let dns = crate::dns::start_in_up(&args.dns, dns_context).await?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    controllers.abort();
    dns.abort();
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
