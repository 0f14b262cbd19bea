//! The node agent's container lifecycle on a real node of `svcnet up --nodes 1`: environment
//! from ConfigMaps and workingDir, a clear reason when there is no command, CrashLoopBackOff with
//! the previous run's logs, restartPolicy Never, liveness and startup probes, and graceful
//! termination (SIGTERM handled; SIGTERM ignored until the grace period ends in SIGKILL).

mod common;

use std::time::{Duration, Instant};

use common::{NodeNet, Svcnet, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn container(s: &Svcnet, pod: &str) -> Value {
    s.get_json(&["pod", pod])["status"]["containerStatuses"][0].clone()
}

fn pod_yaml(name: &str, extra_spec: &str, container: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra_spec}  containers:\n  - name: c\n    image: busybox\n{container}")
}

#[test]
fn container_lifecycle_on_a_real_node() {
    let net = NodeNet::claim();
    let mut args = vec!["--nodes".to_string(), "1".into()];
    args.extend(net.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Svcnet::start_with(tempfile::tempdir().unwrap(), &args);
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str| files.path().join(name).display().to_string();
    std::fs::write(file("alive"), "").unwrap();

    s.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {colour: blue}\n");
    s.apply(&pod_yaml(
        "env",
        "",
        "    command: [sh, -c, 'pwd; echo colour=$COLOUR; exec sleep 1000']\n    workingDir: /usr\n    env:\n    - {name: COLOUR, valueFrom: {configMapKeyRef: {name: settings, key: colour}}}\n",
    ));
    s.apply(&pod_yaml("no-command", "", ""));
    s.apply(&pod_yaml("crash", "", "    command: [sh, -c, 'echo crashing; exit 2']\n"));
    s.apply(&pod_yaml("done", "  restartPolicy: Never\n", "    command: [sh, -c, 'exit 0']\n"));
    s.apply(&pod_yaml("failed", "  restartPolicy: Never\n", "    command: [sh, -c, 'exit 1']\n"));
    s.apply(&pod_yaml(
        "liveness",
        "",
        &format!("    command: [sleep, '1000']\n    livenessProbe: {{exec: {{command: [cat, '{}']}}, periodSeconds: 1, failureThreshold: 1}}\n", file("alive")),
    ));
    s.apply(&pod_yaml(
        "startup",
        "",
        &format!(
            "    command: [sleep, '1000']\n    startupProbe: {{exec: {{command: [cat, '{}']}}, periodSeconds: 1, failureThreshold: 1000}}\n    readinessProbe: {{exec: {{command: ['true']}}, periodSeconds: 1}}\n",
            file("started")
        ),
    ));
    s.apply(&pod_yaml(
        "graceful",
        "  terminationGracePeriodSeconds: 30\n",
        &format!("    command: [sh, -c, 'trap \"echo TERM > {}; exit 0\" TERM; while :; do sleep 0.1; done']\n", file("graceful")),
    ));
    s.apply(&pod_yaml("stubborn", "  terminationGracePeriodSeconds: 3\n", "    command: [sh, -c, 'trap \"\" TERM; while :; do sleep 0.1; done']\n"));

    // env from a ConfigMap, workingDir.
    wait_for("env's output", LONG, || {
        let logs = s.kubectl(&["logs", "env"]);
        let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
        (logs.contains("/usr\n") && logs.contains("colour=blue")).then_some(())
    });

    // No command and an image that is not agnhost: a clear reason, never started.
    let c = wait_for("no-command's waiting reason", LONG, || {
        let c = container(&s, "no-command");
        c["state"]["waiting"]["reason"].is_string().then_some(c)
    });
    assert_eq!(c["state"]["waiting"]["reason"], "CreateContainerError", "{c}");
    assert!(c["state"]["waiting"]["message"].as_str().unwrap().contains("does not pull images"), "{c}");

    // A container that keeps exiting: CrashLoopBackOff, the last run's exit code, its logs.
    let c = wait_for("crash in CrashLoopBackOff", LONG, || {
        let c = container(&s, "crash");
        (c["state"]["waiting"]["reason"] == "CrashLoopBackOff").then_some(c)
    });
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 2, "{c}");
    assert!(c["restartCount"].as_i64().unwrap() >= 1, "{c}");
    assert!(s.ok(&["get", "pod", "crash"]).contains("CrashLoopBackOff"), "kubectl get pods shows the reason");
    assert!(s.ok(&["logs", "crash", "--previous"]).contains("crashing"));

    // restartPolicy Never: the pod ends Succeeded or Failed with the exit code.
    wait_for("done Succeeded, failed Failed", LONG, || {
        (s.get_json(&["pod", "done"])["status"]["phase"] == "Succeeded" && s.get_json(&["pod", "failed"])["status"]["phase"] == "Failed").then_some(())
    });
    assert_eq!(container(&s, "failed")["state"]["terminated"]["exitCode"], 1);
    assert_eq!(container(&s, "done")["restartCount"], 0);

    // Liveness: passing, then failing once -> the container is killed and restarted.
    wait_for("liveness running", LONG, || container(&s, "liveness")["state"]["running"].is_object().then_some(()));
    std::fs::remove_file(file("alive")).unwrap();
    let c = wait_for("liveness restarted", LONG, || {
        let c = container(&s, "liveness");
        (c["restartCount"].as_i64().unwrap_or(0) >= 1).then_some(c)
    });
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 137, "killed by SIGKILL: {c}");

    // Startup probe: neither started nor ready (readiness not even asked) until it passes.
    wait_for("startup running", LONG, || container(&s, "startup")["state"]["running"].is_object().then_some(()));
    let c = container(&s, "startup");
    assert_eq!((c["started"].clone(), c["ready"].clone()), (Value::Bool(false), Value::Bool(false)), "{c}");
    std::fs::write(file("started"), "").unwrap();
    wait_for("startup started and ready", LONG, || {
        let c = container(&s, "startup");
        (c["started"] == true && c["ready"] == true).then_some(())
    });
    assert_eq!(container(&s, "startup")["restartCount"], 0);

    // Graceful termination: a process that handles SIGTERM ends at once, before its 30 s grace.
    wait_for("graceful and stubborn running", LONG, || {
        (container(&s, "graceful")["state"]["running"].is_object() && container(&s, "stubborn")["state"]["running"].is_object()).then_some(())
    });
    s.ok(&["delete", "pod", "graceful", "--wait=true", "--timeout=60s"]);
    assert_eq!(std::fs::read_to_string(file("graceful")).unwrap().trim(), "TERM", "the container saw SIGTERM");
    // One that ignores it runs out its grace period (3 s), then is killed, and its namespace goes.
    let stubborn_uid = s.get_json(&["pod", "stubborn"])["metadata"]["uid"].as_str().unwrap().to_string();
    let pod_netns = format!("{}_{stubborn_uid}", net.node_netns("node-1"));
    let started = Instant::now();
    s.ok(&["delete", "pod", "stubborn", "--wait=true", "--timeout=60s"]);
    assert!(started.elapsed() >= Duration::from_secs(3), "SIGKILL only after the grace period ({:?})", started.elapsed());
    assert!(!net.namespaces().contains(&pod_netns), "the pod's namespace is removed");
}
