//! Bodies captured from kubectl v1.32 (`kubectl --server http://127.0.0.1:PORT create ...` against
//! a recording listener), decoded to the JSON kubectl's `--dry-run=client -o json` prints for the
//! same command (Go's JSON encoding of the object).

use serde_json::{Value, json};

fn decode(fixture: &str) -> Value {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    svcnet_protobuf::decode_request(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn create_namespace() {
    assert_eq!(
        decode("namespace.pb"),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"creationTimestamp": null, "name": "x"}, "spec": {}, "status": {}})
    );
}

#[test]
fn create_service_clusterip() {
    assert_eq!(
        decode("service_clusterip.pb"),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"creationTimestamp": null, "labels": {"app": "web"}, "name": "web"},
            "spec": {"ports": [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}], "selector": {"app": "web"}, "type": "ClusterIP"},
            "status": {"loadBalancer": {}}})
    );
}

#[test]
fn create_service_nodeport() {
    let v = decode("service_nodeport.pb");
    assert_eq!(v["spec"]["type"], "NodePort");
    assert_eq!(v["spec"]["ports"], json!([{"name": "80-8080", "nodePort": 30080, "port": 80, "protocol": "TCP", "targetPort": 8080}]));
}

#[test]
fn create_service_loadbalancer_with_named_target_port() {
    let v = decode("service_loadbalancer.pb");
    assert_eq!(v["spec"]["type"], "LoadBalancer");
    assert_eq!(v["spec"]["ports"][0]["targetPort"], "http", "IntOrString of type string");
}

#[test]
fn create_service_externalname() {
    let v = decode("service_externalname.pb");
    assert_eq!(v["spec"], json!({"externalName": "example.com", "selector": {"app": "ex"}, "type": "ExternalName"}));
}

#[test]
fn create_configmap() {
    assert_eq!(
        decode("configmap.pb"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"creationTimestamp": null, "name": "c"}, "data": {"a": "b"}})
    );
    let v = decode("configmap_binary.pb");
    assert_eq!(v["binaryData"], json!({"bin": "AAH/"}), "bytes are base64, as in JSON");
    assert_eq!(v["data"], json!({"k": "v"}));
}

#[test]
fn create_serviceaccount() {
    assert_eq!(decode("serviceaccount.pb"), json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"creationTimestamp": null, "name": "sa"}}));
}

#[test]
fn create_deployment() {
    assert_eq!(
        decode("deployment.pb"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"creationTimestamp": null, "labels": {"app": "d"}, "name": "d"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}}, "strategy": {},
                "template": {"metadata": {"creationTimestamp": null, "labels": {"app": "d"}},
                    "spec": {"containers": [{"image": "nginx", "name": "nginx", "resources": {}}]}}},
            "status": {}})
    );
    let v = decode("deployment_two_images.pb");
    assert_eq!(v["metadata"]["namespace"], "ns1");
    assert_eq!(v["spec"]["replicas"], 1);
    let containers = &v["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["ports"], json!([{"containerPort": 8080}]));
    assert_eq!(containers[1]["image"], "busybox");
}

#[test]
fn malformed_bodies_are_errors() {
    assert_eq!(svcnet_protobuf::decode_request(b"{}"), Err(svcnet_protobuf::Error::NoMagic));
    assert!(svcnet_protobuf::decode_request(b"k8s\0\xff\xff\xff").is_err());
    let mut truncated = std::fs::read(format!("{}/tests/fixtures/deployment.pb", env!("CARGO_MANIFEST_DIR"))).unwrap();
    truncated.truncate(100);
    assert!(svcnet_protobuf::decode_request(&truncated).is_err());
}
