//! ClusterIP and NodePort allocation as kube-apiserver does it: defaults, requested values honoured
//! or refused with 422, release on delete and type change, no duplicates under concurrent creates,
//! and repair after a crash.

mod common;

use std::collections::BTreeSet;

use common::Svcnet;

fn svc(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn stderr_of(s: &Svcnet, yaml: &str) -> String {
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(yaml));
    assert!(!out.status.success(), "create unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn jsonpath(s: &Svcnet, name: &str, path: &str) -> String {
    s.ok(&["get", "svc", name, "-o", &format!("jsonpath={{{path}}}")])
}

#[test]
fn seed_services_get_addresses_and_ports() {
    let s = Svcnet::start();
    // kube-apiserver's own Service takes the first address of the range.
    assert_eq!(jsonpath(&s, "kubernetes", ".spec.clusterIP"), "10.96.0.1");

    s.apply(&svc("backend", "  selector:\n    app: backend\n  ports:\n  - port: 8000\n    targetPort: 8000\n"));
    s.apply(&svc("backend-np", "  type: NodePort\n  selector:\n    app: backend\n  ports:\n  - port: 8000\n    targetPort: 8000\n    nodePort: 30001\n"));
    s.apply(&svc("frontend", "  type: LoadBalancer\n  selector:\n    app: frontend\n  ports:\n  - port: 80\n    targetPort: 80\n"));
    s.apply(&svc("external-database", "  type: ExternalName\n  externalName: my-db.rds.amazonaws.com\n"));
    s.apply(&svc("postgres", "  clusterIP: None\n  selector:\n    app: postgres\n  ports:\n  - port: 5432\n"));

    let mut ips = BTreeSet::new();
    for name in ["backend", "backend-np", "frontend"] {
        let ip = jsonpath(&s, name, ".spec.clusterIP");
        let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
        assert!(octets[0] == 10 && (96..112).contains(&octets[1]), "{name}: {ip} outside 10.96.0.0/12");
        assert_eq!(jsonpath(&s, name, ".spec.clusterIPs[0]"), ip);
        assert!(ips.insert(ip), "duplicate ClusterIP");
    }
    assert_eq!(jsonpath(&s, "postgres", ".spec.clusterIP"), "None");
    assert_eq!(jsonpath(&s, "external-database", ".spec.clusterIP"), "");
    // LoadBalancer Services get NodePorts too (allocateLoadBalancerNodePorts defaults to true).
    let lb_port: u16 = jsonpath(&s, "frontend", ".spec.ports[0].nodePort").parse().unwrap();
    assert!((30000..=32767).contains(&lb_port));

    let table = s.ok(&["get", "svc"]);
    let row = |name: &str| table.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no row {name} in\n{table}")).to_string();
    assert!(row("backend-np").contains("8000:30001/TCP"), "{table}");
    assert!(row("frontend").contains("<pending>") && row("frontend").contains(&format!("80:{lb_port}/TCP")), "{table}");
    assert!(row("external-database").contains("my-db.rds.amazonaws.com"), "{table}");
    assert!(row("postgres").contains("None"), "{table}");
    assert!(row("kubernetes").contains("10.96.0.1") && row("kubernetes").contains("443/TCP"), "{table}");
}

#[test]
fn requested_cluster_ips_are_honoured_or_refused() {
    let s = Svcnet::start();
    s.apply(&svc("dns", "  clusterIP: 10.96.0.20\n  ports:\n  - port: 53\n    protocol: UDP\n"));
    assert_eq!(jsonpath(&s, "dns", ".spec.clusterIP"), "10.96.0.20");

    let e = stderr_of(&s, &svc("dns2", "  clusterIP: 10.96.0.20\n  ports:\n  - port: 53\n"));
    assert!(
        e.contains("The Service \"dns2\" is invalid: spec.clusterIPs: Invalid value: []string{\"10.96.0.20\"}: failed to allocate IP 10.96.0.20: provided IP is already allocated"),
        "{e}"
    );
    let e = stderr_of(&s, &svc("far", "  clusterIP: 192.168.0.10\n  ports:\n  - port: 53\n"));
    assert!(
        e.contains("spec.clusterIPs: Invalid value: []string{\"192.168.0.10\"}: failed to allocate IP 192.168.0.10: the provided IP (192.168.0.10) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{e}"
    );
    // The refused creates changed nothing.
    assert!(s.fails(&["get", "svc", "dns2"]).contains("NotFound"));

    // The address may not change once set (422), and comes back when an update leaves it out.
    let e = String::from_utf8_lossy(
        &s.kubectl(&["patch", "svc", "dns", "--type=merge", "-p", r#"{"spec":{"clusterIP":"10.96.0.21","clusterIPs":["10.96.0.21"]}}"#]).stderr,
    )
    .to_string();
    assert!(e.contains("spec.clusterIPs[0]: Invalid value: \"10.96.0.21\": may not change once set"), "{e}");
    let mut obj: serde_json::Value = serde_json::from_str(&s.ok(&["get", "svc", "dns", "-o", "json"])).unwrap();
    obj["spec"].as_object_mut().unwrap().remove("clusterIP");
    obj["spec"].as_object_mut().unwrap().remove("clusterIPs");
    s.kubectl_with_stdin(&["replace", "-f", "-"], Some(&obj.to_string()));
    assert_eq!(jsonpath(&s, "dns", ".spec.clusterIP"), "10.96.0.20");

    // Deleting the Service frees its address at once.
    s.ok(&["delete", "svc", "dns"]);
    s.apply(&svc("dns2", "  clusterIP: 10.96.0.20\n  ports:\n  - port: 53\n"));
    assert_eq!(jsonpath(&s, "dns2", ".spec.clusterIP"), "10.96.0.20");
}

#[test]
fn node_ports_collide_release_and_follow_type_changes() {
    let s = Svcnet::start();
    let np = |name: &str, port: u32| svc(name, &format!("  type: NodePort\n  ports:\n  - port: 80\n    nodePort: {port}\n"));
    s.apply(&np("a", 30001));
    let e = stderr_of(&s, &np("b", 30001));
    assert!(e.contains("The Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"), "{e}");
    let e = stderr_of(&s, &np("c", 40000));
    assert!(
        e.contains("spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{e}"
    );
    // ClusterIP Services may not ask for one.
    let e = stderr_of(&s, &svc("d", "  ports:\n  - port: 80\n    nodePort: 30002\n"));
    assert!(e.contains("spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"), "{e}");

    // Released on delete.
    s.ok(&["delete", "svc", "a"]);
    s.apply(&np("b", 30001));

    // A type change to ClusterIP drops and releases the NodePort; back to NodePort allocates one.
    s.ok(&["patch", "svc", "b", "--type=merge", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    assert_eq!(jsonpath(&s, "b", ".spec.ports[0].nodePort"), "");
    s.apply(&np("e", 30001));
    s.ok(&["patch", "svc", "b", "--type=merge", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    let port: u16 = jsonpath(&s, "b", ".spec.ports[0].nodePort").parse().unwrap();
    assert!((30000..=32767).contains(&port) && port != 30001);

    // The same port number for TCP and UDP in one Service shares one NodePort.
    s.apply(&svc("dns", "  type: NodePort\n  ports:\n  - name: dns\n    port: 53\n    protocol: UDP\n  - name: dns-tcp\n    port: 53\n    protocol: TCP\n"));
    assert_eq!(jsonpath(&s, "dns", ".spec.ports[0].nodePort"), jsonpath(&s, "dns", ".spec.ports[1].nodePort"));
}

/// Creates `n` ClusterIP Services concurrently over HTTPS; returns (successes' IPs, failures' messages).
fn create_concurrently(s: &Svcnet, prefix: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (addr, token, ca) = (s.addr.clone(), s.token(), s.ca_path());
            let body = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("{prefix}-{i}")},
                "spec": {"ports": [{"port": 80}]}})
            .to_string();
            std::thread::spawn(move || {
                let out = std::process::Command::new("curl")
                    .args(["-sS", "--cacert"])
                    .arg(ca)
                    .args(["-H", &format!("Authorization: Bearer {token}"), "-H", "Content-Type: application/json", "-d", &body])
                    .arg(format!("https://{addr}/api/v1/namespaces/default/services"))
                    .output()
                    .unwrap();
                serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
            })
        })
        .collect();
    let mut ips = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        let v = h.join().unwrap();
        match v["kind"].as_str() {
            Some("Service") => ips.push(v["spec"]["clusterIP"].as_str().unwrap().to_string()),
            _ => errors.push(v["message"].as_str().unwrap_or_default().to_string()),
        }
    }
    (ips, errors)
}

#[test]
fn concurrent_creates_never_share_an_address_and_a_full_range_says_so() {
    // A /26 has 62 usable addresses; the kubernetes Service holds the first, kube-dns the tenth.
    let s = Svcnet::start_with(tempfile::tempdir().unwrap(), &["--service-cluster-ip-range", "10.200.0.0/26"]);
    wait_for_kube_dns(&s);
    let (ips, errors) = create_concurrently(&s, "c", 70);
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), ips.len(), "an address was handed out twice: {ips:?}");
    assert_eq!(ips.len(), 60, "every free address is used exactly once; errors: {errors:?}");
    assert!(!distinct.contains(&"10.200.0.1".to_string()));
    assert!(!distinct.contains(&"10.200.0.10".to_string()));
    assert_eq!(errors.len(), 10);
    assert!(errors.iter().all(|e| e == "Internal error occurred: failed to allocate a serviceIP: range is full"), "{errors:?}");
}

#[test]
fn restart_repairs_allocations_after_sigkill() {
    // A /27: 30 usable addresses, 28 after the kubernetes and kube-dns Services.
    let range = ["--service-cluster-ip-range", "10.201.0.0/27"];
    let s = Svcnet::start_with(tempfile::tempdir().unwrap(), &range);
    wait_for_kube_dns(&s);
    let (ips, _) = create_concurrently(&s, "before", 20);
    assert_eq!(ips.len(), 20);
    // Kill while creates are in flight, so some claims may exist without their Service.
    let inflight = {
        let (addr, token, ca) = (s.addr.clone(), s.token(), s.ca_path());
        std::thread::spawn(move || {
            for i in 0..40 {
                let body =
                    serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("during-{i}")}, "spec": {"ports": [{"port": 80}]}})
                        .to_string();
                let ok = std::process::Command::new("curl")
                    .args(["-sS", "-f", "--cacert"])
                    .arg(&ca)
                    .args(["-H", &format!("Authorization: Bearer {token}"), "-H", "Content-Type: application/json", "-d", &body])
                    .arg(format!("https://{addr}/api/v1/namespaces/default/services"))
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if !ok {
                    return;
                }
            }
        })
    };
    let dir = s.kill9();
    inflight.join().unwrap();

    let s = Svcnet::start_with(dir, &range);
    // Every stored Service's address is still claimed: asking for it again is refused.
    let listed: serde_json::Value = serde_json::from_str(&s.ok(&["get", "svc", "-o", "json"])).unwrap();
    let held: Vec<String> = listed["items"].as_array().unwrap().iter().map(|i| i["spec"]["clusterIP"].as_str().unwrap().to_string()).collect();
    let taken = &held[held.len() - 1];
    let e = stderr_of(&s, &svc("again", &format!("  clusterIP: {taken}\n  ports:\n  - port: 80\n")));
    assert!(e.contains("provided IP is already allocated"), "{e}");
    // Nothing leaked: with every Service of `default` but kubernetes deleted, the whole range
    // but kube-dns's address is free again.
    for item in listed["items"].as_array().unwrap() {
        let name = item["metadata"]["name"].as_str().unwrap();
        if name != "kubernetes" {
            s.ok(&["delete", "svc", name, "--wait=false"]);
        }
    }
    let (ips, errors) = create_concurrently(&s, "after", 28);
    assert_eq!(ips.len(), 28, "addresses leaked across the crash: {errors:?}");
}

#[test]
fn service_validation_rules_answer_422_as_upstream() {
    let s = Svcnet::start();
    let cases: &[(&str, &str, &str)] = &[
        ("two-unnamed", "  ports:\n  - port: 80\n  - port: 81\n", "spec.ports[0].name: Required value"),
        ("dup-names", "  ports:\n  - name: web\n    port: 80\n  - name: web\n    port: 81\n", "spec.ports[1].name: Duplicate value: \"web\""),
        ("dup-ports", "  ports:\n  - name: a\n    port: 80\n  - name: b\n    port: 80\n", "spec.ports[1]: Duplicate value"),
        ("bad-port", "  ports:\n  - port: 70000\n    targetPort: 80\n", "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"),
        (
            "bad-proto",
            "  ports:\n  - port: 80\n    protocol: ICMP\n",
            "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ),
        (
            "bad-type",
            "  type: Magic\n  ports:\n  - port: 80\n",
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        ),
        ("no-ports", "  selector:\n    app: x\n", "spec.ports: Required value"),
        ("ext-missing", "  type: ExternalName\n", "spec.externalName: Required value"),
        (
            "ext-bad",
            "  type: ExternalName\n  externalName: not_a_dns_name\n",
            "spec.externalName: Invalid value: \"not_a_dns_name\": a lowercase RFC 1123 subdomain",
        ),
        (
            "ext-with-ip",
            "  type: ExternalName\n  externalName: db.example.com\n  clusterIP: 10.96.0.50\n",
            "spec.clusterIP: Forbidden: may not be set for ExternalName services",
        ),
        ("bad-target", "  ports:\n  - port: 80\n    targetPort: Not_A_Name\n", "spec.ports[0].targetPort: Invalid value: \"Not_A_Name\""),
        ("bad-affinity", "  sessionAffinity: Sticky\n  ports:\n  - port: 80\n", "spec.sessionAffinity: Unsupported value: \"Sticky\""),
        (
            "etp-on-clusterip",
            "  externalTrafficPolicy: Local\n  ports:\n  - port: 80\n",
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        ),
        ("bad-selector", "  selector:\n    app: -x-\n  ports:\n  - port: 80\n", "spec.selector: Invalid value: \"-x-\""),
        ("9starts-with-digit", "  ports:\n  - port: 80\n", "metadata.name: Invalid value: \"9starts-with-digit\": a DNS-1035 label"),
    ];
    for (name, spec, want) in cases {
        let e = stderr_of(&s, &svc(name, spec));
        assert!(e.contains(&format!("The Service \"{name}\" is invalid")) && e.contains(want), "{name}: want {want:?} in\n{e}");
        assert!(s.fails(&["get", "svc", name]).contains("NotFound"), "{name}: a refused create must change nothing");
    }

    // Type changes as upstream allows them: ClusterIP -> NodePort -> LoadBalancer -> ExternalName
    // (which releases the address) -> ClusterIP (which allocates a new one).
    s.apply(&svc("morph", "  ports:\n  - port: 80\n"));
    s.ok(&["patch", "svc", "morph", "--type=merge", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    assert!(!jsonpath(&s, "morph", ".spec.ports[0].nodePort").is_empty());
    s.ok(&["patch", "svc", "morph", "--type=merge", "-p", r#"{"spec":{"type":"LoadBalancer"}}"#]);
    let ip = jsonpath(&s, "morph", ".spec.clusterIP");
    s.ok(&[
        "patch",
        "svc",
        "morph",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ExternalName","externalName":"db.example.com","clusterIP":null,"clusterIPs":null}}"#,
    ]);
    assert_eq!(jsonpath(&s, "morph", ".spec.clusterIP"), "");
    assert_eq!(jsonpath(&s, "morph", ".spec.ports[0].nodePort"), "");
    // The released address can be taken by another Service.
    s.apply(&svc("taker", &format!("  clusterIP: {ip}\n  ports:\n  - port: 80\n")));
    s.ok(&["patch", "svc", "morph", "--type=merge", "-p", r#"{"spec":{"type":"ClusterIP","externalName":null}}"#]);
    let new_ip = jsonpath(&s, "morph", ".spec.clusterIP");
    assert!(!new_ip.is_empty() && new_ip != ip);
}

/// `svcnet up` creates `kube-system/kube-dns` (at the tenth address) as it starts; tests that count
/// free addresses wait for it.
fn wait_for_kube_dns(s: &Svcnet) {
    common::wait_for("the kube-dns Service", std::time::Duration::from_secs(30), || {
        s.kubectl(&["get", "svc", "-n", "kube-system", "kube-dns"]).status.success().then_some(())
    });
}
