//! The generic REST storage of every served resource (upstream's `genericregistry.Store`): object
//! metadata, defaulting and validation, optimistic concurrency, subresources, graceful deletion
//! and finalizers, on top of a [`Storage`].
//!
//! Objects are stored as JSON without `metadata.resourceVersion`; the store's modification
//! revision becomes the resourceVersion on every read, exactly as kube-apiserver does with etcd.

use std::sync::Arc;

use crate::service_alloc::{ServiceAllocator, ServiceRanges};
use serde_json::{Value, json};
use svcnet_api::{
    FieldError,
    resources::{self, ResourceInfo},
    selector::{FieldSelector, LabelSelector},
};
use svcnet_store::{KeyValue, Revision, Storage};

use crate::{
    error::{ApiError, Result},
    object::{self, meta_mut, meta_str},
    request::Target,
};

/// `fieldValidation`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(ApiError::bad_request(format!("fieldValidation parameter unsupported: {other}. Supported values: Ignore, Warn, Strict"))),
        }
    }
}

/// Options shared by writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Who writes, for `managedFields` (`None`: "unknown", as upstream names an anonymous writer).
    pub field_manager: Option<&'static str>,
    /// The write is a server-side apply that computed `managedFields` itself.
    pub apply: bool,
}

/// Interns a field manager name so that `WriteOptions` stays `Copy`; the set of names a server
/// sees is small (one per client kind), so the leak is bounded.
pub fn intern_manager(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.get(name) {
        return n;
    }
    if names.len() > 10_000 {
        return "unknown";
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Records `new`'s field ownership after a write by `opts.field_manager`.
fn track_fields(info: &ResourceInfo, old: Option<&Value>, new: &mut Value, opts: &WriteOptions) {
    let Some((schemas, root)) = crate::openapi::kind_schema(info.group, info.version, info.kind) else { return };
    let schema = crate::apply::KindSchema { schemas: crate::strategic::Schemas { components: schemas }, root };
    let now = object::now_rfc3339();
    let writer = crate::apply::Writer { manager: opts.field_manager.unwrap_or("unknown"), api_version: &info.api_version(), subresource: None, now: &now };
    crate::apply::track_update(old, new, schema, &writer);
}

/// The result of a write: the object as stored and warnings for the `Warning` header.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Options of a list.
#[derive(Debug, Default)]
pub struct ListOptions {
    pub label_selector: Option<LabelSelector>,
    pub field_selector: Option<FieldSelector>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

/// What a DELETE did.
#[derive(Debug)]
pub enum Deleted {
    /// Gone from the store; the last state.
    Now(Value),
    /// Marked for deletion (finalizers or graceful termination pending); the new state.
    Pending(Value),
}

/// The parts of `DeleteOptions` we honour.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub propagation_policy: Option<String>,
}

/// Decodes a stored value, setting its resourceVersion from the store's revision.
pub fn from_kv(kv: &KeyValue) -> Result<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("corrupt object at {}: {e}", kv.key)))?;
    meta_mut(&mut v).insert("resourceVersion".into(), Value::String(kv.mod_revision.to_string()));
    Ok(v)
}

fn to_bytes(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    meta_mut(&mut o).remove("resourceVersion");
    serde_json::to_vec(&o).expect("a Value always serializes")
}

/// Whether `obj` passes the list's selectors.
pub fn matches(info: &ResourceInfo, obj: &Value, label: Option<&LabelSelector>, field: Option<&FieldSelector>) -> bool {
    if let Some(l) = label
        && !l.matches(&object::labels(obj))
    {
        return false;
    }
    if let Some(f) = field {
        return f.matches(|name| svcnet_api::fields::field_value(info.kind, obj, name).ok());
    }
    true
}

/// Refuses field selectors the kind cannot evaluate (400, as upstream).
pub fn check_field_selector(info: &ResourceInfo, sel: &FieldSelector) -> Result<()> {
    for (field, _, _) in &sel.requirements {
        svcnet_api::fields::field_value(info.kind, &json!({}), field).map_err(ApiError::bad_request)?;
    }
    Ok(())
}

/// The continue token: the revision of the first page and the last key returned.
fn encode_continue(rev: Revision, last_key: &str) -> String {
    use base64::Engine;
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": last_key}).to_string();
    base64::engine::general_purpose::URL_SAFE.encode(raw)
}

fn decode_continue(token: &str, prefix: &str) -> Result<(Revision, String)> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid: invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v["rv"].as_u64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.to_string();
    if !start.starts_with(prefix) {
        return Err(bad());
    }
    Ok((rev, start))
}

/// A create or update body that cannot be decoded, worded as kube-apiserver's decoder does:
/// `Service in version "v1" cannot be handled as a Service: strict decoding error: ...`.
fn as_decode_error(info: &ResourceInfo, mut e: ApiError) -> ApiError {
    if e.code == 400 && e.message.starts_with("strict decoding error") {
        e.message = format!("{} in version {:?} cannot be handled as a {}: {}", info.kind, info.version, info.kind, e.message);
    }
    e
}

/// Five characters from upstream's alphabet for `generateName` (no vowels, no confusables).
fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// The REST storage of all resources over one store.
#[derive(Clone)]
pub struct Registry {
    pub store: Arc<dyn Storage>,
    /// ClusterIPs and NodePorts of Services.
    pub services: Arc<ServiceAllocator>,
}

impl Registry {
    pub fn new(store: Arc<dyn Storage>, ranges: ServiceRanges) -> Self {
        let services = Arc::new(ServiceAllocator::new(store.clone(), ranges));
        Self { store, services }
    }

    /// Frees what a deleted object held (a Service's ClusterIP and NodePorts).
    async fn after_delete(&self, info: &ResourceInfo, obj: &Value) {
        if info.kind == "Service" {
            self.services.release_unused(obj, None).await;
        }
    }

    fn key(target: &Target, name: &str) -> String {
        target.info.key(target.namespace.as_deref(), name)
    }

    /// The key prefix a list or watch of `target` covers.
    pub fn list_prefix(target: &Target) -> String {
        match (&target.namespace, target.info.namespaced) {
            (Some(ns), true) => format!("{}{}/", target.info.key_prefix(), ns),
            _ => target.info.key_prefix(),
        }
    }

    async fn read(&self, info: &ResourceInfo, key: &str, name: &str) -> Result<(Value, Revision)> {
        match self.store.get(key).await? {
            Some(kv) => Ok((from_kv(&kv)?, kv.mod_revision)),
            None => Err(ApiError::not_found(info, name)),
        }
    }

    pub async fn get(&self, target: &Target) -> Result<Value> {
        let name = target.name.as_deref().unwrap_or_default();
        Ok(self.read(target.info, &Self::key(target, name), name).await?.0)
    }

    pub async fn list(&self, target: &Target, opts: &ListOptions) -> Result<ListPage> {
        let prefix = Self::list_prefix(target);
        let (mut start_after, first_rev) = match &opts.continue_token {
            Some(t) => {
                let (rev, start) = decode_continue(t, &prefix)?;
                (Some(start), Some(rev))
            }
            None => (None, None),
        };
        let filtering = opts.label_selector.is_some() || opts.field_selector.is_some();
        let mut items = Vec::new();
        let mut revision = None;
        loop {
            let want = opts.limit.map(|l| l.saturating_sub(items.len()).max(1));
            // With selectors, read ahead in larger pages, as upstream pages through etcd.
            let batch = if filtering { want.map(|w| w.max(500)) } else { want };
            let page = self.store.list(&prefix, start_after.as_deref(), batch).await?;
            revision.get_or_insert(page.revision);
            let n = page.items.len();
            for (i, kv) in page.items.iter().enumerate() {
                let obj = from_kv(kv)?;
                if matches(target.info, &obj, opts.label_selector.as_ref(), opts.field_selector.as_ref()) {
                    items.push(obj);
                }
                if opts.limit.is_some_and(|l| items.len() >= l) {
                    let more = i + 1 < n || page.more;
                    let token = more.then(|| encode_continue(first_rev.unwrap_or(page.revision), &kv.key));
                    return Ok(ListPage { items, revision: first_rev.unwrap_or(page.revision), continue_token: token });
                }
            }
            if !page.more || n == 0 {
                break;
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
        Ok(ListPage { items, revision: first_rev.or(revision).unwrap_or(0), continue_token: None })
    }

    /// Decodes a request body as an object of `kind`, checking its apiVersion and kind.
    pub fn decode_body(&self, info: &ResourceInfo, kind: &str, api_version: &str, body: Value, fv: FieldValidation) -> Result<(Value, Vec<String>)> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body of the request was not a JSON object"));
        }
        // As kube-apiserver's decoder: what the body leaves out comes from the URL.
        let mut body = body;
        for (field, default) in [("kind", kind), ("apiVersion", api_version)] {
            if body.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                body[field] = default.into();
            }
        }
        let body_kind = body.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        let body_version = body.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
        let (body_kind, body_version) = (body_kind.as_str(), body_version.as_str());
        if body_kind != kind || body_version != api_version {
            return Err(ApiError::bad_request(format!("the API version in the data ({body_version}) does not match the expected API version ({api_version})"))
                .or_kind_mismatch(body_kind, kind, info));
        }
        let decoded = svcnet_api::decode::decode(kind, body).map_err(|e| ApiError::bad_request(format!("{}: {}", info.kind, e.0)))?;
        let mut warnings = Vec::new();
        match fv {
            FieldValidation::Ignore => {}
            FieldValidation::Warn => warnings.extend(decoded.unknown_fields.iter().map(|f| format!("unknown field {f:?}"))),
            FieldValidation::Strict if !decoded.unknown_fields.is_empty() => {
                let list: Vec<String> = decoded.unknown_fields.iter().map(|f| format!("unknown field {f:?}")).collect();
                return Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))));
            }
            FieldValidation::Strict => {}
        }
        let mut obj = decoded.object;
        object::strip_nulls(&mut obj);
        Ok((obj, warnings))
    }

    async fn check_namespace(&self, target: &Target, name: &str) -> Result<()> {
        let Some(ns) = target.namespace.as_deref().filter(|_| target.info.namespaced) else { return Ok(()) };
        let ns_info = resources::find("", "v1", "namespaces").expect("namespaces are served");
        match self.store.get(&ns_info.key(None, ns)).await? {
            None => Err(ApiError::not_found(ns_info, ns)),
            Some(kv) => {
                let obj = from_kv(&kv)?;
                if obj["metadata"].get("deletionTimestamp").is_some() {
                    let mut e =
                        ApiError::forbidden(target.info, name, &format!("unable to create new content in namespace {ns} because it is being terminated"));
                    if let Some(d) = e.details.as_mut() {
                        d["causes"] = json!([{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]);
                    }
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// POST of a new object.
    pub async fn create(&self, target: &Target, body: Value, opts: WriteOptions) -> Result<Written> {
        let info = target.info;
        let (mut obj, warnings) = self.decode_body(info, info.kind, &info.api_version(), body, opts.field_validation).map_err(|e| as_decode_error(info, e))?;
        // Namespace from the URL; a different one in the body is an error.
        if info.namespaced {
            let url_ns = target.namespace.clone().unwrap_or_default();
            match meta_str(&obj, "namespace") {
                Some(ns) if !ns.is_empty() && ns != url_ns => {
                    return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                }
                _ => {}
            }
            meta_mut(&mut obj).insert("namespace".into(), url_ns.into());
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        let generated = meta_str(&obj, "name").is_none_or(str::is_empty) && meta_str(&obj, "generateName").is_some_and(|g| !g.is_empty());
        if generated {
            let prefix: String = meta_str(&obj, "generateName").unwrap_or_default().chars().take(58).collect();
            meta_mut(&mut obj).insert("name".into(), format!("{prefix}{}", random_suffix()).into());
        }
        prepare_for_create(info, &mut obj);
        svcnet_api::defaults::apply_defaults(info.kind, &mut obj);
        let name = object::name(&obj).to_string();
        let errors = svcnet_api::validation::validate_create(info.kind, &obj);
        if !errors.is_empty() {
            return Err(ApiError::invalid(info, &name, &errors));
        }
        if !opts.apply {
            track_fields(info, None, &mut obj, &opts);
        }
        self.check_namespace(target, &name).await?;
        let key = info.key(target.namespace.as_deref(), &name);
        if opts.dry_run {
            if self.store.get(&key).await?.is_some() {
                return Err(ApiError::already_exists(info, &name));
            }
            return Ok(Written { object: obj, warnings });
        }
        // A Service's ClusterIP and NodePorts are claimed before it is written, and given back
        // if the write does not happen.
        let claims = if info.kind == "Service" {
            // A name that is taken is the error to report, not the address it would collide on.
            if self.store.get(&key).await?.is_some() {
                return Err(ApiError::already_exists(info, &name));
            }
            Some(self.services.allocate(&mut obj, None, (info, &name)).await?)
        } else {
            None
        };
        let result = self.store.create(&key, to_bytes(&obj)).await;
        if result.is_err()
            && let Some(c) = claims
        {
            self.services.rollback(c).await;
        }
        match result {
            Ok(rev) => {
                meta_mut(&mut obj).insert("resourceVersion".into(), rev.to_string().into());
                Ok(Written { object: obj, warnings })
            }
            Err(svcnet_store::Error::AlreadyExists { .. }) => Err(ApiError::already_exists(info, &name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the current object, lets `mutate` compute the new one, and writes it with a
    /// compare-and-swap, retrying on conflicts unless the caller pinned a resourceVersion
    /// (upstream's `GuaranteedUpdate`). `mutate` returns `None` to leave the object as it is.
    pub async fn guaranteed_update<F>(&self, target: &Target, opts: WriteOptions, mut mutate: F) -> Result<Written>
    where
        F: FnMut(&Value) -> Result<Option<(Value, Vec<String>)>>,
    {
        let info = target.info;
        let name = target.name.clone().unwrap_or_default();
        let key = Self::key(target, &name);
        for _ in 0..16 {
            let (current, rev) = self.read(info, &key, &name).await?;
            let Some((new, warnings)) = mutate(&current)? else {
                return Ok(Written { object: current, warnings: vec![] });
            };
            if let Some(want) = meta_str(&new, "resourceVersion").filter(|s| !s.is_empty())
                && want != rev.to_string()
            {
                return Err(ApiError::modified(info, &name));
            }
            let pinned = meta_str(&new, "resourceVersion").is_some_and(|s| !s.is_empty());
            let applied_fields = new["metadata"].get("managedFields").cloned();
            let mut new = self.finish_update(target, new, &current)?;
            if target.subresource.is_none() {
                match (opts.apply, applied_fields) {
                    (true, Some(m)) => {
                        meta_mut(&mut new).insert("managedFields".into(), m);
                    }
                    _ => track_fields(info, Some(&current), &mut new, &opts),
                }
            }
            if spec_and_meta_equal(&new, &current) {
                return Ok(Written { object: current, warnings });
            }
            // The last finalizer removed from an object being deleted: it goes now.
            if new["metadata"].get("deletionTimestamp").is_some() && object::finalizers(&new).is_empty() && !pending_graceful(info, &new) {
                if opts.dry_run {
                    return Ok(Written { object: new, warnings });
                }
                match self.store.delete(&key, Some(rev)).await {
                    Ok(kv) => {
                        let gone = from_kv(&kv)?;
                        self.after_delete(info, &gone).await;
                        return Ok(Written { object: gone, warnings });
                    }
                    Err(svcnet_store::Error::Conflict { .. }) if !pinned => continue,
                    Err(svcnet_store::Error::Conflict { .. }) => return Err(ApiError::modified(info, &name)),
                    Err(svcnet_store::Error::NotFound { .. }) => return Err(ApiError::not_found(info, &name)),
                    Err(e) => return Err(e.into()),
                }
            }
            if opts.dry_run {
                return Ok(Written { object: new, warnings });
            }
            let claims = if info.kind == "Service" && target.subresource.is_none() {
                Some(self.services.allocate(&mut new, Some(&current), (info, &name)).await?)
            } else {
                None
            };
            let result = self.store.update(&key, rev, to_bytes(&new)).await;
            match (&result, claims) {
                (Ok(_), Some(_)) => self.services.release_unused(&current, Some(&new)).await,
                (Err(_), Some(c)) => self.services.rollback(c).await,
                _ => {}
            }
            match result {
                Ok(new_rev) => {
                    meta_mut(&mut new).insert("resourceVersion".into(), new_rev.to_string().into());
                    return Ok(Written { object: new, warnings });
                }
                Err(svcnet_store::Error::Conflict { .. }) if !pinned => continue,
                Err(svcnet_store::Error::Conflict { .. }) => return Err(ApiError::modified(info, &name)),
                Err(svcnet_store::Error::NotFound { .. }) => return Err(ApiError::not_found(info, &name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::modified(info, &name))
    }

    /// Applies the update rules to a proposed new state: immutable metadata, subresource
    /// scoping, defaulting, validation and generation.
    fn finish_update(&self, target: &Target, mut new: Value, current: &Value) -> Result<Value> {
        let info = target.info;
        let name = target.name.clone().unwrap_or_default();
        if object::name(&new) != name {
            return Err(ApiError::bad_request(format!("the name of the object ({}) does not match the name on the URL ({name})", object::name(&new))));
        }
        if let (Some(a), Some(b)) = (meta_str(&new, "uid"), meta_str(current, "uid"))
            && !a.is_empty()
            && a != b
        {
            return Err(ApiError::conflict(info, &name, &format!("Precondition failed: UID in precondition: {a}, UID in object meta: {b}")));
        }
        if info.namespaced {
            let ns = target.namespace.clone().unwrap_or_default();
            if meta_str(&new, "namespace").is_some_and(|n| !n.is_empty() && n != ns) {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            meta_mut(&mut new).insert("namespace".into(), ns.into());
        }
        // Metadata the server owns.
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "managedFields"] {
            match current["metadata"].get(field) {
                Some(v) => meta_mut(&mut new).insert(field.into(), v.clone()),
                None => meta_mut(&mut new).remove(field),
            };
        }
        // A subresource write changes only its part; a main-resource write leaves status alone.
        match target.subresource.as_deref() {
            Some("status") => {
                let mut merged = current.clone();
                match new.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        merged.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                new = merged;
            }
            // Binding sets spec.nodeName and the PodScheduled condition, which pod-spec
            // validation would otherwise refuse as a spec change.
            Some("binding") => {}
            Some("finalize") => {
                let mut merged = current.clone();
                merged["spec"]["finalizers"] = new["spec"].get("finalizers").cloned().unwrap_or(json!([]));
                new = merged;
            }
            // spec.finalizers of a namespace change only through `finalize`.
            _ if info.kind == "Namespace" => {
                new["spec"] = current.get("spec").cloned().unwrap_or(json!({}));
                new["status"] = current.get("status").cloned().unwrap_or(json!({}));
            }
            _ if info.has_subresource("status") => match current.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            },
            _ => {}
        }
        if info.kind == "Service" && target.subresource.is_none() {
            crate::service_alloc::drop_type_dependent_fields(&mut new, current);
            crate::service_alloc::carry_over(&mut new, current);
        }
        svcnet_api::defaults::apply_defaults(info.kind, &mut new);
        let mut errors: Vec<FieldError> =
            if target.subresource.as_deref() == Some("binding") { Vec::new() } else { svcnet_api::validation::validate_update(info.kind, &new, current) };
        if current["metadata"].get("deletionTimestamp").is_some() {
            // Upstream forbids adding finalizers to an object being deleted.
            let old = object::finalizers(current);
            if object::finalizers(&new).iter().any(|f| !old.contains(f)) {
                errors.push(FieldError::forbidden("metadata.finalizers", "no new finalizers can be added if the object is being deleted"));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(info, &name, &errors));
        }
        if info.has_generation() {
            let gen_ = current["metadata"]["generation"].as_i64().unwrap_or(1);
            let bumped = if object::spec_part(&new) != object::spec_part(current) { gen_ + 1 } else { gen_ };
            meta_mut(&mut new).insert("generation".into(), bumped.into());
        }
        Ok(new)
    }

    /// PUT of a whole object (or of its status/finalize subresource).
    pub async fn update(&self, target: &Target, body: Value, opts: WriteOptions) -> Result<Written> {
        let info = target.info;
        let (obj, warnings) = self.decode_body(info, info.kind, &info.api_version(), body, opts.field_validation).map_err(|e| as_decode_error(info, e))?;
        let result = self.guaranteed_update(target, opts, |_current| Ok(Some((obj.clone(), warnings.clone())))).await;
        match result {
            Err(e) if e.code == 404 && allow_create_on_update(info) && target.subresource.is_none() => {
                let mut t = target.clone();
                t.name = None;
                self.create(&t, serde_json::to_value(&obj).unwrap_or_default(), opts).await
            }
            other => other,
        }
    }

    /// DELETE of one object.
    pub async fn delete(&self, target: &Target, opts: &DeleteOptions, wopts: WriteOptions) -> Result<Deleted> {
        let info = target.info;
        let name = target.name.clone().unwrap_or_default();
        let key = Self::key(target, &name);
        if info.kind == "Namespace" && matches!(name.as_str(), "default" | "kube-system" | "kube-public") {
            return Err(ApiError::forbidden(info, &name, "this namespace may not be deleted"));
        }
        for _ in 0..16 {
            let (current, rev) = self.read(info, &key, &name).await?;
            if let Some(uid) = &opts.precondition_uid
                && meta_str(&current, "uid") != Some(uid.as_str())
            {
                return Err(ApiError::conflict(
                    info,
                    &name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", meta_str(&current, "uid").unwrap_or("")),
                ));
            }
            if let Some(want) = &opts.precondition_resource_version
                && *want != rev.to_string()
            {
                return Err(ApiError::conflict(
                    info,
                    &name,
                    &format!("Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"),
                ));
            }
            let mut marked = current.clone();
            let pending = mark_for_deletion(info, &mut marked, opts);
            if pending {
                if marked == current {
                    return Ok(Deleted::Pending(current));
                }
                if wopts.dry_run {
                    return Ok(Deleted::Pending(marked));
                }
                match self.store.update(&key, rev, to_bytes(&marked)).await {
                    Ok(new_rev) => {
                        meta_mut(&mut marked).insert("resourceVersion".into(), new_rev.to_string().into());
                        return Ok(Deleted::Pending(marked));
                    }
                    Err(svcnet_store::Error::Conflict { .. }) => continue,
                    Err(svcnet_store::Error::NotFound { .. }) => return Err(ApiError::not_found(info, &name)),
                    Err(e) => return Err(e.into()),
                }
            }
            if wopts.dry_run {
                return Ok(Deleted::Now(current));
            }
            match self.store.delete(&key, Some(rev)).await {
                Ok(kv) => {
                    let gone = from_kv(&kv)?;
                    self.after_delete(info, &gone).await;
                    return Ok(Deleted::Now(gone));
                }
                Err(svcnet_store::Error::Conflict { .. }) => continue,
                Err(svcnet_store::Error::NotFound { .. }) => return Err(ApiError::not_found(info, &name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::modified(info, &name))
    }
}

trait KindMismatch {
    fn or_kind_mismatch(self, body_kind: &str, kind: &str, info: &ResourceInfo) -> ApiError;
}

impl KindMismatch for ApiError {
    fn or_kind_mismatch(self, body_kind: &str, kind: &str, info: &ResourceInfo) -> ApiError {
        if body_kind != kind {
            ApiError::bad_request(format!("the kind in the data ({body_kind}) does not match the expected kind ({kind}) for {}", info.qualified_plural()))
        } else {
            self
        }
    }
}

/// Upstream's `AllowCreateOnUpdate`.
fn allow_create_on_update(info: &ResourceInfo) -> bool {
    matches!(info.kind, "Endpoints" | "Event" | "Lease")
}

/// Equal apart from resourceVersion: an update that changes nothing is not written.
fn spec_and_meta_equal(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// A pod that is being terminated gracefully is not removed while its grace period runs,
/// even with no finalizers: the node agent removes it.
fn pending_graceful(info: &ResourceInfo, obj: &Value) -> bool {
    info.kind == "Pod" && obj["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) > 0
}

/// Server-owned fields of a new object.
fn prepare_for_create(info: &ResourceInfo, obj: &mut Value) {
    let m = meta_mut(obj);
    m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    m.insert("creationTimestamp".into(), object::now_rfc3339().into());
    for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        m.remove(f);
    }
    if info.has_generation() {
        m.insert("generation".into(), 1.into());
    } else {
        m.remove("generation");
    }
    // Status is written through the status subresource only.
    match info.kind {
        "Pod" => {
            let qos = pod_qos_class(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        "Service" => obj["status"] = json!({"loadBalancer": {}}),
        // The namespace controller's finalizer, removed through `finalize` once it is empty.
        "Namespace" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" => {
            obj.as_object_mut().map(|o| o.remove("status"));
        }
        _ => {}
    }
}

/// Upstream's QoS class from the containers' requests and limits.
fn pod_qos_class(pod: &Value) -> &'static str {
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r));
            let q = req.and_then(|q| q.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Sets deletionTimestamp where deletion must wait (finalizers, a pod's grace period, a
/// namespace's contents); returns whether the object stays for now.
fn mark_for_deletion(info: &ResourceInfo, obj: &mut Value, opts: &DeleteOptions) -> bool {
    let already = obj["metadata"].get("deletionTimestamp").is_some();
    if info.kind == "Namespace" {
        if !already {
            meta_mut(obj).insert("deletionTimestamp".into(), object::now_rfc3339().into());
            obj["status"]["phase"] = "Terminating".into();
        }
        return true;
    }
    // The garbage collector's finalizers carry the propagation policy: `orphan` makes it release
    // the dependents first, `foregroundDeletion` makes it delete them first; background (the
    // default) deletes the owner now and its dependents after.
    let (add, drop) = match opts.propagation_policy.as_deref() {
        Some("Orphan") => (Some("orphan"), "foregroundDeletion"),
        Some("Foreground") => (Some("foregroundDeletion"), "orphan"),
        Some("Background") => (None, ""),
        _ => (None, "-"),
    };
    if add.is_some() || drop.is_empty() {
        let mut fins: Vec<Value> = object::finalizers(obj).into_iter().map(Value::from).collect();
        fins.retain(|f| f.as_str() != Some(drop) && (add.is_some() || !matches!(f.as_str(), Some("orphan" | "foregroundDeletion"))));
        if let Some(a) = add
            && !fins.iter().any(|f| f.as_str() == Some(a))
        {
            fins.push(a.into());
        }
        if fins.is_empty() {
            meta_mut(obj).remove("finalizers");
        } else {
            meta_mut(obj).insert("finalizers".into(), Value::Array(fins));
        }
    }
    if info.kind == "Pod" {
        let terminal = matches!(obj["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        let bound = obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
        let mut grace = opts.grace_period_seconds.unwrap_or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30));
        if !bound || terminal {
            grace = 0;
        }
        let current_grace = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
        if grace > 0 && current_grace.is_none_or(|c| grace < c) {
            let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
            let m = meta_mut(obj);
            m.insert("deletionTimestamp".into(), object::format_time(at).into());
            m.insert("deletionGracePeriodSeconds".into(), grace.into());
            return true;
        }
        if grace > 0 {
            return true;
        }
        meta_mut(obj).insert("deletionGracePeriodSeconds".into(), 0.into());
    }
    if !object::finalizers(obj).is_empty() {
        let m = meta_mut(obj);
        if !already {
            m.insert("deletionTimestamp".into(), object::now_rfc3339().into());
        }
        m.insert("deletionGracePeriodSeconds".into(), 0.into());
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_stay_in_their_prefix() {
        let t = encode_continue(42, "/registry/services/default/b");
        assert_eq!(decode_continue(&t, "/registry/services/").unwrap(), (42, "/registry/services/default/b".to_string()));
        assert!(decode_continue(&t, "/registry/pods/").is_err());
        assert!(decode_continue("garbage", "/registry/pods/").is_err());
    }

    #[test]
    fn qos_classes() {
        assert_eq!(pod_qos_class(&json!({"spec":{"containers":[{"name":"a"}]}})), "BestEffort");
        assert_eq!(pod_qos_class(&json!({"spec":{"containers":[{"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}})), "Guaranteed");
        assert_eq!(pod_qos_class(&json!({"spec":{"containers":[{"resources":{"requests":{"cpu":"1"}}}]}})), "Burstable");
    }
}
