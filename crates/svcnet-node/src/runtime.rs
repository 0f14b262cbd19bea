//! The boundary between the pod runtime ([`crate::kubelet`]) and the node's API
//! ([`crate::server`]): what logs, exec and port-forward need to know about a running pod.

use std::path::PathBuf;

/// A container of a pod on this node, as the node's API sees it.
#[derive(Clone, Debug)]
pub struct ContainerHandle {
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name.
    pub container: String,
    /// PID (on the node) of the container's main process while it runs: the process whose
    /// network, UTS, mount and PID namespaces `exec` enters.
    pub pid: Option<u32>,
    /// The log of the container's current (or last) run: stdout and stderr, appended as written.
    pub log_path: PathBuf,
    /// The log of the run before that (`kubectl logs --previous`), if there was one.
    pub previous_log_path: Option<PathBuf>,
    /// The pod's network namespace (an `ip netns`-style bind mount), for port-forward.
    pub netns_path: PathBuf,
}

/// Why a container could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The pod is not running on this node.
    #[error("pod {namespace}/{name} is not running on this node")]
    PodNotFound { namespace: String, name: String },
    /// The pod has no container of that name.
    #[error("container {container} is not valid for pod {pod}")]
    ContainerNotFound { pod: String, container: String },
    /// The pod has several containers and none was named.
    #[error("a container name must be specified for pod {pod}, choose one of: [{}]", .containers.join(" "))]
    ContainerNotSpecified { pod: String, containers: Vec<String> },
}

/// What the node's API asks of the pod runtime.
pub trait PodRuntime: Send + Sync + 'static {
    /// The container `container` (or the pod's only / default container when `None`) of the pod
    /// `namespace/name` running on this node.
    fn container(&self, namespace: &str, name: &str, container: Option<&str>) -> Result<ContainerHandle, LookupError>;
}
