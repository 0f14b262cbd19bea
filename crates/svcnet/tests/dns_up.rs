//! Cluster DNS as the binary runs it: the address `svcnet up` prints, `svcnet dns --kubeconfig`
//! against a running `svcnet up`, the Prometheus metrics both serve, and the `kube-dns` Service
//! and EndpointSlice. Real processes, the real `dig`, `kubectl` and `curl`, loopback only.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{svcnet_bin, wait_for};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `svcnet ARGS`, reads stdout until a line starts with `until`, and returns the lines
/// read; the rest of stdout is drained in the background. stderr goes to `log`.
fn spawn(args: &[&str], log: &Path, until: &str) -> (Proc, Vec<String>) {
    let mut child = Command::new(svcnet_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file"))
        .spawn()
        .expect("spawn svcnet");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read stdout");
        let done = line.starts_with(until);
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.starts_with(until)),
        "svcnet {args:?} did not print {until:?}; it printed {seen:?}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), seen)
}

/// `svcnet up` with the addresses it printed.
struct Up {
    _proc: Proc,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    /// `cluster DNS on ADDR (try: ...)`.
    dns: SocketAddr,
    metrics: String,
    lines: Vec<String>,
}

fn field<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines.iter().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no line starting {prefix:?} in {lines:?}"))
}

impl Up {
    fn start(dir: tempfile::TempDir, extra: &[&str]) -> Up {
        // No node agents: these tests need the control plane and DNS only.
        let mut args = vec!["up", "--nodes", "0", "--api-addr", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        let (proc, lines) = spawn(&args, &dir.path().join("svcnet.log"), "cluster DNS metrics on ");
        let kubeconfig = PathBuf::from(field(&lines, "export KUBECONFIG="));
        let dns = field(&lines, "cluster DNS on ").split_whitespace().next().unwrap().parse().unwrap();
        let metrics = field(&lines, "cluster DNS metrics on ").trim().to_string();
        Up { _proc: proc, dir, kubeconfig, dns, metrics, lines }
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig).arg("--cache-dir").arg(self.dir.path().join("kubectl-cache")).args(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    fn get(&self, args: &[&str]) -> Option<Value> {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig).arg("--cache-dir").arg(self.dir.path().join("kubectl-cache")).arg("get").args(args).args(["-o", "json"]);
        let out = cmd.output().unwrap();
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
}

/// What dig printed: the status and the answer section as `TYPE rdata`, sorted.
#[derive(Debug, PartialEq)]
struct Dig {
    status: String,
    answers: Vec<String>,
}

fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+timeout=3", "+noall", "+answer", "+comments"])
        .args(args)
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text.lines().find_map(|l| l.split("status: ").nth(1)).map(|s| s.split(',').next().unwrap().to_string()).unwrap_or_default();
    let mut answers: Vec<String> =
        text.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" ")).collect();
    answers.sort();
    Dig { status, answers }
}

fn wait_dig(server: SocketAddr, args: &[&str], status: &str, answers: &[&str]) {
    let want = Dig { status: status.to_string(), answers: answers.iter().map(|s| s.to_string()).collect() };
    let mut last = None;
    wait_for(&format!("dig {args:?} → {want:?}"), TIMEOUT, || {
        let got = dig(server, args);
        let ok = got == want;
        last = Some(got);
        ok.then_some(())
    });
}

/// The value of one sample line of a Prometheus text page (`name{labels} value`), or 0.
fn sample(page: &str, name_and_labels: &str) -> f64 {
    page.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok()).unwrap_or(0.0)
}

fn curl(url: &str) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "5", url]).output().expect("curl");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const BACKEND: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: backend\n  namespace: default\nspec:\n  ports:\n  - name: http\n    port: 80\n";

/// A UDP port on loopback that nothing answers on (bound, then closed): queries to it get ICMP
/// port unreachable, so an upstream there fails fast.
fn dead_upstream() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn up_prints_a_dns_address_that_answers_and_counts() {
    let up = Up::start(tempfile::tempdir().unwrap(), &[]);
    let hint = up.lines.iter().find(|l| l.starts_with("cluster DNS on ")).unwrap();
    assert_eq!(*hint, format!("cluster DNS on {0} (try: dig @{1} -p {2} backend.default.svc.cluster.local)", up.dns, up.dns.ip(), up.dns.port()));
    assert!(up.dns.ip().is_loopback());

    up.apply(BACKEND);
    let ip = up.get(&["service", "backend"]).unwrap()["spec"]["clusterIP"].as_str().unwrap().to_string();
    wait_dig(up.dns, &["backend.default.svc.cluster.local"], "NOERROR", &[&format!("A {ip}")]);
    wait_dig(up.dns, &["SRV", "_http._tcp.backend.default.svc.cluster.local"], "NOERROR", &["SRV 0 100 80 backend.default.svc.cluster.local."]);
    // The kube-dns Service answers for itself, on the tenth address of the default range.
    wait_dig(up.dns, &["kube-dns.kube-system.svc.cluster.local"], "NOERROR", &["A 10.96.0.10"]);

    // Exactly the queries sent here are counted (nothing else asks this server).
    let before = curl(&up.metrics);
    let server = format!("server=\"dns://{}\"", up.dns);
    let nx = format!("coredns_dns_responses_total{{{server},zone=\"cluster.local.\",rcode=\"NXDOMAIN\"}}");
    let srv = format!("coredns_dns_requests_total{{{server},zone=\"cluster.local.\",proto=\"tcp\",family=\"1\",type=\"SRV\"}}");
    for _ in 0..3 {
        assert_eq!(dig(up.dns, &["nope.default.svc.cluster.local"]).status, "NXDOMAIN");
    }
    assert_eq!(dig(up.dns, &["+tcp", "SRV", "backend.default.svc.cluster.local"]).status, "NOERROR");
    let after = curl(&up.metrics);
    assert_eq!(sample(&after, &nx) - sample(&before, &nx), 3.0, "{after}");
    assert_eq!(sample(&after, &srv) - sample(&before, &srv), 1.0, "{after}");
    assert!(after.contains("coredns_dns_request_duration_seconds_bucket{"), "{after}");
    assert_eq!(sample(&after, "svcnet_dns_synced"), 1.0, "{after}");
}

#[test]
fn up_keeps_a_selectorless_kube_dns_service() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir, &["--service-cluster-ip-range", "10.100.0.0/16"]);
    let svc = wait_for("kube-dns Service", TIMEOUT, || up.get(&["service", "-n", "kube-system", "kube-dns"]));
    assert_eq!(svc["spec"]["clusterIP"], "10.100.0.10");
    assert!(svc["spec"].get("selector").is_none_or(Value::is_null), "{svc}");
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
    assert_eq!(svc["metadata"]["labels"]["kubernetes.io/name"], "CoreDNS");
    let ports: Vec<(String, i64, String)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(ports, [("dns".to_string(), 53, "UDP".to_string()), ("dns-tcp".to_string(), 53, "TCP".to_string())]);
    // Without a node-facing address there is no endpoint to publish.
    let slices = up.get(&["endpointslices", "-n", "kube-system", "-l", "kubernetes.io/service-name=kube-dns"]).unwrap();
    assert_eq!(slices["items"].as_array().unwrap().len(), 0, "{slices}");

    // After a restart on the same store it is the same object, still correct.
    let uid = svc["metadata"]["uid"].clone();
    let Up { _proc, dir, .. } = up;
    drop(_proc);
    let up = Up::start(dir, &["--service-cluster-ip-range", "10.100.0.0/16"]);
    wait_dig(up.dns, &["kube-dns.kube-system.svc.cluster.local"], "NOERROR", &["A 10.100.0.10"]);
    assert_eq!(up.get(&["service", "-n", "kube-system", "kube-dns"]).unwrap()["metadata"]["uid"], uid);
}

/// `kube_dns::ensure` as `svcnet up` calls it once nodes run (with the host's bridge address):
/// the EndpointSlice appears, follows the address, is put back when edited, and goes when there
/// is no address any more; a Service someone gave a selector is replaced.
#[test]
fn kube_dns_endpoint_slice_follows_the_node_facing_address() {
    let up = Up::start(tempfile::tempdir().unwrap(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&up.kubeconfig).unwrap();
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
    });
    let ensure = |endpoint: Option<&str>| {
        let ip: IpAddr = "10.96.0.10".parse().unwrap();
        rt.block_on(svcnet_dns::kube_dns::ensure(&client, ip, endpoint.map(|e| e.parse().unwrap()))).expect("ensure kube-dns");
    };
    let slice = || up.get(&["endpointslice", "-n", "kube-system", "kube-dns-svcnet"]);

    ensure(Some("172.30.0.1"));
    let s = slice().expect("slice created");
    assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "kube-dns");
    assert_eq!(s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "dns.svcnet.io");
    assert_eq!(s["endpoints"][0]["addresses"][0], "172.30.0.1");
    assert_eq!(s["endpoints"][0]["conditions"]["ready"], true);
    let svc = up.get(&["service", "-n", "kube-system", "kube-dns"]).unwrap();
    assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], svc["metadata"]["uid"]);
    // The cluster's own DNS names it (headless-style endpoint names exist under ClusterIP Services).
    wait_dig(up.dns, &["172-30-0-1.kube-dns.kube-system.svc.cluster.local"], "NOERROR", &["A 172.30.0.1"]);

    ensure(Some("172.30.0.1"));
    assert_eq!(slice().unwrap()["metadata"]["resourceVersion"], s["metadata"]["resourceVersion"], "an unchanged slice is not rewritten");

    ensure(Some("172.31.0.1"));
    assert_eq!(slice().unwrap()["endpoints"][0]["addresses"][0], "172.31.0.1");

    up.kubectl(
        &[
            "patch",
            "endpointslice",
            "-n",
            "kube-system",
            "kube-dns-svcnet",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/endpoints/0/addresses/0","value":"10.0.0.99"}]"#,
        ],
        None,
    );
    ensure(Some("172.31.0.1"));
    assert_eq!(slice().unwrap()["endpoints"][0]["addresses"][0], "172.31.0.1");

    up.kubectl(&["patch", "service", "-n", "kube-system", "kube-dns", "--type=merge", "-p", r#"{"spec":{"selector":{"k8s-app":"kube-dns"}}}"#], None);
    ensure(Some("172.31.0.1"));
    let svc2 = up.get(&["service", "-n", "kube-system", "kube-dns"]).unwrap();
    assert!(svc2["spec"].get("selector").is_none_or(Value::is_null), "{svc2}");
    assert_eq!(svc2["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(slice().unwrap()["metadata"]["ownerReferences"][0]["uid"], svc2["metadata"]["uid"]);

    ensure(None);
    assert!(slice().is_none(), "the slice goes with the node-facing address");
}

#[test]
fn svcnet_dns_runs_alone_against_svcnet_up() {
    let up = Up::start(tempfile::tempdir().unwrap(), &[]);
    let kubeconfig = up.kubeconfig.to_str().unwrap().to_string();
    let upstream = dead_upstream().to_string();
    let log = up.dir.path().join("svcnet-dns.log");
    let args = [
        "dns",
        "--kubeconfig",
        &kubeconfig,
        "--listen",
        "127.0.0.1:0",
        "--zone",
        "example.internal",
        "--ttl",
        "17",
        "--dns-upstream",
        &upstream,
        "--dns-metrics-addr",
        "127.0.0.1:0",
    ];
    let (_dns, lines) = spawn(&args, &log, "DNS metrics on ");
    let addr: SocketAddr = field(&lines, "cluster DNS on ").trim().parse().unwrap();
    let metrics = field(&lines, "DNS metrics on ").trim().to_string();

    // A selectorless headless Service whose EndpointSlice the test writes: changes show up.
    up.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: db\n  namespace: default\nspec:\n  clusterIP: None\n  ports:\n  - name: pg\n    port: 5432\n");
    wait_dig(addr, &["db.default.svc.example.internal"], "NXDOMAIN", &[]);
    let slice = |ips: &[&str]| {
        let eps: String = ips.iter().map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n")).collect();
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-1\n  namespace: default\n  labels:\n    kubernetes.io/service-name: db\naddressType: IPv4\nports:\n- name: pg\n  port: 5432\n  protocol: TCP\nendpoints:\n{eps}"
        )
    };
    up.apply(&slice(&["10.244.0.5", "10.244.0.6"]));
    wait_dig(addr, &["db.default.svc.example.internal"], "NOERROR", &["A 10.244.0.5", "A 10.244.0.6"]);
    up.apply(&slice(&["10.244.0.6"]));
    wait_dig(addr, &["db.default.svc.example.internal"], "NOERROR", &["A 10.244.0.6"]);
    wait_dig(addr, &["-x", "10.244.0.6"], "NOERROR", &["PTR 10-244-0-6.db.default.svc.example.internal."]);
    // --ttl and --zone took effect; cluster.local is not ours any more and goes upstream.
    let out =
        Command::new("dig").args(["@127.0.0.1", "-p", &addr.port().to_string(), "+noall", "+answer", "db.default.svc.example.internal"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields, ["db.default.svc.example.internal.", "17", "IN", "A", "10.244.0.6"], "{text}");

    // The upstream answers nothing: SERVFAIL, counted against it.
    assert_eq!(dig(addr, &["db.default.svc.cluster.local"]).status, "SERVFAIL");
    let page = curl(&metrics);
    assert!(sample(&page, &format!("coredns_forward_requests_total{{to=\"{upstream}\"}}")) >= 1.0, "{page}");
    let server = format!("server=\"dns://{addr}\"");
    assert!(sample(&page, &format!("coredns_dns_responses_total{{{server},zone=\".\",rcode=\"SERVFAIL\"}}")) >= 1.0, "{page}");
    assert!(sample(&page, &format!("coredns_dns_responses_total{{{server},zone=\"example.internal.\",rcode=\"NXDOMAIN\"}}")) >= 1.0, "{page}");
    assert!(sample(&page, &format!("coredns_dns_requests_total{{{server},zone=\"in-addr.arpa.\",proto=\"udp\",family=\"1\",type=\"PTR\"}}")) >= 1.0, "{page}");
    assert!(sample(&page, &format!("coredns_cache_misses_total{{{server}}}")) >= 1.0, "{page}");
}
