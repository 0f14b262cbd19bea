//! Label selectors (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) and field selectors (`a=b,c!=d`),
//! parsed and matched as apimachinery's `labels` and `fields` packages do.
//!
//! OWNER: helper "api-validation" fills this in. Signatures are the contract with the API server.

use std::collections::BTreeMap;

/// A selector string that does not parse; the API server answers 400 BadRequest with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Placeholder,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let _ = s;
        todo!()
    }
    /// Builds one from a `metav1.LabelSelector` (matchLabels and matchExpressions).
    pub fn from_api(sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Result<Self, SelectorError> {
        let _ = sel;
        todo!()
    }
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let _ = labels;
        let _ = &self.requirements;
        let _ = Requirement::Placeholder;
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, wanted value, equal?) triples.
    pub requirements: Vec<(String, String, bool)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let _ = s;
        todo!()
    }
    /// True when every requirement holds; `get` returns a field's value (or None when absent,
    /// which compares as the empty string, as upstream).
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        let _ = get;
        todo!()
    }
}
