//! Field validation of the kinds in this module, as kube-apiserver's validation does them.

use crate::FieldError;
use serde_json::Value;

/// Field errors (beyond object metadata) in `obj` of `kind`; `old` is the stored object on update.
pub(super) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let _ = (kind, obj, old);
    Vec::new()
}
