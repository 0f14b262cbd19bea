//! Test topology for the proxy's end-to-end tests, all inside network namespaces the test
//! creates (removed by their guards even when the test fails):
//!
//! ```text
//!  client ns (172.30.0.100/16) ──┐
//!                                ├─ bridge br0 in the "lan" ns (the node network)
//!  node ns N (eth0 172.30.0.1+N) ┘
//!     └─ cbr0 10.244.N.1/24, isolated ports, proxy_arp(+pvlan): every pod packet is routed here
//!          └─ pod ns (eth0 10.244.N.x/24, default via 10.244.N.1)
//! ```
//!
//! Servers run in the test process on sockets created inside the pod namespaces; clients on
//! sockets created in the client (or a pod) namespace. An API server runs in-process; the proxy
//! under test is `svcnet_proxy::run` on a task.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use svcnet_netns::NetNs;

/// Short, unique names: a per-test tag plus the process id (link and namespace names stay short).
pub fn unique(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

pub fn ip(ns: &str, args: &str) -> Result<()> {
    let mut command = Command::new("ip");
    command.args(["-n", ns]).args(args.split_whitespace());
    run(command)
}

pub fn exec(ns: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).args(args);
    let output = command.output().context("ip netns exec")?;
    if !output.status.success() {
        bail!("{args:?} in {ns}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run(mut command: Command) -> Result<()> {
    let output = command.output().with_context(|| format!("{command:?}"))?;
    if !output.status.success() {
        bail!("{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    exec(ns, &["sysctl", "-qw", &format!("{key}={value}")]).map(drop)
}

/// The node network, the client and the nodes of one test.
pub struct Topology {
    pub tag: String,
    pub lan: NetNs,
    pub client: NetNs,
    pub nodes: Vec<TestNode>,
}

pub struct TestNode {
    pub index: u8,
    pub name: String,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    pub pods: Vec<Pod>,
}

pub struct Pod {
    pub name: String,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
}

impl Topology {
    /// `tag` must be unique per test (at most 5 characters; the pid is appended).
    pub fn new(tag: &str, nodes: u8) -> Result<Topology> {
        let tag = unique(tag);
        let lan = NetNs::create(&format!("{tag}-lan"))?;
        ip(lan.name(), "link add br0 type bridge")?;
        ip(lan.name(), "link set br0 up")?;
        let client = NetNs::create(&format!("{tag}-client"))?;
        let mut topology = Topology { tag, lan, client, nodes: Vec::new() };
        topology.attach_to_lan(topology.client.name(), "c", "172.30.0.100")?;
        for n in 1..=nodes {
            topology.add_node(n)?;
        }
        // Routes between the nodes' pod networks.
        for a in &topology.nodes {
            for b in &topology.nodes {
                if a.index != b.index {
                    ip(a.ns.name(), &format!("route add 10.244.{}.0/24 via {}", b.index, b.ip))?;
                }
            }
        }
        Ok(topology)
    }

    fn attach_to_lan(&self, ns: &str, short: &str, address: &str) -> Result<()> {
        let lan_side = format!("{}-{short}", self.tag);
        ip(self.lan.name(), &format!("link add {lan_side} type veth peer name eth0 netns {ns}"))?;
        ip(self.lan.name(), &format!("link set {lan_side} master br0 up"))?;
        ip(ns, &format!("addr add {address}/16 dev eth0"))?;
        ip(ns, "link set eth0 up")?;
        ip(ns, "link set lo up")?;
        Ok(())
    }

    fn add_node(&mut self, index: u8) -> Result<()> {
        let name = format!("node-{index}");
        let ns = NetNs::create(&format!("{}-n{index}", self.tag))?;
        let node_ip = Ipv4Addr::new(172, 30, 0, 1 + index);
        self.attach_to_lan(ns.name(), &format!("n{index}"), &node_ip.to_string())?;
        ip(ns.name(), "link add cbr0 type bridge")?;
        ip(ns.name(), &format!("addr add 10.244.{index}.1/24 dev cbr0"))?;
        ip(ns.name(), "link set cbr0 up")?;
        ns.enable_ip_forward()?;
        sysctl(ns.name(), "net.ipv4.conf.cbr0.proxy_arp", "1")?;
        sysctl(ns.name(), "net.ipv4.conf.cbr0.proxy_arp_pvlan", "1")?;
        // Without it, packets to a local address arriving on cbr0 from a pod could be answered
        // with redirects; every packet must stay routed through the node.
        sysctl(ns.name(), "net.ipv4.conf.all.send_redirects", "0")?;
        sysctl(ns.name(), "net.ipv4.conf.cbr0.send_redirects", "0")?;
        // With br_netfilter loaded (by anyone on the machine), bridged frames would be DNATed at
        // the bridge and forwarded between isolated ports, which the bridge refuses: pod
        // traffic must be routed, not bridged, through netfilter.
        if exec(ns.name(), &["test", "-e", "/proc/sys/net/bridge/bridge-nf-call-iptables"]).is_ok() {
            sysctl(ns.name(), "net.bridge.bridge-nf-call-iptables", "0")?;
            sysctl(ns.name(), "net.bridge.bridge-nf-call-ip6tables", "0")?;
        }
        self.nodes.push(TestNode { index, name, ns, ip: node_ip, pods: Vec::new() });
        Ok(())
    }

    /// A pod on node `node` (1-based) with address 10.244.NODE.HOST.
    pub fn add_pod(&mut self, node: u8, host: u8) -> Result<&Pod> {
        let tag = self.tag.clone();
        let node = &mut self.nodes[usize::from(node - 1)];
        let ns = NetNs::create(&format!("{tag}-p{}-{host}", node.index))?;
        let pod_ip = Ipv4Addr::new(10, 244, node.index, host);
        let host_side = format!("v{}-{}", node.index, host);
        ip(node.ns.name(), &format!("link add {host_side} type veth peer name eth0 netns {}", ns.name()))?;
        ip(node.ns.name(), &format!("link set {host_side} master cbr0 up"))?;
        ip(node.ns.name(), &format!("link set dev {host_side} type bridge_slave isolated on"))?;
        ip(ns.name(), &format!("addr add {pod_ip}/24 dev eth0"))?;
        ip(ns.name(), "link set eth0 up")?;
        ip(ns.name(), "link set lo up")?;
        ip(ns.name(), &format!("route add default via 10.244.{}.1", node.index))?;
        node.pods.push(Pod { name: format!("pod-{}-{host}", node.index), ns, ip: pod_ip });
        Ok(node.pods.last().expect("just pushed"))
    }

    /// Registers every node with the API server, Ready.
    pub async fn add_nodes_api(&mut self, cluster: &Cluster) -> Result<()> {
        for node in &self.nodes {
            cluster.create_ready_node(&node.name, node.ip).await?;
        }
        Ok(())
    }

    pub fn node(&self, n: u8) -> &TestNode {
        &self.nodes[usize::from(n - 1)]
    }

    pub fn pod(&self, node: u8, host: u8) -> &Pod {
        let pod_ip = Ipv4Addr::new(10, 244, node, host);
        self.node(node).pods.iter().find(|p| p.ip == pod_ip).expect("pod exists")
    }

    /// The proxy's view of node `n`.
    pub fn proxy_config(&self, n: u8) -> svcnet_proxy::ProxyConfig {
        let node = self.node(n);
        let mut config = svcnet_proxy::ProxyConfig::new(node.name.clone(), Some(node.ns.name().to_owned()), vec![IpAddr::V4(node.ip)]);
        config.batch_interval = Duration::from_millis(10);
        config.table_check_interval = Duration::from_millis(500);
        config
    }
}

/// A TCP server in a namespace answering every connection with `NAME PEER-IP\n`.
pub fn tcp_server(ns: &NetNs, addr: SocketAddr, name: &str) -> Result<ServerGuard> {
    let listener = ns.run_in(move || std::net::TcpListener::bind(addr))??;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, peer)) = listener.accept().await {
            let reply = format!("{name} {}\n", peer.ip());
            tokio::spawn(async move {
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(ServerGuard(task))
}

/// A UDP server in a namespace answering every datagram with `NAME`.
pub fn udp_server(ns: &NetNs, addr: SocketAddr, name: &str) -> Result<ServerGuard> {
    let socket = ns.run_in(move || UdpSocket::bind(addr))??;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let name = name.to_owned();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(name.as_bytes(), peer).await;
        }
    });
    Ok(ServerGuard(task))
}

/// Stops the server (closing its socket) when dropped.
pub struct ServerGuard(tokio::task::JoinHandle<()>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server's reply line.
    Reply(String),
    Refused,
    /// Timed out or any other error.
    Failed(String),
}

/// One TCP connection from a socket created in `ns`, with a short timeout.
pub fn connect(ns: &NetNs, addr: SocketAddr) -> Outcome {
    let attempt = ns.run_in(move || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))?;
        stream.set_read_timeout(Some(Duration::from_millis(1500)))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply.trim().to_owned())
    });
    match attempt {
        Ok(Ok(reply)) if !reply.is_empty() => Outcome::Reply(reply),
        Ok(Ok(_)) => Outcome::Failed("empty reply".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// A UDP socket in `ns` bound to a fixed port, so every datagram is the same conntrack flow.
pub struct UdpClient(UdpSocket);

impl UdpClient {
    pub fn new(ns: &NetNs, port: u16) -> Result<UdpClient> {
        let socket = ns.run_in(move || UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))))??;
        socket.set_read_timeout(Some(Duration::from_millis(300)))?;
        Ok(UdpClient(socket))
    }

    pub fn ask(&self, to: SocketAddr) -> Option<String> {
        self.0.send_to(b"?", to).ok()?;
        let mut buf = [0u8; 1500];
        let (n, _) = self.0.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with the last value seen.
pub async fn eventually<T, F: FnMut() -> std::result::Result<T, String>>(what: &str, timeout: Duration, mut f: F) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => bail!("{what}: not reached within {timeout:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// An API server in this process, with a client.
pub struct Cluster {
    pub client: kube::Client,
    _server: svcnet_apiserver::ApiServer,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let store = svcnet_store::RedbStore::open(&dir.path().join("store.redb"))?;
        let store: Arc<dyn svcnet_store::Storage> = store;
        let config = svcnet_apiserver::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.path().to_owned(),
            extra_sans: Vec::new(),
            service_ranges: svcnet_apiserver::service_alloc::ServiceRanges::parse("10.96.0.0/12", "30000-32767")?,
        };
        let server = svcnet_apiserver::ApiServer::start(config, store).await?;
        let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        Ok(Cluster { client, _server: server, _dir: dir })
    }

    pub async fn create_service(&self, value: serde_json::Value) -> Result<Service> {
        let service: Service = serde_json::from_value(value)?;
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        Ok(api.create(&PostParams::default(), &service).await?)
    }

    pub async fn patch_service_status(&self, name: &str, status: serde_json::Value) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "status": status }))).await?;
        Ok(())
    }

    /// Creates or replaces the EndpointSlice `NAME` of Service `service`.
    pub async fn put_slice(&self, name: &str, service: &str, ports: serde_json::Value, endpoints: serde_json::Value) -> Result<()> {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        }))?;
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "default");
        let params = PatchParams::apply("svcnet-proxy-test").force();
        api.patch(name, &params, &Patch::Apply(&slice)).await?;
        Ok(())
    }

    pub async fn create_ready_node(&self, name: &str, address: Ipv4Addr) -> Result<()> {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        let api: Api<Node> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &node).await?;
        let status = serde_json::json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "addresses": [{"type": "InternalIP", "address": address.to_string()}],
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await?;
        Ok(())
    }
}

/// The ClusterIP of a created Service.
pub fn cluster_ip(service: &Service) -> Ipv4Addr {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).expect("allocated").parse().expect("IPv4")
}

/// Runs the proxy for the test's lifetime.
pub struct ProxyGuard(tokio::task::JoinHandle<()>);

impl ProxyGuard {
    pub fn start(client: &kube::Client, config: svcnet_proxy::ProxyConfig) -> ProxyGuard {
        let client = client.clone();
        ProxyGuard(tokio::spawn(async move {
            if let Err(error) = svcnet_proxy::run(client, config).await {
                eprintln!("proxy ended: {error}");
            }
        }))
    }
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn reply_name(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Reply(line) => line.split_whitespace().next(),
        _ => None,
    }
}

pub fn reply_peer(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Reply(line) => line.split_whitespace().nth(1),
        _ => None,
    }
}

pub fn write_all(mut stream: TcpStream, data: &[u8]) -> std::io::Result<()> {
    stream.write_all(data)
}

// === Scaffolding of the end-to-end tests (e2e.rs, e2e_behaviours.rs) ===

/// How long a test waits for a condition (rules in place, a flow moved, an address held).
pub const WAIT: Duration = Duration::from_secs(20);

pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// A ready endpoint of an EndpointSlice.
pub fn endpoint(ip: &str, node: &str) -> serde_json::Value {
    serde_json::json!({"addresses": [ip], "nodeName": node})
}

/// An EndpointSlice's `ports`: one TCP port.
pub fn tcp_port(port: u16) -> serde_json::Value {
    serde_json::json!([{"port": port, "protocol": "TCP"}])
}

/// The NodePort allocated to the Service's port `index`.
pub fn node_port(service: &Service, index: usize) -> u16 {
    service.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|p| p[index].node_port).expect("allocated") as u16
}

/// Servers "a" (10.244.1.10), "b" (10.244.1.11), "c" (10.244.2.10) on `port`, a client pod
/// 10.244.1.50, and the proxy on every node.
pub struct Fixture {
    pub topology: Topology,
    pub cluster: Cluster,
    _servers: Vec<ServerGuard>,
    /// One proxy per node; dropping them stops the proxies.
    pub proxies: Vec<ProxyGuard>,
}

/// A [`Fixture`] on `nodes` nodes (at least 2).
pub async fn fixture(tag: &str, nodes: u8, port: u16) -> Result<Fixture> {
    let mut topology = Topology::new(tag, nodes)?;
    let cluster = Cluster::start().await?;
    for (node, host) in [(1, 10), (1, 11), (2, 10), (1, 50)] {
        topology.add_pod(node, host)?;
    }
    let servers = vec![
        tcp_server(&topology.pod(1, 10).ns, sa([0, 0, 0, 0], port), "a")?,
        tcp_server(&topology.pod(1, 11).ns, sa([0, 0, 0, 0], port), "b")?,
        tcp_server(&topology.pod(2, 10).ns, sa([0, 0, 0, 0], port), "c")?,
    ];
    let proxies = (1..=nodes).map(|n| ProxyGuard::start(&cluster.client, topology.proxy_config(n))).collect();
    Ok(Fixture { topology, cluster, _servers: servers, proxies })
}

/// The [`Fixture`]'s endpoints a, b and c.
pub fn abc() -> serde_json::Value {
    serde_json::json!([endpoint("10.244.1.10", "node-1"), endpoint("10.244.1.11", "node-1"), endpoint("10.244.2.10", "node-2")])
}

/// One node, pods 10.244.1.10, .11 and .50, and a UDP Service `dns` (port 53, target 5353) whose
/// one endpoint is a UDP server "old" on 10.244.1.10; the proxy runs.
pub struct UdpFixture {
    pub topology: Topology,
    pub cluster: Cluster,
    /// The server "old", until a test takes it to stop it.
    pub old: Option<ServerGuard>,
    /// The ClusterIP, port 53.
    pub vip: SocketAddr,
    /// The proxy on node-1; `None` stops it.
    pub proxy: Option<ProxyGuard>,
}

impl UdpFixture {
    pub async fn start(tag: &str) -> Result<UdpFixture> {
        let mut topology = Topology::new(tag, 1)?;
        let cluster = Cluster::start().await?;
        for host in [10, 11, 50] {
            topology.add_pod(1, host)?;
        }
        let old = udp_server(&topology.pod(1, 10).ns, sa([0, 0, 0, 0], 5353), "old")?;
        let service = cluster
            .create_service(serde_json::json!({"metadata": {"name": "dns"}, "spec": {"ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353}]}}))
            .await?;
        let vip = sa(cluster_ip(&service), 53);
        put_dns_endpoints(&cluster, serde_json::json!([endpoint("10.244.1.10", "node-1")])).await?;
        let proxy = ProxyGuard::start(&cluster.client, topology.proxy_config(1));
        Ok(UdpFixture { topology, cluster, old: Some(old), vip, proxy: Some(proxy) })
    }

    /// Replaces the endpoints of `dns` (port 5353/UDP).
    pub async fn put_endpoints(&self, endpoints: serde_json::Value) -> Result<()> {
        put_dns_endpoints(&self.cluster, endpoints).await
    }
}

async fn put_dns_endpoints(cluster: &Cluster, endpoints: serde_json::Value) -> Result<()> {
    cluster.put_slice("dns-1", "dns", serde_json::json!([{"port": 5353, "protocol": "UDP"}]), endpoints).await
}

/// Connects from `ns` through `to` until a connection gets a reply, which it returns.
pub async fn first_reply(what: &str, ns: &NetNs, to: SocketAddr) -> Result<Outcome> {
    eventually(what, WAIT, || match connect(ns, to) {
        outcome @ Outcome::Reply(_) => Ok(outcome),
        other => Err(format!("{other:?}")),
    })
    .await
}

/// Connects from `ns` through `to` until a connection is refused.
pub async fn until_refused(what: &str, ns: &NetNs, to: SocketAddr) -> Result<()> {
    eventually(what, WAIT, || match connect(ns, to) {
        Outcome::Refused => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await
}

/// Waits for a first reply through `to`, then makes `n` more connections: names seen
/// (`<failed>` for a connection without a reply).
pub async fn names(ns: &NetNs, to: SocketAddr, n: usize) -> Result<std::collections::BTreeMap<String, usize>> {
    first_reply(&format!("a first reply from {to}"), ns, to).await?;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let outcome = connect(ns, to);
        *seen.entry(reply_name(&outcome).unwrap_or("<failed>").to_owned()).or_insert(0) += 1;
    }
    Ok(seen)
}

/// An HTTP/1.0 GET from a socket in `ns`: status, head (lower case) and body.
pub fn http_get(ns: &NetNs, to: SocketAddr, path: &str) -> std::result::Result<(u16, String, String), String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n");
    let response = ns
        .run_in(move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&to, Duration::from_millis(1500))?;
            stream.set_read_timeout(Some(Duration::from_millis(1500)))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| response.clone())?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| response.clone())?;
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}
