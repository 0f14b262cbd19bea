//! Node agents for real: `svcnet up --nodes N` runs pods as processes in their own namespaces on
//! simulated nodes (network namespaces on a bridge of the test's own), wired without NAT.

mod common;

use std::time::Duration;

use common::{NodeNet, Svcnet, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn start(net: &NodeNet, nodes: usize, extra: &[&str]) -> Svcnet {
    let dir = tempfile::tempdir().unwrap();
    let n = nodes.to_string();
    let mut args: Vec<String> = vec!["--nodes".into(), n];
    args.extend(net.flags());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Svcnet::start_with(dir, &args)
}

fn ready_nodes(s: &Svcnet) -> Vec<Value> {
    let nodes = s.get_json(&["nodes"]);
    nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .filter(|n| n["spec"]["podCIDR"].is_string())
        .cloned()
        .collect()
}

/// Pods of `selector` that are Running and Ready, with their IPs.
fn ready_pods(s: &Svcnet, ns: &str, selector: &str) -> Vec<Value> {
    let pods = s.get_json(&["pods", "-n", ns, "-l", selector]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
        .filter(|p| p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .cloned()
        .collect()
}

fn curl_from_node(net: &NodeNet, node: &str, url: &str) -> Option<String> {
    let out = net.in_node(node, &["curl", "-sS", "--max-time", "5", url]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

const NETEXEC: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

#[test]
fn pods_run_on_nodes_and_reach_each_other_without_nat() {
    let net = NodeNet::claim();
    let s = start(&net, 2, &[]);
    wait_for("2 Ready nodes with podCIDRs", LONG, || (ready_nodes(&s).len() == 2).then_some(()));
    let nodes = ready_nodes(&s);
    for n in &nodes {
        let ip = n["status"]["addresses"][0]["address"].as_str().unwrap();
        assert!(ip.starts_with(&net.prefix), "node address {ip} is on the node network {}", net.cidr);
    }

    s.namespace("web");
    // Containers run commands from the node's filesystem: here this very binary's agnhost.
    let bin = common::svcnet_bin().display().to_string();
    s.ok(&["create", "deployment", "web", "-n", "web", "--image", NETEXEC, "--replicas", "4", "--", &bin, "agnhost", "netexec", "--http-port=8080"]);
    let pods = wait_for("4 ready web pods", LONG, || {
        let p = ready_pods(&s, "web", "app=web");
        (p.len() == 4).then_some(p)
    });
    // Spread over both nodes (the scheduler prefers the node with fewer pods).
    let on = |node: &str| pods.iter().filter(|p| p["spec"]["nodeName"] == node).count();
    assert_eq!((on("node-1"), on("node-2")), (2, 2), "pods spread over the nodes");
    for p in &pods {
        assert_eq!(p["status"]["hostIP"], nodes.iter().find(|n| n["metadata"]["name"] == p["spec"]["nodeName"]).unwrap()["status"]["addresses"][0]["address"]);
    }

    // The hostname a pod sees is its name, and its IP is in its node's podCIDR.
    let a = pods.iter().find(|p| p["spec"]["nodeName"] == "node-1").unwrap();
    let b = pods.iter().find(|p| p["spec"]["nodeName"] == "node-2").unwrap();
    let (a_ip, b_ip) = (a["status"]["podIP"].as_str().unwrap(), b["status"]["podIP"].as_str().unwrap());
    let hostname = curl_from_node(&net, "node-1", &format!("http://{a_ip}:8080/hostname")).expect("node reaches its pod");
    assert_eq!(hostname, a["metadata"]["name"].as_str().unwrap());

    // Pod a (node-1) asks pod b (node-2) who is calling: b sees a's own address (no NAT).
    let dial = curl_from_node(&net, "node-1", &format!("http://{a_ip}:8080/dial?host={b_ip}&port=8080&request=clientip")).expect("dial");
    let answer: Value = serde_json::from_str(&dial).unwrap();
    let seen = answer["responses"][0].as_str().unwrap_or_else(|| panic!("no response: {dial}"));
    assert_eq!(seen.rsplit_once(':').unwrap().0, a_ip, "the client address pod b sees");

    // A container whose process exits is restarted, and counted.
    let _ = curl_from_node(&net, "node-2", &format!("http://{b_ip}:8080/exit?code=3"));
    let b_name = b["metadata"]["name"].as_str().unwrap().to_string();
    wait_for("the exited container restarted", LONG, || {
        let p = s.get_json(&["pod", "-n", "web", &b_name]);
        let st = &p["status"]["containerStatuses"][0];
        (st["restartCount"] == 1 && st["state"]["running"].is_object() && st["lastState"]["terminated"]["exitCode"] == 3).then_some(())
    });
    wait_for("the restarted container serves again", LONG, || curl_from_node(&net, "node-2", &format!("http://{b_ip}:8080/hostname")));

    // Deleting a pod stops it and removes its namespace; the Deployment replaces it.
    let before = net.namespaces().len();
    s.ok(&["delete", "pod", "-n", "web", &b_name, "--wait=true", "--timeout=60s"]);
    assert!(curl_from_node(&net, "node-2", &format!("http://{b_ip}:8080/hostname")).is_none(), "the deleted pod is gone");
    wait_for("a replacement pod", LONG, || (ready_pods(&s, "web", "app=web").len() == 4).then_some(()));
    assert_eq!(net.namespaces().len(), before, "one pod namespace out, one in");

    // SIGTERM to svcnet removes every namespace and the bridge.
    let (status, _dir) = s.terminate();
    assert!(status.success(), "svcnet exits 0 on SIGTERM");
    assert!(net.namespaces().is_empty(), "namespaces left: {:?}", net.namespaces());
    assert!(!net.bridge_exists(), "bridge {} left", net.bridge);
}

#[test]
fn readiness_probe_drives_endpoints_and_env_has_service_links() {
    let net = NodeNet::claim();
    let s = start(&net, 1, &[]);
    wait_for("a Ready node", LONG, || (ready_nodes(&s).len() == 1).then_some(()));
    let flag = tempfile::NamedTempFile::new().unwrap();
    let flag_path = flag.path().display().to_string();
    s.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: 8000, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: backend-0, labels: {{app: backend}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: server
    image: {NETEXEC}
    command: ["{bin}", "agnhost", "netexec", "--http-port=8080"]
    env:
    - {{name: MY_POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: GREETING, value: "hi $(MY_POD_IP)"}}
    readinessProbe:
      exec: {{command: ["cat", "{flag_path}"]}}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 2
"#,
        bin = common::svcnet_bin().display()
    ));
    let ip = wait_for("backend-0 ready with the probe file present", LONG, || {
        let p = ready_pods(&s, "default", "app=backend");
        p.first().map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
    });
    wait_for("backend-0 in the Endpoints", LONG, || {
        let ep = s.get_json(&["endpoints", "backend"]);
        (ep["subsets"][0]["addresses"][0]["ip"] == ip.as_str()).then_some(())
    });
    // The environment: Service links, fieldRef and $(VAR) expansion, read through /proc of the
    // pod's process from the node... via the pod itself: netexec's /shell runs in the pod.
    let out = curl_from_node(&net, "node-1", &format!("http://{ip}:8080/shell?cmd=env")).unwrap();
    assert!(out.contains("BACKEND_SERVICE_PORT=8000"), "{out}");
    assert!(out.contains("BACKEND_SERVICE_PORT_HTTP=8000"), "{out}");
    assert!(out.contains(&format!("GREETING=hi {ip}")), "{out}");
    assert!(out.contains("KUBERNETES_SERVICE_HOST=10.96.0.1"), "{out}");
    let resolv = curl_from_node(&net, "node-1", &format!("http://{ip}:8080/shell?cmd=cat%20/etc/resolv.conf")).unwrap();
    assert!(resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{resolv}");
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");

    // kubectl exec and logs reach the pod through the API server and the node's API on the node
    // network.
    assert_eq!(s.ok(&["exec", "backend-0", "--", "hostname"]).trim(), "backend-0");
    let out = s.kubectl(&["exec", "backend-0", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "exec propagates the exit code");
    assert!(s.ok(&["logs", "backend-0"]).contains("netexec: http on :8080"));

    // The probe fails: the pod leaves the Service's ready addresses.
    drop(flag);
    wait_for("backend-0 unready in the Endpoints", LONG, || {
        let ep = s.get_json(&["endpoints", "backend"]);
        (ep["subsets"][0]["addresses"].is_null() && ep["subsets"][0]["notReadyAddresses"][0]["ip"] == ip.as_str()).then_some(())
    });
}

/// Nodes registered at once each get a podCIDR of their own (the controller must not hand out a
/// block twice while its cache has not yet seen its own patches).
#[test]
fn nodes_registered_together_get_distinct_pod_cidrs() {
    let s = Svcnet::start();
    let nodes: String = (1..=8).map(|i| format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: n{i}\n---\n")).collect();
    s.apply(&nodes);
    let cidrs = wait_for("8 nodes with podCIDRs", LONG, || {
        let list = s.get_json(&["nodes"]);
        let cidrs: Vec<String> = list["items"].as_array().unwrap().iter().filter_map(|n| n["spec"]["podCIDR"].as_str().map(str::to_string)).collect();
        (cidrs.len() == 8).then_some(cidrs)
    });
    let distinct: std::collections::BTreeSet<&String> = cidrs.iter().collect();
    assert_eq!(distinct.len(), 8, "podCIDRs handed out twice: {cidrs:?}");
    // A node deleted frees its block for the next one.
    s.ok(&["delete", "node", "n1"]);
    s.apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: n9\n");
    let n9 = wait_for("n9's podCIDR", LONG, || s.get_json(&["node", "n9"])["spec"]["podCIDR"].as_str().map(str::to_string));
    assert_eq!(n9, "10.244.0.0/24", "the freed first block is reused");
}
