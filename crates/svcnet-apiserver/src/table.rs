//! `meta.k8s.io/v1` Table and `PartialObjectMetadata` responses around svcnet-api's printers.

use serde_json::{Value, json};

/// Metadata-only form of an object (what a Table row carries and what metadata-only clients
/// such as the garbage collector ask for).
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A Table of `objects`; `columns` false leaves out the column definitions (watch events
/// after the first, as kube-apiserver does).
pub fn to_table(kind: &str, objects: &[Value], list_meta: Option<Value>, columns: bool) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects.iter().map(|o| json!({"cells": svcnet_api::table::row(kind, o, now), "object": partial_metadata(o)})).collect();
    let defs = if columns { serde_json::to_value(svcnet_api::table::columns(kind)).unwrap_or_default() } else { json!([]) };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta.unwrap_or_else(|| json!({})),
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// A `PartialObjectMetadataList`.
pub fn partial_metadata_list(objects: &[Value], list_meta: Value) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "items": objects.iter().map(partial_metadata).collect::<Vec<_>>(),
    })
}
