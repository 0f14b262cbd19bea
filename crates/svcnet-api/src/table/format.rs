//! The formatting helpers kube-apiserver's printers share: reading fields out of the wire-form
//! JSON, ages (`duration.HumanDuration`), label sets (`labels.FormatLabels`) and label selectors
//! (`metav1.LabelSelectorAsSelector(...).String()` / `metav1.FormatLabelSelector`).

use jiff::Timestamp;
use serde_json::{Map, Value};

/// The string at a JSON pointer, `""` when absent or not a string (Go's zero value).
pub(super) fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a JSON pointer, `0` when absent.
pub(super) fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// The boolean at a JSON pointer, `false` when absent.
pub(super) fn bool_at(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at a JSON pointer, empty when absent or null.
pub(super) fn arr_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The object at a JSON pointer, `None` when absent or null (a Go nil pointer or map).
pub(super) fn obj_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Map<String, Value>> {
    v.pointer(ptr).and_then(Value::as_object)
}

/// The number of entries of a map (or items of a list) at a JSON pointer.
pub(super) fn len_at(v: &Value, ptr: &str) -> usize {
    match v.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

/// An RFC 3339 timestamp (`metav1.Time` or `metav1.MicroTime`) at a JSON pointer; `None` is Go's
/// zero time (absent, null, empty or unparsable).
pub(super) fn time_at(v: &Value, ptr: &str) -> Option<Timestamp> {
    let s = v.pointer(ptr).and_then(Value::as_str)?;
    s.parse::<Timestamp>().ok()
}

/// Whether `candidate` is later than `current` the way `metav1.Time.Before` sees it, where `None`
/// is the zero time: a zero candidate never wins.
pub(super) fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> bool {
    match (current, candidate) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(c), Some(n)) => c < n,
    }
}

/// `translateTimestampSince`: `<unknown>` for the zero time, otherwise the human duration since.
pub(super) fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        None => "<unknown>".to_string(),
        Some(t) => {
            // Go's time.Since saturates at the int64 nanosecond range.
            let nanos = now.as_nanosecond() - t.as_nanosecond();
            let nanos = nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            human_duration(nanos)
        }
    }
}

/// The AGE cell of an object.
pub(super) fn age(obj: &Value, now: Timestamp) -> String {
    since(time_at(obj, "/metadata/creationTimestamp"), now)
}

/// `duration.HumanDuration` for a duration in nanoseconds: a succinct representation with ~2-3
/// significant figures ("5s", "3m2s", "4h", "2d3h", "45d", "3y").
pub(super) fn human_duration(nanos: i64) -> String {
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    // Integer division truncates toward zero, as Go's int(d.Seconds()) does.
    let seconds = nanos / SECOND;
    // Allow a deviation of up to 2 seconds (excluded) for clock skew: "almost now".
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{h}h", hours / 24)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{dy}d", hours / 24 / 365)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `labels.Set(m).String()`: `k=v` pairs sorted by key, joined with commas.
fn label_set_string(map: Option<&Map<String, Value>>) -> String {
    let Some(map) = map else { return String::new() };
    let mut pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))).collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `labels.FormatLabels`: the label set, or `<none>` when it is empty.
pub(super) fn format_labels(map: Option<&Map<String, Value>>) -> String {
    let s = label_set_string(map);
    if s.is_empty() { "<none>".to_string() } else { s }
}

/// One `labels.Requirement` of a converted label selector.
struct Requirement<'a> {
    key: &'a str,
    op: &'a str,
    values: Vec<&'a str>,
}

impl Requirement<'_> {
    /// `labels.Requirement.String`: `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`; multiple
    /// values print sorted.
    fn render(&self) -> String {
        let mut out = String::new();
        if self.op == "DoesNotExist" {
            out.push('!');
        }
        out.push_str(self.key);
        match self.op {
            "Equals" => out.push('='),
            "In" => out.push_str(" in "),
            "NotIn" => out.push_str(" notin "),
            _ => return out, // Exists, DoesNotExist
        }
        let set = matches!(self.op, "In" | "NotIn");
        if set {
            out.push('(');
        }
        if self.values.len() == 1 {
            out.push_str(self.values[0]);
        } else {
            let mut sorted = self.values.clone();
            sorted.sort_unstable();
            out.push_str(&sorted.join(","));
        }
        if set {
            out.push(')');
        }
        out
    }
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: matchLabels become `k=v`, matchExpressions
/// `k in (a,b)` / `k notin (a,b)` / `k` / `!k`, all sorted by key and joined with commas. A nil or
/// empty selector prints `""`. `Err` where upstream's conversion fails (an unknown operator, or
/// values that do not fit the operator).
pub(super) fn label_selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel.filter(|v| !v.is_null()) else {
        return Ok(String::new());
    };
    let sel = sel.as_object().ok_or(())?;
    let mut reqs: Vec<Requirement<'_>> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").filter(|v| !v.is_null()) {
        for (k, v) in labels.as_object().ok_or(())? {
            reqs.push(Requirement { key: k, op: "Equals", values: vec![v.as_str().ok_or(())?] });
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").filter(|v| !v.is_null()) {
        for expr in exprs.as_array().ok_or(())? {
            let key = str_at(expr, "/key");
            let values = arr_at(expr, "/values").iter().map(|v| v.as_str().ok_or(())).collect::<Result<Vec<_>, _>>()?;
            let op = match str_at(expr, "/operator") {
                op @ ("In" | "NotIn") if !values.is_empty() => op,
                op @ ("Exists" | "DoesNotExist") if values.is_empty() => op,
                _ => return Err(()),
            };
            reqs.push(Requirement { key, op, values });
        }
    }
    // labels.internalSelector sorts by key; for the small selectors objects carry Go's sort is a
    // stable insertion sort.
    reqs.sort_by(|a, b| a.key.cmp(b.key));
    Ok(reqs.iter().map(Requirement::render).collect::<Vec<_>>().join(","))
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty, `<error>` when it does
/// not convert.
pub(super) fn format_label_selector(sel: Option<&Value>) -> String {
    match label_selector_string(sel) {
        Err(()) => "<error>".to_string(),
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
    }
}

/// `layoutContainerCells`: container names and images, each joined with commas.
pub(super) fn container_cells(containers: &[Value]) -> (String, String) {
    let names = containers.iter().map(|c| str_at(c, "/name")).collect::<Vec<_>>().join(",");
    let images = containers.iter().map(|c| str_at(c, "/image")).collect::<Vec<_>>().join(",");
    (names, images)
}

/// Go's `net.JoinHostPort`: IPv6 hosts are bracketed.
pub(super) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// `listWithMoreString`: the first entries, ` + N more...` past `max`, `<unset>` when empty.
pub(super) fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() { "<unset>".to_string() } else { ret }
}
