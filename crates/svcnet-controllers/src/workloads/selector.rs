//! Label selectors (`matchLabels` and `matchExpressions`) as the workload controllers apply them
//! to labels: upstream's `metav1.LabelSelectorAsSelector` followed by `Matches`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects `labels`. An empty selector selects everything (upstream's
/// semantics; validation keeps workloads from having one); an unknown operator selects nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: serde_json::Value) -> BTreeMap<String, String> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn match_labels_and_expressions() {
        let s: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "x", "operator": "Exists"},
                {"key": "y", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        assert!(matches(&s, &labels(json!({"app": "web", "tier": "a", "x": ""}))));
        assert!(!matches(&s, &labels(json!({"app": "web", "tier": "c", "x": ""}))));
        assert!(!matches(&s, &labels(json!({"app": "web", "tier": "a", "x": "", "env": "prod"}))));
        assert!(!matches(&s, &labels(json!({"app": "web", "tier": "a"}))));
        assert!(!matches(&s, &labels(json!({"app": "web", "tier": "a", "x": "", "y": "1"}))));
        assert!(!matches(&s, &labels(json!({"app": "db", "tier": "a", "x": ""}))));
        assert!(matches(&LabelSelector::default(), &labels(json!({"any": "thing"}))));
    }
}
