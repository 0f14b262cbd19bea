//! svcnet's Service proxy: kube-proxy's job, done with nftables maps.
//!
//! Layers, each depending only on the ones above it:
//!
//! - [`model`] (pure): one Service + its EndpointSlices + the node's name → a [`model::ServicePlan`]
//!   (frontends, endpoints chosen per path with upstream's ready/terminating/local rules).
//! - [`ruleset`] (pure): plans → nftables elements in a fixed skeleton; the full script, and the
//!   transaction that touches only what changed since the last one.
//! - [`netlink`] (pure): the ruleset's elements and dynamic chains as nf_tables netlink batches.
//! - [`nft`] (adapter): the skeleton with `nft -f`, the batches over one netlink socket, and
//!   `conntrack`, `ip` and `arping`, in the node's namespace.
//! - [`l2`] (pure): which node holds each LoadBalancer IP.
//! - [`runner`]: watches, batching, syncing, health-check NodePorts, metrics.
//!
//! The entry point is [`run`].

pub mod error;
pub mod l2;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod nft;
pub mod ruleset;
pub mod runner;

pub use error::{Error, Result};
pub use metrics::Metrics;
pub use runner::{ProxyConfig, run, run_with_metrics};
