//! Names outside the cluster zone: forwarded to upstream resolvers (UDP, TCP when the answer is
//! truncated), with a small cache. An upstream that does not answer gives SERVFAIL within the
//! configured timeout, never a hang.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::{
    message::{MAX_UDP_PAYLOAD, response_to},
    metrics::Metrics,
};

/// Entries kept at most; when full, expired entries go, and if that is not enough, all of them.
const CACHE_CAPACITY: usize = 10_000;
/// Longest time a positive answer is cached, whatever its TTL.
const MAX_POSITIVE_TTL: u32 = 300;
/// Longest time a negative answer is cached.
const MAX_NEGATIVE_TTL: u32 = 30;

type CacheKey = (Name, RecordType, DNSClass, bool);

struct Cached {
    expires: Instant,
    response: Message,
    /// NXDOMAIN or NODATA (CoreDNS's `denial` cache).
    denial: bool,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<CacheKey, Cached>,
    /// How many entries are denials (for `coredns_cache_entries`).
    denials: usize,
}

/// Forwards questions to upstream resolvers.
pub(crate) struct Forwarder {
    upstreams: Vec<(SocketAddr, Arc<str>)>,
    timeout: Duration,
    cache: Mutex<Cache>,
    metrics: Arc<Metrics>,
    /// The `server` label of the cache metrics.
    server: Arc<str>,
}

// === impl Forwarder ===

impl Forwarder {
    pub(crate) fn new(upstreams: Vec<SocketAddr>, timeout: Duration, metrics: Arc<Metrics>, server: Arc<str>) -> Self {
        let upstreams = upstreams.into_iter().map(|u| (u, Arc::from(u.to_string()))).collect();
        Forwarder { upstreams, timeout, cache: Mutex::default(), metrics, server }
    }

    /// The response to `request` from the cache or an upstream; SERVFAIL when none answers in time.
    pub(crate) async fn forward(&self, request: &Message) -> Message {
        let Some(query) = request.queries.first() else { return response_to(request, ResponseCode::FormErr) };
        let key = (query.name().to_lowercase(), query.query_type(), query.query_class(), request.metadata.checking_disabled);
        if let Some(cached) = self.cached(&key) {
            return to_client(request, cached);
        }
        self.metrics.cache_miss(&self.server);
        let deadline = Instant::now() + self.timeout;
        let per_upstream = self.timeout / u32::try_from(self.upstreams.len().max(1)).unwrap_or(1);
        for (upstream, label) in &self.upstreams {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let result = tokio::time::timeout(per_upstream.min(remaining), exchange(*upstream, request)).await;
            self.metrics.forwarded(label, result.as_ref().ok().and_then(|r| r.as_ref().ok()).map(|r| r.metadata.response_code));
            match result {
                Ok(Ok(response)) if response.metadata.response_code != ResponseCode::ServFail => {
                    self.store(key, &response);
                    return to_client(request, response);
                }
                Ok(Ok(_)) => tracing::debug!(%upstream, "upstream answered SERVFAIL"),
                Ok(Err(error)) => tracing::debug!(%upstream, %error, "upstream failed"),
                Err(_) => tracing::debug!(%upstream, "upstream timed out"),
            }
        }
        response_to(request, ResponseCode::ServFail)
    }

    fn cached(&self, key: &CacheKey) -> Option<Message> {
        let cache = self.cache.lock().unwrap();
        let entry = cache.entries.get(key)?;
        let now = Instant::now();
        if entry.expires <= now {
            return None;
        }
        self.metrics.cache_hit(&self.server, entry.denial);
        let left = u32::try_from(entry.expires.duration_since(now).as_secs()).unwrap_or(u32::MAX).max(1);
        let mut response = entry.response.clone();
        for record in response.answers.iter_mut().chain(response.authorities.iter_mut()).chain(response.additionals.iter_mut()) {
            record.ttl = record.ttl.min(left);
        }
        Some(response)
    }

    fn store(&self, key: CacheKey, response: &Message) {
        let Some(ttl) = cache_ttl(response) else { return };
        let mut cache = self.cache.lock().unwrap();
        if cache.entries.len() >= CACHE_CAPACITY {
            let now = Instant::now();
            cache.entries.retain(|_, c| c.expires > now);
            if cache.entries.len() >= CACHE_CAPACITY {
                cache.entries.clear();
            }
            cache.denials = cache.entries.values().filter(|c| c.denial).count();
        }
        let denial = response.answers.is_empty();
        let entry = Cached { expires: Instant::now() + Duration::from_secs(u64::from(ttl)), response: response.clone(), denial };
        cache.denials += usize::from(denial);
        if let Some(old) = cache.entries.insert(key, entry) {
            cache.denials -= usize::from(old.denial);
        }
        self.metrics.cache_entries(&self.server, cache.entries.len() - cache.denials, cache.denials);
    }
}

/// How long a response may be cached: the smallest TTL of its records (positive), or its SOA's
/// minimum (negative, RFC 2308); not at all for errors other than NXDOMAIN, or truncated answers.
fn cache_ttl(response: &Message) -> Option<u32> {
    if response.metadata.truncation {
        return None;
    }
    match response.metadata.response_code {
        ResponseCode::NoError if !response.answers.is_empty() => {
            response.answers.iter().map(|r| r.ttl).min().map(|t| t.min(MAX_POSITIVE_TTL)).filter(|t| *t > 0)
        }
        ResponseCode::NoError | ResponseCode::NXDomain => response
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(soa.minimum.min(r.ttl)),
                _ => None,
            })
            .map(|t| t.min(MAX_NEGATIVE_TTL))
            .filter(|t| *t > 0),
        _ => None,
    }
}

/// An upstream's response made the client's: its id and question as asked, EDNS only if it
/// asked with EDNS.
fn to_client(request: &Message, mut response: Message) -> Message {
    response.metadata.id = request.metadata.id;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    response.edns = request.edns.as_ref().map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        edns
    });
    response
}

/// One question to one upstream: UDP, then TCP if the UDP answer was truncated.
async fn exchange(upstream: SocketAddr, request: &Message) -> std::io::Result<Message> {
    let mut query = Message::query();
    query.metadata.recursion_desired = request.metadata.recursion_desired;
    query.metadata.checking_disabled = request.metadata.checking_disabled;
    query.queries = request.queries.clone();
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD);
    query.edns = Some(edns);
    let bytes = query.to_vec().map_err(std::io::Error::other)?;

    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 65535];
    let response = loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that is not the answer to our question (a late or forged datagram) is ignored.
        let Ok(response) = Message::from_vec(&buf[..n]) else { continue };
        if response.metadata.id == query.metadata.id && response.queries == query.queries {
            break response;
        }
    };
    if !response.metadata.truncation {
        return Ok(response);
    }
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    let response = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    if response.metadata.id != query.metadata.id {
        return Err(std::io::Error::other("upstream answered another question"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::{MessageType, OpCode},
        rr::{
            Record,
            rdata::{A, SOA},
        },
    };

    fn response(code: ResponseCode) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.response_code = code;
        m
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(Name::from_ascii("x.test.").unwrap(), ttl, RData::A(A([192, 0, 2, 1].into())))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_ascii("test.").unwrap();
        Record::from_rdata(n.clone(), ttl, RData::SOA(SOA::new(n.clone(), n, 1, 1, 1, 1, minimum)))
    }

    #[test]
    fn cache_ttls() {
        let mut ok = response(ResponseCode::NoError);
        ok.answers = vec![a(60), a(20)];
        assert_eq!(cache_ttl(&ok), Some(20));
        ok.answers = vec![a(86400)];
        assert_eq!(cache_ttl(&ok), Some(MAX_POSITIVE_TTL));
        ok.answers = vec![a(0)];
        assert_eq!(cache_ttl(&ok), None);

        let mut nx = response(ResponseCode::NXDomain);
        assert_eq!(cache_ttl(&nx), None, "no SOA, no negative caching");
        nx.authorities = vec![soa(3600, 10)];
        assert_eq!(cache_ttl(&nx), Some(10));
        nx.authorities = vec![soa(3600, 900)];
        assert_eq!(cache_ttl(&nx), Some(MAX_NEGATIVE_TTL));

        assert_eq!(cache_ttl(&response(ResponseCode::ServFail)), None);
        let mut tc = response(ResponseCode::NoError);
        tc.answers = vec![a(60)];
        tc.metadata.truncation = true;
        assert_eq!(cache_ttl(&tc), None);
    }
}
