//! The everyday kubectl verbs beyond get/apply: edit, patch (all three types), scale, label,
//! annotate, expose.

mod common;

use common::Svcnet;
use serde_json::Value;

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: web:1\n        ports:\n        - containerPort: 8080\n";

#[test]
fn scale_label_annotate_and_patch_types() {
    let s = Svcnet::start();
    s.apply(DEPLOYMENT);
    assert!(s.ok(&["scale", "deployment", "web", "--replicas=4"]).contains("deployment.apps/web scaled"));
    assert_eq!(s.get_json(&["deployment", "web"])["spec"]["replicas"], 4);
    assert_eq!(s.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "4");
    // The scale subresource itself.
    let scale: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/web/scale"])).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 4);
    s.ok(&["scale", "deployment", "web", "--replicas=0"]);

    s.ok(&["label", "deployment", "web", "team=a"]);
    s.ok(&["annotate", "deployment", "web", "note=hello"]);
    let d = s.get_json(&["deployment", "web"]);
    assert_eq!(d["metadata"]["labels"]["team"], "a");
    assert_eq!(d["metadata"]["annotations"]["note"], "hello");
    s.ok(&["label", "deployment", "web", "team-"]);
    assert!(s.get_json(&["deployment", "web"])["metadata"]["labels"].get("team").is_none());
    let e = s.fails(&["label", "deployment", "web", "team=b", "--overwrite=false", "--resource-version=1"]);
    assert!(e.contains("Conflict") || e.contains("the object has been modified"), "{e}");

    s.ok(&["patch", "deployment", "web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"web:2"}]"#]);
    s.ok(&["patch", "deployment", "web", "--type=merge", "-p", r#"{"spec":{"minReadySeconds":5}}"#]);
    s.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"A","value":"1"}]}]}}}}"#,
    ]);
    let d = s.get_json(&["deployment", "web"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "web:2");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"], "A");
    assert_eq!(d["spec"]["minReadySeconds"], 5);
    // A JSON patch test that fails changes nothing and says why.
    let e = s.fails(&["patch", "deployment", "web", "--type=json", "-p", r#"[{"op":"test","path":"/spec/replicas","value":7}]"#]);
    assert!(e.contains("is invalid") && e.contains("/spec/replicas"), "{e}");
}

#[test]
fn edit_and_expose() {
    let s = Svcnet::start();
    s.apply(DEPLOYMENT);
    // `kubectl edit` with a scripted editor.
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &s.kubeconfig)
        .env("KUBE_EDITOR", "sed -i -e s/image:\\ web:1/image:\\ web:9/")
        .args(["edit", "deployment", "web"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web edited"));
    assert_eq!(s.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "web:9");

    // `kubectl expose` builds a Service from the Deployment's selector and ports.
    let out = s.ok(&["expose", "deployment", "web", "--port=80", "--target-port=8080"]);
    assert!(out.contains("service/web exposed"), "{out}");
    let svc = s.get_json(&["svc", "web"]);
    assert_eq!(svc["spec"]["selector"]["app"], "web");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert!(svc["spec"]["clusterIP"].as_str().unwrap().starts_with("10."));
}
