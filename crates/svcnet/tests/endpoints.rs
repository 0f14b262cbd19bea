//! The Endpoints, EndpointSlice and EndpointSlice-mirroring controllers, seen through kubectl:
//! Services and Pods go in (pod addresses and readiness are set through the status subresource,
//! as a kubelet would), Endpoints and EndpointSlices come out.

mod common;

use std::time::Duration;

use common::{Svcnet, wait_for};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(30);

fn server(ns: &str) -> Svcnet {
    let sv = Svcnet::start();
    sv.namespace(ns);
    sv
}

fn service(sv: &Svcnet, ns: &str, name: &str, spec: &str) {
    sv.apply(&format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"));
}

/// A pod labelled `app: <app>`; `extra` is more of its spec (indented two spaces).
fn pod(sv: &Svcnet, ns: &str, name: &str, app: &str, extra: &str) {
    sv.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\nspec:\n{extra}  containers:\n  - name: app\n    image: registry.k8s.io/pause:3.10\n    ports:\n    - name: http\n      containerPort: 8000\n"
    ));
}

/// Sets the pod's IP and readiness as the kubelet would.
fn set_status(sv: &Svcnet, ns: &str, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    sv.ok(&["patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
}

/// The ENDPOINTS column of `kubectl get endpoints`, `None` while the object does not exist.
fn endpoints_column(sv: &Svcnet, ns: &str, name: &str) -> Option<String> {
    let out = sv.kubectl(&["get", "endpoints", name, "-n", ns, "--no-headers"]);
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).map(str::to_string)
}

fn wait_endpoints_column(sv: &Svcnet, ns: &str, name: &str, want: &str) {
    let mut last = None;
    wait_for(&format!("endpoints {name} to be {want}"), TIMEOUT, || {
        last = endpoints_column(sv, ns, name);
        (last.as_deref() == Some(want)).then_some(())
    });
}

fn get_json(sv: &Svcnet, args: &[&str]) -> Option<Value> {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    let out = sv.kubectl(&full);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn endpoints_json(sv: &Svcnet, ns: &str, name: &str) -> Option<Value> {
    get_json(sv, &["get", "endpoints", name, "-n", ns])
}

/// The EndpointSlices of a Service.
fn slices(sv: &Svcnet, ns: &str, service: &str) -> Vec<Value> {
    let list = get_json(sv, &["get", "endpointslices", "-n", ns, "-l", &format!("kubernetes.io/service-name={service}")]).unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Every endpoint of a Service's slices as (address, port numbers, ready, serving, terminating),
/// sorted.
fn slice_endpoints(sv: &Svcnet, ns: &str, service: &str) -> Vec<(String, Vec<i64>, bool, bool, bool)> {
    let mut out = Vec::new();
    for slice in slices(sv, ns, service) {
        let ports: Vec<i64> = slice["ports"].as_array().into_iter().flatten().map(|p| p["port"].as_i64().unwrap()).collect();
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            let flag = |k: &str| c[k].as_bool().unwrap_or(false);
            out.push((e["addresses"][0].as_str().unwrap().to_string(), ports.clone(), flag("ready"), flag("serving"), flag("terminating")));
        }
    }
    out.sort();
    out
}

fn wait_slice_endpoints(sv: &Svcnet, ns: &str, service: &str, want: &[(&str, &[i64], bool, bool, bool)]) {
    let want: Vec<(String, Vec<i64>, bool, bool, bool)> = want.iter().map(|(a, p, r, s, t)| (a.to_string(), p.to_vec(), *r, *s, *t)).collect();
    let mut last = Vec::new();
    wait_for(&format!("slices of {service} to be {want:?}"), TIMEOUT, || {
        last = slice_endpoints(sv, ns, service);
        (last == want).then_some(())
    });
}

fn not_ready_ips(ep: &Value) -> Vec<String> {
    let mut out: Vec<String> = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["notReadyAddresses"].as_array().into_iter().flatten())
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

const BACKEND: &str = "  selector:\n    app: backend\n  ports:\n  - port: 8000\n    targetPort: 8000\n";

#[test]
fn endpoints_and_slices_follow_pods_and_readiness() {
    let ns = "ep-ready";
    let sv = server(ns);
    service(&sv, ns, "backend", BACKEND);
    // A Service with no matching pods: empty Endpoints and one placeholder slice.
    wait_endpoints_column(&sv, ns, "backend", "<none>");
    wait_for("a placeholder slice", TIMEOUT, || {
        let s = slices(&sv, ns, "backend");
        (s.len() == 1 && s[0]["endpoints"].as_array().is_none_or(Vec::is_empty)).then_some(())
    });

    pod(&sv, ns, "backend-1", "backend", "");
    pod(&sv, ns, "backend-2", "backend", "");
    pod(&sv, ns, "frontend-1", "frontend", "");
    set_status(&sv, ns, "backend-1", "192.168.1.10", true);
    set_status(&sv, ns, "backend-2", "192.168.1.11", true);
    set_status(&sv, ns, "frontend-1", "192.168.1.20", true);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000,192.168.1.11:8000");
    wait_slice_endpoints(&sv, ns, "backend", &[("192.168.1.10", &[8000], true, true, false), ("192.168.1.11", &[8000], true, true, false)]);

    let ep = endpoints_json(&sv, ns, "backend").unwrap();
    let address = &ep["subsets"][0]["addresses"][0];
    assert_eq!(address["ip"], "192.168.1.10");
    assert_eq!(address["targetRef"]["kind"], "Pod");
    assert_eq!(address["targetRef"]["name"], "backend-1");
    assert_eq!(address["targetRef"]["namespace"], ns);
    let uid = get_json(&sv, &["get", "pod", "backend-1", "-n", ns]).unwrap()["metadata"]["uid"].clone();
    assert_eq!(address["targetRef"]["uid"], uid);
    assert!(ep["metadata"]["labels"].get("service.kubernetes.io/headless").is_none());

    // The placeholder gave way to one slice holding both pods, owned by the Service.
    let all = slices(&sv, ns, "backend");
    assert_eq!(all.len(), 1, "{all:#?}");
    let slice = &all[0];
    let svc_uid = get_json(&sv, &["get", "service", "backend", "-n", ns]).unwrap()["metadata"]["uid"].clone();
    assert_eq!(slice["addressType"], "IPv4");
    assert!(slice["metadata"]["name"].as_str().unwrap().starts_with("backend-"));
    assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!((&owner["kind"], &owner["name"], &owner["uid"]), (&json!("Service"), &json!("backend"), &svc_uid));
    assert_eq!((&owner["controller"], &owner["blockOwnerDeletion"]), (&json!(true), &json!(true)));
    assert_eq!(slice["ports"], json!([{"name": "", "port": 8000, "protocol": "TCP"}]));
    assert_eq!(slice["endpoints"][0]["targetRef"]["name"], "backend-1");

    // Not ready: moves to notReadyAddresses, and the slice says so.
    set_status(&sv, ns, "backend-2", "192.168.1.11", false);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000");
    assert_eq!(not_ready_ips(&endpoints_json(&sv, ns, "backend").unwrap()), ["192.168.1.11"]);
    wait_slice_endpoints(&sv, ns, "backend", &[("192.168.1.10", &[8000], true, true, false), ("192.168.1.11", &[8000], false, false, false)]);

    // Ready again.
    set_status(&sv, ns, "backend-2", "192.168.1.11", true);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000,192.168.1.11:8000");
    assert!(not_ready_ips(&endpoints_json(&sv, ns, "backend").unwrap()).is_empty());
    wait_slice_endpoints(&sv, ns, "backend", &[("192.168.1.10", &[8000], true, true, false), ("192.168.1.11", &[8000], true, true, false)]);

    // A change that does not matter to the Service writes nothing: label a backend pod, then
    // make a change that does show (a new Service) and check the old objects did not move.
    let ep_version = endpoints_json(&sv, ns, "backend").unwrap()["metadata"]["resourceVersion"].clone();
    let slice_version = slices(&sv, ns, "backend")[0]["metadata"]["resourceVersion"].clone();
    sv.ok(&["label", "pod", "backend-1", "-n", ns, "unrelated=yes"]);
    service(&sv, ns, "marker", "  selector:\n    unrelated: \"yes\"\n  ports:\n  - port: 1234\n");
    wait_endpoints_column(&sv, ns, "marker", "192.168.1.10:1234");
    assert_eq!(endpoints_json(&sv, ns, "backend").unwrap()["metadata"]["resourceVersion"], ep_version);
    assert_eq!(slices(&sv, ns, "backend")[0]["metadata"]["resourceVersion"], slice_version);

    // A pod that stops matching the selector leaves.
    sv.ok(&["label", "pod", "backend-1", "-n", ns, "app=other", "--overwrite"]);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.11:8000");
    wait_slice_endpoints(&sv, ns, "backend", &[("192.168.1.11", &[8000], true, true, false)]);

    // A deleted pod leaves too.
    sv.ok(&["delete", "pod", "backend-2", "-n", ns]);
    wait_endpoints_column(&sv, ns, "backend", "<none>");
    wait_slice_endpoints(&sv, ns, "backend", &[]);

    // Someone else's edit to a managed Endpoints is put back.
    set_status(&sv, ns, "backend-1", "192.168.1.10", true);
    sv.ok(&["label", "pod", "backend-1", "-n", ns, "app=backend", "--overwrite"]);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000");
    sv.ok(&["delete", "endpoints", "backend", "-n", ns]);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000");
}

#[test]
fn named_target_ports_resolve_per_pod() {
    let ns = "ep-named";
    let sv = server(ns);
    service(&sv, ns, "web", "  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n");
    let with_port = |name: &str, port: u16| {
        sv.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: web\nspec:\n  containers:\n  - name: app\n    image: registry.k8s.io/pause:3.10\n    ports:\n    - name: http\n      containerPort: {port}\n"
        ));
    };
    with_port("web-a", 8080);
    with_port("web-b", 9090);
    // No port named `http`: not in Endpoints; a port-less endpoint in the slices, as upstream.
    sv.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-c\n  namespace: {ns}\n  labels:\n    app: web\nspec:\n  containers:\n  - name: app\n    image: registry.k8s.io/pause:3.10\n"
    ));
    set_status(&sv, ns, "web-a", "10.1.0.1", true);
    set_status(&sv, ns, "web-b", "10.1.0.2", true);
    set_status(&sv, ns, "web-c", "10.1.0.3", true);
    wait_endpoints_column(&sv, ns, "web", "10.1.0.1:8080,10.1.0.2:9090");
    let ep = endpoints_json(&sv, ns, "web").unwrap();
    let subsets = ep["subsets"].as_array().unwrap();
    assert_eq!(subsets.len(), 2, "{ep:#}");
    assert_eq!(subsets[0]["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    wait_slice_endpoints(
        &sv,
        ns,
        "web",
        &[("10.1.0.1", &[8080], true, true, false), ("10.1.0.2", &[9090], true, true, false), ("10.1.0.3", &[], true, true, false)],
    );
    assert_eq!(slices(&sv, ns, "web").len(), 3);
}

#[test]
fn headless_service_publishes_hostnames_and_not_ready_addresses() {
    let ns = "ep-headless";
    let sv = server(ns);
    service(&sv, ns, "postgres", "  clusterIP: None\n  selector:\n    app: postgres\n  ports:\n  - port: 5432\n");
    pod(&sv, ns, "postgres-0", "postgres", "  hostname: postgres-0\n  subdomain: postgres\n");
    pod(&sv, ns, "postgres-1", "postgres", "  hostname: postgres-1\n  subdomain: elsewhere\n");
    set_status(&sv, ns, "postgres-0", "192.168.1.10", true);
    set_status(&sv, ns, "postgres-1", "192.168.1.11", true);
    wait_endpoints_column(&sv, ns, "postgres", "192.168.1.10:5432,192.168.1.11:5432");
    let ep = endpoints_json(&sv, ns, "postgres").unwrap();
    assert_eq!(ep["metadata"]["labels"]["service.kubernetes.io/headless"], "");
    let addresses = ep["subsets"][0]["addresses"].as_array().unwrap();
    assert_eq!(addresses[0]["hostname"], "postgres-0");
    assert!(addresses[1].get("hostname").is_none(), "{ep:#}");
    let all = slices(&sv, ns, "postgres");
    assert_eq!(all[0]["metadata"]["labels"]["service.kubernetes.io/headless"], "");
    let hostnames: Vec<Value> = all[0]["endpoints"].as_array().unwrap().iter().map(|e| e["hostname"].clone()).collect();
    assert_eq!(hostnames, [json!("postgres-0"), Value::Null]);

    // publishNotReadyAddresses: an unready pod is an address, and ready in the slices.
    set_status(&sv, ns, "postgres-1", "192.168.1.11", false);
    wait_endpoints_column(&sv, ns, "postgres", "192.168.1.10:5432");
    sv.ok(&["patch", "service", "postgres", "-n", ns, "--type=merge", "-p", r#"{"spec":{"publishNotReadyAddresses":true}}"#]);
    wait_endpoints_column(&sv, ns, "postgres", "192.168.1.10:5432,192.168.1.11:5432");
    assert!(not_ready_ips(&endpoints_json(&sv, ns, "postgres").unwrap()).is_empty());
    wait_slice_endpoints(&sv, ns, "postgres", &[("192.168.1.10", &[5432], true, true, false), ("192.168.1.11", &[5432], true, false, false)]);
}

#[test]
fn terminating_pods_leave_endpoints_but_stay_in_slices() {
    let ns = "ep-terminating";
    let sv = server(ns);
    service(&sv, ns, "backend", BACKEND);
    // Bound to a node, so deletion waits for its grace period.
    pod(&sv, ns, "backend-1", "backend", "  nodeName: node-1\n");
    pod(&sv, ns, "backend-2", "backend", "  nodeName: node-1\n");
    set_status(&sv, ns, "backend-1", "192.168.1.10", true);
    set_status(&sv, ns, "backend-2", "192.168.1.11", true);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000,192.168.1.11:8000");
    let ep = endpoints_json(&sv, ns, "backend").unwrap();
    assert_eq!(ep["subsets"][0]["addresses"][0]["nodeName"], "node-1");
    assert_eq!(slices(&sv, ns, "backend")[0]["endpoints"][0]["nodeName"], "node-1");

    sv.ok(&["delete", "pod", "backend-2", "-n", ns, "--wait=false"]);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000");
    assert!(not_ready_ips(&endpoints_json(&sv, ns, "backend").unwrap()).is_empty());
    wait_slice_endpoints(&sv, ns, "backend", &[("192.168.1.10", &[8000], true, true, false), ("192.168.1.11", &[8000], false, true, true)]);
}

#[test]
fn selectorless_service_endpoints_are_mirrored() {
    let ns = "ep-mirror";
    let sv = server(ns);
    service(&sv, ns, "external-db", "  ports:\n  - name: pg\n    port: 5432\n");
    let manual = |ips: &str| {
        sv.apply(&format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: external-db\n  namespace: {ns}\n  labels:\n    owner: me\nsubsets:\n- addresses: [{ips}]\n  ports:\n  - name: pg\n    port: 5432\n"
        ));
    };
    manual("{ip: 10.9.0.1}, {ip: 10.9.0.2}");
    wait_slice_endpoints(&sv, ns, "external-db", &[("10.9.0.1", &[5432], true, false, false), ("10.9.0.2", &[5432], true, false, false)]);
    let all = slices(&sv, ns, "external-db");
    assert_eq!(all.len(), 1);
    let labels = &all[0]["metadata"]["labels"];
    assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], "endpointslicemirroring-controller.k8s.io");
    assert_eq!(labels["owner"], "me");
    assert_eq!(all[0]["metadata"]["ownerReferences"][0]["name"], "external-db");
    assert_eq!(all[0]["ports"], json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]));
    // The Endpoints are the user's: the Endpoints controller leaves them as written.
    assert_eq!(endpoints_column(&sv, ns, "external-db").as_deref(), Some("10.9.0.1:5432,10.9.0.2:5432"));
    assert_eq!(endpoints_json(&sv, ns, "external-db").unwrap()["metadata"]["labels"], json!({"owner": "me"}));

    manual("{ip: 10.9.0.3}");
    wait_slice_endpoints(&sv, ns, "external-db", &[("10.9.0.3", &[5432], true, false, false)]);
    assert_eq!(slices(&sv, ns, "external-db").len(), 1);

    sv.ok(&["delete", "endpoints", "external-db", "-n", ns]);
    wait_for("mirrored slices to go", TIMEOUT, || slices(&sv, ns, "external-db").is_empty().then_some(()));
}

#[test]
fn deleting_a_service_removes_its_endpoints_and_slices() {
    let ns = "ep-delete";
    let sv = server(ns);
    service(&sv, ns, "backend", BACKEND);
    service(&sv, ns, "keep", BACKEND);
    pod(&sv, ns, "backend-1", "backend", "");
    set_status(&sv, ns, "backend-1", "192.168.1.10", true);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000");
    wait_endpoints_column(&sv, ns, "keep", "192.168.1.10:8000");
    wait_for("slices", TIMEOUT, || (slices(&sv, ns, "backend").len() == 1).then_some(()));

    sv.ok(&["delete", "service", "backend", "-n", ns]);
    wait_for("the Endpoints to go", TIMEOUT, || endpoints_json(&sv, ns, "backend").is_none().then_some(()));
    wait_for("the slices to go", TIMEOUT, || slices(&sv, ns, "backend").is_empty().then_some(()));
    // The other Service's objects stay.
    assert_eq!(endpoints_column(&sv, ns, "keep").as_deref(), Some("192.168.1.10:8000"));
    assert_eq!(slices(&sv, ns, "keep").len(), 1);

    // An Endpoints without a Service that was never there is someone's: left alone.
    sv.apply(&format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: orphan\n  namespace: {ns}\nsubsets:\n- addresses: [{{ip: 10.9.0.9}}]\n  ports:\n  - port: 80\n"
    ));
    // Recreating the deleted Service brings its objects back; by then the orphan was seen.
    service(&sv, ns, "backend", BACKEND);
    wait_endpoints_column(&sv, ns, "backend", "192.168.1.10:8000");
    assert_eq!(endpoints_column(&sv, ns, "orphan").as_deref(), Some("10.9.0.9:80"));

    // The controllers do not hold up the deletion of a namespace (they cannot write there any
    // more while its contents go).
    sv.ok(&["delete", "namespace", ns, "--wait=false"]);
    wait_for("the namespace to go", TIMEOUT, || (!sv.kubectl(&["get", "namespace", ns]).status.success()).then_some(()));
}
