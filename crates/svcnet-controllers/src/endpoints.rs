//! The Endpoints controller's pure core: the `Endpoints` a Service with a selector should have,
//! given the pods of its namespace (upstream's `pkg/controller/endpoint`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service};

use crate::pod;

/// The label that marks the Endpoints (and EndpointSlices) of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// What the controller owns in a Service's `Endpoints`: its labels and its subsets. Everything
/// else (annotations, owner references, ...) is left as it is found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredEndpoints {
    pub labels: BTreeMap<String, String>,
    pub subsets: Vec<EndpointSubset>,
}

impl DesiredEndpoints {
    /// Whether `current` already says this (no write needed).
    pub fn is_satisfied_by(&self, current: &Endpoints) -> bool {
        let labels = current.metadata.labels.clone().unwrap_or_default();
        labels == self.labels && normalize(current.subsets.clone().unwrap_or_default()) == self.subsets
    }

    /// `current` (or a new object named after `svc`) with these labels and subsets.
    pub fn apply_to(&self, svc: &Service, current: Option<&Endpoints>) -> Endpoints {
        let mut ep = current.cloned().unwrap_or_else(|| Endpoints {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: svc.metadata.name.clone(),
                namespace: svc.metadata.namespace.clone(),
                ..Default::default()
            },
            subsets: None,
        });
        ep.metadata.labels = (!self.labels.is_empty()).then(|| self.labels.clone());
        ep.subsets = (!self.subsets.is_empty()).then(|| self.subsets.clone());
        ep
    }
}

/// The Endpoints of `svc`, which must have a selector, from the pods it selects (`pods` may hold
/// other pods of the namespace; they are filtered here). `syncService` upstream.
#[doc(alias = "syncService")]
pub fn desired(svc: &Service, pods: &[&Pod]) -> DesiredEndpoints {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let selector = pod::selector(svc).cloned().unwrap_or_default();
    let mut entries: Vec<Entry> = Vec::new();
    for &p in pods {
        if selector.is_empty() || !pod::matches(&selector, p) || !pod::should_be_in_endpoints(p, publish_not_ready) {
            continue;
        }
        let family = pod::service_families(svc, Some(p))[0];
        let Some(ip) = pod::ip_of_family(p, family) else { continue };
        let address = EndpointAddress {
            ip: ip.to_string(),
            hostname: pod::hostname_for(p, svc).map(str::to_string),
            node_name: pod::node_name(p),
            target_ref: Some(pod::target_ref(p)),
        };
        let ready = publish_not_ready || pod::is_ready(p);
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            // A headless Service may have no ports: its addresses are published bare.
            if pod::is_headless(svc) {
                entries.push(Entry { address, ready, port: None });
            }
            continue;
        }
        for sp in ports {
            let Some(number) = pod::find_port(p, sp) else { continue };
            let port = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: Some(pod::protocol(sp).to_string()),
                app_protocol: sp.app_protocol.clone(),
            };
            entries.push(Entry { address: address.clone(), ready, port: Some(port) });
        }
    }
    DesiredEndpoints { labels: labels(svc), subsets: repack(entries) }
}

/// The Service's labels, plus the headless marker for a headless Service.
fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if pod::has_cluster_ip(svc) {
        labels.remove(HEADLESS_LABEL);
    } else {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// One address offering one port (or no port at all).
struct Entry {
    address: EndpointAddress,
    ready: bool,
    port: Option<EndpointPort>,
}

/// An address's identity: its IP and the object it stands for.
type AddressKey = (String, Option<String>);

fn address_key(a: &EndpointAddress) -> AddressKey {
    (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.uid.clone()))
}

/// `RepackSubsets`: addresses that offer the same ports with the same readiness share a subset.
/// Subsets and their contents are sorted, so equal inputs give equal objects.
#[doc(alias = "RepackSubsets")]
fn repack(entries: Vec<Entry>) -> Vec<EndpointSubset> {
    // Port (None: the no-port sentinel) -> address -> ready. An address ready for a port on any
    // entry is ready for it.
    let mut by_port: BTreeMap<Option<PortKey>, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    let mut ports: BTreeMap<PortKey, EndpointPort> = BTreeMap::new();
    let mut addresses: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    for e in entries {
        let key = address_key(&e.address);
        addresses.entry(key.clone()).or_insert(e.address);
        let port_key = e.port.map(|p| {
            let k = port_key(&p);
            ports.insert(k.clone(), p);
            k
        });
        let ready = by_port.entry(port_key).or_default().entry(key).or_insert(false);
        *ready |= e.ready;
    }
    // The set of (address, ready) -> the ports it offers.
    let mut by_addresses: BTreeMap<BTreeSet<(AddressKey, bool)>, BTreeSet<PortKey>> = BTreeMap::new();
    for (port, addrs) in by_port {
        let set = addrs.into_iter().collect();
        let entry = by_addresses.entry(set).or_default();
        if let Some(port) = port {
            entry.insert(port);
        }
    }
    let mut subsets: Vec<EndpointSubset> = by_addresses
        .into_iter()
        .map(|(addrs, port_keys)| {
            let pick = |ready: bool| -> Option<Vec<EndpointAddress>> {
                let list: Vec<EndpointAddress> = addrs.iter().filter(|(_, r)| *r == ready).map(|(k, _)| addresses[k].clone()).collect();
                (!list.is_empty()).then_some(list)
            };
            let ports: Vec<EndpointPort> = port_keys.iter().map(|k| ports[k].clone()).collect();
            EndpointSubset { addresses: pick(true), not_ready_addresses: pick(false), ports: (!ports.is_empty()).then_some(ports) }
        })
        .collect();
    subsets.sort_by_key(subset_key);
    subsets
}

/// A port's identity: name, number, protocol, appProtocol.
type PortKey = (String, i32, String, String);

fn port_key(p: &EndpointPort) -> PortKey {
    (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.app_protocol.clone().unwrap_or_default())
}

/// Subsets sort by their ports, then by their first addresses.
fn subset_key(s: &EndpointSubset) -> (Vec<PortKey>, Vec<AddressKey>, Vec<AddressKey>) {
    let addrs = |l: &Option<Vec<EndpointAddress>>| l.iter().flatten().map(address_key).collect();
    (s.ports.iter().flatten().map(port_key).collect(), addrs(&s.addresses), addrs(&s.not_ready_addresses))
}

/// Subsets as read back from the API in the shape `desired` produces: empty lists absent, port
/// names absent rather than empty.
fn normalize(subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    subsets
        .into_iter()
        .map(|mut s| {
            s.addresses = s.addresses.filter(|l| !l.is_empty());
            s.not_ready_addresses = s.not_ready_addresses.filter(|l| !l.is_empty());
            s.ports = s.ports.filter(|l| !l.is_empty()).map(|ports| {
                ports
                    .into_iter()
                    .map(|mut p| {
                        p.name = p.name.filter(|n| !n.is_empty());
                        p
                    })
                    .collect()
            });
            s
        })
        .collect()
}

/// The `ip:port` pairs of an Endpoints' ready addresses, as `kubectl get endpoints` lists them.
#[cfg(test)]
fn ready_pairs(subsets: &[EndpointSubset]) -> Vec<String> {
    let mut out = Vec::new();
    for s in subsets {
        for a in s.addresses.iter().flatten() {
            match s.ports.as_deref() {
                Some(ports) => out.extend(ports.iter().map(|p| format!("{}:{}", a.ip, p.port))),
                None => out.push(a.ip.clone()),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pod, service};
    use serde_json::json;

    fn not_ready_ips(d: &DesiredEndpoints) -> Vec<String> {
        d.subsets.iter().flat_map(|s| s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone())).collect()
    }

    #[test]
    fn ready_pods_become_addresses_sorted_by_ip() {
        let svc = service(json!({"selector": {"app": "backend"}, "clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8000}]}));
        let p2 = pod("b", json!({"app": "backend"}), "192.168.1.11", true, json!({}));
        let p1 = pod("a", json!({"app": "backend"}), "192.168.1.10", true, json!({}));
        let other = pod("c", json!({"app": "frontend"}), "192.168.1.12", true, json!({}));
        let d = desired(&svc, &[&p2, &p1, &other]);
        assert_eq!(ready_pairs(&d.subsets), ["192.168.1.10:8000", "192.168.1.11:8000"]);
        assert_eq!(d.subsets.len(), 1);
        let a = &d.subsets[0].addresses.as_ref().unwrap()[0];
        let r = a.target_ref.as_ref().unwrap();
        assert_eq!((r.kind.as_deref(), r.name.as_deref(), r.namespace.as_deref(), r.uid.as_deref()), (Some("Pod"), Some("a"), Some("ns"), Some("uid-a")));
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        assert_eq!(d.subsets[0].ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
        assert!(!d.labels.contains_key(HEADLESS_LABEL));
    }

    #[test]
    fn unready_pods_are_not_ready_addresses_unless_published() {
        let spec = json!({"selector": {"app": "x"}, "clusterIP": "10.96.0.10", "ports": [{"port": 80}]});
        let ready = pod("a", json!({"app": "x"}), "10.0.0.1", true, json!({}));
        let unready = pod("b", json!({"app": "x"}), "10.0.0.2", false, json!({}));
        let d = desired(&service(spec.clone()), &[&ready, &unready]);
        assert_eq!(ready_pairs(&d.subsets), ["10.0.0.1:80"]);
        assert_eq!(not_ready_ips(&d), ["10.0.0.2"]);
        // Same ports: one subset with both lists.
        assert_eq!(d.subsets.len(), 1);

        let mut published = spec;
        published["publishNotReadyAddresses"] = true.into();
        let d = desired(&service(published), &[&ready, &unready]);
        assert_eq!(ready_pairs(&d.subsets), ["10.0.0.1:80", "10.0.0.2:80"]);
        assert!(not_ready_ips(&d).is_empty());
    }

    #[test]
    fn terminal_terminating_and_ipless_pods_are_left_out() {
        let svc = service(json!({"selector": {"app": "x"}, "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let mut done = pod("done", json!({"app": "x"}), "10.0.0.1", true, json!({}));
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut going = pod("going", json!({"app": "x"}), "10.0.0.2", true, json!({}));
        going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
        let mut ipless = pod("ipless", json!({"app": "x"}), "10.0.0.3", true, json!({}));
        ipless.status.as_mut().unwrap().pod_ip = None;
        ipless.status.as_mut().unwrap().pod_ips = None;
        let d = desired(&svc, &[&done, &going, &ipless]);
        assert!(d.subsets.is_empty());
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_split_subsets() {
        let svc = service(json!({"selector": {"app": "x"}, "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}));
        let a = pod(
            "a",
            json!({"app": "x"}),
            "10.0.0.1",
            true,
            json!({"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080, "protocol": "TCP"}]}]}),
        );
        let b = pod(
            "b",
            json!({"app": "x"}),
            "10.0.0.2",
            true,
            json!({"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 9090, "protocol": "TCP"}]}]}),
        );
        // The name exists only with another protocol: no port, so no address.
        let c = pod(
            "c",
            json!({"app": "x"}),
            "10.0.0.3",
            true,
            json!({"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 7070, "protocol": "UDP"}]}]}),
        );
        let d = desired(&svc, &[&a, &b, &c]);
        assert_eq!(ready_pairs(&d.subsets), ["10.0.0.1:8080", "10.0.0.2:9090"]);
        assert_eq!(d.subsets.len(), 2);
        assert_eq!(d.subsets[0].ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn multiple_ports_share_one_subset() {
        let svc = service(json!({"selector": {"app": "x"}, "clusterIP": "10.96.0.10",
            "ports": [{"name": "b", "port": 443}, {"name": "a", "port": 80}]}));
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", true, json!({}));
        let d = desired(&svc, &[&a]);
        assert_eq!(d.subsets.len(), 1);
        let names: Vec<_> = d.subsets[0].ports.iter().flatten().map(|p| p.name.clone().unwrap()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn headless_service_gets_hostnames_and_label() {
        let mut svc = service(json!({"selector": {"app": "db"}, "clusterIP": "None", "ports": [{"port": 5432}]}));
        svc.metadata.name = Some("postgres".into());
        svc.metadata.labels = Some([("tier".to_string(), "data".to_string())].into());
        let named = pod("p0", json!({"app": "db"}), "10.0.0.1", true, json!({"hostname": "p0", "subdomain": "postgres"}));
        let elsewhere = pod("p1", json!({"app": "db"}), "10.0.0.2", true, json!({"hostname": "p1", "subdomain": "other"}));
        let d = desired(&svc, &[&named, &elsewhere]);
        let addrs = d.subsets[0].addresses.as_ref().unwrap();
        assert_eq!(addrs[0].hostname.as_deref(), Some("p0"));
        assert_eq!(addrs[1].hostname, None);
        assert_eq!(d.labels, BTreeMap::from([("tier".into(), "data".into()), (HEADLESS_LABEL.into(), String::new())]));
    }

    #[test]
    fn headless_without_ports_publishes_bare_addresses() {
        let svc = service(json!({"selector": {"app": "db"}, "clusterIP": "None"}));
        let a = pod("a", json!({"app": "db"}), "10.0.0.1", true, json!({}));
        let d = desired(&svc, &[&a]);
        assert_eq!(ready_pairs(&d.subsets), ["10.0.0.1"]);
        // A Service with a cluster IP and no ports has no endpoints.
        let svc = service(json!({"selector": {"app": "db"}, "clusterIP": "10.96.0.1"}));
        assert!(desired(&svc, &[&a]).subsets.is_empty());
    }

    #[test]
    fn address_ready_for_one_port_and_not_another_is_split() {
        // Two entries for the same address and port with different readiness: ready wins.
        let e = |ready| Entry {
            address: EndpointAddress { ip: "10.0.0.1".into(), ..Default::default() },
            ready,
            port: Some(EndpointPort { port: 80, protocol: Some("TCP".into()), ..Default::default() }),
        };
        let subsets = repack(vec![e(false), e(true)]);
        assert_eq!(ready_pairs(&subsets), ["10.0.0.1:80"]);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn satisfied_ignores_api_normalization_and_detects_changes() {
        let svc = service(json!({"selector": {"app": "x"}, "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", true, json!({}));
        let d = desired(&svc, &[&a]);
        let mut written = d.apply_to(&svc, None);
        assert_eq!(written.metadata.name.as_deref(), Some("svc"));
        assert!(d.is_satisfied_by(&written));
        // The API server writes an unnamed port's name as "".
        written.subsets.as_mut().unwrap()[0].ports.as_mut().unwrap()[0].name = Some(String::new());
        written.subsets.as_mut().unwrap()[0].not_ready_addresses = Some(vec![]);
        assert!(d.is_satisfied_by(&written));
        let b = pod("b", json!({"app": "x"}), "10.0.0.2", false, json!({}));
        assert!(!desired(&svc, &[&a, &b]).is_satisfied_by(&written));
        written.metadata.labels = Some([("extra".to_string(), String::new())].into());
        assert!(!d.is_satisfied_by(&written));
    }
}
