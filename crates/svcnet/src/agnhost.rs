//! `svcnet agnhost`: test servers and probes in the manner of upstream's agnhost image, so that
//! tests and users have a server and a client that need nothing but this binary. Containers of
//! the image `registry.k8s.io/e2e-test-images/agnhost` without a `command` run this.
//!
//! Each server exits 0 on SIGTERM (a pod's process is PID 1 of its namespace and gets only the
//! signals it handles).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

#[derive(clap::Subcommand)]
pub enum AgnhostCommand {
    /// Serves the hostname over HTTP (and/or raw TCP, UDP) on one port.
    ServeHostname {
        #[arg(long, default_value_t = 9376)]
        port: u16,
        /// Serve over raw TCP instead of HTTP.
        #[arg(long)]
        tcp: bool,
        /// Serve over UDP as well.
        #[arg(long)]
        udp: bool,
        /// Serve over HTTP (the default unless --tcp).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        http: bool,
    },
    /// An HTTP server (`/`, `/hostname`, `/clientip`, `/echo?msg=`, `/exit?code=`, `/healthz`,
    /// `/readyz`, `/shell?cmd=`, `/dial?host=&port=&request=&protocol=&tries=`) and a UDP server
    /// (`hostname`, `echo X`, `clientip`).
    Netexec {
        #[arg(long = "http-port", default_value_t = 8080)]
        http_port: u16,
        #[arg(long = "udp-port", default_value_t = 8081)]
        udp_port: u16,
        /// Delay before `/healthz` answers 200, in seconds (upstream's netexec has the same flag).
        #[arg(long = "delay-shutdown", default_value_t = 0)]
        delay_shutdown: u64,
    },
    /// Connects to HOST:PORT and exits 0 if that works, 1 (with the error) if not.
    Connect {
        target: String,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
        #[arg(long, default_value = "tcp")]
        protocol: String,
    },
    /// Sleeps until SIGTERM or SIGINT.
    Pause,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = text.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = num.parse().map_err(|_| format!("invalid duration {text:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration unit in {text:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub async fn run(command: AgnhostCommand) -> anyhow::Result<()> {
    let serve = async {
        match command {
            AgnhostCommand::ServeHostname { port, tcp, udp, http } => serve_hostname(port, tcp, udp, http && !tcp).await,
            AgnhostCommand::Netexec { http_port, udp_port, .. } => netexec(http_port, udp_port).await,
            AgnhostCommand::Connect { target, timeout, protocol } => connect(&target, timeout, &protocol).await,
            AgnhostCommand::Pause => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = serve => result,
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

fn hostname() -> String {
    // The UTS namespace's name, as gethostname(2) gives it.
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

async fn serve_hostname(port: u16, tcp: bool, udp: bool, http: bool) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let mut tasks = tokio::task::JoinSet::new();
    if udp {
        let socket = UdpSocket::bind(addr).await.with_context(|| format!("binding udp {addr}"))?;
        tasks.spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (_, peer) = socket.recv_from(&mut buf).await?;
                socket.send_to(hostname().as_bytes(), peer).await?;
            }
        });
    }
    if tcp || http {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding tcp {addr}"))?;
        eprintln!("serve-hostname: serving on {addr}");
        tasks.spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await?;
                tokio::spawn(async move {
                    if http {
                        let _ = read_request(&mut stream).await;
                        let _ = respond(&mut stream, 200, &hostname()).await;
                    } else {
                        let _ = stream.write_all(hostname().as_bytes()).await;
                    }
                });
            }
        });
    }
    match tasks.join_next().await {
        Some(result) => result?,
        None => anyhow::bail!("serve-hostname: nothing to serve (--http=false without --tcp or --udp)"),
    }
}

/// Reads a request's line and headers: (method, target).
async fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let target = words.next().unwrap_or("/").to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body).await?;
    Ok((method, target))
}

async fn respond(stream: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Error",
    };
    let head = format!("HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn query(target: &str) -> (String, Vec<(String, String)>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_string(), params)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn netexec(http_port: u16, udp_port: u16) -> anyhow::Result<()> {
    let udp = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], udp_port))).await.with_context(|| format!("binding udp :{udp_port}"))?;
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], http_port))).await.with_context(|| format!("binding tcp :{http_port}"))?;
    eprintln!("netexec: http on :{http_port}, udp on :{udp_port}");
    let udp_task = async move {
        let mut buf = [0u8; 1500];
        loop {
            let (n, peer) = udp.recv_from(&mut buf).await?;
            let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            let reply = if text == "hostname" {
                hostname()
            } else if let Some(rest) = text.strip_prefix("echo ") {
                rest.to_string()
            } else if text == "clientip" {
                peer.to_string()
            } else {
                String::new()
            };
            udp.send_to(reply.as_bytes(), peer).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    let http_task = async move {
        loop {
            let (mut stream, peer) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok((method, target)) = read_request(&mut stream).await else { return };
                // As upstream's netexec, every request is logged (with the client's address, so
                // `kubectl logs` shows who called: the way to see that pod traffic is not NATed).
                eprintln!("netexec: {method} {target} from {peer}");
                let (path, params) = query(&target);
                let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let (code, body) = match path.as_str() {
                    "/" => (200, format!("NOW: {}", jiff::Timestamp::now())),
                    "/hostname" => (200, hostname()),
                    "/clientip" => (200, peer.to_string()),
                    "/echo" => (200, param("msg").unwrap_or_default()),
                    "/healthz" | "/readyz" => (200, "ok".to_string()),
                    "/exit" => {
                        let code: i32 = param("code").and_then(|c| c.parse().ok()).unwrap_or(0);
                        let _ = respond(&mut stream, 200, "").await;
                        std::process::exit(code);
                    }
                    "/shell" => match param("cmd") {
                        Some(cmd) => match tokio::process::Command::new("/bin/sh").arg("-c").arg(&cmd).output().await {
                            Ok(out) => (200, serde_json::json!({"output": String::from_utf8_lossy(&out.stdout)}).to_string()),
                            Err(e) => (200, serde_json::json!({"error": e.to_string()}).to_string()),
                        },
                        None => (400, "missing cmd".into()),
                    },
                    "/dial" => dial(&param).await,
                    _ => (404, "404 page not found".into()),
                };
                let _ = respond(&mut stream, code, &body).await;
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    tokio::try_join!(udp_task, http_task).map(|_| ())
}

/// `/dial`: asks another netexec (`request` = hostname, clientip, echo...) and reports its
/// answers as `{"responses": [...]}` or `{"errors": [...]}`, as upstream's e2e tests use it.
async fn dial(param: &(dyn Fn(&str) -> Option<String> + Sync)) -> (u16, String) {
    let (Some(host), Some(port)) = (param("host"), param("port")) else { return (400, "missing host or port".into()) };
    let request = param("request").unwrap_or_else(|| "hostname".into());
    let protocol = param("protocol").unwrap_or_else(|| "http".into());
    let tries: usize = param("tries").and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    let addr = format!("{host}:{port}");
    let mut responses = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..tries {
        let result = tokio::time::timeout(Duration::from_secs(5), async {
            if protocol == "udp" {
                let socket = UdpSocket::bind("0.0.0.0:0").await?;
                socket.connect(&addr).await?;
                socket.send(request.as_bytes()).await?;
                let mut buf = [0u8; 1500];
                let n = socket.recv(&mut buf).await?;
                Ok::<String, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
            } else {
                let mut stream = TcpStream::connect(&addr).await?;
                let path = if request.starts_with('/') { request.clone() } else { format!("/{request}") };
                stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
                let mut out = String::new();
                stream.read_to_string(&mut out).await?;
                Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
            }
        })
        .await;
        match result {
            Ok(Ok(r)) => responses.push(r),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push("timeout".into()),
        }
    }
    (200, serde_json::json!({"responses": responses, "errors": errors}).to_string())
}

async fn connect(target: &str, timeout: Duration, protocol: &str) -> anyhow::Result<()> {
    if protocol != "tcp" {
        anyhow::bail!("connect: protocol {protocol:?} is not supported (tcp only)");
    }
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
        Err(_) => {
            eprintln!("timeout");
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_durations() {
        let (path, params) = query("/dial?host=10.0.0.1&port=80&request=echo%20hi+there");
        assert_eq!(path, "/dial");
        assert_eq!(params[2], ("request".into(), "echo hi there".into()));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    }
}
