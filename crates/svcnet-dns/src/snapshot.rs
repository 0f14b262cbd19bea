//! The pure core: an immutable index of the cluster's names, built from Services, EndpointSlices,
//! Pods and Namespaces, and [`Snapshot::answer`], which answers one question from it the way the
//! Kubernetes DNS specification (schema 1.1.0) and CoreDNS's kubernetes plugin do. No I/O here.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use hickory_proto::rr::{
    Name, RData, Record, RecordType,
    rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT},
};
use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};

use crate::index::Index;

/// The schema version answered at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// What the cluster zone says about one question. NXDOMAIN and NODATA are distinct results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name exists and has records of the asked type (or a CNAME).
    Records {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section (addresses of SRV targets).
        additionals: Vec<Record>,
    },
    /// NOERROR with an empty answer: the name exists, but not with this type (SOA in authority).
    NoData,
    /// The name does not exist (SOA in authority).
    NxDomain,
    /// The name is ours but the caches have not synced yet: SERVFAIL, never a false NXDOMAIN.
    NotSynced,
    /// Not in the cluster zone (nor a reverse name of a cluster address): forward it upstream.
    NotOurs,
}

/// `(namespace, name)`, lowercased.
pub(crate) type Key = (String, String);

/// One Service as DNS sees it.
#[derive(Clone, Debug)]
pub(crate) struct ServiceEntry {
    /// `<svc>.<ns>.svc.<zone>.`
    pub(crate) fqdn: Name,
    pub(crate) kind: Kind,
    pub(crate) ports: Vec<Port>,
    /// Ready endpoints by hostname (the pod's hostname, or the address with dashes as CoreDNS
    /// names endpoints without one). Sorted for stable answers.
    pub(crate) endpoints: BTreeMap<String, Vec<IpAddr>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(Name),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Port {
    /// Lowercased; empty for an unnamed port.
    pub(crate) name: String,
    /// `tcp`, `udp` or `sctp`.
    pub(crate) protocol: String,
    pub(crate) port: u16,
}

/// One claim on an address's PTR record. When several Services claim one address, the lowest
/// wins: ClusterIPs (rank 0) before headless endpoints (rank 1), then by Service key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReverseClaim {
    pub(crate) rank: u8,
    pub(crate) owner: Key,
    pub(crate) target: Name,
}

/// An immutable view of the cluster's DNS names. Its maps are persistent (structurally shared),
/// so the [`crate::index::Index`] that keeps it current makes the next one by changing only the
/// keys an event touched, and a clone costs O(1).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Lowercased labels of the zone, e.g. `["cluster", "local"]`.
    zone_labels: Vec<String>,
    zone: Name,
    ttl: u32,
    pub(crate) serial: u32,
    pub(crate) synced: bool,
    /// Namespaces that exist: a Namespace object, or any Service or Pod in it.
    pub(crate) namespaces: imbl::HashSet<String>,
    pub(crate) services: imbl::HashMap<Key, Arc<ServiceEntry>>,
    /// PTR claims on ClusterIPs and ready endpoint addresses, sorted (the first answers).
    pub(crate) reverse: imbl::HashMap<IpAddr, Arc<Vec<ReverseClaim>>>,
    /// How many pods of a namespace have an IP, for `a-b-c-d.<ns>.pod.<zone>` in `verified` mode.
    pub(crate) pod_ips: imbl::HashMap<(String, IpAddr), u32>,
}

/// The objects a snapshot is built from (what the reflectors hold).
#[derive(Default)]
pub struct Objects<'a> {
    /// Every Service.
    pub services: Vec<&'a core::Service>,
    /// Every EndpointSlice.
    pub endpoint_slices: Vec<&'a discovery::EndpointSlice>,
    /// Every Pod (only their IPs and namespaces are used).
    pub pods: Vec<&'a core::Pod>,
    /// Every Namespace.
    pub namespaces: Vec<&'a core::Namespace>,
}

/// Parses a zone such as `cluster.local` (a trailing dot is allowed).
pub fn parse_zone(zone: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut name = Name::from_ascii(zone.trim_end_matches('.'))?.to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

fn labels_of(name: &Name) -> Vec<String> {
    name.iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect()
}

pub(crate) fn child(parent: &Name, label: &str) -> Option<Name> {
    Name::from_ascii(label).ok()?.append_domain(parent).ok()
}

// === impl Snapshot ===

impl Snapshot {
    /// The snapshot served before the first sync: every in-zone name gets SERVFAIL.
    pub fn unsynced(zone: Name, ttl: u32) -> Self {
        Snapshot {
            zone_labels: labels_of(&zone),
            zone,
            ttl,
            serial: 0,
            synced: false,
            namespaces: imbl::HashSet::new(),
            services: imbl::HashMap::new(),
            reverse: imbl::HashMap::new(),
            pod_ips: imbl::HashMap::new(),
        }
    }

    /// Builds the index from the cluster's objects at once. `serial` becomes the SOA serial.
    pub fn build(zone: Name, ttl: u32, serial: u32, objects: &Objects<'_>) -> Self {
        let mut index = Index::new(zone, ttl);
        for ns in &objects.namespaces {
            index.apply_namespace(ns);
        }
        for svc in &objects.services {
            index.apply_service(svc);
        }
        for slice in &objects.endpoint_slices {
            index.apply_endpoint_slice(slice);
        }
        for pod in &objects.pods {
            index.apply_pod(pod);
        }
        index.snapshot(serial)
    }

    /// The zone this snapshot is authoritative for.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// The TTL of every answer, and the SOA minimum.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Whether this snapshot reflects a full sync with the API server.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// `<zone>. IN SOA ns.dns.<zone>. hostmaster.<zone>. <serial> 7200 1800 86400 <ttl>`, as CoreDNS
    /// puts in the authority section of negative answers.
    pub fn soa(&self) -> Record {
        let mname = child(&self.zone, "dns").and_then(|n| child(&n, "ns")).expect("valid name");
        let rname = child(&self.zone, "hostmaster").expect("valid name");
        Record::from_rdata(self.zone.clone(), self.ttl, RData::SOA(SOA::new(mname, rname, self.serial, 7200, 1800, 86400, self.ttl)))
    }

    /// Answers one question. `qname` is used as asked (its case is kept in the answer's owner
    /// name); matching is case-insensitive.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let labels = labels_of(qname);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let mut collect = Collect { snapshot: self, qname, answers: Vec::new(), additionals: Vec::new() };
        match self.lookup(&labels, qtype, &mut collect) {
            Outcome::Found if collect.answers.is_empty() => Answer::NoData,
            Outcome::Found => Answer::Records { answers: collect.answers, additionals: collect.additionals },
            Outcome::NoData => Answer::NoData,
            Outcome::NxDomain => Answer::NxDomain,
            Outcome::NotSynced => Answer::NotSynced,
            Outcome::NotOurs => Answer::NotOurs,
        }
    }

    /// Whether `labels` (lowercased, the root's empty label left out) end with the zone's.
    pub(crate) fn in_zone_labels(&self, labels: &[&str]) -> bool {
        let z = self.zone_labels.len();
        labels.len() >= z && labels[labels.len() - z..].iter().zip(&self.zone_labels).all(|(a, b)| *a == b)
    }

    /// The one implementation of the specification's names: finds what `labels` (lowercased)
    /// name and gives its records of `qtype` to `sink`. [`Outcome::Found`] with no answer record
    /// given is NODATA (additionals given then are dropped). [`Snapshot::answer`] collects
    /// hickory records from it and the UDP fast path (`crate::wire`) writes wire bytes, so both
    /// answer alike by construction.
    pub(crate) fn lookup(&self, labels: &[&str], qtype: RecordType, sink: &mut impl Sink) -> Outcome {
        if self.in_zone_labels(labels) {
            if !self.synced {
                return Outcome::NotSynced;
            }
            return self.in_zone(&labels[..labels.len() - self.zone_labels.len()], qtype, sink);
        }
        if let Some(ip) = reverse_ip(labels) {
            return match self.reverse.get(&ip).and_then(|claims| claims.first()) {
                _ if !self.synced => Outcome::NotSynced,
                Some(claim) if qtype == RecordType::PTR => {
                    sink.record(Section::Answer, Owner::Question, Data::Ptr(&claim.target));
                    Outcome::Found
                }
                Some(_) => Outcome::NoData,
                None => Outcome::NotOurs,
            };
        }
        Outcome::NotOurs
    }

    fn address_records(section: Section, owner: Owner<'_>, ips: &[IpAddr], qtype: RecordType, sink: &mut impl Sink) {
        for ip in ips {
            match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A) => sink.record(section, owner, Data::A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => sink.record(section, owner, Data::Aaaa(*v6)),
                _ => {}
            }
        }
    }

    /// A and AAAA records for `owner`, for the additional section.
    fn all_address_records(owner: &Name, ips: &[IpAddr], sink: &mut impl Sink) {
        Self::address_records(Section::Additional, Owner::Name(owner), ips, RecordType::A, sink);
        Self::address_records(Section::Additional, Owner::Name(owner), ips, RecordType::AAAA, sink);
    }

    /// `rel` are the lowercased labels left of the zone.
    fn in_zone(&self, rel: &[&str], qtype: RecordType, sink: &mut impl Sink) -> Outcome {
        let Some((last, rest)) = rel.split_last() else {
            // The zone apex exists; only its SOA is served.
            if qtype != RecordType::SOA {
                return Outcome::NoData;
            }
            sink.record(Section::Answer, Owner::Name(&self.zone), Data::Soa);
            return Outcome::Found;
        };
        match *last {
            "dns-version" if rest.is_empty() => {
                if qtype != RecordType::TXT {
                    return Outcome::NoData;
                }
                sink.record(Section::Answer, Owner::Question, Data::Txt(SCHEMA_VERSION));
                Outcome::Found
            }
            "svc" => self.services(rest, qtype, sink),
            "pod" => self.pods(rest, qtype, sink),
            _ => Outcome::NxDomain,
        }
    }

    /// `rel` ends with the namespace: `[[_port, _proto,] | [endpoint,]] svc, ns`.
    fn services(&self, rel: &[&str], qtype: RecordType, sink: &mut impl Sink) -> Outcome {
        let Some((ns, rest)) = rel.split_last() else { return Outcome::NoData };
        if !self.namespaces.contains(*ns) {
            return Outcome::NxDomain;
        }
        let Some((svc_name, rest)) = rest.split_last() else { return Outcome::NoData };
        let Some(svc) = self.services.get(&((*ns).to_string(), (*svc_name).to_string())) else { return Outcome::NxDomain };
        match rest {
            [] => Self::service(svc, qtype, None, sink),
            [endpoint] => {
                // Names below an ExternalName Service do not exist.
                if matches!(svc.kind, Kind::ExternalName(_)) {
                    return Outcome::NxDomain;
                }
                let Some(ips) = svc.endpoints.get(*endpoint) else { return Outcome::NxDomain };
                match qtype {
                    RecordType::A | RecordType::AAAA => {
                        Self::address_records(Section::Answer, Owner::Question, ips, qtype, sink);
                        Outcome::Found
                    }
                    _ => Outcome::NoData,
                }
            }
            [port, proto] => {
                let (Some(port), Some(proto)) = (port.strip_prefix('_'), proto.strip_prefix('_')) else { return Outcome::NxDomain };
                if port.is_empty() || matches!(svc.kind, Kind::ExternalName(_)) || !svc.ports.iter().any(|p| p.name == port && p.protocol == proto) {
                    return Outcome::NxDomain;
                }
                Self::service(svc, qtype, Some((port, proto)), sink)
            }
            _ => Outcome::NxDomain,
        }
    }

    /// The records of a Service's own name, or of one of its `_port._proto` names.
    fn service(svc: &ServiceEntry, qtype: RecordType, port: Option<(&str, &str)>, sink: &mut impl Sink) -> Outcome {
        let wanted = |p: &&Port| port.is_none_or(|(name, proto)| p.name == name && p.protocol == proto);
        let port_count = svc.ports.iter().filter(wanted).count();
        match &svc.kind {
            Kind::ExternalName(target) => {
                sink.record(Section::Answer, Owner::Question, Data::Cname(target));
                Outcome::Found
            }
            Kind::ClusterIp(ips) => match qtype {
                RecordType::A | RecordType::AAAA if port.is_none() => {
                    Self::address_records(Section::Answer, Owner::Question, ips, qtype, sink);
                    Outcome::Found
                }
                RecordType::SRV => {
                    let weight = srv_weight(port_count);
                    for p in svc.ports.iter().filter(wanted) {
                        sink.record(Section::Answer, Owner::Question, Data::Srv { weight, port: p.port, target: &svc.fqdn });
                    }
                    Self::all_address_records(&svc.fqdn, ips, sink);
                    Outcome::Found
                }
                _ => Outcome::NoData,
            },
            Kind::Headless => {
                // A headless Service without ready endpoints does not exist, as in CoreDNS.
                if svc.endpoints.is_empty() {
                    return Outcome::NxDomain;
                }
                match qtype {
                    RecordType::A | RecordType::AAAA if port.is_none() => {
                        let mut ips: Vec<IpAddr> = Vec::new();
                        for ip in svc.endpoints.values().flatten() {
                            if !ips.contains(ip) {
                                ips.push(*ip);
                            }
                        }
                        Self::address_records(Section::Answer, Owner::Question, &ips, qtype, sink);
                        Outcome::Found
                    }
                    RecordType::SRV => {
                        let weight = srv_weight(port_count * svc.endpoints.len());
                        for (host, ips) in &svc.endpoints {
                            let Some(target) = child(&svc.fqdn, host) else { continue };
                            for p in svc.ports.iter().filter(wanted) {
                                sink.record(Section::Answer, Owner::Question, Data::Srv { weight, port: p.port, target: &target });
                            }
                            if port_count > 0 {
                                Self::all_address_records(&target, ips, sink);
                            }
                        }
                        Outcome::Found
                    }
                    _ => Outcome::NoData,
                }
            }
        }
    }

    /// `rel` ends with the namespace: `[a-b-c-d,] ns`. Only IPs of pods in that namespace
    /// answer (CoreDNS's `pods verified`).
    fn pods(&self, rel: &[&str], qtype: RecordType, sink: &mut impl Sink) -> Outcome {
        let Some((ns, rest)) = rel.split_last() else { return Outcome::NoData };
        if !self.namespaces.contains(*ns) {
            return Outcome::NxDomain;
        }
        match rest {
            [] => Outcome::NoData,
            [ip] => {
                let Some(ip) = undashed(ip) else { return Outcome::NxDomain };
                if !self.pod_ips.contains_key(&((*ns).to_string(), ip)) {
                    return Outcome::NxDomain;
                }
                Self::address_records(Section::Answer, Owner::Question, &[ip], qtype, sink);
                Outcome::Found
            }
            _ => Outcome::NxDomain,
        }
    }
}

/// What [`Snapshot::lookup`] found, besides the records it gave its sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The name exists; its records (none: NODATA) went to the sink.
    Found,
    /// The name exists without records of the asked type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// In the zone, before the first sync.
    NotSynced,
    /// Not ours to answer.
    NotOurs,
}

/// The section a record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    Answer,
    Additional,
}

/// A record's owner name.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Owner<'a> {
    /// The question's name as asked (its case kept).
    Question,
    /// A name of the snapshot.
    Name(&'a Name),
}

/// A record's data; every record has the snapshot's TTL and class IN.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Data<'a> {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(&'a Name),
    Ptr(&'a Name),
    /// Priority 0.
    Srv {
        weight: u16,
        port: u16,
        target: &'a Name,
    },
    Txt(&'static str),
    /// The zone's SOA ([`Snapshot::soa`]); its owner is the zone.
    Soa,
}

/// Receives the records of one answer, in order.
pub(crate) trait Sink {
    fn record(&mut self, section: Section, owner: Owner<'_>, data: Data<'_>);
}

/// The sink of [`Snapshot::answer`]: hickory records.
struct Collect<'q> {
    snapshot: &'q Snapshot,
    qname: &'q Name,
    answers: Vec<Record>,
    additionals: Vec<Record>,
}

impl Sink for Collect<'_> {
    fn record(&mut self, section: Section, owner: Owner<'_>, data: Data<'_>) {
        let owner = match owner {
            Owner::Question => self.qname.clone(),
            Owner::Name(name) => name.clone(),
        };
        let record = match data {
            Data::Soa => self.snapshot.soa(),
            data => {
                let rdata = match data {
                    Data::A(v4) => RData::A(A(v4)),
                    Data::Aaaa(v6) => RData::AAAA(AAAA(v6)),
                    Data::Cname(target) => RData::CNAME(CNAME(target.clone())),
                    Data::Ptr(target) => RData::PTR(PTR(target.clone())),
                    Data::Srv { weight, port, target } => RData::SRV(SRV::new(0, weight, port, target.clone())),
                    Data::Txt(text) => RData::TXT(TXT::new(vec![text.to_string()])),
                    Data::Soa => unreachable!("handled above"),
                };
                Record::from_rdata(owner, self.snapshot.ttl, rdata)
            }
        };
        match section {
            Section::Answer => self.answers.push(record),
            Section::Additional => self.additionals.push(record),
        }
    }
}

/// CoreDNS gives each of N SRV records of one priority the weight ⌊100/N⌋.
fn srv_weight(n: usize) -> u16 {
    u16::try_from(100 / n.max(1)).unwrap_or(0)
}

/// `10.0.0.1` → `10-0-0-1`, `fd00::1` → `fd00--1`: CoreDNS's name for an endpoint without hostname.
pub(crate) fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// `10-0-0-1` → `10.0.0.1`; `fd00--1` → `fd00::1`.
fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The address of a full reverse name (`4.3.2.1.in-addr.arpa`, 32 nibbles `.ip6.arpa`).
fn reverse_ip(labels: &[&str]) -> Option<IpAddr> {
    match labels {
        [d, c, b, a, in_addr, arpa] if *in_addr == "in-addr" && *arpa == "arpa" => {
            let octet = |s: &str| if s.len() > 1 && s.starts_with('0') { None } else { s.parse::<u8>().ok() };
            Some(IpAddr::V4(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?)))
        }
        [nibbles @ .., ip6, arpa] if nibbles.len() == 32 && *ip6 == "ip6" && *arpa == "arpa" => {
            let mut value: u128 = 0;
            for nibble in nibbles.iter().rev() {
                let [c] = nibble.as_bytes() else { return None };
                value = (value << 4) | u128::from((*c as char).to_digit(16)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, spec: serde_json::Value) -> core::Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})).unwrap()
    }

    fn slice(ns: &str, svc: &str, endpoints: serde_json::Value) -> discovery::EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-abc"), "namespace": ns, "labels": {crate::index::SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn pod(ns: &str, name: &str, ip: &str) -> core::Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "status": {"podIP": ip, "podIPs": [{"ip": ip}]}})).unwrap()
    }

    fn namespace(name: &str) -> core::Namespace {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    }

    fn fixture() -> Snapshot {
        let services = [
            svc(
                "default",
                "backend",
                json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
            ),
            svc("default", "unnamed", json!({"clusterIP": "10.96.0.21", "ports": [{"port": 8080}]})),
            svc("default", "v6", json!({"clusterIP": "fd00::21", "clusterIPs": ["fd00::21"]})),
            svc("default", "postgres", json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]})),
            svc("default", "empty", json!({"clusterIP": "None"})),
            svc("default", "external-database", json!({"type": "ExternalName", "externalName": "db.example.com"})),
        ];
        let slices = [
            slice(
                "default",
                "postgres",
                json!([
                    {"addresses": ["10.244.0.5"], "hostname": "postgres-0", "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.6"], "hostname": "postgres-1", "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.7"], "conditions": {}},
                    {"addresses": ["10.244.0.8"], "hostname": "postgres-3", "conditions": {"ready": false}},
                ]),
            ),
            slice("default", "empty", json!([{"addresses": ["10.244.0.9"], "conditions": {"ready": false}}])),
            slice("default", "backend", json!([{"addresses": ["10.244.0.10"], "conditions": {"ready": true}}])),
        ];
        let pods = [pod("default", "p", "10.244.0.5")];
        let namespaces = [namespace("default"), namespace("quiet")];
        let objects = Objects {
            services: services.iter().collect(),
            endpoint_slices: slices.iter().collect(),
            pods: pods.iter().collect(),
            namespaces: namespaces.iter().collect(),
        };
        Snapshot::build(parse_zone("cluster.local").unwrap(), 5, 42, &objects)
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// The answer as `dig +short`-like lines (`TYPE rdata`), answers then `;` additionals.
    fn show(answer: Answer) -> String {
        match answer {
            Answer::Records { answers, additionals } => {
                let line = |r: &Record| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data);
                let mut out: Vec<String> = answers.iter().map(line).collect();
                out.extend(additionals.iter().map(|r| format!("+ {}", line(r))));
                out.join("\n")
            }
            other => format!("{other:?}"),
        }
    }

    fn ask(q: &str, t: RecordType) -> String {
        show(fixture().answer(&name(q), t))
    }

    #[test]
    fn cluster_ip_service() {
        assert_eq!(ask("backend.default.svc.cluster.local.", RecordType::A), "backend.default.svc.cluster.local. 5 A 10.96.0.20");
        assert_eq!(ask("BackEnd.Default.SVC.cluster.LOCAL.", RecordType::A), "BackEnd.Default.SVC.cluster.LOCAL. 5 A 10.96.0.20");
        assert_eq!(ask("backend.default.svc.cluster.local.", RecordType::AAAA), "NoData");
        assert_eq!(ask("backend.default.svc.cluster.local.", RecordType::TXT), "NoData");
        assert_eq!(ask("v6.default.svc.cluster.local.", RecordType::AAAA), "v6.default.svc.cluster.local. 5 AAAA fd00::21");
        assert_eq!(ask("v6.default.svc.cluster.local.", RecordType::A), "NoData");
        // Endpoints of a ClusterIP Service also have names (CoreDNS).
        assert_eq!(ask("10-244-0-10.backend.default.svc.cluster.local.", RecordType::A), "10-244-0-10.backend.default.svc.cluster.local. 5 A 10.244.0.10");
    }

    #[test]
    fn srv_for_named_ports() {
        assert_eq!(
            ask("_http._tcp.backend.default.svc.cluster.local.", RecordType::SRV),
            "_http._tcp.backend.default.svc.cluster.local. 5 SRV 0 100 80 backend.default.svc.cluster.local.\n\
             + backend.default.svc.cluster.local. 5 A 10.96.0.20"
        );
        assert_eq!(
            ask("backend.default.svc.cluster.local.", RecordType::SRV),
            "backend.default.svc.cluster.local. 5 SRV 0 50 80 backend.default.svc.cluster.local.\n\
             backend.default.svc.cluster.local. 5 SRV 0 50 53 backend.default.svc.cluster.local.\n\
             + backend.default.svc.cluster.local. 5 A 10.96.0.20"
        );
        assert_eq!(ask("_http._udp.backend.default.svc.cluster.local.", RecordType::SRV), "NxDomain");
        assert_eq!(ask("_dns._udp.backend.default.svc.cluster.local.", RecordType::A), "NoData");
        assert_eq!(ask("http.tcp.backend.default.svc.cluster.local.", RecordType::SRV), "NxDomain");
        assert_eq!(ask("_._tcp.unnamed.default.svc.cluster.local.", RecordType::SRV), "NxDomain");
    }

    #[test]
    fn headless_service() {
        assert_eq!(
            ask("postgres.default.svc.cluster.local.", RecordType::A),
            "postgres.default.svc.cluster.local. 5 A 10.244.0.7\n\
             postgres.default.svc.cluster.local. 5 A 10.244.0.5\n\
             postgres.default.svc.cluster.local. 5 A 10.244.0.6"
        );
        assert_eq!(ask("postgres-0.postgres.default.svc.cluster.local.", RecordType::A), "postgres-0.postgres.default.svc.cluster.local. 5 A 10.244.0.5");
        assert_eq!(ask("postgres-0.postgres.default.svc.cluster.local.", RecordType::AAAA), "NoData");
        assert_eq!(ask("postgres-3.postgres.default.svc.cluster.local.", RecordType::A), "NxDomain");
        assert_eq!(ask("postgres.default.svc.cluster.local.", RecordType::AAAA), "NoData");
        assert_eq!(ask("empty.default.svc.cluster.local.", RecordType::A), "NxDomain");
        assert_eq!(ask("empty.default.svc.cluster.local.", RecordType::TXT), "NxDomain");
        assert_eq!(
            ask("_pg._tcp.postgres.default.svc.cluster.local.", RecordType::SRV),
            "_pg._tcp.postgres.default.svc.cluster.local. 5 SRV 0 33 5432 10-244-0-7.postgres.default.svc.cluster.local.\n\
             _pg._tcp.postgres.default.svc.cluster.local. 5 SRV 0 33 5432 postgres-0.postgres.default.svc.cluster.local.\n\
             _pg._tcp.postgres.default.svc.cluster.local. 5 SRV 0 33 5432 postgres-1.postgres.default.svc.cluster.local.\n\
             + 10-244-0-7.postgres.default.svc.cluster.local. 5 A 10.244.0.7\n\
             + postgres-0.postgres.default.svc.cluster.local. 5 A 10.244.0.5\n\
             + postgres-1.postgres.default.svc.cluster.local. 5 A 10.244.0.6"
        );
    }

    #[test]
    fn external_name() {
        let cname = "external-database.default.svc.cluster.local. 5 CNAME db.example.com.";
        assert_eq!(ask("external-database.default.svc.cluster.local.", RecordType::A), cname);
        assert_eq!(ask("external-database.default.svc.cluster.local.", RecordType::CNAME), cname);
        assert_eq!(ask("x.external-database.default.svc.cluster.local.", RecordType::A), "NxDomain");
    }

    #[test]
    fn ptr_for_cluster_ips_and_endpoints() {
        assert_eq!(ask("20.0.96.10.in-addr.arpa.", RecordType::PTR), "20.0.96.10.in-addr.arpa. 5 PTR backend.default.svc.cluster.local.");
        assert_eq!(ask("5.0.244.10.in-addr.arpa.", RecordType::PTR), "5.0.244.10.in-addr.arpa. 5 PTR postgres-0.postgres.default.svc.cluster.local.");
        assert_eq!(
            ask("1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", RecordType::PTR),
            "1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 PTR v6.default.svc.cluster.local."
        );
        assert_eq!(ask("8.0.244.10.in-addr.arpa.", RecordType::PTR), "NotOurs");
        assert_eq!(ask("20.0.96.10.in-addr.arpa.", RecordType::A), "NoData");
    }

    #[test]
    fn negative_answers_where_coredns_gives_them() {
        for (q, want) in [
            ("cluster.local.", "NoData"),
            ("svc.cluster.local.", "NoData"),
            ("default.svc.cluster.local.", "NoData"),
            ("quiet.svc.cluster.local.", "NoData"),
            ("nope.svc.cluster.local.", "NxDomain"),
            ("missing.default.svc.cluster.local.", "NxDomain"),
            ("backend.nope.svc.cluster.local.", "NxDomain"),
            ("example.com.default.svc.cluster.local.", "NxDomain"),
            ("backend.default.foo.cluster.local.", "NxDomain"),
            ("foo.cluster.local.", "NxDomain"),
            ("a.b.c.d.backend.default.svc.cluster.local.", "NxDomain"),
            ("dns-version.cluster.local.", "NoData"),
        ] {
            assert_eq!(ask(q, RecordType::A), want, "{q}");
        }
        assert_eq!(ask("cluster.local.", RecordType::SOA), "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5");
        assert_eq!(ask("example.com.", RecordType::A), "NotOurs");
        assert_eq!(ask("local.", RecordType::A), "NotOurs");
    }

    #[test]
    fn reverse_names() {
        let reverse_ip = |s: &str| {
            let labels = labels_of(&name(s));
            reverse_ip(&labels.iter().map(String::as_str).collect::<Vec<_>>())
        };
        assert_eq!(reverse_ip("4.3.2.1.in-addr.arpa."), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(reverse_ip("4.3.2.1.IN-ADDR.ARPA."), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(reverse_ip("04.3.2.1.in-addr.arpa."), None);
        assert_eq!(reverse_ip("3.2.1.in-addr.arpa."), None);
        assert_eq!(reverse_ip("256.3.2.1.in-addr.arpa."), None);
        assert_eq!(reverse_ip("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."), Some("fd00::1".parse().unwrap()));
        assert_eq!(reverse_ip("10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."), None);
        assert_eq!(undashed("fd00--1"), Some("fd00::1".parse().unwrap()));
        assert_eq!(dashed("fd00::1".parse().unwrap()), "fd00--1");
    }

    #[test]
    fn dns_version() {
        assert_eq!(ask("dns-version.cluster.local.", RecordType::TXT), "dns-version.cluster.local. 5 TXT 1.1.0");
    }

    #[test]
    fn pod_records_are_verified() {
        assert_eq!(ask("10-244-0-5.default.pod.cluster.local.", RecordType::A), "10-244-0-5.default.pod.cluster.local. 5 A 10.244.0.5");
        assert_eq!(ask("10-244-0-5.default.pod.cluster.local.", RecordType::AAAA), "NoData");
        assert_eq!(ask("10-244-0-99.default.pod.cluster.local.", RecordType::A), "NxDomain");
        assert_eq!(ask("10-244-0-5.quiet.pod.cluster.local.", RecordType::A), "NxDomain");
        assert_eq!(ask("default.pod.cluster.local.", RecordType::A), "NoData");
        assert_eq!(ask("not-an-ip.default.pod.cluster.local.", RecordType::A), "NxDomain");
    }

    #[test]
    fn unsynced_is_servfail_for_our_names_only() {
        let snap = Snapshot::unsynced(parse_zone("cluster.local").unwrap(), 5);
        assert_eq!(snap.answer(&name("backend.default.svc.cluster.local."), RecordType::A), Answer::NotSynced);
        assert_eq!(snap.answer(&name("1.0.96.10.in-addr.arpa."), RecordType::PTR), Answer::NotSynced);
        assert_eq!(snap.answer(&name("example.com."), RecordType::A), Answer::NotOurs);
    }

    #[test]
    fn other_zone_and_ttl() {
        let snap = Snapshot::build(parse_zone("Example.Internal.").unwrap(), 30, 1, &Objects { namespaces: vec![&namespace("x")], ..Default::default() });
        assert_eq!(show(snap.answer(&name("x.svc.example.internal."), RecordType::A)), "NoData");
        assert_eq!(snap.soa().ttl, 30);
        assert_eq!(show(snap.answer(&name("x.svc.cluster.local."), RecordType::A)), "NotOurs");
    }
}
