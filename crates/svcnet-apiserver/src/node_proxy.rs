//! The pod subresources served by the pod's node: `pods/log`, `pods/exec`, `pods/attach` and
//! `pods/portforward`. The API server resolves the pod to its node (`spec.nodeName` → the
//! `Node`'s `InternalIP` and `status.daemonEndpoints.kubeletEndpoint.Port`), checks the
//! container as kube-apiserver does, and proxies the request to the node agent's API at the
//! kubelet's paths (`/containerLogs/...`, `/exec/...`, `/attach/...`, `/portForward/...`),
//! passing upgraded connections (WebSocket, SPDY) through byte for byte both ways.
//!
//! The node is called over TLS without verifying its self-signed certificate (kube-apiserver's
//! behaviour without `--kubelet-certificate-authority`), with the cluster's bearer token, which
//! the node agent also holds (its kubeconfig) and requires.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Empty, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use svcnet_api::resources;

use crate::error::{ApiError, Result};
use crate::request::Target;
use crate::server::State;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How long connecting to a node (TCP and TLS) may take, as kube-apiserver's dialer's 30 s.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The port a node's API listens on when its `Node` does not say.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// A pod subresource served by the pod's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodSubresource {
    Log,
    Exec,
    Attach,
    PortForward,
}

/// A request for a [`PodSubresource`].
#[derive(Clone, Debug)]
pub struct PodProxy {
    pub namespace: String,
    pub name: String,
    pub subresource: PodSubresource,
}

impl PodSubresource {
    /// The subresource named `name` in a pod's path, if the node serves it.
    pub fn parse(name: &str) -> Option<PodSubresource> {
        match name {
            "log" => Some(PodSubresource::Log),
            "exec" => Some(PodSubresource::Exec),
            "attach" => Some(PodSubresource::Attach),
            "portforward" => Some(PodSubresource::PortForward),
            _ => None,
        }
    }

    /// Whether `method` is allowed: `log` is read with GET; the streaming ones are upgraded
    /// from GET (WebSocket) or POST (SPDY).
    pub fn allows(self, method: &Method) -> bool {
        match self {
            PodSubresource::Log => method == Method::GET,
            _ => method == Method::GET || method == Method::POST,
        }
    }
}

/// Serves one pod-proxy request: resolves pod, container and node, then proxies.
pub async fn serve(state: &State, proxy: &PodProxy, mut req: Request<Incoming>) -> Result<Response<Body>> {
    let query = crate::request::parse_query(req.uri().query());
    let pods = resources::find("", "v1", "pods").expect("pods are served");
    let pod = state.registry.get(&Target { info: pods, namespace: Some(proxy.namespace.clone()), name: Some(proxy.name.clone()), subresource: None }).await?;
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!("pod {} does not have a host assigned", proxy.name)));
    }
    let (ns, name) = (&proxy.namespace, &proxy.name);
    let path = match proxy.subresource {
        PodSubresource::PortForward => format!("/portForward/{ns}/{name}"),
        sub => {
            let container = container_of(&pod, name, query.get("container").map(String::as_str))?;
            let prefix = match sub {
                PodSubresource::Log => "containerLogs",
                PodSubresource::Exec => "exec",
                _ => "attach",
            };
            format!("/{prefix}/{ns}/{name}/{container}")
        }
    };
    let nodes = resources::find("", "v1", "nodes").expect("nodes are served");
    let node = state.registry.get(&Target { info: nodes, namespace: None, name: Some(node_name.to_owned()), subresource: None }).await?;
    let (address, port) =
        node_endpoint(&node).ok_or_else(|| ApiError::internal(format!("node {node_name:?} has no InternalIP, ExternalIP or Hostname address")))?;
    // The client's query goes on as it is (repeated `command`s in order).
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut upstream = Request::builder().method(req.method().clone()).uri(&path_and_query);
    for (name, value) in req.headers() {
        if name == header::AUTHORIZATION || name == header::HOST || name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        upstream = upstream.header(name, value);
    }
    let host = match address {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    };
    let upstream = upstream
        .header(header::HOST, &host)
        .header(header::AUTHORIZATION, format!("Bearer {}", state.token))
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;

    let dial_error = |e: &dyn std::fmt::Display| ApiError::internal(format!("error dialing backend: {} https://{host}{path_and_query}: {e}", req.method()));
    let connect = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((address, port)));
    let tcp = connect.await.map_err(|e| dial_error(&e))?.map_err(|e| dial_error(&e))?;
    let _ = tcp.set_nodelay(true);
    let server_name = rustls::pki_types::ServerName::IpAddress(address.into());
    let handshake = tokio::time::timeout(DIAL_TIMEOUT, tokio_rustls::TlsConnector::from(client_config()).connect(server_name, tcp));
    let tls = handshake.await.map_err(|e| dial_error(&e))?.map_err(|e| dial_error(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| dial_error(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "node connection ended");
        }
    });
    let mut response = sender.send_request(upstream).await.map_err(|e| dial_error(&e))?;

    let status = response.status();
    let mut out = Response::builder().status(status);
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out = out.header(name, value);
    }
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        let node_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (client, node) = match tokio::try_join!(client_upgrade, node_upgrade) {
                Ok(pair) => pair,
                Err(e) => return tracing::debug!(error = %e, "upgrade through the node proxy failed"),
            };
            let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
        });
        return out.body(crate::server::empty_body()).map_err(|e| ApiError::internal(e.to_string()));
    }
    // A streamed body (`logs -f`) ends when the node ends it or fails.
    let stream = response
        .into_body()
        .into_data_stream()
        .take_while(|chunk| std::future::ready(chunk.is_ok()))
        .filter_map(|chunk| std::future::ready(chunk.ok().map(|b| Ok::<_, Infallible>(Frame::data(b)))));
    if !out.headers_ref().is_some_and(|h| h.contains_key(header::CONTENT_TYPE)) {
        out = out.header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    out.body(StreamBody::new(stream).boxed_unsync()).map_err(|e| ApiError::internal(e.to_string()))
}

/// The container a request names, or the pod's only one; errors worded as kube-apiserver's.
fn container_of(pod: &Value, pod_name: &str, requested: Option<&str>) -> Result<String> {
    let names = |key: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let containers = names("containers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) => {
            if containers.iter().chain(&names("initContainers")).chain(&names("ephemeralContainers")).any(|n| n == c) {
                Ok(c.to_owned())
            } else {
                Err(ApiError::bad_request(format!("container {c} is not valid for pod {pod_name}")))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!("a container name must be specified for pod {pod_name}, choose one of: [{}]", containers.join(" "));
            let init = names("initContainers");
            if !init.is_empty() {
                message.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// The node's address (InternalIP first, then ExternalIP, then a Hostname that is an address)
/// and its API's port.
fn node_endpoint(node: &Value) -> Option<(IpAddr, u16)> {
    let addresses = node.pointer("/status/addresses").and_then(Value::as_array)?;
    let of_type = |t: &str| {
        addresses
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .find_map(|a| a.get("address").and_then(Value::as_str).and_then(|s| s.parse::<IpAddr>().ok()))
    };
    let address = of_type("InternalIP").or_else(|| of_type("ExternalIP")).or_else(|| of_type("Hostname"))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((address, port))
}

/// TLS to nodes: their certificates are self-signed, so the chain is not verified (the
/// handshake's signatures still are); HTTP/1.1 only, for upgrades.
fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(UnverifiedNodeCertificate(provider.clone()));
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct UnverifiedNodeCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UnverifiedNodeCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_as_kube_apiserver_checks_them() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(container_of(&pod, "p", Some("b")).unwrap(), "b");
        assert_eq!(container_of(&pod, "p", Some("i")).unwrap(), "i");
        assert_eq!(container_of(&pod, "p", Some("x")).unwrap_err().message, "container x is not valid for pod p");
        assert_eq!(
            container_of(&pod, "p", None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_of(&single, "p", None).unwrap(), "only");
    }

    #[test]
    fn node_endpoints() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "172.30.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(node_endpoint(&node), Some(("172.30.0.2".parse().unwrap(), 10251)));
        let bare = json!({"status": {"addresses": [{"type": "ExternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(node_endpoint(&bare), Some(("10.0.0.1".parse().unwrap(), DEFAULT_KUBELET_PORT)));
        assert_eq!(node_endpoint(&json!({"status": {}})), None);
    }
}
