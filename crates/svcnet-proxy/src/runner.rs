//! The proxy process: watches Services, EndpointSlices and Nodes, keeps a [`Ruleset`] in step,
//! and applies it to the node's namespace (full sync once, then batched partial syncs). Also
//! serves the health-check NodePorts, `/metrics`, `/healthz`, and holds this node's share of
//! LoadBalancer IPs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use svcnet_netns::NetNs;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::model::{ServiceKey, ServicePlan, plan_service};
use crate::nft::{NodeNamespace, TableSkeleton};
use crate::ruleset::{Ruleset, RulesetConfig, StaleConntrack};
use crate::{Error, Result, l2};

/// How to run the proxy on one node.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// The node's network namespace under `/run/netns`; `None` = the one this process runs in.
    pub netns_name: Option<String>,
    /// The node's addresses: NodePorts are served on these (never on loopback).
    pub node_ips: Vec<IpAddr>,
    /// The pod network (10.244.0.0/16): ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidrs: Vec<IpNet>,
    /// Where to serve `/metrics` and `/healthz`, bound inside the node's namespace; `None` = off.
    pub metrics_addr: Option<SocketAddr>,
    /// The uplink on which this node announces the LoadBalancer IPs it owns (`eth0`);
    /// `None` = no layer-2 announcements.
    pub lb_interface: Option<String>,
    /// How long changes are collected into one transaction.
    pub batch_interval: Duration,
    /// How often the proxy checks that its table is still there with its skeleton (someone ran
    /// `nft flush ruleset`, a firewall service restarted): a full sync puts it back.
    pub table_check_interval: Duration,
}

impl ProxyConfig {
    /// Defaults: cluster CIDR 10.244.0.0/16, no metrics listener, LoadBalancer IPs announced on
    /// `eth0`, a 20 ms batch, the table checked every 10 s.
    pub fn new(node_name: impl Into<String>, netns_name: Option<String>, node_ips: Vec<IpAddr>) -> ProxyConfig {
        ProxyConfig {
            node_name: node_name.into(),
            netns_name,
            node_ips,
            cluster_cidrs: vec!["10.244.0.0/16".parse().expect("a valid CIDR")],
            metrics_addr: None,
            lb_interface: Some("eth0".into()),
            batch_interval: Duration::from_millis(20),
            table_check_interval: Duration::from_secs(10),
        }
    }
}

/// Runs the proxy until the watches end (they retry forever, so in practice until the future
/// is dropped). The first sync programs the whole table in one transaction.
pub async fn run(client: Client, config: ProxyConfig) -> Result<()> {
    let metrics = Metrics::new();
    run_with_metrics(client, config, metrics).await
}

/// [`run`], with metrics the caller can read.
pub async fn run_with_metrics(client: Client, config: ProxyConfig, metrics: Arc<Metrics>) -> Result<()> {
    let ns = NodeNamespace::new(config.netns_name.clone());
    let netns = match &config.netns_name {
        Some(name) => Some(Arc::new(NetNs::open(name)?)),
        None => None,
    };
    warn_if_bridged_through_netfilter(netns.as_deref());
    let _metrics_server = match config.metrics_addr {
        Some(addr) => {
            let listener = bind(netns.as_deref(), addr)?;
            let router = crate::metrics::router(Arc::clone(&metrics));
            Some(AbortOnDrop(tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            })))
        }
        None => None,
    };
    let streams: Vec<BoxStream<'static, Event>> = vec![
        events(Api::<Service>::all(client.clone()), Event::Service),
        events(Api::<EndpointSlice>::all(client.clone()), Event::EndpointSlice),
        events(Api::<Node>::all(client), Event::Node),
    ];
    let mut merged = futures::stream::select_all(streams);
    let ruleset_config = RulesetConfig { node_ips: config.node_ips.clone(), cluster_cidrs: config.cluster_cidrs.clone() };
    let mut proxier = Proxier {
        cache: Cache::default(),
        ruleset: Ruleset::new(ruleset_config),
        ns,
        node_name: config.node_name.clone(),
        metrics,
        needs_full_sync: true,
        health: HealthServers { netns: netns.clone(), servers: HashMap::new() },
        announcer: config.lb_interface.clone().map(|device| Announcer {
            ns: NodeNamespace::new(config.netns_name.clone()),
            device,
            owned: BTreeSet::new(),
            announcing: Vec::new(),
        }),
    };
    let mut table_check = tokio::time::interval(config.table_check_interval);
    table_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = merged.next() => {
                let Some(event) = event else { break };
                proxier.cache.apply(event);
            }
            _ = table_check.tick() => {
                if proxier.needs_full_sync || !proxier.cache.synced() {
                    continue;
                }
                match proxier.ns.table_skeleton(proxier.ruleset.skeleton_version()).await {
                    Ok(TableSkeleton::Current) => continue,
                    Ok(TableSkeleton::Missing | TableSkeleton::Other) => {
                        tracing::warn!("the proxy's table is gone or changed under it; a full sync puts it back");
                        proxier.needs_full_sync = true;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "checking the proxy's table");
                        continue;
                    }
                }
            }
        }
        while let Some(Some(event)) = merged.next().now_or_never() {
            proxier.cache.apply(event);
        }
        if !proxier.cache.synced() {
            continue;
        }
        if !proxier.needs_full_sync {
            // Collect what else arrives within the batch interval into the same transaction.
            let deadline = tokio::time::Instant::now() + config.batch_interval;
            while let Ok(Some(event)) = tokio::time::timeout_at(deadline, merged.next()).await {
                proxier.cache.apply(event);
            }
        }
        proxier.sync().await;
        while proxier.needs_full_sync {
            // A failed transaction leaves the kernel in an unknown state: rebuild it whole.
            tokio::time::sleep(Duration::from_secs(1)).await;
            while let Some(Some(event)) = merged.next().now_or_never() {
                proxier.cache.apply(event);
            }
            proxier.sync().await;
        }
    }
    Ok(())
}

fn bind(netns: Option<&NetNs>, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let bind = move || std::net::TcpListener::bind(addr);
    let listener = match netns {
        Some(ns) => ns.run_in(bind)?,
        None => bind(),
    }
    .map_err(|source| Error::Bind { addr: addr.to_string(), source })?;
    listener.set_nonblocking(true).map_err(|source| Error::Bind { addr: addr.to_string(), source })?;
    tokio::net::TcpListener::from_std(listener).map_err(|source| Error::Bind { addr: addr.to_string(), source })
}

/// With br_netfilter on, frames between pods on one bridge are DNATed at the bridge and then
/// bridged between isolated ports, where they are lost: Services would fail for same-node pods.
fn warn_if_bridged_through_netfilter(netns: Option<&NetNs>) {
    let read = || std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").ok();
    let value = match netns {
        Some(ns) => ns.run_in(read).ok().flatten(),
        None => read(),
    };
    if value.as_deref().map(str::trim) == Some("1") {
        tracing::warn!("net.bridge.bridge-nf-call-iptables is 1 in the node namespace; pod-to-Service traffic between pods of one node needs it 0");
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[allow(clippy::large_enum_variant, reason = "moved once from the stream into the cache")]
enum Event {
    Service(watcher::Event<Service>),
    EndpointSlice(watcher::Event<EndpointSlice>),
    Node(watcher::Event<Node>),
}

fn events<K>(api: Api<K>, wrap: fn(watcher::Event<K>) -> Event) -> BoxStream<'static, Event>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    let kind = K::kind(&());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok(event) => Some(wrap(event)),
                Err(error) => {
                    tracing::warn!(%kind, %error, "proxy watch failed, retrying");
                    None
                }
            })
        })
        .boxed()
}

type SliceKey = (String, String);

/// What the watches have shown, and which Services changed since the last sync.
#[derive(Default)]
struct Cache {
    services: HashMap<ServiceKey, Service>,
    slices: HashMap<SliceKey, EndpointSlice>,
    slices_by_service: HashMap<ServiceKey, BTreeSet<SliceKey>>,
    nodes: BTreeMap<String, Node>,
    listed: HashSet<&'static str>,
    relisting: HashMap<&'static str, HashSet<SliceKey>>,
    dirty: BTreeSet<ServiceKey>,
    nodes_changed: bool,
    /// When the oldest unsynced change arrived.
    first_change: Option<Instant>,
}

// === impl Cache ===

impl Cache {
    fn synced(&self) -> bool {
        self.listed.len() == 3
    }

    fn changed(&mut self) {
        self.first_change.get_or_insert_with(Instant::now);
    }

    fn slices_of(&self, key: &ServiceKey) -> Vec<&EndpointSlice> {
        self.slices_by_service.get(key).into_iter().flatten().filter_map(|k| self.slices.get(k)).collect()
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Service(e) => self.kind("Service", e, Cache::put_service, Cache::delete_service),
            Event::EndpointSlice(e) => self.kind("EndpointSlice", e, Cache::put_slice, Cache::delete_slice),
            Event::Node(e) => self.kind("Node", e, Cache::put_node, Cache::delete_node),
        }
    }

    fn kind<K: Resource>(&mut self, kind: &'static str, event: watcher::Event<K>, put: fn(&mut Cache, K), delete: fn(&mut Cache, &SliceKey)) {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            watcher::Event::Init => {
                self.relisting.insert(kind, HashSet::new());
            }
            watcher::Event::InitApply(o) => {
                self.relisting.entry(kind).or_default().insert(key(&o));
                put(self, o);
            }
            watcher::Event::InitDone => {
                let seen = self.relisting.remove(kind).unwrap_or_default();
                let existing: Vec<SliceKey> = match kind {
                    "Service" => self.services.keys().map(|k| (k.namespace.clone(), k.name.clone())).collect(),
                    "EndpointSlice" => self.slices.keys().cloned().collect(),
                    _ => self.nodes.keys().map(|n| (String::new(), n.clone())).collect(),
                };
                for stale in existing.into_iter().filter(|k| !seen.contains(k)) {
                    delete(self, &stale);
                }
                self.listed.insert(kind);
            }
            watcher::Event::Apply(o) => put(self, o),
            watcher::Event::Delete(o) => delete(self, &key(&o)),
        }
    }

    fn put_service(&mut self, service: Service) {
        let key = ServiceKey::of_service(&service);
        self.dirty.insert(key.clone());
        self.services.insert(key, service);
        self.changed();
    }

    fn delete_service(&mut self, (namespace, name): &SliceKey) {
        let key = ServiceKey::new(namespace.clone(), name.clone());
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
            self.changed();
        }
    }

    fn put_slice(&mut self, slice: EndpointSlice) {
        let key = (slice.namespace().unwrap_or_default(), slice.name_any());
        self.delete_slice(&key);
        if let Some(service) = ServiceKey::of_slice(&slice) {
            self.slices_by_service.entry(service.clone()).or_default().insert(key.clone());
            self.dirty.insert(service);
        }
        self.slices.insert(key, slice);
        self.changed();
    }

    fn delete_slice(&mut self, key: &SliceKey) {
        if let Some(old) = self.slices.remove(key) {
            if let Some(service) = ServiceKey::of_slice(&old) {
                if let Some(set) = self.slices_by_service.get_mut(&service) {
                    set.remove(key);
                    if set.is_empty() {
                        self.slices_by_service.remove(&service);
                    }
                }
                self.dirty.insert(service);
            }
            self.changed();
        }
    }

    fn put_node(&mut self, node: Node) {
        let name = node.name_any();
        let was_ready = self.nodes.get(&name).map(l2::node_is_ready);
        if was_ready != Some(l2::node_is_ready(&node)) {
            self.nodes_changed = true;
        }
        self.nodes.insert(name, node);
    }

    fn delete_node(&mut self, (_, name): &SliceKey) {
        if self.nodes.remove(name).is_some() {
            self.nodes_changed = true;
        }
    }

    fn ready_nodes(&self) -> BTreeSet<String> {
        self.nodes.iter().filter(|(_, n)| l2::node_is_ready(n)).map(|(name, _)| name.clone()).collect()
    }
}

struct Proxier {
    cache: Cache,
    ruleset: Ruleset,
    ns: NodeNamespace,
    node_name: String,
    metrics: Arc<Metrics>,
    needs_full_sync: bool,
    health: HealthServers,
    announcer: Option<Announcer>,
}

// === impl Proxier ===

impl Proxier {
    fn plan(&self, key: &ServiceKey) -> Option<ServicePlan> {
        let service = self.cache.services.get(key)?;
        plan_service(service, self.cache.slices_of(key), &self.node_name).ok()
    }

    async fn sync(&mut self) {
        let started = Instant::now();
        let first_change = self.cache.first_change.take();
        let kind = if self.needs_full_sync { "full" } else { "partial" };
        let mut stale: Vec<StaleConntrack> = Vec::new();
        let result = if self.needs_full_sync {
            self.cache.dirty.clear();
            let config = self.ruleset.config().clone();
            self.ruleset = crate::nft::cpu_bound(|| Ruleset::with_services(config, self.cache.services.keys().filter_map(|key| self.plan(key))));
            self.ns.full_sync(&self.ruleset).await.map(|times| tracing::debug!(?times, "full sync"))
        } else {
            for key in std::mem::take(&mut self.cache.dirty) {
                let plan = self.plan(&key);
                stale.extend(self.ruleset.set_service(&key, plan));
            }
            match self.ruleset.take_transaction() {
                Some(tx) => {
                    tracing::debug!(script = %tx.script(), "partial sync");
                    self.ns.apply_transaction(&tx).await
                }
                None => Ok(()),
            }
        };
        match result {
            Ok(()) => {
                self.needs_full_sync = false;
                self.metrics.synced(kind, started.elapsed());
                if let Some(first) = first_change {
                    self.metrics.network_programming.observe(first.elapsed().as_secs_f64());
                }
                tracing::debug!(kind, services = self.ruleset.len(), took = ?started.elapsed(), "synced proxy rules");
            }
            Err(error) => {
                tracing::error!(%error, kind, "syncing proxy rules failed; a full sync follows");
                self.metrics.sync_errors.inc();
                self.needs_full_sync = true;
                return;
            }
        }
        if kind == "full" {
            // Whatever happened while no rules (or older ones) were in place.
            match self.ns.clean_udp_conntrack(&self.ruleset.udp_serving()).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted stale UDP conntrack entries"),
                Err(error) => tracing::warn!(%error, "cleaning UDP conntrack entries"),
            }
        }
        if !stale.is_empty()
            && let Err(error) = self.ns.delete_conntrack(&stale).await
        {
            tracing::warn!(%error, "deleting stale conntrack entries");
        }
        self.health.update(self.ruleset.services()).await;
        if let Some(announcer) = &mut self.announcer {
            self.cache.nodes_changed = false;
            let ready = self.cache.ready_nodes();
            let cache = &self.cache;
            let owned = l2::owned_ips(&self.node_name, cache.services.values(), |k| cache.slices_of(k), &ready);
            announcer.update(&self.ns, owned.into_keys().collect()).await;
        }
    }
}

/// The LoadBalancer IPs this node holds on its uplink. They are released when the proxy stops
/// (its future dropped), so another node can take them over.
struct Announcer {
    ns: NodeNamespace,
    device: String,
    owned: BTreeSet<IpAddr>,
    /// Gratuitous ARP in flight.
    announcing: Vec<AbortOnDrop>,
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.announcing.clear();
        for ip in std::mem::take(&mut self.owned) {
            tracing::info!(%ip, device = %self.device, "the proxy stops: releasing LoadBalancer IP");
            if let Err(error) = self.ns.remove_address_blocking(&self.device, ip) {
                tracing::warn!(%error, %ip, "releasing a LoadBalancer IP");
            }
        }
    }
}

impl Announcer {
    /// Holds exactly `desired`; an address that could not be added or removed is tried again
    /// at the next update.
    async fn update(&mut self, ns: &NodeNamespace, desired: BTreeSet<IpAddr>) {
        let mut owned: BTreeSet<IpAddr> = self.owned.intersection(&desired).copied().collect();
        for ip in self.owned.difference(&desired) {
            tracing::info!(%ip, device = %self.device, "releasing LoadBalancer IP");
            if let Err(error) = ns.remove_address(&self.device, *ip).await {
                tracing::warn!(%error, %ip, "releasing a LoadBalancer IP");
                owned.insert(*ip);
            }
        }
        self.announcing.retain(|task| !task.0.is_finished());
        for ip in desired.difference(&self.owned) {
            tracing::info!(%ip, device = %self.device, "taking over LoadBalancer IP");
            if let Err(error) = ns.add_address(&self.device, *ip).await {
                tracing::warn!(%error, %ip, "holding a LoadBalancer IP");
                continue;
            }
            owned.insert(*ip);
            let (ns, device, ip) = (ns.clone(), self.device.clone(), *ip);
            // Gratuitous ARP takes a second; neighbours update as it goes (stopped with the
            // proxy, so a released address is not announced afterwards).
            self.announcing.push(AbortOnDrop(tokio::spawn(async move {
                if let Err(error) = ns.announce(&device, ip).await {
                    tracing::warn!(%error, %ip, "gratuitous ARP");
                }
            })));
        }
        self.owned = owned;
    }
}

/// What one health-check server answers: its Service and the number of local endpoints.
type HealthState = Arc<Mutex<(ServiceKey, usize)>>;

/// The `healthCheckNodePort` servers, one per port, answering as kube-proxy does: 200 with the
/// number of local endpoints when there is one, 503 otherwise.
struct HealthServers {
    netns: Option<Arc<NetNs>>,
    servers: HashMap<u16, (AbortOnDrop, HealthState)>,
}

impl HealthServers {
    async fn update<'a>(&mut self, plans: impl Iterator<Item = &'a ServicePlan>) {
        let desired: HashMap<u16, (ServiceKey, usize)> =
            plans.filter_map(|p| p.health_check.as_ref().map(|h| (h.node_port, (p.key.clone(), h.local_endpoints)))).collect();
        self.servers.retain(|port, _| desired.contains_key(port));
        for (port, value) in desired {
            if let Some((_, state)) = self.servers.get(&port) {
                *state.lock().expect("not poisoned") = value;
                continue;
            }
            let addr = SocketAddr::from(([0, 0, 0, 0], port));
            let listener = match bind(self.netns.as_deref(), addr) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, port, "health check NodePort");
                    continue;
                }
            };
            let state = Arc::new(Mutex::new(value));
            let for_handler = Arc::clone(&state);
            let router = axum::Router::new().fallback(move || {
                let state = Arc::clone(&for_handler);
                async move { health_response(&state.lock().expect("not poisoned")) }
            });
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            self.servers.insert(port, (AbortOnDrop(task), state));
        }
    }
}

fn health_response((key, local): &(ServiceKey, usize)) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let body = serde_json::json!({
        "service": { "namespace": key.namespace, "name": key.name },
        "localEndpoints": local,
        "serviceProxyHealthy": true,
    });
    let status = if *local > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json"), (header::HeaderName::from_static("x-content-type-options"), "nosniff")], body.to_string())
        .into_response()
}
