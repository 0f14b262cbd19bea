//! The proxy at scale, against the kernel's floor, side by side (run as root; `bench/proxy.sh`):
//!
//! 1. full sync of SERVICES Services × ENDPOINTS endpoints (compute the plans and the script,
//!    then `nft -f` into a fresh network namespace);
//! 2. one endpoint change with those present (plan + transaction + `nft -f`);
//! 3. the floor: the same numbers of bare map elements (no rules) loaded with `nft -f`, and one
//!    bare `add element` with those present;
//! 4. new TCP connections per second through the first and the last Service.
//!
//! Usage: `proxy [SERVICES [ENDPOINTS]]` (default 10000 10).

use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use svcnet_netns::NetNs;
use svcnet_proxy::model::{ServiceKey, plan_service};
use svcnet_proxy::ruleset::{Ruleset, RulesetConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let services = args.first().copied().unwrap_or(10_000);
    let endpoints = args.get(1).copied().unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(bench(services, endpoints))
}

fn service_ip(i: usize) -> String {
    format!("10.96.{}.{}", i / 250, i % 250 + 1)
}

fn endpoint_ip(i: usize, e: usize) -> String {
    let n = i * 16 + e;
    format!("10.{}.{}.{}", 128 + n / 65_536, (n / 256) % 256, n % 256)
}

fn objects(i: usize, endpoints: usize, generation: usize) -> (Service, EndpointSlice) {
    let name = format!("svc-{i}");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "bench", "name": name},
        "spec": {"clusterIP": service_ip(i), "clusterIPs": [service_ip(i)], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .expect("a valid Service");
    let eps: Vec<serde_json::Value> = (0..endpoints)
        .map(|e| serde_json::json!({"addresses": [endpoint_ip(i, if e == 0 { e + generation % 2 * 15 } else { e })], "nodeName": "node-1"}))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "bench", "name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .expect("a valid EndpointSlice");
    (service, slice)
}

fn nft(ns: &NetNs, script: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new("ip").args(["netns", "exec", ns.name(), "nft", "-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().expect("piped"), script.as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(output.status.success(), "nft: {}", String::from_utf8_lossy(&output.stderr));
    Ok(started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn bench(services: usize, endpoints: usize) -> anyhow::Result<()> {
    let tag = std::process::id();
    let node = NetNs::create(&format!("pxbench{tag}-node"))?;
    let floor_ns = NetNs::create(&format!("pxbench{tag}-floor"))?;
    let config = RulesetConfig { node_ips: vec!["172.30.0.2".parse()?], cluster_cidrs: vec!["10.244.0.0/16".parse()?] };

    // 1. Full sync.
    let all: Vec<(Service, EndpointSlice)> = (0..services).map(|i| objects(i, endpoints, 0)).collect();
    let started = Instant::now();
    let plans = all.iter().filter_map(|(service, slice)| plan_service(service, [slice], "node-1").ok());
    let mut ruleset = Ruleset::with_services(config, plans);
    let script = ruleset.full_script();
    let compute = started.elapsed();
    let load = nft(&node, &script)?;
    let full = compute + load;

    // 3. The floor: the same element counts in bare maps, no rules.
    let mut floor = String::with_capacity(script.len());
    let _ = writeln!(floor, "table inet floor {{\n\tmap services {{\n\t\ttypeof ip daddr . meta l4proto . th dport : meta mark\n\t\telements = {{");
    for i in 0..services {
        let _ = writeln!(floor, "\t\t\t{} . tcp . 80 : {},", service_ip(i), i + 1);
    }
    let _ = writeln!(floor, "\t\t}}\n\t}}\n\tmap endpoints {{\n\t\ttypeof meta mark . ip daddr : ip daddr . th dport\n\t\telements = {{");
    for i in 0..services {
        for e in 0..endpoints {
            let _ = writeln!(floor, "\t\t\t{} . {} : {} . 8080,", i + 1, endpoint_ip(i, e), endpoint_ip(i, e));
        }
    }
    let _ = writeln!(floor, "\t\t}}\n\t}}\n}}");
    let floor_load = nft(&floor_ns, &floor)?;
    let mut floor_one = Vec::new();
    for round in 0..20 {
        let script = format!("add element inet floor endpoints {{ 1 . 10.127.0.{round} : 10.127.0.{round} . 8080 }}\n");
        floor_one.push(nft(&floor_ns, &script)?);
    }

    // 2. One endpoint change, twenty times (alternating an endpoint of a middle Service).
    let mut change_compute = Vec::new();
    let mut change_total = Vec::new();
    let mut diff_lines = 0;
    for round in 1..=20 {
        let (service, slice) = objects(services / 2, endpoints, round);
        let started = Instant::now();
        let plan = plan_service(&service, [&slice], "node-1").ok();
        ruleset.set_service(&ServiceKey::of_service(&service), plan);
        let diff = ruleset.take_transaction().expect("a change");
        change_compute.push(started.elapsed());
        diff_lines = diff.lines().count();
        nft(&node, &diff)?;
        change_total.push(started.elapsed());
    }

    // 4. New connections per second through the first and the last Service: every endpoint
    // address is served by one listener (an AnyIP route in the server's namespace).
    let server = NetNs::create(&format!("pxbench{tag}-srv"))?;
    let run = |ns: &str, args: &str| -> anyhow::Result<()> {
        let status = Command::new("ip").args(["-n", ns]).args(args.split_whitespace()).status()?;
        anyhow::ensure!(status.success(), "ip -n {ns} {args}");
        Ok(())
    };
    run(node.name(), &format!("link add srv type veth peer name eth0 netns {}", server.name()))?;
    run(node.name(), "addr add 192.168.77.1/24 dev srv")?;
    run(node.name(), "link set srv up")?;
    run(node.name(), "link set lo up")?;
    run(node.name(), "route add 10.128.0.0/9 via 192.168.77.2")?;
    // Locally generated packets are routed before nat output DNATs them.
    run(node.name(), "route add default via 192.168.77.2")?;
    run(server.name(), "addr add 192.168.77.2/24 dev eth0")?;
    run(server.name(), "link set eth0 up")?;
    run(server.name(), "link set lo up")?;
    run(server.name(), "route add local 10.128.0.0/9 dev lo")?;
    let listener = server.run_in(|| std::net::TcpListener::bind("0.0.0.0:8080"))??;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            drop(stream);
        }
    });
    // Client sockets are short-lived; let the client reuse TIME_WAIT ports.
    Command::new("ip").args(["netns", "exec", node.name(), "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"]).status()?;
    let rate = |target: SocketAddr| -> anyhow::Result<f64> {
        node.run_in(move || -> anyhow::Result<f64> {
            let count = 3000;
            let started = Instant::now();
            for _ in 0..count {
                let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                let mut buf = [0u8; 1];
                let _ = stream.read(&mut buf);
            }
            Ok(count as f64 / started.elapsed().as_secs_f64())
        })?
    };
    let first = rate(SocketAddr::new(service_ip(0).parse()?, 80))?;
    let last = rate(SocketAddr::new(service_ip(services - 1).parse()?, 80))?;
    let first_again = rate(SocketAddr::new(service_ip(0).parse()?, 80))?;

    let elements = services * (endpoints + 3);
    println!("svcnet-proxy: {services} Services x {endpoints} endpoints ({elements} map elements, script {} KiB)", script.len() / 1024);
    println!("{:<52} {:>12} {:>12} {:>8}", "", "svcnet-proxy", "floor", "ratio");
    println!(
        "{:<52} {:>12} {:>12} {:>8.2}",
        "full sync (plans + script + nft -f, fresh netns)",
        ms(full),
        ms(floor_load),
        full.as_secs_f64() / floor_load.as_secs_f64()
    );
    println!("{:<52} {:>12}", "  of which plans + script (pure)", ms(compute));
    println!("{:<52} {:>12} {:>12} {:>8.2}", "  of which nft -f", ms(load), ms(floor_load), load.as_secs_f64() / floor_load.as_secs_f64());
    let (one, floor_one) = (median(change_total), median(floor_one));
    println!("{:<52} {:>12} {:>12} {:>8.2}", "one endpoint change (median of 20, nft -f)", ms(one), ms(floor_one), one.as_secs_f64() / floor_one.as_secs_f64());
    println!("{:<52} {:>12}", "  of which plan + transaction (pure)", format!("{:.3} ms", median(change_compute).as_secs_f64() * 1000.0));
    println!("{:<52} {:>12}", "  transaction size (lines)", diff_lines);
    println!("{:<52} {:>12} {:>12} {:>8.2}", "new connections/s: last Service vs first", format!("{last:.0}/s"), format!("{first:.0}/s"), last / first);
    println!("{:<52} {:>12}", "new connections/s: first Service again", format!("{first_again:.0}/s"));
    Ok(())
}
