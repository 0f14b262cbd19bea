//! The incremental builder of snapshots: it keeps what it needs of each Service, EndpointSlice,
//! Pod and Namespace, and on each event changes only the snapshot keys that object touches (one
//! Service's entry and its PTR claims, one pod's IPs, one namespace). Publishing is a clone of
//! persistent maps, O(1), so a change is answerable as soon as its event is applied, whatever
//! the size of the cluster. Pure: no I/O.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use hickory_proto::rr::Name;
use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};

use crate::snapshot::{Key, Kind, Port, ReverseClaim, ServiceEntry, Snapshot, child, dashed, parse_zone};

/// The label EndpointSlices name their Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The kinds of object the index is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `v1/Service`.
    Service,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `v1/Pod`.
    Pod,
    /// `v1/Namespace` (its key's namespace is empty).
    Namespace,
}

/// What a Service contributes, apart from its endpoints.
#[derive(Clone, Debug, PartialEq)]
struct ServiceDef {
    fqdn: Name,
    kind: Kind,
    ports: Vec<Port>,
}

/// The ready endpoints of one EndpointSlice, as `(hostname, address)`.
#[derive(Clone, Debug)]
struct SliceEntry {
    service: Key,
    endpoints: Vec<(String, IpAddr)>,
}

/// Why a namespace exists: its object, or anything in it.
#[derive(Clone, Copy, Debug, Default)]
struct NamespaceRefs {
    object: bool,
    services: usize,
    pods: usize,
}

/// Keeps a [`Snapshot`] current, one object at a time.
#[derive(Clone, Debug)]
pub struct Index {
    snap: Snapshot,
    svc_zone: Name,
    services: HashMap<Key, ServiceDef>,
    slices: HashMap<Key, SliceEntry>,
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    pods: HashMap<Key, Vec<IpAddr>>,
    namespaces: HashMap<String, NamespaceRefs>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.as_deref().unwrap_or_default().to_ascii_lowercase(), meta.name.as_deref()?.to_ascii_lowercase()))
}

// === impl Index ===

impl Index {
    /// An empty index for `zone`; its snapshots are synced (the caller decides when to publish).
    pub fn new(zone: Name, ttl: u32) -> Self {
        let svc_zone = child(&zone, "svc").expect("svc.<zone> is a valid name");
        let mut snap = Snapshot::unsynced(zone, ttl);
        snap.synced = true;
        Index {
            snap,
            svc_zone,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_by_service: HashMap::new(),
            pods: HashMap::new(),
            namespaces: HashMap::new(),
        }
    }

    /// The current state as a synced snapshot with SOA serial `serial`. O(1).
    pub fn snapshot(&self, serial: u32) -> Snapshot {
        let mut snap = self.snap.clone();
        snap.serial = serial;
        snap
    }

    /// The keys of every object of `kind` the index holds (`("", name)` for Namespaces).
    pub fn keys(&self, kind: ObjectKind) -> Vec<Key> {
        match kind {
            ObjectKind::Service => self.services.keys().cloned().collect(),
            ObjectKind::EndpointSlice => self.slices.keys().cloned().collect(),
            ObjectKind::Pod => self.pods.keys().cloned().collect(),
            ObjectKind::Namespace => self.namespaces.iter().filter(|(_, r)| r.object).map(|(n, _)| (String::new(), n.clone())).collect(),
        }
    }

    /// Forgets the object of `kind` with `key`, if held.
    pub fn delete(&mut self, kind: ObjectKind, key: &Key) {
        match kind {
            ObjectKind::Service => {
                if self.services.remove(key).is_some() {
                    self.namespace_ref(&key.0, |r| r.services -= 1);
                    self.refresh_service(key);
                }
            }
            ObjectKind::EndpointSlice => {
                if let Some(old) = self.slices.remove(key) {
                    self.unlink_slice(key, &old.service);
                    self.refresh_service(&old.service);
                }
            }
            ObjectKind::Pod => {
                if let Some(old) = self.pods.remove(key) {
                    self.pod_ips(&key.0, &old, false);
                    self.namespace_ref(&key.0, |r| r.pods -= 1);
                }
            }
            ObjectKind::Namespace => {
                if self.namespaces.get(&key.1).is_some_and(|r| r.object) {
                    self.namespace_ref(&key.1, |r| r.object = false);
                }
            }
        }
    }

    /// Adds or updates a Namespace.
    pub fn apply_namespace(&mut self, ns: &core::Namespace) {
        let Some(name) = &ns.metadata.name else { return };
        self.namespace_ref(&name.to_ascii_lowercase(), |r| r.object = true);
    }

    /// Adds or updates a Service.
    pub fn apply_service(&mut self, svc: &core::Service) {
        let Some(key) = key_of(&svc.metadata) else { return };
        let Some(def) = self.service_def(&key, svc) else {
            // No longer something DNS can name: as if deleted.
            self.delete(ObjectKind::Service, &key);
            return;
        };
        match self.services.insert(key.clone(), def.clone()) {
            None => self.namespace_ref(&key.0, |r| r.services += 1),
            Some(old) if old == def => return,
            Some(_) => {}
        }
        self.refresh_service(&key);
    }

    /// Adds or updates an EndpointSlice.
    pub fn apply_endpoint_slice(&mut self, slice: &discovery::EndpointSlice) {
        let Some(key) = key_of(&slice.metadata) else { return };
        let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            self.delete(ObjectKind::EndpointSlice, &key);
            return;
        };
        let service = (key.0.clone(), service.to_ascii_lowercase());
        let mut endpoints = Vec::new();
        for ep in &slice.endpoints {
            // A missing `ready` condition means ready (EndpointSlice API semantics).
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else { continue };
                let host = match &ep.hostname {
                    Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
                    _ => dashed(ip),
                };
                endpoints.push((host, ip));
            }
        }
        if let Some(old) = self.slices.insert(key.clone(), SliceEntry { service: service.clone(), endpoints })
            && old.service != service
        {
            self.unlink_slice(&key, &old.service);
            self.refresh_service(&old.service);
        }
        self.slices_by_service.entry(service.clone()).or_default().insert(key.1);
        self.refresh_service(&service);
    }

    /// Adds or updates a Pod (only its IPs and namespace matter).
    pub fn apply_pod(&mut self, pod: &core::Pod) {
        let Some(key) = key_of(&pod.metadata) else { return };
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(status) = &pod.status {
            for ip in status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).chain(status.pod_ip.as_deref()) {
                if let Ok(ip) = ip.parse()
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
        }
        match self.pods.insert(key.clone(), ips.clone()) {
            Some(old) if old == ips => {}
            Some(old) => {
                self.pod_ips(&key.0, &old, false);
                self.pod_ips(&key.0, &ips, true);
            }
            None => {
                self.namespace_ref(&key.0, |r| r.pods += 1);
                self.pod_ips(&key.0, &ips, true);
            }
        }
    }

    fn service_def(&self, key: &Key, svc: &core::Service) -> Option<ServiceDef> {
        let spec = svc.spec.as_ref()?;
        let fqdn = Name::from_ascii(&key.0).ok().and_then(|n| n.append_domain(&self.svc_zone).ok()).and_then(|n| child(&n, &key.1))?;
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            Kind::ExternalName(spec.external_name.as_deref().and_then(|t| parse_zone(t).ok())?)
        } else if spec.cluster_ip.as_deref() == Some("None") {
            Kind::Headless
        } else {
            let ips: Vec<IpAddr> = match &spec.cluster_ips {
                Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                _ => spec.cluster_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
            };
            Kind::ClusterIp(ips)
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(Port {
                    name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                    protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        Some(ServiceDef { fqdn, kind, ports })
    }

    fn unlink_slice(&mut self, slice: &Key, service: &Key) {
        if let Some(set) = self.slices_by_service.get_mut(service) {
            set.remove(&slice.1);
            if set.is_empty() {
                self.slices_by_service.remove(service);
            }
        }
    }

    /// Recomputes one Service's entry and PTR claims from its definition and its slices.
    fn refresh_service(&mut self, key: &Key) {
        if let Some(old) = self.snap.services.remove(key) {
            for (ip, _) in reverse_claims(&old) {
                let Some(claims) = self.snap.reverse.get(&ip) else { continue };
                let rest: Vec<ReverseClaim> = claims.iter().filter(|c| &c.owner != key).cloned().collect();
                if rest.is_empty() {
                    self.snap.reverse.remove(&ip);
                } else {
                    self.snap.reverse.insert(ip, Arc::new(rest));
                }
            }
        }
        let Some(def) = self.services.get(key) else { return };
        let mut endpoints: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        if !matches!(def.kind, Kind::ExternalName(_)) {
            for name in self.slices_by_service.get(key).into_iter().flatten() {
                let Some(slice) = self.slices.get(&(key.0.clone(), name.clone())) else { continue };
                for (host, ip) in &slice.endpoints {
                    let ips = endpoints.entry(host.clone()).or_default();
                    if !ips.contains(ip) {
                        ips.push(*ip);
                    }
                }
            }
        }
        let entry = Arc::new(ServiceEntry { fqdn: def.fqdn.clone(), kind: def.kind.clone(), ports: def.ports.clone(), endpoints });
        for (ip, (rank, target)) in reverse_claims(&entry) {
            let mut claims: Vec<ReverseClaim> = self.snap.reverse.get(&ip).map(|c| c.as_ref().clone()).unwrap_or_default();
            let claim = ReverseClaim { rank, owner: key.clone(), target };
            if let Err(at) = claims.binary_search(&claim) {
                claims.insert(at, claim);
            }
            self.snap.reverse.insert(ip, Arc::new(claims));
        }
        self.snap.services.insert(key.clone(), entry);
    }

    fn pod_ips(&mut self, ns: &str, ips: &[IpAddr], add: bool) {
        for ip in ips {
            let k = (ns.to_string(), *ip);
            let n = self.snap.pod_ips.get(&k).copied().unwrap_or(0);
            match (add, n) {
                (true, n) => {
                    self.snap.pod_ips.insert(k, n + 1);
                }
                (false, 0 | 1) => {
                    self.snap.pod_ips.remove(&k);
                }
                (false, n) => {
                    self.snap.pod_ips.insert(k, n - 1);
                }
            }
        }
    }

    /// Changes why `ns` exists, and makes the snapshot agree.
    fn namespace_ref(&mut self, ns: &str, change: impl FnOnce(&mut NamespaceRefs)) {
        let refs = self.namespaces.entry(ns.to_string()).or_default();
        change(refs);
        if refs.object || refs.services > 0 || refs.pods > 0 {
            if !self.snap.namespaces.contains(ns) {
                self.snap.namespaces.insert(ns.to_string());
            }
        } else {
            self.namespaces.remove(ns);
            self.snap.namespaces.remove(ns);
        }
    }
}

/// The PTR claims of one Service: its ClusterIPs, or its headless endpoints' hostnames.
fn reverse_claims(entry: &ServiceEntry) -> Vec<(IpAddr, (u8, Name))> {
    match &entry.kind {
        Kind::ClusterIp(ips) => ips.iter().map(|ip| (*ip, (0, entry.fqdn.clone()))).collect(),
        Kind::Headless => entry
            .endpoints
            .iter()
            .filter_map(|(host, ips)| Some((child(&entry.fqdn, host)?, ips)))
            .flat_map(|(target, ips)| ips.iter().map(move |ip| (*ip, (1, target.clone()))))
            .collect(),
        Kind::ExternalName(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RecordType;
    use serde_json::json;

    use crate::Answer;

    fn zone() -> Name {
        parse_zone("cluster.local").unwrap()
    }

    fn ask(snap: &Snapshot, q: &str, t: RecordType) -> String {
        match snap.answer(&Name::from_ascii(q).unwrap(), t) {
            Answer::Records { answers, .. } => {
                let mut v: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
                v.sort();
                v.join(",")
            }
            other => format!("{other:?}"),
        }
    }

    fn slice(ns: &str, name: &str, svc: &str, ips: &[&str]) -> discovery::EndpointSlice {
        let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect();
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": ns, "labels": {SERVICE_NAME_LABEL: svc}}, "addressType": "IPv4", "endpoints": eps}),
        )
        .unwrap()
    }

    fn service(ns: &str, name: &str, cluster_ip: &str) -> core::Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": cluster_ip}})).unwrap()
    }

    #[test]
    fn headless_endpoints_follow_their_slices() {
        let mut index = Index::new(zone(), 5);
        index.apply_service(&service("default", "db", "None"));
        assert_eq!(ask(&index.snapshot(1), "db.default.svc.cluster.local.", RecordType::A), "NxDomain");
        index.apply_endpoint_slice(&slice("default", "db-a", "db", &["10.0.0.1"]));
        index.apply_endpoint_slice(&slice("default", "db-b", "db", &["10.0.0.2"]));
        let before = index.snapshot(2);
        assert_eq!(ask(&before, "db.default.svc.cluster.local.", RecordType::A), "10.0.0.1,10.0.0.2");
        assert_eq!(ask(&before, "1.0.0.10.in-addr.arpa.", RecordType::PTR), "10-0-0-1.db.default.svc.cluster.local.");
        index.delete(ObjectKind::EndpointSlice, &("default".into(), "db-a".into()));
        let after = index.snapshot(3);
        assert_eq!(ask(&after, "db.default.svc.cluster.local.", RecordType::A), "10.0.0.2");
        assert_eq!(ask(&after, "1.0.0.10.in-addr.arpa.", RecordType::PTR), "NotOurs");
        // The earlier snapshot is untouched (persistent maps).
        assert_eq!(ask(&before, "db.default.svc.cluster.local.", RecordType::A), "10.0.0.1,10.0.0.2");
        // A slice that moves to another Service leaves the first one.
        index.apply_service(&service("default", "other", "None"));
        index.apply_endpoint_slice(&slice("default", "db-b", "other", &["10.0.0.2"]));
        let moved = index.snapshot(4);
        assert_eq!(ask(&moved, "db.default.svc.cluster.local.", RecordType::A), "NxDomain");
        assert_eq!(ask(&moved, "other.default.svc.cluster.local.", RecordType::A), "10.0.0.2");
    }

    #[test]
    fn ptr_prefers_cluster_ips_and_survives_the_other_claimant() {
        let mut index = Index::new(zone(), 5);
        index.apply_service(&service("b", "headless", "None"));
        index.apply_endpoint_slice(&slice("b", "h", "headless", &["10.96.0.50"]));
        index.apply_service(&service("a", "vip", "10.96.0.50"));
        assert_eq!(ask(&index.snapshot(1), "50.0.96.10.in-addr.arpa.", RecordType::PTR), "vip.a.svc.cluster.local.");
        index.delete(ObjectKind::Service, &("a".into(), "vip".into()));
        assert_eq!(ask(&index.snapshot(2), "50.0.96.10.in-addr.arpa.", RecordType::PTR), "10-96-0-50.headless.b.svc.cluster.local.");
        assert_eq!(ask(&index.snapshot(2), "vip.a.svc.cluster.local.", RecordType::A), "NxDomain");
    }

    #[test]
    fn namespaces_exist_while_anything_names_them() {
        let mut index = Index::new(zone(), 5);
        let pod: core::Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "x"}, "status": {"podIP": "10.1.0.1"}})).unwrap();
        index.apply_pod(&pod);
        assert_eq!(ask(&index.snapshot(1), "x.svc.cluster.local.", RecordType::A), "NoData");
        assert_eq!(ask(&index.snapshot(1), "10-1-0-1.x.pod.cluster.local.", RecordType::A), "10.1.0.1");
        index.delete(ObjectKind::Pod, &("x".into(), "p".into()));
        assert_eq!(ask(&index.snapshot(2), "x.svc.cluster.local.", RecordType::A), "NxDomain");
        assert_eq!(index.keys(ObjectKind::Namespace), Vec::<Key>::new());
    }
}
