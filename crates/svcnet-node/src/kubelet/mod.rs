//! The pod runtime: what the kubelet does, for pods whose containers are processes from the
//! node's filesystem (no images are pulled).
//!
//! [`run`] registers the `Node` ([`node`]), keeps its Lease and Ready condition, gives the node's
//! network its podCIDR and peers, and runs one worker per pod bound to the node ([`pod`]): the
//! sandbox (network namespace from the [`PodNetworking`], hostname, `resolv.conf`, `hosts`), the
//! containers as processes in it, restarts with back-off, [`probe`]s, graceful termination, and
//! the pod's status. Everything is learned from and reported to the Kubernetes API.
//!
//! Errors here are only logged or shown in a pod's status, so they are `anyhow` values.

pub mod dns;
pub mod env;
pub mod node;
pub mod pod;
pub mod probe;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use svcnet_netns::NetNs;

use crate::runtime::{ContainerHandle, LookupError, PodRuntime};

/// The node's pod network, as the kubelet uses it (a CNI plugin's job).
pub trait PodNetworking: Send + Sync + 'static {
    /// The node's network namespace: probes connect from it.
    fn node_netns(&self) -> Arc<NetNs>;
    /// Sets the node's podCIDR (once it is known) and the other nodes' (routes to them).
    fn configure<'a>(&'a self, pod_cidr: &'a str, peers: &'a [(Ipv4Addr, String)]) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Creates the pod's network namespace and wires it: the namespace and the pod's address.
    fn setup<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, anyhow::Result<(NetNs, Ipv4Addr)>>;
    /// Removes the pod's network namespace and releases its address.
    fn teardown<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Removes whatever belongs to pods not in `live` (after a restart).
    fn reconcile<'a>(&'a self, live: &'a HashSet<String>) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// The kubelet's settings.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The Node's name.
    pub node_name: String,
    /// The node's InternalIP.
    pub node_ip: Ipv4Addr,
    /// Where pods' files live (logs, resolv.conf, hosts, pid files): `<state_dir>/pods/<uid>/`.
    pub state_dir: PathBuf,
    /// Cluster DNS as pods see it.
    pub dns: dns::ClusterDns,
    /// The port of the node's API advertised in `status.daemonEndpoints`.
    pub kubelet_port: u16,
    /// The program run for containers of upstream's agnhost image (`svcnet agnhost`), if any.
    pub agnhost: Option<PathBuf>,
    /// The node's labels besides the well-known ones.
    pub labels: BTreeMap<String, String>,
}

/// The pods this node runs, for the node's API.
#[derive(Default)]
pub struct Registry {
    pods: Mutex<HashMap<(String, String), PodEntry>>,
}

/// What the registry knows of one pod.
#[derive(Clone, Debug, Default)]
pub struct PodEntry {
    pub uid: String,
    pub netns_path: PathBuf,
    /// In spec order (init containers first).
    pub containers: Vec<ContainerHandle>,
    /// The container `kubectl` picks when none is named (the annotation
    /// `kubectl.kubernetes.io/default-container`, else the first).
    pub default_container: Option<String>,
}

impl Registry {
    pub fn set(&self, namespace: &str, name: &str, entry: PodEntry) {
        self.pods.lock().unwrap().insert((namespace.into(), name.into()), entry);
    }

    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        let mut pods = self.pods.lock().unwrap();
        if pods.get(&(namespace.into(), name.into())).is_some_and(|e| e.uid == uid) {
            pods.remove(&(namespace.into(), name.into()));
        }
    }
}

impl PodRuntime for Registry {
    fn container(&self, namespace: &str, name: &str, container: Option<&str>) -> Result<ContainerHandle, LookupError> {
        let pods = self.pods.lock().unwrap();
        let Some(entry) = pods.get(&(namespace.to_string(), name.to_string())) else {
            return Err(LookupError::PodNotFound { namespace: namespace.into(), name: name.into() });
        };
        let wanted = match container {
            Some(c) => c.to_string(),
            None => match &entry.default_container {
                Some(c) => c.clone(),
                None => {
                    return Err(LookupError::ContainerNotSpecified {
                        pod: name.into(),
                        containers: entry.containers.iter().map(|c| c.container.clone()).collect(),
                    });
                }
            },
        };
        entry.containers.iter().find(|c| c.container == wanted).cloned().ok_or(LookupError::ContainerNotFound { pod: name.into(), container: wanted })
    }
}

/// What every pod worker shares.
pub struct Shared {
    pub client: Client,
    pub config: KubeletConfig,
    pub network: Arc<dyn PodNetworking>,
    pub registry: Arc<Registry>,
    pub services: reflector::Store<Service>,
    /// Set once the pod network has the node's podCIDR (by the loop that also keeps the peers).
    pub network_ready: tokio::sync::watch::Sender<bool>,
}

/// Runs the kubelet until a fatal error: registers the node, then runs the pods bound to it.
/// `registry` is what the node's API serves logs, exec and port-forward from.
pub async fn run(client: Client, config: KubeletConfig, network: Arc<dyn PodNetworking>, registry: Arc<Registry>) -> anyhow::Result<()> {
    std::fs::create_dir_all(config.state_dir.join("pods"))?;
    node::register(&client, &config).await?;

    let services: Api<Service> = Api::all(client.clone());
    let (services_store, writer) = reflector::store();
    let services_task = tokio::spawn(reflector::reflector(writer, watcher(services, watcher::Config::default())).default_backoff().for_each(|_| async {}));

    let shared = Arc::new(Shared {
        client: client.clone(),
        config: config.clone(),
        network: network.clone(),
        registry,
        services: services_store.clone(),
        network_ready: tokio::sync::watch::Sender::new(false),
    });
    let node_task = tokio::spawn(node::maintain(shared.clone()));

    // The pod network exists once the node has its podCIDR.
    node::wait_for_network(&shared).await?;
    services_store.wait_until_ready().await?;

    let pods: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={}", config.node_name);
    let mut stream = std::pin::pin!(watcher(pods, watcher::Config::default().fields(&selector)).default_backoff());
    let mut workers: HashMap<String, pod::WorkerHandle> = HashMap::new();
    let mut initial: Option<HashSet<String>> = Some(HashSet::new());
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(%error, "pod watch");
                continue;
            }
        };
        match event {
            watcher::Event::Init => initial = Some(HashSet::new()),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let uid = p.uid().unwrap_or_default();
                if let Some(set) = initial.as_mut() {
                    set.insert(uid.clone());
                }
                match workers.get(&uid) {
                    Some(w) if !w.is_finished() => w.update(p),
                    _ => {
                        if pod::is_finished(&p) && !workers.contains_key(&uid) && p.metadata.deletion_timestamp.is_none() {
                            // A pod that already ran to completion (before a restart): nothing to run.
                            continue;
                        }
                        workers.insert(uid, pod::spawn_worker(shared.clone(), p));
                    }
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(w) = workers.remove(&p.uid().unwrap_or_default()) {
                    w.deleted();
                }
            }
            watcher::Event::InitDone => {
                if let Some(live) = initial.take() {
                    // Whatever a previous run left for pods that are gone is removed.
                    pod::remove_stale(&shared, &live).await;
                    if let Err(error) = network.reconcile(&live).await {
                        tracing::warn!(%error, "reconciling pod networks");
                    }
                }
            }
        }
        workers.retain(|_, w| !w.is_finished());
    }
    services_task.abort();
    node_task.abort();
    anyhow::bail!("the pod watch ended")
}

/// The pods' directory of a pod.
pub fn pod_dir(config: &KubeletConfig, uid: &str) -> PathBuf {
    config.state_dir.join("pods").join(uid)
}

/// The Services a container's environment is built from (its namespace and `default`).
pub fn services_for(shared: &Shared, namespace: &str) -> Vec<Service> {
    shared
        .services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref().is_some_and(|ns| ns == namespace || ns == "default"))
        .map(|s| (**s).clone())
        .collect()
}

// === impl PodNetworking for NodeNetwork ===

impl PodNetworking for crate::network::NodeNetwork {
    fn node_netns(&self) -> Arc<NetNs> {
        self.netns()
    }

    fn configure<'a>(&'a self, pod_cidr: &'a str, peers: &'a [(Ipv4Addr, String)]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.set_pod_cidr(pod_cidr.parse()?).await?;
            let peers = peers.iter().map(|(ip, cidr)| Ok((*ip, cidr.parse()?))).collect::<anyhow::Result<Vec<_>>>()?;
            self.set_peers(&peers).await?;
            Ok(())
        })
    }

    fn setup<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, anyhow::Result<(NetNs, Ipv4Addr)>> {
        Box::pin(async move {
            let (ns, network) = self.setup_pod(pod_uid).await?;
            Ok((ns, network.ip))
        })
    }

    fn teardown<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.detach_pod(pod_uid).await?;
            Ok(())
        })
    }

    fn reconcile<'a>(&'a self, live: &'a HashSet<String>) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            crate::network::NodeNetwork::reconcile(self, live.iter()).await?;
            Ok(())
        })
    }
}
