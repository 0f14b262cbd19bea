//! The seed scenario as a new user tries it: `svcnet up --nodes 3 --lb-pool ...`, the seed's
//! manifests applied with the real kubectl, and every promise checked where a user would check
//! it: from inside pods (`kubectl exec ... curl`, `nslookup`, `dig`) and from the host.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::seed::{SEED_BACKEND, SEED_EXTERNAL, SEED_FRONTEND, SEED_HEADLESS, SEED_NODEPORT};
use common::{NodeNet, Svcnet, curl_host, ready_nodes, ready_pods, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);
const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

fn wait_ready(s: &Svcnet, ns: &str, selector: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} ready pods {selector} in {ns}"), LONG, || {
        let p = ready_pods(s, ns, selector);
        (p.len() == n).then_some(p)
    })
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap().to_string()
}

fn ip(p: &Value) -> String {
    p["status"]["podIP"].as_str().unwrap().to_string()
}

/// `kubectl exec -n NS POD -- ARGS...`: (exit code, stdout, stderr).
fn exec(s: &Svcnet, ns: &str, pod: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["exec", "-n", ns, pod, "--"];
    all.extend_from_slice(args);
    let out = s.kubectl(&all);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `curl` run inside a pod: Ok(body) or Err(curl's exit code) (7 = refused, 28 = timed out).
fn curl_in(s: &Svcnet, ns: &str, pod: &str, url: &str, timeout_s: u32) -> Result<String, i32> {
    let t = timeout_s.to_string();
    let (code, out, _) = exec(s, ns, pod, &["curl", "-sS", "--max-time", &t, url]);
    if code == 0 { Ok(out) } else { Err(code) }
}

fn deployment(name: &str, replicas: u32, port: u16, probe: bool) -> String {
    let probe = if probe { format!("\n        readinessProbe: {{httpGet: {{path: /healthz, port: {port}}}, periodSeconds: 1}}") } else { String::new() };
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: {name}
        image: {AGNHOST}
        args: ["netexec", "--http-port={port}"]
        ports: [{{containerPort: {port}}}]{probe}
"#
    )
}

const POSTGRES: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: postgres}
spec:
  serviceName: postgres
  replicas: 2
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: postgres
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=5432"]
"#;

const SEED_POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: backend-policy
spec:
  podSelector:
    matchLabels:
      app: backend
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: frontend    # Only frontend can access backend
    ports:
    - protocol: TCP
      port: 8000
  egress:
  - to:
    - podSelector:
        matchLabels:
          app: database    # Backend can only access database
    ports:
    - protocol: TCP
      port: 5432
";

/// `svcnet policy matrix` text: (port, from, to) -> allowed.
fn parse_matrix(text: &str) -> BTreeMap<(String, String, String), bool> {
    let mut cells = BTreeMap::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        let port = lines.next().unwrap().split_whitespace().next().unwrap().to_string();
        let columns: Vec<String> = lines.next().unwrap().split_whitespace().map(str::to_string).collect();
        for row in lines {
            let mut words = row.split_whitespace();
            let from = words.next().unwrap().to_string();
            for (to, mark) in columns.iter().zip(words) {
                cells.insert((port.clone(), from.clone(), to.clone()), mark == ".");
            }
        }
    }
    cells
}

#[test]
fn seed_scenario_on_three_nodes() {
    let net = NodeNet::claim();
    let pool = format!("{p}200-{p}209", p = net.prefix);
    // Names outside the cluster go to an upstream that answers nothing (no traffic leaves the box).
    let dead_upstream = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut args = vec!["--nodes".to_string(), "3".into(), "--lb-pool".into(), pool, "--dns-upstream".into(), dead_upstream];
    args.extend(net.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Svcnet::start_with(tempfile::tempdir().unwrap(), &args);
    let nodes = wait_for("3 Ready nodes", LONG, || {
        let ready = ready_nodes(&s);
        (ready.len() == 3).then_some(ready)
    });
    let node_ips: Vec<String> = nodes.iter().map(|n| n["status"]["addresses"][0]["address"].as_str().unwrap().to_string()).collect();

    // --- Pods on nodes (7d.6): six replicas spread over three nodes, pod to pod without NAT.
    s.namespace("web");
    let bin = common::svcnet_bin().display().to_string();
    s.ok(&["create", "deployment", "web", "-n", "web", "--image", AGNHOST, "--replicas=6", "--", &bin, "agnhost", "netexec", "--http-port=8080"]);
    let web = wait_ready(&s, "web", "app=web", 6);
    let per_node: BTreeMap<String, usize> = web.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p["spec"]["nodeName"].as_str().unwrap().to_string()).or_default() += 1;
        m
    });
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "spread: {per_node:?}");
    let on = |node: &str| web.iter().find(|p| p["spec"]["nodeName"] == node).unwrap();
    let (a, c) = (on("node-1"), on("node-3"));
    let answer = curl_in(&s, "web", &name(a), &format!("http://{}:8080/clientip", ip(c)), 5).expect("pod on node-1 reaches a pod on node-3");
    assert_eq!(answer.rsplit_once(':').unwrap().0, ip(a), "node-3's pod sees node-1's pod's own address");
    let logs = s.ok(&["logs", "-n", "web", &name(c)]);
    assert!(logs.contains(&format!("GET /clientip from {}:", ip(a))), "the server logs the client's pod IP:\n{logs}");

    // A pod sees only its own processes; killing its container's process restarts it.
    let (_, ps, _) = exec(&s, "web", &name(c), &["ps", "-eo", "pid=,args="]);
    let procs: Vec<&str> = ps.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(procs.len() < 6, "a pod sees only its own processes: {procs:?}");
    assert!(procs.iter().any(|l| l.contains("agnhost netexec")), "the server runs in the pod: {procs:?}");
    // Killed from the node, as an operator (or the OOM killer) would: inside the pod its process
    // is PID 1 of the pod's PID namespace, which the kernel shields from SIGKILL sent from within.
    let pod_netns = format!("{}_{}", net.node_netns("node-3"), c["metadata"]["uid"].as_str().unwrap());
    let pids = common::pids_in(&pod_netns);
    assert!(!pids.is_empty(), "processes in {pod_netns}");
    for pid in &pids {
        // These are the test's own svcnet's children (the pod's processes), never anything else.
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    wait_for("the killed container restarted", LONG, || {
        let p = s.get_json(&["pod", "-n", "web", &name(c)]);
        let st = &p["status"]["containerStatuses"][0];
        (st["restartCount"] == 1 && st["state"]["running"].is_object()).then_some(())
    });

    // --- The seed's workloads and Services (7d.2–7d.5).
    s.apply(&deployment("backend", 3, 8000, true));
    s.apply(&deployment("frontend", 1, 80, true));
    s.apply(&deployment("database", 1, 5432, false));
    s.apply(&deployment("other", 1, 8000, false));
    s.apply(POSTGRES);
    for manifest in [SEED_BACKEND, SEED_NODEPORT, SEED_FRONTEND, SEED_EXTERNAL, SEED_HEADLESS] {
        s.apply(manifest);
    }
    let backends = wait_ready(&s, "default", "app=backend", 3);
    let frontend = name(&wait_ready(&s, "default", "app=frontend", 1)[0]);
    let database = wait_ready(&s, "default", "app=database", 1).remove(0);
    let other = name(&wait_ready(&s, "default", "app=other", 1)[0]);
    let postgres = wait_ready(&s, "default", "app=postgres", 2);
    let backend_names: BTreeSet<String> = backends.iter().map(name).collect();

    // kubectl get endpoints backend prints the three pod addresses.
    let want: BTreeSet<String> = backends.iter().map(|p| format!("{}:8000", ip(p))).collect();
    wait_for("backend's Endpoints list the three pods", LONG, || {
        let out = s.ok(&["get", "endpoints", "backend", "--no-headers"]);
        let shown: BTreeSet<String> = out.split_whitespace().nth(1).unwrap_or_default().split(',').map(str::to_string).collect();
        (shown == want).then_some(())
    });

    // From a pod: `curl backend:8000` resolves through cluster DNS and reaches all three.
    let cluster_ip = s.ok(&["get", "svc", "backend", "-o", "jsonpath={.spec.clusterIP}"]);
    for url in ["http://backend:8000/hostname".to_string(), format!("http://{cluster_ip}:8000/hostname")] {
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            seen.insert(curl_in(&s, "default", &frontend, &url, 5).unwrap_or_else(|code| panic!("{url} from the frontend pod: curl exit {code}")));
            if seen == backend_names {
                break;
            }
        }
        if seen != backend_names {
            let node = ready_pods(&s, "default", "app=frontend")[0]["spec"]["nodeName"].as_str().unwrap().to_string();
            let table = net.in_node(&node, &["nft", "list", "table", "inet", "svcnet-proxy"]);
            let slices = s.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=backend", "-o", "yaml"]);
            let log = std::fs::read_to_string(s.dir.path().join("svcnet.log")).unwrap_or_default();
            let log: Vec<&str> = log.lines().filter(|l| l.contains("proxy") || l.contains("WARN") || l.contains("ERROR")).collect();
            panic!("{url} reaches {seen:?}, not every backend of {backend_names:?}\n{slices}\n{}\n{}", String::from_utf8_lossy(&table.stdout), log.join("\n"));
        }
    }

    // DNS from a pod, as 7d.3 and 7d.5 show.
    let (code, out, err) = exec(&s, "default", &frontend, &["nslookup", "backend"]);
    assert_eq!(code, 0, "nslookup backend: {out}{err}");
    assert!(out.contains("backend.default.svc.cluster.local") && out.contains(&cluster_ip), "{out}");
    let dig = |args: &[&str]| {
        let mut all = vec!["dig", "+short"];
        all.extend_from_slice(args);
        let (code, out, err) = exec(&s, "default", &frontend, &all);
        assert_eq!(code, 0, "dig {args:?}: {err}");
        out.lines().map(str::to_string).collect::<BTreeSet<String>>()
    };
    for name in ["backend.default", "backend.default.svc", "backend.default.svc.cluster.local"] {
        assert_eq!(dig(&["+search", name]), BTreeSet::from([cluster_ip.clone()]), "{name}");
    }
    assert_eq!(dig(&["postgres.default.svc.cluster.local"]), postgres.iter().map(ip).collect::<BTreeSet<_>>(), "the headless Service: every pod");
    let postgres_0 = postgres.iter().find(|p| name(p) == "postgres-0").unwrap();
    assert_eq!(dig(&["postgres-0.postgres.default.svc.cluster.local"]), BTreeSet::from([ip(postgres_0)]));
    assert!(dig(&["external-database.default.svc.cluster.local"]).contains("my-db.rds.amazonaws.com."), "ExternalName is a CNAME");
    assert_eq!(dig(&["-x", &cluster_ip]), BTreeSet::from(["backend.default.svc.cluster.local.".to_string()]));
    let srv = dig(&["SRV", "_dns._udp.kube-dns.kube-system.svc.cluster.local"]);
    assert!(srv.iter().any(|r| r.ends_with(" 53 kube-dns.kube-system.svc.cluster.local.")), "SRV of a named port: {srv:?}");

    // From the host: the NodePort on every node, the LoadBalancer's EXTERNAL-IP.
    for node_ip in &node_ips {
        let got = wait_for(&format!("NodePort 30001 on {node_ip}"), LONG, || curl_host(&format!("http://{node_ip}:30001/hostname"), 5));
        assert!(backend_names.contains(&got), "{got}");
    }
    let external_ip = wait_for("frontend's EXTERNAL-IP", LONG, || {
        let v = s.ok(&["get", "svc", "frontend", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"]);
        (!v.is_empty()).then_some(v)
    });
    assert!(external_ip.starts_with(&net.prefix), "{external_ip} is from the pool");
    assert_eq!(wait_for("the EXTERNAL-IP answers", LONG, || curl_host(&format!("http://{external_ip}/hostname"), 5)), frontend);

    // --- The seed's NetworkPolicy (7d.7), and `svcnet policy matrix` telling the same story.
    s.apply(SEED_POLICY);
    let backend = &backends[0];
    let db_ip = ip(&database);
    let kubeconfig = s.kubeconfig.display().to_string();
    wait_for("frontend -> backend:8000 allowed, other -> backend:8000 blocked", LONG, || {
        (curl_in(&s, "default", &frontend, &format!("http://{}:8000/hostname", ip(backend)), 2).is_ok()
            && curl_in(&s, "default", &other, &format!("http://{}:8000/hostname", ip(backend)), 2) == Err(28))
        .then_some(())
    });
    let matrix = std::process::Command::new(common::svcnet_bin())
        .args(["policy", "matrix", "--kubeconfig", &kubeconfig, "--namespaces", "default", "--ports", "8000/TCP,5432/TCP"])
        .output()
        .unwrap();
    assert!(matrix.status.success(), "{}", String::from_utf8_lossy(&matrix.stderr));
    let cells = parse_matrix(&String::from_utf8_lossy(&matrix.stdout));
    // Probe every ordered pair of these pods on both ports, at the same time, and compare with
    // the matrix: connected or refused = allowed, timed out = dropped.
    let frontend_ip = ip(&ready_pods(&s, "default", "app=frontend")[0]);
    let other_ip = ip(&ready_pods(&s, "default", "app=other")[0]);
    let ips: BTreeMap<String, String> =
        [(frontend.clone(), frontend_ip), (name(backend), ip(backend)), (name(&database), db_ip), (other.clone(), other_ip)].into();
    let mut cases = Vec::new();
    for from in ips.keys() {
        for to in ips.keys().filter(|to| *to != from) {
            for port in ["8000", "5432"] {
                cases.push((from.clone(), to.clone(), port));
            }
        }
    }
    let observed: Vec<((String, String, &str), bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(from, to, port)| {
                let (s, ips) = (&s, &ips);
                scope.spawn(move || {
                    let result = curl_in(s, "default", from, &format!("http://{}:{port}/hostname", ips[to]), 3);
                    ((from.clone(), to.clone(), *port), !matches!(result, Err(28)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut mismatches = Vec::new();
    for ((from, to, port), allowed) in &observed {
        let predicted = cells[&(format!("{port}/TCP"), format!("default/{from}"), format!("default/{to}"))];
        if predicted != *allowed {
            mismatches.push(format!("{from} -> {to}:{port}: matrix {predicted}, observed {allowed}"));
        }
    }
    assert!(mismatches.is_empty(), "matrix vs probes:\n{}", mismatches.join("\n"));
    let allowed = |from: &str, to: &str, port: &str| observed.iter().find(|((f, t, p), _)| f == from && t == to && *p == port).unwrap().1;
    assert!(allowed(&frontend, &name(backend), "8000"), "frontend -> backend:8000");
    assert!(!allowed(&other, &name(backend), "8000"), "other -> backend:8000 is blocked");
    assert!(allowed(&name(backend), &name(&database), "5432"), "backend -> database:5432");
    assert!(!allowed(&name(backend), &other, "8000"), "backend -> other is blocked");
    assert!(!allowed(&name(backend), &frontend, "8000"), "backend -> frontend is blocked");
    assert!(allowed(&other, &name(&database), "5432"), "database itself is not isolated");

    // --- A Service whose pods are gone refuses connections at once.
    s.ok(&["delete", "networkpolicy", "backend-policy"]);
    s.ok(&["scale", "deployment", "backend", "--replicas=0"]);
    wait_for("backend's Endpoints empty", LONG, || {
        let ep = s.get_json(&["endpoints", "backend"]);
        ep["subsets"].as_array().is_none_or(|s| s.is_empty()).then_some(())
    });
    wait_for("backend:8000 refused from a pod", LONG, || (curl_in(&s, "default", &frontend, "http://backend:8000/", 5) == Err(7)).then_some(()));
    // Exit code 7 is "connection refused"; a timeout would be 28.
    assert_eq!(curl_in(&s, "default", &frontend, &format!("http://{cluster_ip}:8000/"), 5), Err(7), "connection refused, not a timeout");
}
