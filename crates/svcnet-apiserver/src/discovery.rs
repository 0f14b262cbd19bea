//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/<group>`, the per-version resource
//! lists and aggregated discovery, all derived from the resource table.

use serde_json::{Value, json};
use svcnet_api::resources::{self, RESOURCES, ResourceInfo};

/// The Kubernetes version we answer to; the installed kubectl dispatcher picks its own
/// version from `minor`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0+svcnet-", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn sub_kind(info: &ResourceInfo, sub: &str) -> (&'static str, &'static str, &'static str, Vec<&'static str>) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale", vec!["get", "patch", "update"]),
        "binding" => ("", "v1", "Binding", vec!["create"]),
        "finalize" => (info.group, info.version, info.kind, vec!["update"]),
        _ => (info.group, info.version, info.kind, vec!["get", "patch", "update"]),
    }
}

/// The pod subresources served by the pod's node through the API server (`node_proxy`): not
/// stored resources, but listed in discovery as kube-apiserver lists them.
fn node_subresources(info: &ResourceInfo) -> &'static [(&'static str, &'static str, &'static [&'static str])] {
    if info.group.is_empty() && info.kind == "Pod" {
        &[
            ("attach", "PodAttachOptions", &["create", "get"]),
            ("exec", "PodExecOptions", &["create", "get"]),
            ("log", "Pod", &["get"]),
            ("portforward", "PodPortForwardOptions", &["create", "get"]),
        ]
    } else {
        &[]
    }
}

fn in_version(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    let (g, v) = (group.to_string(), version.to_string());
    RESOURCES.iter().filter(move |r| r.group == g && r.version == v)
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_entry(group: &str) -> Value {
    let version = RESOURCES.iter().find(|r| r.group == group).map(|r| r.version).unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = resources::groups().into_iter().filter(|g| !g.is_empty()).map(group_entry).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn group(name: &str) -> Option<Value> {
    if name.is_empty() || !RESOURCES.iter().any(|r| r.group == name) {
        return None;
    }
    let mut g = group_entry(name);
    g["kind"] = "APIGroup".into();
    g["apiVersion"] = "v1".into();
    Some(g)
}

/// `/api/v1`, `/apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in in_version(group, version) {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for sub in r.subresources {
            let (g, v, kind, verbs) = sub_kind(r, sub);
            let mut e = json!({"name": format!("{}/{}", r.plural, sub), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if (g, v) != (r.group, r.version) {
                e["group"] = g.into();
                e["version"] = v.into();
            }
            resources.push(e);
        }
        for (sub, kind, verbs) in node_subresources(r) {
            resources.push(json!({"name": format!("{}/{}", r.plural, sub), "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs}));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// Aggregated discovery (`apidiscovery.k8s.io/<api_version>` `APIGroupDiscoveryList`) for the
/// core group (`core = true`, `/api`) or the named groups (`/apis`).
pub fn aggregated(core: bool, api_version: &str) -> Value {
    let mut items = Vec::new();
    for group in resources::groups().into_iter().filter(|g| g.is_empty() == core) {
        let version = RESOURCES.iter().find(|r| r.group == group).map(|r| r.version).unwrap_or("v1");
        let resources: Vec<Value> = in_version(group, version)
            .map(|r| {
                let subs: Vec<Value> =
                    r.subresources
                        .iter()
                        .map(|s| {
                            let (g, v, kind, verbs) = sub_kind(r, s);
                            json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
                        })
                        .chain(node_subresources(r).iter().map(
                            |(sub, kind, verbs)| json!({"subresource": sub, "responseKind": {"group": "", "version": "v1", "kind": kind}, "verbs": verbs}),
                        ))
                        .collect();
                let mut e = json!({
                    "resource": r.plural,
                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": VERBS,
                });
                if !r.short_names.is_empty() {
                    e["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    e["categories"] = json!(r.categories);
                }
                if !subs.is_empty() {
                    e["subresources"] = json!(subs);
                }
                e
            })
            .collect();
        let mut metadata = json!({"creationTimestamp": null});
        if !group.is_empty() {
            metadata["name"] = group.into();
        }
        items.push(json!({
            "metadata": metadata,
            "versions": [{"version": version, "resources": resources, "freshness": "Current"}]
        }));
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{api_version}"),
        "metadata": {},
        "items": items
    })
}
