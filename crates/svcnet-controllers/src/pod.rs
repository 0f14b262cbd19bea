//! What the Service controllers read from a Pod: readiness, its address for an IP family, the
//! port a Service port resolves to, and whether it is published under a hostname. Upstream keeps
//! these in `pkg/controller/util/endpointslice` and `pkg/api/v1/pod`.

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// An IP family, as Services and EndpointSlices name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    /// The family of `ip`, or `None` when it is not an IP address.
    pub fn of(ip: &str) -> Option<Self> {
        match ip.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V4(_) => Some(Self::IPv4),
            std::net::IpAddr::V6(_) => Some(Self::IPv6),
        }
    }

    /// The name used by `spec.ipFamilies` and `addressType`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IPv4 => "IPv4",
            Self::IPv6 => "IPv6",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(Self::IPv4),
            "IPv6" => Some(Self::IPv6),
            _ => None,
        }
    }
}

/// `podutil.IsPodReady`: the `Ready` condition is `True`.
#[doc(alias = "IsPodReady")]
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod is being deleted (`metadata.deletionTimestamp` set).
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// `ShouldPodBeInEndpoints`: not terminal, has an IP, and, unless `include_terminating`, is not
/// being deleted.
#[doc(alias = "ShouldPodBeInEndpoints")]
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    let has_ip = status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()) || status.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty());
    if !has_ip {
        return false;
    }
    include_terminating || !is_terminating(pod)
}

/// All of the pod's IPs: `status.podIPs`, or `status.podIP` when that list is empty.
pub fn ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    let listed: Vec<&str> = status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).filter(|ip| !ip.is_empty()).collect();
    if !listed.is_empty() {
        return listed;
    }
    status.pod_ip.as_deref().filter(|ip| !ip.is_empty()).into_iter().collect()
}

/// The pod's first IP of `family`.
pub fn ip_of_family(pod: &Pod, family: IpFamily) -> Option<&str> {
    ips(pod).into_iter().find(|ip| IpFamily::of(ip) == Some(family))
}

/// Whether the Service has a cluster IP (is not headless).
#[doc(alias = "IsServiceIPSet")]
pub fn has_cluster_ip(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).is_some_and(|ip| !ip.is_empty() && ip != "None")
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The IP families the Service's endpoints are published for: `spec.ipFamilies`, else the
/// family of its cluster IP, else (a headless Service from before dual-stack) the family of
/// `fallback`'s first IP, else IPv4.
pub fn service_families(svc: &Service, fallback: Option<&Pod>) -> Vec<IpFamily> {
    let spec = svc.spec.as_ref();
    let listed: Vec<IpFamily> = spec.and_then(|s| s.ip_families.as_ref()).into_iter().flatten().filter_map(|f| IpFamily::parse(f)).collect();
    if !listed.is_empty() {
        return listed;
    }
    if let Some(family) = spec.and_then(|s| s.cluster_ip.as_deref()).and_then(IpFamily::of) {
        return vec![family];
    }
    if let Some(family) = fallback.and_then(|p| ips(p).first().copied()).and_then(IpFamily::of) {
        return vec![family];
    }
    vec![IpFamily::IPv4]
}

/// The Service's selector, or `None` when it has none: such a Service's endpoints are managed by
/// someone else.
pub fn selector(svc: &Service) -> Option<&std::collections::BTreeMap<String, String>> {
    svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty())
}

/// Whether `pod` carries every label of `selector`.
pub fn matches(selector: &std::collections::BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A Service port's protocol (`TCP` when unset).
pub fn protocol(port: &ServicePort) -> &str {
    port.protocol.as_deref().unwrap_or("TCP")
}

/// `podutil.FindPort`: the container port a Service port's `targetPort` names on this pod.
/// A number is taken as is; a name is looked up among the pod's container ports (and those of
/// sidecar init containers) with the Service port's protocol. `None` when the name is not there.
#[doc(alias = "FindPort")]
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) if *n == 0 => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) if name.is_empty() => Some(port.port),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol(port))
                .map(|p| p.container_port)
        }
    }
}

/// `ShouldSetHostname`: the pod asks for a hostname under this Service's subdomain.
#[doc(alias = "ShouldSetHostname")]
pub fn hostname_for<'a>(pod: &'a Pod, svc: &Service) -> Option<&'a str> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same = spec.subdomain.as_deref() == svc.metadata.name.as_deref() && pod.metadata.namespace == svc.metadata.namespace;
    same.then_some(hostname)
}

/// The `targetRef` of an address that is this pod.
pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// `spec.nodeName`, when the pod is bound.
pub fn node_name(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty())
}
