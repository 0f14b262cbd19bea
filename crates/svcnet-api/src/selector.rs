//! Label selectors (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) and field selectors (`a=b,c!=d`),
//! parsed and matched as apimachinery's `labels` and `fields` packages do.

use crate::validation::names::{is_qualified_name, is_valid_label_value};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
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

/// The operators of apimachinery's `selection` package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `=` and `==`.
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One requirement: a key, an operator and a sorted, deduplicated set of values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A field error as apimachinery's `field.Error.Error()` renders it, with a path that may be
/// `<nil>` (how upstream prints a missing path).
fn field_invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value:?}: {detail}")
}

fn aggregate(errs: Vec<String>) -> Result<(), SelectorError> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(SelectorError(errs.into_iter().next().unwrap_or_default())),
        _ => Err(SelectorError(format!("[{}]", errs.join(", ")))),
    }
}

fn label_key_error(key: &str, path: &str) -> Option<String> {
    let errs = is_qualified_name(key);
    (!errs.is_empty()).then(|| field_invalid(path, key, &errs.join("; ")))
}

impl Requirement {
    /// Upstream's `labels.NewRequirement`: checks the key, the values and their number.
    fn new(key: &str, op: Op, values: Vec<String>) -> Result<Self, SelectorError> {
        let mut errs = Vec::new();
        if let Some(e) = label_key_error(key, "key") {
            errs.push(e);
        }
        let rendered = || format!("[{}]", values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", "));
        match op {
            Op::In | Op::NotIn if values.is_empty() => {
                errs.push(format!("values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty", rendered()));
            }
            Op::Equals | Op::NotEquals if values.len() != 1 => {
                errs.push(format!("values: Invalid value: {}: exact-match compatibility requires one single value", rendered()));
            }
            Op::Exists | Op::DoesNotExist if !values.is_empty() => {
                errs.push(format!("values: Invalid value: {}: values set must be empty for exists and does not exist", rendered()));
            }
            Op::GreaterThan | Op::LessThan => {
                if values.len() != 1 {
                    errs.push(format!("values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required", rendered()));
                }
                for v in &values {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!("values: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer", rendered()));
                    }
                }
            }
            _ => {}
        }
        for v in &values {
            let msgs = is_valid_label_value(v);
            if !msgs.is_empty() {
                errs.push(field_invalid(&format!("values[{v}]"), v, &msgs.join("; ")));
            }
        }
        aggregate(errs)?;
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Self { key: key.to_string(), op, values })
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        match self.op {
            Op::Equals | Op::In => got.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => got.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => got.is_some(),
            Op::DoesNotExist => got.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let Some(have) = got.and_then(|v| v.parse::<i64>().ok()) else { return false };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else { return false };
                if self.op == Op::GreaterThan { have > want } else { have < want }
            }
        }
    }
}

// ---- the lexer and parser of apimachinery's labels.Parse ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    Eos,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn lex(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && is_whitespace(b[i]) {
            i += 1;
        }
        if i >= b.len() || b[i] == 0 {
            out.push((Tok::Eos, String::new()));
            return out;
        }
        if is_special(b[i]) {
            // The longest run of special characters that is a token.
            let start = i;
            let mut best: Option<(Tok, usize)> = None;
            let mut j = i;
            while j < b.len() && is_special(b[j]) {
                j += 1;
                if let Some(t) = keyword(&s[start..j]) {
                    best = Some((t, j));
                } else if best.is_some() {
                    break;
                }
            }
            match best {
                Some((t, end)) => {
                    out.push((t, s[start..end].to_string()));
                    i = end;
                }
                None => {
                    out.push((Tok::Error, format!("error expected: keyword found '{}'", &s[start..j])));
                    out.push((Tok::Eos, String::new()));
                    return out;
                }
            }
        } else {
            let start = i;
            while i < b.len() && !is_whitespace(b[i]) && !is_special(b[i]) && b[i] != 0 {
                i += 1;
            }
            let word = &s[start..i];
            let tok = match keyword(word) {
                Some(t @ (Tok::In | Tok::NotIn)) => t,
                _ => Tok::Identifier,
            };
            out.push((tok, word.to_string()));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    KeyAndOperator,
    Values,
}

struct Parser {
    toks: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    fn item(&self, mode: Mode) -> (Tok, String) {
        let (t, l) = self.toks.get(self.pos).cloned().unwrap_or((Tok::Eos, String::new()));
        let t = if mode == Mode::Values && matches!(t, Tok::In | Tok::NotIn) { Tok::Identifier } else { t };
        (t, l)
    }
    fn lookahead(&self, mode: Mode) -> (Tok, String) {
        self.item(mode)
    }
    fn consume(&mut self, mode: Mode) -> (Tok, String) {
        let it = self.item(mode);
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        it
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Mode::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self.parse_requirement().map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Mode::Values);
                    match t {
                        Tok::Eos => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(Mode::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!("found '{l2}', expected: identifier after ','"));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::Eos => return Ok(reqs),
                _ => return Err(format!("found '{lit}', expected: !, identifier, or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Op::Exists | Op::DoesNotExist)) = op {
            return Requirement::new(&key, op, Vec::new()).map_err(|e| e.0);
        }
        let op = self.parse_operator()?;
        let values = match op {
            Op::In | Op::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values).map_err(|e| e.0)
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Op>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Mode::Values);
        if tok == Tok::DoesNotExist {
            op = Some(Op::DoesNotExist);
            (tok, lit) = self.consume(Mode::Values);
        }
        if tok != Tok::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        if let Some(e) = label_key_error(&lit, "<nil>") {
            return Err(e);
        }
        let (t, _) = self.lookahead(Mode::Values);
        if (t == Tok::Eos || t == Tok::Comma) && op.is_none() {
            op = Some(Op::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Op, String> {
        let (tok, lit) = self.consume(Mode::KeyAndOperator);
        Ok(match tok {
            Tok::In => Op::In,
            Tok::Equals | Tok::DoubleEquals => Op::Equals,
            Tok::GreaterThan => Op::GreaterThan,
            Tok::LessThan => Op::LessThan,
            Tok::NotIn => Op::NotIn,
            Tok::NotEquals => Op::NotEquals,
            _ => return Err(format!("found '{lit}', expected: in, notin, =, ==, !=, gt, lt")),
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Mode::Values);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Mode::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume(Mode::Values);
                if t != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume(Mode::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        let insert = |s: &mut Vec<String>, v: String| {
            if !s.contains(&v) {
                s.push(v);
            }
        };
        loop {
            let (tok, lit) = self.consume(Mode::Values);
            match tok {
                Tok::Identifier => {
                    insert(&mut s, lit);
                    let (t2, l2) = self.lookahead(Mode::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => break,
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        insert(&mut s, String::new());
                    }
                    let (t2, _) = self.lookahead(Mode::Values);
                    if t2 == Tok::ClosedPar {
                        insert(&mut s, String::new());
                        break;
                    }
                    if t2 == Tok::Comma {
                        self.consume(Mode::Values);
                        insert(&mut s, String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
        s.sort();
        Ok(s)
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Mode::Values);
        if tok == Tok::Eos || tok == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Mode::Values);
        if tok == Tok::Identifier {
            return Ok(vec![lit]);
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut p = Parser { toks: lex(s), pos: 0 };
        let mut requirements = p.parse().map_err(SelectorError)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Builds one from a `metav1.LabelSelector` (matchLabels and matchExpressions).
    pub fn from_api(sel: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k, Op::Equals, vec![v.clone()])?);
        }
        for e in sel.match_expressions.iter().flatten() {
            let op = match e.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => return Err(SelectorError(format!("{other:?} is not a valid label selector operator"))),
            };
            requirements.push(Requirement::new(&e.key, op, e.values.clone().unwrap_or_default())?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl std::fmt::Display for LabelSelector {
    /// The canonical string form, as upstream's `Selector.String()`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.op {
                Op::Equals => format!("{}={}", r.key, r.values.first().map(String::as_str).unwrap_or("")),
                Op::NotEquals => format!("{}!={}", r.key, r.values.first().map(String::as_str).unwrap_or("")),
                Op::In => format!("{} in ({})", r.key, r.values.join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::GreaterThan => format!("{}>{}", r.key, r.values.join(",")),
                Op::LessThan => format!("{}<{}", r.key, r.values.join(",")),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, wanted value, equal?) triples.
    pub requirements: Vec<(String, String, bool)>,
}

/// Splits on commas that are not escaped, keeping escapes in the parts.
fn split_terms(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    terms.push(cur);
    terms
}

fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if rest.starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// Upstream's `fields.UnescapeValue`.
fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => return Err(SelectorError(format!("invalid field selector: invalid escape sequence: \\{c}"))),
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Go prints the rune with %v, i.e. as its number.
            ',' | '=' => return Err(SelectorError(format!("invalid field selector: unescaped character in value: {}", c as u32))),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError("invalid field selector: invalid escape sequence: \\".into()));
    }
    Ok(out)
}

/// Escapes a value for use in a field selector (`fields.EscapeValue`).
pub fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut requirements = Vec::new();
        for part in &parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(SelectorError(format!("invalid selector: '{s}'; can't understand '{part}'")));
            };
            let value = unescape_value(rhs)?;
            requirements.push((lhs.to_string(), value, op != "!="));
        }
        Ok(Self { requirements })
    }

    /// True when every requirement holds; `get` returns a field's value (or None when absent,
    /// which compares as the empty string, as upstream).
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|(field, want, eq)| {
            let have = get(field).unwrap_or_default();
            (have == *want) == *eq
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        LabelSelector::parse(s).expect_err(s).0
    }

    #[test]
    fn parses_all_operators() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("env", "prod")]);
        for (s, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("missing in (db)", false),
            ("app notin (web,db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("  app  =  web  ,  tier in ( front , back )  ", true),
            ("app=web,!missing,env notin (dev)", true),
            ("app=", false),
            ("missing=", false),
        ] {
            assert_eq!(sel(s).matches(&l), want, "{s:?}");
        }
        assert!(sel("").is_empty());
        assert!(sel("empty=").matches(&labels(&[("empty", "")])));
        assert!(sel("x in (,a)").matches(&labels(&[("x", "")])));
        assert!(sel("x in ()").matches(&labels(&[("x", "")])));
    }

    #[test]
    fn keywords_are_identifiers_where_values_go() {
        let l = labels(&[("in", "notin")]);
        assert!(sel("in=notin").matches(&l));
        assert!(sel("in in (notin)").matches(&l));
        assert!(sel("in").matches(&l));
    }

    #[test]
    fn gt_lt() {
        let l = labels(&[("n", "5")]);
        assert!(sel("n>3").matches(&l));
        assert!(!sel("n<3").matches(&l));
        assert!(!sel("m>3").matches(&l));
        assert!(err("n>x").contains("the value must be an integer"), "{}", err("n>x"));
    }

    #[test]
    fn parse_errors_match_upstream() {
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(err(",a"), "found ',', expected: !, identifier, or 'end of string'");
        assert_eq!(err("a in b"), "unable to parse requirement: found 'b' expected: '('");
        assert_eq!(err("a in (b"), "unable to parse requirement: found '', expected: ',' or ')'");
        assert_eq!(err("a b"), "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt");
        assert_eq!(err("!"), "unable to parse requirement: found '', expected: identifier");
        assert_eq!(err("a=(b)"), "unable to parse requirement: found '(', expected: identifier");
        assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(
            err("a_=c"),
            "unable to parse requirement: <nil>: Invalid value: \"a_\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            err("a=-b"),
            "unable to parse requirement: values[-b]: Invalid value: \"-b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        assert_eq!(err("a=b=c"), "found '=', expected: ',' or 'end of string'");
        assert!(err(&format!("a={}", "v".repeat(64))).contains("must be no more than 63 characters"));
        assert!(err(&format!("{}=v", "k".repeat(64))).contains("name part must be no more than 63 characters"));
    }

    #[test]
    fn from_api_selectors() {
        use metav1::LabelSelectorRequirement as R;
        let s = metav1::LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                R { key: "tier".into(), operator: "In".into(), values: Some(vec!["a".into(), "b".into()]) },
                R { key: "env".into(), operator: "NotIn".into(), values: Some(vec!["dev".into()]) },
                R { key: "x".into(), operator: "Exists".into(), values: None },
                R { key: "y".into(), operator: "DoesNotExist".into(), values: None },
            ]),
        };
        let s = LabelSelector::from_api(&s).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("x", "")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("x", ""), ("y", "")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("x", ""), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("x", "")])));
        assert_eq!(s.to_string(), "app=web,env notin (dev),tier in (a,b),x,!y");

        let empty = LabelSelector::from_api(&metav1::LabelSelector::default()).unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(&labels(&[("a", "b")])));

        let bad = metav1::LabelSelector { match_expressions: Some(vec![R { key: "a".into(), operator: "Foo".into(), values: None }]), ..Default::default() };
        assert_eq!(LabelSelector::from_api(&bad).unwrap_err().0, "\"Foo\" is not a valid label selector operator");
        let bad =
            metav1::LabelSelector { match_expressions: Some(vec![R { key: "a".into(), operator: "In".into(), values: Some(vec![]) }]), ..Default::default() };
        assert_eq!(LabelSelector::from_api(&bad).unwrap_err().0, "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty");
        let bad = metav1::LabelSelector {
            match_expressions: Some(vec![R { key: "a".into(), operator: "Exists".into(), values: Some(vec!["x".into()]) }]),
            ..Default::default()
        };
        assert!(LabelSelector::from_api(&bad).unwrap_err().0.contains("values set must be empty for exists and does not exist"));
        let bad = metav1::LabelSelector { match_labels: Some([("a b".to_string(), "c".to_string())].into()), ..Default::default() };
        assert!(LabelSelector::from_api(&bad).unwrap_err().0.starts_with("key: Invalid value: \"a b\": name part"));
    }

    /// A tiny deterministic generator (xorshift) for property-style tests.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    #[test]
    fn property_parse_matches_reference_semantics() {
        const KEYS: &[&str] = &["a", "b", "example.com/c", "in"];
        const VALS: &[&str] = &["x", "y", "z_1", "notin"];
        let mut g = Gen(0x9e3779b97f4a7c15);
        for _ in 0..2000 {
            // A random label set.
            let mut l = BTreeMap::new();
            for k in KEYS {
                if g.next().is_multiple_of(2) {
                    l.insert(k.to_string(), g.pick(VALS).to_string());
                }
            }
            // A random selector, its expected truth computed directly.
            let n = 1 + g.next() % 4;
            let mut parts = Vec::new();
            let mut want = true;
            for _ in 0..n {
                let k = g.pick(KEYS);
                let v = g.pick(VALS);
                let w = g.pick(VALS);
                let have = l.get(k).map(String::as_str);
                let ws = if g.next().is_multiple_of(2) { " " } else { "" };
                let (s, ok) = match g.next() % 7 {
                    0 => (format!("{k}{ws}={ws}{v}"), have == Some(v)),
                    1 => (format!("{k}{ws}=={ws}{v}"), have == Some(v)),
                    2 => (format!("{k}{ws}!={ws}{v}"), have != Some(v)),
                    3 => (format!("{k} in ({v},{ws}{w})"), have == Some(v) || have == Some(w)),
                    4 => (format!("{k} notin ({ws}{v},{w})"), have != Some(v) && have != Some(w)),
                    5 => (format!("{ws}{k}{ws}"), have.is_some()),
                    _ => (format!("!{ws}{k}"), have.is_none()),
                };
                want &= ok;
                parts.push(s);
            }
            let text = parts.join(",");
            let s = sel(&text);
            assert_eq!(s.matches(&l), want, "{text:?} on {l:?}");
            // The canonical form parses back to the same selector.
            assert_eq!(sel(&s.to_string()), s, "{text:?}");
        }
    }

    #[test]
    fn property_invalid_keys_and_values_are_refused() {
        let mut g = Gen(12345);
        const CHARS: &[&str] = &["a", "Z", "0", "-", "_", ".", "/", "é", "%"];
        for _ in 0..2000 {
            let len = g.next() % 8;
            let word: String = (0..len).map(|_| g.pick(CHARS)).collect();
            let key_ok = is_qualified_name(&word).is_empty();
            let val_ok = is_valid_label_value(&word).is_empty();
            if !word.is_empty() {
                assert_eq!(LabelSelector::parse(&format!("{word}=v")).is_ok(), key_ok, "key {word:?}");
            }
            assert_eq!(LabelSelector::parse(&format!("k={word}")).is_ok(), val_ok, "value {word:?}");
            assert_eq!(LabelSelector::parse(&format!("k in ({word})")).is_ok(), val_ok, "value {word:?}");
        }
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("metadata.name=a,status.phase!=Running").unwrap();
        assert_eq!(f.requirements, vec![("metadata.name".into(), "a".into(), true), ("status.phase".into(), "Running".into(), false)]);
        let get = |phase: Option<&str>| {
            let phase = phase.map(str::to_string);
            move |k: &str| match k {
                "metadata.name" => Some("a".to_string()),
                "status.phase" => phase.clone(),
                _ => None,
            }
        };
        assert!(f.matches(get(Some("Pending"))));
        assert!(!f.matches(get(Some("Running"))));
        assert!(f.matches(get(None)));
        assert!(FieldSelector::parse("spec.nodeName==").unwrap().matches(|_| None));
        assert!(!FieldSelector::parse("spec.nodeName!=").unwrap().matches(|_| None));
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse("a=b,,").unwrap().requirements.len() == 1);
    }

    #[test]
    fn field_selector_escapes_and_errors() {
        let f = FieldSelector::parse(r"a=x\,y\=z\\w,b=c").unwrap();
        assert_eq!(f.requirements[0], ("a".into(), r"x,y=z\w".into(), true));
        assert_eq!(FieldSelector::parse("abc").unwrap_err().0, "invalid selector: 'abc'; can't understand 'abc'");
        assert_eq!(FieldSelector::parse(r"a=b\c").unwrap_err().0, r"invalid field selector: invalid escape sequence: \c");
        assert_eq!(FieldSelector::parse(r"a=b\").unwrap_err().0, r"invalid field selector: invalid escape sequence: \");
        assert_eq!(FieldSelector::parse("a=b=c").unwrap_err().0, "invalid field selector: unescaped character in value: 61");
    }

    #[test]
    fn property_field_escape_roundtrip() {
        let mut g = Gen(777);
        const CHARS: &[&str] = &["a", ",", "=", "\\", "!", " ", "ü"];
        for _ in 0..1000 {
            let len = g.next() % 6;
            let v: String = (0..len).map(|_| g.pick(CHARS)).collect();
            let f = FieldSelector::parse(&format!("spec.x={},b!=c", escape_field_value(&v))).unwrap();
            assert!(f.requirements.contains(&("spec.x".into(), v.clone(), true)), "{v:?}: {f:?}");
        }
    }
}
