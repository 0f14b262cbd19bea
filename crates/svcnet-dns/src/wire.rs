//! The UDP fast path: the common request — one question of class IN for a cluster name, no EDNS
//! or a plain OPT without options — answered straight from the datagram's bytes into a reused
//! buffer, without decoding a hickory `Message` or allocating one per record. The records come
//! from the same [`Snapshot::lookup`] as the general path's; only the encoding is separate.
//!
//! Architecture Invariant: [`answer`] answers only what the general path
//! ([`crate::message::respond`] + [`crate::message::encode_udp`]) would answer with the same
//! header, question, records and EDNS; everything else — other opcodes or flags, more than one
//! question, EDNS options or versions, names outside the zone (forwarded), answers before the
//! first sync, CNAMEs (chased), and answers that do not fit the client's UDP size (truncated) —
//! returns `None` and takes the general path. `tests/fast_path.rs` checks the two agree, on every
//! kind of name and on fuzzed input.

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RecordType},
};

use crate::{
    message::MAX_UDP_PAYLOAD,
    snapshot::{Data, Outcome, Owner, Section, Sink, Snapshot},
};

/// The most labels a name of 255 bytes can have.
const MAX_LABELS: usize = 127;
/// Bytes of a wire name, at most.
const MAX_NAME: usize = 255;
const TYPE_OPT: u16 = 41;
/// The question types answered here; the rare rest (and meta types) take the general path.
const COMMON_TYPES: [RecordType; 12] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::NS,
    RecordType::MX,
    RecordType::CNAME,
    RecordType::ANY,
    RecordType::HTTPS,
    RecordType::SVCB,
];
const CLASS_IN: u16 = 1;
/// A compression pointer to the question's name, right after the 12-byte header.
const QUESTION_POINTER: [u8; 2] = [0xc0, 12];

/// Which `zone` metrics label an answered question counts under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ZoneKind {
    /// The cluster zone.
    Cluster,
    /// A PTR question under `in-addr.arpa.`.
    InAddr,
    /// A PTR question under `ip6.arpa.`.
    Ip6,
}

/// What the fast path answered, for the metrics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answered {
    pub(crate) qtype: RecordType,
    pub(crate) rcode: ResponseCode,
    pub(crate) zone: ZoneKind,
}

/// Reused buffers of one receiving thread.
#[derive(Default)]
pub(crate) struct Scratch {
    additionals: Vec<u8>,
}

/// Answers the request in `request` into `out` (cleared first), or `None` when the general path
/// must answer it (see the module's invariant).
pub(crate) fn answer(snapshot: &Snapshot, request: &[u8], out: &mut Vec<u8>, scratch: &mut Scratch) -> Option<Answered> {
    let header = request.get(..12)?;
    // QR=0 (a query), opcode 0, AA=0, TC=0; RD either way. Then Z=0 and RCODE=0; RA, AD and CD
    // either way (dig sets AD; CD is echoed).
    if header[2] & 0xfe != 0 || header[3] & 0x4f != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    if qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 {
        return None;
    }

    // The question's name, lowercased into `lower`, label by label; only the characters of
    // Kubernetes names and SRV labels (anything else takes the general path).
    let mut lower = [0u8; MAX_NAME];
    let mut spans = [(0u8, 0u8); MAX_LABELS];
    let mut labels = 0;
    let mut at = 12;
    loop {
        let len = usize::from(*request.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        // Compression pointers and the reserved label types are > 63.
        if len > 63 || labels == MAX_LABELS {
            return None;
        }
        let start = at + 1 - 12;
        let bytes = request.get(at + 1..at + 1 + len)?;
        // The name with its root label stays within MAX_NAME (the general path's limit).
        if start + len + 1 > MAX_NAME {
            return None;
        }
        for (i, b) in bytes.iter().enumerate() {
            if !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
                return None;
            }
            lower[start + i] = b.to_ascii_lowercase();
        }
        spans[labels] = (u8::try_from(start).ok()?, u8::try_from(len).ok()?);
        labels += 1;
        at += 1 + len;
    }
    let question_end = at + 4;
    let fixed = request.get(at..question_end)?;
    let qtype = RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]]));
    if u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_IN || !COMMON_TYPES.contains(&qtype) {
        return None;
    }

    // A plain OPT: root owner, version 0, no extended rcode, no options. Nothing may follow.
    let limit = if arcount == 1 {
        let opt = request.get(question_end..question_end + 11)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT || opt[5] != 0 || opt[6] != 0 || opt[9] != 0 || opt[10] != 0 {
            return None;
        }
        if request.len() != question_end + 11 {
            return None;
        }
        usize::from(u16::from_be_bytes([opt[3], opt[4]]).clamp(512, MAX_UDP_PAYLOAD))
    } else {
        if request.len() != question_end {
            return None;
        }
        512
    };

    let mut label_strs: [&str; MAX_LABELS] = [""; MAX_LABELS];
    for (i, (start, len)) in spans[..labels].iter().enumerate() {
        let (start, len) = (usize::from(*start), usize::from(*len));
        label_strs[i] = std::str::from_utf8(&lower[start..start + len]).ok()?;
    }
    let label_strs = &label_strs[..labels];

    out.clear();
    out.extend_from_slice(&header[..2]);
    // QR, AA, RD as asked; RA, CD as asked; counts below.
    out.extend_from_slice(&[0x84 | (header[2] & 0x01), 0x80 | (header[3] & 0x10), 0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&request[12..question_end]);
    let answers_at = out.len();
    scratch.additionals.clear();
    let mut sink = WireSink { out, additionals: &mut scratch.additionals, ttl: snapshot.ttl(), snapshot, answers: 0, additional_count: 0, cname: false };
    let outcome = snapshot.lookup(label_strs, qtype, &mut sink);
    let (answers, additionals, cname) = (sink.answers, sink.additional_count, sink.cname);
    let (rcode, answers, authorities, additionals) = match outcome {
        // A CNAME may need chasing through the snapshot or upstream.
        Outcome::Found if cname => return None,
        Outcome::Found if answers > 0 => {
            out.extend_from_slice(&scratch.additionals);
            (ResponseCode::NoError, answers, 0, additionals)
        }
        Outcome::Found | Outcome::NoData | Outcome::NxDomain => {
            out.truncate(answers_at);
            write_soa(out, snapshot);
            let rcode = if outcome == Outcome::NxDomain { ResponseCode::NXDomain } else { ResponseCode::NoError };
            (rcode, 0, 1, 0)
        }
        Outcome::NotSynced | Outcome::NotOurs => return None,
    };
    let mut additionals = additionals;
    if arcount == 1 {
        // OPT: root, type 41, our payload size, extended rcode 0, version 0, no flags, no data.
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        additionals += 1;
    }
    if out.len() > limit {
        // The general path truncates (its name compression may even make it fit).
        return None;
    }
    out[3] |= rcode.low();
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[8..10].copy_from_slice(&u16::to_be_bytes(authorities));
    out[10..12].copy_from_slice(&additionals.to_be_bytes());
    let zone = if snapshot.in_zone_labels(label_strs) {
        ZoneKind::Cluster
    } else if labels > 2 && label_strs[labels - 2] == "ip6" {
        ZoneKind::Ip6
    } else {
        ZoneKind::InAddr
    };
    Some(Answered { qtype, rcode, zone })
}

/// Writes records as they come: answers into the response, additionals aside.
struct WireSink<'a> {
    out: &'a mut Vec<u8>,
    additionals: &'a mut Vec<u8>,
    snapshot: &'a Snapshot,
    ttl: u32,
    answers: u16,
    additional_count: u16,
    cname: bool,
}

impl Sink for WireSink<'_> {
    fn record(&mut self, section: Section, owner: Owner<'_>, data: Data<'_>) {
        let buf = match section {
            Section::Answer => {
                self.answers = self.answers.saturating_add(1);
                &mut *self.out
            }
            Section::Additional => {
                self.additional_count = self.additional_count.saturating_add(1);
                &mut *self.additionals
            }
        };
        let rtype = match data {
            Data::A(_) => RecordType::A,
            Data::Aaaa(_) => RecordType::AAAA,
            Data::Cname(_) => {
                self.cname = true;
                RecordType::CNAME
            }
            Data::Ptr(_) => RecordType::PTR,
            Data::Srv { .. } => RecordType::SRV,
            Data::Txt(_) => RecordType::TXT,
            Data::Soa => return write_soa(buf, self.snapshot),
        };
        match owner {
            Owner::Question => buf.extend_from_slice(&QUESTION_POINTER),
            Owner::Name(name) => write_name(buf, name),
        }
        buf.extend_from_slice(&u16::from(rtype).to_be_bytes());
        buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        buf.extend_from_slice(&self.ttl.to_be_bytes());
        let len_at = buf.len();
        buf.extend_from_slice(&[0, 0]);
        match data {
            Data::A(v4) => buf.extend_from_slice(&v4.octets()),
            Data::Aaaa(v6) => buf.extend_from_slice(&v6.octets()),
            Data::Cname(target) | Data::Ptr(target) => write_name(buf, target),
            Data::Srv { weight, port, target } => {
                buf.extend_from_slice(&[0, 0]);
                buf.extend_from_slice(&weight.to_be_bytes());
                buf.extend_from_slice(&port.to_be_bytes());
                write_name(buf, target);
            }
            Data::Txt(text) => {
                buf.push(u8::try_from(text.len()).expect("a short TXT string"));
                buf.extend_from_slice(text.as_bytes());
            }
            Data::Soa => unreachable!("written above"),
        }
        set_rdlength(buf, len_at);
    }
}

/// `len_at` holds the two length bytes of the RDATA that follows them to the end of `buf`.
fn set_rdlength(buf: &mut [u8], len_at: usize) {
    let len = u16::try_from(buf.len() - len_at - 2).expect("RDATA under 64 KiB");
    buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
}

/// A name in full (no compression: never shorter than what hickory writes).
fn write_name(buf: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        buf.push(u8::try_from(label.len()).expect("labels are at most 63 bytes"));
        buf.extend_from_slice(label);
    }
    buf.push(0);
}

/// The zone's SOA record, as [`Snapshot::soa`] gives it.
fn write_soa(buf: &mut Vec<u8>, snapshot: &Snapshot) {
    let zone = snapshot.zone();
    write_name(buf, zone);
    buf.extend_from_slice(&u16::from(RecordType::SOA).to_be_bytes());
    buf.extend_from_slice(&CLASS_IN.to_be_bytes());
    buf.extend_from_slice(&snapshot.ttl().to_be_bytes());
    let len_at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&[2, b'n', b's', 3, b'd', b'n', b's']);
    write_name(buf, zone);
    buf.extend_from_slice(b"\x0ahostmaster");
    write_name(buf, zone);
    for value in [snapshot.serial, 7200, 1800, 86400, snapshot.ttl()] {
        buf.extend_from_slice(&value.to_be_bytes());
    }
    set_rdlength(buf, len_at);
}
