//! `svcnet-bench dns`: cluster DNS at 10,000 Services and 100,000 pods, next to Knot DNS serving
//! the same records from a zone file, in the same run, on loopback.
//!
//! How:
//!
//! 1. Pre-load: a fresh `RedbStore` gets the namespaces, the Services (selectorless, so that no
//!    controller works on them; every tenth headless, the rest ClusterIP with an allocator claim),
//!    one EndpointSlice per Service holding its pods' addresses (ready, with `targetRef`s) and
//!    the pods (bound to a node, `Running`, with a podIP).
//! 2. `svcnet up` starts on that store (the API server; `--nodes 0`), then `svcnet dns
//!    --kubeconfig` as its own process, so that its RSS is the DNS server's alone. The time from
//!    spawning it to answering a cluster name is its initial sync.
//! 3. The same records are written as a zone file (A and SRV per Service, A per headless
//!    endpoint name and per pod name, PTR records in their reverse zones) and served by `knotd`
//!    with as many UDP workers as cores.
//! 4. One query file (seeded): 60% A of ClusterIP Services, 5% A of headless Services (10
//!    records each), 5% pod names, 10% SRV, 20% search-path names that do not exist
//!    (`<name>.<ns>.svc.cluster.local`, NXDOMAIN), as pods' `ndots:5` produce them.
//! 5. `dnsperf` against each, interleaved round by round; QPS, average latency, lost queries and
//!    the response codes (which must match between the two), and RSS after the runs.
//! 6. Update latency: an EndpointSlice of a headless Service is replaced with one endpoint fewer
//!    (or more) and a UDP client asks for its name until the answer has the new count; from
//!    sending the write to that answer. Knot has no equivalent (a zone reload), so that row has
//!    no ratio; the goal is 100 ms.
//!
//! Nothing asserts on timings; every byte goes to loopback.

use std::{
    fmt::Write as _,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use svcnet_store::{RedbStore, Storage};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{ms, percentile};

const ZONE: &str = "cluster.local";
const NS_PREFIX: &str = "bench-";

#[derive(clap::Args)]
pub struct DnsArgs {
    /// The `svcnet` binary to benchmark (a release build).
    #[arg(long, default_value = "target/release/svcnet")]
    svcnet: PathBuf,
    /// Services in the store.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Pods (and endpoints) per Service.
    #[arg(long, default_value_t = 10)]
    pods_per_service: usize,
    /// Namespaces the Services are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// The Knot DNS daemon.
    #[arg(long, default_value = "knotd")]
    knotd: PathBuf,
    /// dnsperf's arguments besides server, port and data file.
    #[arg(long, default_value = "-c 4 -T 1 -q 200 -l 15")]
    dnsperf_args: String,
    /// Rounds: each server gets one dnsperf run per round, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Endpoint changes timed for the update latency.
    #[arg(long, default_value_t = 50)]
    updates: usize,
    /// Where to put the store, zone file and query file; a fresh temporary directory under it is
    /// removed at the end. Default: the system temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy)]
struct Shape {
    services: usize,
    pods_per_service: usize,
    namespaces: usize,
}

impl Shape {
    fn namespace(&self, s: usize) -> String {
        format!("{NS_PREFIX}{}", s % self.namespaces)
    }
    fn headless(&self, s: usize) -> bool {
        s % 10 == 9
    }
    fn cluster_ip(&self, s: usize) -> [u8; 4] {
        ipv4([10, 100, 0, 0], s)
    }
    fn pod_ip(&self, s: usize, p: usize) -> [u8; 4] {
        ipv4([10, 128, 0, 1], s * self.pods_per_service + p)
    }
}

fn ipv4(base: [u8; 4], offset: usize) -> [u8; 4] {
    let n = u32::from_be_bytes(base) + u32::try_from(offset).expect("offset");
    n.to_be_bytes()
}

fn dotted(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

fn dashed(ip: [u8; 4]) -> String {
    format!("{}-{}-{}-{}", ip[0], ip[1], ip[2], ip[3])
}

pub fn main(args: DnsArgs) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

async fn run(args: DnsArgs) -> Result<()> {
    ensure!(args.svcnet.is_file(), "{} not found: build it with `cargo build --release -p svcnet`", args.svcnet.display());
    ensure!(crate::is_on_path(&args.knotd), "{} not found (Debian package knot; scripts/setup.sh installs it)", args.knotd.display());
    ensure!(crate::is_on_path(Path::new("dnsperf")), "dnsperf not found (Debian package dnsperf; scripts/setup.sh installs it)");
    let shape = Shape { services: args.services, pods_per_service: args.pods_per_service, namespaces: args.namespaces.max(1) };
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new().prefix("svcnet-bench-dns-").tempdir_in(&parent)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!(
        "svcnet-bench dns: {} Services, {} pods, {} namespaces, {cores} cores, under {}",
        shape.services,
        shape.services * shape.pods_per_service,
        shape.namespaces,
        work.path().display()
    );

    // 1. The store.
    let data_dir = work.path().join("svcnet");
    std::fs::create_dir_all(&data_dir)?;
    let started = Instant::now();
    let objects = preload(&data_dir.join("store.redb"), &shape).await?;
    eprintln!("pre-loaded {objects} keys in {:.1} s", started.elapsed().as_secs_f64());

    // 2. svcnet up (API server only), then svcnet dns against it.
    let up = start_up(&args.svcnet, &data_dir).await?;
    eprintln!("svcnet up: https://{}", up.addr);
    let spawned = Instant::now();
    let (dns_child, dns_addr) = start_svcnet_dns(&args.svcnet, &up.kubeconfig).await?;
    let probe = format!("svc-0.{}.svc.{ZONE}", shape.namespace(0));
    let sync = wait_answer(dns_addr, &probe, |n| n >= 1, Duration::from_secs(600)).await.context("svcnet dns did not sync")?;
    let sync = sync.saturating_duration_since(spawned);
    eprintln!("svcnet dns on {dns_addr}: answering after {:.2} s", sync.as_secs_f64());

    // 3. Knot with the same records.
    let knot_dir = work.path().join("knot");
    std::fs::create_dir_all(&knot_dir)?;
    let records = write_zones(&knot_dir, &shape)?;
    let knot_port = free_udp_tcp_port()?;
    let knot = start_knot(&args.knotd, &knot_dir, knot_port, cores).await?;
    let knot_addr: SocketAddr = ([127, 0, 0, 1], knot_port).into();
    wait_answer(knot_addr, &probe, |n| n >= 1, Duration::from_secs(300)).await.context("knotd did not load the zone")?;
    eprintln!("knotd on {knot_addr}: {records} records loaded");

    // 4 and 5. Queries, interleaved rounds.
    let queries = work.path().join("queries.txt");
    let (count, mix) = write_queries(&queries, &shape)?;
    eprintln!("{count} queries: {mix}");
    let mut svcnet_runs = Vec::new();
    let mut knot_runs = Vec::new();
    for round in 0..args.rounds {
        for (name, addr, runs) in [("svcnet", dns_addr, &mut svcnet_runs), ("knot", knot_addr, &mut knot_runs)] {
            let run = dnsperf(addr, &queries, &args.dnsperf_args).await?;
            eprintln!("round {}: {name}: {:.0} QPS, {:.3} ms avg, {} lost, {}", round + 1, run.qps, run.avg_ms, run.lost, run.rcodes);
            runs.push(run);
        }
    }
    let svcnet_rss = proc_status_kib(dns_child.id(), "VmRSS");
    let svcnet_hwm = proc_status_kib(dns_child.id(), "VmHWM");
    let knot_rss = proc_status_kib(knot.id(), "VmRSS");
    let knot_hwm = proc_status_kib(knot.id(), "VmHWM");

    // 6. Update latency.
    let client = {
        let kubeconfig = kube::config::Kubeconfig::read_from(&up.kubeconfig)?;
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?
    };
    let updates = update_latency(&client, dns_addr, &shape, args.updates).await?;

    print_table(&args, &shape, cores, sync, &svcnet_runs, &knot_runs, (svcnet_rss, svcnet_hwm), (knot_rss, knot_hwm), &updates);
    drop(dns_child);
    drop(knot);
    drop(up);
    Ok(())
}

// === the store ===

async fn preload(path: &Path, shape: &Shape) -> Result<usize> {
    let created = "2025-01-01T00:00:00Z";
    let mut kvs: Vec<(String, Vec<u8>)> = Vec::new();
    let uid = |kind: u8, n: usize| format!("00000000-0000-4000-8{kind:03x}-{n:012x}");
    for n in 0..shape.namespaces {
        let name = format!("{NS_PREFIX}{n}");
        let obj = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": uid(1, n), "creationTimestamp": created, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        kvs.push((format!("/registry/namespaces/{name}"), serde_json::to_vec(&obj)?));
    }
    for s in 0..shape.services {
        let (ns, name) = (shape.namespace(s), format!("svc-{s}"));
        let svc_uid = uid(2, s);
        let mut spec = json!({"type": "ClusterIP", "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]});
        if shape.headless(s) {
            spec["clusterIP"] = "None".into();
            spec["clusterIPs"] = json!(["None"]);
        } else {
            let ip = dotted(shape.cluster_ip(s));
            spec["clusterIP"] = ip.clone().into();
            spec["clusterIPs"] = json!([ip]);
            kvs.push((format!("/allocations/clusterips/{ip}"), serde_json::to_vec(&json!({"namespace": ns, "name": name, "uid": svc_uid}))?));
        }
        let obj = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "uid": svc_uid, "creationTimestamp": created}, "spec": spec, "status": {"loadBalancer": {}}});
        kvs.push((format!("/registry/services/{ns}/{name}"), serde_json::to_vec(&obj)?));
        let mut endpoints = Vec::new();
        for p in 0..shape.pods_per_service {
            let pod = format!("{name}-{p}");
            let ip = dotted(shape.pod_ip(s, p));
            let node = format!("node-{}", (s + p) % 100);
            endpoints.push(json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node, "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": uid(3, s * shape.pods_per_service + p)}}));
            let obj = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "uid": uid(3, s * shape.pods_per_service + p), "creationTimestamp": created, "labels": {"app": name}},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [{"type": "Ready", "status": "True"}]}});
            kvs.push((format!("/registry/pods/{ns}/{pod}"), serde_json::to_vec(&obj)?));
        }
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-bench"), "namespace": ns, "uid": uid(4, s), "creationTimestamp": created,
                "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "bench.svcnet.io"}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]});
        kvs.push((format!("/registry/discovery.k8s.io/endpointslices/{ns}/{name}-bench"), serde_json::to_vec(&slice)?));
    }
    let n = kvs.len();
    let store = RedbStore::open(path).map_err(|e| anyhow!("opening {}: {e}", path.display()))?;
    futures::stream::iter(kvs)
        .map(|(k, v)| {
            let store = &store;
            async move { store.create(&k, v).await.map_err(|e| anyhow!("create {k}: {e}")) }
        })
        .buffer_unordered(4096)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    drop(store);
    Ok(n)
}

// === the servers ===

/// A child process killed when dropped.
struct Child(tokio::process::Child);

impl Child {
    fn id(&self) -> Option<u32> {
        self.0.id()
    }
}

/// `svcnet up` without nodes, as the API server; killed when dropped.
struct Up {
    _child: Child,
    addr: String,
    kubeconfig: PathBuf,
}

async fn start_up(bin: &Path, data_dir: &Path) -> Result<Up> {
    let mut child = tokio::process::Command::new(bin)
        .args(["up", "--nodes", "0", "--api-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut addr, mut kubeconfig) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(a) = line.strip_prefix("svcnet API server listening on https://") {
                addr = Some(a.trim().to_string());
            }
            if let Some(k) = line.strip_prefix("export KUBECONFIG=") {
                kubeconfig = Some(PathBuf::from(k.trim()));
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(300), read).await.context("svcnet up did not start in 300 s")??;
    let (Some(addr), Some(kubeconfig)) = (addr, kubeconfig) else { bail!("svcnet up exited without printing its address and kubeconfig") };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Up { _child: Child(child), addr, kubeconfig })
}

async fn start_svcnet_dns(bin: &Path, kubeconfig: &Path) -> Result<(Child, SocketAddr)> {
    let mut child = tokio::process::Command::new(bin)
        .args(["dns", "--listen", "127.0.0.1:0", "--dns-upstream", "127.0.0.1:9", "--kubeconfig"])
        .arg(kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting svcnet dns")?;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.context("svcnet dns printed nothing in 60 s")??;
    let addr = line.as_deref().and_then(|l| l.strip_prefix("cluster DNS on ")).ok_or_else(|| anyhow!("svcnet dns printed {line:?}"))?.trim().parse()?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((Child(child), addr))
}

fn free_udp_tcp_port() -> Result<u16> {
    for _ in 0..20 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

async fn start_knot(bin: &Path, dir: &Path, port: u16, workers: usize) -> Result<Child> {
    let conf = format!(
        "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: {workers}\n    tcp-workers: 1\n    background-workers: 1\n\
         database:\n    storage: \"{d}/db\"\n\
         log:\n  - target: stderr\n    any: warning\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    semantic-checks: off\n    zonefile-sync: -1\n    journal-content: none\n\
         zone:\n  - domain: {ZONE}\n    file: {ZONE}.zone\n  - domain: 10.in-addr.arpa\n    file: 10.in-addr.arpa.zone\n",
        d = dir.display()
    );
    std::fs::write(dir.join("knot.conf"), conf)?;
    let child = tokio::process::Command::new(bin)
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("knotd.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Child(child))
}

/// The zone files: `cluster.local` and `10.in-addr.arpa`; returns the number of records.
fn write_zones(dir: &Path, shape: &Shape) -> Result<usize> {
    let mut z = String::new();
    let mut r = String::new();
    let soa = |zone: &str| format!("$ORIGIN {zone}.\n$TTL 5\n@ IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 5\n@ IN NS ns.dns.{ZONE}.\n");
    z.push_str(&soa(ZONE));
    z.push_str("ns.dns IN A 127.0.0.1\ndns-version IN TXT \"1.1.0\"\n");
    r.push_str(&soa("10.in-addr.arpa"));
    let mut n = 4;
    let rev = |ip: [u8; 4]| format!("{}.{}.{}", ip[3], ip[2], ip[1]);
    for s in 0..shape.services {
        let owner = format!("svc-{s}.{}.svc", shape.namespace(s));
        if shape.headless(s) {
            for p in 0..shape.pods_per_service {
                let ip = shape.pod_ip(s, p);
                writeln!(z, "{owner} IN A {}", dotted(ip))?;
                writeln!(z, "{}.{owner} IN A {}", dashed(ip), dotted(ip))?;
                writeln!(z, "_http._tcp.{owner} IN SRV 0 {} 80 {}.{owner}.{ZONE}.", 100 / shape.pods_per_service.max(1), dashed(ip))?;
                writeln!(r, "{} IN PTR {}.{owner}.{ZONE}.", rev(ip), dashed(ip))?;
                n += 4;
            }
        } else {
            let ip = shape.cluster_ip(s);
            writeln!(z, "{owner} IN A {}", dotted(ip))?;
            writeln!(z, "_http._tcp.{owner} IN SRV 0 100 80 {owner}.{ZONE}.")?;
            writeln!(r, "{} IN PTR {owner}.{ZONE}.", rev(ip))?;
            n += 3;
        }
        for p in 0..shape.pods_per_service {
            let ip = shape.pod_ip(s, p);
            writeln!(z, "{}.{}.pod IN A {}", dashed(ip), shape.namespace(s), dotted(ip))?;
            n += 1;
        }
    }
    std::fs::write(dir.join(format!("{ZONE}.zone")), z)?;
    std::fs::write(dir.join("10.in-addr.arpa.zone"), r)?;
    Ok(n)
}

/// The dnsperf query file; returns the number of lines and the mix as text.
fn write_queries(path: &Path, shape: &Shape) -> Result<(usize, String)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| (xorshift(&mut state) % n.max(1) as u64) as usize;
    let mut out = String::new();
    let lines = 100_000;
    let headless: Vec<usize> = (0..shape.services).filter(|s| shape.headless(*s)).collect();
    let cluster_ip: Vec<usize> = (0..shape.services).filter(|s| !shape.headless(*s)).collect();
    ensure!(!headless.is_empty() && !cluster_ip.is_empty(), "too few Services");
    for _ in 0..lines {
        let roll = next(100);
        if roll < 60 {
            let s = cluster_ip[next(cluster_ip.len())];
            writeln!(out, "svc-{s}.{}.svc.{ZONE} A", shape.namespace(s))?;
        } else if roll < 65 {
            let s = headless[next(headless.len())];
            writeln!(out, "svc-{s}.{}.svc.{ZONE} A", shape.namespace(s))?;
        } else if roll < 70 {
            let s = next(shape.services);
            let ip = shape.pod_ip(s, next(shape.pods_per_service));
            writeln!(out, "{}.{}.pod.{ZONE} A", dashed(ip), shape.namespace(s))?;
        } else if roll < 80 {
            let s = cluster_ip[next(cluster_ip.len())];
            writeln!(out, "_http._tcp.svc-{s}.{}.svc.{ZONE} SRV", shape.namespace(s))?;
        } else {
            let ns = shape.namespace(next(shape.namespaces));
            let host = ["example.com", "api.github.com", "storage.googleapis.com", "db.internal"][next(4)];
            writeln!(out, "{host}.{ns}.svc.{ZONE} A")?;
        }
    }
    std::fs::write(path, out)?;
    Ok((lines, "60% A ClusterIP, 5% A headless (10 records), 5% A pod, 10% SRV, 20% search-path NXDOMAIN".to_string()))
}

// === measuring ===

/// A minimal A query for `name` with id `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Asks `server` for `name` A until the answer count satisfies `ok`; returns when it did.
async fn wait_answer(server: SocketAddr, name: &str, ok: impl Fn(u16) -> bool, timeout: Duration) -> Result<Instant> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let deadline = Instant::now() + timeout;
    let mut id: u16 = 1;
    let mut buf = [0u8; 4096];
    loop {
        id = id.wrapping_add(1);
        socket.send_to(&query(name, id), server).await?;
        // Read until this query's answer or 200 ms: answers to earlier queries (a server that
        // queued them while loading) are skipped, never taken for this one.
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
            if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
                continue;
            }
            if buf[3] & 0x0f == 0 && ok(u16::from_be_bytes([buf[6], buf[7]])) {
                return Ok(Instant::now());
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("{server} did not answer {name} as wanted in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct PerfRun {
    qps: f64,
    avg_ms: f64,
    lost: u64,
    rcodes: String,
}

async fn dnsperf(server: SocketAddr, queries: &Path, extra: &str) -> Result<PerfRun> {
    let out = tokio::process::Command::new("dnsperf")
        .args(["-s", &server.ip().to_string(), "-p", &server.port().to_string(), "-d"])
        .arg(queries)
        .args(extra.split_whitespace())
        .output()
        .await
        .context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "dnsperf failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    let find = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::trim).map(str::to_string));
    let qps = find("Queries per second:").and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("no QPS in {text}"))?;
    let avg_ms = find("Average Latency (s):").and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).map(|s| s * 1e3).unwrap_or(f64::NAN);
    let lost = find("Queries lost:").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    let rcodes = find("Response codes:").unwrap_or_default();
    Ok(PerfRun { qps, avg_ms, lost, rcodes })
}

/// Replaces the slice of a headless Service with one endpoint fewer, then back, timing each
/// write to the first answer with the new number of A records.
async fn update_latency(client: &kube::Client, server: SocketAddr, shape: &Shape, updates: usize) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(updates);
    let headless: Vec<usize> = (0..shape.services).filter(|s| shape.headless(*s)).collect();
    for i in 0..updates {
        let s = headless[(i * 7919) % headless.len()];
        let ns = shape.namespace(s);
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        let name = format!("svc-{s}-bench");
        let mut slice = api.get(&name).await?;
        let full = shape.pods_per_service;
        let want = if slice.endpoints.len() == full { full - 1 } else { full };
        let mut value: Value = serde_json::to_value(&slice)?;
        let endpoints: Vec<Value> = (0..want)
            .map(|p| {
                json!({"addresses": [dotted(shape.pod_ip(s, p))], "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("svc-{s}-{p}")}})
            })
            .collect();
        value["endpoints"] = Value::Array(endpoints);
        slice = serde_json::from_value(value)?;
        let sent = Instant::now();
        api.replace(&name, &PostParams::default(), &slice).await?;
        let want = u16::try_from(want)?;
        let seen = wait_answer(server, &format!("svc-{s}.{ns}.svc.{ZONE}"), |n| n == want, Duration::from_secs(30)).await?;
        times.push(seen.saturating_duration_since(sent));
    }
    times.sort();
    Ok(times)
}

/// A `kB` field of `/proc/<pid>/status` (0 when unreadable).
fn proc_status_kib(pid: Option<u32>, field: &str) -> u64 {
    let Some(pid) = pid else { return 0 };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().trim_end_matches(" kB").trim().parse().ok()).unwrap_or(0)
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

// === output ===

#[allow(clippy::too_many_arguments)]
fn print_table(
    args: &DnsArgs,
    shape: &Shape,
    cores: usize,
    sync: Duration,
    svcnet: &[PerfRun],
    knot: &[PerfRun],
    svcnet_mem: (u64, u64),
    knot_mem: (u64, u64),
    updates: &[Duration],
) {
    let median = |xs: &mut Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs.get((xs.len().max(1) - 1) / 2).copied().unwrap_or(f64::NAN)
    };
    let range = |xs: &[f64], digits: usize| match (xs.first(), xs.last()) {
        (Some(lo), Some(hi)) if xs.len() > 1 => format!(" ({lo:.digits$}-{hi:.digits$})"),
        _ => String::new(),
    };
    println!(
        "\n{} Services ({} headless), {} pods, {} namespaces; dnsperf {}; {} rounds; {cores} cores shared by server and dnsperf\n",
        shape.services,
        shape.services / 10,
        shape.services * shape.pods_per_service,
        shape.namespaces,
        args.dnsperf_args,
        args.rounds
    );
    println!("| metric | svcnet dns | Knot DNS (zone file) | ratio svcnet/Knot |");
    println!("|---|---:|---:|---:|");
    let mut sq: Vec<f64> = svcnet.iter().map(|r| r.qps).collect();
    let mut kq: Vec<f64> = knot.iter().map(|r| r.qps).collect();
    let (s, k) = (median(&mut sq), median(&mut kq));
    println!("| queries/s (median of rounds) | {s:.0}{} | {k:.0}{} | {:.2}x |", range(&sq, 0), range(&kq, 0), s / k);
    let mut sl: Vec<f64> = svcnet.iter().map(|r| r.avg_ms).collect();
    let mut kl: Vec<f64> = knot.iter().map(|r| r.avg_ms).collect();
    let (s, k) = (median(&mut sl), median(&mut kl));
    println!("| average latency | {s:.3} ms{} | {k:.3} ms{} | {:.2}x |", range(&sl, 3), range(&kl, 3), s / k);
    let lost = |runs: &[PerfRun]| runs.iter().map(|r| r.lost).sum::<u64>();
    println!("| queries lost (all rounds) | {} | {} | |", lost(svcnet), lost(knot));
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("| RSS after the runs | {:.0} MiB | {:.0} MiB | {:.2}x |", mib(svcnet_mem.0), mib(knot_mem.0), svcnet_mem.0 as f64 / knot_mem.0.max(1) as f64);
    println!("| peak RSS | {:.0} MiB | {:.0} MiB | {:.2}x |", mib(svcnet_mem.1), mib(knot_mem.1), svcnet_mem.1 as f64 / knot_mem.1.max(1) as f64);
    println!("| initial sync (spawn to first answer; Knot: zone load) | {:.2} s | | |", sync.as_secs_f64());
    if !updates.is_empty() {
        println!(
            "| endpoint change to answer, p50 / p99 / max ({} changes; goal 100 ms) | {} / {} / {} | n/a | |",
            updates.len(),
            ms(percentile(updates, 50.0)),
            ms(percentile(updates, 99.0)),
            ms(*updates.last().expect("non-empty"))
        );
    }
    println!(
        "\nresponse codes, last round: svcnet {}; Knot {}",
        svcnet.last().map_or("", |r| r.rcodes.as_str()),
        knot.last().map_or("", |r| r.rcodes.as_str())
    );
}
