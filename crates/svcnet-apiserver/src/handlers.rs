//! From an [`Action`] and its request to a response: query options, bodies, content types,
//! subresources (status, scale, binding), and the response representations.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use serde_json::{Value, json};
use svcnet_api::selector::{FieldSelector, LabelSelector};

use crate::{
    error::{ApiError, Result},
    negotiate::Output,
    object::{self, meta_mut},
    registry::{DeleteOptions, Deleted, FieldValidation, ListOptions, Registry, WriteOptions, Written},
    request::{Target, parse_bool},
    table,
    watch::{self, WatchRequest},
};

/// What a handler answers: a JSON value or a stream of lines (watch).
pub enum Reply {
    Json { code: u16, body: Value, warnings: Vec<String>, content_type: Option<String> },
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Reply::Json { code: 200, body, warnings: vec![], content_type: None }
    }
    fn written(code: u16, w: Written) -> Self {
        Reply::Json { code, body: w.object, warnings: w.warnings, content_type: None }
    }
}

/// A request as the handlers see it.
pub struct Call<'a> {
    pub query: &'a HashMap<String, String>,
    pub content_type: Option<&'a str>,
    pub body: Bytes,
    pub output: Output,
    pub user_agent: Option<&'a str>,
}

impl Call<'_> {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn write_options(&self) -> Result<WriteOptions> {
        let dry_run = match self.q("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => return Err(ApiError::bad_request(format!("dryRun: Unsupported value: {other:?}: supported values: \"All\""))),
        };
        // Upstream names an unnamed writer after its user agent's program name.
        let manager = match self.q("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) if m.len() > 128 || m.chars().any(char::is_control) => {
                return Err(ApiError::new(422, "Invalid", "fieldManager: Invalid value: must be no more than 128 printable characters"));
            }
            Some(m) => Some(m.to_string()),
            None => self.user_agent.and_then(|ua| ua.split('/').next()).filter(|p| !p.is_empty()).map(|p| p.chars().take(128).collect()),
        };
        Ok(WriteOptions {
            dry_run,
            field_validation: FieldValidation::parse(self.q("fieldValidation"))?,
            field_manager: manager.as_deref().map(crate::registry::intern_manager),
            apply: false,
        })
    }

    fn json_body(&self) -> Result<Value> {
        let ct = self.content_type.unwrap_or("application/json");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && essence != "*/*" && !essence.is_empty() {
            return Err(ApiError::unsupported_media_type(ct));
        }
        serde_json::from_slice(&self.body).map_err(|e| ApiError::bad_request(format!("json: {e}")))
    }

    fn list_options(&self, target: &Target) -> Result<ListOptions> {
        let label_selector = match self.q("labelSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?),
            None => None,
        };
        let field_selector = match self.q("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => {
                let sel = FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                crate::registry::check_field_selector(target.info, &sel)?;
                Some(sel)
            }
            None => None,
        };
        let limit = match self.q("limit").filter(|s| !s.is_empty()) {
            Some(l) => Some(l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?).filter(|l| *l > 0).map(|l| l as usize),
            None => None,
        };
        Ok(ListOptions { label_selector, field_selector, limit, continue_token: self.q("continue").filter(|s| !s.is_empty()).map(str::to_string) })
    }

    fn delete_options(&self) -> Result<DeleteOptions> {
        let mut opts = DeleteOptions::default();
        if !self.body.is_empty() {
            let v: Value = serde_json::from_slice(&self.body).map_err(|e| ApiError::bad_request(format!("json: {e}")))?;
            opts.grace_period_seconds = v.get("gracePeriodSeconds").and_then(Value::as_i64);
            opts.propagation_policy = v.get("propagationPolicy").and_then(Value::as_str).map(str::to_string);
            opts.precondition_uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
            opts.precondition_resource_version = v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        }
        if let Some(g) = self.q("gracePeriodSeconds").filter(|s| !s.is_empty()) {
            opts.grace_period_seconds = Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?);
        }
        if let Some(p) = self.q("propagationPolicy").filter(|s| !s.is_empty()) {
            opts.propagation_policy = Some(p.to_string());
        }
        if let Some(p) = &opts.propagation_policy
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
        Ok(opts)
    }
}

fn list_kind(kind: &str) -> String {
    format!("{kind}List")
}

/// Represents one object as the client asked.
fn present(output: Output, kind: &str, obj: Value) -> Value {
    match output {
        Output::Table => table::to_table(kind, &[obj], None, true),
        Output::PartialMetadata => table::partial_metadata(&obj),
        _ => obj,
    }
}

pub async fn get(reg: &Registry, target: &Target, call: &Call<'_>) -> Result<Reply> {
    if target.subresource.as_deref() == Some("scale") {
        let parent = reg.get(&parent_of(target)).await?;
        return Ok(Reply::ok(scale_of(&parent)));
    }
    let obj = reg.get(target).await?;
    Ok(Reply::ok(present(call.output, target.info.kind, obj)))
}

pub async fn list(reg: &Registry, target: &Target, call: &Call<'_>) -> Result<Reply> {
    let opts = call.list_options(target)?;
    let page = reg.list(target, &opts).await?;
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = page.continue_token {
        meta["continue"] = c.into();
    }
    let body = match call.output {
        Output::Table => table::to_table(target.info.kind, &page.items, Some(meta), true),
        Output::PartialMetadata => table::partial_metadata_list(&page.items, meta),
        _ => json!({
            "kind": list_kind(target.info.kind),
            "apiVersion": target.info.api_version(),
            "metadata": meta,
            "items": page.items,
        }),
    };
    Ok(Reply::ok(body))
}

pub async fn watch(reg: &Registry, target: &Target, call: &Call<'_>) -> Result<Reply> {
    let opts = call.list_options(target)?;
    let resource_version = match call.q("resourceVersion").filter(|s| !s.is_empty()) {
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?),
        None => None,
    };
    let send_initial_events = call.q("sendInitialEvents").and_then(parse_bool).unwrap_or(false);
    if send_initial_events && call.q("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::new(
            422,
            "Invalid",
            "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan",
        ));
    }
    let timeout = match call.q("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).filter(|t| *t > 0) {
        Some(t) => Duration::from_secs(t),
        // Upstream picks between 30 and 60 minutes so that watches do not all end together.
        None => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let req = WatchRequest {
        target: target.clone(),
        label_selector: opts.label_selector,
        field_selector: opts.field_selector,
        resource_version,
        send_initial_events,
        allow_bookmarks: call.q("allowWatchBookmarks").and_then(parse_bool).unwrap_or(false),
        timeout,
        output: call.output,
    };
    Ok(Reply::Stream(watch::start(reg.clone(), req).await?))
}

pub async fn create(reg: &Registry, target: &Target, call: &Call<'_>) -> Result<Reply> {
    let opts = call.write_options()?;
    if target.subresource.as_deref() == Some("binding") {
        return bind(reg, target, call, opts).await;
    }
    if target.subresource.is_some() {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let body = call.json_body()?;
    let w = reg.create(target, body, opts).await?;
    Ok(Reply::written(201, w))
}

pub async fn update(reg: &Registry, target: &Target, call: &Call<'_>) -> Result<Reply> {
    let opts = call.write_options()?;
    let body = call.json_body()?;
    if target.subresource.as_deref() == Some("scale") {
        return update_scale(reg, target, opts, |_| Ok(body.clone())).await;
    }
    let w = reg.update(target, body, opts).await?;
    Ok(Reply::written(200, w))
}

/// Whether a patch document sets `metadata.resourceVersion` (making it a precondition).
fn patch_sets_resource_version(patch: &Value) -> bool {
    match patch {
        Value::Array(ops) => ops.iter().any(|op| op["path"].as_str() == Some("/metadata/resourceVersion") && op["op"] != "test"),
        other => other.get("metadata").and_then(|m| m.get("resourceVersion")).is_some_and(|v| !v.is_null()),
    }
}

/// The patch types, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    StrategicMerge,
}

fn patch_type(ct: Option<&str>) -> Result<PatchType> {
    let ct = ct.unwrap_or("");
    match ct.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
        _ => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
            ),
        )),
    }
}

/// Applies a patch document to `doc`, an object of `kind` (`group/version`) for strategic merge.
fn apply_patch(pt: PatchType, doc: &Value, patch: &Value, gvk: (&str, &str, &str)) -> Result<Value> {
    let mut out = doc.clone();
    match pt {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| ApiError::bad_request(format!("json: {e}")))?;
            json_patch::patch(&mut out, &p)
                .map_err(|e| ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")))?;
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("json: cannot unmarshal into Go value of type map[string]interface {}"));
            }
            json_patch::merge(&mut out, patch);
        }
        PatchType::StrategicMerge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("json: cannot unmarshal into Go value of type map[string]interface {}"));
            }
            let (group, version, kind) = gvk;
            let (schemas, root) = crate::openapi::kind_schema(group, version, kind)
                .ok_or_else(|| ApiError::new(415, "UnsupportedMediaType", format!("strategic merge patch is not supported for {kind}")))?;
            out = crate::strategic::apply(doc, patch, crate::strategic::Schemas { components: schemas }, root)
                .map_err(|e| ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")))?;
        }
    }
    Ok(out)
}

pub async fn patch(reg: &Registry, target: &Target, call: &Call<'_>) -> Result<Reply> {
    let opts = call.write_options()?;
    if call.content_type.is_some_and(|ct| ct.split(';').next().unwrap_or("").trim() == "application/apply-patch+yaml") {
        return server_side_apply(reg, target, call, opts).await;
    }
    let pt = patch_type(call.content_type)?;
    let patch: Value = serde_json::from_slice(&call.body).map_err(|e| ApiError::bad_request(format!("json: {e}")))?;
    if target.subresource.as_deref() == Some("scale") {
        return update_scale(reg, target, opts, |current| apply_patch(pt, current, &patch, ("autoscaling", "v1", "Scale"))).await;
    }
    let info = target.info;
    let w = reg
        .guaranteed_update(target, opts, |current| {
            let mut patched = apply_patch(pt, current, &patch, (info.group, info.version, info.kind))?;
            // The stored resourceVersion rides along in the patched object; only one the patch
            // itself sets is a precondition (otherwise a concurrent write is retried, as upstream).
            if !patch_sets_resource_version(&patch)
                && let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut)
            {
                m.remove("resourceVersion");
            }
            let (obj, warnings) = reg.decode_body(info, info.kind, &info.api_version(), patched, opts.field_validation)?;
            Ok(Some((obj, warnings)))
        })
        .await?;
    Ok(Reply::written(200, w))
}

pub async fn delete(reg: &Registry, target: &Target, call: &Call<'_>) -> Result<Reply> {
    let wopts = call.write_options()?;
    let opts = call.delete_options()?;
    let deleted = reg.delete(target, &opts, wopts).await?;
    Ok(Reply::ok(deleted_body(target, deleted)))
}

fn deleted_body(target: &Target, deleted: Deleted) -> Value {
    match deleted {
        Deleted::Pending(obj) => obj,
        // Upstream returns the last state for these kinds and a Status for the others.
        Deleted::Now(obj) if matches!(target.info.kind, "Pod" | "Service") => obj,
        Deleted::Now(obj) => json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": object::name(&obj),
                "group": target.info.group,
                "kind": target.info.plural,
                "uid": object::meta_str(&obj, "uid").unwrap_or(""),
            }
        }),
    }
}

pub async fn delete_collection(reg: &Registry, target: &Target, call: &Call<'_>) -> Result<Reply> {
    let wopts = call.write_options()?;
    let list_opts = call.list_options(target)?;
    let opts = call.delete_options()?;
    let page = reg.list(target, &list_opts).await?;
    let mut items = Vec::new();
    for obj in page.items {
        let mut t = target.clone();
        t.name = Some(object::name(&obj).to_string());
        if t.namespace.is_none() && t.info.namespaced {
            t.namespace = object::meta_str(&obj, "namespace").map(str::to_string);
        }
        match reg.delete(&t, &opts, wopts).await {
            Ok(Deleted::Now(o) | Deleted::Pending(o)) => items.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Reply::ok(json!({
        "kind": list_kind(target.info.kind),
        "apiVersion": target.info.api_version(),
        "metadata": {},
        "items": items,
    })))
}

// === subresources ===

fn parent_of(target: &Target) -> Target {
    let mut t = target.clone();
    t.subresource = None;
    t
}

/// The `autoscaling/v1` Scale of a Deployment, ReplicaSet or StatefulSet.
fn scale_of(obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

async fn update_scale(reg: &Registry, target: &Target, opts: WriteOptions, new_scale: impl Fn(&Value) -> Result<Value>) -> Result<Reply> {
    let parent = parent_of(target);
    let name = target.name.clone().unwrap_or_default();
    let w = reg
        .guaranteed_update(&parent, opts, |current| {
            let scale = new_scale(&scale_of(current))?;
            if let Some(rv) = scale["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty())
                && Some(rv) != current["metadata"]["resourceVersion"].as_str()
            {
                return Err(ApiError::modified(target.info, &name));
            }
            let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
            if replicas < 0 {
                let e = svcnet_api::FieldError::invalid("spec.replicas", replicas, "must be greater than or equal to 0");
                let mut err = ApiError::invalid(target.info, &name, &[e]);
                err.message = err.message.replacen(target.info.kind, "Scale.autoscaling", 1);
                return Err(err);
            }
            let mut next = current.clone();
            next["spec"]["replicas"] = replicas.into();
            meta_mut(&mut next).remove("resourceVersion");
            Ok(Some((next, vec![])))
        })
        .await?;
    Ok(Reply::ok(scale_of(&w.object)))
}

/// `POST pods/<name>/binding`: assigns a pending pod to a node, once.
async fn bind(reg: &Registry, target: &Target, call: &Call<'_>, opts: WriteOptions) -> Result<Reply> {
    let body = call.json_body()?;
    let node = body.pointer("/target/name").and_then(Value::as_str).unwrap_or("").to_string();
    let name = target.name.clone().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::invalid(target.info, &name, &[svcnet_api::FieldError::required("target.name", "")]));
    }
    let w = reg
        .guaranteed_update(target, opts, |current| {
            if current["metadata"].get("deletionTimestamp").is_some() {
                return Err(ApiError::conflict(target.info, &name, &format!("pod {name} is being deleted, cannot be assigned to a host")));
            }
            if let Some(existing) = current["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("Operation cannot be fulfilled on pods/binding {name:?}: pod {name} is already assigned to node {existing:?}"),
                ));
            }
            let mut next = current.clone();
            next["spec"]["nodeName"] = node.clone().into();
            let conds = next["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339()}));
            next["status"]["conditions"] = Value::Array(conds);
            Ok(Some((next, vec![])))
        })
        .await?;
    let _ = w;
    Ok(Reply::Json {
        code: 201,
        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        warnings: vec![],
        content_type: None,
    })
}

/// `PATCH` with `application/apply-patch+yaml`: server-side apply of the body (JSON or YAML) as
/// the whole intent of `fieldManager`; creates the object when it does not exist.
async fn server_side_apply(reg: &Registry, target: &Target, call: &Call<'_>, mut opts: WriteOptions) -> Result<Reply> {
    use crate::apply::{self, KindSchema, Writer};
    let info = target.info;
    if target.subresource.is_some() {
        return Err(ApiError::new(415, "UnsupportedMediaType", "apply patches of subresources are not supported"));
    }
    let manager = match call.q("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => {
            return Err(ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
        }
    };
    let force = call.q("force").and_then(parse_bool).unwrap_or(false);
    let text = std::str::from_utf8(&call.body).map_err(|_| ApiError::bad_request("the apply patch is not UTF-8"))?;
    let applied: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    // Strict field validation and the type checks run on the applied configuration itself.
    // Server-side apply reports unknown fields as structured merge does: not in the schema.
    let (decoded, warnings) = reg.decode_body(info, info.kind, &info.api_version(), applied.clone(), opts.field_validation).map_err(|mut e| {
        if let Some(fields) = e.message.strip_prefix("strict decoding error: ") {
            let paths: Vec<String> =
                fields.split(", ").map(|f| format!(".{}: field not declared in schema", f.trim_start_matches("unknown field ").trim_matches('"'))).collect();
            let name = applied["metadata"]["name"].as_str().unwrap_or("");
            let ns = target.namespace.as_deref().unwrap_or("");
            let gvk = if info.group.is_empty() {
                format!("/{}, Kind={}", info.version, info.kind)
            } else {
                format!("{}/{}, Kind={}", info.group, info.version, info.kind)
            };
            e.message = format!("failed to create typed patch object ({ns}/{name}; {gvk}): {}", paths.join(", "));
        }
        e
    })?;
    let mut intent = decoded;
    crate::object::strip_nulls(&mut intent);
    // As upstream, the applied configuration is defaulted first, so that list-map keys such as a
    // port's protocol match the stored elements.
    svcnet_api::defaults::apply_defaults(info.kind, &mut intent);
    let name = target.name.clone().unwrap_or_default();
    if intent["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            intent["metadata"]["name"].as_str().unwrap_or("")
        )));
    }
    let (schemas, root) = crate::openapi::kind_schema(info.group, info.version, info.kind)
        .ok_or_else(|| ApiError::new(415, "UnsupportedMediaType", format!("server-side apply is not supported for {}", info.kind)))?;
    let schema = KindSchema { schemas: crate::strategic::Schemas { components: schemas }, root };
    let now = crate::object::now_rfc3339();
    let api_version = info.api_version();
    let writer = Writer { manager: &manager, api_version: &api_version, subresource: None, now: &now };
    opts.field_manager = Some(crate::registry::intern_manager(&manager));
    opts.apply = true;
    let conflict = |conflicts: Vec<apply::Conflict>| {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": apply::render_path(&c.path)}))
            .collect();
        let mut e = ApiError::new(409, "Conflict", apply::conflict_message(&conflicts));
        e.details = Some(json!({"causes": causes}));
        e
    };
    let result = reg
        .guaranteed_update(target, opts, |current| {
            let merged = apply::apply(Some(current), &intent, schema, &writer, force).map_err(conflict)?;
            Ok(Some((merged, warnings.clone())))
        })
        .await;
    match result {
        Ok(w) => Ok(Reply::written(200, w)),
        Err(e) if e.code == 404 && e.reason == "NotFound" => {
            let created = apply::apply(None, &intent, schema, &writer, force).map_err(conflict)?;
            let mut t = target.clone();
            t.name = None;
            let w = reg.create(&t, created, opts).await?;
            Ok(Reply::written(201, w))
        }
        Err(e) => Err(e),
    }
}
