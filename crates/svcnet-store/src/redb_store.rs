//! The embedded backend on redb.
//!
//! All writes go through one writer thread that applies every queued request in a single redb
//! transaction (group commit): an fsync per batch rather than per write is what makes durable
//! writes fast, and a single writer gives the store its one total order of revisions for free.
//! The event log is written in the same transaction as the data, so a watch can resume from any
//! kept revision, across restarts too.

use std::collections::VecDeque;
use std::fmt::Display;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc as std_mpsc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Event, EventKind, KeyValue, ListResult, Result, Revision, Storage, WatchStream};

/// key -> record (see [`encode_record`]).
const DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("data");
/// Store-wide counters.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// revision -> event (see [`encode_event`]). Revisions are contiguous: every committed write is
/// one event, so the log covers exactly `(compacted, revision]`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

const META_REVISION: &str = "revision";
/// Every event at or below this revision has been dropped from the log.
const META_COMPACTED: &str = "compacted";

/// Bounds one transaction, so one huge burst does not delay every caller's acknowledgement
/// until all of it is written.
const MAX_BATCH: usize = 4096;

/// Tuning for [`RedbStore`].
#[derive(Debug, Clone)]
pub struct RedbStoreOptions {
    /// How many of the most recent events the log keeps for watches to resume from. Older
    /// revisions get [`Error::Compacted`]. The log may briefly hold a few more (it is trimmed in
    /// steps, to not rewrite it on every write).
    pub event_log_size: u64,
    /// Events a watcher may have pending before it is cut off with [`Error::WatcherTooSlow`].
    /// Bounded so that one stuck client cannot make the writer block or the process grow.
    pub watcher_buffer: usize,
    /// Recent events kept in memory, so that the usual watch (from a recent list) replays without
    /// reading the log. `0` disables it; correctness does not depend on it.
    pub event_cache_size: usize,
}

impl Default for RedbStoreOptions {
    fn default() -> Self {
        Self { event_log_size: 100_000, watcher_buffer: 10_000, event_cache_size: 4096 }
    }
}

/// A [`crate::Storage`] in one redb file.
pub struct RedbStore {
    db: Arc<Database>,
    hub: Arc<Mutex<Hub>>,
    /// Last committed revision, readable without a transaction.
    revision: Arc<AtomicU64>,
    /// Taken on drop, to stop the writer and wait for it so the file is closed on return.
    writer: Option<(std_mpsc::Sender<Request>, JoinHandle<()>)>,
    options: RedbStoreOptions,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("revision", &self.revision.load(Ordering::Acquire)).field("options", &self.options).finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store at `path` with default options.
    pub fn open(path: &Path) -> Result<Arc<RedbStore>> {
        Self::open_with(path, RedbStoreOptions::default())
    }

    /// Opens (creating if needed) the store at `path`.
    pub fn open_with(path: &Path, options: RedbStoreOptions) -> Result<Arc<RedbStore>> {
        let db = Arc::new(Database::create(path).backend()?);
        // Create the tables up front so that read transactions never see them missing.
        let txn = db.begin_write().backend()?;
        let (revision, compacted) = {
            txn.open_table(DATA).backend()?;
            txn.open_table(LOG).backend()?;
            let meta = txn.open_table(META).backend()?;
            (meta_get(&meta, META_REVISION)?, meta_get(&meta, META_COMPACTED)?)
        };
        txn.commit().backend()?;

        let hub = Arc::new(Mutex::new(Hub {
            last: revision,
            compacted,
            ring: VecDeque::with_capacity(options.event_cache_size.min(MAX_BATCH)),
            watchers: Vec::new(),
            closed: false,
        }));
        let revision = Arc::new(AtomicU64::new(revision));
        let (tx, rx) = std_mpsc::channel();
        let writer =
            Writer { db: db.clone(), hub: hub.clone(), revision: revision.clone(), log_size: options.event_log_size, cache_size: options.event_cache_size };
        let handle = std::thread::Builder::new().name("svcnet-store-writer".into()).spawn(move || writer.run(rx)).backend()?;
        Ok(Arc::new(RedbStore { db, hub, revision, writer: Some((tx, handle)), options }))
    }

    async fn submit(&self, op: Op) -> Result<Done> {
        let (reply, done) = oneshot::channel();
        let (tx, _) = self.writer.as_ref().ok_or_else(closed)?;
        tx.send(Request { op, reply }).map_err(|_| closed())?;
        done.await.map_err(|_| closed())?
    }

    /// Runs a read off the async runtime: a listing can scan many keys.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Database) -> Result<T> + Send + 'static) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.backend()?
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.writer.take() {
            // Closing the channel lets the writer finish the queued batch and exit.
            drop(tx);
            if handle.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
        let mut hub = lock(&self.hub);
        hub.closed = true;
        // Dropping the senders ends every watch stream with an error.
        hub.watchers.clear();
    }
}

#[async_trait]
impl Storage for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // A point read is a few page lookups: cheaper inline than a hop to the blocking pool.
        let txn = self.db.begin_read().backend()?;
        let data = txn.open_table(DATA).backend()?;
        let found = data.get(key).backend()?;
        found.map(|v| decode_record(key, v.value())).transpose()
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.read(move |db| list_blocking(db, &prefix, start_after.as_deref(), limit)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().backend()?;
            let data = txn.open_table(DATA).backend()?;
            let mut n = 0;
            for entry in data.range::<&str>((Bound::Included(prefix.as_str()), Bound::Unbounded)).backend()? {
                let (k, _) = entry.backend()?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        match self.submit(Op::Create { key: key.to_owned(), value }).await? {
            Done::Revision(r) => Ok(r),
            Done::Deleted(kv) => Ok(kv.mod_revision),
        }
    }

    async fn update(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<Revision> {
        match self.submit(Op::Update { key: key.to_owned(), expected, value }).await? {
            Done::Revision(r) => Ok(r),
            Done::Deleted(kv) => Ok(kv.mod_revision),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        match self.submit(Op::Delete { key: key.to_owned(), expected }).await? {
            Done::Deleted(kv) => Ok(kv),
            Done::Revision(_) => Err(Error::Backend("writer answered a delete wrongly".into())),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(self.options.watcher_buffer.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        // Registering before reading the history closes the catch-up race: every event past
        // `upto` reaches the channel, and every event up to it is in the log (it is published
        // only after its commit), so replaying `(after, upto]` then the channel leaves no gap.
        let (upto, cached) = {
            let mut hub = lock(&self.hub);
            if hub.closed {
                return Err(closed());
            }
            if after < hub.compacted {
                return Err(Error::Compacted { requested: after, oldest: hub.compacted + 1 });
            }
            hub.watchers.push(Slot { prefix: prefix.to_owned(), tx, overflowed: overflowed.clone(), dead: false });
            let upto = hub.last;
            // The ring holds the contiguous revisions `(upto - len, upto]`.
            let ring_start = upto - hub.ring.len() as u64;
            let cached = (after >= ring_start).then(|| {
                let skip = usize::try_from(after - ring_start).unwrap_or(usize::MAX);
                hub.ring.iter().skip(skip).filter(|e| e.kv.key.starts_with(prefix)).map(|e| Event::clone(e)).collect::<Vec<_>>()
            });
            (upto, cached)
        };
        // On an error below, dropping `rx` makes the writer forget the slot.
        let replay = match cached {
            Some(events) => events,
            None => {
                let prefix = prefix.to_owned();
                self.read(move |db| read_log(db, &prefix, after, upto)).await?
            }
        };
        let last = replay.last().map_or(after, Event::revision).max(after);
        Ok(watch_stream(replay, rx, last, overflowed))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.revision.load(Ordering::Acquire))
    }
}

/// A watcher's view from the writer.
struct Slot {
    prefix: String,
    tx: mpsc::Sender<Arc<Event>>,
    /// Tells the stream why its channel closed.
    overflowed: Arc<AtomicBool>,
    dead: bool,
}

/// Live events, fanned out by the writer after each commit.
struct Hub {
    /// Highest revision published to watchers (and pushed into `ring`).
    last: Revision,
    /// Log compaction point as of `last`.
    compacted: Revision,
    ring: VecDeque<Arc<Event>>,
    watchers: Vec<Slot>,
    closed: bool,
}

/// The lock is only held for short, non-panicking sections, but a poisoned hub is still
/// consistent enough to use, so we do not propagate poisoning.
fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(|e| e.into_inner())
}

fn watch_stream(replay: Vec<Event>, rx: mpsc::Receiver<Arc<Event>>, last: Revision, overflowed: Arc<AtomicBool>) -> WatchStream {
    let replay = futures::stream::iter(replay.into_iter().map(Ok));
    let live = futures::stream::unfold(Some((rx, last, overflowed)), |state| async move {
        let (mut rx, mut last, overflowed) = state?;
        loop {
            match rx.recv().await {
                // Already replayed from the log (or before `after`).
                Some(ev) if ev.revision() <= last => continue,
                Some(ev) => {
                    last = ev.revision();
                    let ev = Arc::try_unwrap(ev).unwrap_or_else(|ev| Event::clone(&ev));
                    return Some((Ok(ev), Some((rx, last, overflowed))));
                }
                None => {
                    let err = if overflowed.load(Ordering::Acquire) { Error::WatcherTooSlow } else { closed() };
                    return Some((Err(err), None));
                }
            }
        }
    });
    replay.chain(live).boxed()
}

enum Op {
    Create { key: String, value: Vec<u8> },
    Update { key: String, expected: Revision, value: Vec<u8> },
    Delete { key: String, expected: Option<Revision> },
}

enum Done {
    Revision(Revision),
    Deleted(KeyValue),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
}

/// The outcome of one batch transaction.
struct Applied {
    results: Vec<Result<Done>>,
    events: Vec<Arc<Event>>,
    revision: Revision,
    compacted: Revision,
}

struct Writer {
    db: Arc<Database>,
    hub: Arc<Mutex<Hub>>,
    revision: Arc<AtomicU64>,
    log_size: u64,
    cache_size: usize,
}

impl Writer {
    fn run(self, rx: std_mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first.op];
            let mut replies = vec![first.reply];
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(req) => {
                        ops.push(req.op);
                        replies.push(req.reply);
                    }
                    Err(_) => break,
                }
            }
            match self.apply(ops) {
                Ok(applied) => {
                    // Publish before answering, so a caller that watches from the revision it
                    // got back is never ahead of the hub.
                    self.revision.store(applied.revision, Ordering::Release);
                    self.publish(applied.events, applied.revision, applied.compacted);
                    for (reply, result) in replies.into_iter().zip(applied.results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    // redb refuses further writes after a failed commit, so no later batch can
                    // build on a revision watchers did not see.
                    tracing::error!(error = %e, "store write transaction failed");
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Applies `ops` in order in one transaction; each is checked against the state left by the
    /// ones before it, and a failed precondition only fails that op.
    fn apply(&self, ops: Vec<Op>) -> Result<Applied> {
        let txn = self.db.begin_write().backend()?;
        let mut results = Vec::with_capacity(ops.len());
        let mut events = Vec::new();
        let (revision, compacted) = {
            let mut data = txn.open_table(DATA).backend()?;
            let mut log = txn.open_table(LOG).backend()?;
            let mut meta = txn.open_table(META).backend()?;
            let mut rev = meta_get(&meta, META_REVISION)?;
            let mut compacted = meta_get(&meta, META_COMPACTED)?;
            for op in ops {
                let (kind, key, value, create, prev) = match op {
                    Op::Create { key, value } => {
                        if data.get(key.as_str()).backend()?.is_some() {
                            results.push(Err(Error::AlreadyExists { key }));
                            continue;
                        }
                        (EventKind::Created, key, value, rev + 1, None)
                    }
                    Op::Update { key, expected, value } => {
                        let current = match get_record(&data, &key)? {
                            None => {
                                results.push(Err(Error::NotFound { key }));
                                continue;
                            }
                            Some(kv) => kv,
                        };
                        if current.mod_revision != expected {
                            results.push(Err(Error::Conflict { key, current: current.mod_revision }));
                            continue;
                        }
                        let create = current.create_revision;
                        (EventKind::Modified, key, value, create, Some(current))
                    }
                    Op::Delete { key, expected } => {
                        let current = match get_record(&data, &key)? {
                            None => {
                                results.push(Err(Error::NotFound { key }));
                                continue;
                            }
                            Some(kv) => kv,
                        };
                        if let Some(expected) = expected
                            && current.mod_revision != expected
                        {
                            results.push(Err(Error::Conflict { key, current: current.mod_revision }));
                            continue;
                        }
                        (EventKind::Deleted, key, current.value, current.create_revision, None)
                    }
                };
                rev += 1;
                if kind == EventKind::Deleted {
                    data.remove(key.as_str()).backend()?;
                } else {
                    data.insert(key.as_str(), encode_record(create, rev, &value).as_slice()).backend()?;
                }
                log.insert(rev, encode_event(kind, create, &key, &value, prev.as_ref()).as_slice()).backend()?;
                let kv = KeyValue { key, value, create_revision: create, mod_revision: rev };
                results.push(Ok(if kind == EventKind::Deleted { Done::Deleted(kv.clone()) } else { Done::Revision(rev) }));
                events.push(Arc::new(Event { kind, kv, prev }));
            }
            if events.is_empty() {
                drop((data, log, meta));
                txn.abort().backend()?;
                return Ok(Applied { results, events, revision: rev, compacted });
            }
            // Trim in steps of `slack` so that a full log is not rewritten on every write.
            let slack = (self.log_size / 16).min(4096);
            if rev - compacted > self.log_size + slack {
                let until = rev - self.log_size;
                log.retain_in(compacted + 1..=until, |_, _| false).backend()?;
                compacted = until;
                meta.insert(META_COMPACTED, compacted).backend()?;
            }
            meta.insert(META_REVISION, rev).backend()?;
            (rev, compacted)
        };
        txn.commit().backend()?;
        Ok(Applied { results, events, revision, compacted })
    }

    /// Hands committed events to the watchers without ever waiting on one: a full buffer cuts
    /// that watcher off instead.
    fn publish(&self, events: Vec<Arc<Event>>, revision: Revision, compacted: Revision) {
        let mut guard = lock(&self.hub);
        let hub = &mut *guard;
        for ev in events {
            for slot in hub.watchers.iter_mut().filter(|s| !s.dead) {
                if !ev.kv.key.starts_with(slot.prefix.as_str()) {
                    continue;
                }
                match slot.tx.try_send(ev.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slot.overflowed.store(true, Ordering::Release);
                        slot.dead = true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => slot.dead = true,
                }
            }
            if self.cache_size > 0 {
                if hub.ring.len() >= self.cache_size {
                    hub.ring.pop_front();
                }
                hub.ring.push_back(ev);
            }
        }
        hub.last = revision;
        hub.compacted = compacted;
        hub.watchers.retain(|s| !s.dead && !s.tx.is_closed());
    }
}

fn list_blocking(db: &Database, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListResult> {
    let txn = db.begin_read().backend()?;
    let meta = txn.open_table(META).backend()?;
    let revision = meta_get(&meta, META_REVISION)?;
    let data = txn.open_table(DATA).backend()?;
    let lower = match start_after {
        Some(s) if s >= prefix => Bound::Excluded(s),
        _ => Bound::Included(prefix),
    };
    let mut items = Vec::new();
    let mut more = false;
    for entry in data.range::<&str>((lower, Bound::Unbounded)).backend()? {
        let (k, v) = entry.backend()?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            break;
        }
        items.push(decode_record(key, v.value())?);
    }
    Ok(ListResult { items, revision, more })
}

/// Events for `prefix` in `(after, upto]` from the durable log.
fn read_log(db: &Database, prefix: &str, after: Revision, upto: Revision) -> Result<Vec<Event>> {
    let txn = db.begin_read().backend()?;
    let meta = txn.open_table(META).backend()?;
    // This snapshot may be newer than `upto` and compacted further than the hub said.
    let compacted = meta_get(&meta, META_COMPACTED)?;
    if after < compacted {
        return Err(Error::Compacted { requested: after, oldest: compacted + 1 });
    }
    let mut events = Vec::new();
    if after >= upto {
        return Ok(events);
    }
    let log = txn.open_table(LOG).backend()?;
    let mut seen = 0u64;
    for entry in log.range(after + 1..=upto).backend()? {
        let (rev, bytes) = entry.backend()?;
        let bytes = bytes.value();
        seen += 1;
        if event_key(bytes)?.starts_with(prefix) {
            events.push(decode_event(rev.value(), bytes)?);
        }
    }
    if seen != upto - after {
        return Err(Error::Backend(format!("event log is missing revisions in ({after}, {upto}]")));
    }
    Ok(events)
}

fn get_record(data: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<Option<KeyValue>> {
    let found = data.get(key).backend()?;
    found.map(|v| decode_record(key, v.value())).transpose()
}

fn meta_get(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    Ok(meta.get(key).backend()?.map_or(0, |v| v.value()))
}

/// `create_revision (u64 LE) | mod_revision (u64 LE) | value`.
fn encode_record(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    if bytes.len() < 16 {
        return Err(corrupt("record", key));
    }
    Ok(KeyValue { key: key.to_owned(), create_revision: read_u64(&bytes[0..8]), mod_revision: read_u64(&bytes[8..16]), value: bytes[16..].to_vec() })
}

/// `kind (u8) | create_revision (u64 LE) | key length (u32 LE) | key | value length (u32 LE) |
/// value`, then for a modification `previous mod_revision (u64 LE) | previous value`, so that a
/// replayed event carries its `prev` like a live one. The revision is the log key. For a
/// deletion the value is the one deleted.
fn encode_event(kind: EventKind, create: Revision, key: &str, value: &[u8], prev: Option<&KeyValue>) -> Vec<u8> {
    let prev_len = prev.map_or(0, |p| 8 + p.value.len());
    let mut out = Vec::with_capacity(17 + key.len() + value.len() + prev_len);
    out.push(match kind {
        EventKind::Created => 0,
        EventKind::Modified => 1,
        EventKind::Deleted => 2,
    });
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&len_u32(key.len()).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&len_u32(value.len()).to_le_bytes());
    out.extend_from_slice(value);
    if let Some(prev) = prev {
        out.extend_from_slice(&prev.mod_revision.to_le_bytes());
        out.extend_from_slice(&prev.value);
    }
    out
}

/// Values and keys over 4 GiB cannot be written to redb anyway.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Splits `bytes` at a `u32 LE` length prefix at `at`: (the field, the offset after it).
fn field(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let start = at + 4;
    Some((bytes.get(start..start.checked_add(len)?)?, start + len))
}

fn event_key(bytes: &[u8]) -> Result<&str> {
    let corrupt = || corrupt("event", "");
    let (key, _) = field(bytes, 9).ok_or_else(corrupt)?;
    std::str::from_utf8(key).map_err(|_| corrupt())
}

fn decode_event(revision: Revision, bytes: &[u8]) -> Result<Event> {
    let key = event_key(bytes)?;
    let corrupt = || corrupt("event", key);
    let kind = match bytes[0] {
        0 => EventKind::Created,
        1 => EventKind::Modified,
        2 => EventKind::Deleted,
        _ => return Err(corrupt()),
    };
    let create_revision = read_u64(&bytes[1..9]);
    let (value, rest) = field(bytes, 13 + key.len()).ok_or_else(corrupt)?;
    let prev = if kind == EventKind::Modified {
        let prev_mod = bytes.get(rest..rest + 8).ok_or_else(corrupt)?;
        Some(KeyValue { key: key.to_owned(), value: bytes[rest + 8..].to_vec(), create_revision, mod_revision: read_u64(prev_mod) })
    } else {
        None
    };
    Ok(Event { kind, kv: KeyValue { key: key.to_owned(), value: value.to_vec(), create_revision, mod_revision: revision }, prev })
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

fn corrupt(what: &str, key: &str) -> Error {
    Error::Backend(format!("corrupt {what} {key:?}"))
}

fn closed() -> Error {
    Error::Backend("store closed".into())
}

/// Maps any backend failure (redb, thread, join) into [`Error::Backend`].
trait OrBackend<T> {
    fn backend(self) -> Result<T>;
}

impl<T, E: Display> OrBackend<T> for std::result::Result<T, E> {
    fn backend(self) -> Result<T> {
        self.map_err(|e| Error::Backend(e.to_string()))
    }
}
