//! kubectl's `create namespace|service|configmap|deployment` send protobuf bodies
//! (`application/vnd.kubernetes.protobuf`) and never retry with JSON: the server accepts them and
//! stores the same objects the JSON path would.

mod common;

use common::Svcnet;
use serde_json::{Value, json};

#[test]
fn kubectl_create_with_protobuf_bodies() {
    let s = Svcnet::start();

    let out = s.ok(&["create", "namespace", "pb"]);
    assert!(out.contains("namespace/pb created"), "{out}");
    let ns = s.get_json(&["namespace", "pb"]);
    assert_eq!(ns["metadata"]["name"], "pb");
    assert_eq!(ns["status"]["phase"], "Active");
    assert!(ns["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()), "{ns}");

    let out = s.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    assert!(out.contains("service/web created"), "{out}");
    let web = s.get_json(&["service", "web"]);
    assert_eq!(web["spec"]["type"], "ClusterIP");
    assert_eq!(web["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(web["spec"]["ports"], json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]));
    assert!(web["spec"]["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty() && ip != "None"), "{web}");

    let out = s.ok(&["create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"]);
    assert!(out.contains("service/np created"), "{out}");
    let np = s.get_json(&["service", "np"]);
    assert_eq!(np["spec"]["type"], "NodePort");
    assert_eq!(np["spec"]["ports"], json!([{"name": "80-8080", "nodePort": 30080, "port": 80, "protocol": "TCP", "targetPort": 8080}]));

    let out = s.ok(&["create", "configmap", "c", "--from-literal=a=b"]);
    assert!(out.contains("configmap/c created"), "{out}");
    let cm = s.get_json(&["configmap", "c"]);
    assert_eq!(cm["data"], json!({"a": "b"}));

    let out = s.ok(&["create", "deployment", "d", "--image=nginx", "--replicas=2"]);
    assert!(out.contains("deployment.apps/d created"), "{out}");
    let d = s.get_json(&["deployment", "d"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"app": "d"}}));
    assert_eq!(d["spec"]["template"]["metadata"]["labels"], json!({"app": "d"}));
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(containers[0]["name"], "nginx");
    assert_eq!(containers[0]["image"], "nginx");

    // In a namespace other than the default, and an existing name is still a 409 kubectl renders.
    let out = s.ok(&["-n", "pb", "create", "configmap", "c", "--from-literal=x=y"]);
    assert!(out.contains("configmap/c created"), "{out}");
    assert_eq!(s.get_json(&["-n", "pb", "configmap", "c"])["data"], json!({"x": "y"}));
    let err = s.fails(&["create", "namespace", "pb"]);
    assert!(err.contains(r#"namespaces "pb" already exists"#), "{err}");
}

#[test]
fn malformed_protobuf_bodies_are_bad_requests() {
    let s = Svcnet::start();
    let (code, body) =
        s.curl("POST", "/api/v1/namespaces", true, &["-H", "Content-Type: application/vnd.kubernetes.protobuf", "--data-binary", "not protobuf"]);
    assert_eq!(code, 400, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "BadRequest", "{status}");
    // A client that accepts only protobuf responses is told so.
    let (code, body) = s.curl("GET", "/api/v1/namespaces", true, &["-H", "Accept: application/vnd.kubernetes.protobuf"]);
    assert_eq!(code, 406, "{body}");
}
