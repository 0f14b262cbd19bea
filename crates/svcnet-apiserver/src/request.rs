//! Turning a request's method, path and query into one [`Action`] (kube-apiserver's
//! `RequestInfo`), so that handlers never parse URLs.

use std::collections::HashMap;
use svcnet_api::resources::{self, ResourceInfo};

use crate::error::{ApiError, Result};

/// Where a resource request points.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    /// The namespace from the path (`None` for cluster-scoped resources and all-namespace lists).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Everything the server answers.
#[derive(Debug, Clone)]
pub enum Action {
    Version,
    Health(&'static str),
    Metrics,
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3(String),
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
    Get(Target),
    List(Target),
    Watch(Target),
    Create(Target),
    Update(Target),
    Patch(Target),
    Delete(Target),
    DeleteCollection(Target),
    /// `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward`: proxied to the pod's node.
    PodProxy(crate::node_proxy::PodProxy),
}

impl Action {
    /// The verb label of `apiserver_request_total`.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Get(_) => "GET",
            Action::List(_) => "LIST",
            Action::Watch(_) => "WATCH",
            Action::Create(_) => "POST",
            Action::Update(_) => "PUT",
            Action::Patch(_) => "PATCH",
            Action::Delete(_) => "DELETE",
            Action::DeleteCollection(_) => "DELETECOLLECTION",
            _ => "GET",
        }
    }

    pub fn target(&self) -> Option<&Target> {
        match self {
            Action::Get(t)
            | Action::List(t)
            | Action::Watch(t)
            | Action::Create(t)
            | Action::Update(t)
            | Action::Patch(t)
            | Action::Delete(t)
            | Action::DeleteCollection(t) => Some(t),
            _ => None,
        }
    }
}

/// Parses `a=b&c=d` with percent-decoding; the last value of a repeated key wins.
pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `strconv.ParseBool`, which is what the Python client's `watch=True` relies on.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Resolves a request to an action.
pub fn route(method: &http::Method, path: &str, query: &HashMap<String, String>) -> Result<Action> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let get_only = |a: Action| if method == http::Method::GET { Ok(a) } else { Err(ApiError::method_not_allowed(method.as_str())) };
    match segs.as_slice() {
        ["version"] => return get_only(Action::Version),
        ["healthz"] | ["healthz", ..] => return get_only(Action::Health("healthz")),
        ["livez"] | ["livez", ..] => return get_only(Action::Health("livez")),
        ["readyz"] | ["readyz", ..] => return get_only(Action::Health("readyz")),
        ["metrics"] => return get_only(Action::Metrics),
        ["openapi", "v2"] => return get_only(Action::OpenApiV2),
        ["openapi", "v3"] => return get_only(Action::OpenApiV3Root),
        ["openapi", "v3", rest @ ..] => return get_only(Action::OpenApiV3(rest.join("/"))),
        ["api"] => return get_only(Action::CoreVersions),
        ["apis"] => return get_only(Action::Groups),
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", version, rest),
        ["apis", group] => return get_only(Action::Group(group.to_string())),
        ["apis", group, version, rest @ ..] => (group, version, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    if rest.is_empty() {
        if resources::RESOURCES.iter().any(|r| r.group == group && r.version == version) {
            return get_only(Action::ResourceList { group: group.into(), version: version.into() });
        }
        return Err(ApiError::path_not_found());
    }
    // namespaces/<ns>/<resource>... except the namespace's own subresources (status, finalize).
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", _, "status" | "finalize"] if group.is_empty() => (None, rest),
        ["namespaces", ns, _, ..] => (Some(*ns), &rest[2..]),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::path_not_found()),
    };
    let info = resources::find(group, version, plural).ok_or_else(ApiError::path_not_found)?;
    if namespace.is_some() && !info.namespaced {
        return Err(ApiError::path_not_found());
    }
    if let (Some(ns), Some(name), Some(sub)) = (namespace, name, sub)
        && info.group.is_empty()
        && info.plural == "pods"
        && let Some(subresource) = crate::node_proxy::PodSubresource::parse(sub)
    {
        if !subresource.allows(method) {
            return Err(ApiError::method_not_allowed(method.as_str()));
        }
        return Ok(Action::PodProxy(crate::node_proxy::PodProxy { namespace: ns.to_string(), name: name.to_string(), subresource }));
    }
    if let Some(s) = sub
        && !info.has_subresource(s)
    {
        return Err(ApiError::path_not_found());
    }
    let target = Target { info, namespace: namespace.map(str::to_string), name: name.map(str::to_string), subresource: sub.map(str::to_string) };
    let watch = query.get("watch").and_then(|w| parse_bool(w)).unwrap_or(false);
    let action = match (method.as_str(), target.name.is_some()) {
        ("GET", false) if watch => Action::Watch(target),
        ("GET", false) => Action::List(target),
        ("GET", true) if watch => Action::Watch(target),
        ("GET", true) => Action::Get(target),
        ("POST", false) => Action::Create(target),
        // POST to a named subresource (pods/x/binding) creates it.
        ("POST", true) if target.subresource.is_some() => Action::Create(target),
        ("PUT", true) => Action::Update(target),
        ("PATCH", true) => Action::Patch(target),
        ("DELETE", true) if target.subresource.is_none() => Action::Delete(target),
        ("DELETE", false) => Action::DeleteCollection(target),
        (m, _) => return Err(ApiError::method_not_allowed(m)),
    };
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn r(method: Method, path: &str, q: &str) -> Action {
        route(&method, path, &parse_query(Some(q))).unwrap()
    }

    #[test]
    fn routes_like_kube_apiserver() {
        match r(Method::GET, "/api/v1/namespaces/default/services/backend", "") {
            Action::Get(t) => {
                assert_eq!(t.info.plural, "services");
                assert_eq!(t.namespace.as_deref(), Some("default"));
                assert_eq!(t.name.as_deref(), Some("backend"));
            }
            other => panic!("{other:?}"),
        }
        match r(Method::GET, "/api/v1/namespaces/default", "") {
            Action::Get(t) => {
                assert_eq!(t.info.plural, "namespaces");
                assert_eq!(t.name.as_deref(), Some("default"));
                assert_eq!(t.namespace, None);
            }
            other => panic!("{other:?}"),
        }
        match r(Method::PUT, "/api/v1/namespaces/kube-system/finalize", "") {
            Action::Update(t) => assert_eq!(t.subresource.as_deref(), Some("finalize")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r(Method::GET, "/api/v1/pods", "watch=True"), Action::Watch(_)));
        assert!(matches!(r(Method::GET, "/apis/apps/v1/namespaces/a/deployments/b/scale", ""), Action::Get(_)));
        assert!(matches!(r(Method::DELETE, "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices", ""), Action::DeleteCollection(_)));
        assert!(matches!(r(Method::GET, "/apis/apps/v1", ""), Action::ResourceList { .. }));
        assert!(matches!(r(Method::GET, "/api/v1/namespaces/a/pods/p/log", "follow=true"), Action::PodProxy(_)));
        assert!(matches!(r(Method::POST, "/api/v1/namespaces/a/pods/p/exec", "command=ls"), Action::PodProxy(_)));
        assert!(route(&Method::POST, "/api/v1/namespaces/a/pods/p/log", &HashMap::new()).is_err());
        assert!(route(&Method::GET, "/api/v1/namespaces/a/nodes", &HashMap::new()).is_err());
        assert!(route(&Method::GET, "/api/v1/foos", &HashMap::new()).is_err());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("labelSelector=app%3Dbackend%2Ctier+in+%28a%29&watch=1"));
        assert_eq!(q["labelSelector"], "app=backend,tier in (a)");
        assert_eq!(parse_bool(&q["watch"]), Some(true));
    }
}
