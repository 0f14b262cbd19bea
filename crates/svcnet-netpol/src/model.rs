//! The cluster as the policy engine sees it: namespaces, pods and compiled NetworkPolicies, each
//! built from the `k8s-openapi` object with the API's defaults applied.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ipblock::IpBlock;
use crate::selector::Selector;
use crate::{Error, Result};

/// The label every namespace carries with its own name (set by the API server since 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A namespaced object's identity, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

/// A pod's identity.
pub type PodKey = ObjectKey;
/// A NetworkPolicy's identity.
pub type PolicyKey = ObjectKey;

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }

    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Result<ObjectKey> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok(ObjectKey::new(ns, name)),
            _ => Err(Error::InvalidKey(s.to_owned())),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The protocols a NetworkPolicy port names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Parses the API's spelling (`TCP`, `UDP`, `SCTP`); `None` is TCP, the API's default.
    pub fn parse(s: Option<&str>) -> Result<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(Error::InvalidProtocol(other.to_owned())),
        }
    }

    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port and protocol, `80/TCP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortProtocol {
    pub port: u16,
    pub protocol: Protocol,
}

impl PortProtocol {
    /// Parses `80/TCP`, `53/udp` or `80` (TCP).
    pub fn parse(s: &str) -> Result<PortProtocol> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
        let port = port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| Error::InvalidPort(s.to_owned()))?;
        Ok(PortProtocol { port, protocol: Protocol::parse(Some(&proto.to_ascii_uppercase()))? })
    }
}

impl std::fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// A named container port, what named policy ports resolve against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A pod as policies see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub key: PodKey,
    pub labels: BTreeMap<String, String>,
    /// `status.podIP`; `None` until the pod has one, and again once it has terminated (its
    /// address may then belong to another pod).
    pub ip: Option<IpAddr>,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// The named `containerPorts` of all containers.
    pub ports: Vec<ContainerPort>,
    /// `spec.hostNetwork`: such pods have the node's address; policies do not select them.
    pub host_network: bool,
}

impl PodInfo {
    /// From a Pod object; `None` without a name.
    pub fn from_pod(pod: &corev1::Pod) -> Option<PodInfo> {
        let name = pod.metadata.name.clone()?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let status = pod.status.as_ref();
        let terminated = matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let ip = status.and_then(|s| s.pod_ip.as_deref()).and_then(|s| s.parse().ok()).filter(|_| !terminated);
        let spec = pod.spec.as_ref();
        let mut ports = Vec::new();
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            for p in c.ports.iter().flatten() {
                if let (Some(name), Ok(port), Ok(protocol)) = (&p.name, u16::try_from(p.container_port), Protocol::parse(p.protocol.as_deref())) {
                    ports.push(ContainerPort { name: name.clone(), port, protocol });
                }
            }
        }
        Some(PodInfo {
            key: ObjectKey { namespace, name },
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip,
            node: spec.and_then(|s| s.node_name.clone()),
            ports,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        })
    }

    /// The port `name`/`protocol` resolves to on this pod.
    pub fn resolve_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports.iter().find(|p| p.name == name && p.protocol == protocol).map(|p| p.port)
    }
}

/// A namespace as policies see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    /// Its labels, always including `kubernetes.io/metadata.name`.
    pub labels: BTreeMap<String, String>,
}

impl NamespaceInfo {
    pub fn new(name: &str, labels: BTreeMap<String, String>) -> NamespaceInfo {
        let mut labels = labels;
        // The API server sets this label on every namespace; files given to `policy matrix
        // --offline` may lack it.
        labels.insert(NAMESPACE_NAME_LABEL.into(), name.into());
        NamespaceInfo { name: name.into(), labels }
    }

    pub fn from_namespace(ns: &corev1::Namespace) -> Option<NamespaceInfo> {
        Some(NamespaceInfo::new(ns.metadata.name.as_deref()?, ns.metadata.labels.clone().unwrap_or_default()))
    }
}

/// Ingress or egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        })
    }
}

/// A compiled NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub key: PolicyKey,
    pub pod_selector: Selector,
    /// `Some` when `Ingress` is among the (defaulted) `policyTypes`: the rules, possibly none
    /// (then nothing may come in).
    pub ingress: Option<Vec<Rule>>,
    /// `Some` when `Egress` is among the (defaulted) `policyTypes`.
    pub egress: Option<Vec<Rule>>,
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `from` / `to`; empty (or missing) means every peer.
    pub peers: Vec<Peer>,
    /// `ports`; empty (or missing) means every port of every protocol.
    pub ports: Vec<PortMatch>,
}

/// One `NetworkPolicyPeer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector` (ANDed). `namespaces: None` is the policy's own
    /// namespace (no `namespaceSelector`); a missing `podSelector` is every pod.
    Pods {
        namespaces: Option<Selector>,
        pods: Selector,
    },
    IpBlock(IpBlock),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Pods { namespaces: None, pods } => write!(f, "pods [{pods}] in the policy's namespace"),
            Peer::Pods { namespaces: Some(ns), pods } => write!(f, "pods [{pods}] in namespaces [{ns}]"),
            Peer::IpBlock(b) => write!(f, "{b}"),
        }
    }
}

/// One `NetworkPolicyPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMatch {
    pub protocol: Protocol,
    pub port: PortSpec,
}

/// The port part of a `NetworkPolicyPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// No `port`: every port of the protocol.
    Any,
    /// `port`, or `port`..=`endPort`.
    Range(u16, u16),
    /// A named port, resolved on the destination pod.
    Named(String),
}

impl std::fmt::Display for PortMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.port {
            PortSpec::Any => write!(f, "any/{}", self.protocol),
            PortSpec::Range(a, b) if a == b => write!(f, "{a}/{}", self.protocol),
            PortSpec::Range(a, b) => write!(f, "{a}-{b}/{}", self.protocol),
            PortSpec::Named(n) => write!(f, "{n:?}/{}", self.protocol),
        }
    }
}

// === impl Policy ===

impl Policy {
    /// Compiles a NetworkPolicy, applying the API's defaults (`policyTypes`, `protocol`).
    pub fn from_network_policy(np: &netv1::NetworkPolicy) -> Result<Policy> {
        let key = ObjectKey::new(np.metadata.namespace.clone().unwrap_or_else(|| "default".into()), np.metadata.name.clone().unwrap_or_default());
        let wrap = |e: Error| Error::InvalidPolicy { policy: key.to_string(), reason: e.to_string() };
        let spec = np.spec.clone().unwrap_or_default();
        let (has_ingress, has_egress) = match spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => (types.iter().any(|t| t == "Ingress"), types.iter().any(|t| t == "Egress")),
            // SetDefaults_NetworkPolicy: Ingress always, Egress only with egress rules.
            _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
        };
        let ingress = has_ingress
            .then(|| spec.ingress.iter().flatten().map(|r| Rule::new(r.from.as_deref(), r.ports.as_deref())).collect::<Result<Vec<_>>>())
            .transpose()
            .map_err(wrap)?;
        let egress = has_egress
            .then(|| spec.egress.iter().flatten().map(|r| Rule::new(r.to.as_deref(), r.ports.as_deref())).collect::<Result<Vec<_>>>())
            .transpose()
            .map_err(wrap)?;
        Ok(Policy { pod_selector: Selector::new(&spec.pod_selector.unwrap_or_default()).map_err(wrap)?, ingress, egress, key })
    }

    /// The rules of one direction, `None` when the policy does not isolate it.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Whether the policy selects `pod` (same namespace, selector matches, not hostNetwork).
    pub fn selects(&self, pod: &PodInfo) -> bool {
        !pod.host_network && pod.key.namespace == self.key.namespace && self.pod_selector.matches(&pod.labels)
    }
}

// === impl Rule ===

impl Rule {
    fn new(peers: Option<&[netv1::NetworkPolicyPeer]>, ports: Option<&[netv1::NetworkPolicyPort]>) -> Result<Rule> {
        let peers = peers.unwrap_or_default().iter().map(Peer::new).collect::<Result<_>>()?;
        let ports = ports.unwrap_or_default().iter().map(PortMatch::new).collect::<Result<_>>()?;
        Ok(Rule { peers, ports })
    }
}

impl Peer {
    fn new(peer: &netv1::NetworkPolicyPeer) -> Result<Peer> {
        match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
            (Some(b), None, None) => Ok(Peer::IpBlock(IpBlock::parse(&b.cidr, b.except.as_deref().unwrap_or_default())?)),
            (Some(_), _, _) => Err(Error::InvalidPeer("ipBlock may not be combined with podSelector or namespaceSelector".into())),
            (None, None, None) => Err(Error::InvalidPeer("must specify a peer".into())),
            (None, pods, namespaces) => Ok(Peer::Pods {
                namespaces: namespaces.as_ref().map(Selector::new).transpose()?,
                pods: pods.as_ref().map(Selector::new).transpose()?.unwrap_or_default(),
            }),
        }
    }
}

impl PortMatch {
    fn new(port: &netv1::NetworkPolicyPort) -> Result<PortMatch> {
        let protocol = Protocol::parse(port.protocol.as_deref())?;
        let number = |n: i32| u16::try_from(n).ok().filter(|n| *n != 0).ok_or_else(|| Error::InvalidPort(n.to_string()));
        let spec = match (&port.port, port.end_port) {
            (None, None) => PortSpec::Any,
            (None, Some(_)) => return Err(Error::InvalidPort("endPort requires port".into())),
            (Some(IntOrString::Int(p)), end) => {
                let start = number(*p)?;
                let end = end.map(number).transpose()?.unwrap_or(start);
                if end < start {
                    return Err(Error::InvalidPort(format!("endPort {end} is below port {start}")));
                }
                PortSpec::Range(start, end)
            }
            (Some(IntOrString::String(_)), Some(_)) => return Err(Error::InvalidPort("endPort requires a numeric port".into())),
            // The API accepts a number written as a string ("80") and treats it as the number.
            (Some(IntOrString::String(s)), None) => match s.parse::<i32>() {
                Ok(n) => {
                    let n = number(n)?;
                    PortSpec::Range(n, n)
                }
                Err(_) => PortSpec::Named(s.clone()),
            },
        };
        Ok(PortMatch { protocol, port: spec })
    }
}
