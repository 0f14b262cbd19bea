//! The LoadBalancer address controller end to end: `svcnet up --lb-pool` and IPAddressPool
//! objects, driven with the real kubectl.

mod common;

use std::time::Duration;

use common::seed::SEED_FRONTEND;
use common::{Svcnet, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);
const POOL: &str = "172.30.255.200-172.30.255.250";

fn start_with_pool(range: &str) -> Svcnet {
    Svcnet::start_with(tempfile::tempdir().unwrap(), &["--lb-pool", range])
}

/// A LoadBalancer Service `name` on port 80; `extra` is appended to the manifest (indented
/// `metadata:`/`spec:` fields go in `meta` and `spec`).
fn lb(name: &str, meta: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n{meta}spec:\n  type: LoadBalancer\n{spec}  ports:\n  - port: 80\n")
}

fn jsonpath(s: &Svcnet, name: &str, path: &str) -> String {
    s.ok(&["get", "svc", name, "-o", &format!("jsonpath={{{path}}}")])
}

fn external_ip(s: &Svcnet, name: &str) -> String {
    jsonpath(s, name, ".status.loadBalancer.ingress[*].ip")
}

/// Waits until `name` has an address and returns it.
fn wait_for_ip(s: &Svcnet, name: &str) -> String {
    wait_for(&format!("an EXTERNAL-IP for {name}"), TIMEOUT, || Some(external_ip(s, name)).filter(|ip| !ip.is_empty()))
}

/// The EXTERNAL-IP column of `kubectl get svc name`.
fn external_ip_column(s: &Svcnet, name: &str) -> String {
    let table = s.ok(&["get", "svc", name]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let col = header.iter().position(|h| *h == "EXTERNAL-IP").unwrap_or_else(|| panic!("no EXTERNAL-IP column in\n{table}"));
    table.lines().nth(1).unwrap().split_whitespace().nth(col).unwrap().to_string()
}

/// Waits until `kubectl describe svc name` lists an event with all of `wanted` on one line.
fn wait_for_event(s: &Svcnet, name: &str, wanted: &[&str]) -> String {
    wait_for(&format!("event {wanted:?} on {name}"), TIMEOUT, || {
        let out = s.ok(&["describe", "svc", name]);
        let events = out.split_once("Events:")?.1.to_string();
        events.lines().any(|l| wanted.iter().all(|w| l.contains(w))).then_some(out)
    })
}

fn events_of(s: &Svcnet, name: &str) -> String {
    s.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.kind=Service,involvedObject.name={name}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message,COUNT:.count,SOURCE:.source.component",
        "--no-headers",
    ])
}

#[test]
fn seed_frontend_gets_an_external_ip_from_the_flag_pool() {
    let s = start_with_pool(POOL);
    s.apply(SEED_FRONTEND);
    let ip = wait_for_ip(&s, "frontend");
    assert_eq!(ip, "172.30.255.200", "the first address of the pool");
    assert_eq!(jsonpath(&s, "frontend", ".status.loadBalancer.ingress[0].ipMode"), "VIP");
    assert_eq!(external_ip_column(&s, "frontend"), ip);
    // The flag pool is an API object like any other.
    let pool = s.ok(&["get", "ipaddresspools", "svcnet-up", "-o", "jsonpath={.spec.addresses}"]);
    assert!(pool.contains(POOL), "{pool}");
    let describe =
        wait_for_event(&s, "frontend", &["Normal", "IPAllocated", "svcnet-lb-controller", "Assigned IP 172.30.255.200 from IPAddressPool \"svcnet-up\""]);
    assert!(describe.contains("LoadBalancer Ingress:") && describe.contains("172.30.255.200"), "{describe}");
}

#[test]
fn frontend_stays_pending_without_a_pool_with_an_event() {
    let s = Svcnet::start();
    s.apply(SEED_FRONTEND);
    let describe = wait_for_event(&s, "frontend", &["Warning", "AllocationFailed", "svcnet-lb-controller", "no IPAddressPool configured"]);
    assert!(!describe.contains("LoadBalancer Ingress:"), "{describe}");
    assert_eq!(external_ip_column(&s, "frontend"), "<pending>");
    assert_eq!(external_ip(&s, "frontend"), "");
    // The event is a core/v1 Event on the Service.
    let uid = jsonpath(&s, "frontend", ".metadata.uid");
    let ev = s.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.uid={uid},reason=AllocationFailed"),
        "-o",
        "jsonpath={.items[0].involvedObject.kind} {.items[0].involvedObject.apiVersion} {.items[0].type} {.items[0].count} {.items[0].source.component}",
    ]);
    assert_eq!(ev, "Service v1 Warning 1 svcnet-lb-controller");
}

#[test]
fn requested_addresses_are_honoured_or_refused_when_taken() {
    let s = start_with_pool(POOL);
    // The deprecated field.
    s.apply(&lb("req-field", "", "  loadBalancerIP: 172.30.255.230\n"));
    assert_eq!(wait_for_ip(&s, "req-field"), "172.30.255.230");
    // The annotation: its IPv4 entry.
    s.apply(&lb("req-annotation", "  annotations:\n    svcnet.io/loadBalancerIPs: \"fd00::10,172.30.255.231\"\n", ""));
    assert_eq!(wait_for_ip(&s, "req-annotation"), "172.30.255.231");
    // Taken: pending, with the reason.
    s.apply(&lb("req-taken", "  annotations:\n    svcnet.io/loadBalancerIPs: 172.30.255.230\n", ""));
    wait_for_event(&s, "req-taken", &["Warning", "AllocationFailed", "requested IP 172.30.255.230 is already assigned to default/req-field"]);
    assert_eq!(external_ip_column(&s, "req-taken"), "<pending>");
    // Outside every pool.
    s.apply(&lb("req-outside", "", "  loadBalancerIP: 192.0.2.7\n"));
    wait_for_event(&s, "req-outside", &["AllocationFailed", "requested IP 192.0.2.7 is not in any IPAddressPool that serves this Service"]);
    assert_eq!(external_ip(&s, "req-outside"), "");
    // A Service without a request gets the first free address, none of the requested ones.
    s.apply(&lb("plain", "", ""));
    assert_eq!(wait_for_ip(&s, "plain"), "172.30.255.200");
    // Once the holder lets go, the waiting request is served.
    s.ok(&["delete", "svc", "req-field"]);
    wait_for("req-taken to get its requested address", TIMEOUT, || (external_ip(&s, "req-taken") == "172.30.255.230").then_some(()));
}

#[test]
fn exhausted_pool_leaves_the_third_pending_until_an_address_is_freed() {
    let s = start_with_pool("172.30.255.200-172.30.255.201");
    for name in ["ex-a", "ex-b", "ex-c"] {
        s.apply(&lb(name, "", ""));
    }
    let (holders, pending) = wait_for("two of three Services with an address", TIMEOUT, || {
        let ips: Vec<(String, String)> = ["ex-a", "ex-b", "ex-c"].iter().map(|n| (n.to_string(), external_ip(&s, n))).collect();
        let holders: Vec<(String, String)> = ips.iter().filter(|(_, ip)| !ip.is_empty()).cloned().collect();
        let pending: Vec<String> = ips.iter().filter(|(_, ip)| ip.is_empty()).map(|(n, _)| n.clone()).collect();
        (holders.len() == 2).then_some((holders, pending))
    });
    let mut addresses: Vec<&str> = holders.iter().map(|(_, ip)| ip.as_str()).collect();
    addresses.sort();
    assert_eq!(addresses, ["172.30.255.200", "172.30.255.201"]);
    let pending = &pending[0];
    wait_for_event(&s, pending, &["Warning", "AllocationFailed", "no available IPs in pool \"svcnet-up\""]);
    assert_eq!(external_ip_column(&s, pending), "<pending>");

    let (freed_by, freed) = &holders[0];
    s.ok(&["delete", "svc", freed_by]);
    wait_for("the pending Service to get the freed address", TIMEOUT, || (external_ip(&s, pending) == *freed).then_some(()));
    assert_eq!(external_ip(&s, &holders[1].0), holders[1].1, "the other keeps its address");
    wait_for_event(&s, pending, &["Normal", "IPAllocated", &format!("Assigned IP {freed}")]);
}

#[test]
fn pool_applied_with_kubectl_serves_pending_services() {
    let s = Svcnet::start();
    s.namespace("lb-team");
    s.apply(&lb("waiting", "", ""));
    s.apply(&lb("picky", "  annotations:\n    svcnet.io/address-pool: manual\n", ""));
    s.apply(&lb("team-svc", "  namespace: lb-team\n", ""));
    wait_for_event(&s, "waiting", &["AllocationFailed", "no IPAddressPool configured"]);

    s.apply(
        "apiVersion: svcnet.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: extra\nspec:\n  addresses:\n  - 10.200.0.0/30\n  namespaces:\n  - default\n",
    );
    assert_eq!(wait_for_ip(&s, "waiting"), "10.200.0.0");
    wait_for_event(&s, "picky", &["AllocationFailed", "IPAddressPool \"manual\" does not exist"]);
    let team_events = wait_for("an event on lb-team/team-svc", TIMEOUT, || {
        let out = s.ok(&["describe", "svc", "-n", "lb-team", "team-svc"]);
        out.contains("no IPAddressPool with autoAssign serves this Service").then_some(out)
    });
    assert!(team_events.contains("AllocationFailed"), "{team_events}");

    // A pool only for those who name it, and one for a namespace.
    s.apply("apiVersion: svcnet.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: manual\nspec:\n  addresses:\n  - 10.201.0.10-10.201.0.20\n  autoAssign: false\n");
    assert_eq!(wait_for_ip(&s, "picky"), "10.201.0.10");
    s.apply(
        "apiVersion: svcnet.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: team\nspec:\n  addresses:\n  - 10.202.0.0/31\n  namespaces:\n  - lb-team\n",
    );
    let team_ip = wait_for("an address for lb-team/team-svc", TIMEOUT, || {
        Some(s.ok(&["get", "svc", "-n", "lb-team", "team-svc", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"])).filter(|ip| !ip.is_empty())
    });
    assert_eq!(team_ip, "10.202.0.0");
    // The manual pool is not used for Services that do not ask for it.
    s.apply(&lb("plain", "", ""));
    assert_eq!(wait_for_ip(&s, "plain"), "10.200.0.1");
}

#[test]
fn other_load_balancer_classes_are_left_alone() {
    let s = start_with_pool(POOL);
    s.apply(&lb("theirs", "", "  loadBalancerClass: other.example/lb\n"));
    // Their controller writes the status; ours must not touch it.
    s.ok(&["patch", "svc", "theirs", "--subresource=status", "--type=merge", "-p", r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.50"}]}}}"#]);
    s.apply(&lb("ours-explicit", "", "  loadBalancerClass: svcnet.io/lb\n"));
    // Queued after `theirs`: had that taken an address, this one would not get the first.
    assert_eq!(wait_for_ip(&s, "ours-explicit"), "172.30.255.200", "other-class Services take no address");
    s.apply(&lb("ours-late", "", ""));
    assert_eq!(wait_for_ip(&s, "ours-late"), "172.30.255.201");
    assert_eq!(external_ip(&s, "theirs"), "192.0.2.50");
    assert_eq!(events_of(&s, "theirs"), "", "no events on a Service of another class");
}

#[test]
fn type_change_away_from_load_balancer_clears_status_and_frees_the_address() {
    let s = start_with_pool("172.30.255.240/32");
    s.apply(&lb("morph", "", ""));
    assert_eq!(wait_for_ip(&s, "morph"), "172.30.255.240");
    s.apply(&lb("queued", "", ""));
    wait_for_event(&s, "queued", &["AllocationFailed", "no available IPs in pool \"svcnet-up\""]);

    s.ok(&["patch", "svc", "morph", "--type=merge", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    wait_for("morph's status to be cleared", TIMEOUT, || (jsonpath(&s, "morph", ".status.loadBalancer") == "{}").then_some(()));
    assert_eq!(external_ip_column(&s, "morph"), "<none>");
    assert_eq!(wait_for_ip(&s, "queued"), "172.30.255.240", "the freed address goes to the waiting Service");
}

#[test]
fn addresses_stay_where_they_are_across_restarts() {
    let s = start_with_pool(POOL);
    for name in ["keep-a", "keep-b", "keep-c"] {
        s.apply(&lb(name, "", ""));
        wait_for_ip(&s, name);
    }
    assert_eq!(external_ip(&s, "keep-a"), "172.30.255.200");
    // A hole at the start of the pool: an allocator that forgot would hand out .200 again.
    s.ok(&["delete", "svc", "keep-a"]);
    let b = external_ip(&s, "keep-b");
    let c = external_ip(&s, "keep-c");
    assert_eq!((b.as_str(), c.as_str()), ("172.30.255.201", "172.30.255.202"));

    let (status, dir) = s.terminate();
    assert!(status.success(), "{status}");
    let s = Svcnet::start_with(dir, &["--lb-pool", POOL]);
    // A new Service is assigned only after the map was rebuilt: it gets the hole.
    s.apply(&lb("keep-d", "", ""));
    assert_eq!(wait_for_ip(&s, "keep-d"), "172.30.255.200");
    assert_eq!(external_ip(&s, "keep-b"), b);
    assert_eq!(external_ip(&s, "keep-c"), c);
    // And no address was assigned again.
    for name in ["keep-b", "keep-c"] {
        let events = events_of(&s, name);
        assert_eq!(events.lines().filter(|l| l.starts_with("IPAllocated")).count(), 1, "{name}: {events}");
    }
}
