//! Cluster DNS for svcnet: the Kubernetes DNS-Based Service Discovery specification (schema
//! 1.1.0), answered the way CoreDNS's kubernetes plugin answers, from list+watch of Services,
//! EndpointSlices, Pods and Namespaces.
//!
//! Layers, each depending only on the ones above it:
//! - [`snapshot`]: the pure core. An immutable index built from the cluster's objects, and
//!   [`Snapshot::answer`], which gives records, NODATA, NXDOMAIN, SERVFAIL-before-sync, or "not
//!   ours" for one question.
//! - [`message`]: requests to responses (flags, SOA in negative answers, EDNS0, truncation).
//! - `forward`: names outside the zone go to upstream resolvers, with a small cache.
//! - [`index`]: the incremental builder: each watch event changes only the snapshot keys its
//!   object touches; snapshots are persistent maps, so publishing one is O(1).
//! - `watch`: watches of the four kinds feeding the index; a snapshot is published after each
//!   batch of ready events.
//! - [`metrics`]: Prometheus metrics under CoreDNS's names.
//! - `server`: the UDP and TCP listeners.
//!
//! To run it: [`DnsServer::bind`] with a [`DnsConfig`], read the bound addresses, then
//! [`DnsServer::serve`] with a `kube::Client`; or [`run`] to do both.

pub mod config;
mod forward;
pub mod fuzzing;
pub mod index;
pub mod kube_dns;
pub mod message;
pub mod metrics;
mod server;
pub mod snapshot;
mod watch;
mod wire;

use std::{io, net::SocketAddr};

pub use config::DnsConfig;
pub use index::Index;
pub use metrics::Metrics;
pub use server::{DnsServer, SnapshotHandle};
pub use snapshot::{Answer, Snapshot};

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// The configured zone is not a valid domain name.
    #[error("invalid DNS zone {zone:?}: {reason}")]
    Zone {
        /// The zone as configured.
        zone: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No listen address was configured.
    #[error("no DNS listen address configured")]
    NoListenAddress,
    /// A reflector's store went away before it synced (the watch task ended).
    #[error("the {0} cache ended before it synced")]
    CacheEnded(&'static str),
    /// A listener failed.
    #[error("DNS listener failed: {0}")]
    Io(#[from] io::Error),
    /// The service range cannot give cluster DNS its address.
    #[error("service range {range:?}: {reason}")]
    ServiceRange {
        /// The range as configured.
        range: String,
        /// Why it does not do.
        reason: String,
    },
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// An object of ours did not decode as its type (a bug).
    #[error("invalid object: {0}")]
    Json(#[from] serde_json::Error),
    /// The `kube-dns` Service or EndpointSlice could not be put right.
    #[error("kube-dns: {0}")]
    KubeDns(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Binds the listeners of `config` and serves the cluster zone from `client`'s API server until
/// a listener fails. Use [`DnsServer::bind`] to learn the bound addresses first.
pub async fn run(client: kube::Client, config: DnsConfig) -> Result<()> {
    DnsServer::bind(config).await?.serve(client).await
}
