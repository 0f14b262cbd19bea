//! The proxy at scale, against the kernel's floor, side by side (run as root; `bench/proxy.sh`):
//!
//! 1. full sync of SERVICES Services × ENDPOINTS endpoints, 100 endpoints per node, as the proxy
//!    does it: compute the plans and the ruleset, `nft -f` the skeleton into a fresh network
//!    namespace, then every element in one netlink transaction; the same over the table it left
//!    (a restart); the whole ruleset as one `nft -f` script (the older way) for comparison; and
//!    once more with every endpoint on the measured node (each one a hairpin element too);
//! 2. one endpoint change with those present (plan + transaction + netlink);
//! 3. the floor: the same numbers of bare map elements (no rules) loaded with `nft -f` (the
//!    baseline column) and over netlink, and one bare `add element` both ways;
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
use svcnet_netns::nf_tables::{self, Batch, Data, Element, NfTables};
use svcnet_proxy::model::{ServiceKey, plan_service};
use svcnet_proxy::nft::{FullSyncTimes, NodeNamespace};
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

/// Where endpoint `e` of Service `i` runs: spread 100 to a node (node-1, the one measured,
/// holds the first 100, as a real node holds at most ~110 pods), or all on node-1.
fn node_name(i: usize, e: usize, endpoints: usize, all_local: bool) -> String {
    if all_local { "node-1".into() } else { format!("node-{}", (i * endpoints + e) / 100 + 1) }
}

fn objects(i: usize, endpoints: usize, generation: usize, all_local: bool) -> (Service, EndpointSlice) {
    let name = format!("svc-{i}");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "bench", "name": name},
        "spec": {"clusterIP": service_ip(i), "clusterIPs": [service_ip(i)], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .expect("a valid Service");
    let eps: Vec<serde_json::Value> = (0..endpoints)
        .map(|e| serde_json::json!({"addresses": [endpoint_ip(i, if e == 0 { e + generation % 2 * 15 } else { e })], "nodeName": node_name(i, e, endpoints, all_local)}))
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

/// A full sync as the proxy does it, into `ns`.
async fn full_sync(ns: &NetNs, ruleset: &Ruleset) -> anyhow::Result<(Duration, FullSyncTimes)> {
    let started = Instant::now();
    let times = NodeNamespace::new(Some(ns.name().to_string())).full_sync(ruleset).await?;
    Ok((started.elapsed(), times))
}

/// CPU time (user + system) of this process and of its waited-for children, from
/// `/proc/self/stat` (clock ticks of 10 ms): the machine is shared, and CPU time is what a load
/// costs whatever else runs.
fn cpu() -> anyhow::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<u64> =
        stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or_default().split(' ').skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    anyhow::ensure!(fields.len() == 4, "unexpected /proc/self/stat");
    let ticks = |t: u64| Duration::from_millis(t * 10);
    Ok((ticks(fields[0] + fields[1]), ticks(fields[2] + fields[3])))
}

/// The CPU time `load` takes: this process's for netlink (the kernel's work is done in the
/// sending thread), the children's for `nft -f`.
async fn cpu_of<F: std::future::Future<Output = anyhow::Result<Duration>>>(children: bool, load: F) -> anyhow::Result<(Duration, Duration)> {
    let before = cpu()?;
    let wall = load.await?;
    let after = cpu()?;
    Ok((wall, if children { after.1 - before.1 } else { after.0 - before.0 }))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// This process's resident memory, in MiB.
fn rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok());
    Ok(kib.ok_or_else(|| anyhow::anyhow!("no VmRSS"))? / 1024)
}

/// Medians of wall and CPU times.
fn medians(v: Vec<(Duration, Duration)>) -> (Duration, Duration) {
    let (wall, cpu): (Vec<Duration>, Vec<Duration>) = v.into_iter().unzip();
    (median(wall), median(cpu))
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn bench(services: usize, endpoints: usize) -> anyhow::Result<()> {
    let tag = std::process::id();
    let node = NetNs::create(&format!("pxbench{tag}-node"))?;
    let config = RulesetConfig { node_ips: vec!["172.30.0.2".parse()?], cluster_cidrs: vec!["10.244.0.0/16".parse()?] };
    let load_before = std::fs::read_to_string("/proc/loadavg")?;

    // 1. Full sync.
    let all: Vec<(Service, EndpointSlice)> = (0..services).map(|i| objects(i, endpoints, 0, false)).collect();
    let started = Instant::now();
    let plans: Vec<_> = all.iter().filter_map(|(service, slice)| plan_service(service, [slice], "node-1").ok()).collect();
    let planned = started.elapsed();
    let mut ruleset = Ruleset::with_services(config.clone(), plans);
    let computed = started.elapsed();
    let script = ruleset.full_script();
    let script_len = script.len();
    // For profiling nft on the real script: `PROXY_BENCH_DUMP=DIR bench/proxy.sh`.
    let dump = std::env::var_os("PROXY_BENCH_DUMP").map(std::path::PathBuf::from);
    if let Some(dir) = &dump {
        std::fs::write(dir.join("full.nft"), &script)?;
    }
    // Whole loads are measured three times each into fresh namespaces, alternating which of
    // the proxy's way and `nft -f` of the whole script goes first (the machine is shared;
    // medians are reported). The first is the proxy's namespace, used for the rest.
    let rss_before = rss()?;
    let mut syncs = vec![];
    let mut sync_cpus = vec![];
    let mut by_nft_loads = vec![];
    for round in 0..3 {
        let ns = if round == 0 { None } else { Some(NetNs::create(&format!("pxbench{tag}-s{round}"))?) };
        let nft_ns = NetNs::create(&format!("pxbench{tag}-n{round}"))?;
        if round % 2 == 1 {
            by_nft_loads.push(cpu_of(true, async { nft(&nft_ns, &script) }).await?);
        }
        let before = cpu()?;
        syncs.push(full_sync(ns.as_ref().unwrap_or(&node), &ruleset).await?);
        sync_cpus.push(cpu()?.0 - before.0);
        if round % 2 == 0 {
            by_nft_loads.push(cpu_of(true, async { nft(&nft_ns, &script) }).await?);
        }
    }
    let rss_after = rss()?;
    drop(script);
    syncs.sort_by_key(|(wall, _)| *wall);
    let (sync, times) = syncs[1];
    let sync_cpu = median(sync_cpus);
    let (by_nft_load, by_nft_cpu) = medians(by_nft_loads);
    let full = computed + sync;
    // A restart: a new ruleset (same Services) over the table the last run left.
    let started = Instant::now();
    let plans: Vec<_> = all.iter().filter_map(|(service, slice)| plan_service(service, [slice], "node-1").ok()).collect();
    let restarted = Ruleset::with_services(config.clone(), plans);
    let restart_computed = started.elapsed();
    let (restart_sync, restart_times) = full_sync(&node, &restarted).await?;
    anyhow::ensure!(restart_times.skeleton.is_none(), "the skeleton was kept");
    drop(restarted);

    // 1b. The worst case: every endpoint on this node, so each is also a hairpin element.
    let local_ns = NetNs::create(&format!("pxbench{tag}-local"))?;
    let all_local: Vec<(Service, EndpointSlice)> = (0..services).map(|i| objects(i, endpoints, 0, true)).collect();
    let started = Instant::now();
    let plans = all_local.iter().filter_map(|(service, slice)| plan_service(service, [slice], "node-1").ok());
    let local_ruleset = Ruleset::with_services(config.clone(), plans);
    let local_compute = started.elapsed();
    let (local_load, _) = full_sync(&local_ns, &local_ruleset).await?;
    drop((all_local, local_ruleset, local_ns));

    // 3. The floor: the same element counts in bare maps, no rules; with `nft -f`, and the
    // same elements over netlink into the same (empty) maps.
    const FLOOR_TABLE: &str = "table inet floor {\n\tmap services {\n\t\ttypeof ip daddr . meta l4proto . th dport : meta mark\n\t}\n\tmap endpoints {\n\t\ttypeof meta mark . ip daddr : ip daddr . th dport\n\t}\n}\n";
    let mut floor = String::with_capacity(script_len);
    floor.push_str(FLOOR_TABLE);
    let _ = writeln!(floor, "add element inet floor services {{");
    for i in 0..services {
        let _ = writeln!(floor, "\t{} . tcp . 80 : {},", service_ip(i), i + 1);
    }
    let _ = writeln!(floor, "}}\nadd element inet floor endpoints {{");
    for i in 0..services {
        for e in 0..endpoints {
            let _ = writeln!(floor, "\t{} . {} : {} . 8080,", i + 1, endpoint_ip(i, e), endpoint_ip(i, e));
        }
    }
    let _ = writeln!(floor, "}}");
    if let Some(dir) = &dump {
        std::fs::write(dir.join("floor.nft"), &floor)?;
    }
    let floor_batch = || -> anyhow::Result<Batch> {
        let mut batch = Batch::new();
        let mut out = batch.add_elements(nf_tables::Family::Inet, "floor", "services");
        for i in 0..services {
            let ip: std::net::Ipv4Addr = service_ip(i).parse()?;
            let key = [&ip.octets()[..], &[6, 0, 0, 0], &[0, 80, 0, 0]].concat();
            out.push(&Element { key: &key, key_end: None, data: Data::Value(&(i as u32 + 1).to_ne_bytes()) });
        }
        drop(out);
        let mut out = batch.add_elements(nf_tables::Family::Inet, "floor", "endpoints");
        for i in 0..services {
            for e in 0..endpoints {
                let ip: std::net::Ipv4Addr = endpoint_ip(i, e).parse()?;
                let key = [&(i as u32 + 1).to_ne_bytes()[..], &ip.octets()].concat();
                let data = [&ip.octets()[..], &[0x1f, 0x90, 0, 0]].concat();
                out.push(&Element { key: &key, key_end: None, data: Data::Value(&data) });
            }
        }
        drop(out);
        Ok(batch)
    };
    let floor_ns = NetNs::create(&format!("pxbench{tag}-floor"))?;
    let floor_nl_ns = NetNs::create(&format!("pxbench{tag}-fnl"))?;
    let mut floor_nl_socket = NfTables::open(Some(&floor_nl_ns))?;
    let mut floor_loads = vec![];
    let mut floor_nl_loads = vec![];
    for round in 0..3 {
        let (nft_ns, nl_ns) = if round == 0 {
            (None, None)
        } else {
            (Some(NetNs::create(&format!("pxbench{tag}-fn{round}"))?), Some(NetNs::create(&format!("pxbench{tag}-fl{round}"))?))
        };
        let nl_target = nl_ns.as_ref().unwrap_or(&floor_nl_ns);
        nft(nl_target, FLOOR_TABLE)?;
        let mut socket = NfTables::open(Some(nl_target))?;
        let batch = floor_batch()?;
        let netlink_load = || -> anyhow::Result<(Duration, Duration)> {
            let before = cpu()?;
            let started = Instant::now();
            socket.commit(batch)?;
            Ok((started.elapsed(), cpu()?.0 - before.0))
        };
        if round % 2 == 1 {
            floor_nl_loads.push(netlink_load()?);
            floor_loads.push(cpu_of(true, async { nft(nft_ns.as_ref().unwrap_or(&floor_ns), &floor) }).await?);
        } else {
            floor_loads.push(cpu_of(true, async { nft(nft_ns.as_ref().unwrap_or(&floor_ns), &floor) }).await?);
            floor_nl_loads.push(netlink_load()?);
        }
    }
    drop(floor);
    let (floor_load, floor_cpu) = medians(floor_loads);
    let (floor_nl_load, floor_nl_cpu) = medians(floor_nl_loads);
    let mut floor_one = Vec::new();
    let mut floor_nl_one = Vec::new();
    for round in 0..20u8 {
        let script = format!("add element inet floor endpoints {{ 1 . 10.127.0.{round} : 10.127.0.{round} . 8080 }}\n");
        floor_one.push(nft(&floor_ns, &script)?);
        let started = Instant::now();
        let mut batch = Batch::new();
        let ip = [10, 127, 0, round];
        let key = [&1u32.to_ne_bytes()[..], &ip].concat();
        let data = [&ip[..], &[0x1f, 0x90, 0, 0]].concat();
        batch.add_elements(nf_tables::Family::Inet, "floor", "endpoints").push(&Element { key: &key, key_end: None, data: Data::Value(&data) });
        floor_nl_socket.commit(batch)?;
        floor_nl_one.push(started.elapsed());
    }

    // 2. One endpoint change, twenty times (alternating an endpoint of a middle Service).
    let node_ns = NodeNamespace::new(Some(node.name().to_string()));
    let mut change_compute = Vec::new();
    let mut change_total = Vec::new();
    let mut diff_lines = 0;
    for round in 1..=20 {
        let (service, slice) = objects(services / 2, endpoints, round, false);
        let started = Instant::now();
        let plan = plan_service(&service, [&slice], "node-1").ok();
        ruleset.set_service(&ServiceKey::of_service(&service), plan);
        let tx = ruleset.take_transaction().expect("a change");
        change_compute.push(started.elapsed());
        diff_lines = tx.script().lines().count();
        node_ns.apply_transaction(&tx).await?;
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
            let count = 2000;
            let started = Instant::now();
            for _ in 0..count {
                let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                let mut buf = [0u8; 1];
                let _ = stream.read(&mut buf);
            }
            Ok(count as f64 / started.elapsed().as_secs_f64())
        })?
    };
    // Alternating rounds, medians: one round's rate swings by ±25% with the machine.
    let (mut firsts, mut lasts) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        firsts.push(rate(SocketAddr::new(service_ip(0).parse()?, 80))?);
        lasts.push(rate(SocketAddr::new(service_ip(services - 1).parse()?, 80))?);
    }
    let median_rate = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (first, last) = (median_rate(firsts.clone()), median_rate(lasts.clone()));

    let load_after = std::fs::read_to_string("/proc/loadavg")?;

    // endpoints, service-ips, endpoint-counts, cluster-ip-ids, cluster-ips per Service
    let elements = services * (endpoints + 4);
    println!(
        "svcnet-proxy: {services} Services x {endpoints} endpoints ({elements} map elements; as one nft script {} KiB), 100 endpoints per node",
        script_len / 1024
    );
    println!("load average before/after: {} / {}", load_before.trim(), load_after.trim());
    println!("{:<58} {:>12} {:>12} {:>8}", "", "svcnet-proxy", "nft -f floor", "ratio");
    let row = |name: &str, ours: Duration, floor: Duration| println!("{name:<58} {:>12} {:>12} {:>8.2}", ms(ours), ms(floor), ratio(ours, floor));
    let line = |name: &str, value: String| println!("{name:<58} {value:>12}");
    row("full sync (plans, ruleset, skeleton, elements; fresh netns)*", full, floor_load);
    line("  of which plans (pure)", ms(planned));
    line("  of which ruleset (pure)", ms(computed - planned));
    line("  of which the skeleton with nft -f", ms(times.skeleton.unwrap_or_default()));
    line("  of which encoding the elements (pure)", ms(times.encode));
    row("  of which the netlink transaction of every element", times.commit, floor_load);
    line("  netlink messages / bytes", format!("{} / {} KiB", times.messages, times.bytes / 1024));
    row("  CPU time of this process for the load*", sync_cpu, floor_cpu);
    line("  resident memory of this process before/after the loads", format!("{rss_before}/{rss_after} MiB"));
    row("the same ruleset as one script with nft -f (older way)*", by_nft_load, floor_load);
    row("  its CPU time*", by_nft_cpu, floor_cpu);
    row("full sync over the existing table (a restart)", restart_computed + restart_sync, floor_load);
    line("  of which plans + ruleset (pure)", ms(restart_computed));
    row("  of which flush + refill in one netlink transaction", restart_times.commit, floor_load);
    row("full sync, every endpoint on this node (hairpin set full)", local_compute + local_load, floor_load);
    line("  of which plans + ruleset (pure)", ms(local_compute));
    row("the floor's elements over netlink*", floor_nl_load, floor_load);
    row("  their CPU time*", floor_nl_cpu, floor_cpu);
    let (one, floor_one, floor_nl_one) = (median(change_total), median(floor_one), median(floor_nl_one));
    row("one endpoint change (median of 20, netlink)", one, floor_one);
    line("  of which plan + transaction (pure)", format!("{:.3} ms", median(change_compute).as_secs_f64() * 1000.0));
    line("  transaction size (nft script lines)", diff_lines.to_string());
    row("  floor (one bare add element) over netlink", floor_nl_one, floor_one);
    println!(
        "{:<58} {:>12} {:>12} {:>8.2}",
        "new connections/s: last Service vs first (median of 5)",
        format!("{last:.0}/s"),
        format!("{first:.0}/s"),
        last / first
    );
    let rounds = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" ");
    line("  rounds, first Service (per s)", rounds(&firsts));
    line("  rounds, last Service (per s)", rounds(&lasts));
    println!("* median of 3 loads into fresh namespaces (the floor column too)");
    Ok(())
}
