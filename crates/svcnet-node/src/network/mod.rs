//! The node's network plumbing: what a CNI plugin (`bridge` + `host-local`, flannel's routes or
//! VXLAN) and `svcnet up`'s node simulation do. Knows nothing of Kubernetes: callers give it names,
//! UIDs and CIDRs.
//!
//! # Layout
//!
//! ```text
//!  host namespace (or a test's)          node namespace `<bridge>-<node>`           pod namespace `<bridge>-<node>_<uid>`
//!  ┌──────────────────────────┐          ┌─────────────────────────────────┐        ┌──────────────────────────┐
//!  │ svcnet0  172.30.0.1/16   │◀─veth───▶│ eth0  172.30.0.2/16             │        │ eth0  10.244.1.2/24      │
//!  │ (bridge) <bridge>n<idx>  │          │ default via 172.30.0.1          │        │ default via 10.244.1.1   │
//!  └──────────────────────────┘          │ cbr0  10.244.1.1/24 ◀─isolated──┼─veth──▶│ lo up                    │
//!                                        │  proxy_arp, proxy_arp_pvlan     │  vp<h> └──────────────────────────┘
//!                                        │ ip_forward=1                    │
//!                                        │ 10.244.2.0/24 via 172.30.0.3    │ (or svcnet.vxlan, VNI 1, port 8472)
//!                                        │ table inet svcnet-node (masq)   │
//!                                        └─────────────────────────────────┘
//! ```
//!
//! - [`HostNetwork`] (for `svcnet up`): the host bridge with the node network's first address,
//!   and one [`NodeNetwork`] per simulated node, each in its own namespace with `eth0` on the
//!   bridge. It changes nothing else in the host namespace: no sysctls, no routes besides the
//!   connected route of the bridge's address, no firewall.
//! - [`NodeNetwork`]: one node's pod network, in a namespace made by [`HostNetwork::create_node`]
//!   or in the namespace `svcnet node` runs in ([`NodeNetwork::in_current_netns`]). The pod bridge
//!   `cbr0` has the podCIDR's first address; every pod's veth is an *isolated* port of it, and
//!   `cbr0` answers ARP for every address (proxy_arp + proxy_arp_pvlan), so every packet between
//!   two pods, even on one node, is routed by the node namespace and passes its `inet`
//!   prerouting, forward and postrouting hooks (Service DNAT, hairpin and NetworkPolicy rely on
//!   this).
//! - Other nodes' podCIDRs are reached by routes via their node IPs ([`Overlay::None`]), or through
//!   a flannel-style VXLAN device ([`Overlay::Vxlan`]).
//! - Pod traffic to destinations outside the cluster CIDR is masqueraded to the node's address by
//!   the nftables table `inet svcnet-node`. That includes the node network itself (other nodes'
//!   and the host's addresses): the host has no routes to pod CIDRs (we never add host routes),
//!   so its replies to a pod address (cluster DNS listens on the host bridge) would be lost.
//!   Traffic between pods is never masqueraded, on one node or across nodes.
//! - Pod addresses come from [`Ipam`], persisted under the node's state directory.
//!
//! # The host's firewall
//!
//! Frames between simulated nodes cross the host bridge. On a host with `br_netfilter` active
//! (`net.bridge.bridge-nf-call-iptables = 1`) they also pass the host's own `forward` hooks, so a
//! host firewall whose forward policy drops (Docker's does) drops node-to-node traffic too. We do
//! not change the host's firewall; such a host needs a rule accepting traffic on the bridge.
//!
//! # Names
//!
//! Everything is named so that a later run finds what an earlier one (killed with `kill -9`) left:
//! node namespaces `<bridge>-<node>` and host-side links `<bridge>n<index>` (the bridge name is at
//! most 8 bytes so these fit in 15), pod namespaces `<node prefix>_<uid>` ([`pod_netns_name`]; `_`
//! cannot appear in a node name, so one node's pods never look like another node), pod veths
//! `vp<hash of uid>` ([`pod_veth_name`]). Routes to other nodes carry the routing protocol number
//! [`ROUTE_PROTOCOL`], so they are told apart from anyone else's.

mod host;
mod ipam;
mod nft;
mod node;

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

pub use host::{HostConfig, HostNetwork};
pub use ipam::{Ipam, gateway};
pub use node::{NodeConfig, NodeNetwork, Overlay, PodNetwork, ReconcileReport, Uplink};

/// The host bridge's name unless configured.
pub const DEFAULT_BRIDGE: &str = "svcnet0";
/// The node network unless configured: the host bridge has its first address, node `i` (from 1)
/// the address `i + 1`.
pub const DEFAULT_NODE_NETWORK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(172, 30, 0, 0), 16);
/// The cluster CIDR unless configured (each node's podCIDR is a /24 of it).
pub const DEFAULT_CLUSTER_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16);
/// The longest host bridge name: `<bridge>n<index>` must fit in 15 bytes.
pub const MAX_BRIDGE_NAME: usize = 8;
/// The pod bridge in a node's namespace.
pub const POD_BRIDGE: &str = "cbr0";
/// The uplink of a node made by [`HostNetwork::create_node`], and every pod's interface.
pub const ETH0: &str = "eth0";
/// The VXLAN device of [`Overlay::Vxlan`].
pub const VXLAN_DEVICE: &str = "svcnet.vxlan";
/// The VXLAN network identifier (flannel's default).
pub const VXLAN_VNI: u32 = 1;
/// The VXLAN UDP port (flannel's and the Linux default, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// What VXLAN encapsulation costs of the underlay's MTU (IPv4 + UDP + VXLAN + inner Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The node's nftables table (family `inet`): pod masquerade.
pub const NFT_TABLE: &str = "svcnet-node";
/// The routing protocol number (`ip route ... proto 83`) of the routes to other nodes' podCIDRs.
pub const ROUTE_PROTOCOL: u8 = 83;

/// Errors of the node's network plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace, link, address, route or sysctl operation failed.
    #[error(transparent)]
    Netns(#[from] svcnet_netns::Error),

    /// A state file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The address allocator's state file cannot be read as one.
    #[error("pod address state {path}: {reason}")]
    StateCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Another process holds the address allocator's lock.
    #[error("{path} is locked by another process (another node agent with the same state directory?)")]
    StateLocked {
        /// The lock file.
        path: PathBuf,
    },

    /// Every pod address of the podCIDR is allocated.
    #[error("no free address in {cidr}: all {capacity} pod addresses are allocated")]
    RangeFull {
        /// The podCIDR.
        cidr: Ipv4Net,
        /// How many pod addresses it has.
        capacity: u32,
    },

    /// A setting that cannot work (a bridge name too long, a node index outside the node network).
    #[error("{0}")]
    Config(String),

    /// The node already has another podCIDR.
    #[error("the node's pod CIDR is {current}; it cannot change to {requested} while the node's network exists")]
    PodCidrChanged {
        /// The podCIDR in use.
        current: Ipv4Net,
        /// The one asked for.
        requested: Ipv4Net,
    },

    /// Pods cannot be attached (or VXLAN peers set) before the node has a podCIDR.
    #[error("the node has no pod CIDR yet")]
    NoPodCidr,

    /// `nft` failed.
    #[error("nft: {0}")]
    Nft(String),

    /// A link we need to create exists and is not of the kind we would create.
    #[error("link {name:?} exists and is a {kind}, not a {expected}")]
    LinkKindMismatch {
        /// The link's name.
        name: String,
        /// What it is.
        kind: String,
        /// What we need.
        expected: &'static str,
    },

    /// The uplink device or the node's address could not be found.
    #[error("uplink: {0}")]
    Uplink(String),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// A link that is already gone (`ENODEV`) was deleted as far as we care.
pub(crate) fn ignore_gone(result: svcnet_netns::Result<()>) -> Result<()> {
    match result {
        Err(e) if e.errno() == Some(nix::errno::Errno::ENODEV) => Ok(()),
        other => Ok(other?),
    }
}

/// The name of the network namespace of pod `uid` on the node whose pod namespaces start with
/// `node_prefix` ([`NodeNetwork::pod_netns_prefix`]): `<node_prefix>_<uid>`, with the UID itself
/// when it is made of letters, digits, `-` and `.` (Kubernetes UIDs are), else a hash of it.
pub fn pod_netns_name(node_prefix: &str, uid: &str) -> String {
    let plain = !uid.is_empty() && uid.len() <= 64 && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') && uid != "." && uid != "..";
    if plain { format!("{node_prefix}_{uid}") } else { format!("{node_prefix}_h{:016x}", fnv1a(uid)) }
}

/// The node-side name of pod `uid`'s veth: `vp` and 12 hex digits of a hash of the UID (link
/// names have at most 15 bytes, UIDs 36).
pub fn pod_veth_name(uid: &str) -> String {
    format!("vp{:012x}", fnv1a(uid) >> 16)
}

/// The prefix of [`pod_veth_name`]s.
pub const POD_VETH_PREFIX: &str = "vp";

/// FNV-1a, 64 bits: stable across runs and versions (unlike `std`'s hasher), which the names
/// derived from it must be.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The MAC address of a node's VXLAN device, derived from its node IP, so that peers know it from
/// the IP alone (flannel publishes it in a Node annotation instead): `0e:76` (locally
/// administered, unicast) followed by the four bytes of the address.
pub fn vtep_mac(node_ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = node_ip.octets();
    [0x0e, 0x76, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(pod_netns_name("svcnet0-node-1", "6f0c7a52-1c7e-4b59-9d8e-0a3c5d6e7f80"), "svcnet0-node-1_6f0c7a52-1c7e-4b59-9d8e-0a3c5d6e7f80");
        let hashed = pod_netns_name("p", "a/b");
        assert!(hashed.starts_with("p_h") && !hashed.contains('/'), "{hashed}");
        let veth = pod_veth_name("6f0c7a52-1c7e-4b59-9d8e-0a3c5d6e7f80");
        assert_eq!(veth.len(), 14);
        assert!(veth.starts_with(POD_VETH_PREFIX));
        assert_ne!(pod_veth_name("a"), pod_veth_name("b"));
        assert_eq!(pod_veth_name("a"), pod_veth_name("a"));
        assert_eq!(vtep_mac(Ipv4Addr::new(172, 30, 0, 2)), [0x0e, 0x76, 172, 30, 0, 2]);
    }
}
