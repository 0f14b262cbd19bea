//! The Kubernetes API as svcnet serves it, without any I/O.
//!
//! Everything here is a pure function of objects (as `serde_json::Value` in their wire form, decoded
//! into `k8s-openapi` types where a kind's rules need them): which resources exist ([`resources`]),
//! how a request body is decoded ([`decode`]), defaulted ([`defaults`]) and validated
//! ([`validation`]), how selectors match ([`selector`], [`fields`]) and how `kubectl get` prints
//! ([`table`]). The API server is the only caller that turns the errors into `Status` objects.

pub mod decode;
pub mod defaults;
pub mod field_error;
pub mod fields;
pub mod resources;
pub mod selector;
pub mod svcnet_io;
pub mod table;
pub mod validation;

pub use field_error::{FieldError, FieldErrorKind};
pub use resources::ResourceInfo;
