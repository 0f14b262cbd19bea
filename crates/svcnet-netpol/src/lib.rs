//! NetworkPolicy for svcnet: the semantics, the nftables enforcement, and the explanations.
//!
//! - [`model`], [`selector`], [`ipblock`]: namespaces, pods and policies compiled from the
//!   `k8s-openapi` objects with the API's defaults.
//! - [`engine`]: the pure verdict on one flow with its explanation ([`Cluster::evaluate`]).
//! - [`matrix`]: the connectivity truth table (text and SVG), as cyclonus prints it.
//! - [`nft`]: the pure compiler from a [`Cluster`] to the desired state of the `inet svcnet-netpol`
//!   table on one node, and the incremental nft script between two states.
//! - [`table`]: that table kept current change by change (only the pods a change touches are
//!   recompiled).
//! - [`runner`]: list+watch of NetworkPolicies, Pods and Namespaces, applying the diffs with
//!   `nft -f -` in the node's network namespace; [`metrics`] reads the drop counters.

pub mod engine;
pub mod ipblock;
pub mod matrix;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod objects;
pub mod runner;
pub mod selector;
pub mod table;

pub use engine::{Cluster, Endpoint, Miss, RuleRef, SideVerdict, Verdict};
pub use model::{Direction, NamespaceInfo, ObjectKey, PodInfo, PodKey, Policy, PolicyKey, PortProtocol, Protocol};
pub use runner::{Applied, NetpolConfig, run, run_observed};

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A label selector that apimachinery would reject.
    #[error("invalid label selector: {0}")]
    InvalidSelector(String),
    /// An `ipBlock` CIDR that does not parse.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// A protocol other than TCP, UDP and SCTP.
    #[error("unsupported protocol {0:?}: must be TCP, UDP or SCTP")]
    InvalidProtocol(String),
    /// A port or port range that is not valid.
    #[error("invalid port: {0}")]
    InvalidPort(String),
    /// A peer that is neither pods nor an ipBlock, or both.
    #[error("invalid peer: {0}")]
    InvalidPeer(String),
    /// A NetworkPolicy that cannot be compiled.
    #[error("NetworkPolicy {policy}: {reason}")]
    InvalidPolicy { policy: String, reason: String },
    /// Not `namespace/name`.
    #[error("{0:?} is not namespace/name")]
    InvalidKey(String),
    /// A file of objects that does not decode.
    #[error("decoding {0}")]
    Decode(String),
    /// `nft` could not be run or rejected a script.
    #[error("nft: {0}")]
    Nft(String),
    /// Reading or writing a file or a process's pipes failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
