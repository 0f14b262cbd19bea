//! The netlink loader against `nft -f`: the same ruleset installed both ways into two fresh
//! network namespaces lists the same (`nft -j list table`, handles dropped, set elements
//! sorted), after a full sync, after incremental transactions (against the whole ruleset loaded
//! afresh by nft), and after a full sync over an existing table (a proxy restart). Run as root.

mod fixtures;

use std::process::Command;

use fixtures::{Fixture, apply, load, ruleset_of};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;
use svcnet_netns::NetNs;
use svcnet_proxy::nft::NodeNamespace;
use svcnet_proxy::ruleset::{Ruleset, TABLE};

struct Pair {
    reference: NetNs,
    netlink: NetNs,
}

fn pair(tag: &str) -> Pair {
    let name = |side: &str| format!("svcnet-t{}-nl-{tag}-{side}", std::process::id());
    Pair { reference: NetNs::create(&name("ref")).unwrap(), netlink: NetNs::create(&name("nl")).unwrap() }
}

fn nft(ns: &NetNs, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The table as JSON with handles dropped, set elements sorted, and objects ordered by kind
/// and name (rules keep their order within their chain).
fn listing(ns: &NetNs) -> Vec<String> {
    let json: Value = serde_json::from_str(&nft(ns, &["-j", "list", "table", "inet", TABLE], None)).unwrap();
    let mut objects: Vec<(String, String, String)> = Vec::new();
    for mut object in json["nftables"].as_array().unwrap().iter().cloned() {
        let Some((kind, body)) = object.as_object_mut().and_then(|o| o.iter_mut().next()) else { continue };
        if kind == "metainfo" {
            continue;
        }
        let body = body.as_object_mut().unwrap();
        body.remove("handle");
        if let Some(Value::Array(elements)) = body.get_mut("elem") {
            elements.sort_by_key(|e| e.to_string());
        }
        let name = body.get("chain").or(body.get("name")).map(|v| v.to_string()).unwrap_or_default();
        objects.push((kind.clone(), name, Value::Object(body.clone()).to_string()));
    }
    objects.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    objects.into_iter().map(|(_, _, text)| text).collect()
}

fn assert_same(pair: &Pair, context: &str) {
    let (reference, netlink) = (listing(&pair.reference), listing(&pair.netlink));
    for (r, n) in reference.iter().zip(&netlink) {
        assert_eq!(r, n, "{context}: nft -f and netlink differ");
    }
    assert_eq!(reference.len(), netlink.len(), "{context}: numbers of objects differ");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A Service with `n` ready endpoints on this node (a pick chain past the preset ones),
/// session affinity with its own timeout, and a UDP port.
fn big(fixture: &mut Fixture, n: usize, timeout: u32) {
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "big"},
        "spec": {"clusterIP": "10.96.9.9", "clusterIPs": ["10.96.9.9"], "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))
    .unwrap();
    let endpoints: Vec<Value> = (0..n).map(|i| serde_json::json!({"addresses": [format!("10.244.9.{}", i + 1)], "nodeName": "node-1"})).collect();
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "big-1", "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": endpoints,
    }))
    .unwrap();
    fixture.services.retain(|s| s.metadata.name.as_deref() != Some("big"));
    fixture.endpoint_slices.retain(|s| s.metadata.name.as_deref() != Some("big-1"));
    fixture.services.push(service);
    fixture.endpoint_slices.push(slice);
}

fn full_both(pair: &Pair, ns: &NodeNamespace, ruleset: &Ruleset, rt: &tokio::runtime::Runtime) -> Option<std::time::Duration> {
    nft(&pair.reference, &["-f", "-"], Some(&ruleset.full_script()));
    rt.block_on(ns.full_sync(ruleset)).unwrap().skeleton
}

#[test]
fn every_fixture_lists_the_same_loaded_through_netlink_as_through_nft() {
    let rt = runtime();
    for name in ["cluster-ip.yaml", "external.yaml", "selection.yaml"] {
        let mut fixture = load(name);
        big(&mut fixture, 40, 77);
        let pair = pair(&name[..3]);
        let ns = NodeNamespace::new(Some(pair.netlink.name().to_string()));
        let ruleset = ruleset_of(&fixture);
        assert!(ruleset.dynamic_chains().count() >= 2, "pick-v4-40 and affinity-77");
        let skeleton = full_both(&pair, &ns, &ruleset, &rt);
        assert!(skeleton.is_some(), "a fresh namespace gets the skeleton");
        assert_same(&pair, name);
    }
}

#[test]
fn incremental_transactions_and_a_restart_keep_netlink_and_nft_equal() {
    let rt = runtime();
    let mut fixture = load("external.yaml");
    big(&mut fixture, 40, 77);
    let pair = pair("inc");
    let ns = NodeNamespace::new(Some(pair.netlink.name().to_string()));
    let mut ruleset = ruleset_of(&fixture);
    full_both(&pair, &ns, &ruleset, &rt);

    // Grow past another pick chain, change the affinity timeout (a new chain, the old one
    // deleted), drop an endpoint elsewhere: one transaction each way.
    for (n, timeout) in [(45, 90), (3, 90), (70, 10)] {
        big(&mut fixture, n, timeout);
        fixture.endpoint_slices[0].endpoints.rotate_left(1);
        apply(&mut ruleset, &fixture);
        let tx = ruleset.take_transaction().expect("a change");
        rt.block_on(ns.apply_transaction(&tx)).unwrap();
        // nft itself cannot add a pick chain to an existing table (1.0.6: "conflicting
        // protocols"), so the reference is the whole ruleset loaded afresh.
        nft(&pair.reference, &["-f", "-"], Some(&ruleset.full_script()));
        assert_same(&pair, &format!("after the transaction to {n} endpoints, timeout {timeout}"));
    }

    // A restart: a new process's ruleset (other path ids, other dynamic chains) over the table
    // the last one left: the skeleton is kept, elements and chains are replaced.
    big(&mut fixture, 50, 300);
    let restarted = ruleset_of(&fixture);
    let skeleton = full_both(&pair, &ns, &restarted, &rt);
    assert_eq!(skeleton, None, "the table already has this skeleton");
    assert_same(&pair, "after a full sync over an existing table");
    let chains = nft(&pair.netlink, &["list", "table", "inet", TABLE], None);
    assert!(!chains.contains("chain pick-v4-70 ") && !chains.contains("chain affinity-10 ") && chains.contains("chain pick-v4-50 "), "{chains}");
}

/// A table left by another skeleton (an older svcnet) is replaced by the whole ruleset in one
/// `nft -f` transaction.
#[test]
fn a_table_with_another_skeleton_is_replaced_in_one_transaction() {
    let rt = runtime();
    let fixture = load("cluster-ip.yaml");
    let pair = pair("old");
    nft(&pair.netlink, &["-f", "-"], Some(&format!("table inet {TABLE} {{ comment \"skeleton 0\"; chain services {{ ip daddr 10.96.0.1 drop; }}; }}")));
    let ns = NodeNamespace::new(Some(pair.netlink.name().to_string()));
    let ruleset = ruleset_of(&fixture);
    nft(&pair.reference, &["-f", "-"], Some(&ruleset.full_script()));
    let times = rt.block_on(ns.full_sync(&ruleset)).unwrap();
    assert!(times.replaced.is_some() && times.skeleton.is_none() && times.messages == 0, "{times:?}");
    assert_same(&pair, "over an old table");
}
