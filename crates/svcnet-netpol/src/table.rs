//! The node's table kept current one change at a time. Pure: no I/O.
//!
//! [`NodeTable`] holds the [`Cluster`] the watches have shown and the [`NodeState`] applied for
//! it. Each change (a pod, namespace or policy added, changed or deleted) marks what it can
//! change, and [`NodeTable::flush`] recomputes only that and returns the nft transaction between
//! the old and the new chains and sets. Everything is recompiled only at the start, after a
//! relist, or after a failed transaction.
//!
//! What a change marks:
//!
//! - a pod: its own chains (its labels pick its isolating policies; its named ports resolve
//!   ingress rules), and the shared sets of every rule whose peers match the pod before or after
//!   the change (or, for an egress rule with named ports, whose peers are empty or an `ipBlock`
//!   holding the pod's address: the name resolves on the destination pod);
//! - a namespace with pods: the shared sets of every rule with a `namespaceSelector` peer whose
//!   verdict on the namespace's labels changes;
//! - a policy: the chains of the pods it selects before and after the change.
//!
//! A pod or namespace change never alters a chain of another pod: chains name their sets by
//! the rule's peers, not by what the peers match. So a label change is a few element
//! additions/deletions in the sets it enters or leaves, and a policy change rewrites only the
//! chains of its pods (and creates or removes the sets only they used).
//!
//! **Invariant**: after any sequence of changes and a flush, the state equals
//! [`nft::compile`] of the final cluster (`tests/incremental.rs` checks it on random sequences,
//! `tests/enforcement.rs` compares the kernel's listed table with a fresh full load).

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::{Cluster, RuleRef};
use crate::model::{Direction, NamespaceInfo, Peer, PodInfo, PodKey, Policy, PolicyKey, PortSpec, Rule};
use crate::nft::{self, CompileOptions, NodeState, SetContent};

/// The cluster as watched and the node's table compiled from it, updated incrementally.
#[derive(Debug, Default)]
pub struct NodeTable {
    cluster: Cluster,
    options: CompileOptions,
    state: NodeState,
    /// Local pods whose chains (and the sets they refer to) are recompiled at the next flush.
    dirty: BTreeSet<PodKey>,
    /// Rules whose shared sets (peer addresses, resolved named ports) are recomputed at the next
    /// flush: a pod or namespace change alters what a rule's peers match, never the chains.
    dirty_rules: BTreeSet<RuleRef>,
    /// Recompile every pod at the next flush (the start, a relist).
    full: bool,
    /// The kernel's table is not known to hold `state`: the next flush (a full one) rebuilds it
    /// whole.
    rebuild: bool,
}

/// What one [`NodeTable::flush`] did.
#[derive(Clone, Debug, Default)]
pub struct Flush {
    /// The nft transaction (empty when nothing changed and no rebuild is due).
    pub script: String,
    /// Whether every pod was recompiled.
    pub full: bool,
    /// Whether the script rebuilds the table (removes any old one first).
    pub rebuild: bool,
    /// Local pods recompiled.
    pub pods: usize,
}

// === impl NodeTable ===

impl NodeTable {
    /// An empty table that compiles (and rebuilds the kernel's table) at the first flush.
    pub fn new(options: CompileOptions) -> NodeTable {
        NodeTable { options, full: true, rebuild: true, ..NodeTable::default() }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The state as of the last flush.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    pub fn options(&self) -> &CompileOptions {
        &self.options
    }

    /// Whether changes wait for a flush.
    pub fn pending(&self) -> bool {
        self.full || self.rebuild || !self.dirty.is_empty() || !self.dirty_rules.is_empty()
    }

    /// The kernel's table is in an unknown state (a transaction failed): the next flush
    /// rebuilds it from a full compile.
    pub fn invalidate(&mut self) {
        self.full = true;
        self.rebuild = true;
    }

    /// Replaces the whole cluster (a test, or every kind relisted at once).
    pub fn replace(&mut self, cluster: Cluster) {
        self.cluster = cluster;
        self.full = true;
    }

    /// Replaces every namespace (after a relist); recompiles everything at the next flush.
    pub fn replace_namespaces(&mut self, namespaces: Vec<NamespaceInfo>) {
        let old: Vec<String> = self.cluster.namespaces().map(|n| n.name.clone()).collect();
        for name in old {
            self.cluster.remove_namespace(&name);
        }
        for ns in namespaces {
            self.cluster.upsert_namespace(ns);
        }
        let implied: Vec<String> =
            self.cluster.pods().map(|p| p.key.namespace.clone()).chain(self.cluster.policies().map(|p| p.key.namespace.clone())).collect();
        for ns in implied {
            self.ensure_namespace(&ns);
        }
        self.full = true;
    }

    /// Replaces every pod (after a relist).
    pub fn replace_pods(&mut self, pods: Vec<PodInfo>) {
        let old: Vec<PodKey> = self.cluster.pods().map(|p| p.key.clone()).collect();
        for key in &old {
            self.cluster.remove_pod(key);
        }
        for pod in pods {
            self.ensure_namespace(&pod.key.namespace);
            self.cluster.upsert_pod(pod);
        }
        self.full = true;
    }

    /// Replaces every policy (after a relist).
    pub fn replace_policies(&mut self, policies: Vec<Policy>) {
        let old: Vec<PolicyKey> = self.cluster.policies().map(|p| p.key.clone()).collect();
        for key in &old {
            self.cluster.remove_policy(key);
        }
        for policy in policies {
            self.ensure_namespace(&policy.key.namespace);
            self.cluster.upsert_policy(policy);
        }
        self.full = true;
    }

    /// A namespace added or changed.
    pub fn upsert_namespace(&mut self, ns: NamespaceInfo) {
        let old = self.cluster.namespace(&ns.name).cloned();
        if old.as_ref() == Some(&ns) {
            return;
        }
        if !self.full && self.cluster.pods_in_namespace(&ns.name).next().is_some() {
            let affected = self.rules_where_namespace_matters(old.as_ref(), &ns);
            self.dirty_rules.extend(affected);
        }
        self.cluster.upsert_namespace(ns);
    }

    /// [`NodeTable::upsert_namespace`] of an object that may lack a name.
    pub fn upsert_namespace_opt(&mut self, ns: Option<NamespaceInfo>) {
        if let Some(ns) = ns {
            self.upsert_namespace(ns);
        }
    }

    /// A namespace deleted. While pods or policies of it remain (they go soon after), it stays
    /// with only its name label, as [`Cluster::from_objects`] implies it.
    pub fn remove_namespace(&mut self, name: &str) {
        let in_use = self.cluster.pods_in_namespace(name).next().is_some() || self.cluster.policies_in_namespace(name).next().is_some();
        if in_use {
            self.upsert_namespace(NamespaceInfo::new(name, Default::default()));
        } else {
            self.cluster.remove_namespace(name);
        }
    }

    /// A pod added or changed.
    pub fn upsert_pod(&mut self, pod: PodInfo) {
        let old = self.cluster.pod(&pod.key).cloned();
        if old.as_ref() == Some(&pod) {
            // A status change policies do not look at (conditions, container states).
            return;
        }
        self.ensure_namespace(&pod.key.namespace);
        if self.full {
            self.cluster.upsert_pod(pod);
            return;
        }
        let mut affected = BTreeSet::new();
        if let Some(old) = &old {
            self.rules_involving(old, &mut affected);
        }
        self.dirty.insert(pod.key.clone());
        self.cluster.upsert_pod(pod.clone());
        self.rules_involving(&pod, &mut affected);
        self.dirty_rules.extend(affected);
    }

    /// A pod deleted.
    pub fn remove_pod(&mut self, key: &PodKey) {
        let Some(old) = self.cluster.pod(key).cloned() else { return };
        if !self.full {
            let mut affected = BTreeSet::new();
            self.rules_involving(&old, &mut affected);
            self.dirty_rules.extend(affected);
            self.dirty.insert(key.clone());
        }
        self.cluster.remove_pod(key);
    }

    /// A policy added or changed.
    pub fn upsert_policy(&mut self, policy: Policy) {
        let old = self.cluster.policy(&policy.key).cloned();
        if old.as_ref() == Some(&policy) {
            return;
        }
        self.ensure_namespace(&policy.key.namespace);
        if let Some(old) = &old {
            self.mark_selected(old);
        }
        self.mark_selected(&policy);
        self.cluster.upsert_policy(policy);
    }

    /// A policy deleted.
    pub fn remove_policy(&mut self, key: &PolicyKey) {
        let Some(old) = self.cluster.policy(key).cloned() else { return };
        self.mark_selected(&old);
        self.cluster.remove_policy(key);
    }

    /// Recompiles what the changes since the last flush touched, and returns the nft
    /// transaction that brings the kernel's table from the last flush's state to the new one.
    pub fn flush(&mut self) -> Flush {
        let (full, rebuild) = (self.full, self.rebuild);
        self.full = false;
        self.rebuild = false;
        if full {
            self.dirty.clear();
            self.dirty_rules.clear();
            let new = nft::compile(&self.cluster, &self.options);
            let script = if rebuild { nft::full_script(&new, &self.options) } else { nft::diff_script(&self.state, &new, &self.options) };
            let pods = new.chains();
            self.state = new;
            return Flush { script, full, rebuild, pods };
        }
        let dirty = std::mem::take(&mut self.dirty);
        let old_chains = self.state.extract_chains(&dirty);
        let fresh = nft::compile_pods(&self.cluster, &self.options, dirty.iter().filter_map(|k| self.cluster.pod(k)));
        // The sets the touched chains referred to before or refer to now: created, changed,
        // or removed when no chain refers to them any more.
        let touched: BTreeSet<String> = old_chains.iter().flat_map(|c| c.sets()).chain(fresh.chains_iter().flat_map(|c| c.sets())).cloned().collect();
        let mut old = NodeState::default();
        for c in old_chains {
            old.insert_chain(c);
        }
        old.sets = touched.iter().filter_map(|n| self.state.sets.get(n).map(|c| (n.clone(), c.clone()))).collect();
        // The shared sets of the rules a pod or namespace change touched, where some chain refers
        // to them (the recompiled chains' sets are fresh already).
        let mut rule_sets: BTreeMap<String, SetContent> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for r in std::mem::take(&mut self.dirty_rules) {
            let Some(rule) = self.cluster.policy(&r.policy).and_then(|p| p.rules(r.direction)).and_then(|rules| rules.get(r.index)) else { continue };
            if !seen.insert(nft::rule_key(r.direction, &r.policy.namespace, rule)) {
                continue;
            }
            for (name, content) in nft::rule_sets(&self.cluster, r.direction, &r.policy.namespace, rule) {
                if !fresh.sets.contains_key(&name) && self.state.sets.contains_key(&name) {
                    rule_sets.insert(name, content);
                }
            }
        }
        for (name, content) in &rule_sets {
            old.sets.insert(name.clone(), self.state.sets[name].clone());
            self.state.sets.insert(name.clone(), content.clone());
        }
        let NodeState { ingress_pods, egress_pods, sets: fresh_sets } = fresh;
        for c in ingress_pods.into_values().chain(egress_pods.into_values()) {
            self.state.insert_chain(c);
        }
        self.state.sets.extend(fresh_sets);
        let referenced: BTreeSet<&String> = self.state.chains_iter().flat_map(|c| c.sets()).filter(|n| touched.contains(*n)).collect();
        let gone: Vec<String> = touched.iter().filter(|n| !referenced.contains(n)).cloned().collect();
        for n in &gone {
            self.state.sets.remove(n);
        }
        let mut new = NodeState::default();
        for k in &dirty {
            for d in [Direction::Ingress, Direction::Egress] {
                let name = nft::chain_name(d, k);
                let map = if d == Direction::Ingress { &self.state.ingress_pods } else { &self.state.egress_pods };
                if let Some(c) = map.get(&name) {
                    new.insert_chain(c.clone());
                }
            }
        }
        new.sets = touched.iter().filter_map(|n| self.state.sets.get(n).map(|c| (n.clone(), c.clone()))).collect();
        new.sets.extend(rule_sets);
        let script = nft::diff_script(&old, &new, &self.options);
        Flush { script, full, rebuild, pods: dirty.len() }
    }

    /// Adds `name` with only its name label when the cluster lacks it (as
    /// [`Cluster::from_objects`] does for the namespaces pods and policies name).
    fn ensure_namespace(&mut self, name: &str) {
        if self.cluster.namespace(name).is_none() {
            self.cluster.upsert_namespace(NamespaceInfo::new(name, Default::default()));
        }
    }

    /// Marks the local pods `policy` selects.
    fn mark_selected(&mut self, policy: &Policy) {
        if self.full {
            return;
        }
        let selected = self.cluster.pods_in_namespace(&policy.key.namespace).filter(|p| nft::is_local(p, &self.options) && policy.selects(p));
        self.dirty.extend(selected.map(|p| p.key.clone()));
    }

    /// The rules whose shared sets `pod` is (or would be) part of.
    fn rules_involving(&self, pod: &PodInfo, out: &mut BTreeSet<RuleRef>) {
        for policy in self.cluster.policies() {
            for direction in [Direction::Ingress, Direction::Egress] {
                for (index, rule) in policy.rules(direction).unwrap_or_default().iter().enumerate() {
                    if self.rule_involves(policy, direction, rule, pod) {
                        out.insert(RuleRef { policy: policy.key.clone(), direction, index });
                    }
                }
            }
        }
    }

    fn rule_involves(&self, policy: &Policy, direction: Direction, rule: &Rule, pod: &PodInfo) -> bool {
        // Egress named ports resolve on each destination pod among the peers, ipBlocks included.
        let named_egress = direction == Direction::Egress && rule.ports.iter().any(|m| matches!(m.port, PortSpec::Named(_)));
        if rule.peers.is_empty() {
            return named_egress;
        }
        rule.peers.iter().any(|peer| match peer {
            Peer::IpBlock(b) => named_egress && pod.ip.is_some_and(|ip| b.contains(ip)),
            Peer::Pods { .. } => self.cluster.peer_matches(peer, &policy.key.namespace, Some(pod), pod.ip),
        })
    }

    /// The rules with a `namespaceSelector` peer that matches one of `old` and `new` and not the
    /// other.
    fn rules_where_namespace_matters(&self, old: Option<&NamespaceInfo>, new: &NamespaceInfo) -> BTreeSet<RuleRef> {
        let flips = |peer: &Peer| match peer {
            Peer::Pods { namespaces: Some(sel), .. } => old.is_some_and(|o| sel.matches(&o.labels)) != sel.matches(&new.labels),
            _ => false,
        };
        let mut out = BTreeSet::new();
        for policy in self.cluster.policies() {
            for direction in [Direction::Ingress, Direction::Egress] {
                for (index, rule) in policy.rules(direction).unwrap_or_default().iter().enumerate() {
                    if rule.peers.iter().any(flips) {
                        out.insert(RuleRef { policy: policy.key.clone(), direction, index });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, app: &str, ip: &str) -> PodInfo {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"podIP": ip}
        }))
        .unwrap();
        PodInfo::from_pod(&p).unwrap()
    }

    fn policy(ns: &str, name: &str, spec: serde_json::Value) -> Policy {
        Policy::from_network_policy(&serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})).unwrap()).unwrap()
    }

    fn table() -> NodeTable {
        let mut t = NodeTable::new(CompileOptions { node_name: Some("n".into()), log_drops: false });
        t.upsert_pod(pod("x", "a", "web", "10.9.0.1"));
        t.upsert_pod(pod("x", "b", "db", "10.9.0.2"));
        t.upsert_pod(pod("y", "c", "web", "10.9.0.3"));
        t.upsert_policy(policy(
            "x",
            "from-prod",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}]}]}),
        ));
        t.upsert_policy(policy(
            "x",
            "from-web",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        ));
        let f = t.flush();
        assert!(f.full && f.rebuild);
        t
    }

    fn check(t: &NodeTable) {
        assert_eq!(t.state(), &nft::compile(t.cluster(), t.options()));
    }

    #[test]
    fn namespace_label_change_is_one_element_in_one_shared_set() {
        let mut t = table();
        t.upsert_namespace(NamespaceInfo::new("y", [("env".to_string(), "prod".to_string())].into()));
        let f = t.flush();
        assert!(!f.full);
        assert_eq!(f.pods, 0, "no chain changes");
        // One element in the one shared set of the peers `namespaceSelector: env=prod`.
        let lines: Vec<&str> = f.script.lines().collect();
        assert_eq!(lines.len(), 1, "{}", f.script);
        assert!(lines[0].starts_with("add element inet svcnet-netpol p_") && lines[0].ends_with(" { 10.9.0.3 }"), "{}", f.script);
        check(&t);
        // The same labels again: nothing to do.
        t.upsert_namespace(NamespaceInfo::new("y", [("env".to_string(), "prod".to_string())].into()));
        assert!(!t.pending());
    }

    #[test]
    fn pod_label_change_changes_its_peer_sets_and_its_own_chain() {
        let mut t = table();
        t.upsert_pod(pod("x", "b", "web", "10.9.0.2"));
        let f = t.flush();
        assert_eq!(f.pods, 1, "x/b changes policies; x/a's peer set gains x/b: {}", f.script);
        check(&t);
        // x/a's peers (`app=web` of x) gain x/b: one shared set's elements change.
        assert!(f.script.contains(" { 10.9.0.1-10.9.0.2 }"), "{}", f.script);
        assert_eq!(f.script.lines().filter(|l| l.contains("element inet svcnet-netpol p_")).count(), 2, "{}", f.script);
        assert!(f.script.contains("flush chain inet svcnet-netpol in_x_b"), "{}", f.script);
    }

    #[test]
    fn policy_deletion_removes_only_its_pods_chains() {
        let mut t = table();
        t.remove_policy(&PolicyKey::new("x", "from-prod"));
        let f = t.flush();
        assert_eq!(f.pods, 1);
        assert!(f.script.contains("delete chain inet svcnet-netpol in_x_b"), "{}", f.script);
        assert!(!f.script.contains("in_x_a"), "{}", f.script);
        check(&t);
    }
}
