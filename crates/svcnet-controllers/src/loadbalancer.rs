//! The LoadBalancer address controller (what MetalLB's controller does on premises): every
//! `type: LoadBalancer` Service of svcnet's class (`spec.loadBalancerClass` unset or
//! [`LB_CLASS`]) gets an IPv4 address from an [`IPAddressPool`], written to
//! `status.loadBalancer.ingress` through the `services/status` subresource.
//!
//! The decision is the pure function [`decide`] of (Service, pools, current [`Allocations`]);
//! [`run`] is the driver: reflector caches of Services and pools feed a keyed work queue, and
//! the allocation map lives in memory, rebuilt from the Services' status before anything is
//! assigned, so that a restart keeps every address where it was. Failures are reported as
//! Kubernetes Events on the Service (`kubectl describe svc` shows them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use svcnet_api::selector::LabelSelector;
use svcnet_api::svcnet_io::{AddressRange, IPAddressPool};

use crate::controller::ServiceKey;
use crate::queue::WorkQueue;
use crate::{Error, Result};

/// The `spec.loadBalancerClass` this controller serves (besides an unset one).
pub const LB_CLASS: &str = "svcnet.io/lb";
/// Requested addresses, comma-separated (the IPv4 one is used); wins over `spec.loadBalancerIP`.
pub const LB_IPS_ANNOTATION: &str = "svcnet.io/loadBalancerIPs";
/// The pool to take the address from.
pub const POOL_ANNOTATION: &str = "svcnet.io/address-pool";
/// `source.component` of the Events this controller records.
pub const COMPONENT: &str = "svcnet-lb-controller";
/// Event reasons.
pub const REASON_ALLOCATED: &str = "IPAllocated";
pub const REASON_FAILED: &str = "AllocationFailed";

/// Services reconciled at once (the allocation map is locked for each decision).
const WORKERS: usize = 2;

// === pure core ===

/// Whether this controller assigns the Service's address.
pub fn is_ours(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref().is_none_or(|c| c == LB_CLASS)
}

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// The first IPv4 address in `status.loadBalancer.ingress`.
pub fn status_ip(svc: &Service) -> Option<Ipv4Addr> {
    ingress(svc).iter().find_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
}

fn ingress(svc: &Service) -> &[k8s_openapi::api::core::v1::LoadBalancerIngress] {
    svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_deref()).unwrap_or(&[])
}

/// Whether the status is exactly `[{ip, ipMode: VIP}]` (an absent ipMode means VIP).
fn status_is(svc: &Service, ip: Ipv4Addr) -> bool {
    let want = ip.to_string();
    matches!(ingress(svc), [i] if i.ip.as_deref() == Some(want.as_str())
        && i.hostname.as_deref().is_none_or(str::is_empty)
        && i.ip_mode.as_deref().is_none_or(|m| m == "VIP")
        && i.ports.as_ref().is_none_or(Vec::is_empty))
}

/// The address the Service asks for: the IPv4 entry of [`LB_IPS_ANNOTATION`], else
/// `spec.loadBalancerIP`. `Err` is the reason it cannot be honoured.
pub fn requested_ip(svc: &Service) -> Result<Option<Ipv4Addr>, String> {
    if let Some(list) = svc.annotations().get(LB_IPS_ANNOTATION).filter(|v| !v.trim().is_empty()) {
        let mut v4 = None;
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => {
                    v4.get_or_insert(ip);
                }
                Ok(IpAddr::V6(_)) => {}
                Err(_) => return Err(format!("annotation {LB_IPS_ANNOTATION}: {entry:?} is not an IP address")),
            }
        }
        return v4.map(Some).ok_or_else(|| format!("annotation {LB_IPS_ANNOTATION} {list:?} has no IPv4 address; only IPv4 addresses are assigned"));
    }
    match svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(ip) => match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Ok(Some(ip)),
            Ok(IpAddr::V6(_)) => Err(format!("spec.loadBalancerIP {ip} is not an IPv4 address; only IPv4 addresses are assigned")),
            Err(_) => Err(format!("spec.loadBalancerIP {ip:?} is not an IP address")),
        },
    }
}

/// An [`IPAddressPool`] as the decision needs it.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    /// The IPv4 ranges (IPv6 and unparsable entries are left out).
    ranges: Vec<AddressRange>,
    auto_assign: bool,
    /// `Err`: a selector does not parse, so the pool serves no one.
    selectors: Result<Vec<LabelSelector>, String>,
    namespaces: Vec<String>,
}

impl Pool {
    pub fn from_api(pool: &IPAddressPool) -> Pool {
        let ranges = pool.spec.addresses.iter().filter_map(|a| AddressRange::parse(a).ok()).filter(|r| r.first.is_ipv4()).collect();
        let selectors = pool.spec.service_selectors.iter().map(|s| LabelSelector::from_api(s).map_err(|e| e.0)).collect();
        Pool { name: pool.name_any(), ranges, auto_assign: pool.spec.auto_assign.unwrap_or(true), selectors, namespaces: pool.spec.namespaces.clone() }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.ranges.iter().any(|r| r.contains(IpAddr::V4(ip)))
    }

    /// Whether the pool's `namespaces` and `serviceSelectors` (any one) admit the Service.
    pub fn serves(&self, svc: &Service) -> bool {
        let namespace = svc.namespace().unwrap_or_default();
        if !self.namespaces.is_empty() && !self.namespaces.contains(&namespace) {
            return false;
        }
        match &self.selectors {
            Err(_) => false,
            Ok(selectors) => selectors.is_empty() || selectors.iter().any(|s| s.matches(svc.labels())),
        }
    }

    fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges.iter().flat_map(|r| r.iter()).filter_map(|ip| match ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
    }
}

/// Who holds an address: the Service, and which incarnation of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub key: ServiceKey,
    pub uid: String,
}

/// Which Service holds which address; no address is held twice.
#[derive(Clone, Debug, Default)]
pub struct Allocations {
    by_ip: BTreeMap<Ipv4Addr, Owner>,
    by_service: HashMap<ServiceKey, Ipv4Addr>,
}

impl Allocations {
    /// The map the Services' status describes: every Service of ours keeps the IPv4 address its
    /// status shows; when two show the same one, the older Service keeps it.
    pub fn rebuild<'a>(services: impl IntoIterator<Item = &'a Service>) -> Allocations {
        let mut ours: Vec<&Service> = services.into_iter().filter(|s| is_ours(s)).collect();
        ours.sort_by(|a, b| {
            let created = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a).cmp(&created(b)).then_with(|| key_of(a).cmp(&key_of(b)))
        });
        let mut allocs = Allocations::default();
        for svc in ours {
            if let Some(ip) = status_ip(svc)
                && allocs.owner(ip).is_none()
            {
                allocs.assign(ip, Owner { key: key_of(svc), uid: svc.uid().unwrap_or_default() });
            }
        }
        allocs
    }

    pub fn owner(&self, ip: Ipv4Addr) -> Option<&Owner> {
        self.by_ip.get(&ip)
    }

    /// The address `key` holds, and the incarnation holding it.
    pub fn get(&self, key: &ServiceKey) -> Option<(Ipv4Addr, &Owner)> {
        let ip = *self.by_service.get(key)?;
        Some((ip, &self.by_ip[&ip]))
    }

    /// Gives `ip` (which must be free or already `owner`'s) to `owner`; returns the address it
    /// held before, if different.
    pub fn assign(&mut self, ip: Ipv4Addr, owner: Owner) -> Option<Ipv4Addr> {
        debug_assert!(self.owner(ip).is_none_or(|o| o.key == owner.key));
        let previous = self.release(&owner.key).filter(|p| *p != ip);
        self.by_service.insert(owner.key.clone(), ip);
        self.by_ip.insert(ip, owner);
        previous
    }

    /// Frees what `key` holds.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Ipv4Addr> {
        let ip = self.by_service.remove(key)?;
        self.by_ip.remove(&ip);
        Some(ip)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// What a Service of ours should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This address, from this pool.
    Assign { ip: Ipv4Addr, pool: String },
    /// No address; the message says why (it becomes the Event's).
    Fail(String),
}

/// The address `svc` (one of ours) gets, given the pools and who holds what. A Service keeps
/// the address it holds while a pool it may use still contains it; a requested address is
/// honoured when a pool the Service may use contains it and no other Service holds it; else the
/// first free address of the eligible pools, in name order.
pub fn decide(svc: &Service, pools: &[Pool], allocs: &Allocations) -> Decision {
    let key = key_of(svc);
    let uid = svc.uid().unwrap_or_default();
    let mine = |o: &Owner| o.key == key && o.uid == uid;
    let current = allocs.get(&key).filter(|(_, o)| mine(o)).map(|(ip, _)| ip);
    let requested = match requested_ip(svc) {
        Ok(r) => r,
        Err(message) => return Decision::Fail(message),
    };
    if pools.is_empty() {
        return Decision::Fail("no IPAddressPool configured".into());
    }
    let named = svc.annotations().get(POOL_ANNOTATION).map(|s| s.trim()).filter(|s| !s.is_empty());
    let mut candidates: Vec<&Pool> = match named {
        Some(name) => {
            let Some(pool) = pools.iter().find(|p| p.name == name) else {
                return Decision::Fail(format!("IPAddressPool {name:?} does not exist"));
            };
            if !pool.serves(svc) {
                return Decision::Fail(format!("IPAddressPool {name:?} does not serve this Service (its namespaces or serviceSelectors exclude it)"));
            }
            vec![pool]
        }
        // Pools with autoAssign false serve only Services that name them or ask for one of
        // their addresses.
        None => pools.iter().filter(|p| p.serves(svc) && (p.auto_assign || requested.is_some())).collect(),
    };
    candidates.sort_by(|a, b| a.name.cmp(&b.name));

    if let Some(ip) = requested {
        let Some(pool) = candidates.iter().find(|p| p.contains(ip)) else {
            return Decision::Fail(match named {
                Some(name) => format!("requested IP {ip} is not in IPAddressPool {name:?}"),
                None => format!("requested IP {ip} is not in any IPAddressPool that serves this Service"),
            });
        };
        if let Some(owner) = allocs.owner(ip).filter(|o| !mine(o)) {
            return Decision::Fail(format!("requested IP {ip} is already assigned to {}", owner.key));
        }
        return Decision::Assign { ip, pool: pool.name.clone() };
    }
    if candidates.is_empty() {
        return Decision::Fail("no IPAddressPool with autoAssign serves this Service (check the pools' namespaces and serviceSelectors)".into());
    }
    if let Some(ip) = current
        && let Some(pool) = candidates.iter().find(|p| p.contains(ip))
    {
        return Decision::Assign { ip, pool: pool.name.clone() };
    }
    for pool in &candidates {
        if let Some(ip) = pool.addresses().find(|ip| allocs.owner(*ip).is_none_or(mine)) {
            return Decision::Assign { ip, pool: pool.name.clone() };
        }
    }
    let names: Vec<String> = candidates.iter().map(|p| format!("{:?}", p.name)).collect();
    Decision::Fail(match names.as_slice() {
        [one] => format!("no available IPs in pool {one}"),
        many => format!("no available IPs in pools {}", many.join(", ")),
    })
}

fn key_of(svc: &Service) -> ServiceKey {
    ServiceKey { namespace: svc.namespace().unwrap_or_default(), name: svc.name_any() }
}

// === driver ===

/// Runs the controller until a watch ends (which it does not on its own).
pub async fn run(client: Client) -> Result<()> {
    let (services, services_writer) = reflector::store::<Service>();
    let (pools, pools_writer) = reflector::store::<IPAddressPool>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        services,
        pools,
        queue: WorkQueue::new(),
        allocs: Mutex::new(Allocations::default()),
        events: Mutex::new(HashMap::new()),
        attempts: Mutex::new(HashMap::new()),
        epoch: Mutex::new(0),
    });
    let service_events = crate::cache::watch(Api::<Service>::all(client.clone()), services_writer, watcher::Config::default());
    let pool_events = crate::cache::watch(Api::<IPAddressPool>::all(client), pools_writer, watcher::Config::default());

    let workers = {
        let ctx = Arc::clone(&ctx);
        async move {
            ctx.services.wait_until_ready().await.map_err(|_| Error::StoreDropped("Service"))?;
            ctx.pools.wait_until_ready().await.map_err(|_| Error::StoreDropped("IPAddressPool"))?;
            // Before anything is assigned: who holds what, from the Services' status.
            let rebuilt = Allocations::rebuild(ctx.services.state().iter().map(Arc::as_ref));
            tracing::info!(addresses = rebuilt.len(), "caches synced, assigning LoadBalancer addresses");
            *ctx.allocs.lock().unwrap() = rebuilt;
            let workers = (0..WORKERS).map(|_| worker(Arc::clone(&ctx)));
            futures::future::join_all(workers).await;
            Ok::<(), Error>(())
        }
    };

    tokio::select! {
        r = handle_services(service_events, &ctx) => r,
        r = handle_pools(pool_events, &ctx) => r,
        r = workers => r,
    }
}

/// A Service change enqueues the Service; so does its deletion (also one missed while the
/// watch was relisting), which frees its address.
async fn handle_services(events: impl Stream<Item = watcher::Event<Service>>, ctx: &Context) -> Result<()> {
    let mut events = std::pin::pin!(events);
    let mut known = crate::cache::Known::default();
    while let Some(event) = events.next().await {
        match event {
            watcher::Event::Apply(svc) => {
                known.applied(key_of(&svc));
                ctx.queue.add(key_of(&svc));
            }
            watcher::Event::Delete(svc) => {
                known.deleted(&key_of(&svc));
                ctx.queue.add(key_of(&svc));
            }
            watcher::Event::Init => known.relist_started(),
            watcher::Event::InitApply(svc) => {
                known.relisted(key_of(&svc));
                ctx.queue.add(key_of(&svc));
            }
            watcher::Event::InitDone => known.relist_done().into_iter().for_each(|gone| ctx.queue.add(gone)),
        }
    }
    Err(Error::WatchEnded("Service"))
}

/// A pool change can give pending Services an address or take one away: every Service of ours
/// is looked at again.
async fn handle_pools(events: impl Stream<Item = watcher::Event<IPAddressPool>>, ctx: &Context) -> Result<()> {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if let watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone = event {
            *ctx.epoch.lock().unwrap() += 1;
            for svc in ctx.services.state().iter().filter(|s| is_ours(s)) {
                ctx.queue.add(key_of(svc));
            }
        }
    }
    Err(Error::WatchEnded("IPAddressPool"))
}

struct Context {
    client: Client,
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    queue: Arc<WorkQueue<ServiceKey>>,
    allocs: Mutex<Allocations>,
    /// Events recorded per Service, to count repeats instead of creating new ones.
    events: Mutex<HashMap<ServiceKey, Vec<Recorded>>>,
    /// Per Service: what the last failed attempt looked at, so that reconciles caused only by
    /// this controller's own writes do not repeat its Warning.
    attempts: Mutex<HashMap<ServiceKey, (u64, String)>>,
    /// Bumped when the pools change or an address is freed: what a pending Service waits for.
    epoch: Mutex<u64>,
}

/// An Event this controller created.
struct Recorded {
    uid: String,
    reason: String,
    message: String,
    name: String,
    count: i32,
}

impl Context {
    /// Looks at every Service of ours without an address again: one was freed.
    fn address_freed(&self) {
        *self.epoch.lock().unwrap() += 1;
        let holders: HashSet<ServiceKey> = self.allocs.lock().unwrap().by_service.keys().cloned().collect();
        for svc in self.services.state().iter().filter(|s| is_ours(s)) {
            let key = key_of(svc);
            if !holders.contains(&key) {
                self.queue.add(key);
            }
        }
    }

    fn pools(&self) -> Vec<Pool> {
        self.pools.state().iter().map(|p| Pool::from_api(p)).collect()
    }
}

async fn worker(ctx: Arc<Context>) {
    loop {
        let key = ctx.queue.next().await;
        let result = reconcile(&ctx, &key).await;
        ctx.queue.done(&key);
        match result {
            Ok(Next::Done) => {
                ctx.queue.forget(&key);
            }
            Ok(Next::Stale) => ctx.queue.add_after(key, Duration::from_millis(200)),
            Err(error) => {
                let delay = ctx.queue.retry(key.clone(), Duration::from_millis(100));
                tracing::warn!(service = %key, %error, retry_in = ?delay, "reconcile failed");
            }
        }
    }
}

enum Next {
    Done,
    /// The cached Service was older than the stored one; try again shortly.
    Stale,
}

async fn reconcile(ctx: &Context, key: &ServiceKey) -> Result<Next> {
    let Some(svc) = ctx.services.get(&ObjectRef::new(&key.name).within(&key.namespace)) else {
        // Deleted: its address is free, and nothing is left to record events on.
        let freed = ctx.allocs.lock().unwrap().release(key);
        ctx.events.lock().unwrap().remove(key);
        ctx.attempts.lock().unwrap().remove(key);
        if let Some(ip) = freed {
            tracing::info!(service = %key, %ip, "released LoadBalancer address");
            ctx.address_freed();
        }
        return Ok(Next::Done);
    };

    if !is_ours(&svc) {
        // Changed type or class: the address goes, and so does the status it had from us. A
        // LoadBalancer of another class keeps whatever its own controller wrote.
        let freed = ctx.allocs.lock().unwrap().release(key);
        ctx.attempts.lock().unwrap().remove(key);
        if let Some(ip) = freed {
            tracing::info!(service = %key, %ip, "released LoadBalancer address");
            ctx.address_freed();
        }
        if (freed.is_some() || !is_load_balancer(&svc)) && !ingress(&svc).is_empty() {
            return write_status(ctx, &svc, None).await;
        }
        return Ok(Next::Done);
    }

    let pools = ctx.pools();
    let (decision, freed) = {
        let mut allocs = ctx.allocs.lock().unwrap();
        let uid = svc.uid().unwrap_or_default();
        // An address held by an earlier Service of the same name is not this one's.
        let mut freed = match allocs.get(key) {
            Some((_, owner)) if owner.uid != uid => allocs.release(key),
            _ => None,
        };
        let decision = decide(&svc, &pools, &allocs);
        match &decision {
            Decision::Assign { ip, .. } => freed = freed.or(allocs.assign(*ip, Owner { key: key.clone(), uid })),
            Decision::Fail(_) => freed = freed.or(allocs.release(key)),
        }
        (decision, freed)
    };
    if let Some(ip) = freed {
        tracing::info!(service = %key, %ip, "released LoadBalancer address");
        ctx.address_freed();
    }

    match decision {
        Decision::Assign { ip, pool } => {
            ctx.attempts.lock().unwrap().remove(key);
            if status_is(&svc, ip) {
                return Ok(Next::Done);
            }
            if let Next::Stale = write_status(ctx, &svc, Some(ip)).await? {
                return Ok(Next::Stale);
            }
            tracing::info!(service = %key, %ip, %pool, "assigned LoadBalancer address");
            record(ctx, &svc, "Normal", REASON_ALLOCATED, &format!("Assigned IP {ip} from IPAddressPool {pool:?}")).await;
            Ok(Next::Done)
        }
        Decision::Fail(message) => {
            if !ingress(&svc).is_empty()
                && let Next::Stale = write_status(ctx, &svc, None).await?
            {
                return Ok(Next::Stale);
            }
            // The same failure for the same inputs is recorded once; the status write above,
            // for one, comes back as a Service update.
            let attempt = (*ctx.epoch.lock().unwrap(), fingerprint(&svc, &message));
            let repeated = ctx.attempts.lock().unwrap().insert(key.clone(), attempt.clone()).as_ref() == Some(&attempt);
            if !repeated {
                tracing::info!(service = %key, reason = %message, "no LoadBalancer address");
                record(ctx, &svc, "Warning", REASON_FAILED, &message).await;
            }
            Ok(Next::Done)
        }
    }
}

/// What a failed decision depended on besides the pools: the spec, labels and annotations.
fn fingerprint(svc: &Service, message: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    svc.uid().hash(&mut h);
    serde_json::to_string(&svc.spec).unwrap_or_default().hash(&mut h);
    svc.labels().hash(&mut h);
    svc.annotations().hash(&mut h);
    format!("{:x}/{message}", h.finish())
}

/// Sets `status.loadBalancer` to `[{ip, ipMode: VIP}]`, or empties it, with a merge patch on
/// the status subresource pinned to the cached resourceVersion (so a stale cache cannot write
/// an address to a Service that has changed since).
async fn write_status(ctx: &Context, svc: &Service, ip: Option<Ipv4Addr>) -> Result<Next> {
    let key = key_of(svc);
    let ingress = match ip {
        Some(ip) => json!([{"ip": ip.to_string(), "ipMode": "VIP"}]),
        None => serde_json::Value::Null,
    };
    let patch = json!({
        "metadata": {"resourceVersion": svc.resource_version()},
        "status": {"loadBalancer": {"ingress": ingress}},
    });
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(Next::Done),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Next::Stale),
        // Deleted meanwhile: the delete event comes next.
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Next::Done),
        Err(source) => Err(Error::Api { action: "update status of", kind: "Service", namespace: key.namespace.clone(), name: key.name.clone(), source }),
    }
}

/// Records a core/v1 Event on the Service, or counts a repeat of one recorded before (also one
/// recorded before a restart). Best effort, like client-go's recorder: failures are logged.
async fn record(ctx: &Context, svc: &Service, type_: &str, reason: &str, message: &str) {
    let key = key_of(svc);
    let uid = svc.uid().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let now = Time(k8s_openapi::jiff::Timestamp::now());

    let known = ctx
        .events
        .lock()
        .unwrap()
        .get(&key)
        .and_then(|list| list.iter().find(|r| r.uid == uid && r.reason == reason && r.message == message).map(|r| (r.name.clone(), r.count)));
    let known = match known {
        Some(k) => Some(k),
        None => find_event(&api, &uid, reason, message).await,
    };
    if let Some((name, count)) = known {
        let patch = json!({"count": count + 1, "lastTimestamp": now});
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                remember(ctx, &key, Recorded { uid, reason: reason.into(), message: message.into(), name, count: count + 1 });
                return;
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => {
                tracing::warn!(service = %key, %reason, %error, "could not update event");
                return;
            }
        }
    }
    let name = format!("{}.{:x}", key.name, now.0.as_nanosecond());
    let event = Event {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(key.namespace.clone()), ..Default::default() },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            uid: Some(uid.clone()),
            resource_version: svc.resource_version(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource { component: Some(COMPONENT.into()), host: None }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(COMPONENT.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => remember(ctx, &key, Recorded { uid, reason: reason.into(), message: message.into(), name, count: 1 }),
        Err(error) => tracing::warn!(service = %key, %reason, %error, "could not record event"),
    }
}

/// An Event this controller recorded on the Service `uid` with this reason and message.
async fn find_event(api: &Api<Event>, uid: &str, reason: &str, message: &str) -> Option<(String, i32)> {
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid},reason={reason},source={COMPONENT}"));
    let list = api.list(&params).await.ok()?;
    list.items.into_iter().filter(|e| e.message.as_deref() == Some(message)).max_by_key(|e| e.count.unwrap_or(1)).map(|e| (e.name_any(), e.count.unwrap_or(1)))
}

fn remember(ctx: &Context, key: &ServiceKey, recorded: Recorded) {
    let mut all = ctx.events.lock().unwrap();
    let list = all.entry(key.clone()).or_default();
    list.retain(|r| !(r.uid == recorded.uid && r.reason == recorded.reason && r.message == recorded.message));
    // Events of an earlier Service of the same name are of no use.
    list.retain(|r| r.uid == recorded.uid);
    list.push(recorded);
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn svc(name: &str, extra: Value) -> Service {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn pool(name: &str, spec: Value) -> Pool {
        Pool::from_api(&serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap())
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn assign(s: &str, pool: &str) -> Decision {
        Decision::Assign { ip: ip(s), pool: pool.into() }
    }

    fn fail(m: &str) -> Decision {
        Decision::Fail(m.into())
    }

    fn owner(name: &str) -> Owner {
        Owner { key: ServiceKey { namespace: "default".into(), name: name.into() }, uid: format!("uid-{name}") }
    }

    fn holding(list: &[(&str, &str)]) -> Allocations {
        let mut a = Allocations::default();
        for (name, addr) in list {
            a.assign(ip(addr), owner(name));
        }
        a
    }

    #[test]
    fn only_load_balancers_of_our_class() {
        assert!(is_ours(&svc("a", json!({}))));
        assert!(is_ours(&svc("a", json!({"spec": {"loadBalancerClass": LB_CLASS}}))));
        assert!(!is_ours(&svc("a", json!({"spec": {"loadBalancerClass": "other.example/lb"}}))));
        assert!(!is_ours(&svc("a", json!({"spec": {"type": "ClusterIP"}}))));
        assert!(!is_ours(&svc("a", json!({"spec": {"type": "NodePort"}}))));
    }

    #[test]
    fn first_free_address_of_the_pool() {
        let pools = [pool("p", json!({"addresses": ["10.0.0.1-10.0.0.3"]}))];
        assert_eq!(decide(&svc("a", json!({})), &pools, &Allocations::default()), assign("10.0.0.1", "p"));
        let held = holding(&[("x", "10.0.0.1"), ("y", "10.0.0.2")]);
        assert_eq!(decide(&svc("a", json!({})), &pools, &held), assign("10.0.0.3", "p"));
        let full = holding(&[("x", "10.0.0.1"), ("y", "10.0.0.2"), ("z", "10.0.0.3")]);
        assert_eq!(decide(&svc("a", json!({})), &pools, &full), fail("no available IPs in pool \"p\""));
        // CIDRs hand out their network and broadcast addresses too; IPv6 ranges nothing.
        let pools = [pool("b", json!({"addresses": ["fd00::/126", "10.1.0.0/31"]})), pool("a", json!({"addresses": ["fd00::/120"]}))];
        assert_eq!(decide(&svc("s", json!({})), &pools, &Allocations::default()), assign("10.1.0.0", "b"));
        let full = holding(&[("x", "10.1.0.0"), ("y", "10.1.0.1")]);
        assert_eq!(decide(&svc("s", json!({})), &pools, &full), fail("no available IPs in pools \"a\", \"b\""));
    }

    #[test]
    fn no_pool() {
        assert_eq!(decide(&svc("a", json!({})), &[], &Allocations::default()), fail("no IPAddressPool configured"));
    }

    #[test]
    fn pools_in_name_order() {
        let pools = [pool("zeta", json!({"addresses": ["10.9.0.1/32"]})), pool("alpha", json!({"addresses": ["10.1.0.1/32"]}))];
        assert_eq!(decide(&svc("a", json!({})), &pools, &Allocations::default()), assign("10.1.0.1", "alpha"));
        assert_eq!(decide(&svc("b", json!({})), &pools, &holding(&[("a", "10.1.0.1")])), assign("10.9.0.1", "zeta"));
    }

    #[test]
    fn keeps_its_address_while_a_pool_contains_it() {
        let pools = [pool("p", json!({"addresses": ["10.0.0.0/29"]}))];
        let held = holding(&[("a", "10.0.0.5")]);
        assert_eq!(decide(&svc("a", json!({})), &pools, &held), assign("10.0.0.5", "p"));
        // The pool shrank: a new address.
        let pools = [pool("p", json!({"addresses": ["10.0.0.0/30"]}))];
        assert_eq!(decide(&svc("a", json!({})), &pools, &held), assign("10.0.0.0", "p"));
        // A new Service of the same name is another one: the earlier's address is not its own.
        let mut other = svc("a", json!({}));
        other.metadata.uid = Some("uid-new".into());
        let held = holding(&[("a", "10.0.0.0")]);
        assert_eq!(decide(&other, &pools, &held), assign("10.0.0.1", "p"));
    }

    #[test]
    fn requested_addresses() {
        let pools = [pool("p", json!({"addresses": ["10.0.0.0/24"]}))];
        let none = Allocations::default();
        let by_field = svc("a", json!({"spec": {"loadBalancerIP": "10.0.0.42"}}));
        assert_eq!(decide(&by_field, &pools, &none), assign("10.0.0.42", "p"));
        let by_annotation = svc("a", json!({"metadata": {"annotations": {LB_IPS_ANNOTATION: "fd00::1, 10.0.0.43"}}}));
        assert_eq!(decide(&by_annotation, &pools, &none), assign("10.0.0.43", "p"));
        // The annotation wins over the deprecated field.
        let both = svc("a", json!({"spec": {"loadBalancerIP": "10.0.0.42"}, "metadata": {"annotations": {LB_IPS_ANNOTATION: "10.0.0.44"}}}));
        assert_eq!(decide(&both, &pools, &none), assign("10.0.0.44", "p"));

        let taken = holding(&[("other", "10.0.0.42")]);
        assert_eq!(decide(&by_field, &pools, &taken), fail("requested IP 10.0.0.42 is already assigned to default/other"));
        // Its own address is not taken.
        assert_eq!(decide(&by_field, &pools, &holding(&[("a", "10.0.0.42")])), assign("10.0.0.42", "p"));
        // Moving to a requested address.
        assert_eq!(decide(&by_field, &pools, &holding(&[("a", "10.0.0.7")])), assign("10.0.0.42", "p"));

        let outside = svc("a", json!({"spec": {"loadBalancerIP": "192.0.2.1"}}));
        assert_eq!(decide(&outside, &pools, &none), fail("requested IP 192.0.2.1 is not in any IPAddressPool that serves this Service"));
        let v6 = svc("a", json!({"metadata": {"annotations": {LB_IPS_ANNOTATION: "fd00::1"}}}));
        assert_eq!(decide(&v6, &pools, &none), fail("annotation svcnet.io/loadBalancerIPs \"fd00::1\" has no IPv4 address; only IPv4 addresses are assigned"));
        let bad = svc("a", json!({"metadata": {"annotations": {LB_IPS_ANNOTATION: "10.0.0.1,nope"}}}));
        assert_eq!(decide(&bad, &pools, &none), fail("annotation svcnet.io/loadBalancerIPs: \"nope\" is not an IP address"));
        let bad = svc("a", json!({"spec": {"loadBalancerIP": "nope"}}));
        assert_eq!(decide(&bad, &pools, &none), fail("spec.loadBalancerIP \"nope\" is not an IP address"));
    }

    #[test]
    fn named_pools_and_auto_assign() {
        let pools = [pool("auto", json!({"addresses": ["10.0.0.1/32"]})), pool("manual", json!({"addresses": ["10.0.1.0/30"], "autoAssign": false}))];
        let none = Allocations::default();
        assert_eq!(decide(&svc("a", json!({})), &pools, &none), assign("10.0.0.1", "auto"));
        // autoAssign false: never picked on its own...
        let full = holding(&[("x", "10.0.0.1")]);
        assert_eq!(decide(&svc("a", json!({})), &pools, &full), fail("no available IPs in pool \"auto\""));
        // ...but by name, or for an address it holds.
        let named = svc("a", json!({"metadata": {"annotations": {POOL_ANNOTATION: "manual"}}}));
        assert_eq!(decide(&named, &pools, &full), assign("10.0.1.0", "manual"));
        let requested = svc("a", json!({"spec": {"loadBalancerIP": "10.0.1.2"}}));
        assert_eq!(decide(&requested, &pools, &full), assign("10.0.1.2", "manual"));
        // A requested address must be in the named pool.
        let both = svc("a", json!({"spec": {"loadBalancerIP": "10.0.0.1"}, "metadata": {"annotations": {POOL_ANNOTATION: "manual"}}}));
        assert_eq!(decide(&both, &pools, &none), fail("requested IP 10.0.0.1 is not in IPAddressPool \"manual\""));
        let missing = svc("a", json!({"metadata": {"annotations": {POOL_ANNOTATION: "nope"}}}));
        assert_eq!(decide(&missing, &pools, &none), fail("IPAddressPool \"nope\" does not exist"));
        // Only manual pools: nothing for Services that do not ask.
        let pools = [pool("manual", json!({"addresses": ["10.0.1.0/30"], "autoAssign": false}))];
        assert!(matches!(decide(&svc("a", json!({})), &pools, &none), Decision::Fail(m) if m.starts_with("no IPAddressPool with autoAssign serves")));
    }

    #[test]
    fn namespaces_and_service_selectors() {
        let pools = [
            pool("team", json!({"addresses": ["10.0.0.1/32"], "namespaces": ["team-a"]})),
            pool(
                "web",
                json!({"addresses": ["10.0.0.2/32"], "serviceSelectors": [
                    {"matchLabels": {"tier": "web"}},
                    {"matchExpressions": [{"key": "expose", "operator": "Exists"}]},
                ]}),
            ),
            pool("broken", json!({"addresses": ["10.0.0.3/32"], "serviceSelectors": [{"matchExpressions": [{"key": "x", "operator": "Bogus"}]}]})),
        ];
        let none = Allocations::default();
        let in_team = svc("a", json!({"metadata": {"namespace": "team-a"}}));
        assert_eq!(decide(&in_team, &pools, &none), assign("10.0.0.1", "team"));
        assert!(matches!(decide(&svc("a", json!({})), &pools, &none), Decision::Fail(m) if m.starts_with("no IPAddressPool with autoAssign serves")));
        let web = svc("a", json!({"metadata": {"labels": {"tier": "web"}}}));
        assert_eq!(decide(&web, &pools, &none), assign("10.0.0.2", "web"));
        let exposed = svc("a", json!({"metadata": {"labels": {"expose": ""}}}));
        assert_eq!(decide(&exposed, &pools, &none), assign("10.0.0.2", "web"));
        // Naming a pool does not get around its restrictions.
        let named = svc("a", json!({"metadata": {"annotations": {POOL_ANNOTATION: "team"}}}));
        assert!(matches!(decide(&named, &pools, &none), Decision::Fail(m) if m.starts_with("IPAddressPool \"team\" does not serve this Service")));
        let requested = svc("a", json!({"spec": {"loadBalancerIP": "10.0.0.1"}}));
        assert_eq!(decide(&requested, &pools, &none), fail("requested IP 10.0.0.1 is not in any IPAddressPool that serves this Service"));
    }

    #[test]
    fn rebuilds_from_status_older_service_wins() {
        let with_status = |name: &str, created: &str, addr: &str, extra: Value| {
            let mut s = svc(name, extra);
            s.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
            s.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": addr, "ipMode": "VIP"}]}})).unwrap();
            s
        };
        let services = [
            with_status("young", "2025-01-02T00:00:00Z", "10.0.0.1", json!({})),
            with_status("old", "2025-01-01T00:00:00Z", "10.0.0.1", json!({})),
            with_status("b", "2025-01-01T00:00:00Z", "10.0.0.2", json!({})),
            with_status("theirs", "2024-01-01T00:00:00Z", "10.0.0.3", json!({"spec": {"loadBalancerClass": "other.example/lb"}})),
            svc("pending", json!({})),
        ];
        let a = Allocations::rebuild(&services);
        assert_eq!(a.len(), 2);
        assert_eq!(a.owner(ip("10.0.0.1")), Some(&owner("old")));
        assert_eq!(a.owner(ip("10.0.0.2")), Some(&owner("b")));
        assert_eq!(a.owner(ip("10.0.0.3")), None);
        // The loser of the duplicate gets another address; the others keep theirs.
        let pools = [pool("p", json!({"addresses": ["10.0.0.1-10.0.0.4"]}))];
        assert_eq!(decide(&services[0], &pools, &a), assign("10.0.0.3", "p"));
        assert_eq!(decide(&services[1], &pools, &a), assign("10.0.0.1", "p"));
        assert!(status_is(&services[1], ip("10.0.0.1")));
        assert!(!status_is(&services[1], ip("10.0.0.2")));
    }

    #[test]
    fn allocations_hold_each_address_once() {
        let mut a = Allocations::default();
        assert_eq!(a.assign(ip("10.0.0.1"), owner("a")), None);
        assert_eq!(a.assign(ip("10.0.0.2"), owner("a")), Some(ip("10.0.0.1")));
        assert_eq!(a.owner(ip("10.0.0.1")), None);
        assert_eq!(a.assign(ip("10.0.0.2"), owner("a")), None);
        assert_eq!(a.release(&owner("a").key), Some(ip("10.0.0.2")));
        assert!(a.is_empty());
    }
}
