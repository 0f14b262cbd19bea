//! The workload controllers, as kube-controller-manager's: ReplicaSets keep a number of pods
//! ([`replicaset`]), Deployments roll ReplicaSets ([`deployment`]), StatefulSets keep ordered,
//! named pods ([`statefulset`]); and the scheduler binds pending pods to Ready nodes
//! ([`scheduler`]).
//!
//! Each controller's decisions are pure functions of the cached objects (unit-tested in its
//! file); this module is the driver they share: reflector caches of Pods, ReplicaSets,
//! Deployments, StatefulSets and Nodes, one keyed work queue with retry backoff, and the
//! expectations that keep a controller from acting on a cache that does not yet show its own
//! writes (upstream's `ControllerExpectations`: without them a lagging cache makes a ReplicaSet
//! create its pods twice).

pub mod deployment;
pub mod replicaset;
pub mod scheduler;
pub mod selector;
pub mod statefulset;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::queue::WorkQueue;
use crate::{Error, Result};

/// Objects reconciled at once, over all the workload controllers.
const WORKERS: usize = 4;
/// How long a write may take to show up in the caches before it is no longer waited for.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Which controller a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Controller {
    ReplicaSet,
    Deployment,
    StatefulSet,
    /// The key names a Pod to schedule.
    Scheduler,
}

/// The unit of work: one object of one controller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub controller: Controller,
    pub namespace: String,
    pub name: String,
}

impl Key {
    fn of<K: Resource>(controller: Controller, obj: &K) -> Self {
        Key { controller, namespace: obj.meta().namespace.clone().unwrap_or_default(), name: obj.meta().name.clone().unwrap_or_default() }
    }

    fn object_ref<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}/{}", self.controller, self.namespace, self.name)
    }
}

/// Runs the workload controllers and the scheduler until a watch ends (which it does not on its
/// own).
pub async fn run(client: Client) -> Result<()> {
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (replicasets, replicasets_writer) = reflector::store::<ReplicaSet>();
    let (deployments, deployments_writer) = reflector::store::<Deployment>();
    let (statefulsets, statefulsets_writer) = reflector::store::<StatefulSet>();
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods,
        replicasets,
        deployments,
        statefulsets,
        nodes,
        queue: WorkQueue::new(),
        expectations: Mutex::new(HashMap::new()),
        assumed: Mutex::new(HashMap::new()),
    });

    let pod_events = crate::cache::watch_pods(Api::<Pod>::all(client.clone()), pods_writer);
    let rs_events = crate::cache::watch(Api::<ReplicaSet>::all(client.clone()), replicasets_writer, watcher::Config::default());
    let deploy_events = crate::cache::watch(Api::<Deployment>::all(client.clone()), deployments_writer, watcher::Config::default());
    let sts_events = crate::cache::watch(Api::<StatefulSet>::all(client.clone()), statefulsets_writer, watcher::Config::default());
    let node_events = crate::cache::watch(Api::<Node>::all(client), nodes_writer, watcher::Config::default());

    let workers = {
        let ctx = Arc::clone(&ctx);
        async move {
            for (what, ready) in [
                ("Pod", ctx.pods.wait_until_ready().await),
                ("ReplicaSet", ctx.replicasets.wait_until_ready().await),
                ("Deployment", ctx.deployments.wait_until_ready().await),
                ("StatefulSet", ctx.statefulsets.wait_until_ready().await),
                ("Node", ctx.nodes.wait_until_ready().await),
            ] {
                ready.map_err(|_| Error::StoreDropped(what))?;
            }
            tracing::info!("caches synced, reconciling workloads");
            let workers = (0..WORKERS).map(|_| worker(Arc::clone(&ctx)));
            futures::future::join_all(workers).await;
            Ok::<(), Error>(())
        }
    };

    tokio::select! {
        r = handle(pod_events, &ctx, "Pod", Context::on_pod) => r,
        r = handle(rs_events, &ctx, "ReplicaSet", Context::on_replicaset) => r,
        r = handle(deploy_events, &ctx, "Deployment", |ctx, d: &Deployment| ctx.queue.add(Key::of(Controller::Deployment, d))) => r,
        r = handle(sts_events, &ctx, "StatefulSet", |ctx, s: &StatefulSet| ctx.queue.add(Key::of(Controller::StatefulSet, s))) => r,
        r = handle(node_events, &ctx, "Node", |ctx, _: &Node| ctx.enqueue_pending()) => r,
        r = workers => r,
    }
}

/// Feeds every changed (or deleted) object to `on`. After a relist everything is enqueued once
/// more: that also covers objects deleted while no one was watching.
async fn handle<K>(events: impl Stream<Item = watcher::Event<K>>, ctx: &Context, kind: &'static str, on: impl Fn(&Context, &K)) -> Result<()> {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            watcher::Event::Apply(obj) | watcher::Event::Delete(obj) | watcher::Event::InitApply(obj) => on(ctx, &obj),
            watcher::Event::Init => {}
            watcher::Event::InitDone => ctx.enqueue_all(),
        }
    }
    Err(Error::WatchEnded(kind))
}

// === impl Context ===

/// What the workers share: the caches, the queue and the bookkeeping of writes in flight.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    nodes: Store<Node>,
    queue: Arc<WorkQueue<Key>>,
    /// Writes not yet seen in the caches, per key.
    expectations: Mutex<HashMap<Key, Vec<Expectation>>>,
    /// Pods bound by the scheduler whose binding the pod cache does not show yet (upstream's
    /// "assumed pods"), so that spreading counts them.
    assumed: Mutex<HashMap<(String, String), (String, Instant)>>,
}

/// A write the caches must reflect before its key is reconciled again.
struct Expectation {
    kind: Kind,
    name: String,
    what: Expect,
    since: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
    StatefulSet,
}

enum Expect {
    /// Created: the cache has it at this `resourceVersion` or later.
    Created(String),
    /// Updated: the cache has it at this `resourceVersion` or later, or no longer has it.
    Updated(String),
    /// Deleted: gone from the cache, or shown as being deleted.
    Deleted,
}

impl Context {
    fn on_pod(&self, pod: &Pod) {
        let namespace = pod.namespace().unwrap_or_default();
        match controller_of(&pod.metadata) {
            Some(owner) if owner.kind == "ReplicaSet" => {
                self.queue.add(Key { controller: Controller::ReplicaSet, namespace: namespace.clone(), name: owner.name.clone() })
            }
            Some(owner) if owner.kind == "StatefulSet" => {
                self.queue.add(Key { controller: Controller::StatefulSet, namespace: namespace.clone(), name: owner.name.clone() })
            }
            Some(_) => {}
            None if pod.metadata.deletion_timestamp.is_none() => {
                // An orphan: the sets that select it may adopt it.
                let labels = pod.labels();
                for rs in self.replicasets.state().iter().filter(|rs| rs.namespace().as_deref() == Some(&namespace)) {
                    if rs.spec.as_ref().is_some_and(|s| selector::matches(&s.selector, labels)) {
                        self.queue.add(Key::of(Controller::ReplicaSet, rs.as_ref()));
                    }
                }
                for sts in self.statefulsets.state().iter().filter(|s| s.namespace().as_deref() == Some(&namespace)) {
                    if sts.spec.as_ref().is_some_and(|s| selector::matches(&s.selector, labels)) {
                        self.queue.add(Key::of(Controller::StatefulSet, sts.as_ref()));
                    }
                }
            }
            None => {}
        }
        if scheduler::wants_scheduling(pod) {
            self.queue.add(Key::of(Controller::Scheduler, pod));
        }
    }

    fn on_replicaset(&self, rs: &ReplicaSet) {
        self.queue.add(Key::of(Controller::ReplicaSet, rs));
        let namespace = rs.namespace().unwrap_or_default();
        match controller_of(&rs.metadata) {
            Some(owner) if owner.kind == "Deployment" => self.queue.add(Key { controller: Controller::Deployment, namespace, name: owner.name.clone() }),
            Some(_) => {}
            None => {
                for d in self.deployments.state().iter().filter(|d| d.namespace().as_deref() == Some(&namespace)) {
                    if d.spec.as_ref().is_some_and(|s| selector::matches(&s.selector, rs.labels())) {
                        self.queue.add(Key::of(Controller::Deployment, d.as_ref()));
                    }
                }
            }
        }
    }

    /// Every pod waiting for a node (a node changed, so it may fit now).
    fn enqueue_pending(&self) {
        for pod in self.pods.state().iter().filter(|p| scheduler::wants_scheduling(p)) {
            self.queue.add(Key::of(Controller::Scheduler, pod.as_ref()));
        }
    }

    fn enqueue_all(&self) {
        self.replicasets.state().iter().for_each(|o| self.queue.add(Key::of(Controller::ReplicaSet, o.as_ref())));
        self.deployments.state().iter().for_each(|o| self.queue.add(Key::of(Controller::Deployment, o.as_ref())));
        self.statefulsets.state().iter().for_each(|o| self.queue.add(Key::of(Controller::StatefulSet, o.as_ref())));
        self.enqueue_pending();
    }

    /// The cached pods of `namespace`.
    fn pods_in(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods.state_filter(|p| p.namespace().as_deref() == Some(namespace))
    }

    fn cached_meta(&self, kind: Kind, namespace: &str, name: &str) -> Option<ObjectMeta> {
        match kind {
            Kind::Pod => self.pods.get(&ObjectRef::new(name).within(namespace)).map(|o| o.metadata.clone()),
            Kind::ReplicaSet => self.replicasets.get(&ObjectRef::new(name).within(namespace)).map(|o| o.metadata.clone()),
            Kind::Deployment => self.deployments.get(&ObjectRef::new(name).within(namespace)).map(|o| o.metadata.clone()),
            Kind::StatefulSet => self.statefulsets.get(&ObjectRef::new(name).within(namespace)).map(|o| o.metadata.clone()),
        }
    }

    /// Whether the caches reflect every write made for `key`; forgets those they do.
    fn caches_current(&self, key: &Key) -> bool {
        let mut all = self.expectations.lock().unwrap();
        let Some(list) = all.get_mut(key) else { return true };
        list.retain(|e| {
            if e.since.elapsed() > EXPECTATION_TIMEOUT {
                tracing::warn!(key = %key, name = %e.name, "a write never showed up in the cache");
                return false;
            }
            let seen = self.cached_meta(e.kind, &key.namespace, &e.name);
            let satisfied = match (&e.what, seen) {
                (Expect::Created(want), Some(meta)) | (Expect::Updated(want), Some(meta)) => at_least(meta.resource_version.as_deref(), want),
                (Expect::Created(_), None) => false,
                (Expect::Updated(_), None) => true,
                (Expect::Deleted, Some(meta)) => meta.deletion_timestamp.is_some(),
                (Expect::Deleted, None) => true,
            };
            !satisfied
        });
        let current = list.is_empty();
        if current {
            all.remove(key);
        }
        current
    }

    fn expect(&self, key: &Key, kind: Kind, name: &str, what: Expect) {
        let mut all = self.expectations.lock().unwrap();
        let list = all.entry(key.clone()).or_default();
        list.retain(|e| !(e.kind == kind && e.name == name));
        list.push(Expectation { kind, name: name.to_string(), what, since: Instant::now() });
    }

    // === writes ===

    async fn create_pod(&self, key: &Key, pod: &Pod) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let created =
            api.create(&PostParams::default(), pod).await.map_err(|e| api_error("create", "Pod", key, pod.metadata.name.as_deref().unwrap_or(""), e))?;
        tracing::debug!(%key, pod = %created.name_any(), "created pod");
        self.expect(key, Kind::Pod, &created.name_any(), Expect::Created(created.resource_version().unwrap_or_default()));
        Ok(())
    }

    async fn delete_pod(&self, key: &Key, name: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::debug!(%key, pod = %name, "deleted pod"),
            Err(e) if is_not_found(&e) => {}
            Err(source) => return Err(api_error("delete", "Pod", key, name, source)),
        }
        self.expect(key, Kind::Pod, name, Expect::Deleted);
        Ok(())
    }

    /// Sets the owner references of a pod or ReplicaSet (adoption and release), with the
    /// `resourceVersion` it was decided on as a precondition.
    async fn set_owners<K>(&self, key: &Key, kind: Kind, obj: &K, owners: Vec<OwnerReference>) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &key.namespace);
        let name = obj.name_any();
        let patch = k8s_openapi::serde_json::json!({
            "metadata": {"ownerReferences": owners, "resourceVersion": obj.resource_version()},
        });
        let kind_name = if kind == Kind::Pod { "Pod" } else { "ReplicaSet" };
        let written = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| api_error("patch", kind_name, key, &name, e))?;
        self.expect(key, kind, &name, Expect::Updated(written.resource_version().unwrap_or_default()));
        Ok(())
    }
}

/// Whether `have` is `want` or newer. Resource versions are opaque to clients, but every API
/// server in practice uses increasing integers; anything else is compared for equality.
fn at_least(have: Option<&str>, want: &str) -> bool {
    match (have.and_then(|h| h.parse::<u64>().ok()), want.parse::<u64>().ok()) {
        (Some(h), Some(w)) => h >= w,
        _ => have == Some(want),
    }
}

// === impl worker ===

/// What a reconcile asks for next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Done,
    /// The caches lag behind this controller's own writes; try again shortly.
    WaitForCache,
    /// Look again after this long (a pod becomes available after `minReadySeconds`).
    After(Duration),
}

async fn worker(ctx: Arc<Context>) {
    loop {
        let key = ctx.queue.next().await;
        let result = if ctx.caches_current(&key) {
            match key.controller {
                Controller::ReplicaSet => replicaset::reconcile(&ctx, &key).await,
                Controller::Deployment => deployment::reconcile(&ctx, &key).await,
                Controller::StatefulSet => statefulset::reconcile(&ctx, &key).await,
                Controller::Scheduler => scheduler::reconcile(&ctx, &key).await,
            }
        } else {
            Ok(Next::WaitForCache)
        };
        ctx.queue.done(&key);
        match result {
            Ok(next) => {
                ctx.queue.forget(&key);
                match next {
                    Next::Done => {}
                    Next::WaitForCache => ctx.queue.add_after(key, Duration::from_millis(100)),
                    Next::After(delay) => ctx.queue.add_after(key, delay),
                }
            }
            Err(error) if is_namespace_terminating(&error) => {
                tracing::debug!(%key, %error, "namespace terminating, not retrying");
                ctx.queue.forget(&key);
            }
            Err(error) => {
                // 50ms doubling up to a minute; conflicts are the common case and resolve at once.
                let delay = ctx.queue.retry(key.clone(), Duration::from_millis(50));
                if is_conflict(&error) {
                    tracing::debug!(%key, %error, retry_in = ?delay, "reconcile conflicted");
                } else {
                    tracing::warn!(%key, %error, retry_in = ?delay, "reconcile failed");
                }
            }
        }
    }
}

// === helpers ===

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

/// A controller reference to `owner` (of kind `kind` in `apps/v1`), as controllers set it.
pub fn controller_ref(kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    controller_of(meta).is_some_and(|o| Some(o.uid.as_str()) == uid)
}

/// What a controller does with a candidate dependent (upstream's `ClaimObject`).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Claim {
    /// Controlled by the owner and selected: keep.
    Owned,
    /// An orphan the owner selects: adopt (set the controller reference).
    Adopt,
    /// Controlled by the owner but no longer selected: release (drop the reference).
    Release,
    /// Someone else's, or of no interest.
    Ignore,
}

/// Upstream's `ClaimObject`: `selected` says whether the owner's selector matches; an owner
/// being deleted adopts nothing, and a dependent being deleted is neither adopted nor released.
pub fn claim(owner: &ObjectMeta, dependent: &ObjectMeta, selected: bool) -> Claim {
    match controller_of(dependent) {
        Some(c) if Some(c.uid.as_str()) == owner.uid.as_deref() => {
            if selected || dependent.deletion_timestamp.is_some() || owner.deletion_timestamp.is_some() {
                Claim::Owned
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None if selected && dependent.deletion_timestamp.is_none() && owner.deletion_timestamp.is_none() => Claim::Adopt,
        None => Claim::Ignore,
    }
}

/// The owner references of `dependent` with `owner`'s controller reference added or removed.
pub fn owners_after(dependent: &ObjectMeta, owner_uid: &str, add: Option<OwnerReference>) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = dependent.owner_references.clone().unwrap_or_default().into_iter().filter(|o| o.uid != owner_uid).collect();
    refs.extend(add);
    refs
}

/// Upstream's `IsPodActive`: not terminal and not being deleted.
#[doc(alias = "IsPodActive")]
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod became Ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    let cond = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(cond.last_transition_time.as_ref().map(|t| t.0).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

/// Upstream's `IsPodAvailable`: Ready for at least `min_ready_seconds` at `now`; else, when it is
/// Ready, how long until it is available.
#[doc(alias = "IsPodAvailable")]
pub fn availability(pod: &Pod, min_ready_seconds: i32, now: k8s_openapi::jiff::Timestamp) -> Availability {
    let Some(since) = ready_since(pod) else { return Availability::NotReady };
    if min_ready_seconds <= 0 {
        return Availability::Available;
    }
    let at = since + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    if at <= now { Availability::Available } else { Availability::ReadyFor(now.duration_until(at).unsigned_abs()) }
}

/// A pod's availability for [`availability`].
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Availability {
    NotReady,
    /// Ready, available after this much longer.
    ReadyFor(Duration),
    Available,
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.is_not_found())
}

fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Api { source: kube::Error::Api(status), .. } if status.code == 409)
}

/// The API server refused to create in a namespace that is being deleted (upstream does not
/// retry these either).
fn is_namespace_terminating(e: &Error) -> bool {
    let Error::Api { source: kube::Error::Api(status), .. } = e else { return false };
    status.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

fn api_error(action: &'static str, kind: &'static str, key: &Key, name: &str, source: kube::Error) -> Error {
    Error::Api { action, kind, namespace: key.namespace.clone(), name: name.to_string(), source }
}

/// Fixtures for the unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{Value, json};

    /// Pod `name` in `ns` with `labels`, owned (as controller) by `owner` (uid) if given, on
    /// `node` if given, Ready (since the epoch) or not.
    pub fn pod(name: &str, labels: Value, owner: Option<(&str, &str)>, node: Option<&str>, ready: bool) -> Pod {
        let owners: Vec<Value> =
            owner.map(|(kind, uid)| json!({"apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": uid, "controller": true})).into_iter().collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": labels, "ownerReferences": owners,
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": node},
            "status": {"phase": if node.is_some() { "Running" } else { "Pending" },
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn claims_like_upstream() {
        let owner = meta(json!({"name": "rs", "uid": "u1"}));
        let mine =
            meta(json!({"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}));
        let theirs =
            meta(json!({"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "u2", "controller": true}]}));
        let orphan = meta(json!({"name": "p"}));
        let dying = meta(json!({"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"}));
        assert_eq!(claim(&owner, &mine, true), Claim::Owned);
        assert_eq!(claim(&owner, &mine, false), Claim::Release);
        assert_eq!(claim(&owner, &theirs, true), Claim::Ignore);
        assert_eq!(claim(&owner, &orphan, true), Claim::Adopt);
        assert_eq!(claim(&owner, &orphan, false), Claim::Ignore);
        assert_eq!(claim(&owner, &dying, true), Claim::Ignore);
        let added = owners_after(&orphan, "u1", Some(controller_ref("ReplicaSet", &owner)));
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].block_owner_deletion, Some(true));
        assert!(owners_after(&mine, "u1", None).is_empty());
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = fixtures::pod("p", json!({}), None, Some("n"), true);
        let since = ready_since(&p).unwrap();
        assert_eq!(availability(&p, 0, since), Availability::Available);
        assert_eq!(availability(&p, 10, since), Availability::ReadyFor(Duration::from_secs(10)));
        assert_eq!(availability(&p, 10, since + k8s_openapi::jiff::SignedDuration::from_secs(10)), Availability::Available);
        let unready = fixtures::pod("p", json!({}), None, Some("n"), false);
        assert_eq!(availability(&unready, 0, since), Availability::NotReady);
    }
}
