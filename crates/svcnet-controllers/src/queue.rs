//! A work queue of keys, like client-go's: a key waits at most once, is handed to one worker at
//! a time, and a key added while it is being worked on is queued again when the worker is done.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    /// Consecutive failures per key, for the retry backoff.
    failures: Mutex<HashMap<K, u32>>,
}

struct State<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    /// Added while active: queued again by `done`.
    dirty: HashSet<K>,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State { queue: VecDeque::new(), queued: HashSet::new(), active: HashSet::new(), dirty: HashSet::new() }),
            notify: Notify::new(),
            failures: Mutex::new(HashMap::new()),
        })
    }

    pub fn add(&self, key: K) {
        let mut s = self.state.lock().unwrap();
        if s.queued.contains(&key) {
            return;
        }
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        s.queued.insert(key.clone());
        s.queue.push_back(key);
        drop(s);
        self.notify.notify_one();
    }

    /// Adds `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// The next key; the caller must call `done` with it.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock().unwrap();
                if let Some(key) = s.queue.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        // Another worker may be waiting for the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// `key` was handled (or will not be retried): its backoff starts over.
    pub fn forget(&self, key: &K) {
        self.failures.lock().unwrap().remove(key);
    }

    /// `key` failed again: queued after `base` doubled per consecutive failure, up to a minute
    /// (client-go's per-item exponential rate limiter). Returns the delay.
    pub fn retry(self: &Arc<Self>, key: K, base: Duration) -> Duration {
        let failures = {
            let mut all = self.failures.lock().unwrap();
            let n = all.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = base.saturating_mul(1 << failures.min(16)).min(Duration::from_secs(60));
        self.add_after(key, delay);
        delay
    }

    pub fn done(&self, key: &K) {
        let again = {
            let mut s = self.state.lock().unwrap();
            s.active.remove(key);
            s.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_back_off_per_key_until_forgotten() {
        let q: Arc<WorkQueue<&str>> = WorkQueue::new();
        let base = Duration::from_millis(100);
        assert_eq!(q.retry("a", base), Duration::from_millis(200));
        assert_eq!(q.retry("a", base), Duration::from_millis(400));
        assert_eq!(q.retry("b", base), Duration::from_millis(200), "each key has its own count");
        for _ in 0..20 {
            q.retry("a", base);
        }
        assert_eq!(q.retry("a", base), Duration::from_secs(60), "capped at a minute");
        q.forget(&"a");
        assert_eq!(q.retry("a", base), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn dedupes_and_requeues_keys_added_while_active() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.next().await, "a");
        q.add("a");
        assert_eq!(q.next().await, "b");
        q.done(&"b");
        q.done(&"a");
        assert_eq!(q.next().await, "a");
        q.done(&"a");
        assert!(q.state.lock().unwrap().queue.is_empty());
    }
}
