use super::format::human_duration;
use super::*;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

const NOW: &str = "2025-06-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

/// The RFC 3339 time `secs` seconds before [`NOW`].
fn ago(secs: i64) -> String {
    (now() - SignedDuration::from_secs(secs)).to_string()
}

fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let r = row(kind, obj, now());
    assert_eq!(r.len(), columns(kind).len(), "{kind}: one cell per column");
    r
}

/// The cells of a row as strings (integers printed), for compact assertions.
fn strs(kind: &str, obj: &Value) -> Vec<String> {
    cells(kind, obj)
        .into_iter()
        .map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .collect()
}

/// The cell under a column name.
fn cell(kind: &str, obj: &Value, column: &str) -> Value {
    let i = columns(kind).iter().position(|c| c.name == column).unwrap_or_else(|| panic!("{kind} has no {column}"));
    cells(kind, obj).swap_remove(i)
}

fn names(kind: &str) -> Vec<(&'static str, i32)> {
    columns(kind).iter().map(|c| (c.name, c.priority)).collect()
}

// ---- HumanDuration ----

const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;
const D: i64 = 24 * H;

#[test]
fn human_duration_matches_upstream_boundaries() {
    let cases: &[(i64, &str)] = &[
        (-2 * S, "<invalid>"),
        (-S - S / 2, "0s"),
        (-S, "0s"),
        (-1, "0s"),
        (0, "0s"),
        (S / 2, "0s"),
        (5 * S, "5s"),
        (59 * S, "59s"),
        (119 * S + S / 2, "119s"),
        (120 * S, "2m"),
        (121 * S, "2m1s"),
        (3 * M + 2 * S, "3m2s"),
        (9 * M + 59 * S, "9m59s"),
        (10 * M, "10m"),
        (10 * M + 30 * S, "10m"),
        (179 * M + 59 * S, "179m"),
        (180 * M, "3h"),
        (3 * H + M, "3h1m"),
        (4 * H, "4h"),
        (7 * H + 59 * M, "7h59m"),
        (8 * H, "8h"),
        (8 * H + 30 * M, "8h"),
        (47 * H + 59 * M, "47h"),
        (48 * H, "2d"),
        (2 * D + 3 * H, "2d3h"),
        (7 * D + 23 * H, "7d23h"),
        (8 * D, "8d"),
        (45 * D + 5 * H, "45d"),
        (729 * D + 23 * H, "729d"),
        (730 * D, "2y"),
        (731 * D, "2y1d"),
        (3 * 365 * D, "3y"),
        (8 * 365 * D - D, "7y364d"),
        (8 * 365 * D, "8y"),
        (20 * 365 * D + 100 * D, "20y"),
        (i64::MAX, "292y"),
    ];
    for &(nanos, want) in cases {
        assert_eq!(human_duration(nanos), want, "{nanos}ns");
    }
}

#[test]
fn age_cells() {
    let obj = |ts: Value| json!({"metadata": {"name": "cm", "creationTimestamp": ts}});
    assert_eq!(cell("ConfigMap", &obj(json!(ago(5))), "Age"), "5s");
    assert_eq!(cell("ConfigMap", &obj(json!(ago(3 * 60 + 2))), "Age"), "3m2s");
    assert_eq!(cell("ConfigMap", &obj(json!(ago(4 * 3600))), "Age"), "4h");
    assert_eq!(cell("ConfigMap", &obj(json!(ago(2 * 86400 + 3 * 3600))), "Age"), "2d3h");
    assert_eq!(cell("ConfigMap", &obj(json!(ago(45 * 86400))), "Age"), "45d");
    assert_eq!(cell("ConfigMap", &obj(json!(ago(3 * 365 * 86400))), "Age"), "3y");
    // A little clock skew still reads as now; more is invalid.
    assert_eq!(cell("ConfigMap", &obj(json!(ago(-1))), "Age"), "0s");
    assert_eq!(cell("ConfigMap", &obj(json!(ago(-5))), "Age"), "<invalid>");
    // Fractional seconds parse.
    assert_eq!(cell("ConfigMap", &obj(json!("2025-06-01T11:59:49.750Z")), "Age"), "10s");
    assert_eq!(cell("ConfigMap", &obj(json!(null)), "Age"), "<unknown>");
    assert_eq!(cell("ConfigMap", &json!({"metadata": {"name": "cm"}}), "Age"), "<unknown>");
}

// ---- Column definitions ----

const KINDS: &[&str] = &[
    "Namespace",
    "Pod",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "Node",
    "Event",
    "ConfigMap",
    "ServiceAccount",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "Lease",
    "NetworkPolicy",
    "Secret",
];

#[test]
fn column_names_and_priorities_match_upstream() {
    assert_eq!(names("Namespace"), [("Name", 0), ("Status", 0), ("Age", 0)]);
    assert_eq!(
        names("Pod"),
        [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1), ("Node", 1), ("Nominated Node", 1), ("Readiness Gates", 1)]
    );
    assert_eq!(names("Service"), [("Name", 0), ("Type", 0), ("Cluster-IP", 0), ("External-IP", 0), ("Port(s)", 0), ("Age", 0), ("Selector", 1)]);
    assert_eq!(names("Endpoints"), [("Name", 0), ("Endpoints", 0), ("Age", 0)]);
    assert_eq!(names("EndpointSlice"), [("Name", 0), ("AddressType", 0), ("Ports", 0), ("Endpoints", 0), ("Age", 0)]);
    assert_eq!(
        names("Node"),
        [
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1)
        ]
    );
    assert_eq!(
        names("Event"),
        [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1)
        ]
    );
    assert_eq!(names("ConfigMap"), [("Name", 0), ("Data", 0), ("Age", 0)]);
    assert_eq!(names("ServiceAccount"), [("Name", 0), ("Secrets", 0), ("Age", 0)]);
    assert_eq!(
        names("Deployment"),
        [("Name", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)]
    );
    assert_eq!(names("ReplicaSet"), [("Name", 0), ("Desired", 0), ("Current", 0), ("Ready", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)]);
    assert_eq!(names("StatefulSet"), [("Name", 0), ("Ready", 0), ("Age", 0), ("Containers", 1), ("Images", 1)]);
    assert_eq!(names("Lease"), [("Name", 0), ("Holder", 0), ("Age", 0)]);
    assert_eq!(names("NetworkPolicy"), [("Name", 0), ("Pod-Selector", 0), ("Age", 0)]);
    assert_eq!(names("Secret"), [("Name", 0), ("Created At", 0)]);
    assert_eq!(names("CustomThing"), [("Name", 0), ("Created At", 0)]);
}

#[test]
fn column_types_formats_and_descriptions() {
    for kind in KINDS {
        for c in columns(kind) {
            assert!(matches!(c.type_, "string" | "integer" | "date"), "{kind} {}", c.name);
            assert_eq!(c.format, if c.name == "Name" { "name" } else { "" }, "{kind} {}", c.name);
            assert!(!c.description.is_empty(), "{kind} {}", c.name);
            if c.name == "Name" {
                assert!(c.description.starts_with("Name must be unique within a namespace."));
            }
            if c.name == "Age" || c.name == "Created At" {
                assert!(c.description.starts_with("CreationTimestamp is a timestamp"));
            }
        }
    }
    let rs: Vec<_> = columns("ReplicaSet").iter().map(|c| c.type_).collect();
    assert_eq!(rs, ["string", "integer", "integer", "integer", "string", "string", "string", "string"]);
    assert_eq!(columns("Secret")[1].type_, "date");
    assert_eq!(columns("Pod")[3].type_, "string");
    assert_eq!(columns("Pod")[1].description, "The aggregate readiness state of this pod for accepting traffic.");
    assert!(columns("Service")[1].description.starts_with("type determines how the Service is exposed."));
    assert!(columns("Service")[2].description.starts_with("clusterIP is the IP address of the service"));
    assert_eq!(columns("Node")[4].description, "Kubelet Version reported by the node.");
}

#[test]
fn column_serializes_in_the_wire_form() {
    let v = serde_json::to_value(&columns("Service")[6]).unwrap();
    assert_eq!(v["name"], "Selector");
    assert_eq!(v["type"], "string");
    assert_eq!(v["format"], "");
    assert_eq!(v["priority"], 1);
    assert!(v["description"].as_str().unwrap().starts_with("Route service traffic to pods"));
    assert_eq!(v.as_object().unwrap().len(), 5);
    let name = serde_json::to_value(&columns("Pod")[0]).unwrap();
    assert_eq!(name["format"], "name");
    assert_eq!(name["priority"], 0);
}

#[test]
fn every_kind_prints_one_cell_per_column_even_for_empty_objects() {
    for kind in KINDS {
        let r = cells(kind, &json!({}));
        assert_eq!(r.len(), columns(kind).len(), "{kind}");
        let r = cells(kind, &json!({"metadata": {"name": "x"}}));
        let name_col = columns(kind).iter().position(|c| c.name == "Name").unwrap();
        assert_eq!(r[name_col], "x", "{kind}");
    }
}

// ---- Namespace ----

#[test]
fn namespace_row() {
    let ns = json!({"metadata": {"name": "shop", "creationTimestamp": ago(90)}, "status": {"phase": "Active"}});
    assert_eq!(strs("Namespace", &ns), ["shop", "Active", "90s"]);
    let deleting = json!({"metadata": {"name": "old"}, "status": {"phase": "Terminating"}});
    assert_eq!(strs("Namespace", &deleting), ["old", "Terminating", "<unknown>"]);
    assert_eq!(strs("Namespace", &json!({"metadata": {"name": "new"}})), ["new", "Active", "<unknown>"]);
}

// ---- Service ----

fn service(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "backend", "namespace": "shop", "creationTimestamp": ago(3 * 3600 + 25 * 60)},
        "spec": spec,
        "status": status
    })
}

#[test]
fn service_node_port_with_two_ports() {
    let svc = service(
        json!({
            "type": "NodePort",
            "clusterIP": "10.96.12.34",
            "clusterIPs": ["10.96.12.34"],
            "selector": {"tier": "web", "app": "backend"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30001, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 8443, "nodePort": 30002, "protocol": "TCP"}
            ]
        }),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(strs("Service", &svc), ["backend", "NodePort", "10.96.12.34", "<none>", "80:30001/TCP,443:30002/TCP", "3h25m", "app=backend,tier=web"]);
}

#[test]
fn service_cluster_ip_variants() {
    let svc = service(
        json!({
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}, {"port": 9153}]
        }),
        json!({}),
    );
    assert_eq!(cell("Service", &svc, "Cluster-IP"), "10.96.0.10");
    assert_eq!(cell("Service", &svc, "Port(s)"), "53/UDP,53/TCP,9153/TCP");
    assert_eq!(cell("Service", &svc, "Selector"), "<none>");
    assert_eq!(cell("Service", &svc, "External-IP"), "<none>");

    let headless = service(json!({"clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"}}), json!({}));
    assert_eq!(strs("Service", &headless), ["backend", "ClusterIP", "None", "<none>", "<none>", "3h25m", "app=db"]);

    // clusterIP without clusterIPs (defaulting copies it) and no clusterIP at all.
    let only_ip = service(json!({"type": "ClusterIP", "clusterIP": "10.96.1.1"}), json!({}));
    assert_eq!(cell("Service", &only_ip, "Cluster-IP"), "10.96.1.1");
    let none = service(json!({"type": "ClusterIP"}), json!({}));
    assert_eq!(cell("Service", &none, "Cluster-IP"), "<none>");

    let external_ips = service(
        json!({"type": "ClusterIP", "clusterIP": "10.96.1.1", "externalIPs": ["192.0.2.10", "192.0.2.11"], "ports": [{"port": 80, "protocol": "TCP"}]}),
        json!({}),
    );
    assert_eq!(cell("Service", &external_ips, "External-IP"), "192.0.2.10,192.0.2.11");
}

#[test]
fn service_load_balancer() {
    let pending = service(
        json!({"type": "LoadBalancer", "clusterIP": "10.96.5.5", "clusterIPs": ["10.96.5.5"],
               "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(strs("Service", &pending), ["backend", "LoadBalancer", "10.96.5.5", "<pending>", "443:31443/TCP", "3h25m", "<none>"]);

    // Ingress IPs (or hostnames) sorted and de-duplicated, never clipped (the server prints wide).
    let ready = service(
        json!({"type": "LoadBalancer", "clusterIP": "10.96.5.5", "clusterIPs": ["10.96.5.5"]}),
        json!({"loadBalancer": {"ingress": [
            {"ip": "203.0.113.9"},
            {"hostname": "a1b2c3d4e5f6-1234567890.eu-west-1.elb.amazonaws.com"},
            {"ip": "198.51.100.7"},
            {"ip": "203.0.113.9"},
            {}
        ]}}),
    );
    assert_eq!(cell("Service", &ready, "External-IP"), "198.51.100.7,203.0.113.9,a1b2c3d4e5f6-1234567890.eu-west-1.elb.amazonaws.com");

    let with_external = service(json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.1"]}), json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}));
    assert_eq!(cell("Service", &with_external, "External-IP"), "203.0.113.9,192.0.2.1");
    let pending_with_external = service(json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.1"]}), json!({}));
    assert_eq!(cell("Service", &pending_with_external, "External-IP"), "192.0.2.1");
}

#[test]
fn service_external_name() {
    let svc = service(json!({"type": "ExternalName", "externalName": "db.example.com"}), json!({}));
    assert_eq!(strs("Service", &svc), ["backend", "ExternalName", "<none>", "db.example.com", "<none>", "3h25m", "<none>"]);
    let weird = service(json!({"type": "Bogus"}), json!({}));
    assert_eq!(cell("Service", &weird, "External-IP"), "<unknown>");
}

// ---- Endpoints ----

fn endpoints(subsets: Value) -> Value {
    json!({"metadata": {"name": "backend", "namespace": "shop", "creationTimestamp": ago(600)}, "subsets": subsets})
}

#[test]
fn endpoints_five_addresses() {
    let ep = endpoints(json!([{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}, {"ip": "10.0.0.5"}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
    }]));
    assert_eq!(strs("Endpoints", &ep), ["backend", "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more...", "10m"]);
}

#[test]
fn endpoints_formatting_follows_subsets() {
    // Exactly three: no suffix.
    let three = endpoints(json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}], "ports": [{"port": 80}]}]));
    assert_eq!(cell("Endpoints", &three, "Endpoints"), "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80");
    // Each port repeats every address.
    let two_ports = endpoints(json!([{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]
    }]));
    assert_eq!(cell("Endpoints", &two_ports, "Endpoints"), "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...");
    // Across subsets, and headless subsets without ports print bare IPs.
    let mixed = endpoints(json!([
        {"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 8080}]},
        {"addresses": [{"ip": "10.0.1.1"}, {"ip": "10.0.1.2"}, {"ip": "10.0.1.3"}]}
    ]));
    assert_eq!(cell("Endpoints", &mixed, "Endpoints"), "10.0.0.1:8080,10.0.1.1,10.0.1.2 + 1 more...");
    // IPv6 addresses are bracketed.
    let v6 = endpoints(json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]));
    assert_eq!(cell("Endpoints", &v6, "Endpoints"), "[fd00::1]:80");
    // No subsets: <none>; subsets with only not-ready addresses print nothing, as upstream.
    assert_eq!(cell("Endpoints", &endpoints(json!([])), "Endpoints"), "<none>");
    assert_eq!(cell("Endpoints", &json!({"metadata": {"name": "e"}}), "Endpoints"), "<none>");
    let not_ready = endpoints(json!([{"notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 80}]}]));
    assert_eq!(cell("Endpoints", &not_ready, "Endpoints"), "");
}

// ---- EndpointSlice ----

#[test]
fn endpoint_slice_row() {
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "backend-abc12", "namespace": "shop", "creationTimestamp": ago(50 * 86400),
                     "labels": {"kubernetes.io/service-name": "backend"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "https", "port": 443, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
            {"addresses": ["10.244.2.6"], "conditions": {"ready": true}}
        ]
    });
    assert_eq!(strs("EndpointSlice", &slice), ["backend-abc12", "IPv4", "80,443", "10.244.1.5,10.244.2.6", "50d"]);
}

#[test]
fn endpoint_slice_lists() {
    let slice = json!({
        "metadata": {"name": "s"},
        "addressType": "IPv6",
        "ports": [{"port": 1}, {"name": "metrics"}, {}, {"port": 4}, {"port": 5}],
        "endpoints": [
            {"addresses": ["fd00::1", "fd00::2"]},
            {"addresses": ["fd00::3"]},
            {"addresses": ["fd00::4"]}
        ]
    });
    assert_eq!(cell("EndpointSlice", &slice, "Ports"), "1,metrics,* + 2 more...");
    assert_eq!(cell("EndpointSlice", &slice, "Endpoints"), "fd00::1,fd00::2,fd00::3 + 1 more...");
    let empty = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": []});
    assert_eq!(strs("EndpointSlice", &empty), ["s", "IPv4", "<unset>", "<unset>", "<unknown>"]);
}

// ---- Pod ----

fn pod(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-7d4b9c-x2x9q", "namespace": "shop", "creationTimestamp": ago(2 * 86400 + 3 * 3600)},
        "spec": spec,
        "status": status
    })
}

fn one_container() -> Value {
    json!({"containers": [{"name": "web", "image": "nginx:1.27"}], "nodeName": "node-a"})
}

fn running(name: &str, ready: bool, restarts: i64) -> Value {
    json!({"name": name, "ready": ready, "restartCount": restarts, "started": true,
           "state": {"running": {"startedAt": ago(3600)}}})
}

#[test]
fn pod_running() {
    let p = pod(
        one_container(),
        json!({
            "phase": "Running",
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [running("web", true, 0)]
        }),
    );
    assert_eq!(strs("Pod", &p), ["web-7d4b9c-x2x9q", "1/1", "Running", "0", "2d3h", "10.244.1.7", "node-a", "<none>", "<none>"]);
}

#[test]
fn pod_pending_unscheduled_and_container_creating() {
    let unscheduled = pod(json!({"containers": [{"name": "web"}]}), json!({"phase": "Pending"}));
    assert_eq!(strs("Pod", &unscheduled), ["web-7d4b9c-x2x9q", "0/1", "Pending", "0", "2d3h", "<none>", "<none>", "<none>", "<none>"]);
    let creating = pod(
        json!({"containers": [{"name": "web"}, {"name": "proxy"}], "nodeName": "node-a"}),
        json!({"phase": "Pending", "containerStatuses": [
            {"name": "web", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
            {"name": "proxy", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
        ]}),
    );
    assert_eq!(cell("Pod", &creating, "Ready"), "0/2");
    assert_eq!(cell("Pod", &creating, "Status"), "ContainerCreating");
    // With no status at all: empty phase.
    let bare = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
    assert_eq!(strs("Pod", &bare), ["p", "0/1", "", "0", "<unknown>", "<none>", "<none>", "<none>", "<none>"]);
}

#[test]
fn pod_crash_loop_with_restart_age() {
    let p = pod(
        one_container(),
        json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "web", "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": ago(200), "finishedAt": ago(180)}}
            }]
        }),
    );
    assert_eq!(cell("Pod", &p, "Status"), "CrashLoopBackOff");
    assert_eq!(cell("Pod", &p, "Restarts"), "5 (3m ago)");
    assert_eq!(cell("Pod", &p, "Ready"), "0/1");
}

#[test]
fn pod_restarts_take_the_latest_termination_of_all_containers() {
    let p = pod(
        json!({"containers": [{"name": "a"}, {"name": "b"}]}),
        json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 137, "finishedAt": ago(7200)}}},
            {"name": "b", "ready": true, "restartCount": 1, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(45)}}}
        ]}),
    );
    assert_eq!(cell("Pod", &p, "Restarts"), "3 (45s ago)");
    assert_eq!(cell("Pod", &p, "Ready"), "2/2");
    assert_eq!(cell("Pod", &p, "Status"), "Running");
    // Restarts without a recorded termination print the bare count.
    let no_time =
        pod(one_container(), json!({"phase": "Running", "containerStatuses": [{"name": "web", "ready": true, "restartCount": 4, "state": {"running": {}}}]}));
    assert_eq!(cell("Pod", &no_time, "Restarts"), "4");
}

#[test]
fn pod_completed_and_failed() {
    let done = pod(
        one_container(),
        json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "web", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]}),
    );
    assert_eq!(cell("Pod", &done, "Status"), "Completed");
    assert_eq!(cell("Pod", &done, "Ready"), "0/1");
    let failed = pod(
        one_container(),
        json!({"phase": "Failed", "containerStatuses": [
            {"name": "web", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}
        ]}),
    );
    assert_eq!(cell("Pod", &failed, "Status"), "Error");
    let signal = pod(
        one_container(),
        json!({"phase": "Failed", "containerStatuses": [
            {"name": "web", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}}
        ]}),
    );
    assert_eq!(cell("Pod", &signal, "Status"), "Signal:9");
    let exit =
        pod(one_container(), json!({"phase": "Failed", "containerStatuses": [{"name": "web", "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]}));
    assert_eq!(cell("Pod", &exit, "Status"), "ExitCode:3");
    let evicted = pod(one_container(), json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}));
    assert_eq!(cell("Pod", &evicted, "Status"), "Evicted");
}

#[test]
fn pod_completed_container_with_running_sibling() {
    let status = |ready: &str| {
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": ready}], "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}
        ]})
    };
    let spec = json!({"containers": [{"name": "a"}, {"name": "b"}]});
    assert_eq!(cell("Pod", &pod(spec.clone(), status("True")), "Status"), "Running");
    assert_eq!(cell("Pod", &pod(spec.clone(), status("False")), "Status"), "NotReady");
    assert_eq!(cell("Pod", &pod(spec, status("False")), "Ready"), "1/2");
}

#[test]
fn pod_terminating_and_node_lost() {
    let mut p = pod(one_container(), json!({"phase": "Running", "containerStatuses": [running("web", true, 0)]}));
    p["metadata"]["deletionTimestamp"] = json!(ago(10));
    assert_eq!(cell("Pod", &p, "Status"), "Terminating");
    p["status"]["reason"] = json!("NodeLost");
    assert_eq!(cell("Pod", &p, "Status"), "Unknown");
    // A finished pod being deleted keeps its terminal status.
    let mut done = pod(
        one_container(),
        json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "web", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]}),
    );
    done["metadata"]["deletionTimestamp"] = json!(ago(10));
    assert_eq!(cell("Pod", &done, "Status"), "Completed");
}

#[test]
fn pod_scheduling_gated() {
    let p = pod(
        json!({"containers": [{"name": "web"}], "schedulingGates": [{"name": "example.com/quota"}]}),
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
    );
    assert_eq!(cell("Pod", &p, "Status"), "SchedulingGated");
}

fn init_spec() -> Value {
    json!({
        "initContainers": [{"name": "migrate"}, {"name": "seed"}],
        "containers": [{"name": "web"}],
        "nodeName": "node-a"
    })
}

#[test]
fn pod_init_containers() {
    let waiting_first = pod(
        init_spec(),
        json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "migrate", "ready": false, "restartCount": 0, "state": {"running": {}}},
            {"name": "seed", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ], "containerStatuses": [
            {"name": "web", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ]}),
    );
    assert_eq!(strs("Pod", &waiting_first)[1..4], ["0/1", "Init:0/2", "0"]);

    let second = pod(
        init_spec(),
        json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "migrate", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "seed", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ]}),
    );
    assert_eq!(cell("Pod", &second, "Status"), "Init:1/2");

    let crash = pod(
        init_spec(),
        json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "migrate", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(20)}}},
            {"name": "seed", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ], "containerStatuses": [
            {"name": "web", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ]}),
    );
    assert_eq!(strs("Pod", &crash)[1..4], ["0/1", "Init:CrashLoopBackOff", "3 (20s ago)"]);

    let error = pod(
        init_spec(),
        json!({"phase": "Failed", "initContainerStatuses": [
            {"name": "migrate", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
        ]}),
    );
    assert_eq!(cell("Pod", &error, "Status"), "Init:Error");
    let exit = pod(
        init_spec(),
        json!({"phase": "Failed", "initContainerStatuses": [{"name": "migrate", "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}]}),
    );
    assert_eq!(cell("Pod", &exit, "Status"), "Init:ExitCode:2");
    let signal = pod(
        init_spec(),
        json!({"phase": "Failed", "initContainerStatuses": [{"name": "migrate", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
    );
    assert_eq!(cell("Pod", &signal, "Status"), "Init:Signal:9");
}

#[test]
fn pod_initialized_condition_lets_containers_decide() {
    // Init containers look stuck, but the Initialized condition says otherwise.
    let p = pod(
        init_spec(),
        json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
               "initContainerStatuses": [
                   {"name": "migrate", "restartCount": 1, "state": {"waiting": {"reason": "ImagePullBackOff"}}}
               ],
               "containerStatuses": [running("web", true, 0)]}),
    );
    // The init reason stays (running containers never overwrite it), but readiness and restarts
    // come from the containers: restarts of ordinary init containers are dropped.
    assert_eq!(strs("Pod", &p)[1..4], ["1/1", "Init:ImagePullBackOff", "0"]);
}

#[test]
fn pod_sidecar_init_containers_count_as_containers() {
    let spec = json!({
        "initContainers": [{"name": "migrate"}, {"name": "mesh", "restartPolicy": "Always"}],
        "containers": [{"name": "web"}]
    });
    let p = pod(
        spec,
        json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
               "initContainerStatuses": [
                   {"name": "migrate", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                   {"name": "mesh", "ready": true, "started": true, "restartCount": 2, "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}}
               ],
               "containerStatuses": [running("web", true, 1)]}),
    );
    assert_eq!(strs("Pod", &p)[1..4], ["2/2", "Running", "3 (5m ago)"]);
}

#[test]
fn pod_wide_cells() {
    let p = pod(
        json!({"containers": [{"name": "web"}], "nodeName": "node-a",
               "readinessGates": [{"conditionType": "example.com/lb-ready"}, {"conditionType": "example.com/warm"}]}),
        json!({"phase": "Running", "podIPs": [{"ip": "fd00::7"}, {"ip": "10.244.1.7"}], "nominatedNodeName": "node-b",
               "conditions": [{"type": "example.com/lb-ready", "status": "True"}, {"type": "example.com/warm", "status": "False"}],
               "containerStatuses": [running("web", true, 0)]}),
    );
    assert_eq!(strs("Pod", &p)[5..], ["fd00::7", "node-a", "node-b", "1/2"]);
    // status.podIP is authoritative over podIPs[0].
    let mut both = p.clone();
    both["status"]["podIP"] = json!("10.244.1.7");
    assert_eq!(cell("Pod", &both, "IP"), "10.244.1.7");
}

// ---- Node ----

fn node(conditions: Value, unschedulable: bool) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a", "creationTimestamp": ago(400 * 86400), "labels": {
            "kubernetes.io/hostname": "node-a",
            "node-role.kubernetes.io/control-plane": "",
            "node-role.kubernetes.io/": "",
            "kubernetes.io/role": "worker"
        }},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "conditions": conditions,
            "addresses": [{"type": "Hostname", "address": "node-a"}, {"type": "InternalIP", "address": "172.18.0.2"}],
            "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.8.0-45-generic", "containerRuntimeVersion": "containerd://1.7.24"}
        }
    })
}

#[test]
fn node_rows() {
    let ready = node(json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]), false);
    assert_eq!(
        strs("Node", &ready),
        [
            "node-a",
            "Ready",
            "control-plane,worker",
            "400d",
            "v1.32.4",
            "172.18.0.2",
            "<none>",
            "Debian GNU/Linux 12 (bookworm)",
            "6.8.0-45-generic",
            "containerd://1.7.24"
        ]
    );
    let cordoned = node(json!([{"type": "Ready", "status": "Unknown"}]), true);
    assert_eq!(cell("Node", &cordoned, "Status"), "NotReady,SchedulingDisabled");
    let fresh = json!({"metadata": {"name": "n"}});
    assert_eq!(strs("Node", &fresh), ["n", "Unknown", "<none>", "<unknown>", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"]);
}

// ---- Event ----

fn event() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web-7d4b9c-x2x9q.17c3a1b2c3d4e5f6", "namespace": "shop", "creationTimestamp": ago(600)},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-7d4b9c-x2x9q", "fieldPath": "spec.containers{web}"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container web\n",
        "source": {"component": "kubelet", "host": "node-a"},
        "firstTimestamp": ago(600),
        "lastTimestamp": ago(42),
        "count": 7,
        "type": "Warning"
    })
}

#[test]
fn event_row() {
    let r = cells("Event", &event());
    assert_eq!(
        r,
        vec![
            json!("42s"),
            json!("Warning"),
            json!("BackOff"),
            json!("pod/web-7d4b9c-x2x9q"),
            json!("spec.containers{web}"),
            json!("kubelet, node-a"),
            json!("Back-off restarting failed container web"),
            json!("10m"),
            json!(7),
            json!("web-7d4b9c-x2x9q.17c3a1b2c3d4e5f6"),
        ]
    );
}

#[test]
fn event_new_api_fields() {
    // events.k8s.io-style: eventTime, series, reportingComponent/Instance, no count.
    let ev = json!({
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Service"},
        "reason": "Sync",
        "eventTime": "2025-06-01T10:59:59.500000Z",
        "series": {"count": 4, "lastObservedTime": "2025-06-01T11:58:00.000000Z"},
        "reportingComponent": "svcnet-controller",
        "reportingInstance": "svcnet-0",
        "type": "Normal"
    });
    let r = strs("Event", &ev);
    assert_eq!(r[0], "2m"); // last seen: the series
    assert_eq!(r[3], "service"); // no name: just the kind
    assert_eq!(r[5], "svcnet-controller, svcnet-0");
    assert_eq!(r[7], "60m"); // first seen: eventTime
    assert_eq!(r[8], "4");

    let singleton = json!({"metadata": {"name": "e"}, "eventTime": ago(30), "reportingComponent": "svcnet"});
    let r = strs("Event", &singleton);
    assert_eq!(r[0], "30s"); // last seen falls back to first seen
    assert_eq!(r[5], "svcnet");
    assert_eq!(r[7], "30s");
    assert_eq!(r[8], "1");

    let nothing = json!({"metadata": {"name": "e"}});
    assert_eq!(strs("Event", &nothing), ["<unknown>", "", "", "", "", "", "", "<unknown>", "1", "e"]);
}

// ---- ConfigMap, ServiceAccount ----

#[test]
fn config_map_and_service_account_counts() {
    let cm = json!({"metadata": {"name": "kube-root-ca.crt", "creationTimestamp": ago(86400)},
                    "data": {"ca.crt": "..."}, "binaryData": {"logo.png": "iVBORw0KGgo=", "icon": "AA=="}});
    assert_eq!(cells("ConfigMap", &cm), vec![json!("kube-root-ca.crt"), json!(3), json!("24h")]);
    assert_eq!(cells("ConfigMap", &json!({"metadata": {"name": "empty"}}))[1], json!(0));
    let sa = json!({"metadata": {"name": "default", "creationTimestamp": ago(7200)}, "secrets": [{"name": "default-token-abcde"}]});
    assert_eq!(cells("ServiceAccount", &sa), vec![json!("default"), json!(1), json!("120m")]);
    assert_eq!(cells("ServiceAccount", &json!({"metadata": {"name": "sa"}}))[1], json!(0));
}

// ---- Workloads ----

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "web", "image": "nginx:1.27"},
        {"name": "sidecar", "image": "envoyproxy/envoy:v1.31"}
    ]}})
}

#[test]
fn deployment_row() {
    let d = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": ago(5 * 86400)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                 "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "edge"]}]},
                 "template": template()},
        "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}
    });
    assert_eq!(
        cells("Deployment", &d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("5d"),
            json!("web,sidecar"),
            json!("nginx:1.27,envoyproxy/envoy:v1.31"),
            json!("app=web,tier in (edge,frontend)"),
        ]
    );
    // Replicas default to 1; a missing selector prints empty (no <none> for deployments).
    let bare = json!({"metadata": {"name": "d"}});
    assert_eq!(strs("Deployment", &bare), ["d", "0/1", "0", "0", "<unknown>", "", "", ""]);
    let bad = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}});
    assert_eq!(cell("Deployment", &bad, "Selector"), "<invalid>");
}

#[test]
fn replica_set_row() {
    let rs = json!({
        "metadata": {"name": "web-7d4b9c", "namespace": "shop", "creationTimestamp": ago(5 * 86400)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"pod-template-hash": "7d4b9c", "app": "web"}}, "template": template()},
        "status": {"replicas": 3, "readyReplicas": 1}
    });
    assert_eq!(
        cells("ReplicaSet", &rs),
        vec![
            json!("web-7d4b9c"),
            json!(3),
            json!(3),
            json!(1),
            json!("5d"),
            json!("web,sidecar"),
            json!("nginx:1.27,envoyproxy/envoy:v1.31"),
            json!("app=web,pod-template-hash=7d4b9c"),
        ]
    );
    let scaled_down = json!({"metadata": {"name": "old"}, "spec": {"replicas": 0, "selector": {}}});
    assert_eq!(cells("ReplicaSet", &scaled_down)[1..4], [json!(0), json!(0), json!(0)]);
    assert_eq!(cell("ReplicaSet", &scaled_down, "Selector"), "<none>");
    let bad = json!({"metadata": {"name": "x"}, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}});
    assert_eq!(cell("ReplicaSet", &bad, "Selector"), "<error>");
}

#[test]
fn stateful_set_row() {
    let sts = json!({
        "metadata": {"name": "db", "creationTimestamp": ago(100)},
        "spec": {"replicas": 3, "serviceName": "db", "template": {"spec": {"containers": [{"name": "postgres", "image": "postgres:17"}]}}},
        "status": {"replicas": 2, "readyReplicas": 1}
    });
    assert_eq!(strs("StatefulSet", &sts), ["db", "1/3", "100s", "postgres", "postgres:17"]);
    assert_eq!(strs("StatefulSet", &json!({"metadata": {"name": "s"}})), ["s", "0/1", "<unknown>", "", ""]);
}

// ---- Lease, NetworkPolicy ----

#[test]
fn lease_row() {
    let lease = json!({"metadata": {"name": "kube-controller-manager", "namespace": "kube-system", "creationTimestamp": ago(30)},
                       "spec": {"holderIdentity": "cp-1_5e8b2c1f", "leaseDurationSeconds": 15}});
    assert_eq!(strs("Lease", &lease), ["kube-controller-manager", "cp-1_5e8b2c1f", "30s"]);
    assert_eq!(strs("Lease", &json!({"metadata": {"name": "l"}, "spec": {}})), ["l", "", "<unknown>"]);
}

#[test]
fn network_policy_selectors() {
    let np = |sel: Value| json!({"metadata": {"name": "allow-db", "creationTimestamp": ago(60)}, "spec": {"podSelector": sel}});
    assert_eq!(strs("NetworkPolicy", &np(json!({}))), ["allow-db", "<none>", "60s"]);
    assert_eq!(cell("NetworkPolicy", &json!({"metadata": {"name": "x"}, "spec": {}}), "Pod-Selector"), "<none>");
    assert_eq!(cell("NetworkPolicy", &np(json!({"matchLabels": {"app": "db"}})), "Pod-Selector"), "app=db");
    assert_eq!(
        cell(
            "NetworkPolicy",
            &np(json!({
                "matchLabels": {"role": "db", "app": "shop"},
                "matchExpressions": [
                    {"key": "env", "operator": "NotIn", "values": ["test", "dev"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                    {"key": "zone", "operator": "Exists"},
                    {"key": "app", "operator": "In", "values": ["shop"]}
                ]
            })),
            "Pod-Selector"
        ),
        "app=shop,app in (shop),!canary,env notin (dev,test),role=db,zone"
    );
    assert_eq!(cell("NetworkPolicy", &np(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})), "Pod-Selector"), "<error>");
}

// ---- Default convertor ----

#[test]
fn default_convertor_prints_name_and_created_at() {
    let secret = json!({"metadata": {"name": "db-password", "creationTimestamp": "2024-01-02T03:04:05Z"}});
    assert_eq!(strs("Secret", &secret), ["db-password", "2024-01-02T03:04:05Z"]);
    let fractional = json!({"metadata": {"name": "x", "creationTimestamp": "2024-01-02T03:04:05.987654+02:00"}});
    assert_eq!(strs("ClusterRole", &fractional), ["x", "2024-01-02T01:04:05Z"]);
    assert_eq!(strs("Secret", &json!({"metadata": {"name": "y"}})), ["y", "0001-01-01T00:00:00Z"]);
}
