//! A container's environment, as the kubelet builds it: the Service variables of the pod's
//! namespace (and the master Services of `default`), then `envFrom`, then `env` with
//! `$(VAR)` references expanded, `fieldRef`s and ConfigMap/Secret keys resolved. Pure: the caller
//! passes the Services, ConfigMaps and Secrets it has.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

/// What a container's environment is built from besides the pod.
pub struct EnvSources<'a> {
    /// Services of the pod's namespace, and of `default` (for the `kubernetes` Service).
    pub services: &'a [Service],
    /// ConfigMaps of the pod's namespace, by name.
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    /// Secrets of the pod's namespace, by name.
    pub secrets: &'a BTreeMap<String, Secret>,
}

/// Why an environment could not be built (the container then waits with
/// `CreateContainerConfigError`, as upstream).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// A referenced ConfigMap does not exist.
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    /// A referenced key is not in the ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound { namespace: String, name: String, key: String },
    /// A referenced Secret does not exist.
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// A referenced key is not in the Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound { namespace: String, name: String, key: String },
    /// A `fieldRef` this kubelet does not know.
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
}

/// The environment of `container` in `pod`, in order (later entries win when names repeat, as
/// in a container runtime).
pub fn container_env(pod: &Pod, container: &Container, sources: &EnvSources<'_>) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let mut env: Vec<(String, String)> = Vec::new();
    if spec.and_then(|s| s.enable_service_links).unwrap_or(true) {
        env.extend(service_env(namespace, sources.services, true));
    } else {
        env.extend(service_env(namespace, sources.services, false));
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        env.push((format!("{prefix}{k}"), v.clone()));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        env.push((format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned()));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            let lookup: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            expand(value, &|name| lookup.get(name).map(|v| v.to_string()))
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(pod, &field.field_path)?
            } else if let Some(key) = &from.config_map_key_ref {
                match sources.config_maps.get(&key.name) {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&key.key)) {
                        Some(v) => v.clone(),
                        None if key.optional == Some(true) => continue,
                        None => return Err(EnvError::ConfigMapKeyNotFound { namespace: namespace.into(), name: key.name.clone(), key: key.key.clone() }),
                    },
                    None if key.optional == Some(true) => continue,
                    None => return Err(EnvError::ConfigMapNotFound(key.name.clone())),
                }
            } else if let Some(key) = &from.secret_key_ref {
                match sources.secrets.get(&key.name) {
                    Some(s) => match s.data.as_ref().and_then(|d| d.get(&key.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if key.optional == Some(true) => continue,
                        None => return Err(EnvError::SecretKeyNotFound { namespace: namespace.into(), name: key.name.clone(), key: key.key.clone() }),
                    },
                    None if key.optional == Some(true) => continue,
                    None => return Err(EnvError::SecretNotFound(key.name.clone())),
                }
            } else {
                // resourceFieldRef: no resource accounting here; upstream would give the limit.
                String::new()
            }
        } else {
            String::new()
        };
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// The value of a `fieldRef` (the paths upstream's downward API allows for env).
pub fn field_value(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.hostIPs" => status.and_then(|s| s.host_ips.as_ref()).map(|ips| ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(",")),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.podIPs" => status.and_then(|s| s.pod_ips.as_ref()).map(|ips| ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(",")),
        _ => {
            let label = path.strip_prefix("metadata.labels['").and_then(|r| r.strip_suffix("']"));
            let annotation = path.strip_prefix("metadata.annotations['").and_then(|r| r.strip_suffix("']"));
            if let Some(key) = label {
                meta.labels.as_ref().and_then(|l| l.get(key).cloned())
            } else if let Some(key) = annotation {
                meta.annotations.as_ref().and_then(|a| a.get(key).cloned())
            } else {
                return Err(EnvError::UnsupportedFieldPath(path.into()));
            }
        }
    };
    Ok(value.unwrap_or_default())
}

/// The Service variables kubelet injects: for each Service with a ClusterIP in `namespace`
/// (all of them when `service_links`, else only the master Service `default/kubernetes`),
/// `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORT>` and the
/// Docker-link variables `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`.
pub fn service_env(namespace: &str, services: &[Service], service_links: bool) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.clone().unwrap_or_default();
        let master = ns == "default" && name == "kubernetes";
        // The pod's own namespace wins over the master Service of the same name.
        if (ns == namespace && service_links) || (master && !(namespace != "default" && chosen.contains_key(&name))) {
            chosen.insert(name, svc);
        }
    }
    let mut env = Vec::new();
    for (name, svc) in chosen {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else { continue };
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) {
                env.push((format!("{prefix}_SERVICE_PORT_{}", pname.to_uppercase().replace('-', "_")), p.port.to_string()));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        env.push((format!("{prefix}_PORT"), format!("{}://{}:{}", proto(first).to_lowercase(), ip, first.port)));
        for p in &ports {
            let pr = proto(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, pr.to_uppercase());
            env.push((base.clone(), format!("{}://{}:{}", pr.to_lowercase(), ip, p.port)));
            env.push((format!("{base}_PROTO"), pr.to_lowercase()));
            env.push((format!("{base}_PORT"), p.port.to_string()));
            env.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    env
}

/// Expands `$(VAR)` references as upstream's `expansion.Expand`: `$$` escapes a `$`, and a
/// reference to an unknown variable stays as written.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push_str(&input[literal_start..i]);
                    out.push('$');
                    i += 2;
                    literal_start = i;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        out.push_str(&input[literal_start..i]);
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        literal_start = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[literal_start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": ip, "ports": ports}})).unwrap()
    }

    #[test]
    fn service_links_as_kubelet_writes_them() {
        let services = vec![
            svc("default", "backend", "10.96.0.20", json!([{"name": "http", "port": 8000, "protocol": "TCP"}])),
            svc("default", "kubernetes", "10.96.0.1", json!([{"name": "https", "port": 443}])),
            svc("other", "hidden", "10.96.0.30", json!([{"port": 1}])),
            svc("default", "headless", "None", json!([{"port": 1}])),
        ];
        let env: BTreeMap<_, _> = service_env("default", &services, true).into_iter().collect();
        assert_eq!(env["BACKEND_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["BACKEND_SERVICE_PORT"], "8000");
        assert_eq!(env["BACKEND_SERVICE_PORT_HTTP"], "8000");
        assert_eq!(env["BACKEND_PORT"], "tcp://10.96.0.20:8000");
        assert_eq!(env["BACKEND_PORT_8000_TCP"], "tcp://10.96.0.20:8000");
        assert_eq!(env["BACKEND_PORT_8000_TCP_PROTO"], "tcp");
        assert_eq!(env["BACKEND_PORT_8000_TCP_PORT"], "8000");
        assert_eq!(env["BACKEND_PORT_8000_TCP_ADDR"], "10.96.0.20");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert!(!env.contains_key("HIDDEN_SERVICE_HOST"));
        assert!(!env.contains_key("HEADLESS_SERVICE_HOST"));
        // enableServiceLinks: false keeps only the master Service.
        let env: BTreeMap<_, _> = service_env("other", &services, false).into_iter().collect();
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!env.contains_key("HIDDEN_SERVICE_HOST"));
    }

    #[test]
    fn expansion_as_upstream() {
        let lookup = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &lookup), "x-$(B)-$(A)-$");
        assert_eq!(expand("plain", &lookup), "plain");
        assert_eq!(expand("$(A", &lookup), "$(A");
    }

    #[test]
    fn env_values_field_refs_and_config_maps() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"enableServiceLinks": false, "nodeName": "node-1", "containers": [{"name": "c", "image": "x", "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "$(A)2"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}}
            ]}]},
            "status": {"podIP": "10.244.0.5"}
        }))
        .unwrap();
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}})).unwrap();
        let cms = BTreeMap::from([("cfg".to_string(), cm)]);
        let secrets = BTreeMap::new();
        let sources = EnvSources { services: &[], config_maps: &cms, secrets: &secrets };
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let env: BTreeMap<_, _> = container_env(&pod, container, &sources).unwrap().into_iter().collect();
        assert_eq!(env["B"], "12");
        assert_eq!(env["POD"], "p");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["IP"], "10.244.0.5");
        assert_eq!(env["CM"], "v");
        assert!(!env.contains_key("OPT"));
        let empty = BTreeMap::new();
        let sources = EnvSources { services: &[], config_maps: &empty, secrets: &secrets };
        assert_eq!(container_env(&pod, container, &sources), Err(EnvError::ConfigMapNotFound("cfg".into())));
    }
}
