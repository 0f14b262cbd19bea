//! `metav1.LabelSelector` matching, as apimachinery's `LabelSelectorAsSelector` does: every
//! `matchLabels` pair and every `matchExpressions` requirement must hold; an empty selector
//! selects everything.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use crate::{Error, Result};

/// A compiled label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

// === impl Selector ===

impl Selector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Compiles a `LabelSelector`. Unknown operators, and `In`/`NotIn` without values, are errors
    /// (the API server rejects them; a policy decoded from a file may still carry them).
    pub fn new(selector: &metav1::LabelSelector) -> Result<Selector> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in selector.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(Error::InvalidSelector(format!("{}: values must be non-empty for operator {}", e.key, e.operator)));
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(Error::InvalidSelector(format!("{}: values must be empty for operator {}", e.key, e.operator)));
                }
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => return Err(Error::InvalidSelector(format!("{}: {other:?} is not a valid label selector operator", e.key))),
            };
            requirements.push(r);
        }
        Ok(Selector { requirements })
    }

    /// Whether this is `{}`.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // As upstream: a missing key satisfies NotIn.
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

impl std::fmt::Display for Selector {
    /// The selector in `kubectl`'s string form (`a=b,c in (d,e),!f`), `<all>` when empty.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("<all>");
        }
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::In(k, vs) if vs.len() == 1 => format!("{k}={}", vs[0]),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expr(key: &str, op: &str, values: &[&str]) -> metav1::LabelSelectorRequirement {
        metav1::LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() { None } else { Some(values.iter().map(|s| s.to_string()).collect()) },
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_selects_everything() {
        let s = Selector::new(&metav1::LabelSelector::default()).unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
        assert_eq!(s.to_string(), "<all>");
    }

    #[test]
    fn operators_as_upstream() {
        let s = Selector::new(&metav1::LabelSelector {
            match_labels: Some([("pod".to_string(), "a".to_string())].into()),
            match_expressions: Some(vec![expr("ns", "NotIn", &["y"]), expr("x", "Exists", &[]), expr("z", "DoesNotExist", &[])]),
        })
        .unwrap();
        assert!(s.matches(&labels(&[("pod", "a"), ("x", "")])));
        assert!(s.matches(&labels(&[("pod", "a"), ("x", "1"), ("ns", "q")])));
        assert!(!s.matches(&labels(&[("pod", "a"), ("x", "1"), ("ns", "y")])));
        assert!(!s.matches(&labels(&[("pod", "a"), ("x", "1"), ("z", "1")])));
        assert!(!s.matches(&labels(&[("pod", "b"), ("x", "1")])));
        assert_eq!(s.to_string(), "pod=a,ns notin (y),x,!z");
    }

    #[test]
    fn bad_operators_are_errors() {
        let bad = |e| Selector::new(&metav1::LabelSelector { match_expressions: Some(vec![e]), ..Default::default() }).is_err();
        assert!(bad(expr("a", "Equals", &["b"])));
        assert!(bad(expr("a", "In", &[])));
        assert!(bad(expr("a", "Exists", &["b"])));
    }

    fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[abc]", "[xyz]", 0..3)
    }

    proptest! {
        /// In and NotIn on one key are complements; Exists and DoesNotExist too; matchLabels is
        /// In with one value; a conjunction holds exactly when each part does.
        #[test]
        fn requirement_algebra(l in arb_labels(), key in "[abc]", values in proptest::collection::vec("[xyz]", 1..3)) {
            let vs: Vec<&str> = values.iter().map(String::as_str).collect();
            let one = |e| Selector::new(&metav1::LabelSelector { match_expressions: Some(vec![e]), ..Default::default() }).unwrap();
            let sin = one(expr(&key, "In", &vs));
            let snot = one(expr(&key, "NotIn", &vs));
            prop_assert_ne!(sin.matches(&l), snot.matches(&l));
            prop_assert_eq!(sin.matches(&l), l.get(&key).is_some_and(|v| values.contains(v)));
            let ex = one(expr(&key, "Exists", &[]));
            let dne = one(expr(&key, "DoesNotExist", &[]));
            prop_assert_ne!(ex.matches(&l), dne.matches(&l));
            let ml = Selector::new(&metav1::LabelSelector { match_labels: Some([(key.clone(), values[0].clone())].into()), ..Default::default() }).unwrap();
            prop_assert_eq!(ml.matches(&l), one(expr(&key, "In", &vs[..1])).matches(&l));
            let both = Selector::new(&metav1::LabelSelector {
                match_labels: Some([(key.clone(), values[0].clone())].into()),
                match_expressions: Some(vec![expr("b", "Exists", &[])]),
            }).unwrap();
            prop_assert_eq!(both.matches(&l), ml.matches(&l) && l.contains_key("b"));
        }
    }
}
