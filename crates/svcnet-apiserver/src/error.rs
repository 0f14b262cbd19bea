//! API errors and their `Status` form: the only place where errors become Kubernetes `Status`
//! objects, with the codes, reasons and messages kube-apiserver uses.

use serde_json::{Value, json};
use svcnet_api::{FieldError, ResourceInfo};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 404 `services "x" not found`.
    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} {:?} not found", info.qualified_plural(), name))
            .with_details(json!({"name": name, "group": info.group, "kind": info.plural}))
    }

    /// 404 for a path that serves nothing.
    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    /// 409 `services "x" already exists`.
    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} {:?} already exists", info.qualified_plural(), name))
            .with_details(json!({"name": name, "group": info.group, "kind": info.plural}))
    }

    /// 409 Conflict on a stale resourceVersion or failed precondition.
    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {} {:?}: {}", info.qualified_plural(), name, why))
            .with_details(json!({"name": name, "group": info.group, "kind": info.plural}))
    }

    pub fn modified(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(info, name, "the object has been modified; please apply your changes to the latest version and try again")
    }

    /// 422 Invalid with one cause per field error.
    pub fn invalid(info: &ResourceInfo, name: &str, errors: &[FieldError]) -> Self {
        let causes: Vec<Value> = errors.iter().map(|e| json!({"reason": e.kind.reason(), "message": e.cause_message(), "field": e.field})).collect();
        let group_kind = if info.group.is_empty() { info.kind.to_string() } else { format!("{}.{}", info.kind, info.group) };
        Self::new(422, "Invalid", svcnet_api::field_error::invalid_message(&group_kind, name, errors))
            .with_details(json!({"name": name, "group": info.group, "kind": info.kind, "causes": causes}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden(info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(403, "Forbidden", format!("{} {:?} is forbidden: {}", info.qualified_plural(), name, why))
            .with_details(json!({"name": name, "group": info.group, "kind": info.plural}))
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(405, "MethodNotAllowed", format!("the server does not allow this method on the requested resource ({method})")).with_details(json!({}))
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(406, "NotAcceptable", format!("only the following media types are accepted: application/json, application/yaml (got {accept:?})"))
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 410 Expired: a watch or list from a compacted resourceVersion.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<svcnet_store::Error> for ApiError {
    fn from(e: svcnet_store::Error) -> Self {
        match e {
            svcnet_store::Error::Compacted { requested, oldest } => Self::expired(format!("too old resource version: {requested} ({oldest})")),
            other => Self::internal(other.to_string()),
        }
    }
}
