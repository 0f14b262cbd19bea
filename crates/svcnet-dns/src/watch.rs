//! Keeps the snapshot current: watches of Services, EndpointSlices, Pods and Namespaces feed one
//! [`Index`], event by event; after each batch of events that are ready at once, the index's
//! snapshot (an O(1) clone of persistent maps) is published. Before every watch has listed once,
//! the unsynced snapshot stays in place and the zone answers SERVFAIL.

use std::{
    collections::HashSet,
    fmt,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use futures::{FutureExt, StreamExt, stream::BoxStream};
use hickory_proto::rr::Name;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

use crate::{
    Result,
    index::{Index, ObjectKind},
    metrics::Metrics,
    server::SnapshotHandle,
    snapshot::Key,
};

/// One watch event of one of the four kinds.
#[allow(clippy::large_enum_variant, reason = "moved once from the stream into the index")]
enum Event {
    Service(watcher::Event<Service>),
    EndpointSlice(watcher::Event<EndpointSlice>),
    Pod(watcher::Event<Pod>),
    Namespace(watcher::Event<Namespace>),
}

/// Runs the watches and publishes snapshots; returns only if every watch stream ends.
pub(crate) async fn run(client: Client, zone: Name, ttl: u32, snapshots: SnapshotHandle, metrics: Arc<Metrics>) -> Result<()> {
    let streams: Vec<BoxStream<'static, Event>> = vec![
        events(Api::<Service>::all(client.clone()), Event::Service),
        events(Api::<EndpointSlice>::all(client.clone()), Event::EndpointSlice),
        events(Api::<Pod>::all(client.clone()), Event::Pod),
        events(Api::<Namespace>::all(client), Event::Namespace),
    ];
    let mut merged = futures::stream::select_all(streams);
    let mut syncer = Syncer::new(zone, ttl);
    while let Some(event) = merged.next().await {
        let started = Instant::now();
        syncer.apply(event);
        // Everything already waiting goes into the same snapshot.
        while let Some(Some(event)) = merged.next().now_or_never() {
            syncer.apply(event);
        }
        if syncer.synced() {
            if !syncer.announced {
                tracing::info!("DNS caches synced");
                syncer.announced = true;
            }
            let serial = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
            snapshots.publish(syncer.index.snapshot(serial));
            metrics.snapshot_published(started.elapsed());
        }
    }
    Ok(())
}

/// The watch events of every `K`, retried with backoff (errors are logged, never the end).
fn events<K>(api: Api<K>, wrap: fn(watcher::Event<K>) -> Event) -> BoxStream<'static, Event>
where
    K: Resource<DynamicType = ()> + Clone + k8s_openapi::serde::de::DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    let kind = K::kind(&());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok(event) => Some(wrap(event)),
                Err(error) => {
                    tracing::warn!(%kind, %error, "DNS watch failed, retrying");
                    None
                }
            })
        })
        .boxed()
}

/// The index, and each kind's (re)list in progress.
struct Syncer {
    index: Index,
    /// Kinds that have completed a list at least once.
    listed: HashSet<ObjectKind>,
    /// Keys seen so far in each kind's current relist.
    relisting: std::collections::HashMap<ObjectKind, HashSet<Key>>,
    announced: bool,
}

impl Syncer {
    fn new(zone: Name, ttl: u32) -> Self {
        Syncer { index: Index::new(zone, ttl), listed: HashSet::new(), relisting: Default::default(), announced: false }
    }

    fn synced(&self) -> bool {
        self.listed.len() == 4
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Service(e) => self.kind(ObjectKind::Service, e, Index::apply_service),
            Event::EndpointSlice(e) => self.kind(ObjectKind::EndpointSlice, e, Index::apply_endpoint_slice),
            Event::Pod(e) => self.kind(ObjectKind::Pod, e, Index::apply_pod),
            Event::Namespace(e) => self.kind(ObjectKind::Namespace, e, Index::apply_namespace),
        }
    }

    /// A relist applies objects as they come (the index stays answerable) and, once done,
    /// deletes what it did not see.
    fn kind<K: Resource>(&mut self, kind: ObjectKind, event: watcher::Event<K>, apply: fn(&mut Index, &K)) {
        let key = |o: &K| {
            let ns = if kind == ObjectKind::Namespace { String::new() } else { o.namespace().unwrap_or_default().to_ascii_lowercase() };
            (ns, o.name_any().to_ascii_lowercase())
        };
        match event {
            watcher::Event::Init => {
                self.relisting.insert(kind, HashSet::new());
            }
            watcher::Event::InitApply(o) => {
                self.relisting.entry(kind).or_default().insert(key(&o));
                apply(&mut self.index, &o);
            }
            watcher::Event::InitDone => {
                let seen = self.relisting.remove(&kind).unwrap_or_default();
                for stale in self.index.keys(kind).into_iter().filter(|k| !seen.contains(k)) {
                    self.index.delete(kind, &stale);
                }
                self.listed.insert(kind);
            }
            watcher::Event::Apply(o) => apply(&mut self.index, &o),
            watcher::Event::Delete(o) => self.index.delete(kind, &key(&o)),
        }
    }
}
