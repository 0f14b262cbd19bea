//! The row cells of each kind, as kube-apiserver's printers compute them. The server always prints
//! with `Wide: true` (`pkg/printers/storage`), so every row carries the priority-1 cells too.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::format::{
    age, arr_at, bool_at, container_cells, format_label_selector, format_labels, int_at, join_host_port, label_selector_string, later, len_at, list_with_more,
    obj_at, since, str_at, time_at,
};

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn name(obj: &Value) -> Value {
    s(str_at(obj, "/metadata/name"))
}

/// `<none>` for an empty string.
fn or_none(v: &str) -> &str {
    if v.is_empty() { "<none>" } else { v }
}

/// `<unknown>` for an empty string.
fn or_unknown(v: &str) -> &str {
    if v.is_empty() { "<unknown>" } else { v }
}

/// A replica count whose API default is 1 (Deployment, ReplicaSet, StatefulSet `spec.replicas`).
fn desired_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// Whether a JSON pointer holds a non-null value (a non-nil Go pointer).
fn present(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).is_some_and(|x| !x.is_null())
}

pub(super) fn namespace(obj: &Value, now: Timestamp) -> Vec<Value> {
    // SetDefaults_NamespaceStatus: an empty phase decodes as Active.
    let phase = str_at(obj, "/status/phase");
    vec![name(obj), s(if phase.is_empty() { "Active" } else { phase }), s(&age(obj, now))]
}

fn condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions.iter().any(|c| str_at(c, "/type") == type_ && str_at(c, "/status") == "True")
}

/// `isPodInitializedConditionTrue`: the first `Initialized` condition decides.
fn initialized(conditions: &[Value]) -> bool {
    conditions.iter().find(|c| str_at(c, "/type") == "Initialized").is_some_and(|c| str_at(c, "/status") == "True")
}

/// `finishedAt` of a container status' last termination, when it has one.
fn last_termination(status: &Value) -> Option<Option<Timestamp>> {
    obj_at(status, "/lastState/terminated").map(|_| time_at(status, "/lastState/terminated/finishedAt"))
}

pub(super) fn pod(pod: &Value, now: Timestamp) -> Vec<Value> {
    let init_specs = arr_at(pod, "/spec/initContainers");
    let conditions = arr_at(pod, "/status/conditions");
    let phase = str_at(pod, "/status/phase");
    let status_reason = str_at(pod, "/status/reason");

    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let mut total = arr_at(pod, "/spec/containers").len();
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let mut reason = if status_reason.is_empty() { phase.to_string() } else { status_reason.to_string() };
    // A pod carrying {type: PodScheduled, reason: SchedulingGated} prints SchedulingGated.
    if conditions.iter().any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated") {
        reason = "SchedulingGated".to_string();
    }

    // Sidecars: init containers with restartPolicy Always count as containers.
    let restartable = |name: &str| init_specs.iter().rev().find(|c| str_at(c, "/name") == name).is_some_and(|c| str_at(c, "/restartPolicy") == "Always");
    total += init_specs.iter().filter(|c| str_at(c, "/restartPolicy") == "Always").count();

    let mut initializing = false;
    for (i, cs) in arr_at(pod, "/status/initContainerStatuses").iter().enumerate() {
        let count = int_at(cs, "/restartCount");
        restarts += count;
        if let Some(finished) = last_termination(cs)
            && later(last_restart, finished)
        {
            last_restart = finished;
        }
        let is_restartable = restartable(str_at(cs, "/name"));
        if is_restartable {
            restartable_init_restarts += count;
            if let Some(finished) = last_termination(cs)
                && later(last_restartable_init_restart, finished)
            {
                last_restartable_init_restart = finished;
            }
        }
        let terminated = obj_at(cs, "/state/terminated").map(|_| &cs["state"]["terminated"]);
        let waiting_reason = str_at(cs, "/state/waiting/reason");
        if let Some(t) = terminated
            && int_at(t, "/exitCode") == 0
        {
            continue;
        }
        if is_restartable && bool_at(cs, "/started") {
            if bool_at(cs, "/ready") {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            // Initialization failed.
            let r = str_at(t, "/reason");
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if int_at(t, "/signal") != 0 {
                format!("Init:Signal:{}", int_at(t, "/signal"))
            } else {
                format!("Init:ExitCode:{}", int_at(t, "/exitCode"))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || initialized(conditions) {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for cs in arr_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += int_at(cs, "/restartCount");
            if let Some(finished) = last_termination(cs)
                && later(last_restart, finished)
            {
                last_restart = finished;
            }
            let waiting_reason = str_at(cs, "/state/waiting/reason");
            let terminated = obj_at(cs, "/state/terminated").map(|_| &cs["state"]["terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let r = str_at(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if int_at(t, "/signal") != 0 {
                    format!("Signal:{}", int_at(t, "/signal"))
                } else {
                    format!("ExitCode:{}", int_at(t, "/exitCode"))
                };
            } else if bool_at(cs, "/ready") && present(cs, "/state/running") {
                has_running = true;
                ready += 1;
            }
        }
        // Back to Running if at least one container still reports running.
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = present(pod, "/metadata/deletionTimestamp");
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = if restarts != 0 && last_restart.is_some() { format!("{restarts} ({} ago)", since(last_restart, now)) } else { restarts.to_string() };

    // v1 → internal conversion: status.podIP wins over status.podIPs[0].
    let mut pod_ip = str_at(pod, "/status/podIP");
    if pod_ip.is_empty() {
        pod_ip = arr_at(pod, "/status/podIPs").first().map(|p| str_at(p, "/ip")).unwrap_or("");
    }
    let gates = arr_at(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = gates
            .iter()
            .filter(|g| {
                let t = str_at(g, "/conditionType");
                conditions.iter().find(|c| str_at(c, "/type") == t).is_some_and(|c| str_at(c, "/status") == "True")
            })
            .count();
        format!("{true_conditions}/{}", gates.len())
    };

    vec![
        name(pod),
        s(&format!("{ready}/{total}")),
        s(&reason),
        s(&restarts_cell),
        s(&age(pod, now)),
        s(or_none(pod_ip)),
        s(or_none(str_at(pod, "/spec/nodeName"))),
        s(or_none(str_at(pod, "/status/nominatedNodeName"))),
        s(&readiness_gates),
    ]
}

/// `loadBalancerStatusStringer` (wide, so never clipped): ingress IPs or hostnames, sorted and
/// de-duplicated.
fn load_balancer_ingress(svc: &Value) -> String {
    let set: BTreeSet<&str> = arr_at(svc, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, "/ip");
            let host = str_at(i, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn service_type(svc: &Value) -> &str {
    // SetDefaults_Service: an empty type decodes as ClusterIP.
    let t = str_at(svc, "/spec/type");
    if t.is_empty() { "ClusterIP" } else { t }
}

/// `getServiceExternalIP`.
fn service_external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = arr_at(svc, "/spec/externalIPs").iter().map(|v| v.as_str().unwrap_or("")).collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(svc);
            if !external_ips.is_empty() {
                let mut results: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    results.extend(lb.split(','));
                }
                results.extend(external_ips);
                return results.join(",");
            }
            if lb.is_empty() { "<pending>".to_string() } else { lb }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `makePortString`: `80/TCP` or `80:30001/TCP`, joined with commas.
fn service_ports(svc: &Value) -> String {
    arr_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = match str_at(p, "/protocol") {
                "" => "TCP", // SetDefaults_ServicePort
                other => other,
            };
            let port = int_at(p, "/port");
            let node_port = int_at(p, "/nodePort");
            if node_port > 0 { format!("{port}:{node_port}/{protocol}") } else { format!("{port}/{protocol}") }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn service(svc: &Value, now: Timestamp) -> Vec<Value> {
    // SetDefaults_Service fills clusterIPs from clusterIP.
    let cluster_ips = arr_at(svc, "/spec/clusterIPs");
    let internal_ip = match cluster_ips.first() {
        Some(ip) => ip.as_str().unwrap_or(""),
        None => or_none(str_at(svc, "/spec/clusterIP")),
    };
    let ports = service_ports(svc);
    vec![
        name(svc),
        s(service_type(svc)),
        s(internal_ip),
        s(&service_external_ip(svc)),
        s(or_none(&ports)),
        s(&age(svc, now)),
        s(&format_labels(obj_at(svc, "/spec/selector"))),
    ]
}

/// `formatEndpoints` with every port: at most 3 `ip:port` (or bare IPs for subsets without ports),
/// then ` + N more...`.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr_at(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr_at(ss, "/addresses");
        let ports = arr_at(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(addr, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(addr, "/ip"), int_at(port, "/port")));
            }
        }
    }
    let ret = list.join(",");
    if more { format!("{ret} + {} more...", count - MAX) } else { ret }
}

pub(super) fn endpoints(ep: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(ep), s(&format_endpoints(ep)), s(&age(ep, now))]
}

/// `formatDiscoveryPorts`: port numbers (or names, or `*`), at most 3.
fn format_discovery_ports(slice: &Value) -> String {
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for port in arr_at(slice, "/ports") {
        if list.len() < MAX {
            let num = match (port.get("port").and_then(Value::as_i64), port.get("name").and_then(Value::as_str)) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            };
            list.push(num);
        } else if list.len() == MAX {
            more = true;
        }
        count += 1;
    }
    list_with_more(&list, more, count, MAX)
}

/// `formatDiscoveryEndpoints`: addresses of all endpoints, at most 3.
fn format_discovery_endpoints(slice: &Value) -> String {
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for endpoint in arr_at(slice, "/endpoints") {
        for address in arr_at(endpoint, "/addresses") {
            if list.len() < MAX {
                list.push(address.as_str().unwrap_or("").to_string());
            } else if list.len() == MAX {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more(&list, more, count, MAX)
}

pub(super) fn endpoint_slice(slice: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(slice), s(str_at(slice, "/addressType")), s(&format_discovery_ports(slice)), s(&format_discovery_endpoints(slice)), s(&age(slice, now))]
}

/// `findNodeRoles`: `node-role.kubernetes.io/<role>` label suffixes and `kubernetes.io/role`
/// values, sorted and de-duplicated.
fn node_roles(node: &Value) -> String {
    const PREFIX: &str = "node-role.kubernetes.io/";
    let mut roles: BTreeSet<&str> = BTreeSet::new();
    if let Some(labels) = obj_at(node, "/metadata/labels") {
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if let Some(role) = k.strip_prefix(PREFIX) {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if k == "kubernetes.io/role" && !v.is_empty() {
                roles.insert(v);
            }
        }
    }
    or_none(&roles.into_iter().collect::<Vec<_>>().join(",")).to_string()
}

fn node_address(node: &Value, type_: &str) -> String {
    arr_at(node, "/status/addresses").iter().find(|a| str_at(a, "/type") == type_).map(|a| str_at(a, "/address")).unwrap_or("<none>").to_string()
}

pub(super) fn node(node: &Value, now: Timestamp) -> Vec<Value> {
    // Only the Ready condition is reported; a later duplicate wins, as in upstream's map.
    let mut status: Vec<String> = Vec::new();
    if let Some(ready) = arr_at(node, "/status/conditions").iter().rev().find(|c| str_at(c, "/type") == "Ready") {
        status.push(if str_at(ready, "/status") == "True" { "Ready" } else { "NotReady" }.to_string());
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if bool_at(node, "/spec/unschedulable") {
        status.push("SchedulingDisabled".to_string());
    }
    vec![
        name(node),
        s(&status.join(",")),
        s(&node_roles(node)),
        s(&age(node, now)),
        s(str_at(node, "/status/nodeInfo/kubeletVersion")),
        s(&node_address(node, "InternalIP")),
        s(&node_address(node, "ExternalIP")),
        s(or_unknown(str_at(node, "/status/nodeInfo/osImage"))),
        s(or_unknown(str_at(node, "/status/nodeInfo/kernelVersion"))),
        s(or_unknown(str_at(node, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

/// `formatEventSource`: component (or reportingComponent), then `, host` (or reportingInstance).
fn event_source(ev: &Value) -> String {
    let component = first_non_empty(str_at(ev, "/source/component"), str_at(ev, "/reportingComponent"));
    let instance = first_non_empty(str_at(ev, "/source/host"), str_at(ev, "/reportingInstance"));
    if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") }
}

pub(super) fn event(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first_timestamp = match time_at(ev, "/firstTimestamp") {
        Some(t) => since(Some(t), now),
        None => since(time_at(ev, "/eventTime"), now),
    };
    let mut last_timestamp = match time_at(ev, "/lastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first_timestamp.clone(),
    };
    let mut count = int_at(ev, "/count");
    if present(ev, "/series") {
        last_timestamp = since(time_at(ev, "/series/lastObservedTime"), now);
        count = int_at(ev, "/series/count");
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }
    let kind = str_at(ev, "/involvedObject/kind").to_lowercase();
    let object_name = str_at(ev, "/involvedObject/name");
    let target = if object_name.is_empty() { kind } else { format!("{kind}/{object_name}") };
    vec![
        s(&last_timestamp),
        s(str_at(ev, "/type")),
        s(str_at(ev, "/reason")),
        s(&target),
        s(str_at(ev, "/involvedObject/fieldPath")),
        s(&event_source(ev)),
        s(str_at(ev, "/message").trim()),
        s(&first_timestamp),
        Value::from(count),
        name(ev),
    ]
}

pub(super) fn config_map(cm: &Value, now: Timestamp) -> Vec<Value> {
    let data = len_at(cm, "/data") + len_at(cm, "/binaryData");
    vec![name(cm), Value::from(data), s(&age(cm, now))]
}

pub(super) fn ip_address_pool(pool: &Value, now: Timestamp) -> Vec<Value> {
    let addresses: Vec<&str> = pool["spec"]["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    vec![name(pool), s(&addresses.join(",")), Value::from(pool["spec"]["autoAssign"].as_bool().unwrap_or(true)), s(&age(pool, now))]
}

pub(super) fn service_account(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(sa), Value::from(len_at(sa, "/secrets")), s(&age(sa, now))]
}

fn template_containers(obj: &Value) -> (String, String) {
    container_cells(arr_at(obj, "/spec/template/spec/containers"))
}

pub(super) fn deployment(d: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = template_containers(d);
    // printDeployment prints the selector without the <none> substitution.
    let selector = label_selector_string(d.pointer("/spec/selector")).unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name(d),
        s(&format!("{}/{}", int_at(d, "/status/readyReplicas"), desired_replicas(d))),
        Value::from(int_at(d, "/status/updatedReplicas")),
        Value::from(int_at(d, "/status/availableReplicas")),
        s(&age(d, now)),
        s(&containers),
        s(&images),
        s(&selector),
    ]
}

pub(super) fn replica_set(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = template_containers(rs);
    vec![
        name(rs),
        Value::from(desired_replicas(rs)),
        Value::from(int_at(rs, "/status/replicas")),
        Value::from(int_at(rs, "/status/readyReplicas")),
        s(&age(rs, now)),
        s(&containers),
        s(&images),
        s(&format_label_selector(rs.pointer("/spec/selector"))),
    ]
}

pub(super) fn stateful_set(sts: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = template_containers(sts);
    vec![name(sts), s(&format!("{}/{}", int_at(sts, "/status/readyReplicas"), desired_replicas(sts))), s(&age(sts, now)), s(&containers), s(&images)]
}

pub(super) fn lease(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(lease), s(str_at(lease, "/spec/holderIdentity")), s(&age(lease, now))]
}

pub(super) fn network_policy(np: &Value, now: Timestamp) -> Vec<Value> {
    // The printer passes &spec.podSelector: never nil, so a missing selector is the empty one.
    let selector = np.pointer("/spec/podSelector").filter(|v| !v.is_null()).cloned().unwrap_or(Value::Object(Default::default()));
    vec![name(np), s(&format_label_selector(Some(&selector))), s(&age(np, now))]
}

/// The default table convertor (`rest.NewDefaultTableConvertor`): name and creation time in UTC
/// RFC 3339 (Go's zero time when unset).
pub(super) fn default(obj: &Value) -> Vec<Value> {
    let created = match time_at(obj, "/metadata/creationTimestamp") {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    };
    vec![name(obj), s(&created)]
}
