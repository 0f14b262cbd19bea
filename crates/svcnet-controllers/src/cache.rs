//! What every controller's driver shares: a reflector-backed watch that keeps a cache current and
//! yields its events, retrying failed watches with backoff instead of ending.

use std::fmt;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};

/// A watch that keeps `writer` up to date and yields its events, retrying with backoff.
pub(crate) fn watch<K>(api: Api<K>, writer: reflector::store::Writer<K>, config: watcher::Config) -> impl Stream<Item = watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    logged(K::kind(&()).into_owned(), reflector::reflector(writer, watcher(api, config).default_backoff()))
}

/// [`watch`] for Pods, without their `managedFields` (a tree per writer, a large part of a pod
/// in memory, times 100,000 pods): no controller reads them or writes a cached Pod back.
pub(crate) fn watch_pods(api: Api<Pod>, writer: reflector::store::Writer<Pod>) -> impl Stream<Item = watcher::Event<Pod>> {
    logged("Pod".into(), reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff().modify(strip_pod)))
}

/// The pod watch's events without a cache (for a controller that indexes pods itself), without
/// `managedFields`.
pub(crate) fn pod_events(api: Api<Pod>) -> impl Stream<Item = watcher::Event<Pod>> {
    logged("Pod".into(), watcher(api, watcher::Config::default()).default_backoff().modify(strip_pod))
}

fn strip_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
}

/// The events of a watch, its errors logged (it retries on its own).
fn logged<K>(kind: String, events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>) -> impl Stream<Item = watcher::Event<K>> {
    events.filter_map(move |event| {
        let kind = kind.clone();
        async move {
            match event {
                Ok(event) => Some(event),
                Err(error) => {
                    tracing::warn!(%kind, %error, "watch failed, retrying");
                    None
                }
            }
        }
    })
}

/// Pods by namespace and by label, kept from the pod watch's events, so that the Services a pod
/// change affects and the pods a Service selects are found without scanning the whole cluster
/// (which at 10,000 Services and 100,000 pods is what made a full sync take minutes).
#[derive(Default)]
pub(crate) struct PodIndex {
    inner: std::sync::RwLock<PodIndexInner>,
}

#[derive(Default)]
struct PodIndexInner {
    /// namespace → name → pod.
    pods: std::collections::HashMap<String, std::collections::HashMap<String, std::sync::Arc<k8s_openapi::api::core::v1::Pod>>>,
    /// (namespace, label key, label value) → pod names.
    by_label: std::collections::HashMap<(String, String, String), std::collections::HashSet<String>>,
    /// Pods seen in the relist in progress, to drop the others when it completes.
    relisted: Option<std::collections::HashSet<(String, String)>>,
}

impl PodIndexInner {
    fn remove(&mut self, ns: &str, name: &str) {
        let Some(old) = self.pods.get_mut(ns).and_then(|m| m.remove(name)) else { return };
        for (k, v) in old.metadata.labels.iter().flatten() {
            let key = (ns.to_string(), k.clone(), v.clone());
            if let Some(set) = self.by_label.get_mut(&key) {
                set.remove(name);
                if set.is_empty() {
                    self.by_label.remove(&key);
                }
            }
        }
    }

    fn insert(&mut self, pod: k8s_openapi::api::core::v1::Pod) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.remove(&ns, &name);
        for (k, v) in pod.metadata.labels.iter().flatten() {
            self.by_label.entry((ns.clone(), k.clone(), v.clone())).or_default().insert(name.clone());
        }
        if let Some(r) = self.relisted.as_mut() {
            r.insert((ns.clone(), name.clone()));
        }
        self.pods.entry(ns).or_default().insert(name, std::sync::Arc::new(pod));
    }
}

impl PodIndex {
    pub(crate) fn apply(&self, pod: k8s_openapi::api::core::v1::Pod) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).insert(pod);
    }

    pub(crate) fn delete(&self, ns: &str, name: &str) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).remove(ns, name);
    }

    /// A relist began: pods not seen again before [`PodIndex::relist_done`] are dropped then.
    pub(crate) fn relist_started(&self) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).relisted = Some(Default::default());
    }

    pub(crate) fn relist_done(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(seen) = inner.relisted.take() else { return };
        let gone: Vec<(String, String)> =
            inner.pods.iter().flat_map(|(ns, m)| m.keys().map(move |n| (ns.clone(), n.clone()))).filter(|id| !seen.contains(id)).collect();
        for (ns, name) in gone {
            inner.remove(&ns, &name);
        }
    }

    /// The pods of `ns` whose labels hold every pair of `selector` (an equality selector, as a
    /// Service's).
    pub(crate) fn selected(&self, ns: &str, selector: &std::collections::BTreeMap<String, String>) -> Vec<std::sync::Arc<k8s_openapi::api::core::v1::Pod>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(in_ns) = inner.pods.get(ns) else { return Vec::new() };
        // Start from the rarest pair of the selector.
        let mut smallest: Option<&std::collections::HashSet<String>> = None;
        for (k, v) in selector {
            match inner.by_label.get(&(ns.to_string(), k.clone(), v.clone())) {
                None => return Vec::new(),
                Some(set) if smallest.is_none_or(|s| set.len() < s.len()) => smallest = Some(set),
                Some(_) => {}
            }
        }
        let Some(candidates) = smallest else { return Vec::new() };
        candidates
            .iter()
            .filter_map(|name| in_ns.get(name))
            .filter(|p| selector.iter().all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v)))
            .cloned()
            .collect()
    }
}

/// Services with a selector, by (namespace, selector pair), to find the Services a pod's labels
/// can match without looking at every Service.
#[derive(Default)]
pub(crate) struct SelectorIndex {
    inner: std::sync::RwLock<SelectorIndexInner>,
}

#[derive(Default)]
struct SelectorIndexInner {
    /// (namespace, name) → its selector.
    selectors: std::collections::HashMap<(String, String), std::collections::BTreeMap<String, String>>,
    /// (namespace, key, value) → Service names whose selector has that pair.
    by_pair: std::collections::HashMap<(String, String, String), std::collections::HashSet<String>>,
}

impl SelectorIndexInner {
    fn remove(&mut self, ns: &str, name: &str) {
        let Some(old) = self.selectors.remove(&(ns.to_string(), name.to_string())) else { return };
        for (k, v) in old {
            let key = (ns.to_string(), k, v);
            if let Some(set) = self.by_pair.get_mut(&key) {
                set.remove(name);
                if set.is_empty() {
                    self.by_pair.remove(&key);
                }
            }
        }
    }
}

impl SelectorIndex {
    /// Records `selector` (or its absence) for the Service `ns/name`.
    pub(crate) fn set(&self, ns: &str, name: &str, selector: Option<std::collections::BTreeMap<String, String>>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.remove(ns, name);
        if let Some(sel) = selector.filter(|s| !s.is_empty()) {
            for (k, v) in &sel {
                inner.by_pair.entry((ns.to_string(), k.clone(), v.clone())).or_default().insert(name.to_string());
            }
            inner.selectors.insert((ns.to_string(), name.to_string()), sel);
        }
    }

    /// The Services of `ns` whose selector `labels` satisfy.
    pub(crate) fn selecting(&self, ns: &str, labels: &std::collections::BTreeMap<String, String>) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out = std::collections::BTreeSet::new();
        for (k, v) in labels {
            for name in inner.by_pair.get(&(ns.to_string(), k.clone(), v.clone())).into_iter().flatten() {
                let sel = &inner.selectors[&(ns.to_string(), name.clone())];
                if sel.iter().all(|(sk, sv)| labels.get(sk) == Some(sv)) {
                    out.insert(name.clone());
                }
            }
        }
        out.into_iter().collect()
    }
}

/// The keys of the objects a watch has shown, to find those that vanished while it relisted:
/// their deletion is never sent as a `Delete` event, only noticed by their absence.
pub(crate) struct Known<K> {
    known: std::collections::HashSet<K>,
    relisted: std::collections::HashSet<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Default for Known<K> {
    fn default() -> Self {
        Known { known: Default::default(), relisted: Default::default() }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Known<K> {
    pub(crate) fn applied(&mut self, key: K) {
        self.known.insert(key);
    }

    pub(crate) fn deleted(&mut self, key: &K) {
        self.known.remove(key);
    }

    pub(crate) fn relist_started(&mut self) {
        self.relisted.clear();
    }

    pub(crate) fn relisted(&mut self, key: K) {
        self.relisted.insert(key);
    }

    /// The relist is complete: returns what was known before and is gone now.
    pub(crate) fn relist_done(&mut self) -> Vec<K> {
        let gone = self.known.difference(&self.relisted).cloned().collect();
        self.known = std::mem::take(&mut self.relisted);
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Pod {
        let mut p = k8s_openapi::api::core::v1::Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        p
    }

    fn sel(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn pods_are_found_by_selector_and_relabels_move_them() {
        let idx = PodIndex::default();
        idx.apply(pod("a", "p1", &[("app", "web"), ("tier", "1")]));
        idx.apply(pod("a", "p2", &[("app", "web")]));
        idx.apply(pod("b", "p3", &[("app", "web")]));
        let names = |v: Vec<std::sync::Arc<k8s_openapi::api::core::v1::Pod>>| {
            let mut n: Vec<String> = v.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
            n.sort();
            n
        };
        assert_eq!(names(idx.selected("a", &sel(&[("app", "web")]))), ["p1", "p2"]);
        assert_eq!(names(idx.selected("a", &sel(&[("app", "web"), ("tier", "1")]))), ["p1"]);
        assert!(idx.selected("a", &sel(&[("app", "db")])).is_empty());
        idx.apply(pod("a", "p1", &[("app", "db")]));
        assert_eq!(names(idx.selected("a", &sel(&[("app", "web")]))), ["p2"]);
        idx.delete("a", "p2");
        assert!(idx.selected("a", &sel(&[("app", "web")])).is_empty());
        // A relist drops what it did not see again.
        idx.relist_started();
        idx.apply(pod("b", "p3", &[("app", "web")]));
        idx.relist_done();
        assert!(idx.selected("a", &sel(&[("app", "db")])).is_empty());
        assert_eq!(names(idx.selected("b", &sel(&[("app", "web")]))), ["p3"]);
    }

    #[test]
    fn a_relist_reports_what_vanished_during_it() {
        let mut known = Known::default();
        known.applied("a");
        known.applied("b");
        known.applied("c");
        known.deleted(&"c");
        known.relist_started();
        known.relisted("a");
        assert_eq!(known.relist_done(), ["b"]);
        known.relist_started();
        assert_eq!(known.relist_done(), ["a"]);
    }

    #[test]
    fn services_are_found_by_pod_labels() {
        let idx = SelectorIndex::default();
        idx.set("a", "web", Some(sel(&[("app", "web")])));
        idx.set("a", "web-1", Some(sel(&[("app", "web"), ("tier", "1")])));
        idx.set("b", "web", Some(sel(&[("app", "web")])));
        assert_eq!(idx.selecting("a", &sel(&[("app", "web")])), ["web"]);
        assert_eq!(idx.selecting("a", &sel(&[("app", "web"), ("tier", "1")])), ["web", "web-1"]);
        idx.set("a", "web", None);
        assert!(idx.selecting("a", &sel(&[("app", "web")])).is_empty());
    }
}
