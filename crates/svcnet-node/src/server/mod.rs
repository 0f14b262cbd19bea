//! The node's HTTPS API, at the kubelet's paths, which the API server proxies `kubectl logs`,
//! `exec`, `attach`, `cp` and `port-forward` to:
//!
//! | path | what |
//! | --- | --- |
//! | `GET /containerLogs/{ns}/{pod}/{container}` | the container's log ([`logs`]): `follow`, `previous`, `tailLines`, `limitBytes` |
//! | `GET\|POST /exec/{ns}/{pod}/{container}?command=...` | a process in the container's namespaces, over WebSocket `v5.channel.k8s.io` / `v4.channel.k8s.io` ([`exec`]) |
//! | `GET\|POST /attach/{ns}/{pod}/{container}` | the container's output from now on, over the same protocol |
//! | `GET\|POST /portForward/{ns}/{pod}` | SPDY/3.1 `portforward.k8s.io`, directly or tunneled in WebSocket (`SPDY/3.1+portforward.k8s.io`) ([`portforward`], [`spdy`]) |
//! | `GET /healthz` | `ok` |
//!
//! **Authentication:** every request except `/healthz` carries `Authorization: Bearer <token>`
//! with [`ServerConfig::token`]: the token of the agent's own kubeconfig, which the API server
//! sends too (svcnet has one cluster token). TLS uses a self-signed certificate made at start;
//! the API server does not verify it (kube-apiserver's default without
//! `--kubelet-certificate-authority`).
//!
//! **Architecture invariant:** the server knows pods only through [`PodRuntime`]; nothing here
//! reads the Kubernetes API.

mod exec;
mod logs;
mod portforward;
mod spdy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::runtime::{ContainerHandle, LookupError, PodRuntime};

/// Bodies of the node API's responses.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How the node's API is served.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The bearer token every request must carry.
    pub token: String,
    /// Names and addresses in the self-signed serving certificate (the node's name and
    /// InternalIP).
    pub hosts: Vec<String>,
}

/// Errors of starting the node's API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The serving certificate could not be made.
    #[error("making the node's serving certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The TLS configuration was refused.
    #[error("configuring TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The listening socket failed.
    #[error("node API listener: {0}")]
    Io(#[from] std::io::Error),
    /// Creating the listening socket in the node's namespace failed.
    #[error("creating the node API's socket: {0}")]
    Netns(#[from] svcnet_netns::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Binds a listening socket in the network namespace `netns` (the node's), usable from any
/// thread afterwards: sockets keep the namespace they were made in.
pub fn bind_in(netns: &svcnet_netns::NetNs, addr: SocketAddr) -> Result<TcpListener> {
    let listener = netns.run_in(|| std::net::TcpListener::bind(addr))??;
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener)?)
}

/// Serves the node's API on `listener` until the returned future is dropped (abort its task to
/// stop). Each connection is served on its own task.
pub async fn serve(listener: TcpListener, runtime: Arc<dyn PodRuntime>, config: ServerConfig) -> Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&config.hosts)?));
    let state = Arc::new(State { runtime, token: config.token });
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "node API: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let io = hyper_util::rt::TokioIo::new(tls);
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(io, service).await;
        });
    }
}

/// A self-signed serving certificate for `hosts`, offering HTTP/1.1 only (upgrades need it).
fn tls_config(hosts: &[String]) -> Result<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "svcnet-node");
    for host in hosts {
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(host.clone().try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    let chain = vec![rustls::pki_types::CertificateDer::from(cert.der().to_vec())];
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| rustls::Error::General(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config =
        rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_no_client_auth().with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

struct State {
    runtime: Arc<dyn PodRuntime>,
    token: String,
}

/// What a request asks for.
enum Route {
    Health,
    Logs { namespace: String, pod: String, container: String },
    Exec { namespace: String, pod: String, container: String },
    Attach { namespace: String, pod: String, container: String },
    PortForward { namespace: String, pod: String },
}

fn route(method: &http::Method, path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == http::Method::GET;
    let get_or_post = get || method == http::Method::POST;
    let s = |v: &str| v.to_owned();
    match segs.as_slice() {
        ["healthz"] if get => Some(Route::Health),
        ["containerLogs", ns, pod, c] if get => Some(Route::Logs { namespace: s(ns), pod: s(pod), container: s(c) }),
        ["exec", ns, pod, c] if get_or_post => Some(Route::Exec { namespace: s(ns), pod: s(pod), container: s(c) }),
        ["attach", ns, pod, c] if get_or_post => Some(Route::Attach { namespace: s(ns), pod: s(pod), container: s(c) }),
        ["portForward", ns, pod] if get_or_post => Some(Route::PortForward { namespace: s(ns), pod: s(pod) }),
        _ => None,
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(route) = route(req.method(), req.uri().path()) else {
        return Ok(status_response(404, "NotFound", "the server could not find the requested resource"));
    };
    if !matches!(route, Route::Health) && !authenticated(&state.token, &req) {
        return Ok(status_response(401, "Unauthorized", "Unauthorized"));
    }
    let query = Query::parse(req.uri().query());
    let response = match route {
        Route::Health => text_response(200, "ok"),
        Route::Logs { namespace, pod, container } => match lookup(&*state.runtime, &namespace, &pod, Some(&container)) {
            Ok(handle) => logs::serve(state.runtime.clone(), &namespace, &pod, handle, &query).await,
            Err(resp) => *resp,
        },
        Route::Exec { namespace, pod, container } => match lookup(&*state.runtime, &namespace, &pod, Some(&container)) {
            Ok(handle) => exec::exec(req, &pod, handle, &query),
            Err(resp) => *resp,
        },
        Route::Attach { namespace, pod, container } => match lookup(&*state.runtime, &namespace, &pod, Some(&container)) {
            Ok(handle) => exec::attach(req, state.runtime.clone(), (namespace, pod), handle, &query),
            Err(resp) => *resp,
        },
        Route::PortForward { namespace, pod } => match lookup(&*state.runtime, &namespace, &pod, None) {
            Ok(handle) => portforward::serve(req, &pod, handle),
            Err(resp) => *resp,
        },
    };
    Ok(response)
}

fn lookup(runtime: &dyn PodRuntime, namespace: &str, pod: &str, container: Option<&str>) -> Result<ContainerHandle, Box<Response<Body>>> {
    runtime.container(namespace, pod, container).map_err(|e| {
        Box::new(match e {
            LookupError::PodNotFound { .. } => status_response(404, "NotFound", &format!("pod {namespace}/{pod} is not running on this node")),
            other => status_response(400, "BadRequest", &other.to_string()),
        })
    })
}

fn authenticated(token: &str, req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(given) = value.strip_prefix("Bearer ").map(str::trim) else { return false };
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

fn text_response(code: u16, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// A `Status` object: what the API server passes on to clients for a failed request.
pub(crate) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

pub(crate) fn status_response(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&status(code, reason, message)).expect("a Value always serializes");
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A request's query, keeping repeated keys (`command=sh&command=-c`) in order.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    /// The last value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }

    /// A boolean parameter as Go's `strconv.ParseBool` reads it; any of `keys` counts (the
    /// kubelet's `input=1` and kubectl's `stdin=true` alike).
    pub(crate) fn flag(&self, keys: &[&str]) -> bool {
        keys.iter().any(|key| matches!(self.get(key), Some("1" | "t" | "T" | "true" | "TRUE" | "True")))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_query_keys_keep_their_order() {
        let q = Query::parse(Some("command=sh&command=-c&command=echo+a%20b%3B&stdin=true&tty=1&container=c"));
        assert_eq!(q.all("command"), ["sh", "-c", "echo a b;"]);
        assert!(q.flag(&["stdin", "input"]));
        assert!(q.flag(&["tty"]));
        assert!(!q.flag(&["stderr", "error"]));
        assert_eq!(Query::parse(Some("a=%4")).get("a"), Some("%4"));
        assert_eq!(Query::parse(Some("a=%41")).get("a"), Some("A"));
    }

    #[test]
    fn routes() {
        assert!(matches!(route(&http::Method::GET, "/containerLogs/ns/p/c"), Some(Route::Logs { .. })));
        assert!(matches!(route(&http::Method::POST, "/exec/ns/p/c"), Some(Route::Exec { .. })));
        assert!(matches!(route(&http::Method::GET, "/portForward/ns/p"), Some(Route::PortForward { .. })));
        assert!(route(&http::Method::POST, "/containerLogs/ns/p/c").is_none());
        assert!(route(&http::Method::GET, "/exec/ns/p").is_none());
    }
}
