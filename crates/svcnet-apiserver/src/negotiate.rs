//! Content negotiation: which representation a client asked for in `Accept`.

/// The representations the server produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The object or list itself, as JSON.
    Json,
    /// A `meta.k8s.io/v1` Table (server-side printing for `kubectl get`).
    Table,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList` (metadata only).
    PartialMetadata,
    /// Aggregated discovery (`apidiscovery.k8s.io`), with its API version.
    Discovery(&'static str),
}

struct MediaType<'a> {
    essence: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> MediaType<'a> {
    fn param(&self, k: &str) -> Option<&'a str> {
        self.params.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| *v)
    }
}

fn parse_accept(accept: &str) -> Vec<MediaType<'_>> {
    accept
        .split(',')
        .map(|part| {
            let mut it = part.split(';').map(str::trim);
            let essence = it.next().unwrap_or("");
            let params = it.filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), v.trim().trim_matches('"'))).collect();
            MediaType { essence, params }
        })
        .collect()
}

/// The first representation in `accept` that the server can produce; `None` when it can
/// produce none of them (406).
pub fn choose(accept: Option<&str>) -> Option<Output> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Some(Output::Json) };
    for m in parse_accept(accept) {
        let json_like = matches!(m.essence, "application/json" | "*/*" | "application/*");
        if !json_like {
            continue;
        }
        match (m.param("as"), m.param("g"), m.param("v")) {
            (None, _, _) => return Some(Output::Json),
            (Some("Table"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) => return Some(Output::Table),
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io"), Some("v1" | "v1beta1")) => {
                return Some(Output::PartialMetadata);
            }
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => return Some(Output::Discovery("v2")),
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2beta1")) => {
                return Some(Output::Discovery("v2beta1"));
            }
            _ => continue,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_headers() {
        assert_eq!(
            choose(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")),
            Some(Output::Table)
        );
        assert_eq!(
            choose(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
            )),
            Some(Output::Discovery("v2"))
        );
        assert_eq!(choose(Some("application/vnd.kubernetes.protobuf, */*")), Some(Output::Json));
        assert_eq!(choose(None), Some(Output::Json));
        assert_eq!(choose(Some("application/vnd.kubernetes.protobuf")), None);
    }
}
