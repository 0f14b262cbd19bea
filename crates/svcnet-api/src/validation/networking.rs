//! NetworkPolicy validation, as upstream's `ValidateNetworkPolicySpec` (pkg/apis/networking/validation).

use super::names;
use super::util::{Path, arr_at, go_string_slice, str_at, validate_label_selector, with_go_value};
use crate::{FieldError, FieldErrorKind};
use serde_json::Value;

/// Field errors (beyond object metadata) of a NetworkPolicy. The spec may change freely on update.
pub(super) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let _ = old;
    if kind != "NetworkPolicy" {
        return Vec::new();
    }
    let null = Value::Null;
    network_policy_spec(obj.get("spec").unwrap_or(&null), &Path::root("spec"))
}

fn network_policy_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let null = Value::Null;
    let mut errs = validate_label_selector(spec.get("podSelector").unwrap_or(&null), &path.child("podSelector"));
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in arr_at(spec, dir).iter().enumerate() {
            let rp = path.child(dir).index(i);
            for (j, port) in arr_at(rule, "ports").iter().enumerate() {
                errs.extend(network_policy_port(port, &rp.child("ports").index(j)));
            }
            for (j, peer) in arr_at(rule, peers).iter().enumerate() {
                errs.extend(network_policy_peer(peer, &rp.child(peers).index(j)));
            }
        }
    }
    let types = arr_at(spec, "policyTypes");
    let tp = path.child("policyTypes");
    if types.len() > 2 {
        let rendered = go_string_slice("networking.PolicyType", spec.get("policyTypes"));
        errs.push(with_go_value(FieldErrorKind::Invalid, &tp, &rendered, "may not specify more than two policyTypes"));
        return errs;
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if t != "Ingress" && t != "Egress" {
            errs.push(FieldError::not_supported(tp.index(i), t, &["Ingress", "Egress"]));
        }
    }
    errs
}

/// `ValidateNetworkPolicyPort`.
fn network_policy_port(port: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(p) = port.get("protocol").and_then(Value::as_str)
        && !["TCP", "UDP", "SCTP"].contains(&p)
    {
        errs.push(FieldError::not_supported(path.child("protocol"), p, &["TCP", "UDP", "SCTP"]));
    }
    let end_port = port.get("endPort").and_then(Value::as_i64);
    match port.get("port").filter(|p| !p.is_null()) {
        Some(Value::String(name)) => {
            if let Some(end) = end_port {
                errs.push(FieldError::invalid(path.child("endPort"), end, "may not be specified when `port` is non-numeric"));
            }
            errs.extend(names::is_valid_port_name(name).into_iter().map(|m| FieldError::invalid(path.child("port"), name.as_str(), m)));
        }
        Some(p) => {
            let n = p.as_i64().unwrap_or(0);
            errs.extend(names::is_valid_port_num(n).into_iter().map(|m| FieldError::invalid(path.child("port"), n, m)));
            if let Some(end) = end_port {
                if end < n {
                    // Upstream reports the `port` value here.
                    errs.push(FieldError::invalid(path.child("endPort"), n, "must be greater than or equal to `port`"));
                }
                errs.extend(names::is_valid_port_num(end).into_iter().map(|m| FieldError::invalid(path.child("endPort"), end, m)));
            }
        }
        None => {
            if let Some(end) = end_port {
                errs.push(FieldError::invalid(path.child("endPort"), end, "may not be specified when `port` is not specified"));
            }
        }
    }
    errs
}

/// `ValidateNetworkPolicyPeer`.
fn network_policy_peer(peer: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut count = 0;
    for key in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = peer.get(key).filter(|s| !s.is_null()) {
            count += 1;
            errs.extend(validate_label_selector(sel, &path.child(key)));
        }
    }
    let ip_block = peer.get("ipBlock").filter(|b| !b.is_null());
    if let Some(block) = ip_block {
        count += 1;
        errs.extend(ip_block_errors(block, &path.child("ipBlock")));
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a peer"));
    } else if count > 1 && ip_block.is_some() {
        errs.push(FieldError::forbidden(path, "may not specify both ipBlock and another peer"));
    }
    errs
}

/// `ValidateIPBlock`: a valid CIDR, and each `except` a strict subset of it.
fn ip_block_errors(block: &Value, path: &Path) -> Vec<FieldError> {
    let cidr = str_at(block, "cidr").unwrap_or("");
    if cidr.is_empty() {
        return vec![FieldError::required(path.child("cidr"), "")];
    }
    let Some(net) = names::parse_cidr(cidr) else {
        return vec![FieldError::invalid(path.child("cidr"), cidr, names::INVALID_CIDR)];
    };
    let mut errs = Vec::new();
    for (i, except) in arr_at(block, "except").iter().enumerate() {
        let ep = path.child("except").index(i);
        let s = except.as_str().unwrap_or("");
        let Some(ex) = names::parse_cidr(s) else {
            errs.push(FieldError::invalid(&ep, s, names::INVALID_CIDR));
            continue;
        };
        if !names::cidr_contains(net, ex.0) || net.1 >= ex.1 {
            errs.push(FieldError::invalid(&ep, s, "must be a strict subset of `cidr`"));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: Value) -> Vec<String> {
        let obj = json!({"kind": "NetworkPolicy", "metadata": {"name": "np", "namespace": "default"}, "spec": spec});
        validate("NetworkPolicy", &obj, None).iter().map(|e| format!("{e}")).collect()
    }

    #[test]
    fn valid_policy() {
        let errs = check(json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {"matchLabels": {"team": "a"}}},
                                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"protocol": "TCP", "port": 5432}, {"port": "http"}, {"port": 8000, "endPort": 9000}]}],
            "egress": [{}]
        }));
        assert_eq!(errs, Vec::<String>::new());
    }

    #[test]
    fn peers() {
        let errs = check(json!({"podSelector": {}, "ingress": [{"from": [
            {},
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
            {"ipBlock": {"cidr": "10.0.0.0/33"}},
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16", "10.2.0.0/24", "x"]}},
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
        ]}]}));
        assert_eq!(
            errs,
            [
                "spec.ingress[0].from[0]: Required value: must specify a peer",
                "spec.ingress[0].from[1]: Forbidden: may not specify both ipBlock and another peer",
                "spec.ingress[0].from[2].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.ingress[0].from[3].ipBlock.except[0]: Invalid value: \"10.0.0.0/16\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[3].ipBlock.except[1]: Invalid value: \"10.2.0.0/24\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[3].ipBlock.except[2]: Invalid value: \"x\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.ingress[0].from[4].podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            ]
        );
    }

    #[test]
    fn ports_and_types() {
        let errs = check(json!({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"], "egress": [{"ports": [
            {"protocol": "ICMP", "port": 0},
            {"port": "web", "endPort": 90},
            {"port": 100, "endPort": 90},
            {"endPort": 90},
            {"port": "Bad_Name"},
        ]}]}));
        assert_eq!(
            errs,
            [
                "spec.egress[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
                "spec.egress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.egress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
                "spec.egress[0].ports[2].endPort: Invalid value: 100: must be greater than or equal to `port`",
                "spec.egress[0].ports[3].endPort: Invalid value: 90: may not be specified when `port` is not specified",
                "spec.egress[0].ports[4].port: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"",
            ]
        );
        let errs = check(json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}));
        assert_eq!(
            errs,
            ["spec.policyTypes: Invalid value: []networking.PolicyType{\"Ingress\", \"Egress\", \"Ingress\"}: may not specify more than two policyTypes"]
        );
    }
}
