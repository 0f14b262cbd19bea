//! The resources svcnet serves: one static table, the single source for routing, discovery,
//! storage keys and OpenAPI.

/// One served resource, as discovery describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource name in URLs (`services`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served besides the main resource (`status`, `scale`).
    pub subresources: &'static [&'static str],
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `services` or `endpointslices.discovery.k8s.io`, as upstream names a resource in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// Storage key prefix, shaped like kube-apiserver's etcd keys: `/registry/services/`,
    /// `/registry/apps/deployments/`.
    pub fn key_prefix(&self) -> String {
        // kube-apiserver stores core and a few legacy groups without the group segment.
        if self.group.is_empty() { format!("/registry/{}/", self.plural) } else { format!("/registry/{}/{}/", self.group, self.plural) }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{}/{}", self.key_prefix(), ns, name),
            _ => format!("{}{}", self.key_prefix(), name),
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Kinds whose `metadata.generation` follows spec changes (everything with a spec).
    /// Whether objects of this kind carry `metadata.generation`, bumped on spec changes. As
    /// upstream: the workload kinds, NetworkPolicy, EndpointSlice and custom resources; not
    /// Services, Pods, Namespaces or Nodes.
    pub fn has_generation(&self) -> bool {
        matches!(self.kind, "Deployment" | "ReplicaSet" | "StatefulSet" | "NetworkPolicy" | "EndpointSlice" | "IPAddressPool")
    }
}

const ALL: &[&str] = &["all"];

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
        }
    };
}

/// Every served resource, grouped by API group in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", false, &["ns"], &[], &["status", "finalize"]),
    res!("", "v1", "Pod", "pods", "pod", true, &["po"], ALL, &["status", "binding"]),
    res!("", "v1", "Service", "services", "service", true, &["svc"], ALL, &["status"]),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, &["ep"], &[], &[]),
    res!("", "v1", "Node", "nodes", "node", false, &["no"], &[], &["status"]),
    res!("", "v1", "Event", "events", "event", true, &["ev"], &[], &[]),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], &[], &[]),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, &["sa"], &[], &[]),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], ALL, &["status", "scale"]),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, &["rs"], ALL, &["status", "scale"]),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, &["sts"], ALL, &["status", "scale"]),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, &[], &[], &[]),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, &[], &[], &[]),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, &["netpol"], &[], &[]),
    res!("svcnet.io", "v1alpha1", "IPAddressPool", "ipaddresspools", "ipaddresspool", false, &["ippool"], &[], &[]),
];

/// The API groups, in the order discovery lists them (`""` is the core group).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// The resource behind a URL: group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource serving a kind in a group.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_look_like_kube_apiservers() {
        let svc = find("", "v1", "services").unwrap();
        assert_eq!(svc.key(Some("default"), "backend"), "/registry/services/default/backend");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key(None, "default"), "/registry/namespaces/default");
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.key(Some("a"), "b"), "/registry/apps/deployments/a/b");
        assert_eq!(find("discovery.k8s.io", "v1", "endpointslices").unwrap().qualified_plural(), "endpointslices.discovery.k8s.io");
    }

    #[test]
    fn no_prefix_is_a_prefix_of_another() {
        // A list of one resource must never see another's keys.
        for a in RESOURCES {
            for b in RESOURCES {
                if a != b {
                    assert!(!b.key_prefix().starts_with(&a.key_prefix()), "{} / {}", a.plural, b.plural);
                }
            }
        }
    }
}
