//! The garbage collector, seen through kubectl: owner references written by hand, then the
//! owner deleted with each propagation policy (`--cascade=background|orphan|foreground`).

mod common;

use std::time::Duration;

use common::{Svcnet, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Holds a dependent in its terminating state until the test lets it go.
const HOLD: &str = "example.com/hold";

fn server(ns: &str) -> Svcnet {
    let sv = Svcnet::start();
    sv.namespace(ns);
    sv
}

fn uid(sv: &Svcnet, ns: &str, kind: &str, name: &str) -> String {
    let uid = sv.ok(&["get", kind, name, "-n", ns, "-o", "jsonpath={.metadata.uid}"]);
    assert!(!uid.is_empty(), "{kind} {name} has no uid");
    uid
}

/// An owner reference to `kind`/`name` as a YAML flow mapping.
fn owner(sv: &Svcnet, ns: &str, api_version: &str, kind: &str, name: &str, block: bool) -> String {
    let uid = uid(sv, ns, kind, name);
    format!("{{apiVersion: {api_version}, kind: {kind}, name: {name}, uid: {uid}, blockOwnerDeletion: {block}}}")
}

fn cm_owner(sv: &Svcnet, ns: &str, name: &str, block: bool) -> String {
    owner(sv, ns, "v1", "ConfigMap", name, block)
}

/// A ConfigMap with these owner references and finalizers.
fn configmap(sv: &Svcnet, ns: &str, name: &str, owners: &[String], finalizers: &[&str]) {
    sv.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  ownerReferences: [{}]\n  finalizers: [{}]\ndata:\n  k: v\n",
        owners.join(", "),
        finalizers.join(", ")
    ));
}

fn service(sv: &Svcnet, ns: &str, name: &str, owners: &[String]) {
    sv.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  ownerReferences: [{}]\nspec:\n  ports:\n  - port: 80\n",
        owners.join(", ")
    ));
}

fn exists(sv: &Svcnet, ns: &str, kind: &str, name: &str) -> bool {
    !sv.ok(&["get", kind, name, "-n", ns, "--ignore-not-found", "-o", "name"]).trim().is_empty()
}

fn jsonpath(sv: &Svcnet, ns: &str, kind: &str, name: &str, path: &str) -> String {
    sv.ok(&["get", kind, name, "-n", ns, "-o", &format!("jsonpath={path}")])
}

fn wait_gone(sv: &Svcnet, ns: &str, kind: &str, name: &str) {
    wait_for(&format!("{kind} {name} to be deleted"), TIMEOUT, || (!exists(sv, ns, kind, name)).then_some(()));
}

fn wait_deleting(sv: &Svcnet, ns: &str, kind: &str, name: &str) {
    wait_for(&format!("{kind} {name} to be marked for deletion"), TIMEOUT, || {
        (!jsonpath(sv, ns, kind, name, "{.metadata.deletionTimestamp}").is_empty()).then_some(())
    });
}

fn release(sv: &Svcnet, ns: &str, kind: &str, name: &str) {
    sv.ok(&["patch", kind, name, "-n", ns, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
}

/// ConfigMap `owner` owning ConfigMaps `a`, `b` and Service `s`.
fn family(sv: &Svcnet, ns: &str, block: bool) {
    configmap(sv, ns, "owner", &[], &[]);
    let o = cm_owner(sv, ns, "owner", block);
    configmap(sv, ns, "a", std::slice::from_ref(&o), &[]);
    configmap(sv, ns, "b", std::slice::from_ref(&o), &[]);
    service(sv, ns, "s", &[o]);
}

#[test]
fn deleting_an_owner_deletes_its_dependents_in_the_background() {
    let ns = "gc-background";
    let sv = server(ns);
    family(&sv, ns, false);
    sv.ok(&["delete", "configmap", "owner", "-n", ns]);
    wait_gone(&sv, ns, "configmap", "a");
    wait_gone(&sv, ns, "configmap", "b");
    wait_gone(&sv, ns, "service", "s");
    assert!(!exists(&sv, ns, "configmap", "owner"));
}

#[test]
fn orphan_cascade_keeps_the_dependents_without_the_reference() {
    let ns = "gc-orphan";
    let sv = server(ns);
    family(&sv, ns, true);
    // kubectl waits for the owner to be gone, which takes the collector's work.
    sv.ok(&["delete", "configmap", "owner", "-n", ns, "--cascade=orphan", "--timeout=30s"]);
    assert!(!exists(&sv, ns, "configmap", "owner"));
    for (kind, name) in [("configmap", "a"), ("configmap", "b"), ("service", "s")] {
        assert!(exists(&sv, ns, kind, name), "{kind} {name} was deleted");
        assert_eq!(jsonpath(&sv, ns, kind, name, "{.metadata.ownerReferences}"), "", "{kind} {name} still has its owner");
    }
}

#[test]
fn foreground_cascade_waits_for_blocking_dependents() {
    let ns = "gc-foreground";
    let sv = server(ns);
    configmap(&sv, ns, "owner", &[], &[]);
    // `held` blocks the owner and stays terminating until released; `free` does not block.
    configmap(&sv, ns, "held", &[cm_owner(&sv, ns, "owner", true)], &[HOLD]);
    configmap(&sv, ns, "free", &[cm_owner(&sv, ns, "owner", false)], &[]);
    service(&sv, ns, "s", &[cm_owner(&sv, ns, "owner", true)]);
    sv.ok(&["delete", "configmap", "owner", "-n", ns, "--cascade=foreground", "--wait=false"]);
    wait_gone(&sv, ns, "configmap", "free");
    wait_gone(&sv, ns, "service", "s");
    wait_deleting(&sv, ns, "configmap", "held");
    // The owner stays, marked for deletion, while a blocking dependent remains.
    assert!(!jsonpath(&sv, ns, "configmap", "owner", "{.metadata.deletionTimestamp}").is_empty());
    assert_eq!(jsonpath(&sv, ns, "configmap", "owner", "{.metadata.finalizers}"), r#"["foregroundDeletion"]"#);
    release(&sv, ns, "configmap", "held");
    wait_gone(&sv, ns, "configmap", "held");
    wait_gone(&sv, ns, "configmap", "owner");
}

#[test]
fn foreground_cascade_goes_down_a_chain() {
    let ns = "gc-chain";
    let sv = server(ns);
    configmap(&sv, ns, "a", &[], &[]);
    configmap(&sv, ns, "b", &[cm_owner(&sv, ns, "a", true)], &[]);
    configmap(&sv, ns, "c", &[cm_owner(&sv, ns, "b", true)], &[HOLD]);
    sv.ok(&["delete", "configmap", "a", "-n", ns, "--cascade=foreground", "--wait=false"]);
    wait_deleting(&sv, ns, "configmap", "c");
    // B was deleted in the foreground too: it waits for C, and A waits for B.
    wait_deleting(&sv, ns, "configmap", "b");
    assert_eq!(jsonpath(&sv, ns, "configmap", "b", "{.metadata.finalizers}"), r#"["foregroundDeletion"]"#);
    assert!(exists(&sv, ns, "configmap", "a"));
    release(&sv, ns, "configmap", "c");
    wait_gone(&sv, ns, "configmap", "c");
    wait_gone(&sv, ns, "configmap", "b");
    wait_gone(&sv, ns, "configmap", "a");
}

#[test]
fn an_object_with_two_owners_survives_one() {
    let ns = "gc-two-owners";
    let sv = server(ns);
    configmap(&sv, ns, "o1", &[], &[]);
    configmap(&sv, ns, "o2", &[], &[]);
    configmap(&sv, ns, "d", &[cm_owner(&sv, ns, "o1", false), cm_owner(&sv, ns, "o2", false)], &[]);
    sv.ok(&["delete", "configmap", "o1", "-n", ns]);
    // The dangling reference goes, the object stays.
    wait_for("d to lose its reference to o1", TIMEOUT, || (jsonpath(&sv, ns, "configmap", "d", "{.metadata.ownerReferences[*].name}") == "o2").then_some(()));
    sv.ok(&["delete", "configmap", "o2", "-n", ns]);
    wait_gone(&sv, ns, "configmap", "d");
}

#[test]
fn a_reference_whose_uid_does_not_match_is_dangling() {
    let ns = "gc-uid";
    let sv = server(ns);
    configmap(&sv, ns, "owner", &[], &[]);
    // The name exists, but with another uid: an earlier object of that name is gone.
    let stale = "{apiVersion: v1, kind: ConfigMap, name: owner, uid: 6c0b8e4a-0000-4000-8000-000000000000}".to_string();
    configmap(&sv, ns, "d", &[stale], &[]);
    configmap(&sv, ns, "kept", &[cm_owner(&sv, ns, "owner", false)], &[]);
    wait_gone(&sv, ns, "configmap", "d");
    assert!(exists(&sv, ns, "configmap", "owner"));
    assert!(exists(&sv, ns, "configmap", "kept"));
}

#[test]
fn deleting_a_deployment_removes_its_replicasets_and_pods() {
    let ns = "gc-deployment";
    let sv = server(ns);
    // Built by hand, with no selector matching another's labels, so no workload controller
    // adopts or scales anything here.
    sv.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{gc: dep}}\n  template:\n    metadata:\n      labels: {{gc: dep}}\n    spec:\n      containers:\n      - name: app\n        image: registry.k8s.io/pause:3.10\n"
    ));
    let dep = owner(&sv, ns, "apps/v1", "Deployment", "web", true);
    sv.apply(&format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-rs\n  namespace: {ns}\n  labels: {{gc: rs}}\n  ownerReferences: [{dep}]\nspec:\n  replicas: 0\n  selector:\n    matchLabels: {{gc: rs}}\n  template:\n    metadata:\n      labels: {{gc: rs}}\n    spec:\n      containers:\n      - name: app\n        image: registry.k8s.io/pause:3.10\n"
    ));
    let rs = owner(&sv, ns, "apps/v1", "ReplicaSet", "web-rs", true);
    sv.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-pod\n  namespace: {ns}\n  labels: {{gc: pod}}\n  ownerReferences: [{rs}]\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: app\n    image: registry.k8s.io/pause:3.10\n"
    ));
    sv.ok(&["delete", "deployment", "web", "-n", ns]);
    wait_gone(&sv, ns, "replicaset", "web-rs");
    wait_gone(&sv, ns, "pod", "web-pod");
    wait_gone(&sv, ns, "deployment", "web");
}

#[test]
fn cluster_scoped_owners_and_references_that_cannot_resolve() {
    let ns = "gc-cluster";
    let sv = server(ns);
    sv.apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: gc-owner\n");
    let node = owner(&sv, ns, "v1", "Node", "gc-owner", false);
    configmap(&sv, ns, "d", &[node], &[]);
    // A cluster-scoped object cannot have a namespaced owner (nor one of a kind not served): the
    // collector ignores such references rather than taking the owner for gone.
    sv.apply(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: gc-invalid\n  ownerReferences:\n  - {apiVersion: v1, kind: ConfigMap, name: none, uid: 6c0b8e4a-0000-4000-8000-000000000001}\n  - {apiVersion: example.com/v1, kind: Widget, name: none, uid: 6c0b8e4a-0000-4000-8000-000000000002}\n",
    );
    sv.ok(&["delete", "node", "gc-owner"]);
    wait_gone(&sv, ns, "configmap", "d");
    assert!(exists(&sv, ns, "node", "gc-invalid"));
}
