//! Probes (exec, tcpSocket, httpGet, grpc refused) with upstream's timing fields. TCP and HTTP
//! probes connect from the node's network namespace to the pod's IP, as the kubelet does from
//! the host; exec probes run inside the container's namespaces (`nsenter`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use svcnet_netns::NetNs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

/// One probe's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// Where a probe goes.
#[derive(Clone)]
pub struct Target {
    pub pod_ip: IpAddr,
    /// The node's network namespace (sockets for TCP and HTTP probes are made there).
    pub node_netns: Arc<NetNs>,
    /// The container's main process, for exec probes.
    pub pid: u32,
}

/// The probe's thresholds and timing, with upstream's defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Resolves a probe's port (a number or a container port's name).
pub fn port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("unknown port name {name:?}"))
        }
    }
}

/// Runs the probe once.
pub async fn probe_once(probe: &Probe, container: &Container, target: &Target) -> Outcome {
    let timing = Timing::of(probe);
    let attempt = async {
        if let Some(exec) = &probe.exec {
            return exec_probe(exec.command.clone().unwrap_or_default(), target.pid).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = match port(&tcp.port, container) {
                Ok(p) => p,
                Err(e) => return Outcome::Failure(e),
            };
            let host = tcp.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(target.pod_ip);
            return match connect(&target.node_netns, SocketAddr::new(host, port)).await {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            };
        }
        if let Some(http) = &probe.http_get {
            let port = match port(&http.port, container) {
                Ok(p) => p,
                Err(e) => return Outcome::Failure(e),
            };
            let host = http.host.as_deref().and_then(|h| h.parse().ok()).unwrap_or(target.pod_ip);
            if http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
                return Outcome::Failure("HTTPS probes are not supported by svcnet".into());
            }
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            let headers: Vec<(String, String)> = http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
            return http_probe(&target.node_netns, SocketAddr::new(host, port), &path, &headers).await;
        }
        Outcome::Failure("grpc probes are not supported by svcnet".into())
    };
    match tokio::time::timeout(timing.timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!("probe timed out after {}s", timing.timeout.as_secs())),
    }
}

async fn connect(netns: &NetNs, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    // The socket is created in the node's namespace and used from here.
    let socket =
        netns.run_in(|| if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }).map_err(std::io::Error::other)??;
    socket.connect(addr).await
}

async fn http_probe(netns: &NetNs, addr: SocketAddr, path: &str, headers: &[(String, String)]) -> Outcome {
    let mut stream = match connect(netns, addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("Get \"http://{addr}{path}\": dial tcp {addr}: {e}")),
    };
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("user-agent") {
        request.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !has("accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Outcome::Failure(e.to_string());
    }
    let mut buf = vec![0u8; 1024];
    let mut read = 0;
    while read < 16 {
        match stream.read(&mut buf[read..]).await {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Outcome::Failure(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&buf[..read]);
    let code: Option<u16> = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    match code {
        Some(c) if (200..400).contains(&c) => Outcome::Success,
        Some(c) => Outcome::Failure(format!("HTTP probe failed with statuscode: {c}")),
        None => Outcome::Failure("malformed HTTP response".into()),
    }
}

async fn exec_probe(command: Vec<String>, pid: u32) -> Outcome {
    if command.is_empty() {
        return Outcome::Failure("exec probe without a command".into());
    }
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg("--target").arg(pid.to_string()).args(["--net", "--uts", "--mount", "--pid", "--"]).args(&command);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
    match cmd.output().await {
        Ok(out) if out.status.success() => Outcome::Success,
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Outcome::Failure(format!("command {command:?} exited with {}: {}", out.status.code().unwrap_or(-1), text.trim()))
        }
        Err(e) => Outcome::Failure(format!("running nsenter: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_as_upstream() {
        let probe: Probe = serde_json::from_value(json!({"tcpSocket": {"port": 80}})).unwrap();
        let t = Timing::of(&probe);
        assert_eq!((t.period.as_secs(), t.timeout.as_secs(), t.success_threshold, t.failure_threshold), (10, 1, 1, 3));
    }

    #[test]
    fn named_ports() {
        let c: Container = serde_json::from_value(json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]})).unwrap();
        assert_eq!(port(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(port(&IntOrString::Int(81), &c), Ok(81));
        assert!(port(&IntOrString::String("nope".into()), &c).is_err());
    }
}
