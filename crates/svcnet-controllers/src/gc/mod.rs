//! The garbage collector: owner references and cascading deletion, as kube-controller-manager's
//! garbagecollector does it.
//!
//! Every served resource that can be listed, watched and deleted is watched metadata-only; the
//! [`graph`] keeps each object's owner references, deletionTimestamp and finalizers, and says which
//! objects a change makes worth examining. Workers then act on one object (by uid) at a time:
//!
//! - an object whose owners are all gone (verified with a live read: the cache may just lag) is
//!   deleted in the background; one that keeps some owner loses its references to the others;
//! - an owner being deleted with the `orphan` finalizer has its references removed from its
//!   dependents, then loses the finalizer (and the API server deletes it);
//! - an owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted
//!   (in the foreground, so it cascades), and loses the finalizer once no dependent with
//!   `blockOwnerDeletion: true` is left.

pub mod graph;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::serde_json::{Value, json};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt, watcher};

use crate::queue::WorkQueue;
use graph::{Cached, Decision, FOREGROUND, Graph, GroupKind, Node, ORPHAN, OwnerState, Policy, decide, live_state};

/// Objects examined at once.
const WORKERS: usize = 4;
/// Verified-absent owners remembered (uids never come back, so the memory is never wrong).
const ABSENT_CACHE: usize = 10_000;
/// How long the workers wait for every resource to be listed.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the garbage collector until a fatal error.
pub async fn run(client: Client) -> crate::Result<()> {
    let resources = discover(&client).await;
    tracing::info!(resources = resources.len(), "garbage collector watching");
    let scopes: HashMap<GroupKind, bool> = resources.iter().map(|r| ((r.ar.group.clone(), r.ar.kind.clone()), r.namespaced)).collect();
    let kinds: HashMap<GroupKind, usize> = resources.iter().enumerate().map(|(i, r)| ((r.ar.group.clone(), r.ar.kind.clone()), i)).collect();
    let ctx = Arc::new(Context {
        client: client.clone(),
        resources,
        kinds,
        graph: Mutex::new(Graph::new(scopes)),
        queue: WorkQueue::new(),
        failures: Mutex::new(HashMap::new()),
        absent: Mutex::new(HashSet::new()),
    });

    let streams = ctx.resources.iter().enumerate().map(|(i, r)| {
        // Metadata only (`as=PartialObjectMetadata`): the collector needs nothing else.
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), &r.ar);
        let plural = r.ar.plural.clone();
        watcher(api, watcher::Config::default())
            .default_backoff()
            .filter_map(move |event| {
                let plural = plural.clone();
                async move {
                    match event {
                        Ok(event) => Some((i, event)),
                        Err(error) => {
                            tracing::warn!(resource = %plural, %error, "garbage collector watch failed, retrying");
                            None
                        }
                    }
                }
            })
            .boxed()
    });
    let events = futures::stream::select_all(streams);
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(false);

    let workers = {
        let ctx = Arc::clone(&ctx);
        async move {
            // Acting before every cache is filled would only cost live reads (owners are verified
            // before anything is deleted), but a resource that cannot be listed must not stop
            // the collection of the others.
            match tokio::time::timeout(SYNC_TIMEOUT, synced_rx.wait_for(|s| *s)).await {
                Ok(_) => tracing::info!("garbage collector caches synced"),
                Err(_) => tracing::warn!("garbage collector caches not synced after {SYNC_TIMEOUT:?}, collecting anyway"),
            }
            futures::future::join_all((0..WORKERS).map(|_| worker(Arc::clone(&ctx)))).await;
        }
    };

    tokio::select! {
        r = handle_events(events, &ctx, synced_tx) => r,
        () = workers => Ok(()),
    }
}

/// A served resource the collector watches.
struct Resource {
    ar: ApiResource,
    namespaced: bool,
}

/// The resources that can be listed, watched, read and deleted, at their preferred versions.
/// Retried until the API server answers.
async fn discover(client: &Client) -> Vec<Resource> {
    let mut delay = Duration::from_millis(200);
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(discovery) => {
                let mut resources = Vec::new();
                for group in discovery.groups() {
                    for (ar, caps) in group.recommended_resources() {
                        if [verbs::LIST, verbs::WATCH, verbs::GET, verbs::DELETE].iter().all(|v| caps.supports_operation(v)) {
                            resources.push(Resource { ar, namespaced: caps.scope == Scope::Namespaced });
                        }
                    }
                }
                return resources;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "garbage collector discovery failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Feeds the graph; enqueues what each change makes worth examining. Signals `synced` once every
/// resource has been listed.
async fn handle_events(
    events: impl futures::Stream<Item = (usize, watcher::Event<PartialObjectMeta<DynamicObject>>)>,
    ctx: &Context,
    synced: tokio::sync::watch::Sender<bool>,
) -> crate::Result<()> {
    let mut events = std::pin::pin!(events);
    let mut relisting: HashMap<usize, HashSet<String>> = HashMap::new();
    let mut listed: HashSet<usize> = HashSet::new();
    while let Some((i, event)) = events.next().await {
        let work = {
            let mut graph = ctx.graph.lock().unwrap();
            match event {
                watcher::Event::Apply(obj) => ctx.node(i, obj.metadata).map(|n| graph.upsert(n)).unwrap_or_default(),
                watcher::Event::Delete(obj) => obj.metadata.uid.map(|uid| graph.remove(&uid)).unwrap_or_default(),
                watcher::Event::Init => {
                    relisting.insert(i, HashSet::new());
                    vec![]
                }
                watcher::Event::InitApply(obj) => match ctx.node(i, obj.metadata) {
                    Some(n) => {
                        relisting.entry(i).or_default().insert(n.uid.clone());
                        graph.upsert(n)
                    }
                    None => vec![],
                },
                watcher::Event::InitDone => {
                    // Whatever the relist no longer shows was deleted meanwhile.
                    let seen = relisting.remove(&i).unwrap_or_default();
                    let mut work = Vec::new();
                    for uid in graph.uids_of(i) {
                        if !seen.contains(&uid) {
                            work.extend(graph.remove(&uid));
                        }
                    }
                    listed.insert(i);
                    if listed.len() == ctx.resources.len() {
                        synced.send_replace(true);
                    }
                    work
                }
            }
        };
        for uid in work {
            ctx.queue.add(uid);
        }
    }
    Err(crate::Error::WatchEnded("garbage collector"))
}

struct Context {
    client: Client,
    resources: Vec<Resource>,
    /// Group and kind → index in `resources`.
    kinds: HashMap<GroupKind, usize>,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue<String>>,
    /// Consecutive failures per uid, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Owners (namespace, uid) verified absent.
    absent: Mutex<HashSet<(Option<String>, String)>>,
}

impl Context {
    fn node(&self, resource: usize, meta: ObjectMeta) -> Option<Node> {
        let namespaced = self.resources[resource].namespaced;
        Some(Node {
            resource,
            namespace: if namespaced { meta.namespace } else { None },
            name: meta.name?,
            uid: meta.uid?,
            owners: meta.owner_references.unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.unwrap_or_default(),
        })
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = &self.resources[resource].ar;
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    /// Reads an object's metadata; `None` when it is gone or `uid` now names another object.
    async fn live(&self, node: &Node) -> Result<Option<ObjectMeta>, Failed> {
        let got = self.api(node.resource, node.namespace.as_deref()).get_metadata_opt(&node.name).await;
        let got = got.map_err(|e| Failed::new("get", node, e))?;
        Ok(got.map(|o| o.metadata).filter(|m| m.uid.as_deref() == Some(node.uid.as_str())))
    }

    /// The state of `dep`'s owner `r`, read from the API server (owners the graph knows to exist
    /// are taken as they are; they are re-examined when they go).
    async fn owner_state(&self, dep: &Node, r: &OwnerReference) -> Result<OwnerState, Failed> {
        let cached = self.graph.lock().unwrap().cached(dep, r);
        if matches!(cached, Cached::Solid | Cached::Ignored) {
            return Ok(OwnerState::Solid);
        }
        let Some(&resource) = self.kinds.get(&graph::group_kind(r)) else { return Ok(OwnerState::Solid) };
        let namespace = if self.resources[resource].namespaced { dep.namespace.clone() } else { None };
        let key = (namespace.clone(), r.uid.clone());
        if self.absent.lock().unwrap().contains(&key) {
            return Ok(OwnerState::Dangling);
        }
        let got = self.api(resource, namespace.as_deref()).get_metadata_opt(&r.name).await.map_err(|e| Failed {
            action: "get owner",
            what: format!("{}/{} of {}", r.kind, r.name, describe(dep)),
            source: e,
        })?;
        let state = live_state(
            r,
            got.as_ref()
                .map(|o| (o.metadata.uid.as_deref().unwrap_or(""), o.metadata.deletion_timestamp.is_some(), o.metadata.finalizers.as_deref().unwrap_or(&[]))),
        );
        if state == OwnerState::Dangling {
            let mut absent = self.absent.lock().unwrap();
            if absent.len() >= ABSENT_CACHE {
                absent.clear();
            }
            absent.insert(key);
        }
        Ok(state)
    }
}

/// A failed request (retried with backoff).
#[derive(Debug)]
struct Failed {
    action: &'static str,
    what: String,
    source: kube::Error,
}

impl Failed {
    fn new(action: &'static str, node: &Node, source: kube::Error) -> Self {
        Failed { action, what: describe(node), source }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.action, self.what, self.source)
    }
}

fn describe(node: &Node) -> String {
    match &node.namespace {
        Some(ns) => format!("{ns}/{} ({})", node.name, node.uid),
        None => format!("{} ({})", node.name, node.uid),
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

// === reconcile ===

async fn worker(ctx: Arc<Context>) {
    loop {
        let uid = ctx.queue.next().await;
        let result = reconcile(&ctx, &uid).await;
        ctx.queue.done(&uid);
        match result {
            Ok(()) => {
                ctx.failures.lock().unwrap().remove(&uid);
            }
            Err(error) => {
                let failures = {
                    let mut all = ctx.failures.lock().unwrap();
                    let n = all.entry(uid.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                let delay = Duration::from_millis(50).saturating_mul(1 << failures.min(10)).min(Duration::from_secs(60));
                tracing::warn!(%error, retry_in = ?delay, "garbage collection failed");
                ctx.queue.add_after(uid, delay);
            }
        }
    }
}

async fn reconcile(ctx: &Context, uid: &str) -> Result<(), Failed> {
    let Some(node) = ctx.graph.lock().unwrap().get(uid).cloned() else { return Ok(()) };
    if node.deleting {
        if node.has_finalizer(ORPHAN) {
            orphan_dependents(ctx, &node).await?;
            return remove_finalizer(ctx, &node, ORPHAN).await;
        }
        if node.has_finalizer(FOREGROUND) {
            return delete_dependents(ctx, &node).await;
        }
        return Ok(());
    }
    attempt_to_delete(ctx, &node).await
}

/// An object some of whose owners may be gone or waiting for it.
async fn attempt_to_delete(ctx: &Context, node: &Node) -> Result<(), Failed> {
    if !ctx.graph.lock().unwrap().needs_attention(node) {
        return Ok(());
    }
    // Decide on what the object is now, not on what the cache says.
    let Some(live) = ctx.live(node).await? else { return Ok(()) };
    if live.deletion_timestamp.is_some() {
        return Ok(());
    }
    let current = Node { owners: live.owner_references.clone().unwrap_or_default(), finalizers: live.finalizers.clone().unwrap_or_default(), ..node.clone() };
    let mut states = Vec::with_capacity(current.owners.len());
    for r in &current.owners {
        states.push((r, ctx.owner_state(&current, r).await?));
    }
    match decide(&current.finalizers, &states) {
        Decision::Nothing => Ok(()),
        Decision::RemoveRefs(uids) => {
            let owners = graph::refs_without(&current.owners, &uids);
            tracing::info!(object = %describe(node), removed = ?uids, "removing references to owners that are gone");
            patch_metadata(ctx, node, &live, json!({ "ownerReferences": if owners.is_empty() { Value::Null } else { json!(owners) } })).await
        }
        Decision::Delete(policy) => {
            tracing::info!(object = %describe(node), ?policy, "deleting: its owners are gone");
            let policy = match policy {
                Policy::Background => PropagationPolicy::Background,
                Policy::Foreground => PropagationPolicy::Foreground,
                Policy::Orphan => PropagationPolicy::Orphan,
            };
            let dp = DeleteParams {
                propagation_policy: Some(policy),
                preconditions: Some(Preconditions { uid: Some(node.uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match ctx.api(node.resource, node.namespace.as_deref()).delete(&node.name, &dp).await {
                Ok(_) => Ok(()),
                // Gone already, or the name belongs to another object now.
                Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
                Err(e) => Err(Failed::new("delete", node, e)),
            }
        }
    }
}

/// Removes the references to `owner` from its dependents.
async fn orphan_dependents(ctx: &Context, owner: &Node) -> Result<(), Failed> {
    let dependents: Vec<Node> = ctx.graph.lock().unwrap().dependents_of(owner).into_iter().cloned().collect();
    for dep in dependents {
        let Some(live) = ctx.live(&dep).await? else { continue };
        let refs = live.owner_references.clone().unwrap_or_default();
        let rest = graph::refs_without(&refs, std::slice::from_ref(&owner.uid));
        if rest.len() == refs.len() {
            continue;
        }
        tracing::info!(object = %describe(&dep), owner = %describe(owner), "orphaning");
        patch_metadata(ctx, &dep, &live, json!({ "ownerReferences": if rest.is_empty() { Value::Null } else { json!(rest) } })).await?;
    }
    Ok(())
}

/// An owner being deleted in the foreground: its dependents go, then it does.
async fn delete_dependents(ctx: &Context, owner: &Node) -> Result<(), Failed> {
    let (pending, blocking) = {
        let graph = ctx.graph.lock().unwrap();
        let pending: Vec<String> = graph.dependents_of(owner).into_iter().filter(|d| !d.deleting).map(|d| d.uid.clone()).collect();
        (pending, graph.blocking_dependents(owner).len())
    };
    for uid in pending {
        ctx.queue.add(uid);
    }
    if blocking == 0 {
        remove_finalizer(ctx, owner, FOREGROUND).await?;
    }
    Ok(())
}

async fn remove_finalizer(ctx: &Context, node: &Node, finalizer: &str) -> Result<(), Failed> {
    let Some(live) = ctx.live(node).await? else { return Ok(()) };
    let finalizers = live.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let rest = graph::finalizers_without(&finalizers, finalizer);
    tracing::info!(object = %describe(node), %finalizer, "removing finalizer");
    patch_metadata(ctx, node, &live, json!({ "finalizers": if rest.is_empty() { Value::Null } else { json!(rest) } })).await
}

/// A merge patch of `fields` of the metadata, on the condition that the object is still at the
/// resourceVersion `live` was read at (a conflict retries with a fresh read).
async fn patch_metadata(ctx: &Context, node: &Node, live: &ObjectMeta, mut fields: Value) -> Result<(), Failed> {
    fields["resourceVersion"] = json!(live.resource_version);
    let patch = json!({ "metadata": fields });
    match ctx.api(node.resource, node.namespace.as_deref()).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(Failed::new("patch", node, e)),
    }
}
