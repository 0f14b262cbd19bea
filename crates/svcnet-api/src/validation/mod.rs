//! Validation of the served kinds, as kube-apiserver validates them: object metadata (names per
//! kind as DNS-1123 subdomain / label or DNS-1035 label, labels, annotations, generateName), and each
//! kind's fields, on create and on update (immutable fields).
//!
//! Objects arrive defaulted ([`crate::defaults`]) in their wire form; the messages and field paths
//! are upstream's so that kubectl prints what users know.

mod apps;
mod cluster;
mod discovery;
mod meta;
pub mod names;
mod networking;
mod pod;
mod service;
mod svcnet_io;
pub(crate) mod util;

use crate::FieldError;
use serde_json::Value;

/// Errors in a new object (already defaulted) of `kind`.
pub fn validate_create(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(kind, obj);
    errs.extend(validate_fields(kind, obj, None));
    errs
}

/// Errors in an update of `old` to `new` (both defaulted), including changes to immutable fields.
pub fn validate_update(kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(kind, new);
    errs.extend(meta::validate_object_meta_update(new, old));
    errs.extend(validate_fields(kind, new, Some(old)));
    errs
}

fn validate_fields(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match kind {
        "Service" => service::validate(obj, old),
        "Pod" => pod::validate(kind, obj, old),
        "Deployment" | "ReplicaSet" | "StatefulSet" => apps::validate(kind, obj, old),
        "NetworkPolicy" => networking::validate(kind, obj, old),
        "EndpointSlice" => discovery::validate(kind, obj, old),
        "IPAddressPool" => svcnet_io::validate(kind, obj),
        _ => cluster::validate(kind, obj, old),
    }
}
