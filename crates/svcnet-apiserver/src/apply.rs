//! Field ownership (`metadata.managedFields`) and server-side apply
//! (`application/apply-patch+yaml`), as kube-apiserver's structured-merge-diff does them for our
//! kinds, driven by the served OpenAPI schemas (`x-kubernetes-list-type` and
//! `x-kubernetes-list-map-keys`).
//!
//! A field set is a set of paths; a path is a list of upstream's `FieldsV1` keys: `f:<field>`,
//! `k:<json of the list-map keys>` for an element of a list-map, `v:<json>` for an element of a
//! set, and `.` for "this element itself". Paths go down to leaves: scalars, atomic lists and
//! maps, and empty objects.
//!
//! - Every write records which manager (the `fieldManager` parameter, or a name derived from the
//!   request) set which fields: an update takes the fields it changed from their former owners.
//! - An apply sets the fields of the applied configuration, removes the fields the same manager
//!   applied before and no longer does (unless someone else owns them too), and fails with a 409
//!   listing the conflicts when it would change a field another manager owns, unless forced
//!   (then it takes the fields over).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::strategic::{At, Schemas};

/// A path into an object, in `FieldsV1` keys.
pub type Path = Vec<String>;
/// A set of paths.
pub type FieldSet = BTreeSet<Path>;

/// The schema root of one kind.
#[derive(Clone, Copy)]
pub struct KindSchema<'a> {
    pub schemas: Schemas<'a>,
    pub root: &'a str,
}

impl<'a> KindSchema<'a> {
    fn at(&self) -> At<'a> {
        At { schemas: self.schemas, schema: self.schemas.components.get(self.root) }
    }
}

/// The fields the server owns; never part of anyone's set.
fn excluded(path: &[String]) -> bool {
    match path {
        [first, ..] if first == "f:apiVersion" || first == "f:kind" || first == "f:status" => true,
        [m, f, ..] if m == "f:metadata" => matches!(
            f.as_str(),
            "f:name"
                | "f:namespace"
                | "f:uid"
                | "f:resourceVersion"
                | "f:generation"
                | "f:creationTimestamp"
                | "f:managedFields"
                | "f:deletionTimestamp"
                | "f:deletionGracePeriodSeconds"
                | "f:selfLink"
        ),
        _ => false,
    }
}

fn list_type(raw: Option<&Value>) -> (&str, Vec<String>) {
    let ty = raw.and_then(|r| r.get("x-kubernetes-list-type")).and_then(Value::as_str).unwrap_or("atomic");
    let keys = raw
        .and_then(|r| r.get("x-kubernetes-list-map-keys"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    (ty, keys)
}

fn is_atomic_map(raw: Option<&Value>, at: &At<'_>) -> bool {
    let atomic = |v: Option<&Value>| v.and_then(|r| r.get("x-kubernetes-map-type")).and_then(Value::as_str) == Some("atomic");
    atomic(raw) || atomic(at.schema)
}

/// The `k:` key of a list-map element: its key fields, as compact JSON in key order.
fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

/// Every leaf path of `value` (an object of the kind at `at`).
pub fn fields_of(value: &Value, schema: KindSchema<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    if let Some(obj) = value.as_object() {
        collect_object(obj, schema.at(), &mut prefix, &mut out);
    }
    out.retain(|p| !excluded(p));
    out
}

fn collect_object(obj: &Map<String, Value>, at: At<'_>, prefix: &mut Path, out: &mut FieldSet) {
    for (k, v) in obj {
        let (child, raw) = at.property(k);
        prefix.push(format!("f:{k}"));
        collect_value(v, child, raw, prefix, out);
        prefix.pop();
    }
}

fn collect_value(v: &Value, at: At<'_>, raw: Option<&Value>, prefix: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !is_atomic_map(raw, &at) => collect_object(m, at, prefix, out),
        Value::Array(items) => {
            let (ty, keys) = list_type(raw);
            let item_at = at.items(raw);
            match ty {
                "map" if !keys.is_empty() => {
                    for item in items {
                        prefix.push(item_key(item, &keys));
                        let mut dot = prefix.clone();
                        dot.push(".".into());
                        out.insert(dot);
                        if let Some(m) = item.as_object() {
                            collect_object(m, item_at, prefix, out);
                        }
                        prefix.pop();
                    }
                    if items.is_empty() {
                        out.insert(prefix.clone());
                    }
                }
                "set" => {
                    for item in items {
                        let mut p = prefix.clone();
                        p.push(format!("v:{item}"));
                        out.insert(p);
                    }
                    if items.is_empty() {
                        out.insert(prefix.clone());
                    }
                }
                _ => {
                    out.insert(prefix.clone());
                }
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at `path` in `obj`, if present.
fn value_at<'v>(obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = obj;
    for elem in path {
        if elem == "." {
            return Some(cur);
        }
        cur = if let Some(f) = elem.strip_prefix("f:") {
            cur.get(f)?
        } else if let Some(k) = elem.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array()?.iter().find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)))?
        } else if let Some(v) = elem.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur.as_array()?.iter().find(|i| **i == want)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Removes the value at `path` (a list element for a `.` path) from `obj`.
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else { return };
    if last == "." {
        // The element itself: remove it from its list.
        let Some((elem, list_path)) = parent_path.split_last() else { return };
        if let Some(Value::Array(list)) = value_at_mut(obj, list_path)
            && let Some(k) = elem.strip_prefix("k:")
            && let Ok(key) = serde_json::from_str::<Map<String, Value>>(k)
        {
            list.retain(|i| !key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
        }
        return;
    }
    match value_at_mut(obj, parent_path) {
        Some(Value::Object(m)) => {
            if let Some(f) = last.strip_prefix("f:") {
                m.remove(f);
            }
        }
        Some(Value::Array(list)) => {
            if let Some(v) = last.strip_prefix("v:").and_then(|v| serde_json::from_str::<Value>(v).ok()) {
                list.retain(|i| *i != v);
            }
        }
        _ => {}
    }
}

fn value_at_mut<'v>(obj: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    let mut cur = obj;
    for elem in path {
        cur = if let Some(f) = elem.strip_prefix("f:") {
            cur.get_mut(f)?
        } else if let Some(k) = elem.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array_mut()?.iter_mut().find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)))?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Merges an applied configuration into `current` the way structured merge does: objects field
/// by field, list-maps element by key, sets as unions, atomic values replaced.
fn merge(current: &mut Value, applied: &Value, at: At<'_>, raw: Option<&Value>) {
    match (current, applied) {
        (Value::Object(cur), Value::Object(app)) if !is_atomic_map(raw, &at) => {
            for (k, v) in app {
                let (child, child_raw) = at.property(k);
                match cur.get_mut(k) {
                    Some(existing) if !existing.is_null() => merge(existing, v, child, child_raw),
                    _ => {
                        cur.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(cur), Value::Array(app)) => {
            let (ty, keys) = list_type(raw);
            let item_at = at.items(raw);
            match ty {
                "map" if !keys.is_empty() => {
                    for item in app {
                        let id = item_key(item, &keys);
                        match cur.iter_mut().find(|i| item_key(i, &keys) == id) {
                            Some(existing) => merge(existing, item, item_at, raw.and_then(|r| r.get("items"))),
                            None => cur.push(item.clone()),
                        }
                    }
                }
                "set" => {
                    for item in app {
                        if !cur.contains(item) {
                            cur.push(item.clone());
                        }
                    }
                }
                _ => *cur = app.clone(),
            }
        }
        (cur, app) => *cur = app.clone(),
    }
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Managed {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    pub time: Option<String>,
    pub fields: FieldSet,
}

/// Decodes `metadata.managedFields`.
pub fn managed_of(obj: &Value) -> Vec<Managed> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut fields = FieldSet::new();
            if let Some(tree) = e.get("fieldsV1") {
                tree_to_set(tree, &mut Vec::new(), &mut fields);
            }
            Managed {
                manager: e["manager"].as_str().unwrap_or("").to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                subresource: e.get("subresource").and_then(Value::as_str).map(str::to_string),
                time: e.get("time").and_then(Value::as_str).map(str::to_string),
                fields,
            }
        })
        .collect()
}

fn tree_to_set(tree: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = tree.as_object() else { return };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, v) in m {
        prefix.push(k.clone());
        tree_to_set(v, prefix, out);
        prefix.pop();
    }
}

fn set_to_tree(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for elem in path {
            cur = cur.entry(elem.clone()).or_insert_with(|| json!({})).as_object_mut().expect("tree nodes are objects");
        }
    }
    Value::Object(root)
}

/// Encodes entries as `metadata.managedFields` (entries with no fields are dropped).
pub fn encode(entries: &[Managed]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": set_to_tree(&e.fields),
                });
                if let Some(t) = &e.time {
                    v["time"] = t.clone().into();
                }
                if let Some(s) = &e.subresource {
                    v["subresource"] = s.clone().into();
                }
                v
            })
            .collect(),
    )
}

/// Who made a write, for its `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub now: &'a str,
}

/// Records a non-apply write of `new` over `old` (`None` for a create) by `writer`: it owns what
/// it changed, others lose what it changed, and nobody owns what no longer exists.
pub fn track_update(old: Option<&Value>, new: &mut Value, schema: KindSchema<'_>, writer: &Writer<'_>) {
    let mut entries = old.map(managed_of).unwrap_or_default();
    let new_fields = fields_of(new, schema);
    let changed: FieldSet = match old {
        None => new_fields.clone(),
        // An element's `.` changes hands only when the element is new; a field when its value changes.
        Some(old) => new_fields
            .iter()
            .filter(|p| if p.last().is_some_and(|l| l == ".") { value_at(old, p).is_none() } else { value_at(old, p) != value_at(new, p) })
            .cloned()
            .collect(),
    };
    for e in &mut entries {
        e.fields.retain(|p| new_fields.contains(p));
        if !(e.manager == writer.manager && e.operation == "Update" && e.subresource.as_deref() == writer.subresource) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.manager == writer.manager && e.operation == "Update" && e.subresource.as_deref() == writer.subresource) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = Some(writer.now.to_string());
                e.api_version = writer.api_version.to_string();
            }
            None => entries.push(Managed {
                manager: writer.manager.to_string(),
                operation: "Update".into(),
                api_version: writer.api_version.to_string(),
                subresource: writer.subresource.map(str::to_string),
                time: Some(writer.now.to_string()),
                fields: changed,
            }),
        }
    }
    new["metadata"]["managedFields"] = encode(&entries);
}

/// A field another manager owns and the apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub path: Path,
}

/// Renders a path as upstream does in conflict messages: `.spec.ports[port=80,protocol="TCP"].targetPort`.
pub fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for elem in path {
        if let Some(f) = elem.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = elem.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(kk, kv)| format!("{kk}={kv}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = elem.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// Applies `applied` (the manager's whole intent) over `current` (`None` when it does not exist):
/// the merged object with its `managedFields`, or the conflicts.
pub fn apply(current: Option<&Value>, applied: &Value, schema: KindSchema<'_>, writer: &Writer<'_>, force: bool) -> Result<Value, Vec<Conflict>> {
    let mut entries = current.map(managed_of).unwrap_or_default();
    let applied_fields = fields_of(applied, schema);
    let base = current.cloned().unwrap_or_else(|| json!({}));

    // Conflicts: fields others own whose value the apply would change.
    let mut conflicts = Vec::new();
    for e in &entries {
        if e.manager == writer.manager && e.operation == "Apply" {
            continue;
        }
        for p in applied_fields.intersection(&e.fields) {
            if p.last().is_some_and(|l| l == ".") {
                continue;
            }
            if value_at(&base, p) != value_at(applied, p) {
                conflicts.push(Conflict { manager: e.manager.clone(), path: p.clone() });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for c in &conflicts {
        for e in entries.iter_mut().filter(|e| e.manager == c.manager && !(e.manager == writer.manager && e.operation == "Apply")) {
            e.fields.remove(&c.path);
        }
    }

    let mut merged = base;
    merge(&mut merged, applied, schema.at(), None);

    // What this manager applied before and no longer does goes, unless someone else holds it.
    let previous: FieldSet = entries.iter().find(|e| e.manager == writer.manager && e.operation == "Apply").map(|e| e.fields.clone()).unwrap_or_default();
    let others: FieldSet = entries.iter().filter(|e| !(e.manager == writer.manager && e.operation == "Apply")).flat_map(|e| e.fields.iter().cloned()).collect();
    // Deepest first, so that an element goes after its fields.
    let mut dropped: Vec<&Path> = previous.difference(&applied_fields).filter(|p| !others.contains(*p)).collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut merged, p);
    }

    let entry = Managed {
        manager: writer.manager.to_string(),
        operation: "Apply".into(),
        api_version: writer.api_version.to_string(),
        subresource: writer.subresource.map(str::to_string),
        time: Some(writer.now.to_string()),
        fields: applied_fields,
    };
    match entries.iter_mut().find(|e| e.manager == writer.manager && e.operation == "Apply") {
        Some(e) => *e = entry,
        None => entries.push(entry),
    }
    let still: FieldSet = fields_of(&merged, schema);
    for e in &mut entries {
        e.fields.retain(|p| still.contains(p));
    }
    merged["metadata"]["managedFields"] = encode(&entries);
    Ok(merged)
}

/// The 409 message kube-apiserver gives for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry(&c.manager).or_default().push(render_path(&c.path));
    }
    let n = conflicts.len();
    let mut s = format!("Apply failed with {n} conflict{}: ", if n == 1 { "" } else { "s" });
    let parts: Vec<String> = by_manager.iter().flat_map(|(m, paths)| paths.iter().map(move |p| format!("conflict with \"{m}\": {p}"))).collect();
    s.push_str(&parts.join("\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_schema<T>(f: impl FnOnce(KindSchema<'_>) -> T) -> T {
        let (schemas, root) = crate::openapi::kind_schema("", "v1", "Service").unwrap();
        f(KindSchema { schemas: Schemas { components: schemas }, root })
    }

    fn writer(manager: &str) -> Writer<'_> {
        Writer { manager, api_version: "v1", subresource: None, now: "2026-01-01T00:00:00Z" }
    }

    #[test]
    fn field_sets_follow_list_map_keys() {
        with_schema(|schema| {
            let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "labels": {"app": "x"}},
                "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}});
            let fields: Vec<String> = fields_of(&svc, schema).iter().map(|p| p.join("/")).collect();
            assert_eq!(
                fields,
                [
                    "f:metadata/f:labels/f:app",
                    "f:spec/f:ports/k:{\"port\":80,\"protocol\":\"TCP\"}/.",
                    "f:spec/f:ports/k:{\"port\":80,\"protocol\":\"TCP\"}/f:port",
                    "f:spec/f:ports/k:{\"port\":80,\"protocol\":\"TCP\"}/f:protocol",
                    "f:spec/f:ports/k:{\"port\":80,\"protocol\":\"TCP\"}/f:targetPort",
                    "f:spec/f:selector",
                ]
            );
        });
    }

    #[test]
    fn apply_conflicts_force_and_prune() {
        with_schema(|schema| {
            let alice = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}});
            let obj = apply(None, &alice, schema, &writer("alice"), false).unwrap();
            // Bob changes alice's selector: a conflict, unless forced.
            let bob = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"selector": {"app": "y"}}});
            let conflicts = apply(Some(&obj), &bob, schema, &writer("bob"), false).unwrap_err();
            assert_eq!(conflict_message(&conflicts), "Apply failed with 1 conflict: conflict with \"alice\": .spec.selector");
            let obj = apply(Some(&obj), &bob, schema, &writer("bob"), true).unwrap();
            assert_eq!(obj["spec"]["selector"], json!({"app": "y"}));
            // Alice drops port 81 and the selector (now bob's): the port goes, the selector stays.
            let alice2 = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
            let obj = apply(Some(&obj), &alice2, schema, &writer("alice"), false).unwrap();
            assert_eq!(obj["spec"]["ports"], json!([{"port": 80, "protocol": "TCP"}]));
            assert_eq!(obj["spec"]["selector"], json!({"app": "y"}));
            let managers: Vec<(String, String)> = managed_of(&obj).into_iter().map(|m| (m.manager, m.operation)).collect();
            assert_eq!(managers, [("alice".to_string(), "Apply".to_string()), ("bob".to_string(), "Apply".to_string())]);
        });
    }

    #[test]
    fn updates_take_what_they_change() {
        with_schema(|schema| {
            let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "protocol": "TCP"}]}});
            let obj = apply(None, &applied, schema, &writer("alice"), false).unwrap();
            let mut edited = obj.clone();
            edited["spec"]["selector"] = json!({"app": "z"});
            track_update(Some(&obj), &mut edited, schema, &writer("kubectl-edit"));
            let m = managed_of(&edited);
            let edit = m.iter().find(|e| e.manager == "kubectl-edit").unwrap();
            assert_eq!(edit.fields.iter().map(|p| p.join("/")).collect::<Vec<_>>(), ["f:spec/f:selector"]);
            // Alice re-applying her selector now conflicts with the editor.
            let err = apply(Some(&edited), &applied, schema, &writer("alice"), false).unwrap_err();
            assert_eq!(err[0].manager, "kubectl-edit");
        });
    }
}
