//! The node network against the real kernel (needs root). Each test builds its own "host" in a
//! network namespace of its own (so the real host's links, addresses and routes are never
//! touched), with a host bridge named after the test's process id and number; every node and pod
//! namespace is named after that bridge. Guards remove everything even when a test fails, and
//! every test ends by checking that no namespace or link of its names is left.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipnet::Ipv4Net;
use svcnet_netns::NetNs;
use svcnet_node::network::{
    self, HostConfig, HostNetwork, NodeConfig, NodeNetwork, Overlay, PodNetwork, ROUTE_PROTOCOL, Uplink, VXLAN_DEVICE, pod_veth_name, vtep_mac,
};
use tempfile::TempDir;

// === helpers ===

/// One test's names: the host bridge `s<pid hex><n>` (at most 8 bytes), everything else after it.
struct TestEnv {
    bridge: String,
    host_ns: Option<Arc<NetNs>>,
    dir: TempDir,
}

impl TestEnv {
    fn new() -> TestEnv {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let bridge = format!("s{:x}{}", std::process::id(), char::from_digit(n % 36, 36).unwrap());
        assert!(bridge.len() <= network::MAX_BRIDGE_NAME, "{bridge}");
        // The test's "host": not named after the bridge, so that the bridge's cleanup leaves it.
        let host_ns = Arc::new(NetNs::create(&format!("svcnet-t{}-{n}-host", std::process::id())).expect("creating the test's host namespace"));
        TestEnv { bridge, host_ns: Some(host_ns), dir: tempfile::tempdir().unwrap() }
    }

    fn host_ns(&self) -> Arc<NetNs> {
        Arc::clone(self.host_ns.as_ref().unwrap())
    }

    fn host_config(&self) -> HostConfig {
        HostConfig { bridge: self.bridge.clone(), node_network: "172.30.0.0/24".parse().unwrap() }
    }

    fn node_config(&self, node: &str, overlay: Overlay) -> NodeConfig {
        NodeConfig { overlay, ..NodeConfig::new(self.dir.path().join(node)) }
    }

    /// Asserts that no namespace under `/run/netns` and no link of the test's host namespace or
    /// of the real host is named after the bridge.
    fn assert_clean(&self) {
        let left = NetNs::list(&self.bridge).unwrap();
        assert!(left.is_empty(), "namespaces left behind: {left:?}");
        let in_test_host = run_in_ns(self.host_ns.as_ref().unwrap().name(), &["ip", "-o", "link", "show"]).unwrap();
        let real_host = run(&["ip", "-o", "link", "show"]).unwrap();
        for links in [in_test_host, real_host] {
            assert!(!links.lines().any(|l| line_link_name(l).is_some_and(|n| n.starts_with(&self.bridge))), "links left behind:\n{links}");
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Whatever a failed test left, named after its bridge.
        let mut left = NetNs::list(&format!("{}-", self.bridge)).unwrap_or_default();
        left.extend(NetNs::list(&format!("svcnet-{}", self.bridge)).unwrap_or_default());
        for name in left {
            let _ = NetNs::remove_named(&name);
        }
        drop(self.host_ns.take());
    }
}

fn line_link_name(line: &str) -> Option<&str> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next().unwrap_or(name))
}

fn run(args: &[&str]) -> Result<String> {
    let output = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    ensure!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?)
}

fn run_in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

fn nft_in(ns: &str, script: &str) -> Result<()> {
    let mut child = Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().unwrap().write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "nft: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// A TCP listener on `server_ip` in `server_ns`, a connection from `client_ns`: the client
/// address the server saw. The server echoes it back, and the client checks that it got it.
fn tcp_exchange(server_ns: &NetNs, server_ip: Ipv4Addr, client_ns: &NetNs) -> Result<SocketAddr> {
    let listener = server_ns.run_in(|| TcpListener::bind((server_ip, 0)))??;
    let server_addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let server = thread::spawn(move || -> Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    stream.set_nonblocking(false)?;
                    stream.write_all(format!("{peer}\n").as_bytes())?;
                    return Ok(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(e) => bail!("accept on {server_addr}: {e}"),
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match client_ns.run_in(|| TcpStream::connect_timeout(&server_addr, Duration::from_secs(2)))? {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect to {server_addr}: {e}; retrying");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => bail!("connect to {server_addr}: {e}"),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut echoed = String::new();
    stream.read_to_string(&mut echoed)?;
    let peer = server.join().unwrap()?;
    ensure!(echoed.trim() == peer.to_string(), "echoed {echoed:?}, server saw {peer}");
    Ok(peer)
}

fn ip(peer: SocketAddr) -> IpAddr {
    peer.ip()
}

async fn pod_mtu(pod: &NetNs) -> Result<u32> {
    let netlink = pod.netlink()?;
    let eth0 = netlink.link_index("eth0").await?.context("no eth0")?;
    Ok(netlink.link_state(eth0).await?.mtu)
}

fn cidr(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

struct Cluster {
    host: HostNetwork,
    n1: NodeNetwork,
    n2: NodeNetwork,
}

async fn two_nodes(env: &TestEnv, overlay: Overlay) -> Result<Cluster> {
    let host = HostNetwork::create_in(env.host_ns(), env.host_config()).await?;
    let n1 = host.create_node("n1", 1, env.node_config("n1", overlay)).await?;
    let n2 = host.create_node("n2", 2, env.node_config("n2", overlay)).await?;
    assert_eq!(n1.node_ip(), Ipv4Addr::new(172, 30, 0, 2));
    assert_eq!(n2.node_ip(), Ipv4Addr::new(172, 30, 0, 3));
    n1.set_pod_cidr(cidr("10.244.1.0/24")).await?;
    n2.set_pod_cidr(cidr("10.244.2.0/24")).await?;
    let peers = [(n1.node_ip(), cidr("10.244.1.0/24")), (n2.node_ip(), cidr("10.244.2.0/24"))];
    n1.set_peers(&peers).await?;
    n2.set_peers(&peers).await?;
    Ok(Cluster { host, n1, n2 })
}

impl Cluster {
    async fn remove(self) -> Result<()> {
        self.n1.remove().await?;
        self.n2.remove().await?;
        self.host.shutdown().await?;
        Ok(())
    }
}

/// Pod-to-pod on one node and across nodes keeps the source address, both ways.
fn assert_pod_to_pod(pods: &[(&NetNs, &PodNetwork)]) -> Result<()> {
    for (client_ns, client) in pods {
        for (server_ns, server) in pods {
            if client.ip == server.ip {
                continue;
            }
            let peer = tcp_exchange(server_ns, server.ip, client_ns)?;
            ensure!(ip(peer) == IpAddr::V4(client.ip), "{} → {}: the server saw {peer}", client.ip, server.ip);
        }
    }
    Ok(())
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_pods_on_one_node_and_across_nodes_by_routes() -> Result<()> {
    let env = TestEnv::new();
    let cluster = two_nodes(&env, Overlay::None).await?;
    let (n1, n2) = (&cluster.n1, &cluster.n2);
    let (a_ns, a) = n1.setup_pod("uid-a").await?;
    let (b_ns, b) = n1.setup_pod("uid-b").await?;
    let (c_ns, c) = n2.setup_pod("uid-c").await?;
    let (d_ns, d) = n2.setup_pod("uid-d").await?;
    assert_eq!((a.gateway, a.prefix_len, a.mtu), (Ipv4Addr::new(10, 244, 1, 1), 24, 1500));
    assert!(Ipv4Net::new(a.ip, 24)?.trunc() == cidr("10.244.1.0/24") && a.ip != b.ip);
    assert!(cidr("10.244.2.0/24").contains(&c.ip) && c.ip != d.ip);
    assert_eq!(a_ns.name(), n1.pod_netns_name("uid-a"));

    // Same-node traffic must be routed by the node: count it in the node's forward hook.
    let n1_name = n1.netns().name().to_owned();
    nft_in(
        &n1_name,
        &format!("table inet svcnet-test-fwd {{ chain forward {{ type filter hook forward priority 0; ip saddr {} ip daddr {} counter; }}; }}", a.ip, b.ip),
    )?;
    assert_pod_to_pod(&[(&a_ns, &a), (&b_ns, &b), (&c_ns, &c), (&d_ns, &d)])?;
    let counters = run_in_ns(&n1_name, &["nft", "list", "table", "inet", "svcnet-test-fwd"])?;
    let packets: u64 = counters.split("packets ").nth(1).and_then(|s| s.split_whitespace().next()).context("no counter")?.parse()?;
    assert!(packets > 0, "a → b did not pass the node's forward hook:\n{counters}");

    // The pod ports are isolated, cbr0 proxies ARP, the routes carry our protocol.
    let port = run_in_ns(&n1_name, &["bridge", "-d", "link", "show", "dev", &pod_veth_name("uid-a")])?;
    assert!(port.contains("isolated on"), "{port}");
    assert_eq!(n1.netns().sysctl("net/ipv4/conf/cbr0/proxy_arp_pvlan")?, "1");
    assert_eq!(n1.netns().sysctl("net/ipv4/ip_forward")?, "1");
    let routes = run_in_ns(&n1_name, &["ip", "route", "show", "proto", &ROUTE_PROTOCOL.to_string()])?;
    assert_eq!(routes.trim(), "10.244.2.0/24 via 172.30.0.3 dev eth0");

    // Pods reach the host (where cluster DNS listens) masqueraded to their node's address.
    let host_ip = cluster.host.host_ip();
    let peer = tcp_exchange(&env.host_ns(), host_ip, &a_ns)?;
    assert_eq!(ip(peer), IpAddr::V4(n1.node_ip()), "pod → host must be masqueraded");
    // The test's host namespace got the bridge and its address, nothing else: no routes to pods.
    let host_routes = run_in_ns(env.host_ns().name(), &["ip", "route", "show"])?;
    assert_eq!(host_routes.trim(), format!("172.30.0.0/24 dev {} proto kernel scope link src 172.30.0.1", env.bridge));

    // Detach releases the address and the namespace; the next pod does not get the address at once.
    assert_eq!(n1.detach_pod("uid-b").await?, Some(b.ip));
    assert!(NetNs::list(&n1.pod_netns_name("uid-b"))?.is_empty());
    drop(b_ns);
    let (_e_ns, e) = n1.setup_pod("uid-e").await?;
    assert_ne!(e.ip, b.ip);
    assert_ne!(e.ip, a.ip);

    drop((a_ns, c_ns, d_ns));
    cluster.remove().await?;
    env.assert_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_pods_across_nodes_by_vxlan() -> Result<()> {
    let env = TestEnv::new();
    let cluster = two_nodes(&env, Overlay::Vxlan).await?;
    let (n1, n2) = (&cluster.n1, &cluster.n2);
    let (a_ns, a) = n1.setup_pod("uid-a").await?;
    let (b_ns, b) = n1.setup_pod("uid-b").await?;
    let (c_ns, c) = n2.setup_pod("uid-c").await?;
    let (d_ns, d) = n2.setup_pod("uid-d").await?;
    assert_eq!(a.mtu, 1450);
    assert_eq!(pod_mtu(&a_ns).await?, 1450);

    // Count what crosses in VXLAN on n1's uplink, to know the overlay carried it.
    let n1_name = n1.netns().name().to_owned();
    nft_in(&n1_name, "table inet svcnet-test-vxlan { chain output { type filter hook output priority 0; udp dport 8472 counter; }; }")?;
    assert_pod_to_pod(&[(&a_ns, &a), (&b_ns, &b), (&c_ns, &c), (&d_ns, &d)])?;
    let counters = run_in_ns(&n1_name, &["nft", "list", "table", "inet", "svcnet-test-vxlan"])?;
    let packets: u64 = counters.split("packets ").nth(1).and_then(|s| s.split_whitespace().next()).context("no counter")?.parse()?;
    assert!(packets > 0, "nothing went out in VXLAN:\n{counters}");

    let routes = run_in_ns(&n1_name, &["ip", "route", "show", "proto", &ROUTE_PROTOCOL.to_string()])?;
    assert_eq!(routes.trim(), format!("10.244.2.0/24 via 10.244.2.0 dev {VXLAN_DEVICE} onlink"));
    let netlink = n1.netlink();
    let vxlan = netlink.link_index(VXLAN_DEVICE).await?.context("no vxlan device")?;
    assert_eq!(netlink.link_state(vxlan).await?.mtu, 1450);
    let fdb = netlink.fdb_entries(vxlan).await?;
    assert_eq!(fdb, vec![svcnet_netns::FdbEntry { mac: vtep_mac(n2.node_ip()), dst: n2.node_ip() }]);

    // Idempotent; a peer that goes away takes its route, fdb and neighbour entries with it.
    let peers = [(n1.node_ip(), cidr("10.244.1.0/24")), (n2.node_ip(), cidr("10.244.2.0/24"))];
    n1.set_peers(&peers).await?;
    assert_eq!(netlink.fdb_entries(vxlan).await?.len(), 1);
    n1.set_peers(&peers[..1]).await?;
    assert!(netlink.fdb_entries(vxlan).await?.is_empty());
    assert!(netlink.permanent_neighbours(vxlan).await?.is_empty());
    assert!(run_in_ns(&n1_name, &["ip", "route", "show", "proto", &ROUTE_PROTOCOL.to_string()])?.trim().is_empty());
    n1.set_peers(&peers).await?;
    let peer = tcp_exchange(&c_ns, c.ip, &a_ns)?;
    assert_eq!(ip(peer), IpAddr::V4(a.ip));

    drop((a_ns, b_ns, c_ns, d_ns));
    cluster.remove().await?;
    env.assert_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_set_idempotently_with_routes() -> Result<()> {
    let env = TestEnv::new();
    let cluster = two_nodes(&env, Overlay::None).await?;
    let n1 = &cluster.n1;
    let n1_name = n1.netns().name().to_owned();
    let show =
        || run_in_ns(&n1_name, &["ip", "route", "show", "proto", &ROUTE_PROTOCOL.to_string()]).map(|s| s.lines().map(str::trim).collect::<Vec<_>>().join("\n"));
    let own = (n1.node_ip(), cidr("10.244.1.0/24"));
    let n2 = (Ipv4Addr::new(172, 30, 0, 3), cidr("10.244.2.0/24"));
    let n3 = (Ipv4Addr::new(172, 30, 0, 4), cidr("10.244.3.0/24"));
    n1.set_peers(&[own, n2, n3]).await?;
    n1.set_peers(&[own, n2, n3]).await?;
    assert_eq!(show()?, "10.244.2.0/24 via 172.30.0.3 dev eth0\n10.244.3.0/24 via 172.30.0.4 dev eth0");
    // node 3 moved to another address, node 2 left.
    n1.set_peers(&[own, (Ipv4Addr::new(172, 30, 0, 9), cidr("10.244.3.0/24"))]).await?;
    assert_eq!(show()?, "10.244.3.0/24 via 172.30.0.9 dev eth0");
    n1.set_peers(&[]).await?;
    assert_eq!(show()?, "");
    // Routes of others are not ours to remove.
    run_in_ns(&n1_name, &["ip", "route", "add", "10.99.0.0/24", "via", "172.30.0.1"])?;
    n1.set_peers(&[n2]).await?;
    let all = run_in_ns(&n1_name, &["ip", "route", "show"])?;
    assert!(all.contains("10.99.0.0/24 via 172.30.0.1"), "{all}");
    cluster.remove().await?;
    env.assert_clean();
    Ok(())
}

/// `svcnet node` in the namespace it runs in, restarted after a crash: the podCIDR's bridge is
/// adopted, addresses survive, and what belongs to pods that are gone is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_in_its_own_namespace_reconciles_after_a_crash() -> Result<()> {
    let env = TestEnv::new();
    let host = HostNetwork::create_in(env.host_ns(), env.host_config()).await?;
    // A namespace with an uplink and a default route, as a real machine would have.
    let machine = host.create_node("m1", 1, env.node_config("unused", Overlay::None)).await?;
    let machine_ns = machine.netns();
    let config = env.node_config("m1", Overlay::None);
    let name = format!("{}-m", env.bridge);
    let prefix = format!("svcnet-{name}_");
    let start = |config: NodeConfig| {
        let runtime = tokio::runtime::Handle::current();
        let name = name.clone();
        machine_ns.run_in(move || runtime.block_on(NodeNetwork::in_current_netns(&name, Uplink::DefaultRoute, config)))
    };
    let first = start(config.clone())??;
    assert_eq!((first.node_ip(), first.uplink()), (Ipv4Addr::new(172, 30, 0, 2), "eth0"));
    first.set_pod_cidr(cidr("10.244.7.0/24")).await?;
    first.set_pod_cidr(cidr("10.244.7.0/24")).await?;
    assert!(matches!(first.set_pod_cidr(cidr("10.244.8.0/24")).await, Err(network::Error::PodCidrChanged { .. })));
    let (a_ns, a) = first.setup_pod("uid-a").await?;
    let (b_ns, b) = first.setup_pod("uid-b").await?;
    let (c_ns, _c) = first.setup_pod("uid-c").await?;
    assert!(a_ns.name().starts_with(&prefix));
    // The crash: nothing is cleaned up.
    first.keep();
    // (a crash does not run the pods' namespace guards either)
    std::mem::forget((b_ns, c_ns));
    assert_eq!(NetNs::list(&prefix)?.len(), 3);

    let second = start(config.clone())??;
    second.set_pod_cidr(cidr("10.244.7.0/24")).await?;
    let mut addresses = second.pod_addresses();
    addresses.sort();
    assert_eq!(addresses.len(), 3, "{addresses:?}");
    let report = second.reconcile(["uid-a", "uid-b"]).await?;
    assert_eq!(report.released.len(), 1);
    assert_eq!(report.released[0].1, "uid-c");
    assert_eq!(report.namespaces, vec![second.pod_netns_name("uid-c")]);
    assert_eq!(report.links, vec![pod_veth_name("uid-c")]);
    // The survivors keep their addresses; a new pod gets none of theirs and reaches them.
    assert_eq!(second.pod("uid-a").await?.map(|p| p.ip), Some(a.ip));
    assert_eq!(second.pod("uid-c").await?, None);
    assert_eq!(second.attach_pod("uid-a", &a_ns).await?.ip, a.ip);
    let (d_ns, d) = second.setup_pod("uid-d").await?;
    assert!(d.ip != a.ip && d.ip != b.ip);
    let peer = tcp_exchange(&a_ns, a.ip, &d_ns)?;
    assert_eq!(ip(peer), IpAddr::V4(d.ip));
    let report = second.reconcile(["uid-a"]).await?;
    assert_eq!(report.released.iter().map(|(_, uid)| uid.as_str()).collect::<Vec<_>>(), vec!["uid-b", "uid-d"]);

    drop((a_ns, d_ns));
    second.remove().await?;
    assert!(NetNs::list(&prefix)?.is_empty());
    let links = run_in_ns(machine_ns.name(), &["ip", "-o", "link", "show"])?;
    assert!(!links.contains("cbr0") && !links.contains("vp"), "{links}");
    let table = run_in_ns(machine_ns.name(), &["nft", "list", "tables"])?;
    assert!(!table.contains("svcnet-node"), "{table}");
    // The uplink is the machine's: left as it was.
    assert!(links.contains("eth0"));
    drop(machine_ns);
    machine.remove().await?;
    host.shutdown().await?;
    env.assert_clean();
    Ok(())
}

/// `svcnet up` after `kill -9`: the next start removes the old nodes' and pods' namespaces and
/// links and adopts the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_removes_what_a_killed_run_left() -> Result<()> {
    let env = TestEnv::new();
    let host = HostNetwork::create_in(env.host_ns(), env.host_config()).await?;
    let node = host.create_node("n1", 1, env.node_config("n1", Overlay::None)).await?;
    node.set_pod_cidr(cidr("10.244.1.0/24")).await?;
    let (pod_ns, _) = node.setup_pod("uid-a").await?;
    let node_ns = node.netns().name().to_owned();
    node.keep();
    host.keep();
    std::mem::forget(pod_ns);
    assert_eq!(NetNs::list(&format!("{}-", env.bridge))?.len(), 2);

    let host = HostNetwork::create_in(env.host_ns(), env.host_config()).await?;
    assert!(NetNs::list(&format!("{}-", env.bridge))?.is_empty(), "stale namespaces not removed");
    let links = run_in_ns(env.host_ns().name(), &["ip", "-o", "link", "show"])?;
    assert!(!links.contains(&format!("{}n1", env.bridge)), "{links}");
    // The node comes back under the same names.
    let node = host.create_node("n1", 1, env.node_config("n1", Overlay::None)).await?;
    assert_eq!(node.netns().name(), node_ns);
    node.remove().await?;
    host.shutdown().await?;
    env.assert_clean();
    Ok(())
}

/// Pods set up at the same time never share an address, and each is wired to its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pod_setups_get_distinct_addresses() -> Result<()> {
    let env = TestEnv::new();
    let host = HostNetwork::create_in(env.host_ns(), env.host_config()).await?;
    let node = Arc::new(host.create_node("n1", 1, env.node_config("n1", Overlay::None)).await?);
    node.set_pod_cidr(cidr("10.244.1.0/24")).await?;
    let setups = (0..16).map(|i| {
        let node = Arc::clone(&node);
        tokio::spawn(async move { node.setup_pod(&format!("uid-{i}")).await })
    });
    let mut pods = Vec::new();
    for setup in setups {
        pods.push(setup.await??);
    }
    let mut ips: Vec<Ipv4Addr> = pods.iter().map(|(_, p)| p.ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 16, "{ips:?}");
    for (pod_ns, pod) in &pods {
        let netlink = pod_ns.netlink()?;
        let eth0 = netlink.link_index("eth0").await?.context("no eth0")?;
        assert_eq!(netlink.addresses(eth0).await?, vec![(pod.ip, 24)]);
    }
    let peer = tcp_exchange(&pods[0].0, pods[0].1.ip, &pods[15].0)?;
    assert_eq!(ip(peer), IpAddr::V4(pods[15].1.ip));
    drop(pods);
    let node = Arc::into_inner(node).context("node still shared")?;
    node.remove().await?;
    host.shutdown().await?;
    env.assert_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pod_range_is_a_clear_error() -> Result<()> {
    let env = TestEnv::new();
    let host = HostNetwork::create_in(env.host_ns(), env.host_config()).await?;
    let node = host.create_node("n1", 1, env.node_config("n1", Overlay::None)).await?;
    node.set_pod_cidr(cidr("10.244.1.0/30")).await?;
    let (_a_ns, a) = node.setup_pod("uid-a").await?;
    assert_eq!(a.ip, Ipv4Addr::new(10, 244, 1, 2));
    let err = node.setup_pod("uid-b").await.unwrap_err();
    assert_eq!(err.to_string(), "no free address in 10.244.1.0/30: all 1 pod addresses are allocated");
    // Nothing of the failed pod is left.
    assert!(NetNs::list(&node.pod_netns_name("uid-b"))?.is_empty());
    assert!(node.netlink().link_index(&pod_veth_name("uid-b")).await?.is_none());
    assert!(matches!(host.create_node("n9", 300, env.node_config("n9", Overlay::None)).await, Err(network::Error::Config(_))));
    assert!(matches!(
        HostNetwork::create_in(env.host_ns(), HostConfig { bridge: "toolongname".into(), ..env.host_config() }).await,
        Err(network::Error::Config(_))
    ));
    node.remove().await?;
    host.shutdown().await?;
    env.assert_clean();
    Ok(())
}

// === benchmark ===

/// Pod network setup and teardown rate, next to the reference CNI plugins (`bridge` +
/// `host-local` from containernetworking-plugins, one `ip netns add` and one plugin run per pod)
/// doing the same in the same node namespace. Not a test: run by `bench/node-network.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by bench/node-network.sh"]
async fn bench_pod_network_setup() -> Result<()> {
    const CNI_BRIDGE: &str = "/usr/lib/cni/bridge";
    let pods: usize = std::env::var("BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let env = TestEnv::new();
    let host = HostNetwork::create_in(env.host_ns(), env.host_config()).await?;
    let node = host.create_node("n1", 1, env.node_config("n1", Overlay::None)).await?;
    node.set_pod_cidr(cidr("10.244.0.0/22")).await?;
    let node_ns = node.netns().name().to_owned();

    let started = Instant::now();
    let mut namespaces = Vec::new();
    for i in 0..pods {
        namespaces.push(node.setup_pod(&format!("bench-{i}")).await?.0);
    }
    let ours_setup = started.elapsed();
    let started = Instant::now();
    for i in 0..pods {
        node.detach_pod(&format!("bench-{i}")).await?;
    }
    drop(namespaces);
    let ours_teardown = started.elapsed();

    let baseline = if std::path::Path::new(CNI_BRIDGE).exists() {
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"cbrb","isGateway":true,"ipam":{{"type":"host-local","subnet":"10.250.0.0/22","dataDir":"{}"}}}}"#,
            env.dir.path().join("cni").display()
        );
        let cni = |command: &str, netns: &str, id: &str| -> Result<()> {
            let mut child = Command::new("ip")
                .args(["netns", "exec", &node_ns, CNI_BRIDGE])
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", id)
                .env("CNI_NETNS", format!("/run/netns/{netns}"))
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", "/usr/lib/cni")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            child.stdin.take().unwrap().write_all(conf.as_bytes())?;
            let output = child.wait_with_output()?;
            ensure!(output.status.success(), "CNI {command}: {}", String::from_utf8_lossy(&output.stderr));
            Ok(())
        };
        let name = |i: usize| format!("{}-b{i}", env.bridge);
        let started = Instant::now();
        for i in 0..pods {
            run(&["ip", "netns", "add", &name(i)])?;
            cni("ADD", &name(i), &format!("b{i}"))?;
        }
        let setup = started.elapsed();
        let started = Instant::now();
        for i in 0..pods {
            cni("DEL", &name(i), &format!("b{i}"))?;
            run(&["ip", "netns", "del", &name(i)])?;
        }
        Some((setup, started.elapsed()))
    } else {
        None
    };

    let rate = |d: Duration| pods as f64 / d.as_secs_f64();
    println!("pods: {pods}, sequential, one node namespace");
    println!("svcnet NodeNetwork   setup_pod {:8.1} pods/s   detach_pod {:8.1} pods/s", rate(ours_setup), rate(ours_teardown));
    match baseline {
        Some((setup, teardown)) => {
            println!("CNI bridge+host-local ADD      {:8.1} pods/s   DEL        {:8.1} pods/s", rate(setup), rate(teardown));
            println!("ratio (svcnet / CNI)           {:8.2}x               {:8.2}x", rate(ours_setup) / rate(setup), rate(ours_teardown) / rate(teardown));
        }
        None => println!("baseline skipped: {CNI_BRIDGE} is not installed (containernetworking-plugins)"),
    }
    node.remove().await?;
    host.shutdown().await?;
    env.assert_clean();
    Ok(())
}
