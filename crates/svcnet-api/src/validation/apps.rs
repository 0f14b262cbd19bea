//! Validation of the apps kinds (Deployment, ReplicaSet, StatefulSet), as upstream's
//! pkg/apis/apps/validation plus the selector immutability its registry strategies add.

use super::names;
use super::pod;
use super::util::{
    Path, go_int_or_string, go_label_selector, go_quote, go_string_map, non_negative, semantic_eq, str_at, validate_label_selector, with_go_value,
};
use crate::selector::LabelSelector;
use crate::{FieldError, FieldErrorKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;
use std::collections::BTreeMap;

const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%'";
const PERCENT_FMT: &str = "[0-9]+%";

/// Field errors (beyond object metadata) of a Deployment, ReplicaSet or StatefulSet; `old` is the
/// stored object on update.
pub(super) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let old_spec = old.map(|o| o.get("spec").unwrap_or(&null));
    let path = Path::root("spec");
    match kind {
        "Deployment" => {
            let mut errs = deployment_spec(spec, &path);
            errs.extend(old_spec.and_then(|o| selector_immutable(spec, o, &path)));
            errs
        }
        "ReplicaSet" => {
            let mut errs = replica_set_spec(spec, &path);
            errs.extend(old_spec.and_then(|o| selector_immutable(spec, o, &path)));
            errs
        }
        "StatefulSet" => {
            let mut errs = stateful_set_spec(spec, &path);
            errs.extend(old_spec.and_then(|o| stateful_set_update(spec, o)));
            errs
        }
        _ => Vec::new(),
    }
}

/// What a workload's `spec.selector` selects, as `LabelSelectorAsSelector` makes it.
enum Selector {
    /// No selector: matches nothing (so every template mismatches).
    Nothing,
    /// An empty selector: matches everything, and the template is not checked against it.
    Everything,
    Some(LabelSelector),
    /// The selector could not be converted.
    Invalid,
}

fn as_selector(sel: Option<&Value>) -> Selector {
    let Some(sel) = sel.filter(|s| !s.is_null()) else { return Selector::Nothing };
    let Ok(api) = serde_json::from_value::<metav1::LabelSelector>(sel.clone()) else { return Selector::Invalid };
    match LabelSelector::from_api(&api) {
        Ok(s) if s.is_empty() => Selector::Everything,
        Ok(s) => Selector::Some(s),
        Err(_) => Selector::Invalid,
    }
}

/// The selector checks shared by the apps kinds: required, valid, not empty.
fn selector_errors(spec: &Value, path: &Path, kind_word: &str) -> Vec<FieldError> {
    let sp = path.child("selector");
    match spec.get("selector").filter(|s| !s.is_null()) {
        None => vec![FieldError::required(&sp, "")],
        Some(sel) => {
            let mut errs = validate_label_selector(sel, &sp);
            let count = sel.get("matchLabels").and_then(Value::as_object).map_or(0, |m| m.len())
                + sel.get("matchExpressions").and_then(Value::as_array).map_or(0, Vec::len);
            if count == 0 {
                errs.push(with_go_value(FieldErrorKind::Invalid, &sp, &go_label_selector(sel), &format!("empty selector is invalid for {kind_word}")));
            }
            errs
        }
    }
}

/// `selector` does not match template `labels`, unless the selector is empty.
fn template_label_mismatch(selector: &Selector, template: &Value, path: &Path) -> Option<FieldError> {
    let labels_value = template.get("metadata").and_then(|m| m.get("labels"));
    let labels: BTreeMap<String, String> =
        labels_value.and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect()).unwrap_or_default();
    let matches = match selector {
        Selector::Everything => true,
        Selector::Nothing | Selector::Invalid => false,
        Selector::Some(s) => s.matches(&labels),
    };
    (!matches).then(|| {
        with_go_value(
            FieldErrorKind::Invalid,
            &path.child("metadata").child("labels"),
            &go_string_map(labels_value),
            "`selector` does not match template `labels`",
        )
    })
}

/// The selector (as upstream renders an invalid one) for an `Invalid value` on `spec.selector`.
fn selector_value(spec: &Value) -> String {
    spec.get("selector").filter(|s| !s.is_null()).map_or_else(|| go_quote("null"), go_label_selector)
}

/// `ValidatePodTemplateSpecForReplicaSet` (also used by Deployments).
fn replica_set_template(spec: &Value, path: &Path, selector_path: &Path) -> Vec<FieldError> {
    let selector = as_selector(spec.get("selector"));
    if let Selector::Invalid = selector {
        return vec![with_go_value(FieldErrorKind::Invalid, selector_path, &selector_value(spec), "invalid label selector")];
    }
    let null = Value::Null;
    let template = spec.get("template").unwrap_or(&null);
    let tpath = path.child("template");
    let mut errs: Vec<FieldError> = template_label_mismatch(&selector, template, &tpath).into_iter().collect();
    errs.extend(pod::validate_pod_template(template, &tpath));
    let tspec = template.get("spec").unwrap_or(&null);
    let restart = str_at(tspec, "restartPolicy").unwrap_or("Always");
    if restart != "Always" {
        errs.push(FieldError::not_supported(tpath.child("spec").child("restartPolicy"), restart, &["Always"]));
    }
    if tspec.get("activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        errs.push(FieldError::forbidden(tpath.child("spec").child("activeDeadlineSeconds"), "activeDeadlineSeconds in ReplicaSet is not Supported"));
    }
    errs
}

/// `ValidateDeploymentSpec`.
fn deployment_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = non_negative(spec, "replicas", path).into_iter().collect();
    errs.extend(selector_errors(spec, path, "deployment"));
    errs.extend(replica_set_template(spec, path, &path.child("selector")));
    errs.extend(deployment_strategy(spec.get("strategy"), &path.child("strategy")));
    errs.extend(non_negative(spec, "minReadySeconds", path));
    errs.extend(non_negative(spec, "revisionHistoryLimit", path));
    if let Some(pds) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        errs.extend(non_negative(spec, "progressDeadlineSeconds", path));
        let min_ready = spec.get("minReadySeconds").and_then(Value::as_i64).unwrap_or(0);
        if pds <= min_ready {
            errs.push(FieldError::invalid(path.child("progressDeadlineSeconds"), pds, "must be greater than minReadySeconds"));
        }
    }
    errs
}

/// `ValidateDeploymentStrategy`.
fn deployment_strategy(strategy: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let null = Value::Null;
    let strategy = strategy.unwrap_or(&null);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match str_at(strategy, "type").unwrap_or("") {
        "Recreate" => {
            rolling.map(|_| FieldError::forbidden(path.child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'")).into_iter().collect()
        }
        "RollingUpdate" => match rolling {
            None => vec![FieldError::required(path.child("rollingUpdate"), "this should be defaulted and never be nil")],
            Some(ru) => rolling_update_deployment(ru, &path.child("rollingUpdate")),
        },
        other => {
            let ru = if rolling.is_some() { "(*apps.RollingUpdateDeployment)(0xc000000000)" } else { "(*apps.RollingUpdateDeployment)(nil)" };
            let rendered = format!("apps.DeploymentStrategy{{Type:{}, RollingUpdate:{ru}}}", go_quote(other));
            vec![with_go_value(FieldErrorKind::NotSupported, path, &rendered, "supported values: \"Recreate\", \"RollingUpdate\"")]
        }
    }
}

/// `ValidateRollingUpdateDeployment`.
fn rolling_update_deployment(ru: &Value, path: &Path) -> Vec<FieldError> {
    let (unavailable, surge) = (ru.get("maxUnavailable"), ru.get("maxSurge"));
    let up = path.child("maxUnavailable");
    let mut errs = positive_int_or_percent(unavailable, &up);
    errs.extend(positive_int_or_percent(surge, &path.child("maxSurge")));
    if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
        errs.push(with_go_value(FieldErrorKind::Invalid, &up, &go_int_or_string(unavailable), "may not be 0 when `maxSurge` is 0"));
    }
    errs.extend(not_more_than_100_percent(unavailable, &up));
    errs
}

fn is_valid_percent(s: &str) -> bool {
    s.strip_suffix('%').is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// The number of a valid percent string (`getPercentValue`).
fn percent_value(v: Option<&Value>) -> Option<i64> {
    let s = v?.as_str()?;
    is_valid_percent(s).then(|| s[..s.len() - 1].parse().unwrap_or(0))
}

/// `getIntOrPercentValue`: the percent, the int, or a string's integer value (0 when not one).
fn int_or_percent_value(v: Option<&Value>) -> i64 {
    if let Some(p) = percent_value(v) {
        return p;
    }
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// `ValidatePositiveIntOrPercent`.
fn positive_int_or_percent(v: Option<&Value>, path: &Path) -> Vec<FieldError> {
    match v {
        Some(Value::String(s)) if !is_valid_percent(s) => {
            vec![with_go_value(FieldErrorKind::Invalid, path, &go_int_or_string(v), &names::regex_error(PERCENT_MSG, PERCENT_FMT, &["1%", "93%"]))]
        }
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
            vec![FieldError::invalid(path, n.as_i64().unwrap_or(0), "must be greater than or equal to 0")]
        }
        _ => Vec::new(),
    }
}

/// `IsNotMoreThan100Percent`.
fn not_more_than_100_percent(v: Option<&Value>, path: &Path) -> Option<FieldError> {
    percent_value(v).filter(|p| *p > 100).map(|_| with_go_value(FieldErrorKind::Invalid, path, &go_int_or_string(v), "must not be greater than 100%"))
}

/// `ValidateReplicaSetSpec`.
fn replica_set_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = non_negative(spec, "replicas", path).into_iter().collect();
    errs.extend(non_negative(spec, "minReadySeconds", path));
    // Upstream says "deployment" here too.
    errs.extend(selector_errors(spec, path, "deployment"));
    errs.extend(replica_set_template(spec, path, &path.child("selector")));
    errs
}

/// `ValidateStatefulSetSpec`. As upstream, the template's pod spec is not validated beyond its
/// labels, annotations, restart policy and deadline (its volumes may name claim templates).
fn stateful_set_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(policy) = spec.get("podManagementPolicy").and_then(Value::as_str) {
        match policy {
            "" => errs.push(FieldError::required(path.child("podManagementPolicy"), "")),
            "OrderedReady" | "Parallel" => {}
            other => errs.push(FieldError::invalid(path.child("podManagementPolicy"), other, "must be 'OrderedReady' or 'Parallel'")),
        }
    }
    if let Some(strategy) = spec.get("updateStrategy").filter(|s| !s.is_null()) {
        errs.extend(stateful_set_update_strategy(strategy, &path.child("updateStrategy")));
    }
    if let Some(policy) = spec.get("persistentVolumeClaimRetentionPolicy").filter(|p| !p.is_null()) {
        let pp = path.child("persistentVolumeClaimRetentionPolicy");
        for key in ["whenDeleted", "whenScaled"] {
            let v = str_at(policy, key).unwrap_or("");
            if v != "Retain" && v != "Delete" {
                errs.push(FieldError::not_supported(pp.child(key), v, &["Retain", "Delete"]));
            }
        }
    }
    errs.extend(non_negative(spec, "replicas", path));
    errs.extend(non_negative(spec, "minReadySeconds", path));
    if let Some(ordinals) = spec.get("ordinals").filter(|o| !o.is_null()) {
        errs.extend(non_negative(ordinals, "start", &path.child("ordinals")));
    }
    errs.extend(selector_errors(spec, path, "statefulset"));

    let null = Value::Null;
    let template = spec.get("template").unwrap_or(&null);
    let tpath = path.child("template");
    let selector = as_selector(spec.get("selector"));
    if let Selector::Invalid = selector {
        errs.push(with_go_value(FieldErrorKind::Invalid, &path.child("selector"), &selector_value(spec), ""));
    } else {
        errs.extend(template_label_mismatch(&selector, template, &tpath));
        let meta = template.get("metadata").unwrap_or(&null);
        errs.extend(super::util::validate_labels(meta.get("labels"), &tpath.child("labels")));
        errs.extend(pod::validate_annotations(meta.get("annotations"), &tpath.child("annotations")));
    }
    let tspec = template.get("spec").unwrap_or(&null);
    let restart = str_at(tspec, "restartPolicy").unwrap_or("Always");
    if restart != "Always" {
        errs.push(FieldError::not_supported(tpath.child("spec").child("restartPolicy"), restart, &["Always"]));
    }
    if tspec.get("activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        errs.push(FieldError::forbidden(tpath.child("spec").child("activeDeadlineSeconds"), "activeDeadlineSeconds in StatefulSet is not Supported"));
    }
    errs
}

/// The `updateStrategy` part of `ValidateStatefulSetSpec`.
fn stateful_set_update_strategy(strategy: &Value, path: &Path) -> Vec<FieldError> {
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    let rp = path.child("rollingUpdate");
    match str_at(strategy, "type").unwrap_or("") {
        "" => vec![FieldError::required(path, "")],
        "OnDelete" => rolling
            .map(|ru| {
                let max =
                    if ru.get("maxUnavailable").is_some_and(|m| !m.is_null()) { "(*intstr.IntOrString)(0xc000000000)" } else { "(*intstr.IntOrString)(nil)" };
                let rendered = format!(
                    "apps.RollingUpdateStatefulSetStrategy{{Partition:{}, MaxUnavailable:{max}}}",
                    ru.get("partition").and_then(Value::as_i64).unwrap_or(0)
                );
                with_go_value(FieldErrorKind::Invalid, &rp, &rendered, "only allowed for updateStrategy 'RollingUpdate'")
            })
            .into_iter()
            .collect(),
        "RollingUpdate" => {
            let Some(ru) = rolling else { return Vec::new() };
            let mut errs: Vec<FieldError> = non_negative(ru, "partition", &rp).into_iter().collect();
            let max = ru.get("maxUnavailable").filter(|m| !m.is_null());
            if max.is_some() {
                let mp = rp.child("maxUnavailable");
                errs.extend(positive_int_or_percent(max, &mp));
                if int_or_percent_value(max) == 0 {
                    errs.push(with_go_value(FieldErrorKind::Invalid, &mp, &go_int_or_string(max), "cannot be 0"));
                }
                errs.extend(not_more_than_100_percent(max, &mp));
            }
            errs
        }
        other => {
            let ru = if rolling.is_some() { "(*apps.RollingUpdateStatefulSetStrategy)(0xc000000000)" } else { "(*apps.RollingUpdateStatefulSetStrategy)(nil)" };
            let rendered = format!("apps.StatefulSetUpdateStrategy{{Type:{}, RollingUpdate:{ru}}}", go_quote(other));
            vec![with_go_value(FieldErrorKind::Invalid, path, &rendered, "must be 'RollingUpdate' or 'OnDelete'")]
        }
    }
}

/// The selector of a Deployment or ReplicaSet may not change (apps/v1).
fn selector_immutable(spec: &Value, old: &Value, path: &Path) -> Option<FieldError> {
    (!semantic_eq(spec.get("selector"), old.get("selector")))
        .then(|| with_go_value(FieldErrorKind::Invalid, &path.child("selector"), &selector_value(spec), "field is immutable"))
}

/// `ValidateStatefulSetUpdate`: only some spec fields may change.
fn stateful_set_update(spec: &Value, old: &Value) -> Option<FieldError> {
    const MUTABLE: &[&str] = &["replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds"];
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in MUTABLE {
                m.remove(*k);
            }
        }
        v
    };
    (!semantic_eq(Some(&strip(spec)), Some(&strip(old)))).then(|| {
        FieldError::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaulted(kind: &str, spec: Value) -> Value {
        let mut obj = json!({"kind": kind, "metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        crate::defaults::apply_defaults(kind, &mut obj);
        obj
    }

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| format!("{e}")).collect()
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    }

    #[test]
    fn minimal_workloads_are_valid() {
        for kind in ["Deployment", "ReplicaSet", "StatefulSet"] {
            let obj = defaulted(kind, json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}));
            assert_eq!(msgs(&validate(kind, &obj, None)), Vec::<String>::new(), "{kind}");
            let mut scaled = obj.clone();
            scaled["spec"]["replicas"] = 3.into();
            scaled["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2".into();
            assert!(validate(kind, &scaled, Some(&obj)).is_empty(), "{kind}");
        }
    }

    #[test]
    fn selector_rules() {
        let obj = defaulted("Deployment", json!({"selector": {}, "template": template(json!({"app": "web"}))}));
        assert_eq!(
            msgs(&validate("Deployment", &obj, None)),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
            ]
        );
        let obj = defaulted("Deployment", json!({"selector": {"matchLabels": {"app": "api"}}, "template": template(json!({"app": "web", "tier": "x"}))}));
        assert_eq!(
            msgs(&validate("Deployment", &obj, None)),
            ["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\", \"tier\":\"x\"}: `selector` does not match template `labels`"]
        );
        let obj = defaulted("ReplicaSet", json!({"template": template(json!({"app": "web"}))}));
        assert_eq!(
            msgs(&validate("ReplicaSet", &obj, None)),
            [
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
            ]
        );
        let obj = defaulted("StatefulSet", json!({"selector": {}, "template": template(json!({"app": "web"}))}));
        assert_eq!(
            msgs(&validate("StatefulSet", &obj, None)),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for statefulset"
            ]
        );
    }

    #[test]
    fn selector_is_immutable() {
        let old = defaulted("Deployment", json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web", "v": "2"}))}));
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
        assert_eq!(
            msgs(&validate("Deployment", &new, Some(&old))),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
            ]
        );
    }

    #[test]
    fn template_rules() {
        let mut t = template(json!({"app": "web"}));
        t["spec"]["restartPolicy"] = "Never".into();
        t["spec"]["containers"][0]["name"] = "".into();
        let obj = defaulted("Deployment", json!({"replicas": -1, "selector": {"matchLabels": {"app": "web"}}, "template": t}));
        assert_eq!(
            msgs(&validate("Deployment", &obj, None)),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.containers[0].name: Required value",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
    }

    #[test]
    fn deployment_strategy_rules() {
        let base = json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))});
        let mut spec = base.clone();
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
        assert_eq!(
            msgs(&validate("Deployment", &defaulted("Deployment", spec), None)),
            ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}: may not be 0 when `maxSurge` is 0"]
        );
        let mut spec = base.clone();
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "120%", "maxSurge": "x"}});
        assert_eq!(
            msgs(&validate("Deployment", &defaulted("Deployment", spec), None)),
            [
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"x\"}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"120%\"}: must not be greater than 100%",
            ]
        );
        let mut spec = base.clone();
        spec["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        assert_eq!(
            msgs(&validate("Deployment", &defaulted("Deployment", spec), None)),
            ["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]
        );
        let mut spec = base;
        spec["strategy"] = json!({"type": "BlueGreen"});
        assert_eq!(
            msgs(&validate("Deployment", &defaulted("Deployment", spec), None)),
            [
                "spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:\"BlueGreen\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\""
            ]
        );
    }

    #[test]
    fn statefulset_rules() {
        let mut t = template(json!({"app": "db"}));
        t["spec"]["containers"][0]["name"] = "".into(); // not validated for StatefulSets upstream
        let obj = defaulted(
            "StatefulSet",
            json!({"selector": {"matchLabels": {"app": "db"}}, "template": t, "serviceName": "db",
                   "podManagementPolicy": "Random", "updateStrategy": {"type": "Sometimes"}}),
        );
        assert_eq!(
            msgs(&validate("StatefulSet", &obj, None)),
            [
                "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
                "spec.updateStrategy: Invalid value: apps.StatefulSetUpdateStrategy{Type:\"Sometimes\", RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}: must be 'RollingUpdate' or 'OnDelete'",
            ]
        );

        let old =
            defaulted("StatefulSet", json!({"selector": {"matchLabels": {"app": "db"}}, "template": template(json!({"app": "db"})), "serviceName": "db"}));
        let mut new = old.clone();
        new["spec"]["serviceName"] = "db2".into();
        assert_eq!(
            msgs(&validate("StatefulSet", &new, Some(&old))),
            [
                "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
            ]
        );
    }
}
