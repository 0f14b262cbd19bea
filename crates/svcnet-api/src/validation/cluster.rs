//! Validation of the remaining core kinds (Endpoints, Node, Namespace, ConfigMap, ServiceAccount,
//! Event) and of coordination's Lease, as upstream's pkg/apis/core/validation and
//! pkg/apis/coordination/validation.

use super::names;
use super::pod::validate_taint_effect;
use super::util::{Path, arr_at, dns_label, go_quote, go_string_slice, invalid_each, str_at, validate_endpoint_ip, validate_protocol, with_go_value};
use crate::{FieldError, FieldErrorKind};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Upstream's `MaxSecretSize`, also the limit of a ConfigMap's data.
const MAX_CONFIG_MAP_SIZE: usize = 1024 * 1024;

/// Field errors (beyond object metadata) of `obj` of `kind`; `old` is the stored object on update.
/// Kinds without rules here have none.
pub(super) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match kind {
        "Endpoints" => endpoints(obj, old),
        "Node" => node(obj, old),
        "Namespace" => namespace(obj),
        "ConfigMap" => config_map(obj, old),
        "Event" => event(obj),
        "Lease" => lease(obj),
        // "ServiceAccount": upstream validates only its metadata.
        _ => Vec::new(),
    }
}

// ---- Endpoints ----

/// `ValidateEndpoints` / `ValidateEndpointsUpdate`.
fn endpoints(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    // On update, an address's node may not change (ip -> nodeName of the old object).
    let mut old_nodes: BTreeMap<&str, &str> = BTreeMap::new();
    for ss in old.map(|o| arr_at(o, "subsets")).unwrap_or_default() {
        for list in ["addresses", "notReadyAddresses"] {
            for a in arr_at(ss, list) {
                if let (Some(ip), Some(node)) = (str_at(a, "ip"), str_at(a, "nodeName")) {
                    old_nodes.insert(ip, node);
                }
            }
        }
    }
    let mut errs = Vec::new();
    let path = Path::root("subsets");
    for (i, ss) in arr_at(obj, "subsets").iter().enumerate() {
        let p = path.index(i);
        if arr_at(ss, "addresses").is_empty() && arr_at(ss, "notReadyAddresses").is_empty() {
            errs.push(FieldError::required(&p, "must specify `addresses` or `notReadyAddresses`"));
        }
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr_at(ss, list).iter().enumerate() {
                errs.extend(endpoint_address(a, &p.child(list).index(j), &old_nodes));
            }
        }
        let ports = arr_at(ss, "ports");
        for (j, port) in ports.iter().enumerate() {
            errs.extend(endpoint_port(port, ports.len() > 1, &p.child("ports").index(j)));
        }
    }
    errs
}

/// `validateEndpointAddress`: a valid IP, then not a special one.
fn endpoint_address(a: &Value, path: &Path, old_nodes: &BTreeMap<&str, &str>) -> Vec<FieldError> {
    let ip = str_at(a, "ip").unwrap_or("");
    let mut errs = invalid_each(&path.child("ip"), ip, names::is_valid_ip(ip));
    if let Some(host) = str_at(a, "hostname").filter(|h| !h.is_empty()) {
        errs.extend(dns_label(&path.child("hostname"), host));
    }
    let node = str_at(a, "nodeName");
    if let Some(node) = node {
        errs.extend(invalid_each(&path.child("nodeName"), node, names::is_dns1123_subdomain(node)));
    }
    if let (Some(existing), Some(node)) = (old_nodes.get(ip), node)
        && *existing != node
    {
        errs.push(FieldError::forbidden(path.child("nodeName"), format!("Cannot change NodeName for {ip} to {node}")));
    }
    if errs.is_empty() {
        errs.extend(validate_endpoint_ip(ip, &path.child("ip")));
    }
    errs
}

/// `validateEndpointPort`: names required (DNS labels) when there are several ports.
fn endpoint_port(port: &Value, require_name: bool, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_at(port, "name").unwrap_or("");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(dns_label(&path.child("name"), name));
    }
    let n = port.get("port").and_then(Value::as_i64).unwrap_or(0);
    errs.extend(names::is_valid_port_num(n).into_iter().map(|m| FieldError::invalid(path.child("port"), n, m)));
    errs.extend(validate_protocol(port.get("protocol"), &path.child("protocol")));
    errs
}

// ---- Node ----

/// The node's pod CIDRs: `spec.podCIDRs`, or the single `spec.podCIDR` of older clients.
fn pod_cidrs(obj: &Value) -> Vec<String> {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let list: Vec<String> = arr_at(spec, "podCIDRs").iter().map(|v| v.as_str().unwrap_or("").to_string()).collect();
    if !list.is_empty() {
        return list;
    }
    str_at(spec, "podCIDR").filter(|s| !s.is_empty()).map(|s| vec![s.to_string()]).unwrap_or_default()
}

/// `ValidateNode` / `ValidateNodeUpdate`: taints, pod CIDRs (set once), provider ID (set once).
fn node(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    // Upstream reports taints under `metadata`.
    let mut errs = node_taints(arr_at(spec, "taints"), &Path::root("metadata").child("taints"));

    let cidrs = pod_cidrs(obj);
    let cp = Path::root("spec").child("podCIDRs");
    let mut parsed = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        match names::parse_cidr(c) {
            Some(net) => parsed.push(net),
            None => errs.push(FieldError::invalid(cp.index(i), c.as_str(), names::INVALID_CIDR)),
        }
    }
    if cidrs.len() > 1 {
        if parsed.len() == cidrs.len() {
            let v4 = parsed.iter().filter(|n| n.0.is_ipv4()).count();
            let dual = v4 > 0 && v4 < parsed.len();
            if !dual || cidrs.len() > 2 {
                let list = Value::from(cidrs.clone());
                errs.push(with_go_value(
                    FieldErrorKind::Invalid,
                    &cp,
                    &go_string_slice("string", Some(&list)),
                    "may specify no more than one CIDR for each IP family",
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, c) in cidrs.iter().enumerate() {
            if !seen.insert(c.as_str()) {
                errs.push(FieldError::duplicate(cp.index(i), c.as_str()));
            }
        }
    }

    if let Some(old) = old {
        let old_cidrs = pod_cidrs(old);
        let msg = "node updates may not change podCIDR except from \"\" to valid";
        if !old_cidrs.is_empty() {
            if old_cidrs.len() != cidrs.len() {
                errs.push(FieldError::forbidden(&cp, msg));
            } else {
                for (o, n) in old_cidrs.iter().zip(&cidrs) {
                    if o != n {
                        errs.push(FieldError::forbidden(&cp, msg));
                    }
                }
            }
        }
        let old_provider = old.get("spec").and_then(|s| str_at(s, "providerID")).unwrap_or("");
        if !old_provider.is_empty() && old_provider != str_at(spec, "providerID").unwrap_or("") {
            errs.push(FieldError::forbidden(Path::root("spec").child("providerID"), "node updates may not change providerID except from \"\" to valid"));
        }
    }
    errs
}

/// `validateNodeTaints`.
fn node_taints(taints: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (i, t) in taints.iter().enumerate() {
        let p = path.index(i);
        let key = str_at(t, "key").unwrap_or("");
        let value = str_at(t, "value").unwrap_or("");
        let effect = str_at(t, "effect").unwrap_or("");
        errs.extend(invalid_each(&p.child("key"), key, names::is_qualified_name(key)));
        let msgs = names::is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(p.child("value"), value, msgs.join(";")));
        }
        if effect.is_empty() {
            errs.push(FieldError::required(p.child("effect"), ""));
        } else {
            errs.extend(validate_taint_effect(effect, &p.child("effect")));
        }
        if !seen.insert((effect, key)) {
            let time_added = if t.get("timeAdded").is_some_and(|v| !v.is_null()) { "(*v1.Time)(0xc000000000)" } else { "<nil>" };
            let rendered = format!("core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:{time_added}}}", go_quote(key), go_quote(value), go_quote(effect));
            errs.push(with_go_value(FieldErrorKind::Duplicate, &p, &rendered, "taints must be unique by key and effect pair"));
        }
    }
    errs
}

// ---- Namespace ----

/// `ValidateNamespace`: `spec.finalizers` are qualified names, standard or with a prefix.
fn namespace(obj: &Value) -> Vec<FieldError> {
    let path = Path::root("spec").child("finalizers");
    let mut errs = Vec::new();
    for f in obj.get("spec").map(|s| arr_at(s, "finalizers")).unwrap_or_default() {
        let f = f.as_str().unwrap_or("");
        errs.extend(invalid_each(&path, f, names::is_qualified_name(f)));
        if !f.contains('/') && !["kubernetes", "orphan", "foregroundDeletion"].contains(&f) {
            errs.push(FieldError::invalid(&path, f, "name is neither a standard finalizer name nor is it fully qualified"));
        }
    }
    errs
}

// ---- ConfigMap ----

/// The number of bytes a base64 string decodes to.
fn base64_len(s: &str) -> usize {
    let s = s.trim_end_matches('=');
    s.len() * 3 / 4
}

/// `ValidateConfigMap` / `ValidateConfigMapUpdate`.
fn config_map(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old.filter(|o| o.get("immutable").and_then(Value::as_bool) == Some(true)) {
        let msg = "field is immutable when `immutable` is set";
        if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
            errs.push(FieldError::forbidden("immutable", msg));
        }
        for key in ["data", "binaryData"] {
            if super::util::normalized(&obj[key]) != super::util::normalized(&old[key]) {
                errs.push(FieldError::forbidden(key, msg));
            }
        }
    }
    let empty = serde_json::Map::new();
    let data = obj.get("data").and_then(Value::as_object).unwrap_or(&empty);
    let binary = obj.get("binaryData").and_then(Value::as_object).unwrap_or(&empty);
    let mut total = 0;
    for (k, v) in data {
        let p = Path::root("data").key(k);
        errs.extend(invalid_each(&p, k, names::is_config_map_key(k)));
        if binary.contains_key(k) {
            errs.push(FieldError::invalid(&p, k.as_str(), "duplicate of key present in binaryData"));
        }
        total += v.as_str().map_or(0, str::len);
    }
    for (k, v) in binary {
        errs.extend(invalid_each(&Path::root("binaryData").key(k), k, names::is_config_map_key(k)));
        total += v.as_str().map_or(0, base64_len);
    }
    if total > MAX_CONFIG_MAP_SIZE {
        errs.push(FieldError::too_long("", MAX_CONFIG_MAP_SIZE));
    }
    errs
}

// ---- Event ----

/// `legacyValidateEvent` for core/v1 Events.
fn event(obj: &Value) -> Vec<FieldError> {
    let ns = obj.get("metadata").and_then(|m| str_at(m, "namespace")).unwrap_or("");
    let involved_ns = obj.get("involvedObject").and_then(|o| str_at(o, "namespace")).unwrap_or("");
    let ns_path = Path::root("involvedObject").child("namespace");
    let mismatch = || FieldError::invalid(&ns_path, involved_ns, "does not match event.namespace");
    let mut errs = Vec::new();
    let event_time_set = obj.get("eventTime").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
    if !event_time_set {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(mismatch());
            }
        } else if ns != involved_ns {
            errs.push(mismatch());
        }
        return errs;
    }
    if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
        errs.push(mismatch());
    }
    let controller = str_at(obj, "reportingComponent").unwrap_or("");
    if controller.is_empty() {
        errs.push(FieldError::required("reportingComponent", ""));
    }
    errs.extend(invalid_each(&Path::root("reportingComponent"), controller, names::is_qualified_name(controller)));
    for (field, limit, required) in [("reportingInstance", 128, true), ("action", 128, true), ("reason", 128, true), ("message", 1024, false)] {
        let v = str_at(obj, field).unwrap_or("");
        if required && v.is_empty() {
            errs.push(FieldError::required(field, ""));
        }
        if v.len() > limit {
            errs.push(FieldError::invalid(field, "", format!("can have at most {limit} characters")));
        }
    }
    errs
}

// ---- Lease ----

/// `ValidateLeaseSpec`.
fn lease(obj: &Value) -> Vec<FieldError> {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let path = Path::root("spec");
    let mut errs = Vec::new();
    if let Some(d) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        errs.push(FieldError::invalid(path.child("leaseDurationSeconds"), d, "must be greater than 0"));
    }
    if let Some(t) = spec.get("leaseTransitions").and_then(Value::as_i64)
        && t < 0
    {
        errs.push(FieldError::invalid(path.child("leaseTransitions"), t, "must be greater than or equal to 0"));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{e}")).collect()
    }

    #[test]
    fn unknown_kinds_and_service_accounts_have_no_rules() {
        assert!(validate("Widget", &json!({"spec": {"x": 1}}), None).is_empty());
        assert!(validate("ServiceAccount", &json!({"metadata": {"name": "sa"}}), None).is_empty());
    }

    #[test]
    fn endpoints_rules() {
        let ep = json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.1", "nodeName": "n1"}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        ]});
        assert!(validate("Endpoints", &ep, None).is_empty());

        let ep = json!({"subsets": [
            {"addresses": [{"ip": "127.0.0.1"}, {"ip": "169.254.1.1"}, {"ip": "10.0.0"}],
             "ports": [{"port": 0, "protocol": "TCP"}, {"name": "b", "port": 80, "protocol": "ICMP"}]},
            {"ports": [{"port": 80}]},
        ]});
        assert_eq!(
            msgs(&validate("Endpoints", &ep, None)),
            [
                "subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
                "subsets[0].addresses[1].ip: Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
                "subsets[0].addresses[2].ip: Invalid value: \"10.0.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                "subsets[0].ports[0].name: Required value",
                "subsets[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "subsets[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "subsets[1]: Required value: must specify `addresses` or `notReadyAddresses`",
            ]
        );

        let old = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": "n1"}]}]});
        let new = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1", "nodeName": "n2"}]}]});
        assert_eq!(msgs(&validate("Endpoints", &new, Some(&old))), ["subsets[0].addresses[0].nodeName: Forbidden: Cannot change NodeName for 10.0.0.1 to n2"]);
    }

    #[test]
    fn node_rules() {
        let n = json!({"spec": {"podCIDRs": ["10.244.0.0/24", "fd00::/64"], "taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert!(validate("Node", &n, None).is_empty());
        let n = json!({"spec": {"podCIDRs": ["10.244.0.0/24", "10.245.0.0/24", "x"],
            "taints": [{"key": "k", "effect": "Never"}, {"key": "k", "effect": "NoExecute"}, {"key": "k", "effect": "NoExecute"}, {"key": "j"}]}});
        assert_eq!(
            msgs(&validate("Node", &n, None)),
            [
                "metadata.taints[0].effect: Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
                "metadata.taints[2]: Duplicate value: core.Taint{Key:\"k\", Value:\"\", Effect:\"NoExecute\", TimeAdded:<nil>}: taints must be unique by key and effect pair",
                "metadata.taints[3].effect: Required value",
                "spec.podCIDRs[2]: Invalid value: \"x\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ]
        );
        let n = json!({"spec": {"podCIDRs": ["10.244.0.0/24", "10.245.0.0/24"]}});
        assert_eq!(
            msgs(&validate("Node", &n, None)),
            ["spec.podCIDRs: Invalid value: []string{\"10.244.0.0/24\", \"10.245.0.0/24\"}: may specify no more than one CIDR for each IP family"]
        );

        let old = json!({"spec": {"podCIDR": "10.244.0.0/24", "providerID": "p1"}});
        let new = json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "providerID": "p2"}});
        assert_eq!(
            msgs(&validate("Node", &new, Some(&old))),
            [
                "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid",
                "spec.providerID: Forbidden: node updates may not change providerID except from \"\" to valid",
            ]
        );
        let unset = json!({"spec": {}});
        assert!(validate("Node", &new, Some(&unset)).is_empty());
    }

    #[test]
    fn namespace_finalizers() {
        let ns = json!({"spec": {"finalizers": ["kubernetes", "example.com/cleanup", "custom", "bad name"]}});
        let errs = msgs(&validate("Namespace", &ns, None));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0], "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified");
        assert!(errs[1].starts_with("spec.finalizers: Invalid value: \"bad name\": name part must consist"));
    }

    #[test]
    fn config_map_rules() {
        let cm = json!({"data": {"a.conf": "x", "KEY_1": "y"}, "binaryData": {"b.bin": "aGVsbG8="}});
        assert!(validate("ConfigMap", &cm, None).is_empty());
        let cm = json!({"data": {"a b": "x", "dup": "y"}, "binaryData": {"dup": "eQ==", "..x": ""}});
        assert_eq!(
            msgs(&validate("ConfigMap", &cm, None)),
            [
                "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                "data[dup]: Invalid value: \"dup\": duplicate of key present in binaryData",
                "binaryData[..x]: Invalid value: \"..x\": must not start with '..'",
            ]
        );
        let cm = json!({"data": {"big": "x".repeat(MAX_CONFIG_MAP_SIZE + 1)}});
        assert_eq!(msgs(&validate("ConfigMap", &cm, None)), [": Too long: may not be more than 1048576 bytes"]);

        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"data": {"a": "2"}});
        assert_eq!(
            msgs(&validate("ConfigMap", &new, Some(&old))),
            ["immutable: Forbidden: field is immutable when `immutable` is set", "data: Forbidden: field is immutable when `immutable` is set",]
        );
    }

    #[test]
    fn event_namespace_must_match() {
        let ev = json!({"metadata": {"name": "e", "namespace": "default"}, "involvedObject": {"kind": "Pod", "namespace": "default"}});
        assert!(validate("Event", &ev, None).is_empty());
        let ev = json!({"metadata": {"name": "e", "namespace": "team-a"}, "involvedObject": {"kind": "Pod", "namespace": "team-b"}});
        assert_eq!(msgs(&validate("Event", &ev, None)), ["involvedObject.namespace: Invalid value: \"team-b\": does not match event.namespace"]);
        let ev = json!({"metadata": {"name": "e", "namespace": "team-a"}, "eventTime": "2024-01-01T00:00:00.000000Z",
            "involvedObject": {"kind": "Node"}, "reportingComponent": "kubelet", "reportingInstance": "n1", "action": "Start"});
        assert_eq!(
            msgs(&validate("Event", &ev, None)),
            ["involvedObject.namespace: Invalid value: \"\": does not match event.namespace", "reason: Required value"]
        );
    }

    #[test]
    fn lease_rules() {
        let l = json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}});
        assert!(validate("Lease", &l, None).is_empty());
        let l = json!({"spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}});
        assert_eq!(
            msgs(&validate("Lease", &l, None)),
            [
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }
}
