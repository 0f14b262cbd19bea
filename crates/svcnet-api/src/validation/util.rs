//! Small helpers shared by the per-kind validators: field paths and typed reads of wire-form JSON.

use crate::FieldError;
use serde_json::Value;

/// A field path as upstream renders it: `spec.ports[0].port`, `metadata.labels`.
#[derive(Debug, Clone)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root(name: &str) -> Path {
        Path(name.to_string())
    }
    /// `self.name`
    pub(crate) fn child(&self, name: &str) -> Path {
        if self.0.is_empty() { Path(name.to_string()) } else { Path(format!("{}.{name}", self.0)) }
    }
    /// `self[i]`
    pub(crate) fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }
    /// `self[key]` (map entries, as upstream's `Key`).
    pub(crate) fn key(&self, k: &str) -> Path {
        Path(format!("{}[{k}]", self.0))
    }
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Path> for String {
    fn from(p: &Path) -> String {
        p.0.clone()
    }
}

impl From<Path> for String {
    fn from(p: Path) -> String {
        p.0
    }
}

/// The string at `v[key]`, if it is a string.
pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The array at `v[key]`, or an empty slice.
pub(crate) fn arr_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// One `Invalid value` error per message of a name check.
pub(crate) fn invalid_each(path: &Path, value: &str, msgs: Vec<String>) -> Vec<FieldError> {
    msgs.into_iter().map(|m| FieldError::invalid(path, value, m)).collect()
}

/// `field is immutable` when `new` and `old` differ at `key` (absent equals null).
pub(crate) fn immutable(path: &Path, new: Option<&Value>, old: Option<&Value>) -> Option<FieldError> {
    let n = new.cloned().unwrap_or(Value::Null);
    let o = old.cloned().unwrap_or(Value::Null);
    (n != o).then(|| FieldError::invalid(path, n, "field is immutable"))
}

/// Validates a label map as `ValidateLabels`: qualified-name keys, label values.
pub(crate) fn validate_labels(labels: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(map) = labels.and_then(Value::as_object) {
        for (k, v) in map {
            errs.extend(invalid_each(path, k, super::names::is_qualified_name(k)));
            match v.as_str() {
                Some(s) => errs.extend(invalid_each(path, s, super::names::is_valid_label_value(s))),
                None => errs.push(FieldError::invalid(path, v.clone(), "must be a string")),
            }
        }
    }
    errs
}

/// Validates a `metav1.LabelSelector` as `ValidateLabelSelector`.
pub(crate) fn validate_label_selector(sel: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = validate_labels(sel.get("matchLabels"), &path.child("matchLabels"));
    for (i, req) in arr_at(sel, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let op = str_at(req, "operator").unwrap_or("");
        let values = arr_at(req, "values");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(p.child("values"), "must be specified when `operator` is 'In' or 'NotIn'"));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(p.child("values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"));
                }
            }
            _ => errs.push(FieldError::invalid(p.child("operator"), op, "not a valid selector operator")),
        }
        let key = str_at(req, "key").unwrap_or("");
        errs.extend(invalid_each(&p.child("key"), key, super::names::is_qualified_name(key)));
        for (j, v) in values.iter().enumerate() {
            let s = v.as_str().unwrap_or("");
            errs.extend(invalid_each(&p.child("values").index(j), s, super::names::is_valid_label_value(s)));
        }
    }
    errs
}

/// `must be greater than or equal to 0` for a negative integer at `v[key]`.
pub(crate) fn non_negative(v: &Value, key: &str, path: &Path) -> Option<FieldError> {
    let n = v.get(key)?.as_i64()?;
    (n < 0).then(|| FieldError::invalid(path.child(key), n, "must be greater than or equal to 0"))
}
