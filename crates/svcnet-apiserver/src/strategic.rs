//! Strategic merge patch (`application/strategic-merge-patch+json`), as apimachinery's
//! `strategicpatch` applies it, driven by the served OpenAPI schemas: a list field whose schema
//! says `x-kubernetes-patch-strategy: merge` is merged element by element on its
//! `x-kubernetes-patch-merge-key` (or as a set, for lists of scalars); every other list is
//! replaced. The directives client-side `kubectl apply` and `kubectl patch` send are honoured:
//! `$patch: replace|delete|merge` on maps and list elements, `$retainKeys`,
//! `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>`.

use serde_json::{Map, Value};

/// Where a value's schema is looked up: the component schemas of one OpenAPI v3 document.
#[derive(Clone, Copy)]
pub struct Schemas<'a> {
    pub components: &'a Map<String, Value>,
}

/// A position in the schema: a schema object (after resolving references), if known.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub(crate) schemas: Schemas<'a>,
    pub(crate) schema: Option<&'a Value>,
}

impl<'a> At<'a> {
    pub(crate) fn resolve(schemas: Schemas<'a>, schema: Option<&'a Value>) -> At<'a> {
        let mut s = schema;
        // `$ref` directly, or `allOf: [{$ref}]` (a reference with its own description).
        for _ in 0..4 {
            let Some(v) = s else { break };
            let reference = v.get("$ref").or_else(|| v.get("allOf").and_then(|a| a.get(0)).and_then(|r| r.get("$ref")));
            match reference.and_then(Value::as_str) {
                Some(r) => s = r.rsplit('/').next().and_then(|name| schemas.components.get(name)),
                None => break,
            }
        }
        At { schemas, schema: s }
    }

    /// The schema of property `name` of this object (or of its map values).
    pub(crate) fn property(&self, name: &str) -> (At<'a>, Option<&'a Value>) {
        let raw = self.schema.and_then(|s| s.get("properties").and_then(|p| p.get(name)).or_else(|| s.get("additionalProperties").filter(|a| a.is_object())));
        (At::resolve(self.schemas, raw), raw)
    }

    /// The schema of this list's items.
    pub(crate) fn items(&self, raw: Option<&'a Value>) -> At<'a> {
        At::resolve(self.schemas, raw.and_then(|r| r.get("items")))
    }
}

/// How a list field merges.
fn list_strategy(raw: Option<&Value>) -> (bool, Option<&str>) {
    let strategy = raw.and_then(|r| r.get("x-kubernetes-patch-strategy")).and_then(Value::as_str).unwrap_or("");
    let merge = strategy.split(',').any(|s| s == "merge");
    let key = raw.and_then(|r| r.get("x-kubernetes-patch-merge-key")).and_then(Value::as_str);
    (merge, key)
}

/// An invalid patch (the API server answers 400 or 422, as upstream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// Applies `patch` to `original`, an object whose root schema is `root` in `schemas`.
pub fn apply(original: &Value, patch: &Value, schemas: Schemas<'_>, root: &str) -> Result<Value, PatchError> {
    let at = At { schemas, schema: schemas.components.get(root) };
    let Some(patch) = patch.as_object() else { return Err(PatchError("the patch is not a JSON object".into())) };
    let original = original.as_object().cloned().unwrap_or_default();
    Ok(merge_map(original, patch, at)?.map(Value::Object).unwrap_or(Value::Object(Map::new())))
}

/// Merges `patch` into `original`; `None` when the patch deletes the map (`$patch: delete`).
fn merge_map(mut original: Map<String, Value>, patch: &Map<String, Value>, at: At<'_>) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            strip_directives_map(&mut out);
            return Ok(Some(out));
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError(format!("Unknown patch type: {other} in map: {}", Value::Object(patch.clone())))),
    }
    let retain: Option<Vec<String>> = match patch.get("$retainKeys") {
        None => None,
        Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).map(str::to_string).collect()),
        Some(other) => return Err(PatchError(format!("$retainKeys must be a list of strings, got {other}"))),
    };

    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<&Value> = value.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !remove.contains(&v));
            }
            continue;
        }
        if key.starts_with("$setElementOrder/") {
            continue; // applied after the field itself is merged
        }
        if key.starts_with('$') {
            return Err(PatchError(format!("unknown patch directive {key:?}")));
        }
        let (child, raw) = at.property(key);
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(p) => {
                let base = match original.remove(key) {
                    Some(Value::Object(o)) => o,
                    _ => Map::new(),
                };
                if let Some(merged) = merge_map(base, p, child)? {
                    original.insert(key.clone(), Value::Object(merged));
                }
            }
            Value::Array(p) => {
                let base = match original.remove(key) {
                    Some(Value::Array(o)) => o,
                    _ => Vec::new(),
                };
                let merged = merge_list(base, p, raw, &at.items(raw))?;
                original.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.clone(), scalar.clone());
            }
        }
    }

    // `$setElementOrder/<field>`: the order the client wants the merged list in.
    for (key, order) in patch {
        let Some(field) = key.strip_prefix("$setElementOrder/") else { continue };
        let Some(order) = order.as_array() else { continue };
        let (_, raw) = at.property(field);
        let (_, merge_key) = list_strategy(raw);
        if let Some(Value::Array(list)) = original.get_mut(field) {
            reorder(list, order, merge_key);
        }
    }

    if let Some(retain) = retain {
        original.retain(|k, _| retain.iter().any(|r| r == k));
    }
    Ok(Some(original))
}

fn merge_list(original: Vec<Value>, patch: &[Value], raw: Option<&Value>, items: &At<'_>) -> Result<Vec<Value>, PatchError> {
    let (merge, merge_key) = list_strategy(raw);
    // `[{"$patch": "replace"}, ...]`: the rest of the patch list replaces the list.
    let replace = patch.iter().any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace || !merge {
        let mut out: Vec<Value> = patch.iter().filter(|e| e.get("$patch").is_none()).cloned().collect();
        out.iter_mut().for_each(strip_directives);
        return Ok(out);
    }
    match merge_key {
        // A set of scalars (e.g. finalizers): union, keeping the original order.
        None => {
            let mut out = original;
            for v in patch {
                if v.is_object() {
                    return Err(PatchError("a list of scalars was patched with an object".into()));
                }
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        Some(key) => {
            let mut out = original;
            for element in patch {
                let Some(p) = element.as_object() else {
                    return Err(PatchError(format!("the list elements of a merge list must be objects with {key:?}")));
                };
                let Some(id) = p.get(key) else {
                    return Err(PatchError(format!("map: {element} does not contain declared merge key: {key}")));
                };
                let pos = out.iter().position(|o| o.get(key) == Some(id));
                match p.get("$patch").and_then(Value::as_str) {
                    Some("delete") => {
                        out.retain(|o| o.get(key) != Some(id));
                    }
                    Some("replace") => {
                        let mut v = p.clone();
                        v.remove("$patch");
                        match pos {
                            Some(i) => out[i] = Value::Object(v),
                            None => out.push(Value::Object(v)),
                        }
                    }
                    _ => match pos {
                        Some(i) => {
                            let base = out[i].as_object().cloned().unwrap_or_default();
                            match merge_map(base, p, *items)? {
                                Some(m) => out[i] = Value::Object(m),
                                None => {
                                    out.remove(i);
                                }
                            }
                        }
                        None => {
                            let mut v = p.clone();
                            strip_directives_map(&mut v);
                            out.push(Value::Object(v));
                        }
                    },
                }
            }
            Ok(out)
        }
    }
}

/// Orders `list` as `order` says: elements named there come in that order; others keep their
/// relative order after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], merge_key: Option<&str>) {
    let identity = |v: &Value| -> Value {
        match merge_key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(identity).collect();
    let mut indexed: Vec<(usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, v)| {
            let rank = wanted.iter().position(|w| *w == identity(&v)).unwrap_or(wanted.len() + i);
            (rank, v)
        })
        .collect();
    indexed.sort_by_key(|(rank, _)| *rank);
    list.extend(indexed.into_iter().map(|(_, v)| v));
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => strip_directives_map(m),
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn strip_directives_map(m: &mut Map<String, Value>) {
    m.retain(|k, _| !k.starts_with('$'));
    m.values_mut().for_each(strip_directives);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service_schemas() -> Map<String, Value> {
        let doc = crate::openapi::v3_group_version("api/v1").expect("core document");
        doc.value()["components"]["schemas"].as_object().unwrap().clone()
    }

    fn smp(original: Value, patch: Value, root: &str) -> Value {
        let schemas = service_schemas();
        apply(&original, &patch, Schemas { components: &schemas }, root).unwrap()
    }

    const SVC: &str = "io.k8s.api.core.v1.Service";
    const POD: &str = "io.k8s.api.core.v1.Pod";

    #[test]
    fn ports_merge_by_port_and_are_deleted_by_key() {
        let svc = json!({"spec": {"selector": {"app": "a"}, "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "metrics", "port": 9000, "protocol": "TCP", "targetPort": 9000}]}});
        // What client-side `kubectl apply` sends after a port was removed from the file and one added.
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 443}],
            "ports": [{"name": "https", "port": 443, "targetPort": 8443}, {"$patch": "delete", "port": 9000}],
            "selector": {"app": "b", "tier": "web"}}});
        let out = smp(svc, patch, SVC);
        assert_eq!(
            out["spec"]["ports"],
            json!([
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443}])
        );
        assert_eq!(out["spec"]["selector"], json!({"app": "b", "tier": "web"}));
    }

    #[test]
    fn containers_and_env_merge_by_name() {
        let pod = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "args": ["x", "y"]},
            {"name": "side", "image": "s:1"}]}});
        let patch = json!({"spec": {"containers": [{"name": "app", "image": "a:2", "env": [{"name": "B", "value": "3"}], "args": ["z"]}]}});
        let out = smp(pod, patch, POD);
        let app = &out["spec"]["containers"][0];
        assert_eq!(app["image"], "a:2");
        assert_eq!(app["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]));
        // `args` has no merge strategy: replaced.
        assert_eq!(app["args"], json!(["z"]));
        assert_eq!(out["spec"]["containers"][1]["name"], "side");
    }

    #[test]
    fn directives_replace_delete_retain_and_primitive_lists() {
        let svc = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}, "spec": {"ports": [{"port": 1, "protocol": "TCP"}, {"port": 2, "protocol": "TCP"}]}});
        let out = smp(svc.clone(), json!({"metadata": {"labels": {"$patch": "replace", "z": "3"}}}), SVC);
        assert_eq!(out["metadata"]["labels"], json!({"z": "3"}));
        let out = smp(svc.clone(), json!({"spec": {"ports": [{"$patch": "replace"}, {"port": 3}]}}), SVC);
        assert_eq!(out["spec"]["ports"], json!([{"port": 3}]));
        let out = smp(svc.clone(), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}}), SVC);
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        let out = smp(svc.clone(), json!({"metadata": {"labels": null}}), SVC);
        assert!(out["metadata"].get("labels").is_none());
        let out = smp(svc, json!({"metadata": {"$retainKeys": ["labels"], "labels": {"x": "9"}}}), SVC);
        assert_eq!(out["metadata"], json!({"labels": {"x": "9", "y": "2"}}));
    }

    #[test]
    fn a_merge_list_element_without_its_key_is_an_error() {
        let schemas = service_schemas();
        let err = apply(&json!({"spec": {}}), &json!({"spec": {"ports": [{"name": "x"}]}}), Schemas { components: &schemas }, SVC).unwrap_err();
        assert!(err.0.contains("does not contain declared merge key: port"), "{err}");
    }
}
