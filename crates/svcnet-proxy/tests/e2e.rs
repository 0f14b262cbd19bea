//! End-to-end: the proxy (`svcnet_proxy::run`) against an in-process API server, programming a
//! real kernel in network namespaces this test builds (see `common`). Run as root.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use common::*;
use serde_json::json;

/// A ClusterIP reached from a pod goes to all three backends, on two nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_spreads_over_three_backends() -> Result<()> {
    let mut topology = Topology::new("cip", 2)?;
    let cluster = Cluster::start().await?;
    for (node, host) in [(1, 10), (1, 11), (2, 10), (1, 50)] {
        topology.add_pod(node, host)?;
    }
    let _servers = [
        tcp_server(&topology.pod(1, 10).ns, sa([0, 0, 0, 0], 8080), "a")?,
        tcp_server(&topology.pod(1, 11).ns, sa([0, 0, 0, 0], 8080), "b")?,
        tcp_server(&topology.pod(2, 10).ns, sa([0, 0, 0, 0], 8080), "c")?,
    ];
    let service = cluster.create_service(json!({"metadata": {"name": "backend"}, "spec": {"ports": [{"port": 8000, "protocol": "TCP"}]}})).await?;
    let vip = cluster_ip(&service);
    cluster
        .put_slice(
            "backend-1",
            "backend",
            json!([{"port": 8080, "protocol": "TCP"}]),
            json!([
                {"addresses": ["10.244.1.10"], "nodeName": "node-1"},
                {"addresses": ["10.244.1.11"], "nodeName": "node-1"},
                {"addresses": ["10.244.2.10"], "nodeName": "node-2"},
            ]),
        )
        .await?;
    let mut config = topology.proxy_config(1);
    config.metrics_addr = Some(sa([127, 0, 0, 1], 10249));
    let _proxy1 = ProxyGuard::start(&cluster.client, config);
    let _proxy2 = ProxyGuard::start(&cluster.client, topology.proxy_config(2));
    let client = &topology.pod(1, 50).ns;
    let mut seen = BTreeMap::new();
    eventually("replies from a, b and c", WAIT, || {
        let outcome = connect(client, sa(vip, 8000));
        if let Some(name) = reply_name(&outcome) {
            *seen.entry(name.to_owned()).or_insert(0) += 1;
        }
        if seen.len() == 3 { Ok(()) } else { Err(format!("{outcome:?}, seen {seen:?}")) }
    })
    .await?;
    // And from the pod's own source address (no masquerade inside the cluster).
    let outcome = connect(client, sa(vip, 8000));
    assert_eq!(reply_peer(&outcome), Some("10.244.1.50"), "{outcome:?}");
    // Metrics and health, served inside the node's namespace.
    let node = &topology.node(1).ns;
    let (status, _, body) = eventually("/metrics", WAIT, || http_get(node, sa([127, 0, 0, 1], 10249), "/metrics")).await?;
    assert_eq!(status, 200);
    assert!(body.contains("kubeproxy_sync_proxy_rules_duration_seconds_count{kind=\"full\"} 1"), "{body}");
    assert!(body.contains("kubeproxy_network_programming_duration_seconds_count"), "{body}");
    assert_eq!(http_get(node, sa([127, 0, 0, 1], 10249), "/healthz").map(|(s, ..)| s), Ok(200));
    Ok(())
}

/// A NodePort reached from a client outside the nodes (a namespace on the node network) lands
/// on local and remote endpoints alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_port_from_outside_the_node() -> Result<()> {
    let f = fixture("np", 2, 8080).await?;
    let service =
        f.cluster.create_service(json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}})).await?;
    let node_port = node_port(&service, 0);
    f.cluster.put_slice("web-1", "web", tcp_port(8080), abc()).await?;
    for node in [1, 2] {
        let to = sa(f.topology.node(node).ip, node_port);
        let mut seen = BTreeMap::new();
        eventually(&format!("all three backends through node-{node}"), WAIT, || {
            let outcome = connect(&f.topology.client, to);
            *seen.entry(reply_name(&outcome).unwrap_or("<failed>").to_owned()).or_insert(0) += 1;
            if ["a", "b", "c"].iter().all(|n| seen.contains_key(*n)) { Ok(()) } else { Err(format!("{outcome:?} {seen:?}")) }
        })
        .await?;
    }
    // Not on loopback.
    let node = &f.topology.node(1).ns;
    assert_ne!(reply_name(&connect(node, sa([127, 0, 0, 1], node_port))), Some("a"));
    Ok(())
}

/// No endpoints: connection refused at once (from a pod to the ClusterIP, and from outside to
/// the NodePort), not a timeout. An endpoint appearing makes it work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoints_refuses_connections() -> Result<()> {
    let f = fixture("rej", 2, 8080).await?;
    let service =
        f.cluster.create_service(json!({"metadata": {"name": "gone"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}})).await?;
    let vip = cluster_ip(&service);
    let node_port = node_port(&service, 0);
    let pod = &f.topology.pod(1, 50).ns;
    until_refused("refused from a pod", pod, sa(vip, 80)).await?;
    let started = std::time::Instant::now();
    assert_eq!(connect(&f.topology.client, sa(f.topology.node(1).ip, node_port)), Outcome::Refused);
    assert!(started.elapsed() < Duration::from_millis(1500), "refused only after {:?}", started.elapsed());
    f.cluster.put_slice("gone-1", "gone", tcp_port(8080), json!([endpoint("10.244.2.10", "node-2")])).await?;
    let seen = names(pod, sa(vip, 80), 5).await?;
    assert_eq!(seen, BTreeMap::from([("c".to_owned(), 5)]));
    Ok(())
}

/// `sessionAffinity: ClientIP`: one client always reaches the same backend; when that backend
/// leaves, it moves to another and stays there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_client_ip() -> Result<()> {
    let f = fixture("aff", 2, 8080).await?;
    let service = f
        .cluster
        .create_service(json!({"metadata": {"name": "sticky"}, "spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80, "protocol": "TCP"}]}}))
        .await?;
    let vip = cluster_ip(&service);
    f.cluster.put_slice("sticky-1", "sticky", tcp_port(8080), abc()).await?;
    let pod = &f.topology.pod(1, 50).ns;
    let seen = names(pod, sa(vip, 80), 20).await?;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let first = seen.keys().next().unwrap().clone();
    let remaining: Vec<serde_json::Value> = [("a", "10.244.1.10", "node-1"), ("b", "10.244.1.11", "node-1"), ("c", "10.244.2.10", "node-2")]
        .iter()
        .filter(|(name, ..)| *name != first)
        .map(|(_, ip, node)| endpoint(ip, node))
        .collect();
    f.cluster.put_slice("sticky-1", "sticky", tcp_port(8080), json!(remaining)).await?;
    eventually("moved off the removed backend", WAIT, || {
        let outcome = connect(pod, sa(vip, 80));
        match reply_name(&outcome) {
            Some(name) if name != first => Ok(()),
            _ => Err(format!("{outcome:?}")),
        }
    })
    .await?;
    let seen = names(pod, sa(vip, 80), 20).await?;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen.contains_key(&first), "{seen:?}");
    Ok(())
}

/// `externalTrafficPolicy: Local`: each node sends NodePort traffic only to its own endpoints,
/// the server sees the client's own address, and the health-check NodePort says how many local
/// endpoints there are (503 where there are none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_traffic_policy_local_keeps_client_ip() -> Result<()> {
    let mut f = fixture("etp", 2, 8080).await?;
    f.topology.add_nodes_api(&f.cluster).await?;
    let service = f
        .cluster
        .create_service(json!({"metadata": {"name": "local"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "protocol": "TCP"}]}}))
        .await?;
    let spec = service.spec.as_ref().unwrap();
    let node_port = node_port(&service, 0);
    let health_port = spec.health_check_node_port.expect("allocated for Local LoadBalancers") as u16;
    // a and b on node-1, c on node-2; a third node would have none.
    f.cluster.put_slice("local-1", "local", tcp_port(8080), abc()).await?;
    let client = &f.topology.client;
    let through = |node: u8| sa(f.topology.node(node).ip, node_port);
    let seen = names(client, through(2), 10).await?;
    assert_eq!(seen, BTreeMap::from([("c".to_owned(), 10)]));
    let outcome = connect(client, through(2));
    assert_eq!(reply_peer(&outcome), Some("172.30.0.100"), "client address kept: {outcome:?}");
    let seen = names(client, through(1), 20).await?;
    assert!(!seen.contains_key("c"), "{seen:?}");
    let outcome = connect(client, through(1));
    assert_eq!(reply_peer(&outcome), Some("172.30.0.100"), "client address kept: {outcome:?}");

    let health = |node: u8| http_get(client, sa(f.topology.node(node).ip, health_port), "/healthz").map(|(status, _, body)| (status, body));
    let (status, body) = eventually("health check on node-1", WAIT, || health(1)).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"localEndpoints\":2"), "{body}");
    // Only c left, on node-2: node-1 has none and says so; its NodePort drops.
    f.cluster.put_slice("local-1", "local", tcp_port(8080), json!([endpoint("10.244.2.10", "node-2")])).await?;
    let (status, body) = eventually("node-1 unhealthy", WAIT, || match health(1) {
        Ok((503, body)) => Ok((503, body)),
        other => Err(format!("{other:?}")),
    })
    .await?;
    assert!(body.contains("\"localEndpoints\":0"), "{status} {body}");
    assert!(matches!(connect(client, through(1)), Outcome::Failed(_)), "dropped, not refused");
    Ok(())
}

/// Terminating-endpoint fallback: with no ready endpoint, serving-but-terminating ones get the
/// traffic (and not the non-serving one); a ready endpoint takes over again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_endpoints_serve_when_none_is_ready() -> Result<()> {
    let f = fixture("term", 2, 8080).await?;
    let service = f.cluster.create_service(json!({"metadata": {"name": "rolling"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})).await?;
    let vip = cluster_ip(&service);
    let terminating =
        |ip: &str, serving: bool| json!({"addresses": [ip], "nodeName": "node-1", "conditions": {"ready": false, "serving": serving, "terminating": true}});
    f.cluster.put_slice("rolling-1", "rolling", tcp_port(8080), json!([terminating("10.244.1.10", true), terminating("10.244.1.11", false)])).await?;
    let pod = &f.topology.pod(1, 50).ns;
    assert_eq!(names(pod, sa(vip, 80), 10).await?, BTreeMap::from([("a".to_owned(), 10)]));
    f.cluster
        .put_slice(
            "rolling-1",
            "rolling",
            tcp_port(8080),
            json!([terminating("10.244.1.10", true), terminating("10.244.1.11", false), endpoint("10.244.2.10", "node-2")]),
        )
        .await?;
    eventually("the ready endpoint takes over", WAIT, || match reply_name(&connect(pod, sa(vip, 80))) {
        Some("c") => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    assert_eq!(names(pod, sa(vip, 80), 10).await?, BTreeMap::from([("c".to_owned(), 10)]));
    Ok(())
}

/// Hairpin: a pod reaching its own Service lands on itself, masqueraded to the node's address
/// on the pod bridge (otherwise its reply would skip the node's conntrack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hairpin_to_own_service() -> Result<()> {
    let f = fixture("hp", 2, 8080).await?;
    let service = f.cluster.create_service(json!({"metadata": {"name": "self"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})).await?;
    let vip = cluster_ip(&service);
    f.cluster.put_slice("self-1", "self", tcp_port(8080), json!([endpoint("10.244.1.10", "node-1")])).await?;
    let me = &f.topology.pod(1, 10).ns;
    let outcome = first_reply("hairpin reply", me, sa(vip, 80)).await?;
    assert_eq!(reply_name(&outcome), Some("a"));
    assert_eq!(reply_peer(&outcome), Some("10.244.1.1"), "{outcome:?}");
    Ok(())
}

/// A UDP client keeps sending from one source port while its server pod is replaced by one
/// with another address: its flow moves to the new server (the stale conntrack entry is
/// deleted; with kube-proxy bugs #19029/#125467 it would keep going to the old address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_server_replaced_without_stale_conntrack() -> Result<()> {
    let mut f = UdpFixture::start("udp").await?;
    let client = UdpClient::new(&f.topology.pod(1, 50).ns, 40053)?;
    eventually("the old server answers", WAIT, || client.ask(f.vip).filter(|r| r == "old").ok_or_else(|| "no answer".to_string())).await?;
    // Replace the pod: the old one stops, a new one with another address starts.
    drop(f.old.take());
    let _new_server = udp_server(&f.topology.pod(1, 11).ns, sa([0, 0, 0, 0], 5353), "new")?;
    f.put_endpoints(json!([endpoint("10.244.1.11", "node-1")])).await?;
    eventually("the same flow reaches the new server", WAIT, || client.ask(f.vip).filter(|r| r == "new").ok_or_else(|| "no answer".to_string())).await?;
    let entries = exec(f.topology.node(1).ns.name(), &["conntrack", "-L", "-p", "udp", "--orig-port-src", "40053"])?;
    assert!(!entries.contains("src=10.244.1.10"), "stale entry left: {entries}");
    Ok(())
}

/// Changing one Service's endpoints again and again never interrupts another Service, and the
/// table is updated in place (same chain handles: nothing flushed or rebuilt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_updates_leave_other_services_alone() -> Result<()> {
    let f = fixture("inc", 2, 8080).await?;
    let steady = f.cluster.create_service(json!({"metadata": {"name": "steady"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})).await?;
    let churn = f.cluster.create_service(json!({"metadata": {"name": "churn"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})).await?;
    f.cluster.put_slice("steady-1", "steady", tcp_port(8080), json!([endpoint("10.244.2.10", "node-2")])).await?;
    f.cluster.put_slice("churn-1", "churn", tcp_port(8080), json!([endpoint("10.244.1.10", "node-1")])).await?;
    let pod = &f.topology.pod(1, 50).ns;
    names(pod, sa(cluster_ip(&steady), 80), 1).await?;
    names(pod, sa(cluster_ip(&churn), 80), 1).await?;
    let node = f.topology.node(1).ns.name().to_owned();
    let handles = |ns: &str| -> Result<Vec<String>> {
        let listing = exec(ns, &["nft", "-a", "list", "table", "inet", "svcnet-proxy"])?;
        Ok(listing.lines().filter(|l| l.trim_start().starts_with("chain ") || l.starts_with("table")).map(str::to_owned).collect())
    };
    let before = handles(&node)?;
    for round in 0..10 {
        let ip = if round % 2 == 0 { "10.244.1.11" } else { "10.244.1.10" };
        f.cluster.put_slice("churn-1", "churn", tcp_port(8080), json!([endpoint(ip, "node-1")])).await?;
        let outcome = connect(pod, sa(cluster_ip(&steady), 80));
        assert_eq!(reply_name(&outcome), Some("c"), "round {round}: {outcome:?}");
    }
    eventually("churn settled on a", WAIT, || match reply_name(&connect(pod, sa(cluster_ip(&churn), 80))) {
        Some("a") => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    assert_eq!(handles(&node)?, before);
    Ok(())
}

/// LoadBalancer IP on the node network: exactly one node holds it (answers ARP), a client on
/// the node network reaches the Service through it; when that Node goes away the other node
/// takes over, and the client reaches the Service again; a proxy that stops releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_ip_fails_over() -> Result<()> {
    let mut f = fixture("lbf", 2, 8080).await?;
    f.topology.add_nodes_api(&f.cluster).await?;
    f.cluster.create_service(json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})).await?;
    f.cluster.put_slice("lb-1", "lb", tcp_port(8080), abc()).await?;
    f.cluster.patch_service_status("lb", json!({"loadBalancer": {"ingress": [{"ip": "172.30.255.1"}]}})).await?;
    let lb_ip: IpAddr = "172.30.255.1".parse()?;
    let holders = |topology: &Topology| -> Vec<String> {
        topology
            .nodes
            .iter()
            .filter(|n| exec(n.ns.name(), &["ip", "-o", "addr", "show", "dev", "eth0"]).unwrap_or_default().contains("172.30.255.1/32"))
            .map(|n| n.name.clone())
            .collect()
    };
    let owner = eventually("one node holds the address", WAIT, || match holders(&f.topology).as_slice() {
        [one] => Ok(one.clone()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    let seen = names(&f.topology.client, sa(lb_ip, 80), 10).await?;
    assert!(!seen.contains_key("<failed>"), "{seen:?}");

    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(f.cluster.client.clone());
    nodes.delete(&owner, &Default::default()).await?;
    let new_owner = eventually("the other node takes over", WAIT, || match holders(&f.topology).as_slice() {
        [one] if *one != owner => Ok(one.clone()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    assert_ne!(new_owner, owner);
    let seen = names(&f.topology.client, sa(lb_ip, 80), 10).await?;
    assert!(!seen.contains_key("<failed>"), "{seen:?}");
    let neighbours = exec(f.topology.client.name(), &["ip", "neigh", "show", "172.30.255.1"])?;
    let new_owner_mac = exec(f.topology.nodes.iter().find(|n| n.name == new_owner).unwrap().ns.name(), &["cat", "/sys/class/net/eth0/address"])?;
    assert!(neighbours.contains(new_owner_mac.trim()), "{neighbours} vs {new_owner_mac}");

    // A proxy that stops releases what it holds (another node's proxy would take it over).
    f.proxies.clear();
    eventually("no node holds the address once the proxies stopped", WAIT, || match holders(&f.topology).as_slice() {
        [] => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    Ok(())
}
