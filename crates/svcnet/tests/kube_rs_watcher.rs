//! The API server driven by the Rust `kube` client: `kube::runtime::watcher` sees creates,
//! updates and deletes; a watch from an expired resourceVersion gets the in-stream 410 that
//! clients relist on; the watcher (with a reflector) survives 410s and converges on the server's
//! state; bookmark-enabled and streaming-list (`sendInitialEvents`) watches work.

mod common;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::Svcnet;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Client, Config,
    api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt, reflector,
        watcher::{self, Event},
    },
};
use serde_json::json;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

async fn client(server: &Svcnet) -> Client {
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube config");
    Client::try_from(config).expect("kube client")
}

async fn namespace(client: &Client, name: &str) -> Api<ConfigMap> {
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    Api::namespaced(client.clone(), name)
}

fn cm(name: &str, labels: &[(&str, &str)], v: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), v.to_string())])),
        ..Default::default()
    }
}

async fn create(api: &Api<ConfigMap>, obj: &ConfigMap) -> ConfigMap {
    api.create(&PostParams::default(), obj).await.unwrap_or_else(|e| panic!("create {:?}: {e}", obj.metadata.name))
}

async fn set_v(api: &Api<ConfigMap>, name: &str, v: &str) -> ConfigMap {
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"data": {"v": v}}))).await.unwrap_or_else(|e| panic!("patch {name}: {e}"))
}

async fn delete(api: &Api<ConfigMap>, name: &str) {
    api.delete(name, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("delete {name}: {e}"));
}

/// Awaits `fut`, panicking with `what` after `WAIT`.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn name(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

fn v(cm: &ConfigMap) -> String {
    cm.data.as_ref().and_then(|d| d.get("v")).cloned().unwrap_or_default()
}

/// A watcher event boiled down for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Init,
    InitApply(String, String),
    InitDone,
    Apply(String, String),
    Delete(String),
    Error(String),
}

fn seen(ev: watcher::Result<Event<ConfigMap>>) -> Seen {
    match ev {
        Ok(Event::Init) => Seen::Init,
        Ok(Event::InitApply(o)) => Seen::InitApply(name(&o), v(&o)),
        Ok(Event::InitDone) => Seen::InitDone,
        Ok(Event::Apply(o)) => Seen::Apply(name(&o), v(&o)),
        Ok(Event::Delete(o)) => Seen::Delete(name(&o)),
        Err(e) => Seen::Error(e.to_string()),
    }
}

/// Drives `watcher(api, config)` in a task, forwarding every event.
fn spawn_watcher(api: Api<ConfigMap>, config: watcher::Config) -> (mpsc::UnboundedReceiver<Seen>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, config).boxed();
        while let Some(ev) = stream.next().await {
            if tx.send(seen(ev)).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>, what: &str) -> Seen {
    within(what, rx.recv()).await.unwrap_or_else(|| panic!("watcher ended while waiting for {what}"))
}

/// Collects events up to and including `InitDone`; returns the `InitApply`s.
async fn init(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    assert_eq!(next(rx, "Init").await, Seen::Init);
    let mut applied = Vec::new();
    loop {
        match next(rx, "InitDone").await {
            Seen::InitDone => return applied,
            ev @ Seen::InitApply(..) => applied.push(ev),
            other => panic!("unexpected event during the initial list: {other:?}"),
        }
    }
}

use kube::runtime::watcher::watcher;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_creates_updates_and_deletes() {
    let server = Svcnet::start();
    let client = client(&server).await;
    let api = namespace(&client, "kw-crud").await;
    create(&api, &cm("pre", &[], "0")).await;

    let (mut rx, task) = spawn_watcher(api.clone(), watcher::Config::default());
    assert_eq!(init(&mut rx).await, [Seen::InitApply("pre".into(), "0".into())]);

    create(&api, &cm("a", &[("app", "a")], "1")).await;
    assert_eq!(next(&mut rx, "Apply(a)").await, Seen::Apply("a".into(), "1".into()));
    set_v(&api, "a", "2").await;
    assert_eq!(next(&mut rx, "Apply(a) after patch").await, Seen::Apply("a".into(), "2".into()));
    let mut replaced = api.get("a").await.unwrap();
    replaced.data = Some(BTreeMap::from([("v".into(), "3".into())]));
    api.replace("a", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(next(&mut rx, "Apply(a) after replace").await, Seen::Apply("a".into(), "3".into()));
    delete(&api, "a").await;
    assert_eq!(next(&mut rx, "Delete(a)").await, Seen::Delete("a".into()));
    delete(&api, "pre").await;
    assert_eq!(next(&mut rx, "Delete(pre)").await, Seen::Delete("pre".into()));

    // Changes in another namespace are not this watcher's business.
    let other = namespace(&client, "kw-crud-other").await;
    create(&other, &cm("elsewhere", &[], "x")).await;
    create(&api, &cm("b", &[], "1")).await;
    assert_eq!(next(&mut rx, "Apply(b)").await, Seen::Apply("b".into(), "1".into()));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_expired_resource_version_gets_an_in_stream_410() {
    let server = Svcnet::start_with(tempfile::tempdir().unwrap(), &["--watch-history", "20"]);
    let client = client(&server).await;
    let api = namespace(&client, "kw-expired").await;
    let first = create(&api, &cm("first", &[], "0")).await;
    let old_rv = first.metadata.resource_version.clone().expect("resourceVersion");
    for i in 0..60 {
        create(&api, &cm(&format!("fill-{i:02}"), &[], "x")).await;
    }

    // The request itself succeeds (HTTP 200): an HTTP 410 would make kube's watcher retry the
    // same version forever. The 410 comes as the first event, and the stream then ends.
    let stream = match api.watch(&WatchParams::default(), &old_rv).await {
        Ok(s) => s,
        Err(e) => panic!("watch from expired resourceVersion {old_rv} failed as a request (want HTTP 200 + ERROR event): {e:?}"),
    };
    let mut stream = stream.boxed();
    match within("the 410 event", stream.next()).await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410, "{status:?}");
            assert_eq!(status.reason, "Expired", "{status:?}");
            assert!(status.message.contains("too old resource version"), "{status:?}");
        }
        other => panic!("want an in-stream ERROR 410 Expired, got {other:?}"),
    }
    assert!(within("the end of the expired watch", stream.next()).await.is_none(), "the watch went on after the 410");

    // A watch from a fresh list's resourceVersion works.
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 61);
    let rv = list.metadata.resource_version.expect("list resourceVersion");
    let mut stream = api.watch(&WatchParams::default(), &rv).await.expect("watch from the list's resourceVersion").boxed();
    create(&api, &cm("after", &[], "1")).await;
    match within("ADDED after", stream.next()).await {
        Some(Ok(WatchEvent::Added(o))) => assert_eq!(name(&o), "after"),
        other => panic!("want ADDED after, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_relists_after_410_and_converges() {
    let server = Svcnet::start_with(tempfile::tempdir().unwrap(), &["--watch-history", "20"]);
    let client = client(&server).await;
    let api = namespace(&client, "kw-relist").await;
    create(&api, &cm("w-seed", &[("group", "w")], "0")).await;

    // A selective watcher whose watches last 1s: each time a watch ends it resumes from the last
    // event it saw. Writes it does not select move the history on without moving that version,
    // so the resume is from a version older than the history: the server must answer 410 and
    // the watcher must relist.
    let (store, writer) = reflector::store::<ConfigMap>();
    let gone = Arc::new(AtomicUsize::new(0));
    let other_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let task = {
        let (gone, other_errors) = (gone.clone(), other_errors.clone());
        let stream = watcher(api.clone(), watcher::Config::default().labels("group=w").timeout(1)).default_backoff().reflect(writer);
        tokio::spawn(async move {
            let mut stream = stream.boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(_) => {}
                    Err(watcher::Error::WatchError(s)) if s.code == 410 && s.reason == "Expired" => {
                        gone.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => other_errors.lock().unwrap().push(format!("{e:?}")),
                }
            }
        })
    };
    within("the reflector's initial list", store.wait_until_ready()).await.expect("reflector ready");
    assert!(store.get(&reflector::ObjectRef::new("w-seed").within("kw-relist")).is_some(), "w-seed not in the reflector");

    // Phase 1: writes the watcher does not select, then wait for its 410.
    for i in 0..60 {
        create(&api, &cm(&format!("other-{i:02}"), &[("group", "other")], "x")).await;
    }
    let start = tokio::time::Instant::now();
    while gone.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < WAIT, "the watcher never got a 410 Expired; other errors: {:?}", other_errors.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Phase 2: a burst of >100 writes it does select (creates, updates, deletes, and a label
    // change that moves an object out of the selection) while it keeps relisting.
    for i in 0..120 {
        create(&api, &cm(&format!("w-{i:03}"), &[("group", "w")], "1")).await;
        if i % 2 == 0 && i > 0 {
            set_v(&api, &format!("w-{:03}", i - 1), "2").await;
        }
        if i % 3 == 2 {
            delete(&api, &format!("w-{:03}", i - 1)).await;
        }
    }
    set_v(&api, "w-seed", "3").await;
    api.patch("w-000", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"group": "gone"}}}))).await.unwrap();
    create(&api, &cm("w-last", &[("group", "w")], "last")).await;

    // The reflector converges on exactly what the server lists.
    let want: BTreeMap<String, String> = api.list(&ListParams::default().labels("group=w")).await.unwrap().items.iter().map(|o| (name(o), v(o))).collect();
    assert_eq!(want.len(), 1 + 120 - 40 - 1 + 1, "server list: {want:?}");
    assert_eq!(want.get("w-seed").map(String::as_str), Some("3"));
    let start = tokio::time::Instant::now();
    loop {
        let got: BTreeMap<String, String> = store.state().iter().map(|o| (name(o), v(o))).collect();
        if got == want {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let missing: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).collect();
            let extra: Vec<_> = got.iter().filter(|(k, _)| !want.contains_key(*k)).collect();
            panic!(
                "the reflector did not converge: missing/stale {missing:?}, extra {extra:?}; 410s {}, other errors {:?}",
                gone.load(Ordering::SeqCst),
                other_errors.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone.load(Ordering::SeqCst) >= 1);
    println!("the watcher converged on {} objects after {} 410 Expired relists", want.len(), gone.load(Ordering::SeqCst));
    // Watches that end (timeoutSeconds) and resume are normal; no other error is.
    assert!(other_errors.lock().unwrap().is_empty(), "watcher errors other than 410: {:?}", other_errors.lock().unwrap());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmark_and_streaming_list_watches() {
    let server = Svcnet::start();
    let client = client(&server).await;
    let api = namespace(&client, "kw-bookmarks").await;
    create(&api, &cm("bm-0", &[], "0")).await;

    // kube's default WatchParams ask for bookmarks (allowWatchBookmarks=true).
    assert!(WatchParams::default().bookmarks);
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.expect("list resourceVersion");
    let mut stream = api.watch(&WatchParams::default().timeout(30), &rv).await.expect("bookmark watch").boxed();
    create(&api, &cm("bm-1", &[], "1")).await;
    loop {
        match within("ADDED bm-1", stream.next()).await {
            Some(Ok(WatchEvent::Bookmark(bm))) => assert!(!bm.metadata.resource_version.is_empty(), "bookmark without resourceVersion"),
            Some(Ok(WatchEvent::Added(o))) => {
                assert_eq!(name(&o), "bm-1");
                break;
            }
            other => panic!("want ADDED bm-1, got {other:?}"),
        }
    }
    drop(stream);

    // A streaming list: the current objects as ADDED, then a BOOKMARK marking the end of the
    // initial events, then changes.
    let mut stream = api.watch(&WatchParams::streaming_lists().timeout(30), "0").await.expect("streaming-list watch").boxed();
    let mut initial = Vec::new();
    let end_rv = loop {
        match within("the initial-events-end bookmark", stream.next()).await {
            Some(Ok(WatchEvent::Added(o))) => initial.push(name(&o)),
            Some(Ok(WatchEvent::Bookmark(bm))) => {
                if bm.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str) == Some("true") {
                    break bm.metadata.resource_version;
                }
            }
            other => panic!("unexpected event in the initial events: {other:?}"),
        }
    };
    initial.sort();
    assert_eq!(initial, ["bm-0", "bm-1"]);
    assert!(end_rv.parse::<u64>().is_ok_and(|r| r > 0), "initial-events-end bookmark resourceVersion {end_rv:?}");
    create(&api, &cm("bm-2", &[], "2")).await;
    loop {
        match within("ADDED bm-2", stream.next()).await {
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            Some(Ok(WatchEvent::Added(o))) => {
                assert_eq!(name(&o), "bm-2");
                break;
            }
            other => panic!("want ADDED bm-2, got {other:?}"),
        }
    }
    drop(stream);

    // kube's watcher in streaming-list mode relies on that bookmark for InitDone.
    let (mut rx, task) = spawn_watcher(api.clone(), watcher::Config::default().streaming_lists());
    let mut applied = init(&mut rx).await;
    applied.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(applied, [Seen::InitApply("bm-0".into(), "0".into()), Seen::InitApply("bm-1".into(), "1".into()), Seen::InitApply("bm-2".into(), "2".into())]);
    set_v(&api, "bm-1", "11").await;
    assert_eq!(next(&mut rx, "Apply(bm-1)").await, Seen::Apply("bm-1".into(), "11".into()));
    delete(&api, "bm-0").await;
    assert_eq!(next(&mut rx, "Delete(bm-0)").await, Seen::Delete("bm-0".into()));
    task.abort();

    // A watch whose selector excludes everything still serves (and bookmarks, when they come,
    // carry a resourceVersion), and the TryStream interface ends cleanly at timeoutSeconds.
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let events: Vec<_> = within(
        "a 1s watch to end",
        api.watch(&WatchParams::default().labels("nothing=here").timeout(1), &rv).await.expect("empty watch").try_collect::<Vec<_>>(),
    )
    .await
    .expect("empty watch stream");
    assert!(events.iter().all(|e| matches!(e, WatchEvent::Bookmark(_))), "{events:?}");
}
