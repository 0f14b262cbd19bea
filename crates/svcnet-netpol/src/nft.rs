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
//! chain in_<ns>_<pod>: one rule per distinct rule of the isolating policies, then the drop
//!   ip saddr @p_<hash> meta l4proto . th dport @q_<hash> return
//!   meta l4proto . th dport @q_<hash> return                (a rule without peers)
//!   ip saddr @p_<hash> return                                (a rule without ports)
//!   [limit ... log prefix "..."] counter name in_<ns>_<pod> drop
//! chain eg_<ns>_<pod>: the same with ip daddr, and for named ports
//!   ip daddr . meta l4proto . th dport @n_<hash> return
//! set p_<hash>: the peer addresses of every rule with the same peers (interval set of ipv4_addr)
//! set n_<hash>: destination . protocol . port of an egress rule's named ports, resolved on each
//!   destination pod among its peers
//! set q_<hash>: protocol . port ranges, named by their content (never changed, shared by every
//!   rule with the same ports)
//! ```
//!
//! The node's own traffic (probes) leaves through `output`, where the table has no chain, so it
//! is always allowed; replies to it are established. (Packets with one of the node's addresses
//! as source never reach `forward`: the kernel drops them as martians.)
//!
//! Peer address sets are shared: every rule (of any policy, for any pod) with the same peers
//! refers to one set named by a hash of those peers (and, for peers that name no namespace, the
//! policy's namespace). So a pod or namespace label change is an element change in the few sets
//! whose peers it enters or leaves, and a policy change rewrites the chains of the pods it
//! selects. Port sets depend on the selected pod (named ports resolve there), so they are named
//! by their content rather than by the rule. Set
//! elements are disjoint because the kernel's interval sets refuse overlapping elements. The
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

/// One rule of an isolated pod's chain: what it admits, and `return`s.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainRule {
    /// The other end in the peer set `peers` (`None`: any address), and protocol . port in the
    /// port set `ports` (`None`: any protocol and port).
    Match { peers: Option<String>, ports: Option<String> },
    /// Egress named ports: destination . protocol . port in the set.
    Named { set: String },
}

/// The chain of one isolated local pod in one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodChain {
    pub pod: PodKey,
    pub ip: Ipv4Addr,
    pub direction: Direction,
    /// The isolating policies, named in the log prefix.
    pub policies: Vec<String>,
    /// What the chain admits (none: it drops everything).
    pub rules: Vec<ChainRule>,
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

    /// The set names the chain's rules refer to.
    pub fn sets(&self) -> impl Iterator<Item = &String> {
        self.rules
            .iter()
            .flat_map(|r| match r {
                ChainRule::Match { peers, ports } => [peers.as_ref(), ports.as_ref()],
                ChainRule::Named { set } => [Some(set), None],
            })
            .flatten()
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
        format!("{}_{:016x}", &name[..180], stable_hash(&name))
    }
}

/// A hash that is the same in every process (names in the kernel outlive the process).
fn stable_hash(s: &str) -> u64 {
    // FNV-1a.
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The contents of one shared set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetContent {
    /// `p_<hash>`: peer address ranges, disjoint and not adjacent.
    Peers(BTreeSet<V4Range>),
    /// `n_<hash>`: destination range . protocol range . port range, disjoint.
    Named(BTreeSet<(V4Range, ProtoPort)>),
    /// `q_<hash>`: protocol range . port range, disjoint; named by its content, so it never
    /// changes (anonymous sets inline in each rule would cost the kernel a quadratic scan of
    /// set names when loading tens of thousands of them).
    Ports(BTreeSet<ProtoPort>),
}

impl SetContent {
    pub fn len(&self) -> usize {
        match self {
            SetContent::Peers(e) => e.len(),
            SetContent::Named(e) => e.len(),
            SetContent::Ports(e) => e.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as nft writes them.
    fn keys(&self) -> BTreeSet<String> {
        match self {
            SetContent::Peers(e) => e.iter().map(|r| range_text(*r)).collect(),
            SetContent::Named(e) => {
                e.iter().map(|(r, ((pa, pz), (sa, sz)))| format!("{} . {} . {}", range_text(*r), num_range(*pa, *pz), num_range(*sa, *sz))).collect()
            }
            SetContent::Ports(e) => e.iter().map(|((pa, pz), (sa, sz))| format!("{} . {}", num_range(*pa, *pz), num_range(*sa, *sz))).collect(),
        }
    }

    fn declaration(&self) -> &'static str {
        match self {
            SetContent::Peers(_) => "type ipv4_addr; flags interval;",
            SetContent::Named(_) => "type ipv4_addr . inet_proto . inet_service; flags interval;",
            SetContent::Ports(_) => "type inet_proto . inet_service; flags interval;",
        }
    }
}

fn range_text((a, z): V4Range) -> String {
    let (a, z) = (Ipv4Addr::from(a), Ipv4Addr::from(z));
    if a == z { a.to_string() } else { format!("{a}-{z}") }
}

fn num_range<T: std::fmt::Display + PartialEq>(a: T, z: T) -> String {
    if a == z { a.to_string() } else { format!("{a}-{z}") }
}

/// What the table holds for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Chains of ingress-isolated local pods, by chain name.
    pub ingress_pods: BTreeMap<String, PodChain>,
    /// Chains of egress-isolated local pods, by chain name.
    pub egress_pods: BTreeMap<String, PodChain>,
    /// The shared sets the chains refer to, by name (exactly those referred to).
    pub sets: BTreeMap<String, SetContent>,
}

impl NodeState {
    /// Takes the chains of `pods` (both directions) out of the state and returns them; the sets
    /// stay.
    pub fn extract_chains<'a>(&mut self, pods: impl IntoIterator<Item = &'a PodKey>) -> Vec<PodChain> {
        let mut out = Vec::new();
        for pod in pods {
            out.extend(self.ingress_pods.remove(&chain_name(Direction::Ingress, pod)));
            out.extend(self.egress_pods.remove(&chain_name(Direction::Egress, pod)));
        }
        out
    }

    /// Every chain, both directions.
    pub fn chains_iter(&self) -> impl Iterator<Item = &PodChain> {
        self.ingress_pods.values().chain(self.egress_pods.values())
    }

    /// Adds a chain.
    pub fn insert_chain(&mut self, chain: PodChain) {
        let map = if chain.direction == Direction::Ingress { &mut self.ingress_pods } else { &mut self.egress_pods };
        map.insert(chain.name(), chain);
    }

    /// Set elements, all sets.
    pub fn elements(&self) -> usize {
        self.sets.values().map(SetContent::len).sum()
    }

    /// Isolated pod chains in both directions.
    pub fn chains(&self) -> usize {
        self.ingress_pods.len() + self.egress_pods.len()
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

/// The shared sets of one rule, computed once per compile for each distinct rule content.
struct RuleSets {
    /// The peer set (name and content); `None` for a rule without peers.
    peers: Option<(String, SetContent)>,
    /// Egress only, for rules with named ports: the set of resolved destinations.
    named: Option<(String, SetContent)>,
}

/// The desired state of the table on a node.
pub fn compile(cluster: &Cluster, options: &CompileOptions) -> NodeState {
    compile_pods(cluster, options, cluster.pods())
}

/// Whether `pod` is isolated on this node (its chains live in this node's table).
pub fn is_local(pod: &PodInfo, options: &CompileOptions) -> bool {
    !pod.host_network && options.node_name.as_ref().is_none_or(|n| pod.node.as_ref() == Some(n))
}

/// The chains of `pods` (those of them that are local) and the sets they refer to, as
/// [`compile`] makes them: compiling every pod is [`compile`], compiling a few is an
/// incremental update.
pub fn compile_pods<'a>(cluster: &'a Cluster, options: &CompileOptions, pods: impl Iterator<Item = &'a PodInfo>) -> NodeState {
    let mut state = NodeState::default();
    // Rules that say the same thing share their sets: a rule whose peers all name their
    // namespaces (or are ipBlocks) means the same in every policy namespace.
    let mut by_content: std::collections::HashMap<String, std::rc::Rc<RuleSets>> = std::collections::HashMap::new();
    for pod in pods.filter(|p| is_local(p, options)) {
        let Some(IpAddr::V4(ip)) = pod.ip else { continue };
        for direction in [Direction::Ingress, Direction::Egress] {
            let policies: Vec<&Policy> = cluster.isolating(pod, direction).collect();
            if policies.is_empty() {
                continue;
            }
            let mut rules: Vec<ChainRule> = Vec::new();
            for policy in &policies {
                for rule in policy.rules(direction).unwrap_or_default() {
                    let key = rule_key(direction, &policy.key.namespace, rule);
                    let sets = by_content
                        .entry(key.clone())
                        .or_insert_with(|| std::rc::Rc::new(rule_sets_of(cluster, direction, &policy.key.namespace, rule, &key)))
                        .clone();
                    for (r, ports) in chain_rules_of(direction, pod, rule, &sets) {
                        if let Some((name, content)) = ports {
                            state.sets.entry(name).or_insert(content);
                        }
                        if !rules.contains(&r) {
                            rules.push(r);
                        }
                    }
                    for (name, content) in sets.peers.iter().chain(sets.named.iter()) {
                        if rules.iter().any(|r| matches!(r, ChainRule::Match { peers: Some(n), .. } | ChainRule::Named { set: n } if n == name)) {
                            state.sets.entry(name.clone()).or_insert_with(|| content.clone());
                        }
                    }
                }
            }
            state.insert_chain(PodChain { pod: pod.key.clone(), ip, direction, policies: policies.iter().map(|p| p.key.name.clone()).collect(), rules });
        }
    }
    state
}

/// What makes two rules the same: their peers (scoped to the policy's namespace when a peer
/// names no namespace) and, for egress named ports, the port names.
pub fn rule_key(direction: Direction, policy_ns: &str, rule: &Rule) -> String {
    let named: Vec<_> = if direction == Direction::Egress { rule.ports.iter().filter(|m| matches!(m.port, PortSpec::Named(_))).collect() } else { Vec::new() };
    format!("{}\n{named:?}", peers_key(policy_ns, rule))
}

/// What makes two rules' peers the same.
fn peers_key(policy_ns: &str, rule: &Rule) -> String {
    let own_ns = rule.peers.iter().any(|p| matches!(p, Peer::Pods { namespaces: None, .. }));
    let scope = if own_ns { policy_ns } else { "" };
    format!("{scope}|{:?}", rule.peers)
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

fn rule_sets_of(cluster: &Cluster, direction: Direction, policy_ns: &str, rule: &Rule, key: &str) -> RuleSets {
    let peers = (!rule.peers.is_empty()).then(|| {
        let mut ranges = Vec::new();
        for peer in &rule.peers {
            match peer {
                Peer::IpBlock(b) => ranges.extend(b.v4_ranges()),
                Peer::Pods { pods: selector, .. } => {
                    // The candidates are the pods of the namespaces the peer names.
                    for p in cluster.peer_candidates(peer, policy_ns) {
                        if let Some(IpAddr::V4(ip)) = p.ip
                            && !p.host_network
                            && selector.matches(&p.labels)
                        {
                            ranges.push(v4_single(ip));
                        }
                    }
                }
            }
        }
        (format!("p_{:016x}", stable_hash(&peers_key(policy_ns, rule))), SetContent::Peers(merge_ranges(ranges)))
    });
    let has_named = rule.ports.iter().any(|m| matches!(m.port, PortSpec::Named(_)));
    let named = (direction == Direction::Egress && has_named).then(|| {
        // Each destination pod among the peers resolves the name itself; addresses that are not
        // pods have no port names.
        let dests = peer_pods(cluster, policy_ns, rule);
        let mut boxes = Vec::new();
        for m in &rule.ports {
            let PortSpec::Named(name) = &m.port else { continue };
            let p = m.protocol.number();
            for dest in &dests {
                if let (Some(IpAddr::V4(ip)), Some(n)) = (dest.ip, dest.resolve_port(name, m.protocol)) {
                    boxes.push((v4_single(ip), ((p, p), (n, n))));
                }
            }
        }
        (format!("n_{:016x}", stable_hash(key)), SetContent::Named(normalize(boxes).into_iter().collect()))
    });
    RuleSets { peers, named }
}

/// The shared sets of one rule of a policy in `policy_ns`, by name, as the chains of the pods
/// it applies to refer to them.
pub fn rule_sets(cluster: &Cluster, direction: Direction, policy_ns: &str, rule: &Rule) -> Vec<(String, SetContent)> {
    let key = rule_key(direction, policy_ns, rule);
    let sets = rule_sets_of(cluster, direction, policy_ns, rule, &key);
    sets.peers.into_iter().chain(sets.named).collect()
}

/// Sorted, merged address ranges (overlapping or adjacent ranges joined).
fn merge_ranges(mut ranges: Vec<V4Range>) -> BTreeSet<V4Range> {
    ranges.sort_unstable();
    let mut out: Vec<V4Range> = Vec::new();
    for (a, z) in ranges {
        match out.last_mut() {
            Some(last) if u64::from(a) <= u64::from(last.1) + 1 => last.1 = last.1.max(z),
            _ => out.push((a, z)),
        }
    }
    out.into_iter().collect()
}

/// The chain rules one policy rule makes for the local `pod`, each with the port set it needs.
fn chain_rules_of(direction: Direction, pod: &PodInfo, rule: &Rule, sets: &RuleSets) -> Vec<(ChainRule, Option<(String, SetContent)>)> {
    let peers = sets.peers.as_ref().map(|(n, _)| n.clone());
    if rule.ports.is_empty() {
        return vec![(ChainRule::Match { peers, ports: None }, None)];
    }
    let mut ports: Vec<ProtoPort> = Vec::new();
    for m in &rule.ports {
        let p = m.protocol.number();
        match &m.port {
            PortSpec::Any => ports.push(((p, p), (0, 65535))),
            PortSpec::Range(a, b) => ports.push(((p, p), (*a, *b))),
            // Ingress: the destination is the selected pod itself.
            PortSpec::Named(name) if direction == Direction::Ingress => {
                if let Some(n) = pod.resolve_port(name, m.protocol) {
                    ports.push(((p, p), (n, n)));
                }
            }
            PortSpec::Named(_) => {}
        }
    }
    let mut out = Vec::new();
    if !ports.is_empty() {
        let content: BTreeSet<ProtoPort> = normalize_proto_port(&ports).into_iter().collect();
        let name = format!("q_{:016x}", stable_hash(&format!("{content:?}")));
        out.push((ChainRule::Match { peers, ports: Some(name.clone()) }, Some((name, SetContent::Ports(content)))));
    }
    if let Some((set, _)) = &sets.named {
        out.push((ChainRule::Named { set: set.clone() }, None));
    }
    out
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

/// The whole table: removes any previous one and builds the skeleton, the sets and the pod
/// chains in one transaction.
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

/// The nft commands that turn the table from `old` into `new` (empty when they are equal): sets
/// created, changed element by element, or removed; pod chains (with their counters) created,
/// rewritten or removed; the dispatch maps' elements.
pub fn diff_script(old: &NodeState, new: &NodeState, options: &CompileOptions) -> String {
    let mut s = String::new();
    // Sets first, so that rules can refer to them; deletions of elements before additions (a new
    // element may overlap one it replaces).
    for (name, content) in &new.sets {
        match old.sets.get(name) {
            None => {
                let _ = writeln!(s, "add set inet {TABLE} {name} {{ {} }}", content.declaration());
                elements(&mut s, "add", name, content.keys().into_iter());
            }
            Some(before) if before != content => {
                let (b, a) = (before.keys(), content.keys());
                elements(&mut s, "delete", name, b.difference(&a).cloned());
                elements(&mut s, "add", name, a.difference(&b).cloned());
            }
            Some(_) => {}
        }
    }
    let maps = [("ingress_pods", &old.ingress_pods, &new.ingress_pods), ("egress_pods", &old.egress_pods, &new.egress_pods)];
    // New chains before the map elements that jump to them.
    for (_, o, n) in maps {
        for (name, chain) in n {
            match o.get(name) {
                None => {
                    let _ = writeln!(s, "add counter inet {TABLE} {name}\nadd chain inet {TABLE} {name}");
                    chain_rules(&mut s, chain, options);
                }
                Some(old_chain) if old_chain.policies != chain.policies || old_chain.rules != chain.rules => {
                    let _ = writeln!(s, "flush chain inet {TABLE} {name}");
                    chain_rules(&mut s, chain, options);
                }
                Some(_) => {}
            }
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
            let _ = writeln!(s, "delete chain inet {TABLE} {name}\ndelete counter inet {TABLE} {name}");
        }
    }
    // Sets no chain refers to any more, last.
    for name in old.sets.keys().filter(|k| !new.sets.contains_key(*k)) {
        let _ = writeln!(s, "delete set inet {TABLE} {name}");
    }
    s
}

fn chain_rules(s: &mut String, chain: &PodChain, options: &CompileOptions) {
    let name = chain.name();
    let peer = match chain.direction {
        Direction::Ingress => "ip saddr",
        Direction::Egress => "ip daddr",
    };
    for rule in &chain.rules {
        let _ = write!(s, "add rule inet {TABLE} {name}");
        match rule {
            ChainRule::Match { peers, ports } => {
                if let Some(set) = peers {
                    let _ = write!(s, " {peer} @{set}");
                }
                if let Some(set) = ports {
                    let _ = write!(s, " meta l4proto . th dport @{set}");
                }
            }
            ChainRule::Named { set } => {
                let _ = write!(s, " {peer} . meta l4proto . th dport @{set}");
            }
        }
        s.push_str(" return\n");
    }
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
    let in_range = |(a, z): V4Range, ip: Ipv4Addr| a <= u32::from(ip) && u32::from(ip) <= z;
    let in_pp = |((pa, pz), (sa, sz)): ProtoPort| pa <= proto && proto <= pz && sa <= port && port <= sz;
    let admits = |chain: &PodChain, other: Ipv4Addr| {
        chain.rules.iter().any(|r| match r {
            ChainRule::Match { peers, ports } => {
                let peer_ok = peers.as_ref().is_none_or(|n| matches!(state.sets.get(n), Some(SetContent::Peers(e)) if e.iter().any(|r| in_range(*r, other))));
                peer_ok && ports.as_ref().is_none_or(|n| matches!(state.sets.get(n), Some(SetContent::Ports(e)) if e.iter().any(|pp| in_pp(*pp))))
            }
            ChainRule::Named { set } => matches!(state.sets.get(set), Some(SetContent::Named(e)) if e.iter().any(|(r, pp)| in_range(*r, other) && in_pp(*pp))),
        })
    };
    let verdict = |pods: &BTreeMap<String, PodChain>, ip: Ipv4Addr, other: Ipv4Addr| pods.values().find(|c| c.ip == ip).is_none_or(|c| admits(c, other));
    (verdict(&state.egress_pods, src, dst), verdict(&state.ingress_pods, dst, src))
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
        let named = SetContent::Named([((u32::from(Ipv4Addr::new(10, 0, 0, 0)), u32::from(Ipv4Addr::new(10, 0, 0, 255))), ((6, 6), (80, 81)))].into());
        assert_eq!(named.keys().into_iter().collect::<Vec<_>>(), ["10.0.0.0-10.0.0.255 . 6 . 80-81"]);
        let peers = SetContent::Peers(merge_ranges(vec![(1, 1), (2, 5), (9, 9)]));
        assert_eq!(peers.keys().into_iter().collect::<Vec<_>>(), ["0.0.0.1-0.0.0.5", "0.0.0.9"]);
    }
}
