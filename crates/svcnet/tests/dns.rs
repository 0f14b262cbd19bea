//! Cluster DNS seen the way clients see it: the real `dig` against `svcnet-dns` started in this
//! process on a kernel-chosen loopback port, answering from a real `svcnet up` through list+watch
//! (or, for the tests that need no cluster, from a published snapshot).

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Svcnet, wait_for};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;
use svcnet_dns::{DnsConfig, DnsServer, Snapshot, snapshot::Objects};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A DNS server on 127.0.0.1:<free port>, on its own runtime (dropped with it).
struct Dns {
    port: u16,
    handle: svcnet_dns::SnapshotHandle,
    _rt: tokio::runtime::Runtime,
}

fn config(upstreams: Vec<SocketAddr>, ttl: u32) -> DnsConfig {
    DnsConfig { listen: vec!["127.0.0.1:0".parse().unwrap()], ttl, upstreams, ..DnsConfig::default() }
}

impl Dns {
    /// Serving the cluster of `sv`.
    fn cluster(sv: &Svcnet, config: DnsConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let kubeconfig = sv.kubeconfig.clone();
        let (port, handle) = rt.block_on(async {
            let kubeconfig = Kubeconfig::read_from(&kubeconfig).expect("read kubeconfig");
            let kc = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube config");
            let client = Client::try_from(kc).expect("kube client");
            let server = DnsServer::bind(config).await.expect("bind DNS");
            let (port, handle) = (server.local_addr().port(), server.snapshots());
            tokio::spawn(async move { server.serve(client).await.expect("DNS server") });
            (port, handle)
        });
        Dns { port, handle, _rt: rt }
    }

    /// Serving only what is published through `handle` (never synced until then).
    fn standalone(config: DnsConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (port, handle) = rt.block_on(async {
            let server = DnsServer::bind(config).await.expect("bind DNS");
            let (port, handle) = (server.local_addr().port(), server.snapshots());
            tokio::spawn(async move { server.serve_snapshots().await.expect("DNS server") });
            (port, handle)
        });
        Dns { port, handle, _rt: rt }
    }

    fn dig(&self, args: &[&str]) -> Dig {
        let out = Command::new("dig").args(["@127.0.0.1", "-p", &self.port.to_string(), "+tries=1", "+timeout=5"]).args(args).output().expect("run dig");
        Dig::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Waits until `dig args` gives `status` with exactly these answer records (`TYPE rdata`,
    /// in any order).
    fn wait(&self, args: &[&str], status: &str, want: &[&str]) -> Dig {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        wait_for(&format!("dig {args:?} → {status} {want:?}"), TIMEOUT, || {
            let d = self.dig(args);
            (d.status == status && d.answer_data() == want).then_some(d)
        })
    }
}

/// What dig printed, by section.
#[derive(Clone, Debug, Default)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<Rr>,
    authority: Vec<Rr>,
    additional: Vec<Rr>,
    text: String,
}

#[derive(Clone, Debug, PartialEq)]
struct Rr {
    name: String,
    ttl: u32,
    rtype: String,
    data: String,
}

impl Dig {
    fn parse(text: &str) -> Dig {
        let mut d = Dig { text: text.to_string(), ..Dig::default() };
        let mut section = "";
        for line in text.lines() {
            if let Some(rest) = line.split("status: ").nth(1) {
                d.status = rest.split(',').next().unwrap().to_string();
            }
            if let Some(rest) = line.strip_prefix(";; flags: ") {
                d.flags = rest.split(';').next().unwrap().split_whitespace().map(str::to_string).collect();
            }
            if line.starts_with(";; ") && line.ends_with("SECTION:") {
                section = line.trim_start_matches(";; ").split_whitespace().next().unwrap_or("");
                continue;
            }
            if line.trim().is_empty() {
                section = "";
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with(';') || fields.len() < 5 {
                continue;
            }
            let rr = Rr { name: fields[0].to_string(), ttl: fields[1].parse().unwrap_or(0), rtype: fields[3].to_string(), data: fields[4..].join(" ") };
            match section {
                "ANSWER" => d.answer.push(rr),
                "AUTHORITY" => d.authority.push(rr),
                "ADDITIONAL" => d.additional.push(rr),
                _ => {}
            }
        }
        d
    }

    /// `TYPE rdata` of each answer, sorted.
    fn answer_data(&self) -> Vec<String> {
        let mut v: Vec<String> = self.answer.iter().map(|r| format!("{} {}", r.rtype, r.data)).collect();
        v.sort();
        v
    }

    fn additional_data(&self) -> Vec<String> {
        let mut v: Vec<String> = self.additional.iter().map(|r| format!("{} {} {}", r.name, r.rtype, r.data)).collect();
        v.sort();
        v
    }

    /// Asserts a negative answer: `status`, aa, no answers, and the zone's SOA (minimum = `ttl`).
    fn assert_negative(&self, status: &str, ttl: u32) {
        assert_eq!(self.status, status, "{}", self.text);
        assert!(self.flags.contains(&"aa".to_string()), "{}", self.text);
        assert!(self.answer.is_empty(), "{}", self.text);
        assert_eq!(self.authority.len(), 1, "{}", self.text);
        let soa = &self.authority[0];
        assert_eq!((soa.name.as_str(), soa.rtype.as_str(), soa.ttl), ("cluster.local.", "SOA", ttl), "{}", self.text);
        let fields: Vec<&str> = soa.data.split_whitespace().collect();
        assert_eq!(fields[0..2], ["ns.dns.cluster.local.", "hostmaster.cluster.local."], "{}", self.text);
        assert_eq!(fields[3..], ["7200", "1800", "86400", &ttl.to_string()], "{}", self.text);
    }
}

fn service(sv: &Svcnet, ns: &str, name: &str, spec: &str) {
    sv.apply(&format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"));
}

fn cluster_ip(sv: &Svcnet, ns: &str, name: &str) -> String {
    sv.ok(&["get", "service", name, "-n", ns, "-o", "jsonpath={.spec.clusterIP}"])
}

#[test]
fn every_record_type_and_negative_answer() {
    let sv = Svcnet::start();
    sv.namespace("quiet");
    service(
        &sv,
        "default",
        "backend",
        "  selector:\n    app: backend\n  ports:\n  - name: http\n    port: 80\n  - name: dns\n    port: 53\n    protocol: UDP\n",
    );
    service(&sv, "default", "plain", "  ports:\n  - port: 8080\n");
    service(&sv, "default", "external-database", "  type: ExternalName\n  externalName: db.example.test\n");
    let ip = cluster_ip(&sv, "default", "backend");
    // No upstreams: the ExternalName's target cannot be resolved, so the answer is the CNAME alone.
    let dns = Dns::cluster(&sv, config(vec![], 7));

    let a = dns.wait(&["backend.default.svc.cluster.local", "A"], "NOERROR", &[&format!("A {ip}")]);
    assert!(a.flags.contains(&"aa".to_string()), "{}", a.text);
    assert_eq!(a.answer[0].ttl, 7);
    // Case-insensitive, and the owner name is the name as asked.
    let upper = dns.dig(&["BackEnd.DEFAULT.svc.Cluster.Local", "A"]);
    assert_eq!(upper.answer_data(), [format!("A {ip}")]);
    assert_eq!(upper.answer[0].name, "BackEnd.DEFAULT.svc.Cluster.Local.");

    // SRV for a named port, with the Service's address in the additional section.
    let srv = dns.dig(&["_http._tcp.backend.default.svc.cluster.local", "SRV"]);
    assert_eq!(srv.answer_data(), ["SRV 0 100 80 backend.default.svc.cluster.local."], "{}", srv.text);
    assert_eq!(srv.additional_data(), [format!("backend.default.svc.cluster.local. A {ip}")]);
    let udp = dns.dig(&["_dns._udp.backend.default.svc.cluster.local", "SRV"]);
    assert_eq!(udp.answer_data(), ["SRV 0 100 53 backend.default.svc.cluster.local."], "{}", udp.text);
    // The bare name lists every port, unnamed ones too; unnamed ports have no `_port._proto` name.
    let all = dns.dig(&["backend.default.svc.cluster.local", "SRV"]);
    assert_eq!(all.answer_data(), ["SRV 0 50 53 backend.default.svc.cluster.local.", "SRV 0 50 80 backend.default.svc.cluster.local."], "{}", all.text);
    let plain = dns.dig(&["plain.default.svc.cluster.local", "SRV"]);
    assert_eq!(plain.answer_data(), ["SRV 0 100 8080 plain.default.svc.cluster.local."], "{}", plain.text);
    dns.dig(&["_._tcp.plain.default.svc.cluster.local", "SRV"]).assert_negative("NXDOMAIN", 7);
    dns.dig(&["_http._udp.backend.default.svc.cluster.local", "SRV"]).assert_negative("NXDOMAIN", 7);

    // PTR for the ClusterIP.
    let ptr = dns.dig(&["-x", &ip]);
    assert_eq!(ptr.answer_data(), ["PTR backend.default.svc.cluster.local."], "{}", ptr.text);

    // ExternalName.
    let cname = dns.dig(&["external-database.default.svc.cluster.local", "A"]);
    assert_eq!(cname.status, "NOERROR", "{}", cname.text);
    assert_eq!(cname.answer_data(), ["CNAME db.example.test."], "{}", cname.text);
    dns.dig(&["x.external-database.default.svc.cluster.local", "A"]).assert_negative("NXDOMAIN", 7);

    let version = dns.dig(&["dns-version.cluster.local", "TXT"]);
    assert_eq!(version.answer_data(), ["TXT \"1.1.0\""], "{}", version.text);

    for (name, rtype) in [
        ("backend.default.svc.cluster.local", "AAAA"),
        ("backend.default.svc.cluster.local", "TXT"),
        ("cluster.local", "A"),
        ("svc.cluster.local", "A"),
        ("default.svc.cluster.local", "A"),
        ("quiet.svc.cluster.local", "A"),
        ("dns-version.cluster.local", "A"),
    ] {
        dns.dig(&[name, rtype]).assert_negative("NOERROR", 7);
    }
    for name in [
        "missing.default.svc.cluster.local",
        "backend.nosuchns.svc.cluster.local",
        "nosuchns.svc.cluster.local",
        "example.com.default.svc.cluster.local",
        "backend.default.foo.cluster.local",
        "a.b.backend.default.svc.cluster.local",
    ] {
        dns.dig(&[name, "A"]).assert_negative("NXDOMAIN", 7);
    }
    let soa = dns.dig(&["cluster.local", "SOA"]);
    assert_eq!(soa.answer.len(), 1, "{}", soa.text);

    // A new Service is answerable soon after it reaches the API server; a deleted one is gone.
    service(&sv, "default", "late", "  ports:\n  - port: 80\n");
    let late_ip = cluster_ip(&sv, "default", "late");
    dns.wait(&["late.default.svc.cluster.local", "A"], "NOERROR", &[&format!("A {late_ip}")]);
    sv.ok(&["delete", "service", "late"]);
    dns.wait(&["late.default.svc.cluster.local", "A"], "NXDOMAIN", &[]);
}

/// A pod labelled `app: <app>` with `spec.hostname`/`spec.subdomain` when given.
fn pod(sv: &Svcnet, name: &str, app: &str, hostname: Option<(&str, &str)>) {
    let host = hostname.map(|(h, s)| format!("  hostname: {h}\n  subdomain: {s}\n")).unwrap_or_default();
    sv.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: {app}\nspec:\n{host}  containers:\n  - name: app\n    image: registry.k8s.io/pause:3.10\n"
    ));
}

fn set_status(sv: &Svcnet, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    sv.ok(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
}

#[test]
fn headless_service_follows_endpoint_readiness() {
    let sv = Svcnet::start();
    service(&sv, "default", "postgres", "  clusterIP: None\n  selector:\n    app: pg\n  ports:\n  - name: pg\n    port: 5432\n");
    let dns = Dns::cluster(&sv, config(vec![], 5));
    // No ready endpoint yet: the name does not exist.
    let name = "postgres.default.svc.cluster.local";
    dns.wait(&[name, "A"], "NXDOMAIN", &[]).assert_negative("NXDOMAIN", 5);

    pod(&sv, "postgres-0", "pg", Some(("postgres-0", "postgres")));
    pod(&sv, "postgres-1", "pg", Some(("postgres-1", "postgres")));
    set_status(&sv, "postgres-0", "10.244.1.10", true);
    set_status(&sv, "postgres-1", "10.244.1.11", false);
    dns.wait(&[name, "A"], "NOERROR", &["A 10.244.1.10"]);
    set_status(&sv, "postgres-1", "10.244.1.11", true);
    dns.wait(&[name, "A"], "NOERROR", &["A 10.244.1.10", "A 10.244.1.11"]);

    // One StatefulSet pod by its hostname; SRV per (endpoint × named port); PTR per endpoint.
    dns.wait(&["postgres-0.postgres.default.svc.cluster.local", "A"], "NOERROR", &["A 10.244.1.10"]);
    let srv = dns.dig(&["_pg._tcp.postgres.default.svc.cluster.local", "SRV"]);
    assert_eq!(
        srv.answer_data(),
        ["SRV 0 50 5432 postgres-0.postgres.default.svc.cluster.local.", "SRV 0 50 5432 postgres-1.postgres.default.svc.cluster.local."],
        "{}",
        srv.text
    );
    assert_eq!(
        srv.additional_data(),
        ["postgres-0.postgres.default.svc.cluster.local. A 10.244.1.10", "postgres-1.postgres.default.svc.cluster.local. A 10.244.1.11"]
    );
    let ptr = dns.dig(&["-x", "10.244.1.11"]);
    assert_eq!(ptr.answer_data(), ["PTR postgres-1.postgres.default.svc.cluster.local."], "{}", ptr.text);
    dns.dig(&["postgres-9.postgres.default.svc.cluster.local", "A"]).assert_negative("NXDOMAIN", 5);
    dns.dig(&["postgres-0.postgres.default.svc.cluster.local", "AAAA"]).assert_negative("NOERROR", 5);

    // Pod records only for IPs of pods in that namespace.
    let pod_a = dns.dig(&["10-244-1-10.default.pod.cluster.local", "A"]);
    assert_eq!(pod_a.answer_data(), ["A 10.244.1.10"], "{}", pod_a.text);
    dns.dig(&["10-244-1-99.default.pod.cluster.local", "A"]).assert_negative("NXDOMAIN", 5);

    // Readiness lost, pod deleted: the records follow.
    set_status(&sv, "postgres-0", "10.244.1.10", false);
    dns.wait(&[name, "A"], "NOERROR", &["A 10.244.1.11"]);
    dns.wait(&["postgres-0.postgres.default.svc.cluster.local", "A"], "NXDOMAIN", &[]);
    sv.ok(&["delete", "pod", "postgres-1", "--grace-period=0", "--force"]);
    dns.wait(&[name, "A"], "NXDOMAIN", &[]);
}

#[test]
fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let sv = Svcnet::start();
    service(&sv, "default", "many", "  clusterIP: None\n  ports:\n  - name: http\n    port: 80\n");
    let endpoints: String = (1..=60).map(|i| format!("- addresses: [\"10.245.0.{i}\"]\n  conditions:\n    ready: true\n")).collect();
    sv.apply(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: many-1\n  namespace: default\n  labels:\n    kubernetes.io/service-name: many\naddressType: IPv4\nports:\n- name: http\n  port: 80\nendpoints:\n{endpoints}"
    ));
    let dns = Dns::cluster(&sv, config(vec![], 5));
    let name = "many.default.svc.cluster.local";
    // 60 A records do not fit in 512 bytes: without EDNS the UDP answer is truncated...
    let udp = wait_for("the EndpointSlice in DNS", TIMEOUT, || {
        let d = dns.dig(&["+noedns", "+ignore", name, "A"]);
        d.flags.contains(&"tc".to_string()).then_some(d)
    });
    assert!(udp.answer.is_empty(), "{}", udp.text);
    // ...dig retries over TCP by itself and gets everything; so does an explicit TCP query.
    let retried = dns.dig(&["+noedns", name, "A"]);
    assert_eq!(retried.answer.len(), 60, "{}", retried.text);
    assert!(retried.text.contains("Truncated, retrying in TCP mode"), "{}", retried.text);
    assert_eq!(dns.dig(&["+tcp", name, "A"]).answer.len(), 60);
    // With EDNS0 and a large enough buffer, UDP carries it (60 × 16 bytes < 1232).
    let edns = dns.dig(&["+bufsize=4096", "+ignore", name, "A"]);
    assert_eq!(edns.answer.len(), 60, "{}", edns.text);
    assert!(!edns.flags.contains(&"tc".to_string()));
    // A smaller EDNS buffer than the answer: truncated again.
    let small = dns.dig(&["+bufsize=600", "+ignore", name, "A"]);
    assert!(small.flags.contains(&"tc".to_string()), "{}", small.text);
}

/// A UDP DNS server on 127.0.0.1 that answers every A question with `answer` (TTL 60), counting
/// questions.
fn fake_upstream(answer: [u8; 4]) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            seen.fetch_add(1, Ordering::SeqCst);
            let q = &buf[..n];
            // End of the question: the name's labels, then type and class.
            let mut end = 12;
            while q[end] != 0 {
                end += 1 + usize::from(q[end]);
            }
            end += 5;
            let mut r = q[..end].to_vec();
            r[2] = 0x81; // QR, RD
            r[3] = 0x80; // RA, NOERROR
            r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]); // one answer, no authority or additional
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(&answer);
            let _ = socket.send_to(&r, peer);
        }
    });
    (addr, count)
}

#[test]
fn forwarding_caching_and_a_dead_upstream() {
    let (upstream, asked) = fake_upstream([192, 0, 2, 7]);
    // A port that never answers: the socket exists (no ICMP refusal) but nobody reads it.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();

    let fwd = Dns::standalone(config(vec![upstream], 5));
    let a = fwd.dig(&["www.example.test", "A"]);
    assert_eq!((a.status.as_str(), a.answer_data()), ("NOERROR", vec!["A 192.0.2.7".to_string()]), "{}", a.text);
    assert!(!a.flags.contains(&"aa".to_string()), "{}", a.text);
    // The second question is served from the cache.
    let again = fwd.dig(&["WWW.example.test", "A"]);
    assert_eq!(again.answer_data(), ["A 192.0.2.7"]);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // Before the first sync, cluster names get SERVFAIL (never a false NXDOMAIN) while forwarding works.
    assert_eq!(fwd.dig(&["backend.default.svc.cluster.local", "A"]).status, "SERVFAIL");
    assert_eq!(fwd.dig(&["-x", "10.96.0.1"]).status, "SERVFAIL");

    // An ExternalName's target is resolved through the upstream and added after the CNAME.
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "external-database", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "db.example.test"},
    }))
    .unwrap();
    let zone = svcnet_dns::snapshot::parse_zone("cluster.local").unwrap();
    fwd.handle.publish(Snapshot::build(zone, 5, 1, &Objects { services: vec![&svc], ..Objects::default() }));
    let chased = fwd.dig(&["external-database.default.svc.cluster.local", "A"]);
    assert_eq!(chased.answer_data(), ["A 192.0.2.7", "CNAME db.example.test."], "{}", chased.text);
    fwd.dig(&["backend.default.svc.cluster.local", "A"]).assert_negative("NXDOMAIN", 5);

    // Only a dead upstream: SERVFAIL, quickly.
    let dead_only = Dns::standalone(config(vec![dead_addr], 5));
    let start = Instant::now();
    let fail = dead_only.dig(&["www.example.test", "A"]);
    assert_eq!(fail.status, "SERVFAIL", "{}", fail.text);
    assert!(start.elapsed() < Duration::from_secs(2), "SERVFAIL took {:?}", start.elapsed());

    // A dead upstream first, a live one second: the live one answers within the same budget.
    let fallback = Dns::standalone(config(vec![dead_addr, upstream], 5));
    let start = Instant::now();
    let b = fallback.dig(&["other.example.test", "A"]);
    assert_eq!(b.answer_data(), ["A 192.0.2.7"], "{}", b.text);
    assert!(start.elapsed() < Duration::from_secs(2), "fallback took {:?}", start.elapsed());
    drop(dead);
}

#[test]
fn protocol_errors() {
    let dns = Dns::standalone(config(vec![], 5));
    // EDNS versions other than 0 get BADVERS (RFC 6891).
    let badvers = dns.dig(&["+edns=1", "+noednsnegotiation", "example.test", "A"]);
    assert_eq!(badvers.status, "BADVERS", "{}", badvers.text);
    // Bytes that are not a DNS message, but have a header, get FORMERR with the same id.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.send_to(&[0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f], ("127.0.0.1", dns.port)).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..4], [0xab, 0xcd, 0x80, 0x01]);
    assert_eq!(n, 12);
    // No questions at all: FORMERR too.
    socket.send_to(&[0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0], ("127.0.0.1", dns.port)).unwrap();
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!((&buf[..2], buf[3] & 0x0f), (&[0x12u8, 0x34][..], 1), "{:?}", &buf[..n]);
}
