//! Pod validation, as upstream's `ValidatePodCreate`, `ValidatePodSpec`, `ValidatePodTemplateSpec`
//! and `ValidatePodUpdate` (pkg/apis/core/validation): containers, ports, env, volumes names,
//! policies, tolerations, and on update the short list of mutable spec fields.

use super::names;
use super::util::{Path, arr_at, dns_label, go_quote, invalid_each, normalized, semantic_eq, str_at, validate_labels, validate_protocol, with_go_value};
use crate::{FieldError, FieldErrorKind};
use serde_json::Value;
use std::collections::BTreeSet;

/// Upstream's `TotalAnnotationSizeLimitB`.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
const MAX_INT32: i64 = i32::MAX as i64;

/// The spec fields a pod update may change, as upstream lists them in its error.
const UPDATABLE_POD_SPEC_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

/// Field errors of a Pod (beyond object metadata); `old` is the stored pod on update.
pub(super) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    if kind != "Pod" {
        return Vec::new();
    }
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let path = Path::root("spec");
    let mut errs = validate_pod_spec(spec, &path);
    // Pod-only checks (not applied to templates, for backwards compatibility upstream).
    for list in ["containers", "initContainers"] {
        for (i, c) in arr_at(spec, list).iter().enumerate() {
            errs.extend(image_whitespace(c, &path.child(list).index(i)));
        }
    }
    match old {
        None => {
            if !arr_at(spec, "ephemeralContainers").is_empty() {
                errs.push(FieldError::forbidden(path.child("ephemeralContainers"), "cannot be set on create"));
            }
        }
        Some(old) => errs.extend(validate_pod_spec_update(spec, old.get("spec").unwrap_or(&null), &path)),
    }
    errs
}

/// `ValidatePodTemplateSpec`: template labels and annotations (at `<path>.labels`, as upstream
/// reports them) and the pod spec at `<path>.spec`.
pub(super) fn validate_pod_template(template: &Value, path: &Path) -> Vec<FieldError> {
    let null = Value::Null;
    let meta = template.get("metadata").unwrap_or(&null);
    let mut errs = validate_labels(meta.get("labels"), &path.child("labels"));
    errs.extend(validate_annotations(meta.get("annotations"), &path.child("annotations")));
    let spec = template.get("spec").unwrap_or(&null);
    errs.extend(validate_pod_spec(spec, &path.child("spec")));
    if !arr_at(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(path.child("spec").child("ephemeralContainers"), "ephemeral containers not allowed in pod template"));
    }
    errs
}

/// `ValidateAnnotations`: qualified-name keys (case-insensitive) and a total size limit.
pub(super) fn validate_annotations(annotations: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(map) = annotations.and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in map {
            errs.extend(invalid_each(path, k, names::is_qualified_name(&k.to_lowercase())));
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
        }
    }
    errs
}

/// `ValidatePodSpec` (the commonly hit rules).
pub(super) fn validate_pod_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = validate_volumes(arr_at(spec, "volumes"), &path.child("volumes"));

    let containers = arr_at(spec, "containers");
    errs.extend(validate_containers(containers, &path.child("containers")));
    errs.extend(validate_init_containers(arr_at(spec, "initContainers"), containers, &path.child("initContainers")));

    if let Some(p) = spec.get("restartPolicy").and_then(Value::as_str) {
        errs.extend(one_of(p, &path.child("restartPolicy"), &["Always", "OnFailure", "Never"]));
    }
    let dns_policy = spec.get("dnsPolicy").and_then(Value::as_str);
    if let Some(p) = dns_policy {
        errs.extend(one_of(p, &path.child("dnsPolicy"), &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]));
    }
    errs.extend(validate_labels(spec.get("nodeSelector"), &path.child("nodeSelector")));

    if let Some(sa) = str_at(spec, "serviceAccountName").filter(|s| !s.is_empty()) {
        errs.extend(invalid_each(&path.child("serviceAccountName"), sa, names::is_dns1123_subdomain(sa)));
    }
    if let Some(dns_config_errs) = validate_dns_config(spec, dns_policy, &path.child("dnsConfig")) {
        errs.extend(dns_config_errs);
    }
    if let Some(node) = str_at(spec, "nodeName").filter(|s| !s.is_empty()) {
        errs.extend(invalid_each(&path.child("nodeName"), node, names::is_dns1123_subdomain(node)));
    }
    if let Some(ads) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=MAX_INT32).contains(&ads)
    {
        errs.push(FieldError::invalid(path.child("activeDeadlineSeconds"), ads, names::inclusive_range_error(1, MAX_INT32)));
    }
    if let Some(h) = str_at(spec, "hostname").filter(|s| !s.is_empty()) {
        errs.extend(dns_label(&path.child("hostname"), h));
    }
    if let Some(s) = str_at(spec, "subdomain").filter(|s| !s.is_empty()) {
        errs.extend(dns_label(&path.child("subdomain"), s));
    }
    errs.extend(validate_tolerations(arr_at(spec, "tolerations"), &path.child("tolerations")));
    if let Some(pc) = str_at(spec, "priorityClassName").filter(|s| !s.is_empty()) {
        errs.extend(invalid_each(&path.child("priorityClassName"), pc, names::is_dns1123_subdomain(pc)));
    }
    if let Some(g) = spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64)
        && g < 0
    {
        errs.push(FieldError::invalid(path.child("terminationGracePeriodSeconds"), g, "must be greater than or equal to 0"));
    }
    errs
}

/// Required when empty, `NotSupported` when not one of `values` (listed in upstream's order).
fn one_of(value: &str, path: &Path, values: &[&str]) -> Option<FieldError> {
    if value.is_empty() {
        Some(FieldError::required(path, ""))
    } else if values.contains(&value) {
        None
    } else {
        Some(FieldError::not_supported(path, value, values))
    }
}

/// `validatePodDNSConfig`, the `dnsPolicy: None` part.
fn validate_dns_config(spec: &Value, dns_policy: Option<&str>, path: &Path) -> Option<Vec<FieldError>> {
    if dns_policy != Some("None") {
        return None;
    }
    let Some(cfg) = spec.get("dnsConfig").filter(|c| !c.is_null()) else {
        return Some(vec![FieldError::required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]);
    };
    if arr_at(cfg, "nameservers").is_empty() {
        return Some(vec![FieldError::required(path.child("nameservers"), "must provide at least one DNS nameserver when `dnsPolicy` is None")]);
    }
    None
}

/// `ValidateVolumes` (names and that each names exactly one source; the sources are not checked).
fn validate_volumes(volumes: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, vol) in volumes.iter().enumerate() {
        let p = path.index(i);
        let sources: Vec<&String> =
            vol.as_object().map(|m| m.iter().filter(|(k, v)| k.as_str() != "name" && !v.is_null()).map(|(k, _)| k).collect()).unwrap_or_default();
        if sources.is_empty() {
            errs.push(FieldError::required(&p, "must specify a volume type"));
        }
        for extra in sources.iter().skip(1) {
            errs.push(FieldError::forbidden(p.child(extra), "may not specify more than 1 volume type"));
        }
        let name = str_at(vol, "name").unwrap_or("");
        let np = p.child("name");
        if name.is_empty() {
            errs.push(FieldError::required(&np, ""));
        } else {
            errs.extend(dns_label(&np, name));
        }
        if !seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&np, name));
        }
    }
    errs
}

/// `validateContainers`: at least one, common checks, unique names, host port conflicts.
fn validate_containers(containers: &[Value], path: &Path) -> Vec<FieldError> {
    if containers.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_container_common(c, &p));
        if c.get("restartPolicy").is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::forbidden(p.child("restartPolicy"), "may not be set for non-init containers"));
        }
        let name = str_at(c, "name").unwrap_or("");
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(p.child("name"), name));
        }
    }
    errs.extend(host_port_conflicts(containers, path));
    errs
}

/// `validateInitContainers`: common checks, names unique across regular and init containers,
/// `restartPolicy` only `Always` (sidecars).
fn validate_init_containers(init: &[Value], regular: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: BTreeSet<String> = regular.iter().map(|c| str_at(c, "name").unwrap_or("").to_string()).collect();
    for (i, c) in init.iter().enumerate() {
        let p = path.index(i);
        errs.extend(validate_container_common(c, &p));
        if let Some(rp) = c.get("restartPolicy").filter(|v| !v.is_null()) {
            let rp = rp.as_str().unwrap_or("");
            if rp != "Always" {
                errs.push(FieldError::not_supported(p.child("restartPolicy"), rp, &["Always"]));
            }
        }
        let name = str_at(c, "name").unwrap_or("");
        if names.contains(name) {
            errs.push(FieldError::duplicate(p.child("name"), name));
        } else if !name.is_empty() {
            names.insert(name.to_string());
        }
    }
    errs.extend(host_port_conflicts(init, path));
    errs
}

/// `validateContainerCommon`: name, image, termination message policy, ports, env, pull policy,
/// volume mounts.
fn validate_container_common(c: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_at(c, "name").unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else {
        errs.extend(dns_label(&path.child("name"), name));
    }
    if str_at(c, "image").unwrap_or("").is_empty() {
        errs.push(FieldError::required(path.child("image"), ""));
    }
    if let Some(p) = c.get("terminationMessagePolicy").and_then(Value::as_str) {
        errs.extend(one_of(p, &path.child("terminationMessagePolicy"), &["File", "FallbackToLogsOnError"]));
    }
    errs.extend(validate_container_ports(arr_at(c, "ports"), &path.child("ports")));
    errs.extend(validate_env(arr_at(c, "env"), &path.child("env")));
    if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
        errs.extend(one_of(p, &path.child("imagePullPolicy"), &["Always", "IfNotPresent", "Never"]));
    }
    for (i, m) in arr_at(c, "volumeMounts").iter().enumerate() {
        let p = path.child("volumeMounts").index(i);
        if str_at(m, "name").unwrap_or("").is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        }
        if str_at(m, "mountPath").unwrap_or("").is_empty() {
            errs.push(FieldError::required(p.child("mountPath"), ""));
        }
    }
    errs
}

/// `validateContainerPorts`.
fn validate_container_ports(ports: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = str_at(port, "name").unwrap_or("");
        if !name.is_empty() {
            let msgs = names::is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(invalid_each(&p.child("name"), name, msgs));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(p.child("name"), name));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64).unwrap_or(0) {
            0 => errs.push(FieldError::required(p.child("containerPort"), "")),
            n => errs.extend(names::is_valid_port_num(n).into_iter().map(|m| FieldError::invalid(p.child("containerPort"), n, m))),
        }
        let host = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
        if host != 0 {
            errs.extend(names::is_valid_port_num(host).into_iter().map(|m| FieldError::invalid(p.child("hostPort"), host, m)));
        }
        errs.extend(validate_protocol(port.get("protocol"), &p.child("protocol")));
    }
    errs
}

/// `AccumulateUniqueHostPorts`: a `hostIP/protocol/hostPort` may be used once.
fn host_port_conflicts(containers: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = BTreeSet::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in arr_at(c, "ports").iter().enumerate() {
            let host = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if host == 0 {
                continue;
            }
            let key = format!("{}/{}/{host}", str_at(port, "hostIP").unwrap_or(""), str_at(port, "protocol").unwrap_or(""));
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(path.index(ci).child("ports").index(pi).child("hostPort"), key));
            }
        }
    }
    errs
}

/// `ValidateEnv` with relaxed names (the default in 1.32).
fn validate_env(env: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in env.iter().enumerate() {
        let np = path.index(i).child("name");
        let name = str_at(ev, "name").unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(&np, ""));
            errs.push(FieldError::invalid(&np, "", "environment variable name must be non-empty"));
        } else {
            errs.extend(invalid_each(&np, name, names::is_env_var_name(name)));
        }
    }
    errs
}

/// `ValidateTolerations`.
fn validate_tolerations(tolerations: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let p = path.index(i);
        let key = str_at(t, "key").unwrap_or("");
        let op = str_at(t, "operator").unwrap_or("");
        let value = str_at(t, "value").unwrap_or("");
        let effect = str_at(t, "effect").unwrap_or("");
        if !key.is_empty() {
            errs.extend(invalid_each(&p.child("key"), key, names::is_qualified_name(key)));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                p.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.get("tolerationSeconds").is_some_and(|v| !v.is_null()) && effect != "NoExecute" {
            errs.push(FieldError::invalid(p.child("effect"), effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"));
        }
        match op {
            "Equal" | "" => {
                let msgs = names::is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(p.child("operator"), value, msgs.join(";")));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    let seconds = match t.get("tolerationSeconds").and_then(Value::as_i64) {
                        Some(_) => "(*int64)(0xc000000000)".to_string(),
                        None => "(*int64)(nil)".to_string(),
                    };
                    let rendered = format!(
                        "core.Toleration{{Key:{}, Operator:{}, Value:{}, Effect:{}, TolerationSeconds:{seconds}}}",
                        go_quote(key),
                        go_quote(op),
                        go_quote(value),
                        go_quote(effect)
                    );
                    errs.push(with_go_value(FieldErrorKind::Invalid, &p.child("operator"), &rendered, "value must be empty when `operator` is 'Exists'"));
                }
            }
            other => errs.push(FieldError::not_supported(p.child("operator"), other, &["Equal", "Exists"])),
        }
        if !effect.is_empty() {
            errs.extend(validate_taint_effect(effect, &p.child("effect")));
        }
    }
    errs
}

/// `validateTaintEffect` for a non-empty effect.
pub(super) fn validate_taint_effect(effect: &str, path: &Path) -> Option<FieldError> {
    let values = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    (!values.contains(&effect)).then(|| FieldError::not_supported(path, effect, &values))
}

/// `validateContainerOnlyForPod`: no whitespace around the image.
fn image_whitespace(c: &Value, path: &Path) -> Option<FieldError> {
    let image = str_at(c, "image").unwrap_or("");
    (image.trim() != image).then(|| FieldError::invalid(path.child("image"), image, "must not have leading or trailing whitespace"))
}

/// `ValidatePodUpdate`'s spec rules: containers may not be added or removed, images and
/// `activeDeadlineSeconds` (down only) may change, tolerations may be added, scheduling gates
/// removed; `nodeName` may be set once (binding); anything else is `Forbidden` on `spec`.
fn validate_pod_spec_update(new: &Value, old: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for list in ["containers", "initContainers"] {
        let (n, o) = (arr_at(new, list), arr_at(old, list));
        if n.len() != o.len() {
            errs.push(FieldError::forbidden(path.child(list), "pod updates may not add or remove containers"));
            return errs;
        }
        for (i, c) in n.iter().enumerate() {
            if str_at(c, "image").unwrap_or("").is_empty() {
                errs.push(FieldError::required(path.child(list).index(i).child("image"), ""));
            }
            errs.extend(image_whitespace(c, &path.child(list).index(i)));
        }
    }

    let ads_path = path.child("activeDeadlineSeconds");
    let old_ads = old.get("activeDeadlineSeconds").and_then(Value::as_i64);
    match new.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        Some(n) => {
            if !(0..=MAX_INT32).contains(&n) {
                errs.push(FieldError::invalid(&ads_path, n, names::inclusive_range_error(0, MAX_INT32)));
                return errs;
            }
            if old_ads.is_some_and(|o| o < n) {
                errs.push(FieldError::invalid(&ads_path, n, "must be less than or equal to previous value"));
                return errs;
            }
        }
        None => {
            if old_ads.is_some() {
                errs.push(FieldError::invalid(&ads_path, "null", "must not update from a positive integer to nil value"));
            }
        }
    }

    errs.extend(validate_only_added_tolerations(arr_at(new, "tolerations"), arr_at(old, "tolerations"), &path.child("tolerations")));
    errs.extend(validate_only_deleted_scheduling_gates(arr_at(new, "schedulingGates"), arr_at(old, "schedulingGates"), &path.child("schedulingGates")));

    // Mask the fields that may change and compare the rest.
    let mut munged = new.clone();
    if let Some(m) = munged.as_object_mut() {
        for list in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for (c, o) in cs.iter_mut().zip(arr_at(old, list)) {
                    if let Some(c) = c.as_object_mut() {
                        match o.get("image") {
                            Some(img) => c.insert("image".into(), img.clone()),
                            None => c.remove("image"),
                        };
                    }
                }
            }
        }
        for key in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match old.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        let old_grace = old.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
        if old_grace.is_some_and(|g| g < 0) && m.get("terminationGracePeriodSeconds").and_then(Value::as_i64) == Some(1) {
            m.insert("terminationGracePeriodSeconds".into(), old_grace.into());
        }
        // Binding: a pod's node may be set once.
        if str_at(old, "nodeName").unwrap_or("").is_empty() {
            m.remove("nodeName");
            if let Some(v) = old.get("nodeName") {
                m.insert("nodeName".into(), v.clone());
            }
        }
    }
    if !semantic_eq(Some(&munged), Some(old)) {
        errs.push(FieldError::forbidden(
            path,
            format!("pod updates may not change fields other than {}\n{}", UPDATABLE_POD_SPEC_FIELDS.join(","), spec_diff(old, &munged)),
        ));
    }
    errs
}

/// A short diff of two pod specs by top-level field, in the spirit of upstream's `cmp.Diff`.
fn spec_diff(old: &Value, new: &Value) -> String {
    let (o, n) = (normalized(old), normalized(new));
    let mut keys: BTreeSet<&String> = BTreeSet::new();
    keys.extend(o.as_object().into_iter().flat_map(|m| m.keys()));
    keys.extend(n.as_object().into_iter().flat_map(|m| m.keys()));
    let mut out = String::from("  core.PodSpec{\n");
    for k in keys {
        let (ov, nv) = (o.get(k.as_str()), n.get(k.as_str()));
        if ov == nv {
            continue;
        }
        let go_name: String = k.chars().take(1).flat_map(char::to_uppercase).chain(k.chars().skip(1)).collect();
        if let Some(v) = ov {
            out.push_str(&format!("- \t{go_name}: {v},\n"));
        }
        if let Some(v) = nv {
            out.push_str(&format!("+ \t{go_name}: {v},\n"));
        }
    }
    out.push_str("  }\n");
    out
}

/// `validateOnlyAddedTolerations`: every old toleration must still be there (its
/// `tolerationSeconds` may change).
fn validate_only_added_tolerations(new: &[Value], old: &[Value], path: &Path) -> Vec<FieldError> {
    let without_seconds = |t: &Value| {
        let mut t = normalized(t);
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    for o in old {
        let o = without_seconds(o);
        if !new.iter().any(|n| without_seconds(n) == o) {
            return vec![FieldError::forbidden(path, "existing toleration can not be modified except its tolerationSeconds")];
        }
    }
    validate_tolerations(new, path)
}

/// `validateOnlyDeletedSchedulingGates`: no gate may be added.
fn validate_only_deleted_scheduling_gates(new: &[Value], old: &[Value], path: &Path) -> Vec<FieldError> {
    let old_names: BTreeSet<&str> = old.iter().filter_map(|g| str_at(g, "name")).collect();
    new.iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let name = str_at(g, "name").unwrap_or("");
            (!old_names.contains(name))
                .then(|| FieldError::forbidden(path.index(i).child("name"), format!("only deletion is allowed, but found new scheduling gate '{name}'")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{e}")).collect()
    }

    fn create(spec: Value) -> Vec<String> {
        msgs(&validate("Pod", &pod(spec), None))
    }

    #[test]
    fn valid_pod_has_no_errors() {
        let spec = json!({
            "containers": [{"name": "web", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                "terminationMessagePolicy": "File",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "MY_VAR.1", "value": "x"}]}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
        });
        assert_eq!(create(spec), Vec::<String>::new());
    }

    #[test]
    fn containers_required() {
        assert_eq!(create(json!({})), ["spec.containers: Required value"]);
        assert_eq!(create(json!({"containers": []})), ["spec.containers: Required value"]);
    }

    #[test]
    fn container_names_and_images() {
        let errs = create(json!({"containers": [
            {"name": "Web", "image": "nginx"},
            {"name": "b", "image": ""},
            {"name": "b", "image": " x"}
        ]}));
        assert_eq!(
            errs,
            [
                "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "spec.containers[1].image: Required value",
                "spec.containers[2].name: Duplicate value: \"b\"",
                "spec.containers[2].image: Invalid value: \" x\": must not have leading or trailing whitespace",
            ]
        );
    }

    #[test]
    fn container_ports() {
        let errs = create(json!({"containers": [{"name": "a", "image": "i", "ports": [
            {"containerPort": 0},
            {"containerPort": 70000, "hostPort": -1, "protocol": "HTTP"},
            {"name": "http", "containerPort": 80},
            {"name": "http", "containerPort": 81},
            {"name": "1234", "containerPort": 82},
        ]}]}));
        assert_eq!(
            errs,
            [
                "spec.containers[0].ports[0].containerPort: Required value",
                "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[1].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].ports[3].name: Duplicate value: \"http\"",
                "spec.containers[0].ports[4].name: Invalid value: \"1234\": must contain at least one letter (a-z)",
            ]
        );
    }

    #[test]
    fn host_ports_conflict_across_containers() {
        let errs = create(json!({"containers": [
            {"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]},
            {"name": "b", "image": "i", "ports": [{"containerPort": 81, "hostPort": 8080, "protocol": "TCP"}]},
        ]}));
        assert_eq!(errs, ["spec.containers[1].ports[0].hostPort: Duplicate value: \"/TCP/8080\""]);
    }

    #[test]
    fn env_names() {
        let errs = create(json!({"containers": [{"name": "a", "image": "i", "env": [{"name": ""}, {"name": "A=B"}]}]}));
        assert_eq!(
            errs,
            [
                "spec.containers[0].env[0].name: Required value",
                "spec.containers[0].env[0].name: Invalid value: \"\": environment variable name must be non-empty",
                "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            ]
        );
    }

    #[test]
    fn policies_and_names() {
        let errs = create(json!({
            "containers": [{"name": "a", "image": "i"}],
            "restartPolicy": "Sometimes", "dnsPolicy": "Cluster", "terminationGracePeriodSeconds": -1,
            "hostname": "Host", "subdomain": "a.b", "activeDeadlineSeconds": 0,
            "nodeSelector": {"bad key": "v"}
        }));
        assert_eq!(errs.len(), 7, "{errs:#?}");
        assert_eq!(errs[0], "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"");
        assert_eq!(
            errs[1],
            "spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
        );
        assert!(errs[2].starts_with("spec.nodeSelector: Invalid value: \"bad key\": name part must consist"));
        assert_eq!(errs[3], "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive");
        assert!(errs[4].starts_with("spec.hostname: Invalid value: \"Host\": a lowercase RFC 1123 label"));
        assert_eq!(errs[5], "spec.subdomain: Invalid value: \"a.b\": must not contain dots");
        assert_eq!(errs[6], "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0");
    }

    #[test]
    fn dns_none_needs_config_and_tolerations() {
        let errs = create(json!({
            "containers": [{"name": "a", "image": "i"}], "dnsPolicy": "None",
            "tolerations": [{"operator": "Equal", "value": "x"}, {"key": "k", "operator": "Exists", "value": "v"},
                            {"key": "k", "effect": "Never"}]
        }));
        assert_eq!(
            errs,
            [
                "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None",
                "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                "spec.tolerations[1].operator: Invalid value: core.Toleration{Key:\"k\", Operator:\"Exists\", Value:\"v\", Effect:\"\", TolerationSeconds:(*int64)(nil)}: value must be empty when `operator` is 'Exists'",
                "spec.tolerations[2].effect: Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            ]
        );
    }

    #[test]
    fn volumes() {
        let errs = create(json!({"containers": [{"name": "a", "image": "i", "volumeMounts": [{"name": "v"}]}],
            "volumes": [{"name": "v"}, {"name": "v", "emptyDir": {}, "hostPath": {"path": "/"}}]}));
        assert_eq!(
            errs,
            [
                "spec.volumes[0]: Required value: must specify a volume type",
                "spec.volumes[1].hostPath: Forbidden: may not specify more than 1 volume type",
                "spec.volumes[1].name: Duplicate value: \"v\"",
                "spec.containers[0].volumeMounts[0].mountPath: Required value",
            ]
        );
    }

    #[test]
    fn update_allows_image_and_binding_only() {
        let old = pod(json!({"containers": [{"name": "a", "image": "nginx:1"}], "restartPolicy": "Always"}));
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = "nginx:2".into();
        new["spec"]["nodeName"] = "node-1".into();
        new["status"] = json!({"phase": "Running"});
        assert!(validate("Pod", &new, Some(&old)).is_empty());

        // Once bound, the node may not change.
        let mut moved = new.clone();
        moved["spec"]["nodeName"] = "node-2".into();
        let errs = msgs(&validate("Pod", &moved, Some(&new)));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with(
            "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n  core.PodSpec{\n- \tNodeName: \"node-1\",\n+ \tNodeName: \"node-2\",\n"
        ), "{errs:?}");

        let mut changed = old.clone();
        changed["spec"]["restartPolicy"] = "Never".into();
        let errs = msgs(&validate("Pod", &changed, Some(&old)));
        assert!(errs[0].starts_with("spec: Forbidden: pod updates may not change fields other than"), "{errs:?}");
    }

    #[test]
    fn update_containers_deadline_tolerations() {
        let old = pod(json!({"containers": [{"name": "a", "image": "i"}], "activeDeadlineSeconds": 10,
            "tolerations": [{"key": "k", "operator": "Exists"}]}));
        let mut new = old.clone();
        new["spec"]["containers"] = json!([{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]);
        assert_eq!(msgs(&validate("Pod", &new, Some(&old))), ["spec.containers: Forbidden: pod updates may not add or remove containers"]);

        let mut new = old.clone();
        new["spec"]["activeDeadlineSeconds"] = 20.into();
        assert_eq!(msgs(&validate("Pod", &new, Some(&old))), ["spec.activeDeadlineSeconds: Invalid value: 20: must be less than or equal to previous value"]);
        new["spec"]["activeDeadlineSeconds"] = Value::Null;
        assert_eq!(
            msgs(&validate("Pod", &new, Some(&old))),
            ["spec.activeDeadlineSeconds: Invalid value: \"null\": must not update from a positive integer to nil value"]
        );

        let mut new = old.clone();
        new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}, {"key": "x", "operator": "Exists"}]);
        new["spec"]["activeDeadlineSeconds"] = 5.into();
        assert!(validate("Pod", &new, Some(&old)).is_empty());
        new["spec"]["tolerations"] = json!([{"key": "x", "operator": "Exists"}]);
        assert_eq!(
            msgs(&validate("Pod", &new, Some(&old))),
            ["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
        );
    }

    #[test]
    fn template_paths() {
        let t = json!({"metadata": {"labels": {"app": "-x"}}, "spec": {"containers": [{"name": "c"}]}});
        let errs = msgs(&validate_pod_template(&t, &Path::root("spec").child("template")));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("spec.template.labels: Invalid value: \"-x\": a valid label must be"));
        assert_eq!(errs[1], "spec.template.spec.containers[0].image: Required value");
    }
}
