//! The UDP fast path against the general path, without sockets: every kind of name of the
//! fuzzing cluster, in several cases of letters, with and without EDNS, with the header flags
//! clients set. Wherever the fast path answers, its response must equal the general path's
//! (`fuzzing::fast_path_agrees`); and the common questions must take the fast path, the unusual
//! ones must not.

use svcnet_dns::{
    Snapshot,
    fuzzing::{self, fast_path_agrees, fast_udp, general_udp},
    snapshot::parse_zone,
};

const A: u16 = 1;
const NS: u16 = 2;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const PTR: u16 = 12;
const MX: u16 = 15;
const TXT: u16 = 16;
const AAAA: u16 = 28;
const SRV: u16 = 33;
const HTTPS: u16 = 65;
const ANY: u16 = 255;

/// A query as `dig`, `dnsperf` or a stub resolver sends it.
struct Query<'a> {
    id: u16,
    name: &'a str,
    qtype: u16,
    /// EDNS payload size; `None`: no OPT record.
    edns: Option<u16>,
    /// Header bytes 2 and 3 (RD by default).
    flags: [u8; 2],
}

impl<'a> Query<'a> {
    fn new(name: &'a str, qtype: u16) -> Self {
        Query { id: 0x1234, name, qtype, edns: None, flags: [0x01, 0x00] }
    }

    fn edns(mut self, size: u16) -> Self {
        self.edns = Some(size);
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut q = self.id.to_be_bytes().to_vec();
        q.extend_from_slice(&self.flags);
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(self.edns.is_some())]);
        for label in self.name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            q.push(u8::try_from(label.len()).unwrap());
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&self.qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some(size) = self.edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        q
    }
}

/// Every name of the fuzzing cluster worth asking, and some that do not exist.
const NAMES: &[&str] = &[
    "backend.default.svc.cluster.local",
    "_http._tcp.backend.default.svc.cluster.local",
    "_dns._udp.backend.default.svc.cluster.local",
    "_http._udp.backend.default.svc.cluster.local",
    "_._tcp.backend.default.svc.cluster.local",
    "x._http._tcp.backend.default.svc.cluster.local",
    "v6.default.svc.cluster.local",
    "postgres.default.svc.cluster.local",
    "_pg._tcp.postgres.default.svc.cluster.local",
    "postgres-0.postgres.default.svc.cluster.local",
    "postgres-1.postgres.default.svc.cluster.local",
    "10-244-1-3.postgres.default.svc.cluster.local",
    "empty.default.svc.cluster.local",
    "ext.default.svc.cluster.local",
    "inner.default.svc.cluster.local",
    "x.ext.default.svc.cluster.local",
    "nope.default.svc.cluster.local",
    "example.com.default.svc.cluster.local",
    "default.svc.cluster.local",
    "quiet.svc.cluster.local",
    "nope.svc.cluster.local",
    "svc.cluster.local",
    "pod.cluster.local",
    "other.cluster.local",
    "cluster.local",
    "dns-version.cluster.local",
    "x.dns-version.cluster.local",
    "10-244-0-5.default.pod.cluster.local",
    "fd00--5.default.pod.cluster.local",
    "10-244-0-99.default.pod.cluster.local",
    "10-244-0-5.quiet.pod.cluster.local",
    "not-an-ip.default.pod.cluster.local",
    "default.pod.cluster.local",
    "20.0.96.10.in-addr.arpa",
    "5.0.244.10.in-addr.arpa",
    "7.1.244.10.in-addr.arpa",
    "99.0.96.10.in-addr.arpa",
    "1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
    "example.com",
    "local",
];

const TYPES: &[u16] = &[A, AAAA, SRV, PTR, TXT, SOA, NS, MX, CNAME, ANY, HTTPS, 99];

/// `backend.Default.SVC` style: every other letter upper case, from `phase`.
fn mixed_case(name: &str, phase: usize) -> String {
    name.chars().enumerate().map(|(i, c)| if (i + phase).is_multiple_of(2) { c.to_ascii_uppercase() } else { c }).collect()
}

#[test]
fn fast_path_answers_as_the_general_path_does() {
    let snapshot = fuzzing::snapshot();
    let mut answered = 0;
    let mut total = 0;
    for name in NAMES {
        for spelled in [name.to_string(), name.to_ascii_uppercase(), mixed_case(name, 0), mixed_case(name, 1)] {
            for &qtype in TYPES {
                for edns in [None, Some(0), Some(512), Some(1232), Some(4096)] {
                    for flags in [[0x01, 0x00], [0x00, 0x00], [0x01, 0x20], [0x01, 0x10], [0x01, 0x80]] {
                        let q = Query { id: 0xbeef, name: &spelled, qtype, edns, flags };
                        total += 1;
                        answered += usize::from(fast_path_agrees(&snapshot, &q.bytes()));
                    }
                }
            }
        }
    }
    // Most of these take the fast path; forwarded names, CNAMEs and oversized answers do not.
    assert!(answered > total / 2, "fast path answered {answered} of {total}");
}

#[test]
fn common_questions_take_the_fast_path() {
    let snapshot = fuzzing::snapshot();
    let fast = |q: Query<'_>| fast_udp(&snapshot, &q.bytes()).is_some();
    for q in [
        Query::new("backend.default.svc.cluster.local", A),
        Query::new("BackEnd.DEFAULT.svc.Cluster.Local", A),
        Query::new("backend.default.svc.cluster.local", AAAA).edns(1232),
        Query::new("_http._tcp.backend.default.svc.cluster.local", SRV),
        Query::new("postgres-0.postgres.default.svc.cluster.local", A),
        // 41 addresses: over 512 bytes, within 1232.
        Query::new("postgres.default.svc.cluster.local", A).edns(1232),
        Query::new("10-244-0-5.default.pod.cluster.local", A),
        Query::new("example.com.default.svc.cluster.local", A),
        Query::new("default.svc.cluster.local", A),
        Query::new("20.0.96.10.in-addr.arpa", PTR),
        Query::new("dns-version.cluster.local", TXT),
        Query::new("cluster.local", SOA),
    ] {
        let text = format!("{} {}", q.name, q.qtype);
        assert!(fast(q), "{text} should take the fast path");
    }
}

#[test]
fn unusual_requests_take_the_general_path() {
    let snapshot = fuzzing::snapshot();
    let slow = |bytes: Vec<u8>| {
        assert!(fast_udp(&snapshot, &bytes).is_none(), "fast path answered {bytes:02x?}");
    };
    // Forwarded, CNAME (chased), and too large for 512 bytes (truncated by the general path).
    slow(Query::new("example.com", A).bytes());
    slow(Query::new("99.0.96.10.in-addr.arpa", PTR).bytes());
    slow(Query::new("ext.default.svc.cluster.local", A).bytes());
    slow(Query::new("postgres.default.svc.cluster.local", A).bytes());
    slow(Query::new("postgres.default.svc.cluster.local", A).edns(512).bytes());
    // EDNS version 1 (BADVERS), an option (a cookie), the DO bit is fine but trailing bytes are not.
    let mut v1 = Query::new("backend.default.svc.cluster.local", A).edns(1232).bytes();
    let at = v1.len() - 5;
    v1[at] = 1;
    slow(v1);
    let mut cookie = Query::new("backend.default.svc.cluster.local", A).edns(1232).bytes();
    let rdlen_at = cookie.len() - 2;
    cookie[rdlen_at..].copy_from_slice(&12u16.to_be_bytes());
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    slow(cookie);
    let mut trailing = Query::new("backend.default.svc.cluster.local", A).bytes();
    trailing.push(0);
    slow(trailing);
    // Not a query, not opcode QUERY, two questions, class CH, a compressed question name.
    slow(Query { flags: [0x81, 0x00], ..Query::new("backend.default.svc.cluster.local", A) }.bytes());
    slow(Query { flags: [0x11, 0x00], ..Query::new("backend.default.svc.cluster.local", A) }.bytes());
    let mut two = Query::new("backend.default.svc.cluster.local", A).bytes();
    two[5] = 2;
    two.extend_from_slice(&[0, 0, 1, 0, 1]);
    slow(two);
    let mut chaos = Query::new("backend.default.svc.cluster.local", A).bytes();
    let class_at = chaos.len() - 1;
    chaos[class_at] = 3;
    slow(chaos);
    slow(vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    // Before the first sync every cluster name is SERVFAIL, from the general path.
    let unsynced = Snapshot::unsynced(parse_zone("cluster.local").unwrap(), 5);
    assert!(fast_udp(&unsynced, &Query::new("backend.default.svc.cluster.local", A).bytes()).is_none());
}

#[test]
fn the_question_is_echoed_with_its_case_and_the_answer_owned_by_it() {
    let snapshot = fuzzing::snapshot();
    let q = Query::new("BackEnd.DEFAULT.svc.Cluster.Local", A).edns(4096);
    let fast = fast_udp(&snapshot, &q.bytes()).expect("fast path");
    let general = general_udp(&snapshot, &q.bytes()).expect("general path");
    let fast = hickory_proto::op::Message::from_vec(&fast).unwrap();
    let general = hickory_proto::op::Message::from_vec(&general).unwrap();
    assert_eq!(fast.queries[0].name().to_string(), "BackEnd.DEFAULT.svc.Cluster.Local.");
    assert_eq!(fast.answers[0].name.to_string(), "BackEnd.DEFAULT.svc.Cluster.Local.");
    assert_eq!(fast.answers[0].data.to_string(), "10.96.0.20");
    assert_eq!(fast.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    assert_eq!(fast, general);
}

/// Mutations of fast-path queries (bit flips, byte changes, cuts, inserted bytes) from a fixed
/// seed: wherever the fast path still answers, it agrees with the general path.
#[test]
fn mutated_queries_agree_or_take_the_general_path() {
    let snapshot = fuzzing::snapshot();
    let mut state: u64 = 0x0dd5_eed5;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    };
    let seeds: Vec<Vec<u8>> = NAMES
        .iter()
        .flat_map(|name| [A, AAAA, SRV, PTR].map(|t| Query::new(name, t).edns(1232).bytes()).into_iter().chain([Query::new(name, A).bytes()]))
        .collect();
    let mut answered = 0;
    for _ in 0..40_000 {
        let mut q = seeds[next(seeds.len())].clone();
        for _ in 0..1 + next(2) {
            if q.is_empty() {
                break;
            }
            let i = next(q.len());
            match next(4) {
                0 => q[i] ^= 1 << next(8),
                1 => q[i] = [0, 1, 0x20, 0x29, 0x3f, 0x40, 0x41, 0x5f, 0x7f, 0x80, 0xc0, 0xff][next(12)],
                2 => q.truncate(i),
                _ => q.insert(i, [0, 1, 0x2d, 0x41, 0xc0][next(5)]),
            }
        }
        answered += usize::from(fast_path_agrees(&snapshot, &q));
    }
    assert!(answered > 1_000, "only {answered} mutations took the fast path");
}
