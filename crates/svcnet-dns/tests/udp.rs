//! The UDP serving path seen by real clients: `dig` against the real server (threads receiving
//! batches, the fast path, the general path) on a kernel-chosen loopback port, answering from a
//! published snapshot of the fuzzing cluster. `dig +nocookie` sends a plain OPT (the fast path
//! answers) and `dig +cookie` adds an EDNS option (the general path answers): both must print
//! the same response.

use std::{
    collections::HashMap,
    net::UdpSocket,
    process::Command,
    time::{Duration, Instant},
};

use svcnet_dns::{DnsConfig, DnsServer, Metrics, fuzzing};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A DNS server on 127.0.0.1:<free port> serving the fuzzing cluster, on its own runtime
/// (dropping it stops the server).
struct Server {
    port: u16,
    metrics: std::sync::Arc<Metrics>,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (port, metrics) = rt.block_on(async {
            let config = DnsConfig { listen: vec!["127.0.0.1:0".parse().unwrap()], upstreams: vec![], ..DnsConfig::default() };
            let server = DnsServer::bind(config).await.expect("bind DNS");
            server.snapshots().publish(fuzzing::snapshot());
            let (port, metrics) = (server.local_addr().port(), server.metrics());
            tokio::spawn(async move { server.serve_snapshots().await.expect("DNS server") });
            (port, metrics)
        });
        Server { port, metrics, _rt: rt }
    }

    fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig").args(["@127.0.0.1", "-p", &self.port.to_string(), "+tries=1", "+timeout=5"]).args(args).output().expect("run dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// What of dig's output describes the response: the header without its id, the flags, the
/// EDNS line, and the records of every section.
fn response(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with(";;") || l.starts_with(";; ->>HEADER<<-") || l.starts_with(";; flags:"))
        .filter(|l| !l.starts_with("; <<>>") && !l.contains("COOKIE") && !l.starts_with(";; global options"))
        .map(|l| match l.split_once(", id:") {
            Some((head, _)) => head.to_string(),
            None => l.to_string(),
        })
        .collect()
}

fn records(text: &str) -> Vec<String> {
    text.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn dig_sees_the_same_response_from_both_paths() {
    let server = Server::start();
    let cases: &[&[&str]] = &[
        &["backend.default.svc.cluster.local", "A"],
        &["BackEnd.DEFAULT.svc.Cluster.Local", "A"],
        &["backend.default.svc.cluster.local", "AAAA"],
        &["v6.default.svc.cluster.local", "AAAA"],
        &["_http._tcp.backend.default.svc.cluster.local", "SRV"],
        &["backend.default.svc.cluster.local", "SRV"],
        &["_pg._tcp.postgres.default.svc.cluster.local", "SRV"],
        &["postgres-0.postgres.default.svc.cluster.local", "A"],
        &["postgres.default.svc.cluster.local", "A"],
        &["10-244-0-5.default.pod.cluster.local", "A"],
        &["-x", "10.96.0.20"],
        &["-x", "10.244.0.5"],
        &["-x", "fd00::21"],
        &["nope.default.svc.cluster.local", "A"],
        &["example.com.default.svc.cluster.local", "A"],
        &["default.svc.cluster.local", "A"],
        &["postgres-0.postgres.default.svc.cluster.local", "AAAA"],
        &["dns-version.cluster.local", "TXT"],
        &["cluster.local", "SOA"],
        &["+norecurse", "+cdflag", "backend.default.svc.cluster.local", "A"],
        &["+noadflag", "backend.default.svc.cluster.local", "A"],
        &["+bufsize=4096", "postgres.default.svc.cluster.local", "A"],
        &["+bufsize=600", "+ignore", "postgres.default.svc.cluster.local", "A"],
    ];
    for args in cases {
        let fast = server.dig(&[&["+nocookie"], *args].concat());
        let general = server.dig(&[&["+cookie"], *args].concat());
        assert!(fast.contains(";; ->>HEADER<<-"), "no answer to {args:?}: {fast}");
        assert_eq!(response(&fast), response(&general), "{args:?}\nfast:\n{fast}\ngeneral:\n{general}");
        // Without EDNS at all, for the records (the flags and sizes differ from the above).
        let plain = server.dig(&[&["+noedns"], *args].concat());
        if !args.contains(&"+bufsize=600") && !args.contains(&"+bufsize=4096") && !args.contains(&"postgres.default.svc.cluster.local") {
            assert_eq!(records(&plain), records(&fast), "{args:?}\n{plain}");
        }
    }

    // Spot checks of what both said.
    let upper = server.dig(&["+nocookie", "BackEnd.DEFAULT.svc.Cluster.Local", "A"]);
    assert!(upper.contains(";BackEnd.DEFAULT.svc.Cluster.Local."), "{upper}");
    assert_eq!(records(&upper), ["BackEnd.DEFAULT.svc.Cluster.Local. 5 IN A 10.96.0.20"], "{upper}");
    assert!(upper.contains("flags: qr aa rd ra;"), "{upper}");
    assert!(upper.contains("udp: 1232"), "{upper}");
    let srv = server.dig(&["+nocookie", "_http._tcp.backend.default.svc.cluster.local", "SRV"]);
    assert_eq!(
        records(&srv),
        [
            "_http._tcp.backend.default.svc.cluster.local. 5 IN SRV 0 100 80 backend.default.svc.cluster.local.",
            "backend.default.svc.cluster.local. 5 IN A 10.96.0.20",
        ],
        "{srv}"
    );
    let nx = server.dig(&["+nocookie", "nope.default.svc.cluster.local", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert_eq!(records(&nx), ["cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"], "{nx}");
    let nodata = server.dig(&["+nocookie", "postgres-0.postgres.default.svc.cluster.local", "AAAA"]);
    assert!(nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0, AUTHORITY: 1"), "{nodata}");
    let ptr = server.dig(&["+nocookie", "-x", "10.244.0.5"]);
    assert_eq!(records(&ptr), ["5.0.244.10.in-addr.arpa. 5 IN PTR postgres-0.postgres.default.svc.cluster.local."], "{ptr}");
    let cd = server.dig(&["+nocookie", "+norecurse", "+cdflag", "backend.default.svc.cluster.local", "A"]);
    assert!(cd.contains("flags: qr aa ra cd;"), "{cd}");
}

#[test]
fn large_answers_truncate_for_the_clients_size() {
    let server = Server::start();
    let name = "postgres.default.svc.cluster.local";
    // 41 addresses: over 512 bytes. Without EDNS: TC and no records...
    let truncated = server.dig(&["+noedns", "+ignore", name, "A"]);
    assert!(truncated.contains("flags: qr aa tc rd ra;"), "{truncated}");
    assert!(records(&truncated).is_empty(), "{truncated}");
    // ...and dig's retry over TCP gets them all; within 1232 bytes over UDP too.
    assert_eq!(records(&server.dig(&["+noedns", name, "A"])).len(), 41);
    let edns = server.dig(&["+nocookie", "+bufsize=1232", "+ignore", name, "A"]);
    assert!(!edns.contains(" tc "), "{edns}");
    assert_eq!(records(&edns).len(), 41, "{edns}");
    // A client asking for 512 gets TC, with the OPT record.
    let small = server.dig(&["+nocookie", "+bufsize=512", "+ignore", name, "A"]);
    assert!(small.contains("flags: qr aa tc rd ra;") && small.contains("udp: 1232"), "{small}");
}

/// Sum of a metric's samples whose labels contain every one of `labels`.
fn sample(metrics: &Metrics, name: &str, labels: &[&str]) -> f64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_burst_of_queries_is_answered_once_each_and_counted() {
    let server = Server::start();
    let names = [
        ("backend.default.svc.cluster.local", 0u8),
        ("nope.default.svc.cluster.local", 3),
        ("postgres-0.postgres.default.svc.cluster.local", 0),
        ("example.com", 2), // forwarded: no upstream, SERVFAIL from a task
    ];
    let before = sample(&server.metrics, "coredns_dns_requests_total", &["proto=\"udp\""]);
    let nx_before = sample(&server.metrics, "coredns_dns_responses_total", &["rcode=\"NXDOMAIN\""]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Waves of 50 queries sent back to back (they queue up and are received in batches), each
    // answered before the next: more at once could overflow a socket buffer and be lost.
    let (count, wave): (u16, u16) = (400, 50);
    let mut buf = [0u8; 1500];
    for first in (0..count).step_by(usize::from(wave)) {
        let mut want: HashMap<u16, u8> = HashMap::new();
        for id in first..first + wave {
            let (name, rcode) = names[usize::from(id) % names.len()];
            let mut q = id.to_be_bytes().to_vec();
            q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
            for label in name.split('.') {
                q.push(u8::try_from(label.len()).unwrap());
                q.extend_from_slice(label.as_bytes());
            }
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
            socket.send_to(&q, ("127.0.0.1", server.port)).unwrap();
            want.insert(id, rcode);
        }
        while !want.is_empty() {
            let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("{} answers missing: {e}", want.len()));
            assert!(n >= 12);
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let rcode = want.remove(&id).unwrap_or_else(|| panic!("unexpected or repeated answer to {id}"));
            assert_eq!(buf[3] & 0x0f, rcode, "query {id}");
        }
    }
    // Every answer was counted before it was sent.
    let counted = sample(&server.metrics, "coredns_dns_requests_total", &["proto=\"udp\""]) - before;
    assert_eq!(counted, f64::from(count));
    let nx = sample(&server.metrics, "coredns_dns_responses_total", &["rcode=\"NXDOMAIN\""]) - nx_before;
    assert_eq!(nx, f64::from(count / 4));
    assert!(server.metrics.encode().contains("coredns_dns_request_duration_seconds_bucket{"));
}

#[test]
fn dropping_the_server_releases_its_port() {
    let server = Server::start();
    let port = server.port;
    assert!(server.dig(&["backend.default.svc.cluster.local"]).contains("10.96.0.20"));
    drop(server);
    let deadline = Instant::now() + TIMEOUT;
    while UdpSocket::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "UDP port {port} still bound after the server was dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
}
