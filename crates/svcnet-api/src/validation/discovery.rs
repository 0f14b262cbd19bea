//! EndpointSlice validation, as upstream's pkg/apis/discovery/validation.

use super::names;
use super::util::{Path, arr_at, dns_label, immutable, invalid_each, str_at, too_many, validate_endpoint_ip, validate_protocol};
use crate::FieldError;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const MAX_ADDRESSES: usize = 100;
const MAX_ENDPOINTS: usize = 1000;
const MAX_PORTS: usize = 20000;

/// Field errors (beyond object metadata) of an EndpointSlice; `addressType` is immutable.
pub(super) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    if kind != "EndpointSlice" {
        return Vec::new();
    }
    let at_path = Path::root("addressType");
    let address_type = str_at(obj, "addressType").unwrap_or("");
    let mut errs = Vec::new();
    if address_type.is_empty() {
        errs.push(FieldError::required(&at_path, ""));
    } else if !ADDRESS_TYPES.contains(&address_type) {
        errs.push(FieldError::not_supported(&at_path, address_type, ADDRESS_TYPES));
    }
    errs.extend(validate_endpoints(arr_at(obj, "endpoints"), address_type, &Path::root("endpoints")));
    errs.extend(validate_ports(arr_at(obj, "ports"), &Path::root("ports")));
    if let Some(old) = old {
        errs.extend(immutable(&at_path, obj.get("addressType"), old.get("addressType")));
    }
    errs
}

fn validate_endpoints(endpoints: &[Value], address_type: &str, path: &Path) -> Vec<FieldError> {
    if endpoints.len() > MAX_ENDPOINTS {
        return vec![too_many(path, endpoints.len(), MAX_ENDPOINTS)];
    }
    let mut errs = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let p = path.index(i);
        let ap = p.child("addresses");
        let addresses = arr_at(ep, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(&ap, "must contain at least 1 address"));
        } else if addresses.len() > MAX_ADDRESSES {
            errs.push(too_many(&ap, addresses.len(), MAX_ADDRESSES));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let aip = ap.index(j);
            match address_type {
                "IPv4" | "IPv6" => {
                    let v4 = names::parse_ip(a).map(|ip| match ip {
                        IpAddr::V4(_) => true,
                        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
                    });
                    if address_type == "IPv4" && v4 != Some(true) {
                        errs.push(FieldError::invalid(&aip, a, "must be a valid IPv4 address"));
                    }
                    if address_type == "IPv6" && v4 != Some(false) {
                        errs.push(FieldError::invalid(&aip, a, "must be a valid IPv6 address"));
                    }
                    errs.extend(validate_endpoint_ip(a, &aip));
                }
                "FQDN" => errs.extend(fully_qualified_domain_name(a, &aip)),
                _ => {}
            }
        }
        if let Some(node) = ep.get("nodeName").and_then(Value::as_str) {
            errs.extend(invalid_each(&p.child("nodeName"), node, names::is_dns1123_subdomain(node)));
        }
        if let Some(host) = ep.get("hostname").and_then(Value::as_str) {
            errs.extend(dns_label(&p.child("hostname"), host));
        }
        if let Some(zones) = ep.get("hints").and_then(|h| h.get("forZones")).and_then(Value::as_array) {
            let zp = p.child("hints").child("forZones");
            if zones.len() > 8 {
                errs.push(too_many(&zp, zones.len(), 8));
                continue;
            }
            let mut seen = BTreeSet::new();
            for (k, z) in zones.iter().enumerate() {
                let name = str_at(z, "name").unwrap_or("");
                let np = zp.index(k).child("name");
                if !seen.insert(name) {
                    errs.push(FieldError::duplicate(&np, name));
                }
                errs.extend(invalid_each(&np, name, names::is_valid_label_value(name)));
            }
        }
    }
    errs
}

/// apimachinery's `IsFullyQualifiedDomainName`.
fn fully_qualified_domain_name(name: &str, path: &Path) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let msgs = names::is_dns1123_subdomain(name);
    if !msgs.is_empty() {
        return vec![FieldError::invalid(path, name, msgs.join(","))];
    }
    if name.split('.').count() < 2 {
        return vec![FieldError::invalid(path, name, "should be a domain with at least two segments separated by dots")];
    }
    for label in name.split('.') {
        let msgs = names::is_dns1123_label(label);
        if !msgs.is_empty() {
            return vec![FieldError::invalid(path, label, msgs.join(","))];
        }
    }
    Vec::new()
}

fn validate_ports(ports: &[Value], path: &Path) -> Vec<FieldError> {
    if ports.len() > MAX_PORTS {
        return vec![too_many(path, ports.len(), MAX_PORTS)];
    }
    let mut errs = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = str_at(port, "name").unwrap_or("");
        if !name.is_empty() {
            errs.extend(dns_label(&p.child("name"), name));
        }
        if !seen.insert(name) {
            errs.push(FieldError::duplicate(p.child("name"), name));
        }
        errs.extend(validate_protocol(port.get("protocol"), &p.child("protocol")));
        if let Some(app) = port.get("appProtocol").and_then(Value::as_str) {
            errs.extend(invalid_each(&p.child("appProtocol"), app, names::is_qualified_name(app)));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(address_type: &str, endpoints: Value, ports: Value) -> Value {
        json!({"kind": "EndpointSlice", "metadata": {"name": "s", "namespace": "default"},
               "addressType": address_type, "endpoints": endpoints, "ports": ports})
    }

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{e}")).collect()
    }

    #[test]
    fn valid_slice() {
        let s = slice(
            "IPv4",
            json!([{"addresses": ["10.1.2.3"], "nodeName": "node-1", "hostname": "web-0", "conditions": {"ready": true}}]),
            json!([{"name": "http", "protocol": "TCP", "port": 80}, {"name": "", "protocol": "UDP", "port": 53}]),
        );
        assert!(validate("EndpointSlice", &s, None).is_empty());
        let s = slice("FQDN", json!([{"addresses": ["example.com"]}]), json!([]));
        assert!(validate("EndpointSlice", &s, None).is_empty());
    }

    #[test]
    fn address_type_and_addresses() {
        let s = json!({"endpoints": []});
        assert_eq!(msgs(&validate("EndpointSlice", &s, None)), ["addressType: Required value"]);
        let s = slice("IP", json!([]), json!([]));
        assert_eq!(msgs(&validate("EndpointSlice", &s, None)), ["addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]);
        let s = slice("IPv4", json!([{"addresses": []}, {"addresses": ["fd00::1", "127.0.0.1"]}, {"addresses": ["10.0.0.1"], "hostname": "A"}]), json!([]));
        let errs = msgs(&validate("EndpointSlice", &s, None));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert_eq!(errs[0], "endpoints[0].addresses: Required value: must contain at least 1 address");
        assert_eq!(errs[1], "endpoints[1].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address");
        assert_eq!(errs[2], "endpoints[1].addresses[1]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)");
        assert!(errs[3].starts_with("endpoints[2].hostname: Invalid value: \"A\": a lowercase RFC 1123 label"));

        let many: Vec<Value> = (0..101).map(|i| json!(format!("10.0.0.{}", i % 250 + 1))).collect();
        let s = slice("IPv4", json!([{"addresses": many}]), json!([]));
        assert_eq!(msgs(&validate("EndpointSlice", &s, None)), ["endpoints[0].addresses: Too many: 101: must have at most 100 items"]);

        let s = slice("FQDN", json!([{"addresses": ["localhost"]}]), json!([]));
        assert_eq!(
            msgs(&validate("EndpointSlice", &s, None)),
            ["endpoints[0].addresses[0]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots"]
        );
    }

    #[test]
    fn ports() {
        let s = slice("IPv4", json!([]), json!([{"name": "", "protocol": "TCP"}, {"name": "", "protocol": "ICMP"}, {"name": "Http"}]));
        let errs = msgs(&validate("EndpointSlice", &s, None));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0], "ports[1].name: Duplicate value: \"\"");
        assert_eq!(errs[1], "ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"");
        assert!(errs[2].starts_with("ports[2].name: Invalid value: \"Http\": a lowercase RFC 1123 label"));
    }

    #[test]
    fn address_type_is_immutable() {
        let old = slice("IPv4", json!([]), json!([]));
        let new = slice("IPv6", json!([]), json!([]));
        assert_eq!(msgs(&validate("EndpointSlice", &new, Some(&old))), ["addressType: Invalid value: \"IPv6\": field is immutable"]);
    }
}
