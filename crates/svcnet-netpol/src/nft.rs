//! The compiler from a [`Cluster`] to the `inet svcnet-netpol` table of one node, and the
//! incremental nft script from one state of that table to the next. Pure: no I/O.
//!
//! The table (in the node's network namespace, which routes every packet between pods):
//!
//! ```text
//! forward (filter hook, after the proxy's DNAT in prerouting), input:
//!   ct state established,related accept      replies and related traffic
//!   ip saddr vmap @egress_pods                egress-isolated local pod -> jump eg_<ns>_<pod>
//!   ip daddr vmap @ingress_pods               ingress-isolated local pod -> jump in_<ns>_<pod>
//! chain eg_<ns>_<pod>, with its set eg_<ns>_<pod> (peer range . protocol range . port range):
//!   ip daddr . meta l4proto . th dport @eg_<ns>_<pod> return
//!   [limit ... log prefix "..."] counter name eg_<ns>_<pod> drop
//! ```
//!
//! The node's own traffic (probes) leaves through `output`, where the table has no chain, so it
//! is always allowed; replies to it are established. (Packets with one of the node's addresses
//! as source never reach `forward`: the kernel drops them as martians.)
//!
//! Each isolated pod's set holds the union of every isolating policy's rules for that pod,
//! resolved to addresses and numbers (named ports on the destination pod), split into disjoint
//! boxes because the kernel's interval sets refuse overlapping elements. One small set per pod
//! and direction rather than one big set keyed by pod: the kernel's concatenated interval sets
//! (pipapo) pay for a deletion in proportion to the set's size. A change of pods, labels, namespaces or policies
//! changes set elements and, when the isolating policies change, a pod's two-rule chain; the
//! table itself is built only once ([`full_script`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::engine::Cluster;
use crate::ipblock::{V4Range, v4_single};
use crate::model::{Direction, Peer, PodInfo, PodKey, Policy, PortSpec, Rule};

/// The table's name (family `inet`).
pub const TABLE: &str = "svcnet-netpol";

/// A protocol range (IP protocol numbers) and a port range, both inclusive.
pub type ProtoPort = ((u8, u8), (u16, u16));

/// Every protocol and every port: a rule without `ports`.
const ANY_PROTO_PORT: ProtoPort = ((0, 255), (0, 65535));

/// One allowed box of a pod's set (`NodeState` keeps them all, keyed by the pod's address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowElement {
    /// The local, isolated pod (destination for ingress, source for egress).
    pub pod: Ipv4Addr,
    /// The other end's addresses.
    pub peer: V4Range,
    pub proto: (u8, u8),
    pub port: (u16, u16),
}

impl AllowElement {
    /// Whether the element admits a packet.
    pub fn contains(&self, pod: Ipv4Addr, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        let peer = u32::from(peer);
        self.pod == pod
            && self.peer.0 <= peer
            && peer <= self.peer.1
            && self.proto.0 <= proto
            && proto <= self.proto.1
            && self.port.0 <= port
            && port <= self.port.1
    }
}

impl AllowElement {
    /// The element as the pod's set holds it: `peer . protocol . port`, ranges as `a-b`.
    pub fn set_key(&self) -> String {
        let s = self.to_string();
        s.split_once(" . ").map(|(_, rest)| rest.to_owned()).unwrap_or(s)
    }
}

impl std::fmt::Display for AllowElement {
    /// `pod . peer . protocol . port`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, z) = (Ipv4Addr::from(self.peer.0), Ipv4Addr::from(self.peer.1));
        write!(f, "{} . ", self.pod)?;
        if a == z {
            write!(f, "{a}")?
        } else {
            write!(f, "{a}-{z}")?
        }
        if self.proto.0 == self.proto.1 {
            write!(f, " . {}", self.proto.0)?
        } else {
            write!(f, " . {}-{}", self.proto.0, self.proto.1)?
        }
        if self.port.0 == self.port.1 { write!(f, " . {}", self.port.0) } else { write!(f, " . {}-{}", self.port.0, self.port.1) }
    }
}

/// The chain of one isolated local pod in one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodChain {
    pub pod: PodKey,
    pub ip: Ipv4Addr,
    pub direction: Direction,
    /// The isolating policies, named in the log prefix.
    pub policies: Vec<String>,
}

impl PodChain {
    /// The chain's (and its counter's) name.
    pub fn name(&self) -> String {
        chain_name(self.direction, &self.pod)
    }

    /// The log prefix: `svcnet-netpol drop in x/a [p1,p2]: ` (at most 127 bytes, the kernel's limit).
    pub fn log_prefix(&self) -> String {
        let dir = if self.direction == Direction::Ingress { "in" } else { "out" };
        let mut s = format!("netpol drop {dir} {} [{}]", self.pod, self.policies.join(","));
        if s.len() > 124 {
            let mut cut = 120;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("..]");
        }
        s.push_str(": ");
        s
    }
}

/// The name of a pod's chain and counter: `in_<ns>_<pod>` / `eg_<ns>_<pod>` (`_` appears in
/// neither Kubernetes name, so the name is unambiguous).
pub fn chain_name(direction: Direction, pod: &PodKey) -> String {
    let dir = if direction == Direction::Ingress { "in" } else { "eg" };
    let name = format!("{dir}_{}_{}", pod.namespace, pod.name);
    if name.len() <= 200 {
        name
    } else {
        // Longer than nft's 256-byte limit allows with margin: keep a readable head and a hash.
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        format!("{}_{:016x}", &name[..180], h.finish())
    }
}

/// What the table holds for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Chains of ingress-isolated local pods, by chain name.
    pub ingress_pods: BTreeMap<String, PodChain>,
    /// Chains of egress-isolated local pods, by chain name.
    pub egress_pods: BTreeMap<String, PodChain>,
    pub ingress_allow: BTreeSet<AllowElement>,
    pub egress_allow: BTreeSet<AllowElement>,
}

impl NodeState {
    /// Takes the chains of `pods` (both directions) and their set elements out of the state and
    /// returns them as a state of their own. Elements are found by the chain's pod address
    /// (the addresses of a node's running pods are unique).
    pub fn extract<'a>(&mut self, pods: impl IntoIterator<Item = &'a PodKey>) -> NodeState {
        let mut out = NodeState::default();
        for pod in pods {
            for direction in [Direction::Ingress, Direction::Egress] {
                let (chains, set, out_chains, out_set) = match direction {
                    Direction::Ingress => (&mut self.ingress_pods, &mut self.ingress_allow, &mut out.ingress_pods, &mut out.ingress_allow),
                    Direction::Egress => (&mut self.egress_pods, &mut self.egress_allow, &mut out.egress_pods, &mut out.egress_allow),
                };
                let name = chain_name(direction, pod);
                let Some(chain) = chains.remove(&name) else { continue };
                let elements: Vec<AllowElement> = set.range(AllowElement::first_of(chain.ip)..=AllowElement::last_of(chain.ip)).copied().collect();
                for e in elements {
                    set.remove(&e);
                    out_set.insert(e);
                }
                out_chains.insert(name, chain);
            }
        }
        out
    }

    /// Adds the chains and elements of `other` (which share no chain with `self`).
    pub fn merge(&mut self, other: NodeState) {
        self.ingress_pods.extend(other.ingress_pods);
        self.egress_pods.extend(other.egress_pods);
        self.ingress_allow.extend(other.ingress_allow);
        self.egress_allow.extend(other.egress_allow);
    }

    /// Set elements in both directions.
    pub fn elements(&self) -> usize {
        self.ingress_allow.len() + self.egress_allow.len()
    }

    /// Isolated pod chains in both directions.
    pub fn chains(&self) -> usize {
        self.ingress_pods.len() + self.egress_pods.len()
    }
}

impl AllowElement {
    /// The smallest and the largest element of `pod`, bounds for a range over one pod's elements.
    fn first_of(pod: Ipv4Addr) -> AllowElement {
        AllowElement { pod, peer: (0, 0), proto: (0, 0), port: (0, 0) }
    }

    fn last_of(pod: Ipv4Addr) -> AllowElement {
        AllowElement { pod, peer: (u32::MAX, u32::MAX), proto: (u8::MAX, u8::MAX), port: (u16::MAX, u16::MAX) }
    }
}

/// How to compile.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Only pods with this `spec.nodeName` are local (isolated here); `None`: every pod.
    pub node_name: Option<String>,
    /// Log drops (rate-limited) with the pod and the isolating policies in the prefix.
    pub log_drops: bool,
}

// === compile ===

/// What one rule allows, independent of the local pod it is applied to.
struct RuleTargets {
    /// The peers' address ranges (everything for a rule without peers).
    peers: Vec<V4Range>,
    /// Egress only: (destination pod address, protocol, resolved port) for each named port and
    /// each pod among the peers that has it.
    named_egress: Vec<(V4Range, ProtoPort)>,
}

/// The desired state of the table on a node.
pub fn compile(cluster: &Cluster, options: &CompileOptions) -> NodeState {
    compile_pods(cluster, options, cluster.pods())
}

/// Whether `pod` is isolated on this node (its chains live in this node's table).
pub fn is_local(pod: &PodInfo, options: &CompileOptions) -> bool {
    !pod.host_network && options.node_name.as_ref().is_none_or(|n| pod.node.as_ref() == Some(n))
}

/// The chains and set elements of `pods` (those of them that are local), as [`compile`] makes
/// them: compiling every pod is [`compile`], compiling a few is an incremental update.
pub fn compile_pods<'a>(cluster: &'a Cluster, options: &CompileOptions, pods: impl Iterator<Item = &'a PodInfo>) -> NodeState {
    let mut state = NodeState::default();
    // Computed once per compile: they do not depend on the selected pod.
    let mut targets: BTreeMap<(crate::PolicyKey, Direction, usize), std::rc::Rc<RuleTargets>> = BTreeMap::new();
    // Rules that say the same thing share their targets: a rule whose peers all name their
    // namespaces (or are ipBlocks) means the same in every policy namespace.
    let mut by_content: std::collections::HashMap<String, std::rc::Rc<RuleTargets>> = std::collections::HashMap::new();
    for pod in pods.filter(|p| is_local(p, options)) {
        let Some(IpAddr::V4(ip)) = pod.ip else { continue };
        for direction in [Direction::Ingress, Direction::Egress] {
            let policies: Vec<&Policy> = cluster.isolating(pod, direction).collect();
            if policies.is_empty() {
                continue;
            }
            let chain = PodChain { pod: pod.key.clone(), ip, direction, policies: policies.iter().map(|p| p.key.name.clone()).collect() };
            let mut boxes: Vec<(V4Range, ProtoPort)> = Vec::new();
            for policy in &policies {
                for (index, rule) in policy.rules(direction).unwrap_or_default().iter().enumerate() {
                    let t = targets.entry((policy.key.clone(), direction, index)).or_insert_with(|| {
                        let own_ns = rule.peers.iter().any(|p| matches!(p, Peer::Pods { namespaces: None, .. }));
                        let scope = if own_ns || rule.peers.is_empty() { policy.key.namespace.as_str() } else { "" };
                        let key = format!("{scope}|{direction}|{:?}|{:?}", rule.peers, rule.ports);
                        by_content.entry(key).or_insert_with(|| std::rc::Rc::new(rule_targets(cluster, direction, &policy.key.namespace, rule))).clone()
                    });
                    rule_boxes(direction, pod, rule, t, &mut boxes);
                }
            }
            let set = if direction == Direction::Ingress { &mut state.ingress_allow } else { &mut state.egress_allow };
            for (peer, (proto, port)) in normalize(boxes) {
                set.insert(AllowElement { pod: ip, peer, proto, port });
            }
            let pods = if direction == Direction::Ingress { &mut state.ingress_pods } else { &mut state.egress_pods };
            pods.insert(chain.name(), chain);
        }
    }
    state
}

/// The pods (IPv4, not hostNetwork) a rule's peers match; every pod for a rule without peers.
fn peer_pods<'a>(cluster: &'a Cluster, policy_ns: &'a str, rule: &'a Rule) -> Vec<&'a PodInfo> {
    let usable = |p: &&PodInfo| matches!(p.ip, Some(IpAddr::V4(_))) && !p.host_network;
    if rule.peers.is_empty() {
        return cluster.pods().filter(usable).collect();
    }
    let mut out: Vec<&PodInfo> = Vec::new();
    for peer in &rule.peers {
        out.extend(cluster.peer_candidates(peer, policy_ns).filter(usable).filter(|p| cluster.peer_matches(peer, policy_ns, Some(p), p.ip)));
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    out
}

fn rule_targets(cluster: &Cluster, direction: Direction, policy_ns: &str, rule: &Rule) -> RuleTargets {
    let peers = if rule.peers.is_empty() {
        vec![(0, u32::MAX)]
    } else {
        let mut out = Vec::new();
        for peer in &rule.peers {
            match peer {
                Peer::IpBlock(b) => out.extend(b.v4_ranges()),
                Peer::Pods { pods: selector, .. } => {
                    // The candidates are the pods of the namespaces the peer names.
                    for p in cluster.peer_candidates(peer, policy_ns) {
                        if let Some(IpAddr::V4(ip)) = p.ip
                            && !p.host_network
                            && selector.matches(&p.labels)
                        {
                            out.push(v4_single(ip));
                        }
                    }
                }
            }
        }
        out
    };
    let mut named_egress = Vec::new();
    let has_named = rule.ports.iter().any(|m| matches!(m.port, PortSpec::Named(_)));
    if direction == Direction::Egress && has_named {
        // Each destination pod among the peers resolves the name itself; addresses that are not
        // pods have no port names.
        let dests = peer_pods(cluster, policy_ns, rule);
        for m in &rule.ports {
            let PortSpec::Named(name) = &m.port else { continue };
            let p = m.protocol.number();
            for dest in &dests {
                if let (Some(IpAddr::V4(ip)), Some(n)) = (dest.ip, dest.resolve_port(name, m.protocol)) {
                    named_egress.push((v4_single(ip), ((p, p), (n, n))));
                }
            }
        }
    }
    RuleTargets { peers, named_egress }
}

/// The boxes one rule allows for the local `pod`.
fn rule_boxes(direction: Direction, pod: &PodInfo, rule: &Rule, t: &RuleTargets, out: &mut Vec<(V4Range, ProtoPort)>) {
    if rule.ports.is_empty() {
        out.extend(t.peers.iter().map(|r| (*r, ANY_PROTO_PORT)));
        return;
    }
    for m in &rule.ports {
        let p = m.protocol.number();
        match &m.port {
            PortSpec::Any => out.extend(t.peers.iter().map(|r| (*r, ((p, p), (0, 65535))))),
            PortSpec::Range(a, b) => out.extend(t.peers.iter().map(|r| (*r, ((p, p), (*a, *b))))),
            // Ingress: the destination is the selected pod itself.
            PortSpec::Named(name) if direction == Direction::Ingress => {
                if let Some(n) = pod.resolve_port(name, m.protocol) {
                    out.extend(t.peers.iter().map(|r| (*r, ((p, p), (n, n)))));
                }
            }
            PortSpec::Named(_) => {}
        }
    }
    out.extend(t.named_egress.iter().copied());
}

/// Splits a union of boxes into disjoint boxes covering the same points: elementary address
/// segments (merged where neighbours allow the same), each with the disjoint protocol/port boxes
/// of the boxes covering it.
pub fn normalize(boxes: Vec<(V4Range, ProtoPort)>) -> Vec<(V4Range, ProtoPort)> {
    let mut events: Vec<(u64, bool, ProtoPort)> = Vec::with_capacity(boxes.len() * 2);
    for ((a, z), pp) in boxes {
        events.push((u64::from(a), true, pp));
        events.push((u64::from(z) + 1, false, pp));
    }
    events.sort_unstable();
    let mut active: BTreeMap<ProtoPort, usize> = BTreeMap::new();
    let mut out: Vec<(V4Range, ProtoPort)> = Vec::new();
    // The current run of segments with the same protocol/port boxes: (start, end, boxes).
    let mut run: Option<(u64, u64, Vec<ProtoPort>)> = None;
    let mut cache: BTreeMap<Vec<ProtoPort>, Vec<ProtoPort>> = BTreeMap::new();
    let mut i = 0;
    while i < events.len() {
        let pos = events[i].0;
        while i < events.len() && events[i].0 == pos {
            let (_, add, pp) = events[i];
            if add {
                *active.entry(pp).or_default() += 1;
            } else if let Some(n) = active.get_mut(&pp) {
                *n -= 1;
                if *n == 0 {
                    active.remove(&pp);
                }
            }
            i += 1;
        }
        let Some(next) = events.get(i).map(|e| e.0) else { break };
        if active.is_empty() {
            continue;
        }
        let key: Vec<ProtoPort> = active.keys().copied().collect();
        let pps = cache.entry(key).or_insert_with_key(|k| normalize_proto_port(k)).clone();
        let seg_end = next - 1;
        match &mut run {
            Some((_, end, cur)) if *end + 1 == pos && *cur == pps => *end = seg_end,
            _ => {
                flush(&mut run, &mut out);
                run = Some((pos, seg_end, pps));
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

fn flush(run: &mut Option<(u64, u64, Vec<ProtoPort>)>, out: &mut Vec<(V4Range, ProtoPort)>) {
    if let Some((a, z, pps)) = run.take() {
        out.extend(pps.into_iter().map(|pp| ((a as u32, z as u32), pp)));
    }
}

/// Disjoint protocol/port boxes covering the union of `boxes`.
fn normalize_proto_port(boxes: &[ProtoPort]) -> Vec<ProtoPort> {
    let mut bounds: Vec<u16> = boxes.iter().flat_map(|((a, z), _)| [u16::from(*a), u16::from(*z) + 1]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<ProtoPort> = Vec::new();
    // The current run of protocol numbers with the same ports: (first, last, port ranges).
    type Run = (u16, u16, Vec<(u16, u16)>);
    let mut prev: Option<Run> = None;
    for w in bounds.windows(2) {
        let (a, z) = (w[0], w[1] - 1);
        let mut ports: Vec<(u16, u16)> = boxes.iter().filter(|((pa, pz), _)| u16::from(*pa) <= a && z <= u16::from(*pz)).map(|(_, r)| *r).collect();
        if ports.is_empty() {
            continue;
        }
        ports.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (s, e) in ports {
            match merged.last_mut() {
                Some(last) if u32::from(s) <= u32::from(last.1) + 1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        match &mut prev {
            Some((_, pz, pm)) if *pz + 1 == a && *pm == merged => *pz = z,
            _ => {
                if let Some((pa, pz, pm)) = prev.take() {
                    out.extend(pm.into_iter().map(|r| ((pa as u8, pz as u8), r)));
                }
                prev = Some((a, z, merged));
            }
        }
    }
    if let Some((pa, pz, pm)) = prev {
        out.extend(pm.into_iter().map(|r| ((pa as u8, pz as u8), r)));
    }
    out
}

// === scripts ===

/// The whole table: removes any previous one and builds the skeleton, the pod chains and the
/// set elements in one transaction.
pub fn full_script(state: &NodeState, options: &CompileOptions) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "add table inet {TABLE}\ndelete table inet {TABLE}");
    let _ = write!(
        s,
        "table inet {TABLE} {{
  map ingress_pods {{ type ipv4_addr : verdict; }}
  map egress_pods {{ type ipv4_addr : verdict; }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    ip saddr vmap @egress_pods
    ip daddr vmap @ingress_pods
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    ct state established,related accept
    ip saddr vmap @egress_pods
  }}
}}
"
    );
    s.push_str(&diff_script(&NodeState::default(), state, options));
    s
}

/// The elements in `a` and not in `b`, as (chain name, set key), for chains that exist in
/// `chains` (the elements of a removed chain's set go with the set).
fn element_changes(
    a: &BTreeSet<AllowElement>,
    b: &BTreeSet<AllowElement>,
    a_chains: &BTreeMap<String, PodChain>,
    chains: &BTreeMap<String, PodChain>,
) -> BTreeMap<String, Vec<String>> {
    let by_ip: BTreeMap<Ipv4Addr, &String> = a_chains.iter().map(|(name, c)| (c.ip, name)).collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in a.difference(b) {
        if let Some(name) = by_ip.get(&e.pod).filter(|n| chains.contains_key(**n)) {
            out.entry((*name).clone()).or_default().push(e.set_key());
        }
    }
    out
}

/// The nft commands that turn the table from `old` into `new` (empty when they are equal):
/// element additions and deletions, and pod chains (with their sets and counters) created,
/// rewritten or removed.
pub fn diff_script(old: &NodeState, new: &NodeState, options: &CompileOptions) -> String {
    let mut s = String::new();
    let maps = [("ingress_pods", &old.ingress_pods, &new.ingress_pods), ("egress_pods", &old.egress_pods, &new.egress_pods)];
    // New chains first, so that map elements can jump to them.
    for (_, o, n) in maps {
        for (name, chain) in n {
            match o.get(name) {
                None => {
                    let _ = writeln!(
                        s,
                        "add counter inet {TABLE} {name}\nadd set inet {TABLE} {name} {{ type ipv4_addr . inet_proto . inet_service; flags interval; }}\nadd chain inet {TABLE} {name}"
                    );
                    chain_rules(&mut s, chain, options);
                }
                Some(old_chain) if old_chain.policies != chain.policies || old_chain.direction != chain.direction => {
                    let _ = writeln!(s, "flush chain inet {TABLE} {name}");
                    chain_rules(&mut s, chain, options);
                }
                Some(_) => {}
            }
        }
    }
    // Deletions before additions: a new element may overlap one it replaces. The sets of
    // removed chains go whole, below.
    for (o_pods, o_set, n_pods, n_set) in [
        (&old.ingress_pods, &old.ingress_allow, &new.ingress_pods, &new.ingress_allow),
        (&old.egress_pods, &old.egress_allow, &new.egress_pods, &new.egress_allow),
    ] {
        for (name, keys) in element_changes(o_set, n_set, o_pods, n_pods) {
            elements(&mut s, "delete", &name, keys.into_iter());
        }
        for (name, keys) in element_changes(n_set, o_set, n_pods, n_pods) {
            elements(&mut s, "add", &name, keys.into_iter());
        }
    }
    for (map, o, n) in maps {
        let gone = o.iter().filter(|(name, c)| n.get(*name).is_none_or(|nc| nc.ip != c.ip)).map(|(_, c)| c.ip.to_string());
        elements(&mut s, "delete", map, gone);
        let added = n.iter().filter(|(name, c)| o.get(*name).is_none_or(|oc| oc.ip != c.ip)).map(|(name, c)| format!("{} : jump {name}", c.ip));
        elements(&mut s, "add", map, added);
    }
    for (_, o, n) in maps {
        for name in o.keys().filter(|k| !n.contains_key(*k)) {
            let _ = writeln!(s, "delete chain inet {TABLE} {name}\ndelete set inet {TABLE} {name}\ndelete counter inet {TABLE} {name}");
        }
    }
    s
}

fn chain_rules(s: &mut String, chain: &PodChain, options: &CompileOptions) {
    let name = chain.name();
    let peer = match chain.direction {
        Direction::Ingress => "ip saddr",
        Direction::Egress => "ip daddr",
    };
    let _ = writeln!(s, "add rule inet {TABLE} {name} {peer} . meta l4proto . th dport @{name} return");
    if options.log_drops {
        let _ = writeln!(s, "add rule inet {TABLE} {name} limit rate 10/second burst 20 packets log prefix {:?}", chain.log_prefix());
    }
    let _ = writeln!(s, "add rule inet {TABLE} {name} counter name {name:?} drop");
}

/// `add element` / `delete element` lines, at most 500 elements each.
fn elements(s: &mut String, verb: &str, set: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    for chunk in items.chunks(500) {
        let _ = writeln!(s, "{verb} element inet {TABLE} {set} {{ {} }}", chunk.join(", "));
    }
}

/// What the table decides for a new packet, computed from `state` the way the kernel looks it up
/// (for tests that hold the compiler to the engine): `(egress allowed, ingress allowed)`.
pub fn lookup(state: &NodeState, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> (bool, bool) {
    let isolated = |pods: &BTreeMap<String, PodChain>, ip: Ipv4Addr| pods.values().any(|c| c.ip == ip);
    let egress = !isolated(&state.egress_pods, src) || state.egress_allow.iter().any(|e| e.contains(src, dst, proto, port));
    let ingress = !isolated(&state.ingress_pods, dst) || state.ingress_allow.iter().any(|e| e.contains(dst, src, proto, port));
    (egress, ingress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn covers(boxes: &[(V4Range, ProtoPort)], addr: u32, proto: u8, port: u16) -> bool {
        boxes.iter().any(|((a, z), ((pa, pz), (sa, sz)))| *a <= addr && addr <= *z && *pa <= proto && proto <= *pz && *sa <= port && port <= *sz)
    }

    fn overlap(x: &(V4Range, ProtoPort), y: &(V4Range, ProtoPort)) -> bool {
        let o = |a: (u32, u32), b: (u32, u32)| a.0 <= b.1 && b.0 <= a.1;
        o(x.0, y.0)
            && o((u32::from(x.1.0.0), u32::from(x.1.0.1)), (u32::from(y.1.0.0), u32::from(y.1.0.1)))
            && o((u32::from(x.1.1.0), u32::from(x.1.1.1)), (u32::from(y.1.1.0), u32::from(y.1.1.1)))
    }

    fn arb_box() -> impl Strategy<Value = (V4Range, ProtoPort)> {
        (0u32..40, 0u32..8, prop_oneof![Just((6u8, 6u8)), Just((17, 17)), Just((0, 255))], 75u16..85, 0u16..4)
            .prop_map(|(a, len, proto, p, plen)| ((a, a + len), (proto, (p, p + plen))))
    }

    proptest! {
        /// Normalized boxes are pairwise disjoint and cover exactly the same points.
        #[test]
        fn normalize_is_disjoint_and_equivalent(boxes in proptest::collection::vec(arb_box(), 0..8), probes in proptest::collection::vec((0u32..50, prop_oneof![Just(6u8), Just(17), Just(132)], 73u16..90), 30)) {
            let n = normalize(boxes.clone());
            for (i, x) in n.iter().enumerate() {
                for y in &n[i + 1..] {
                    prop_assert!(!overlap(x, y), "{x:?} overlaps {y:?}");
                }
            }
            for (a, proto, port) in probes {
                prop_assert_eq!(covers(&boxes, a, proto, port), covers(&n, a, proto, port));
            }
        }
    }

    #[test]
    fn element_syntax() {
        let e = AllowElement {
            pod: Ipv4Addr::new(10, 0, 0, 2),
            peer: (u32::from(Ipv4Addr::new(10, 0, 0, 0)), u32::from(Ipv4Addr::new(10, 0, 0, 255))),
            proto: (6, 6),
            port: (80, 81),
        };
        assert_eq!(e.to_string(), "10.0.0.2 . 10.0.0.0-10.0.0.255 . 6 . 80-81");
        let e = AllowElement { pod: Ipv4Addr::new(10, 0, 0, 2), peer: (1, 1), proto: (0, 255), port: (0, 65535) };
        assert_eq!(e.to_string(), "10.0.0.2 . 0.0.0.1 . 0-255 . 0-65535");
    }
}
