//! `svcnet-bench`: how fast the API server takes writes and fans out watch events, with the
//! same work done straight into the store (and, when `etcd` is installed, into etcd, which is
//! what kube-apiserver stores in) in the same run, on the same disk, so the numbers come with a
//! baseline instead of standing alone.
//!
//! It measures, for each backend:
//!
//! - ConfigMap creates per second at each `--concurrency` level, and the p50/p99 latency of one
//!   create (HTTPS request to response, or `Storage::create` call to return, or etcd txn);
//! - with `--watchers` watches open on a namespace (prefix), the time from a create's
//!   acknowledgement to each watcher receiving its event (p50/p99 over all watchers x events;
//!   an event that beats the response counts as zero, and how many did is reported), the same
//!   from the create's send (commit plus delivery, never negative), and the events per second
//!   delivered to all watchers together.
//!
//! It is a benchmark, not a test: nothing here asserts on timings. Every byte goes to loopback.
//! Run it with `bench/apiserver.sh`.
//!
//! The `endpoints` subcommand ([`endpoints`]) is a second benchmark: how long a pod's Ready flip
//! takes to reach its EndpointSlice with 10,000 Services and 100,000 pods in the store, next to a
//! small cluster in the same run. Run it with `bench/endpoints.sh`.

mod dns;
mod endpoints;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use futures::{StreamExt, stream::BoxStream};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use svcnet_store::{EventKind, RedbStore, Storage};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
#[command(
    name = "svcnet-bench",
    about = "Creates/s and watch latency of the svcnet API server, against the bare store and etcd \
             (no subcommand), or pod-readiness-to-EndpointSlice latency at scale (`endpoints`)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    apiserver: Args,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Time from a pod's Ready condition changing to its EndpointSlice showing it, with
    /// 10,000 Services and 100,000 pods pre-loaded into the store, next to a small cluster.
    Endpoints(endpoints::EndpointsArgs),
    /// Cluster DNS QPS, latency and memory at 10,000 Services / 100,000 pods next to Knot DNS.
    Dns(dns::DnsArgs),
}

/// The API server benchmark (the default mode).
#[derive(clap::Args)]
struct Args {
    /// The `svcnet` binary to benchmark (a release build).
    #[arg(long, default_value = "target/release/svcnet")]
    svcnet: PathBuf,
    /// Creates in each measured create run.
    #[arg(long, default_value_t = 2000)]
    creates: usize,
    /// Concurrency levels for the create runs (comma-separated): this many clients, each
    /// sending its next create when the previous one is acknowledged.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Rounds: every backend does every run once per round, interleaved; the table shows the
    /// median and the range.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent watches open during the watch run.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Creates (hence events per watcher) in the watch run.
    #[arg(long, default_value_t = 1000)]
    watch_events: usize,
    /// Concurrent writers in the watch run.
    #[arg(long, default_value_t = 8)]
    watch_concurrency: usize,
    /// Size of each ConfigMap's one data value, in bytes.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// The etcd binary for the second baseline; that baseline is skipped when it is not found.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Skip the etcd baseline.
    #[arg(long)]
    no_etcd: bool,
    /// Where to put the data dirs (all backends use the same one, so the same disk); a fresh
    /// temporary directory under it is removed at the end. Default: the system temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Mode::Dns(args)) = cli.mode {
        return dns::main(args);
    }
    if let Some(Mode::Endpoints(args)) = cli.mode {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return rt.block_on(endpoints::run(args));
    }
    let args = cli.apiserver;
    ensure!(!args.concurrency.is_empty() && args.concurrency.iter().all(|&c| c > 0), "--concurrency needs levels above 0");
    ensure!(args.rounds > 0 && args.creates > 0 && args.watch_events > 0 && args.watch_concurrency > 0, "counts must be above 0");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

/// Results of one backend: one entry per round.
#[derive(Default)]
struct Results {
    /// Per concurrency level (in `--concurrency` order), per round.
    creates: Vec<Vec<CreateRun>>,
    watch: Vec<WatchRun>,
}

struct CreateRun {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

struct WatchRun {
    creates_per_sec: f64,
    events_per_sec: f64,
    /// From the create's acknowledgement (response read) to the watcher's receipt; an event
    /// that arrives first counts as zero.
    ack_p50: Duration,
    ack_p99: Duration,
    /// From sending the create to the watcher's receipt: commit plus delivery, never negative.
    send_p50: Duration,
    send_p99: Duration,
    /// Events that reached a watcher before the writer had read the create's response.
    before_ack: usize,
    events: usize,
}

async fn run(args: Args) -> Result<()> {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new().prefix("svcnet-bench-").tempdir_in(&parent).with_context(|| format!("temp dir in {}", parent.display()))?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let value = "x".repeat(args.value_bytes);
    eprintln!(
        "svcnet-bench: {} rounds of {} creates at concurrency {:?} and {} watchers x {} events ({} writers); {}-byte values; data under {}; {} cores",
        args.rounds,
        args.creates,
        args.concurrency,
        args.watchers,
        args.watch_events,
        args.watch_concurrency,
        args.value_bytes,
        work.path().display(),
        cores
    );

    // All backends run at once and the runs are interleaved, round by round, so that a change
    // in the machine's load or the disk's speed during the run hits them all alike.
    let mut backends: Vec<(&str, Backend)> = Vec::new();

    // svcnet over HTTPS.
    let svcnet_server = SvcnetProcess::start(&args.svcnet, &work.path().join("svcnet")).await?;
    eprintln!("svcnet: serving on https://{}", svcnet_server.addr);
    let kubeconfig = kube::config::Kubeconfig::read_from(&svcnet_server.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in args.concurrency.iter().map(|c| group_for(*c)).chain(["watch".to_string()]) {
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("bench-{ns}")}}))?;
        namespaces.create(&PostParams::default(), &ns).await.context("creating a namespace")?;
    }
    backends.push(("svcnet", Backend::Svcnet { client, value: value.clone() }));

    // The bare store, in this process: what the HTTP, TLS, JSON and validation layers cost.
    let dir = work.path().join("redb");
    std::fs::create_dir_all(&dir)?;
    let store = RedbStore::open(&dir.join("store.redb")).map_err(|e| anyhow!("opening redb: {e}"))?;
    backends.push(("redb", Backend::Redb { store, value: value.clone() }));

    // etcd, kube-apiserver's store, through its JSON gateway (no gRPC client to build here).
    let etcd_server = if args.no_etcd {
        eprintln!("etcd: skipped (--no-etcd)");
        None
    } else if !is_on_path(&args.etcd) {
        eprintln!("etcd: skipped ({} not found)", args.etcd.display());
        None
    } else {
        let server = EtcdProcess::start(&args.etcd, &work.path().join("etcd")).await?;
        eprintln!("etcd: serving on http://{}", server.addr);
        backends.push(("etcd", Backend::Etcd { addr: server.addr, value: value.clone(), conns: tokio::sync::Mutex::new(Vec::new()) }));
        Some(server)
    };

    let mut results: Vec<Results> =
        backends.iter().map(|_| Results { creates: args.concurrency.iter().map(|_| Vec::new()).collect(), watch: Vec::new() }).collect();
    // Warm up: open the connections (TLS handshakes) and fault in the code paths.
    for &c in &args.concurrency {
        for (label, backend) in &backends {
            run_creates(backend, &group_for(c), "warm", c * 4, c).await.with_context(|| format!("{label}: warm-up at concurrency {c}"))?;
        }
    }
    for round in 0..args.rounds {
        // Rotate the order too, so that no backend always runs first.
        let order: Vec<usize> = (0..backends.len()).map(|i| (i + round) % backends.len()).collect();
        for (ci, &c) in args.concurrency.iter().enumerate() {
            for &b in &order {
                let (label, backend) = &backends[b];
                let run = run_creates(backend, &group_for(c), &format!("r{round}-cm"), args.creates, c)
                    .await
                    .with_context(|| format!("{label}: creates at concurrency {c}"))?;
                eprintln!("round {round}: {label}: concurrency {c}: {:.0} creates/s, p50 {}, p99 {}", run.per_sec, ms(run.p50), ms(run.p99));
                results[b].creates[ci].push(run);
            }
        }
        if args.watchers == 0 {
            continue;
        }
        for &b in &order {
            let (label, backend) = &backends[b];
            if matches!(backend, Backend::Etcd { .. }) {
                continue;
            }
            let run =
                run_watch(backend, round, args.watchers, args.watch_events, args.watch_concurrency).await.with_context(|| format!("{label}: watch run"))?;
            eprintln!(
                "round {round}: {label}: {} watchers: {:.0} events/s delivered; ack-to-event p50 {}, p99 {} ({} of {} events before the ack); send-to-event p50 {}, p99 {}; {:.0} creates/s",
                args.watchers,
                run.events_per_sec,
                ms(run.ack_p50),
                ms(run.ack_p99),
                run.before_ack,
                run.events,
                ms(run.send_p50),
                ms(run.send_p99),
                run.creates_per_sec
            );
            results[b].watch.push(run);
        }
    }
    drop(svcnet_server);
    drop(etcd_server);

    println!("## svcnet vs redb in-process (same writes straight into svcnet_store::RedbStore)\n");
    print_table(&args, &results[0], &results[1]);
    if let Some(etcd) = results.get(2) {
        println!("\n## svcnet vs etcd {} (txn create via the JSON gateway on loopback; no watch run)\n", etcd_version(&args.etcd));
        print_table(&args, &results[0], etcd);
    } else {
        println!("\n(etcd baseline skipped)");
    }
    println!(
        "\nMedian of {} interleaved rounds, (min-max) when more than one; ratio = svcnet / baseline of the medians. \
         {} creates per run, {}-byte values; {} watchers x {} events with {} writers; {} cores; data dirs in {}.",
        args.rounds,
        args.creates,
        args.value_bytes,
        args.watchers,
        args.watch_events,
        args.watch_concurrency,
        cores,
        parent.display()
    );
    Ok(())
}

fn group_for(concurrency: usize) -> String {
    format!("c{concurrency}")
}

/// One HTTP/1.1 connection to etcd's gateway, used by one writer at a time.
type EtcdConn = Arc<tokio::sync::Mutex<SendRequest<Full<Bytes>>>>;

/// Where the writes go.
enum Backend {
    Svcnet {
        client: kube::Client,
        value: String,
    },
    Redb {
        store: Arc<RedbStore>,
        value: String,
    },
    Etcd {
        addr: SocketAddr,
        value: String,
        /// One HTTP/1.1 connection per concurrent writer (index = worker).
        conns: tokio::sync::Mutex<Vec<EtcdConn>>,
    },
}

/// The object as a store holds it (with the fields the API server fills in), for the baselines.
fn stored_json(group: &str, name: &str, value: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": format!("bench-{group}"),
            "uid": "0b4c1d9e-7d2a-4e51-9a3f-6f0a8c2b1e77",
            "creationTimestamp": "2025-01-01T00:00:00Z",
        },
        "data": {"value": value},
    }))
    .expect("json")
}

fn key(group: &str, name: &str) -> String {
    format!("/registry/configmaps/bench-{group}/{name}")
}

impl Backend {
    async fn create(&self, worker: usize, group: &str, name: &str) -> Result<()> {
        match self {
            Backend::Svcnet { client, value } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &format!("bench-{group}"));
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"value": value}}))?;
                api.create(&PostParams::default(), &cm).await?;
            }
            Backend::Redb { store, value } => {
                store.create(&key(group, name), stored_json(group, name, value)).await.map_err(|e| anyhow!("redb create: {e}"))?;
            }
            Backend::Etcd { addr, value, conns } => {
                let conn = {
                    let mut conns = conns.lock().await;
                    while conns.len() <= worker {
                        conns.push(Arc::new(tokio::sync::Mutex::new(http_connect(*addr).await?)));
                    }
                    conns[worker].clone()
                };
                let b64 = base64::engine::general_purpose::STANDARD;
                let k = b64.encode(key(group, name));
                // Create = put only if the key has never been created (as kube-apiserver does).
                let body = serde_json::json!({
                    "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                    "success": [{"request_put": {"key": k, "value": b64.encode(stored_json(group, name, value))}}],
                });
                let resp = http_post(&mut *conn.lock().await, *addr, "/v3/kv/txn", serde_json::to_vec(&body)?).await?;
                let resp: serde_json::Value = serde_json::from_slice(&resp)?;
                ensure!(resp["succeeded"] == serde_json::Value::Bool(true), "etcd txn failed: {resp}");
            }
        }
        Ok(())
    }

    /// `n` watches on `group`'s namespace (prefix) from the current revision, each yielding the
    /// names of created objects.
    async fn watch(&self, group: &str, n: usize) -> Result<Vec<BoxStream<'static, Result<String>>>> {
        let mut streams = Vec::with_capacity(n);
        match self {
            Backend::Svcnet { client, .. } => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &format!("bench-{group}"));
                let list = api.list(&ListParams::default().limit(1)).await?;
                let rv = list.metadata.resource_version.unwrap_or_default();
                for _ in 0..n {
                    let stream = api.watch(&WatchParams::default(), &rv).await?;
                    streams.push(
                        stream
                            .filter_map(|ev| async move {
                                match ev {
                                    Ok(WatchEvent::Added(cm)) => Some(Ok(cm.metadata.name.unwrap_or_default())),
                                    Ok(WatchEvent::Error(e)) => Some(Err(anyhow!("watch error: {e:?}"))),
                                    Ok(_) => None,
                                    Err(e) => Some(Err(e.into())),
                                }
                            })
                            .boxed(),
                    );
                }
            }
            Backend::Redb { store, .. } => {
                let rev = store.current_revision().await.map_err(|e| anyhow!("{e}"))?;
                let prefix = format!("/registry/configmaps/bench-{group}/");
                for _ in 0..n {
                    let stream = store.watch(&prefix, rev).await.map_err(|e| anyhow!("redb watch: {e}"))?;
                    streams.push(
                        stream
                            .filter_map(|ev| async move {
                                match ev {
                                    Ok(ev) if ev.kind == EventKind::Created => Some(Ok(ev.kv.key.rsplit('/').next().unwrap_or_default().to_string())),
                                    Ok(_) => None,
                                    Err(e) => Some(Err(anyhow!("redb watch: {e}"))),
                                }
                            })
                            .boxed(),
                    );
                }
            }
            Backend::Etcd { .. } => bail!("no watch run against etcd"),
        }
        Ok(streams)
    }
}

/// `n` creates named `{prefix}-{i}` in `group`, from `concurrency` workers.
async fn run_creates(backend: &Backend, group: &str, prefix: &str, n: usize, concurrency: usize) -> Result<CreateRun> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let workers = (0..concurrency).map(|w| {
        let next = &next;
        async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t0 = Instant::now();
                backend.create(w, group, &format!("{prefix}-{i}")).await?;
                latencies.push(t0.elapsed());
            }
        }
    });
    // The workers run as concurrent futures on this task: the work is in the server (or the
    // store's writer thread), and this keeps the backend borrowed rather than shared.
    let results = futures::future::join_all(workers).await;
    let elapsed = start.elapsed();
    let mut latencies = Vec::with_capacity(n);
    for r in results {
        latencies.extend(r?);
    }
    latencies.sort();
    Ok(CreateRun { per_sec: n as f64 / elapsed.as_secs_f64(), p50: percentile(&latencies, 50.0), p99: percentile(&latencies, 99.0) })
}

/// Opens `watchers` watches, then creates `events` objects from `concurrency` writers, and
/// measures the time from each create's acknowledgement to each watcher's receipt.
async fn run_watch(backend: &Backend, round: usize, watchers: usize, events: usize, concurrency: usize) -> Result<WatchRun> {
    let group = "watch";
    let prefix = format!("r{round}-ev-");
    let streams = backend.watch(group, watchers).await?;
    // Each watcher on its own task, as a real client would be, recording when each event arrives.
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let prefix = prefix.clone();
            tokio::spawn(async move {
                let mut received: Vec<Option<Instant>> = vec![None; events];
                let mut count = 0;
                while count < events {
                    let name = tokio::time::timeout(Duration::from_secs(120), stream.next())
                        .await
                        .map_err(|_| anyhow!("watcher saw {count} of {events} events in 120s"))?
                        .ok_or_else(|| anyhow!("watch ended after {count} of {events} events"))??;
                    let now = Instant::now();
                    let Some(i) = name.strip_prefix(prefix.as_str()).and_then(|i| i.parse::<usize>().ok()) else {
                        continue;
                    };
                    if i < events && received[i].is_none() {
                        received[i] = Some(now);
                        count += 1;
                    }
                }
                Ok::<_, anyhow::Error>(received)
            })
        })
        .collect();

    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let writers = (0..concurrency).map(|w| {
        let (next, prefix) = (&next, &prefix);
        async move {
            let mut acks = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return Ok::<_, anyhow::Error>(acks);
                }
                let sent = Instant::now();
                backend.create(w, group, &format!("{prefix}{i}")).await?;
                acks.push((i, sent, Instant::now()));
            }
        }
    });
    let mut sent = vec![start; events];
    let mut acked = vec![start; events];
    for r in futures::future::join_all(writers).await {
        for (i, s, a) in r? {
            sent[i] = s;
            acked[i] = a;
        }
    }
    let write_time = start.elapsed();

    let mut latencies = Vec::with_capacity(watchers * events);
    let mut from_send = Vec::with_capacity(watchers * events);
    let mut before_ack = 0;
    let mut last = start;
    for task in tasks {
        let received = task.await??;
        for (i, t) in received.into_iter().enumerate() {
            let t = t.expect("counted");
            last = last.max(t);
            from_send.push(t.saturating_duration_since(sent[i]));
            match t.checked_duration_since(acked[i]) {
                Some(d) => latencies.push(d),
                None => {
                    // Delivered before the writer had parsed the response: counts as zero.
                    before_ack += 1;
                    latencies.push(Duration::ZERO);
                }
            }
        }
    }
    latencies.sort();
    from_send.sort();
    let total = latencies.len();
    Ok(WatchRun {
        creates_per_sec: events as f64 / write_time.as_secs_f64(),
        events_per_sec: total as f64 / last.duration_since(start).as_secs_f64(),
        ack_p50: percentile(&latencies, 50.0),
        ack_p99: percentile(&latencies, 99.0),
        send_p50: percentile(&from_send, 50.0),
        send_p99: percentile(&from_send, 99.0),
        before_ack,
        events: total,
    })
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The side-by-side table, as Markdown: median (min-max) over the rounds; ratio = svcnet /
/// baseline of the medians.
fn print_table(args: &Args, svcnet: &Results, baseline: &Results) {
    println!("| metric | svcnet | baseline | ratio |");
    println!("|---|---:|---:|---:|");
    enum Unit {
        Rate,
        Ms,
        Count,
    }
    let fmt = |v: f64, unit: &Unit| match unit {
        Unit::Rate | Unit::Count => format!("{v:.0}"),
        Unit::Ms => format!("{v:.2} ms"),
    };
    let cell = |xs: &[f64], unit: &Unit| -> Option<(f64, String)> {
        let mut xs = xs.to_vec();
        if xs.is_empty() {
            return None;
        }
        xs.sort_by(f64::total_cmp);
        let median = xs[(xs.len() - 1) / 2];
        let text = if xs.len() > 1 {
            let (lo, hi) = (xs[0], xs[xs.len() - 1]);
            match unit {
                Unit::Ms => format!("{median:.2} ms ({lo:.2}-{hi:.2})"),
                _ => format!("{} ({}-{})", fmt(median, unit), fmt(lo, unit), fmt(hi, unit)),
            }
        } else {
            fmt(median, unit)
        };
        Some((median, text))
    };
    let row = |metric: String, unit: Unit, s: Vec<f64>, b: Vec<f64>| {
        let (s, b) = (cell(&s, &unit), cell(&b, &unit));
        let ratio = match (&s, &b) {
            (Some((s, _)), Some((b, _))) if *b > 0.0 => format!("{:.2}x", s / b),
            _ => "n/a".to_string(),
        };
        let text = |v: Option<(f64, String)>| v.map(|(_, t)| t).unwrap_or_else(|| "n/a".to_string());
        println!("| {metric} | {} | {} | {ratio} |", text(s), text(b));
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (i, c) in args.concurrency.iter().enumerate() {
        let s = svcnet.creates.get(i).map(Vec::as_slice).unwrap_or_default();
        let b = baseline.creates.get(i).map(Vec::as_slice).unwrap_or_default();
        let get = |runs: &[CreateRun], f: &dyn Fn(&CreateRun) -> f64| runs.iter().map(f).collect::<Vec<_>>();
        row(format!("creates/s, concurrency {c}"), Unit::Rate, get(s, &|r| r.per_sec), get(b, &|r| r.per_sec));
        row(format!("create latency p50, concurrency {c}"), Unit::Ms, get(s, &|r| ms(r.p50)), get(b, &|r| ms(r.p50)));
        row(format!("create latency p99, concurrency {c}"), Unit::Ms, get(s, &|r| ms(r.p99)), get(b, &|r| ms(r.p99)));
    }
    let get = |runs: &[WatchRun], f: &dyn Fn(&WatchRun) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let (s, b) = (svcnet.watch.as_slice(), baseline.watch.as_slice());
    let w = args.watchers;
    row(format!("watch: events/s delivered ({w} watchers)"), Unit::Rate, get(s, &|r| r.events_per_sec), get(b, &|r| r.events_per_sec));
    row(format!("watch: ack-to-event latency p50 ({w} watchers)"), Unit::Ms, get(s, &|r| ms(r.ack_p50)), get(b, &|r| ms(r.ack_p50)));
    row(format!("watch: ack-to-event latency p99 ({w} watchers)"), Unit::Ms, get(s, &|r| ms(r.ack_p99)), get(b, &|r| ms(r.ack_p99)));
    let events = s.first().or(b.first()).map(|r| r.events).unwrap_or(0);
    row(format!("watch: events seen before their create's ack (of {events})"), Unit::Count, get(s, &|r| r.before_ack as f64), get(b, &|r| r.before_ack as f64));
    row(format!("watch: send-to-event latency p50 ({w} watchers)"), Unit::Ms, get(s, &|r| ms(r.send_p50)), get(b, &|r| ms(r.send_p50)));
    row(format!("watch: send-to-event latency p99 ({w} watchers)"), Unit::Ms, get(s, &|r| ms(r.send_p99)), get(b, &|r| ms(r.send_p99)));
    row(
        format!("watch: creates/s while watched ({} writers)", args.watch_concurrency),
        Unit::Rate,
        get(s, &|r| r.creates_per_sec),
        get(b, &|r| r.creates_per_sec),
    );
}

/// A running `svcnet up`, killed when dropped.
pub(crate) struct SvcnetProcess {
    _child: tokio::process::Child,
    pub(crate) addr: String,
    pub(crate) kubeconfig: PathBuf,
    /// The server's process id, for its memory and CPU time in `/proc`.
    pub(crate) pid: Option<u32>,
}

impl SvcnetProcess {
    pub(crate) async fn start(bin: &Path, data_dir: &Path) -> Result<Self> {
        ensure!(bin.is_file(), "{} not found: build it with `cargo build --release -p svcnet` or pass --svcnet", bin.display());
        std::fs::create_dir_all(data_dir)?;
        let mut child = tokio::process::Command::new(bin)
            // The control plane only: simulated nodes would bring up the host bridge (and its
            // DNS address), which two clusters of one run cannot share, and a kubelet for the
            // pre-loaded pods.
            .args(["up", "--nodes", "0", "--api-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut addr, mut kubeconfig) = (None, None);
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("svcnet API server listening on https://") {
                    addr = Some(a.trim().to_string());
                }
                if let Some(k) = line.strip_prefix("export KUBECONFIG=") {
                    kubeconfig = Some(PathBuf::from(k.trim()));
                    break;
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        // Generous: with a large store, startup reads every Service (the allocator's repair).
        tokio::time::timeout(Duration::from_secs(120), read).await.context("svcnet did not start in 120s")??;
        let (Some(addr), Some(kubeconfig)) = (addr, kubeconfig) else { bail!("svcnet exited without printing its address and kubeconfig") };
        // Keep draining stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let pid = child.id();
        Ok(SvcnetProcess { _child: child, addr, kubeconfig, pid })
    }
}

/// A single-member etcd on loopback, killed when dropped.
struct EtcdProcess {
    _child: tokio::process::Child,
    addr: SocketAddr,
}

impl EtcdProcess {
    async fn start(bin: &Path, data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let client = free_port()?;
        let peer = free_port()?;
        let log = std::fs::File::create(data_dir.join("etcd.log"))?;
        let child = tokio::process::Command::new(bin)
            .arg("--name=bench")
            .arg(format!("--data-dir={}", data_dir.join("data").display()))
            .arg(format!("--listen-client-urls=http://{client}"))
            .arg(format!("--advertise-client-urls=http://{client}"))
            .arg(format!("--listen-peer-urls=http://{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
            .arg(format!("--initial-cluster=bench=http://{peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut conn) = http_connect(client).await
                && let Ok(body) = http_post(&mut conn, client, "/v3/kv/range", br#"{"key":"AA=="}"#.to_vec()).await
                && body.starts_with(b"{")
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("etcd did not answer in 30s; see {}", data_dir.join("etcd.log").display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(EtcdProcess { _child: child, addr: client })
    }
}

fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn is_on_path(bin: &Path) -> bool {
    if bin.components().count() > 1 {
        return bin.is_file();
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(bin).is_file()))
}

fn etcd_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim_start_matches("etcd Version:").trim().to_string()))
        .unwrap_or_default()
}

async fn http_connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn http_post(conn: &mut SendRequest<Full<Bytes>>, addr: SocketAddr, path: &str, body: Vec<u8>) -> Result<Bytes> {
    conn.ready().await?;
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = conn.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    ensure!(status.is_success(), "POST {path}: {status}: {}", String::from_utf8_lossy(&body));
    Ok(body)
}
