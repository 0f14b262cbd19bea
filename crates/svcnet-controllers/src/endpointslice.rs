//! The EndpointSlice controllers' pure core: the endpoints a Service's slices should hold (from
//! its pods, or mirrored from a user-written `Endpoints`), and the plan that turns the existing
//! slices into those with as few writes as possible (upstream's `reconciler.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::endpoints::HEADLESS_LABEL;
use crate::pod::{self, IpFamily};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// `managed-by` of the slices built from pods.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// `managed-by` of the slices mirrored from Endpoints.
pub const MIRRORING_CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// An Endpoints with this label set to `"true"` is not mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Endpoints per slice built from pods (`--max-endpoints-per-slice`'s default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Endpoints per mirrored slice (`--mirroring-max-endpoints-per-subset`'s default).
pub const MAX_MIRRORED_ENDPOINTS_PER_SLICE: usize = 1000;

/// A port's identity inside a slice: name, number, protocol, appProtocol.
type PortKey = (String, i32, String, String);

/// Slices are grouped by address type and the (sorted) set of ports their endpoints offer.
type GroupKey = (String, Vec<PortKey>);

/// An endpoint's identity: its first address and the object behind it. Conditions are not part
/// of it, so a readiness change updates an endpoint in place.
type EndpointKey = (String, String);

/// Endpoints that offer the same ports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Group {
    pub ports: Vec<EndpointPort>,
    pub endpoints: BTreeMap<EndpointKey, Endpoint>,
}

/// Everything a Service's slices should say.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredSlices {
    pub namespace: String,
    /// `metadata.generateName` of new slices.
    pub generate_name: String,
    /// The exact labels of every slice.
    pub labels: BTreeMap<String, String>,
    /// The exact annotations of every slice; `None` leaves them alone.
    pub annotations: Option<BTreeMap<String, String>>,
    /// The Service, as every slice's controller.
    pub owner: OwnerReference,
    pub max_endpoints: usize,
    pub groups: BTreeMap<GroupKey, Group>,
    /// When no slice of this address type would be left, an empty placeholder slice is kept so
    /// that clients can tell "no endpoints" from "not yet reconciled".
    pub placeholder: Option<IpFamily>,
}

impl DesiredSlices {
    fn new(svc: &Service, labels: BTreeMap<String, String>, max_endpoints: usize) -> Self {
        let name = svc.metadata.name.clone().unwrap_or_default();
        DesiredSlices {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            generate_name: format!("{name}-"),
            labels,
            annotations: None,
            owner: OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: svc.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            max_endpoints,
            groups: BTreeMap::new(),
            placeholder: None,
        }
    }

    fn add(&mut self, family: IpFamily, ports: Vec<EndpointPort>, endpoint: Endpoint) {
        let key = (family.as_str().to_string(), sorted_port_keys(&ports));
        let group = self.groups.entry(key).or_insert_with(|| Group { ports, endpoints: BTreeMap::new() });
        group.endpoints.entry(endpoint_key(&endpoint)).or_insert(endpoint);
    }
}

/// The address types of a Service's slices: `getAddressTypesForService`.
#[doc(alias = "getAddressTypesForService")]
fn address_types(svc: &Service) -> Vec<IpFamily> {
    let spec = svc.spec.as_ref();
    let listed = spec.and_then(|s| s.ip_families.as_ref()).is_some_and(|f| !f.is_empty());
    if listed || pod::has_cluster_ip(svc) {
        let mut families = pod::service_families(svc, None);
        families.dedup();
        return families;
    }
    // A headless Service from before dual-stack: publish both families.
    vec![IpFamily::IPv4, IpFamily::IPv6]
}

/// The labels of the slices of `svc` managed by `controller`: the Service's own, the headless
/// marker, and the two reserved ones.
fn slice_labels(svc: &Service, controller: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> =
        svc.metadata.labels.iter().flatten().filter(|(k, _)| !is_reserved(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    if pod::has_cluster_ip(svc) {
        labels.remove(HEADLESS_LABEL);
    } else {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(SERVICE_NAME_LABEL.into(), svc.metadata.name.clone().unwrap_or_default());
    labels.insert(MANAGED_BY_LABEL.into(), controller.into());
    labels
}

fn is_reserved(key: &str) -> bool {
    key == SERVICE_NAME_LABEL || key == MANAGED_BY_LABEL
}

/// The slices of `svc`, which must have a selector, from the pods it selects (`pods` may hold
/// other pods of the namespace). Unlike Endpoints, terminating pods stay, marked `terminating`.
pub fn desired(svc: &Service, pods: &[&Pod]) -> DesiredSlices {
    let mut desired = DesiredSlices::new(svc, slice_labels(svc, CONTROLLER_NAME), MAX_ENDPOINTS_PER_SLICE);
    let families = address_types(svc);
    desired.placeholder = families.first().copied();
    let Some(selector) = pod::selector(svc) else { return desired };
    let publish_not_ready = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    for &p in pods {
        if !pod::matches(selector, p) || !pod::should_be_in_endpoints(p, true) {
            continue;
        }
        let ports = endpoint_ports(svc, p);
        for &family in &families {
            let Some(ip) = pod::ip_of_family(p, family) else { continue };
            let serving = pod::is_ready(p);
            let terminating = pod::is_terminating(p);
            let endpoint = Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(publish_not_ready || (serving && !terminating)),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: pod::hostname_for(p, svc).map(str::to_string),
                node_name: pod::node_name(p),
                target_ref: Some(pod::target_ref(p)),
                ..Default::default()
            };
            desired.add(family, ports.clone(), endpoint);
        }
    }
    desired
}

/// `getEndpointPorts`: the Service's ports as this pod offers them; ports whose named
/// `targetPort` the pod lacks are left out.
#[doc(alias = "getEndpointPorts")]
fn endpoint_ports(svc: &Service, p: &Pod) -> Vec<EndpointPort> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    ports
        .iter()
        .filter_map(|sp| {
            let number = pod::find_port(p, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(pod::protocol(sp).to_string()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// Whether the mirroring controller should mirror this Endpoints of a selector-less Service.
pub fn should_mirror(endpoints: &Endpoints) -> bool {
    let labels = endpoints.metadata.labels.as_ref();
    let annotations = endpoints.metadata.annotations.as_ref();
    labels.and_then(|l| l.get(SKIP_MIRROR_LABEL)).map(String::as_str) != Some("true")
        && !annotations.is_some_and(|a| a.contains_key("control-plane.alpha.kubernetes.io/leader"))
}

/// The slices mirroring a user-written `Endpoints` of the selector-less Service `svc`.
pub fn mirrored(svc: &Service, endpoints: &Endpoints) -> DesiredSlices {
    let mut labels: BTreeMap<String, String> = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), svc.metadata.name.clone().unwrap_or_default());
    labels.insert(MANAGED_BY_LABEL.into(), MIRRORING_CONTROLLER_NAME.into());
    let mut desired = DesiredSlices::new(svc, labels, MAX_MIRRORED_ENDPOINTS_PER_SLICE);
    let annotations = endpoints
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !matches!(k.as_str(), "endpoints.kubernetes.io/last-change-trigger-time" | "kubectl.kubernetes.io/last-applied-configuration"));
    desired.annotations = Some(annotations.map(|(k, v)| (k.clone(), v.clone())).collect());
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| (a, false));
        for (address, ready) in ready.chain(not_ready) {
            let Some(family) = IpFamily::of(&address.ip) else { continue };
            let endpoint = Endpoint {
                addresses: vec![address.ip.clone()],
                conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
                hostname: address.hostname.clone().filter(|h| !h.is_empty()),
                node_name: address.node_name.clone().filter(|n| !n.is_empty()),
                target_ref: address.target_ref.clone(),
                ..Default::default()
            };
            desired.add(family, ports.clone(), endpoint);
        }
    }
    desired
}

/// The writes that turn the existing slices into the desired ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlicePlan {
    /// New slices (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new content (carrying the `resourceVersion` they were read at).
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

impl SlicePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// A slice that stays, with the endpoints it will hold.
struct Kept {
    slice: EndpointSlice,
    key: GroupKey,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
    changed: bool,
}

/// Plans the writes from `existing` (the slices this controller manages for the Service) to
/// `desired`, with little churn: an endpoint stays in the slice that holds it (updated in place
/// when its conditions change), new endpoints fill slices that are written anyway before those
/// that are not, slices that would be deleted are reused before new ones are created.
pub fn plan(desired: &DesiredSlices, existing: &[&EndpointSlice]) -> SlicePlan {
    let mut existing: Vec<&EndpointSlice> = existing.to_vec();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut remaining = desired.groups.clone();
    let mut kept: Vec<Kept> = Vec::new();
    let mut spare: Vec<EndpointSlice> = Vec::new();
    for slice in existing {
        let key = group_key(slice);
        let Some(group) = remaining.get_mut(&key) else {
            spare.push(slice.clone());
            continue;
        };
        let endpoints: Vec<Endpoint> = slice.endpoints.iter().filter_map(|e| group.endpoints.remove(&endpoint_key(e))).collect();
        if endpoints.is_empty() {
            spare.push(slice.clone());
            continue;
        }
        let changed = endpoints != slice.endpoints;
        kept.push(Kept { slice: slice.clone(), key, ports: group.ports.clone(), endpoints, changed });
    }

    let mut create: Vec<(GroupKey, Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    for (key, group) in remaining {
        let mut rest: Vec<Endpoint> = group.endpoints.into_values().collect();
        // Slices written anyway first, then the fullest of the others.
        let mut order: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].key == key).collect();
        order.sort_by_key(|&i| (!kept[i].changed, std::cmp::Reverse(kept[i].endpoints.len())));
        for i in order {
            if rest.is_empty() {
                break;
            }
            let room = desired.max_endpoints.saturating_sub(kept[i].endpoints.len()).min(rest.len());
            if room > 0 {
                kept[i].endpoints.extend(rest.drain(..room));
                kept[i].changed = true;
            }
        }
        for chunk in rest.chunks(desired.max_endpoints.max(1)) {
            match spare.iter().position(|s| s.address_type == key.0) {
                Some(i) => {
                    let slice = spare.remove(i);
                    kept.push(Kept { slice, key: key.clone(), ports: group.ports.clone(), endpoints: chunk.to_vec(), changed: true });
                }
                None => create.push((key.clone(), group.ports.clone(), chunk.to_vec())),
            }
        }
    }

    if let Some(family) = desired.placeholder {
        let ty = family.as_str();
        let exists = kept.iter().any(|k| k.key.0 == ty) || create.iter().any(|(k, _, _)| k.0 == ty);
        if !exists {
            let key: GroupKey = (ty.to_string(), Vec::new());
            // An existing placeholder (or any slice of the type) is reused.
            let reuse = spare
                .iter()
                .position(|s| s.address_type == ty && s.endpoints.is_empty() && s.ports.as_ref().is_none_or(Vec::is_empty))
                .or_else(|| spare.iter().position(|s| s.address_type == ty));
            match reuse {
                Some(i) => {
                    let slice = spare.remove(i);
                    let changed = !slice.endpoints.is_empty();
                    kept.push(Kept { slice, key, ports: Vec::new(), endpoints: Vec::new(), changed });
                }
                None => create.push((key, Vec::new(), Vec::new())),
            }
        }
    }

    let mut plan = SlicePlan { delete: spare, ..Default::default() };
    for k in kept {
        let mut slice = k.slice.clone();
        let mut endpoints = k.endpoints;
        endpoints.sort_by_key(endpoint_key);
        slice.endpoints = endpoints;
        slice.ports = Some(k.ports);
        set_meta(&mut slice.metadata, desired);
        let same_ports = sorted_port_keys(k.slice.ports.as_deref().unwrap_or_default()) == k.key.1
            && normalize_ports(k.slice.ports.clone()) == normalize_ports(slice.ports.clone());
        if k.changed || !same_ports || slice.endpoints != k.slice.endpoints || slice.metadata != k.slice.metadata {
            plan.update.push(slice);
        }
    }
    for (key, ports, mut endpoints) in create {
        endpoints.sort_by_key(endpoint_key);
        let mut metadata = ObjectMeta { generate_name: Some(desired.generate_name.clone()), namespace: Some(desired.namespace.clone()), ..Default::default() };
        set_meta(&mut metadata, desired);
        plan.create.push(EndpointSlice { metadata, address_type: key.0, endpoints, ports: Some(ports) });
    }
    plan
}

/// Sets what the controller owns in a slice's metadata.
fn set_meta(meta: &mut ObjectMeta, desired: &DesiredSlices) {
    meta.labels = Some(desired.labels.clone());
    if let Some(annotations) = &desired.annotations {
        meta.annotations = (!annotations.is_empty()).then(|| annotations.clone());
    }
    meta.owner_references = Some(vec![desired.owner.clone()]);
}

fn group_key(slice: &EndpointSlice) -> GroupKey {
    (slice.address_type.clone(), sorted_port_keys(slice.ports.as_deref().unwrap_or_default()))
}

fn sorted_port_keys(ports: &[EndpointPort]) -> Vec<PortKey> {
    let mut keys: Vec<PortKey> = ports.iter().map(port_key).collect();
    keys.sort();
    keys
}

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port.unwrap_or_default(),
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone().unwrap_or_default(),
    )
}

fn normalize_ports(ports: Option<Vec<EndpointPort>>) -> Vec<PortKey> {
    ports.unwrap_or_default().iter().map(port_key).collect()
}

fn endpoint_key(e: &Endpoint) -> EndpointKey {
    let address = e.addresses.first().cloned().unwrap_or_default();
    let uid = e.target_ref.as_ref().and_then(|r| r.uid.clone().or_else(|| r.name.clone())).unwrap_or_default();
    (address, uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pod, service};
    use serde_json::json;

    fn svc() -> Service {
        let mut s = service(json!({"selector": {"app": "x"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}));
        s.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        s
    }

    fn web(port: i32) -> serde_json::Value {
        json!({"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": port}]}]})
    }

    /// Applies a plan to a simulated API: creates get names `svc-0`, `svc-1`, ...
    fn apply(plan: SlicePlan, state: &mut Vec<EndpointSlice>, counter: &mut usize) {
        for d in &plan.delete {
            state.retain(|s| s.metadata.name != d.metadata.name);
        }
        for u in plan.update {
            let i = state.iter().position(|s| s.metadata.name == u.metadata.name).unwrap();
            state[i] = u;
        }
        for mut c in plan.create {
            c.metadata.name = Some(format!("svc-{counter}"));
            *counter += 1;
            state.push(c);
        }
    }

    fn converge(desired: &DesiredSlices, state: &mut Vec<EndpointSlice>, counter: &mut usize) -> SlicePlan {
        let refs: Vec<&EndpointSlice> = state.iter().collect();
        let p = plan(desired, &refs);
        apply(p.clone(), state, counter);
        let refs: Vec<&EndpointSlice> = state.iter().collect();
        assert!(plan(desired, &refs).is_empty(), "a second plan must be empty");
        p
    }

    fn addresses(slice: &EndpointSlice) -> Vec<&str> {
        slice.endpoints.iter().map(|e| e.addresses[0].as_str()).collect()
    }

    #[test]
    fn endpoints_have_conditions_ports_and_meta() {
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", true, web(8080));
        let b = pod("b", json!({"app": "x"}), "10.0.0.2", false, web(8080));
        let d = desired(&svc(), &[&b, &a]);
        let p = plan(&d, &[]);
        assert_eq!(p.create.len(), 1);
        let s = &p.create[0];
        assert_eq!(s.metadata.generate_name.as_deref(), Some("svc-"));
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(addresses(s), ["10.0.0.1", "10.0.0.2"]);
        let c = |i: usize| s.endpoints[i].conditions.clone().unwrap();
        assert_eq!((c(0).ready, c(0).serving, c(0).terminating), (Some(true), Some(true), Some(false)));
        assert_eq!((c(1).ready, c(1).serving, c(1).terminating), (Some(false), Some(false), Some(false)));
        assert_eq!(s.endpoints[0].node_name.as_deref(), Some("node-1"));
        assert_eq!(s.endpoints[0].target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        let port = &s.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port, port.protocol.as_deref()), (Some("http"), Some(8080), Some("TCP")));
        let labels = s.metadata.labels.clone().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "svc");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(labels["team"], "a");
        assert!(!labels.contains_key(HEADLESS_LABEL));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Service", "svc", "uid-svc"));
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    }

    #[test]
    fn terminating_pods_stay_but_not_ready() {
        let mut a = pod("a", json!({"app": "x"}), "10.0.0.1", true, web(8080));
        a.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
        let d = desired(&svc(), &[&a]);
        let e = &d.groups.values().next().unwrap().endpoints.values().next().unwrap();
        let c = e.conditions.clone().unwrap();
        assert_eq!((c.ready, c.serving, c.terminating), (Some(false), Some(true), Some(true)));
    }

    #[test]
    fn different_resolved_ports_go_to_different_slices() {
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", true, web(8080));
        let b = pod("b", json!({"app": "x"}), "10.0.0.2", true, web(9090));
        let p = plan(&desired(&svc(), &[&a, &b]), &[]);
        let mut got: Vec<(i32, Vec<&str>)> = p.create.iter().map(|s| (s.ports.as_ref().unwrap()[0].port.unwrap(), addresses(s))).collect();
        got.sort();
        assert_eq!(got, [(8080, vec!["10.0.0.1"]), (9090, vec!["10.0.0.2"])]);
    }

    #[test]
    fn unresolvable_named_port_gives_a_portless_endpoint() {
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", true, json!({}));
        let p = plan(&desired(&svc(), &[&a]), &[]);
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.create[0].ports.as_deref(), Some(&[][..]));
        assert_eq!(addresses(&p.create[0]), ["10.0.0.1"]);
    }

    #[test]
    fn no_pods_gives_one_placeholder_which_is_reused() {
        let (mut state, mut n) = (Vec::new(), 0);
        let empty = desired(&svc(), &[]);
        let p = converge(&empty, &mut state, &mut n);
        assert_eq!(p.create.len(), 1);
        assert!(state[0].endpoints.is_empty());
        assert_eq!(state[0].ports.as_deref(), Some(&[][..]));
        // A pod appears: the placeholder becomes its slice, no create or delete.
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", true, web(8080));
        let p = converge(&desired(&svc(), &[&a]), &mut state, &mut n);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert_eq!(state.len(), 1);
        assert_eq!(addresses(&state[0]), ["10.0.0.1"]);
        // It goes away again: back to a placeholder, still the same object.
        let p = converge(&empty, &mut state, &mut n);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert!(state[0].endpoints.is_empty());
    }

    #[test]
    fn readiness_change_updates_in_place_and_unchanged_is_a_no_op() {
        let (mut state, mut n) = (Vec::new(), 0);
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", true, web(8080));
        let b = pod("b", json!({"app": "x"}), "10.0.0.2", true, web(8080));
        converge(&desired(&svc(), &[&a, &b]), &mut state, &mut n);
        let b2 = pod("b", json!({"app": "x"}), "10.0.0.2", false, web(8080));
        let p = converge(&desired(&svc(), &[&a, &b2]), &mut state, &mut n);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert_eq!(state[0].endpoints[1].conditions.as_ref().unwrap().ready, Some(false));
    }

    #[test]
    fn at_most_100_endpoints_per_slice_with_minimal_churn() {
        let (mut state, mut n) = (Vec::new(), 0);
        let pods: Vec<Pod> = (0..250).map(|i| pod(&format!("p{i}"), json!({"app": "x"}), &format!("10.0.{}.{}", i / 200, i % 200), true, web(8080))).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = converge(&desired(&svc(), &refs), &mut state, &mut n);
        assert_eq!(p.create.len(), 3);
        let mut sizes: Vec<usize> = state.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, [50, 100, 100]);
        // One more pod: it joins the slice with room, nothing else is written.
        let extra = pod("extra", json!({"app": "x"}), "10.1.0.1", true, web(8080));
        let mut refs2 = refs.clone();
        refs2.push(&extra);
        let p = converge(&desired(&svc(), &refs2), &mut state, &mut n);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        // Removing one pod touches only its slice.
        let p = converge(&desired(&svc(), &refs[1..]), &mut state, &mut n);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 2, 0));
    }

    #[test]
    fn slices_of_other_ports_are_recycled_and_labels_follow_the_service() {
        let (mut state, mut n) = (Vec::new(), 0);
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", true, web(8080));
        converge(&desired(&svc(), &[&a]), &mut state, &mut n);
        let a2 = pod("a", json!({"app": "x"}), "10.0.0.1", true, web(8081));
        let p = converge(&desired(&svc(), &[&a2]), &mut state, &mut n);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert_eq!(state[0].ports.as_ref().unwrap()[0].port, Some(8081));
        let mut relabelled = svc();
        relabelled.metadata.labels = Some([("team".to_string(), "b".to_string())].into());
        let p = converge(&desired(&relabelled, &[&a2]), &mut state, &mut n);
        assert_eq!(p.update.len(), 1);
        assert_eq!(state[0].metadata.labels.as_ref().unwrap()["team"], "b");
    }

    #[test]
    fn headless_hostname_label_and_publish_not_ready() {
        let mut s = service(json!({"selector": {"app": "x"}, "clusterIP": "None", "ipFamilies": ["IPv4"],
            "publishNotReadyAddresses": true, "ports": [{"port": 5432}]}));
        s.metadata.name = Some("db".into());
        let a = pod("a", json!({"app": "x"}), "10.0.0.1", false, json!({"hostname": "a", "subdomain": "db"}));
        let p = plan(&desired(&s, &[&a]), &[]);
        let slice = &p.create[0];
        assert_eq!(slice.metadata.labels.as_ref().unwrap()[HEADLESS_LABEL], "");
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("db-"));
        let e = &slice.endpoints[0];
        assert_eq!(e.hostname.as_deref(), Some("a"));
        assert_eq!(e.conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(e.conditions.as_ref().unwrap().serving, Some(false));
    }

    #[test]
    fn dual_stack_services_get_a_slice_per_family() {
        let s = service(json!({"selector": {"app": "x"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80}]}));
        let mut a = pod("a", json!({"app": "x"}), "10.0.0.1", true, json!({}));
        a.status.as_mut().unwrap().pod_ips =
            Some(vec![k8s_openapi::api::core::v1::PodIP { ip: "10.0.0.1".into() }, k8s_openapi::api::core::v1::PodIP { ip: "fd00::1".into() }]);
        let p = plan(&desired(&s, &[&a]), &[]);
        let mut got: Vec<(String, Vec<&str>)> = p.create.iter().map(|s| (s.address_type.clone(), addresses(s))).collect();
        got.sort();
        assert_eq!(got, [("IPv4".to_string(), vec!["10.0.0.1"]), ("IPv6".to_string(), vec!["fd00::1"])]);
    }

    #[test]
    fn mirrored_endpoints() {
        let s = service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let ep: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "svc", "namespace": "ns", "labels": {"a": "b"},
                         "annotations": {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "subsets": [{"addresses": [{"ip": "10.1.0.2"}, {"ip": "10.1.0.1", "hostname": "h"}],
                         "notReadyAddresses": [{"ip": "10.1.0.3"}],
                         "ports": [{"name": "http", "port": 8080}]}],
        }))
        .unwrap();
        assert!(should_mirror(&ep));
        let d = mirrored(&s, &ep);
        let (mut state, mut n) = (Vec::new(), 0);
        converge(&d, &mut state, &mut n);
        assert_eq!(state.len(), 1);
        let slice = &state[0];
        assert_eq!(addresses(slice), ["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
        assert_eq!(slice.endpoints[0].hostname.as_deref(), Some("h"));
        assert_eq!(slice.endpoints[2].conditions.as_ref().unwrap().ready, Some(false));
        let labels = slice.metadata.labels.clone().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MIRRORING_CONTROLLER_NAME);
        assert_eq!(labels["a"], "b");
        assert_eq!(slice.metadata.annotations.clone().unwrap(), BTreeMap::from([("note".to_string(), "x".to_string())]));
        let port = &slice.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port, port.protocol.as_deref()), (Some("http"), Some(8080), Some("TCP")));
        // Emptied: no slices (mirroring keeps no placeholder).
        let mut emptied = ep.clone();
        emptied.subsets = None;
        let p = converge(&mirrored(&s, &emptied), &mut state, &mut n);
        assert_eq!(p.delete.len(), 1);
        assert!(state.is_empty());

        let mut skipped = ep;
        skipped.metadata.labels = Some([(SKIP_MIRROR_LABEL.to_string(), "true".to_string())].into());
        assert!(!should_mirror(&skipped));
    }
}
