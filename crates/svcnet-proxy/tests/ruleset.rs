//! Snapshot tests of the pure core: Services and EndpointSlices (YAML fixtures) in, nft script
//! out. The expected scripts under `tests/fixtures/*.nft` were checked by hand; run with
//! `UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate change, and review the diff.
//! `tests/e2e.rs` loads the same kind of scripts into a real kernel.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use svcnet_proxy::model::{ServiceKey, plan_service};
use svcnet_proxy::ruleset::{Ruleset, StaleConntrack};

mod fixtures;
use fixtures::{apply, fixture_path, load, ruleset_of};

/// Compares with `tests/fixtures/NAME`, or writes it when `UPDATE_SNAPSHOTS` is set.
fn check_snapshot(name: &str, actual: &str) {
    let path = fixture_path(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        panic!("{} differs (UPDATE_SNAPSHOTS=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}", path.display());
    }
}

#[test]
fn cluster_ip_full_script() {
    let ruleset = ruleset_of(&load("cluster-ip.yaml"));
    check_snapshot("cluster-ip.nft", &ruleset.full_script());
}

#[test]
fn external_full_script() {
    let fixture = load("external.yaml");
    let ruleset = ruleset_of(&fixture);
    check_snapshot("external.nft", &ruleset.full_script());
    let lb = ruleset.plan(&ServiceKey::new("shop", "lb")).unwrap();
    assert_eq!(lb.health_check.as_ref().map(|h| (h.node_port, h.local_endpoints)), Some((32000, 1)));
}

#[test]
fn selection_full_script() {
    let ruleset = ruleset_of(&load("selection.yaml"));
    check_snapshot("selection.nft", &ruleset.full_script());
}

#[test]
fn skipped_services_have_no_plan() {
    let fixture = load("cluster-ip.yaml");
    use svcnet_proxy::model::Skip;
    let plans: Vec<_> = fixture.services.iter().map(|s| plan_service(s, &fixture.endpoint_slices, "node-1").err()).collect();
    assert_eq!(plans, vec![None, None, Some(Skip::Headless), Some(Skip::ExternalName), Some(Skip::OtherProxy)]);
}

/// One endpoint replaced: the transaction deletes and re-adds only that endpoint's element in
/// each port's map and nothing else; no flush, no table or chain touched.
#[test]
fn endpoint_change_touches_only_its_elements() {
    let mut fixture = load("cluster-ip.yaml");
    let mut ruleset = ruleset_of(&fixture);
    assert_eq!(ruleset.take_transaction(), None);
    let slice = &mut fixture.endpoint_slices[0];
    slice.endpoints[1].addresses = vec!["10.244.2.99".into()];
    apply(&mut ruleset, &fixture);
    let diff = ruleset.take_transaction().unwrap().script();
    assert_eq!(
        diff,
        "delete element inet svcnet-proxy endpoints-v4 { 1 . 1, 2 . 1 }\n\
         add element inet svcnet-proxy endpoints-v4 { 1 . 1 : 10.244.2.99 . 8080, 2 . 1 : 10.244.2.99 . 9100 }\n"
    );
    assert!(!diff.contains("flush") && !diff.contains("table inet svcnet-proxy {"));
    // Nothing more to do the second time.
    apply(&mut ruleset, &fixture);
    assert_eq!(ruleset.take_transaction(), None);
}

/// An endpoint added: one element per port, and the paths move from `pick-v4-3` to `pick-v4-4`.
/// Both chains are preset (`PRESET_PICKS`), so the transaction adds no chain.
#[test]
fn endpoint_added_switches_pick_chain() {
    let mut fixture = load("cluster-ip.yaml");
    let mut ruleset = ruleset_of(&fixture);
    let slice = &mut fixture.endpoint_slices[0];
    slice.endpoints[3].conditions.as_mut().unwrap().ready = Some(true);
    apply(&mut ruleset, &fixture);
    let diff = ruleset.take_transaction().unwrap().script();
    assert_eq!(
        diff,
        "delete element inet svcnet-proxy endpoint-counts-v4 { 1, 2 }\n\
         add element inet svcnet-proxy endpoints-v4 { 1 . 3 : 10.244.3.11 . 8080, 2 . 3 : 10.244.3.11 . 9100 }\n\
         add element inet svcnet-proxy endpoint-counts-v4 { 1 : goto pick-v4-4, 2 : goto pick-v4-4 }\n"
    );
}

/// The UDP Service gets its first endpoint: the reject goes, the endpoint comes, and flows to the
/// ClusterIP (undNATed while rejected) are flushed from conntrack. Then the endpoint is replaced:
/// its flows are flushed.
#[test]
fn udp_endpoint_changes_flush_conntrack() {
    let mut fixture = load("cluster-ip.yaml");
    let mut ruleset = ruleset_of(&fixture);
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "dns-1", "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [{"addresses": ["10.244.1.53"], "nodeName": "node-1"}],
    }))
    .unwrap();
    fixture.endpoint_slices.push(slice);
    let stale = apply(&mut ruleset, &fixture);
    assert_eq!(stale, vec![StaleConntrack::Frontend { ip: "10.96.0.53".parse().unwrap(), port: 53 }]);
    assert_eq!(
        ruleset.take_transaction().unwrap().script(),
        "delete element inet svcnet-proxy no-endpoint-services-v4 { 10.96.0.53 . udp . 53 }\n\
         add element inet svcnet-proxy endpoints-v4 { 3 . 0 : 10.244.1.53 . 5353 }\n\
         add element inet svcnet-proxy endpoint-counts-v4 { 3 : goto pick-v4-1 }\n\
         add element inet svcnet-proxy hairpin-v4 { 10.244.1.53 . 10.244.1.53 }\n"
    );
    fixture.endpoint_slices.last_mut().unwrap().endpoints[0].addresses = vec!["10.244.1.54".into()];
    let stale = apply(&mut ruleset, &fixture);
    let endpoint = svcnet_proxy::model::Endpoint { ip: "10.244.1.53".parse().unwrap(), port: 5353 };
    assert_eq!(stale, vec![StaleConntrack::Endpoint { frontend: "10.96.0.53".parse().unwrap(), port: 53, endpoint }]);
}

/// Session affinity: losing an endpoint gives the path a new id (a fresh affinity table), so
/// no client stays pinned to the endpoint that left; gaining one keeps the id.
#[test]
fn affinity_path_renumbered_when_an_endpoint_leaves() {
    let mut fixture = load("external.yaml");
    let mut ruleset = ruleset_of(&fixture);
    // web: internal id 1, external id 2; the next free ids are 7 and 8.
    let slice = &mut fixture.endpoint_slices[0];
    slice.endpoints.truncate(1);
    apply(&mut ruleset, &fixture);
    let diff = ruleset.take_transaction().unwrap().script();
    assert!(diff.contains("add element inet svcnet-proxy service-ips-v4 { 10.96.1.1 . tcp . 80 : 7, 192.0.2.10 . tcp . 80 : 8 }"), "{diff}");
    assert!(diff.contains("add element inet svcnet-proxy node-ports { tcp . 30001 : 8 }"), "{diff}");
    assert!(diff.contains("add element inet svcnet-proxy affinity-ids { 7 : jump affinity-60, 8 : jump affinity-60 }"), "{diff}");
    // The affinity chain is shared and stays.
    assert!(!diff.contains("chain"), "{diff}");
}

/// Removing the last Service with a timeout removes its affinity chain, after its references.
#[test]
fn affinity_chain_follows_its_users() {
    let fixture = load("external.yaml");
    let mut ruleset = ruleset_of(&fixture);
    ruleset.set_service(&ServiceKey::new("shop", "web"), None);
    let diff = ruleset.take_transaction().unwrap().script();
    let delete_element = diff.find("delete element inet svcnet-proxy affinity-ids").unwrap();
    let delete_chain = diff.find("delete chain inet svcnet-proxy affinity-60").unwrap();
    assert!(delete_element < delete_chain, "{diff}");
    // And back: the chain comes before the elements that jump to it.
    let web = fixture.services.iter().find(|s| s.metadata.name.as_deref() == Some("web")).unwrap();
    ruleset.set_service(&ServiceKey::new("shop", "web"), plan_service(web, &fixture.endpoint_slices, "node-1").ok());
    let diff = ruleset.take_transaction().unwrap().script();
    let add_chain = diff.find("add chain inet svcnet-proxy affinity-60").unwrap();
    let add_element = diff.find("add element inet svcnet-proxy affinity-ids").unwrap();
    assert!(add_chain < add_element, "{diff}");
}

/// The bulk constructor of the full sync builds the same table as Service-by-Service updates.
#[test]
fn bulk_load_matches_incremental_build() {
    for name in ["cluster-ip.yaml", "external.yaml", "selection.yaml"] {
        let fixture = load(name);
        let incremental = ruleset_of(&fixture);
        let plans = fixture.services.iter().filter_map(|s| plan_service(s, &fixture.endpoint_slices, &fixture.node).ok());
        let mut bulk = Ruleset::with_services(incremental.config().clone(), plans);
        assert_eq!(bulk.full_script(), incremental.full_script(), "{name}");
        assert_eq!(bulk.take_transaction(), None, "{name}");
    }
}
