//! The I/O edge of the Endpoints, EndpointSlice and EndpointSlice-mirroring controllers:
//! reflectors keep caches of Services, Pods, Endpoints and EndpointSlices; every change enqueues
//! the Services it can affect; workers reconcile one Service at a time against the caches with
//! the pure functions of [`crate::endpoints`] and [`crate::endpointslice`], and write only what
//! differs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::endpointslice::{self, CONTROLLER_NAME, MANAGED_BY_LABEL, MIRRORING_CONTROLLER_NAME, SERVICE_NAME_LABEL, SlicePlan};
use crate::queue::WorkQueue;
use crate::{Error, Result, endpoints, pod};

/// Services reconciled at once.
const WORKERS: usize = 4;
/// How long a write may take to show up in the caches before it is no longer waited for.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A Service's namespace and name: the unit of work.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    fn of<K: Resource>(obj: &K) -> Self {
        ServiceKey { namespace: obj.meta().namespace.clone().unwrap_or_default(), name: obj.meta().name.clone().unwrap_or_default() }
    }

    fn object_ref<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Runs the controllers until a watch ends (which it does not on its own).
pub async fn run(client: Client) -> Result<()> {
    let (services, services_writer) = reflector::store::<Service>();
    let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        services: services.clone(),
        pods_synced: tokio::sync::watch::Sender::new(false),
        endpoints,
        slices,
        queue: WorkQueue::new(),
        deleted: Mutex::new(HashSet::new()),
        pod_index: crate::cache::PodIndex::default(),
        selectors: crate::cache::SelectorIndex::default(),
        expectations: Mutex::new(HashMap::new()),
    });

    let service_events = crate::cache::watch(Api::<Service>::all(client.clone()), services_writer, watcher::Config::default());
    // Pods are kept once, in `pod_index` (by namespace and label), not in a reflector store too.
    let pod_events = crate::cache::pod_events(Api::<Pod>::all(client.clone()));
    let endpoints_events = crate::cache::watch(Api::<Endpoints>::all(client.clone()), endpoints_writer, watcher::Config::default());
    // Only the slices these controllers manage.
    let slice_config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL} in ({CONTROLLER_NAME},{MIRRORING_CONTROLLER_NAME})"));
    let slice_events = crate::cache::watch(Api::<EndpointSlice>::all(client), slices_writer, slice_config);

    let workers = {
        let ctx = Arc::clone(&ctx);
        async move {
            for (what, ready) in [
                ("Service", ctx.services.wait_until_ready().await),
                ("Endpoints", ctx.endpoints.wait_until_ready().await),
                ("EndpointSlice", ctx.slices.wait_until_ready().await),
            ] {
                ready.map_err(|_| Error::StoreDropped(what))?;
            }
            ctx.pods_synced.subscribe().wait_for(|synced| *synced).await.map_err(|_| Error::StoreDropped("Pod"))?;
            tracing::info!("caches synced, reconciling Services");
            let workers = (0..WORKERS).map(|_| worker(Arc::clone(&ctx)));
            futures::future::join_all(workers).await;
            Ok::<(), Error>(())
        }
    };

    tokio::select! {
        r = handle_services(service_events, &ctx) => r,
        r = handle_pods(pod_events, &ctx) => r,
        r = handle_endpoints(endpoints_events, &ctx) => r,
        r = handle_slices(slice_events, &ctx) => r,
        r = workers => r,
    }
}

// === impl event handlers ===

/// A Service change enqueues the Service. Deleted Services (also those that vanished while the
/// watch was relisting) are remembered: their Endpoints go too.
async fn handle_services(events: impl Stream<Item = watcher::Event<Service>>, ctx: &Context) -> Result<()> {
    let mut events = std::pin::pin!(events);
    let mut known = crate::cache::Known::default();
    let gone = |key: ServiceKey| {
        ctx.selectors.set(&key.namespace, &key.name, None);
        ctx.deleted.lock().unwrap().insert(key.clone());
        ctx.queue.add(key);
    };
    while let Some(event) = events.next().await {
        match event {
            watcher::Event::Apply(svc) => {
                ctx.index_selector(&svc);
                known.applied(ServiceKey::of(&svc));
                ctx.queue.add(ServiceKey::of(&svc));
            }
            watcher::Event::Delete(svc) => {
                let key = ServiceKey::of(&svc);
                known.deleted(&key);
                gone(key);
            }
            watcher::Event::Init => known.relist_started(),
            watcher::Event::InitApply(svc) => {
                ctx.index_selector(&svc);
                known.relisted(ServiceKey::of(&svc));
                ctx.queue.add(ServiceKey::of(&svc));
            }
            watcher::Event::InitDone => known.relist_done().into_iter().for_each(gone),
        }
    }
    Err(Error::WatchEnded("Service"))
}

/// A Pod change enqueues the Services that select it now or selected it before.
async fn handle_pods(events: impl Stream<Item = watcher::Event<Pod>>, ctx: &Context) -> Result<()> {
    let mut events = std::pin::pin!(events);
    // The labels each pod had when last seen, to find the Services it leaves.
    let mut last_labels: HashMap<(String, String), BTreeMap<String, String>> = HashMap::new();
    let mut relisted: HashMap<(String, String), BTreeMap<String, String>> = HashMap::new();
    while let Some(event) = events.next().await {
        match event {
            watcher::Event::Apply(p) => {
                let id = pod_id(&p);
                ctx.pod_index.apply(p.clone());
                let before = last_labels.insert(id, p.labels().clone());
                ctx.enqueue_selecting(&p, before.as_ref());
            }
            watcher::Event::Delete(p) => {
                let (ns, name) = pod_id(&p);
                ctx.pod_index.delete(&ns, &name);
                let before = last_labels.remove(&(ns, name));
                ctx.enqueue_selecting(&p, before.as_ref());
            }
            watcher::Event::Init => {
                relisted.clear();
                ctx.pod_index.relist_started();
            }
            watcher::Event::InitApply(p) => {
                ctx.pod_index.apply(p.clone());
                let id = pod_id(&p);
                let before = last_labels.get(&id);
                ctx.enqueue_selecting(&p, before);
                relisted.insert(id, p.labels().clone());
            }
            watcher::Event::InitDone => {
                for ((namespace, _), labels) in last_labels.iter().filter(|(id, _)| !relisted.contains_key(*id)) {
                    ctx.enqueue_matching(namespace, labels);
                }
                last_labels = std::mem::take(&mut relisted);
                ctx.pod_index.relist_done();
                ctx.pods_synced.send_replace(true);
            }
        }
    }
    Err(Error::WatchEnded("Pod"))
}

fn pod_id(p: &Pod) -> (String, String) {
    (p.namespace().unwrap_or_default(), p.name_any())
}

/// An Endpoints change enqueues its Service: to mirror it, or to put back what the Endpoints
/// controller owns.
async fn handle_endpoints(events: impl Stream<Item = watcher::Event<Endpoints>>, ctx: &Context) -> Result<()> {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if let watcher::Event::Apply(ep) | watcher::Event::Delete(ep) | watcher::Event::InitApply(ep) = event {
            let key = ServiceKey::of(&ep);
            if ctx.services.get(&key.object_ref()).is_some() {
                ctx.queue.add(key);
            }
        }
    }
    Err(Error::WatchEnded("Endpoints"))
}

/// A change to a managed slice enqueues its Service (which also removes the slices of Services
/// deleted while no one was watching).
async fn handle_slices(events: impl Stream<Item = watcher::Event<EndpointSlice>>, ctx: &Context) -> Result<()> {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if let watcher::Event::Apply(slice) | watcher::Event::Delete(slice) | watcher::Event::InitApply(slice) = event
            && let Some(name) = slice.labels().get(SERVICE_NAME_LABEL)
        {
            ctx.queue.add(ServiceKey { namespace: slice.namespace().unwrap_or_default(), name: name.clone() });
        }
    }
    Err(Error::WatchEnded("EndpointSlice"))
}

// === impl Context ===

struct Context {
    client: Client,
    services: Store<Service>,
    /// Whether the pod watch's first list is in `pod_index`.
    pods_synced: tokio::sync::watch::Sender<bool>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    queue: Arc<WorkQueue<ServiceKey>>,
    /// Services seen deleted whose Endpoints have not been deleted yet.
    deleted: Mutex<HashSet<ServiceKey>>,
    /// Pods by namespace and label, for the pods a Service selects.
    pod_index: crate::cache::PodIndex,
    /// Service selectors by pair, for the Services a pod's labels match.
    selectors: crate::cache::SelectorIndex,
    /// Writes not yet seen in the caches, per Service. Reconciling from a cache that lacks them
    /// would, for instance, create a second slice for the same pods.
    expectations: Mutex<HashMap<ServiceKey, Vec<Expectation>>>,
}

/// A write the caches must reflect before the Service is reconciled again.
struct Expectation {
    kind: Kind,
    name: String,
    /// `None`: deleted; else at least this `resourceVersion`.
    resource_version: Option<String>,
    since: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Endpoints,
    EndpointSlice,
}

impl Context {
    /// Enqueues the Services of `p`'s namespace that select it now or selected `before`.
    fn enqueue_selecting(&self, p: &Pod, before: Option<&BTreeMap<String, String>>) {
        let namespace = p.namespace().unwrap_or_default();
        self.enqueue_matching(&namespace, p.labels());
        if let Some(before) = before {
            self.enqueue_matching(&namespace, before);
        }
    }

    /// Enqueues the Services of `namespace` that select `labels`.
    fn enqueue_matching(&self, namespace: &str, labels: &BTreeMap<String, String>) {
        for name in self.selectors.selecting(namespace, labels) {
            self.queue.add(ServiceKey { namespace: namespace.to_string(), name });
        }
    }

    /// Records the selector of `svc` (none for ExternalName Services) in the selector index.
    fn index_selector(&self, svc: &Service) {
        let key = ServiceKey::of(svc);
        let external_name = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        let selector = if external_name { None } else { pod::selector(svc).cloned() };
        self.selectors.set(&key.namespace, &key.name, selector);
    }

    /// Whether the caches reflect every write made for `key`; forgets those they do.
    fn caches_current(&self, key: &ServiceKey) -> bool {
        let mut all = self.expectations.lock().unwrap();
        let Some(list) = all.get_mut(key) else { return true };
        list.retain(|e| {
            let seen = match e.kind {
                Kind::Endpoints => self.endpoints.get(&ObjectRef::new(&e.name).within(&key.namespace)).map(|o| o.resource_version()),
                Kind::EndpointSlice => self.slices.get(&ObjectRef::new(&e.name).within(&key.namespace)).map(|o| o.resource_version()),
            };
            let satisfied = match (&e.resource_version, seen) {
                (None, seen) => seen.is_none(),
                (Some(_), None) => false,
                (Some(want), Some(have)) => at_least(have.as_deref(), want),
            };
            if !satisfied && e.since.elapsed() > EXPECTATION_TIMEOUT {
                tracing::warn!(service = %key, name = %e.name, "a write never showed up in the cache");
                return false;
            }
            !satisfied
        });
        let current = list.is_empty();
        if current {
            all.remove(key);
        }
        current
    }

    fn expect(&self, key: &ServiceKey, kind: Kind, name: &str, resource_version: Option<String>) {
        let mut all = self.expectations.lock().unwrap();
        let list = all.entry(key.clone()).or_default();
        list.retain(|e| !(e.kind == kind && e.name == name));
        list.push(Expectation { kind, name: name.to_string(), resource_version, since: Instant::now() });
    }

    /// The slices of the Service `key` managed by `controller`.
    fn slices_of(&self, key: &ServiceKey, controller: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices.state_filter(|s| {
            s.namespace().as_deref() == Some(key.namespace.as_str())
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&key.name)
                && s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(controller)
        })
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

// === impl reconcile ===

async fn worker(ctx: Arc<Context>) {
    loop {
        let key = ctx.queue.next().await;
        let result = reconcile(&ctx, &key).await;
        ctx.queue.done(&key);
        match result {
            Ok(Next::Done) => {
                ctx.queue.forget(&key);
            }
            Ok(Next::WaitForCache) => ctx.queue.add_after(key, Duration::from_millis(200)),
            Err(error) if error.is_namespace_terminating() => {
                // Nothing can be created there any more, and all of it is about to go.
                tracing::debug!(service = %key, %error, "namespace terminating, not retrying");
                ctx.queue.forget(&key);
            }
            Err(error) => {
                // 100ms doubling up to a minute, like client-go's rate limiter (which starts lower).
                let delay = ctx.queue.retry(key.clone(), Duration::from_millis(100));
                tracing::warn!(service = %key, %error, retry_in = ?delay, "reconcile failed");
            }
        }
    }
}

enum Next {
    Done,
    /// The caches lag behind this controller's own writes; try again shortly.
    WaitForCache,
}

async fn reconcile(ctx: &Context, key: &ServiceKey) -> Result<Next> {
    if !ctx.caches_current(key) {
        return Ok(Next::WaitForCache);
    }
    let Some(svc) = ctx.services.get(&key.object_ref()) else {
        return reconcile_deleted(ctx, key).await;
    };
    ctx.deleted.lock().unwrap().remove(key);
    let external_name = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    let selector = if external_name { None } else { pod::selector(&svc) };
    let current_endpoints = ctx.endpoints.get(&key.object_ref());

    if let Some(selector) = selector {
        // Only the pods the selector picks: found through the label index, not by scanning.
        let pods = ctx.pod_index.selected(&key.namespace, selector);
        let pods: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();

        let desired = endpoints::desired(&svc, &pods);
        if current_endpoints.as_deref().is_none_or(|c| !desired.is_satisfied_by(c)) {
            write_endpoints(ctx, key, desired.apply_to(&svc, current_endpoints.as_deref())).await?;
        }

        let existing = ctx.slices_of(key, CONTROLLER_NAME);
        let existing: Vec<&EndpointSlice> = existing.iter().map(Arc::as_ref).collect();
        execute(ctx, key, endpointslice::plan(&endpointslice::desired(&svc, &pods), &existing)).await?;
        // A Service that gained a selector no longer has mirrored slices.
        delete_slices(ctx, key, MIRRORING_CONTROLLER_NAME).await?;
    } else {
        // The Endpoints belong to the user: mirror them.
        let source = current_endpoints.filter(|ep| endpointslice::should_mirror(ep)).map(|ep| (*ep).clone()).unwrap_or_default();
        let existing = ctx.slices_of(key, MIRRORING_CONTROLLER_NAME);
        let existing: Vec<&EndpointSlice> = existing.iter().map(Arc::as_ref).collect();
        execute(ctx, key, endpointslice::plan(&endpointslice::mirrored(&svc, &source), &existing)).await?;
        // A Service that lost its selector no longer has slices built from pods.
        delete_slices(ctx, key, CONTROLLER_NAME).await?;
    }
    Ok(Next::Done)
}

/// The Service is gone: so are its slices, and its Endpoints if it was seen deleted (an
/// Endpoints without a Service may be someone's, upstream leaves those alone too).
async fn reconcile_deleted(ctx: &Context, key: &ServiceKey) -> Result<Next> {
    delete_slices(ctx, key, CONTROLLER_NAME).await?;
    delete_slices(ctx, key, MIRRORING_CONTROLLER_NAME).await?;
    let deleted = ctx.deleted.lock().unwrap().contains(key);
    if deleted {
        if ctx.endpoints.get(&key.object_ref()).is_some() {
            let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.namespace);
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(service = %key, "deleted Endpoints"),
                Err(e) if is_not_found(&e) => {}
                Err(source) => return Err(api_error("delete", "Endpoints", key, &key.name, source)),
            }
            ctx.expect(key, Kind::Endpoints, &key.name, None);
        }
        ctx.deleted.lock().unwrap().remove(key);
    }
    Ok(Next::Done)
}

async fn write_endpoints(ctx: &Context, key: &ServiceKey, ep: Endpoints) -> Result<()> {
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let written = if ep.metadata.resource_version.is_some() {
        api.replace(&key.name, &PostParams::default(), &ep).await.map_err(|e| api_error("update", "Endpoints", key, &key.name, e))?
    } else {
        api.create(&PostParams::default(), &ep).await.map_err(|e| api_error("create", "Endpoints", key, &key.name, e))?
    };
    tracing::debug!(service = %key, "wrote Endpoints");
    ctx.expect(key, Kind::Endpoints, &key.name, written.metadata.resource_version);
    Ok(())
}

/// Creates, then updates, then deletes, so that endpoints that only move between slices never
/// disappear in between.
async fn execute(ctx: &Context, key: &ServiceKey, plan: SlicePlan) -> Result<()> {
    if plan.is_empty() {
        return Ok(());
    }
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.namespace);
    for slice in plan.create {
        let created = api.create(&PostParams::default(), &slice).await.map_err(|e| api_error("create", "EndpointSlice", key, "", e))?;
        tracing::debug!(service = %key, slice = %created.name_any(), "created EndpointSlice");
        ctx.expect(key, Kind::EndpointSlice, &created.name_any(), created.metadata.resource_version);
    }
    for slice in plan.update {
        let name = slice.name_any();
        let updated = api.replace(&name, &PostParams::default(), &slice).await.map_err(|e| api_error("update", "EndpointSlice", key, &name, e))?;
        ctx.expect(key, Kind::EndpointSlice, &name, updated.metadata.resource_version);
    }
    for slice in plan.delete {
        delete_slice(ctx, key, &api, &slice.name_any()).await?;
    }
    Ok(())
}

async fn delete_slices(ctx: &Context, key: &ServiceKey, controller: &str) -> Result<()> {
    let stale = ctx.slices_of(key, controller);
    if stale.is_empty() {
        return Ok(());
    }
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.namespace);
    for slice in stale {
        delete_slice(ctx, key, &api, &slice.name_any()).await?;
    }
    Ok(())
}

async fn delete_slice(ctx: &Context, key: &ServiceKey, api: &Api<EndpointSlice>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => tracing::debug!(service = %key, slice = %name, "deleted EndpointSlice"),
        Err(e) if is_not_found(&e) => {}
        Err(source) => return Err(api_error("delete", "EndpointSlice", key, name, source)),
    }
    ctx.expect(key, Kind::EndpointSlice, name, None);
    Ok(())
}

impl Error {
    /// The API server refused to create in a namespace that is being deleted (upstream does not
    /// retry these either).
    fn is_namespace_terminating(&self) -> bool {
        let Error::Api { source: kube::Error::Api(status), .. } = self else { return false };
        status.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.is_not_found())
}

fn api_error(action: &'static str, kind: &'static str, key: &ServiceKey, name: &str, source: kube::Error) -> Error {
    Error::Api { action, kind, namespace: key.namespace.clone(), name: name.to_string(), source }
}
