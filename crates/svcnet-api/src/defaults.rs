//! Defaulting, as kube-apiserver's `SetDefaults_*` functions do for the served kinds, applied after
//! decoding and before validation, on create and on every update (so a field a client drops comes
//! back with its default, as upstream).

use serde_json::{Map, Value, json};

/// Fills in the defaults of an object of `kind` in place.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    match kind {
        "Service" => service(obj),
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
            }
        }
        "Namespace" => namespace(obj),
        "Deployment" => deployment(obj),
        "ReplicaSet" => workload(obj, |_| {}),
        "StatefulSet" => statefulset(obj),
        "NetworkPolicy" => network_policy(obj),
        "EndpointSlice" => endpoint_slice(obj),
        "Endpoints" => endpoints(obj),
        "Node" => node(obj),
        "IPAddressPool" => {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                default(spec, "autoAssign", true.into());
            }
        }
        "Event" => {
            if obj.get("type").is_none() {
                obj["type"] = "Normal".into();
            }
            // An event's involvedObject defaults its namespace to the event's.
            let ns = obj["metadata"]["namespace"].clone();
            if let Some(o) = obj.get_mut("involvedObject").and_then(Value::as_object_mut)
                && !o.contains_key("namespace")
                && !ns.is_null()
            {
                o.insert("namespace".into(), ns);
            }
        }
        _ => {}
    }
}

/// The object at `v[key]`, created empty when absent or null.
fn obj_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let m = v.as_object_mut().expect("defaulting applies to objects");
    let entry = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made an object")
}

/// Inserts `key: value` when `key` is absent or null.
fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

fn service(obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    let spec = obj_at(obj, "spec");
    default(spec, "type", "ClusterIP".into());
    default(spec, "sessionAffinity", "None".into());
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if spec["sessionAffinity"] == "ClientIP" {
        let cfg = spec.entry("sessionAffinityConfig").or_insert_with(|| json!({}));
        if cfg.get("clientIP").is_none_or(Value::is_null) {
            cfg["clientIP"] = json!({});
        }
        if cfg["clientIP"].get("timeoutSeconds").is_none_or(Value::is_null) {
            cfg["clientIP"]["timeoutSeconds"] = 10800.into();
        }
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", "TCP".into());
            let unset = match p.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                _ => false,
            };
            if unset && let Some(port) = p.get("port").cloned() {
                p.insert("targetPort".into(), port);
            }
        }
    }
    if ty != "ExternalName" {
        default(spec, "internalTrafficPolicy", "Cluster".into());
        // A single-stack IPv4 cluster, as kube-apiserver defaults it for one.
        if spec.get("clusterIP").and_then(Value::as_str) != Some("None") || spec.get("selector").is_some() {
            default(spec, "ipFamilyPolicy", "SingleStack".into());
            default(spec, "ipFamilies", json!(["IPv4"]));
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", "Cluster".into());
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", true.into());
    }
}

fn container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    default(m, "terminationMessagePath", "/dev/termination-log".into());
    default(m, "terminationMessagePolicy", "File".into());
    let image = m.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    // `:latest` or no tag pulls always; a tag or digest pulls if not present.
    let last = image.rsplit('/').next().unwrap_or("");
    let tagged = last.contains(':') && !last.ends_with(":latest");
    let digest = image.contains('@');
    default(m, "imagePullPolicy", if tagged || digest { "IfNotPresent" } else { "Always" }.into());
    default(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", "TCP".into());
        }
    }
    if let Some(env) = m.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(fr) = e.get_mut("valueFrom").and_then(|v| v.get_mut("fieldRef")).and_then(Value::as_object_mut) {
                default(fr, "apiVersion", "v1".into());
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(Value::as_object_mut) {
            default(p, "timeoutSeconds", 1.into());
            default(p, "periodSeconds", 10.into());
            default(p, "successThreshold", 1.into());
            default(p, "failureThreshold", 3.into());
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                default(h, "path", "/".into());
                default(h, "scheme", "HTTP".into());
            }
        }
    }
}

/// `SetDefaults_PodSpec` and the container defaults.
pub fn pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else { return };
    default(m, "restartPolicy", "Always".into());
    default(m, "dnsPolicy", "ClusterFirst".into());
    default(m, "terminationGracePeriodSeconds", 30.into());
    default(m, "schedulerName", "default-scheduler".into());
    default(m, "securityContext", json!({}));
    default(m, "enableServiceLinks", true.into());
    if m.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        // Host-network pods publish their container ports on the host.
        for c in m.get_mut("containers").and_then(Value::as_array_mut).into_iter().flatten() {
            for p in c.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if p.get("hostPort").is_none() {
                    p["hostPort"] = p.get("containerPort").cloned().unwrap_or(Value::Null);
                }
            }
        }
    }
    for list in ["containers", "initContainers"] {
        for c in m.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            container(c);
        }
    }
}

fn namespace(obj: &mut Value) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if !name.is_empty() {
        let labels = obj_at(obj_at_value(obj, "metadata"), "labels");
        labels.insert("kubernetes.io/metadata.name".into(), name.into());
    }
}

fn obj_at_value<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    obj_at(v, key);
    &mut v[key]
}

/// Defaults shared by the apps kinds: replicas 1, template pod spec, revisionHistoryLimit 10.
fn workload(obj: &mut Value, extra: impl FnOnce(&mut Map<String, Value>)) {
    if !obj.is_object() {
        return;
    }
    let spec = obj_at(obj, "spec");
    default(spec, "replicas", 1.into());
    if let Some(t) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod_spec(t);
    }
    extra(spec);
}

fn deployment(obj: &mut Value) {
    workload(obj, |spec| {
        default(spec, "revisionHistoryLimit", 10.into());
        default(spec, "progressDeadlineSeconds", 600.into());
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if strategy.get("type").is_none_or(Value::is_null) {
            strategy["type"] = "RollingUpdate".into();
        }
        if strategy["type"] == "RollingUpdate" {
            let ru = strategy.as_object_mut().expect("object").entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default(ru, "maxUnavailable", "25%".into());
                default(ru, "maxSurge", "25%".into());
            }
        }
    });
}

fn statefulset(obj: &mut Value) {
    workload(obj, |spec| {
        default(spec, "revisionHistoryLimit", 10.into());
        default(spec, "podManagementPolicy", "OrderedReady".into());
        let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        if strategy.get("type").is_none_or(Value::is_null) {
            strategy["type"] = "RollingUpdate".into();
        }
        if strategy["type"] == "RollingUpdate" {
            let ru = strategy.as_object_mut().expect("object").entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                default(ru, "partition", 0.into());
            }
        }
        default(spec, "persistentVolumeClaimRetentionPolicy", json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
    });
}

fn network_policy(obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    let spec = obj_at(obj, "spec");
    for dir in ["ingress", "egress"] {
        for rule in spec.get_mut(dir).and_then(Value::as_array_mut).into_iter().flatten() {
            for p in rule.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(p) = p.as_object_mut() {
                    default(p, "protocol", "TCP".into());
                }
            }
        }
    }
    // Ingress always; Egress too when egress rules are given (upstream's policyTypes default).
    if spec.get("policyTypes").is_none_or(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty)) {
        let mut types = vec![json!("Ingress")];
        if spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty()) {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

fn endpoint_slice(obj: &mut Value) {
    for p in obj.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(p) = p.as_object_mut() {
            default(p, "protocol", "TCP".into());
            default(p, "name", "".into());
        }
    }
}

fn endpoints(obj: &mut Value) {
    for subset in obj.get_mut("subsets").and_then(Value::as_array_mut).into_iter().flatten() {
        for p in subset.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(p) = p.as_object_mut() {
                default(p, "protocol", "TCP".into());
            }
        }
    }
}

fn node(obj: &mut Value) {
    // A node's allocatable defaults to its capacity.
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
        && let Some(cap) = status.get("capacity").cloned()
    {
        default(status, "allocatable", cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_defaults() {
        let mut svc = json!({"metadata": {"name": "backend"}, "spec": {"selector": {"app": "b"}, "ports": [{"port": 8000}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply_defaults("Service", &mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(svc["spec"]["ports"][0], json!({"port": 8000, "protocol": "TCP", "targetPort": 8000}));
        assert_eq!(svc["spec"]["ports"][1]["targetPort"], "dns");
        assert!(svc["spec"].get("externalTrafficPolicy").is_none());

        let mut np = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}], "sessionAffinity": "ClientIP"}});
        apply_defaults("Service", &mut np);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(np["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 10800);

        let mut ext = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        apply_defaults("Service", &mut ext);
        assert!(ext["spec"].get("internalTrafficPolicy").is_none());
    }

    #[test]
    fn pod_defaults() {
        let mut pod =
            json!({"spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "reg:5000/x:1.2", "ports": [{"containerPort": 80}]}]}});
        apply_defaults("Pod", &mut pod);
        let s = &pod["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(s["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(s["containers"][1]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["containers"][0]["terminationMessagePath"], "/dev/termination-log");
    }

    #[test]
    fn namespace_label_and_policy_types() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        apply_defaults("Namespace", &mut ns);
        assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "team-a");

        let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        apply_defaults("NetworkPolicy", &mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let mut ing = json!({"spec": {"podSelector": {}}});
        apply_defaults("NetworkPolicy", &mut ing);
        assert_eq!(ing["spec"]["policyTypes"], json!(["Ingress"]));
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        apply_defaults("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }
}
