//! The OpenAPI documents: `/openapi/v2` (Swagger 2.0) and `/openapi/v3` (OpenAPI 3.0, one document
//! per group-version), generated from the `k8s-openapi` types and the resource table.
//!
//! Nothing here is hand-written schema: every definition comes from the `schemars::JsonSchema`
//! impls of `k8s-openapi` (whose definition names and descriptions are upstream's), the list kinds
//! are assembled from their item kinds, and the merge extensions that `k8s-openapi` lacks come from
//! a table generated from the Go API types ([`extensions`]). The paths and operations follow
//! kube-apiserver's shape: operation ids such as `patchCoreV1NamespacedService`,
//! `x-kubernetes-action`, an `x-kubernetes-group-version-kind` object on every operation and an
//! `x-kubernetes-group-version-kind` list on every kind's schema.
//!
//! What kubectl does with them:
//! - `kubectl apply` (`--validate=strict`, the default) reads `/openapi/v3`, then the document of
//!   the object's group-version, and checks that the PATCH operation carrying the kind's
//!   group-version-kind lists a query parameter `fieldValidation`; it then leaves validation to the
//!   server. Every PATCH operation here lists it.
//! - client-side `kubectl apply` computes its strategic merge patch from the v3 schemas: the
//!   `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy` of list fields decide whether a
//!   list is merged by key or replaced. It needs the PATCH operation to accept
//!   `application/strategic-merge-patch+json`.
//! - `kubectl explain` finds the kind through the operations of the resource's paths and then the
//!   schema whose `x-kubernetes-group-version-kind` list holds it, and prints the descriptions.
//!
//! The documents are static: they are built once, on first use, and kept with their serialized
//! bytes and a content hash (the `hash` of the v3 root's `serverRelativeURL`s, usable as ETag).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::autoscaling::v1 as autoscaling;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::JsonSchema;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use svcnet_api::resources::{RESOURCES, ResourceInfo};

mod extensions;

/// The Kubernetes version the documents describe (`info.version`).
pub const KUBERNETES_VERSION: &str = "v1.32.0";

/// One served document: its JSON value, its serialized bytes and a hash of those bytes.
#[derive(Debug)]
pub struct Document {
    value: Value,
    bytes: Bytes,
    hash: String,
}

impl Document {
    fn new(value: Value) -> Document {
        let bytes = Bytes::from(serde_json::to_vec(&value).expect("an OpenAPI document serializes"));
        let hash = content_hash(&bytes);
        Document { value, bytes, hash }
    }

    /// The document as JSON.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The serialized document (`application/json`); cloning is cheap.
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// Uppercase hex hash of [`Document::bytes`], stable for identical content.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The hash as a quoted HTTP entity tag.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hash)
    }
}

struct V3Docs {
    root: Document,
    by_path: BTreeMap<String, Document>,
}

fn v3_docs() -> &'static V3Docs {
    static V3: OnceLock<V3Docs> = OnceLock::new();
    V3.get_or_init(build_v3)
}

/// `/openapi/v3`: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=<HASH>"}, ...}}`
/// with an entry for every served group-version (`api/v1`, `apis/apps/v1`, ...) and, as upstream,
/// for the discovery documents `api`, `apis`, `apis/<group>` and `version`.
pub fn v3_root() -> Value {
    v3_docs().root.value.clone()
}

/// [`v3_root`] as a [`Document`] (bytes and hash).
pub fn v3_root_document() -> &'static Document {
    &v3_docs().root
}

/// `/openapi/v3/<path>` for `path` like `api/v1` or `apis/apps/v1` (a leading `/` and a
/// `?query` are ignored): the OpenAPI 3.0 document, or `None` when no such document exists.
pub fn v3_group_version(path: &str) -> Option<&'static Document> {
    let path = path.split('?').next().unwrap_or_default().trim_matches('/');
    v3_docs().by_path.get(path)
}

/// `/openapi/v2`: one Swagger 2.0 document for every served resource.
pub fn v2() -> &'static Document {
    static V2: OnceLock<Document> = OnceLock::new();
    V2.get_or_init(build_v2)
}

// ---------------------------------------------------------------------------------------------
// Schemas

/// The two dialects: they differ in where definitions live and in how a reference that carries
/// its own description is written (`$ref` with siblings in v2, `allOf: [{$ref}]` in v3, as
/// upstream writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V2,
    V3,
}

impl Flavor {
    fn settings(self) -> SchemaSettings {
        match self {
            // OpenAPI 3.0: schemas under /components/schemas, no type arrays (`nullable`
            // instead), references with siblings wrapped in `allOf`.
            Flavor::V3 => SchemaSettings::openapi3().with(|s| s.meta_schema = None),
            // Swagger 2.0 is draft-04-like JSON Schema under /definitions; `k8s-openapi` emits no
            // construct that needs a transform, and upstream keeps `$ref` siblings there.
            Flavor::V2 => SchemaSettings::draft07().with(|s| {
                s.meta_schema = None;
                s.transforms.clear();
            }),
        }
    }

    fn ref_prefix(self) -> &'static str {
        match self {
            Flavor::V2 => "#/definitions/",
            Flavor::V3 => "#/components/schemas/",
        }
    }

    fn reference(self, name: &str) -> Value {
        json!({ "$ref": format!("{}{}", self.ref_prefix(), name) })
    }

    fn described_reference(self, name: &str, description: &str) -> Value {
        match self {
            Flavor::V2 => json!({ "$ref": format!("{}{}", self.ref_prefix(), name), "description": description }),
            Flavor::V3 => json!({ "allOf": [self.reference(name)], "description": description }),
        }
    }
}

/// Adds the schema of the `k8s-openapi` type of `group/version/kind` to the generator; returns
/// its definition name, or `None` for a kind this module has no type for.
fn add_kind_schema(generator: &mut SchemaGenerator, group: &str, version: &str, kind: &str) -> Option<String> {
    macro_rules! kinds {
        ($($ty:ty),* $(,)?) => {
            $(
                if <$ty as Resource>::GROUP == group && <$ty as Resource>::VERSION == version && <$ty as Resource>::KIND == kind {
                    generator.subschema_for::<$ty>();
                    return Some(<$ty as JsonSchema>::schema_name().into_owned());
                }
            )*
        };
    }
    kinds!(
        core::Namespace,
        core::Pod,
        core::Service,
        core::Endpoints,
        core::Node,
        core::Event,
        core::ConfigMap,
        core::ServiceAccount,
        core::Secret,
        core::PersistentVolumeClaim,
        core::PersistentVolume,
        core::ReplicationController,
        core::ResourceQuota,
        core::LimitRange,
        core::PodTemplate,
        core::Binding,
        apps::Deployment,
        apps::ReplicaSet,
        apps::StatefulSet,
        apps::DaemonSet,
        apps::ControllerRevision,
        autoscaling::Scale,
        coordination::Lease,
        discovery::EndpointSlice,
        networking::NetworkPolicy,
        networking::Ingress,
        networking::IngressClass,
        svcnet_api::svcnet_io::IPAddressPool,
    );
    None
}

fn schema_name<T: JsonSchema>() -> String {
    T::schema_name().into_owned()
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

/// Definitions generated for one document, post-processed: merge extensions, group-version-kind
/// lists and the list kinds.
fn definitions(flavor: Flavor, resources: &[&ResourceInfo], discovery_only: DiscoverySchemas) -> Map<String, Value> {
    let mut generator = flavor.settings().into_generator();

    // Kinds and their lists.
    let mut kinds: Vec<(&ResourceInfo, String)> = Vec::new();
    for r in resources {
        if let Some(name) = add_kind_schema(&mut generator, r.group, r.version, r.kind) {
            kinds.push((r, name));
        }
    }
    let mut extra_gvks: Vec<(String, Value)> = Vec::new();
    if !resources.is_empty() {
        // What every group-version's operations use.
        generator.subschema_for::<meta::Status>();
        generator.subschema_for::<meta::DeleteOptions>();
        generator.subschema_for::<meta::Patch>();
        generator.subschema_for::<meta::WatchEvent<Value>>();
        generator.subschema_for::<meta::ListMeta>();
        generator.subschema_for::<meta::APIResourceList>();
        extra_gvks.push((schema_name::<meta::Status>(), json!([gvk("", "v1", "Status")])));
        // Upstream lists DeleteOptions and WatchEvent under every group-version.
        let gvs = all_group_versions();
        for (name, kind) in [(schema_name::<meta::DeleteOptions>(), "DeleteOptions"), (schema_name::<meta::WatchEvent<Value>>(), "WatchEvent")] {
            extra_gvks.push((name, Value::Array(gvs.iter().map(|(g, v)| gvk(g, v, kind)).collect())));
        }
    }
    if resources.iter().any(|r| r.has_subresource("scale")) {
        generator.subschema_for::<autoscaling::Scale>();
        extra_gvks.push((schema_name::<autoscaling::Scale>(), json!([gvk("autoscaling", "v1", "Scale")])));
    }
    if resources.iter().any(|r| r.kind == "Pod" && r.has_subresource("binding")) {
        generator.subschema_for::<core::Binding>();
        extra_gvks.push((schema_name::<core::Binding>(), json!([gvk("", "v1", "Binding")])));
    }
    match discovery_only {
        DiscoverySchemas::None => {}
        DiscoverySchemas::Core => {
            generator.subschema_for::<meta::APIVersions>();
        }
        DiscoverySchemas::Groups => {
            generator.subschema_for::<meta::APIGroupList>();
        }
        DiscoverySchemas::Group => {
            generator.subschema_for::<meta::APIGroup>();
        }
        DiscoverySchemas::Version => {
            generator.subschema_for::<k8s_openapi::apimachinery::pkg::version::Info>();
        }
        DiscoverySchemas::All => {
            generator.subschema_for::<meta::APIVersions>();
            generator.subschema_for::<meta::APIGroupList>();
            generator.subschema_for::<meta::APIGroup>();
            generator.subschema_for::<k8s_openapi::apimachinery::pkg::version::Info>();
        }
    }

    let mut defs = generator.take_definitions(true);

    for (r, name) in &kinds {
        if let Some(Value::Object(schema)) = defs.get_mut(name) {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk(r.group, r.version, r.kind)]));
        }
    }
    for (name, gvks) in extra_gvks {
        if let Some(Value::Object(schema)) = defs.get_mut(&name) {
            schema.insert("x-kubernetes-group-version-kind".into(), gvks);
        }
    }
    for (r, name) in &kinds {
        let (list_name, list) = list_schema(flavor, r, name, &defs);
        defs.insert(list_name, list);
    }
    apply_merge_extensions(&mut defs);
    defs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiscoverySchemas {
    None,
    Core,
    Groups,
    Group,
    Version,
    All,
}

/// `ServiceList` and the like, built like upstream's: `apiVersion`, `kind`, `items` and `metadata`.
fn list_schema(flavor: Flavor, r: &ResourceInfo, item_name: &str, defs: &Map<String, Value>) -> (String, Value) {
    let list_name = format!("{item_name}List");
    let list_kind = format!("{}List", r.kind);
    // The apiVersion and kind properties read the same on every kind: take the item's.
    let item_props = defs.get(item_name).and_then(|s| s.get("properties"));
    let prop = |key: &str| item_props.and_then(|p| p.get(key)).cloned().unwrap_or_else(|| json!({ "type": "string" }));
    let schema = json!({
        "description": format!("{list_kind} is a list of {} objects.", r.kind),
        "type": "object",
        "properties": {
            "apiVersion": prop("apiVersion"),
            "items": {
                "description": format!("List of {}.", r.plural),
                "type": "array",
                "items": flavor.reference(item_name),
            },
            "kind": prop("kind"),
            "metadata": flavor.described_reference(
                &schema_name::<meta::ListMeta>(),
                "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            ),
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [gvk(r.group, r.version, &list_kind)],
    });
    (list_name, schema)
}

/// Puts the `x-kubernetes-list-type`, `-list-map-keys`, `-patch-merge-key`, `-patch-strategy` and
/// `-map-type` keys where upstream has them.
fn apply_merge_extensions(defs: &mut Map<String, Value>) {
    for &(definition, property, list_type, map_keys, merge_key, strategy, map_type) in extensions::MERGE_EXTENSIONS {
        let Some(schema) = defs.get_mut(definition) else { continue };
        let target = if property.is_empty() {
            schema.as_object_mut()
        } else {
            schema.get_mut("properties").and_then(|p| p.get_mut(property)).and_then(Value::as_object_mut)
        };
        let Some(target) = target else { continue };
        if !list_type.is_empty() {
            target.insert("x-kubernetes-list-type".into(), list_type.into());
        }
        if !map_keys.is_empty() {
            target.insert("x-kubernetes-list-map-keys".into(), map_keys.iter().map(|k| Value::from(*k)).collect());
        }
        if !merge_key.is_empty() {
            target.insert("x-kubernetes-patch-merge-key".into(), merge_key.into());
        }
        if !strategy.is_empty() {
            target.insert("x-kubernetes-patch-strategy".into(), strategy.into());
        }
        if !map_type.is_empty() {
            target.insert("x-kubernetes-map-type".into(), map_type.into());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and operations, as a small model rendered into either dialect

#[derive(Debug, Clone)]
struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    description: String,
    required: bool,
}

fn query(name: &'static str, ty: &'static str, description: &str) -> Param {
    Param { name, location: "query", ty, description: description.to_string(), required: false }
}

fn path_param(name: &'static str, description: String) -> Param {
    Param { name, location: "path", ty: "string", description, required: true }
}

fn pretty() -> Param {
    query("pretty", "string", "If 'true', then the output is pretty printed.")
}

fn dry_run() -> Param {
    query(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
    )
}

fn field_manager(patch: bool) -> Param {
    let description = if patch {
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch)."
    } else {
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint."
    };
    query("fieldManager", "string", description)
}

fn field_validation() -> Param {
    query(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
    )
}

fn force() -> Param {
    query(
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
    )
}

fn write_params() -> Vec<Param> {
    vec![dry_run(), field_manager(false), field_validation()]
}

fn patch_params() -> Vec<Param> {
    vec![dry_run(), field_manager(true), field_validation(), force()]
}

fn list_params() -> Vec<Param> {
    vec![
        query(
            "allowWatchBookmarks",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.",
        ),
        query(
            "continue",
            "string",
            "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid whether due to expiration (generally five to fifteen minutes) or a configuration change on the server, the server will respond with a 410 ResourceExpired error together with a continue token.",
        ),
        query("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        query("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        query(
            "limit",
            "integer",
            "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
        ),
        query(
            "resourceVersion",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        query(
            "sendInitialEvents",
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event will be sent. The bookmark will report the ResourceVersion (RV) corresponding to the set of objects, and be marked with `\"k8s.io/initial-events-end\": \"true\"` annotation.",
        ),
        query("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
        query(
            "watch",
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
        ),
    ]
}

fn delete_params() -> Vec<Param> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
        ),
        query(
            "orphanDependents",
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
        ),
    ]
}

fn delete_collection_params() -> Vec<Param> {
    let mut params = delete_params();
    params.extend(list_params().into_iter().filter(|p| !matches!(p.name, "allowWatchBookmarks" | "watch")));
    params.sort_by_key(|p| p.name);
    params
}

/// What a response or request body carries.
#[derive(Debug, Clone)]
enum Payload {
    /// A definition, by name.
    Schema(String),
    /// A string (logs, streams).
    Text,
}

#[derive(Debug, Clone)]
struct Body {
    payload: Payload,
    content_types: Vec<&'static str>,
    required: bool,
}

#[derive(Debug, Clone)]
struct Operation {
    method: &'static str,
    id: String,
    description: String,
    tag: String,
    /// `x-kubernetes-action`; none on discovery operations.
    action: Option<&'static str>,
    /// `x-kubernetes-group-version-kind`.
    gvk: Option<(String, String, String)>,
    params: Vec<Param>,
    body: Option<Body>,
    /// Status codes with their payload.
    responses: Vec<(&'static str, Payload)>,
    produces: Vec<&'static str>,
}

#[derive(Debug, Clone)]
struct PathItem {
    path: String,
    params: Vec<Param>,
    operations: Vec<Operation>,
}

const JSON: &str = "application/json";
const WATCH_JSON: &str = "application/json;stream=watch";
const PATCH_CONTENT_TYPES: [&str; 4] =
    ["application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"];

/// `CoreV1`, `AppsV1`, `DiscoveryV1`, `NetworkingV1`, `RbacAuthorizationV1`: the group-version
/// part of upstream's operation ids.
fn id_group_version(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group.strip_suffix(".k8s.io").unwrap_or(group) };
    let mut out: String = group.split('.').map(capitalize).collect();
    out.push_str(&capitalize(version));
    out
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `core_v1`, `apps_v1`, `discovery_v1`: upstream's operation tags.
fn tag(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group.strip_suffix(".k8s.io").unwrap_or(group) };
    format!("{}_{}", group.replace('.', "_"), version)
}

fn api_prefix(group: &str, version: &str) -> String {
    if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") }
}

/// The definition names of the objects a resource's operations exchange.
struct ResourceSchemas {
    kind: String,
    list: String,
}

fn resource_paths(r: &ResourceInfo, schemas: &ResourceSchemas) -> Vec<PathItem> {
    let gv_id = id_group_version(r.group, r.version);
    let tag = tag(r.group, r.version);
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let prefix = api_prefix(r.group, r.version);
    let collection = if r.namespaced { format!("{prefix}/namespaces/{{namespace}}/{}", r.plural) } else { format!("{prefix}/{}", r.plural) };
    let item = format!("{collection}/{{name}}");
    let own_gvk = Some((r.group.to_string(), r.version.to_string(), kind.to_string()));
    let status = schema_name::<meta::Status>();
    let delete_options = schema_name::<meta::DeleteOptions>();
    let patch = schema_name::<meta::Patch>();
    let object = || Payload::Schema(schemas.kind.clone());
    let namespace_param = || path_param("namespace", "object name and auth scope, such as for teams and projects".into());
    let name_param = |of: &str| path_param("name", format!("name of the {of}"));
    let scope_params = |mut params: Vec<Param>| {
        if r.namespaced {
            params.push(namespace_param());
        }
        params.push(pretty());
        params
    };

    let op = |method: &'static str, id: String, description: String, action: &'static str| Operation {
        method,
        id,
        description,
        tag: tag.clone(),
        action: Some(action),
        gvk: own_gvk.clone(),
        params: Vec::new(),
        body: None,
        responses: Vec::new(),
        produces: vec![JSON],
    };
    let json_body = |payload: Payload| Some(Body { payload, content_types: vec!["*/*"], required: true });
    let patch_body = || Some(Body { payload: Payload::Schema(patch.clone()), content_types: PATCH_CONTENT_TYPES.to_vec(), required: true });
    let delete_body = || Some(Body { payload: Payload::Schema(delete_options.clone()), content_types: vec!["*/*"], required: false });

    let mut items = Vec::new();

    // The collection: list (and watch), create, delete collection.
    let mut ops = Vec::new();
    ops.push(Operation {
        params: list_params(),
        responses: vec![("200", Payload::Schema(schemas.list.clone()))],
        produces: vec![JSON, WATCH_JSON],
        ..op("get", format!("list{gv_id}{ns}{kind}"), format!("list or watch objects of kind {kind}"), "list")
    });
    ops.push(Operation {
        params: write_params(),
        body: json_body(object()),
        responses: vec![("200", object()), ("201", object()), ("202", object())],
        ..op("post", format!("create{gv_id}{ns}{kind}"), format!("create {}", article(kind)), "post")
    });
    // Upstream serves no deletecollection for namespaces.
    if kind != "Namespace" {
        ops.push(Operation {
            params: delete_collection_params(),
            body: delete_body(),
            responses: vec![("200", Payload::Schema(status.clone()))],
            ..op("delete", format!("delete{gv_id}Collection{ns}{kind}"), format!("delete collection of {kind}"), "deletecollection")
        });
    }
    items.push(PathItem { path: collection.clone(), params: scope_params(Vec::new()), operations: ops });

    // One object: read, replace, patch, delete.
    // Deleting a Pod or Service returns the object; other kinds return a Status.
    let deleted = if matches!(kind, "Pod" | "Service") { object() } else { Payload::Schema(status.clone()) };
    let ops = vec![
        Operation { responses: vec![("200", object())], ..op("get", format!("read{gv_id}{ns}{kind}"), format!("read the specified {kind}"), "get") },
        Operation {
            params: write_params(),
            body: json_body(object()),
            responses: vec![("200", object()), ("201", object())],
            ..op("put", format!("replace{gv_id}{ns}{kind}"), format!("replace the specified {kind}"), "put")
        },
        Operation {
            params: patch_params(),
            body: patch_body(),
            responses: vec![("200", object()), ("201", object())],
            ..op("patch", format!("patch{gv_id}{ns}{kind}"), format!("partially update the specified {kind}"), "patch")
        },
        Operation {
            params: delete_params(),
            body: delete_body(),
            responses: vec![("200", deleted.clone()), ("202", deleted)],
            ..op("delete", format!("delete{gv_id}{ns}{kind}"), format!("delete {}", article(kind)), "delete")
        },
    ];
    items.push(PathItem { path: item.clone(), params: scope_params(vec![name_param(kind)]), operations: ops });

    // Listing across namespaces.
    if r.namespaced {
        let mut params = list_params();
        params.push(pretty());
        params.sort_by_key(|p| p.name);
        items.push(PathItem {
            path: format!("{prefix}/{}", r.plural),
            params: Vec::new(),
            operations: vec![Operation {
                params,
                responses: vec![("200", Payload::Schema(schemas.list.clone()))],
                produces: vec![JSON, WATCH_JSON],
                ..op("get", format!("list{gv_id}{kind}ForAllNamespaces"), format!("list or watch objects of kind {kind}"), "list")
            }],
        });
    }

    for sub in r.subresources {
        match *sub {
            "status" | "scale" => {
                let (suffix, payload, sub_gvk) = if *sub == "status" {
                    ("Status", object(), own_gvk.clone())
                } else {
                    ("Scale", Payload::Schema(schema_name::<autoscaling::Scale>()), Some(("autoscaling".to_string(), "v1".to_string(), "Scale".to_string())))
                };
                let what = sub;
                let sub_op = |method, verb: &str, description: String, action| Operation {
                    gvk: sub_gvk.clone(),
                    ..op(method, format!("{verb}{gv_id}{ns}{kind}{suffix}"), description, action)
                };
                let ops = vec![
                    Operation { responses: vec![("200", payload.clone())], ..sub_op("get", "read", format!("read {what} of the specified {kind}"), "get") },
                    Operation {
                        params: write_params(),
                        body: json_body(payload.clone()),
                        responses: vec![("200", payload.clone()), ("201", payload.clone())],
                        ..sub_op("put", "replace", format!("replace {what} of the specified {kind}"), "put")
                    },
                    Operation {
                        params: patch_params(),
                        body: patch_body(),
                        responses: vec![("200", payload.clone()), ("201", payload.clone())],
                        ..sub_op("patch", "patch", format!("partially update {what} of the specified {kind}"), "patch")
                    },
                ];
                let of = if *sub == "scale" { "Scale" } else { kind };
                items.push(PathItem { path: format!("{item}/{sub}"), params: scope_params(vec![name_param(of)]), operations: ops });
            }
            "finalize" => {
                let ops = vec![Operation {
                    params: write_params(),
                    body: json_body(object()),
                    responses: vec![("200", object()), ("201", object())],
                    ..op("put", format!("replace{gv_id}{ns}{kind}Finalize"), format!("replace finalize of the specified {kind}"), "put")
                }];
                items.push(PathItem { path: format!("{item}/finalize"), params: scope_params(vec![name_param(kind)]), operations: ops });
            }
            "binding" => {
                let binding = Payload::Schema(schema_name::<core::Binding>());
                let ops = vec![Operation {
                    params: write_params(),
                    body: json_body(binding.clone()),
                    responses: vec![("200", binding.clone()), ("201", binding.clone()), ("202", binding)],
                    gvk: Some(("".into(), "v1".into(), "Binding".into())),
                    ..op("post", format!("create{gv_id}{ns}{kind}Binding"), "create binding of a Pod".into(), "post")
                }];
                let mut params = vec![name_param("Binding")];
                params.extend(scope_params(Vec::new()));
                items.push(PathItem { path: format!("{item}/binding"), params, operations: ops });
            }
            "log" => {
                let params = vec![
                    query("container", "string", "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
                    query("follow", "boolean", "Follow the log stream of the pod. Defaults to false."),
                    query(
                        "insecureSkipTLSVerifyBackend",
                        "boolean",
                        "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to.",
                    ),
                    query(
                        "limitBytes",
                        "integer",
                        "If set, the number of bytes to read from the server before terminating the log output. This may not display a complete final line of logging, and may return slightly more or slightly less than the specified limit.",
                    ),
                    query("previous", "boolean", "Return previous terminated container logs. Defaults to false."),
                    query(
                        "sinceSeconds",
                        "integer",
                        "A relative time in seconds before the current time from which to show logs. If this value precedes the time a pod was started, only logs since the pod start will be returned. If this value is in the future, no logs will be returned. Only one of sinceSeconds or sinceTime may be specified.",
                    ),
                    query(
                        "stream",
                        "string",
                        "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used, and both stdout and stderr are returned interleaved.",
                    ),
                    query(
                        "tailLines",
                        "integer",
                        "If set, the number of lines from the end of the logs to show. If not specified, logs are shown from the creation of the container or sinceSeconds or sinceTime.",
                    ),
                    query(
                        "timestamps",
                        "boolean",
                        "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false.",
                    ),
                ];
                let ops = vec![Operation {
                    params,
                    responses: vec![("200", Payload::Text)],
                    produces: vec!["text/plain"],
                    ..op("get", format!("read{gv_id}{ns}{kind}Log"), format!("read log of the specified {kind}"), "get")
                }];
                items.push(PathItem { path: format!("{item}/log"), params: scope_params(vec![name_param(kind)]), operations: ops });
            }
            "exec" | "portforward" => {
                let (options, suffix, params) = if *sub == "exec" {
                    (
                        "PodExecOptions",
                        "Exec",
                        vec![
                            query("command", "string", "Command is the remote command to execute. argv array. Not executed within a shell."),
                            query(
                                "container",
                                "string",
                                "Container in which to execute the command. Defaults to only container if there is only one container in the pod.",
                            ),
                            query("stderr", "boolean", "Redirect the standard error stream of the pod for this call."),
                            query("stdin", "boolean", "Redirect the standard input stream of the pod for this call. Defaults to false."),
                            query("stdout", "boolean", "Redirect the standard output stream of the pod for this call."),
                            query("tty", "boolean", "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false."),
                        ],
                    )
                } else {
                    ("PodPortForwardOptions", "Portforward", vec![query("ports", "integer", "List of ports to forward Required when using WebSockets")])
                };
                let ops = ["get", "post"]
                    .into_iter()
                    .map(|method| Operation {
                        params: params.clone(),
                        responses: vec![("200", Payload::Text)],
                        produces: vec!["*/*"],
                        gvk: Some(("".into(), "v1".into(), options.into())),
                        ..op(
                            method,
                            format!("connect{gv_id}{}{ns}{kind}{suffix}", capitalize(method)),
                            format!("connect {method} requests to {sub} of {kind}"),
                            "connect",
                        )
                    })
                    .collect();
                items.push(PathItem { path: format!("{item}/{sub}"), params: scope_params(vec![name_param(options)]), operations: ops });
            }
            _ => {}
        }
    }
    items
}

fn article(kind: &str) -> String {
    if kind.starts_with(['A', 'E', 'I', 'O', 'U']) { format!("an {kind}") } else { format!("a {kind}") }
}

/// `GET /api/v1/` or `/apis/apps/v1/`: the group-version's APIResourceList.
fn resource_list_path(group: &str, version: &str) -> PathItem {
    discovery_path(
        format!("{}/", api_prefix(group, version)),
        format!("get{}APIResources", id_group_version(group, version)),
        "get available resources".into(),
        tag(group, version),
        schema_name::<meta::APIResourceList>(),
    )
}

fn discovery_path(path: String, id: String, description: String, tag: String, schema: String) -> PathItem {
    PathItem {
        path,
        params: Vec::new(),
        operations: vec![Operation {
            method: "get",
            id,
            description,
            tag,
            action: None,
            gvk: None,
            params: Vec::new(),
            body: None,
            responses: vec![("200", Payload::Schema(schema))],
            produces: vec![JSON],
        }],
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn render_param(flavor: Flavor, p: &Param) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), p.name.into());
    out.insert("in".into(), p.location.into());
    out.insert("description".into(), p.description.clone().into());
    if p.required {
        out.insert("required".into(), true.into());
    }
    match flavor {
        Flavor::V2 => {
            out.insert("type".into(), p.ty.into());
            out.insert("uniqueItems".into(), true.into());
        }
        Flavor::V3 => {
            out.insert("schema".into(), json!({ "type": p.ty, "uniqueItems": true }));
        }
    }
    Value::Object(out)
}

fn render_payload(flavor: Flavor, payload: &Payload) -> Value {
    match payload {
        Payload::Schema(name) => flavor.reference(name),
        Payload::Text => json!({ "type": "string" }),
    }
}

fn response_description(code: &str) -> &'static str {
    match code {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        _ => "Unauthorized",
    }
}

fn render_operation(flavor: Flavor, op: &Operation) -> Value {
    let mut out = Map::new();
    out.insert("tags".into(), json!([op.tag]));
    out.insert("description".into(), op.description.clone().into());
    out.insert("operationId".into(), op.id.clone().into());
    let mut params: Vec<Value> = op.params.iter().map(|p| render_param(flavor, p)).collect();
    let mut responses = Map::new();
    match flavor {
        Flavor::V2 => {
            if let Some(body) = &op.body {
                out.insert("consumes".into(), json!(body.content_types));
                let mut body_param = json!({ "name": "body", "in": "body", "schema": render_payload(flavor, &body.payload) });
                if body.required {
                    body_param["required"] = true.into();
                }
                params.insert(0, body_param);
            }
            out.insert("produces".into(), json!(op.produces));
            out.insert("schemes".into(), json!(["https"]));
            for (code, payload) in &op.responses {
                responses.insert((*code).into(), json!({ "description": response_description(code), "schema": render_payload(flavor, payload) }));
            }
        }
        Flavor::V3 => {
            if let Some(body) = &op.body {
                let schema = render_payload(flavor, &body.payload);
                let content: Map<String, Value> = body.content_types.iter().map(|ct| ((*ct).to_string(), json!({ "schema": schema.clone() }))).collect();
                out.insert("requestBody".into(), json!({ "content": content, "required": body.required }));
            }
            for (code, payload) in &op.responses {
                let schema = render_payload(flavor, payload);
                let content: Map<String, Value> = op.produces.iter().map(|ct| ((*ct).to_string(), json!({ "schema": schema.clone() }))).collect();
                responses.insert((*code).into(), json!({ "description": response_description(code), "content": content }));
            }
        }
    }
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));
    out.insert("responses".into(), Value::Object(responses));
    if let Some(action) = op.action {
        out.insert("x-kubernetes-action".into(), action.into());
    }
    if let Some((group, version, kind)) = &op.gvk {
        // An object on operations (a list on schemas), as kubectl's lookups expect.
        out.insert("x-kubernetes-group-version-kind".into(), gvk(group, version, kind));
    }
    Value::Object(out)
}

fn render_paths(flavor: Flavor, items: &[PathItem]) -> Map<String, Value> {
    let mut paths = Map::new();
    for item in items {
        let mut out = Map::new();
        for op in &item.operations {
            out.insert(op.method.into(), render_operation(flavor, op));
        }
        if !item.params.is_empty() {
            out.insert("parameters".into(), item.params.iter().map(|p| render_param(flavor, p)).collect());
        }
        paths.insert(item.path.clone(), Value::Object(out));
    }
    paths
}

fn info() -> Value {
    json!({ "title": "Kubernetes", "version": KUBERNETES_VERSION })
}

fn bearer_token() -> Value {
    json!({ "type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header" })
}

fn v3_document(paths: Map<String, Value>, schemas: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "BearerToken": bearer_token() },
        },
        "security": [{ "BearerToken": [] }],
    })
}

// ---------------------------------------------------------------------------------------------
// Documents

/// Served group-versions in table order.
fn all_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The paths of some resources and the definitions they use.
fn resources_spec(flavor: Flavor, resources: &[&ResourceInfo]) -> (Vec<PathItem>, Map<String, Value>) {
    let defs = definitions(flavor, resources, if flavor == Flavor::V2 { DiscoverySchemas::All } else { DiscoverySchemas::None });
    let mut items = Vec::new();
    let mut gvs: Vec<(&str, &str)> = Vec::new();
    for r in resources {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
            items.push(resource_list_path(r.group, r.version));
        }
        let mut probe = SchemaSettings::default().into_generator();
        let Some(kind) = add_kind_schema(&mut probe, r.group, r.version, r.kind) else { continue };
        let schemas = ResourceSchemas { list: format!("{kind}List"), kind };
        items.extend(resource_paths(r, &schemas));
    }
    (items, defs)
}

fn group_version_document(group: &str, version: &str) -> Value {
    let resources: Vec<&ResourceInfo> = RESOURCES.iter().filter(|r| r.group == group && r.version == version).collect();
    let (items, defs) = resources_spec(Flavor::V3, &resources);
    v3_document(render_paths(Flavor::V3, &items), defs)
}

/// Upstream's discovery documents: `api`, `apis`, `apis/<group>` and `version`.
fn discovery_documents() -> Vec<(String, Value)> {
    let single = |item: PathItem, which: DiscoverySchemas| {
        let defs = definitions(Flavor::V3, &[], which);
        v3_document(render_paths(Flavor::V3, &[item]), defs)
    };
    let mut out = vec![
        (
            "api".to_string(),
            single(
                discovery_path(
                    "/api/".into(),
                    "getCoreAPIVersions".into(),
                    "get available API versions".into(),
                    "core".into(),
                    schema_name::<meta::APIVersions>(),
                ),
                DiscoverySchemas::Core,
            ),
        ),
        (
            "apis".to_string(),
            single(
                discovery_path(
                    "/apis/".into(),
                    "getAPIVersions".into(),
                    "get available API versions".into(),
                    "apis".into(),
                    schema_name::<meta::APIGroupList>(),
                ),
                DiscoverySchemas::Groups,
            ),
        ),
        (
            "version".to_string(),
            single(
                discovery_path(
                    "/version/".into(),
                    "getCodeVersion".into(),
                    "get the version information for this server".into(),
                    "version".into(),
                    schema_name::<k8s_openapi::apimachinery::pkg::version::Info>(),
                ),
                DiscoverySchemas::Version,
            ),
        ),
    ];
    let mut groups: Vec<&str> = Vec::new();
    for (group, _) in all_group_versions() {
        if !group.is_empty() && !groups.contains(&group) {
            groups.push(group);
        }
    }
    for group in groups {
        let short = group.strip_suffix(".k8s.io").unwrap_or(group);
        let id_group: String = short.split('.').map(capitalize).collect();
        out.push((
            format!("apis/{group}"),
            single(
                discovery_path(
                    format!("/apis/{group}/"),
                    format!("get{id_group}APIGroup"),
                    "get information of a group".into(),
                    short.replace('.', "_"),
                    schema_name::<meta::APIGroup>(),
                ),
                DiscoverySchemas::Group,
            ),
        ));
    }
    out
}

fn build_v3() -> V3Docs {
    let mut by_path = BTreeMap::new();
    for (group, version) in all_group_versions() {
        let path = api_prefix(group, version).trim_start_matches('/').to_string();
        by_path.insert(path, Document::new(group_version_document(group, version)));
    }
    for (path, value) in discovery_documents() {
        by_path.insert(path, Document::new(value));
    }
    let paths: Map<String, Value> =
        by_path.iter().map(|(path, doc)| (path.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash) }))).collect();
    V3Docs { root: Document::new(json!({ "paths": paths })), by_path }
}

fn build_v2() -> Document {
    let resources: Vec<&ResourceInfo> = RESOURCES.iter().collect();
    let (mut items, defs) = resources_spec(Flavor::V2, &resources);
    let mut discovery = vec![
        discovery_path("/api/".into(), "getCoreAPIVersions".into(), "get available API versions".into(), "core".into(), schema_name::<meta::APIVersions>()),
        discovery_path("/apis/".into(), "getAPIVersions".into(), "get available API versions".into(), "apis".into(), schema_name::<meta::APIGroupList>()),
        discovery_path(
            "/version/".into(),
            "getCodeVersion".into(),
            "get the version information for this server".into(),
            "version".into(),
            schema_name::<k8s_openapi::apimachinery::pkg::version::Info>(),
        ),
    ];
    let mut groups: Vec<&str> = Vec::new();
    for (group, _) in all_group_versions() {
        if !group.is_empty() && !groups.contains(&group) {
            groups.push(group);
            let short = group.strip_suffix(".k8s.io").unwrap_or(group);
            let id_group: String = short.split('.').map(capitalize).collect();
            discovery.push(discovery_path(
                format!("/apis/{group}/"),
                format!("get{id_group}APIGroup"),
                "get information of a group".into(),
                short.replace('.', "_"),
                schema_name::<meta::APIGroup>(),
            ));
        }
    }
    items.extend(discovery);
    Document::new(json!({
        "swagger": "2.0",
        "info": info(),
        "paths": render_paths(Flavor::V2, &items),
        "definitions": defs,
        "securityDefinitions": { "BearerToken": bearer_token() },
        "security": [{ "BearerToken": [] }],
    }))
}

/// FNV-1a (128 bit) of the bytes, as 32 uppercase hex digits: stable across builds and platforms.
fn content_hash(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    for b in bytes {
        hash ^= u128::from(*b);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{hash:032X}")
}

/// The component schemas of the v3 document serving `group/version`, and the definition name of
/// `kind` in it (for schema-driven work such as strategic merge patch).
pub fn kind_schema(group: &str, version: &str, kind: &str) -> Option<(&'static Map<String, Value>, &'static str)> {
    kind_schemas().get(&(group.to_string(), version.to_string(), kind.to_string())).map(|(schemas, name)| (*schemas, name.as_str()))
}

/// (group, version, kind) → the component schemas holding the kind and its definition name.
type KindSchemas = std::collections::HashMap<(String, String, String), (&'static Map<String, Value>, String)>;

/// Every kind's schema root, found once: patches and `managedFields` look it up on every write.
fn kind_schemas() -> &'static KindSchemas {
    static INDEX: OnceLock<KindSchemas> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = std::collections::HashMap::new();
        // A group-version's own document first, so that a kind served only as a subresource
        // (autoscaling/v1 Scale) falls back to the first parent document that has it.
        let mut docs: Vec<(&String, &'static Document)> = v3_docs().by_path.iter().collect();
        docs.sort_by_key(|(path, _)| path.as_str());
        for (path, doc) in docs {
            let Some(schemas) = doc.value.get("components").and_then(|c| c.get("schemas")).and_then(Value::as_object) else { continue };
            for (name, schema) in schemas {
                for g in schema.get("x-kubernetes-group-version-kind").and_then(Value::as_array).into_iter().flatten() {
                    let (Some(group), Some(version), Some(kind)) = (g["group"].as_str(), g["version"].as_str(), g["kind"].as_str()) else { continue };
                    let own = if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") } == *path;
                    let key = (group.to_string(), version.to_string(), kind.to_string());
                    if own || !index.contains_key(&key) {
                        index.insert(key, (schemas, name.clone()));
                    }
                }
            }
        }
        index
    })
}
