//! Prometheus metrics under CoreDNS's names and labels (so that CoreDNS dashboards and alerts
//! work unchanged), plus two of svcnet's own under `svcnet_dns_`.
//!
//! - `coredns_dns_requests_total{server,zone,proto,family,type}`
//! - `coredns_dns_responses_total{server,zone,rcode}`
//! - `coredns_dns_request_duration_seconds{server,zone,type}` (histogram, CoreDNS's buckets)
//! - `coredns_cache_entries{server,type}`, `coredns_cache_hits_total{server,type}`,
//!   `coredns_cache_misses_total{server}`: the forwarding cache (`type` is `success` or `denial`)
//! - `coredns_forward_requests_total{to}`, `coredns_forward_responses_total{to,rcode}`
//! - `svcnet_dns_snapshot_update_seconds`: from a watch event's arrival to the snapshot holding it
//!   being published (answerable)
//! - `svcnet_dns_synced`: 1 once every watch has listed
//!
//! `server` is `dns://<address>` of the socket the request came in on (CoreDNS: `dns://:53`);
//! `zone` is the cluster zone for its names, `in-addr.arpa.`/`ip6.arpa.` for PTR questions we
//! answer, and `.` for what is forwarded. `type` is the question type for the common types and
//! `other` for the rest, as CoreDNS limits it.

use std::{sync::Arc, time::Duration};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: Arc<str>,
    zone: Arc<str>,
    proto: &'static str,
    family: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    server: Arc<str>,
    zone: Arc<str>,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    server: Arc<str>,
    zone: Arc<str>,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    server: Arc<str>,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabels {
    to: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardResponseLabels {
    to: Arc<str>,
    rcode: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// CoreDNS's request-duration buckets: 0.25 ms doubling up to about 8 s.
fn request_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00025, 2.0, 16))
}

/// One request, as the server saw it.
pub(crate) struct Observation<'a> {
    pub(crate) server: &'a Arc<str>,
    pub(crate) zone: &'a Arc<str>,
    pub(crate) tcp: bool,
    pub(crate) ipv6: bool,
    pub(crate) qtype: Option<RecordType>,
    pub(crate) rcode: ResponseCode,
    pub(crate) duration: Duration,
}

/// The request, response and duration metrics of one kind of request (see [`Metrics::handles`]).
#[derive(Clone, Debug)]
pub(crate) struct Handles {
    requests: Counter,
    responses: Counter,
    duration: Histogram,
}

impl Handles {
    /// Counts one request of this kind that took `duration`.
    pub(crate) fn observe(&self, duration: Duration) {
        self.requests.inc();
        self.responses.inc();
        self.duration.observe(duration.as_secs_f64());
    }
}

/// The DNS server's metrics. Always collected; [`Metrics::register`] exposes them.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: HistogramFamily<DurationLabels>,
    cache_entries: Family<CacheLabels, Gauge>,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<ServerLabels, Counter>,
    forward_requests: Family<ForwardLabels, Counter>,
    forward_responses: Family<ForwardResponseLabels, Counter>,
    snapshot_update: Histogram,
    synced: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(request_histogram),
            cache_entries: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            forward_requests: Family::default(),
            forward_responses: Family::default(),
            snapshot_update: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16)),
            synced: Gauge::default(),
        }
    }
}

// === impl Metrics ===

impl Metrics {
    /// Adds every metric to `registry` (they keep counting whether registered or not).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.", self.requests.clone());
        registry.register("coredns_dns_responses", "Counter of response status codes.", self.responses.clone());
        registry.register("coredns_dns_request_duration_seconds", "Histogram of the time (in seconds) each request took.", self.duration.clone());
        registry.register("coredns_cache_entries", "The number of elements in the forwarding cache.", self.cache_entries.clone());
        registry.register("coredns_cache_hits", "The count of forwarding-cache hits.", self.cache_hits.clone());
        registry.register("coredns_cache_misses", "The count of forwarding-cache misses.", self.cache_misses.clone());
        registry.register("coredns_forward_requests", "Counter of requests made per upstream.", self.forward_requests.clone());
        registry.register("coredns_forward_responses", "Counter of responses received per upstream.", self.forward_responses.clone());
        registry.register(
            "svcnet_dns_snapshot_update_seconds",
            "Time from a watch event's arrival to the snapshot holding it being published.",
            self.snapshot_update.clone(),
        );
        registry.register("svcnet_dns_synced", "1 once every watch (Services, EndpointSlices, Pods, Namespaces) has listed.", self.synced.clone());
    }

    /// The registry text (OpenMetrics) of these metrics alone.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
        out
    }

    pub(crate) fn observe(&self, o: Observation<'_>) {
        let qtype = o.qtype.map_or("other", type_label);
        self.requests
            .get_or_create(&RequestLabels {
                server: o.server.clone(),
                zone: o.zone.clone(),
                proto: if o.tcp { "tcp" } else { "udp" },
                family: if o.ipv6 { "2" } else { "1" },
                r#type: qtype,
            })
            .inc();
        self.responses.get_or_create(&ResponseLabels { server: o.server.clone(), zone: o.zone.clone(), rcode: rcode_label(o.rcode) }).inc();
        self.duration.get_or_create(&DurationLabels { server: o.server.clone(), zone: o.zone.clone(), r#type: qtype }).observe(o.duration.as_secs_f64());
    }

    /// The three metrics one kind of request counts in, looked up once; counting through them
    /// is then a few atomic operations (the UDP threads keep them per kind of request).
    pub(crate) fn handles(&self, o: &Observation<'_>) -> Handles {
        let qtype = o.qtype.map_or("other", type_label);
        let family = if o.ipv6 { "2" } else { "1" };
        let proto = if o.tcp { "tcp" } else { "udp" };
        let (server, zone) = (o.server.clone(), o.zone.clone());
        Handles {
            requests: self.requests.get_or_create(&RequestLabels { server: server.clone(), zone: zone.clone(), proto, family, r#type: qtype }).clone(),
            responses: self.responses.get_or_create(&ResponseLabels { server: server.clone(), zone: zone.clone(), rcode: rcode_label(o.rcode) }).clone(),
            duration: self.duration.get_or_create(&DurationLabels { server, zone, r#type: qtype }).clone(),
        }
    }

    pub(crate) fn cache_hit(&self, server: &Arc<str>, denial: bool) {
        self.cache_hits.get_or_create(&CacheLabels { server: server.clone(), r#type: cache_type(denial) }).inc();
    }

    pub(crate) fn cache_miss(&self, server: &Arc<str>) {
        self.cache_misses.get_or_create(&ServerLabels { server: server.clone() }).inc();
    }

    pub(crate) fn cache_entries(&self, server: &Arc<str>, success: usize, denial: usize) {
        self.cache_entries.get_or_create(&CacheLabels { server: server.clone(), r#type: "success" }).set(i64::try_from(success).unwrap_or(i64::MAX));
        self.cache_entries.get_or_create(&CacheLabels { server: server.clone(), r#type: "denial" }).set(i64::try_from(denial).unwrap_or(i64::MAX));
    }

    pub(crate) fn forwarded(&self, to: &Arc<str>, rcode: Option<ResponseCode>) {
        self.forward_requests.get_or_create(&ForwardLabels { to: to.clone() }).inc();
        if let Some(rcode) = rcode {
            self.forward_responses.get_or_create(&ForwardResponseLabels { to: to.clone(), rcode: rcode_label(rcode) }).inc();
        }
    }

    pub(crate) fn snapshot_published(&self, took: Duration) {
        self.synced.set(1);
        self.snapshot_update.observe(took.as_secs_f64());
    }
}

fn cache_type(denial: bool) -> &'static str {
    if denial { "denial" } else { "success" }
}

/// CoreDNS reports these types by name and every other as `other`.
fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::NS => "NS",
        RecordType::PTR => "PTR",
        RecordType::SRV => "SRV",
        RecordType::SOA => "SOA",
        RecordType::TXT => "TXT",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        RecordType::ANY => "ANY",
        RecordType::HTTPS => "HTTPS",
        RecordType::SVCB => "SVCB",
        RecordType::CAA => "CAA",
        RecordType::DNSKEY => "DNSKEY",
        RecordType::DS => "DS",
        _ => "other",
    }
}

/// The rcode names CoreDNS uses (`miekg/dns` RcodeToString).
fn rcode_label(code: ResponseCode) -> &'static str {
    match u16::from(code) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        _ => "other",
    }
}

/// Serves `GET /metrics` (OpenMetrics text) on `listener` until it fails; other paths get 404.
pub async fn serve_http(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::{Response, StatusCode, body::Bytes, header};
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = Arc::clone(&metrics);
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let response = if request.uri().path() == "/metrics" {
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")
                    .body(Full::new(Bytes::from(metrics.encode())))
            } else {
                Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from_static(b"not found; try /metrics\n")))
            };
            futures::future::ready(response)
        });
        tokio::spawn(async move {
            if let Err(error) = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await {
                tracing::debug!(%error, "metrics connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_under_coredns_names() {
        let m = Metrics::default();
        let (server, zone): (Arc<str>, Arc<str>) = ("dns://127.0.0.1:53".into(), "cluster.local.".into());
        for rcode in [ResponseCode::NoError, ResponseCode::NXDomain, ResponseCode::NXDomain] {
            m.observe(Observation {
                server: &server,
                zone: &zone,
                tcp: false,
                ipv6: false,
                qtype: Some(RecordType::A),
                rcode,
                duration: Duration::from_micros(300),
            });
        }
        let text = m.encode();
        assert!(text.contains(r#"coredns_dns_requests_total{server="dns://127.0.0.1:53",zone="cluster.local.",proto="udp",family="1",type="A"} 3"#), "{text}");
        assert!(text.contains(r#"coredns_dns_responses_total{server="dns://127.0.0.1:53",zone="cluster.local.",rcode="NXDOMAIN"} 2"#), "{text}");
        assert!(
            text.contains(r#"coredns_dns_request_duration_seconds_bucket{le="0.0005",server="dns://127.0.0.1:53",zone="cluster.local.",type="A"} 3"#),
            "{text}"
        );
        assert_eq!(type_label(RecordType::NULL), "other");
    }
}
