//! Server-side printing: the `meta.k8s.io/v1` Table columns and cells kube-apiserver returns for
//! each kind (upstream `pkg/printers/internalversion/printers.go`), so `kubectl get` and `-o wide`
//! print what they print against a real cluster.
//!
//! OWNER: helper "api-tables" fills this in.

use serde_json::Value;

/// One `columnDefinitions` entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

/// The column definitions for a kind.
pub fn columns(kind: &str) -> Vec<Column> {
    let _ = kind;
    todo!()
}

/// The cells of one row (same order and count as [`columns`]); `now` is used for AGE.
pub fn row(kind: &str, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let _ = (kind, obj, now);
    todo!()
}
