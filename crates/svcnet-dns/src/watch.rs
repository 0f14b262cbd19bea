//! Keeps the snapshot current: reflectors of Services, EndpointSlices, Pods and Namespaces, and a
//! builder that, once all four have listed, rebuilds the snapshot after every change (debounced)
//! and swaps it in. Before that the unsynced snapshot answers SERVFAIL for the zone.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use hickory_proto::rr::Name;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::sync::Notify;

use crate::{
    Error, Result,
    server::SnapshotHandle,
    snapshot::{Objects, Snapshot},
};

/// Runs the reflectors and the snapshot builder; returns only if a store ends.
pub(crate) async fn run(client: Client, zone: Name, ttl: u32, debounce: Duration, snapshots: SnapshotHandle) -> Result<()> {
    let changed = Arc::new(Notify::new());
    let (services, services_watch) = cache::<Service>(Api::all(client.clone()), &changed);
    let (slices, slices_watch) = cache::<EndpointSlice>(Api::all(client.clone()), &changed);
    let (pods, pods_watch) = cache::<Pod>(Api::all(client.clone()), &changed);
    let (namespaces, namespaces_watch) = cache::<Namespace>(Api::all(client), &changed);

    let builder = async {
        for (what, ready) in [
            ("Service", services.wait_until_ready().await),
            ("EndpointSlice", slices.wait_until_ready().await),
            ("Pod", pods.wait_until_ready().await),
            ("Namespace", namespaces.wait_until_ready().await),
        ] {
            ready.map_err(|_| Error::CacheEnded(what))?;
        }
        tracing::info!("DNS caches synced");
        loop {
            let (s, e, p, n) = (services.state(), slices.state(), pods.state(), namespaces.state());
            let objects = Objects {
                services: s.iter().map(|o| o.as_ref()).collect(),
                endpoint_slices: e.iter().map(|o| o.as_ref()).collect(),
                pods: p.iter().map(|o| o.as_ref()).collect(),
                namespaces: n.iter().map(|o| o.as_ref()).collect(),
            };
            let serial = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
            snapshots.publish(Snapshot::build(zone.clone(), ttl, serial, &objects));
            // A change during the build leaves a permit, so it is never lost.
            changed.notified().await;
            tokio::time::sleep(debounce).await;
        }
    };

    tokio::select! {
        r = builder => r,
        () = services_watch => Err(Error::CacheEnded("Service")),
        () = slices_watch => Err(Error::CacheEnded("EndpointSlice")),
        () = pods_watch => Err(Error::CacheEnded("Pod")),
        () = namespaces_watch => Err(Error::CacheEnded("Namespace")),
    }
}

/// A reflector store of every `K`, and the future that keeps it current (retrying failed watches
/// with backoff) and signals `changed` on every event.
fn cache<K>(api: Api<K>, changed: &Arc<Notify>) -> (Store<K>, impl Future<Output = ()> + use<K>)
where
    K: Resource<DynamicType = ()> + Clone + k8s_openapi::serde::de::DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let changed = Arc::clone(changed);
    let kind = K::kind(&());
    let events = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    let drive = events.for_each(move |event| {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => changed.notify_one(),
            Err(error) => tracing::warn!(%kind, %error, "DNS watch failed, retrying"),
        }
        futures::future::ready(())
    });
    (store, drive)
}
