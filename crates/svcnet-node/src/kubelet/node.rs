//! The Node object: registration, status heartbeats, the Lease in `kube-node-lease`, and the pod
//! network's configuration from the Nodes (this node's podCIDR, the other nodes' podCIDRs and
//! addresses).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{KubeletConfig, Shared};

/// How often the Lease is renewed (upstream: a quarter of its 40 s duration).
const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the Ready condition's heartbeat is posted.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The version this agent reports as `kubeletVersion`.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-svcnet.", env!("CARGO_PKG_VERSION"));

/// Creates the Node if it does not exist (a restarted agent keeps its Node and podCIDR), and
/// posts its status.
pub async fn register(client: &Client, config: &KubeletConfig) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("kubernetes.io/hostname".into(), config.node_name.clone()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
        ("beta.kubernetes.io/os".into(), "linux".into()),
    ]);
    labels.extend(config.labels.clone());
    if nodes.get_opt(&config.node_name).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": config.node_name, "labels": labels},
            "spec": {}
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => tracing::info!(node = %config.node_name, "registered the node"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        nodes.patch(&config.node_name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": labels}}))).await?;
    }
    post_status(client, config, None).await
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into())
}

fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())))
        .unwrap_or(0)
}

/// Posts the node's status: addresses, the agent's endpoint, capacity, node info, and the
/// conditions (Ready with a fresh heartbeat; `NetworkUnavailable` until the pod network is up).
pub async fn post_status(client: &Client, config: &KubeletConfig, network_ready: Option<bool>) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = jiff::Timestamp::now().to_string();
    let current = nodes.get_opt(&config.node_name).await?;
    let old =
        |t: &str| current.as_ref().and_then(|n| n.status.as_ref()).and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == t).cloned());
    let condition = |t: &str, status: &str, reason: &str, message: &str| {
        let transition = match old(t) {
            Some(c) if c.status == status => c.last_transition_time.map(|t| t.0.to_string()).unwrap_or_else(|| now.clone()),
            _ => now.clone(),
        };
        json!({"type": t, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": transition})
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let capacity = json!({"cpu": cpus.to_string(), "memory": format!("{}Ki", memory_kib()), "pods": "110", "ephemeral-storage": "0"});
    let mut conditions = vec![
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ];
    if let Some(up) = network_ready {
        conditions.push(if up {
            condition("NetworkUnavailable", "False", "RouteCreated", "svcnet set up the pod network")
        } else {
            condition("NetworkUnavailable", "True", "NoRouteCreated", "waiting for the node's podCIDR")
        });
    } else if let Some(c) = old("NetworkUnavailable") {
        conditions.push(serde_json::to_value(c)?);
    }
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": config.node_ip.to_string()}, {"type": "Hostname", "address": config.node_name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "capacity": capacity, "allocatable": capacity,
        "conditions": conditions,
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": boot_id(), "kernelVersion": kernel(), "osImage": os_image(),
            "containerRuntimeVersion": concat!("svcnet://", env!("CARGO_PKG_VERSION")), "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH.replace("x86_64", "amd64")
        }
    }});
    nodes.patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

/// Renews the Lease and posts the status heartbeat, forever; configures the pod network's peers
/// as Nodes come and go.
pub async fn maintain(shared: Arc<Shared>) {
    let client = shared.client.clone();
    let config = shared.config.clone();
    let lease_loop = async {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let mut tick = tokio::time::interval(LEASE_RENEW);
        loop {
            tick.tick().await;
            if let Err(error) = renew_lease(&client, &leases, &config).await {
                tracing::warn!(%error, "renewing the node lease");
            }
        }
    };
    let status_loop = async {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(error) = post_status(&client, &config, None).await {
                tracing::warn!(error = format!("{error:#}"), "posting node status");
            }
        }
    };
    tokio::join!(lease_loop, status_loop, peers(shared.clone()));
}

async fn renew_lease(client: &Client, leases: &Api<Lease>, config: &KubeletConfig) -> anyhow::Result<()> {
    let now = MicroTime(jiff::Timestamp::now());
    match leases.get_opt(&config.node_name).await? {
        Some(_) => {
            leases
                .patch(&config.node_name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"renewTime": now, "holderIdentity": config.node_name}})))
                .await?;
        }
        None => {
            let uid = Api::<Node>::all(client.clone()).get(&config.node_name).await?.uid();
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": config.node_name, "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": config.node_name, "uid": uid}]},
                "spec": {"holderIdentity": config.node_name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}
            }))?;
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP")?.address.parse().ok()
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec.as_ref()?.pod_cidr.clone().filter(|c| !c.is_empty())
}

/// Waits until [`peers`] has configured the pod network with the node's podCIDR, then reports
/// the network as available.
pub async fn wait_for_network(shared: &Shared) -> anyhow::Result<()> {
    tracing::info!(node = %shared.config.node_name, "waiting for the node's podCIDR");
    shared.network_ready.subscribe().wait_for(|ready| *ready).await?;
    post_status(&shared.client, &shared.config, Some(true)).await?;
    tracing::info!(node = %shared.config.node_name, "pod network ready");
    Ok(())
}

/// Keeps the pod network's routes to the other nodes current.
async fn peers(shared: Arc<Shared>) {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let (store, writer) = reflector::store::<Node>();
    // The reflector fills its store from the initial list only at `InitDone`: acting on the
    // list's objects one by one would see an empty store (and then wait for the next change).
    let mut stream = std::pin::pin!(reflector::reflector(writer, watcher(nodes, watcher::Config::default())).default_backoff());
    let mut last: Option<(String, Vec<(Ipv4Addr, String)>)> = None;
    while let Some(event) = stream.next().await {
        if !matches!(event, Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_))) {
            continue;
        }
        let all = store.state();
        let Some(me) = all.iter().find(|n| n.name_any() == shared.config.node_name) else { continue };
        let Some(cidr) = pod_cidr(me) else { continue };
        let mut others: Vec<(Ipv4Addr, String)> =
            all.iter().filter(|n| n.name_any() != shared.config.node_name).filter_map(|n| Some((internal_ip(n)?, pod_cidr(n)?))).collect();
        others.sort();
        let want = (cidr, others);
        if last.as_ref() == Some(&want) {
            continue;
        }
        match shared.network.configure(&want.0, &want.1).await {
            Ok(()) => {
                tracing::info!(peers = want.1.len(), "pod network routes to other nodes updated");
                shared.network_ready.send_replace(true);
                last = Some(want);
            }
            Err(error) => tracing::warn!(error = format!("{error:#}"), "configuring routes to other nodes"),
        }
    }
}
