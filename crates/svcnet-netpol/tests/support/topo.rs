//! A node namespace with the pod bridge of the brief's layout (cbr0, isolated ports, proxy_arp +
//! proxy_arp_pvlan: every packet between pods is routed by the node), pods x/a ... z/c as
//! namespaces with TCP and UDP servers on 80 and 81, an in-process API server holding the same
//! Namespaces and Pods, one ClusterIP Service per pod (as upstream's e2e suite makes them:
//! Service ports 8080/8081 to target ports 80/81, TCP and UDP) programmed by the real
//! `svcnet-proxy` runner in the node namespace, and the NetworkPolicy runner under test.
//! Everything is removed by guards on drop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use svcnet_netns::NetNs;
use svcnet_netpol::matrix::Matrix;
use svcnet_netpol::nft::{self, CompileOptions};
use svcnet_netpol::{Applied, NetpolConfig, PodKey, PortProtocol, Protocol};
use tokio::sync::watch;

use super::{Change, Env, State};

pub fn ip(ns: &str, args: &str) -> Result<()> {
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

pub struct TestPod {
    pub key: PodKey,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    /// The ClusterIP of the pod's own Service (`s-<pod>` in its namespace).
    pub service_ip: Ipv4Addr,
    _servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestPod {
    fn drop(&mut self) {
        for s in &self._servers {
            s.abort();
        }
    }
}

/// The Service port in front of a pod's port: 80 -> 8080, 81 -> 8081 (the policy is judged
/// on the target port, after the proxy's DNAT).
pub fn service_port(port: PortProtocol) -> PortProtocol {
    PortProtocol { port: port.port + 8000, protocol: port.protocol }
}

pub struct Topology {
    pub env: Env,
    pub node: NetNs,
    /// An empty namespace where a fresh full table is loaded to compare with the node's.
    reference: NetNs,
    proxy: tokio::task::JoinHandle<()>,
    pub pods: Vec<TestPod>,
    pub client: kube::Client,
    pub state: State,
    applied: watch::Receiver<Applied>,
    runner: tokio::task::JoinHandle<()>,
    _server: svcnet_apiserver::ApiServer,
    _dir: tempfile::TempDir,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.runner.abort();
        self.proxy.abort();
    }
}

impl Topology {
    /// `tag`: unique per test, at most 6 characters; `subnet`: the third octet of 10.244.S.0/24.
    pub async fn new(tag: &str, subnet: u8, log_drops: bool) -> Result<Topology> {
        let tag = format!("np{tag}{}", std::process::id() % 100_000);
        let env = Env { base: Ipv4Addr::new(10, 244, subnet, 0) };
        let node = NetNs::create(&format!("{tag}-node"))?;
        ip(node.name(), "link add cbr0 type bridge")?;
        ip(node.name(), &format!("addr add {}/24 dev cbr0", Ipv4Addr::from(u32::from(env.base) + 1)))?;
        ip(node.name(), "link set cbr0 up")?;
        ip(node.name(), "link set lo up")?;
        node.enable_ip_forward()?;
        sysctl(&node, "net.ipv4.conf.cbr0.proxy_arp", "1")?;
        sysctl(&node, "net.ipv4.conf.cbr0.proxy_arp_pvlan", "1")?;
        sysctl(&node, "net.ipv4.conf.all.send_redirects", "0")?;
        sysctl(&node, "net.ipv4.conf.cbr0.send_redirects", "0")?;
        if std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            sysctl(&node, "net.bridge.bridge-nf-call-iptables", "0")?;
        }
        let mut pods = Vec::new();
        for key in env.all_pods() {
            let ns = NetNs::create(&format!("{tag}-{}-{}", key.namespace, key.name))?;
            let pod_ip = env.ip(&key.to_string());
            let host_side = format!("v{}{}", key.namespace, key.name);
            ip(node.name(), &format!("link add {host_side} type veth peer name eth0 netns {}", ns.name()))?;
            ip(node.name(), &format!("link set {host_side} master cbr0 up"))?;
            ip(node.name(), &format!("link set dev {host_side} type bridge_slave isolated on"))?;
            ip(ns.name(), &format!("addr add {pod_ip}/24 dev eth0"))?;
            ip(ns.name(), "link set eth0 up")?;
            ip(ns.name(), "link set lo up")?;
            ip(ns.name(), &format!("route add default via {}", Ipv4Addr::from(u32::from(env.base) + 1)))?;
            let mut servers = Vec::new();
            for port in [80u16, 81] {
                servers.push(tcp_server(&ns, port, &key.to_string())?);
                servers.push(udp_server(&ns, port, &key.to_string())?);
            }
            pods.push(TestPod { key, ns, ip: pod_ip, service_ip: Ipv4Addr::UNSPECIFIED, _servers: servers });
        }

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
        for ns in super::NAMESPACES {
            Api::<corev1::Namespace>::all(client.clone()).create(&PostParams::default(), &env.namespace(ns, &[])).await?;
        }
        for p in &mut pods {
            let mut pod = env.pod(&p.key, "node-1", &[]);
            let status = pod.status.take();
            let api: Api<corev1::Pod> = Api::namespaced(client.clone(), &p.key.namespace);
            api.create(&PostParams::default(), &pod).await?;
            api.patch_status(&p.key.name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
            p.service_ip = create_service(&client, p).await?;
        }
        let mut proxy_config = svcnet_proxy::ProxyConfig::new("node-1", Some(node.name().to_owned()), Vec::new());
        proxy_config.lb_interface = None;
        proxy_config.batch_interval = Duration::from_millis(10);
        let proxy_client = client.clone();
        let proxy = tokio::spawn(async move {
            if let Err(e) = svcnet_proxy::run(proxy_client, proxy_config).await {
                eprintln!("proxy ended: {e}");
            }
        });
        let reference = NetNs::create(&format!("{tag}-ref"))?;
        let (tx, applied) = watch::channel(Applied::default());
        let mut config = NetpolConfig::new("node-1", Some(node.name().to_owned()));
        config.log_drops = log_drops;
        config.publish_state = true;
        let runner_client = client.clone();
        let runner = tokio::spawn(async move {
            if let Err(e) = svcnet_netpol::run_observed(runner_client, config, tx).await {
                eprintln!("netpol runner ended: {e}");
            }
        });
        let mut t = Topology { env, node, reference, proxy, pods, client, state: State::default(), applied, runner, _server: server, _dir: dir };
        t.wait_applied().await?;
        t.wait_services().await?;
        Ok(t)
    }

    /// Makes `changes` in the API server.
    pub async fn change(&mut self, changes: &[Change]) -> Result<()> {
        for c in changes {
            match c {
                Change::Apply(v) => {
                    let np: netv1::NetworkPolicy = serde_json::from_value(v.clone())?;
                    let api: Api<netv1::NetworkPolicy> = Api::namespaced(self.client.clone(), np.metadata.namespace.as_deref().unwrap());
                    api.patch(np.metadata.name.as_deref().unwrap(), &PatchParams::apply("netpol-test").force(), &Patch::Apply(&np)).await?;
                }
                Change::Delete { namespace, name } => {
                    Api::<netv1::NetworkPolicy>::namespaced(self.client.clone(), namespace).delete(name, &DeleteParams::default()).await?;
                }
                Change::PodLabels(k, extra) => {
                    let mut labels: BTreeMap<String, serde_json::Value> =
                        self.state.pod_labels.get(k).into_iter().flatten().map(|(k, _)| (k.clone(), serde_json::Value::Null)).collect();
                    labels.extend(extra.iter().map(|(k, v)| (k.clone(), json!(v))));
                    Api::<corev1::Pod>::namespaced(self.client.clone(), &k.namespace)
                        .patch(&k.name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": labels}})))
                        .await?;
                }
                Change::NamespaceLabels(n, extra) => {
                    let mut labels: BTreeMap<String, serde_json::Value> =
                        self.state.ns_labels.get(n).into_iter().flatten().map(|(k, _)| (k.clone(), serde_json::Value::Null)).collect();
                    labels.extend(extra.iter().map(|(k, v)| (k.clone(), json!(v))));
                    Api::<corev1::Namespace>::all(self.client.clone())
                        .patch(n, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": labels}})))
                        .await?;
                }
            }
            self.state.apply(c);
        }
        Ok(())
    }

    /// Removes every policy and extra label (back to the scenario's start).
    pub async fn reset(&mut self) -> Result<()> {
        let mut undo: Vec<Change> =
            self.state.policies.keys().map(|(namespace, name)| Change::Delete { namespace: namespace.clone(), name: name.clone() }).collect();
        undo.extend(self.state.pod_labels.keys().map(|k| Change::PodLabels(k.clone(), Vec::new())));
        undo.extend(self.state.ns_labels.keys().map(|n| Change::NamespaceLabels(n.clone(), Vec::new())));
        self.change(&undo).await?;
        self.state = State::default();
        self.wait_applied().await
    }

    /// Waits until the runner has applied exactly the table the engine compiles for the current
    /// state (so probes see the change, not a moment before it).
    pub async fn wait_applied(&mut self) -> Result<()> {
        let want = nft::compile(&self.env.cluster(&self.state), &CompileOptions { node_name: Some("node-1".into()), log_drops: false });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.applied.borrow().generation > 0 && self.applied.borrow().state.as_deref() == Some(&want) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the runner did not apply the expected table within 60s; have {:?}, want {want:?}", self.applied.borrow().state);
            }
            let _ = tokio::time::timeout(left, self.applied.changed()).await;
        }
    }

    /// Waits until every pod's Service answers on every port (from another pod; no policy is in
    /// place yet), i.e. the proxy has programmed them all.
    async fn wait_services(&self) -> Result<()> {
        let ports = super::ports();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, via_service) = self.probe_all(&ports);
            let missing: Vec<String> = via_service
                .differences(&Matrix::filled(via_service.pods.clone(), ports.clone(), true))
                .iter()
                .map(|(p, f, t, _)| format!("{f}->{t} {p}"))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the per-pod Services did not all answer within 60s: {missing:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node's `inet svcnet-netpol` table, as built by the runner's incremental transactions,
    /// lists exactly as the same table loaded whole from a fresh full compile of the current state.
    pub async fn check_kernel_table(&self, log_drops: bool) -> Result<()> {
        let options = CompileOptions { node_name: Some("node-1".into()), log_drops };
        let want = nft::compile(&self.env.cluster(&self.state), &options);
        svcnet_netpol::runner::nft_apply(Some(self.reference.name()), &nft::full_script(&want, &options)).await?;
        let list = |ns: String| async move {
            let json = svcnet_netpol::runner::nft_command(Some(&ns), &["-j", "-s", "list", "table", "inet", nft::TABLE], None).await?;
            anyhow::Ok(normalize_listing(&json)?)
        };
        let (have, fresh) = (list(self.node.name().to_owned()).await?, list(self.reference.name().to_owned()).await?);
        if have != fresh {
            let only_have: Vec<&String> = have.iter().filter(|x| !fresh.contains(x)).collect();
            let only_fresh: Vec<&String> = fresh.iter().filter(|x| !have.contains(x)).collect();
            bail!("the incrementally built table differs from a fresh full load:\n only incremental: {only_have:#?}\n only fresh: {only_fresh:#?}");
        }
        Ok(())
    }

    pub fn pod(&self, key: &PodKey) -> &TestPod {
        self.pods.iter().find(|p| &p.key == key).expect("pod")
    }

    /// Probes every pair (not a pod to itself) on every port, all at once, to the pod's IP and
    /// through its Service; `true` = the server answered with its own name. Returns (via pod
    /// IP, via Service), the Service's cells under the target port.
    pub fn probe_all(&self, ports: &[PortProtocol]) -> (Matrix, Matrix) {
        let keys: Vec<PodKey> = self.pods.iter().map(|p| p.key.clone()).collect();
        let mut direct = Matrix::filled(keys.clone(), ports.to_vec(), true);
        let mut via_service = direct.clone();
        let results: Vec<(bool, PortProtocol, PodKey, PodKey, bool)> = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for port in ports {
                for from in &self.pods {
                    for to in &self.pods {
                        if from.key == to.key {
                            continue;
                        }
                        let port = *port;
                        for service in [false, true] {
                            let (addr, p) = if service { (to.service_ip, service_port(port)) } else { (to.ip, port) };
                            handles
                                .push(s.spawn(move || (service, port, from.key.clone(), to.key.clone(), probe(&from.ns, addr, p) == Some(to.key.to_string()))));
                        }
                    }
                }
            }
            handles.into_iter().map(|h| h.join().expect("probe thread")).collect()
        });
        for (service, port, f, t, ok) in results {
            if service { via_service.set(port, &f, &t, ok) } else { direct.set(port, &f, &t, ok) }
        }
        (direct, via_service)
    }
}

/// Creates the pod's Service `s-<pod>` (selectorless, ClusterIP; ports 8080/8081 to 80/81, TCP
/// and UDP) and its EndpointSlice; returns the allocated ClusterIP.
async fn create_service(client: &kube::Client, pod: &TestPod) -> Result<Ipv4Addr> {
    let name = format!("s-{}", pod.key.name);
    let mut ports = Vec::new();
    for p in super::ports() {
        let port_name = format!("{}{}", if p.protocol == Protocol::Tcp { "t" } else { "u" }, p.port);
        ports.push((port_name, p));
    }
    let service: corev1::Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": pod.key.namespace},
        "spec": {"type": "ClusterIP", "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": service_port(*p).port, "targetPort": p.port, "protocol": p.protocol.as_str()})).collect::<Vec<_>>()}
    }))?;
    let created = Api::<corev1::Service>::namespaced(client.clone(), &pod.key.namespace).create(&PostParams::default(), &service).await?;
    let cluster_ip: Ipv4Addr = created.spec.and_then(|s| s.cluster_ip).context("no ClusterIP allocated")?.parse()?;
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": pod.key.namespace, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p.port, "protocol": p.protocol.as_str()})).collect::<Vec<_>>(),
        "endpoints": [{"addresses": [pod.ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": pod.key.namespace, "name": pod.key.name}}],
    }))?;
    Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(client.clone(), &pod.key.namespace)
        .patch(&format!("{name}-1"), &PatchParams::apply("netpol-test").force(), &Patch::Apply(&slice))
        .await?;
    Ok(cluster_ip)
}

/// `nft -j -s list table` as a sorted list of objects, without handles, counter values and the
/// order of set elements (which depends on insertion order).
fn normalize_listing(json: &str) -> Result<Vec<String>> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for k in ["handle", "packets", "bytes"] {
                    m.remove(k);
                }
                for (k, x) in m.iter_mut() {
                    strip(x);
                    if k == "elem"
                        && let serde_json::Value::Array(items) = x
                    {
                        items.sort_by_key(|i| i.to_string());
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(json)?;
    let items = v.get_mut("nftables").and_then(|x| x.as_array_mut()).context("no nftables array")?;
    let mut out: Vec<String> = items
        .iter_mut()
        .filter(|i| i.get("metainfo").is_none())
        .map(|i| {
            strip(i);
            i.to_string()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// One new connection (TCP) or exchange (UDP, from a fresh socket) from `from` to `to:port`.
pub fn probe(from: &NetNs, to: Ipv4Addr, port: PortProtocol) -> Option<String> {
    let addr = SocketAddr::new(IpAddr::V4(to), port.port);
    let r = from.run_in(move || -> std::io::Result<String> {
        match port.protocol {
            Protocol::Tcp => {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(1000))?;
                s.set_read_timeout(Some(Duration::from_millis(1000)))?;
                let mut reply = String::new();
                s.read_to_string(&mut reply)?;
                Ok(reply)
            }
            _ => {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.set_read_timeout(Some(Duration::from_millis(1000)))?;
                s.send_to(b"?", addr)?;
                let mut buf = [0u8; 512];
                let (n, _) = s.recv_from(&mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
        }
    });
    match r {
        Ok(Ok(s)) => Some(s.trim().to_owned()),
        _ => None,
    }
}

fn tcp_server(ns: &NetNs, port: u16, name: &str) -> Result<tokio::task::JoinHandle<()>> {
    let listener = ns.run_in(move || std::net::TcpListener::bind(("0.0.0.0", port)))??;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let name = name.to_owned();
    Ok(tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            let reply = format!("{name}\n");
            tokio::spawn(async move {
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    }))
}

fn udp_server(ns: &NetNs, port: u16, name: &str) -> Result<tokio::task::JoinHandle<()>> {
    let socket = ns.run_in(move || UdpSocket::bind(("0.0.0.0", port)))??;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let name = name.to_owned();
    Ok(tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(name.as_bytes(), peer).await;
        }
    }))
}
