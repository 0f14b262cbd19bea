//! Property test: for random pods, namespaces and policies, the compiled nftables state decides
//! every (source, destination, port) as the engine does.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use serde_json::{Value, json};
use svcnet_netpol::nft::{self, CompileOptions};
use svcnet_netpol::{Cluster, Endpoint, PortProtocol, Protocol};

fn arb_selector() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({})),
        "[ab]".prop_map(|v| json!({"matchLabels": {"app": v}})),
        prop::collection::vec("[abc]", 1..3).prop_map(|vs| json!({"matchExpressions": [{"key": "app", "operator": "In", "values": vs}]})),
        prop::collection::vec("[abc]", 1..3).prop_map(|vs| json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": vs}]})),
        Just(json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})),
    ]
}

fn arb_ns_selector() -> impl Strategy<Value = Value> {
    prop_oneof![Just(json!({})), "[xy]".prop_map(|v| json!({"matchLabels": {"kubernetes.io/metadata.name": v}})), Just(json!({"matchLabels": {"env": "prod"}}))]
}

fn arb_peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_selector().prop_map(|s| json!({"podSelector": s})),
        arb_ns_selector().prop_map(|s| json!({"namespaceSelector": s})),
        (arb_selector(), arb_ns_selector()).prop_map(|(p, n)| json!({"podSelector": p, "namespaceSelector": n})),
        (0u8..16, 28u8..=32, prop::collection::vec((0u8..16, 30u8..=32), 0..2)).prop_map(|(a, len, ex)| {
            let except: Vec<String> = ex.into_iter().map(|(e, l)| format!("10.9.0.{}/{}", e, l.max(len))).collect();
            let cidr = format!("10.9.0.{a}/{len}");
            // The API requires except inside cidr; the engine does not care, and neither does the test.
            json!({"ipBlock": {"cidr": cidr, "except": except}})
        }),
    ]
}

fn arb_port() -> impl Strategy<Value = Value> {
    prop_oneof![
        (prop_oneof![Just("TCP"), Just("UDP"), Just("SCTP")]).prop_map(|p| json!({"protocol": p})),
        (79i32..83).prop_map(|p| json!({"port": p})),
        (79i32..82, 0i32..3).prop_map(|(p, n)| json!({"port": p, "endPort": p + n, "protocol": "UDP"})),
        prop_oneof![Just("web"), Just("dns")].prop_map(|n| json!({"port": n, "protocol": if n == "dns" { "UDP" } else { "TCP" }})),
    ]
}

fn arb_rule(field: &'static str) -> impl Strategy<Value = Value> {
    (prop::option::of(prop::collection::vec(arb_peer(), 0..3)), prop::option::of(prop::collection::vec(arb_port(), 0..3))).prop_map(move |(peers, ports)| {
        let mut r = json!({});
        if let Some(p) = peers {
            r[field] = json!(p);
        }
        if let Some(p) = ports {
            r["ports"] = json!(p);
        }
        r
    })
}

fn arb_policy() -> impl Strategy<Value = Value> {
    (
        "[xy]",
        arb_selector(),
        prop::option::of(prop::collection::vec(arb_rule("from"), 0..3)),
        prop::option::of(prop::collection::vec(arb_rule("to"), 0..3)),
        prop_oneof![Just(None), Just(Some(vec!["Ingress"])), Just(Some(vec!["Egress"])), Just(Some(vec!["Ingress", "Egress"]))],
    )
        .prop_map(|(ns, sel, ingress, egress, types)| {
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
            json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec})
        })
}

/// Pods: (namespace, app label, tier label?, named ports?), addresses 10.9.0.(i+1).
fn arb_pods() -> impl Strategy<Value = Vec<(bool, String, bool, bool)>> {
    prop::collection::vec((any::<bool>(), "[abc]", any::<bool>(), any::<bool>()), 2..7)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn compiled_table_agrees_with_engine(pods in arb_pods(), policies in prop::collection::vec(arb_policy(), 0..4), prod in any::<bool>()) {
        let namespaces: Vec<k8s_openapi::api::core::v1::Namespace> = vec![
            serde_json::from_value(json!({"metadata": {"name": "x", "labels": if prod { json!({"env": "prod"}) } else { json!({}) }}})).unwrap(),
            serde_json::from_value(json!({"metadata": {"name": "y"}})).unwrap(),
        ];
        let pod_objs: Vec<k8s_openapi::api::core::v1::Pod> = pods.iter().enumerate().map(|(i, (in_x, app, tier, named))| {
            let mut labels = json!({"app": app});
            if *tier { labels["tier"] = json!("t"); }
            let ports = if *named { json!([{"name": "web", "containerPort": 80 + (i as i32 % 2)}, {"name": "dns", "containerPort": 81, "protocol": "UDP"}]) } else { json!([]) };
            serde_json::from_value(json!({
                "metadata": {"name": format!("p{i}"), "namespace": if *in_x { "x" } else { "y" }, "labels": labels},
                "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i", "ports": ports}]},
                "status": {"podIP": format!("10.9.0.{}", i + 1)}
            })).unwrap()
        }).collect();
        let nps: Vec<k8s_openapi::api::networking::v1::NetworkPolicy> = policies.iter().enumerate().map(|(i, p)| {
            let mut p = p.clone();
            p["metadata"]["name"] = json!(format!("p{i}"));
            serde_json::from_value(p).unwrap()
        }).collect();
        let (cluster, errors) = Cluster::from_objects(&namespaces, &pod_objs, &nps);
        prop_assert!(errors.is_empty(), "{:?}", errors);
        let state = nft::compile(&cluster, &CompileOptions::default());
        let addrs: Vec<Ipv4Addr> = (0..pods.len() as u8).map(|i| Ipv4Addr::new(10, 9, 0, i + 1)).chain([Ipv4Addr::new(10, 9, 0, 14), Ipv4Addr::new(192, 0, 2, 1)]).collect();
        for s in &addrs {
            for d in &addrs {
                for protocol in Protocol::ALL {
                    for port in 79..83 {
                        let pp = PortProtocol { port, protocol };
                        let v = cluster.evaluate(&Endpoint::Ip(IpAddr::V4(*s)), &Endpoint::Ip(IpAddr::V4(*d)), pp);
                        let got = nft::lookup(&state, *s, *d, protocol.number(), port);
                        prop_assert_eq!(got, (v.egress.allowed(), v.ingress.allowed()), "{} -> {} {}: {:?}\n{}", s, d, pp, v, nft::full_script(&state, &CompileOptions::default()));
                    }
                }
            }
        }
    }
}
