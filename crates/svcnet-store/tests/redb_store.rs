use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use svcnet_store::{Error, Event, EventKind, KeyValue, RedbStore, RedbStoreOptions, Revision, Storage, WatchStream};

/// Guards against a hang; never used to wait for something to happen.
const DEADLINE: Duration = Duration::from_secs(60);

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

fn open(path: &Path) -> Arc<RedbStore> {
    RedbStore::open(path).expect("open store")
}

fn open_with(path: &Path, options: RedbStoreOptions) -> Arc<RedbStore> {
    RedbStore::open_with(path, options).expect("open store")
}

async fn next(stream: &mut WatchStream) -> svcnet_store::Result<Event> {
    tokio::time::timeout(DEADLINE, stream.next()).await.expect("watch event in time").expect("stream not ended")
}

/// Asserts that nothing more is ready on the stream. Every write is published before it is
/// acknowledged, so once all writes returned, any extra event would already be queued.
fn assert_idle(stream: &mut WatchStream) {
    if let Some(item) = stream.next().now_or_never() {
        panic!("unexpected extra watch item: {item:?}");
    }
}

#[tokio::test]
async fn crud_and_preconditions() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Storage> = open(&db_path(&dir));
    assert_eq!(store.current_revision().await.unwrap(), 0);
    assert_eq!(store.get("/a").await.unwrap(), None);

    let r1 = store.create("/a", b"one".to_vec()).await.unwrap();
    assert_eq!(r1, 1);
    assert_eq!(store.create("/a", b"again".to_vec()).await, Err(Error::AlreadyExists { key: "/a".into() }));
    let kv = store.get("/a").await.unwrap().unwrap();
    assert_eq!(kv.value, b"one");
    assert_eq!((kv.create_revision, kv.mod_revision), (1, 1));

    let r2 = store.update("/a", r1, b"two".to_vec()).await.unwrap();
    assert_eq!(r2, 2);
    assert_eq!(store.update("/a", r1, b"stale".to_vec()).await, Err(Error::Conflict { key: "/a".into(), current: 2 }));
    assert_eq!(store.update("/missing", 1, b"x".to_vec()).await, Err(Error::NotFound { key: "/missing".into() }));
    let kv = store.get("/a").await.unwrap().unwrap();
    assert_eq!(kv.value, b"two");
    assert_eq!((kv.create_revision, kv.mod_revision), (1, 2));

    assert_eq!(store.delete("/a", Some(1)).await, Err(Error::Conflict { key: "/a".into(), current: 2 }));
    assert_eq!(store.delete("/missing", None).await, Err(Error::NotFound { key: "/missing".into() }));
    // Failed writes consume no revision.
    assert_eq!(store.current_revision().await.unwrap(), 2);
    let deleted = store.delete("/a", Some(2)).await.unwrap();
    assert_eq!(deleted.value, b"two");
    assert_eq!((deleted.create_revision, deleted.mod_revision), (1, 3));
    assert_eq!(store.get("/a").await.unwrap(), None);

    // Re-creating starts a new life for the key.
    let r4 = store.create("/a", b"new".to_vec()).await.unwrap();
    assert_eq!(r4, 4);
    let deleted = store.delete("/a", None).await.unwrap();
    assert_eq!((deleted.create_revision, deleted.mod_revision), (4, 5));
    assert_eq!(store.current_revision().await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_get_distinct_increasing_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/k/{i:03}");
            let created = store.create(&key, vec![1]).await.unwrap();
            let updated = store.update(&key, created, vec![2]).await.unwrap();
            // The same key raced against itself: exactly one of two CAS updates wins.
            let a = store.update(&key, updated, vec![3]);
            let b = store.update(&key, updated, vec![4]);
            let (a, b) = tokio::join!(a, b);
            assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
            let won = a.or(b).unwrap();
            assert!(created < updated && updated < won);
            vec![created, updated, won]
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let expected: Vec<Revision> = (1..=600).collect();
    assert_eq!(all, expected);
    assert_eq!(store.current_revision().await.unwrap(), 600);
}

#[tokio::test]
async fn list_pages_and_isolates_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    for i in 0..10 {
        store.create(&format!("/registry/services/ns/s{i}"), vec![i]).await.unwrap();
    }
    store.create("/registry/servicesx/ns/other", vec![]).await.unwrap();
    store.create("/registry/pods/ns/p", vec![]).await.unwrap();
    store.create("/registry/service", vec![]).await.unwrap();

    let all = store.list("/registry/services/", None, None).await.unwrap();
    assert_eq!(all.items.len(), 10);
    assert!(!all.more);
    assert_eq!(all.revision, 13);
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(keys.iter().all(|k| k.starts_with("/registry/services/")));
    assert_eq!(store.count("/registry/services/").await.unwrap(), 10);
    assert_eq!(store.count("/registry/").await.unwrap(), 13);
    assert_eq!(store.count("/nothing/").await.unwrap(), 0);

    // Page through three at a time.
    let mut seen = Vec::new();
    let mut start_after: Option<String> = None;
    loop {
        let page = store.list("/registry/services/", start_after.as_deref(), Some(3)).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        assert_eq!(page.items.len(), 3);
        start_after = Some(page.items.last().unwrap().key.clone());
    }
    assert_eq!(seen, keys);

    // An exact final page reports no more.
    let page = store.list("/registry/services/", Some(&keys[6]), Some(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(!page.more);
    // A start before the prefix starts at the prefix.
    let page = store.list("/registry/services/", Some("/a"), Some(1)).await.unwrap();
    assert_eq!(page.items[0].key, keys[0]);
    assert!(page.more);
    // A start past the prefix lists nothing.
    let page = store.list("/registry/services/", Some("/z"), None).await.unwrap();
    assert!(page.items.is_empty() && !page.more);
    let other = store.list("/registry/servicesx/", None, None).await.unwrap();
    assert_eq!(other.items.len(), 1);
    assert_eq!(other.items[0].key, "/registry/servicesx/ns/other");
    assert_eq!(other.items[0].create_revision, 11);
}

#[tokio::test]
async fn watch_replays_history_then_continues_live() {
    let dir = tempfile::tempdir().unwrap();
    // Without the in-memory cache, replay must come from the log.
    for cache in [4096, 0, 2] {
        let dir = tempfile::tempdir_in(dir.path()).unwrap();
        let store = open_with(&db_path(&dir), RedbStoreOptions { event_cache_size: cache, ..Default::default() });
        let r1 = store.create("/w/a", b"a1".to_vec()).await.unwrap();
        store.create("/x/a", b"x".to_vec()).await.unwrap();
        let r3 = store.update("/w/a", r1, b"a2".to_vec()).await.unwrap();
        let r4 = store.create("/w/b", b"b1".to_vec()).await.unwrap();
        let r5 = store.delete("/w/a", None).await.unwrap().mod_revision;

        let mut from_start = store.watch("/w/", 0).await.unwrap();
        let mut from_r3 = store.watch("/w/", r3).await.unwrap();
        let mut from_now = store.watch("/w/", r5).await.unwrap();

        let e = next(&mut from_start).await.unwrap();
        assert_eq!((e.kind, e.revision(), e.kv.value.as_slice()), (EventKind::Created, r1, &b"a1"[..]));
        let e = next(&mut from_start).await.unwrap();
        assert_eq!((e.kind, e.revision(), e.kv.create_revision), (EventKind::Modified, r3, r1));
        assert_eq!(e.kv.value, b"a2");
        // A modification carries the value it replaced.
        assert_eq!(e.prev, Some(KeyValue { key: "/w/a".into(), value: b"a1".to_vec(), create_revision: r1, mod_revision: r1 }));
        let e = next(&mut from_start).await.unwrap();
        assert_eq!((e.kind, e.revision(), e.prev), (EventKind::Created, r4, None));
        let e = next(&mut from_start).await.unwrap();
        // A deletion carries the value it removed.
        assert_eq!((e.kind, e.revision(), e.kv.create_revision), (EventKind::Deleted, r5, r1));
        assert_eq!(e.kv.value, b"a2");
        assert_eq!(e.prev, None);
        assert_idle(&mut from_start);

        assert_eq!(next(&mut from_r3).await.unwrap().revision(), r4);
        assert_eq!(next(&mut from_r3).await.unwrap().revision(), r5);
        assert_idle(&mut from_r3);
        assert_idle(&mut from_now);

        let r6 = store.create("/w/c", b"c".to_vec()).await.unwrap();
        store.create("/wx/c", b"c".to_vec()).await.unwrap();
        let r8 = store.create("/w/d", b"d".to_vec()).await.unwrap();
        for w in [&mut from_start, &mut from_r3, &mut from_now] {
            assert_eq!(next(w).await.unwrap().revision(), r6);
            assert_eq!(next(w).await.unwrap().revision(), r8);
            assert_idle(w);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_revision_once_in_order_under_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    for cache in [4096, 0, 16] {
        let dir = tempfile::tempdir_in(dir.path()).unwrap();
        let store = open_with(&db_path(&dir), RedbStoreOptions { event_cache_size: cache, ..Default::default() });
        for i in 0..50 {
            store.create(&format!("/p/pre{i}"), vec![]).await.unwrap();
            store.create(&format!("/q/pre{i}"), vec![]).await.unwrap();
        }
        // Watchers registered before, during and after the writes, from various revisions.
        let mut watchers: Vec<(Revision, WatchStream)> = Vec::new();
        watchers.push((0, store.watch("/p/", 0).await.unwrap()));
        watchers.push((60, store.watch("/p/", 60).await.unwrap()));

        // Sequential writes per task make many small group commits to race against.
        let mut tasks = Vec::new();
        for t in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut p_revs = Vec::new();
                for i in 0..10 {
                    let key = if i % 2 == 0 { format!("/p/{t}-{i}") } else { format!("/q/{t}-{i}") };
                    let rev = store.create(&key, vec![]).await.unwrap();
                    if i % 2 == 0 {
                        p_revs.push(rev);
                    }
                }
                p_revs
            }));
        }
        while store.current_revision().await.unwrap() < 500 && watchers.len() < 600 {
            let now = store.current_revision().await.unwrap();
            for after in [0, now / 2, now.saturating_sub(3), now] {
                watchers.push((after, store.watch("/p/", after).await.unwrap()));
            }
            tokio::task::yield_now().await;
        }
        let mut p_revs = BTreeSet::new();
        for t in tasks {
            p_revs.extend(t.await.unwrap());
        }
        let last = store.current_revision().await.unwrap();
        assert_eq!(last, 500);
        watchers.push((last, store.watch("/p/", last).await.unwrap()));
        let pre: Vec<Revision> = (1..=100).step_by(2).collect();
        p_revs.extend(pre);
        assert_eq!(p_revs.len(), 250);

        for (after, mut stream) in watchers {
            let expected: Vec<Revision> = p_revs.range(after + 1..).copied().collect();
            let mut got = Vec::with_capacity(expected.len());
            while got.len() < expected.len() {
                let e = next(&mut stream).await.unwrap();
                assert!(e.kv.key.starts_with("/p/"));
                got.push(e.revision());
            }
            assert_eq!(got, expected, "watch from {after} (cache {cache})");
            assert_idle(&mut stream);
        }
    }
}

#[tokio::test]
async fn watch_before_compaction_point_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let small = RedbStoreOptions { event_log_size: 5, ..Default::default() };
    {
        let store = open_with(&path, small.clone());
        // An empty store can be watched from its start.
        let mut w = store.watch("/", 0).await.unwrap();
        assert_idle(&mut w);
        for i in 0..20 {
            store.create(&format!("/c/{i}"), vec![]).await.unwrap();
        }
        assert_eq!(next(&mut w).await.unwrap().revision(), 1);
        drop(w);
        assert!(matches!(store.watch("/", 0).await, Err(Error::Compacted { requested: 0, .. })));
        let Err(Error::Compacted { oldest, .. }) = store.watch("/", 14).await else {
            panic!("expected Compacted");
        };
        assert!(oldest > 15 && oldest <= 16, "oldest {oldest}");
        let mut w = store.watch("/", 15).await.unwrap();
        for rev in 16..=20 {
            assert_eq!(next(&mut w).await.unwrap().revision(), rev);
        }
        assert_idle(&mut w);
    }
    // The compaction point survives a restart, and the log replays from disk.
    let store = open_with(&path, RedbStoreOptions { event_cache_size: 0, ..small });
    assert!(matches!(store.watch("/", 3).await, Err(Error::Compacted { requested: 3, .. })));
    let mut w = store.watch("/", 15).await.unwrap();
    for rev in 16..=20 {
        assert_eq!(next(&mut w).await.unwrap().revision(), rev);
    }
    assert_idle(&mut w);
}

#[tokio::test]
async fn reopen_keeps_data_revision_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = open(&path);
        let r = store.create("/r/a", b"1".to_vec()).await.unwrap();
        store.update("/r/a", r, b"2".to_vec()).await.unwrap();
        store.create("/r/b", b"b".to_vec()).await.unwrap();
        store.delete("/r/b", None).await.unwrap();
        assert_eq!(store.current_revision().await.unwrap(), 4);
    }
    let store = open(&path);
    assert_eq!(store.current_revision().await.unwrap(), 4);
    let kv = store.get("/r/a").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision), (&b"2"[..], 1, 2));
    assert_eq!(store.get("/r/b").await.unwrap(), None);
    assert_eq!(store.list("/r/", None, None).await.unwrap().revision, 4);

    let mut w = store.watch("/r/", 1).await.unwrap();
    let e = next(&mut w).await.unwrap();
    assert_eq!((e.kind, e.revision()), (EventKind::Modified, 2));
    let prev = e.prev.expect("prev of a modification");
    assert_eq!((prev.value.as_slice(), prev.create_revision, prev.mod_revision), (&b"1"[..], 1, 1));
    let e = next(&mut w).await.unwrap();
    assert_eq!((e.kind, e.revision()), (EventKind::Created, 3));
    let e = next(&mut w).await.unwrap();
    assert_eq!((e.kind, e.revision(), e.kv.value.as_slice()), (EventKind::Deleted, 4, &b"b"[..]));
    assert_idle(&mut w);
    assert_eq!(store.create("/r/c", vec![]).await.unwrap(), 5);
    assert_eq!(next(&mut w).await.unwrap().revision(), 5);
}

#[tokio::test]
async fn slow_watcher_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(&db_path(&dir), RedbStoreOptions { watcher_buffer: 4, ..Default::default() });
    let mut slow = store.watch("/", 0).await.unwrap();
    let mut other = store.watch("/other/", 0).await.unwrap();
    for i in 0..10 {
        // Writes never wait on the slow watcher.
        store.create(&format!("/s/{i}"), vec![]).await.unwrap();
    }
    for rev in 1..=4 {
        assert_eq!(next(&mut slow).await.unwrap().revision(), rev);
    }
    assert_eq!(next(&mut slow).await, Err(Error::WatcherTooSlow));
    assert!(slow.next().await.is_none());
    // Re-watching from the last revision seen resumes without a gap.
    let mut again = store.watch("/", 4).await.unwrap();
    for rev in 5..=10 {
        assert_eq!(next(&mut again).await.unwrap().revision(), rev);
    }
    // A watcher of another prefix is unaffected.
    store.create("/other/x", vec![]).await.unwrap();
    assert_eq!(next(&mut other).await.unwrap().revision(), 11);
}

#[tokio::test]
async fn dropping_the_store_ends_watches_and_frees_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = open(&path);
    let mut w = store.watch("/", 0).await.unwrap();
    store.create("/a", vec![]).await.unwrap();
    drop(store);
    assert_eq!(next(&mut w).await.unwrap().revision(), 1);
    assert!(matches!(next(&mut w).await, Err(Error::Backend(_))));
    assert!(w.next().await.is_none());
    let store = open(&path);
    assert_eq!(store.current_revision().await.unwrap(), 1);
}

const CRASH_ENV: &str = "SVCNET_STORE_CRASH_CHILD_DB";

/// The child half of [`acknowledged_writes_survive_sigkill`]: a no-op unless that test starts
/// this binary with `CRASH_ENV` set.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let store = open(Path::new(&path));
        let mut tasks = Vec::new();
        for t in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("/crash/{t}/{i}");
                    store.create(&key, key.as_bytes().to_vec()).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut line = String::new();
    let mut read_ack = |acked: &mut Vec<String>| -> bool {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            return false;
        }
        // A line cut short by the kill was never fully acknowledged.
        if let Some(key) = line.strip_prefix("ACK ").and_then(|l| l.strip_suffix('\n')) {
            acked.push(key.to_owned());
        }
        true
    };
    while acked.len() < 200 {
        assert!(read_ack(&mut acked), "child exited after {} acks", acked.len());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Acks already in the pipe count too.
    while read_ack(&mut acked) {}
    eprintln!("{} writes acknowledged before the kill", acked.len());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open(&path);
        for key in &acked {
            let kv = store.get(key).await.unwrap();
            assert_eq!(kv.map(|kv| kv.value), Some(key.as_bytes().to_vec()), "acknowledged {key} lost");
        }
        let count = store.count("/crash/").await.unwrap();
        assert!(count >= acked.len() as u64);
        assert_eq!(store.current_revision().await.unwrap(), count);
    });
}
