//! NetworkPolicy enforced in the kernel: upstream's e2e cases run against real namespaces, the
//! runner, the real Service proxy and an in-process API server; for every step what the probes
//! observe, to each pod's IP and through each pod's own ClusterIP Service (as upstream probes),
//! must equal the matrix tool's prediction (which `engine_cases` holds to upstream's
//! expectations), and the incrementally built nftables table must list exactly as a fresh full
//! load of the same state.

mod support;

use std::time::Duration;

use anyhow::{Result, bail};
use support::topo::Topology;
use support::*;
use svcnet_netpol::matrix::Matrix;

/// Runs cases `range` of the suite in one topology.
async fn run_cases(tag: &str, subnet: u8, pick: impl Fn(usize) -> bool) -> Result<()> {
    let mut topo = Topology::new(tag, subnet, false).await?;
    let env = topo.env.clone();
    let mut failures = Vec::new();
    let mut ran = 0;
    let (mut denied_seen, mut allowed_seen) = (0usize, 0usize);
    for (i, case) in cases(&env).into_iter().enumerate().filter(|(i, _)| pick(*i)) {
        for (s, step) in case.steps.iter().enumerate() {
            topo.change(&step.changes).await?;
            topo.wait_applied().await?;
            let predicted = Matrix::compute(&env.cluster(&topo.state), &[], &ports());
            let mut observed = topo.probe_all(&ports());
            // A probe can be lost (a dropped datagram looks like a denial); re-probe differing
            // cells a few times before calling it a failure.
            for _ in 0..3 {
                if diff_off_diagonal(&observed.0, &predicted).is_empty() && diff_off_diagonal(&observed.1, &predicted).is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                observed = topo.probe_all(&ports());
            }
            for (how, m) in [("pod IP", &observed.0), ("Service", &observed.1)] {
                for p in &m.allowed {
                    for (f, row) in p.iter().enumerate() {
                        for (t, ok) in row.iter().enumerate() {
                            if f != t {
                                if *ok { allowed_seen += 1 } else { denied_seen += 1 }
                            }
                        }
                    }
                }
                let diff = diff_off_diagonal(m, &predicted);
                if !diff.is_empty() {
                    failures.push(format!("case {i} {:?} step {s}, via {how}: observed vs predicted:\n  {}\n{}", case.name, diff.join("\n  "), m.to_text()));
                }
            }
            if let Err(e) = topo.check_kernel_table(false).await {
                failures.push(format!("case {i} {:?} step {s}: {e:#}", case.name));
            }
            ran += 1;
        }
        topo.reset().await?;
    }
    if !failures.is_empty() {
        bail!("{} of {ran} steps differ:\n{}", failures.len(), failures.join("\n"));
    }
    // The probes saw both outcomes, so they can tell enforcement from its absence.
    assert!(denied_seen > 0 && allowed_seen > 0, "denied {denied_seen}, allowed {allowed_seen}");
    eprintln!("{ran} steps: observed = predicted ({allowed_seen} cells allowed, {denied_seen} denied)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_cases_part_1() -> Result<()> {
    run_cases("e1", 101, |i| i % 4 == 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_cases_part_2() -> Result<()> {
    run_cases("e2", 102, |i| i % 4 == 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_cases_part_3() -> Result<()> {
    run_cases("e3", 103, |i| i % 4 == 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_cases_part_4() -> Result<()> {
    run_cases("e4", 104, |i| i % 4 == 3).await
}

/// The node itself reaches isolated pods (probes); drops are counted per pod and logged with the
/// isolating policy; the counters render for `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_reaches_isolated_pods_and_drops_are_counted() -> Result<()> {
    use support::topo::probe;
    use svcnet_netpol::PortProtocol;
    let mut topo = Topology::new("nd", 105, true).await?;
    let deny = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "x"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
    topo.change(&[Change::Apply(deny)]).await?;
    topo.wait_applied().await?;
    let tcp80 = PortProtocol::parse("80/TCP")?;
    let xa = topo.pod(&key("x/a")).ip;
    assert_eq!(probe(&topo.node, xa, tcp80).as_deref(), Some("x/a"), "the node must reach an isolated pod");
    assert_eq!(probe(&topo.pod(&key("y/a")).ns, xa, tcp80), None, "y/a must not reach x/a");
    assert_eq!(probe(&topo.pod(&key("x/a")).ns, topo.pod(&key("y/b")).ip, PortProtocol::parse("81/UDP")?), None, "x/a egress is denied");
    let counters = svcnet_netpol::metrics::read_drop_counters(Some(topo.node.name())).await?;
    let get = |dir: svcnet_netpol::Direction, pod: &str| counters.iter().find(|c| c.direction == dir && c.namespace == "x" && c.pod == pod).map(|c| c.packets);
    assert!(get(svcnet_netpol::Direction::Ingress, "a").unwrap_or(0) >= 1, "{counters:?}");
    assert!(get(svcnet_netpol::Direction::Egress, "a").unwrap_or(0) >= 1, "{counters:?}");
    assert_eq!(get(svcnet_netpol::Direction::Ingress, "b"), Some(0), "{counters:?}");
    let text = svcnet_netpol::metrics::render(&counters);
    assert!(text.contains("svcnet_netpol_dropped_packets_total{direction=\"ingress\",namespace=\"x\",pod=\"a\"}"), "{text}");
    let rules = svcnet_netpol::runner::nft_command(Some(topo.node.name()), &["list", "chain", "inet", "svcnet-netpol", "in_x_a"], None).await?;
    assert!(rules.contains("log prefix \"netpol drop in x/a [deny-all]: \""), "{rules}");
    // The comparison with a fresh full load sees a stray element.
    topo.check_kernel_table(true).await?;
    svcnet_netpol::runner::nft_apply(Some(topo.node.name()), "add element inet svcnet-netpol ingress_pods { 10.244.105.99 : accept }\n").await?;
    assert!(topo.check_kernel_table(true).await.is_err(), "a stray element must make the tables differ");
    Ok(())
}

/// Connections that exist when a policy starts denying them go on (conntrack: replies and
/// established flows are accepted first); new ones are denied; deleting the policy restores new
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn established_connections_survive_a_new_policy() -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use support::topo::probe;
    use svcnet_netpol::PortProtocol;
    let mut topo = Topology::new("ec", 106, false).await?;
    // An echo server on 82 in x/a.
    let listener = topo.pod(&key("x/a")).ns.run_in(|| std::net::TcpListener::bind("0.0.0.0:82"))??;
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            let mut w = s.try_clone().expect("clone");
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                let _ = writeln!(w, "echo {line}");
            }
        }
    });
    let xa = topo.pod(&key("x/a")).ip;
    let stream = topo.pod(&key("y/a")).ns.run_in(move || std::net::TcpStream::connect((xa, 82)))??;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut exchange = |msg: &str| -> Result<String> {
        writeln!(&stream, "{msg}")?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        Ok(line.trim().to_owned())
    };
    assert_eq!(exchange("one")?, "echo one");
    let deny = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-ingress", "namespace": "x"}, "spec": {"podSelector": {}}});
    topo.change(&[Change::Apply(deny)]).await?;
    topo.wait_applied().await?;
    assert_eq!(exchange("two")?, "echo two", "an established connection goes on");
    let tcp80 = PortProtocol::parse("80/TCP")?;
    assert_eq!(probe(&topo.pod(&key("y/a")).ns, xa, tcp80), None, "a new connection is denied");
    topo.change(&[Change::Delete { namespace: "x".into(), name: "deny-ingress".into() }]).await?;
    topo.wait_applied().await?;
    assert_eq!(probe(&topo.pod(&key("y/a")).ns, xa, tcp80).as_deref(), Some("x/a"), "deletion restores connectivity");
    Ok(())
}

/// Traffic to a Service is judged after the proxy's DNAT, on the pod IP and target port: x/a's
/// own Service (ClusterIP port 8080 -> 80, programmed by `svcnet-proxy`) is reached from y, which
/// a policy admits on port 80, and not from z; a policy naming the Service port admits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn judged_after_service_dnat() -> Result<()> {
    use support::topo::probe;
    use svcnet_netpol::PortProtocol;
    let mut topo = Topology::new("sv", 107, false).await?;
    let cluster_ip = topo.pod(&key("x/a")).service_ip;
    let svc = PortProtocol::parse("8080/TCP")?;
    assert_eq!(probe(&topo.pod(&key("z/a")).ns, cluster_ip, svc).as_deref(), Some("x/a"), "the Service works before any policy");
    // Allow y on the target port 80 only: y reaches the Service, z does not.
    let allow = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "y-on-80", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 80}]}]}});
    topo.change(&[Change::Apply(allow)]).await?;
    topo.wait_applied().await?;
    assert_eq!(probe(&topo.pod(&key("y/b")).ns, cluster_ip, svc).as_deref(), Some("x/a"));
    assert_eq!(probe(&topo.pod(&key("z/a")).ns, cluster_ip, svc), None);
    // A policy naming the Service port (8080) instead of the target port allows nothing.
    let wrong = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "y-on-80", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 8080}]}]}});
    topo.change(&[Change::Apply(wrong)]).await?;
    topo.wait_applied().await?;
    assert_eq!(probe(&topo.pod(&key("y/b")).ns, cluster_ip, svc), None);
    topo.check_kernel_table(false).await?;
    Ok(())
}
