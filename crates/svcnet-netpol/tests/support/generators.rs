//! Proptest generators of NetworkPolicy specs and pods for the property tests
//! (`compiler_vs_engine`, `incremental`); [`Draw`] holds what the two tests draw differently.
//! Included with `#[path = "support/generators.rs"] mod generators;` (the rest of `support` is
//! the kernel e2e scenario, which these tests do not need).

use k8s_openapi::api::core::v1 as corev1;
use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{Value, json};

/// Where the property tests' policies differ.
#[derive(Clone, Copy, Debug)]
pub struct Draw {
    /// Regex of the namespace names a `kubernetes.io/metadata.name` selector picks (the test's namespaces).
    pub namespace_names: &'static str,
    /// Port rules may name SCTP besides TCP and UDP.
    pub sctp: bool,
    /// Namespace selectors also `env NotIn [prod]`, and the two `env` selectors are drawn twice as
    /// often as `{}` and by name.
    pub env_not_in: bool,
}

pub fn arb_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        "[ab]".prop_map(|v| json!({"matchLabels": {"app": v}})),
        prop::collection::vec("[abc]", 1..3).prop_map(|vs| json!({"matchExpressions": [{"key": "app", "operator": "In", "values": vs}]})),
        prop::collection::vec("[abc]", 1..3).prop_map(|vs| json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": vs}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})),
    ]
}

pub fn arb_ns_selector(draw: Draw) -> impl Strategy<Value = Value> {
    let env = if draw.env_not_in { 2 } else { 1 };
    let mut arms = vec![
        (1, Just(json!({})).boxed()),
        (1, draw.namespace_names.prop_map(|v| json!({"matchLabels": {"kubernetes.io/metadata.name": v}})).boxed()),
        (env, Just(json!({"matchLabels": {"env": "prod"}})).boxed()),
    ];
    if draw.env_not_in {
        arms.push((env, Just(json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]})).boxed()));
    }
    Union::new_weighted(arms)
}

pub fn arb_peer(draw: Draw) -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_selector().prop_map(|s| json!({"podSelector": s})),
        arb_ns_selector(draw).prop_map(|s| json!({"namespaceSelector": s})),
        (arb_selector(), arb_ns_selector(draw)).prop_map(|(p, n)| json!({"podSelector": p, "namespaceSelector": n})),
        (0u8..16, 28u8..=32, prop::collection::vec((0u8..16, 30u8..=32), 0..2)).prop_map(|(a, len, ex)| {
            let except: Vec<String> = ex.into_iter().map(|(e, l)| format!("10.9.0.{}/{}", e, l.max(len))).collect();
            // The API requires except inside cidr; the engine does not care, and neither do the tests.
            json!({"ipBlock": {"cidr": format!("10.9.0.{a}/{len}"), "except": except}})
        }),
    ]
}

/// Ports 79..83 by number, range or name (`web` TCP, `dns` UDP: the names [`pod`] gives).
pub fn arb_port(draw: Draw) -> impl Strategy<Value = Value> {
    let protocols = if draw.sctp { vec!["TCP", "UDP", "SCTP"] } else { vec!["TCP", "UDP"] };
    prop_oneof![
        Union::new(protocols.into_iter().map(Just)).prop_map(|p| json!({"protocol": p})),
        (79i32..83).prop_map(|p| json!({"port": p})),
        (79i32..82, 0i32..3).prop_map(|(p, n)| json!({"port": p, "endPort": p + n, "protocol": "UDP"})),
        prop_oneof![Just("web"), Just("dns")].prop_map(|n| json!({"port": n, "protocol": if n == "dns" { "UDP" } else { "TCP" }})),
    ]
}

/// An ingress (`field` = "from") or egress ("to") rule.
pub fn arb_rule(draw: Draw, field: &'static str) -> impl Strategy<Value = Value> {
    (prop::option::of(prop::collection::vec(arb_peer(draw), 0..3)), prop::option::of(prop::collection::vec(arb_port(draw), 0..3))).prop_map(
        move |(peers, ports)| {
            let mut r = json!({});
            if let Some(p) = peers {
                r[field] = json!(p);
            }
            if let Some(p) = ports {
                r["ports"] = json!(p);
            }
            r
        },
    )
}

/// A NetworkPolicy's `spec`.
pub fn arb_policy_spec(draw: Draw) -> impl Strategy<Value = Value> {
    (
        arb_selector(),
        prop::option::of(prop::collection::vec(arb_rule(draw, "from"), 0..3)),
        prop::option::of(prop::collection::vec(arb_rule(draw, "to"), 0..3)),
        prop_oneof![Just(None), Just(Some(vec!["Ingress"])), Just(Some(vec!["Egress"])), Just(Some(vec!["Ingress", "Egress"]))],
    )
        .prop_map(|(sel, ingress, egress, types)| {
            let mut spec = json!({"podSelector": sel});
            if let Some(i) = ingress {
                spec["ingress"] = json!(i);
            }
            if let Some(e) = egress {
                spec["egress"] = json!(e);
            }
            if let Some(t) = types {
                spec["policyTypes"] = json!(t);
            }
            spec
        })
}

/// What the tests' pods are made of.
#[derive(Clone, Debug)]
pub struct PodSpec<'a> {
    /// Named `p<i>`; with `named`, its `web` port is 80 + i % 2.
    pub i: u8,
    pub namespace: &'a str,
    /// The `app` label.
    pub app: &'a str,
    /// Labelled `tier: t`.
    pub tier: bool,
    /// Container ports `web` (80 or 81, TCP) and `dns` (81, UDP).
    pub named: bool,
    pub node: &'a str,
    /// Address 10.9.0.<ip>.
    pub ip: u8,
}

/// A running pod as the API would hold it.
pub fn pod(p: &PodSpec<'_>) -> corev1::Pod {
    let mut labels = json!({"app": p.app});
    if p.tier {
        labels["tier"] = json!("t");
    }
    let ports = if p.named {
        json!([{"name": "web", "containerPort": 80 + i32::from(p.i % 2)}, {"name": "dns", "containerPort": 81, "protocol": "UDP"}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{}", p.i), "namespace": p.namespace, "labels": labels},
        "spec": {"nodeName": p.node, "containers": [{"name": "c", "image": "i", "ports": ports}]},
        "status": {"podIP": format!("10.9.0.{}", p.ip)}
    }))
    .unwrap()
}
