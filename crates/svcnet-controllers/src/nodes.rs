//! Node controllers, as kube-controller-manager's node IPAM and node lifecycle controllers do it:
//!
//! - podCIDRs: every Node without `spec.podCIDR` gets the lowest free block of the cluster CIDR
//!   (`--cluster-cidr`, a /24 per node by default), written once (upstream never changes it).
//! - liveness: a Node whose agent has not renewed its Lease in `kube-node-lease` (nor posted its
//!   Ready condition) for [`NODE_MONITOR_GRACE`] gets `Ready=Unknown`, reason
//!   `NodeStatusUnknown`, as upstream marks a node it lost; the scheduler, the proxy's
//!   LoadBalancer announcer and the Endpoints controller react to that condition.
//!
//! The choice of block is the pure function [`next_pod_cidr`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::{Error, Result};

/// How long a node may stay silent before it is marked `Ready=Unknown` (upstream's
/// `--node-monitor-grace-period` default).
pub const NODE_MONITOR_GRACE: Duration = Duration::from_secs(40);

/// A cluster CIDR cut into per-node blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterCidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
    /// The prefix length of each node's block (24 by default, as upstream's `--node-cidr-mask-size`).
    pub node_prefix_len: u8,
}

impl ClusterCidr {
    /// Parses `A.B.C.D/N`; blocks are /24 (or /N+… when N > 24 is asked for, which is refused).
    pub fn parse(text: &str) -> Result<ClusterCidr, String> {
        let (addr, len) = text.split_once('/').ok_or_else(|| format!("{text:?} is not a CIDR (A.B.C.D/N)"))?;
        let network: Ipv4Addr = addr.parse().map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len.parse().ok().filter(|l| *l <= 24).ok_or_else(|| format!("{text:?}: the prefix length must be at most 24"))?;
        let mask = if prefix_len == 0 { 0 } else { u32::MAX << (32 - prefix_len) };
        if u32::from(network) & !mask != 0 {
            return Err(format!("{text:?} has host bits set"));
        }
        Ok(ClusterCidr { network, prefix_len, node_prefix_len: 24 })
    }

    /// The number of node blocks.
    pub fn blocks(&self) -> u32 {
        1 << (self.node_prefix_len - self.prefix_len)
    }

    /// The `index`th block as `A.B.C.D/24`.
    pub fn block(&self, index: u32) -> String {
        let base = u32::from(self.network) + (index << (32 - self.node_prefix_len));
        format!("{}/{}", Ipv4Addr::from(base), self.node_prefix_len)
    }
}

impl std::fmt::Display for ClusterCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The lowest block of `cidr` that none of `taken` is.
pub fn next_pod_cidr<'a>(cidr: &ClusterCidr, taken: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let taken: BTreeSet<&str> = taken.into_iter().collect();
    (0..cidr.blocks()).map(|i| cidr.block(i)).find(|b| !taken.contains(b.as_str()))
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).filter(|c| !c.is_empty())
}

/// Runs the node controllers until the watch fails for good.
pub async fn run(client: Client, cidr: Option<ClusterCidr>) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let (store, writer) = reflector::store::<Node>();
    // The reflector fills its store from the initial list only at `InitDone`; every pass looks at
    // all nodes in the store, so nothing is decided on a partial view.
    let stream = reflector::reflector(writer, watcher(nodes.clone(), watcher::Config::default())).default_backoff();
    let assign = async {
        let mut stream = std::pin::pin!(stream);
        // Blocks this controller has patched onto nodes (by node uid). The store learns of a
        // patch only when its watch event comes through this very stream, so a pass before that
        // must not see the block as free.
        let mut assigned: BTreeMap<String, String> = BTreeMap::new();
        while let Some(event) = stream.next().await {
            if !matches!(event, Ok(watcher::Event::InitDone | watcher::Event::Apply(_))) {
                continue;
            }
            let Some(cidr) = &cidr else { continue };
            let mut all = store.state();
            all.sort_by(|a, b| {
                (a.metadata.creation_timestamp.as_ref().map(|t| t.0), a.name_any()).cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any()))
            });
            // Forget patches for nodes that are gone, or that the store now shows (their blocks
            // are free again, or taken in the store's own view).
            assigned.retain(|uid, _| all.iter().any(|n| n.metadata.uid.as_deref() == Some(uid.as_str()) && pod_cidr(n).is_none()));
            for node in &all {
                let uid = node.metadata.uid.clone().unwrap_or_default();
                if pod_cidr(node).is_some() || node.metadata.deletion_timestamp.is_some() || assigned.contains_key(&uid) {
                    continue;
                }
                let taken = all.iter().filter_map(|n| pod_cidr(n)).chain(assigned.values().map(String::as_str));
                let Some(block) = next_pod_cidr(cidr, taken) else {
                    tracing::error!(node = %node.name_any(), %cidr, "no podCIDR left for the node");
                    continue;
                };
                let patch = json!({"spec": {"podCIDR": block, "podCIDRs": [block]}});
                match nodes.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        tracing::info!(node = %node.name_any(), pod_cidr = %block, "assigned podCIDR");
                        assigned.insert(uid, block);
                    }
                    Err(source) => tracing::warn!(error = %source, node = %node.name_any(), "assigning podCIDR"),
                }
            }
        }
        Err::<(), _>(Error::WatchEnded("Node"))
    };
    let lifecycle = monitor(client.clone(), store.clone());
    tokio::try_join!(assign, lifecycle).map(|_| ())
}

/// Marks nodes whose agent went silent `Ready=Unknown`.
async fn monitor(client: Client, nodes: reflector::Store<Node>) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let now = jiff::Timestamp::now();
        for node in nodes.state() {
            let name = node.name_any();
            let Some(ready) = node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready")) else {
                continue;
            };
            if ready.status == "Unknown" {
                continue;
            }
            let mut last = ready.last_heartbeat_time.as_ref().map(|t| t.0);
            if let Ok(Some(lease)) = leases.get_opt(&name).await
                && let Some(renew) = lease.spec.and_then(|s| s.renew_time)
            {
                last = last.max(Some(renew.0));
            }
            let Some(last) = last else { continue };
            let silent = now.duration_since(last);
            if silent.as_secs() < NODE_MONITOR_GRACE.as_secs() as i64 {
                continue;
            }
            let stamp = now.to_string();
            let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
            }
            let patch = json!({"status": {"conditions": conditions}});
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => tracing::warn!(node = %name, silent_s = silent.as_secs(), at = %stamp, "node stopped posting status; Ready=Unknown"),
                Err(error) => tracing::warn!(%error, node = %name, "marking node Ready=Unknown"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_in_order_and_skip_taken() {
        let cidr = ClusterCidr::parse("10.244.0.0/16").unwrap();
        assert_eq!(cidr.blocks(), 256);
        assert_eq!(next_pod_cidr(&cidr, []), Some("10.244.0.0/24".into()));
        assert_eq!(next_pod_cidr(&cidr, ["10.244.0.0/24", "10.244.2.0/24"]), Some("10.244.1.0/24".into()));
        let small = ClusterCidr::parse("10.1.0.0/23").unwrap();
        assert_eq!(next_pod_cidr(&small, ["10.1.0.0/24", "10.1.1.0/24"]), None);
    }

    #[test]
    fn parse_refuses_bad_cidrs() {
        assert!(ClusterCidr::parse("10.244.0.1/16").is_err());
        assert!(ClusterCidr::parse("10.244.0.0/25").is_err());
        assert!(ClusterCidr::parse("10.244.0.0").is_err());
    }
}
