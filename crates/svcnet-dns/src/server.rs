//! The I/O edge: UDP and TCP listeners that decode requests, answer them from the current
//! snapshot (or forward them), and encode responses, truncating for UDP.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinSet,
};

use crate::{
    DnsConfig, Error, Result,
    forward::Forwarder,
    message::{Reply, encode_udp, format_error, respond, udp_limit},
    metrics::{Metrics, Observation},
    snapshot::{Answer, Snapshot, parse_zone},
};

/// A TCP connection with no request for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How many times to look for a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: usize = 20;

/// Publishes snapshots to a running server (the watch task does; tests may too).
#[derive(Clone)]
pub struct SnapshotHandle(Arc<ArcSwap<Snapshot>>);

impl SnapshotHandle {
    /// Makes `snapshot` the one every following question is answered from.
    pub fn publish(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }

    /// The snapshot answering now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }
}

/// A DNS server with its sockets bound, not yet serving.
pub struct DnsServer {
    config: DnsConfig,
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
    local_addrs: Vec<SocketAddr>,
    snapshots: SnapshotHandle,
    forwarder: Arc<Forwarder>,
    metrics: Arc<Metrics>,
}

struct Shared {
    snapshots: SnapshotHandle,
    forwarder: Arc<Forwarder>,
    metrics: Arc<Metrics>,
    /// The cluster zone (it never changes while serving).
    zone: hickory_proto::rr::Name,
    /// `zone` label values: the cluster zone, the reverse zones, and the root for the rest.
    zone_label: Arc<str>,
    in_addr_label: Arc<str>,
    ip6_label: Arc<str>,
    root_label: Arc<str>,
}

/// One socket's `server` label, `dns://<address>`.
fn server_label(addr: SocketAddr) -> Arc<str> {
    format!("dns://{addr}").into()
}

/// The socket a request came in on, for the metrics.
#[derive(Clone)]
struct Via {
    server: Arc<str>,
    tcp: bool,
}

// === impl DnsServer ===

impl DnsServer {
    /// Binds UDP and TCP on every `config.listen` address. Until [`DnsServer::serve`] syncs, the
    /// cluster zone answers SERVFAIL.
    pub async fn bind(config: DnsConfig) -> Result<Self> {
        let zone = parse_zone(&config.zone).map_err(|e| Error::Zone { zone: config.zone.clone(), reason: e.to_string() })?;
        if config.listen.is_empty() {
            return Err(Error::NoListenAddress);
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut local_addrs = Vec::new();
        for addr in &config.listen {
            let (u, t, local) = bind_pair(*addr).await?;
            udp.push(Arc::new(u));
            tcp.push(t);
            local_addrs.push(local);
        }
        let snapshots = SnapshotHandle(Arc::new(ArcSwap::from_pointee(Snapshot::unsynced(zone, config.ttl))));
        // Forwarding to ourselves (a resolv.conf naming this very address) would loop.
        let upstreams: Vec<SocketAddr> = config.upstreams.iter().copied().filter(|u| !local_addrs.contains(u)).collect();
        if upstreams.len() < config.upstreams.len() {
            tracing::warn!(?config.upstreams, "ignoring upstream DNS servers that are this server");
        }
        let metrics = Arc::new(Metrics::default());
        let forwarder = Arc::new(Forwarder::new(upstreams, config.upstream_timeout, Arc::clone(&metrics), server_label(local_addrs[0])));
        Ok(DnsServer { config, udp, tcp, local_addrs, snapshots, forwarder, metrics })
    }

    /// The first bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every bound address, in the order of `config.listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The handle the answers' snapshot is published through.
    pub fn snapshots(&self) -> SnapshotHandle {
        self.snapshots.clone()
    }

    /// The server's metrics (counting from [`DnsServer::bind`] on); register them with a
    /// `prometheus_client` registry to expose them.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves until a listener fails, answering from list+watch through `client`.
    pub async fn serve(self, client: kube::Client) -> Result<()> {
        let zone = self.snapshots.current().zone().clone();
        let watch = crate::watch::run(client, zone, self.config.ttl, self.snapshots.clone(), Arc::clone(&self.metrics));
        tokio::select! {
            r = watch => r,
            r = self.serve_snapshots() => r,
        }
    }

    /// Serves only what is published through [`DnsServer::snapshots`] (no API server).
    pub async fn serve_snapshots(self) -> Result<()> {
        let zone = self.snapshots.current().zone().clone();
        let zone_label: Arc<str> = zone.to_string().into();
        let shared = Arc::new(Shared {
            zone,
            snapshots: self.snapshots,
            forwarder: self.forwarder,
            metrics: self.metrics,
            zone_label,
            in_addr_label: "in-addr.arpa.".into(),
            ip6_label: "ip6.arpa.".into(),
            root_label: ".".into(),
        });
        let mut tasks = JoinSet::new();
        // Several receivers per socket, so that one core's worth of answering is not the limit.
        let receivers = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (socket, addr) in self.udp.into_iter().zip(&self.local_addrs) {
            let server = server_label(*addr);
            for _ in 0..receivers {
                tasks.spawn(serve_udp(Arc::clone(&socket), server.clone(), Arc::clone(&shared)));
            }
        }
        for (listener, addr) in self.tcp.into_iter().zip(&self.local_addrs) {
            tasks.spawn(serve_tcp(listener, server_label(*addr), Arc::clone(&shared)));
        }
        match tasks.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(Error::Io(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

/// UDP and TCP on the same address; for port 0, on the same kernel-chosen port.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr)> {
    let bind_err = |source| Error::Bind { addr, source };
    for _ in 0..BIND_ATTEMPTS {
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local = tcp.local_addr().map_err(bind_err)?;
        match UdpSocket::bind(local).await {
            Ok(udp) => return Ok((udp, tcp, local)),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_err(e)),
        }
    }
    Err(bind_err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no port free for both UDP and TCP")))
}

async fn serve_udp(socket: Arc<UdpSocket>, server: Arc<str>, shared: Arc<Shared>) -> Result<()> {
    let via = Via { server, tcp: false };
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier sends surface here on some systems; they are not fatal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e.into()),
        };
        let started = Instant::now();
        let Ok(request) = Message::from_vec(&buf[..n]) else {
            if let Some(bytes) = format_error(&buf[..n]) {
                let _ = socket.send_to(&bytes, peer).await;
                shared.observe(&via, None, peer, false, ResponseCode::FormErr, started);
            }
            continue;
        };
        let limit = udp_limit(&request);
        match respond(&shared.snapshots.current(), &request) {
            Reply::Respond(response) if needs_chase(&response) => {
                // The CNAME's target may need an upstream: off the receive loop.
                let (socket, via, shared) = (Arc::clone(&socket), via.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    let response = chase_cname(&shared, &request, response).await;
                    send_udp(&socket, peer, &response, limit).await;
                    shared.observe(&via, Some(&request), peer, false, response.metadata.response_code, started);
                });
            }
            Reply::Respond(response) => {
                send_udp(&socket, peer, &response, limit).await;
                shared.observe(&via, Some(&request), peer, false, response.metadata.response_code, started);
            }
            Reply::Forward => {
                let (socket, via, shared) = (Arc::clone(&socket), via.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    let response = shared.forwarder.forward(&request).await;
                    send_udp(&socket, peer, &response, limit).await;
                    shared.observe(&via, Some(&request), peer, true, response.metadata.response_code, started);
                });
            }
        }
    }
}

// === impl Shared ===

impl Shared {
    /// Counts one answered request.
    fn observe(&self, via: &Via, request: Option<&Message>, peer: SocketAddr, forwarded: bool, rcode: ResponseCode, started: Instant) {
        let query = request.and_then(|r| r.queries.first());
        let zone = match query {
            Some(_) if forwarded => &self.root_label,
            Some(q) if self.zone.zone_of(q.name()) => &self.zone_label,
            Some(q) if q.name().iter().next_back().is_some_and(|l| l.eq_ignore_ascii_case(b"arpa")) => {
                if q.name().num_labels() > 2 && q.name().iter().rev().nth(1).is_some_and(|l| l.eq_ignore_ascii_case(b"ip6")) {
                    &self.ip6_label
                } else {
                    &self.in_addr_label
                }
            }
            _ => &self.root_label,
        };
        self.metrics.observe(Observation {
            server: &via.server,
            zone,
            tcp: via.tcp,
            ipv6: peer.is_ipv6(),
            qtype: query.map(|q| q.query_type()),
            rcode,
            duration: started.elapsed(),
        });
    }
}

async fn send_udp(socket: &UdpSocket, peer: SocketAddr, response: &Message, limit: usize) {
    match encode_udp(response, limit) {
        Ok(bytes) => {
            if let Err(error) = socket.send_to(&bytes, peer).await {
                tracing::debug!(%peer, %error, "cannot send DNS response");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot encode DNS response"),
    }
}

async fn serve_tcp(listener: TcpListener, server: Arc<str>, shared: Arc<Shared>) -> Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(error) => {
                // Out of file descriptors and the like: keep serving the connections we have.
                tracing::warn!(%error, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(serve_tcp_connection(stream, peer, server.clone(), Arc::clone(&shared)));
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, peer: SocketAddr, server: Arc<str>, shared: Arc<Shared>) {
    let via = Via { server, tcp: true };
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else { return };
        let mut buf = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let started = Instant::now();
        let bytes = match Message::from_vec(&buf) {
            Ok(request) => {
                let (response, forwarded) = match respond(&shared.snapshots.current(), &request) {
                    Reply::Respond(response) => (chase_cname(&shared, &request, response).await, false),
                    Reply::Forward => (shared.forwarder.forward(&request).await, true),
                };
                shared.observe(&via, Some(&request), peer, forwarded, response.metadata.response_code, started);
                let Ok(bytes) = response.to_vec() else { return };
                bytes
            }
            Err(_) => {
                let Some(bytes) = format_error(&buf) else { return };
                shared.observe(&via, None, peer, false, ResponseCode::FormErr, started);
                bytes
            }
        };
        let Ok(len) = u16::try_from(bytes.len()) else { return };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// A NOERROR answer that ends in a CNAME (an ExternalName Service) to a question for another
/// type: the target's records are added when they can be resolved, as the specification's
/// example shows.
fn needs_chase(response: &Message) -> bool {
    let Some(query) = response.queries.first() else { return false };
    response.metadata.response_code == ResponseCode::NoError
        && !matches!(query.query_type(), RecordType::CNAME | RecordType::ANY)
        && matches!(response.answers.last().map(|r| &r.data), Some(RData::CNAME(_)))
}

async fn chase_cname(shared: &Shared, request: &Message, mut response: Message) -> Message {
    if !needs_chase(&response) {
        return response;
    }
    let Some(RData::CNAME(target)) = response.answers.last().map(|r| &r.data) else { return response };
    let qtype = response.queries[0].query_type();
    let target = target.0.clone();
    let snapshot = shared.snapshots.current();
    match snapshot.answer(&target, qtype) {
        Answer::Records { answers, .. } => response.answers.extend(answers),
        Answer::NotOurs => {
            let mut sub = request.clone();
            sub.queries = vec![Query::query(target, qtype)];
            let resolved = shared.forwarder.forward(&sub).await;
            if resolved.metadata.response_code == ResponseCode::NoError {
                response.answers.extend(resolved.answers);
            }
        }
        _ => {}
    }
    response
}
