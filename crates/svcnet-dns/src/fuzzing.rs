//! The request path without sockets — decode, answer from a snapshot, encode — as one function
//! for the cargo-fuzz target (`fuzz/fuzz_targets/request.rs`) and its plain-test twin
//! (`tests/fuzz_request.rs`, which runs the stored corpus and mutated inputs on stable Rust).
//! Each run checks what must hold for any input: no panic, a response that decodes again with
//! the request's id, within the client's UDP limit, and encodable for TCP; and whenever the UDP
//! fast path answers, the same response as the general path (every header bit, the question as
//! sent, every record with its case, EDNS).

use hickory_proto::op::Message;
use serde_json::json;

use crate::{
    message::{Reply, encode_udp, format_error, respond, udp_limit},
    snapshot::{Answer, Objects, Snapshot, parse_zone},
};

/// A small cluster with every kind of name: ClusterIP (v4 and v6) with named and unnamed
/// ports, headless with hostnames and without, one with no ready endpoint, ExternalName (to a
/// name outside and one inside the zone), pods and an empty namespace.
pub fn snapshot() -> Snapshot {
    fn from<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("fixture")
    }
    let services: Vec<k8s_openapi::api::core::v1::Service> = vec![
        from(json!({"metadata": {"name": "backend", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.20", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 8080}]}})),
        from(json!({"metadata": {"name": "v6", "namespace": "default"}, "spec": {"clusterIP": "fd00::21", "clusterIPs": ["fd00::21"]}})),
        from(json!({"metadata": {"name": "postgres", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
        from(json!({"metadata": {"name": "empty", "namespace": "default"}, "spec": {"clusterIP": "None"}})),
        from(json!({"metadata": {"name": "ext", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}})),
        from(
            json!({"metadata": {"name": "inner", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "backend.default.svc.cluster.local"}}),
        ),
    ];
    let mut endpoints: Vec<serde_json::Value> = (0..40).map(|i| json!({"addresses": [format!("10.244.1.{i}")], "conditions": {"ready": true}})).collect();
    endpoints.push(json!({"addresses": ["10.244.0.5"], "hostname": "postgres-0"}));
    endpoints.push(json!({"addresses": ["10.244.0.6"], "hostname": "postgres-1", "conditions": {"ready": false}}));
    let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> = vec![
        from(json!({"metadata": {"name": "postgres-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "postgres"}},
            "addressType": "IPv4", "endpoints": endpoints})),
        from(json!({"metadata": {"name": "empty-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "empty"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": false}}]})),
    ];
    let pods: Vec<k8s_openapi::api::core::v1::Pod> = vec![from(
        json!({"metadata": {"name": "p", "namespace": "default"}, "status": {"podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}]}}),
    )];
    let namespaces: Vec<k8s_openapi::api::core::v1::Namespace> =
        vec![from(json!({"metadata": {"name": "default"}})), from(json!({"metadata": {"name": "quiet"}}))];
    let objects = Objects {
        services: services.iter().collect(),
        endpoint_slices: slices.iter().collect(),
        pods: pods.iter().collect(),
        namespaces: namespaces.iter().collect(),
    };
    Snapshot::build(parse_zone("cluster.local").expect("zone"), 5, 1, &objects)
}

/// The UDP response of the general path (hickory decodes, [`respond`] answers, [`encode_udp`]
/// encodes), or `None` when it forwards or sends nothing. CNAMEs are not chased here.
pub fn general_udp(snapshot: &Snapshot, data: &[u8]) -> Option<Vec<u8>> {
    let Ok(request) = Message::from_vec(data) else { return format_error(data) };
    match respond(snapshot, &request) {
        Reply::Respond(response) => Some(encode_udp(&response, udp_limit(&request)).expect("a response to a decodable request encodes")),
        Reply::Forward => None,
    }
}

/// The UDP fast path's response, or `None` when it leaves the request to the general path.
pub fn fast_udp(snapshot: &Snapshot, data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    crate::wire::answer(snapshot, data, &mut out, &mut Default::default())?;
    Some(out)
}

/// Checks that the fast path, when it answers `data`, answers as the general path does: the
/// decoded messages are equal and so are their texts (which keep the names' case, unlike
/// hickory's case-insensitive name equality). Returns whether the fast path answered.
pub fn fast_path_agrees(snapshot: &Snapshot, data: &[u8]) -> bool {
    let Some(fast) = fast_udp(snapshot, data) else { return false };
    let general = general_udp(snapshot, data).expect("the general path answers what the fast path answers");
    let fast_msg = Message::from_vec(&fast).expect("the fast path's response decodes");
    let general_msg = Message::from_vec(&general).expect("the general path's response decodes");
    assert_eq!(fast_msg, general_msg, "fast and general paths differ");
    assert_eq!(format!("{fast_msg:?}"), format!("{general_msg:?}"), "fast and general paths differ in case");
    assert!(fast.len() <= general.len().max(udp_limit(&Message::from_vec(data).expect("decodes"))));
    true
}

/// One datagram through the request path; panics when an invariant breaks.
pub fn request(snapshot: &Snapshot, data: &[u8]) {
    fast_path_agrees(snapshot, data);
    let Ok(request) = Message::from_vec(data) else {
        if let Some(bytes) = format_error(data) {
            let formerr = Message::from_vec(&bytes).expect("FORMERR decodes");
            assert_eq!(&bytes[..2], &data[..2], "FORMERR echoes the id");
            assert!(formerr.queries.is_empty());
        }
        return;
    };
    let limit = udp_limit(&request);
    let Reply::Respond(response) = respond(snapshot, &request) else { return };
    // What `chase_cname` does for an in-zone target.
    if let Some(hickory_proto::rr::RData::CNAME(target)) = response.answers.last().map(|r| &r.data)
        && let Some(query) = response.queries.first()
    {
        let _: Answer = snapshot.answer(&target.0, query.query_type());
    }
    let udp = encode_udp(&response, limit).expect("a response to a decodable request encodes");
    assert!(udp.len() <= limit, "{} bytes over the UDP limit {limit}", udp.len());
    let back = Message::from_vec(&udp).expect("our UDP response decodes");
    assert_eq!(back.metadata.id, request.metadata.id);
    let tcp = response.to_vec().expect("our TCP response encodes");
    assert!(tcp.len() <= usize::from(u16::MAX));
}
