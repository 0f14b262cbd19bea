//! Validation of svcnet's own kinds (`svcnet.io`).

use super::names;
use super::util::{Path, arr_at, invalid_each, validate_label_selector};
use crate::FieldError;
use crate::svcnet_io::AddressRange;
use serde_json::Value;

pub(super) fn validate(kind: &str, obj: &Value) -> Vec<FieldError> {
    match kind {
        "IPAddressPool" => ip_address_pool(obj),
        _ => Vec::new(),
    }
}

fn ip_address_pool(obj: &Value) -> Vec<FieldError> {
    let spec = &obj["spec"];
    let path = Path::root("spec");
    let mut errs = Vec::new();
    let addresses = arr_at(spec, "addresses");
    if addresses.is_empty() {
        errs.push(FieldError::required(path.child("addresses"), "a pool needs at least one CIDR or range"));
    }
    let mut parsed: Vec<(usize, AddressRange)> = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        let p = path.child("addresses").index(i);
        let s = a.as_str().unwrap_or("");
        match AddressRange::parse(s) {
            Err(msg) => errs.push(FieldError::invalid(&p, s, msg)),
            Ok(r) => {
                if let Some((j, _)) = parsed.iter().find(|(_, o)| o.contains(r.first) || o.contains(r.last) || r.contains(o.first)) {
                    errs.push(FieldError::invalid(&p, s, format!("overlaps with spec.addresses[{j}]")));
                }
                parsed.push((i, r));
            }
        }
    }
    for (i, sel) in arr_at(spec, "serviceSelectors").iter().enumerate() {
        errs.extend(validate_label_selector(sel, &path.child("serviceSelectors").index(i)));
    }
    for (i, ns) in arr_at(spec, "namespaces").iter().enumerate() {
        let s = ns.as_str().unwrap_or("");
        errs.extend(invalid_each(&path.child("namespaces").index(i), s, names::is_dns1123_label(s)));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pools() {
        let ok = json!({"spec": {"addresses": ["172.30.255.200-172.30.255.250", "10.0.0.0/28"]}});
        assert!(validate("IPAddressPool", &ok).is_empty());
        let bad = json!({"spec": {"addresses": ["10.0.0.0/28", "10.0.0.5-10.0.0.9", "x"], "namespaces": ["Bad"]}});
        let msgs: Vec<String> = validate("IPAddressPool", &bad).iter().map(ToString::to_string).collect();
        assert_eq!(msgs[0], "spec.addresses[1]: Invalid value: \"10.0.0.5-10.0.0.9\": overlaps with spec.addresses[0]");
        assert_eq!(msgs[1], "spec.addresses[2]: Invalid value: \"x\": invalid address range \"x\": expected a CIDR or FIRST-LAST");
        assert!(msgs[2].starts_with("spec.namespaces[0]: Invalid value: \"Bad\""));
        assert_eq!(validate("IPAddressPool", &json!({"spec": {}})).len(), 1);
    }
}
