//! ClusterIP and NodePort allocation, done by the API server as kube-apiserver does it: inside the
//! Service create/update/delete path, so that a Service is never stored with an address or port
//! that another Service holds.
//!
//! Each allocated address and port is a claim key in the store (`/allocations/clusterips/<ip>`,
//! `/allocations/nodeports/<port>`) holding its owner. A claim is taken with the store's
//! create-if-absent before the Service is written, which makes concurrent creates safe (exactly one
//! wins a given address), and released after the Service no longer holds it. A crash between the
//! two steps leaves a claim without an owner, or, never, an owner without a claim; [`repair`] runs
//! before the server accepts requests and reconciles the claims with the stored Services.
//!
//! Dynamic choices come from the upper part of each range first (upstream's "static band"), so
//! that addresses users pick by hand at the bottom, such as `.10` for cluster DNS, stay free.
//!
//! Not done (yet): IPv6 service ranges and dual-stack; several API servers sharing the store would
//! need repair to run with a grace period rather than only at start.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use rand::Rng;
use serde_json::{Value, json};
use svcnet_api::FieldError;
use svcnet_store::Storage;

use crate::error::ApiError;

const IP_PREFIX: &str = "/allocations/clusterips/";
const PORT_PREFIX: &str = "/allocations/nodeports/";

/// The ranges Services get their ClusterIPs and NodePorts from.
#[derive(Debug, Clone)]
pub struct ServiceRanges {
    /// The service CIDR (`--service-cluster-ip-range`), IPv4.
    pub cidr: (Ipv4Addr, u8),
    /// The NodePort range (`--service-node-port-range`), inclusive.
    pub node_ports: (u16, u16),
}

impl Default for ServiceRanges {
    fn default() -> Self {
        Self { cidr: (Ipv4Addr::new(10, 96, 0, 0), 12), node_ports: (30000, 32767) }
    }
}

impl ServiceRanges {
    /// Parses `10.96.0.0/12` and `30000-32767`.
    pub fn parse(cidr: &str, ports: &str) -> anyhow::Result<Self> {
        let (ip, len) = cidr.split_once('/').ok_or_else(|| anyhow::anyhow!("service CIDR {cidr:?}: expected ADDRESS/PREFIX"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| anyhow::anyhow!("service CIDR {cidr:?}: only IPv4 ranges are supported"))?;
        let len: u8 = len.parse().ok().filter(|l| (1..=30).contains(l)).ok_or_else(|| anyhow::anyhow!("service CIDR {cidr:?}: prefix must be 1-30"))?;
        let mask = u32::MAX << (32 - u32::from(len));
        let base = Ipv4Addr::from(u32::from(ip) & mask);
        let (lo, hi) = ports.split_once('-').ok_or_else(|| anyhow::anyhow!("node port range {ports:?}: expected LOW-HIGH"))?;
        let lo: u16 = lo.trim().parse()?;
        let hi: u16 = hi.trim().parse()?;
        anyhow::ensure!(lo >= 1 && lo <= hi, "node port range {ports:?}: LOW must be at least 1 and at most HIGH");
        Ok(Self { cidr: (base, len), node_ports: (lo, hi) })
    }

    fn cidr_string(&self) -> String {
        format!("{}/{}", self.cidr.0, self.cidr.1)
    }

    /// The first and last assignable address (network and broadcast addresses excluded).
    fn ip_bounds(&self) -> (u32, u32) {
        let base = u32::from(self.cidr.0);
        let size = 1u32 << (32 - u32::from(self.cidr.1));
        (base + 1, base + size - 2)
    }

    /// The first address of the range, which the `kubernetes` Service gets.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip_bounds().0)
    }

    fn contains_ip(&self, ip: Ipv4Addr) -> bool {
        let (lo, hi) = self.ip_bounds();
        (lo..=hi).contains(&u32::from(ip))
    }
}

/// Claims taken for one write, to be released if the write does not happen.
#[derive(Debug, Default)]
pub struct Claims {
    keys: Vec<String>,
}

/// Allocates and releases ClusterIPs and NodePorts in the store.
pub struct ServiceAllocator {
    store: Arc<dyn Storage>,
    ranges: ServiceRanges,
}

fn ip_key(ip: &str) -> String {
    format!("{IP_PREFIX}{ip}")
}

fn port_key(port: i64) -> String {
    format!("{PORT_PREFIX}{port}")
}

fn owner(svc: &Value) -> Value {
    json!({
        "namespace": svc["metadata"]["namespace"],
        "name": svc["metadata"]["name"],
        "uid": svc["metadata"]["uid"],
    })
}

/// Whether the Service type holds a ClusterIP.
fn wants_cluster_ip(svc: &Value) -> bool {
    svc["spec"]["type"].as_str() != Some("ExternalName")
}

/// Whether the Service's ports get NodePorts.
fn wants_node_ports(svc: &Value) -> bool {
    match svc["spec"]["type"].as_str() {
        Some("NodePort") => true,
        Some("LoadBalancer") => svc["spec"]["allocateLoadBalancerNodePorts"].as_bool() != Some(false),
        _ => false,
    }
}

/// The ClusterIP a Service holds (not `None`, not empty).
fn held_ip(svc: &Value) -> Option<String> {
    svc["spec"]["clusterIP"].as_str().filter(|ip| !ip.is_empty() && *ip != "None").map(str::to_string)
}

/// The NodePorts a Service holds.
fn held_ports(svc: &Value) -> BTreeSet<i64> {
    let mut ports: BTreeSet<i64> = svc["spec"]["ports"].as_array().into_iter().flatten().filter_map(|p| p["nodePort"].as_i64()).filter(|p| *p != 0).collect();
    if let Some(hc) = svc["spec"]["healthCheckNodePort"].as_i64().filter(|p| *p != 0) {
        ports.insert(hc);
    }
    ports
}

/// Upstream's `dropTypeDependentFields`: when an update changes the type, fields only the old
/// type uses are cleared if the update left them as they were (so that `kubectl patch` of just
/// the type works); values the user changed stay and are validated.
pub fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    if new["spec"]["type"] == old["spec"]["type"] {
        return;
    }
    let same = |new: &Value, key: &str| new["spec"].get(key) == old["spec"].get(key);
    let Some(_) = new.get("spec").and_then(Value::as_object) else { return };
    if wants_cluster_ip(old) && !wants_cluster_ip(new) && same(new, "clusterIP") && same(new, "clusterIPs") {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            new["spec"].as_object_mut().expect("object").remove(key);
        }
    }
    if wants_node_ports(old) && !wants_node_ports(new) {
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        if let Some(ports) = new["spec"].get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                let unchanged = old_ports.iter().any(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"] && o.get("nodePort") == p.get("nodePort"));
                if unchanged && let Some(p) = p.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
    let was_lb = old["spec"]["type"] == "LoadBalancer";
    let is_lb = new["spec"]["type"] == "LoadBalancer";
    let external = |v: &Value| matches!(v["spec"]["type"].as_str(), Some("NodePort" | "LoadBalancer"));
    let spec = new["spec"].clone();
    let map = new["spec"].as_object_mut().expect("object");
    if was_lb && !is_lb {
        for key in ["allocateLoadBalancerNodePorts", "loadBalancerClass", "healthCheckNodePort"] {
            if spec.get(key) == old["spec"].get(key) {
                map.remove(key);
            }
        }
    }
    if external(old) && !external(&spec) && spec.get("externalTrafficPolicy") == old["spec"].get("externalTrafficPolicy") {
        map.remove("externalTrafficPolicy");
    }
}

/// Upstream's `patchAllocatedValues`: an update that leaves out the allocated ClusterIP or
/// NodePorts (as `kubectl replace` of an edited manifest does) keeps them.
pub fn carry_over(new: &mut Value, old: &Value) {
    if wants_cluster_ip(new) && wants_cluster_ip(old) {
        let unset = new["spec"]["clusterIP"].as_str().is_none_or(str::is_empty);
        if unset && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            if let Some(ip) = old["spec"].get("clusterIP") {
                spec.insert("clusterIP".into(), ip.clone());
            }
            if let Some(ips) = old["spec"].get("clusterIPs")
                && spec.get("clusterIPs").is_none_or(|v| v.as_array().is_none_or(Vec::is_empty))
            {
                spec.insert("clusterIPs".into(), ips.clone());
            }
        }
    }
    if wants_node_ports(new) && wants_node_ports(old) {
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        if let Some(ports) = new["spec"].get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if p["nodePort"].as_i64().unwrap_or(0) != 0 {
                    continue;
                }
                let same = old_ports
                    .iter()
                    .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                    .or_else(|| old_ports.iter().find(|o| o.get("name").is_some() && o["name"] == p["name"]));
                if let Some(np) = same.and_then(|o| o["nodePort"].as_i64()).filter(|n| *n != 0) {
                    p["nodePort"] = np.into();
                }
            }
        }
        if new["spec"]["healthCheckNodePort"].as_i64().unwrap_or(0) == 0
            && let Some(hc) = old["spec"]["healthCheckNodePort"].as_i64().filter(|p| *p != 0)
        {
            new["spec"]["healthCheckNodePort"] = hc.into();
        }
    }
}

impl ServiceAllocator {
    pub fn new(store: Arc<dyn Storage>, ranges: ServiceRanges) -> Self {
        Self { store, ranges }
    }

    pub fn ranges(&self) -> &ServiceRanges {
        &self.ranges
    }

    /// Takes `key` for `svc`, recording a new claim in `claims` (to roll back if the write
    /// fails). `false` when another Service holds it; `true` also when `svc` already did.
    async fn claim(&self, key: &str, svc: &Value, claims: &mut Claims) -> Result<bool, ApiError> {
        let value = serde_json::to_vec(&owner(svc)).expect("json");
        match self.store.create(key, value).await {
            Ok(_) => {
                claims.keys.push(key.to_string());
                Ok(true)
            }
            Err(svcnet_store::Error::AlreadyExists { .. }) => {
                let current = self.store.get(key).await?;
                Ok(current.and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok()).is_some_and(|o| o["uid"] == svc["metadata"]["uid"]))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Releases `claims` (after a failed write).
    pub async fn rollback(&self, claims: Claims) {
        for key in claims.keys {
            if let Err(e) = self.store.delete(&key, None).await
                && !matches!(e, svcnet_store::Error::NotFound { .. })
            {
                tracing::warn!(%key, error = %e, "releasing an allocation failed; repair will free it on restart");
            }
        }
    }

    /// Releases what `old` holds and `new` (if any) does not: after a delete, or an update that
    /// changed type or ports.
    pub async fn release_unused(&self, old: &Value, new: Option<&Value>) {
        let mut keys = Vec::new();
        if let Some(ip) = held_ip(old)
            && new.and_then(held_ip).as_deref() != Some(ip.as_str())
        {
            keys.push(ip_key(&ip));
        }
        let still: BTreeSet<i64> = new.map(held_ports).unwrap_or_default();
        for p in held_ports(old) {
            if !still.contains(&p) {
                keys.push(port_key(p));
            }
        }
        for key in keys {
            // Only the owner's claim is removed: it may already belong to someone else.
            if let Ok(Some(kv)) = self.store.get(&key).await {
                let mine = serde_json::from_slice::<Value>(&kv.value).is_ok_and(|o| o["uid"] == old["metadata"]["uid"]);
                if mine {
                    let _ = self.store.delete(&key, Some(kv.mod_revision)).await;
                }
            }
        }
    }

    /// Allocates what `svc` needs that `old` (on update) does not already hold: a ClusterIP unless
    /// it is headless or ExternalName, NodePorts for NodePort and LoadBalancer Services. Requested
    /// values are honoured or refused with 422.
    pub async fn allocate(&self, svc: &mut Value, old: Option<&Value>, kind_name: (&svcnet_api::ResourceInfo, &str)) -> Result<Claims, ApiError> {
        let mut claims = Claims::default();
        match self.allocate_inner(svc, old, &mut claims).await {
            Ok(()) => Ok(claims),
            Err(AllocError::Field(errs)) => {
                self.rollback(claims).await;
                Err(ApiError::invalid(kind_name.0, kind_name.1, &errs))
            }
            Err(AllocError::Api(e)) => {
                self.rollback(claims).await;
                Err(e)
            }
        }
    }

    async fn allocate_inner(&self, svc: &mut Value, old: Option<&Value>, claims: &mut Claims) -> Result<(), AllocError> {
        let old_ip = old.and_then(held_ip);
        if wants_cluster_ip(svc) {
            let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
            if requested != "None" {
                let ip = if requested.is_empty() {
                    self.allocate_dynamic_ip(svc, claims).await?
                } else if old_ip.as_deref() == Some(requested.as_str()) {
                    requested
                } else {
                    self.allocate_static_ip(&requested, svc, claims).await?;
                    requested
                };
                svc["spec"]["clusterIP"] = ip.clone().into();
                svc["spec"]["clusterIPs"] = json!([ip]);
            } else {
                svc["spec"]["clusterIPs"] = json!(["None"]);
            }
        } else if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            // ExternalName Services hold no address.
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
            spec.remove("ipFamilies");
            spec.remove("ipFamilyPolicy");
        }

        let old_ports = old.map(held_ports).unwrap_or_default();
        if wants_node_ports(svc) {
            let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
            // Within one Service, the same port number may serve TCP and UDP.
            let mut mine: BTreeMap<(i64, String), i64> = BTreeMap::new();
            let mut taken_here = BTreeSet::new();
            let mut errs = Vec::new();
            let mut out = Vec::with_capacity(ports.len());
            for (i, mut p) in ports.into_iter().enumerate() {
                let requested = p["nodePort"].as_i64().unwrap_or(0);
                let field = format!("spec.ports[{i}].nodePort");
                if requested != 0 {
                    if !old_ports.contains(&requested) && !taken_here.contains(&requested) {
                        match self.allocate_static_port(requested, svc, claims).await {
                            Ok(()) => {}
                            Err(AllocError::Field(mut e)) => {
                                for fe in &mut e {
                                    fe.field = field.clone();
                                }
                                errs.extend(e);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    taken_here.insert(requested);
                } else {
                    let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
                    // A port number already given a NodePort for another protocol shares it.
                    let shared = mine.iter().find(|((port, pr), _)| *port == p["port"].as_i64().unwrap_or(0) && *pr != proto).map(|(_, np)| *np);
                    let np = match shared {
                        Some(np) => np,
                        None => self.allocate_dynamic_port(svc, claims).await?,
                    };
                    p["nodePort"] = np.into();
                    taken_here.insert(np);
                }
                mine.insert((p["port"].as_i64().unwrap_or(0), p["protocol"].as_str().unwrap_or("TCP").to_string()), p["nodePort"].as_i64().unwrap_or(0));
                out.push(p);
            }
            if !errs.is_empty() {
                return Err(AllocError::Field(errs));
            }
            svc["spec"]["ports"] = Value::Array(out);
            let local = svc["spec"]["externalTrafficPolicy"].as_str() == Some("Local") && svc["spec"]["type"].as_str() == Some("LoadBalancer");
            if local {
                let hc = svc["spec"]["healthCheckNodePort"].as_i64().unwrap_or(0);
                if hc == 0 {
                    let np = self.allocate_dynamic_port(svc, claims).await?;
                    svc["spec"]["healthCheckNodePort"] = np.into();
                } else if !old_ports.contains(&hc) {
                    self.allocate_static_port(hc, svc, claims).await.map_err(|e| match e {
                        AllocError::Field(mut errs) => {
                            for fe in &mut errs {
                                fe.field = "spec.healthCheckNodePort".into();
                            }
                            AllocError::Field(errs)
                        }
                        other => other,
                    })?;
                }
            }
        } else {
            // Types without NodePorts drop them (as upstream does on a type change to ClusterIP).
            if let Some(ports) = svc["spec"].get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.remove("nodePort");
                }
            }
        }
        Ok(())
    }

    async fn allocate_static_ip(&self, requested: &str, svc: &Value, claims: &mut Claims) -> Result<(), AllocError> {
        let field = |detail: String| AllocError::Field(vec![FieldError::invalid("spec.clusterIPs", json!([requested]), detail)]);
        let ip: Ipv4Addr = requested.parse().map_err(|_| field(format!("failed to allocate IP {requested}: must be a valid IPv4 address")))?;
        if !self.ranges.contains_ip(ip) {
            return Err(field(format!(
                "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}",
                self.ranges.cidr_string()
            )));
        }
        match self.claim(&ip_key(requested), svc, claims).await? {
            true => Ok(()),
            false => Err(field(format!("failed to allocate IP {requested}: provided IP is already allocated"))),
        }
    }

    async fn allocate_dynamic_ip(&self, svc: &Value, claims: &mut Claims) -> Result<String, AllocError> {
        let (lo, hi) = self.ranges.ip_bounds();
        let size = u64::from(hi - lo + 1);
        let band = size.div_ceil(16).clamp(16, 256).min(size / 2) as u32;
        let n = self.allocate_dynamic(svc, claims, IP_PREFIX, u64::from(lo), u64::from(hi), u64::from(band)).await?;
        n.map(|v| Ipv4Addr::from(v as u32).to_string()).ok_or_else(|| AllocError::Api(ApiError::internal("failed to allocate a serviceIP: range is full")))
    }

    async fn allocate_static_port(&self, port: i64, svc: &Value, claims: &mut Claims) -> Result<(), AllocError> {
        let (lo, hi) = self.ranges.node_ports;
        let field = |detail: String| AllocError::Field(vec![FieldError::invalid("", port, detail)]);
        if port < i64::from(lo) || port > i64::from(hi) {
            return Err(field(format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}")));
        }
        match self.claim(&port_key(port), svc, claims).await? {
            true => Ok(()),
            false => Err(field("provided port is already allocated".into())),
        }
    }

    async fn allocate_dynamic_port(&self, svc: &Value, claims: &mut Claims) -> Result<i64, AllocError> {
        let (lo, hi) = self.ranges.node_ports;
        let size = u64::from(hi - lo) + 1;
        let band = size.div_ceil(32).clamp(16, 128).min(size / 2);
        let n = self.allocate_dynamic(svc, claims, PORT_PREFIX, u64::from(lo), u64::from(hi), band).await?;
        n.map(|v| v as i64).ok_or_else(|| AllocError::Api(ApiError::internal("failed to allocate a nodePort: range is full")))
    }

    /// Picks a free value in `lo..=hi` (preferring above `lo + band`), claims it, and returns it;
    /// `None` when the range is full.
    async fn allocate_dynamic(&self, svc: &Value, claims: &mut Claims, prefix: &str, lo: u64, hi: u64, band: u64) -> Result<Option<u64>, AllocError> {
        let key_of = |v: u64| if prefix == IP_PREFIX { ip_key(&Ipv4Addr::from(v as u32).to_string()) } else { port_key(v as i64) };
        // Random probes: cheap while the range is sparse, which it almost always is.
        for attempt in 0..32 {
            let (from, to) = if attempt < 24 && lo + band <= hi { (lo + band, hi) } else { (lo, hi) };
            let v = rand::rng().random_range(from..=to);
            let key = key_of(v);
            if self.store.get(&key).await.map_err(|e| AllocError::Api(e.into()))?.is_some() {
                continue;
            }
            if self.claim(&key, svc, claims).await? {
                return Ok(Some(v));
            }
        }
        // Dense: scan the claims for the free values and try them in order.
        let listed = self.store.list(prefix, None, None).await.map_err(|e| AllocError::Api(e.into()))?;
        let used: BTreeSet<String> = listed.items.into_iter().map(|kv| kv.key).collect();
        let upper = (lo + band..=hi).chain(lo..lo + band);
        for v in upper {
            let key = key_of(v);
            if used.contains(&key) {
                continue;
            }
            if self.claim(&key, svc, claims).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Reconciles the claims with the stored Services: claims whose owner no longer holds them are
    /// released, and addresses or ports a Service holds without a claim are claimed. Runs before
    /// the server serves, so no write is in flight.
    pub async fn repair(&self) -> anyhow::Result<RepairReport> {
        let prefix = svcnet_api::resources::RESOURCES.iter().find(|r| r.kind == "Service").expect("services are served").key_prefix();
        let services = self.store.list(&prefix, None, None).await?;
        let mut want: BTreeMap<String, Value> = BTreeMap::new();
        for kv in &services.items {
            let svc: Value = serde_json::from_slice(&kv.value)?;
            if let Some(ip) = held_ip(&svc) {
                want.insert(ip_key(&ip), owner(&svc));
            }
            for p in held_ports(&svc) {
                want.insert(port_key(p), owner(&svc));
            }
        }
        let mut report = RepairReport::default();
        for prefix in [IP_PREFIX, PORT_PREFIX] {
            for kv in self.store.list(prefix, None, None).await?.items {
                let claim: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                match want.remove(&kv.key) {
                    Some(o) if o["uid"] == claim["uid"] => {}
                    Some(o) => {
                        // Held by a Service, but recorded for another owner: fix the record.
                        self.store.update(&kv.key, kv.mod_revision, serde_json::to_vec(&o)?).await?;
                        report.fixed += 1;
                    }
                    None => {
                        self.store.delete(&kv.key, Some(kv.mod_revision)).await?;
                        report.released += 1;
                    }
                }
            }
        }
        for (key, o) in want {
            match self.store.create(&key, serde_json::to_vec(&o)?).await {
                Ok(_) | Err(svcnet_store::Error::AlreadyExists { .. }) => report.claimed += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }
}

/// What [`ServiceAllocator::repair`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Claims without a Service holding them, released.
    pub released: usize,
    /// Addresses or ports held without a claim, claimed.
    pub claimed: usize,
    /// Claims recorded for the wrong owner, corrected.
    pub fixed: usize,
}

enum AllocError {
    Field(Vec<FieldError>),
    Api(ApiError),
}

impl From<ApiError> for AllocError {
    fn from(e: ApiError) -> Self {
        AllocError::Api(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        let r = ServiceRanges::parse("10.96.0.0/12", "30000-32767").unwrap();
        assert_eq!(r.first_ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(r.contains_ip(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains_ip(Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!r.contains_ip(Ipv4Addr::new(10, 96, 0, 0)));
        let r = ServiceRanges::parse("10.0.0.7/24", "100-200").unwrap();
        assert_eq!(r.cidr_string(), "10.0.0.0/24");
        assert!(ServiceRanges::parse("fd00::/108", "1-2").is_err());
        assert!(ServiceRanges::parse("10.0.0.0/24", "200-100").is_err());
    }

    fn stored_service(name: &str, uid: &str, ip: &str, node_port: Option<i64>) -> Value {
        let mut ports = json!([{"port": 80, "protocol": "TCP"}]);
        if let Some(np) = node_port {
            ports[0]["nodePort"] = np.into();
        }
        json!({"metadata": {"name": name, "namespace": "default", "uid": uid},
               "spec": {"type": if node_port.is_some() { "NodePort" } else { "ClusterIP" }, "clusterIP": ip, "ports": ports}})
    }

    /// A crash can leave a claim whose Service was never written; the reverse cannot happen
    /// through the API but is repaired too (e.g. a store restored from a copy).
    #[tokio::test]
    async fn repair_releases_orphans_and_claims_unrecorded() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Storage> = svcnet_store::RedbStore::open(&dir.path().join("db")).unwrap();
        let alloc = ServiceAllocator::new(store.clone(), ServiceRanges::default());
        let held = stored_service("held", "u1", "10.96.0.20", Some(30100));
        store.create("/registry/services/default/held", serde_json::to_vec(&held).unwrap()).await.unwrap();
        let orphan = json!({"namespace": "default", "name": "gone", "uid": "u2"});
        store.create(&ip_key("10.96.0.21"), serde_json::to_vec(&orphan).unwrap()).await.unwrap();
        store.create(&port_key(30101), serde_json::to_vec(&orphan).unwrap()).await.unwrap();

        let report = alloc.repair().await.unwrap();
        assert_eq!(report, RepairReport { released: 2, claimed: 2, fixed: 0 });
        assert!(store.get(&ip_key("10.96.0.21")).await.unwrap().is_none());
        assert!(store.get(&ip_key("10.96.0.20")).await.unwrap().is_some());
        assert!(store.get(&port_key(30100)).await.unwrap().is_some());
        // Idempotent.
        assert_eq!(alloc.repair().await.unwrap(), RepairReport::default());

        // The repaired claim protects the address: another Service cannot take it.
        let mut other = stored_service("other", "u3", "10.96.0.20", None);
        let info = svcnet_api::resources::find("", "v1", "services").unwrap();
        let err = alloc.allocate(&mut other, None, (info, "other")).await.unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("provided IP is already allocated"), "{}", err.message);
    }

    #[test]
    fn carry_over_keeps_allocations_on_replace() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}});
        carry_over(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.5");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        assert!(new["spec"]["ports"][1].get("nodePort").is_none());
    }
}
