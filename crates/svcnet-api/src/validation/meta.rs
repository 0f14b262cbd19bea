//! `ObjectMeta` validation (upstream's `ValidateObjectMeta` / `ValidateObjectMetaUpdate`).

use super::names;
use super::util::{Path, immutable, invalid_each, str_at, validate_labels};
use crate::FieldError;
use crate::resources::RESOURCES;
use serde_json::Value;

/// Upstream's `TotalAnnotationSizeLimitB`.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// The name rule of each kind, as its upstream `Validate<Kind>Name` function.
fn name_rule(kind: &str) -> fn(&str, bool) -> Vec<String> {
    match kind {
        // Services become DNS labels (`svc.ns.svc.cluster.local`) and env var prefixes.
        "Service" => names::name_is_dns1035_label,
        // Namespaces are DNS labels in every service name.
        "Namespace" => names::name_is_dns_label,
        // Events and leases only need to be usable in a URL path.
        "Event" | "Lease" => names::is_valid_path_segment_name,
        _ => names::name_is_dns_subdomain,
    }
}

fn namespaced(kind: &str) -> bool {
    RESOURCES.iter().find(|r| r.kind == kind).is_none_or(|r| r.namespaced)
}

/// Errors in `obj.metadata` for an object of `kind`.
pub(super) fn validate_object_meta(kind: &str, obj: &Value) -> Vec<FieldError> {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let path = Path::root("metadata");
    let mut errs = Vec::new();
    let rule = name_rule(kind);

    let generate_name = str_at(&meta, "generateName").unwrap_or("");
    if !generate_name.is_empty() {
        errs.extend(invalid_each(&path.child("generateName"), generate_name, rule(generate_name, true)));
    }
    match str_at(&meta, "name").unwrap_or("") {
        "" => errs.push(FieldError::required(path.child("name"), "name or generateName is required")),
        name => errs.extend(invalid_each(&path.child("name"), name, rule(name, false))),
    }

    let ns = str_at(&meta, "namespace").unwrap_or("");
    if namespaced(kind) {
        if ns.is_empty() {
            errs.push(FieldError::required(path.child("namespace"), ""));
        } else {
            errs.extend(invalid_each(&path.child("namespace"), ns, names::name_is_dns_label(ns, false)));
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(path.child("namespace"), "not allowed on this type"));
    }

    if let Some(g) = meta.get("generation").and_then(Value::as_i64)
        && g < 0
    {
        errs.push(FieldError::invalid(path.child("generation"), g, "must be greater than or equal to 0"));
    }

    errs.extend(validate_labels(meta.get("labels"), &path.child("labels")));

    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let apath = path.child("annotations");
        let mut total = 0;
        for (k, v) in annotations {
            errs.extend(invalid_each(&apath, k, names::is_qualified_name(&k.to_lowercase())));
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::too_long(&apath, TOTAL_ANNOTATION_SIZE_LIMIT));
        }
    }

    for (i, owner) in super::util::arr_at(&meta, "ownerReferences").iter().enumerate() {
        let p = path.child("ownerReferences").index(i);
        let gv = str_at(owner, "apiVersion").unwrap_or("");
        if gv.is_empty() {
            errs.push(FieldError::invalid(p.child("apiVersion"), gv, "version must not be empty"));
        }
        for field in ["kind", "name", "uid"] {
            let v = str_at(owner, field).unwrap_or("");
            if v.is_empty() {
                errs.push(FieldError::invalid(p.child(field), v, format!("{field} must not be empty")));
            }
        }
    }

    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in super::util::arr_at(&meta, "finalizers").iter().enumerate() {
        let s = f.as_str().unwrap_or("");
        let p = path.child("finalizers").index(i);
        errs.extend(invalid_each(&p, s, names::is_qualified_name(s)));
        if !seen.insert(s.to_string()) {
            errs.push(FieldError::duplicate(&p, s));
        }
    }
    errs
}

/// Errors in changing `old.metadata` to `new.metadata`: name and namespace are immutable.
pub(super) fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let path = Path::root("metadata");
    let mut errs = Vec::new();
    for field in ["name", "namespace"] {
        if let Some(e) = immutable(&path.child(field), new["metadata"].get(field), old["metadata"].get(field)) {
            errs.push(e);
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{}: {}", e.field, e.cause_message())).collect()
    }

    #[test]
    fn service_names_are_dns1035_labels() {
        let obj = json!({"metadata": {"name": "1web", "namespace": "default"}});
        let msgs = messages(&validate_object_meta("Service", &obj));
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].starts_with("metadata.name: Invalid value: \"1web\": a DNS-1035 label"), "{msgs:?}");
        // The same name is fine for a ConfigMap (DNS-1123 subdomain).
        let obj = json!({"metadata": {"name": "1web.x", "namespace": "default"}});
        assert!(validate_object_meta("ConfigMap", &obj).is_empty());
    }

    #[test]
    fn name_required_and_namespace_rules() {
        let msgs = messages(&validate_object_meta("ConfigMap", &json!({"metadata": {}})));
        assert_eq!(msgs, ["metadata.name: Required value: name or generateName is required", "metadata.namespace: Required value"]);
        let msgs = messages(&validate_object_meta("Node", &json!({"metadata": {"name": "n1", "namespace": "x"}})));
        assert_eq!(msgs, ["metadata.namespace: Forbidden: not allowed on this type"]);
    }

    #[test]
    fn labels_and_annotations() {
        let obj = json!({"metadata": {"name": "a", "namespace": "default",
            "labels": {"ok": "v", "bad key": "v", "k": "-bad"},
            "annotations": {"Upper/x": "1", "a b": "2"}}});
        let msgs = messages(&validate_object_meta("Pod", &obj));
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist"));
        assert!(msgs[1].starts_with("metadata.labels: Invalid value: \"-bad\": a valid label must be"));
        // Annotation keys are checked lowercased, as upstream: `Upper/x` is fine.
        assert!(msgs[2].starts_with("metadata.annotations: Invalid value: \"a b\": name part must consist"), "{msgs:?}");
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let obj = json!({"metadata": {"name": "a", "namespace": "default", "annotations": {"a": big}}});
        assert_eq!(messages(&validate_object_meta("Pod", &obj)), ["metadata.annotations: Too long: may not be more than 262144 bytes"]);
    }

    #[test]
    fn name_is_immutable() {
        let old = json!({"metadata": {"name": "a", "namespace": "default"}});
        let new = json!({"metadata": {"name": "b", "namespace": "default"}});
        assert_eq!(messages(&validate_object_meta_update(&new, &old)), ["metadata.name: Invalid value: \"b\": field is immutable"]);
    }
}
