//! The API server driven by the real kubectl, as a user would: the seed's manifests, the read
//! paths, errors as kubectl prints them, selectors, paging, watch, namespaces, auth.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::seed::{SEED_BACKEND, SEED_EXTERNAL, SEED_FRONTEND, SEED_HEADLESS, SEED_NODEPORT};
use common::{Svcnet, wait_for};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn seed_services_through_their_lifecycle() {
    let s = Svcnet::start();
    for m in [SEED_BACKEND, SEED_NODEPORT, SEED_FRONTEND, SEED_EXTERNAL, SEED_HEADLESS] {
        let out = s.apply(m);
        assert!(out.contains("created"), "{out}");
    }
    let table = s.ok(&["get", "svc"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], "{table}");
    let row = |name: &str| table.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name} missing:\n{table}")).to_string();
    assert!(row("backend").contains("ClusterIP"), "{table}");
    assert!(row("backend").contains("8000/TCP"), "{table}");
    assert!(row("backend-nodeport").contains("8000:30001/TCP"), "{table}");
    assert!(row("frontend").contains("<pending>"), "{table}");
    assert!(row("external-database").contains("my-db.rds.amazonaws.com"), "{table}");
    assert!(row("postgres").contains("None"), "{table}");

    let wide = s.ok(&["get", "svc", "backend", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("SELECTOR") && wide.contains("app=backend"), "{wide}");

    let yaml = s.ok(&["get", "svc", "backend", "-o", "yaml"]);
    for want in ["kind: Service", "name: backend", "namespace: default", "port: 8000", "app: backend", "uid:", "resourceVersion:", "creationTimestamp:"] {
        assert!(yaml.contains(want), "missing {want:?} in\n{yaml}");
    }
    // Defaults as kube-apiserver applies them.
    for want in ["protocol: TCP", "sessionAffinity: None", "type: ClusterIP", "targetPort: 8000"] {
        assert!(yaml.contains(want), "missing default {want:?} in\n{yaml}");
    }

    let json: serde_json::Value = serde_json::from_str(&s.ok(&["get", "svc", "backend", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["ports"][0]["port"], 8000);
    assert_eq!(s.ok(&["get", "svc", "-o", "name"]).lines().filter(|l| l.starts_with("service/")).count(), 6, "the five seed Services and kubernetes");
    assert_eq!(s.ok(&["get", "svc", "backend", "-o", "jsonpath={.spec.selector.app}"]), "backend");

    let describe = s.ok(&["describe", "svc", "backend"]);
    for want in ["Name:", "backend", "Namespace:", "default", "Selector:", "app=backend", "Type:", "ClusterIP", "Port:", "8000/TCP"] {
        assert!(describe.contains(want), "missing {want:?} in\n{describe}");
    }

    // Applying the same file again changes nothing.
    assert!(s.apply(SEED_BACKEND).contains("unchanged"));

    assert!(s.ok(&["delete", "svc", "backend"]).contains("service \"backend\" deleted"));
    let err = s.fails(&["get", "svc", "backend"]);
    assert!(err.contains("Error from server (NotFound): services \"backend\" not found"), "{err}");
}

#[test]
fn errors_read_as_against_a_real_cluster() {
    let s = Svcnet::start();
    s.apply(SEED_BACKEND);
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(SEED_BACKEND));
    assert!(stderr(&out).contains("Error from server (AlreadyExists): error when creating \"STDIN\": services \"backend\" already exists"), "{}", stderr(&out));

    let bad = "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  ports:\n  - port: 0\n";
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(bad));
    let e = stderr(&out);
    // targetPort defaults to port, so kube-apiserver reports both, as a list.
    assert!(e.contains("The Service \"bad\" is invalid: \n* spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive\n* spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive"), "{e}");
    assert!(s.fails(&["get", "svc", "bad"]).contains("NotFound"), "an invalid create must change nothing");

    let bad_name = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n";
    let e = stderr(&s.kubectl_with_stdin(&["create", "-f", "-"], Some(bad_name)));
    assert!(e.contains("is invalid: metadata.name: Invalid value: \"Bad_Name\""), "{e}");

    let unknown = "apiVersion: v1\nkind: Service\nmetadata:\n  name: typo\nspec:\n  prots:\n  - port: 80\n  ports:\n  - port: 80\n";
    let e = stderr(&s.kubectl_with_stdin(&["create", "-f", "-"], Some(unknown)));
    assert!(e.contains("Service in version \"v1\" cannot be handled as a Service: strict decoding error: unknown field \"spec.prots\""), "{e}");
    // The same through `kubectl apply` (client-side, strict validation by the server).
    let e = stderr(&s.kubectl_with_stdin(&["apply", "-f", "-"], Some(unknown)));
    assert!(
        e.contains(
            "error when creating \"STDIN\": Service in version \"v1\" cannot be handled as a Service: strict decoding error: unknown field \"spec.prots\""
        ),
        "{e}"
    );

    let e = s.fails(&["get", "svc", "-n", "nope-ns", "x"]);
    assert!(e.contains("NotFound"), "{e}");
    let e = stderr(&s.kubectl_with_stdin(&["create", "-n", "nope-ns", "-f", "-"], Some(SEED_BACKEND)));
    assert!(e.contains("namespaces \"nope-ns\" not found"), "{e}");

    // Optimistic concurrency: a replace with a stale resourceVersion is a conflict.
    let mut obj: serde_json::Value = serde_json::from_str(&s.ok(&["get", "svc", "backend", "-o", "json"])).unwrap();
    s.ok(&["label", "svc", "backend", "tier=api"]);
    obj["metadata"]["labels"] = serde_json::json!({"changed": "yes"});
    let e = stderr(&s.kubectl_with_stdin(&["replace", "-f", "-"], Some(&obj.to_string())));
    assert!(
        e.contains(
            "Operation cannot be fulfilled on services \"backend\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        "{e}"
    );

    // Raw HTTP: 401 without a token, 400 for a body that is not JSON, 405, 415.
    let (code, body) = s.curl("GET", "/api/v1/namespaces/default/services", false, &[]);
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("backend"), "a 401 leaks nothing: {body}");
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", true, &["-H", "Content-Type: application/json", "-d", "{not json"]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"reason\":\"BadRequest\""), "{body}");
    let (code, _) = s.curl("PUT", "/api/v1/namespaces/default/services", true, &["-d", "{}"]);
    assert_eq!(code, 405);
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", true, &["-H", "Content-Type: text/plain", "-d", "x"]);
    assert_eq!(code, 415, "{body}");
    let (code, body) = s.curl("GET", "/api/v1/namespaces/default/services/missing", true, &[]);
    assert_eq!(code, 404);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["details"]["kind"], "services");
}

#[test]
fn selectors_paging_and_all_namespaces() {
    let s = Svcnet::start();
    s.namespace("sel-a");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "web" } else { "db" };
        let cm = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: sel-a\n  labels:\n    tier: {tier}\n    idx: \"{i}\"\n");
        s.kubectl_with_stdin(&["create", "-f", "-"], Some(&cm));
    }
    s.ok(&["label", "configmap", "-n", "sel-a", "cm-3", "special=yes"]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = s.ok(args).lines().map(|l| l.trim_start_matches("configmap/").to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "-l", "tier=web", "-o", "name"]), ["cm-0", "cm-2", "cm-4", "cm-6"]);
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "-l", "tier!=web", "-o", "name"]).len(), 3);
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "-l", "idx in (1,2)", "-o", "name"]), ["cm-1", "cm-2"]);
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "-l", "idx notin (1,2),tier", "-o", "name"]).len(), 5);
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "-l", "special", "-o", "name"]), ["cm-3"]);
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "-l", "!special,tier==db", "-o", "name"]), ["cm-1", "cm-5"]);
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "--field-selector", "metadata.name=cm-4", "-o", "name"]), ["cm-4"]);
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "--field-selector", "metadata.name!=cm-4", "-o", "name"]).len(), 6);
    // Paging: kubectl follows `continue` and prints everything.
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "--chunk-size=2", "-o", "name"]).len(), 7);
    assert_eq!(names(&["get", "cm", "-n", "sel-a", "--chunk-size=3", "-l", "tier=web", "-o", "name"]).len(), 4);
    let e = s.fails(&["get", "cm", "-n", "sel-a", "-l", "tier in (web"]);
    assert!(e.contains("BadRequest") || e.contains("unable to parse"), "{e}");
    let e = s.fails(&["get", "cm", "-n", "sel-a", "--field-selector", "data.x=y"]);
    assert!(e.contains("BadRequest"), "{e}");

    let all = s.ok(&["get", "cm", "-A"]);
    assert!(all.lines().next().unwrap().starts_with("NAMESPACE"), "{all}");
    assert_eq!(all.lines().filter(|l| l.starts_with("sel-a ")).count(), 7, "{all}");

    // Raw paging: limit, continue, one resourceVersion for all pages.
    let (code, body) = s.curl("GET", "/api/v1/namespaces/sel-a/configmaps?limit=3", true, &[]);
    assert_eq!(code, 200);
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let cont = page["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, body) = s.curl("GET", &format!("/api/v1/namespaces/sel-a/configmaps?limit=10&continue={cont}"), true, &[]);
    let page2: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page2["items"].as_array().unwrap().len(), 4);
    assert!(page2["metadata"].get("continue").is_none());
    assert_eq!(page2["metadata"]["resourceVersion"], page["metadata"]["resourceVersion"]);
}

#[test]
fn built_in_namespaces_and_namespace_deletion() {
    let s = Svcnet::start();
    let ns = s.ok(&["get", "ns", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
    let labels = s.ok(&["get", "ns", "kube-system", "-o", "jsonpath={.metadata.labels}"]);
    assert!(labels.contains("kubernetes.io/metadata.name"), "{labels}");
    s.namespace("doomed");
    s.kubectl_with_stdin(&["apply", "-n", "doomed", "-f", "-"], Some(SEED_BACKEND));
    s.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: doomed\ndata:\n  a: b\n");
    // kubectl waits until the namespace is gone.
    assert!(s.ok(&["delete", "namespace", "doomed"]).contains("namespace \"doomed\" deleted"));
    assert!(s.fails(&["get", "ns", "doomed"]).contains("NotFound"));
    // Its contents went with it: a namespace of the same name starts empty.
    s.namespace("doomed");
    assert!(s.kubectl(&["get", "svc,cm", "-n", "doomed", "-o", "name"]).stdout.is_empty());
    let e = s.fails(&["delete", "namespace", "default"]);
    assert!(e.contains("Forbidden"), "{e}");
}

#[test]
fn kubectl_get_watch_streams_changes() {
    let s = Svcnet::start();
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", &s.kubeconfig)
        .args(["--cache-dir", s.dir.path().join("watch-cache").to_str().unwrap(), "get", "pods", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: watched\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n";
    let mut seen = Vec::new();
    // Create until the watch reports it (the watch may not be established yet on the first try).
    wait_for("ADDED event for pod watched", Duration::from_secs(60), || {
        if s.kubectl(&["get", "pod", "watched"]).status.success() {
            s.ok(&["label", "pod", "watched", &format!("n={}", seen.len())]);
        } else {
            s.kubectl_with_stdin(&["create", "-f", "-"], Some(pod));
        }
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
        seen.iter().any(|l| l.contains("watched") && (l.contains("ADDED") || l.contains("MODIFIED"))).then_some(())
    });
    s.ok(&["delete", "pod", "watched"]);
    wait_for("DELETED event", Duration::from_secs(30), || {
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
        seen.iter().any(|l| l.starts_with("DELETED") && l.contains("watched")).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn every_installed_kubectl_reads() {
    let s = Svcnet::start();
    s.apply(SEED_BACKEND);
    let mut tried = 0;
    for minor in 27..=33 {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}");
        if !std::path::Path::new(&bin).exists() {
            continue;
        }
        tried += 1;
        let cache = s.dir.path().join(format!("cache-{minor}"));
        for args in
            [&["get", "svc", "backend"][..], &["get", "svc", "-A", "-o", "wide"], &["get", "ns"], &["get", "svc", "backend", "-o", "yaml"], &["api-resources"]]
        {
            let out = Command::new(&bin).env("KUBECONFIG", &s.kubeconfig).arg("--cache-dir").arg(&cache).args(args).output().unwrap();
            assert!(out.status.success(), "kubectl 1.{minor} {args:?}: {}", stderr(&out));
            let text = String::from_utf8_lossy(&out.stdout);
            if args[0] == "api-resources" {
                for want in ["services", "svc", "endpointslices", "discovery.k8s.io/v1", "networkpolicies", "netpol", "deployments"] {
                    assert!(text.contains(want), "kubectl 1.{minor} api-resources lacks {want}:\n{text}");
                }
            } else if args.len() == 3 && args[1] == "svc" {
                assert!(text.contains("CLUSTER-IP") && text.contains("backend"), "kubectl 1.{minor}: {text}");
            }
        }
    }
    assert!(tried > 0, "no versioned kubectl found");
}

#[test]
fn health_version_and_metrics() {
    let s = Svcnet::start();
    for p in ["/healthz", "/livez", "/readyz"] {
        let (code, body) = s.curl("GET", p, false, &[]);
        assert_eq!((code, body.as_str()), (200, "ok"), "{p}");
    }
    let version = s.ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(v["serverVersion"]["minor"], "32");
    s.apply(SEED_BACKEND);
    s.ok(&["get", "svc"]);
    let (code, body) = s.curl("GET", "/metrics", true, &[]);
    assert_eq!(code, 200);
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("apiserver_request_total{") && l.contains("verb=\"LIST\"") && l.contains("resource=\"services\"") && l.contains("scope=\"namespace\"")
        })
        .unwrap_or_else(|| panic!("no LIST services counter in\n{body}"));
    for label in ["group=\"\"", "version=\"v1\"", "scope=\"namespace\"", "component=\"apiserver\"", "code=\"200\""] {
        assert!(line.contains(label), "{line}");
    }
    assert!(body.contains("apiserver_request_duration_seconds_bucket{"), "no duration histogram");
    let (code, _) = s.curl("GET", "/metrics", false, &[]);
    assert_eq!(code, 401);
}

#[test]
fn sigterm_shuts_down_cleanly_and_data_survives() {
    let s = Svcnet::start();
    s.apply(SEED_BACKEND);
    let uid = s.ok(&["get", "svc", "backend", "-o", "jsonpath={.metadata.uid}"]);
    let (status, dir) = s.terminate();
    assert!(status.success(), "svcnet up exit status after SIGTERM: {status:?}");
    let s = Svcnet::start_in(dir);
    assert_eq!(s.ok(&["get", "svc", "backend", "-o", "jsonpath={.metadata.uid}"]), uid);
}

/// Discovery lists the pod subresources the nodes serve (log, exec, attach, portforward), as
/// kube-apiserver does, in both the legacy and the aggregated form.
#[test]
fn discovery_lists_the_node_served_pod_subresources() {
    let sv = Svcnet::start();
    let (code, body) = sv.curl("GET", "/api/v1", true, &[]);
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let find = |name: &str| list["resources"].as_array().unwrap().iter().find(|r| r["name"] == name).cloned();
    assert_eq!(find("pods/log").unwrap()["kind"], "Pod");
    assert_eq!(find("pods/exec").unwrap()["kind"], "PodExecOptions");
    assert_eq!(find("pods/portforward").unwrap()["verbs"], serde_json::json!(["create", "get"]));
    assert!(find("pods/attach").is_some());
    let (code, body) = sv.curl("GET", "/api", true, &["-H", "Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"]);
    assert_eq!(code, 200, "{body}");
    let agg: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pods = agg["items"][0]["versions"][0]["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "pods").cloned().unwrap();
    let subs: Vec<&str> = pods["subresources"].as_array().unwrap().iter().map(|s| s["subresource"].as_str().unwrap()).collect();
    for s in ["status", "binding", "attach", "exec", "log", "portforward"] {
        assert!(subs.contains(&s), "{s} in {subs:?}");
    }
}
