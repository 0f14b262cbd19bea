//! The controllers that turn Services into what the data plane programs: Endpoints and
//! EndpointSlices from the pods a Service selects (and EndpointSlices mirrored from user-written
//! Endpoints), and the addresses of LoadBalancer Services ([`loadbalancer`]). They talk only to
//! the Kubernetes API, through `kube`'s watchers, so they run unchanged against svcnet's API
//! server or any other.
//!
//! The decisions are pure functions ([`endpoints::desired`], [`endpointslice::desired`],
//! [`endpointslice::mirrored`], [`endpointslice::plan`]); [`controller`] only feeds them from
//! caches and writes their results.

mod cache;
pub mod controller;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod loadbalancer;
pub mod nodes;
pub mod pod;
mod queue;
#[cfg(test)]
mod testutil;
pub mod workloads;

/// What can stop a reconcile (retried with backoff) or, for the watch errors, the controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A watch stream ended; the watcher retries forever, so this does not happen on its own.
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
    /// A cache's writer went away before the cache was filled.
    #[error("the {0} cache was dropped before it was filled")]
    StoreDropped(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs every controller; returns only on a fatal error (which it also logs, since `svcnet up`
/// runs this in a task of its own).
pub async fn run(client: kube::Client) -> Result<()> {
    run_with(client, Config::default()).await
}

/// What `svcnet up` configures.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `--cluster-cidr`: nodes get their podCIDR from it ([`nodes`]); `None` leaves podCIDRs alone.
    pub cluster_cidr: Option<nodes::ClusterCidr>,
}

/// [`run`] with configuration.
pub async fn run_with(client: kube::Client, config: Config) -> Result<()> {
    let result = tokio::try_join!(
        controller::run(client.clone()),
        workloads::run(client.clone()),
        loadbalancer::run(client.clone()),
        nodes::run(client.clone(), config.cluster_cidr),
        gc::run(client)
    )
    .map(|_| ());
    if let Err(error) = &result {
        tracing::error!(%error, "the Service controllers stopped");
    }
    result
}
