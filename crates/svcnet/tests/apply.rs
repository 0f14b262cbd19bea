//! Client-side `kubectl apply` of edited files and `kubectl patch` (strategic merge by default)
//! leave the object as kube-apiserver would hold it.

mod common;

use common::Svcnet;
use serde_json::json;

#[test]
fn reapplying_an_edited_service_updates_and_prunes() {
    let s = Svcnet::start();
    s.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels:\n    team: a\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n  - name: metrics\n    port: 9000\n",
    );
    let before = s.get_json(&["svc", "web"]);
    // Edited file: selector changed, the metrics port removed, https added, the label removed.
    let out = s.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web2\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n  - name: https\n    port: 443\n    targetPort: 8443\n",
    );
    assert!(out.contains("service/web configured"), "{out}");
    let after = s.get_json(&["svc", "web"]);
    assert_eq!(after["spec"]["selector"], json!({"app": "web2"}));
    let ports: Vec<(i64, &str)> =
        after["spec"]["ports"].as_array().unwrap().iter().map(|p| (p["port"].as_i64().unwrap(), p["name"].as_str().unwrap())).collect();
    assert_eq!(ports, [(80, "http"), (443, "https")]);
    assert_eq!(after["spec"]["ports"][1]["protocol"], "TCP", "defaults apply to the added port");
    assert!(after["metadata"].get("labels").is_none_or(|l| l.get("team").is_none()), "the removed label is pruned: {}", after["metadata"]);
    // What the server allocated and the user never wrote stays.
    assert_eq!(after["spec"]["clusterIP"], before["spec"]["clusterIP"]);
    // Unchanged file: nothing to do.
    let again = s.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web2\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n  - name: https\n    port: 443\n    targetPort: 8443\n",
    );
    assert!(again.contains("unchanged"), "{again}");
}

#[test]
fn kubectl_patch_merges_lists_by_key() {
    let s = Svcnet::start();
    s.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: backend\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: backend\n  template:\n    metadata:\n      labels:\n        app: backend\n    spec:\n      containers:\n      - name: app\n        image: backend:1\n        env:\n        - name: A\n          value: \"1\"\n      - name: sidecar\n        image: proxy:1\n",
    );
    // `kubectl patch` defaults to a strategic merge patch: the container is found by name.
    s.ok(&[
        "patch",
        "deployment",
        "backend",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"backend:2","env":[{"name":"B","value":"2"}]}]}}}}"#,
    ]);
    let d = s.get_json(&["deployment", "backend"]);
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "the sidecar is kept");
    assert_eq!(containers[0]["image"], "backend:2");
    assert_eq!(containers[0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
    assert_eq!(d["metadata"]["generation"], 2, "a spec change bumps generation");

    // `$patch: delete` removes one element by its key.
    s.ok(&["patch", "deployment", "backend", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#]);
    let d = s.get_json(&["deployment", "backend"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);

    // `kubectl set image` and `kubectl label` ride on the same patch.
    s.ok(&["set", "image", "deployment/backend", "app=backend:3"]);
    s.ok(&["label", "deployment", "backend", "tier=api"]);
    let d = s.get_json(&["deployment", "backend"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "backend:3");
    assert_eq!(d["metadata"]["labels"]["tier"], "api");

    // A merge-list element without its merge key is refused.
    let e = s.fails(&["patch", "deployment", "backend", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#]);
    assert!(e.contains("does not contain declared merge key: name"), "{e}");
}

#[test]
fn server_side_apply_owns_fields_and_reports_conflicts() {
    let s = Svcnet::start();
    let manifest = |selector: &str, ports: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: ssa\nspec:\n  selector:\n    app: {selector}\n  ports:\n{ports}")
    };
    let two_ports = "  - name: http\n    port: 80\n  - name: metrics\n    port: 9000\n";
    let apply_as = |manager: &str, yaml: &str, extra: &[&str]| {
        let mut args = vec!["apply", "--server-side", "--field-manager", manager, "-f", "-"];
        args.extend_from_slice(extra);
        s.kubectl_with_stdin(&args, Some(yaml))
    };
    let out = apply_as("alice", &manifest("web", two_ports), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("service/ssa serverside-applied"));
    let svc = s.get_json(&["svc", "ssa", "--show-managed-fields"]);
    let managers: Vec<&str> = svc["metadata"]["managedFields"].as_array().unwrap().iter().map(|m| m["manager"].as_str().unwrap()).collect();
    assert_eq!(managers, ["alice"]);
    assert_eq!(svc["metadata"]["managedFields"][0]["operation"], "Apply");
    assert!(svc["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:selector"].is_object(), "{}", svc["metadata"]["managedFields"]);

    // Bob wants another selector: a conflict naming alice and the field, and nothing changes.
    let out = apply_as("bob", &manifest("api", ""), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Apply failed with 1 conflict: conflict with \"alice\": .spec.selector"), "{err}");
    assert_eq!(s.get_json(&["svc", "ssa"])["spec"]["selector"]["app"], "web");
    // Forced, bob takes the field over.
    let out = apply_as("bob", &manifest("api", ""), &["--force-conflicts"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.get_json(&["svc", "ssa"])["spec"]["selector"]["app"], "api");

    // Alice drops the metrics port (and the selector, which is bob's now): the port goes.
    let out = apply_as("alice", "apiVersion: v1\nkind: Service\nmetadata:\n  name: ssa\nspec:\n  ports:\n  - name: http\n    port: 80\n", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let svc = s.get_json(&["svc", "ssa"]);
    let ports: Vec<i64> = svc["spec"]["ports"].as_array().unwrap().iter().map(|p| p["port"].as_i64().unwrap()).collect();
    assert_eq!(ports, [80]);
    assert_eq!(svc["spec"]["selector"]["app"], "api", "bob's field stays");

    // An edit by another client takes the field it changes; alice re-applying it conflicts.
    s.ok(&["label", "svc", "ssa", "tier=x"]);
    s.ok(&["patch", "svc", "ssa", "--type=merge", "-p", r#"{"spec":{"ports":[{"name":"http","port":80,"targetPort":8080}]}}"#]);
    let out =
        apply_as("alice", "apiVersion: v1\nkind: Service\nmetadata:\n  name: ssa\nspec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 80\n", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("conflict with \"kubectl-patch\""), "{}", String::from_utf8_lossy(&out.stderr));

    // Strict validation applies to server-side apply too.
    let out = apply_as("alice", "apiVersion: v1\nkind: Service\nmetadata:\n  name: ssa\nspec:\n  portz: []\n", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("failed to create typed patch object (default/ssa; /v1, Kind=Service): .spec.portz: field not declared in schema"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubectl_explain_prints_the_field_docs() {
    let s = Svcnet::start();
    let out = s.ok(&["explain", "service.spec.ports"]);
    assert!(out.contains("KIND:       Service") && out.contains("FIELD: ports <[]ServicePort>"), "{out}");
    assert!(out.contains("targetPort") && out.contains("The list of ports that are exposed by this service"), "{out}");
}
