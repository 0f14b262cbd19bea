//! What the proxy should do for one Service on one node, computed from the Service, its
//! EndpointSlices and the node's name. Pure: no I/O, no clock.
//!
//! The result, a [`ServicePlan`], says per Service port which addresses and ports reach it
//! (frontends) and which endpoints traffic arriving through each path should go to. The
//! [`crate::ruleset`] turns plans into nftables elements.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label naming another proxy that handles the Service (kube-proxy skips such Services too).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label marking a Service headless regardless of its ClusterIP.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label linking an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours, as upstream).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey { namespace: namespace.into(), name: name.into() }
    }

    /// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
    pub fn of_slice(slice: &EndpointSlice) -> Option<ServiceKey> {
        let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
        Some(ServiceKey::new(slice.metadata.namespace.clone().unwrap_or_default(), name.clone()))
    }

    pub fn of_service(service: &Service) -> ServiceKey {
        ServiceKey::new(service.metadata.namespace.clone().unwrap_or_default(), service.metadata.name.clone().unwrap_or_default())
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The transport protocols a Service port can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
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

    /// The name nftables uses (`meta l4proto tcp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One backend address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// Where traffic through one path of a Service port goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Spread over these endpoints (never empty).
    Endpoints(Vec<Endpoint>),
    /// No endpoint anywhere: refuse the connection at once.
    Reject,
    /// A `Local` traffic policy and no endpoint on this node: drop, as upstream does.
    Drop,
}

impl Target {
    pub fn endpoints(&self) -> &[Endpoint] {
        match self {
            Target::Endpoints(endpoints) => endpoints,
            _ => &[],
        }
    }
}

/// The external path of a Service port: NodePorts, `externalIPs` and LoadBalancer ingress IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalPath {
    /// The NodePort, served on the node's addresses.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`, applied to the LoadBalancer IPs; empty = everyone.
    /// Disjoint: overlapping or adjacent ranges are merged.
    pub source_ranges: Vec<IpNet>,
    /// `externalTrafficPolicy: Local`: only this node's endpoints, client address kept.
    pub local: bool,
    pub target: Target,
}

/// One port of a Service, with everything the rules need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPlan {
    /// The port's name (may be empty for single-port Services).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// `spec.clusterIPs`.
    pub cluster_ips: Vec<IpAddr>,
    /// The ClusterIP path (`internalTrafficPolicy` applies).
    pub internal: Target,
    /// The path from outside, when the Service has any external frontend.
    pub external: Option<ExternalPath>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Endpoints on this node (for hairpin masquerade).
    pub local_endpoints: Vec<Endpoint>,
    /// Every serving endpoint, ready or terminating, wherever it is: UDP flows already going
    /// to one of them are kept (as kube-proxy does), even when new flows no longer go there.
    pub serving: Vec<Endpoint>,
}

/// What the proxy does for one Service on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub key: ServiceKey,
    pub ports: Vec<PortPlan>,
    /// `healthCheckNodePort` with the number of local ready endpoints (distinct addresses), for
    /// `externalTrafficPolicy: Local` Services.
    pub health_check: Option<HealthCheck>,
}

/// What the health-check server answers for one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub node_port: u16,
    pub local_endpoints: usize,
}

/// Why a Service gets no rules at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    ExternalName,
    Headless,
    /// Labelled for another proxy.
    OtherProxy,
    /// No ClusterIP (not yet allocated).
    NoClusterIp,
}

/// Computes what `node_name` does for `service`, given the EndpointSlices that belong to it
/// (slices of other Services are ignored).
pub fn plan_service<'a>(service: &Service, slices: impl IntoIterator<Item = &'a EndpointSlice>, node_name: &str) -> Result<ServicePlan, Skip> {
    let key = ServiceKey::of_service(service);
    let labels = service.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME)) {
        return Err(Skip::OtherProxy);
    }
    if labels.is_some_and(|l| l.contains_key(LABEL_HEADLESS)) {
        return Err(Skip::Headless);
    }
    let Some(spec) = service.spec.as_ref() else { return Err(Skip::NoClusterIp) };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(Skip::ExternalName);
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return Err(Skip::Headless);
    }
    let mut cluster_ips: Vec<IpAddr> = spec.cluster_ips.iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
    if cluster_ips.is_empty() {
        cluster_ips.extend(spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()));
    }
    if cluster_ips.is_empty() {
        return Err(Skip::NoClusterIp);
    }
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let external_ips: Vec<IpAddr> = spec.external_ips.iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
    let load_balancer_ips: Vec<IpAddr> = if service_type == "LoadBalancer" {
        let ingress = service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect()
    } else {
        Vec::new()
    };
    let source_ranges: Vec<IpNet> = if service_type == "LoadBalancer" {
        let ranges: Vec<IpNet> = spec.load_balancer_source_ranges.iter().flatten().filter_map(|r| r.trim().parse().ok()).collect();
        // Overlapping ranges are valid here but not as elements of an nftables interval set
        // (the kernel refuses the transaction): merge them into disjoint prefixes.
        IpNet::aggregate(&ranges)
    } else {
        Vec::new()
    };
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let configured = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
        configured.and_then(|t| u32::try_from(t).ok()).filter(|t| *t > 0).unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    });

    let slices: Vec<&EndpointSlice> = slices.into_iter().filter(|s| ServiceKey::of_slice(s).as_ref() == Some(&key)).collect();
    let mut ports = Vec::new();
    // Distinct addresses over all ports and slices, as upstream counts them for the health check.
    let mut local_ready: BTreeSet<IpAddr> = BTreeSet::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
        let Ok(port_number) = u16::try_from(port.port) else { continue };
        let name = port.name.clone().unwrap_or_default();
        let candidates = endpoints_for_port(&slices, &name, protocol, node_name);
        let cluster = choose(&candidates, false);
        let local = choose(&candidates, true);
        local_ready.extend(candidates.iter().filter(|c| c.local && c.ready).map(|c| c.endpoint.ip));

        let internal = target(if internal_local { &local } else { &cluster }, internal_local, &cluster);
        let node_port = matches!(service_type, "NodePort" | "LoadBalancer").then_some(port.node_port).flatten().and_then(|p| u16::try_from(p).ok());
        let external = (node_port.is_some() || !external_ips.is_empty() || !load_balancer_ips.is_empty()).then(|| ExternalPath {
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            source_ranges: source_ranges.clone(),
            local: external_local,
            target: target(if external_local { &local } else { &cluster }, external_local, &cluster),
        });
        let local_endpoints =
            candidates.iter().filter(|c| c.local && (c.ready || c.serving)).map(|c| c.endpoint).collect::<BTreeSet<_>>().into_iter().collect();
        let serving = candidates.iter().filter(|c| c.serving).map(|c| c.endpoint).collect::<BTreeSet<_>>().into_iter().collect();
        ports.push(PortPlan {
            name,
            protocol,
            port: port_number,
            cluster_ips: cluster_ips.clone(),
            internal,
            external,
            affinity_timeout,
            local_endpoints,
            serving,
        });
    }
    let health_check = (external_local && service_type == "LoadBalancer")
        .then_some(spec.health_check_node_port)
        .flatten()
        .and_then(|p| u16::try_from(p).ok())
        .map(|node_port| HealthCheck { node_port, local_endpoints: local_ready.len() });
    Ok(ServicePlan { key, ports, health_check })
}

fn target(chosen: &[Endpoint], local_policy: bool, cluster: &[Endpoint]) -> Target {
    if !chosen.is_empty() {
        Target::Endpoints(chosen.to_vec())
    } else if local_policy && !cluster.is_empty() {
        Target::Drop
    } else {
        Target::Reject
    }
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    endpoint: Endpoint,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

fn endpoints_for_port(slices: &[&EndpointSlice], port_name: &str, protocol: Protocol, node_name: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let slice_port =
            slice.ports.iter().flatten().find(|p| p.name.as_deref().unwrap_or("") == port_name && Protocol::parse(p.protocol.as_deref()) == Some(protocol));
        let Some(port) = slice_port.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else { continue };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // Unset `ready` means ready; unset `serving` means what `ready` says.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let local = endpoint.node_name.as_deref() == Some(node_name);
            // Only the first address counts (as upstream: the others are "for future use").
            let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            out.push(Candidate { endpoint: Endpoint { ip, port }, ready, serving, terminating, local });
        }
    }
    out
}

/// Ready endpoints; when there are none, serving-but-terminating ones (upstream's fallback).
fn choose(candidates: &[Candidate], local_only: bool) -> Vec<Endpoint> {
    let pool = || candidates.iter().filter(|c| !local_only || c.local);
    let mut chosen: BTreeSet<Endpoint> = pool().filter(|c| c.ready).map(|c| c.endpoint).collect();
    if chosen.is_empty() {
        chosen = pool().filter(|c| c.serving && c.terminating).map(|c| c.endpoint).collect();
    }
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "s", "namespace": "ns"}, "spec": spec})).expect("a Service")
    }

    fn slice(name: &str, ports: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {LABEL_SERVICE_NAME: "s"}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
        }))
        .expect("an EndpointSlice")
    }

    #[test]
    fn overlapping_source_ranges_are_merged() {
        let lb = service(serde_json::json!({
            "type": "LoadBalancer", "clusterIP": "10.96.0.5", "loadBalancerSourceRanges": ["10.0.0.0/8", "10.1.0.0/16", " 192.168.0.0/25", "192.168.0.128/25"],
            "ports": [{"port": 80, "nodePort": 30080}],
        }));
        let plan = plan_service(&lb, [], "n").expect("planned");
        let ranges = &plan.ports[0].external.as_ref().expect("external path").source_ranges;
        assert_eq!(ranges, &["10.0.0.0/8".parse::<IpNet>().unwrap(), "192.168.0.0/24".parse().unwrap()]);
    }

    #[test]
    fn serving_lists_terminating_endpoints_that_still_serve() {
        let svc = service(serde_json::json!({"clusterIP": "10.96.0.5", "ports": [{"port": 53, "protocol": "UDP"}]}));
        let at = |ip: &str, ready: bool, serving: bool, terminating: bool| serde_json::json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}});
        let endpoints = serde_json::json!([at("10.244.0.1", true, true, false), at("10.244.0.2", false, true, true), at("10.244.0.3", false, false, true)]);
        let plan = plan_service(&svc, &[slice("a", serde_json::json!([{"port": 5353, "protocol": "UDP"}]), endpoints)], "n").expect("planned");
        let endpoint = |ip: &str| Endpoint { ip: ip.parse().unwrap(), port: 5353 };
        assert_eq!(plan.ports[0].internal, Target::Endpoints(vec![endpoint("10.244.0.1")]));
        assert_eq!(plan.ports[0].serving, vec![endpoint("10.244.0.1"), endpoint("10.244.0.2")]);
    }

    #[test]
    fn health_check_counts_distinct_local_ready_addresses() {
        let lb = service(serde_json::json!({
            "type": "LoadBalancer", "clusterIP": "10.96.0.5", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000,
            "ports": [{"name": "web", "port": 80, "nodePort": 30080}, {"name": "alt", "port": 81, "nodePort": 30081}],
        }));
        let here = |ip: &str| serde_json::json!({"addresses": [ip], "nodeName": "n"});
        let slices = [
            slice("a", serde_json::json!([{"name": "web", "port": 8080}]), serde_json::json!([here("10.244.0.1"), here("10.244.0.3")])),
            slice("b", serde_json::json!([{"name": "alt", "port": 8081}]), serde_json::json!([here("10.244.0.2"), here("10.244.0.3")])),
            // The same endpoint listed twice (slices being rebalanced) counts once.
            slice("c", serde_json::json!([{"name": "web", "port": 8080}]), serde_json::json!([here("10.244.0.1")])),
        ];
        let plan = plan_service(&lb, &slices, "n").expect("planned");
        assert_eq!(plan.health_check, Some(HealthCheck { node_port: 31000, local_endpoints: 3 }));
    }
}
