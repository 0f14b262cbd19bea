//! The scenario of upstream's NetworkPolicy e2e suite (test/e2e/network/netpol): namespaces x, y,
//! z with label `ns=<name>`, pods a, b, c with label `pod=<name>` and container ports 80 and 81 over
//! TCP and UDP named `serve-<port>-<tcp|udp>`; and its test cases, each a list of steps (changes
//! to the cluster) with the reachability upstream expects after each.
#![allow(dead_code)]

pub mod topo;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::networking::v1 as netv1;
use serde_json::{Value, json};
use svcnet_netpol::matrix::Matrix;
use svcnet_netpol::{Cluster, PodKey, PortProtocol, Protocol};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];

pub fn ports() -> Vec<PortProtocol> {
    let mut v = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        for port in [80, 81] {
            v.push(PortProtocol { port, protocol });
        }
    }
    v
}

pub fn key(s: &str) -> PodKey {
    PodKey::parse(s).unwrap()
}

/// The pods' addresses: `base + 10*ns + pod + 2` (x/a = base+2).
#[derive(Clone, Debug)]
pub struct Env {
    pub base: Ipv4Addr,
}

impl Env {
    pub fn ip(&self, pod: &str) -> Ipv4Addr {
        let k = key(pod);
        let n = NAMESPACES.iter().position(|x| *x == k.namespace).unwrap() as u32;
        let p = PODS.iter().position(|x| *x == k.name).unwrap() as u32;
        Ipv4Addr::from(u32::from(self.base) + 10 * n + p + 2)
    }

    pub fn all_pods(&self) -> Vec<PodKey> {
        NAMESPACES.iter().flat_map(|n| PODS.iter().map(move |p| PodKey::new(*n, *p))).collect()
    }

    pub fn namespace(&self, name: &str, extra: &[(&str, &str)]) -> corev1::Namespace {
        let mut labels: BTreeMap<String, String> = [("ns".to_string(), name.to_string())].into();
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    pub fn pod(&self, key: &PodKey, node: &str, extra: &[(&str, &str)]) -> corev1::Pod {
        let mut labels: BTreeMap<String, String> = [("pod".to_string(), key.name.clone())].into();
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut ports = Vec::new();
        for p in ports_json() {
            ports.push(p);
        }
        serde_json::from_value(json!({
            "metadata": {"name": key.name, "namespace": key.namespace, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "server", "image": "svcnet", "ports": ports}]},
            "status": {"phase": "Running", "podIP": self.ip(&key.to_string()).to_string()}
        }))
        .unwrap()
    }

    /// The whole scenario before any step, plus the label changes a case made so far.
    pub fn cluster(&self, state: &State) -> Cluster {
        let namespaces: Vec<corev1::Namespace> = NAMESPACES
            .iter()
            .map(|n| {
                let extra: Vec<(&str, &str)> = state.ns_labels.get(*n).map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).unwrap_or_default();
                self.namespace(n, &extra)
            })
            .collect();
        let pods: Vec<corev1::Pod> = self
            .all_pods()
            .iter()
            .map(|k| {
                let extra: Vec<(&str, &str)> = state.pod_labels.get(k).map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).unwrap_or_default();
                self.pod(k, "node-1", &extra)
            })
            .collect();
        let policies: Vec<netv1::NetworkPolicy> = state.policies.values().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
        let (c, errors) = Cluster::from_objects(&namespaces, &pods, &policies);
        assert!(errors.is_empty(), "{errors:?}");
        c
    }
}

fn ports_json() -> Vec<Value> {
    let mut v = Vec::new();
    for proto in ["TCP", "UDP"] {
        for port in [80, 81] {
            v.push(json!({"name": format!("serve-{port}-{}", proto.to_lowercase()), "containerPort": port, "protocol": proto}));
        }
    }
    v
}

/// What a case has changed so far.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub policies: BTreeMap<(String, String), Value>,
    pub pod_labels: BTreeMap<PodKey, BTreeMap<String, String>>,
    pub ns_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// One change to the cluster.
#[derive(Clone, Debug)]
pub enum Change {
    /// Create or replace a NetworkPolicy (JSON).
    Apply(Value),
    Delete {
        namespace: String,
        name: String,
    },
    /// Extra labels of a pod (beyond `pod=<name>`), replacing earlier extras.
    PodLabels(PodKey, Vec<(String, String)>),
    /// Extra labels of a namespace (beyond `ns=<name>`).
    NamespaceLabels(String, Vec<(String, String)>),
}

impl State {
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Apply(v) => {
                let ns = v["metadata"]["namespace"].as_str().unwrap().to_string();
                let name = v["metadata"]["name"].as_str().unwrap().to_string();
                self.policies.insert((ns, name), v.clone());
            }
            Change::Delete { namespace, name } => {
                self.policies.remove(&(namespace.clone(), name.clone()));
            }
            Change::PodLabels(k, l) => {
                self.pod_labels.insert(k.clone(), l.iter().cloned().collect());
            }
            Change::NamespaceLabels(n, l) => {
                self.ns_labels.insert(n.clone(), l.iter().cloned().collect());
            }
        }
    }
}

/// Upstream's expectation after a step: `expect(port, from, to)`.
pub type Expect = Box<dyn Fn(PortProtocol, &PodKey, &PodKey) -> bool>;

pub struct Step {
    pub changes: Vec<Change>,
    pub expect: Expect,
}

pub struct Case {
    pub name: &'static str,
    pub steps: Vec<Step>,
}

/// The expected matrix of a step (the diagonal, a pod to itself, is left out by comparisons as
/// upstream leaves it out).
pub fn expected(env: &Env, expect: &Expect) -> Matrix {
    let pods = env.all_pods();
    let mut m = Matrix::filled(pods.clone(), ports(), true);
    for port in ports() {
        for f in &pods {
            for t in &pods {
                m.set(port, f, t, expect(port, f, t));
            }
        }
    }
    m
}

/// Cells that differ, leaving out each pod's traffic to itself.
pub fn diff_off_diagonal(a: &Matrix, b: &Matrix) -> Vec<String> {
    a.differences(b).into_iter().filter(|(_, f, t, _)| f != t).map(|(p, f, t, v)| format!("{f} -> {t} {p}: {} vs {}", v, !v)).collect()
}

fn np(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn step(changes: Vec<Change>, expect: impl Fn(PortProtocol, &PodKey, &PodKey) -> bool + 'static) -> Step {
    Step { changes, expect: Box::new(expect) }
}

fn apply(ns: &str, name: &str, spec: Value) -> Change {
    Change::Apply(np(ns, name, spec))
}

fn is(k: &PodKey, s: &str) -> bool {
    k.to_string() == s
}

fn tcp(p: PortProtocol, port: u16) -> bool {
    p.protocol == Protocol::Tcp && p.port == port
}

/// The cases of upstream's e2e suite (network_policy.go), by their upstream names.
pub fn cases(env: &Env) -> Vec<Case> {
    let xa = "x/a";
    let all_tcp_udp = json!([{"port": 80, "protocol": "TCP"}]);
    let _ = all_tcp_udp;
    vec![
        Case {
            name: "should support a 'default-deny-ingress' policy",
            steps: vec![step(vec![apply("x", "deny-ingress", json!({"podSelector": {}, "ingress": []}))], |_, _, t| t.namespace != "x")],
        },
        Case {
            name: "should support a 'default-deny-all' policy",
            steps: vec![step(
                vec![apply("x", "deny-all", json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}))],
                |_, f, t| f.namespace != "x" && t.namespace != "x",
            )],
        },
        Case {
            name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
            steps: vec![step(
                vec![apply(
                    "x",
                    "allow-b",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || is(f, "x/b"),
            )],
        },
        Case {
            name: "should enforce policy to allow ingress traffic from pods in all namespaces",
            steps: vec![step(
                vec![apply("x", "allow-all-ns", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}))],
                |_, _, _| true,
            )],
        },
        Case {
            name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
            steps: vec![step(
                vec![apply(
                    "x",
                    "allow-y",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || f.namespace == "y",
            )],
        },
        Case {
            name: "should enforce policy based on PodSelector with MatchExpressions",
            steps: vec![step(
                vec![apply(
                    "x",
                    "allow-b-expr",
                    json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a"]}]}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || is(f, "x/b"),
            )],
        },
        Case {
            name: "should enforce policy based on NamespaceSelector with MatchExpressions",
            steps: vec![step(
                vec![apply(
                    "x",
                    "allow-not-x",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x", "z"]}]}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || f.namespace == "y",
            )],
        },
        Case {
            name: "should enforce policy based on PodSelector or NamespaceSelector",
            steps: vec![step(
                vec![apply(
                    "x",
                    "or",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || f.namespace != "x" || is(f, "x/b"),
            )],
        },
        Case {
            name: "should enforce policy based on PodSelector and NamespaceSelector",
            steps: vec![step(
                vec![apply(
                    "x",
                    "and",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || is(f, "y/b") || is(f, "z/b"),
            )],
        },
        Case {
            name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
            steps: vec![step(
                vec![apply(
                    "x",
                    "multi",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}, "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || (f.namespace != "x" && f.name != "a"),
            )],
        },
        Case {
            name: "should enforce policy based on any PodSelectors",
            steps: vec![step(
                vec![apply(
                    "x",
                    "any-pods",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}, {"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || is(f, "x/b") || is(f, "x/c"),
            )],
        },
        Case {
            name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
            steps: vec![step(
                vec![apply(
                    "x",
                    "ya",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || is(f, "y/a"),
            )],
        },
        Case {
            name: "should enforce policy based on Ports",
            steps: vec![step(
                vec![apply(
                    "x",
                    "port-81",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 81, "protocol": "TCP"}]}]}),
                )],
                move |p, f, t| !is(t, xa) || (f.namespace == "y" && tcp(p, 81)),
            )],
        },
        Case {
            name: "should enforce multiple, stacked policies with overlapping podSelectors",
            steps: vec![
                step(
                    vec![apply(
                        "x",
                        "port-81",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 81, "protocol": "TCP"}]}]}),
                    )],
                    move |p, f, t| !is(t, xa) || (f.namespace == "y" && tcp(p, 81)),
                ),
                step(
                    vec![apply(
                        "x",
                        "port-80",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": 80, "protocol": "TCP"}]}]}),
                    )],
                    move |p, f, t| !is(t, xa) || (f.namespace == "y" && p.protocol == Protocol::Tcp),
                ),
            ],
        },
        Case {
            name: "should support allow-all policy",
            steps: vec![step(vec![apply("x", "allow-all", json!({"podSelector": {}, "ingress": [{}]}))], |_, _, _| true)],
        },
        Case {
            name: "should allow ingress access on one named port",
            steps: vec![step(vec![apply("x", "named", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))], |p, _, t| {
                t.namespace != "x" || tcp(p, 81)
            })],
        },
        Case {
            name: "should allow ingress access from namespace on one named port",
            steps: vec![step(
                vec![apply(
                    "x",
                    "named-ns",
                    json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": "serve-80-tcp"}]}]}),
                )],
                |p, f, t| t.namespace != "x" || (f.namespace == "y" && tcp(p, 80)),
            )],
        },
        Case {
            name: "should allow egress access on one named port",
            steps: vec![step(
                vec![apply("x", "named-egress", json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}))],
                |p, f, _| f.namespace != "x" || tcp(p, 80),
            )],
        },
        Case {
            name: "should enforce updated policy",
            steps: vec![
                step(vec![apply("x", "upd", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}))], |p, _, t| {
                    t.namespace != "x" || tcp(p, 81)
                }),
                step(vec![apply("x", "upd", json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}))], |p, _, t| {
                    t.namespace != "x" || tcp(p, 80)
                }),
            ],
        },
        Case {
            name: "should allow ingress access from updated namespace",
            steps: vec![
                step(
                    vec![apply(
                        "x",
                        "from-ns2",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns2": "updated"}}}]}]}),
                    )],
                    move |_, _, t| !is(t, xa),
                ),
                step(vec![Change::NamespaceLabels("y".into(), vec![("ns2".into(), "updated".into())])], move |_, f, t| !is(t, xa) || f.namespace == "y"),
            ],
        },
        Case {
            name: "should allow ingress access from updated pod",
            steps: vec![
                step(
                    vec![apply(
                        "x",
                        "from-pod2",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod2": "updated"}}}]}]}),
                    )],
                    move |_, _, t| !is(t, xa),
                ),
                step(vec![Change::PodLabels(key("x/b"), vec![("pod2".into(), "updated".into())])], move |_, f, t| !is(t, xa) || is(f, "x/b")),
            ],
        },
        Case {
            name: "should deny ingress from pods on other namespaces",
            steps: vec![step(vec![apply("x", "same-ns", json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}))], |_, f, t| {
                t.namespace != "x" || f.namespace == "x"
            })],
        },
        Case {
            name: "should deny ingress access to updated pod",
            steps: vec![
                step(vec![apply("x", "deny-target", json!({"podSelector": {"matchLabels": {"target": "isolated"}}, "ingress": []}))], |_, _, _| true),
                step(vec![Change::PodLabels(key("x/a"), vec![("target".into(), "isolated".into())])], move |_, _, t| !is(t, xa)),
            ],
        },
        Case {
            name: "should deny egress from pods based on PodSelector",
            steps: vec![step(
                vec![apply("x", "deny-egress-a", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}))],
                move |_, f, _| !is(f, xa),
            )],
        },
        Case {
            name: "should deny egress from all pods in a namespace",
            steps: vec![step(vec![apply("x", "deny-egress-ns", json!({"podSelector": {}, "policyTypes": ["Egress"]}))], |_, f, _| f.namespace != "x")],
        },
        Case {
            name: "should work with Ingress, Egress specified together",
            steps: vec![step(
                vec![apply(
                    "x",
                    "in-eg",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"],
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                        "egress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}),
                )],
                move |p, f, t| (!is(t, xa) || is(f, "x/b")) && (!is(f, xa) || tcp(p, 80)),
            )],
        },
        Case {
            name: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
            steps: vec![step(
                vec![
                    apply(
                        "x",
                        "eg-to-y-a",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                    ),
                    apply(
                        "y",
                        "allow-from-x-a",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}, "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                    ),
                    apply(
                        "z",
                        "allow-from-x-a",
                        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}, "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                    ),
                ],
                move |_, f, t| (!is(f, xa) || is(t, "y/a")) && (!is(t, "y/a") || is(f, xa)) && (!is(t, "z/b") || is(f, xa)),
            )],
        },
        Case {
            name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
            steps: vec![step(
                vec![apply(
                    "x",
                    "eg-y-a",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
                )],
                move |_, f, t| !is(f, xa) || is(t, "y/a"),
            )],
        },
        Case {
            name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
            steps: vec![step(
                vec![apply("x", "tcp-any", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"protocol": "TCP"}]}]}))],
                move |p, _, t| !is(t, xa) || p.protocol == Protocol::Tcp,
            )],
        },
        Case {
            name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
            steps: vec![
                step(
                    vec![apply(
                        "x",
                        "only-81",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 81, "protocol": "TCP"}]}]}),
                    )],
                    move |p, _, t| !is(t, xa) || tcp(p, 81),
                ),
                step(vec![apply("x", "allow-all", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}]}))], |_, _, _| true),
            ],
        },
        Case {
            name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
            steps: vec![
                step(
                    vec![apply(
                        "x",
                        "eg-only-80",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}),
                    )],
                    move |p, f, _| !is(f, xa) || tcp(p, 80),
                ),
                step(
                    vec![apply("x", "eg-all", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{}]}))],
                    |_, _, _| true,
                ),
            ],
        },
        Case {
            name: "should stop enforcing policies after they are deleted",
            steps: vec![
                step(vec![apply("x", "deny-all", json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))], |_, f, t| {
                    f.namespace != "x" && t.namespace != "x"
                }),
                step(vec![Change::Delete { namespace: "x".into(), name: "deny-all".into() }], |_, _, _| true),
            ],
        },
        Case {
            name: "should allow egress access to server in CIDR block",
            steps: vec![step(
                vec![apply(
                    "x",
                    "cidr",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", env.ip("y/b"))}}]}]}),
                )],
                move |_, f, t| !is(f, xa) || is(t, "y/b"),
            )],
        },
        Case {
            name: "should enforce except clause while egress access to server in CIDR block",
            steps: vec![step(
                vec![apply(
                    "x",
                    "cidr-except",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/24", env.ip("x/a")), "except": [format!("{}/32", env.ip("x/b"))]}}]}]}),
                )],
                move |_, f, t| !is(f, xa) || !is(t, "x/b"),
            )],
        },
        Case {
            name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
            steps: vec![
                step(
                    vec![apply(
                        "x",
                        "cidr-except",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/24", env.ip("x/a")), "except": [format!("{}/32", env.ip("x/b"))]}}]}]}),
                    )],
                    move |_, f, t| !is(f, xa) || !is(t, "x/b"),
                ),
                step(
                    vec![apply(
                        "x",
                        "cidr-b",
                        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", env.ip("x/b"))}}]}]}),
                    )],
                    |_, _, _| true,
                ),
            ],
        },
        Case {
            name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
            steps: vec![
                step(
                    vec![apply("x", "allow-egress-a", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{}]}))],
                    |_, _, _| true,
                ),
                step(vec![apply("x", "deny-ingress-b", json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": []}))], |_, _, t| !is(t, "x/b")),
            ],
        },
        Case {
            name: "should not allow access by TCP when a policy specifies only UDP",
            steps: vec![step(
                vec![apply("x", "udp-81", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]}))],
                move |p, _, t| !is(t, xa) || (p.protocol == Protocol::Udp && p.port == 81),
            )],
        },
        Case {
            name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'",
            steps: vec![step(
                vec![apply("x", "sctp-80", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}))],
                move |_, _, t| !is(t, xa),
            )],
        },
        Case {
            name: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
            steps: vec![step(
                vec![apply(
                    "x",
                    "default-label",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || f.namespace == "y",
            )],
        },
        Case {
            name: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
            steps: vec![step(
                vec![apply(
                    "x",
                    "default-label-expr",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["y"]}]}}]}]}),
                )],
                move |_, f, t| !is(f, xa) || t.namespace == "y",
            )],
        },
        Case {
            name: "should enforce policy based on Ports range (endPort)",
            steps: vec![step(
                vec![apply(
                    "x",
                    "range",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 79, "endPort": 80, "protocol": "TCP"}, {"port": 81, "endPort": 90, "protocol": "UDP"}]}]}),
                )],
                move |p, _, t| !is(t, xa) || tcp(p, 80) || (p.protocol == Protocol::Udp && p.port == 81),
            )],
        },
        Case {
            name: "should allow egress on a named port and an endPort range together with DNS-like ports",
            steps: vec![step(
                vec![apply(
                    "y",
                    "egress-mixed",
                    json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {}, "namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": "serve-81-udp", "protocol": "UDP"}, {"port": 80, "endPort": 80}]}]}),
                )],
                |p, f, t| f.namespace != "y" || (t.namespace == "z" && (tcp(p, 80) || (p.protocol == Protocol::Udp && p.port == 81))),
            )],
        },
        Case {
            name: "svcnet: should allow ingress from pod IPs in an ipBlock, except one pod",
            steps: vec![step(
                vec![apply(
                    "x",
                    "ingress-cidr-except",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": format!("{}/24", env.ip("x/a")), "except": [format!("{}/32", env.ip("y/b"))]}}]}]}),
                )],
                move |_, f, t| !is(t, xa) || !is(f, "y/b"),
            )],
        },
        Case {
            name: "svcnet: should allow ingress from one pod's IP as a /32 ipBlock",
            steps: vec![step(
                vec![apply(
                    "x",
                    "ingress-cidr-32",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": format!("{}/32", env.ip("z/c"))}}], "ports": [{"port": 80}, {"port": 81, "protocol": "UDP"}]}]}),
                )],
                move |p, f, t| !is(t, xa) || (is(f, "z/c") && (tcp(p, 80) || (p.protocol == Protocol::Udp && p.port == 81))),
            )],
        },
        Case {
            name: "svcnet: a peer pod relabelled away loses access",
            steps: vec![
                step(
                    vec![
                        Change::PodLabels(key("x/b"), vec![("pod2".into(), "updated".into())]),
                        apply(
                            "x",
                            "from-pod2",
                            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod2": "updated"}}}]}]}),
                        ),
                    ],
                    move |_, f, t| !is(t, xa) || is(f, "x/b"),
                ),
                step(vec![Change::PodLabels(key("x/b"), Vec::new())], move |_, _, t| !is(t, xa)),
            ],
        },
        Case {
            name: "svcnet: a namespace relabelled away loses access, by matchExpressions",
            steps: vec![
                step(
                    vec![
                        Change::NamespaceLabels("y".into(), vec![("tier".into(), "trusted".into())]),
                        apply(
                            "x",
                            "from-trusted",
                            json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, "podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["c"]}]}}]}]}),
                        ),
                    ],
                    |_, f, t| !(is(t, "x/a") || is(t, "x/b")) || (f.namespace == "y" && f.name != "c"),
                ),
                step(vec![Change::NamespaceLabels("y".into(), Vec::new())], |_, _, t| !(is(t, "x/a") || is(t, "x/b"))),
            ],
        },
        Case {
            name: "svcnet: egress endPort range and a protocol-only rule",
            steps: vec![step(
                vec![
                    apply(
                        "x",
                        "eg-range",
                        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 81, "endPort": 90, "protocol": "TCP"}]}]}),
                    ),
                    apply(
                        "x",
                        "eg-udp",
                        json!({"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP"}]}]}),
                    ),
                ],
                |p, f, _| f.namespace != "x" || tcp(p, 81) || (f.name == "c" && p.protocol == Protocol::Udp),
            )],
        },
        Case {
            name: "svcnet: egress of one namespace and ingress of another stacked",
            steps: vec![
                step(
                    vec![
                        apply(
                            "x",
                            "eg-to-y",
                            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
                        ),
                        apply("y", "in-from-x", json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]})),
                    ],
                    |_, f, t| (f.namespace != "x" || t.namespace == "y") && (t.namespace != "y" || f.namespace == "x"),
                ),
                step(vec![Change::Delete { namespace: "y".into(), name: "in-from-x".into() }], |_, f, t| f.namespace != "x" || t.namespace == "y"),
            ],
        },
    ]
}
