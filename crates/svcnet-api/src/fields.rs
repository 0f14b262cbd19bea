//! The fields each kind supports in field selectors, and their values (upstream's per-resource
//! `GetAttrs`/`SelectableFields`: `metadata.name`, `metadata.namespace` everywhere, `spec.nodeName`
//! and `status.phase` on pods, `involvedObject.*` on events, ...).
//!
//! Which labels a request may use is decided, as in kube-apiserver, by the field label conversion
//! registered for the kind's group-version (`pkg/apis/core/v1/conversion.go`): kinds without one
//! (everything outside the core group, ConfigMaps, Endpoints, ...) accept only `metadata.name` and
//! `metadata.namespace` (`runtime.DefaultMetaV1FieldSelectorConversion`). A label the conversion
//! accepts but the kind does not expose (`status.podIPs` on pods) selects on `""`. Note that
//! apps/v1 registers no conversion, so ReplicaSet `status.replicas` is rejected, exactly as
//! kube-apiserver rejects it.

use serde_json::Value;

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn bool_at(v: &Value, ptr: &str) -> String {
    v.pointer(ptr).and_then(Value::as_bool).unwrap_or(false).to_string()
}

/// `""` becomes the API default the object would be decoded with.
fn or_default<'a>(v: &'a str, default: &'a str) -> &'a str {
    if v.is_empty() { default } else { v }
}

/// Go's `%q` (`strconv.Quote`) of a string.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a selectable field, or `Err` with upstream's message
/// (`"foo" is not a known field selector: only "metadata.name", "metadata.namespace"`)
/// when the kind does not support selecting on it.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> Result<String, String> {
    let name = || Ok(str_at(obj, "/metadata/name").to_string());
    let namespace = || Ok(str_at(obj, "/metadata/namespace").to_string());
    let value = |ptr: &str| Ok(str_at(obj, ptr).to_string());
    // The message of the core/v1 conversion functions.
    let not_supported = || Err(format!("field label not supported: {field}"));
    match kind {
        "Pod" => match field {
            "metadata.name" => name(),
            "metadata.namespace" => namespace(),
            // Old v1 clients send spec.host; the conversion maps it to spec.nodeName.
            "spec.nodeName" | "spec.host" => value("/spec/nodeName"),
            "spec.restartPolicy" => Ok(or_default(str_at(obj, "/spec/restartPolicy"), "Always").to_string()),
            "spec.schedulerName" => Ok(or_default(str_at(obj, "/spec/schedulerName"), "default-scheduler").to_string()),
            // The deprecated serviceAccount is an alias when serviceAccountName is empty.
            "spec.serviceAccountName" => Ok(or_default(str_at(obj, "/spec/serviceAccountName"), str_at(obj, "/spec/serviceAccount")).to_string()),
            "spec.hostNetwork" => Ok(bool_at(obj, "/spec/hostNetwork")),
            "status.phase" => value("/status/phase"),
            // v1 → internal conversion: status.podIP wins over status.podIPs[0].
            "status.podIP" => {
                let ip = str_at(obj, "/status/podIP");
                let first = obj.pointer("/status/podIPs/0/ip").and_then(Value::as_str).unwrap_or("");
                Ok(or_default(ip, first).to_string())
            }
            // Accepted by the conversion but not among the pod's selectable fields.
            "status.podIPs" => Ok(String::new()),
            "status.nominatedNodeName" => value("/status/nominatedNodeName"),
            _ => not_supported(),
        },
        "Event" => match field {
            "metadata.name" => name(),
            "metadata.namespace" => namespace(),
            "involvedObject.kind" => value("/involvedObject/kind"),
            "involvedObject.namespace" => value("/involvedObject/namespace"),
            "involvedObject.name" => value("/involvedObject/name"),
            "involvedObject.uid" => value("/involvedObject/uid"),
            "involvedObject.apiVersion" => value("/involvedObject/apiVersion"),
            "involvedObject.resourceVersion" => value("/involvedObject/resourceVersion"),
            "involvedObject.fieldPath" => value("/involvedObject/fieldPath"),
            "reason" => value("/reason"),
            "reportingComponent" => value("/reportingComponent"),
            "source" => Ok(or_default(str_at(obj, "/source/component"), str_at(obj, "/reportingComponent")).to_string()),
            "type" => value("/type"),
            _ => not_supported(),
        },
        // Cluster-scoped with their own conversions: metadata.namespace is not supported.
        "Namespace" => match field {
            "metadata.name" => name(),
            "status.phase" => Ok(or_default(str_at(obj, "/status/phase"), "Active").to_string()),
            _ => not_supported(),
        },
        "Node" => match field {
            "metadata.name" => name(),
            "spec.unschedulable" => Ok(bool_at(obj, "/spec/unschedulable")),
            _ => not_supported(),
        },
        "Service" => match field {
            "metadata.name" => name(),
            "metadata.namespace" => namespace(),
            "spec.clusterIP" => value("/spec/clusterIP"),
            "spec.type" => Ok(or_default(str_at(obj, "/spec/type"), "ClusterIP").to_string()),
            _ => not_supported(),
        },
        // runtime.DefaultMetaV1FieldSelectorConversion. Cluster-scoped kinds have no namespace and
        // select on "".
        _ => match field {
            "metadata.name" => name(),
            "metadata.namespace" => namespace(),
            _ => Err(format!("{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"", go_quote(field))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-7d4b9c-x2x9q", "namespace": "shop", "uid": "6f1c0c3e-0b7e-4d7f-9a57-1b2c3d4e5f60"},
            "spec": {
                "containers": [{"name": "web", "image": "nginx:1.27"}],
                "nodeName": "node-a",
                "restartPolicy": "OnFailure",
                "schedulerName": "default-scheduler",
                "serviceAccountName": "web",
                "hostNetwork": true
            },
            "status": {
                "phase": "Running",
                "podIP": "10.244.1.7",
                "podIPs": [{"ip": "10.244.1.7"}, {"ip": "fd00::7"}],
                "nominatedNodeName": "node-b"
            }
        })
    }

    fn event() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "backend.17c3a1b2c3d4e5f6", "namespace": "shop"},
            "involvedObject": {
                "kind": "Service",
                "namespace": "shop",
                "name": "backend",
                "uid": "0d6f1f9e-4c1b-4b7e-8a42-5e9a0c1d2e3f",
                "apiVersion": "v1",
                "resourceVersion": "4211",
                "fieldPath": "spec.ports{http}"
            },
            "reason": "EnsuringLoadBalancer",
            "message": "Ensuring load balancer",
            "source": {"component": "service-controller"},
            "reportingComponent": "service-lb-controller",
            "type": "Normal"
        })
    }

    fn ok(kind: &str, obj: &Value, field: &str) -> String {
        field_value(kind, obj, field).unwrap_or_else(|e| panic!("{kind} {field}: {e}"))
    }

    #[test]
    fn pod_fields() {
        let p = pod();
        assert_eq!(ok("Pod", &p, "metadata.name"), "web-7d4b9c-x2x9q");
        assert_eq!(ok("Pod", &p, "metadata.namespace"), "shop");
        assert_eq!(ok("Pod", &p, "spec.nodeName"), "node-a");
        assert_eq!(ok("Pod", &p, "spec.host"), "node-a");
        assert_eq!(ok("Pod", &p, "spec.restartPolicy"), "OnFailure");
        assert_eq!(ok("Pod", &p, "spec.schedulerName"), "default-scheduler");
        assert_eq!(ok("Pod", &p, "spec.serviceAccountName"), "web");
        assert_eq!(ok("Pod", &p, "spec.hostNetwork"), "true");
        assert_eq!(ok("Pod", &p, "status.phase"), "Running");
        assert_eq!(ok("Pod", &p, "status.podIP"), "10.244.1.7");
        assert_eq!(ok("Pod", &p, "status.podIPs"), "");
        assert_eq!(ok("Pod", &p, "status.nominatedNodeName"), "node-b");
    }

    #[test]
    fn pod_fields_missing_values() {
        let p = json!({"metadata": {"name": "pending", "namespace": "default"}, "spec": {"containers": []}});
        assert_eq!(ok("Pod", &p, "spec.nodeName"), "");
        assert_eq!(ok("Pod", &p, "spec.hostNetwork"), "false");
        assert_eq!(ok("Pod", &p, "status.phase"), "");
        assert_eq!(ok("Pod", &p, "status.podIP"), "");
        assert_eq!(ok("Pod", &p, "status.nominatedNodeName"), "");
        assert_eq!(ok("Pod", &p, "spec.serviceAccountName"), "");
        // API defaults the stored object is decoded with.
        assert_eq!(ok("Pod", &p, "spec.restartPolicy"), "Always");
        assert_eq!(ok("Pod", &p, "spec.schedulerName"), "default-scheduler");
    }

    #[test]
    fn pod_ip_and_service_account_conversions() {
        // Only podIPs set: the first one.
        let p = json!({"status": {"podIPs": [{"ip": "fd00::9"}, {"ip": "10.0.0.9"}]}});
        assert_eq!(ok("Pod", &p, "status.podIP"), "fd00::9");
        // Both set and different: podIP is authoritative.
        let p = json!({"status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.2"}]}});
        assert_eq!(ok("Pod", &p, "status.podIP"), "10.0.0.1");
        // The deprecated serviceAccount alias.
        let p = json!({"spec": {"serviceAccount": "legacy"}});
        assert_eq!(ok("Pod", &p, "spec.serviceAccountName"), "legacy");
        let p = json!({"spec": {"serviceAccount": "legacy", "serviceAccountName": "new"}});
        assert_eq!(ok("Pod", &p, "spec.serviceAccountName"), "new");
    }

    #[test]
    fn pod_unsupported_fields() {
        let p = pod();
        assert_eq!(field_value("Pod", &p, "spec.containers"), Err("field label not supported: spec.containers".into()));
        assert_eq!(field_value("Pod", &p, "metadata.uid"), Err("field label not supported: metadata.uid".into()));
        assert_eq!(field_value("Pod", &p, "foo"), Err("field label not supported: foo".into()));
    }

    #[test]
    fn event_fields() {
        let e = event();
        assert_eq!(ok("Event", &e, "metadata.name"), "backend.17c3a1b2c3d4e5f6");
        assert_eq!(ok("Event", &e, "metadata.namespace"), "shop");
        assert_eq!(ok("Event", &e, "involvedObject.kind"), "Service");
        assert_eq!(ok("Event", &e, "involvedObject.namespace"), "shop");
        assert_eq!(ok("Event", &e, "involvedObject.name"), "backend");
        assert_eq!(ok("Event", &e, "involvedObject.uid"), "0d6f1f9e-4c1b-4b7e-8a42-5e9a0c1d2e3f");
        assert_eq!(ok("Event", &e, "involvedObject.apiVersion"), "v1");
        assert_eq!(ok("Event", &e, "involvedObject.resourceVersion"), "4211");
        assert_eq!(ok("Event", &e, "involvedObject.fieldPath"), "spec.ports{http}");
        assert_eq!(ok("Event", &e, "reason"), "EnsuringLoadBalancer");
        assert_eq!(ok("Event", &e, "reportingComponent"), "service-lb-controller");
        assert_eq!(ok("Event", &e, "source"), "service-controller");
        assert_eq!(ok("Event", &e, "type"), "Normal");
        assert_eq!(field_value("Event", &e, "message"), Err("field label not supported: message".into()));
    }

    #[test]
    fn event_source_falls_back_to_reporting_component() {
        let e = json!({"metadata": {"name": "e"}, "reportingComponent": "kubelet"});
        assert_eq!(ok("Event", &e, "source"), "kubelet");
        let e = json!({"metadata": {"name": "e"}});
        assert_eq!(ok("Event", &e, "source"), "");
        assert_eq!(ok("Event", &e, "involvedObject.uid"), "");
    }

    #[test]
    fn namespace_fields() {
        let ns = json!({"metadata": {"name": "shop"}, "status": {"phase": "Terminating"}});
        assert_eq!(ok("Namespace", &ns, "metadata.name"), "shop");
        assert_eq!(ok("Namespace", &ns, "status.phase"), "Terminating");
        let fresh = json!({"metadata": {"name": "new"}});
        assert_eq!(ok("Namespace", &fresh, "status.phase"), "Active");
        // The Namespace conversion does not accept metadata.namespace.
        assert_eq!(field_value("Namespace", &ns, "metadata.namespace"), Err("field label not supported: metadata.namespace".into()));
    }

    #[test]
    fn node_fields() {
        let node = json!({"metadata": {"name": "node-a"}, "spec": {"unschedulable": true}});
        assert_eq!(ok("Node", &node, "metadata.name"), "node-a");
        assert_eq!(ok("Node", &node, "spec.unschedulable"), "true");
        let schedulable = json!({"metadata": {"name": "node-b"}, "spec": {}});
        assert_eq!(ok("Node", &schedulable, "spec.unschedulable"), "false");
        assert_eq!(field_value("Node", &node, "metadata.namespace"), Err("field label not supported: metadata.namespace".into()));
        assert_eq!(field_value("Node", &node, "status.phase"), Err("field label not supported: status.phase".into()));
    }

    #[test]
    fn service_fields() {
        let svc = json!({
            "metadata": {"name": "backend", "namespace": "shop"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"]}
        });
        assert_eq!(ok("Service", &svc, "metadata.name"), "backend");
        assert_eq!(ok("Service", &svc, "metadata.namespace"), "shop");
        assert_eq!(ok("Service", &svc, "spec.clusterIP"), "10.96.12.34");
        assert_eq!(ok("Service", &svc, "spec.type"), "NodePort");
        let headless = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None"}});
        assert_eq!(ok("Service", &headless, "spec.clusterIP"), "None");
        assert_eq!(ok("Service", &headless, "spec.type"), "ClusterIP");
        let external = json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(ok("Service", &external, "spec.clusterIP"), "");
        assert_eq!(field_value("Service", &svc, "spec.externalName"), Err("field label not supported: spec.externalName".into()));
    }

    #[test]
    fn default_conversion_kinds() {
        let rs = json!({"metadata": {"name": "web-7d4b9c", "namespace": "shop"}, "status": {"replicas": 3}});
        for kind in ["ConfigMap", "Endpoints", "EndpointSlice", "ServiceAccount", "Deployment", "ReplicaSet", "StatefulSet", "Lease", "NetworkPolicy"] {
            assert_eq!(ok(kind, &rs, "metadata.name"), "web-7d4b9c", "{kind}");
            assert_eq!(ok(kind, &rs, "metadata.namespace"), "shop", "{kind}");
        }
        // apps/v1 registers no field label conversion: status.replicas is rejected upstream.
        assert_eq!(
            field_value("ReplicaSet", &rs, "status.replicas"),
            Err(r#""status.replicas" is not a known field selector: only "metadata.name", "metadata.namespace""#.into())
        );
        assert_eq!(field_value("ConfigMap", &rs, "data"), Err(r#""data" is not a known field selector: only "metadata.name", "metadata.namespace""#.into()));
        assert_eq!(
            field_value("EndpointSlice", &rs, "addressType"),
            Err(r#""addressType" is not a known field selector: only "metadata.name", "metadata.namespace""#.into())
        );
    }

    #[test]
    fn unknown_cluster_scoped_kind_selects_empty_namespace() {
        let obj = json!({"metadata": {"name": "cluster-admin"}});
        assert_eq!(ok("ClusterRole", &obj, "metadata.name"), "cluster-admin");
        assert_eq!(ok("ClusterRole", &obj, "metadata.namespace"), "");
    }

    #[test]
    fn unknown_field_is_quoted_like_go() {
        let obj = json!({"metadata": {"name": "x"}});
        assert_eq!(
            field_value("Lease", &obj, "spec.\"holder\"\n"),
            Err(r#""spec.\"holder\"\n" is not a known field selector: only "metadata.name", "metadata.namespace""#.into())
        );
        assert_eq!(go_quote("a\u{1}b\\"), r#""a\x01b\\""#);
        assert_eq!(go_quote("héllo"), "\"héllo\"");
    }
}
