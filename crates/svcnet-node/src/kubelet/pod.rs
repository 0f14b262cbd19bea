//! One worker per pod: sandbox, containers as processes, restarts, probes, termination, status.
//!
//! The worker owns everything of its pod; it learns of changes to the pod object through a
//! `watch` channel and of its processes and probes through an event channel, and it writes the
//! pod's status whenever what it would write changes.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition,
    PodIP, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use svcnet_netns::{NetNs, PodCommand, PodProcess, Sandbox, SandboxConfig, Signal};
use tokio::sync::{mpsc, watch};

use super::probe::{self, Outcome, ProbeKind};
use super::{PodEntry, Shared, dns, env, pod_dir};
use crate::runtime::ContainerHandle;

/// The waiting reason while a restart waits out its back-off.
const CRASH_LOOP: &str = "CrashLoopBackOff";

/// The first restart of a crashed container is immediate; the next ones wait 10 s, doubling up to
/// 5 minutes (upstream's CrashLoopBackOff); ten minutes of running resets it.
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The image whose containers run `svcnet agnhost` (upstream's test image).
const AGNHOST_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost";

/// The handle the pod watch keeps of a worker.
pub struct WorkerHandle {
    pod: watch::Sender<Pod>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    pub fn update(&self, pod: Pod) {
        let _ = self.pod.send(pod);
    }

    /// The pod object is gone: the worker stops its containers at once.
    pub fn deleted(&self) {
        self.pod.send_modify(|p| {
            if p.metadata.deletion_timestamp.is_none() {
                p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
            }
            p.metadata.deletion_grace_period_seconds = Some(0);
            p.metadata.annotations.get_or_insert_default().insert(GONE.into(), "true".into());
        });
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Marks a pod the API no longer has (internal, never written).
const GONE: &str = "svcnet.io/internal-gone";

/// Whether the pod has run to completion.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

pub fn spawn_worker(shared: Arc<Shared>, pod: Pod) -> WorkerHandle {
    let (tx, rx) = watch::channel(pod);
    let task = tokio::spawn(async move {
        let pod = rx.borrow().clone();
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let mut worker = Worker::new(shared, rx);
        if let Err(error) = worker.run().await {
            tracing::error!(pod = %key, error = format!("{error:#}"), "pod worker failed");
        }
        worker.cleanup().await;
    });
    WorkerHandle { pod: tx, task }
}

/// Kills processes a previous run of the agent left for pods that are gone, and removes their
/// directories.
pub async fn remove_stale(shared: &Shared, live: &HashSet<String>) {
    let Ok(dir) = std::fs::read_dir(shared.config.state_dir.join("pods")) else { return };
    for entry in dir.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if live.contains(&uid) {
            continue;
        }
        kill_recorded(&entry.path());
        let _ = shared.network.teardown(&uid).await;
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// A container process, recorded as `<pod dir>/<container>.pid` = "PID STARTTIME", so that a
/// restarted agent can kill what it left without hitting a recycled PID.
fn record_pid(dir: &Path, container: &str, pid: u32) {
    if let Some(start) = process_start_time(pid) {
        let _ = std::fs::write(dir.join(format!("{container}.pid")), format!("{pid} {start}"));
    }
}

fn kill_recorded(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "pid") {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            let mut words = text.split_whitespace();
            if let (Some(Ok(pid)), Some(start)) = (words.next().map(str::parse::<u32>), words.next())
                && process_start_time(pid).as_deref() == Some(start)
            {
                // Our own child of an earlier run: PID 1 of its namespace, so SIGKILL ends all of it.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

fn process_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

// === the worker ===

enum Event {
    Exited { index: usize, generation: u64, code: Option<i32>, signal: Option<i32>, at: jiff::Timestamp },
    Probe { index: usize, generation: u64, kind: ProbeKind, ok: bool, message: String },
}

#[derive(Clone, Debug)]
enum RunState {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: jiff::Timestamp },
    Terminated { exit_code: i32, signal: Option<i32>, reason: String, started_at: Option<jiff::Timestamp>, finished_at: jiff::Timestamp },
}

struct ContainerRun {
    spec: Container,
    init: bool,
    state: RunState,
    last_state: Option<RunState>,
    restart_count: i32,
    generation: u64,
    signal: Option<mpsc::UnboundedSender<Signal>>,
    pid: Option<u32>,
    started: bool,
    ready: bool,
    running_since: Option<Instant>,
    backoff: Duration,
    next_start: Option<Instant>,
    probes: Vec<tokio::task::JoinHandle<()>>,
    /// The reason to give when the current run ends because the kubelet killed it.
    kill_reason: Option<String>,
}

// === impl ContainerRun ===

impl ContainerRun {
    /// Whether a run of the container has ended (so its next start is a restart): it is
    /// terminated, or waiting out a CrashLoopBackOff (which already holds the ended run as the
    /// last state).
    fn after_a_run(&self) -> bool {
        match &self.state {
            RunState::Terminated { .. } => true,
            RunState::Waiting { reason, .. } => reason == CRASH_LOOP,
            RunState::Running { .. } => false,
        }
    }

    /// Counts a start: after a run it is a restart, and a run that just terminated becomes the
    /// last state.
    fn count_start(&mut self) {
        if self.after_a_run() {
            self.restart_count += 1;
        }
        if let RunState::Terminated { .. } = self.state {
            self.last_state = Some(self.state.clone());
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    pod_rx: watch::Receiver<Pod>,
    pod: Pod,
    uid: String,
    dir: PathBuf,
    netns: Option<NetNs>,
    sandbox: Option<Arc<Sandbox>>,
    pod_ip: Option<Ipv4Addr>,
    containers: Vec<ContainerRun>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    start_time: jiff::Timestamp,
    sandbox_error: Option<String>,
    last_status: Option<serde_json::Value>,
    terminal: bool,
}

impl Worker {
    fn new(shared: Arc<Shared>, pod_rx: watch::Receiver<Pod>) -> Worker {
        let pod = pod_rx.borrow().clone();
        let uid = pod.uid().unwrap_or_default();
        let dir = pod_dir(&shared.config, &uid);
        let spec = pod.spec.clone().unwrap_or_default();
        // Restart counts survive an agent restart through the pod's status.
        let previous = |name: &str| -> i32 {
            pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|cs| cs.iter().find(|c| c.name == name)).map_or(0, |c| c.restart_count)
        };
        let mut containers = Vec::new();
        for (init, c) in spec.init_containers.iter().flatten().map(|c| (true, c)).chain(spec.containers.iter().map(|c| (false, c))) {
            containers.push(ContainerRun {
                spec: c.clone(),
                init,
                state: RunState::Waiting { reason: "ContainerCreating".into(), message: None },
                last_state: None,
                restart_count: if init { 0 } else { previous(&c.name) },
                generation: 0,
                signal: None,
                pid: None,
                started: false,
                ready: false,
                running_since: None,
                backoff: Duration::ZERO,
                next_start: None,
                probes: Vec::new(),
                kill_reason: None,
            });
        }
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map_or_else(jiff::Timestamp::now, |t| t.0);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Worker {
            shared,
            pod_rx,
            pod,
            uid,
            dir,
            netns: None,
            sandbox: None,
            pod_ip: None,
            containers,
            events_tx,
            events_rx,
            start_time,
            sandbox_error: None,
            last_status: None,
            terminal: false,
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.pod.namespace().unwrap_or_default(), self.pod.name_any())
    }

    fn restart_policy(&self) -> &str {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        if self.pod.metadata.deletion_timestamp.is_none()
            && let Err(error) = self.create_sandbox().await
        {
            tracing::warn!(pod = %self.key(), error = format!("{error:#}"), "creating the pod sandbox");
            self.sandbox_error = Some(format!("{error:#}"));
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                return self.terminate().await;
            }
            if self.sandbox.is_some() && !self.terminal {
                self.start_due_containers().await;
            }
            self.sync_status().await;
            tokio::select! {
                changed = self.pod_rx.changed() => {
                    if changed.is_err() {
                        return self.terminate().await;
                    }
                    self.pod = self.pod_rx.borrow_and_update().clone();
                }
                Some(event) = self.events_rx.recv() => self.handle(event),
                _ = tick.tick() => {
                    if self.sandbox.is_none() && self.sandbox_error.is_some() && !self.terminal {
                        // Retry the sandbox (e.g. the address range was full).
                        if let Err(error) = self.create_sandbox().await {
                            self.sandbox_error = Some(format!("{error:#}"));
                        } else {
                            self.sandbox_error = None;
                        }
                    }
                }
            }
        }
    }

    async fn create_sandbox(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.dir.join("logs"))?;
        // Adopt by replacing: whatever a previous run of the agent left of this pod goes first.
        kill_recorded(&self.dir);
        let _ = self.shared.network.teardown(&self.uid).await;
        let (netns, ip) = self.shared.network.setup(&self.uid).await?;
        let hostname = dns::hostname(&self.pod);
        let resolv = dns::resolv_conf(&self.pod, &self.shared.config.dns);
        let hosts = dns::hosts(&self.pod, &ip.to_string(), &self.shared.config.dns.domain);
        let sandbox = Sandbox::new(&netns, SandboxConfig { hostname: &hostname, resolv_conf: &resolv, hosts: &hosts, state_dir: &self.dir })?;
        self.netns = Some(netns);
        self.sandbox = Some(Arc::new(sandbox));
        self.pod_ip = Some(ip);
        tracing::info!(pod = %self.key(), %ip, "sandbox ready");
        self.publish();
        Ok(())
    }

    fn log_path(&self, name: &str, restart: i32) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.{restart}.log"))
    }

    /// Tells the node's API what runs.
    fn publish(&self) {
        let Some(netns) = &self.netns else { return };
        let spec = self.pod.spec.clone().unwrap_or_default();
        let containers = self
            .containers
            .iter()
            .map(|c| {
                let current = self.log_path(&c.spec.name, c.restart_count);
                let previous = (c.restart_count > 0).then(|| self.log_path(&c.spec.name, c.restart_count - 1));
                ContainerHandle {
                    pod_uid: self.uid.clone(),
                    container: c.spec.name.clone(),
                    pid: c.pid,
                    log_path: current,
                    previous_log_path: previous,
                    netns_path: netns.path().to_path_buf(),
                }
            })
            .collect();
        let default_container =
            self.pod.annotations().get("kubectl.kubernetes.io/default-container").cloned().or_else(|| spec.containers.first().map(|c| c.name.clone()));
        self.shared.registry.set(
            &self.pod.namespace().unwrap_or_default(),
            &self.pod.name_any(),
            PodEntry { uid: self.uid.clone(), netns_path: netns.path().to_path_buf(), containers, default_container },
        );
    }

    /// Starts every container whose turn it is: init containers one at a time, in order, then
    /// the app containers, each when its back-off has passed.
    async fn start_due_containers(&mut self) {
        let now = Instant::now();
        let inits_done = self.containers.iter().filter(|c| c.init).all(|c| matches!(c.state, RunState::Terminated { exit_code: 0, .. }));
        for i in 0..self.containers.len() {
            let c = &self.containers[i];
            if c.init {
                let previous_inits_ok = self.containers[..i].iter().all(|p| matches!(p.state, RunState::Terminated { exit_code: 0, .. }));
                if !previous_inits_ok {
                    break;
                }
                if matches!(c.state, RunState::Terminated { exit_code: 0, .. }) {
                    continue;
                }
            } else if !inits_done {
                break;
            }
            let c = &self.containers[i];
            let due = match &c.state {
                RunState::Running { .. } => false,
                RunState::Waiting { reason, .. } => reason != "CreateContainerError" && c.next_start.is_none_or(|t| t <= now),
                RunState::Terminated { exit_code, .. } => restarts(self.restart_policy(), c.init, *exit_code) && c.next_start.is_none_or(|t| t <= now),
            };
            if due {
                self.start_container(i).await;
            }
            if self.containers[i].init {
                // One init container at a time.
                break;
            }
        }
    }

    fn command_for(&self, c: &Container, env: &[(String, String)]) -> Result<(String, Vec<String>), String> {
        let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let expand = |v: &String| env::expand(v, &lookup);
        let args: Vec<String> = c.args.iter().flatten().map(expand).collect();
        let image = c.image.as_deref().unwrap_or_default();
        match c.command.as_ref().filter(|c| !c.is_empty()) {
            Some(command) => {
                let mut all: Vec<String> = command.iter().map(expand).collect();
                let program = all.remove(0);
                all.extend(args);
                Ok((program, all))
            }
            None if image.starts_with(AGNHOST_IMAGE) && self.shared.config.agnhost.is_some() => {
                let program = self.shared.config.agnhost.as_ref().unwrap().to_string_lossy().into_owned();
                let mut all = vec!["agnhost".to_string()];
                all.extend(args);
                Ok((program, all))
            }
            None => Err(format!("svcnet does not pull images: container {:?} (image {image:?}) needs a `command`, run from the node's filesystem", c.name)),
        }
    }

    async fn start_container(&mut self, index: usize) {
        let Some(sandbox) = self.sandbox.clone() else { return };
        let namespace = self.pod.namespace().unwrap_or_default();
        // The pod's IP is in the status the environment's fieldRefs read.
        let mut pod = self.pod.clone();
        let status = pod.status.get_or_insert_default();
        if let Some(ip) = self.pod_ip {
            status.pod_ip = Some(ip.to_string());
            status.pod_ips = Some(vec![PodIP { ip: ip.to_string() }]);
        }
        status.host_ip = Some(self.shared.config.node_ip.to_string());
        status.host_ips = Some(vec![HostIP { ip: self.shared.config.node_ip.to_string() }]);
        let spec = self.containers[index].spec.clone();
        let services = super::services_for(&self.shared, &namespace);
        let (config_maps, secrets) = self.env_objects(&spec).await;
        let sources = env::EnvSources { services: &services, config_maps: &config_maps, secrets: &secrets };
        let env = match env::container_env(&pod, &spec, &sources) {
            Ok(env) => env,
            Err(error) => {
                let c = &mut self.containers[index];
                c.state = RunState::Waiting { reason: "CreateContainerConfigError".into(), message: Some(error.to_string()) };
                c.next_start = Some(Instant::now() + Duration::from_secs(2));
                return;
            }
        };
        let (program, args) = match self.command_for(&spec, &env) {
            Ok(x) => x,
            Err(message) => {
                self.containers[index].state = RunState::Waiting { reason: "CreateContainerError".into(), message: Some(message) };
                return;
            }
        };
        let c = &self.containers[index];
        let restart = c.restart_count + i32::from(c.after_a_run());
        let log = self.log_path(&spec.name, restart);
        let mut command = PodCommand::new(&program);
        command.args(&args).envs(env.iter().map(|(k, v)| (k.clone(), v.clone()))).stdout(&log).stderr(&log);
        if let Some(dir) = spec.working_dir.as_deref().filter(|d| !d.is_empty()) {
            command.current_dir(dir);
        }
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            command.env("HOSTNAME", sandbox.hostname());
        }
        let process = match sandbox.spawn(&command) {
            Ok(p) => p,
            Err(error) => {
                let now = jiff::Timestamp::now();
                let key = self.key();
                let c = &mut self.containers[index];
                let message = format!("failed to start container {:?}: {error}", spec.name);
                tracing::warn!(pod = %key, %message);
                c.count_start();
                c.state = RunState::Terminated { exit_code: 128, signal: None, reason: "StartError".into(), started_at: None, finished_at: now };
                let _ = std::fs::write(&log, format!("{message}\n"));
                self.schedule_restart(index);
                return;
            }
        };
        let c = &mut self.containers[index];
        c.count_start();
        c.generation += 1;
        c.pid = Some(process.pid());
        c.state = RunState::Running { started_at: jiff::Timestamp::now() };
        c.running_since = Some(Instant::now());
        c.started = spec.startup_probe.is_none();
        c.ready = false;
        c.kill_reason = None;
        record_pid(&self.dir, &spec.name, process.pid());
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        c.signal = Some(sig_tx);
        let generation = c.generation;
        tokio::spawn(supervise(process, sig_rx, self.events_tx.clone(), index, generation));
        self.start_probes(index, false);
        tracing::info!(pod = %self.key(), container = %spec.name, restart, "container started");
        self.publish();
    }

    async fn env_objects(&self, spec: &Container) -> (BTreeMap<String, ConfigMap>, BTreeMap<String, Secret>) {
        let namespace = self.pod.namespace().unwrap_or_default();
        let mut cm_names = HashSet::new();
        let mut secret_names = HashSet::new();
        for v in spec.env.iter().flatten().filter_map(|v| v.value_from.as_ref()) {
            if let Some(r) = &v.config_map_key_ref {
                cm_names.insert(r.name.clone());
            }
            if let Some(r) = &v.secret_key_ref {
                secret_names.insert(r.name.clone());
            }
        }
        for f in spec.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cm_names.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secret_names.insert(r.name.clone());
            }
        }
        let cms: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(self.shared.client.clone(), &namespace);
        let mut out_cm = BTreeMap::new();
        for name in cm_names {
            if let Ok(Some(cm)) = cms.get_opt(&name).await {
                out_cm.insert(name, cm);
            }
        }
        let mut out_s = BTreeMap::new();
        for name in secret_names {
            if let Ok(Some(s)) = secrets.get_opt(&name).await {
                out_s.insert(name, s);
            }
        }
        (out_cm, out_s)
    }

    /// Starts the container's startup probe, or (without one, or once it succeeded:
    /// `after_startup`) its liveness and readiness probes.
    fn start_probes(&mut self, index: usize, after_startup: bool) {
        let Some(ip) = self.pod_ip else { return };
        let c = &mut self.containers[index];
        for handle in c.probes.drain(..) {
            handle.abort();
        }
        if c.init {
            return;
        }
        let gated = c.spec.startup_probe.is_some() && !after_startup;
        let target = probe::Target { pod_ip: IpAddr::V4(ip), node_netns: self.shared.network.node_netns(), pid: c.pid.unwrap_or_default() };
        let specs =
            [(ProbeKind::Startup, &c.spec.startup_probe), (ProbeKind::Liveness, &c.spec.liveness_probe), (ProbeKind::Readiness, &c.spec.readiness_probe)];
        for (kind, probe) in specs {
            let Some(probe) = probe.clone() else { continue };
            if gated != (kind == ProbeKind::Startup) {
                continue;
            }
            let tx = self.events_tx.clone();
            let container = c.spec.clone();
            let target = target.clone();
            let generation = c.generation;
            c.probes.push(tokio::spawn(probe_loop(kind, probe, container, target, tx, index, generation)));
        }
        if c.spec.readiness_probe.is_none() {
            // Without a readiness probe a started container is ready.
            c.ready = c.started;
        }
    }

    fn handle(&mut self, event: Event) {
        let key = self.key();
        match event {
            Event::Exited { index, generation, code, signal, at } => {
                let policy = self.restart_policy().to_string();
                let c = &mut self.containers[index];
                if c.generation != generation {
                    return;
                }
                for p in c.probes.drain(..) {
                    p.abort();
                }
                let started_at = match c.state {
                    RunState::Running { started_at } => Some(started_at),
                    _ => None,
                };
                let exit_code = code.unwrap_or_else(|| 128 + signal.unwrap_or(9));
                let reason = c.kill_reason.take().unwrap_or_else(|| if exit_code == 0 { "Completed".into() } else { "Error".into() });
                c.state = RunState::Terminated { exit_code, signal, reason, started_at, finished_at: at };
                c.signal = None;
                c.pid = None;
                c.ready = false;
                c.started = false;
                let ran_long = c.running_since.is_some_and(|t| t.elapsed() >= BACKOFF_RESET);
                if ran_long {
                    c.backoff = Duration::ZERO;
                }
                tracing::info!(pod = %key, container = %c.spec.name, exit_code, "container exited");
                if restarts(&policy, c.init, exit_code) && self.pod.metadata.deletion_timestamp.is_none() {
                    self.schedule_restart(index);
                }
                self.publish();
            }
            Event::Probe { index, generation, kind, ok, message } => {
                let c = &mut self.containers[index];
                if c.generation != generation || !matches!(c.state, RunState::Running { .. }) {
                    return;
                }
                match kind {
                    ProbeKind::Startup => {
                        if ok {
                            c.started = true;
                            self.start_probes(index, true);
                        } else {
                            tracing::info!(pod = %key, container = %c.spec.name, %message, "startup probe failed; restarting");
                            c.kill_reason = Some("Error".into());
                            if let Some(s) = &c.signal {
                                let _ = s.send(Signal::SIGKILL);
                            }
                        }
                    }
                    ProbeKind::Liveness => {
                        if !ok {
                            tracing::info!(pod = %key, container = %c.spec.name, %message, "liveness probe failed; restarting");
                            c.kill_reason = Some("Error".into());
                            if let Some(s) = &c.signal {
                                let _ = s.send(Signal::SIGKILL);
                            }
                        }
                    }
                    ProbeKind::Readiness => {
                        if c.ready != ok {
                            tracing::info!(pod = %key, container = %c.spec.name, ready = ok, %message, "readiness changed");
                        }
                        c.ready = ok && c.started;
                    }
                }
            }
        }
    }

    fn schedule_restart(&mut self, index: usize) {
        let key = self.key();
        let c = &mut self.containers[index];
        let wait = c.backoff;
        c.next_start = Some(Instant::now() + wait);
        c.backoff = if wait.is_zero() { BACKOFF_INITIAL } else { (wait * 2).min(BACKOFF_MAX) };
        if !wait.is_zero() {
            // As the kubelet shows it: waiting in CrashLoopBackOff, the run that ended as the
            // last state (`kubectl get pods` prints the reason).
            if let RunState::Terminated { .. } = c.state {
                c.last_state = Some(c.state.clone());
            }
            let message =
                format!("back-off {}s restarting failed container={} pod={}", wait.as_secs(), c.spec.name, key.rsplit('/').next().unwrap_or_default());
            c.state = RunState::Waiting { reason: CRASH_LOOP.into(), message: Some(message) };
        }
    }

    /// Graceful termination: SIGTERM, the grace period, SIGKILL; then the sandbox goes and the
    /// pod object is deleted (with grace 0 and the pod's UID as precondition).
    async fn terminate(&mut self) -> anyhow::Result<()> {
        let gone = self.pod.annotations().contains_key(GONE);
        let grace = self.pod.metadata.deletion_grace_period_seconds.unwrap_or(0).max(0) as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
        let running: Vec<usize> = (0..self.containers.len()).filter(|i| matches!(self.containers[*i].state, RunState::Running { .. })).collect();
        for &i in &running {
            let c = &mut self.containers[i];
            c.ready = false;
            if let Some(s) = &c.signal {
                let _ = s.send(if grace == 0 { Signal::SIGKILL } else { Signal::SIGTERM });
            }
        }
        if !gone {
            self.sync_status().await;
        }
        let mut killed = grace == 0;
        while self.containers.iter().any(|c| matches!(c.state, RunState::Running { .. })) {
            tokio::select! {
                Some(event) = self.events_rx.recv() => {
                    if let Event::Exited { .. } = event { self.handle(event) }
                }
                _ = tokio::time::sleep_until(deadline), if !killed => {
                    killed = true;
                    for c in &self.containers {
                        if let Some(s) = &c.signal {
                            let _ = s.send(Signal::SIGKILL);
                        }
                    }
                }
                changed = self.pod_rx.changed() => {
                    if changed.is_ok() {
                        let pod = self.pod_rx.borrow_and_update().clone();
                        // A shorter grace period (e.g. `--grace-period=0 --force`) cuts the wait.
                        if pod.metadata.deletion_grace_period_seconds.unwrap_or(0) == 0 && !killed {
                            killed = true;
                            for c in &self.containers {
                                if let Some(s) = &c.signal {
                                    let _ = s.send(Signal::SIGKILL);
                                }
                            }
                        }
                        self.pod = pod;
                    }
                }
            }
        }
        self.teardown_sandbox().await;
        if !gone {
            let pods: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.pod.namespace().unwrap_or_default());
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
                ..Default::default()
            };
            match pods.delete(&self.pod.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
        tracing::info!(pod = %self.key(), "pod terminated");
        Ok(())
    }

    async fn teardown_sandbox(&mut self) {
        for c in &mut self.containers {
            for p in c.probes.drain(..) {
                p.abort();
            }
        }
        self.shared.registry.remove(&self.pod.namespace().unwrap_or_default(), &self.pod.name_any(), &self.uid);
        self.sandbox = None;
        self.netns = None;
        if let Err(error) = self.shared.network.teardown(&self.uid).await {
            tracing::warn!(pod = %self.key(), error = format!("{error:#}"), "tearing down the pod network");
        }
        self.pod_ip = None;
    }

    /// Called once the worker is done: nothing of the pod may outlive it.
    async fn cleanup(&mut self) {
        for c in &self.containers {
            if let Some(s) = &c.signal {
                let _ = s.send(Signal::SIGKILL);
            }
        }
        if self.sandbox.is_some() || self.netns.is_some() {
            self.teardown_sandbox().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    // === status ===

    fn phase(&self) -> &'static str {
        let apps: Vec<&ContainerRun> = self.containers.iter().filter(|c| !c.init).collect();
        let policy = self.restart_policy();
        let init_failed =
            self.containers.iter().any(|c| c.init && matches!(c.state, RunState::Terminated { exit_code, .. } if exit_code != 0)) && policy == "Never";
        if init_failed {
            return "Failed";
        }
        let all_terminated = apps.iter().all(|c| matches!(c.state, RunState::Terminated { .. }));
        if all_terminated && !apps.is_empty() {
            // Checked before the sandbox: a finished pod's sandbox is torn down, its phase stays.
            let failed = apps.iter().any(|c| matches!(c.state, RunState::Terminated { exit_code, .. } if exit_code != 0));
            match policy {
                "Never" => return if failed { "Failed" } else { "Succeeded" },
                "OnFailure" if !failed => return "Succeeded",
                _ => {}
            }
        }
        if self.sandbox.is_none() {
            return "Pending";
        }
        if all_terminated && !apps.is_empty() {
            // Waiting for a restart.
            return "Running";
        }
        if apps.iter().any(|c| matches!(c.state, RunState::Running { .. })) {
            return "Running";
        }
        if apps.iter().any(|c| c.restart_count > 0 || c.last_state.is_some()) {
            return "Running";
        }
        "Pending"
    }

    fn status(&self) -> PodStatus {
        let now = Time(jiff::Timestamp::now());
        let previous: Vec<PodCondition> = self.pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let condition = |type_: &str, ok: bool, reason: Option<&str>| {
            let status = if ok { "True" } else { "False" };
            let old = previous.iter().find(|c| c.type_ == type_);
            let transition = match old {
                Some(o) if o.status == status => o.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            PodCondition {
                type_: type_.into(),
                status: status.into(),
                reason: if ok { None } else { reason.map(str::to_string) },
                last_transition_time: transition,
                last_probe_time: None,
                message: None,
                observed_generation: None,
            }
        };
        let apps: Vec<&ContainerRun> = self.containers.iter().filter(|c| !c.init).collect();
        let inits_done = self.containers.iter().filter(|c| c.init).all(|c| matches!(c.state, RunState::Terminated { exit_code: 0, .. }));
        let containers_ready = !self.terminal && apps.iter().all(|c| c.ready && matches!(c.state, RunState::Running { .. }));
        let mut conditions = vec![
            condition("PodReadyToStartContainers", self.sandbox.is_some(), None),
            condition("Initialized", inits_done, Some("ContainersNotInitialized")),
            condition("Ready", containers_ready && self.pod.metadata.deletion_timestamp.is_none(), Some("ContainersNotReady")),
            condition("ContainersReady", containers_ready, Some("ContainersNotReady")),
        ];
        if let Some(scheduled) = previous.iter().find(|c| c.type_ == "PodScheduled") {
            conditions.push(scheduled.clone());
        } else {
            conditions.push(condition("PodScheduled", true, None));
        }
        let to_status = |c: &ContainerRun| ContainerStatus {
            name: c.spec.name.clone(),
            image: c.spec.image.clone().unwrap_or_default(),
            image_id: String::new(),
            container_id: Some(format!("svcnet://{}-{}-{}", &self.uid, c.spec.name, c.restart_count)),
            ready: c.ready && matches!(c.state, RunState::Running { .. }),
            started: Some(c.started && matches!(c.state, RunState::Running { .. })),
            restart_count: c.restart_count,
            state: Some(state_of(&c.state)),
            last_state: c.last_state.as_ref().map(state_of),
            ..Default::default()
        };
        let ip = self.pod_ip.map(|ip| ip.to_string());
        let node_ip = self.shared.config.node_ip.to_string();
        PodStatus {
            phase: Some(self.phase().into()),
            conditions: Some(conditions),
            host_ip: Some(node_ip.clone()),
            host_ips: Some(vec![HostIP { ip: node_ip }]),
            pod_ip: ip.clone(),
            pod_ips: ip.map(|ip| vec![PodIP { ip }]),
            start_time: Some(Time(self.start_time)),
            container_statuses: Some(apps.iter().map(|c| to_status(c)).collect()),
            init_container_statuses: Some(self.containers.iter().filter(|c| c.init).map(to_status).collect()).filter(|v: &Vec<_>| !v.is_empty()),
            qos_class: Some("BestEffort".into()),
            message: self.sandbox_error.clone(),
            reason: None,
            ..Default::default()
        }
    }

    async fn sync_status(&mut self) {
        let status = self.status();
        let phase = status.phase.clone().unwrap_or_default();
        // Transition times are not part of the comparison.
        let mut comparable = serde_json::to_value(&status).unwrap_or_default();
        if let Some(cs) = comparable.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in cs {
                c.as_object_mut().map(|o| o.remove("lastTransitionTime"));
            }
        }
        if self.last_status.as_ref() == Some(&comparable) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.pod.namespace().unwrap_or_default());
        let body = json!({"metadata": {"uid": self.uid}, "status": status});
        match pods.patch_status(&self.pod.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await {
            Ok(pod) => {
                self.last_status = Some(comparable);
                // Keep our view (e.g. PodScheduled) current without waiting for the watch.
                self.pod.status = pod.status;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => tracing::warn!(pod = %self.key(), %error, "writing pod status"),
        }
        if (phase == "Succeeded" || phase == "Failed") && !self.terminal {
            // A finished pod keeps its object but not its sandbox.
            self.terminal = true;
            self.teardown_sandbox().await;
        }
    }
}

/// Whether a container that exited with `exit_code` runs again under the pod's `restartPolicy`
/// (an init container is retried on failure unless the policy is `Never`).
fn restarts(policy: &str, init: bool, exit_code: i32) -> bool {
    match policy {
        "Always" if !init => true,
        "Never" => false,
        _ => exit_code != 0,
    }
}

fn state_of(state: &RunState) -> ContainerState {
    match state {
        RunState::Waiting { reason, message } => {
            ContainerState { waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }), ..Default::default() }
        }
        RunState::Running { started_at } => {
            ContainerState { running: Some(ContainerStateRunning { started_at: Some(Time(*started_at)) }), ..Default::default() }
        }
        RunState::Terminated { exit_code, signal, reason, started_at, finished_at } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                signal: *signal,
                reason: Some(reason.clone()),
                started_at: started_at.map(Time),
                finished_at: Some(Time(*finished_at)),
                container_id: None,
                message: None,
            }),
            ..Default::default()
        },
    }
}

/// Owns a container's process: forwards signals to it and reports its exit.
async fn supervise(mut process: PodProcess, mut signals: mpsc::UnboundedReceiver<Signal>, events: mpsc::UnboundedSender<Event>, index: usize, generation: u64) {
    use std::os::unix::process::ExitStatusExt;
    let status = loop {
        tokio::select! {
            status = process.wait() => break status,
            Some(signal) = signals.recv() => { let _ = process.signal(signal); }
        }
    };
    let (code, signal) = match status {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (None, Some(9)),
    };
    let _ = events.send(Event::Exited { index, generation, code, signal, at: jiff::Timestamp::now() });
}

async fn probe_loop(
    kind: ProbeKind,
    spec: k8s_openapi::api::core::v1::Probe,
    container: Container,
    target: probe::Target,
    events: mpsc::UnboundedSender<Event>,
    index: usize,
    generation: u64,
) {
    let timing = probe::Timing::of(&spec);
    tokio::time::sleep(timing.initial_delay).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut reported: Option<bool> = None;
    loop {
        let outcome = probe::probe_once(&spec, &container, &target).await;
        let (ok, message) = match outcome {
            Outcome::Success => (true, String::new()),
            Outcome::Failure(m) => (false, m),
        };
        if ok {
            successes += 1;
            failures = 0;
        } else {
            failures += 1;
            successes = 0;
        }
        let verdict = if ok && successes >= timing.success_threshold {
            Some(true)
        } else if !ok && failures >= timing.failure_threshold {
            Some(false)
        } else {
            None
        };
        if let Some(v) = verdict
            && (reported != Some(v) || (!v && kind != ProbeKind::Readiness))
        {
            reported = Some(v);
            if events.send(Event::Probe { index, generation, kind, ok: v, message }).is_err() {
                return;
            }
            if kind == ProbeKind::Startup && v {
                return;
            }
            if !v && kind != ProbeKind::Readiness {
                // The container is being restarted; this probe ends with it.
                return;
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::restarts;

    #[test]
    fn restart_policy_as_upstream() {
        assert!(restarts("Always", false, 0));
        assert!(restarts("Always", false, 1));
        assert!(!restarts("OnFailure", false, 0));
        assert!(restarts("OnFailure", false, 2));
        assert!(!restarts("Never", false, 2));
        // Init containers: a success is final; a failure is retried unless the policy is Never.
        assert!(!restarts("Always", true, 0));
        assert!(restarts("Always", true, 1));
        assert!(!restarts("Never", true, 1));
    }
}
