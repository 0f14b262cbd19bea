//! End-to-end: Deployments, ReplicaSets, StatefulSets and the scheduler, driven with the real
//! `kubectl`. No node agent runs pods yet, so the tests play the kubelet: they mark pods
//! Running and Ready through the status subresource and finish graceful deletions with
//! `--grace-period=0 --force`.

mod common;

use std::time::Duration;

use common::{Svcnet, wait_for};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn get_json(sv: &Svcnet, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&sv.ok(&all)).unwrap()
}

/// The pods of `ns` with label selector `selector`.
fn pods(sv: &Svcnet, ns: &str, selector: &str) -> Vec<Value> {
    get_json(sv, &["get", "pods", "-n", ns, "-l", selector])["items"].as_array().cloned().unwrap_or_default()
}

fn name(p: &Value) -> &str {
    p["metadata"]["name"].as_str().unwrap()
}

fn terminating(p: &Value) -> bool {
    p["metadata"].get("deletionTimestamp").is_some()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Plays the kubelet for one pod: Running and Ready.
fn make_ready(sv: &Svcnet, ns: &str, pod: &str, ip: &str) {
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{}"}}]}}}}"#,
        now()
    );
    // The pod may be gone already (deleted by its controller meanwhile).
    let _ = sv.kubectl(&["patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge", "-p", &patch]);
}

/// Plays the kubelet for every pod of `selector` once: makes pending ones Ready and finishes
/// terminating ones. Returns the pods it saw.
fn kubelet_step(sv: &Svcnet, ns: &str, selector: &str, next_ip: &mut u32) -> Vec<Value> {
    let seen = pods(sv, ns, selector);
    for p in &seen {
        if terminating(p) {
            let _ = sv.kubectl(&["delete", "pod", name(p), "-n", ns, "--grace-period=0", "--force", "--wait=false"]);
        } else if !ready(p) {
            *next_ip += 1;
            make_ready(sv, ns, name(p), &format!("10.1.{}.{}", *next_ip / 250, *next_ip % 250 + 1));
        }
    }
    seen
}

fn apply_node(sv: &Svcnet, name: &str, ready: bool, labels: &str) {
    sv.apply(&format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n"));
    let status = if ready { "True" } else { "False" };
    let patch = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{status}","reason":"Test","lastHeartbeatTime":"{t}","lastTransitionTime":"{t}"}}]}}}}"#,
        t = now()
    );
    sv.ok(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &patch]);
}

fn deployment_yaml(ns: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
"#
    )
}

/// Drives the kubelet until `done` holds, asserting at every observed point that no more than
/// `max_pods` pods that are not terminating exist.
fn drive_until(sv: &Svcnet, ns: &str, selector: &str, max_pods: usize, what: &str, mut done: impl FnMut() -> bool) {
    let mut ip = 0;
    wait_for(what, TIMEOUT, || {
        let seen = kubelet_step(sv, ns, selector, &mut ip);
        let live = seen.iter().filter(|p| !terminating(p)).count();
        assert!(live <= max_pods, "{live} live pods, more than {max_pods}: {:?}", seen.iter().map(name).collect::<Vec<_>>());
        done().then_some(())
    });
}

fn images(sv: &Svcnet, ns: &str) -> Vec<String> {
    let mut v: Vec<String> =
        pods(sv, ns, "app=web").iter().filter(|p| !terminating(p)).map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

#[test]
fn deployment_rolls_out_scales_and_undoes() {
    let sv = Svcnet::start();
    let ns = "deploy";
    sv.namespace(ns);
    // A Ready node: pods are bound, so their deletion is graceful as on a real cluster.
    apply_node(&sv, "node-a", true, "");
    sv.apply(&deployment_yaml(ns, 3, "nginx:1.0"));

    drive_until(&sv, ns, "app=web", 4, "3 Ready pods of nginx:1.0", || images(&sv, ns) == ["nginx:1.0"; 3] && pods(&sv, ns, "app=web").iter().all(ready));
    let p = pods(&sv, ns, "app=web");
    for pod in &p {
        assert!(name(pod).starts_with("web-"), "{}", name(pod));
        assert_eq!(pod["spec"]["nodeName"], "node-a");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()),
            (Some("ReplicaSet"), Some(true), Some(true))
        );
        assert!(pod["metadata"]["labels"]["pod-template-hash"].is_string());
    }
    sv.ok(&["rollout", "status", "deployment/web", "-n", ns, "--timeout=60s"]);
    let rs = get_json(&sv, &["get", "rs", "-n", ns]);
    let rs = &rs["items"][0];
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"], "3");
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"], "4");
    assert_eq!(rs["status"]["readyReplicas"], 3);

    // A new image rolls out, never with more than replicas + maxSurge live pods.
    sv.apply(&deployment_yaml(ns, 3, "nginx:2.0"));
    std::thread::scope(|s| {
        let status = s.spawn(|| sv.kubectl(&["rollout", "status", "deployment/web", "-n", ns, "--timeout=60s"]));
        drive_until(&sv, ns, "app=web", 4, "rollout to nginx:2.0", || status.is_finished());
        let out = status.join().unwrap();
        assert!(out.status.success(), "rollout status: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"));
    });
    drive_until(&sv, ns, "app=web", 4, "only nginx:2.0 pods", || images(&sv, ns) == ["nginx:2.0"; 3]);
    let d = get_json(&sv, &["get", "deployment", "web", "-n", ns]);
    let st = &d["status"];
    assert_eq!((st["replicas"].as_i64(), st["updatedReplicas"].as_i64(), st["availableReplicas"].as_i64()), (Some(3), Some(3), Some(3)), "{st}");
    assert_eq!(st["observedGeneration"], d["metadata"]["generation"]);
    let conds = st["conditions"].as_array().unwrap();
    assert!(conds.iter().any(|c| c["type"] == "Available" && c["status"] == "True" && c["reason"] == "MinimumReplicasAvailable"), "{conds:?}");
    assert!(conds.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"), "{conds:?}");

    let history = sv.ok(&["rollout", "history", "deployment/web", "-n", ns]);
    assert!(history.lines().any(|l| l.trim_start().starts_with('1')) && history.lines().any(|l| l.trim_start().starts_with('2')), "{history}");

    // Undo goes back to nginx:1.0, as revision 3.
    sv.ok(&["rollout", "undo", "deployment/web", "-n", ns]);
    drive_until(&sv, ns, "app=web", 4, "undo to nginx:1.0", || {
        let d = get_json(&sv, &["get", "deployment", "web", "-n", ns]);
        d["status"]["updatedReplicas"] == 3 && d["status"]["replicas"] == 3 && images(&sv, ns) == ["nginx:1.0"; 3]
    });
    let revisions: Vec<String> = get_json(&sv, &["get", "rs", "-n", ns])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            format!(
                "{}={}",
                rs["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap(),
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str().unwrap()
            )
        })
        .collect();
    assert!(revisions.contains(&"nginx:1.0=3".to_string()) && revisions.contains(&"nginx:2.0=2".to_string()), "{revisions:?}");

    // Scale to zero and back through the scale subresource.
    sv.ok(&["scale", "deployment/web", "-n", ns, "--replicas=0"]);
    drive_until(&sv, ns, "app=web", 4, "no pods", || pods(&sv, ns, "app=web").is_empty());
    sv.ok(&["scale", "deployment/web", "-n", ns, "--replicas=2"]);
    drive_until(&sv, ns, "app=web", 3, "2 Ready pods", || {
        let p = pods(&sv, ns, "app=web");
        p.len() == 2 && p.iter().all(ready)
    });
    sv.ok(&["rollout", "status", "deployment/web", "-n", ns, "--timeout=60s"]);
}

#[test]
fn replicaset_adopts_releases_and_replaces() {
    let sv = Svcnet::start();
    let ns = "rs";
    sv.namespace(ns);
    // An orphan the ReplicaSet will adopt.
    sv.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: orphan\n  namespace: {ns}\n  labels: {{app: cache}}\nspec:\n  containers:\n  - name: c\n    image: redis\n"
    ));
    sv.apply(&format!(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: cache
  namespace: {ns}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: cache}}
  template:
    metadata:
      labels: {{app: cache}}
    spec:
      containers:
      - name: c
        image: redis
"#
    ));
    let all = wait_for("2 pods, one the adopted orphan", TIMEOUT, || {
        let p = pods(&sv, ns, "app=cache");
        (p.len() == 2 && p.iter().all(|p| p["metadata"]["ownerReferences"][0]["name"] == "cache")).then_some(p)
    });
    assert!(all.iter().any(|p| name(p) == "orphan"));
    let other = all.iter().map(name).find(|n| *n != "orphan").unwrap().to_string();
    assert!(other.starts_with("cache-"), "{other}");

    // Relabelled, it is released and replaced.
    sv.ok(&["label", "pod", "orphan", "-n", ns, "app=other", "--overwrite"]);
    wait_for("the released pod replaced", TIMEOUT, || {
        let released = get_json(&sv, &["get", "pod", "orphan", "-n", ns]);
        let p = pods(&sv, ns, "app=cache");
        (released["metadata"].get("ownerReferences").is_none_or(|o| o.as_array().is_some_and(Vec::is_empty)) && p.len() == 2).then_some(())
    });

    // Status, with readiness.
    let mut ip = 0;
    wait_for("status with 2 ready replicas", TIMEOUT, || {
        kubelet_step(&sv, ns, "app=cache", &mut ip);
        let rs = get_json(&sv, &["get", "rs", "cache", "-n", ns]);
        let s = &rs["status"];
        (s["replicas"] == 2
            && s["readyReplicas"] == 2
            && s["availableReplicas"] == 2
            && s["fullyLabeledReplicas"] == 2
            && s["observedGeneration"] == rs["metadata"]["generation"])
            .then_some(())
    });

    // A deleted pod is replaced.
    sv.ok(&["delete", "pod", &other, "-n", ns, "--wait=false"]);
    wait_for("a replacement", TIMEOUT, || {
        let p = pods(&sv, ns, "app=cache");
        (p.len() == 2 && p.iter().all(|p| name(p) != other)).then_some(())
    });
}

fn statefulset_yaml(ns: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: {ns}
spec:
  replicas: {replicas}
  serviceName: db-hl
  selector:
    matchLabels: {{app: db}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      containers:
      - name: db
        image: postgres
"#
    )
}

#[test]
fn statefulset_comes_up_in_order() {
    let sv = Svcnet::start();
    let ns = "sts";
    sv.namespace(ns);
    sv.apply(&statefulset_yaml(ns, 3));
    for ord in 0..3 {
        let pod = format!("db-{ord}");
        // The set has seen its pods so far (its status says so) and made no more.
        wait_for(&format!("{pod} created and counted"), TIMEOUT, || {
            let sts = get_json(&sv, &["get", "sts", "db", "-n", ns]);
            (sts["status"]["replicas"] == ord + 1).then_some(())
        });
        let names: Vec<String> = pods(&sv, ns, "app=db").iter().map(|p| name(p).to_string()).collect();
        assert_eq!(names, (0..=ord).map(|i| format!("db-{i}")).collect::<Vec<_>>(), "db-{} exists before {pod} is Ready", ord + 1);
        let p = get_json(&sv, &["get", "pod", &pod, "-n", ns]);
        assert_eq!(p["spec"]["hostname"], pod.as_str());
        assert_eq!(p["spec"]["subdomain"], "db-hl");
        assert_eq!(p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], pod.as_str());
        assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], ord.to_string());
        make_ready(&sv, ns, &pod, &format!("10.2.0.{}", ord + 1));
    }
    wait_for("3 ready replicas", TIMEOUT, || {
        let s = get_json(&sv, &["get", "sts", "db", "-n", ns])["status"].clone();
        (s["readyReplicas"] == 3 && s["currentRevision"] == s["updateRevision"] && s["updatedReplicas"] == 3).then_some(())
    });
    sv.ok(&["rollout", "status", "statefulset/db", "-n", ns, "--timeout=60s"]);

    // A deleted pod comes back under the same name.
    let uid = get_json(&sv, &["get", "pod", "db-1", "-n", ns])["metadata"]["uid"].clone();
    sv.ok(&["delete", "pod", "db-1", "-n", ns, "--wait=false"]);
    wait_for("db-1 recreated", TIMEOUT, || {
        let p = pods(&sv, ns, "app=db");
        p.iter().find(|p| name(p) == "db-1" && p["metadata"]["uid"] != uid).map(|_| ())
    });
    make_ready(&sv, ns, "db-1", "10.2.0.9");

    // Scaled down, the highest ordinal goes first.
    sv.apply(&statefulset_yaml(ns, 1));
    wait_for("only db-0 left", TIMEOUT, || {
        let names: Vec<String> = pods(&sv, ns, "app=db").iter().map(|p| name(p).to_string()).collect();
        assert!(!names.contains(&"db-2".to_string()) || names.contains(&"db-1".to_string()), "db-1 went before db-2: {names:?}");
        assert!(names.contains(&"db-0".to_string()), "{names:?}");
        (names == ["db-0"]).then_some(())
    });
}

#[test]
fn scheduler_binds_to_ready_nodes_and_spreads() {
    let sv = Svcnet::start();
    let ns = "sched";
    sv.namespace(ns);
    apply_node(&sv, "node-a", true, "disk: ssd");
    apply_node(&sv, "node-b", true, "");
    apply_node(&sv, "node-c", false, "");
    sv.apply(&deployment_yaml(ns, 4, "nginx"));
    let bound = wait_for("4 bound pods", TIMEOUT, || {
        let p = pods(&sv, ns, "app=web");
        let nodes: Vec<String> = p.iter().filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string)).collect();
        (nodes.len() == 4).then_some(nodes)
    });
    assert_eq!(bound.iter().filter(|n| *n == "node-a").count(), 2, "{bound:?}");
    assert_eq!(bound.iter().filter(|n| *n == "node-b").count(), 2, "{bound:?}");
    let p = get_json(&sv, &["get", "pods", "-n", ns, "-l", "app=web"]);
    assert!(p["items"][0]["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "True"));

    // nodeSelector: only a node with the label will do, and none has it yet.
    let pinned = |n: &str, disk: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {n}\n  namespace: {ns}\nspec:\n  nodeSelector: {{disk: {disk}}}\n  containers:\n  - name: c\n    image: i\n"
        )
    };
    sv.apply(&pinned("on-ssd", "ssd"));
    wait_for("on-ssd bound to node-a", TIMEOUT, || (get_json(&sv, &["get", "pod", "on-ssd", "-n", ns])["spec"]["nodeName"] == "node-a").then_some(()));
    sv.apply(&pinned("on-hdd", "hdd"));
    // node-c gets the label but is NotReady: still nowhere to go. Then node-b gets it.
    sv.ok(&["label", "node", "node-c", "disk=hdd"]);
    sv.ok(&["label", "node", "node-b", "disk=hdd"]);
    wait_for("on-hdd bound to node-b", TIMEOUT, || (get_json(&sv, &["get", "pod", "on-hdd", "-n", ns])["spec"]["nodeName"] == "node-b").then_some(()));
    // Nothing ever went to the NotReady node.
    let all = get_json(&sv, &["get", "pods", "-n", ns]);
    assert!(all["items"].as_array().unwrap().iter().all(|p| p["spec"]["nodeName"] != "node-c"));
}
