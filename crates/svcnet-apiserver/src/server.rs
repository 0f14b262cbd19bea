//! The HTTPS listener: TLS, bearer-token authentication, routing, metrics, and responses.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;

use crate::{
    discovery,
    error::ApiError,
    handlers::{self, Call, Reply},
    metrics::{DurationLabels, Metrics, RequestLabels},
    namespace, negotiate,
    negotiate::Output,
    registry::Registry,
    request::{self, Action},
};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted, as kube-apiserver's default (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared by every request.
pub struct State {
    pub registry: Registry,
    pub token: String,
    pub metrics: Metrics,
    pub server_address: String,
}

pub(crate) fn empty_body() -> Body {
    full(Bytes::new())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

fn json_response(code: u16, body: &Value, warnings: &[String], content_type: Option<&str>) -> Response<Body> {
    let mut bytes = serde_json::to_vec(body).expect("a Value always serializes");
    bytes.push(b'\n');
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let ct = content_type.unwrap_or("application/json");
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("application/json")));
    for w in warnings {
        // RFC 7234 warning, as kube-apiserver sends them (kubectl prints "Warning: ...").
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status(), &[], None)
}

/// A static OpenAPI document, served from its pre-serialized bytes with its hash as ETag.
fn document_response(doc: &crate::openapi::Document) -> Response<Body> {
    let mut resp = Response::new(full(doc.bytes()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(etag) = HeaderValue::from_str(&doc.etag()) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    resp
}

fn text_response(code: u16, text: String, ct: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

fn authenticated(state: &State, req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else { return false };
    constant_time_eq(token.as_bytes(), state.token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves one request.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = request::parse_query(req.uri().query());
    let action = request::route(&method, &path, &query);
    // Health endpoints answer without credentials, as kube-apiserver's default RBAC allows
    // anonymous access to them; everything else needs the token.
    let public = matches!(action, Ok(Action::Health(_)));
    if !public && !authenticated(&state, &req) {
        return Ok(error_response(&ApiError::unauthorized()));
    }
    // Streams to a pod's node keep the connection (and its upgrade) for themselves.
    if let Ok(Action::PodProxy(proxy)) = &action {
        return Ok(crate::node_proxy::serve(&state, proxy, req).await.unwrap_or_else(|e| error_response(&e)));
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let dry_run = query.get("dryRun").is_some_and(|d| !d.is_empty());
    // The body is read before any answer, even an error: an HTTP/2 client whose request body is
    // cut off by an early response sees a stream error instead of the Status.
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error_response(&ApiError::new(413, "RequestEntityTooLarge", "the request body is too large"))),
    };
    let action = match action {
        Ok(a) => a,
        Err(e) => return Ok(error_response(&e)),
    };
    // Protobuf bodies (kubectl's `create namespace|service|deployment|configmap`) become the JSON
    // they stand for; everything after sees only JSON.
    let (content_type, body) = match content_type {
        Some(ct) if svcnet_protobuf::is_protobuf(&ct) && !body.is_empty() => match svcnet_protobuf::decode_request(&body) {
            Ok(v) => (Some("application/json".to_string()), Bytes::from(serde_json::to_vec(&v).expect("a Value always serializes"))),
            Err(e) => return Ok(error_response(&ApiError::bad_request(e.to_string()))),
        },
        ct => (ct, body),
    };
    let resp = dispatch(&state, &action, &query, accept.as_deref(), content_type.as_deref(), body, user_agent.as_deref()).await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            if e.code >= 500 {
                tracing::warn!(%method, %path, error = %e, "request failed");
            }
            error_response(&e)
        }
    };
    if let Some(t) = action.target() {
        let scope = if t.name.is_some() {
            "resource"
        } else if t.namespace.is_some() {
            "namespace"
        } else {
            "cluster"
        };
        let d = DurationLabels {
            verb: action.verb().into(),
            dry_run: if dry_run { "All".into() } else { String::new() },
            group: t.info.group.into(),
            version: t.info.version.into(),
            resource: t.info.plural.into(),
            subresource: t.subresource.clone().unwrap_or_default(),
            scope: scope.into(),
            component: "apiserver".into(),
        };
        let r = RequestLabels {
            verb: d.verb.clone(),
            dry_run: d.dry_run.clone(),
            group: d.group.clone(),
            version: d.version.clone(),
            resource: d.resource.clone(),
            subresource: d.subresource.clone(),
            scope: d.scope.clone(),
            component: d.component.clone(),
            code: resp.status().as_u16().to_string(),
        };
        state.metrics.requests.get_or_create(&r).inc();
        if !matches!(action, Action::Watch(_)) {
            state.metrics.durations.get_or_create(&d).observe(started.elapsed().as_secs_f64());
        }
    }
    Ok(resp)
}

async fn dispatch(
    state: &State,
    action: &Action,
    query: &std::collections::HashMap<String, String>,
    accept: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
    user_agent: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let output = negotiate::choose(accept).ok_or_else(|| ApiError::not_acceptable(accept.unwrap_or("")))?;
    let ok = |v: Value| Ok(json_response(200, &v, &[], None));
    let reg = &state.registry;
    match action {
        Action::Version => ok(discovery::version()),
        Action::Health(_) => Ok(text_response(200, "ok".into(), "text/plain; charset=utf-8")),
        Action::Metrics => Ok(text_response(200, state.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")),
        Action::OpenApiV2 => Ok(document_response(crate::openapi::v2())),
        Action::OpenApiV3Root => Ok(document_response(crate::openapi::v3_root_document())),
        Action::OpenApiV3(path) => match crate::openapi::v3_group_version(path) {
            Some(doc) => Ok(document_response(doc)),
            None => Err(ApiError::path_not_found()),
        },
        Action::CoreVersions | Action::Groups => match output {
            Output::Discovery(v) => {
                let doc = discovery::aggregated(matches!(action, Action::CoreVersions), v);
                let ct = format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
                Ok(json_response(200, &doc, &[], Some(&ct)))
            }
            _ if matches!(action, Action::CoreVersions) => ok(discovery::core_versions(&state.server_address)),
            _ => ok(discovery::groups()),
        },
        Action::Group(g) => discovery::group(g).map_or_else(|| Err(ApiError::path_not_found()), ok),
        Action::ResourceList { group, version } => ok(discovery::resource_list(group, version)),
        Action::PodProxy(_) => Err(ApiError::internal("pod subresources are proxied before dispatch")),
        Action::Get(t)
        | Action::List(t)
        | Action::Watch(t)
        | Action::Create(t)
        | Action::Update(t)
        | Action::Patch(t)
        | Action::Delete(t)
        | Action::DeleteCollection(t) => {
            let call = Call { query, content_type, body, output, user_agent };
            let reply = match action {
                Action::Get(_) => handlers::get(reg, t, &call).await?,
                Action::List(_) => handlers::list(reg, t, &call).await?,
                Action::Watch(_) => handlers::watch(reg, t, &call).await?,
                Action::Create(_) => handlers::create(reg, t, &call).await?,
                Action::Update(_) => handlers::update(reg, t, &call).await?,
                Action::Patch(_) => handlers::patch(reg, t, &call).await?,
                Action::Delete(_) => {
                    let r = handlers::delete(reg, t, &call).await?;
                    if t.info.kind == "Namespace" && !dry_run_requested(query) {
                        namespace::spawn_finalize(reg.clone(), t.name.clone().unwrap_or_default());
                    }
                    r
                }
                _ => handlers::delete_collection(reg, t, &call).await?,
            };
            Ok(match reply {
                Reply::Json { code, body, warnings, content_type } => json_response(code, &body, &warnings, content_type.as_deref()),
                Reply::Stream(rx) => {
                    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
                    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
                    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
                    resp
                }
            })
        }
    }
}

/// A running server.
pub struct Running {
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests end (watches are cut), and waits.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Accepts TLS connections on `listener` and serves them until shut down.
pub fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: Arc<State>) -> std::io::Result<Running> {
    let local_addr = listener.local_addr()?;
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let acceptor = TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown_rx.changed() => break,
                accepted = listener.accept() => {
                    let Ok((tcp, _peer)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let state = state.clone();
                    let mut stop = shutdown_rx.clone();
                    conns.spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let io = hyper_util::rt::TokioIo::new(tls);
                        let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                        let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                        let conn = builder.serve_connection_with_upgrades(io, svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop.changed() => {}
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    });
    Ok(Running { local_addr, shutdown, task })
}

fn dry_run_requested(query: &std::collections::HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|d| !d.is_empty())
}
