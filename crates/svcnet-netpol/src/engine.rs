//! The verdict on one flow, with its explanation: which policies isolate each side, which rules
//! allow it, or why none does. Pure: a function of the [`Cluster`] snapshot.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;

use crate::model::{Direction, NamespaceInfo, ObjectKey, Peer, PodInfo, PodKey, Policy, PolicyKey, PortProtocol, PortSpec, Rule};
use crate::{Error, Result};

/// Namespaces, pods and policies at one moment.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    namespaces: BTreeMap<String, NamespaceInfo>,
    pods: BTreeMap<PodKey, PodInfo>,
    policies: BTreeMap<PolicyKey, Policy>,
    /// Pod IPs (of pods that are not hostNetwork) to pods.
    by_ip: HashMap<IpAddr, PodKey>,
    /// Policies by namespace.
    policies_by_ns: BTreeMap<String, Vec<PolicyKey>>,
}

/// One end of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Pod(PodKey),
    /// An address; if it is a pod's IP the flow is judged as that pod's.
    Ip(IpAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Pod(k) => write!(f, "{k}"),
            Endpoint::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A reference to one rule: `policy`'s `direction` rule number `index` (from 0).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    pub policy: PolicyKey,
    pub direction: Direction,
    pub index: usize,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let field = match self.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        write!(f, "{} {field}[{}]", self.policy, self.index)
    }
}

/// Why one rule of an isolating policy does not allow a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No peer of the rule matches the other end.
    Peer,
    /// The peer matches but no port entry does.
    Port,
    /// Neither.
    PeerAndPort,
}

/// The verdict of one side (the source's egress or the destination's ingress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideVerdict {
    /// That end is not a pod policies can select (an outside address or a hostNetwork pod).
    NotAPod,
    /// No policy of this direction selects the pod: everything is allowed.
    NotIsolated,
    /// Isolated by `isolated_by`, and allowed by `rules` (all the rules that match).
    Allowed { isolated_by: Vec<PolicyKey>, rules: Vec<RuleRef> },
    /// Isolated by `isolated_by`, and no rule matches; `misses` says why for each rule.
    Denied { isolated_by: Vec<PolicyKey>, misses: Vec<(RuleRef, Miss)> },
}

impl SideVerdict {
    pub fn allowed(&self) -> bool {
        !matches!(self, SideVerdict::Denied { .. })
    }
}

/// The verdict on a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub from: Endpoint,
    pub to: Endpoint,
    pub port: PortProtocol,
    pub egress: SideVerdict,
    pub ingress: SideVerdict,
}

impl Verdict {
    /// A connection needs both the source's egress and the destination's ingress.
    pub fn allowed(&self) -> bool {
        self.egress.allowed() && self.ingress.allowed()
    }
}

// === impl Cluster ===

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// A cluster from API objects. Objects that cannot be compiled (a policy with a bad CIDR or
    /// selector) are left out and returned as errors beside it. Namespaces that pods or policies
    /// name but that are not given are added with only their name label.
    pub fn from_objects<'a>(
        namespaces: impl IntoIterator<Item = &'a corev1::Namespace>,
        pods: impl IntoIterator<Item = &'a corev1::Pod>,
        policies: impl IntoIterator<Item = &'a netv1::NetworkPolicy>,
    ) -> (Cluster, Vec<Error>) {
        let mut c = Cluster::new();
        let mut errors = Vec::new();
        for ns in namespaces {
            if let Some(ns) = NamespaceInfo::from_namespace(ns) {
                c.upsert_namespace(ns);
            }
        }
        for pod in pods {
            if let Some(pod) = PodInfo::from_pod(pod) {
                c.upsert_pod(pod);
            }
        }
        for np in policies {
            match Policy::from_network_policy(np) {
                Ok(p) => c.upsert_policy(p),
                Err(e) => errors.push(e),
            }
        }
        let implied: Vec<String> = c.pods.keys().map(|k| k.namespace.clone()).chain(c.policies.keys().map(|k| k.namespace.clone())).collect();
        for ns in implied {
            if !c.namespaces.contains_key(&ns) {
                c.upsert_namespace(NamespaceInfo::new(&ns, BTreeMap::new()));
            }
        }
        (c, errors)
    }

    pub fn upsert_namespace(&mut self, ns: NamespaceInfo) {
        self.namespaces.insert(ns.name.clone(), ns);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn upsert_pod(&mut self, pod: PodInfo) {
        self.remove_pod(&pod.key);
        if let (Some(ip), false) = (pod.ip, pod.host_network) {
            self.by_ip.insert(ip, pod.key.clone());
        }
        self.pods.insert(pod.key.clone(), pod);
    }

    pub fn remove_pod(&mut self, key: &PodKey) {
        if let Some(old) = self.pods.remove(key)
            && let Some(ip) = old.ip
            && self.by_ip.get(&ip) == Some(key)
        {
            self.by_ip.remove(&ip);
        }
    }

    pub fn upsert_policy(&mut self, policy: Policy) {
        let list = self.policies_by_ns.entry(policy.key.namespace.clone()).or_default();
        if !list.contains(&policy.key) {
            list.push(policy.key.clone());
            list.sort();
        }
        self.policies.insert(policy.key.clone(), policy);
    }

    pub fn remove_policy(&mut self, key: &PolicyKey) {
        self.policies.remove(key);
        if let Some(list) = self.policies_by_ns.get_mut(&key.namespace) {
            list.retain(|k| k != key);
        }
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceInfo> {
        self.namespaces.values()
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.get(name)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    pub fn pod(&self, key: &PodKey) -> Option<&PodInfo> {
        self.pods.get(key)
    }

    /// The pods of namespace `ns`, by name.
    pub fn pods_in_namespace<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a PodInfo> + 'a {
        self.pods.range(ObjectKey::new(ns, "")..).take_while(move |(k, _)| k.namespace == ns).map(|(_, p)| p)
    }

    /// The pods a `Pods` peer of a policy in `policy_ns` can match (those of the namespaces it
    /// names), without looking at pod labels; every pod for an `ipBlock`.
    pub fn peer_candidates<'a>(&'a self, peer: &'a Peer, policy_ns: &'a str) -> Box<dyn Iterator<Item = &'a PodInfo> + 'a> {
        match peer {
            Peer::Pods { namespaces: None, .. } => Box::new(self.pods_in_namespace(policy_ns)),
            Peer::Pods { namespaces: Some(sel), .. } => {
                Box::new(self.namespaces.values().filter(move |ns| sel.matches(&ns.labels)).flat_map(move |ns| self.pods_in_namespace(&ns.name)))
            }
            Peer::IpBlock(_) => Box::new(self.pods.values()),
        }
    }

    /// The pod (not hostNetwork) that has `ip`.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodInfo> {
        self.by_ip.get(&ip).and_then(|k| self.pods.get(k))
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    pub fn policy(&self, key: &PolicyKey) -> Option<&Policy> {
        self.policies.get(key)
    }

    /// The policies of namespace `ns`, by name.
    pub fn policies_in_namespace<'a>(&'a self, ns: &str) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies_by_ns.get(ns).into_iter().flatten().filter_map(|k| self.policies.get(k))
    }

    /// The policies of `pod`'s namespace that select it and isolate `direction`, by name.
    pub fn isolating(&self, pod: &PodInfo, direction: Direction) -> impl Iterator<Item = &Policy> {
        self.policies_by_ns
            .get(&pod.key.namespace)
            .into_iter()
            .flatten()
            .filter_map(|k| self.policies.get(k))
            .filter(move |p| p.rules(direction).is_some() && p.selects(pod))
    }

    /// The pod an endpoint is, if policies can select it.
    fn endpoint_pod(&self, e: &Endpoint) -> Option<&PodInfo> {
        match e {
            Endpoint::Pod(k) => self.pods.get(k).filter(|p| !p.host_network),
            Endpoint::Ip(ip) => self.pod_by_ip(*ip),
        }
    }

    fn endpoint_ip(&self, e: &Endpoint) -> Option<IpAddr> {
        match e {
            Endpoint::Pod(k) => self.pods.get(k).and_then(|p| p.ip),
            Endpoint::Ip(ip) => Some(*ip),
        }
    }

    /// Whether `peer`, in a policy of namespace `policy_ns`, matches the endpoint (`pod` is the
    /// endpoint's pod when it is one, `ip` its address when known).
    pub fn peer_matches(&self, peer: &Peer, policy_ns: &str, pod: Option<&PodInfo>, ip: Option<IpAddr>) -> bool {
        match peer {
            Peer::IpBlock(b) => ip.is_some_and(|ip| b.contains(ip)),
            Peer::Pods { namespaces, pods } => {
                let Some(pod) = pod else { return false };
                let ns_ok = match namespaces {
                    None => pod.key.namespace == policy_ns,
                    Some(sel) => self.namespaces.get(&pod.key.namespace).is_some_and(|ns| sel.matches(&ns.labels)),
                };
                ns_ok && pods.matches(&pod.labels)
            }
        }
    }

    /// Whether a rule's peers match the other end (no peers: every end).
    fn rule_peers_match(&self, rule: &Rule, policy_ns: &str, pod: Option<&PodInfo>, ip: Option<IpAddr>) -> bool {
        rule.peers.is_empty() || rule.peers.iter().any(|p| self.peer_matches(p, policy_ns, pod, ip))
    }

    /// Whether a rule's ports match `port` on the destination `dest` (named ports resolve there).
    pub fn rule_ports_match(rule: &Rule, port: PortProtocol, dest: Option<&PodInfo>) -> bool {
        rule.ports.is_empty()
            || rule.ports.iter().any(|m| {
                m.protocol == port.protocol
                    && match &m.port {
                        PortSpec::Any => true,
                        PortSpec::Range(a, b) => (*a..=*b).contains(&port.port),
                        PortSpec::Named(name) => dest.and_then(|d| d.resolve_port(name, m.protocol)) == Some(port.port),
                    }
            })
    }

    /// Judges one side of a flow: `direction` of `subject` (the pod whose policies apply), with
    /// the other end `peer_pod`/`peer_ip`, and `dest` the destination pod for port names.
    fn side(
        &self,
        direction: Direction,
        subject: Option<&PodInfo>,
        peer_pod: Option<&PodInfo>,
        peer_ip: Option<IpAddr>,
        dest: Option<&PodInfo>,
        port: PortProtocol,
    ) -> SideVerdict {
        let Some(subject) = subject else { return SideVerdict::NotAPod };
        let mut isolated_by = Vec::new();
        let mut rules = Vec::new();
        let mut misses = Vec::new();
        for policy in self.isolating(subject, direction) {
            isolated_by.push(policy.key.clone());
            for (index, rule) in policy.rules(direction).unwrap_or_default().iter().enumerate() {
                let r = RuleRef { policy: policy.key.clone(), direction, index };
                let peer = self.rule_peers_match(rule, &policy.key.namespace, peer_pod, peer_ip);
                let ports = Self::rule_ports_match(rule, port, dest);
                match (peer, ports) {
                    (true, true) => rules.push(r),
                    (false, true) => misses.push((r, Miss::Peer)),
                    (true, false) => misses.push((r, Miss::Port)),
                    (false, false) => misses.push((r, Miss::PeerAndPort)),
                }
            }
        }
        if isolated_by.is_empty() {
            SideVerdict::NotIsolated
        } else if rules.is_empty() {
            SideVerdict::Denied { isolated_by, misses }
        } else {
            SideVerdict::Allowed { isolated_by, rules }
        }
    }

    /// The verdict on a new connection from `from` to `to` on `port`.
    pub fn evaluate(&self, from: &Endpoint, to: &Endpoint, port: PortProtocol) -> Verdict {
        let (src_pod, src_ip) = (self.endpoint_pod(from), self.endpoint_ip(from));
        let (dst_pod, dst_ip) = (self.endpoint_pod(to), self.endpoint_ip(to));
        let egress = self.side(Direction::Egress, src_pod, dst_pod, dst_ip, dst_pod, port);
        let ingress = self.side(Direction::Ingress, dst_pod, src_pod, src_ip, dst_pod, port);
        Verdict { from: from.clone(), to: to.clone(), port, egress, ingress }
    }

    /// Writes a person's explanation of `verdict`.
    pub fn explain(&self, verdict: &Verdict) -> String {
        let mut out = String::new();
        let word = if verdict.allowed() { "ALLOWED" } else { "DENIED" };
        let _ = writeln!(out, "{} -> {} on {}: {word}", verdict.from, verdict.to, verdict.port);
        self.explain_side(&mut out, "egress of", &verdict.from, &verdict.egress);
        self.explain_side(&mut out, "ingress of", &verdict.to, &verdict.ingress);
        out
    }

    fn explain_side(&self, out: &mut String, what: &str, end: &Endpoint, side: &SideVerdict) {
        let names = |keys: &[PolicyKey]| keys.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        match side {
            SideVerdict::NotAPod => {
                let _ = writeln!(out, "  {what} {end}: not a pod policies select; no policy applies");
            }
            SideVerdict::NotIsolated => {
                let _ = writeln!(out, "  {what} {end}: allowed, no NetworkPolicy selects it for this direction (not isolated)");
            }
            SideVerdict::Allowed { isolated_by, rules } => {
                let _ = writeln!(out, "  {what} {end}: allowed; isolated by {}", names(isolated_by));
                for r in rules {
                    let _ = writeln!(out, "    allowed by {r}: {}", self.describe_rule(r));
                }
            }
            SideVerdict::Denied { isolated_by, misses } => {
                let _ = writeln!(out, "  {what} {end}: DENIED; isolated by {}, and no rule allows it", names(isolated_by));
                if misses.is_empty() {
                    let _ = writeln!(out, "    the isolating policies have no rules in this direction (deny all)");
                }
                for (r, miss) in misses {
                    let why = match miss {
                        Miss::Peer => "peer does not match",
                        Miss::Port => "port does not match",
                        Miss::PeerAndPort => "neither peer nor port matches",
                    };
                    let _ = writeln!(out, "    {r}: {why} ({})", self.describe_rule(r));
                }
            }
        }
    }

    /// `from/to: ...; ports: ...` of a rule.
    pub fn describe_rule(&self, r: &RuleRef) -> String {
        let Some(rule) = self.policies.get(&r.policy).and_then(|p| p.rules(r.direction)).and_then(|rules| rules.get(r.index)) else {
            return "(gone)".into();
        };
        let peers = if rule.peers.is_empty() { "any peer".to_string() } else { rule.peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(" OR ") };
        let ports = if rule.ports.is_empty() { "any port".to_string() } else { rule.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") };
        let field = if r.direction == Direction::Ingress { "from" } else { "to" };
        format!("{field} {peers}; ports {ports}")
    }
}

/// Parses an endpoint: `namespace/pod` or an IP address.
pub fn parse_endpoint(s: &str) -> Result<Endpoint> {
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(Endpoint::Ip(ip)),
        Err(_) => Ok(Endpoint::Pod(ObjectKey::parse(s)?)),
    }
}
