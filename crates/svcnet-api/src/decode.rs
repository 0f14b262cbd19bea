//! Decoding a request body into the canonical stored form of its kind.
//!
//! The body is deserialized into the `k8s-openapi` type of its kind (so a wrong type is refused
//! the way kube-apiserver refuses it) and serialized back, which drops what the schema does not
//! know. Unknown fields are collected on the way, for `fieldValidation=Strict|Warn`.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Why a body could not be decoded into its kind (the API server answers 400 BadRequest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// A decoded object and the fields of the body that its kind does not have.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub object: Value,
    /// Paths like `spec.ports[0].foo`, in the order found.
    pub unknown_fields: Vec<String>,
}

/// Decodes `body` as an object of `kind` (one of the served kinds).
pub fn decode(kind: &str, body: Value) -> Result<Decoded, DecodeError> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, networking::v1 as net};
    match kind {
        "Namespace" => roundtrip::<core::Namespace>(body),
        "Pod" => roundtrip::<core::Pod>(body),
        "Service" => roundtrip::<core::Service>(body),
        "Endpoints" => roundtrip::<core::Endpoints>(body),
        "Node" => roundtrip::<core::Node>(body),
        "Event" => roundtrip::<core::Event>(body),
        "ConfigMap" => roundtrip::<core::ConfigMap>(body),
        "ServiceAccount" => roundtrip::<core::ServiceAccount>(body),
        "Deployment" => roundtrip::<apps::Deployment>(body),
        "ReplicaSet" => roundtrip::<apps::ReplicaSet>(body),
        "StatefulSet" => roundtrip::<apps::StatefulSet>(body),
        "Lease" => roundtrip::<coord::Lease>(body),
        "EndpointSlice" => roundtrip::<disc::EndpointSlice>(body),
        "NetworkPolicy" => roundtrip::<net::NetworkPolicy>(body),
        "IPAddressPool" => roundtrip::<crate::svcnet_io::IPAddressPool>(body),
        "Scale" => roundtrip::<k8s_openapi::api::autoscaling::v1::Scale>(body),
        "Binding" => roundtrip::<core::Binding>(body),
        "DeleteOptions" => roundtrip::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>(body),
        other => Err(DecodeError(format!("no kind {other:?} is registered"))),
    }
}

fn roundtrip<K: DeserializeOwned + Serialize>(body: Value) -> Result<Decoded, DecodeError> {
    let mut unknown = Vec::new();
    let typed: K = serde_ignored::deserialize(body, |path| unknown.push(render_path(&path))).map_err(|e| DecodeError(e.to_string()))?;
    let object = serde_json::to_value(&typed).map_err(|e| DecodeError(e.to_string()))?;
    Ok(Decoded { object, unknown_fields: unknown })
}

/// `spec.ports[0].foo`, as upstream's strict decoding names a field.
fn render_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_path(parent)),
        Path::Map { parent, key } => {
            let p = render_path(parent);
            if p.is_empty() { key.to_string() } else { format!("{p}.{key}") }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => render_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_like_upstream() {
        let d = decode(
            "Service",
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"a","bogus":1},
                   "spec":{"ports":[{"port":80,"foo":"x"}],"nope":true}}),
        )
        .unwrap();
        assert_eq!(d.unknown_fields, vec!["metadata.bogus", "spec.nope", "spec.ports[0].foo"]);
        assert_eq!(d.object["spec"]["ports"][0]["port"], 80);
        assert!(d.object["spec"].get("nope").is_none());
    }

    #[test]
    fn wrong_types_are_refused() {
        let err = decode("Service", json!({"apiVersion":"v1","kind":"Service","spec":{"ports":[{"port":"eighty"}]}})).unwrap_err();
        assert!(err.0.contains("invalid type"), "{err}");
    }
}
