//! NetworkPolicy benchmark (run by bench/netpol.sh): new TCP connections per second through a
//! node namespace with the `inet svcnet-netpol` table, with 0 and with 1,000 policies over
//! 10,000 pods (all in the table's maps and sets; two of them real namespaces carrying the
//! traffic), and the time a label change takes to take effect through the API server, the runner
//! and the kernel.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use svcnet_netns::NetNs;
use svcnet_netpol::nft::{self, CompileOptions};
use svcnet_netpol::{Applied, Cluster, NetpolConfig};

const NAMESPACES: usize = 100;
const PODS_PER_NS: usize = 100;
const APPS: usize = 10;

fn ip(ns: &str, args: &str) -> Result<()> {
    let out = Command::new("ip").args(["-n", ns]).args(args.split_whitespace()).output()?;
    if !out.status.success() {
        bail!("ip -n {ns} {args}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn sysctl(ns: &NetNs, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_owned();
    ns.run_in(move || std::fs::write(&path, value).with_context(|| path.clone()))?
}

/// The synthetic cluster: pod `n` of namespace `i` has IP 10.200.i.(n+10), `app=app-(n % 10)`,
/// one `role=monitor` pod per namespace; namespaces carry `team=t(i % 5)`. The real client is
/// ns-0/pod-8 (app-8, which app-9 admits on its named port) and the real server ns-0/pod-9
/// (app-9).
fn objects(policies: usize) -> (Vec<corev1::Namespace>, Vec<corev1::Pod>, Vec<netv1::NetworkPolicy>) {
    let mut namespaces = Vec::new();
    let mut pods = Vec::new();
    for i in 0..NAMESPACES {
        namespaces.push(serde_json::from_value(json!({"metadata": {"name": format!("ns-{i}"), "labels": {"team": format!("t{}", i % 5)}}})).unwrap());
        for n in 0..PODS_PER_NS {
            let mut labels = BTreeMap::from([("app".to_string(), format!("app-{}", n % APPS))]);
            if n == 50 {
                labels.insert("role".into(), "monitor".into());
            }
            pods.push(
                serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{n}"), "namespace": format!("ns-{i}"), "labels": labels},
                    "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 80}]}]},
                    "status": {"phase": "Running", "podIP": format!("10.200.{i}.{}", n + 10)}
                }))
                .unwrap(),
            );
        }
    }
    let mut nps = Vec::new();
    for k in 0..policies {
        let (i, j) = (k / APPS % NAMESPACES, k % APPS);
        // app-j may be reached by app-(j-1) of its namespace on the named port, and by the
        // monitors of the namespaces of one team on 9090.
        nps.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("allow-app-{j}"), "namespace": format!("ns-{i}")},
                "spec": {
                    "podSelector": {"matchLabels": {"app": format!("app-{j}")}},
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"app": format!("app-{}", (j + APPS - 1) % APPS)}}}], "ports": [{"port": "http"}]},
                        {"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", j % 5)}}, "podSelector": {"matchLabels": {"role": "monitor"}}}], "ports": [{"port": 9090}]}
                    ]
                }
            }))
            .unwrap(),
        );
    }
    (namespaces, pods, nps)
}

struct Bench {
    node: NetNs,
    client: NetNs,
    server_ip: Ipv4Addr,
    _server: NetNs,
}

fn topology() -> Result<Bench> {
    let tag = format!("npbench{}", std::process::id() % 100_000);
    let node = NetNs::create(&format!("{tag}-node"))?;
    ip(node.name(), "link add cbr0 type bridge")?;
    ip(node.name(), "addr add 10.200.0.1/16 dev cbr0")?;
    ip(node.name(), "link set cbr0 up")?;
    node.enable_ip_forward()?;
    sysctl(&node, "net.ipv4.conf.cbr0.proxy_arp", "1")?;
    sysctl(&node, "net.ipv4.conf.cbr0.proxy_arp_pvlan", "1")?;
    sysctl(&node, "net.ipv4.conf.all.send_redirects", "0")?;
    sysctl(&node, "net.ipv4.conf.cbr0.send_redirects", "0")?;
    let mut made = Vec::new();
    for (short, addr) in [("c", "10.200.0.18"), ("s", "10.200.0.19")] {
        let ns = NetNs::create(&format!("{tag}-{short}"))?;
        ip(node.name(), &format!("link add v{short} type veth peer name eth0 netns {}", ns.name()))?;
        ip(node.name(), &format!("link set v{short} master cbr0 up"))?;
        ip(node.name(), &format!("link set dev v{short} type bridge_slave isolated on"))?;
        ip(ns.name(), &format!("addr add {addr}/16 dev eth0"))?;
        ip(ns.name(), "link set eth0 up")?;
        ip(ns.name(), "link set lo up")?;
        ip(ns.name(), "route add default via 10.200.0.1")?;
        made.push(ns);
    }
    let server = made.pop().unwrap();
    let client = made.pop().unwrap();
    let listener = server.run_in(|| std::net::TcpListener::bind("0.0.0.0:80"))??;
    std::thread::spawn(move || {
        use std::io::Write;
        for mut s in listener.incoming().map_while(Result::ok) {
            let _ = s.write_all(b"ok\n");
        }
    });
    Ok(Bench { node, client, server_ip: "10.200.0.19".parse()?, _server: server })
}

/// New connections per second from the client to the server over `secs` seconds, with
/// `threads` clients in parallel.
fn conn_rate(b: &Bench, secs: f64, threads: usize) -> Result<f64> {
    let addr = SocketAddr::from((b.server_ip, 80));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    b.client
                        .run_in(move || {
                            let mut n = 0usize;
                            while Instant::now() < deadline {
                                let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { continue };
                                let mut buf = [0u8; 3];
                                if c.read_exact(&mut buf).is_ok() {
                                    n += 1;
                                }
                                // Close with a reset: no TIME_WAIT on either side, so the
                                // ephemeral ports never run out and every run starts alike.
                                let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
                            }
                            n
                        })
                        .unwrap_or(0)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn can_connect(b: &Bench) -> bool {
    let addr = SocketAddr::from((b.server_ip, 80));
    b.client.run_in(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()).unwrap_or(false)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let secs: f64 = std::env::var("NETPOL_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    if let Some(path) = std::env::var_os("NETPOL_BENCH_DUMP") {
        // The full script of the 1,000-policy table, for experiments with nft by hand.
        let (ns, pods, nps) = objects(1000);
        let (cluster, _) = Cluster::from_objects(&ns, &pods, &nps);
        let options = CompileOptions { node_name: Some("node-1".into()), log_drops: false };
        std::fs::write(path, nft::full_script(&nft::compile(&cluster, &options), &options))?;
        return Ok(());
    }
    if std::env::var_os("NETPOL_BENCH_PROFILE").is_some() {
        let (ns, pods, nps) = objects(1000);
        for _ in 0..3 {
            let t = Instant::now();
            let (cluster, _) = Cluster::from_objects(&ns, &pods, &nps);
            let t1 = t.elapsed();
            let state = nft::compile(&cluster, &CompileOptions { node_name: Some("node-1".into()), log_drops: false });
            let t2 = t.elapsed() - t1;
            let d = nft::diff_script(&state, &state, &CompileOptions::default());
            let t3 = t.elapsed() - t1 - t2;
            println!("from_objects {t1:?} compile {t2:?} diff {t3:?} ({})", d.len());
        }
        return Ok(());
    }
    let b = topology()?;
    if std::env::var_os("NETPOL_BENCH_ONLY_CHANGES").is_none() {
        connection_rates(&b, secs).await?;
    }
    changes(&b).await
}

/// New connections per second with no table, 0 and 1,000 policies.
async fn connection_rates(b: &Bench, secs: f64) -> Result<()> {
    let options = CompileOptions { node_name: Some("node-1".into()), log_drops: false };
    // Three rounds over the configurations, each table loaded afresh, so that other load on
    // the machine falls on all of them alike; the median of each is reported.
    let configs: [Option<usize>; 3] = [None, Some(0), Some(1000)];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut notes: Vec<String> = vec![String::new(); configs.len()];
    for _round in 0..3 {
        for (c, config) in configs.iter().enumerate() {
            let Some(policies) = config else {
                svcnet_netpol::runner::remove_table(Some(b.node.name())).await?;
                rates[c].push(conn_rate(b, secs, 2)?);
                continue;
            };
            let (ns, pods, nps) = objects(*policies);
            let t = Instant::now();
            let (cluster, errors) = Cluster::from_objects(&ns, &pods, &nps);
            assert!(errors.is_empty());
            let state = nft::compile(&cluster, &options);
            let compile = t.elapsed();
            let script = nft::full_script(&state, &options);
            let t = Instant::now();
            svcnet_netpol::runner::nft_apply(Some(b.node.name()), &script).await?;
            let apply = t.elapsed();
            rates[c].push(conn_rate(b, secs, 2)?);
            notes[c] = format!(
                "{} pods, {} policies: {} isolated pod chains, {} shared sets, {} set elements; compile {:.0} ms, full nft load {:.0} ms",
                pods.len(),
                nps.len(),
                state.ingress_pods.len() + state.egress_pods.len(),
                state.sets.len(),
                state.elements(),
                compile.as_secs_f64() * 1e3,
                apply.as_secs_f64() * 1e3
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let names = ["no svcnet-netpol table", "0 policies / 10,000 pods", "1000 policies / 10,000 pods"];
    let medians: Vec<f64> = rates.iter_mut().map(median).collect();
    println!("\nnew TCP connections/s (2 clients, {secs} s each, median of 3 rounds, through the node namespace's forward hook)");
    println!("{:<32} {:>12} {:>10}  rounds", "configuration", "conn/s", "ratio");
    for (c, name) in names.iter().enumerate() {
        let rounds: Vec<String> = rates[c].iter().map(|r| format!("{r:.0}")).collect();
        println!("{name:<32} {:>12.0} {:>10.2}  {}", medians[c], medians[c] / medians[0], rounds.join(" "));
    }
    for (c, name) in names.iter().enumerate() {
        if !notes[c].is_empty() {
            println!("  {name}: {}", notes[c]);
        }
    }
    svcnet_netpol::runner::remove_table(Some(b.node.name())).await?;

    Ok(())
}

/// Changes through the API server to the runner and the kernel, 1,000 policies / 10,000 pods.
async fn changes(b: &Bench) -> Result<()> {
    // Label change through the API: the runner watches an in-process API server holding the
    // 10,000 pods and 1,000 policies.
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn svcnet_store::Storage> = svcnet_store::RedbStore::open(&dir.path().join("store.redb"))?;
    let config = svcnet_apiserver::Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_owned(),
        extra_sans: Vec::new(),
        service_ranges: svcnet_apiserver::service_alloc::ServiceRanges::parse("10.96.0.0/12", "30000-32767")?,
    };
    let server = svcnet_apiserver::ApiServer::start(config, store).await?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?;
    let (ns, pods, nps) = objects(1000);
    let t = Instant::now();
    for n in &ns {
        Api::<corev1::Namespace>::all(client.clone()).create(&PostParams::default(), n).await?;
    }
    let chunks: Vec<Vec<corev1::Pod>> = pods.chunks(pods.len() / 16).map(|c| c.to_vec()).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for mut p in chunk {
                let status = p.status.take();
                let api: Api<corev1::Pod> = Api::namespaced(client.clone(), p.metadata.namespace.as_deref().unwrap());
                api.create(&PostParams::default(), &p).await?;
                api.patch_status(p.metadata.name.as_deref().unwrap(), &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    for p in &nps {
        Api::<netv1::NetworkPolicy>::namespaced(client.clone(), p.metadata.namespace.as_deref().unwrap()).create(&PostParams::default(), p).await?;
    }
    eprintln!("loaded the API server in {:.1} s", t.elapsed().as_secs_f64());
    let (tx, mut applied) = tokio::sync::watch::channel(Applied::default());
    let runner = tokio::spawn(svcnet_netpol::run_observed(client.clone(), NetpolConfig::new("node-1", Some(b.node.name().to_owned())), tx));
    let t = Instant::now();
    while applied.borrow().elements == 0 {
        applied.changed().await?;
    }
    let first = t.elapsed();
    // The server (ns-0/pod-9, app-9) admits app-8 on its named port; the client is pod-8.
    let pods_api: Api<corev1::Pod> = Api::namespaced(client.clone(), "ns-0");
    let (mut to_applied, mut to_probe, mut recompiled, mut parts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (label, want) in [("app-0", false), ("app-8", true), ("app-0", false), ("app-8", true), ("app-0", false), ("app-8", true)] {
        let generation = applied.borrow_and_update().generation;
        let t = Instant::now();
        pods_api.patch("pod-8", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": label}}}))).await?;
        let (done, pods, _) = wait_generation(&mut applied, generation).await?;
        to_applied.push((done - t).as_secs_f64() * 1e3);
        recompiled.push(pods);
        parts.push(times(&applied));
        // Allowed: when a connection succeeds. Denied: the start of the first attempt that
        // times out (200 ms later).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let attempt = Instant::now();
            if can_connect(b) == want {
                let seen = if want { Instant::now() } else { attempt };
                to_probe.push((seen - t).as_secs_f64() * 1e3);
                break;
            }
            if Instant::now() > deadline {
                bail!("label change to {label} did not take effect in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // A namespace label change: ns-1 moves from team t1 to t0 and back, which changes the
    // monitor peers of the 400 policies admitting team t0 or t1 (two shared sets).
    let ns_api: Api<corev1::Namespace> = Api::all(client.clone());
    let (mut ns_changes, mut ns_parts) = (Vec::new(), Vec::new());
    for team in ["t0", "t1", "t0", "t1"] {
        let generation = applied.borrow_and_update().generation;
        let t = Instant::now();
        ns_api.patch("ns-1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"team": team}}}))).await?;
        let (done, pods, _) = wait_generation(&mut applied, generation).await?;
        ns_changes.push(((done - t).as_secs_f64() * 1e3, pods));
        ns_parts.push(times(&applied));
    }
    // A policy added and deleted: deny all ingress in ns-2 (its 100 pods' chains rewritten).
    let np_api: Api<netv1::NetworkPolicy> = Api::namespaced(client.clone(), "ns-2");
    let deny: netv1::NetworkPolicy = serde_json::from_value(json!({"metadata": {"name": "deny-all", "namespace": "ns-2"}, "spec": {"podSelector": {}}}))?;
    let (mut np_changes, mut np_parts) = (Vec::new(), Vec::new());
    for add in [true, false, true, false] {
        let generation = applied.borrow_and_update().generation;
        let t = Instant::now();
        if add {
            np_api.create(&PostParams::default(), &deny).await?;
        } else {
            np_api.delete("deny-all", &Default::default()).await?;
        }
        let (done, pods, _) = wait_generation(&mut applied, generation).await?;
        np_changes.push(((done - t).as_secs_f64() * 1e3, pods));
        np_parts.push(times(&applied));
    }
    // The floor of one transaction on this table: add and delete one element of a map.
    let mut floor = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        svcnet_netpol::runner::nft_apply(
            Some(b.node.name()),
            "add element inet svcnet-netpol ingress_pods { 192.0.2.1 : accept }\ndelete element inet svcnet-netpol ingress_pods { 192.0.2.1 }\n",
        )
        .await?;
        floor.push(t.elapsed().as_secs_f64() * 1e3);
    }
    runner.abort();
    server.shutdown().await;
    let summary = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        format!("min {:.0} ms, median {:.0} ms, max {:.0} ms ({} changes)", v[0], v[v.len() / 2], v[v.len() - 1], v.len())
    };
    println!("\nchanges to effect, 1,000 policies / 10,000 pods (API patch -> watch -> incremental compile -> nft transaction)");
    println!("  runner start to first table (full compile and load): {:.0} ms", first.as_secs_f64() * 1e3);
    println!("  pod label change, to the transaction applied: {}; pods recompiled {recompiled:?}", summary(&to_applied));
    println!("  pod label change, to a probe connection seeing it: {}", summary(&to_probe));
    println!("    runner's part (compile ms, nft ms): {parts:?}");
    let (ms, pods): (Vec<f64>, Vec<usize>) = ns_changes.into_iter().unzip();
    println!("  namespace label change (team of ns-1), to the transaction applied: {}; pods recompiled {pods:?}", summary(&ms));
    println!("    runner's part (compile ms, nft ms): {ns_parts:?}");
    let (ms, pods): (Vec<f64>, Vec<usize>) = np_changes.into_iter().unzip();
    println!("  policy add/delete (deny-all in ns-2), to the transaction applied: {}; pods recompiled {pods:?}", summary(&ms));
    println!("    runner's part (compile ms, nft ms): {np_parts:?}");
    println!("  one-element nft transaction on this table (the floor): {}", summary(&floor));
    Ok(())
}

/// The runner's compile and nft times of its last transaction, in ms.
fn times(applied: &tokio::sync::watch::Receiver<Applied>) -> (u64, u64) {
    let a = applied.borrow();
    (a.compile_time.as_millis() as u64, a.nft_time.as_millis() as u64)
}

/// Waits for the runner's next transaction after `generation`: (when it was seen, pods
/// recompiled, whether it was a full compile).
async fn wait_generation(applied: &mut tokio::sync::watch::Receiver<Applied>, generation: u64) -> Result<(Instant, usize, bool)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        {
            let a = applied.borrow_and_update();
            if a.generation > generation {
                return Ok((Instant::now(), a.pods_recompiled, a.full));
            }
        }
        tokio::time::timeout_at(deadline, applied.changed()).await.context("no transaction within 120 s")??;
    }
}
