//! The garbage collector's view of the cluster and its decisions, with no I/O: a graph of every
//! object's owner references (uid → dependents), what each change makes worth re-examining, and
//! what to do with an object given the state of its owners (upstream's `attemptToDeleteItem`,
//! `orphanDependents` and `processDeletingDependents`).

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// The finalizer with which the API server asks for the dependents to be orphaned first.
pub const ORPHAN: &str = "orphan";
/// The finalizer with which the API server asks for the dependents to be deleted first.
pub const FOREGROUND: &str = "foregroundDeletion";

/// A group and kind, the part of an owner reference's `apiVersion`/`kind` that names a resource
/// independently of its version.
pub type GroupKind = (String, String);

/// The group and kind an owner reference points to.
pub fn group_kind(r: &OwnerReference) -> GroupKind {
    let group = r.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    (group.to_string(), r.kind.clone())
}

/// What the collector keeps of an object.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Index of the object's resource in the driver's table.
    pub resource: usize,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerReference>,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    pub fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// Being deleted in the foreground: waits for its dependents to go.
    pub fn waiting_for_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }

    /// Being deleted with a finalizer the collector has to act on.
    fn needs_owner_work(&self) -> bool {
        self.deleting && (self.has_finalizer(ORPHAN) || self.has_finalizer(FOREGROUND))
    }
}

/// An owner as the graph sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cached {
    /// In the graph, not waiting for its dependents.
    Solid,
    /// In the graph, being deleted in the foreground.
    Waiting,
    /// Not in the graph (maybe just not yet): to be checked with the API server.
    Missing,
    /// A reference the collector cannot act on: an unknown kind, or a namespaced owner of a
    /// cluster-scoped object (upstream reports those and never collects the dependent for them).
    Ignored,
}

/// An owner as verified against the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists (or cannot be verified): the dependent stays.
    Solid,
    /// Gone, or the name now belongs to an object with another uid.
    Dangling,
    /// Exists, being deleted in the foreground: the dependent goes first.
    Waiting,
}

/// The state of an owner from a live read of the object its reference names.
pub fn live_state(r: &OwnerReference, live: Option<(&str, bool, &[String])>) -> OwnerState {
    match live {
        None => OwnerState::Dangling,
        Some((uid, _, _)) if uid != r.uid => OwnerState::Dangling,
        Some((_, deleting, finalizers)) if deleting && finalizers.iter().any(|f| f == FOREGROUND) => OwnerState::Waiting,
        Some(_) => OwnerState::Solid,
    }
}

/// How to delete an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Background,
    Foreground,
    Orphan,
}

/// What to do with a dependent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Some owner remains: drop the references to the owners that are gone or waiting (so that
    /// they do not wait for a dependent that stays).
    RemoveRefs(Vec<String>),
    Delete(Policy),
}

/// Upstream's `attemptToDeleteItem` for an object that is not being deleted, given the state of
/// each of its owners.
pub fn decide(finalizers: &[String], owners: &[(&OwnerReference, OwnerState)]) -> Decision {
    if owners.is_empty() {
        return Decision::Nothing;
    }
    let uids = |state: OwnerState| owners.iter().filter(move |(_, s)| *s == state).map(|(r, _)| r.uid.clone());
    if owners.iter().any(|(_, s)| *s == OwnerState::Solid) {
        let gone: Vec<String> = uids(OwnerState::Dangling).chain(uids(OwnerState::Waiting)).collect();
        return if gone.is_empty() { Decision::Nothing } else { Decision::RemoveRefs(gone) };
    }
    if owners.iter().any(|(_, s)| *s == OwnerState::Waiting) {
        // An owner waits for it: it goes in the foreground too, so the wait covers its own
        // dependents.
        return Decision::Delete(Policy::Foreground);
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    Decision::Delete(if has(ORPHAN) {
        Policy::Orphan
    } else if has(FOREGROUND) {
        Policy::Foreground
    } else {
        Policy::Background
    })
}

/// `refs` without the references to `uids`.
pub fn refs_without(refs: &[OwnerReference], uids: &[String]) -> Vec<OwnerReference> {
    refs.iter().filter(|r| !uids.contains(&r.uid)).cloned().collect()
}

/// `finalizers` without `f`.
pub fn finalizers_without(finalizers: &[String], f: &str) -> Vec<String> {
    finalizers.iter().filter(|x| *x != f).cloned().collect()
}

/// Every object the watches have shown, and who owns whom.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → uids of the objects that reference it (whether or not the owner is known).
    dependents: HashMap<String, BTreeSet<String>>,
    /// Whether each known kind is namespaced.
    scopes: HashMap<GroupKind, bool>,
}

impl Graph {
    pub fn new(scopes: HashMap<GroupKind, bool>) -> Self {
        Graph { nodes: HashMap::new(), dependents: HashMap::new(), scopes }
    }

    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// Whether the kind `r` names is namespaced; `None` when the kind is not served.
    pub fn owner_namespaced(&self, r: &OwnerReference) -> Option<bool> {
        self.scopes.get(&group_kind(r)).copied()
    }

    /// What the graph knows of the owner `r` of `dep`. A namespaced owner must be in the
    /// dependent's namespace: one with the right uid elsewhere does not count.
    pub fn cached(&self, dep: &Node, r: &OwnerReference) -> Cached {
        let Some(namespaced) = self.owner_namespaced(r) else { return Cached::Ignored };
        if namespaced && dep.namespace.is_none() {
            return Cached::Ignored;
        }
        let want_namespace = if namespaced { dep.namespace.as_ref() } else { None };
        match self.nodes.get(&r.uid) {
            Some(o) if o.namespace.as_ref() == want_namespace => {
                if o.waiting_for_dependents() {
                    Cached::Waiting
                } else {
                    Cached::Solid
                }
            }
            _ => Cached::Missing,
        }
    }

    /// Whether some owner of `node` may be gone or waiting, so that it needs a closer look.
    pub fn needs_attention(&self, node: &Node) -> bool {
        !node.deleting && node.owners.iter().any(|r| matches!(self.cached(node, r), Cached::Missing | Cached::Waiting))
    }

    /// The objects that really depend on `owner` (a namespaced owner's dependents are in its
    /// namespace).
    pub fn dependents_of(&self, owner: &Node) -> Vec<&Node> {
        let Some(uids) = self.dependents.get(&owner.uid) else { return vec![] };
        uids.iter()
            .filter_map(|uid| self.nodes.get(uid))
            .filter(|d| d.owners.iter().any(|r| r.uid == owner.uid && self.cached(d, r) != Cached::Ignored))
            .filter(|d| owner.namespace.is_none() || d.namespace == owner.namespace)
            .collect()
    }

    /// The dependents of `owner` that block its deletion (`blockOwnerDeletion: true`).
    pub fn blocking_dependents(&self, owner: &Node) -> Vec<&Node> {
        self.dependents_of(owner).into_iter().filter(|d| d.owners.iter().any(|r| r.uid == owner.uid && r.block_owner_deletion == Some(true))).collect()
    }

    /// Records an object's new state; returns the uids to examine because of the change.
    pub fn upsert(&mut self, node: Node) -> Vec<String> {
        let old = self.nodes.remove(&node.uid);
        if let Some(old) = &old {
            self.unindex(old);
        }
        for r in &node.owners {
            self.dependents.entry(r.uid.clone()).or_default().insert(node.uid.clone());
        }
        let mut work = BTreeSet::new();
        if node.needs_owner_work() {
            work.insert(node.uid.clone());
        }
        if self.needs_attention(&node) {
            work.insert(node.uid.clone());
        }
        // An owner waiting for its dependents re-checks them when one changes its references or
        // blockOwnerDeletion.
        let refs = old.iter().flat_map(|o| o.owners.iter()).chain(node.owners.iter());
        work.extend(self.waiting_owners(refs));
        self.nodes.insert(node.uid.clone(), node);
        work.into_iter().collect()
    }

    /// Forgets a deleted object; returns the uids to examine: its dependents (their owner is
    /// gone) and its owners that wait for it.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(old) = self.nodes.remove(uid) else { return vec![] };
        self.unindex(&old);
        let mut work: BTreeSet<String> = self.dependents.get(uid).into_iter().flatten().cloned().collect();
        work.extend(self.waiting_owners(old.owners.iter()));
        work.into_iter().collect()
    }

    /// The uids of the known objects of `resource` (for relists).
    pub fn uids_of(&self, resource: usize) -> Vec<String> {
        self.nodes.values().filter(|n| n.resource == resource).map(|n| n.uid.clone()).collect()
    }

    fn waiting_owners<'a>(&self, refs: impl Iterator<Item = &'a OwnerReference>) -> Vec<String> {
        refs.filter(|r| self.nodes.get(&r.uid).is_some_and(Node::waiting_for_dependents)).map(|r| r.uid.clone()).collect()
    }

    fn unindex(&mut self, node: &Node) {
        for r in &node.owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(&node.uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ref(kind: &str, name: &str, block: bool) -> OwnerReference {
        let api_version = if kind == "Deployment" || kind == "ReplicaSet" { "apps/v1" } else { "v1" };
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            block_owner_deletion: block.then_some(true),
            controller: None,
        }
    }

    fn node(namespace: Option<&str>, name: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: 0,
            namespace: namespace.map(str::to_string),
            name: name.into(),
            uid: format!("uid-{name}"),
            owners,
            deleting: false,
            finalizers: vec![],
        }
    }

    fn deleting(mut n: Node, finalizer: &str) -> Node {
        n.deleting = true;
        n.finalizers = vec![finalizer.to_string()];
        n
    }

    fn graph() -> Graph {
        let g = |group: &str, kind: &str, namespaced| ((group.to_string(), kind.to_string()), namespaced);
        Graph::new(HashMap::from([g("", "ConfigMap", true), g("", "Namespace", false), g("", "Node", false), g("apps", "ReplicaSet", true)]))
    }

    #[test]
    fn group_kind_of_core_and_grouped_references() {
        assert_eq!(group_kind(&owner_ref("ConfigMap", "a", false)), ("".into(), "ConfigMap".into()));
        assert_eq!(group_kind(&owner_ref("ReplicaSet", "a", false)), ("apps".into(), "ReplicaSet".into()));
    }

    #[test]
    fn all_owners_gone_deletes_in_the_background() {
        let a = owner_ref("ConfigMap", "a", false);
        assert_eq!(decide(&[], &[(&a, OwnerState::Dangling)]), Decision::Delete(Policy::Background));
        assert_eq!(decide(&[], &[]), Decision::Nothing);
        assert_eq!(decide(&[], &[(&a, OwnerState::Solid)]), Decision::Nothing);
    }

    #[test]
    fn own_finalizers_choose_the_policy() {
        let a = owner_ref("ConfigMap", "a", false);
        assert_eq!(decide(&["orphan".into()], &[(&a, OwnerState::Dangling)]), Decision::Delete(Policy::Orphan));
        assert_eq!(decide(&["foregroundDeletion".into()], &[(&a, OwnerState::Dangling)]), Decision::Delete(Policy::Foreground));
    }

    #[test]
    fn a_remaining_owner_keeps_the_object_and_drops_the_other_references() {
        let (a, b, c) = (owner_ref("ConfigMap", "a", false), owner_ref("ConfigMap", "b", true), owner_ref("ConfigMap", "c", true));
        assert_eq!(
            decide(&[], &[(&a, OwnerState::Dangling), (&b, OwnerState::Solid), (&c, OwnerState::Waiting)]),
            Decision::RemoveRefs(vec!["uid-a".into(), "uid-c".into()])
        );
    }

    #[test]
    fn a_waiting_owner_deletes_in_the_foreground() {
        let (a, b) = (owner_ref("ConfigMap", "a", true), owner_ref("ConfigMap", "b", false));
        assert_eq!(decide(&[], &[(&a, OwnerState::Waiting), (&b, OwnerState::Dangling)]), Decision::Delete(Policy::Foreground));
    }

    #[test]
    fn live_state_compares_uids_and_sees_foreground_deletion() {
        let a = owner_ref("ConfigMap", "a", false);
        let fg = vec![FOREGROUND.to_string()];
        assert_eq!(live_state(&a, None), OwnerState::Dangling);
        assert_eq!(live_state(&a, Some(("other", false, &[]))), OwnerState::Dangling);
        assert_eq!(live_state(&a, Some(("uid-a", false, &[]))), OwnerState::Solid);
        assert_eq!(live_state(&a, Some(("uid-a", true, &fg))), OwnerState::Waiting);
        assert_eq!(live_state(&a, Some(("uid-a", true, &["orphan".to_string()]))), OwnerState::Solid);
    }

    #[test]
    fn removes_references_and_finalizers() {
        let (a, b) = (owner_ref("ConfigMap", "a", false), owner_ref("ConfigMap", "b", false));
        assert_eq!(refs_without(&[a.clone(), b.clone()], &["uid-a".into()]), vec![b]);
        assert_eq!(finalizers_without(&["x".into(), "orphan".into()], ORPHAN), vec!["x".to_string()]);
    }

    #[test]
    fn cached_owner_states_follow_scope_rules() {
        let mut g = graph();
        g.upsert(node(Some("ns"), "a", vec![]));
        g.upsert(node(Some("other"), "b", vec![]));
        g.upsert(node(None, "n1", vec![]));
        g.upsert(deleting(node(Some("ns"), "w", vec![]), FOREGROUND));
        let dep = node(Some("ns"), "d", vec![]);
        assert_eq!(g.cached(&dep, &owner_ref("ConfigMap", "a", false)), Cached::Solid);
        assert_eq!(g.cached(&dep, &owner_ref("ConfigMap", "w", false)), Cached::Waiting);
        assert_eq!(g.cached(&dep, &owner_ref("ConfigMap", "missing", false)), Cached::Missing);
        // The uid exists, but in another namespace.
        assert_eq!(g.cached(&dep, &owner_ref("ConfigMap", "b", false)), Cached::Missing);
        // A cluster-scoped owner of a namespaced object.
        assert_eq!(g.cached(&dep, &owner_ref("Node", "n1", false)), Cached::Solid);
        // A namespaced owner of a cluster-scoped object, and an unknown kind.
        assert_eq!(g.cached(&node(None, "c", vec![]), &owner_ref("ConfigMap", "a", false)), Cached::Ignored);
        assert_eq!(g.cached(&dep, &owner_ref("Widget", "a", false)), Cached::Ignored);
    }

    #[test]
    fn upsert_flags_objects_whose_owners_are_not_known() {
        let mut g = graph();
        assert_eq!(g.upsert(node(Some("ns"), "a", vec![])), Vec::<String>::new());
        assert_eq!(g.upsert(node(Some("ns"), "d1", vec![owner_ref("ConfigMap", "a", false)])), Vec::<String>::new());
        assert_eq!(g.upsert(node(Some("ns"), "d2", vec![owner_ref("ConfigMap", "gone", false)])), vec!["uid-d2".to_string()]);
        // Ignored references need no attention.
        assert_eq!(g.upsert(node(Some("ns"), "d3", vec![owner_ref("Widget", "x", false)])), Vec::<String>::new());
    }

    #[test]
    fn removing_an_owner_flags_its_dependents() {
        let mut g = graph();
        g.upsert(node(Some("ns"), "a", vec![]));
        g.upsert(node(Some("ns"), "d1", vec![owner_ref("ConfigMap", "a", false)]));
        g.upsert(node(Some("ns"), "d2", vec![owner_ref("ConfigMap", "a", false)]));
        assert_eq!(g.remove("uid-a"), vec!["uid-d1".to_string(), "uid-d2".to_string()]);
        assert_eq!(g.remove("uid-a"), Vec::<String>::new());
        // Still indexed by the missing owner's uid.
        g.remove("uid-d1");
        assert_eq!(g.dependents.get("uid-a").map(BTreeSet::len), Some(1));
        g.remove("uid-d2");
        assert!(g.dependents.is_empty());
    }

    #[test]
    fn foreground_owner_is_flagged_and_waits_for_blocking_dependents() {
        let mut g = graph();
        g.upsert(node(Some("ns"), "a", vec![]));
        g.upsert(node(Some("ns"), "d1", vec![owner_ref("ConfigMap", "a", true)]));
        g.upsert(node(Some("ns"), "d2", vec![owner_ref("ConfigMap", "a", false)]));
        // A dependent with the same uid reference in another namespace is not a dependent.
        g.upsert(node(Some("other"), "d3", vec![owner_ref("ConfigMap", "a", true)]));
        // Marked for foreground deletion: the owner itself, and its dependents, need work.
        let work = g.upsert(deleting(node(Some("ns"), "a", vec![]), FOREGROUND));
        assert_eq!(work, vec!["uid-a".to_string()]);
        let owner = g.get("uid-a").unwrap().clone();
        let names = |v: Vec<&Node>| v.into_iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(g.dependents_of(&owner)), vec!["d1", "d2"]);
        assert_eq!(names(g.blocking_dependents(&owner)), vec!["d1"]);
        assert!(g.needs_attention(g.get("uid-d2").unwrap()));
        // A blocking dependent going away re-examines the owner.
        assert_eq!(g.remove("uid-d1"), vec!["uid-a".to_string()]);
        assert!(g.blocking_dependents(&owner).is_empty());
        // So does a dependent that drops its reference.
        g.upsert(node(Some("ns"), "d4", vec![owner_ref("ConfigMap", "a", true)]));
        assert_eq!(g.upsert(node(Some("ns"), "d4", vec![])), vec!["uid-a".to_string()]);
    }

    #[test]
    fn orphaning_owner_is_flagged() {
        let mut g = graph();
        g.upsert(node(Some("ns"), "a", vec![]));
        assert_eq!(g.upsert(deleting(node(Some("ns"), "a", vec![]), ORPHAN)), vec!["uid-a".to_string()]);
        // Being deleted without a collector finalizer: nothing to do.
        assert_eq!(g.upsert(deleting(node(Some("ns"), "a", vec![]), "example.com/x")), Vec::<String>::new());
    }

    #[test]
    fn relists_find_a_resources_objects() {
        let mut g = graph();
        g.upsert(node(Some("ns"), "a", vec![]));
        let mut other = node(None, "n1", vec![]);
        other.resource = 1;
        g.upsert(other);
        assert_eq!(g.uids_of(1), vec!["uid-n1".to_string()]);
    }
}
