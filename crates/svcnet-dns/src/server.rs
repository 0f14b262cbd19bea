//! The I/O edge: UDP and TCP listeners that decode requests, answer them from the current
//! snapshot (or forward them), and encode responses, truncating for UDP.
//!
//! UDP is served by dedicated OS threads (as many as cores, per address), each on its own
//! `SO_REUSEPORT` socket of the address (the kernel spreads clients over them), each receiving up to [`BATCH`] datagrams per `recvmmsg` call: one wakeup for many queries
//! under load instead of one task wakeup each. Each datagram first tries the allocation-free
//! fast path (`crate::wire`); the rest are decoded with hickory and answered by
//! [`respond`], on the same thread, except forwarding and CNAME chasing, which go to the tokio
//! runtime as tasks. TCP is served by tokio tasks.

use std::{
    collections::HashMap,
    io::IoSliceMut,
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg},
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use crate::{
    DnsConfig, Error, Result,
    forward::Forwarder,
    message::{Reply, encode_udp, format_error, respond, udp_limit},
    metrics::{Handles, Metrics, Observation},
    snapshot::{Answer, Snapshot, parse_zone},
    wire::{self, ZoneKind},
};

/// A TCP connection with no request for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How many times to look for a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: usize = 20;
/// Datagrams received per `recvmmsg` call, at most.
const BATCH: usize = 32;
/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65535;
/// How often an idle UDP thread looks whether its server was dropped.
const STOP_POLL: Duration = Duration::from_millis(100);

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
    udp: Vec<std::net::UdpSocket>,
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
            udp.push(u);
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
        // The UDP threads stop (within STOP_POLL) once this future is dropped or returns.
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let (failed_tx, mut failed) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (socket, addr) in self.udp.into_iter().zip(&self.local_addrs) {
            let mut sockets = vec![socket];
            while sockets.len() < threads {
                sockets.push(reuse_port_udp(*addr)?);
            }
            for socket in sockets {
                socket.set_read_timeout(Some(STOP_POLL))?;
                let udp = UdpThread {
                    socket: Arc::new(socket),
                    via: Via { server: server_label(*addr), tcp: false },
                    shared: Arc::clone(&shared),
                    runtime: runtime.clone(),
                    stop: Arc::clone(&stop.0),
                };
                let failed_tx = failed_tx.clone();
                std::thread::Builder::new().name("svcnet-dns-udp".into()).spawn(move || {
                    // A thread that fails or panics fails the server, as a failed task would.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| udp.serve()));
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => drop(failed_tx.send(error)),
                        Err(_) => drop(failed_tx.send(std::io::Error::other("a DNS UDP thread panicked"))),
                    }
                })?;
            }
        }
        drop(failed_tx);
        for (listener, addr) in self.tcp.into_iter().zip(&self.local_addrs) {
            tasks.spawn(serve_tcp(listener, server_label(*addr), Arc::clone(&shared)));
        }
        tokio::select! {
            Some(error) = failed.recv() => Err(Error::Io(error)),
            joined = tasks.join_next() => match joined {
                Some(Ok(r)) => r,
                Some(Err(e)) => Err(Error::Io(std::io::Error::other(e))),
                None => Ok(()),
            },
        }
    }
}

/// Tells the UDP threads to stop when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// UDP and TCP on the same address; for port 0, on the same kernel-chosen port.
async fn bind_pair(addr: SocketAddr) -> Result<(std::net::UdpSocket, TcpListener, SocketAddr)> {
    let bind_err = |source| Error::Bind { addr, source };
    for _ in 0..BIND_ATTEMPTS {
        let tcp = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local = tcp.local_addr().map_err(bind_err)?;
        match reuse_port_udp(local) {
            Ok(udp) => return Ok((udp, tcp, local)),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_err(e)),
        }
    }
    Err(bind_err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no port free for both UDP and TCP")))
}

/// A UDP socket on `addr` with `SO_REUSEPORT`: each UDP thread gets one of its own on the same
/// address, and the kernel spreads clients over them (by address and port), so the threads do
/// not contend for one socket's receive queue.
fn reuse_port_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Where a reply of a batch is: the fast path's buffer of that datagram, or a reply of the
/// general path.
enum Pending {
    Fast(usize),
    General(usize),
}

/// One UDP receiving thread.
struct UdpThread {
    socket: Arc<std::net::UdpSocket>,
    via: Via,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
}

// === impl UdpThread ===

impl UdpThread {
    /// Receives batches and answers them until told to stop or the socket fails.
    fn serve(self) -> std::io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        // Pages are only touched as datagrams fill them: large, mostly untouched buffers.
        let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect();
        let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
        // One reply buffer per datagram of a batch: the replies go out together (`sendmmsg`).
        let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(usize::from(crate::message::MAX_UDP_PAYLOAD))).collect();
        let mut general: Vec<Vec<u8>> = Vec::new();
        let mut replies: Vec<(Pending, SocketAddr)> = Vec::with_capacity(BATCH);
        let mut scratch = wire::Scratch::default();
        // The metrics of each kind of fast-path answer: (zone, IPv6 peer, qtype, rcode).
        let mut handles: HashMap<(ZoneKind, bool, u16, u16), Handles> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            received.clear();
            {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                match recvmmsg(fd, &mut headers, slices.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                    Ok(messages) => {
                        // In order: the i-th message is in the i-th buffer.
                        received.extend(messages.map(|m| (m.bytes, m.address.as_ref().and_then(socket_addr))));
                    }
                    // The poll timeout; ICMP errors from earlier sends; signals.
                    Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => continue,
                    Err(errno) => return Err(errno.into()),
                }
            }
            let started = Instant::now();
            let snapshot = self.shared.snapshots.current();
            replies.clear();
            general.clear();
            for (index, (buffer, (len, peer))) in buffers.iter().zip(&received).enumerate() {
                let Some(peer) = peer else { continue };
                let request = &buffer[..*len];
                if let Some(answered) = wire::answer(&snapshot, request, &mut outs[index], &mut scratch) {
                    let key = (answered.zone, peer.is_ipv6(), u16::from(answered.qtype), u16::from(answered.rcode));
                    let counters = handles.entry(key).or_insert_with(|| {
                        let zone = match answered.zone {
                            ZoneKind::Cluster => &self.shared.zone_label,
                            ZoneKind::InAddr => &self.shared.in_addr_label,
                            ZoneKind::Ip6 => &self.shared.ip6_label,
                        };
                        self.shared.metrics.handles(&Observation {
                            server: &self.via.server,
                            zone,
                            tcp: false,
                            ipv6: peer.is_ipv6(),
                            qtype: Some(answered.qtype),
                            rcode: answered.rcode,
                            duration: Duration::ZERO,
                        })
                    });
                    counters.observe(started.elapsed());
                    replies.push((Pending::Fast(index), *peer));
                } else if let Some(bytes) = self.general(&snapshot, request, *peer, started) {
                    general.push(bytes);
                    replies.push((Pending::General(general.len() - 1), *peer));
                }
            }
            let datagrams: Vec<(&[u8], SocketAddr)> = replies
                .iter()
                .map(|(reply, peer)| {
                    let bytes = match reply {
                        Pending::Fast(i) => outs[*i].as_slice(),
                        Pending::General(i) => general[*i].as_slice(),
                    };
                    (bytes, *peer)
                })
                .collect();
            self.send(&datagrams);
        }
        Ok(())
    }

    /// Sends a batch's replies with as few system calls as the kernel allows; one the kernel
    /// refuses (an unreachable peer, say) is dropped, as a lost datagram, and the rest still go.
    fn send(&self, mut datagrams: &[(&[u8], SocketAddr)]) {
        while !datagrams.is_empty() {
            match svcnet_netns::udp::send_batch(&self.socket, datagrams) {
                Ok(sent) if sent < datagrams.len() => {
                    tracing::debug!(peer = %datagrams[sent].1, "cannot send DNS response");
                    datagrams = &datagrams[sent + 1..];
                }
                Ok(_) => return,
                Err(error) => {
                    tracing::debug!(peer = %datagrams[0].1, %error, "cannot send DNS response");
                    datagrams = &datagrams[1..];
                }
            }
        }
    }

    /// The general path: decode with hickory and answer, or hand forwarding and CNAME chasing
    /// to a task. Returns the response to send now, if any.
    fn general(&self, snapshot: &Snapshot, data: &[u8], peer: SocketAddr, started: Instant) -> Option<Vec<u8>> {
        let shared = &self.shared;
        let Ok(request) = Message::from_vec(data) else {
            let bytes = format_error(data)?;
            shared.observe(&self.via, None, peer, false, ResponseCode::FormErr, started);
            return Some(bytes);
        };
        let limit = udp_limit(&request);
        match respond(snapshot, &request) {
            Reply::Respond(response) if needs_chase(&response) => {
                // The CNAME's target may need an upstream: off this thread.
                let (socket, via, shared) = (Arc::clone(&self.socket), self.via.clone(), Arc::clone(shared));
                self.runtime.spawn(async move {
                    let response = chase_cname(&shared, &request, response).await;
                    // Counted before sent, so that a client that has its answer sees it counted.
                    shared.observe(&via, Some(&request), peer, false, response.metadata.response_code, started);
                    send_udp(&socket, peer, &response, limit);
                });
                None
            }
            Reply::Respond(response) => {
                shared.observe(&self.via, Some(&request), peer, false, response.metadata.response_code, started);
                match encode_udp(&response, limit) {
                    Ok(bytes) => Some(bytes),
                    Err(error) => {
                        tracing::warn!(%error, "cannot encode DNS response");
                        None
                    }
                }
            }
            Reply::Forward => {
                let (socket, via, shared) = (Arc::clone(&self.socket), self.via.clone(), Arc::clone(shared));
                self.runtime.spawn(async move {
                    let response = shared.forwarder.forward(&request).await;
                    shared.observe(&via, Some(&request), peer, true, response.metadata.response_code, started);
                    send_udp(&socket, peer, &response, limit);
                });
                None
            }
        }
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

// === impl Shared ===

impl Shared {
    /// Counts one answered request.
    fn observe(&self, via: &Via, request: Option<&Message>, peer: SocketAddr, forwarded: bool, rcode: ResponseCode, started: Instant) {
        let query = request.and_then(|r| r.queries.first());
        let zone = self.zone_label_of(query, forwarded);
        self.count(via, zone, peer, query.map(|q| q.query_type()), rcode, started);
    }

    /// The `zone` label of a question.
    fn zone_label_of(&self, query: Option<&Query>, forwarded: bool) -> &Arc<str> {
        match query {
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
        }
    }

    /// Counts one answered request under `zone`.
    fn count(&self, via: &Via, zone: &Arc<str>, peer: SocketAddr, qtype: Option<RecordType>, rcode: ResponseCode, started: Instant) {
        self.metrics.observe(Observation { server: &via.server, zone, tcp: via.tcp, ipv6: peer.is_ipv6(), qtype, rcode, duration: started.elapsed() });
    }
}

/// Sends from a task (a UDP send does not wait for the peer).
fn send_udp(socket: &std::net::UdpSocket, peer: SocketAddr, response: &Message, limit: usize) {
    match encode_udp(response, limit) {
        Ok(bytes) => {
            if let Err(error) = socket.send_to(&bytes, peer) {
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
