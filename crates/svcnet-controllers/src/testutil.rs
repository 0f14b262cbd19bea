//! Fixtures for the unit tests: Services and Pods from a few JSON fields.

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};

/// Service `svc` in namespace `ns` with `spec`.
pub fn service(spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": "svc", "namespace": "ns", "uid": "uid-svc"}, "spec": spec})).unwrap()
}

/// Pod `name` in `ns` on `node-1` with `labels` and `ip`, Ready or not; `spec` adds to its spec.
pub fn pod(name: &str, labels: Value, ip: &str, ready: bool, spec: Value) -> Pod {
    let mut full = json!({"nodeName": "node-1", "containers": [{"name": "c"}]});
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": labels},
        "spec": full,
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    }))
    .unwrap()
}
