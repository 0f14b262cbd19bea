//! The nftables ruleset: a fixed skeleton of chains whose behaviour comes from map and set
//! elements, and the transactions that move the kernel from one set of elements to the next.
//! Pure: scripts are strings; [`crate::nft`] applies them.
//!
//! # Design
//!
//! Per packet, the cost does not depend on the number of Services: every decision is one hash
//! or interval lookup.
//!
//! 1. `services` (nat prerouting and output): `ip daddr . meta l4proto . th dport` is looked up in
//!    `service-ips-v4` (ClusterIPs, `externalIPs`, LoadBalancer IPs) or, for the node's own
//!    addresses, `meta l4proto . th dport` in `node-ports`. The value is the *path id* of the
//!    Service port (one id for the ClusterIP path, another for the external path), which is put
//!    in the packet mark.
//! 2. `pick-v4`: a client with session affinity is sent where `affinity-v4` says; otherwise
//!    `endpoint-counts-v4` sends the packet to `pick-v4-N`, N being the path's number of
//!    endpoints (one chain per distinct N, not per Service), which looks up
//!    `meta mark . numgen random mod N` in the hash map `endpoints-v4` (`id . index → address .
//!    port`) and DNATs there. Endpoints are map elements, not chains; hash maps, not interval
//!    maps, because `nft` reads back a whole interval map to change one element of it.
//! 3. `nat-postrouting`: the session-affinity entry is written (a `jump` into the one chain per
//!    distinct timeout), then masquerade for the external path of `Cluster`-policy Services
//!    (`masquerade-ids`), for hairpin (`hairpin-v4`: source = endpoint), and for ClusterIP
//!    traffic from outside the cluster CIDR.
//! 4. Filter chains before everyone else's: `filter-prerouting` drops LoadBalancer traffic not
//!    from `loadBalancerSourceRanges`; `endpoints-check` (prerouting, output) rejects traffic
//!    to Services with no endpoint (connection refused) and drops traffic to `Local`-policy paths
//!    with no local endpoint.
//! 5. Filter chains right after DNAT (`filter-prerouting-post-dnat`, `filter-output-post-dnat`):
//!    a new connection still addressed to a ClusterIP (`cluster-ips-v4`) went to a port the
//!    Service does not have, and is rejected.
//!
//! # Invariants
//!
//! - The skeleton never changes after the full sync; updates only add and delete elements, and
//!   add or delete the per-timeout affinity chains and the per-count pick chains (created before
//!   their first reference, deleted after their last).
//! - A changed element is deleted and re-added in the same transaction, so no packet sees a
//!   Service without rules.
//! - Path ids are never reused while the process lives (entries of the dynamic affinity map
//!   expire on their own and must not be inherited by another Service); a path with session
//!   affinity gets a new id when one of its endpoints goes away, so no client stays pinned to an
//!   endpoint that no longer exists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Endpoint, PortPlan, Protocol, ServiceKey, ServicePlan, Target};

/// The nftables table (family `inet`, so one table holds IPv4 and IPv6).
pub const TABLE: &str = "svcnet-proxy";
/// The declared range of the random index (only its type matters; rules use `mod N`).
const INDEX_TYPE: &str = "numgen random mod 65536";
/// Size of the dynamic session-affinity maps.
pub const AFFINITY_MAP_SIZE: u32 = 1_048_576;

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    /// The payload keyword: `ip` or `ip6`.
    fn ip(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    pub const ALL: [Family; 2] = [Family::V4, Family::V6];
}

/// The sets and maps whose elements carry the Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetName {
    /// `address . protocol . port : path id` for ClusterIPs, externalIPs, LoadBalancer IPs.
    ServiceIps(Family),
    /// `protocol . port : path id` for NodePorts.
    NodePorts,
    /// `path id . index : address . port`.
    Endpoints(Family),
    /// `path id : goto pick-v4-N` (N = the path's number of endpoints).
    EndpointCounts(Family),
    /// `path id : jump affinity-TIMEOUT`.
    AffinityIds,
    /// Path ids whose traffic is masqueraded (external path, `Cluster` policy).
    MasqueradeIds,
    /// ClusterIP path ids (masqueraded when the source is outside the cluster CIDR).
    ClusterIpIds,
    /// Every ClusterIP: what is still addressed to one after DNAT went to a port the Service
    /// does not have.
    ClusterIps(Family),
    /// `endpoint . endpoint` for endpoints on this node (hairpin).
    Hairpin(Family),
    /// `address . protocol . port : goto reject-service | drop`.
    NoEndpointServices(Family),
    /// `protocol . port : goto reject-service | drop`.
    NoEndpointNodePorts,
    /// `address . protocol . port` of LoadBalancer IPs with source ranges.
    Firewall(Family),
    /// `address . protocol . port . source range` allowed through the firewall.
    FirewallAllow(Family),
}

impl SetName {
    pub fn name(self) -> String {
        match self {
            SetName::ServiceIps(f) => format!("service-ips-{}", f.suffix()),
            SetName::NodePorts => "node-ports".into(),
            SetName::Endpoints(f) => format!("endpoints-{}", f.suffix()),
            SetName::EndpointCounts(f) => format!("endpoint-counts-{}", f.suffix()),
            SetName::AffinityIds => "affinity-ids".into(),
            SetName::MasqueradeIds => "masquerade-ids".into(),
            SetName::ClusterIpIds => "cluster-ip-ids".into(),
            SetName::ClusterIps(f) => format!("cluster-ips-{}", f.suffix()),
            SetName::Hairpin(f) => format!("hairpin-{}", f.suffix()),
            SetName::NoEndpointServices(f) => format!("no-endpoint-services-{}", f.suffix()),
            SetName::NoEndpointNodePorts => "no-endpoint-node-ports".into(),
            SetName::Firewall(f) => format!("firewall-{}", f.suffix()),
            SetName::FirewallAllow(f) => format!("firewall-allow-{}", f.suffix()),
        }
    }

    /// The declaration's body (type and flags).
    fn declaration(self) -> String {
        let key3 = |f: Family| format!("{} daddr . meta l4proto . th dport", f.ip());
        match self {
            SetName::ServiceIps(f) => format!("typeof {} : meta mark", key3(f)),
            SetName::NodePorts => "typeof meta l4proto . th dport : meta mark".into(),
            SetName::Endpoints(f) => format!("typeof meta mark . {INDEX_TYPE} : {} daddr . th dport", f.ip()),
            SetName::EndpointCounts(_) => "typeof meta mark : verdict".into(),
            SetName::AffinityIds => "typeof meta mark : verdict".into(),
            SetName::MasqueradeIds | SetName::ClusterIpIds => "typeof meta mark".into(),
            SetName::ClusterIps(f) => format!("typeof {} daddr", f.ip()),
            SetName::Hairpin(f) => format!("typeof {0} saddr . {0} daddr", f.ip()),
            SetName::NoEndpointServices(f) => format!("typeof {} : verdict", key3(f)),
            SetName::NoEndpointNodePorts => "typeof meta l4proto . th dport : verdict".into(),
            SetName::Firewall(f) => format!("typeof {}", key3(f)),
            SetName::FirewallAllow(f) => format!("typeof {} . {} saddr; flags interval", key3(f), f.ip()),
        }
    }

    pub fn is_map(self) -> bool {
        !matches!(
            self,
            SetName::MasqueradeIds | SetName::ClusterIpIds | SetName::ClusterIps(_) | SetName::Hairpin(_) | SetName::Firewall(_) | SetName::FirewallAllow(_)
        )
    }

    pub fn all() -> Vec<SetName> {
        let mut all = vec![SetName::NodePorts, SetName::AffinityIds, SetName::MasqueradeIds, SetName::ClusterIpIds, SetName::NoEndpointNodePorts];
        for f in Family::ALL {
            all.extend([
                SetName::ServiceIps(f),
                SetName::Endpoints(f),
                SetName::EndpointCounts(f),
                SetName::Hairpin(f),
                SetName::ClusterIps(f),
                SetName::NoEndpointServices(f),
                SetName::Firewall(f),
                SetName::FirewallAllow(f),
            ]);
        }
        all.sort();
        all
    }
}

/// One element of a set or map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub set: SetName,
    pub key: Key,
    /// [`Value::None`] for sets.
    pub value: Value,
}

/// An element's key; [`std::fmt::Display`] writes it as nft does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `address . protocol . port`.
    Frontend { ip: IpAddr, protocol: Protocol, port: u16 },
    /// `protocol . port`.
    NodePort { protocol: Protocol, port: u16 },
    /// A path id (`meta mark`).
    Id(u32),
    /// `path id . index`.
    Pick { id: u32, index: u32 },
    /// `address . address` (hairpin: the endpoint talking to itself).
    Hairpin(IpAddr),
    /// One address.
    Address(IpAddr),
    /// `address . protocol . port . source range`.
    SourceRange { ip: IpAddr, protocol: Protocol, port: u16, range: IpNet },
}

/// What a map element maps to; [`std::fmt::Display`] writes it as nft does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// A set element.
    None,
    /// A path id (`meta mark`).
    Id(u32),
    /// `address . port`.
    Endpoint(Endpoint),
    Goto(DynamicChain),
    Jump(DynamicChain),
    /// `goto reject-service`.
    Reject,
    Drop,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Frontend { ip, protocol, port } => write!(f, "{ip} . {} . {port}", protocol.nft()),
            Key::NodePort { protocol, port } => write!(f, "{} . {port}", protocol.nft()),
            Key::Id(id) => write!(f, "{id}"),
            Key::Pick { id, index } => write!(f, "{id} . {index}"),
            Key::Hairpin(ip) => write!(f, "{ip} . {ip}"),
            Key::Address(ip) => write!(f, "{ip}"),
            Key::SourceRange { ip, protocol, port, range } => write!(f, "{ip} . {} . {port} . {range}", protocol.nft()),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::None => Ok(()),
            Value::Id(id) => write!(f, "{id}"),
            Value::Endpoint(endpoint) => write!(f, "{} . {}", endpoint.ip, endpoint.port),
            Value::Goto(chain) => write!(f, "goto {}", chain.name()),
            Value::Jump(chain) => write!(f, "jump {}", chain.name()),
            Value::Reject => f.write_str("goto reject-service"),
            Value::Drop => f.write_str("drop"),
        }
    }
}

/// The chains that come and go with the Services using them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DynamicChain {
    /// `pick-v4-N`: the random choice among N endpoints.
    Pick(Family, u32),
    /// `affinity-SECONDS`: records the chosen endpoint for a session-affinity timeout.
    Affinity(u32),
}

/// Pick chains for up to this many endpoints are part of the skeleton and never removed; larger
/// Services get a chain of their own, added over netlink ([`crate::netlink`]) when first needed
/// (nft 1.0.6 itself refuses to add a rule that maps through an existing `typeof … th dport`
/// map in a later transaction: "conflicting protocols specified").
pub const PRESET_PICKS: u32 = 32;

impl DynamicChain {
    /// Whether the chain is always there ([`PRESET_PICKS`]).
    pub fn is_preset(self) -> bool {
        matches!(self, DynamicChain::Pick(_, n) if n <= PRESET_PICKS)
    }

    /// The chain a name stands for (the inverse of [`DynamicChain::name`]).
    pub fn parse(name: &str) -> Option<DynamicChain> {
        if let Some(rest) = name.strip_prefix("pick-") {
            let (family, n) = rest.split_once('-')?;
            let family = Family::ALL.into_iter().find(|f| f.suffix() == family)?;
            return Some(DynamicChain::Pick(family, n.parse().ok()?));
        }
        Some(DynamicChain::Affinity(name.strip_prefix("affinity-")?.parse().ok()?))
    }

    pub fn name(self) -> String {
        match self {
            DynamicChain::Pick(f, n) => format!("pick-{}-{n}", f.suffix()),
            DynamicChain::Affinity(timeout) => format!("affinity-{timeout}"),
        }
    }

    fn rules(self) -> Vec<String> {
        match self {
            DynamicChain::Pick(f, n) => {
                vec![format!(
                    "meta l4proto {{ tcp, udp, sctp }} dnat {ip} to meta mark . numgen random mod {n} map @endpoints-{v}",
                    ip = f.ip(),
                    v = f.suffix()
                )]
            }
            DynamicChain::Affinity(timeout) => affinity_rules(timeout),
        }
    }
}

/// Node-wide settings that shape the skeleton.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RulesetConfig {
    /// The node's addresses on which NodePorts are served (never loopback).
    pub node_ips: Vec<IpAddr>,
    /// The pod network; ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
}

/// Which path of a Service port an id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Path {
    Internal,
    External,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PathKey {
    port: String,
    protocol: Protocol,
    path: Path,
}

#[derive(Debug)]
struct Installed {
    plan: ServicePlan,
    ids: BTreeMap<PathKey, u32>,
    elements: Vec<Element>,
    chains: BTreeSet<DynamicChain>,
}

/// The values one element key is given, sorted, with how many Services give each: nearly always
/// one (a vector, not a map: a map's node costs hundreds of bytes for each of 100,000 keys).
type Values = Vec<(Value, u32)>;

/// Conntrack entries that would keep UDP traffic on a path that no longer exists.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StaleConntrack {
    /// UDP flows DNATed from a frontend (a ClusterIP, external IP or LoadBalancer IP, and the
    /// Service port) to an endpoint that left that Service port. Flows to the same endpoint
    /// through other Services, or straight to the pod, are not touched.
    Endpoint { frontend: IpAddr, port: u16, endpoint: Endpoint },
    /// The same through a NodePort (on any of the node's addresses).
    NodePortEndpoint { node_port: u16, endpoint: Endpoint },
    /// UDP flows to a frontend that had no endpoint (and so were not DNATed) and now has some.
    Frontend { ip: IpAddr, port: u16 },
}

/// Where UDP flows to each frontend may be DNATed now (the endpoints a path picks and the
/// serving ones): what a full sync checks the conntrack table against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpServing {
    /// ClusterIPs, external IPs and LoadBalancer IPs with their port.
    pub frontends: HashMap<(IpAddr, u16), BTreeSet<Endpoint>>,
    /// NodePorts (on any of `node_ips`).
    pub node_ports: HashMap<u16, BTreeSet<Endpoint>>,
    pub node_ips: Vec<IpAddr>,
}

impl UdpServing {
    /// Where the UDP ports of `plans` may send flows.
    fn of<'a>(plans: impl IntoIterator<Item = &'a ServicePlan>, node_ips: &[IpAddr]) -> UdpServing {
        let mut serving = UdpServing { node_ips: node_ips.to_vec(), ..UdpServing::default() };
        for port in plans.into_iter().flat_map(|p| &p.ports).filter(|p| p.protocol == Protocol::Udp) {
            let internal: BTreeSet<Endpoint> = port.internal.endpoints().iter().chain(&port.serving).copied().collect();
            for ip in &port.cluster_ips {
                serving.frontends.entry((*ip, port.port)).or_default().extend(&internal);
            }
            if let Some(external) = &port.external {
                let endpoints: BTreeSet<Endpoint> = external.target.endpoints().iter().chain(&port.serving).copied().collect();
                for ip in external.external_ips.iter().chain(&external.load_balancer_ips) {
                    serving.frontends.entry((*ip, port.port)).or_default().extend(&endpoints);
                }
                if let Some(node_port) = external.node_port {
                    serving.node_ports.entry(node_port).or_default().extend(&endpoints);
                }
            }
        }
        serving
    }

    /// The (frontend, endpoint) pairs here that `now` no longer has.
    fn left<'a>(&'a self, now: &'a UdpServing) -> impl Iterator<Item = StaleConntrack> + 'a {
        let frontends = self.frontends.iter().flat_map(move |(&(frontend, port), endpoints)| {
            let kept = now.frontends.get(&(frontend, port));
            endpoints.iter().filter(move |e| !kept.is_some_and(|k| k.contains(e))).map(move |&endpoint| StaleConntrack::Endpoint { frontend, port, endpoint })
        });
        let node_ports = self.node_ports.iter().flat_map(move |(&node_port, endpoints)| {
            let kept = now.node_ports.get(&node_port);
            endpoints
                .iter()
                .filter(move |e| !kept.is_some_and(|k| k.contains(e)))
                .map(move |&endpoint| StaleConntrack::NodePortEndpoint { node_port, endpoint })
        });
        frontends.chain(node_ports)
    }
}

/// The desired nftables state for every Service, and the changes not yet applied.
#[derive(Debug)]
pub struct Ruleset {
    config: RulesetConfig,
    services: HashMap<ServiceKey, Installed>,
    /// Reference counts per element key and value: Services may share elements (hairpin pairs,
    /// an address claimed twice); the smallest value of a key is the one installed.
    elements: HashMap<(SetName, Key), Values>,
    /// Dynamic chains with reference counts.
    chains: BTreeMap<DynamicChain, u32>,
    next_id: u32,
    used_ids: BTreeSet<u32>,
    /// The installed value of every element key touched since the last transaction.
    pending_elements: BTreeMap<(SetName, Key), Option<Value>>,
    /// Whether each affinity chain touched since the last transaction was installed.
    pending_chains: BTreeMap<DynamicChain, bool>,
    /// Off while loading for a full sync, where nothing needs a transaction.
    tracking: bool,
    /// [`Ruleset::skeleton_version`], fixed by the config.
    skeleton_version: String,
}

// === impl Ruleset ===

impl Ruleset {
    pub fn new(config: RulesetConfig) -> Ruleset {
        let mut body = String::new();
        write_skeleton_body(&config, &mut body);
        // FNV-1a: stable across builds, unlike std's hasher.
        let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        Ruleset {
            skeleton_version: format!("{hash:016x}"),
            config,
            services: HashMap::new(),
            elements: HashMap::new(),
            chains: BTreeMap::new(),
            next_id: 1,
            used_ids: BTreeSet::new(),
            pending_elements: BTreeMap::new(),
            pending_chains: BTreeMap::new(),
            tracking: true,
        }
    }

    pub fn config(&self) -> &RulesetConfig {
        &self.config
    }

    /// The number of Services with rules.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The plan installed for a Service.
    pub fn plan(&self, key: &ServiceKey) -> Option<&ServicePlan> {
        self.services.get(key).map(|i| &i.plan)
    }

    /// The Services with rules.
    pub fn services(&self) -> impl Iterator<Item = &ServicePlan> {
        self.services.values().map(|i| &i.plan)
    }

    /// Sets (or, with `None`, removes) a Service's plan. The change is recorded for the next
    /// [`Ruleset::take_transaction`]; the returned conntrack entries should be deleted once it
    /// is applied.
    pub fn set_service(&mut self, key: &ServiceKey, plan: Option<ServicePlan>) -> Vec<StaleConntrack> {
        if let (Some(installed), Some(new)) = (self.services.get(key), &plan)
            && installed.plan == *new
        {
            return Vec::new();
        }
        let old = self.services.remove(key);
        // A full sync (not tracking) replaces the whole table and has no stale entries to flush.
        let stale = if self.tracking { stale_conntrack(old.as_ref().map(|o| &o.plan), plan.as_ref(), &self.config.node_ips) } else { Vec::new() };
        let mut old_ids = BTreeMap::new();
        if let Some(old) = old {
            for element in &old.elements {
                self.unref(element);
            }
            for timeout in &old.chains {
                self.unref_chain(*timeout);
            }
            old_ids = old.ids;
            // Ids whose path survives are kept below; the others are released.
            for (path, id) in &old_ids {
                let survives = plan.as_ref().is_some_and(|p| p.ports.iter().any(|port| path_exists(port, path)));
                if !survives {
                    self.used_ids.remove(id);
                }
            }
            if plan.is_none() {
                return stale;
            }
            let old_plan = &old.plan;
            // Session affinity must not keep clients on an endpoint that left: such a path gets a
            // fresh id, which starts with an empty affinity table.
            let new_plan = plan.as_ref().expect("checked above");
            for port in &new_plan.ports {
                if port.affinity_timeout.is_none() {
                    continue;
                }
                let Some(old_port) = old_plan.ports.iter().find(|p| p.name == port.name && p.protocol == port.protocol) else { continue };
                for (path, old_target, new_target) in [
                    (Path::Internal, Some(&old_port.internal), Some(&port.internal)),
                    (Path::External, old_port.external.as_ref().map(|e| &e.target), port.external.as_ref().map(|e| &e.target)),
                ] {
                    let (Some(old_target), Some(new_target)) = (old_target, new_target) else { continue };
                    let lost = old_target.endpoints().iter().any(|e| !new_target.endpoints().contains(e));
                    if lost {
                        let path_key = PathKey { port: port.name.clone(), protocol: port.protocol, path };
                        if let Some(id) = old_ids.remove(&path_key) {
                            self.used_ids.remove(&id);
                        }
                    }
                }
            }
        }
        let Some(plan) = plan else { return stale };
        let mut ids = BTreeMap::new();
        for port in &plan.ports {
            for path in [Path::Internal, Path::External] {
                let path_key = PathKey { port: port.name.clone(), protocol: port.protocol, path };
                if !path_exists(port, &path_key) {
                    continue;
                }
                let id = match old_ids.get(&path_key) {
                    Some(id) => *id,
                    None => self.allocate_id(),
                };
                ids.insert(path_key, id);
            }
        }
        let (elements, chains) = elements_for(&plan, &ids, &self.config);
        for timeout in &chains {
            self.ref_chain(*timeout);
        }
        for element in &elements {
            self.ref_element(element);
        }
        self.services.insert(key.clone(), Installed { plan, ids, elements, chains });
        stale
    }

    fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = if self.next_id >= 0x7fff_ffff { 1 } else { self.next_id + 1 };
            if self.used_ids.insert(id) {
                return id;
            }
        }
    }

    fn installed_value(&self, key: &(SetName, Key)) -> Option<Value> {
        self.elements.get(key).and_then(|values| values.first().map(|(value, _)| *value))
    }

    fn touch(&mut self, key: &(SetName, Key)) {
        if self.tracking && !self.pending_elements.contains_key(key) {
            let value = self.installed_value(key);
            self.pending_elements.insert(*key, value);
        }
    }

    fn ref_element(&mut self, element: &Element) {
        let key = (element.set, element.key);
        self.touch(&key);
        let values = self.elements.entry(key).or_default();
        match values.binary_search_by(|(value, _)| value.cmp(&element.value)) {
            Ok(i) => values[i].1 += 1,
            Err(i) => values.insert(i, (element.value, 1)),
        }
    }

    fn unref(&mut self, element: &Element) {
        let key = (element.set, element.key);
        self.touch(&key);
        if let Some(values) = self.elements.get_mut(&key) {
            if let Ok(i) = values.binary_search_by(|(value, _)| value.cmp(&element.value)) {
                values[i].1 -= 1;
                if values[i].1 == 0 {
                    values.remove(i);
                }
            }
            if values.is_empty() {
                self.elements.remove(&key);
            }
        }
    }

    fn ref_chain(&mut self, timeout: DynamicChain) {
        if timeout.is_preset() {
            return;
        }
        let installed = self.chains.contains_key(&timeout);
        if self.tracking {
            self.pending_chains.entry(timeout).or_insert(installed);
        }
        *self.chains.entry(timeout).or_default() += 1;
    }

    fn unref_chain(&mut self, timeout: DynamicChain) {
        if timeout.is_preset() {
            return;
        }
        if self.tracking {
            self.pending_chains.entry(timeout).or_insert(true);
        }
        if let Some(count) = self.chains.get_mut(&timeout) {
            *count -= 1;
            if *count == 0 {
                self.chains.remove(&timeout);
            }
        }
    }

    /// Whether changes wait for [`Ruleset::take_transaction`].
    pub fn has_pending(&self) -> bool {
        self.pending_elements.iter().any(|(key, before)| *before != self.installed_value(key))
            || self.pending_chains.iter().any(|(timeout, before)| *before != self.chains.contains_key(timeout))
    }

    /// A ruleset holding `plans`, for a full sync (no transaction is recorded; cheaper than
    /// [`Ruleset::set_service`] one by one followed by [`Ruleset::clear_pending`]).
    pub fn with_services(config: RulesetConfig, plans: impl IntoIterator<Item = ServicePlan>) -> Ruleset {
        let mut ruleset = Ruleset::new(config);
        ruleset.tracking = false;
        for plan in plans {
            let key = plan.key.clone();
            ruleset.set_service(&key, Some(plan));
        }
        ruleset.tracking = true;
        ruleset
    }

    /// Forgets the pending changes (after a full sync installed everything).
    pub fn clear_pending(&mut self) {
        self.pending_elements.clear();
        self.pending_chains.clear();
    }

    /// The changes made since the last call, touching only the elements (and dynamic chains)
    /// that changed; `None` when nothing did.
    pub fn take_transaction(&mut self) -> Option<Transaction> {
        let mut tx = Transaction::default();
        for (chain, before) in std::mem::take(&mut self.pending_chains) {
            let after = self.chains.contains_key(&chain);
            match (before, after) {
                (false, true) => tx.add_chains.push(chain),
                (true, false) => tx.delete_chains.push(chain),
                _ => {}
            }
        }
        for (key, before) in std::mem::take(&mut self.pending_elements) {
            let after = self.installed_value(&key);
            if before == after {
                continue;
            }
            let (set, element_key) = key;
            if before.is_some() {
                tx.deletes.entry(set).or_default().push(element_key);
            }
            if let Some(value) = after {
                tx.adds.entry(set).or_default().push((element_key, value));
            }
        }
        (!tx.is_empty()).then_some(tx)
    }

    /// Every installed element, in no particular order.
    pub fn elements(&self) -> impl Iterator<Item = Element> + '_ {
        self.elements.iter().filter_map(|((set, key), values)| values.first().map(|(value, _)| Element { set: *set, key: *key, value: *value }))
    }

    /// The dynamic chains the installed Services need beyond the preset ones.
    pub fn dynamic_chains(&self) -> impl Iterator<Item = DynamicChain> + '_ {
        self.chains.keys().copied()
    }

    /// The UDP frontends of the installed Services and where their flows may go.
    pub fn udp_serving(&self) -> UdpServing {
        UdpServing::of(self.services.values().map(|i| &i.plan), &self.config.node_ips)
    }

    /// The table without any Service: sets and maps declared empty, the skeleton chains and
    /// the preset pick chains, replacing whatever table of that name exists. Its comment holds
    /// [`Ruleset::skeleton_version`].
    pub fn skeleton_script(&self) -> String {
        let mut s = String::with_capacity(16 * 1024);
        self.write_table(&mut s, false);
        s
    }

    /// A digest of the skeleton (it depends on the code and the node's cluster CIDRs): a table
    /// whose comment carries it needs no new skeleton.
    pub fn skeleton_version(&self) -> &str {
        &self.skeleton_version
    }

    /// The whole table, replacing whatever table of that name exists, in one transaction: the
    /// skeleton, the node's addresses, the dynamic chains and every element, as nft text.
    pub fn full_script(&self) -> String {
        let mut s = String::with_capacity(64 * self.elements.len() + 8192);
        self.write_table(&mut s, true);
        // The elements come after the rules. A rule that looks a map up binds it, and the kernel
        // walks every element the map already holds for each chain that binds it (the 32 pick
        // chains of a family all bind `endpoints-v4`): binding empty maps and filling them afterwards saves that walk.
        let mut by_set: BTreeMap<SetName, Vec<(String, Value)>> = BTreeMap::new();
        for element in self.elements() {
            by_set.entry(element.set).or_default().push((element.key.to_string(), element.value));
        }
        for (set, mut elements) in by_set {
            // Keys are unique within a set and of one shape: sorted as text, for readable
            // snapshots.
            elements.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let _ = writeln!(s, "add element inet {TABLE} {} {{", set.name());
            for (i, (key, value)) in elements.iter().enumerate() {
                s.push('\t');
                s.push_str(key);
                if set.is_map() {
                    let _ = write!(s, " : {value}");
                }
                s.push_str(if i + 1 < elements.len() { ",\n" } else { "\n" });
            }
            s.push_str("}\n");
        }
        s
    }

    /// `table inet svcnet-proxy { ... }`, replacing an existing one; with `complete`, the node's
    /// addresses and the dynamic chains too.
    fn write_table(&self, s: &mut String, complete: bool) {
        // Creating, deleting and re-creating in one transaction replaces an old table atomically
        // and works when there is none.
        let _ = writeln!(s, "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{");
        let _ = writeln!(s, "\tcomment \"Services, by svcnet-proxy; skeleton {}\"", self.skeleton_version());
        for f in Family::ALL {
            let ips: Vec<String> = self.config.node_ips.iter().filter(|ip| Family::of(ip) == f).map(|ip| ip.to_string()).collect();
            let ty = if f == Family::V4 { "ipv4_addr" } else { "ipv6_addr" };
            let _ = write!(s, "\n\tset node-ips-{} {{\n\t\ttype {ty}\n", f.suffix());
            if complete && !ips.is_empty() {
                let _ = writeln!(s, "\t\telements = {{ {} }}", ips.join(", "));
            }
            s.push_str("\t}\n");
        }
        write_skeleton_body(&self.config, s);
        if complete {
            for chain in self.chains.keys() {
                let _ = write!(s, "\n\tchain {} {{\n", chain.name());
                for rule in chain.rules() {
                    let _ = writeln!(s, "\t\t{rule}");
                }
                s.push_str("\t}\n");
            }
        }
        s.push_str("}\n");
    }
}

/// Sets, maps, skeleton chains and preset pick chains: what never changes after the full sync.
fn write_skeleton_body(config: &RulesetConfig, s: &mut String) {
    for f in Family::ALL {
        let _ = write!(
            s,
            "\n\tmap affinity-{} {{\n\t\ttypeof meta mark . {ip} saddr : {ip} daddr . th dport\n\t\tsize {AFFINITY_MAP_SIZE}\n\t\tflags dynamic, timeout\n\t}}\n",
            f.suffix(),
            ip = f.ip()
        );
    }
    for set in SetName::all() {
        let kind = if set.is_map() { "map" } else { "set" };
        let _ = write!(s, "\n\t{kind} {} {{\n", set.name());
        for part in set.declaration().split("; ") {
            let _ = writeln!(s, "\t\t{part}");
        }
        s.push_str("\t}\n");
    }
    s.push_str(&skeleton_chains(config));
    let preset = Family::ALL.into_iter().flat_map(|f| (1..=PRESET_PICKS).map(move |n| DynamicChain::Pick(f, n)));
    for chain in preset {
        let _ = write!(s, "\n\tchain {} {{\n", chain.name());
        for rule in chain.rules() {
            let _ = writeln!(s, "\t\t{rule}");
        }
        s.push_str("\t}\n");
    }
}

/// What one incremental sync changes: dynamic chains added first (before anything refers to
/// them), element deletes, element adds, dynamic chains deleted last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    pub add_chains: Vec<DynamicChain>,
    pub deletes: BTreeMap<SetName, Vec<Key>>,
    pub adds: BTreeMap<SetName, Vec<(Key, Value)>>,
    pub delete_chains: Vec<DynamicChain>,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.add_chains.is_empty() && self.deletes.is_empty() && self.adds.is_empty() && self.delete_chains.is_empty()
    }

    /// The same as an nft script.
    pub fn script(&self) -> String {
        let mut script = String::new();
        for chain in &self.add_chains {
            let _ = writeln!(script, "add chain inet {TABLE} {}", chain.name());
            for rule in chain.rules() {
                let _ = writeln!(script, "add rule inet {TABLE} {} {rule}", chain.name());
            }
        }
        for (set, keys) in &self.deletes {
            let keys: Vec<String> = keys.iter().map(Key::to_string).collect();
            let _ = writeln!(script, "delete element inet {TABLE} {} {{ {} }}", set.name(), keys.join(", "));
        }
        for (set, elements) in &self.adds {
            let rendered: Vec<String> = elements.iter().map(|(key, value)| render_element(*set, key, value)).collect();
            let _ = writeln!(script, "add element inet {TABLE} {} {{ {} }}", set.name(), rendered.join(", "));
        }
        for chain in &self.delete_chains {
            let _ = writeln!(script, "delete chain inet {TABLE} {}", chain.name());
        }
        script
    }
}

fn path_exists(port: &PortPlan, path: &PathKey) -> bool {
    port.name == path.port && port.protocol == path.protocol && (path.path == Path::Internal || port.external.is_some())
}

/// The rules of an affinity chain. IPv6 is left out for now: nft 1.0.6 aborts compiling an
/// `update` whose key and data are both IPv6 concatenations (register allocation assertion), so
/// IPv6 Services get no session affinity (docs/differences.md).
fn affinity_rules(timeout: u32) -> Vec<String> {
    [Family::V4]
        .iter()
        .map(|f| format!("update @affinity-{} {{ meta mark . {ip} saddr timeout {timeout}s : {ip} daddr . th dport }}", f.suffix(), ip = f.ip()))
        .collect()
}

fn skeleton_chains(config: &RulesetConfig) -> String {
    let mut s = String::new();
    let mut chain = |name: &str, hook: Option<&str>, rules: Vec<String>| {
        let _ = write!(s, "\n\tchain {name} {{\n");
        if let Some(hook) = hook {
            let _ = writeln!(s, "\t\t{hook}");
        }
        for rule in rules {
            let _ = writeln!(s, "\t\t{rule}");
        }
        s.push_str("\t}\n");
    };
    let l4 = "meta l4proto { tcp, udp, sctp }";
    let mut services = Vec::new();
    for f in Family::ALL {
        let (ip, v) = (f.ip(), f.suffix());
        services.push(format!(
            "{ip} daddr . meta l4proto . th dport @service-ips-{v} meta mark set {ip} daddr . meta l4proto . th dport map @service-ips-{v} goto pick-{v}"
        ));
    }
    for f in Family::ALL {
        let (ip, v) = (f.ip(), f.suffix());
        services
            .push(format!("{ip} daddr @node-ips-{v} meta l4proto . th dport @node-ports meta mark set meta l4proto . th dport map @node-ports goto pick-{v}"));
    }
    chain("services", None, services);
    for f in Family::ALL {
        let (ip, v) = (f.ip(), f.suffix());
        chain(
            &format!("pick-{v}"),
            None,
            vec![format!("{l4} dnat {ip} to meta mark . {ip} saddr map @affinity-{v}"), format!("meta mark vmap @endpoint-counts-{v}")],
        );
    }
    chain("nat-prerouting", Some("type nat hook prerouting priority dstnat; policy accept;"), vec!["jump services".into()]);
    chain("nat-output", Some("type nat hook output priority -100; policy accept;"), vec!["jump services".into()]);
    let mut post =
        vec!["ct status dnat meta mark vmap @affinity-ids".to_string(), "ct status dnat meta mark @masquerade-ids masquerade fully-random".to_string()];
    for f in Family::ALL {
        post.push(format!("ct status dnat {ip} saddr . {ip} daddr @hairpin-{v} masquerade fully-random", ip = f.ip(), v = f.suffix()));
    }
    for cidr in &config.cluster_cidrs {
        let ip = if cidr.addr().is_ipv4() { "ip" } else { "ip6" };
        post.push(format!("ct status dnat meta mark @cluster-ip-ids {ip} saddr != {cidr} masquerade fully-random"));
    }
    chain("nat-postrouting", Some("type nat hook postrouting priority srcnat; policy accept;"), post);
    // Endpoints in the node's own namespace are reached through input, not postrouting.
    chain("nat-input", Some("type nat hook input priority 100; policy accept;"), vec!["ct status dnat meta mark vmap @affinity-ids".into()]);
    let mut firewall = Vec::new();
    for f in Family::ALL {
        let (ip, v) = (f.ip(), f.suffix());
        firewall.push(format!(
            "ct state new {ip} daddr . meta l4proto . th dport @firewall-{v} {ip} daddr . meta l4proto . th dport . {ip} saddr != @firewall-allow-{v} drop"
        ));
    }
    // Rejecting in prerouting (not forward) also covers ClusterIPs the node has no route for.
    firewall.push("ct state new jump endpoints-check".into());
    chain("filter-prerouting", Some("type filter hook prerouting priority dstnat - 10; policy accept;"), firewall);
    let mut check = Vec::new();
    for f in Family::ALL {
        check.push(format!("{ip} daddr . meta l4proto . th dport vmap @no-endpoint-services-{v}", ip = f.ip(), v = f.suffix()));
    }
    for f in Family::ALL {
        check.push(format!("{ip} daddr @node-ips-{v} meta l4proto . th dport vmap @no-endpoint-node-ports", ip = f.ip(), v = f.suffix()));
    }
    chain("endpoints-check", None, check);
    chain("filter-output", Some("type filter hook output priority -110; policy accept;"), vec!["ct state new jump endpoints-check".into()]);
    // After DNAT, a new connection still addressed to a ClusterIP went to a port the Service
    // does not have: refused, as kube-proxy does.
    let mut unknown_ports = Vec::new();
    for f in Family::ALL {
        unknown_ports.push(format!("{ip} daddr @cluster-ips-{v} reject", ip = f.ip(), v = f.suffix()));
    }
    chain("cluster-ips-check", None, unknown_ports);
    chain(
        "filter-prerouting-post-dnat",
        Some("type filter hook prerouting priority dstnat + 10; policy accept;"),
        vec!["ct state new jump cluster-ips-check".into()],
    );
    chain("filter-output-post-dnat", Some("type filter hook output priority -90; policy accept;"), vec!["ct state new jump cluster-ips-check".into()]);
    // `reject` in an inet table: ICMP(v6) port unreachable, which a TCP client sees as
    // "connection refused" at once.
    chain("reject-service", None, vec!["reject".into()]);
    s
}

fn render_element(set: SetName, key: &Key, value: &Value) -> String {
    if set.is_map() { format!("{key} : {value}") } else { key.to_string() }
}

fn verdict(target: &Target) -> Option<Value> {
    match target {
        Target::Endpoints(_) => None,
        Target::Reject => Some(Value::Reject),
        Target::Drop => Some(Value::Drop),
    }
}

/// The elements (and affinity chains, by timeout) one Service contributes.
fn elements_for(plan: &ServicePlan, ids: &BTreeMap<PathKey, u32>, config: &RulesetConfig) -> (Vec<Element>, BTreeSet<DynamicChain>) {
    let mut out = Vec::new();
    let chains = std::cell::RefCell::new(BTreeSet::new());
    let mut push = |set: SetName, key: Key, value: Value| out.push(Element { set, key, value });
    for port in &plan.ports {
        let proto = port.protocol;
        let frontend = |ip: &IpAddr| Key::Frontend { ip: *ip, protocol: proto, port: port.port };
        let path_id = |path| ids[&PathKey { port: port.name.clone(), protocol: proto, path }];
        let path_elements = |id: u32, target: &Target, frontends: &[IpAddr], push: &mut dyn FnMut(SetName, Key, Value)| {
            for f in Family::ALL {
                let endpoints: Vec<&Endpoint> = target.endpoints().iter().filter(|e| Family::of(&e.ip) == f).collect();
                for (i, endpoint) in endpoints.iter().enumerate() {
                    push(SetName::Endpoints(f), Key::Pick { id, index: i as u32 }, Value::Endpoint(**endpoint));
                }
                if !endpoints.is_empty() {
                    let chain = DynamicChain::Pick(f, endpoints.len() as u32);
                    push(SetName::EndpointCounts(f), Key::Id(id), Value::Goto(chain));
                    chains.borrow_mut().insert(chain);
                }
                for ip in frontends.iter().filter(|ip| Family::of(ip) == f) {
                    push(SetName::ServiceIps(f), frontend(ip), Value::Id(id));
                    if endpoints.is_empty() {
                        push(SetName::NoEndpointServices(f), frontend(ip), verdict(target).unwrap_or(Value::Reject));
                    }
                }
            }
            if let Some(timeout) = port.affinity_timeout {
                push(SetName::AffinityIds, Key::Id(id), Value::Jump(DynamicChain::Affinity(timeout)));
            }
        };
        let internal = path_id(Path::Internal);
        path_elements(internal, &port.internal, &port.cluster_ips, &mut push);
        push(SetName::ClusterIpIds, Key::Id(internal), Value::None);
        for ip in &port.cluster_ips {
            push(SetName::ClusterIps(Family::of(ip)), Key::Address(*ip), Value::None);
        }
        if let Some(external) = &port.external {
            let id = path_id(Path::External);
            let frontends: Vec<IpAddr> = external.external_ips.iter().chain(&external.load_balancer_ips).copied().collect();
            path_elements(id, &external.target, &frontends, &mut push);
            if let Some(node_port) = external.node_port {
                let key = Key::NodePort { protocol: proto, port: node_port };
                push(SetName::NodePorts, key, Value::Id(id));
                if let Some(verdict) = verdict(&external.target) {
                    push(SetName::NoEndpointNodePorts, key, verdict);
                }
            }
            if !external.local {
                push(SetName::MasqueradeIds, Key::Id(id), Value::None);
            }
            if !external.source_ranges.is_empty() {
                for ip in &external.load_balancer_ips {
                    let f = Family::of(ip);
                    push(SetName::Firewall(f), frontend(ip), Value::None);
                    for range in external.source_ranges.iter().filter(|r| Family::of(&r.addr()) == f) {
                        push(SetName::FirewallAllow(f), Key::SourceRange { ip: *ip, protocol: proto, port: port.port, range: range.trunc() }, Value::None);
                    }
                }
            }
        }
        if let Some(timeout) = port.affinity_timeout {
            chains.borrow_mut().insert(DynamicChain::Affinity(timeout));
        }
        for endpoint in &port.local_endpoints {
            push(SetName::Hairpin(Family::of(&endpoint.ip)), Key::Hairpin(endpoint.ip), Value::None);
        }
    }
    let _ = config;
    out.sort();
    out.dedup();
    (out, chains.into_inner())
}

/// What to flush from conntrack when `old` becomes `new`: UDP endpoints that left (neither
/// picked nor serving any more: flows to a terminating endpoint that still serves are kept),
/// and UDP frontends that had no endpoints before.
fn stale_conntrack(old: Option<&ServicePlan>, new: Option<&ServicePlan>, node_ips: &[IpAddr]) -> Vec<StaleConntrack> {
    let mut stale = BTreeSet::new();
    // Every (frontend, endpoint) pair a UDP flow may be DNATed along (the endpoints a path
    // picks, and the serving ones: terminating but still serving keep their flows) that went.
    let after = UdpServing::of(new, node_ips);
    stale.extend(UdpServing::of(old, node_ips).left(&after));
    for port in new.into_iter().flat_map(|p| &p.ports).filter(|p| p.protocol == Protocol::Udp) {
        let old_port = old.and_then(|o| o.ports.iter().find(|p| p.name == port.name && p.protocol == port.protocol));
        let had = |target: Option<&Target>| target.is_some_and(|t| !t.endpoints().is_empty());
        if !port.internal.endpoints().is_empty() && !had(old_port.map(|p| &p.internal)) {
            stale.extend(port.cluster_ips.iter().map(|ip| StaleConntrack::Frontend { ip: *ip, port: port.port }));
        }
        if let Some(external) = &port.external
            && !external.target.endpoints().is_empty()
            && !had(old_port.and_then(|p| p.external.as_ref()).map(|e| &e.target))
        {
            let ips = external.external_ips.iter().chain(&external.load_balancer_ips);
            stale.extend(ips.map(|ip| StaleConntrack::Frontend { ip: *ip, port: port.port }));
            if let Some(node_port) = external.node_port {
                stale.extend(node_ips.iter().map(|ip| StaleConntrack::Frontend { ip: *ip, port: node_port }));
            }
        }
    }
    stale.into_iter().collect()
}
