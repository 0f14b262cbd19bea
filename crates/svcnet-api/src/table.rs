//! Server-side printing: the `meta.k8s.io/v1` Table columns and cells kube-apiserver returns for
//! each kind (upstream `pkg/printers/internalversion/printers.go`), so `kubectl get` and `-o wide`
//! print what they print against a real cluster.
//!
//! kube-apiserver always generates rows with `Wide: true`; kubectl hides the priority-1 columns
//! unless asked for `-o wide`. So [`row`] returns one cell per [`columns`] entry, wide ones
//! included. Kinds without a printer get the default table convertor's Name and Created At.

mod cells;
mod docs;
mod format;
#[cfg(test)]
mod tests;

use serde_json::Value;

/// One `columnDefinitions` entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

const fn col(name: &'static str, type_: &'static str, description: &'static str, priority: i32) -> Column {
    Column { name, type_, format: "", description, priority }
}

/// The Name column every printer starts with.
const NAME: Column = Column { name: "Name", type_: "string", format: "name", description: docs::OM_NAME, priority: 0 };
/// The Age column (a human duration string, so typed "string" as upstream does).
const AGE: Column = col("Age", "string", docs::OM_CREATED, 0);

/// The column definitions for a kind.
pub fn columns(kind: &str) -> Vec<Column> {
    use docs::*;
    let containers = col("Containers", "string", CONTAINERS, 1);
    let images = col("Images", "string", IMAGES, 1);
    match kind {
        "Namespace" => vec![NAME, col("Status", "string", NS_STATUS, 0), AGE],
        "Pod" => vec![
            NAME,
            col("Ready", "string", POD_READY, 0),
            col("Status", "string", POD_STATUS, 0),
            col("Restarts", "string", POD_RESTARTS, 0),
            AGE,
            col("IP", "string", POD_IP, 1),
            col("Node", "string", POD_NODE, 1),
            col("Nominated Node", "string", POD_NOMINATED, 1),
            col("Readiness Gates", "string", POD_READINESS_GATES, 1),
        ],
        "Service" => vec![
            NAME,
            col("Type", "string", SVC_TYPE, 0),
            col("Cluster-IP", "string", SVC_CLUSTER_IP, 0),
            col("External-IP", "string", SVC_EXTERNAL_IPS, 0),
            col("Port(s)", "string", SVC_PORTS, 0),
            AGE,
            col("Selector", "string", SVC_SELECTOR, 1),
        ],
        "Endpoints" => vec![NAME, col("Endpoints", "string", EP_SUBSETS, 0), AGE],
        "EndpointSlice" => vec![
            NAME,
            col("AddressType", "string", EPS_ADDRESS_TYPE, 0),
            col("Ports", "string", EPS_PORTS, 0),
            col("Endpoints", "string", EPS_ENDPOINTS, 0),
            AGE,
        ],
        "Node" => vec![
            NAME,
            col("Status", "string", NODE_STATUS, 0),
            col("Roles", "string", NODE_ROLES, 0),
            AGE,
            col("Version", "string", NODE_KUBELET_VERSION, 0),
            col("Internal-IP", "string", NODE_ADDRESSES, 1),
            col("External-IP", "string", NODE_ADDRESSES, 1),
            col("OS-Image", "string", NODE_OS_IMAGE, 1),
            col("Kernel-Version", "string", NODE_KERNEL, 1),
            col("Container-Runtime", "string", NODE_RUNTIME, 1),
        ],
        "Event" => vec![
            col("Last Seen", "string", EV_LAST, 0),
            col("Type", "string", EV_TYPE, 0),
            col("Reason", "string", EV_REASON, 0),
            col("Object", "string", EV_OBJECT, 0),
            col("Subobject", "string", EV_FIELD_PATH, 1),
            col("Source", "string", EV_SOURCE, 1),
            col("Message", "string", EV_MESSAGE, 0),
            col("First Seen", "string", EV_FIRST, 1),
            col("Count", "string", EV_COUNT, 1),
            Column { priority: 1, ..NAME },
        ],
        "ConfigMap" => vec![NAME, col("Data", "string", CM_DATA, 0), AGE],
        "ServiceAccount" => vec![NAME, col("Secrets", "string", SA_SECRETS, 0), AGE],
        "Deployment" => vec![
            NAME,
            col("Ready", "string", READY_PODS, 0),
            col("Up-to-date", "string", DEP_UPDATED, 0),
            col("Available", "string", DEP_AVAILABLE, 0),
            AGE,
            containers,
            images,
            col("Selector", "string", DEP_SELECTOR, 1),
        ],
        "ReplicaSet" => vec![
            NAME,
            col("Desired", "integer", RS_DESIRED, 0),
            col("Current", "integer", RS_CURRENT, 0),
            col("Ready", "integer", RS_READY, 0),
            AGE,
            containers,
            images,
            col("Selector", "string", RS_SELECTOR, 1),
        ],
        "StatefulSet" => vec![NAME, col("Ready", "string", READY_PODS, 0), AGE, containers, images],
        "Lease" => vec![NAME, col("Holder", "string", LEASE_HOLDER, 0), AGE],
        "NetworkPolicy" => vec![NAME, col("Pod-Selector", "string", NP_POD_SELECTOR, 0), AGE],
        "IPAddressPool" => vec![
            NAME,
            col("Addresses", "string", "The CIDRs and ranges of the pool.", 0),
            col("Auto-Assign", "boolean", "Whether Services get addresses from this pool without asking for it.", 0),
            AGE,
        ],
        _ => vec![NAME, col("Created At", "date", OM_CREATED, 0)],
    }
}

/// The cells of one row (same order and count as [`columns`]); `now` is used for AGE.
pub fn row(kind: &str, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    match kind {
        "Namespace" => cells::namespace(obj, now),
        "Pod" => cells::pod(obj, now),
        "Service" => cells::service(obj, now),
        "Endpoints" => cells::endpoints(obj, now),
        "EndpointSlice" => cells::endpoint_slice(obj, now),
        "Node" => cells::node(obj, now),
        "Event" => cells::event(obj, now),
        "ConfigMap" => cells::config_map(obj, now),
        "ServiceAccount" => cells::service_account(obj, now),
        "Deployment" => cells::deployment(obj, now),
        "ReplicaSet" => cells::replica_set(obj, now),
        "StatefulSet" => cells::stateful_set(obj, now),
        "Lease" => cells::lease(obj, now),
        "NetworkPolicy" => cells::network_policy(obj, now),
        "IPAddressPool" => cells::ip_address_pool(obj, now),
        _ => cells::default(obj),
    }
}
