//! The node-side runner: watch NetworkPolicies, Pods and Namespaces, keep the node's
//! [`NodeTable`] current event by event, and apply each batch of changes as one `nft -f -`
//! transaction of element additions and deletions (and the chains of pods whose isolating
//! policies changed) in the node's network namespace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::model::{NamespaceInfo, ObjectKey, PodInfo, Policy};
use crate::nft::{self, CompileOptions, NodeState};
use crate::table::NodeTable;
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
    /// Publish a copy of the whole applied state with each transaction ([`Applied::state`]),
    /// for tests that compare it with a fresh compile; off by default (a copy of 300,000
    /// elements costs tens of milliseconds per change).
    pub publish_state: bool,
}

impl NetpolConfig {
    pub fn new(node_name: impl Into<String>, netns_name: Option<String>) -> NetpolConfig {
        NetpolConfig { node_name: node_name.into(), netns_name, log_drops: false, publish_state: false }
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
    /// Whether the last transaction came from a full compile (the start, a relist, a failure).
    pub full: bool,
    /// Local pods recompiled for the last transaction.
    pub pods_recompiled: usize,
    /// The last transaction's compile (the flush) and `nft -f` times.
    pub compile_time: Duration,
    pub nft_time: Duration,
    /// The state the table is in, when [`NetpolConfig::publish_state`] is set.
    pub state: Option<Arc<NodeState>>,
}

/// Runs until the API watches end (never, normally) or the task is dropped.
pub async fn run(client: kube::Client, config: NetpolConfig) -> Result<()> {
    run_observed(client, config, watch::channel(Applied::default()).0).await
}

#[allow(clippy::large_enum_variant, reason = "moved once from the stream into the table")]
enum Event {
    Namespace(watcher::Event<corev1::Namespace>),
    Pod(watcher::Event<corev1::Pod>),
    Policy(watcher::Event<netv1::NetworkPolicy>),
}

/// Objects of each kind collected during a relist, and which kinds have been listed.
#[derive(Default)]
struct Relists {
    namespaces: Option<Vec<NamespaceInfo>>,
    pods: Option<Vec<PodInfo>>,
    policies: Option<Vec<Policy>>,
    listed: [bool; 3],
}

/// [`run`], publishing each applied state on `applied`.
pub async fn run_observed(client: kube::Client, config: NetpolConfig, applied: watch::Sender<Applied>) -> Result<()> {
    let streams: Vec<BoxStream<'static, Event>> = vec![
        events(Api::<corev1::Namespace>::all(client.clone()), Event::Namespace),
        events(Api::<corev1::Pod>::all(client.clone()), Event::Pod),
        events(Api::<netv1::NetworkPolicy>::all(client), Event::Policy),
    ];
    let mut merged = futures::stream::select_all(streams);
    let options = CompileOptions { node_name: Some(config.node_name.clone()), log_drops: config.log_drops };
    let mut table = NodeTable::new(options);
    let mut relists = Relists::default();
    let mut generation = 0;
    let mut retry = false;
    loop {
        if !retry {
            let Some(event) = merged.next().await else { return Err(Error::Nft("the API watches ended".into())) };
            let started = Instant::now();
            handle(&mut table, &mut relists, event);
            // Everything already received goes into the same transaction.
            while let Some(Some(event)) = merged.next().now_or_never() {
                handle(&mut table, &mut relists, event);
            }
            tracing::trace!(elapsed = ?started.elapsed(), "netpol events handled");
        }
        retry = false;
        if !relists.listed.iter().all(|l| *l) || !table.pending() {
            continue;
        }
        let started = Instant::now();
        // A full compile is CPU work (hundreds of ms at 10,000 pods): off the async threads.
        let (t, flush) = tokio::task::spawn_blocking(move || {
            let f = table.flush();
            (table, f)
        })
        .await
        .map_err(|e| Error::Nft(format!("compiling the table: {e}")))?;
        table = t;
        let compile_time = started.elapsed();
        if !flush.script.is_empty()
            && let Err(e) = nft_apply(config.netns_name.as_deref(), &flush.script).await
        {
            // Rebuild from scratch: the kernel's state is unknown.
            tracing::warn!(error = %e, "netpol: applying the nftables change failed; rebuilding the table");
            table.invalidate();
            retry = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        tracing::debug!(elapsed = ?started.elapsed(), bytes = flush.script.len(), full = flush.full, pods = flush.pods, "netpol applied");
        generation += 1;
        let state = table.state();
        applied.send_replace(Applied {
            generation,
            elements: state.elements(),
            chains: state.chains(),
            full: flush.full,
            pods_recompiled: flush.pods,
            compile_time,
            nft_time: started.elapsed() - compile_time,
            state: config.publish_state.then(|| Arc::new(state.clone())),
        });
    }
}

fn events<K>(api: Api<K>, wrap: fn(watcher::Event<K>) -> Event) -> BoxStream<'static, Event>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok(event) => Some(wrap(event)),
                Err(e) => {
                    tracing::warn!(error = %e, kind = %K::kind(&()), "netpol watch error, retrying");
                    None
                }
            })
        })
        .boxed()
}

fn handle(table: &mut NodeTable, relists: &mut Relists, event: Event) {
    match event {
        Event::Namespace(e) => match e {
            watcher::Event::Init => relists.namespaces = Some(Vec::new()),
            watcher::Event::InitApply(o) => relists.namespaces.get_or_insert_with(Vec::new).extend(NamespaceInfo::from_namespace(&o)),
            watcher::Event::InitDone => {
                table.replace_namespaces(relists.namespaces.take().unwrap_or_default());
                relists.listed[0] = true;
            }
            watcher::Event::Apply(o) => table.upsert_namespace_opt(NamespaceInfo::from_namespace(&o)),
            watcher::Event::Delete(o) => {
                if let Some(name) = o.metadata.name.as_deref() {
                    table.remove_namespace(name);
                }
            }
        },
        Event::Pod(e) => match e {
            watcher::Event::Init => relists.pods = Some(Vec::new()),
            watcher::Event::InitApply(o) => relists.pods.get_or_insert_with(Vec::new).extend(PodInfo::from_pod(&o)),
            watcher::Event::InitDone => {
                table.replace_pods(relists.pods.take().unwrap_or_default());
                relists.listed[1] = true;
            }
            watcher::Event::Apply(o) => {
                if let Some(p) = PodInfo::from_pod(&o) {
                    table.upsert_pod(p);
                }
            }
            watcher::Event::Delete(o) => {
                if let Some(p) = PodInfo::from_pod(&o) {
                    table.remove_pod(&p.key);
                }
            }
        },
        Event::Policy(e) => match e {
            watcher::Event::Init => relists.policies = Some(Vec::new()),
            watcher::Event::InitApply(o) => {
                if let Some(p) = compile_policy(&o) {
                    relists.policies.get_or_insert_with(Vec::new).push(p);
                }
            }
            watcher::Event::InitDone => {
                table.replace_policies(relists.policies.take().unwrap_or_default());
                relists.listed[2] = true;
            }
            watcher::Event::Apply(o) => match compile_policy(&o) {
                Some(p) => table.upsert_policy(p),
                // A policy that no longer compiles is left out, as a fresh start would.
                None => table.remove_policy(&policy_key(&o)),
            },
            watcher::Event::Delete(o) => table.remove_policy(&policy_key(&o)),
        },
    }
}

fn compile_policy(np: &netv1::NetworkPolicy) -> Option<Policy> {
    Policy::from_network_policy(np).inspect_err(|e| tracing::warn!(error = %e, "netpol: policy ignored")).ok()
}

fn policy_key(np: &netv1::NetworkPolicy) -> ObjectKey {
    ObjectKey::new(np.metadata.namespace.clone().unwrap_or_else(|| "default".into()), np.metadata.name.clone().unwrap_or_default())
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
