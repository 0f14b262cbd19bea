//! End-to-end, the behaviours `e2e.rs` does not cover: LoadBalancer IPs and `externalIPs` from
//! outside, the health-check NodePort, `internalTrafficPolicy: Local`,
//! `loadBalancerSourceRanges`, TCP/UDP/SCTP, several ports with named target ports, the Services
//! the proxy must skip, masquerade where a reply would bypass the node, session-affinity
//! timeouts, UDP conntrack around terminating endpoints and early flows, IPv6, and changes under
//! continuous load (rolling updates, scaling, type changes, a proxy restart) counted to zero
//! failed connections. Same harness as `e2e.rs` (`common`, plus `common/traffic.rs`): an
//! in-process API server, the real proxy programming nftables in namespaces the test builds, real
//! traffic. Run as root.
//!
//! Address plan (each test has its own node network, so ranges only need to be distinct within
//! a test): node network 172.30.0.0/16 (client .100, second client .101, nodes .2-.4), pods
//! 10.244.N.0/24, LoadBalancer IPs 172.30.254.0/24, `externalIPs` 203.0.113.0/24 (routed by the
//! client to node-1); IPv6: node network fd00:30::/64, pods fd00:244:N::/64, external IPs
//! fd00:203::/64. Namespace tags start with `b` (e2e.rs uses others).

mod common;
#[path = "common/traffic.rs"]
mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::*;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use svcnet_netns::NetNs;
use traffic::*;

const CLIENT: &str = "172.30.0.100";

/// An endpoint whose pod is being deleted but still serves (as the EndpointSlice controller
/// writes it during a graceful shutdown).
fn terminating(ip: &str, node: &str) -> serde_json::Value {
    json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": false, "serving": true, "terminating": true}})
}

async fn patch_service(cluster: &Cluster, name: &str, patch: serde_json::Value) -> Result<()> {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), "default");
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}

/// A connection that got no answer at all (dropped), as opposed to refused or unreachable.
fn dropped(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(error) if error.contains("timed out"))
}

/// Connects through `to` until every name in `want` has answered; fails on any other answer.
async fn reaches_exactly(ns: &NetNs, to: SocketAddr, want: &[&str]) -> Result<()> {
    let mut seen = BTreeSet::new();
    eventually(&format!("{want:?} through {to} from {}", ns.name()), WAIT, || {
        let outcome = connect(ns, to);
        if let Some(name) = reply_name(&outcome) {
            seen.insert(name.to_owned());
        }
        if want.iter().all(|w| seen.contains(*w)) { Ok(()) } else { Err(format!("{outcome:?}, seen {seen:?}")) }
    })
    .await?;
    ensure!(seen.iter().all(|s| want.contains(&s.as_str())), "through {to}: {seen:?}, only {want:?} expected");
    Ok(())
}

async fn until_dropped(ns: &NetNs, to: SocketAddr) -> Result<()> {
    eventually(&format!("{to} dropped from {}", ns.name()), WAIT, || match connect(ns, to) {
        outcome if dropped(&outcome) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await
}

/// A LoadBalancer ingress IP (held by one node, answered over ARP) and `externalIPs` (routed to
/// node-1 by the client) reach the Service from outside the nodes, on the Service port only;
/// pods reach the external IPs too; an external IP taken off the Service stops working; a
/// changed ingress IP moves, and a deleted Service's is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_ip_and_external_ips_from_outside() -> Result<()> {
    let mut f = fixture("bxip", 2, 8080).await?;
    f.topology.add_nodes_api(&f.cluster).await?;
    let client = &f.topology.client;
    ip(client.name(), &format!("route add 203.0.113.0/24 via {}", f.topology.node(1).ip))?;
    f.cluster
        .create_service(
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "externalIPs": ["203.0.113.7"], "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await?;
    f.cluster
        .create_service(json!({"metadata": {"name": "ext"}, "spec": {"externalIPs": ["203.0.113.8"], "ports": [{"port": 81, "targetPort": 8080}]}}))
        .await?;
    f.cluster.put_slice("lb-1", "lb", tcp_port(8080), abc()).await?;
    f.cluster.put_slice("ext-1", "ext", tcp_port(8080), json!([endpoint("10.244.2.10", "node-2")])).await?;
    f.cluster.patch_service_status("lb", json!({"loadBalancer": {"ingress": [{"ip": "172.30.254.1"}]}})).await?;

    reaches_exactly(client, sa([203, 0, 113, 7], 80), &["a", "b", "c"]).await?;
    reaches_exactly(client, sa([172, 30, 254, 1], 80), &["a", "b", "c"]).await?;
    reaches_exactly(client, sa([203, 0, 113, 8], 81), &["c"]).await?;
    // externalTrafficPolicy Cluster: masqueraded, so the reply comes back through the node.
    let outcome = connect(client, sa([203, 0, 113, 7], 80));
    assert!(reply_peer(&outcome).is_some_and(|peer| peer != CLIENT), "{outcome:?}");
    // Only the Service's port is DNATed on an external IP.
    assert!(reply_name(&connect(client, sa([203, 0, 113, 8], 80))).is_none());
    // Pods reach external IPs through their node's rules too.
    reaches_exactly(&f.topology.pod(1, 50).ns, sa([203, 0, 113, 8], 81), &["c"]).await?;

    patch_service(&f.cluster, "ext", json!({"spec": {"externalIPs": ["203.0.113.9"]}})).await?;
    eventually("203.0.113.8 no longer served", WAIT, || match connect(client, sa([203, 0, 113, 8], 81)) {
        Outcome::Reply(reply) => Err(reply),
        _ => Ok(()),
    })
    .await?;
    reaches_exactly(client, sa([203, 0, 113, 9], 81), &["c"]).await?;

    // A new ingress IP replaces the old one on the nodes; deleting the Service releases it.
    let holders = |address: &str| -> Vec<String> {
        let holds = |n: &TestNode| exec(n.ns.name(), &["ip", "-o", "addr", "show", "dev", "eth0"]).unwrap_or_default().contains(&format!("{address}/32"));
        f.topology.nodes.iter().filter(|n| holds(n)).map(|n| n.name.clone()).collect()
    };
    f.cluster.patch_service_status("lb", json!({"loadBalancer": {"ingress": [{"ip": "172.30.254.5"}]}})).await?;
    eventually("the new address held by one node, the old by none", WAIT, || match (holders("172.30.254.1").len(), holders("172.30.254.5").len()) {
        (0, 1) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    reaches_exactly(client, sa([172, 30, 254, 5], 80), &["a", "b", "c"]).await?;
    Api::<Service>::namespaced(f.cluster.client.clone(), "default").delete("lb", &DeleteParams::default()).await?;
    eventually("the address released", WAIT, || if holders("172.30.254.5").is_empty() { Ok(()) } else { Err("still held".to_string()) }).await?;
    Ok(())
}

/// `healthCheckNodePort` as kube-proxy serves it: on every node, 200 with the number of local
/// *ready* endpoints (distinct addresses over all ports and slices) or 503 with 0, a JSON body
/// naming the Service; a node with only terminating local endpoints says 503 while it still
/// sends traffic to them; with `externalTrafficPolicy: Local` a node without local endpoints
/// drops NodePort traffic (no refusal, so a load balancer's retry goes elsewhere). The port
/// closes when the Service goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_node_port_and_local_policy() -> Result<()> {
    let mut f = fixture("bhc", 3, 8080).await?;
    f.topology.add_nodes_api(&f.cluster).await?;
    let service = f
        .cluster
        .create_service(json!({"metadata": {"name": "hc"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [
            {"name": "web", "port": 80, "targetPort": 8080},
            {"name": "alt", "port": 81, "targetPort": 8081},
        ]}}))
        .await?;
    let web = node_port(&service, 0);
    let health_port = service.spec.as_ref().and_then(|s| s.health_check_node_port).expect("allocated") as u16;
    let web_port = json!([{"name": "web", "port": 8080}]);
    let alt_port = json!([{"name": "alt", "port": 8081}]);
    // node-1: a (web) and b (alt) = 2 addresses; node-2: c, listed in three slices = 1; node-3: none.
    let put = |c: serde_json::Value| {
        let (cluster, web_port, alt_port) = (&f.cluster, web_port.clone(), alt_port.clone());
        async move {
            cluster.put_slice("hc-1", "hc", web_port.clone(), json!([endpoint("10.244.1.10", "node-1"), c.clone()])).await?;
            cluster.put_slice("hc-2", "hc", alt_port, json!([endpoint("10.244.1.11", "node-1"), c.clone()])).await?;
            cluster.put_slice("hc-3", "hc", web_port, json!([c])).await
        }
    };
    put(endpoint("10.244.2.10", "node-2")).await?;
    let client = &f.topology.client;
    let health = |node: u8| http_get(client, sa(f.topology.node(node).ip, health_port), "/");
    for (node, status, count) in [(1, 200, 2), (2, 200, 1), (3, 503, 0)] {
        let (got, head, body) = eventually(&format!("node-{node} health {status} with {count}"), WAIT, || match health(node) {
            Ok((got, head, body)) if got == status && body.contains(&format!("\"localEndpoints\":{count}")) => Ok((got, head, body)),
            other => Err(format!("{other:?}")),
        })
        .await?;
        assert_eq!(got, status);
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
        assert_eq!(body, json!({"service": {"namespace": "default", "name": "hc"}, "localEndpoints": count, "serviceProxyHealthy": true}));
    }
    // Any path answers (load balancers probe "/" or "/healthz").
    assert_eq!(http_get(client, sa(f.topology.node(1).ip, health_port), "/healthz").map(|r| r.0), Ok(200));

    let through = |node: u8| sa(f.topology.node(node).ip, web);
    reaches_exactly(client, through(1), &["a"]).await?;
    reaches_exactly(client, through(2), &["c"]).await?;
    assert_eq!(reply_peer(&connect(client, through(2))), Some(CLIENT), "client address kept");
    let outcome = connect(client, through(3));
    assert!(dropped(&outcome), "node-3 has no local endpoint: dropped, not {outcome:?}");

    // c terminating: node-2 reports unhealthy but keeps serving its terminating endpoint.
    put(terminating("10.244.2.10", "node-2")).await?;
    eventually("node-2 unhealthy", WAIT, || match health(2) {
        Ok((503, _, body)) if body.contains("\"localEndpoints\":0") => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    reaches_exactly(client, through(2), &["c"]).await?;

    let services: Api<Service> = Api::namespaced(f.cluster.client.clone(), "default");
    services.delete("hc", &DeleteParams::default()).await?;
    eventually("health port closed", WAIT, || match health(1) {
        Err(error) if error.contains("refused") => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    Ok(())
}

/// `internalTrafficPolicy: Local`: ClusterIP traffic goes only to endpoints on the client's own
/// node, and is dropped on a node that has none (while NodePort traffic, under the external
/// policy, still goes anywhere); back to `Cluster`, every node reaches every endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_traffic_policy_local() -> Result<()> {
    let mut f = fixture("bitp", 3, 8080).await?;
    f.topology.add_pod(2, 50)?;
    f.topology.add_pod(3, 50)?;
    let service = f
        .cluster
        .create_service(
            json!({"metadata": {"name": "itp"}, "spec": {"type": "NodePort", "internalTrafficPolicy": "Local", "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await?;
    let vip = cluster_ip(&service);
    f.cluster.put_slice("itp-1", "itp", tcp_port(8080), abc()).await?;
    let pod = |node: u8| &f.topology.pod(node, 50).ns;
    reaches_exactly(pod(1), sa(vip, 80), &["a", "b"]).await?;
    reaches_exactly(pod(2), sa(vip, 80), &["c"]).await?;
    until_dropped(pod(3), sa(vip, 80)).await?;
    reaches_exactly(&f.topology.client, sa(f.topology.node(3).ip, node_port(&service, 0)), &["a", "b", "c"]).await?;

    f.cluster.put_slice("itp-1", "itp", tcp_port(8080), json!([endpoint("10.244.1.10", "node-1"), endpoint("10.244.1.11", "node-1")])).await?;
    until_dropped(pod(2), sa(vip, 80)).await?;
    reaches_exactly(pod(1), sa(vip, 80), &["a", "b"]).await?;

    patch_service(&f.cluster, "itp", json!({"spec": {"internalTrafficPolicy": "Cluster"}})).await?;
    reaches_exactly(pod(3), sa(vip, 80), &["a", "b"]).await?;
    reaches_exactly(pod(2), sa(vip, 80), &["a", "b"]).await?;
    Ok(())
}

/// `loadBalancerSourceRanges`: a client inside a range reaches the LoadBalancer IP, another is
/// dropped; ranges change in place; as upstream, they guard the LoadBalancer IP, not the NodePort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_source_ranges() -> Result<()> {
    let mut f = fixture("bsrc", 2, 8080).await?;
    f.topology.add_nodes_api(&f.cluster).await?;
    let other = add_lan_client(&f.topology, "c2", Ipv4Addr::new(172, 30, 0, 101))?;
    let service = f
        .cluster
        .create_service(json!({"metadata": {"name": "fw"}, "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["172.30.0.100/32"], "ports": [{"port": 80, "targetPort": 8080}]}}))
        .await?;
    f.cluster.put_slice("fw-1", "fw", tcp_port(8080), abc()).await?;
    f.cluster.patch_service_status("fw", json!({"loadBalancer": {"ingress": [{"ip": "172.30.254.2"}]}})).await?;
    let lb = sa([172, 30, 254, 2], 80);
    let client = &f.topology.client;
    reaches_exactly(client, lb, &["a", "b", "c"]).await?;
    let outcome = connect(&other, lb);
    assert!(dropped(&outcome), "172.30.0.101 is outside the ranges: {outcome:?}");
    reaches_exactly(&other, sa(f.topology.node(1).ip, node_port(&service, 0)), &["a", "b", "c"]).await?;

    patch_service(&f.cluster, "fw", json!({"spec": {"loadBalancerSourceRanges": ["172.30.0.100/32", "172.30.0.100/30"]}})).await?;
    reaches_exactly(&other, lb, &["a", "b", "c"]).await?;
    patch_service(&f.cluster, "fw", json!({"spec": {"loadBalancerSourceRanges": ["10.0.0.0/8"]}})).await?;
    until_dropped(client, lb).await?;
    until_dropped(&other, lb).await?;
    Ok(())
}

/// One Service with the same port number over TCP and UDP (each to its own target port) and an
/// SCTP port, all also NodePorts. SCTP goes through as raw packets: an INIT reaches the endpoint
/// DNATed (checksum rewritten), and the INIT ACK comes back from the ClusterIP, or from the
/// NodePort for a client outside the nodes; a UDP port without endpoints is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_udp_and_sctp() -> Result<()> {
    let mut topology = Topology::new("bprot", 2)?;
    let cluster = Cluster::start().await?;
    topology.add_pod(2, 10)?;
    topology.add_pod(1, 50)?;
    let backend = &topology.pod(2, 10).ns;
    let _tcp = tcp_server(backend, sa([0, 0, 0, 0], 5354), "tcp")?;
    let _udp = udp_server(backend, sa([0, 0, 0, 0], 5353), "udp")?;
    let service = cluster
        .create_service(json!({"metadata": {"name": "proto"}, "spec": {"type": "NodePort", "ports": [
            {"name": "dns-udp", "port": 53, "protocol": "UDP", "targetPort": 5353},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5354},
            {"name": "sig", "port": 3868, "protocol": "SCTP", "targetPort": 3869},
            {"name": "none", "port": 54, "protocol": "UDP", "targetPort": 5355},
        ]}}))
        .await?;
    let vip = cluster_ip(&service);
    cluster
        .put_slice(
            "proto-1",
            "proto",
            json!([
                {"name": "dns-udp", "port": 5353, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 5354, "protocol": "TCP"},
                {"name": "sig", "port": 3869, "protocol": "SCTP"},
            ]),
            json!([endpoint("10.244.2.10", "node-2")]),
        )
        .await?;
    let _proxies = [ProxyGuard::start(&cluster.client, topology.proxy_config(1)), ProxyGuard::start(&cluster.client, topology.proxy_config(2))];
    let client_ns = &topology.pod(1, 50).ns;
    assert_eq!(names(client_ns, sa(vip, 53), 3).await?, BTreeMap::from([("tcp".to_owned(), 3)]));
    let udp = UdpClient::new(client_ns, 40053)?;
    eventually("UDP answer", WAIT, || udp.ask(sa(vip, 53)).filter(|r| r == "udp").ok_or_else(|| "no answer".to_string())).await?;
    // A UDP port without endpoints is refused too (ICMP port unreachable, seen on a connected socket).
    let refused = client_ns.run_in(move || -> std::io::Result<()> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(1500)))?;
        socket.connect(sa(vip, 54))?;
        socket.send(b"?")?;
        socket.recv(&mut [0u8; 64]).map(drop)
    })?;
    assert_eq!(refused.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionRefused));

    let node1 = &topology.node(1).ns;
    let services = proxy_elements(node1, "service-ips-v4");
    assert!(services.iter().any(|e| e.starts_with(&format!("{vip} . sctp . 3868 :"))), "{services:?}");
    if !kernel_has_sctp_sockets() {
        eprintln!("this kernel has no SCTP sockets (CONFIG_IP_SCTP); SCTP is checked with raw packets only");
    }
    let client = RawSctp::open(client_ns)?;
    let outside = RawSctp::open(&topology.client)?;
    let server = RawSctp::open(backend)?;
    let vip4 = SocketAddrV4::new(vip, 3868);
    let node_port4 = SocketAddrV4::new(topology.node(1).ip, node_port(&service, 2));
    let ((init, ack), (init_np, ack_np)) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((sctp_handshake(&client, &server, vip4, 41_000, WAIT)?, sctp_handshake(&outside, &server, node_port4, 42_000, WAIT)?))
    })
    .await??;
    assert_eq!(init.dst, SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 10), 3869), "{init:?}");
    assert_eq!(*init.src.ip(), Ipv4Addr::new(10, 244, 1, 50), "not masqueraded inside the cluster: {init:?}");
    assert!(init.checksum_ok, "the DNATed INIT's CRC32c was rewritten: {init:?}");
    assert_eq!(ack.src, vip4, "the INIT ACK comes back from the Service address: {ack:?}");
    assert!(ack.checksum_ok, "{ack:?}");
    // Through the NodePort from outside: DNATed, masqueraded to node-1 (the endpoint is on node-2).
    assert_eq!(init_np.dst, SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 10), 3869), "{init_np:?}");
    assert_eq!(*init_np.src.ip(), topology.node(1).ip, "{init_np:?}");
    assert!(init_np.checksum_ok, "{init_np:?}");
    assert_eq!(ack_np.src, node_port4, "{ack_np:?}");
    let tracked = exec(node1.name(), &["conntrack", "-L", "-p", "sctp", "--orig-dst", &vip.to_string()])?;
    assert!(tracked.contains("dport=3868") && tracked.contains("src=10.244.2.10") && tracked.contains("sport=3869"), "{tracked}");
    Ok(())
}

/// Several ports: each Service port goes to its own target port, a named target port resolves
/// per EndpointSlice (pods of another version listen elsewhere), NodePorts likewise; a port no
/// slice provides is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ports_with_named_target_ports() -> Result<()> {
    let mut topology = Topology::new("bmp", 2)?;
    let cluster = Cluster::start().await?;
    for (node, host) in [(1, 10), (1, 11), (2, 10), (1, 50)] {
        topology.add_pod(node, host)?;
    }
    let mut servers = Vec::new();
    for (node, host, name, http, admin) in [(1, 10, "a", 8080, 9090), (1, 11, "b", 8081, 9091), (2, 10, "c", 8080, 9090)] {
        let ns = &topology.pod(node, host).ns;
        servers.push(tcp_server(ns, sa([0, 0, 0, 0], http), &format!("{name}-http"))?);
        servers.push(tcp_server(ns, sa([0, 0, 0, 0], admin), &format!("{name}-admin"))?);
    }
    let service = cluster
        .create_service(json!({"metadata": {"name": "multi"}, "spec": {"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "admin", "port": 81, "targetPort": 9090},
            {"name": "metrics", "port": 82, "targetPort": "metrics"},
        ]}}))
        .await?;
    let vip = cluster_ip(&service);
    let ports = |http: u16, admin: u16| json!([{"name": "http", "port": http, "protocol": "TCP"}, {"name": "admin", "port": admin, "protocol": "TCP"}]);
    cluster.put_slice("multi-1", "multi", ports(8080, 9090), json!([endpoint("10.244.1.10", "node-1"), endpoint("10.244.2.10", "node-2")])).await?;
    cluster.put_slice("multi-2", "multi", ports(8081, 9091), json!([endpoint("10.244.1.11", "node-1")])).await?;
    let _proxies = [ProxyGuard::start(&cluster.client, topology.proxy_config(1)), ProxyGuard::start(&cluster.client, topology.proxy_config(2))];
    let pod = &topology.pod(1, 50).ns;
    reaches_exactly(pod, sa(vip, 80), &["a-http", "b-http", "c-http"]).await?;
    reaches_exactly(pod, sa(vip, 81), &["a-admin", "b-admin", "c-admin"]).await?;
    assert_eq!(connect(pod, sa(vip, 82)), Outcome::Refused);
    let node2 = topology.node(2).ip;
    reaches_exactly(&topology.client, sa(node2, node_port(&service, 0)), &["a-http", "b-http", "c-http"]).await?;
    reaches_exactly(&topology.client, sa(node2, node_port(&service, 1)), &["a-admin", "b-admin", "c-admin"]).await?;
    assert_eq!(connect(&topology.client, sa(node2, node_port(&service, 2))), Outcome::Refused);
    Ok(())
}

/// Services the proxy leaves alone get no rules: labelled for another proxy, labelled headless,
/// headless (clusterIP None) and ExternalName. Their addresses are not DNATed (and not refused
/// either); the label added to a working Service takes its rules away, removed brings them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_services_get_no_rules() -> Result<()> {
    let f = fixture("bskip", 2, 8080).await?;
    let mut skipped = Vec::new();
    for (name, port, extra) in [
        ("other", 80, json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "someone-else"}}})),
        ("lheadless", 81, json!({"metadata": {"labels": {"service.kubernetes.io/headless": ""}}})),
    ] {
        let mut manifest = json!({"metadata": {"name": name}, "spec": {"ports": [{"port": port, "targetPort": 8080}]}});
        manifest["metadata"]["labels"] = extra["metadata"]["labels"].clone();
        let service = f.cluster.create_service(manifest).await?;
        f.cluster.put_slice(&format!("{name}-1"), name, tcp_port(8080), json!([endpoint("10.244.1.10", "node-1")])).await?;
        skipped.push((name, sa(cluster_ip(&service), port)));
    }
    f.cluster.create_service(json!({"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 7701, "targetPort": 7702}]}})).await?;
    f.cluster.put_slice("headless-1", "headless", tcp_port(7702), json!([endpoint("10.244.1.11", "node-1")])).await?;
    f.cluster
        .create_service(json!({"metadata": {"name": "extname"}, "spec": {"type": "ExternalName", "externalName": "db.example.org", "ports": [{"port": 7777}]}}))
        .await?;
    f.cluster.put_slice("extname-1", "extname", tcp_port(7778), json!([endpoint("10.244.2.10", "node-2")])).await?;
    let control = f.cluster.create_service(json!({"metadata": {"name": "control"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})).await?;
    f.cluster.put_slice("control-1", "control", tcp_port(8080), json!([endpoint("10.244.2.10", "node-2")])).await?;
    let control = sa(cluster_ip(&control), 80);
    let pod = &f.topology.pod(1, 50).ns;
    // The control Service, created last, works: the proxy has seen everything before it.
    reaches_exactly(pod, control, &["c"]).await?;
    for node in [1, 2] {
        let table = proxy_table(&f.topology.node(node).ns);
        for (name, addr) in &skipped {
            assert!(!table.contains(&addr.ip().to_string()), "{name} has rules on node-{node}:\n{table}");
        }
        for absent in ["10.244.1.11", "7701", "7702", "7777", "7778"] {
            assert!(!table.contains(absent), "{absent} in the table of node-{node}:\n{table}");
        }
    }
    for (name, addr) in &skipped {
        let outcome = connect(pod, *addr);
        assert!(matches!(outcome, Outcome::Failed(_)), "{name} ({addr}): neither DNATed nor refused, got {outcome:?}");
    }

    patch_service(&f.cluster, "control", json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "someone-else"}}})).await?;
    eventually("control's rules removed", WAIT, || match connect(pod, control) {
        outcome @ Outcome::Failed(_) => Ok(outcome),
        other => Err(format!("{other:?}")),
    })
    .await?;
    assert!(!proxy_table(&f.topology.node(1).ns).contains(&control.ip().to_string()));
    patch_service(&f.cluster, "control", json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": null}}})).await?;
    reaches_exactly(pod, control, &["c"]).await?;
    patch_service(&f.cluster, "other", json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": null}}})).await?;
    reaches_exactly(pod, skipped[0].1, &["a"]).await?;
    Ok(())
}

/// Masquerade exactly where the reply would otherwise bypass the node: NodePort traffic from
/// outside to an endpoint on another node (the endpoint sees node-1's address, and answers
/// through it), and a ClusterIP reached from outside the cluster CIDR. With
/// `externalTrafficPolicy: Local` the endpoint sees the client's own address; pod-to-ClusterIP
/// traffic is never masqueraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masquerade_where_reply_would_bypass_the_node() -> Result<()> {
    let f = fixture("bmasq", 2, 8080).await?;
    let client = &f.topology.client;
    let only_c = json!([endpoint("10.244.2.10", "node-2")]);
    let cluster_policy =
        f.cluster.create_service(json!({"metadata": {"name": "cl"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080}]}})).await?;
    let local_policy = f
        .cluster
        .create_service(
            json!({"metadata": {"name": "lo"}, "spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await?;
    f.cluster.put_slice("cl-1", "cl", tcp_port(8080), only_c.clone()).await?;
    f.cluster.put_slice("lo-1", "lo", tcp_port(8080), only_c).await?;
    let (node1, node2) = (f.topology.node(1).ip, f.topology.node(2).ip);

    let peer = |to: SocketAddr| async move {
        let outcome = first_reply(&format!("a reply through {to}"), client, to).await?;
        anyhow::Ok(reply_peer(&outcome).unwrap_or_default().to_owned())
    };
    assert_eq!(peer(sa(node1, node_port(&cluster_policy, 0))).await?, node1.to_string(), "to another node: masqueraded to node-1");
    assert_eq!(peer(sa(node2, node_port(&cluster_policy, 0))).await?, "10.244.2.1", "Cluster policy: masqueraded on node-2 too");
    assert_eq!(peer(sa(node2, node_port(&local_policy, 0))).await?, CLIENT, "Local policy: client address kept");
    let outcome = connect(client, sa(node1, node_port(&local_policy, 0)));
    assert!(dropped(&outcome), "Local policy, no endpoint on node-1: {outcome:?}");

    // From outside the cluster CIDR to a ClusterIP (the client routes the service range to
    // node-1): the endpoint on node-2 would answer the client directly without masquerade.
    ip(client.name(), &format!("route add 10.96.0.0/12 via {node1}"))?;
    assert_eq!(peer(sa(cluster_ip(&cluster_policy), 80)).await?, node1.to_string());
    let outcome = connect(&f.topology.pod(1, 50).ns, sa(cluster_ip(&cluster_policy), 80));
    assert_eq!(reply_peer(&outcome), Some("10.244.1.50"), "pod to ClusterIP keeps its address: {outcome:?}");
    // A pod using another node's NodePort is external traffic there: masqueraded by node-2.
    let outcome = connect(&f.topology.pod(1, 50).ns, sa(node2, node_port(&cluster_policy, 0)));
    assert_eq!(reply_peer(&outcome), Some("10.244.2.1"), "{outcome:?}");
    Ok(())
}

/// A rolling update the way a Deployment does it (maxSurge 1, maxUnavailable 0) while two
/// clients keep opening new connections, one from a pod to the ClusterIP and one from outside
/// to a NodePort: a new endpoint is added ready, the old one marked terminating (still serving;
/// its pod exits only after no new connection goes to it), then removed. Not one connection
/// fails, and the new endpoints take the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_under_load_fails_no_connection() -> Result<()> {
    rolling_update("broll", false).await
}

/// The same with `sessionAffinity: ClientIP`: each client is pinned to an endpoint, moves when
/// that endpoint starts terminating, and still no connection fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_with_session_affinity_fails_no_connection() -> Result<()> {
    rolling_update("braff", true).await
}

async fn rolling_update(tag: &str, affinity: bool) -> Result<()> {
    let mut topology = Topology::new(tag, 2)?;
    let cluster = Cluster::start().await?;
    let pods = [("v1-a", 1, 10), ("v1-b", 2, 10), ("v2-a", 1, 20), ("v2-b", 2, 20)];
    for (_, node, host) in pods {
        topology.add_pod(node, host)?;
    }
    topology.add_pod(1, 50)?;
    let mut servers: BTreeMap<&str, TaskGuard> = BTreeMap::new();
    for (name, node, host) in pods {
        servers.insert(name, http_server(&topology.pod(node, host).ns, sa([0, 0, 0, 0], 8080), name)?);
    }
    let address = |name: &str| {
        let (_, node, host) = pods.iter().find(|p| p.0 == name).expect("known pod");
        (format!("10.244.{node}.{host}"), format!("node-{node}"))
    };
    let affinity = if affinity { "ClientIP" } else { "None" };
    let service = cluster
        .create_service(
            json!({"metadata": {"name": "roll"}, "spec": {"type": "NodePort", "sessionAffinity": affinity, "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await?;
    let put = |endpoints: Vec<(&str, bool)>| {
        let slice: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|(name, ready)| {
                let (ip, node) = address(name);
                if *ready { endpoint(&ip, &node) } else { terminating(&ip, &node) }
            })
            .collect();
        cluster.put_slice("roll-1", "roll", tcp_port(8080), json!(slice))
    };
    put(vec![("v1-a", true), ("v1-b", true)]).await?;
    let _proxies = [ProxyGuard::start(&cluster.client, topology.proxy_config(1)), ProxyGuard::start(&cluster.client, topology.proxy_config(2))];
    let vip = sa(cluster_ip(&service), 80);
    let external = sa(topology.node(2).ip, node_port(&service, 0));
    let pod = &topology.pod(1, 50).ns;
    for (ns, to) in [(pod, vip), (&topology.client, external)] {
        first_http_reply(ns, to).await?;
    }
    let loops = [LoadLoop::start(pod, vip)?, LoadLoop::start(&topology.client, external)?];
    let nodes = [&topology.node(1).ns, &topology.node(2).ns];
    progress_all(&loops, 20).await?;

    let mut current = vec![("v1-a", true), ("v1-b", true)];
    for (old, new) in [("v1-a", "v2-a"), ("v1-b", "v2-b")] {
        current.push((new, true));
        put(current.clone()).await?;
        if affinity == "None" {
            eventually(&format!("{new} gets traffic from every client"), WAIT, || {
                if loops.iter().all(|l| l.tally(|t| t.by_name.contains_key(new))) { Ok(()) } else { Err("not yet".to_string()) }
            })
            .await?;
        } else {
            progress_all(&loops, 20).await?;
        }
        current.iter_mut().filter(|(name, _)| *name == old).for_each(|e| e.1 = false);
        put(current.clone()).await?;
        let (old_ip, _) = address(old);
        eventually(&format!("no new connection goes to terminating {old}"), WAIT, || {
            let left: Vec<_> = nodes.iter().filter(|n| proxy_elements(n, "endpoints-v4").iter().any(|e| e.contains(&format!("{old_ip} . 8080")))).collect();
            if left.is_empty() { Ok(()) } else { Err(format!("still picked on {} nodes", left.len())) }
        })
        .await?;
        // Connections picked before that have finished once every client made a few more.
        progress_all(&loops, 3).await?;
        current.retain(|(name, _)| *name != old);
        put(current.clone()).await?;
        servers.remove(old);
        progress_all(&loops, 20).await?;
    }
    progress_all(&loops, 50).await?;
    for (n, l) in loops.into_iter().enumerate() {
        let tally = l.finish();
        assert!(tally.failures.is_empty(), "client {n}: {} of {} requests failed: {:?}", tally.failures.len(), tally.done, tally.failures);
        if affinity == "None" {
            assert!(tally.by_name.get("v2-a").is_some_and(|c| *c > 0) && tally.by_name.get("v2-b").is_some_and(|c| *c > 0), "client {n}: {:?}", tally.by_name);
        } else {
            let recent: BTreeSet<&String> = tally.recent.iter().collect();
            assert_eq!(recent.len(), 1, "client {n} pinned to one endpoint: {:?}", tally.recent);
        }
        assert!(tally.recent.iter().all(|name| name.starts_with("v2-")), "client {n} still reaches old pods: {:?}", tally.recent);
        eprintln!("client {n}: {} requests, none failed: {:?}", tally.done, tally.by_name);
    }
    Ok(())
}

/// A single-replica replacement under load: the only endpoint starts terminating before its
/// successor is ready (traffic falls back to it while it still serves), the successor appears
/// not ready, then ready, and takes over; the old one goes. Not one connection fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_replaced_under_load_through_terminating_fallback() -> Result<()> {
    let mut topology = Topology::new("brep", 2)?;
    let cluster = Cluster::start().await?;
    topology.add_pod(2, 10)?;
    topology.add_pod(2, 20)?;
    topology.add_pod(1, 50)?;
    let old_server = http_server(&topology.pod(2, 10).ns, sa([0, 0, 0, 0], 8080), "old")?;
    let _new_server = http_server(&topology.pod(2, 20).ns, sa([0, 0, 0, 0], 8080), "new")?;
    let service = cluster.create_service(json!({"metadata": {"name": "one"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})).await?;
    let vip = sa(cluster_ip(&service), 80);
    let old = endpoint("10.244.2.10", "node-2");
    cluster.put_slice("one-1", "one", tcp_port(8080), json!([old])).await?;
    let _proxy = ProxyGuard::start(&cluster.client, topology.proxy_config(1));
    let pod = &topology.pod(1, 50).ns;
    first_http_reply(pod, vip).await?;
    let load = LoadLoop::start(pod, vip)?;
    load.progress(20).await?;
    let not_ready = json!({"addresses": ["10.244.2.20"], "nodeName": "node-2", "conditions": {"ready": false, "serving": false, "terminating": false}});
    for endpoints in [json!([terminating("10.244.2.10", "node-2")]), json!([terminating("10.244.2.10", "node-2"), not_ready])] {
        cluster.put_slice("one-1", "one", tcp_port(8080), endpoints).await?;
        load.progress(20).await?;
    }
    // Not ready and not terminating: never picked, even with only a terminating one beside it.
    load.progress(50).await?;
    assert!(!load.tally(|t| t.by_name.contains_key("new")), "{:?}", load.tally(|t| t.by_name.clone()));
    cluster.put_slice("one-1", "one", tcp_port(8080), json!([terminating("10.244.2.10", "node-2"), endpoint("10.244.2.20", "node-2")])).await?;
    let node = &topology.node(1).ns;
    eventually("only the ready endpoint is picked", WAIT, || {
        let endpoints = proxy_elements(node, "endpoints-v4");
        if endpoints.iter().any(|e| e.contains("10.244.2.10 . 8080")) { Err(format!("{endpoints:?}")) } else { Ok(()) }
    })
    .await?;
    load.progress(3).await?;
    cluster.put_slice("one-1", "one", tcp_port(8080), json!([endpoint("10.244.2.20", "node-2")])).await?;
    drop(old_server);
    load.progress(50).await?;
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{} of {} requests failed: {:?}", tally.failures.len(), tally.done, tally.failures);
    assert!(tally.by_name.get("old").is_some_and(|c| *c >= 40), "the terminating endpoint served meanwhile: {:?}", tally.by_name);
    assert!(tally.recent.iter().all(|name| name == "new"), "{:?}", tally.recent);
    eprintln!("{} requests, none failed: {:?}", tally.done, tally.by_name);
    Ok(())
}

/// With `externalTrafficPolicy: Local` the LoadBalancer IP is held by a node that has a local
/// endpoint (a node without one would drop the traffic), keeps the client's address, and moves
/// when the endpoints move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_policy_load_balancer_ip_follows_its_endpoints() -> Result<()> {
    let mut f = fixture("blbl", 2, 8080).await?;
    f.topology.add_nodes_api(&f.cluster).await?;
    f.cluster
        .create_service(json!({"metadata": {"name": "lbl"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "targetPort": 8080}]}}))
        .await?;
    f.cluster.patch_service_status("lbl", json!({"loadBalancer": {"ingress": [{"ip": "172.30.254.3"}]}})).await?;
    let lb = sa([172, 30, 254, 3], 80);
    let holders = |topology: &Topology| -> Vec<String> {
        let holds = |n: &TestNode| exec(n.ns.name(), &["ip", "-o", "addr", "show", "dev", "eth0"]).unwrap_or_default().contains("172.30.254.3/32");
        topology.nodes.iter().filter(|n| holds(n)).map(|n| n.name.clone()).collect()
    };
    for (slice, node, names) in [
        (json!([endpoint("10.244.2.10", "node-2")]), "node-2", &["c"][..]),
        (json!([endpoint("10.244.1.10", "node-1"), endpoint("10.244.1.11", "node-1")]), "node-1", &["a", "b"][..]),
    ] {
        f.cluster.put_slice("lbl-1", "lbl", tcp_port(8080), slice).await?;
        eventually(&format!("{node} alone holds the address"), WAIT, || match holders(&f.topology).as_slice() {
            [one] if one == node => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .await?;
        reaches_exactly(&f.topology.client, lb, names).await?;
        assert_eq!(reply_peer(&connect(&f.topology.client, lb)), Some(CLIENT), "client address kept");
    }
    Ok(())
}

/// Changing a Service's type (ClusterIP → NodePort → LoadBalancer → ClusterIP) adds and removes
/// its external frontends while a client keeps using its ClusterIP without one failed
/// connection; a NodePort that is given up is no longer forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_changes_never_interrupt_the_cluster_ip() -> Result<()> {
    let mut f = fixture("btyp", 2, 8080).await?;
    f.topology.add_nodes_api(&f.cluster).await?;
    let _http = [http_server(&f.topology.pod(1, 10).ns, sa([0, 0, 0, 0], 8088), "a")?, http_server(&f.topology.pod(2, 10).ns, sa([0, 0, 0, 0], 8088), "c")?];
    let service = f.cluster.create_service(json!({"metadata": {"name": "morph"}, "spec": {"ports": [{"port": 80, "targetPort": 8088}]}})).await?;
    f.cluster.put_slice("morph-1", "morph", tcp_port(8088), json!([endpoint("10.244.1.10", "node-1"), endpoint("10.244.2.10", "node-2")])).await?;
    let vip = sa(cluster_ip(&service), 80);
    let pod = &f.topology.pod(1, 50).ns;
    first_http_reply(pod, vip).await?;
    let load = LoadLoop::start(pod, vip)?;
    let client = &f.topology.client;
    let node1 = f.topology.node(1).ip;
    let get = |to: SocketAddr| client.run_in(move || http_get_name(to)).map_err(|e| e.to_string()).and_then(|r| r);

    patch_service(&f.cluster, "morph", json!({"spec": {"type": "NodePort"}})).await?;
    let api: Api<Service> = Api::namespaced(f.cluster.client.clone(), "default");
    let node_port = node_port(&api.get("morph").await?, 0);
    eventually("NodePort served", WAIT, || get(sa(node1, node_port))).await?;
    patch_service(&f.cluster, "morph", json!({"spec": {"type": "LoadBalancer"}})).await?;
    f.cluster.patch_service_status("morph", json!({"loadBalancer": {"ingress": [{"ip": "172.30.254.4"}]}})).await?;
    eventually("LoadBalancer IP served", WAIT, || get(sa([172, 30, 254, 4], 80))).await?;
    // Back to ClusterIP (NodePorts are released with the type, as the API server does).
    patch_service(&f.cluster, "morph", json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "targetPort": 8088, "nodePort": null}]}})).await?;
    eventually("NodePort given up", WAIT, || {
        let node_ports = proxy_elements(&f.topology.node(1).ns, "node-ports");
        if node_ports.iter().any(|e| e.starts_with(&format!("tcp . {node_port} "))) { Err(format!("{node_ports:?}")) } else { Ok(()) }
    })
    .await?;
    let outcome = connect(client, sa(node1, node_port));
    assert!(reply_name(&outcome).is_none(), "{outcome:?}");
    load.progress(50).await?;
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{} of {} requests failed: {:?}", tally.failures.len(), tally.done, tally.failures);
    assert_eq!(tally.by_name.keys().collect::<Vec<_>>(), ["a", "c"]);
    Ok(())
}

/// Scaling a Service from 3 to 40 endpoints and back under load: more endpoints than the
/// preset pick chains (the runner then rebuilds the table in one transaction) and every one of
/// them reached, with not one failed connection. One pod namespace holds the 40 addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_past_the_preset_pick_chains_under_load() -> Result<()> {
    let mut topology = Topology::new("bscal", 1)?;
    let cluster = Cluster::start().await?;
    let many = topology.add_pod(1, 100)?.ns.name().to_owned();
    for host in 101..140 {
        ip(&many, &format!("addr add 10.244.1.{host}/24 dev eth0"))?;
    }
    topology.add_pod(1, 50)?;
    let _server = http_server_named_by_address(&topology.pod(1, 100).ns, 8080)?;
    let service = cluster.create_service(json!({"metadata": {"name": "scale"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})).await?;
    let vip = sa(cluster_ip(&service), 80);
    let endpoints = |n: u8| json!((100..100 + n).map(|host| endpoint(&format!("10.244.1.{host}"), "node-1")).collect::<Vec<_>>());
    cluster.put_slice("scale-1", "scale", tcp_port(8080), endpoints(3)).await?;
    let _proxy = ProxyGuard::start(&cluster.client, topology.proxy_config(1));
    let pod = &topology.pod(1, 50).ns;
    first_http_reply(pod, vip).await?;
    let load = LoadLoop::start(pod, vip)?;
    cluster.put_slice("scale-1", "scale", tcp_port(8080), endpoints(40)).await?;
    eventually("all 40 endpoints reached", WAIT, || match load.tally(|t| t.by_name.len()) {
        40 => Ok(()),
        n => Err(format!("{n} so far")),
    })
    .await?;
    cluster.put_slice("scale-1", "scale", tcp_port(8080), endpoints(3)).await?;
    let first_three = ["10.244.1.100", "10.244.1.101", "10.244.1.102"];
    eventually("back to three", WAIT, || {
        let recent: BTreeSet<String> = load.tally(|t| t.recent.iter().cloned().collect());
        if load.tally(|t| t.recent.len()) == 50 && recent.iter().all(|r| first_three.contains(&r.as_str())) { Ok(()) } else { Err(format!("{recent:?}")) }
    })
    .await?;
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{} of {} requests failed: {:?}", tally.failures.len(), tally.done, tally.failures);
    assert_eq!(tally.by_name.len(), 40, "{:?}", tally.by_name);
    Ok(())
}

/// Endpoints in a node's own namespace (host-network pods): reached through the ClusterIP from
/// pods on either node, from the nodes themselves, and through the NodePort from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_endpoints() -> Result<()> {
    let mut f = fixture("bhost", 2, 8080).await?;
    f.topology.add_pod(2, 50)?;
    let node2 = f.topology.node(2).ip;
    let _host_server = tcp_server(&f.topology.node(2).ns, sa(node2, 8090), "host2")?;
    let service =
        f.cluster.create_service(json!({"metadata": {"name": "hostnet"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8090}]}})).await?;
    f.cluster.put_slice("hostnet-1", "hostnet", tcp_port(8090), json!([endpoint(&node2.to_string(), "node-2")])).await?;
    let vip = sa(cluster_ip(&service), 80);
    reaches_exactly(&f.topology.pod(1, 50).ns, vip, &["host2"]).await?;
    assert_eq!(reply_peer(&connect(&f.topology.pod(1, 50).ns, vip)), Some("10.244.1.50"));
    reaches_exactly(&f.topology.pod(2, 50).ns, vip, &["host2"]).await?;
    for node in [1, 2] {
        reaches_exactly(&f.topology.client, sa(f.topology.node(node).ip, node_port(&service, 0)), &["host2"]).await?;
        // The node's own processes (with a default route, as real nodes have).
        let ns = &f.topology.node(node).ns;
        ip(ns.name(), "route add default via 172.30.0.1")?;
        reaches_exactly(ns, vip, &["host2"]).await?;
    }
    Ok(())
}

/// The proxy restarting (as after an upgrade) under load: while it is away its rules keep
/// working; the endpoints change meanwhile; the new proxy's full sync replaces the table in one
/// transaction and picks the change up; not one connection fails. An EndpointSlice written
/// before its Service is used once the Service appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_restart_under_load_fails_no_connection() -> Result<()> {
    let mut topology = Topology::new("brst", 1)?;
    let cluster = Cluster::start().await?;
    for host in [10, 11, 50] {
        topology.add_pod(1, host)?;
    }
    let _servers = [http_server(&topology.pod(1, 10).ns, sa([0, 0, 0, 0], 8080), "a")?, http_server(&topology.pod(1, 11).ns, sa([0, 0, 0, 0], 8080), "b")?];
    let service = cluster.create_service(json!({"metadata": {"name": "steady"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})).await?;
    let vip = sa(cluster_ip(&service), 80);
    cluster.put_slice("steady-1", "steady", tcp_port(8080), json!([endpoint("10.244.1.10", "node-1")])).await?;
    let proxy = ProxyGuard::start(&cluster.client, topology.proxy_config(1));
    let pod = &topology.pod(1, 50).ns;
    first_http_reply(pod, vip).await?;
    let load = LoadLoop::start(pod, vip)?;
    load.progress(20).await?;
    drop(proxy);
    cluster.put_slice("steady-1", "steady", tcp_port(8080), json!([endpoint("10.244.1.10", "node-1"), endpoint("10.244.1.11", "node-1")])).await?;
    load.progress(50).await?;
    assert!(!load.tally(|t| t.by_name.contains_key("b")), "no proxy, no change: {:?}", load.tally(|t| t.by_name.clone()));
    let _proxy = ProxyGuard::start(&cluster.client, topology.proxy_config(1));
    eventually("the new proxy sends traffic to b", WAIT, || if load.tally(|t| t.by_name.contains_key("b")) { Ok(()) } else { Err("not yet".to_string()) })
        .await?;
    load.progress(50).await?;

    cluster.put_slice("late-1", "late", tcp_port(8080), json!([endpoint("10.244.1.11", "node-1")])).await?;
    let late = cluster.create_service(json!({"metadata": {"name": "late"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}})).await?;
    let late = sa(cluster_ip(&late), 80);
    let name = eventually("the late Service answers", WAIT, || pod.run_in(move || http_get_name(late)).map_err(|e| e.to_string())?).await?;
    assert_eq!(name, "b");

    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{} of {} requests failed: {:?}", tally.failures.len(), tally.done, tally.failures);
    Ok(())
}

/// `sessionAffinityConfig.clientIP.timeoutSeconds`: a client stays on one endpoint while it keeps
/// coming back within the timeout; once it has been away longer, its entry expires and the next
/// connection is balanced afresh (so over a few rounds it lands on another endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_timeout_expires() -> Result<()> {
    let f = fixture("bafft", 2, 8080).await?;
    let service = f
        .cluster
        .create_service(json!({"metadata": {"name": "brief"}, "spec": {
            "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 2}},
            "ports": [{"port": 80, "targetPort": 8080}],
        }}))
        .await?;
    let vip = sa(cluster_ip(&service), 80);
    f.cluster.put_slice("brief-1", "brief", tcp_port(8080), abc()).await?;
    let pod = &f.topology.pod(1, 50).ns;
    let node = &f.topology.node(1).ns;
    let pinned = |entries: &[String]| entries.iter().any(|e| e.contains("10.244.1.50"));
    let mut landed = BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    while landed.len() < 2 {
        let seen = names(pod, vip, 10).await?;
        assert_eq!(seen.len(), 1, "pinned within the timeout: {seen:?}");
        landed.extend(seen.into_keys());
        let entries = proxy_elements(node, "affinity-v4");
        assert!(entries.iter().any(|e| e.contains("10.244.1.50") && e.contains("timeout 2s")), "{entries:?}");
        eventually("the affinity entry expires", WAIT, || if pinned(&proxy_elements(node, "affinity-v4")) { Err("not yet".to_string()) } else { Ok(()) })
            .await?;
        assert!(std::time::Instant::now() < deadline, "always the same endpoint after expiry: {landed:?}");
    }
    Ok(())
}

/// Someone deletes the proxy's table (`nft flush ruleset`, a firewall service restarting): the
/// proxy notices at its next table check, without any Service changing, and puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_table_is_put_back() -> Result<()> {
    let f = fixture("bgone", 2, 8080).await?;
    let web = web_service(&f).await?;
    let pod = &f.topology.pod(1, 50).ns;
    names(pod, sa(cluster_ip(&web), 80), 3).await?;
    exec(f.topology.node(1).ns.name(), &["nft", "delete", "table", "inet", "svcnet-proxy"])?;
    let seen = names(pod, sa(cluster_ip(&web), 80), 5).await?;
    ensure!(!seen.contains_key("<failed>"), "{seen:?}");
    Ok(())
}

/// A ClusterIP on a port its Service does not have refuses at once (kube-proxy's
/// `cluster-ips-check`); the Service's own port still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_on_a_port_the_service_lacks_is_refused() -> Result<()> {
    let f = fixture("bport", 2, 8080).await?;
    let web = web_service(&f).await?;
    let pod = &f.topology.pod(1, 50).ns;
    let seen = names(pod, sa(cluster_ip(&web), 80), 5).await?;
    ensure!(!seen.contains_key("<failed>"), "{seen:?}");
    until_refused("port 81 of the ClusterIP is refused from a pod", pod, sa(cluster_ip(&web), 81)).await?;
    let seen = names(pod, sa(cluster_ip(&web), 80), 5).await?;
    ensure!(!seen.contains_key("<failed>"), "port 80 still works: {seen:?}");
    Ok(())
}

/// A full sync checks the whole UDP conntrack table against the Services, as kube-proxy does:
/// an entry made while the proxy had no rules (a flow to the ClusterIP itself, not DNATed; put
/// in here with `conntrack -I`) is deleted when the proxy starts, so that flow reaches the
/// Service; an entry DNATed to a serving endpoint is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_entries_from_before_the_proxy_are_cleaned_at_its_full_sync() -> Result<()> {
    let mut f = UdpFixture::start("budpc").await?;
    let pod = &f.topology.pod(1, 50).ns;
    let vip = f.vip;
    let kept = UdpClient::new(pod, 40081)?;
    eventually("the kept flow reaches old", WAIT, || kept.ask(vip).filter(|r| r == "old").ok_or_else(|| "no answer".to_string())).await?;
    f.proxy = None;
    let node = f.topology.node(1).ns.name().to_owned();
    let (ip, port) = (vip.ip().to_string(), vip.port().to_string());
    let insert = ["conntrack", "-I", "-p", "udp", "-s", "10.244.1.50", "-d", &ip, "--sport", "40082", "--dport", &port];
    let reply = ["-r", &ip, "-q", "10.244.1.50", "--reply-port-src", &port, "--reply-port-dst", "40082", "-t", "300"];
    exec(&node, &[&insert[..], &reply[..]].concat())?;
    let entry = |source_port: &str| exec(&node, &["conntrack", "-L", "-p", "udp", "--orig-port-src", source_port]);
    ensure!(entry("40082")?.contains("sport=40082"), "the entry is in: {:?}", entry("40082"));

    f.proxy = Some(ProxyGuard::start(&f.cluster.client, f.topology.proxy_config(1)));
    eventually("the entry that was not DNATed is deleted", WAIT, || match entry("40082") {
        Ok(listing) if !listing.contains("sport=40082") => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await?;
    let kept_entry = entry("40081")?;
    ensure!(kept_entry.contains("src=10.244.1.10"), "the DNATed entry to a serving endpoint is kept: {kept_entry:?}");
    let late = UdpClient::new(pod, 40082)?;
    eventually("that flow now reaches old", WAIT, || late.ask(vip).filter(|r| r == "old").ok_or_else(|| "no answer".to_string())).await?;
    Ok(())
}

/// Stale UDP entries are deleted per Service frontend, as kube-proxy does: when an endpoint
/// leaves one Service, flows to the same pod through another Service, and flows straight to the
/// pod's address, keep their conntrack entries (they are not DNATed along the path that went).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_cleanup_touches_only_the_service_the_endpoint_left() -> Result<()> {
    let f = UdpFixture::start("budpo").await?;
    let _new = udp_server(&f.topology.pod(1, 11).ns, sa([0, 0, 0, 0], 5353), "new")?;
    let other =
        f.cluster.create_service(json!({"metadata": {"name": "other"}, "spec": {"ports": [{"port": 54, "protocol": "UDP", "targetPort": 5353}]}})).await?;
    let other_vip = sa(cluster_ip(&other), 54);
    f.cluster.put_slice("other-1", "other", json!([{"port": 5353, "protocol": "UDP"}]), json!([endpoint("10.244.1.10", "node-1")])).await?;
    let pod = &f.topology.pod(1, 50).ns;
    let (through_dns, through_other, direct) = (UdpClient::new(pod, 40061)?, UdpClient::new(pod, 40062)?, UdpClient::new(pod, 40063)?);
    let old_vip = f.vip;
    eventually("the flow through dns reaches old", WAIT, || through_dns.ask(old_vip).filter(|r| r == "old").ok_or_else(|| "no answer".to_string())).await?;
    eventually("the flow through other reaches old", WAIT, || through_other.ask(other_vip).filter(|r| r == "old").ok_or_else(|| "no answer".to_string()))
        .await?;
    let direct_to = sa([10, 244, 1, 10], 5353);
    eventually("the direct flow reaches old", WAIT, || direct.ask(direct_to).filter(|r| r == "old").ok_or_else(|| "no answer".to_string())).await?;
    let node = f.topology.node(1).ns.name().to_owned();
    let entry = |source_port: u16| exec(&node, &["conntrack", "-L", "-p", "udp", "--orig-port-src", &source_port.to_string()]);
    ensure!(entry(40062)?.contains("src=10.244.1.10") && entry(40063)?.contains("dst=10.244.1.10"), "entries to keep exist");

    // old leaves dns (it still serves other): the flow through dns moves, its entry was deleted.
    f.put_endpoints(json!([endpoint("10.244.1.11", "node-1")])).await?;
    eventually("the flow through dns moves to new", WAIT, || through_dns.ask(old_vip).filter(|r| r == "new").ok_or_else(|| "still old".to_string())).await?;
    // Nothing was sent on the other two since: their entries are the ones from before.
    let (kept_other, kept_direct) = (entry(40062)?, entry(40063)?);
    ensure!(kept_other.contains("src=10.244.1.10"), "the flow through other lost its entry: {kept_other:?}");
    ensure!(kept_direct.contains("dst=10.244.1.10"), "the direct flow lost its entry: {kept_direct:?}");
    ensure!(through_other.ask(other_vip).as_deref() == Some("old"), "other still goes to old");
    Ok(())
}

/// UDP and graceful termination, as kube-proxy: a UDP flow (one client socket) stays on its
/// endpoint while that endpoint is terminating but still serving (new flows go to the ready
/// one); once the endpoint is gone, the same flow moves (its conntrack entry is deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flow_stays_on_a_terminating_endpoint_until_it_leaves() -> Result<()> {
    let f = UdpFixture::start("budpt").await?;
    let _new = udp_server(&f.topology.pod(1, 11).ns, sa([0, 0, 0, 0], 5353), "new")?;
    let vip = f.vip;
    let pod = &f.topology.pod(1, 50).ns;
    let flow = UdpClient::new(pod, 40054)?;
    eventually("the flow reaches old", WAIT, || flow.ask(vip).filter(|r| r == "old").ok_or_else(|| "no answer".to_string())).await?;

    f.put_endpoints(json!([terminating("10.244.1.10", "node-1"), endpoint("10.244.1.11", "node-1")])).await?;
    let node = &f.topology.node(1).ns;
    eventually("new flows go to the ready endpoint only", WAIT, || {
        let endpoints = proxy_elements(node, "endpoints-v4");
        if endpoints.iter().any(|e| e.contains("10.244.1.10 ")) { Err(format!("{endpoints:?}")) } else { Ok(()) }
    })
    .await?;
    let fresh = eventually("a new flow reaches new", WAIT, || {
        let fresh = UdpClient::new(pod, 0).map_err(|e| e.to_string())?;
        fresh.ask(vip).ok_or_else(|| "no answer".to_string())
    })
    .await?;
    assert_eq!(fresh, "new");
    // The runner deletes stale entries right after the transaction: by now they would be gone.
    for _ in 0..5 {
        assert_eq!(flow.ask(vip).as_deref(), Some("old"), "the flow to the terminating endpoint was cut");
    }

    f.put_endpoints(json!([endpoint("10.244.1.11", "node-1")])).await?;
    eventually("the flow moves once old is gone", WAIT, || flow.ask(vip).filter(|r| r == "new").ok_or_else(|| "still old".to_string())).await?;
    Ok(())
}

/// IPv6 through the same table: an IPv6 `externalIP` of a Service whose endpoints come from an
/// IPv6 EndpointSlice, reached from an IPv6 client outside the nodes (routed to node-1) and
/// served by a pod on node-2 (DNAT and masquerade in the `ip6` half of the table); an IPv6
/// external IP without endpoints is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_external_ip_to_ipv6_endpoints() -> Result<()> {
    let mut topology = Topology::new("bip6", 2)?;
    let cluster = Cluster::start().await?;
    topology.add_pod(2, 10)?;
    let v6 = |ns: &NetNs, args: &str| ip(ns.name(), &format!("-6 {args}"));
    v6(&topology.client, "addr add fd00:30::100/64 dev eth0 nodad")?;
    v6(&topology.client, "route add fd00:203::/64 via fd00:30::2")?;
    for node in [1u8, 2] {
        let ns = &topology.node(node).ns;
        v6(ns, &format!("addr add fd00:30::{}/64 dev eth0 nodad", node + 1))?;
        v6(ns, &format!("addr add fd00:244:{node}::1/64 dev cbr0 nodad"))?;
        exec(ns.name(), &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    }
    v6(&topology.node(1).ns, "route add fd00:244:2::/64 via fd00:30::3")?;
    let pod = &topology.pod(2, 10).ns;
    v6(pod, "addr add fd00:244:2::10/64 dev eth0 nodad")?;
    v6(pod, "route add default via fd00:244:2::1")?;
    let _server = tcp_server(pod, "[::]:8080".parse()?, "c6")?;
    cluster.create_service(json!({"metadata": {"name": "six"}, "spec": {"externalIPs": ["fd00:203::7"], "ports": [{"port": 80, "targetPort": 8080}]}})).await?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "six-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "six"}},
        "addressType": "IPv6",
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["fd00:244:2::10"], "nodeName": "node-2"}],
    }))?;
    Api::<EndpointSlice>::namespaced(cluster.client.clone(), "default").create(&Default::default(), &slice).await?;
    let _proxies = [ProxyGuard::start(&cluster.client, topology.proxy_config(1)), ProxyGuard::start(&cluster.client, topology.proxy_config(2))];
    let to: SocketAddr = "[fd00:203::7]:80".parse()?;
    let outcome = first_reply("a reply over IPv6", &topology.client, to).await?;
    assert_eq!(reply_name(&outcome), Some("c6"));
    assert_eq!(reply_peer(&outcome), Some("fd00:30::2"), "masqueraded to node-1's IPv6 address: {outcome:?}");
    let elements = proxy_elements(&topology.node(1).ns, "endpoints-v6");
    assert!(elements.iter().any(|e| e.contains("fd00:244:2::10 . 8080")), "{elements:?}");
    // No endpoints: refused at once over IPv6 too (ICMPv6 port unreachable).
    cluster.create_service(json!({"metadata": {"name": "none6"}, "spec": {"externalIPs": ["fd00:203::8"], "ports": [{"port": 80}]}})).await?;
    until_refused("refused over IPv6", &topology.client, "[fd00:203::8]:80".parse()?).await?;
    Ok(())
}

/// A UDP client that starts sending before its Service exists (the classic cluster-DNS start-up
/// race): its packets are routed un-NATed and conntrack remembers that; when the Service appears
/// with an endpoint, that entry is deleted and the same flow reaches the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flow_started_before_its_service_exists() -> Result<()> {
    let mut topology = Topology::new("budpe", 1)?;
    let cluster = Cluster::start().await?;
    topology.add_pod(1, 10)?;
    topology.add_pod(1, 50)?;
    let _server = udp_server(&topology.pod(1, 10).ns, sa([0, 0, 0, 0], 5353), "dns")?;
    let node = &topology.node(1).ns;
    // A default route, as real nodes have: the early packets are forwarded (and tracked).
    ip(node.name(), "route add default via 172.30.0.1")?;
    let _proxy = ProxyGuard::start(&cluster.client, topology.proxy_config(1));
    let vip = sa([10, 96, 100, 53], 53);
    let flow = UdpClient::new(&topology.pod(1, 50).ns, 40056)?;
    eventually("the early flow is tracked un-NATed", WAIT, || {
        let _ = flow.ask(vip);
        let entries = exec(node.name(), &["conntrack", "-L", "-p", "udp", "--orig-port-src", "40056"]).unwrap_or_default();
        if entries.contains("dst=10.96.100.53") && !entries.contains("src=10.244.1.10") { Ok(()) } else { Err(entries) }
    })
    .await?;
    cluster
        .create_service(
            json!({"metadata": {"name": "early"}, "spec": {"clusterIP": "10.96.100.53", "ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353}]}}),
        )
        .await?;
    cluster.put_slice("early-1", "early", json!([{"port": 5353, "protocol": "UDP"}]), json!([endpoint("10.244.1.10", "node-1")])).await?;
    eventually("the same flow reaches the endpoint", WAIT, || flow.ask(vip).filter(|r| r == "dns").ok_or_else(|| "no answer".to_string())).await?;
    Ok(())
}

/// Elements two Services share stay while either needs them: a hairpin pair (one endpoint in
/// two Services) survives one Service's deletion; an `externalIP:port` claimed by two Services
/// passes to the other when the first goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_elements_outlive_one_service() -> Result<()> {
    let f = fixture("bshr", 2, 8080).await?;
    let client = &f.topology.client;
    ip(client.name(), &format!("route add 203.0.113.0/24 via {}", f.topology.node(1).ip))?;
    let mut vips = Vec::new();
    for (name, endpoint_ip, node) in [("first", "10.244.1.10", "node-1"), ("second", "10.244.1.10", "node-1"), ("third", "10.244.2.10", "node-2")] {
        let service = f
            .cluster
            .create_service(json!({"metadata": {"name": name}, "spec": {"externalIPs": ["203.0.113.20"], "ports": [{"port": 80, "targetPort": 8080}]}}))
            .await?;
        f.cluster.put_slice(&format!("{name}-1"), name, tcp_port(8080), json!([endpoint(endpoint_ip, node)])).await?;
        vips.push(sa(cluster_ip(&service), 80));
    }
    let me = &f.topology.pod(1, 10).ns;
    for vip in &vips[..2] {
        let outcome = first_reply("hairpin", me, *vip).await?;
        assert_eq!(reply_peer(&outcome), Some("10.244.1.1"), "{outcome:?}");
    }
    let shared = sa([203, 0, 113, 20], 80);
    names(client, shared, 1).await?;
    let services: Api<Service> = Api::namespaced(f.cluster.client.clone(), "default");
    services.delete("first", &DeleteParams::default()).await?;
    let node = &f.topology.node(1).ns;
    let first_vip = vips[0].ip().to_string();
    eventually("first's rules gone", WAIT, || if proxy_table(node).contains(&first_vip) { Err("not yet".to_string()) } else { Ok(()) }).await?;
    let outcome = connect(me, vips[1]);
    assert_eq!(reply_peer(&outcome), Some("10.244.1.1"), "hairpin through second after first left: {outcome:?}");
    services.delete("second", &DeleteParams::default()).await?;
    eventually("the shared external IP passes to third", WAIT, || {
        let seen = (0..10).map(|_| reply_name(&connect(client, shared)).unwrap_or("<failed>").to_owned()).collect::<BTreeSet<_>>();
        if seen.len() == 1 && seen.contains("c") { Ok(()) } else { Err(format!("{seen:?}")) }
    })
    .await?;
    Ok(())
}

/// A Service `web` (port 80/TCP) whose endpoints are a, b and c on 8080.
async fn web_service(f: &Fixture) -> Result<Service> {
    let web = f.cluster.create_service(json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})).await?;
    f.cluster.put_slice("web-1", "web", tcp_port(8080), abc()).await?;
    Ok(web)
}
