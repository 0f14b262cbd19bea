//! Service validation (upstream's `ValidateService` / `ValidateServiceUpdate`).

use std::collections::BTreeSet;

use super::names;
use super::util::{Path, arr_at, invalid_each, str_at, validate_labels};
use crate::FieldError;
use serde_json::{Value, json};

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const AFFINITIES: &[&str] = &["ClientIP", "None"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
const IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const MAX_CLIENT_IP_TIMEOUT: i64 = 86400;

pub(super) fn validate(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let path = Path::root("spec");
    let mut errs = Vec::new();

    let ty = str_at(&spec, "type").unwrap_or("ClusterIP");
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(path.child("type"), ty, TYPES));
    }
    let cluster_ip = str_at(&spec, "clusterIP").unwrap_or("");
    let headless = cluster_ip == "None";

    if ty == "ExternalName" {
        match str_at(&spec, "externalName").unwrap_or("") {
            "" => errs.push(FieldError::required(path.child("externalName"), "")),
            name => {
                // A fully qualified name may end in a dot.
                let bare = name.strip_suffix('.').unwrap_or(name);
                errs.extend(invalid_each(&path.child("externalName"), name, names::is_dns1123_subdomain(bare)));
            }
        }
        if !cluster_ip.is_empty() {
            errs.push(FieldError::forbidden(path.child("clusterIP"), "may not be set for ExternalName services"));
        }
    }

    errs.extend(validate_cluster_ip(&spec, &path));

    let ports = arr_at(&spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required(path.child("ports"), ""));
    }
    let require_name = ports.len() > 1;
    let mut names_seen = BTreeSet::new();
    let mut port_protocols = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.child("ports").index(i);
        errs.extend(validate_port(port, require_name, &mut names_seen, &p));
        let key = (port.get("port").and_then(Value::as_i64).unwrap_or(0), str_at(port, "protocol").unwrap_or("").to_string());
        if !port_protocols.insert(key.clone()) {
            errs.push(FieldError::duplicate(&p, json!({"port": key.0, "protocol": key.1})));
        }
        if ty == "ClusterIP" && port.get("nodePort").and_then(Value::as_i64).is_some_and(|n| n != 0) {
            errs.push(FieldError::forbidden(p.child("nodePort"), "may not be used when `type` is 'ClusterIP'"));
        }
        if ty == "ExternalName" && port.get("nodePort").and_then(Value::as_i64).is_some_and(|n| n != 0) {
            errs.push(FieldError::forbidden(p.child("nodePort"), "may not be used when `type` is 'ExternalName'"));
        }
        if let Some(n) = port.get("nodePort").and_then(Value::as_i64)
            && n != 0
        {
            errs.extend(names::is_valid_port_num(n).into_iter().map(|m| FieldError::invalid(p.child("nodePort"), n, m)));
        }
    }

    if ty != "ExternalName" {
        errs.extend(validate_labels(spec.get("selector"), &path.child("selector")));
    }

    let affinity = str_at(&spec, "sessionAffinity").unwrap_or("None");
    if !AFFINITIES.contains(&affinity) {
        errs.push(FieldError::not_supported(path.child("sessionAffinity"), affinity, AFFINITIES));
    }
    if affinity == "ClientIP" {
        let t_path = path.child("sessionAffinityConfig").child("clientIP").child("timeoutSeconds");
        match spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds").and_then(Value::as_i64) {
            Some(t) if t <= 0 || t > MAX_CLIENT_IP_TIMEOUT => {
                errs.push(FieldError::invalid(t_path, t, format!("must be greater than 0 and less than {MAX_CLIENT_IP_TIMEOUT}")))
            }
            None => errs.push(FieldError::required(t_path, "")),
            _ => {}
        }
    } else if spec.get("sessionAffinityConfig").is_some_and(|c| !c.is_null()) {
        errs.push(FieldError::invalid(
            path.child("sessionAffinityConfig"),
            spec["sessionAffinityConfig"].clone(),
            format!("must not be set when session affinity is {affinity}"),
        ));
    }

    for (i, ip) in arr_at(&spec, "externalIPs").iter().enumerate() {
        let s = ip.as_str().unwrap_or("");
        let p = path.child("externalIPs").index(i);
        errs.extend(invalid_each(&p, s, names::is_valid_ip(s)));
    }
    for (i, cidr) in arr_at(&spec, "loadBalancerSourceRanges").iter().enumerate() {
        let s = cidr.as_str().unwrap_or("");
        let p = path.child("loadBalancerSourceRanges").index(i);
        errs.extend(invalid_each(&p, s, names::is_valid_cidr(s)));
    }
    if !arr_at(&spec, "loadBalancerSourceRanges").is_empty() && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(path.child("loadBalancerSourceRanges"), "may only be used when `type` is 'LoadBalancer'"));
    }
    if spec.get("loadBalancerIP").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(path.child("loadBalancerIP"), "may only be used when `type` is 'LoadBalancer'"));
    }
    if spec.get("allocateLoadBalancerNodePorts").is_some_and(|v| !v.is_null()) && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(path.child("allocateLoadBalancerNodePorts"), "may only be used when `type` is 'LoadBalancer'"));
    }

    match str_at(&spec, "externalTrafficPolicy") {
        Some(p) if ty != "NodePort" && ty != "LoadBalancer" => {
            errs.push(FieldError::invalid(path.child("externalTrafficPolicy"), p, "may only be set when `type` is 'NodePort' or 'LoadBalancer'"))
        }
        Some(p) if !TRAFFIC_POLICIES.contains(&p) => {
            errs.push(FieldError::not_supported(path.child("externalTrafficPolicy"), p, TRAFFIC_POLICIES));
        }
        _ => {}
    }
    if let Some(p) = str_at(&spec, "internalTrafficPolicy")
        && !TRAFFIC_POLICIES.contains(&p)
    {
        errs.push(FieldError::not_supported(path.child("internalTrafficPolicy"), p, TRAFFIC_POLICIES));
    }
    if let Some(p) = str_at(&spec, "ipFamilyPolicy")
        && !IP_FAMILY_POLICIES.contains(&p)
    {
        errs.push(FieldError::not_supported(path.child("ipFamilyPolicy"), p, IP_FAMILY_POLICIES));
    }
    for (i, f) in arr_at(&spec, "ipFamilies").iter().enumerate() {
        let s = f.as_str().unwrap_or("");
        if s != "IPv4" && s != "IPv6" {
            errs.push(FieldError::not_supported(path.child("ipFamilies").index(i), s, &["IPv4", "IPv6"]));
        }
    }
    if let Some(hc) = spec.get("healthCheckNodePort").and_then(Value::as_i64)
        && hc != 0
        && !(ty == "LoadBalancer" && str_at(&spec, "externalTrafficPolicy") == Some("Local"))
    {
        errs.push(FieldError::invalid(
            path.child("healthCheckNodePort"),
            hc,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }

    if let Some(old) = old {
        errs.extend(validate_update(&spec, &old["spec"], &path));
    }
    errs
}

fn validate_cluster_ip(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let cluster_ip = str_at(spec, "clusterIP").unwrap_or("");
    let ips: Vec<&str> = arr_at(spec, "clusterIPs").iter().filter_map(Value::as_str).collect();
    if !cluster_ip.is_empty() && !ips.is_empty() && ips[0] != cluster_ip {
        errs.push(FieldError::invalid(path.child("clusterIPs"), json!(ips), "first value must match `clusterIP`"));
    }
    let all: Vec<(Path, &str)> = if ips.is_empty() {
        if cluster_ip.is_empty() { vec![] } else { vec![(path.child("clusterIPs").index(0), cluster_ip)] }
    } else {
        ips.iter().enumerate().map(|(i, ip)| (path.child("clusterIPs").index(i), *ip)).collect()
    };
    for (i, (p, ip)) in all.iter().enumerate() {
        if *ip == "None" {
            if i > 0 || all.len() > 1 {
                errs.push(FieldError::invalid(p, *ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
            }
            continue;
        }
        if names::parse_ip(ip).is_none() {
            errs.push(FieldError::invalid(p, *ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
        }
    }
    errs
}

fn validate_port(port: &Value, require_name: bool, seen: &mut BTreeSet<String>, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_at(port, "name").unwrap_or("");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(p.child("name"), ""));
    } else if !name.is_empty() {
        errs.extend(invalid_each(&p.child("name"), name, names::is_dns1123_label(name)));
        if !seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(p.child("name"), name));
        }
    }
    match port.get("port") {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            errs.extend(names::is_valid_port_num(n).into_iter().map(|m| FieldError::invalid(p.child("port"), n, m)));
        }
        _ => errs.push(FieldError::invalid(p.child("port"), 0, names::inclusive_range_error(1, 65535))),
    }
    match str_at(port, "protocol").unwrap_or("") {
        "" => errs.push(FieldError::required(p.child("protocol"), "")),
        proto if !PROTOCOLS.contains(&proto) => errs.push(FieldError::not_supported(p.child("protocol"), proto, PROTOCOLS)),
        _ => {}
    }
    match port.get("targetPort") {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            errs.extend(names::is_valid_port_num(n).into_iter().map(|m| FieldError::invalid(p.child("targetPort"), n, m)));
        }
        Some(Value::String(s)) => {
            errs.extend(invalid_each(&p.child("targetPort"), s, names::is_valid_port_name(s)));
        }
        _ => {}
    }
    if let Some(ap) = str_at(port, "appProtocol") {
        errs.extend(invalid_each(&p.child("appProtocol"), ap, names::is_qualified_name(ap)));
    }
    errs
}

fn validate_update(new: &Value, old: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let old_type = str_at(old, "type").unwrap_or("ClusterIP");
    let new_type = str_at(new, "type").unwrap_or("ClusterIP");
    let old_ip = str_at(old, "clusterIP").unwrap_or("");
    let new_ip = str_at(new, "clusterIP").unwrap_or("");
    // An allocated address stays unless the Service becomes ExternalName (which releases it).
    if !old_ip.is_empty() && new_ip != old_ip && new_type != "ExternalName" && old_type != "ExternalName" {
        errs.push(FieldError::invalid(path.child("clusterIPs").index(0), json!(new_ip), "may not change once set"));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(obj: &Value, old: Option<&Value>) -> Vec<String> {
        validate(obj, old).iter().map(ToString::to_string).collect()
    }

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "backend", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn seed_service_is_valid() {
        let s = svc(json!({"type": "ClusterIP", "sessionAffinity": "None", "selector": {"app": "backend"},
            "ports": [{"port": 8000, "protocol": "TCP", "targetPort": 8000}]}));
        assert_eq!(msgs(&s, None), Vec::<String>::new());
    }

    #[test]
    fn ports_and_type_messages() {
        let s = svc(json!({"type": "Foo", "ports": [
            {"name": "a", "port": 0, "protocol": "TCP", "targetPort": 70000},
            {"port": 80, "protocol": "ICMP", "targetPort": "Bad_Name"},
            {"name": "a", "port": 80, "protocol": "ICMP", "targetPort": 80}]}));
        assert_eq!(
            msgs(&s, None),
            [
                "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Required value",
                "spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[1].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[2].name: Duplicate value: \"a\"",
                "spec.ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[2]: Duplicate value: {\"port\":80,\"protocol\":\"ICMP\"}",
            ]
        );
    }

    #[test]
    fn ports_required_unless_headless_or_external_name() {
        assert_eq!(msgs(&svc(json!({"type": "ClusterIP"})), None), ["spec.ports: Required value"]);
        assert!(msgs(&svc(json!({"type": "ClusterIP", "clusterIP": "None"})), None).is_empty());
        assert_eq!(msgs(&svc(json!({"type": "ExternalName"})), None), ["spec.externalName: Required value"]);
        assert!(msgs(&svc(json!({"type": "ExternalName", "externalName": "db.example.com."})), None).is_empty());
    }

    #[test]
    fn node_port_and_traffic_policy_rules() {
        let s = svc(json!({"type": "ClusterIP", "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}));
        assert_eq!(
            msgs(&s, None),
            [
                "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
                "spec.externalTrafficPolicy: Invalid value: \"Cluster\": may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ]
        );
        let s = svc(json!({"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}));
        assert!(msgs(&s, None).is_empty());
    }

    #[test]
    fn cluster_ip_is_checked_and_immutable() {
        let s = svc(json!({"clusterIP": "10.0.0", "ports": [{"port": 80, "protocol": "TCP"}]}));
        assert_eq!(msgs(&s, None), ["spec.clusterIPs[0]: Invalid value: \"10.0.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]);
        let old = svc(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]}));
        let new = svc(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80, "protocol": "TCP"}]}));
        assert_eq!(msgs(&new, Some(&old)), ["spec.clusterIPs[0]: Invalid value: \"10.96.0.11\": may not change once set"]);
    }

    #[test]
    fn selector_labels_are_checked() {
        let s = svc(json!({"selector": {"app": "-x"}, "ports": [{"port": 80, "protocol": "TCP"}]}));
        let m = msgs(&s, None);
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("spec.selector: Invalid value: \"-x\": a valid label must be"), "{m:?}");
    }
}
