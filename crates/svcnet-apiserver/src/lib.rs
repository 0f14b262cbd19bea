//! A Kubernetes-compatible API server over svcnet's store.
//!
//! Requests flow: TLS + token check ([`server`]) → one [`request::Action`] per request
//! ([`request`]) → handlers ([`handlers`]) → the generic REST storage ([`registry`]) → the
//! [`svcnet_store::Storage`]. Watches stream store events ([`watch`]). Discovery and OpenAPI
//! documents are derived from `svcnet_api::resources`.

pub mod apply;
pub mod discovery;
pub mod error;
pub mod handlers;
pub mod kubernetes_service;
pub mod metrics;
pub mod namespace;
pub mod negotiate;
pub mod node_proxy;
pub mod object;
pub mod openapi;
pub mod registry;
pub mod request;
pub mod server;
pub mod service_alloc;
pub mod strategic;
pub mod table;
pub mod tls;
pub mod watch;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use svcnet_store::Storage;

/// How to run the API server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Holds `pki/`, `token` and `kubeconfig`.
    pub data_dir: PathBuf,
    /// Extra names and addresses for the serving certificate.
    pub extra_sans: Vec<String>,
    /// Where ClusterIPs and NodePorts come from.
    pub service_ranges: service_alloc::ServiceRanges,
}

/// A started API server.
pub struct ApiServer {
    pub local_addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub registry: registry::Registry,
    running: server::Running,
}

impl ApiServer {
    /// Prepares the store (built-in namespaces, unfinished namespace deletions), binds, and
    /// serves; the kubeconfig is written once the listener is up.
    pub async fn start(config: Config, store: Arc<dyn Storage>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
        let first_service_ip = config.service_ranges.first_ip();
        let registry = registry::Registry::new(store, config.service_ranges.clone());
        let repaired = registry.services.repair().await.context("repairing service allocations")?;
        if repaired != service_alloc::RepairReport::default() {
            tracing::info!(?repaired, "repaired ClusterIP and NodePort allocations");
        }
        namespace::ensure_built_in(&registry).await.map_err(|e| anyhow::anyhow!("creating built-in namespaces: {e}"))?;
        namespace::resume_terminating(&registry).await.map_err(|e| anyhow::anyhow!("resuming namespace deletions: {e}"))?;

        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let mut hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".into(),
            "::1".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ];
        if !local_addr.ip().is_unspecified() {
            hosts.push(local_addr.ip().to_string());
        }
        // Pods reach the API server through the `kubernetes` Service's ClusterIP.
        hosts.push(first_service_ip.to_string());
        hosts.extend(config.extra_sans.iter().cloned());
        let creds = tls::load_or_create(&config.data_dir, &hosts)?;
        let host = if local_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { local_addr.ip().to_string() };
        let server_address = SocketAddr::new(host.parse()?, local_addr.port()).to_string();
        let state = Arc::new(server::State {
            registry: registry.clone(),
            token: creds.token.clone(),
            metrics: metrics::Metrics::default(),
            server_address: server_address.clone(),
        });
        let running = server::serve(listener, creds.server_config.clone(), state)?;
        kubernetes_service::ensure(&registry, first_service_ip, local_addr).await.map_err(|e| anyhow::anyhow!("creating the kubernetes Service: {e}"))?;
        let kubeconfig = config.data_dir.join("kubeconfig");
        tls::write_kubeconfig(&kubeconfig, &tls::kubeconfig(&format!("https://{server_address}"), &creds.ca_pem, &creds.token))?;
        Ok(Self { local_addr, kubeconfig, registry, running })
    }

    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }
}
