//! Storage for the API server, shaped like etcd so that an etcd backend can implement the same
//! trait: one monotonic revision for the whole store (it becomes every object's
//! `resourceVersion`), compare-and-swap writes on a key's last modification revision, ordered
//! prefix listing, and watches that replay from a revision.
//!
//! The embedded backend ([`RedbStore`]) commits every write durably before acknowledging it.

use async_trait::async_trait;
use futures::stream::BoxStream;

mod redb_store;
pub use redb_store::{RedbStore, RedbStoreOptions};

/// A store revision: strictly increasing, one per committed write.
pub type Revision = u64;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The key already exists.
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    /// The key does not exist.
    #[error("key {key} not found")]
    NotFound { key: String },
    /// The key was modified since the revision the caller read (optimistic concurrency).
    #[error("key {key} was modified: at revision {current}")]
    Conflict { key: String, current: Revision },
    /// The requested revision is older than the oldest event the store still keeps.
    #[error("revision {requested} has been compacted; oldest kept is {oldest}")]
    Compacted { requested: Revision, oldest: Revision },
    /// A watcher fell too far behind and was cut off; it must re-watch from its last revision.
    #[error("watcher fell behind and was closed")]
    WatcherTooSlow,
    /// The backend failed (I/O, corruption, shutdown).
    #[error("storage backend: {0}")]
    Backend(String),
}

/// A stored value and its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
}

/// One page of a prefix listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// Key-ordered.
    pub items: Vec<KeyValue>,
    /// The store's revision when the listing was read.
    pub revision: Revision,
    /// More keys follow the last item.
    pub more: bool,
}

/// What a watch event did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Modified,
    Deleted,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Deleted`: the value before deletion, with `mod_revision` = the deletion's revision.
    /// Otherwise the new value.
    pub kv: KeyValue,
    /// For `Modified`: the value before this change (as etcd's `prev_kv`), so that a watcher
    /// with a selector can tell an object leaving or entering its selection. `None` otherwise.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change was committed.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A stream of events in revision order, with no gaps. It ends with an `Err` when the store
/// cuts the watcher off (`WatcherTooSlow`, shutdown).
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// A revisioned key-value store. Keys are `/`-separated strings; listings are by prefix.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Up to `limit` keys with `prefix` (all when `None`), strictly after `start_after` when
    /// given, in key order.
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListResult>;

    /// Counts the keys with `prefix` (for `remainingItemCount` and metrics).
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Creates `key`; fails with `AlreadyExists` if it is there. Returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision>;

    /// Replaces `key` if its `mod_revision` is still `expected`; `Conflict` otherwise,
    /// `NotFound` if it is gone. Returns the new revision.
    async fn update(&self, key: &str, expected: Revision, value: Vec<u8>) -> Result<Revision>;

    /// Deletes `key`, if its `mod_revision` is `expected` when given. Returns the deleted value
    /// with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Events for keys with `prefix` committed after revision `after`, in
    /// order. `Compacted` when `after` is older than what the store keeps.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The revision of the last committed write.
    async fn current_revision(&self) -> Result<Revision>;
}
