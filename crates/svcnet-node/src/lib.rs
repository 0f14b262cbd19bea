//! svcnet's node agent: what the kubelet and a CNI plugin do for Services and Networking.
//!
//! - [`network`]: the node's plumbing (host bridge, node namespace, pod bridge, routes or VXLAN to
//!   other nodes, masquerade, pod address management). Knows nothing of Kubernetes.
//! - [`kubelet`]: registers the `Node`, keeps its lease, and runs the pods bound to it as processes
//!   in their own namespaces, with probes and status.
//! - [`server`]: the node's HTTPS API (the kubelet's port 10250): container logs, exec, attach and
//!   port-forward, which the API server proxies `kubectl logs|exec|port-forward` to.
//! - [`runtime`]: the boundary between the pod runtime and the node's API.

pub mod kubelet;
pub mod network;
pub mod runtime;
pub mod server;
