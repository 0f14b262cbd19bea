//! Requests to responses, still without I/O: header flags, EDNS0, negative answers with the SOA,
//! and truncation to what a UDP client can take.

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::DNSClass,
};

use crate::snapshot::{Answer, Snapshot};

/// The EDNS0 UDP payload size we advertise and cap answers at (the DNS flag day 2020 value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// What to do with a request.
#[derive(Debug)]
pub enum Reply {
    /// Send this response.
    Respond(Message),
    /// Out of the cluster zone: forward the request upstream.
    Forward,
}

/// A response to `request` with its id, opcode, question, RD bit, and EDNS when it had EDNS.
pub fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut msg = Message::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
    msg.metadata.recursion_desired = request.metadata.recursion_desired;
    msg.metadata.recursion_available = true;
    msg.metadata.checking_disabled = request.metadata.checking_disabled;
    msg.metadata.response_code = code;
    msg.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        msg.edns = Some(edns);
    }
    msg
}

/// Answers `request` from `snapshot`, or says to forward it.
pub fn respond(snapshot: &Snapshot, request: &Message) -> Reply {
    if request.metadata.message_type != MessageType::Query {
        return Reply::Respond(response_to(request, ResponseCode::FormErr));
    }
    if request.metadata.op_code != OpCode::Query {
        return Reply::Respond(response_to(request, ResponseCode::NotImp));
    }
    // RFC 6891 §6.1.3: only EDNS version 0 exists.
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Reply::Respond(response_to(request, ResponseCode::BADVERS));
    }
    let [query] = &request.queries[..] else {
        return Reply::Respond(response_to(request, ResponseCode::FormErr));
    };
    let answer = snapshot.answer(query.name(), query.query_type());
    if query.query_class() != DNSClass::IN {
        return match answer {
            Answer::NotOurs => Reply::Forward,
            _ => Reply::Respond(response_to(request, ResponseCode::Refused)),
        };
    }
    let mut msg = match answer {
        Answer::NotOurs => return Reply::Forward,
        Answer::NotSynced => return Reply::Respond(response_to(request, ResponseCode::ServFail)),
        Answer::Records { answers, additionals } => {
            let mut msg = response_to(request, ResponseCode::NoError);
            msg.answers = answers;
            msg.additionals = additionals;
            msg
        }
        Answer::NoData => {
            let mut msg = response_to(request, ResponseCode::NoError);
            msg.authorities.push(snapshot.soa());
            msg
        }
        Answer::NxDomain => {
            let mut msg = response_to(request, ResponseCode::NXDomain);
            msg.authorities.push(snapshot.soa());
            msg
        }
    };
    msg.metadata.authoritative = true;
    Reply::Respond(msg)
}

/// FORMERR for bytes that did not decode as a DNS message but have a header (RFC 1035 §4.1.1):
/// the id and opcode echoed, every section empty.
pub fn format_error(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = bytes.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None; // a response: never answer those
    }
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&header[..2]);
    out[2] = 0x80 | (header[2] & 0x78); // QR and the opcode
    out[3] = ResponseCode::FormErr.low();
    Some(out)
}

/// The most a UDP response to `request` may carry: 512 bytes without EDNS, else the client's
/// advertised size (at least 512) capped at ours.
pub fn udp_limit(request: &Message) -> usize {
    match &request.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
        None => 512,
    }
}

/// Encodes `response` for a UDP client that takes at most `limit` bytes: when it does not fit,
/// the records go and the TC bit tells the client to ask again over TCP.
pub fn encode_udp(response: &Message, limit: usize) -> Result<Vec<u8>, hickory_proto::ProtoError> {
    let bytes = response.to_vec()?;
    if bytes.len() <= limit {
        return Ok(bytes);
    }
    let mut truncated = response_to_truncated(response);
    truncated.metadata.truncation = true;
    let bytes = truncated.to_vec()?;
    if bytes.len() <= limit {
        return Ok(bytes);
    }
    // The question itself does not fit (a request with many questions gets FORMERR with all of
    // them echoed): the header alone, as RFC 2181 §9 allows.
    truncated.queries.clear();
    truncated.edns = None;
    truncated.to_vec()
}

fn response_to_truncated(response: &Message) -> Message {
    let mut msg = Message::new(response.metadata.id, MessageType::Response, response.metadata.op_code);
    msg.metadata = response.metadata;
    msg.queries = response.queries.clone();
    msg.edns = response.edns.clone();
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Objects, parse_zone};
    use hickory_proto::{
        op::Query,
        rr::{Name, RData, RecordType},
    };
    use k8s_openapi::api::core::v1 as core;

    fn snapshot() -> Snapshot {
        let ns: core::Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
        Snapshot::build(parse_zone("cluster.local").unwrap(), 7, 9, &Objects { namespaces: vec![&ns], ..Default::default() })
    }

    fn request(name: &str, t: RecordType, edns: Option<u16>) -> Message {
        let mut msg = Message::query();
        msg.metadata.id = 4242;
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            msg.edns = Some(e);
        }
        msg
    }

    fn reply(req: &Message) -> Message {
        match respond(&snapshot(), req) {
            Reply::Respond(m) => Message::from_vec(&m.to_vec().unwrap()).unwrap(),
            Reply::Forward => panic!("forwarded"),
        }
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa_with_minimum_ttl() {
        let nx = reply(&request("nope.default.svc.cluster.local.", RecordType::A, None));
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(nx.metadata.authoritative);
        assert_eq!(nx.metadata.id, 4242);
        assert!(nx.answers.is_empty());
        let RData::SOA(soa) = &nx.authorities[0].data else { panic!("{nx:?}") };
        assert_eq!((soa.minimum, nx.authorities[0].ttl), (7, 7));

        let nodata = reply(&request("default.svc.cluster.local.", RecordType::A, Some(4096)));
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities.len(), 1);
        assert_eq!(nodata.edns.as_ref().unwrap().max_payload(), MAX_UDP_PAYLOAD);
    }

    #[test]
    fn servfail_before_sync_and_forward_outside() {
        let unsynced = Snapshot::unsynced(parse_zone("cluster.local").unwrap(), 5);
        let Reply::Respond(m) = respond(&unsynced, &request("a.default.svc.cluster.local.", RecordType::A, None)) else { panic!() };
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(matches!(respond(&unsynced, &request("example.com.", RecordType::A, None)), Reply::Forward));
    }

    #[test]
    fn bad_edns_version_and_undecodable_requests() {
        let mut req = request("a.default.svc.cluster.local.", RecordType::A, Some(1232));
        req.edns.as_mut().unwrap().set_version(1);
        let m = reply(&req);
        // 16 is BADVERS in an OPT context; hickory decodes the shared code as BADSIG.
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert!(m.edns.is_some());

        let formerr = format_error(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff]).unwrap();
        assert_eq!(formerr, [0x12, 0x34, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(format_error(&[0; 5]), None);
        assert_eq!(format_error(&[0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn truncates_what_does_not_fit() {
        let mut big = response_to(&request("x.cluster.local.", RecordType::A, None), ResponseCode::NoError);
        for i in 0..100u8 {
            big.answers.push(hickory_proto::rr::Record::from_rdata(
                Name::from_ascii("x.cluster.local.").unwrap(),
                5,
                RData::A(hickory_proto::rr::rdata::A([10, 0, 0, i].into())),
            ));
        }
        let bytes = encode_udp(&big, 512).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation && m.answers.is_empty() && m.queries.len() == 1);
        let full = encode_udp(&big, 65535).unwrap();
        assert_eq!(Message::from_vec(&full).unwrap().answers.len(), 100);
        assert_eq!(udp_limit(&request("x.", RecordType::A, None)), 512);
        assert_eq!(udp_limit(&request("x.", RecordType::A, Some(100))), 512);
        assert_eq!(udp_limit(&request("x.", RecordType::A, Some(4096))), 1232);
    }

    /// Found by the fuzzer: FORMERR to a request with many questions echoes them all, so even
    /// the truncated response was over 512 bytes.
    #[test]
    fn a_question_too_large_for_udp_leaves_only_the_header() {
        let mut req = request("a-rather-long-label-to-fill-the-question.default.svc.cluster.local.", RecordType::A, None);
        for i in 0..10 {
            // Distinct names: identical ones would be compressed to two bytes each.
            req.add_query(Query::query(Name::from_ascii(format!("{}{i}.example.", "q".repeat(60))).unwrap(), RecordType::A));
        }
        let Reply::Respond(formerr) = respond(&snapshot(), &req) else { panic!("forwarded") };
        let bytes = encode_udp(&formerr, 512).unwrap();
        assert!(bytes.len() <= 512);
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation && m.queries.is_empty());
        assert_eq!((m.metadata.id, m.metadata.response_code), (4242, ResponseCode::FormErr));
    }
}
