//! End-to-end harness: starts the real `svcnet` binary on a free port with its own data dir,
//! and drives it with the real `kubectl` (fresh discovery cache per test).
#![allow(dead_code)]

pub mod seed;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// A running `svcnet up`, stopped when dropped (SIGTERM, then SIGKILL after 20 s).
pub struct Svcnet {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub addr: String,
    cache: PathBuf,
}

pub fn svcnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_svcnet"))
}

impl Svcnet {
    /// Starts `svcnet up` on 127.0.0.1 with a kernel-chosen port and waits until it serves.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir)
    }

    /// Starts on an existing data dir (for restart tests).
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts `svcnet up` on `dir` with extra flags (e.g. `--watch-history 10`).
    /// Without `--nodes` in `extra`, no node agent runs (`--nodes 0`): most tests need only the
    /// control plane, and nodes need a bridge of their own ([`NodeNet`]).
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let nodes: &[&str] = if extra.contains(&"--nodes") { &[] } else { &["--nodes", "0"] };
        let mut child = Command::new(svcnet_bin())
            .args(["up", "--api-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(nodes)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("svcnet.log")).expect("log file"))
            .spawn()
            .expect("spawn svcnet");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = String::new();
        let mut kubeconfig = PathBuf::new();
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            if let Some(a) = line.strip_prefix("svcnet API server listening on https://") {
                addr = a.trim().to_string();
            }
            if let Some(k) = line.strip_prefix("export KUBECONFIG=") {
                kubeconfig = PathBuf::from(k.trim());
                break;
            }
        }
        assert!(
            !addr.is_empty(),
            "svcnet did not report its address; its log:\n{}",
            std::fs::read_to_string(dir.path().join("svcnet.log")).unwrap_or_default()
        );
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let cache = dir.path().join("kubectl-cache");
        Svcnet { child: Some(child), dir, kubeconfig, addr, cache }
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig).arg("--cache-dir").arg(&self.cache).args(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().expect("kubectl")
    }

    /// `kubectl get <what> -o json`, parsed.
    pub fn get_json(&self, what: &[&str]) -> serde_json::Value {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Runs kubectl and returns stdout, panicking with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(!out.status.success(), "kubectl {args:?} unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml));
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates a namespace from YAML (`kubectl create namespace` sends protobuf).
    pub fn namespace(&self, name: &str) {
        self.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILLs the server and hands back its data dir.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// SIGTERMs the server, waits for it to exit, and hands back its status and data dir.
    pub fn terminate(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let status = child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("token")).unwrap().trim().to_string()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("pki/ca.crt")
    }

    /// `curl` with the CA and, when `auth`, the token; returns (status, body).
    pub fn curl(&self, method: &str, path: &str, auth: bool, extra: &[&str]) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--cacert"]).arg(self.ca_path());
        if auth {
            cmd.arg("-H").arg(format!("Authorization: Bearer {}", self.token()));
        }
        cmd.args(extra).arg(format!("https://{}{}", self.addr, path));
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Svcnet {
    /// SIGTERM first, so that svcnet removes what it made in the kernel; SIGKILL after 20 s.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A node network of its own for one test: a bridge name and a /24 that no other test (in any
/// test process) uses at the same time, claimed with a lock file. Dropping it removes whatever
/// `svcnet up` may have left in the kernel under that name (namespaces `<bridge>-*`, the bridge),
/// then releases the claim.
pub struct NodeNet {
    pub bridge: String,
    /// `172.31.K.0/24`.
    pub cidr: String,
    /// `172.31.K.` (append the host part).
    pub prefix: String,
    claim: PathBuf,
}

impl NodeNet {
    pub fn claim() -> NodeNet {
        let dir = Path::new("/tmp/svcnet-test-nodenets");
        std::fs::create_dir_all(dir).unwrap();
        for k in 1..=250u32 {
            let claim = dir.join(k.to_string());
            if std::fs::OpenOptions::new().write(true).create_new(true).open(&claim).is_ok() {
                let net = NodeNet { bridge: format!("snt{k}"), cidr: format!("172.31.{k}.0/24"), prefix: format!("172.31.{k}."), claim };
                net.remove_leftovers();
                return net;
            }
        }
        panic!("no free test node network (remove stale claims in {})", dir.display());
    }

    /// `svcnet up` flags for this network.
    pub fn flags(&self) -> Vec<String> {
        vec!["--bridge".into(), self.bridge.clone(), "--node-cidr".into(), self.cidr.clone()]
    }

    /// The network namespace of node `node` (e.g. `node-1`).
    pub fn node_netns(&self, node: &str) -> String {
        format!("{}-{node}", self.bridge)
    }

    /// Runs a command in node `node`'s network namespace.
    pub fn in_node(&self, node: &str, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.node_netns(node)]).args(args).output().expect("ip netns exec")
    }

    /// The namespaces that exist under this network's prefix.
    pub fn namespaces(&self) -> Vec<String> {
        netns_named(&format!("{}-", self.bridge))
    }

    /// Whether the bridge exists on the host.
    pub fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    fn remove_leftovers(&self) {
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if self.bridge_exists() {
            let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        }
    }
}

impl Drop for NodeNet {
    fn drop(&mut self) {
        self.remove_leftovers();
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// The network namespaces (`ip netns`) whose names start with `prefix`.
pub fn netns_named(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(prefix)).map(str::to_string).collect()
}

/// Host PIDs of the processes in network namespace `ns`.
pub fn pids_in(ns: &str) -> Vec<u32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output().expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// `curl` from the host (to the test's own bridge network): the body, or `None` on failure.
pub fn curl_host(url: &str, timeout_s: u32) -> Option<String> {
    let out = Command::new("curl").args(["-sS", "--max-time", &timeout_s.to_string(), url]).output().expect("curl");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pods of `selector` in `ns` that are Running and Ready (and not being deleted).
pub fn ready_pods(s: &Svcnet, ns: &str, selector: &str) -> Vec<serde_json::Value> {
    let pods = s.get_json(&["pods", "-n", ns, "-l", selector]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
        .filter(|p| p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .cloned()
        .collect()
}

/// Nodes that are Ready and have a podCIDR.
pub fn ready_nodes(s: &Svcnet) -> Vec<serde_json::Value> {
    let nodes = s.get_json(&["nodes"]);
    nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .filter(|n| n["spec"]["podCIDR"].is_string())
        .cloned()
        .collect()
}

/// Waits until `f` returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}
