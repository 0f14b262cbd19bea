//! `svcnet-bench endpoints`: the time from a pod's Ready condition changing to the EndpointSlice
//! reflecting it, with 10,000 Services and 100,000 pods in the store (issue 4), next to the same
//! measurement on a small cluster (100 Services, 1,000 pods) in the same run.
//!
//! How:
//!
//! 1. Templates: a throwaway `svcnet up` creates one Namespace, one Service and one Pod through
//!    the API (and marks the pod Running and Ready through `pods/status`); their JSON as the
//!    server returns it (defaults, `managedFields`, allocated ClusterIP and all) is the template
//!    of every pre-loaded object, so the stored objects are what the API server itself writes.
//! 2. Pre-load: for each cluster, a fresh `RedbStore` at `DIR/store.redb` gets the namespaces
//!    (`/registry/namespaces/<ns>`), the Services (`/registry/services/<ns>/<name>`, each with a
//!    distinct ClusterIP in 10.96.0.0/12 and its allocator claim under
//!    `/allocations/clusterips/<ip>`, so the server's startup repair has nothing to do) and the
//!    pods (`/registry/pods/<ns>/<name>`, `pods_per_service` per Service, selected by it, with a
//!    podIP and `Ready=True`), written straight into the store in batches (group commit).
//! 3. Initial sync: `svcnet up` starts on that directory; a watch on the EndpointSlices the
//!    controller manages counts the Services whose slices hold all their pods as ready. The time
//!    from starting the process to all of them is the initial sync; then the bench waits until
//!    the server's CPU use goes quiet (the controllers see their own writes come back) and reads
//!    its RSS (`VmRSS`, and the peak `VmHWM`) and the store file's size.
//! 4. Flips: sequentially, a random pod's Ready condition is flipped (merge patch of
//!    `pods/<name>/status`), and the time is taken from sending the patch to a watch on
//!    EndpointSlices seeing that pod's endpoint with the new `conditions.ready`. Watches on Pods
//!    and Endpoints (from the current resourceVersion, so only the flips show up) time the steps
//!    in between: the pod's event reaching a watcher (as it reaches the controllers' reflectors)
//!    and the Endpoints update (the controller writes the Endpoints first, then the slice). The
//!    two clusters' flips are interleaved, so load from elsewhere hits both alike.
//!
//! Nothing asserts on timings; every byte goes to loopback.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    core::v1::{Endpoints, Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Resource, ResourceExt,
    api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::watcher,
};
use serde_json::{Value, json};
use svcnet_store::{RedbStore, Storage};
use tokio::sync::oneshot;

use crate::{SvcnetProcess, ms, percentile};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_SELECTOR: &str = "endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io";
/// Namespaces of the pre-loaded objects are `bench-<i>`.
const NS_PREFIX: &str = "bench-";

#[derive(clap::Args)]
pub struct EndpointsArgs {
    /// The `svcnet` binary to benchmark (a release build).
    #[arg(long, default_value = "target/release/svcnet")]
    svcnet: PathBuf,
    /// Services in the large cluster.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Services in the baseline cluster.
    #[arg(long, default_value_t = 100)]
    baseline_services: usize,
    /// Pods per Service (each selected by exactly one Service), in both clusters.
    #[arg(long, default_value_t = 10)]
    pods_per_service: usize,
    /// Namespaces the Services and pods are spread over (round-robin), in both clusters.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Ready flips measured per cluster.
    #[arg(long, default_value_t = 200)]
    flips: usize,
    /// Pause after each flip has shown up, so that the controllers' follow-up work (they see
    /// their own writes come back) does not queue the next flip behind it.
    #[arg(long, default_value_t = 300)]
    gap_ms: u64,
    /// Give up waiting for the initial sync after this long.
    #[arg(long, default_value_t = 3600)]
    sync_timeout_secs: u64,
    /// Seed of the pod picks.
    #[arg(long, default_value_t = 4)]
    seed: u64,
    /// Where to put the data dirs; a fresh temporary directory under it is removed at the end.
    /// Default: the system temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The shape of one cluster.
#[derive(Clone, Copy)]
struct Shape {
    services: usize,
    pods_per_service: usize,
    namespaces: usize,
}

impl Shape {
    fn pods(&self) -> usize {
        self.services * self.pods_per_service
    }
    fn label(&self) -> String {
        format!("{}/{}", count(self.services), count(self.pods()))
    }
    fn namespace(&self, svc: usize) -> String {
        format!("{NS_PREFIX}{}", svc % self.namespaces)
    }
    fn service(&self, svc: usize) -> String {
        format!("svc-{svc}")
    }
    /// Namespace, Service and pod name of pod number `pod`.
    fn pod(&self, pod: usize) -> (String, String, String) {
        let svc = pod / self.pods_per_service;
        (self.namespace(svc), self.service(svc), format!("svc-{svc}-{}", pod % self.pods_per_service))
    }
}

/// 10000 -> "10k".
fn count(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) { format!("{}k", n / 1000) } else { n.to_string() }
}

pub async fn run(args: EndpointsArgs) -> Result<()> {
    anyhow::ensure!(args.services > 0 && args.baseline_services > 0 && args.pods_per_service > 0 && args.namespaces > 0, "counts must be above 0");
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new().prefix("svcnet-bench-endpoints-").tempdir_in(&parent).with_context(|| format!("temp dir in {}", parent.display()))?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let shape = |services| Shape { services, pods_per_service: args.pods_per_service, namespaces: args.namespaces };
    let (large, small) = (shape(args.services), shape(args.baseline_services));
    eprintln!(
        "svcnet-bench endpoints: {} vs {} (Services/pods, {} namespaces), {} flips each; data under {}; {} cores",
        large.label(),
        small.label(),
        args.namespaces,
        args.flips,
        work.path().display(),
        cores
    );

    let templates = Templates::fetch(&args.svcnet, &work.path().join("template")).await?;

    // Pre-load both stores before either server runs.
    let mut clusters = Vec::new();
    for (role, shape) in [("small", small), ("large", large)] {
        let dir = work.path().join(role);
        std::fs::create_dir_all(&dir)?;
        let t = Instant::now();
        let objects = preload(&dir.join("store.redb"), &shape, &templates).await?;
        let preload_time = t.elapsed();
        let store_bytes = file_size(&dir.join("store.redb"));
        eprintln!("{}: pre-loaded {objects} keys in {:.1} s; store {}", shape.label(), preload_time.as_secs_f64(), mib(store_bytes));
        clusters.push(Cluster::new(shape, dir, preload_time, store_bytes));
    }
    let [small, large] = &mut clusters[..] else { unreachable!() };

    // Initial syncs, one at a time (the small one first: it is quick, and then idle).
    small.start(&args).await?;
    large.start(&args).await?;

    // Flips, interleaved.
    let mut rng = args.seed.max(1);
    for c in [&mut *large, &mut *small] {
        c.cpu_before_flips = c.cpu_seconds();
        c.ready = vec![true; c.shape.pods()];
    }
    let flip_start = Instant::now();
    for i in 0..args.flips {
        for c in [&mut *large, &mut *small] {
            let pod = (xorshift(&mut rng) % c.shape.pods() as u64) as usize;
            let want = !c.ready[pod];
            let f = c.flip(pod, want).await.with_context(|| format!("{}: flip {i}", c.shape.label()))?;
            c.ready[pod] = want;
            c.flips.push(f);
            tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        }
        if (i + 1) % 50 == 0 {
            eprintln!("{} flips each done ({:.0} s)", i + 1, flip_start.elapsed().as_secs_f64());
        }
    }
    for c in [&mut *large, &mut *small] {
        c.cpu_after_flips = c.cpu_seconds();
        c.rss_after_flips = proc_status_kib(c.pid(), "VmRSS");
    }

    print_table(&args, large, small, cores, &parent);
    Ok(())
}

// === templates ===

/// One object of each kind as the API server stores it.
struct Templates {
    namespace: Value,
    service: Value,
    pod: Value,
}

impl Templates {
    async fn fetch(svcnet: &Path, dir: &Path) -> Result<Self> {
        let server = SvcnetProcess::start(svcnet, dir).await?;
        let client = client_for(&server).await?;
        let ns = "tmpl";
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.context("template namespace")?;
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "tmpl"},
            "spec": {"selector": {"app": "tmpl"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))?;
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        services.create(&PostParams::default(), &service).await.context("template service")?;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "tmpl", "labels": {"app": "tmpl"}},
            "spec": {
                "nodeName": "node-0",
                "containers": [{
                    "name": "app",
                    "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                    "args": ["netexec", "--http-port=8080"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                }],
            },
        }))?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        pods.create(&PostParams::default(), &pod).await.context("template pod")?;
        let now = "2025-01-01T00:00:00Z";
        let status = json!({"status": {
            "phase": "Running",
            "hostIP": "192.168.0.10",
            "hostIPs": [{"ip": "192.168.0.10"}],
            "podIP": "10.128.0.1",
            "podIPs": [{"ip": "10.128.0.1"}],
            "startTime": now,
            "conditions": conditions(true, now),
            "containerStatuses": [{
                "name": "app",
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                "imageID": "registry.k8s.io/e2e-test-images/agnhost@sha256:99c6b4bb4a1e1df3f0b3752168c89358794d02258ebebc26bf21c29399011a85",
                "containerID": "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }],
        }});
        pods.patch_status("tmpl", &PatchParams::default(), &Patch::Merge(&status)).await.context("template pod status")?;
        let strip = |mut v: Value| {
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            v
        };
        let t = Templates {
            namespace: strip(serde_json::to_value(Api::<Namespace>::all(client.clone()).get(ns).await?)?),
            service: strip(serde_json::to_value(services.get("tmpl").await?)?),
            pod: strip(serde_json::to_value(pods.get("tmpl").await?)?),
        };
        eprintln!("templates from the API server: Service {} bytes, Pod {} bytes as stored", t.service.to_string().len(), t.pod.to_string().len());
        drop(server);
        Ok(t)
    }
}

/// A pod's conditions, Ready (and ContainersReady) as `ready`.
fn conditions(ready: bool, time: &str) -> Value {
    let ready = if ready { "True" } else { "False" };
    json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
        {"type": "Ready", "status": ready, "lastTransitionTime": time},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": time},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
    ])
}

fn uid(kind: u8, n: usize) -> String {
    format!("0b4c1d9e-7d2a-4e51-9a{kind:02x}-{n:012x}")
}

fn ipv4(base: [u8; 4], offset: usize) -> String {
    std::net::Ipv4Addr::from(u32::from_be_bytes(base) + offset as u32).to_string()
}

/// Writes the namespaces, Services (with their ClusterIP claims) and pods of `shape` into a fresh
/// store at `path`; returns the number of keys.
async fn preload(path: &Path, shape: &Shape, t: &Templates) -> Result<usize> {
    let created = "2025-01-01T00:00:00Z";
    let mut kvs: Vec<(String, Vec<u8>)> = Vec::with_capacity(shape.namespaces + 2 * shape.services + shape.pods());
    let set_meta = |obj: &mut Value, name: &str, ns: Option<&str>, uid: String| {
        let m = obj["metadata"].as_object_mut().expect("metadata");
        m.insert("name".into(), name.into());
        m.insert("uid".into(), uid.into());
        m.insert("creationTimestamp".into(), created.into());
        match ns {
            Some(ns) => m.insert("namespace".into(), ns.into()),
            None => m.remove("namespace"),
        };
    };
    for n in 0..shape.namespaces {
        let name = format!("{NS_PREFIX}{n}");
        let mut obj = t.namespace.clone();
        set_meta(&mut obj, &name, None, uid(1, n));
        obj["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": name});
        kvs.push((format!("/registry/namespaces/{name}"), serde_json::to_vec(&obj)?));
    }
    for s in 0..shape.services {
        let (ns, name) = (shape.namespace(s), shape.service(s));
        let mut obj = t.service.clone();
        let id = uid(2, s);
        set_meta(&mut obj, &name, Some(&ns), id.clone());
        // Distinct, above the addresses the server hands out first (kubernetes = .1).
        let ip = ipv4([10, 100, 0, 0], s);
        obj["spec"]["selector"] = json!({"app": name});
        obj["spec"]["clusterIP"] = ip.clone().into();
        obj["spec"]["clusterIPs"] = json!([ip]);
        kvs.push((format!("/registry/services/{ns}/{name}"), serde_json::to_vec(&obj)?));
        kvs.push((format!("/allocations/clusterips/{ip}"), serde_json::to_vec(&json!({"namespace": ns, "name": name, "uid": id}))?));
    }
    for p in 0..shape.pods() {
        let (ns, svc, name) = shape.pod(p);
        let mut obj = t.pod.clone();
        set_meta(&mut obj, &name, Some(&ns), uid(3, p));
        obj["metadata"]["labels"] = json!({"app": svc});
        obj["spec"]["nodeName"] = format!("node-{}", p % 100).into();
        let ip = ipv4([10, 128, 0, 1], p);
        obj["status"]["podIP"] = ip.clone().into();
        obj["status"]["podIPs"] = json!([{"ip": ip}]);
        kvs.push((format!("/registry/pods/{ns}/{name}"), serde_json::to_vec(&obj)?));
    }
    let n = kvs.len();
    let store = RedbStore::open(path).map_err(|e| anyhow!("opening {}: {e}", path.display()))?;
    // Many creates in flight: the store's writer commits what is queued in one transaction.
    futures::stream::iter(kvs)
        .map(|(k, v)| {
            let store = &store;
            async move { store.create(&k, v).await.map_err(|e| anyhow!("create {k}: {e}")) }
        })
        .buffer_unordered(4096)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    // Dropping the store joins its writer and closes the file before svcnet opens it.
    drop(store);
    Ok(n)
}

// === a cluster ===

struct Cluster {
    shape: Shape,
    dir: PathBuf,
    preload_time: Duration,
    store_bytes_preloaded: u64,
    server: Option<SvcnetProcess>,
    client: Option<kube::Client>,
    shared: Arc<Shared>,
    /// From spawning `svcnet up` to its printing the address.
    serving: Duration,
    /// From spawning to every Service's slices holding all its pods ready.
    synced: Duration,
    /// From spawning to the server's CPU use going quiet after that.
    quiet: Duration,
    cpu_sync: f64,
    rss_synced_kib: u64,
    hwm_synced_kib: u64,
    store_bytes_synced: u64,
    cpu_before_flips: f64,
    cpu_after_flips: f64,
    rss_after_flips: u64,
    ready: Vec<bool>,
    flips: Vec<Flip>,
    /// The watch tasks, stopped before the server is.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One flip's timings, from sending the patch.
struct Flip {
    ack: Duration,
    pod_event: Option<Duration>,
    endpoints: Option<Duration>,
    slice: Duration,
}

/// What the watch tasks share with the flipper.
#[derive(Default)]
struct Shared {
    /// Services whose slices hold all their pods as ready endpoints.
    complete: Mutex<usize>,
    pending: Mutex<Option<Pending>>,
}

/// The flip being timed.
struct Pending {
    namespace: String,
    service: String,
    pod: String,
    ready: bool,
    pod_event: Option<oneshot::Sender<Instant>>,
    endpoints: Option<oneshot::Sender<Instant>>,
    slice: Option<oneshot::Sender<Instant>>,
}

impl Cluster {
    fn new(shape: Shape, dir: PathBuf, preload_time: Duration, store_bytes: u64) -> Self {
        Cluster {
            shape,
            dir,
            preload_time,
            store_bytes_preloaded: store_bytes,
            server: None,
            client: None,
            shared: Arc::default(),
            serving: Duration::ZERO,
            synced: Duration::ZERO,
            quiet: Duration::ZERO,
            cpu_sync: 0.0,
            rss_synced_kib: 0,
            hwm_synced_kib: 0,
            store_bytes_synced: 0,
            cpu_before_flips: 0.0,
            cpu_after_flips: 0.0,
            rss_after_flips: 0,
            ready: Vec::new(),
            flips: Vec::new(),
            tasks: Vec::new(),
        }
    }

    fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(|s| s.pid)
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Starts `svcnet up` on the pre-loaded store and waits for the initial sync.
    async fn start(&mut self, args: &EndpointsArgs) -> Result<()> {
        let label = self.shape.label();
        let t0 = Instant::now();
        let server = SvcnetProcess::start(&args.svcnet, &self.dir).await?;
        self.serving = t0.elapsed();
        eprintln!("{label}: serving on https://{} after {:.1} s", server.addr, self.serving.as_secs_f64());
        let client = client_for(&server).await?;
        self.server = Some(server);
        self.tasks.push(tokio::spawn(watch_slices(client.clone(), self.shared.clone(), self.shape.pods_per_service)));

        let deadline = t0 + Duration::from_secs(args.sync_timeout_secs);
        let mut last_report = Instant::now();
        loop {
            let complete = *self.shared.complete.lock().unwrap();
            if complete >= self.shape.services {
                break;
            }
            if Instant::now() > deadline {
                bail!("{label}: only {complete} of {} Services synced after {} s", self.shape.services, args.sync_timeout_secs);
            }
            if last_report.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "{label}: {complete} of {} Services have their slices ({:.0} s; svcnet CPU {:.0} s, RSS {})",
                    self.shape.services,
                    t0.elapsed().as_secs_f64(),
                    self.cpu_seconds(),
                    mib(proc_status_kib(self.pid(), "VmRSS") * 1024)
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.synced = t0.elapsed();
        eprintln!("{label}: all {} Services' slices ready after {:.1} s", self.shape.services, self.synced.as_secs_f64());

        // The controllers then see their own writes come back (every Endpoints and slice they
        // wrote enqueues its Service again); wait for the server to go quiet (under 5% of a core
        // over a second), or the flips would queue behind that backlog.
        let mut cpu = self.cpu_seconds();
        let mut last_report = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.cpu_seconds();
            if now - cpu < 0.05 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{label}: svcnet still busy {} s after start", args.sync_timeout_secs);
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                eprintln!("{label}: waiting for svcnet to go quiet ({:.0} s; CPU {now:.0} s)", t0.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
            cpu = now;
        }
        self.quiet = t0.elapsed() - Duration::from_secs(1);
        self.cpu_sync = self.cpu_seconds();
        self.rss_synced_kib = proc_status_kib(self.pid(), "VmRSS");
        self.hwm_synced_kib = proc_status_kib(self.pid(), "VmHWM");
        self.store_bytes_synced = file_size(&self.dir.join("store.redb"));
        eprintln!(
            "{label}: quiet after {:.1} s; svcnet CPU {:.1} s, RSS {} (peak {}), store {}",
            self.quiet.as_secs_f64(),
            self.cpu_sync,
            mib(self.rss_synced_kib * 1024),
            mib(self.hwm_synced_kib * 1024),
            mib(self.store_bytes_synced)
        );

        // Watches from now on: only the flips change pods and Endpoints.
        let pods: Api<Pod> = Api::all(client.clone());
        let rv = pods.list_metadata(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default();
        self.tasks.push(tokio::spawn(watch_from(pods, rv.clone(), self.shared.clone(), on_pod)));
        self.tasks.push(tokio::spawn(watch_from(Api::<Endpoints>::all(client.clone()), rv, self.shared.clone(), on_endpoints)));
        self.client = Some(client);
        Ok(())
    }

    /// Flips pod number `pod` to `ready` and times it.
    async fn flip(&self, pod: usize, ready: bool) -> Result<Flip> {
        let (namespace, service, name) = self.shape.pod(pod);
        let (pod_tx, pod_rx) = oneshot::channel();
        let (ep_tx, ep_rx) = oneshot::channel();
        let (slice_tx, slice_rx) = oneshot::channel();
        *self.shared.pending.lock().unwrap() = Some(Pending {
            namespace: namespace.clone(),
            service,
            pod: name.clone(),
            ready,
            pod_event: Some(pod_tx),
            endpoints: Some(ep_tx),
            slice: Some(slice_tx),
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone().expect("started"), &namespace);
        let patch = json!({"status": {"conditions": conditions(ready, &now_rfc3339())}});
        let sent = Instant::now();
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let ack = sent.elapsed();
        let slice = tokio::time::timeout(Duration::from_secs(300), slice_rx)
            .await
            .map_err(|_| anyhow!("{namespace}/{name}: the EndpointSlice did not show ready={ready} in 300 s"))??;
        // These come before the slice; do not wait long for them.
        let soon = |rx: oneshot::Receiver<Instant>| async move {
            tokio::time::timeout(Duration::from_secs(1), rx).await.ok().and_then(Result::ok).map(|t| t.saturating_duration_since(sent))
        };
        let (pod_event, endpoints) = (soon(pod_rx).await, soon(ep_rx).await);
        *self.shared.pending.lock().unwrap() = None;
        Ok(Flip { ack, pod_event, endpoints, slice: slice.saturating_duration_since(sent) })
    }
}

async fn client_for(server: &SvcnetProcess) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn now_rfc3339() -> String {
    // Seconds since the epoch as a date, without a date library: the value only has to change.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// === watches ===

/// Follows the managed EndpointSlices: counts the Services whose slices hold all their pods as
/// ready endpoints, and fires the pending flip's slice timer.
async fn watch_slices(client: kube::Client, shared: Arc<Shared>, pods_per_service: usize) {
    let api: Api<EndpointSlice> = Api::all(client);
    let stream = watcher(api, watcher::Config::default().labels(MANAGED_BY_SELECTOR));
    let mut stream = std::pin::pin!(stream);
    // Per slice: its Service and ready endpoints; per Service: ready endpoints over its slices.
    let mut slices: HashMap<(String, String), (String, usize)> = HashMap::new();
    let mut per_service: HashMap<String, usize> = HashMap::new();
    let mut complete = 0usize;
    while let Some(event) = stream.next().await {
        let now = Instant::now();
        let (slice, deleted) = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => (s, false),
            Ok(watcher::Event::Delete(s)) => (s, true),
            Ok(watcher::Event::Init) => {
                slices.clear();
                per_service.clear();
                complete = 0;
                *shared.complete.lock().unwrap() = 0;
                continue;
            }
            Ok(watcher::Event::InitDone) => continue,
            Err(e) => {
                eprintln!("slice watch: {e} (retrying)");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let ns = slice.namespace().unwrap_or_default();
        let Some(svc) = slice.labels().get(SERVICE_NAME_LABEL).cloned() else {
            continue;
        };
        if !ns.starts_with(NS_PREFIX) {
            continue;
        }
        let ready = if deleted { 0 } else { slice.endpoints.iter().filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)).count() };
        let service_key = format!("{ns}/{svc}");
        let before = slices.insert((ns.clone(), slice.name_any()), (service_key.clone(), ready)).map(|(_, n)| n).unwrap_or(0);
        let total = per_service.entry(service_key).or_insert(0);
        let was_complete = *total == pods_per_service;
        *total = *total + ready - before;
        let is_complete = *total == pods_per_service;
        if was_complete != is_complete {
            if is_complete {
                complete += 1;
            } else {
                complete -= 1;
            }
            *shared.complete.lock().unwrap() = complete;
        }
        if deleted {
            continue;
        }
        let mut pending = shared.pending.lock().unwrap();
        if let Some(p) = pending.as_mut().filter(|p| p.namespace == ns && p.service == svc && p.slice.is_some()) {
            let shows = slice.endpoints.iter().any(|e| {
                e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(p.pod.as_str()) && e.conditions.as_ref().and_then(|c| c.ready) == Some(p.ready)
            });
            if shows {
                let _ = p.slice.take().expect("checked").send(now);
            }
        }
    }
}

fn on_pod(pod: &Pod, now: Instant, shared: &Shared) {
    let mut pending = shared.pending.lock().unwrap();
    let Some(p) = pending.as_mut() else { return };
    if pod.metadata.namespace.as_deref() != Some(&p.namespace) || pod.metadata.name.as_deref() != Some(&p.pod) {
        return;
    }
    let ready = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready")).map(|c| c.status == "True");
    if ready == Some(p.ready)
        && let Some(tx) = p.pod_event.take()
    {
        let _ = tx.send(now);
    }
}

fn on_endpoints(ep: &Endpoints, now: Instant, shared: &Shared) {
    let mut pending = shared.pending.lock().unwrap();
    let Some(p) = pending.as_mut() else { return };
    if ep.metadata.namespace.as_deref() != Some(&p.namespace) || ep.metadata.name.as_deref() != Some(&p.service) {
        return;
    }
    let is_pod = |a: &k8s_openapi::api::core::v1::EndpointAddress| a.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(p.pod.as_str());
    let subsets = ep.subsets.iter().flatten();
    let listed = if p.ready {
        subsets.flat_map(|s| s.addresses.iter().flatten()).any(is_pod)
    } else {
        subsets.flat_map(|s| s.not_ready_addresses.iter().flatten()).any(is_pod)
    };
    if listed && let Some(tx) = p.endpoints.take() {
        let _ = tx.send(now);
    }
}

/// A plain watch from `rv`, resumed from the last resourceVersion seen when it ends.
async fn watch_from<K>(api: Api<K>, mut rv: String, shared: Arc<Shared>, on: fn(&K, Instant, &Shared))
where
    K: Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    loop {
        let stream = match api.watch(&WatchParams::default().timeout(290), &rv).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("watch {}: {e} (retrying)", std::any::type_name::<K>());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            match event {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                    rv = o.meta().resource_version.clone().unwrap_or(rv);
                    on(&o, now, &shared);
                }
                Ok(WatchEvent::Deleted(o)) => rv = o.meta().resource_version.clone().unwrap_or(rv),
                Ok(WatchEvent::Bookmark(b)) => rv = b.metadata.resource_version,
                Ok(WatchEvent::Error(e)) => {
                    eprintln!("watch {}: {e:?}", std::any::type_name::<K>());
                    break;
                }
                Err(e) => {
                    eprintln!("watch {}: {e}", std::any::type_name::<K>());
                    break;
                }
            }
        }
    }
}

// === /proc ===

/// A `kB` field of `/proc/<pid>/status` (0 when unreadable).
fn proc_status_kib(pid: Option<u32>, field: &str) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::trim).map(|v| v.trim_end_matches(" kB").trim().parse().ok())).flatten()
        })
        .unwrap_or(0)
}

/// User plus system CPU time of the process, in seconds (assuming the usual 100 clock ticks a
/// second).
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

// === output ===

fn print_table(args: &EndpointsArgs, large: &Cluster, small: &Cluster, cores: usize, parent: &Path) {
    println!("## Pod Ready flip to EndpointSlice: {} vs {} (Services/pods)\n", large.shape.label(), small.shape.label());
    println!("| metric | {} | {} (baseline) | ratio |", large.shape.label(), small.shape.label());
    println!("|---|---:|---:|---:|");
    let row = |metric: &str, l: f64, s: f64, fmt: &dyn Fn(f64) -> String| {
        let ratio = if s > 0.0 { format!("{:.2}x", l / s) } else { "n/a".into() };
        println!("| {metric} | {} | {} | {ratio} |", fmt(l), fmt(s));
    };
    let secs = |v: f64| format!("{v:.1} s");
    let msf = |v: f64| format!("{v:.2} ms");
    let mibf = |v: f64| format!("{v:.0} MiB");
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    row("store file after pre-load", mb(large.store_bytes_preloaded), mb(small.store_bytes_preloaded), &mibf);
    row("pre-load (bench writes straight into redb)", large.preload_time.as_secs_f64(), small.preload_time.as_secs_f64(), &secs);
    row("start: spawn to API serving", large.serving.as_secs_f64(), small.serving.as_secs_f64(), &secs);
    row("initial sync: spawn to every Service's slices ready", large.synced.as_secs_f64(), small.synced.as_secs_f64(), &secs);
    row("spawn to svcnet idle after sync", large.quiet.as_secs_f64(), small.quiet.as_secs_f64(), &secs);
    row("svcnet CPU time, spawn to idle", large.cpu_sync, small.cpu_sync, &secs);
    row("svcnet RSS after sync (VmRSS)", large.rss_synced_kib as f64 / 1024.0, small.rss_synced_kib as f64 / 1024.0, &mibf);
    row("svcnet peak RSS during sync (VmHWM)", large.hwm_synced_kib as f64 / 1024.0, small.hwm_synced_kib as f64 / 1024.0, &mibf);
    row("store file after sync", mb(large.store_bytes_synced), mb(small.store_bytes_synced), &mibf);
    let dist = |c: &Cluster, f: &dyn Fn(&Flip) -> Option<Duration>| {
        let mut v: Vec<Duration> = c.flips.iter().filter_map(f).collect();
        v.sort();
        v
    };
    let ms_of = |d: Duration| d.as_secs_f64() * 1e3;
    type Step<'a> = (&'a str, &'a dyn Fn(&Flip) -> Option<Duration>);
    let steps: [Step; 4] = [
        ("PATCH pods/status: send to response", &|f| Some(f.ack)),
        ("send to the pod's watch event", &|f| f.pod_event),
        ("send to the Endpoints update", &|f| f.endpoints),
        ("**send to the EndpointSlice showing it**", &|f| Some(f.slice)),
    ];
    for (name, f) in steps {
        let (l, s) = (dist(large, f), dist(small, f));
        for p in [50.0, 99.0] {
            row(&format!("flip: {name}, p{p:.0}"), ms_of(percentile(&l, p)), ms_of(percentile(&s, p)), &msf);
        }
        if name.starts_with("**") {
            row(&format!("flip: {name}, max"), ms_of(percentile(&l, 100.0)), ms_of(percentile(&s, 100.0)), &msf);
        }
    }
    let per_flip = |c: &Cluster| (c.cpu_after_flips - c.cpu_before_flips) * 1e3 / c.flips.len().max(1) as f64;
    row("svcnet CPU per flip (all its follow-up work)", per_flip(large), per_flip(small), &msf);
    row("svcnet RSS after the flips", large.rss_after_flips as f64 / 1024.0, small.rss_after_flips as f64 / 1024.0, &mibf);
    println!(
        "\n{} flips per cluster, interleaved, {} ms apart; {} pods per Service, {} namespaces; slice p50 {} / p99 {} at {}; ratio = {} / baseline; {} cores; data dirs in {}.",
        args.flips,
        args.gap_ms,
        args.pods_per_service,
        args.namespaces,
        ms(percentile(&dist(large, &|f| Some(f.slice)), 50.0)),
        ms(percentile(&dist(large, &|f| Some(f.slice)), 99.0)),
        large.shape.label(),
        large.shape.label(),
        cores,
        parent.display()
    );
}
