//! `/portForward/{ns}/{pod}`: the `portforward.k8s.io` protocol over SPDY/3.1, reached either by
//! an HTTP upgrade to `SPDY/3.1` or, as kubectl 1.31+ tries first, tunneled in a WebSocket whose
//! subprotocol is `SPDY/3.1+portforward.k8s.io` (each binary message a piece of the SPDY byte
//! stream).
//!
//! For each forwarded connection the client opens two streams with the same `requestid` and
//! `port`: `streamtype: error` and `streamtype: data`. Once both are there, the node connects to
//! `127.0.0.1:port` inside the pod's network namespace and copies the data stream both ways; a
//! failure is written to the error stream. Both streams are finished when the pod side closes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::exec::{WebSocket, close_normally, upgrade, websocket_offer};
use super::spdy::{self, Stream};
use super::{Body, full, status_response};
use crate::runtime::ContainerHandle;

const PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const X_STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

pub(super) fn serve(req: Request<Incoming>, pod: &str, handle: ContainerHandle) -> Response<Body> {
    let target = Target { pod: pod.to_owned(), uid: handle.pod_uid, netns: handle.netns_path };
    if let Some((key, offered)) = websocket_offer(&req) {
        if !offered.iter().any(|p| p == TUNNEL_PROTOCOL) {
            return status_response(400, "BadRequest", &format!("none of the offered protocols {offered:?} is supported; supported: {TUNNEL_PROTOCOL}"));
        }
        return upgrade(req, &key, TUNNEL_PROTOCOL, move |ws| async move {
            let (session_end, tunnel_end) = tokio::io::duplex(256 * 1024);
            tokio::spawn(tunnel(ws, tunnel_end));
            session(session_end, target).await;
        });
    }
    let upgrade_header = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !upgrade_header.eq_ignore_ascii_case("SPDY/3.1") {
        return status_response(400, "BadRequest", "Upgrade request required: port-forward speaks SPDY/3.1, directly or tunneled in WebSocket");
    }
    let offered: Vec<&str> =
        req.headers().get_all(X_STREAM_PROTOCOL_VERSION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim).collect();
    if !offered.is_empty() && !offered.contains(&PROTOCOL) {
        return status_response(403, "Forbidden", &format!("subprotocol negotiation failed: none of {offered:?} is {PROTOCOL}"));
    }
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => session(TokioIo::new(upgraded), target).await,
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(X_STREAM_PROTOCOL_VERSION, HeaderValue::from_static(PROTOCOL));
    resp
}

/// The pod connections go to.
#[derive(Clone)]
struct Target {
    pod: String,
    uid: String,
    netns: PathBuf,
}

/// One SPDY connection: pairs the streams of each request and forwards them.
async fn session<IO>(io: IO, target: Target)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (streams_tx, mut streams_rx) = mpsc::unbounded_channel();
    let connection = tokio::spawn(spdy::serve(io, streams_tx));
    // requestid -> (error stream, data stream)
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = streams_rx.recv().await {
        let request = stream.header("requestid").unwrap_or_default().to_owned();
        let entry = pending.entry(request.clone()).or_default();
        match stream.header("streamtype") {
            Some("error") => entry.0 = Some(stream),
            Some("data") => entry.1 = Some(stream),
            other => {
                tracing::debug!(?other, "port-forward: stream of unknown type");
                let _ = stream.writer.finish().await;
                continue;
            }
        }
        if matches!(pending.get(&request), Some((Some(_), Some(_))))
            && let Some((Some(error), Some(data))) = pending.remove(&request)
        {
            tokio::spawn(forward(error, data, target.clone()));
        }
    }
    if let Ok(Err(e)) = connection.await {
        tracing::debug!(error = %e, pod = target.pod, "port-forward connection ended");
    }
}

/// Connects one pair of streams to the pod's port.
async fn forward(error: Stream, mut data: Stream, target: Target) {
    let port = error.header("port").or(data.header("port")).and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
    let Some(port) = port else {
        let _ = error.writer.send(b"invalid or missing port header").await;
        let _ = error.writer.finish().await;
        let _ = data.writer.finish().await;
        return;
    };
    let netns = target.netns.clone();
    let connected = tokio::task::spawn_blocking(move || {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match svcnet_netns::run_in_netns_path(&netns, || std::net::TcpStream::connect(addr)) {
            Ok(Ok(tcp)) => Ok(tcp),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))
    .and_then(|tcp| {
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())
    });
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside the pod's network namespace: {e}",
                target.pod, target.uid
            );
            let _ = error.writer.send(message.as_bytes()).await;
            let _ = error.writer.finish().await;
            let _ = data.writer.finish().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let upstream = async {
        while let Some(chunk) = data.data.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let writer = data.writer.clone();
    let downstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.send(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = writer.finish().await;
    };
    tokio::join!(upstream, downstream);
    let _ = error.writer.finish().await;
}

/// Carries the SPDY byte stream in WebSocket binary messages, both ways.
async fn tunnel(ws: WebSocket, pipe: tokio::io::DuplexStream) {
    let (mut sink, mut incoming) = ws.split();
    let (mut pipe_read, mut pipe_write) = tokio::io::split(pipe);
    let inbound = async move {
        while let Some(Ok(message)) = incoming.next().await {
            match message {
                Message::Binary(data) if pipe_write.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = pipe_write.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
        close_normally(&mut sink).await;
    };
    tokio::join!(inbound, outbound);
}
