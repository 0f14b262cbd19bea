//! Node agents for real: `svcnet up --nodes N` runs pods as processes in their own namespaces on
//! simulated nodes (network namespaces on a bridge of the test's own), wired without NAT.

mod common;

use std::time::Duration;

use common::{NodeNet, Svcnet, pids_in, ready_nodes, ready_pods, wait_for};
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

/// A TCP relay on `listen` to `to`, for as long as the test runs (the API server listens on
/// loopback; a node in a namespace of its own reaches it through the host's bridge address).
fn relay(listen: &str, to: String) -> std::net::SocketAddr {
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind(listen).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&to) else { continue };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// `svcnet node` started by the test inside a namespace of its own; stopped (SIGTERM) and its
/// pods' namespaces removed when dropped.
struct NodeAgent {
    child: Option<std::process::Child>,
    pod_netns_prefix: String,
    log: std::path::PathBuf,
}

impl NodeAgent {
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        for _ in 0..400 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().unwrap()
    }

    fn pod_namespaces(&self) -> Vec<String> {
        common::netns_named(&self.pod_netns_prefix)
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        for ns in self.pod_namespaces() {
            let _ = std::process::Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn svcnet_node_joins_from_a_namespace_of_its_own() {
    let net = NodeNet::claim();
    let host = format!("{}1", net.prefix);
    let pool = format!("{p}200-{p}201", p = net.prefix);
    let s = start(&net, 1, &["--tls-san", &host, "--lb-pool", &pool]);
    wait_for("node-1 Ready", LONG, || (ready_nodes(&s).len() == 1).then_some(()));

    // A "machine" of the test's own on the node network: a namespace with eth0 on the bridge
    // (removed with the NodeNet: its name has the bridge's prefix).
    let ns = net.node_netns("ext");
    let ext_ip = format!("{}100", net.prefix);
    let host_side = format!("{}x", net.bridge);
    sh(&["ip", "netns", "add", &ns]);
    sh(&["ip", "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
    sh(&["ip", "link", "set", &host_side, "master", &net.bridge, "up"]);
    sh(&["ip", "-n", &ns, "addr", "add", &format!("{ext_ip}/24"), "dev", "eth0"]);
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
    sh(&["ip", "-n", &ns, "route", "add", "default", "via", &host]);

    // Its kubeconfig: the API server through the host's bridge address.
    let api = relay(&format!("{host}:0"), s.addr.clone());
    let kubeconfig = std::fs::read_to_string(&s.kubeconfig).unwrap().replace(&format!("https://{}", s.addr), &format!("https://{api}"));
    let state = tempfile::tempdir().unwrap();
    let kubeconfig_path = state.path().join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig).unwrap();
    let name = format!("ext-{}", net.bridge);
    let log = state.path().join("node.log");
    let child = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(common::svcnet_bin())
        .args(["node", "--kubeconfig"])
        .arg(&kubeconfig_path)
        .args(["--name", &name, "--state-dir"])
        .arg(state.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = NodeAgent { child: Some(child), pod_netns_prefix: format!("svcnet-{name}_"), log };
    let node = wait_for("the namespace's node Ready with a podCIDR", LONG, || ready_nodes(&s).into_iter().find(|n| n["metadata"]["name"] == name.as_str()));
    assert_eq!(
        node["status"]["addresses"][0]["address"],
        ext_ip.as_str(),
        "InternalIP = eth0's address; log:\n{}",
        std::fs::read_to_string(&agent.log).unwrap_or_default()
    );

    let pod = |pod: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, labels: {{app: {pod}}}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {NETEXEC}\n    args: [netexec, --http-port=8080]\n    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n"
        )
    };
    s.apply(&pod("here", "node-1"));
    s.apply(&pod("there", &name));
    let here = wait_for("pod here ready", LONG, || ready_pods(&s, "default", "app=here").pop());
    let there = wait_for("pod there ready", LONG, || ready_pods(&s, "default", "app=there").pop());
    let (here_ip, there_ip) = (here["status"]["podIP"].as_str().unwrap(), there["status"]["podIP"].as_str().unwrap());
    assert_eq!(there["status"]["hostIP"], ext_ip.as_str());
    assert!(there_ip.starts_with(node["spec"]["podCIDR"].as_str().unwrap().trim_end_matches("0/24")), "{there_ip} in the node's podCIDR");

    // Pod to pod between the two agents, without NAT, both ways.
    let out = s.ok(&["exec", "here", "--", "curl", "-sS", "--max-time", "5", &format!("http://{there_ip}:8080/clientip")]);
    assert_eq!(out.rsplit_once(':').unwrap().0, here_ip);
    let out = s.ok(&["exec", "there", "--", "curl", "-sS", "--max-time", "5", &format!("http://{here_ip}:8080/clientip")]);
    assert_eq!(out.rsplit_once(':').unwrap().0, there_ip);
    // exec, logs through the agent's own node API; cluster DNS and Services through its proxy.
    assert_eq!(s.ok(&["exec", "there", "--", "hostname"]).trim(), "there");
    assert!(s.ok(&["logs", "there"]).contains(&format!("GET /clientip from {here_ip}:")));
    let answer = s.ok(&["exec", "there", "--", "dig", "+short", "kubernetes.default.svc.cluster.local"]);
    assert_eq!(answer.trim(), "10.96.0.1");
    s.apply("apiVersion: v1\nkind: Service\nmetadata: {name: here}\nspec:\n  selector: {app: here}\n  ports: [{port: 80, targetPort: 8080}]\n");
    let out = wait_for("Service here from the agent's pod", LONG, || {
        let out = s.kubectl(&["exec", "there", "--", "curl", "-sS", "--max-time", "3", "http://here/hostname"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(out, "here");
    // A LoadBalancer IP whose only endpoint is on the agent's node (externalTrafficPolicy Local):
    // the agent holds it on its uplink and serves it from outside.
    s.apply("apiVersion: v1\nkind: Service\nmetadata: {name: there-lb}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: there}\n  ports: [{port: 80, targetPort: 8080}]\n");
    let lb_ip = wait_for("there-lb's EXTERNAL-IP", LONG, || {
        let v = s.ok(&["get", "svc", "there-lb", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]);
        (!v.is_empty()).then_some(v)
    });
    let held = || {
        let out = std::process::Command::new("ip").args(["-n", &ns, "-o", "addr", "show", "dev", "eth0"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {lb_ip}/32"))
    };
    wait_for("the LoadBalancer IP on the agent's eth0", LONG, || held().then_some(()));
    let out = wait_for("the LoadBalancer IP from the host", LONG, || common::curl_host(&format!("http://{lb_ip}/hostname"), 3));
    assert_eq!(out, "there");

    // SIGTERM: the agent leaves its namespace as it found it.
    assert!(agent.terminate().success(), "svcnet node exits 0; log:\n{}", std::fs::read_to_string(&agent.log).unwrap_or_default());
    assert!(agent.pod_namespaces().is_empty(), "pod namespaces left: {:?}", agent.pod_namespaces());
    let links = std::process::Command::new("ip").args(["-n", &ns, "-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("cbr0"), "cbr0 left: {links}");
    assert!(!held(), "the LoadBalancer IP is released from eth0");
    let tables = std::process::Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "tables"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "", "nftables tables left");
}

#[test]
fn vxlan_overlay_carries_pod_traffic_between_nodes() {
    let net = NodeNet::claim();
    let s = start(&net, 2, &["--overlay", "vxlan"]);
    wait_for("2 Ready nodes with podCIDRs", LONG, || (ready_nodes(&s).len() == 2).then_some(()));
    let pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {NETEXEC}\n    args: [netexec, --http-port=8080]\n"
        )
    };
    s.apply(&pod("a", "node-1"));
    s.apply(&pod("b", "node-2"));
    let a = wait_for("pod a", LONG, || ready_pods(&s, "default", "app=a").pop());
    let b = wait_for("pod b", LONG, || ready_pods(&s, "default", "app=b").pop());
    let (a_ip, b_ip) = (a["status"]["podIP"].as_str().unwrap(), b["status"]["podIP"].as_str().unwrap());
    // node-1 routes node-2's podCIDR over the VXLAN device, not via node-2's address.
    let node_2_cidr = s.get_json(&["node", "node-2"])["spec"]["podCIDR"].as_str().unwrap().to_string();
    let routes = net.in_node("node-1", &["ip", "route", "show", &node_2_cidr]);
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(routes.contains("dev svcnet.vxlan"), "route to {node_2_cidr}: {routes}");
    // Pod a dials pod b through the overlay; b sees a's own address.
    let out = s.ok(&["exec", "a", "--", "curl", "-sS", "--max-time", "5", &format!("http://{b_ip}:8080/clientip")]);
    assert_eq!(out.rsplit_once(':').unwrap().0, a_ip);
    // And the packets really went over VXLAN (UDP 8472 between the nodes): its counters moved.
    let stats = net.in_node("node-1", &["ip", "-s", "-j", "link", "show", "svcnet.vxlan"]);
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(stats[0]["stats64"]["tx"]["packets"].as_u64().unwrap() > 0, "{stats}");
}

#[test]
fn restart_after_kill9_takes_over_what_the_last_run_left() {
    let net = NodeNet::claim();
    let s = start(&net, 1, &[]);
    wait_for("a Ready node", LONG, || (ready_nodes(&s).len() == 1).then_some(()));
    s.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{app: p}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {NETEXEC}\n    args: [netexec, --http-port=8080]\n"
    ));
    let p = wait_for("pod p", LONG, || ready_pods(&s, "default", "app=p").pop());
    let pod_ns = format!("{}_{}", net.node_netns("node-1"), p["metadata"]["uid"].as_str().unwrap());
    let old_pids = pids_in(&pod_ns);
    assert!(!old_pids.is_empty());

    // kill -9: nothing is cleaned up; the restart on the same data dir and bridge takes over.
    let dir = s.kill9();
    let mut args: Vec<String> = vec!["--nodes".into(), "1".into()];
    args.extend(net.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Svcnet::start_with(dir, &args);
    // svcnet up removes what the killed run left (node and pod namespaces, their processes) and
    // sets the pod up again: a new sandbox, so a new address, as a recreated sandbox gets upstream.
    wait_for("the killed run's pod processes gone", LONG, || old_pids.iter().all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()));
    wait_for("pod p serving again", LONG, || {
        let p = ready_pods(&s, "default", "app=p").pop()?;
        let ip = p["status"]["podIP"].as_str()?.to_string();
        (curl_from_node(&net, "node-1", &format!("http://{ip}:8080/hostname")).as_deref() == Some("p")).then_some(())
    });
    assert_eq!(net.namespaces().len(), 2, "the node's and the pod's namespaces: {:?}", net.namespaces());
    let (status, _dir) = s.terminate();
    assert!(status.success());
    assert!(net.namespaces().is_empty(), "{:?}", net.namespaces());
}
