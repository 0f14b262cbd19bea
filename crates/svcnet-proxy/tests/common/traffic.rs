//! More traffic for the behaviour tests (`tests/e2e_behaviours.rs`): extra clients on the node
//! network, HTTP servers and a client loop, raw SCTP packets (for kernels without SCTP sockets)
//! and reading the proxy's table. Used next to `common`, never instead of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use svcnet_netns::NetNs;

use crate::common::{Topology, WAIT, eventually, exec, ip};

/// Another namespace on the node network (like the topology's client), at `address`/16.
/// `short` names the bridge port (`TAG-SHORT`, unique per topology).
pub fn add_lan_client(topology: &Topology, short: &str, address: Ipv4Addr) -> Result<NetNs> {
    let ns = NetNs::create(&format!("{}-{short}", topology.tag))?;
    let lan_side = format!("{}-{short}", topology.tag);
    ip(topology.lan.name(), &format!("link add {lan_side} type veth peer name eth0 netns {}", ns.name()))?;
    ip(topology.lan.name(), &format!("link set {lan_side} master br0 up"))?;
    ip(ns.name(), &format!("addr add {address}/16 dev eth0"))?;
    ip(ns.name(), "link set eth0 up")?;
    ip(ns.name(), "link set lo up")?;
    Ok(ns)
}

/// The proxy's whole table in a node's namespace (`nft list table`), or "" when there is none.
pub fn proxy_table(node: &NetNs) -> String {
    exec(node.name(), &["nft", "list", "table", "inet", "svcnet-proxy"]).unwrap_or_default()
}

/// The elements of one set or map of the proxy's table, one per line (whitespace squeezed).
pub fn proxy_elements(node: &NetNs, set: &str) -> Vec<String> {
    let listing = exec(node.name(), &["nft", "list", "map", "inet", "svcnet-proxy", set])
        .or_else(|_| exec(node.name(), &["nft", "list", "set", "inet", "svcnet-proxy", set]))
        .unwrap_or_default();
    let Some(start) = listing.find("elements = {") else { return Vec::new() };
    let body = &listing[start + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split(',').map(|e| e.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|e| !e.is_empty()).collect()
}

/// Aborts a server task when dropped (its listening socket closes with it).
pub struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP/1.1 server in a namespace answering every request with 200 and `NAME PEER-IP\n`,
/// closing the connection after the reply.
pub fn http_server(ns: &NetNs, addr: SocketAddr, name: &str) -> Result<TaskGuard> {
    serve_http(ns, addr, Some(name.to_owned()))
}

/// An HTTP server like [`http_server`] on every address of the namespace, answering with the
/// local address the connection arrived at as its name (one namespace stands for many pods).
pub fn http_server_named_by_address(ns: &NetNs, port: u16) -> Result<TaskGuard> {
    serve_http(ns, SocketAddr::from(([0, 0, 0, 0], port)), None)
}

fn serve_http(ns: &NetNs, addr: SocketAddr, name: Option<String>) -> Result<TaskGuard> {
    let listener = ns.run_in(move || std::net::TcpListener::bind(addr))??;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, peer)) = listener.accept().await {
            let Some(name) = name.clone().or_else(|| stream.local_addr().ok().map(|a| a.ip().to_string())) else { continue };
            let body = format!("{name} {}\n", peer.ip());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(TaskGuard(task))
}

/// One HTTP GET on a new connection from the calling thread's namespace: the server's name, or
/// why it failed.
pub fn http_get_name(to: SocketAddr) -> std::result::Result<String, String> {
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("GET / HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    let response = attempt().map_err(|e| e.to_string())?;
    if !response.starts_with("HTTP/1.1 200 ") {
        return Err(format!("unexpected response: {response:?}"));
    }
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.split_whitespace().next().map(str::to_owned).ok_or_else(|| format!("empty body: {response:?}"))
}

/// GETs from `ns` through `to` until one succeeds: the server's name.
pub async fn first_http_reply(ns: &NetNs, to: SocketAddr) -> Result<String> {
    eventually("the Service answers", WAIT, || ns.run_in(move || http_get_name(to)).map_err(|e| e.to_string())?).await
}

/// What a [`LoadLoop`] has seen.
#[derive(Debug, Default)]
pub struct LoadTally {
    /// Successful requests per server name, in order of arrival: (name, count).
    pub by_name: std::collections::BTreeMap<String, usize>,
    /// Every failed request: (request number, error).
    pub failures: Vec<(usize, String)>,
    /// Requests done (successful or not).
    pub done: usize,
    /// The server names of the latest requests (at most 50).
    pub recent: std::collections::VecDeque<String>,
}

/// A client that opens one new connection after another (an HTTP GET each) from a namespace,
/// until dropped; [`LoadLoop::tally`] reads what it saw so far.
pub struct LoadLoop {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<LoadTally>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoadLoop {
    pub fn start(ns: &NetNs, to: SocketAddr) -> Result<LoadLoop> {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(LoadTally::default()));
        let ns = NetNs::open(ns.name())?;
        let (stop_, tally_) = (Arc::clone(&stop), Arc::clone(&tally));
        let thread = std::thread::spawn(move || {
            let _ = ns.run_in(move || {
                while !stop_.load(Ordering::Relaxed) {
                    let result = http_get_name(to);
                    let mut tally = tally_.lock().expect("not poisoned");
                    tally.done += 1;
                    let n = tally.done;
                    match result {
                        Ok(name) => {
                            *tally.by_name.entry(name.clone()).or_default() += 1;
                            tally.recent.push_back(name);
                            if tally.recent.len() > 50 {
                                tally.recent.pop_front();
                            }
                        }
                        Err(error) => tally.failures.push((n, error)),
                    }
                }
            });
        });
        Ok(LoadLoop { stop, tally, thread: Some(thread) })
    }

    /// Reads the tally under its lock.
    pub fn tally<T>(&self, f: impl FnOnce(&LoadTally) -> T) -> T {
        f(&self.tally.lock().expect("not poisoned"))
    }

    pub fn done(&self) -> usize {
        self.tally(|t| t.done)
    }

    /// Waits until the loop has finished `n` more requests than now.
    pub async fn progress(&self, n: usize) -> Result<()> {
        progress_all(std::slice::from_ref(self), n).await
    }

    /// Stops the loop and returns everything it saw.
    pub fn finish(mut self) -> LoadTally {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut self.tally.lock().expect("not poisoned"))
    }
}

/// Waits until every loop has finished `n` more requests than now.
pub async fn progress_all(loops: &[LoadLoop], n: usize) -> Result<()> {
    let targets: Vec<usize> = loops.iter().map(|l| l.done() + n).collect();
    eventually(
        &format!("{n} more requests"),
        WAIT,
        || {
            if loops.iter().zip(&targets).all(|(l, t)| l.done() >= *t) { Ok(()) } else { Err("not yet".to_string()) }
        },
    )
    .await
}

impl Drop for LoadLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// === SCTP as raw packets ===
//
// The kernel these tests run on may have no SCTP sockets (CONFIG_IP_SCTP off), while netfilter
// still tracks and NATs SCTP (CONFIG_NF_CT_PROTO_SCTP). Raw IP sockets of protocol 132 carry a
// hand-made INIT and INIT ACK, which is all conntrack needs to see an association start.

const IPPROTO_SCTP: i32 = 132;

/// Whether this kernel can open SCTP sockets.
pub fn kernel_has_sctp_sockets() -> bool {
    Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::from(IPPROTO_SCTP))).is_ok()
}

/// CRC32c (Castagnoli), as SCTP's checksum (RFC 9260 appendix A).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// An SCTP packet (common header + one chunk) with its checksum filled in.
fn sctp_packet(src_port: u16, dst_port: u16, vtag: u32, chunk: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(12 + chunk.len());
    packet.extend_from_slice(&src_port.to_be_bytes());
    packet.extend_from_slice(&dst_port.to_be_bytes());
    packet.extend_from_slice(&vtag.to_be_bytes());
    packet.extend_from_slice(&[0; 4]);
    packet.extend_from_slice(chunk);
    // The checksum is stored least significant byte first (what Linux writes, RFC 9260 B).
    let crc = crc32c(&packet);
    packet[8..12].copy_from_slice(&crc.to_le_bytes());
    packet
}

/// An INIT (type 1) or INIT ACK (type 2) chunk; INIT ACK carries a small state cookie.
fn init_chunk(kind: u8, initiate_tag: u32) -> Vec<u8> {
    let cookie: &[u8] = if kind == 2 { &[0, 7, 0, 8, 1, 2, 3, 4] } else { &[] };
    let length = 20 + cookie.len() as u16;
    let mut chunk = vec![kind, 0];
    chunk.extend_from_slice(&length.to_be_bytes());
    chunk.extend_from_slice(&initiate_tag.to_be_bytes());
    chunk.extend_from_slice(&65_535u32.to_be_bytes()); // a_rwnd
    chunk.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    chunk.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    chunk.extend_from_slice(&initiate_tag.wrapping_add(7).to_be_bytes()); // initial TSN
    chunk.extend_from_slice(cookie);
    chunk
}

/// An SCTP packet as received on a raw socket (IP header included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SctpSeen {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub vtag: u32,
    pub chunk_type: u8,
    pub initiate_tag: u32,
    pub checksum_ok: bool,
}

fn parse_sctp(datagram: &[u8]) -> Option<SctpSeen> {
    let ihl = usize::from(*datagram.first()? & 0x0f) * 4;
    if datagram.get(9) != Some(&(IPPROTO_SCTP as u8)) || datagram.len() < ihl + 20 {
        return None;
    }
    let be16 = |at: usize| u16::from_be_bytes([datagram[at], datagram[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([datagram[at], datagram[at + 1], datagram[at + 2], datagram[at + 3]]);
    let ip = |at: usize| Ipv4Addr::new(datagram[at], datagram[at + 1], datagram[at + 2], datagram[at + 3]);
    let mut sctp = datagram[ihl..].to_vec();
    let stored = u32::from_le_bytes([sctp[8], sctp[9], sctp[10], sctp[11]]);
    sctp[8..12].copy_from_slice(&[0; 4]);
    Some(SctpSeen {
        src: SocketAddrV4::new(ip(12), be16(ihl)),
        dst: SocketAddrV4::new(ip(16), be16(ihl + 2)),
        vtag: be32(ihl + 4),
        chunk_type: datagram[ihl + 12],
        initiate_tag: be32(ihl + 16),
        checksum_ok: crc32c(&sctp) == stored,
    })
}

/// A raw SCTP endpoint in a namespace: sends hand-made chunks, receives every SCTP packet
/// addressed to the namespace.
pub struct RawSctp(Socket);

impl RawSctp {
    pub fn open(ns: &NetNs) -> Result<RawSctp> {
        let socket = ns.run_in(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_SCTP))))??;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(RawSctp(socket))
    }

    fn send(&self, to: Ipv4Addr, packet: &[u8]) -> Result<()> {
        let addr = SockAddr::from(SocketAddrV4::new(to, 0));
        self.0.send_to(packet, &addr).context("sending a raw SCTP packet")?;
        Ok(())
    }

    /// Sends an INIT from `src_port` to `to` with `tag` as its initiate tag.
    pub fn send_init(&self, src_port: u16, to: SocketAddrV4, tag: u32) -> Result<()> {
        self.send(*to.ip(), &sctp_packet(src_port, to.port(), 0, &init_chunk(1, tag)))
    }

    /// Answers `init` (as seen here) with an INIT ACK.
    pub fn answer_init(&self, init: &SctpSeen, tag: u32) -> Result<()> {
        self.send(*init.src.ip(), &sctp_packet(init.dst.port(), init.src.port(), init.initiate_tag, &init_chunk(2, tag)))
    }

    /// The next SCTP packet matching `want` within `timeout`.
    pub fn receive(&self, timeout: Duration, want: impl Fn(&SctpSeen) -> bool) -> Result<SctpSeen> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // Errors (timeouts; an ICMP error queued on the socket) just mean "not yet".
            let Ok(n) = (&self.0).read(&mut buf) else { continue };
            if let Some(seen) = parse_sctp(&buf[..n])
                && want(&seen)
            {
                return Ok(seen);
            }
        }
        bail!("no matching SCTP packet within {timeout:?}")
    }
}

/// An INIT from `client` to `to` until `server` sees it (a fresh source port and tag per try,
/// from `first_port`: a try before the rules exist leaves an un-NATed conntrack entry), answered
/// with an INIT ACK that `client` must receive: (the INIT as the server saw it, the INIT ACK as
/// the client saw it). Blocking.
pub fn sctp_handshake(client: &RawSctp, server: &RawSctp, to: SocketAddrV4, first_port: u16, timeout: Duration) -> Result<(SctpSeen, SctpSeen)> {
    let deadline = Instant::now() + timeout;
    for src_port in first_port..=u16::MAX {
        let tag = 0x5c7b_0000 | u32::from(src_port);
        client.send_init(src_port, to, tag)?;
        // Matched by tag: a masquerading node may change the source port.
        match server.receive(Duration::from_millis(500), |s| s.chunk_type == 1 && s.initiate_tag == tag) {
            Ok(init) => {
                server.answer_init(&init, 0x0ac4_0001)?;
                let ack = client.receive(Duration::from_secs(2), |s| s.chunk_type == 2 && s.dst.port() == src_port && s.vtag == tag)?;
                return Ok((init, ack));
            }
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => {}
        }
    }
    bail!("no SCTP handshake through {to}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
