//! The incremental table equals a fresh full compile: random sequences of pod, namespace and
//! policy changes applied to a [`NodeTable`] (flushed at random points) end in the state
//! [`nft::compile`] makes from the final objects; and, in the kernel, the table the
//! incremental transactions built lists exactly as a fresh full load of the final state.

#[path = "support/generators.rs"]
mod generators;

use std::collections::BTreeMap;

use generators::{Draw, PodSpec, arb_policy_spec, pod};
use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use proptest::prelude::*;
use serde_json::{Value, json};
use svcnet_netpol::model::{NamespaceInfo, PodInfo, Policy};
use svcnet_netpol::nft::{self, CompileOptions};
use svcnet_netpol::table::NodeTable;
use svcnet_netpol::{Cluster, ObjectKey};

/// Namespaces x, y and z, labelled `env: prod` or `env: dev`; TCP and UDP ports only.
const DRAW: Draw = Draw { namespace_names: "[xyz]", sctp: false, env_not_in: true };

/// One change to the objects.
#[derive(Clone, Debug)]
enum Change {
    /// Pod `p<i>` in namespace `ns` (x/y/z) with app label, tier label?, named ports?, address
    /// 10.9.0.<ip>, on the local node?
    Pod {
        i: u8,
        ns: &'static str,
        app: String,
        tier: bool,
        named: bool,
        ip: u8,
        local: bool,
    },
    DeletePod {
        i: u8,
    },
    Namespace {
        ns: &'static str,
        prod: bool,
    },
    DeleteNamespace {
        ns: &'static str,
    },
    Policy {
        i: u8,
        ns: &'static str,
        spec: Value,
    },
    DeletePolicy {
        i: u8,
    },
    Flush,
}

fn arb_ns() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("x"), Just("y"), Just("z")]
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0u8..6, arb_ns(), "[abc]", any::<bool>(), any::<bool>(), 1u8..12, prop::bool::weighted(0.8))
            .prop_map(|(i, ns, app, tier, named, ip, local)| Change::Pod { i, ns, app, tier, named, ip, local }),
        1 => (0u8..6).prop_map(|i| Change::DeletePod { i }),
        2 => (arb_ns(), any::<bool>()).prop_map(|(ns, prod)| Change::Namespace { ns, prod }),
        1 => arb_ns().prop_map(|ns| Change::DeleteNamespace { ns }),
        3 => (0u8..4, arb_ns(), arb_policy_spec(DRAW)).prop_map(|(i, ns, spec)| Change::Policy { i, ns, spec }),
        1 => (0u8..4).prop_map(|i| Change::DeletePolicy { i }),
        2 => Just(Change::Flush),
    ]
}

/// The objects as the API would hold them.
#[derive(Default)]
struct Objects {
    namespaces: BTreeMap<String, corev1::Namespace>,
    pods: BTreeMap<u8, corev1::Pod>,
    policies: BTreeMap<u8, netv1::NetworkPolicy>,
}

impl Objects {
    fn cluster(&self) -> Cluster {
        let (c, errors) = Cluster::from_objects(self.namespaces.values(), self.pods.values(), self.policies.values());
        assert!(errors.is_empty(), "{errors:?}");
        c
    }

    /// Applies `change` here and to `table`.
    fn apply(&mut self, change: &Change, table: &mut NodeTable) {
        match change {
            Change::Pod { i, ns, app, tier, named, ip, local } => {
                // A pod keeps its namespace: a different namespace is a different pod.
                let ns = self.pods.get(i).and_then(|p| p.metadata.namespace.clone()).unwrap_or_else(|| ns.to_string());
                // Addresses of pods that exist at the same time are unique.
                let ip = (0..12u8).map(|k| (ip + k) % 12 + 1).find(|a| self.pods.iter().all(|(j, p)| j == i || pod_ip(p) != format!("10.9.0.{a}"))).unwrap();
                let pod = pod(&PodSpec { i: *i, namespace: &ns, app, tier: *tier, named: *named, node: if *local { "n" } else { "other" }, ip });
                table.upsert_pod(PodInfo::from_pod(&pod).unwrap());
                self.pods.insert(*i, pod);
            }
            Change::DeletePod { i } => {
                if let Some(p) = self.pods.remove(i) {
                    table.remove_pod(&PodInfo::from_pod(&p).unwrap().key);
                }
            }
            Change::Namespace { ns, prod } => {
                let labels = if *prod { json!({"env": "prod"}) } else { json!({"env": "dev"}) };
                let obj: corev1::Namespace = serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}})).unwrap();
                table.upsert_namespace(NamespaceInfo::from_namespace(&obj).unwrap());
                self.namespaces.insert(ns.to_string(), obj);
            }
            Change::DeleteNamespace { ns } => {
                if self.namespaces.remove(*ns).is_some() {
                    table.remove_namespace(ns);
                }
            }
            Change::Policy { i, ns, spec } => {
                let ns = self.policies.get(i).and_then(|p| p.metadata.namespace.clone()).unwrap_or_else(|| ns.to_string());
                let np: netv1::NetworkPolicy = serde_json::from_value(json!({"metadata": {"namespace": ns, "name": format!("np{i}")}, "spec": spec})).unwrap();
                table.upsert_policy(Policy::from_network_policy(&np).unwrap());
                self.policies.insert(*i, np);
            }
            Change::DeletePolicy { i } => {
                if let Some(np) = self.policies.remove(i) {
                    table.remove_policy(&ObjectKey::new(np.metadata.namespace.unwrap(), np.metadata.name.unwrap()));
                }
            }
            Change::Flush => {
                table.flush();
            }
        }
    }
}

fn pod_ip(p: &corev1::Pod) -> String {
    p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

fn options() -> CompileOptions {
    CompileOptions { node_name: Some("n".into()), log_drops: false }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    /// Incremental flushes end where a full compile of the final objects starts.
    #[test]
    fn incremental_state_equals_full_compile(initial in prop::collection::vec(arb_change(), 3..16), changes in prop::collection::vec(arb_change(), 1..25)) {
        let mut objects = Objects::default();
        let mut table = NodeTable::new(options());
        for c in &initial {
            objects.apply(c, &mut table);
        }
        table.flush();
        prop_assert_eq!(table.state(), &nft::compile(&objects.cluster(), &options()));
        for c in &changes {
            objects.apply(c, &mut table);
            if matches!(c, Change::Flush) {
                prop_assert_eq!(table.state(), &nft::compile(&objects.cluster(), &options()), "after {:?}", c);
            }
        }
        let flush = table.flush();
        prop_assert!(!flush.full);
        prop_assert_eq!(table.state(), &nft::compile(&objects.cluster(), &options()));
    }
}
