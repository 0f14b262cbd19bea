//! Field errors, rendered exactly as kube-apiserver's `field.Error` so that kubectl users see the
//! messages they know (`spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive`).

use serde_json::Value;

/// What is wrong with a field; each maps to upstream's `CauseType` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `FieldValueRequired`: "Required value"
    Required,
    /// `FieldValueInvalid`: "Invalid value"
    Invalid,
    /// `FieldValueDuplicate`: "Duplicate value"
    Duplicate,
    /// `FieldValueNotSupported`: "Unsupported value"
    NotSupported,
    /// `FieldValueForbidden`: "Forbidden"
    Forbidden,
    /// `FieldValueTooLong`: "Too long"
    TooLong,
    /// `FieldValueTooMany`: "Too many"
    TooMany,
}

impl FieldErrorKind {
    /// The `reason` of a `StatusCause`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
        }
    }
}

/// One invalid field: its path (`spec.ports[0].port`), what is wrong, the bad value and details.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    /// The offending value, rendered like Go's `%#v` (strings quoted) when shown.
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn new(kind: FieldErrorKind, field: impl Into<String>, value: Option<Value>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind, value, detail: detail.into() }
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Required, field, None, detail)
    }
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Invalid, field, Some(value.into()), detail)
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(FieldErrorKind::Duplicate, field, Some(value.into()), "")
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Forbidden, field, None, detail)
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(FieldErrorKind::TooLong, field, None, format!("may not be more than {max} bytes"))
    }
    /// `Unsupported value: "Foo": supported values: "A", "B"`.
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = if list.is_empty() { String::new() } else { format!("supported values: {}", list.join(", ")) };
        Self::new(FieldErrorKind::NotSupported, field, Some(value.into()), detail)
    }

    /// The message without the field path, as in a `StatusCause`.
    pub fn cause_message(&self) -> String {
        let head = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
        };
        let mut s = head.to_string();
        if let Some(v) = &self.value
            && !matches!(self.kind, FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong | FieldErrorKind::TooMany)
        {
            s.push_str(": ");
            s.push_str(&render_value(v));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.cause_message())
    }
}

/// Go's `%#v` of the value as upstream prints it: strings quoted, numbers and booleans bare.
pub fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        // A `[]string` prints as Go's `[]string{"a", "b"}`.
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let inner: Vec<String> = items.iter().map(render_value).collect();
            format!("[]string{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// The `message` of a 422 Invalid `Status`: `Service "x" is invalid: <one error>` or
/// `... is invalid: [<e1>, <e2>]`.
pub fn invalid_message(kind: &str, name: &str, errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    match parts.len() {
        0 => format!("{kind} {name:?} is invalid"),
        1 => format!("{kind} {name:?} is invalid: {}", parts[0]),
        _ => format!("{kind} {name:?} is invalid: [{}]", parts.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_upstream() {
        let e = FieldError::invalid("spec.ports[0].port", 0, "must be between 1 and 65535, inclusive");
        assert_eq!(e.to_string(), "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive");
        let e = FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "NodePort"]);
        assert_eq!(e.to_string(), r#"spec.type: Unsupported value: "Foo": supported values: "ClusterIP", "NodePort""#);
        let e = FieldError::required("metadata.name", "name or generateName is required");
        assert_eq!(e.to_string(), "metadata.name: Required value: name or generateName is required");
        let ips = FieldError::invalid("spec.clusterIPs", serde_json::json!(["10.0.0.5"]), "x");
        assert_eq!(ips.to_string(), r#"spec.clusterIPs: Invalid value: []string{"10.0.0.5"}: x"#);
        assert_eq!(
            invalid_message("Service", "x", &[e.clone(), e]),
            r#"Service "x" is invalid: [metadata.name: Required value: name or generateName is required, metadata.name: Required value: name or generateName is required]"#
        );
    }
}
