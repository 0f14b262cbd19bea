//! LoadBalancer IPs on the node network, MetalLB layer-2 style: for each LoadBalancer IP exactly
//! one node holds the address on its uplink (so it alone answers ARP for it) and announces it
//! with a gratuitous ARP when it takes over.
//!
//! The choice is made independently by every node from the same inputs (the Ready nodes and,
//! for `externalTrafficPolicy: Local`, the nodes with a ready endpoint), so no coordination is
//! needed: the node with the highest hash of (node name, IP) wins (rendezvous hashing, so a
//! node's departure moves only the IPs it held).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::ServiceKey;

/// Whether a Node can hold LoadBalancer IPs: its `Ready` condition is `True` and it is not
/// being deleted.
pub fn node_is_ready(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The node that should announce `ip`, among `candidates`.
pub fn owner<'a>(ip: &IpAddr, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().max_by_key(|node| (score(node, ip), *node))
}

/// A stable hash (FNV-1a, 64 bit) of node name and address; the same in every process.
fn score(node: &str, ip: &IpAddr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain([0]).chain(ip.to_string().bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV alone spreads near-identical names badly; finish with splitmix64's mixer.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The LoadBalancer IPs `node_name` should hold: for every LoadBalancer Service, each ingress IP
/// whose owner among the eligible nodes is this node.
pub fn owned_ips<'a>(
    node_name: &str,
    services: impl IntoIterator<Item = &'a Service>,
    slices_of: impl Fn(&ServiceKey) -> Vec<&'a EndpointSlice>,
    ready_nodes: &BTreeSet<String>,
) -> BTreeMap<IpAddr, ServiceKey> {
    let mut owned = BTreeMap::new();
    for service in services {
        let Some(spec) = service.spec.as_ref() else { continue };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            continue;
        }
        let key = ServiceKey::of_service(service);
        let ingress = service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        let ips: Vec<IpAddr> = ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect();
        if ips.is_empty() {
            continue;
        }
        let candidates: BTreeSet<&str> = if spec.external_traffic_policy.as_deref() == Some("Local") {
            // Only nodes with a ready endpoint can serve without forwarding.
            let slices = slices_of(&key);
            let endpoints = slices.iter().flat_map(|s| &s.endpoints);
            let ready = endpoints.filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
            ready.filter_map(|e| e.node_name.as_deref()).filter(|n| ready_nodes.contains(*n)).collect()
        } else {
            ready_nodes.iter().map(String::as_str).collect()
        };
        for ip in ips {
            if owner(&ip, candidates.iter().copied()) == Some(node_name) {
                owned.insert(ip, key.clone());
            }
        }
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_and_minimal_moves() {
        let nodes = ["node-1", "node-2", "node-3"];
        let ips: Vec<IpAddr> = (1..=60).map(|i| format!("172.30.255.{i}").parse().unwrap()).collect();
        let before: Vec<&str> = ips.iter().map(|ip| owner(ip, nodes).unwrap()).collect();
        // Every node gets some.
        for node in nodes {
            assert!(before.contains(&node), "{node} owns nothing");
        }
        // Removing node-2 moves only node-2's addresses.
        let after: Vec<&str> = ips.iter().map(|ip| owner(ip, ["node-1", "node-3"]).unwrap()).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != "node-2" {
                assert_eq!(b, a);
            }
        }
        assert_eq!(owner(&ips[0], []), None);
    }
}
