//! `exec` and `attach` over WebSocket with Kubernetes' channel protocol, as kubectl 1.30+ speaks
//! it first (`v5.channel.k8s.io`, else `v4.channel.k8s.io`): every binary message starts with a
//! channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (one `Status` when the command ends: the
//! exit code as a `NonZeroExitCode` cause), 4 resize (`{"Width":..,"Height":..}`), and with v5,
//! 255 close (`[255, channel]`: the client closed its stdin).

use std::future::Future;
use std::process::ExitStatus;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use svcnet_netns::{EnterCommand, ProcessInput, ProcessOutput, Signal, Terminal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::logs::{self, Follow};
use super::{Body, Query, full, status_response};
use crate::runtime::{ContainerHandle, PodRuntime};

pub(super) type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The channel protocols served, best first.
const PROTOCOLS: [(&str, Version); 2] = [("v5.channel.k8s.io", Version::V5), ("v4.channel.k8s.io", Version::V4)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V4,
    V5,
}

/// What the client asked to be connected.
#[derive(Clone, Copy, Debug)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Streams {
    fn from_query(query: &Query) -> Result<Streams, Box<Response<Body>>> {
        let tty = query.flag(&["tty"]);
        let streams = Streams {
            stdin: query.flag(&["stdin", "input"]),
            stdout: query.flag(&["stdout", "output"]),
            // With a terminal, stdout carries both.
            stderr: query.flag(&["stderr", "error"]) && !tty,
            tty,
        };
        if !streams.stdin && !streams.stdout && !streams.stderr {
            return Err(Box::new(status_response(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")));
        }
        Ok(streams)
    }
}

/// `/exec/{ns}/{pod}/{container}?command=...`.
pub(super) fn exec(req: Request<Incoming>, pod: &str, handle: ContainerHandle, query: &Query) -> Response<Body> {
    let command = query.all("command");
    if command.is_empty() {
        return status_response(400, "BadRequest", "you must specify at least one command for the container");
    }
    let streams = match Streams::from_query(query) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let Some(pid) = handle.pid else {
        return status_response(400, "BadRequest", &format!("container {:?} in pod {pod:?} is not running", handle.container));
    };
    let (key, version, protocol) = match negotiate(&req) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    upgrade(req, &key, protocol, move |ws| async move {
        let mut cmd = EnterCommand::new(pid, &command[0]);
        cmd.args(&command[1..]).stdin(streams.stdin);
        if streams.tty {
            cmd.tty(80, 24);
        }
        let process = match cmd.spawn() {
            Ok(p) => p,
            Err(e) => {
                let status = failure(500, "InternalError", &format!("failed to exec in container: starting {:?}: {e}", command[0]));
                finish(ws, &status).await;
                return;
            }
        };
        run_exec(ws, version, streams, process, &command).await;
    })
}

/// `/attach/{ns}/{pod}/{container}`: the container's output from now on (its stdin is
/// `/dev/null`, so there is nothing to write to), until its run ends or the client goes.
pub(super) fn attach(
    req: Request<Incoming>,
    runtime: Arc<dyn PodRuntime>,
    (namespace, pod): (String, String),
    handle: ContainerHandle,
    query: &Query,
) -> Response<Body> {
    let streams = match Streams::from_query(query) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    if streams.stdin {
        return status_response(
            400,
            "BadRequest",
            &format!("container {:?} in pod {pod:?} does not take input: svcnet runs containers with stdin from /dev/null", handle.container),
        );
    }
    if handle.pid.is_none() {
        return status_response(400, "BadRequest", &format!("container {:?} in pod {pod:?} is not running", handle.container));
    }
    let (key, _version, protocol) = match negotiate(&req) {
        Ok(n) => n,
        Err(resp) => return *resp,
    };
    upgrade(req, &key, protocol, move |ws| async move {
        let (mut sink, mut incoming) = ws.split();
        let file = match tokio::fs::File::open(&handle.log_path).await {
            Ok(f) => f,
            Err(e) => {
                let status = failure(500, "InternalError", &format!("reading the output of container {:?}: {e}", handle.container));
                let _ = sink.send(channel_message(ERROR, status.to_string().as_bytes())).await;
                close_normally(&mut sink).await;
                return;
            }
        };
        let start = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let follow = Follow { runtime, namespace, pod, container: handle.container.clone(), path: handle.log_path.clone() };
        tokio::spawn(async move { logs::copy(file, start, None, Some(follow), &tx).await });
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(chunk) => {
                        if streams.stdout && sink.send(channel_message(STDOUT, &chunk)).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                msg = incoming.next() => if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) { return },
            }
        }
        let _ = sink.send(channel_message(ERROR, success().to_string().as_bytes())).await;
        close_normally(&mut sink).await;
    })
}

/// Picks the channel protocol from a WebSocket upgrade request.
fn negotiate(req: &Request<Incoming>) -> Result<(String, Version, &'static str), Box<Response<Body>>> {
    let Some((key, offered)) = websocket_offer(req) else {
        return Err(Box::new(status_response(
            400,
            "BadRequest",
            "Upgrade request required: svcnet's node API streams over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) only",
        )));
    };
    PROTOCOLS.iter().find(|(name, _)| offered.iter().any(|o| o == name)).map(|(name, version)| (key, *version, *name)).ok_or_else(|| {
        Box::new(status_response(
            400,
            "BadRequest",
            &format!("none of the offered stream protocols {offered:?} is supported; supported: v5.channel.k8s.io, v4.channel.k8s.io"),
        ))
    })
}

/// The key and offered subprotocols of a WebSocket upgrade request; `None` for anything else.
pub(super) fn websocket_offer(req: &Request<Incoming>) -> Option<(String, Vec<String>)> {
    let headers = req.headers();
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()?.to_owned();
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    Some((key, offered))
}

/// Answers 101 with `protocol` and runs `session` on the upgraded connection.
pub(super) fn upgrade<F, Fut>(req: Request<Incoming>, key: &str, protocol: &'static str, session: F) -> Response<Body>
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => session(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a valid header value"));
    headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    resp
}

async fn run_exec(ws: WebSocket, version: Version, streams: Streams, mut process: svcnet_netns::EnteredProcess, command: &[String]) {
    let (mut sink, incoming) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        close_normally(&mut sink).await;
    });

    let mut pumps = Vec::new();
    if let Some(stdout) = process.stdout.take() {
        pumps.push(tokio::spawn(pump(stdout, streams.stdout.then_some(STDOUT), out_tx.clone())));
    }
    if let Some(stderr) = process.stderr.take() {
        pumps.push(tokio::spawn(pump(stderr, streams.stderr.then_some(STDERR), out_tx.clone())));
    }
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let input = tokio::spawn(read_input(incoming, version, process.stdin.take(), process.terminal(), kill_tx));
    let waiter = async move {
        tokio::select! {
            status = process.wait() => status,
            _ = kill_rx => {
                let _ = process.signal(Signal::SIGKILL);
                process.wait().await
            }
        }
    };
    let exit = waiter.await;
    for p in pumps {
        let _ = p.await;
    }
    let status = match exit {
        Ok(status) => exit_status(status, command),
        Err(e) => failure(500, "InternalError", &format!("waiting for the command: {e}")),
    };
    let _ = out_tx.send(channel_message(ERROR, status.to_string().as_bytes())).await;
    drop(out_tx);
    let _ = writer.await;
    input.abort();
}

/// Copies a process's output to the client as messages on `channel` (or drops it, when the
/// client did not ask for that stream) until its end.
async fn pump(mut output: ProcessOutput, channel: Option<u8>, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match output.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(channel) = channel
                    && tx.send(channel_message(channel, &buf[..n])).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Handles what the client sends: stdin, resizes, v5's close. When the client goes away before
/// the command ends, the command is killed.
async fn read_input(
    mut incoming: futures::stream::SplitStream<WebSocket>,
    version: Version,
    mut stdin: Option<ProcessInput>,
    terminal: Option<Terminal>,
    kill: oneshot::Sender<()>,
) {
    while let Some(Ok(message)) = incoming.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else { continue };
        match channel {
            STDIN => {
                if let Some(input) = stdin.as_mut()
                    && (input.write_all(payload).await.is_err() || input.flush().await.is_err())
                {
                    stdin = None;
                }
            }
            RESIZE => {
                if let (Some(terminal), Ok(size)) = (&terminal, serde_json::from_slice::<Value>(payload)) {
                    let dim = |k: &str| size.get(k).and_then(Value::as_u64).and_then(|v| u16::try_from(v).ok());
                    if let (Some(w), Some(h)) = (dim("Width"), dim("Height")) {
                        let _ = terminal.resize(w, h);
                    }
                }
            }
            CLOSE if version == Version::V5 => {
                if payload.first() == Some(&STDIN)
                    && let Some(mut input) = stdin.take()
                {
                    let _ = input.shutdown().await;
                }
            }
            _ => {}
        }
    }
    let _ = kill.send(());
}

/// Closes with 1000 (normal closure): client-go reads anything else, even a close without a
/// code, as a failed stream.
pub(super) async fn close_normally(sink: &mut futures::stream::SplitSink<WebSocket, Message>) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut buf = BytesMut::with_capacity(data.len() + 1);
    buf.put_u8(channel);
    buf.put_slice(data);
    Message::Binary(buf.freeze())
}

/// Sends one error-channel `Status` and closes.
async fn finish(ws: WebSocket, status: &Value) {
    let (mut sink, _incoming) = ws.split();
    let _ = sink.send(channel_message(ERROR, status.to_string().as_bytes())).await;
    close_normally(&mut sink).await;
}

fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

/// The error channel's `Status` for a finished command, as client-go's v4 decoder reads it: a
/// non-zero exit is `NonZeroExitCode` with the code in an `ExitCode` cause (128 + the signal
/// for a command killed by one, as container runtimes report it).
fn exit_status(status: ExitStatus, command: &[String]) -> Value {
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
    if code == 0 {
        return success();
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes_as_client_go_reads_them() {
        assert_eq!(exit_status(ExitStatus::from_raw(0), &[]), json!({"metadata": {}, "status": "Success"}));
        let s = exit_status(ExitStatus::from_raw(3 << 8), &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
        // Killed by SIGKILL: 137.
        assert_eq!(exit_status(ExitStatus::from_raw(9), &[])["details"]["causes"][0]["message"], "137");
    }
}
