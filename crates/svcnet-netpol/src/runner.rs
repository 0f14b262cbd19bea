//! The node-side runner: list+watch NetworkPolicies, Pods and Namespaces, compile the node's
//! table and apply each change as one `nft -f -` transaction of element additions and deletions
//! in the node's network namespace.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};

use crate::engine::Cluster;
use crate::nft::{self, CompileOptions, NodeState};
use crate::{Error, Result};

/// What the runner needs to know.
#[derive(Clone, Debug)]
pub struct NetpolConfig {
    /// The node whose pods (by `spec.nodeName`) this runner isolates.
    pub node_name: String,
    /// The network namespace (`/run/netns/NAME`) holding the node's pod bridge; `None` for the
    /// namespace the process runs in.
    pub netns_name: Option<String>,
    /// Log drops (rate-limited, `nft log` with the pod and the isolating policies).
    pub log_drops: bool,
}

impl NetpolConfig {
    pub fn new(node_name: impl Into<String>, netns_name: Option<String>) -> NetpolConfig {
        NetpolConfig { node_name: node_name.into(), netns_name, log_drops: false }
    }
}

/// What the runner has applied, for observers (tests, benchmarks, metrics).
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// How many transactions have been applied since the start (0: none yet).
    pub generation: u64,
    /// The elements of all pod sets.
    pub elements: usize,
    /// Isolated pod chains (both directions).
    pub chains: usize,
    /// The state the table is in.
    pub state: Arc<NodeState>,
}

/// Runs until the API watches end (never, normally) or the task is dropped.
pub async fn run(client: kube::Client, config: NetpolConfig) -> Result<()> {
    run_observed(client, config, watch::channel(Applied::default()).0).await
}

/// [`run`], publishing each applied state on `applied`.
pub async fn run_observed(client: kube::Client, config: NetpolConfig, applied: watch::Sender<Applied>) -> Result<()> {
    let changed = Arc::new(Notify::new());
    let (policies, f1) = reflect::<netv1::NetworkPolicy>(Api::all(client.clone()), changed.clone());
    let (pods, f2) = reflect::<corev1::Pod>(Api::all(client.clone()), changed.clone());
    let (namespaces, f3) = reflect::<corev1::Namespace>(Api::all(client), changed.clone());
    let watches = async {
        tokio::join!(f1, f2, f3);
        Err::<(), Error>(Error::Nft("the API watches ended".into()))
    };
    let apply_loop = async {
        let ended = |_| Error::Nft("a watch ended before its first list".into());
        policies.wait_until_ready().await.map_err(ended)?;
        pods.wait_until_ready().await.map_err(ended)?;
        namespaces.wait_until_ready().await.map_err(ended)?;
        let options = CompileOptions { node_name: Some(config.node_name.clone()), log_drops: config.log_drops };
        let mut current: Option<NodeState> = None;
        let mut generation = 0;
        loop {
            let started = Instant::now();
            // Compiling is CPU work (hundreds of ms at 10,000 pods): off the async threads.
            let (n, p, np, o) = (namespaces.clone(), pods.clone(), policies.clone(), options.clone());
            let desired = tokio::task::spawn_blocking(move || nft::compile(&snapshot(&n, &p, &np), &o))
                .await
                .map_err(|e| Error::Nft(format!("compiling the table: {e}")))?;
            let script = match &current {
                None => nft::full_script(&desired, &options),
                Some(old) => nft::diff_script(old, &desired, &options),
            };
            if !script.is_empty() || current.is_none() {
                match nft_apply(config.netns_name.as_deref(), &script).await {
                    Ok(()) => {
                        tracing::debug!(elapsed = ?started.elapsed(), bytes = script.len(), "netpol applied");
                        current = Some(desired.clone());
                    }
                    Err(e) => {
                        // Rebuild from scratch next time: the kernel's state is unknown.
                        tracing::warn!(error = %e, "netpol: applying the nftables change failed; rebuilding the table");
                        current = None;
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            generation += 1;
            applied.send_replace(Applied {
                generation,
                elements: desired.ingress_allow.len() + desired.egress_allow.len(),
                chains: desired.ingress_pods.len() + desired.egress_pods.len(),
                state: Arc::new(desired),
            });
            changed.notified().await;
        }
    };
    tokio::select! {
        r = watches => r,
        r = apply_loop => r,
    }
}

/// A reflector of `api`: its store, and the future that drives it (notifying on each event).
fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, impl Future<Output = ()>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    let fut = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // Wait for the end of a relist before judging a partial view.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&()), "netpol watch error"),
            }
        }
    };
    (store, fut)
}

fn snapshot(namespaces: &Store<corev1::Namespace>, pods: &Store<corev1::Pod>, policies: &Store<netv1::NetworkPolicy>) -> Cluster {
    let (ns, p, np) = (namespaces.state(), pods.state(), policies.state());
    let (cluster, errors) = Cluster::from_objects(ns.iter().map(|o| &**o), p.iter().map(|o| &**o), np.iter().map(|o| &**o));
    for e in errors {
        tracing::warn!(error = %e, "netpol: policy ignored");
    }
    cluster
}

/// Runs `nft -f -` with `script` in the namespace `netns` (or the current one).
pub async fn nft_apply(netns: Option<&str>, script: &str) -> Result<()> {
    let out = nft_command(netns, &["-f", "-"], Some(script)).await?;
    let _ = out;
    Ok(())
}

/// Runs `nft ARGS` in `netns` (via `ip netns exec`), returning stdout.
pub async fn nft_command(netns: Option<&str>, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => tokio::process::Command::new("nft"),
    };
    cmd.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| Error::Io { context: "starting nft".into(), source })?;
    let mut pipe = child.stdin.take();
    if let (Some(text), Some(pipe)) = (stdin, pipe.as_mut()) {
        pipe.write_all(text.as_bytes()).await.map_err(|source| Error::Io { context: "writing to nft".into(), source })?;
    }
    drop(pipe);
    let out = child.wait_with_output().await.map_err(|source| Error::Io { context: "waiting for nft".into(), source })?;
    if !out.status.success() {
        let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.truncate(4000);
        return Err(Error::Nft(err));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the table (when the node stops enforcing); absent is fine.
pub async fn remove_table(netns: Option<&str>) -> Result<()> {
    nft_apply(netns, &format!("add table inet {t}\ndelete table inet {t}\n", t = nft::TABLE)).await
}
