//! Property test: for random pods, namespaces and policies, the compiled nftables state decides
//! every (source, destination, port) as the engine does.

#[path = "support/generators.rs"]
mod generators;

use std::net::{IpAddr, Ipv4Addr};

use generators::{Draw, PodSpec, arb_policy_spec, pod};
use proptest::prelude::*;
use serde_json::{Value, json};
use svcnet_netpol::nft::{self, CompileOptions};
use svcnet_netpol::{Cluster, Endpoint, PortProtocol, Protocol};

/// Namespaces x and y; ports of every protocol the engine knows.
const DRAW: Draw = Draw { namespace_names: "[xy]", sctp: true, env_not_in: false };

fn arb_policy() -> impl Strategy<Value = Value> {
    ("[xy]", arb_policy_spec(DRAW)).prop_map(|(ns, spec)| json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec}))
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
            let i = u8::try_from(i).unwrap();
            pod(&PodSpec { i, namespace: if *in_x { "x" } else { "y" }, app, tier: *tier, named: *named, node: "n", ip: i + 1 })
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
