//! Small helpers shared by the per-kind validators: field paths and typed reads of wire-form JSON.

use crate::FieldError;
use serde_json::Value;

/// A field path as upstream renders it: `spec.ports[0].port`, `metadata.labels`.
#[derive(Debug, Clone)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root(name: &str) -> Path {
        Path(name.to_string())
    }
    /// `self.name`
    pub(crate) fn child(&self, name: &str) -> Path {
        if self.0.is_empty() { Path(name.to_string()) } else { Path(format!("{}.{name}", self.0)) }
    }
    /// `self[i]`
    pub(crate) fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }
    /// `self[key]` (map entries, as upstream's `Key`).
    pub(crate) fn key(&self, k: &str) -> Path {
        Path(format!("{}[{k}]", self.0))
    }
    #[allow(dead_code)]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Path> for String {
    fn from(p: &Path) -> String {
        p.0.clone()
    }
}

impl From<Path> for String {
    fn from(p: Path) -> String {
        p.0
    }
}

/// The string at `v[key]`, if it is a string.
pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The array at `v[key]`, or an empty slice.
pub(crate) fn arr_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// One `Invalid value` error per message of a name check.
pub(crate) fn invalid_each(path: &Path, value: &str, msgs: Vec<String>) -> Vec<FieldError> {
    msgs.into_iter().map(|m| FieldError::invalid(path, value, m)).collect()
}

/// `field is immutable` when `new` and `old` differ at `key` (absent equals null).
pub(crate) fn immutable(path: &Path, new: Option<&Value>, old: Option<&Value>) -> Option<FieldError> {
    let n = new.cloned().unwrap_or(Value::Null);
    let o = old.cloned().unwrap_or(Value::Null);
    (n != o).then(|| FieldError::invalid(path, n, "field is immutable"))
}

/// Validates a label map as `ValidateLabels`: qualified-name keys, label values.
pub(crate) fn validate_labels(labels: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(map) = labels.and_then(Value::as_object) {
        for (k, v) in map {
            errs.extend(invalid_each(path, k, super::names::is_qualified_name(k)));
            match v.as_str() {
                Some(s) => errs.extend(invalid_each(path, s, super::names::is_valid_label_value(s))),
                None => errs.push(FieldError::invalid(path, v.clone(), "must be a string")),
            }
        }
    }
    errs
}

/// Validates a `metav1.LabelSelector` as `ValidateLabelSelector`.
pub(crate) fn validate_label_selector(sel: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = validate_labels(sel.get("matchLabels"), &path.child("matchLabels"));
    for (i, req) in arr_at(sel, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let op = str_at(req, "operator").unwrap_or("");
        let values = arr_at(req, "values");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(p.child("values"), "must be specified when `operator` is 'In' or 'NotIn'"));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(p.child("values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"));
                }
            }
            _ => errs.push(FieldError::invalid(p.child("operator"), op, "not a valid selector operator")),
        }
        let key = str_at(req, "key").unwrap_or("");
        errs.extend(invalid_each(&p.child("key"), key, super::names::is_qualified_name(key)));
        for (j, v) in values.iter().enumerate() {
            let s = v.as_str().unwrap_or("");
            errs.extend(invalid_each(&p.child("values").index(j), s, super::names::is_valid_label_value(s)));
        }
    }
    errs
}

/// `must be greater than or equal to 0` for a negative integer at `v[key]`.
pub(crate) fn non_negative(v: &Value, key: &str, path: &Path) -> Option<FieldError> {
    let n = v.get(key)?.as_i64()?;
    (n < 0).then(|| FieldError::invalid(path.child(key), n, "must be greater than or equal to 0"))
}

// ---- Helpers for the per-kind validators (pod, apps, networking, discovery, cluster). ----

/// An error whose bad value is shown as Go's `%#v` of a non-string value (a map, a struct, an
/// `IntOrString`), already rendered: `Invalid value: map[string]string{"a":"b"}: detail`.
pub(crate) fn with_go_value(kind: crate::FieldErrorKind, path: &Path, rendered: &str, detail: &str) -> FieldError {
    let detail = if detail.is_empty() { rendered.to_string() } else { format!("{rendered}: {detail}") };
    FieldError::new(kind, path, None, detail)
}

/// Upstream's `field.TooMany`: `Too many: 1001: must have at most 1000 items`.
pub(crate) fn too_many(path: &Path, actual: usize, max: usize) -> FieldError {
    FieldError::new(crate::FieldErrorKind::TooMany, path, None, format!("{actual}: must have at most {max} items"))
}

/// Go's `%q` of a string.
pub(crate) fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// Go's `%#v` of a `map[string]string` (keys sorted, as fmt prints maps).
pub(crate) fn go_string_map(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = entries.iter().map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v.as_str().unwrap_or("")))).collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
    }
}

/// Go's `%#v` of a slice of strings (or of a named string type): `[]string{"a", "b"}`.
pub(crate) fn go_string_slice(type_name: &str, v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        None => format!("[]{type_name}(nil)"),
        Some(items) => {
            let parts: Vec<String> = items.iter().map(|s| go_quote(s.as_str().unwrap_or(""))).collect();
            format!("[]{type_name}{{{}}}", parts.join(", "))
        }
    }
}

/// Go's `%#v` of a (dereferenced) `metav1.LabelSelector`.
pub(crate) fn go_label_selector(sel: &Value) -> String {
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(reqs) => {
            let parts: Vec<String> = reqs
                .iter()
                .map(|r| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        go_quote(str_at(r, "key").unwrap_or("")),
                        go_quote(str_at(r, "operator").unwrap_or("")),
                        go_string_slice("string", r.get("values"))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", parts.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}", go_string_map(sel.get("matchLabels")))
}

/// Go's `%#v` of an `intstr.IntOrString` (absent is the zero value).
pub(crate) fn go_int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}", go_quote(s)),
        Some(Value::Number(n)) => format!("intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}", n.as_i64().unwrap_or(0)),
        _ => "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}".to_string(),
    }
}

/// The value as apimachinery's semantic equality sees it: nulls, empty lists and empty maps are
/// the same as absent fields.
pub(crate) fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let n = normalized(v);
                let empty = match &n {
                    Value::Null => true,
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    _ => false,
                };
                if !empty {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Semantic equality of two optional values (see [`normalized`]).
pub(crate) fn semantic_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    let n = |v: Option<&Value>| {
        let n = normalized(&serde_json::json!({ "v": v.cloned().unwrap_or(Value::Null) }));
        n.get("v").cloned().unwrap_or(Value::Null)
    };
    n(a) == n(b)
}

/// One `Invalid value` error per message of `ValidateDNS1123Label`.
pub(crate) fn dns_label(path: &Path, value: &str) -> Vec<FieldError> {
    invalid_each(path, value, super::names::is_dns1123_label(value))
}

/// Upstream's `ValidateEndpointIP` / `ValidateNonSpecialIP`: a valid IP that is not unspecified,
/// loopback or link-local.
pub(crate) fn validate_endpoint_ip(value: &str, path: &Path) -> Vec<FieldError> {
    use std::net::IpAddr;
    let Some(ip) = super::names::parse_ip(value) else {
        return vec![FieldError::invalid(path, value, "must be a valid IP address")];
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let mut errs = Vec::new();
    if ip.is_unspecified() {
        errs.push(FieldError::invalid(path, value, format!("may not be unspecified ({value})")));
    }
    if ip.is_loopback() {
        errs.push(FieldError::invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"));
    }
    let (link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0] == 169 && o[1] == 254, o[0] == 224 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            (s & 0xffc0 == 0xfe80, s & 0xff0f == 0xff02)
        }
    };
    if link_local {
        errs.push(FieldError::invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
    }
    if link_local_multicast {
        errs.push(FieldError::invalid(path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"));
    }
    errs
}

/// Port protocols as upstream lists them (`sets.List` order).
pub(crate) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// `protocol`: one of TCP/UDP/SCTP; required when given empty (absent is defaulted to TCP).
pub(crate) fn validate_protocol(v: Option<&Value>, path: &Path) -> Option<FieldError> {
    match v.and_then(Value::as_str) {
        None => None,
        Some("") => Some(FieldError::required(path, "")),
        Some(p) if PROTOCOLS.contains(&p) => None,
        Some(p) => Some(FieldError::not_supported(path, p, PROTOCOLS)),
    }
}
