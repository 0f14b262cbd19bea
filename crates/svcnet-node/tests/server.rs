//! The node's API under the real kubectl (the v1.32 the dispatcher picks), through an in-process
//! API server: `kubectl logs` (`-f`, `--tail`, `--previous`, `--limit-bytes`, `-c`), `exec`
//! (plain, `-i`, `-it`, exit codes), `cp` both ways and `port-forward`, against a real process
//! in real namespaces.
//!
//! Each test makes its own API server, node API (on loopback, as the test's "node" is the host's
//! namespace), pod network namespace (`svsrv-<test>-<pid>`) and pod process, all removed when
//! the test ends, failed or not. Needs root (namespaces).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use svcnet_netns::{NetNs, PodCommand, PodProcess, Sandbox, SandboxConfig};
use svcnet_node::runtime::{ContainerHandle, LookupError, PodRuntime};
use svcnet_node::server::{ServerConfig, serve};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(30);
/// The port the pod's own server listens on, inside its network namespace.
const POD_PORT: u16 = 8080;

/// The pod runtime of these tests: one pod, `default/web`, with one container, `web`.
struct TestRuntime {
    handle: Mutex<Option<ContainerHandle>>,
}

impl PodRuntime for TestRuntime {
    fn container(&self, namespace: &str, name: &str, container: Option<&str>) -> Result<ContainerHandle, LookupError> {
        let handle = self.handle.lock().unwrap().clone();
        let Some(handle) = handle.filter(|_| namespace == "default" && name == "web") else {
            return Err(LookupError::PodNotFound { namespace: namespace.into(), name: name.into() });
        };
        match container {
            None | Some("web") => Ok(handle),
            Some(other) => Err(LookupError::ContainerNotFound { pod: name.into(), container: other.into() }),
        }
    }
}

/// An API server, a node API and the pod `web` running on it.
struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    runtime: Arc<TestRuntime>,
    log_path: PathBuf,
    /// Created by the test to make the container print `triggered`.
    trigger: PathBuf,
    _api: svcnet_apiserver::ApiServer,
    node_api: tokio::task::JoinHandle<()>,
    pod_server: tokio::task::JoinHandle<()>,
    // Dropped in this order: the process, the sandbox's files, then the namespace.
    _process: PodProcess,
    _sandbox: Sandbox,
    _netns: NetNs,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.node_api.abort();
        self.pod_server.abort();
    }
}

impl Cluster {
    async fn start(test: &str) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let store = svcnet_store::RedbStore::open(&dir.path().join("store.redb"))?;
        let config = svcnet_apiserver::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.path().join("api"),
            extra_sans: vec![],
            service_ranges: svcnet_apiserver::service_alloc::ServiceRanges::parse("10.96.0.0/16", "30000-32767")?,
        };
        let api = svcnet_apiserver::ApiServer::start(config, store).await?;
        let token = std::fs::read_to_string(dir.path().join("api/token"))?.trim().to_owned();

        // The pod: a network namespace with its loopback up, a sandbox, and a container that
        // logs two lines, then one more each time the trigger file appears.
        let netns = NetNs::create(&format!("svsrv-{test}-{}", std::process::id()))?;
        let netlink = netns.netlink()?;
        let lo = netlink.link_index("lo").await?.context("no lo")?;
        netlink.set_up(lo).await?;
        let sandbox = Sandbox::new(
            &netns,
            SandboxConfig { hostname: "web", resolv_conf: "nameserver 10.96.0.10\n", hosts: "127.0.0.1 localhost\n", state_dir: &dir.path().join("sandbox") },
        )?;
        let log_path = dir.path().join("web.log");
        let previous_log_path = dir.path().join("web.previous.log");
        std::fs::write(&previous_log_path, "previous run\n")?;
        let trigger = dir.path().join("trigger");
        let script =
            format!("echo hello; echo world; while true; do if [ -e {t} ]; then rm -f {t}; echo triggered; fi; sleep 0.05; done", t = trigger.display());
        let mut command = PodCommand::new("sh");
        command.args(["-c", &script]).env("POD_GREETING", "from-env").stdout(&log_path).stderr(&log_path);
        let process = sandbox.spawn(&command)?;

        // The pod's server, listening inside the pod's namespace: a greeting, then an echo.
        let listener = netns.run_in(|| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, POD_PORT)))??;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let pod_server = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = conn.write_all(b"hello from pod\n").await;
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });

        let runtime = Arc::new(TestRuntime {
            handle: Mutex::new(Some(ContainerHandle {
                pod_uid: "uid-web".into(),
                container: "web".into(),
                pid: Some(process.pid()),
                log_path: log_path.clone(),
                previous_log_path: Some(previous_log_path),
                netns_path: netns.path().to_owned(),
            })),
        });
        let node_listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let node_port = node_listener.local_addr()?.port();
        let node_runtime: Arc<dyn PodRuntime> = runtime.clone();
        let node_api = tokio::spawn(async move {
            if let Err(e) = serve(node_listener, node_runtime, ServerConfig { token, hosts: vec!["127.0.0.1".into()] }).await {
                panic!("node API: {e}");
            }
        });

        let cluster = Cluster {
            kubeconfig: api.kubeconfig.clone(),
            dir,
            runtime,
            log_path,
            trigger,
            _api: api,
            node_api,
            pod_server,
            _process: process,
            _sandbox: sandbox,
            _netns: netns,
        };
        cluster.kubectl_ok(&["apply", "-f", "-"], Some(MANIFESTS)).await?;
        let node_status = serde_json::json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "node-1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": node_port}},
        }});
        cluster.kubectl_ok(&["patch", "node", "node-1", "--subresource=status", "--type=merge", "-p", &node_status.to_string()], None).await?;
        cluster.kubectl_ok(&["patch", "pod", "web", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Running"}}"#], None).await?;
        // The container has started once its first lines are in its log.
        cluster.wait_for_log("world\n").await?;
        Ok(cluster)
    }

    async fn wait_for_log(&self, text: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if std::fs::read_to_string(&self.log_path).unwrap_or_default().contains(text) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{text:?} never appeared in the container's log");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(self.dir.path().join("kube-cache")).args(args).kill_on_drop(true);
        cmd
    }

    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut cmd = self.command(args);
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn()?;
        let mut input = child.stdin.take().expect("piped");
        let stdin = stdin.unwrap_or_default().to_owned();
        tokio::spawn(async move {
            let _ = input.write_all(stdin.as_bytes()).await;
        });
        Ok(tokio::time::timeout(DEADLINE, child.wait_with_output()).await.with_context(|| format!("kubectl {args:?} did not finish"))??)
    }

    async fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl(args, stdin).await?;
        if !out.status.success() {
            bail!("kubectl {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Runs kubectl on a terminal (`script` gives it one), returning what the terminal showed
    /// and kubectl's exit code.
    async fn kubectl_on_tty(&self, args: &[&str]) -> Result<(String, i32)> {
        let mut line = format!("kubectl --kubeconfig {} --cache-dir {}", self.kubeconfig.display(), self.dir.path().join("kube-cache").display());
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let out = tokio::time::timeout(
            DEADLINE,
            Command::new("script").args(["-qec", &line, "/dev/null"]).stdin(std::process::Stdio::null()).kill_on_drop(true).output(),
        )
        .await
        .context("kubectl on a terminal did not finish")??;
        Ok((String::from_utf8_lossy(&out.stdout).replace('\r', ""), out.status.code().unwrap_or(-1)))
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

const MANIFESTS: &str = r#"apiVersion: v1
kind: Node
metadata:
  name: node-1
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  nodeName: node-1
  containers:
  - name: web
    image: none
    command: ["sh"]
---
apiVersion: v1
kind: Pod
metadata:
  name: lonely
  namespace: default
spec:
  containers:
  - name: web
    image: none
    command: ["sh"]"#;

async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> Result<String> {
    tokio::time::timeout(DEADLINE, lines.next_line()).await.context("no line in time")??.context("the stream ended")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs() -> Result<()> {
    let c = Cluster::start("logs").await?;
    assert_eq!(c.kubectl_ok(&["logs", "web"], None).await?, "hello\nworld\n");
    assert_eq!(c.kubectl_ok(&["logs", "pod/web", "-c", "web"], None).await?, "hello\nworld\n");
    assert_eq!(c.kubectl_ok(&["logs", "web", "--tail=1"], None).await?, "world\n");
    assert_eq!(c.kubectl_ok(&["logs", "web", "--limit-bytes=3"], None).await?, "hel");
    assert_eq!(c.kubectl_ok(&["logs", "web", "--previous"], None).await?, "previous run\n");

    // Follow: a line the container writes after kubectl started comes through.
    let mut follow = c.command(&["logs", "-f", "web"]);
    let mut child = follow.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    assert_eq!(next_line(&mut lines).await?, "hello");
    assert_eq!(next_line(&mut lines).await?, "world");
    std::fs::write(&c.trigger, "")?;
    assert_eq!(next_line(&mut lines).await?, "triggered");
    // When the container's run ends, so does the follow.
    *c.runtime.handle.lock().unwrap() = None;
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.context("kubectl logs -f did not end with the pod")??;
    assert!(status.success(), "kubectl logs -f: {status}");

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_and_exec_errors() -> Result<()> {
    let c = Cluster::start("errors").await?;
    let out = c.kubectl(&["logs", "web", "-c", "nope"], None).await?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("container nope is not valid for pod web"), "{}", stderr(&out));

    let out = c.kubectl(&["logs", "lonely"], None).await?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pod lonely does not have a host assigned"), "{}", stderr(&out));

    let out = c.kubectl(&["logs", "missing"], None).await?;
    assert!(stderr(&out).contains(r#"pods "missing" not found"#), "{}", stderr(&out));

    let out = c.kubectl(&["exec", "web", "-c", "nope", "--", "true"], None).await?;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("container nope is not valid for pod web"), "{}", stderr(&out));

    let out = c.kubectl(&["exec", "web", "--", "/no/such/program"], None).await?;
    assert!(!out.status.success(), "exec of a missing program succeeded");
    assert!(stderr(&out).contains("/no/such/program"), "{}", stderr(&out));

    // The node checks the token the API server sends.
    let node_port = node_port(&c).await?;
    let status = tokio::task::spawn_blocking(move || unauthenticated_status(node_port)).await??;
    assert_eq!(status, 401);
    Ok(())
}

async fn node_port(c: &Cluster) -> Result<u16> {
    let port = c.kubectl_ok(&["get", "node", "node-1", "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}"], None).await?;
    Ok(port.trim().parse()?)
}

/// The HTTP status of a request to the node's API without a token (curl skips the
/// self-signed certificate's check).
fn unauthenticated_status(port: u16) -> Result<u16> {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &format!("https://127.0.0.1:{port}/containerLogs/default/web/web")])
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_exec() -> Result<()> {
    let c = Cluster::start("exec").await?;
    // The pod's own UTS namespace, environment and PID namespace.
    assert_eq!(c.kubectl_ok(&["exec", "web", "--", "hostname"], None).await?, "web\n");
    assert_eq!(c.kubectl_ok(&["exec", "web", "--", "sh", "-c", "echo $POD_GREETING"], None).await?, "from-env\n");
    let pids = c.kubectl_ok(&["exec", "web", "--", "sh", "-c", "ls /proc | grep -E '^[0-9]+$' | sort -n | head -1"], None).await?;
    assert_eq!(pids, "1\n", "the container's main process is PID 1 of the namespace exec joins");

    // Exit codes come through.
    let out = c.kubectl(&["exec", "web", "--", "sh", "-c", "exit 3"], None).await?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // stdout and stderr apart.
    let out = c.kubectl(&["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"], None).await?;
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(stderr(&out), "err\n");

    // stdin, to its end.
    let input = "line one\nline two\n";
    assert_eq!(c.kubectl_ok(&["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"], Some(input)).await?, format!("{input}done\n"));
    assert_eq!(c.kubectl_ok(&["exec", "-i", "web", "--", "wc", "-l"], Some(input)).await?.trim(), "2");

    // A terminal.
    let (screen, code) = c.kubectl_on_tty(&["exec", "-it", "web", "--", "sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty; echo $((6*7)); exit 5"]).await?;
    assert!(screen.contains("on-a-tty"), "{screen}");
    assert!(screen.contains("42"), "{screen}");
    assert_eq!(code, 5, "{screen}");
    let (screen, code) = c.kubectl_on_tty(&["exec", "-it", "web", "--", "sh", "-c", "stty size"]).await?;
    assert_eq!(code, 0, "{screen}");
    assert!(screen.trim().split(' ').count() == 2, "a size, set by kubectl's resize: {screen:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_cp() -> Result<()> {
    let c = Cluster::start("cp").await?;
    // The pod sees the node's filesystem (no images), so a directory of the test's is the
    // pod's too.
    let shared = c.dir.path().join("shared");
    std::fs::create_dir(&shared)?;
    let local = c.dir.path().join("local.txt");
    let content: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&local, &content)?;

    let into_pod = format!("default/web:{}", shared.join("copied.txt").display());
    c.kubectl_ok(&["cp", local.to_str().context("utf-8")?, &into_pod], None).await?;
    assert_eq!(std::fs::read_to_string(shared.join("copied.txt"))?, content);

    std::fs::write(shared.join("from-pod.txt"), "made in the pod\n")?;
    let back = c.dir.path().join("back.txt");
    let from_pod = format!("default/web:{}", shared.join("from-pod.txt").display());
    c.kubectl_ok(&["cp", &from_pod, back.to_str().context("utf-8")?], None).await?;
    assert_eq!(std::fs::read_to_string(&back)?, "made in the pod\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_port_forward() -> Result<()> {
    let c = Cluster::start("portfwd").await?;
    // kubectl 1.32 tunnels SPDY in a WebSocket first; with the tunnel off it upgrades to SPDY.
    for websockets in ["true", "false"] {
        let mut cmd = c.command(&["port-forward", "pod/web", &format!(":{POD_PORT}"), ":8081"]);
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets);
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        // "Forwarding from 127.0.0.1:PORT -> 8080", then the same for 8081.
        let mut local = Vec::new();
        while local.len() < 2 {
            let line = next_line(&mut lines).await.context("kubectl port-forward did not start")?;
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                local.push(rest.split(' ').next().context("a port")?.parse::<u16>()?);
            }
        }
        // Two connections one after the other, each a full exchange and close.
        for round in 0..2 {
            let mut conn = tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, local[0]))).await?;
            let message = format!("ping {round} over websockets={websockets}\n");
            conn.write_all(message.as_bytes()).await?;
            conn.shutdown().await?;
            let mut received = String::new();
            tokio::time::timeout(DEADLINE, conn.read_to_string(&mut received)).await.context("no answer through the forward")??;
            assert_eq!(received, format!("hello from pod\n{message}"));
        }
        // Nothing listens on 8081 in the pod: the connection is closed and kubectl says why.
        let mut conn = tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, local[1]))).await?;
        let mut received = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut received)).await.context("the failed forward was not closed")?;
        assert!(received.is_empty());
        child.kill().await?;
        let mut err = String::new();
        child.stderr.take().expect("piped").read_to_string(&mut err).await?;
        assert!(err.contains("failed to connect to localhost:8081"), "websockets={websockets}: {err}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_attach() -> Result<()> {
    let c = Cluster::start("attach").await?;
    let mut child = c.command(&["attach", "web"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    // Output from the moment of attaching: keep triggering until a line comes through.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let line = loop {
        if tokio::time::Instant::now() > deadline {
            bail!("nothing came through kubectl attach");
        }
        std::fs::write(&c.trigger, "")?;
        match tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await {
            Ok(line) => break line?.context("kubectl attach ended")?,
            Err(_) => continue,
        }
    };
    assert_eq!(line, "triggered");
    *c.runtime.handle.lock().unwrap() = None;
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.context("kubectl attach did not end with the container")??;
    assert!(status.success(), "{status}");
    Ok(())
}

/// Sends `mib` MiB to the pod's echo server at `addr` and reads it back; the rate in MiB/s.
async fn echo_rate(connect: impl std::future::Future<Output = std::io::Result<tokio::net::TcpStream>>, mib: usize) -> Result<f64> {
    let started = std::time::Instant::now();
    let conn = connect.await?;
    let (mut r, mut w) = conn.into_split();
    let writer = tokio::spawn(async move {
        let block = vec![7u8; 1 << 20];
        for _ in 0..mib {
            w.write_all(&block).await?;
        }
        w.shutdown().await
    });
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = tokio::time::timeout(DEADLINE, r.read(&mut buf)).await.context("echo stalled")??;
        if n == 0 {
            break;
        }
        total += n;
    }
    writer.await??;
    assert_eq!(total, mib * (1 << 20) + "hello from pod\n".len());
    Ok(mib as f64 / started.elapsed().as_secs_f64())
}

/// `bench/node-api.sh`: port-forward throughput (both transports) next to a direct connection
/// to the same pod server, and `kubectl exec` latency next to `kubectl get` (the same binary,
/// one API round trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: bench/node-api.sh"]
async fn bench_node_api() -> Result<()> {
    let mib: usize = std::env::var("BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let c = Cluster::start("bench").await?;
    let netns = c._netns.path().to_owned();
    let direct = echo_rate(
        async move {
            let s =
                svcnet_netns::run_in_netns_path(&netns, || std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, POD_PORT))).map_err(std::io::Error::other)??;
            s.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(s)
        },
        mib,
    )
    .await?;
    println!("| echo of {mib} MiB | MiB/s | ratio to direct |\n| --- | --- | --- |\n| direct, in the pod's namespace | {direct:.1} | 1.00 |");
    for websockets in ["true", "false"] {
        let mut cmd = c.command(&["port-forward", "pod/web", &format!(":{POD_PORT}")]);
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets);
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn()?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let port: u16 = loop {
            if let Some(rest) = next_line(&mut lines).await?.strip_prefix("Forwarding from 127.0.0.1:") {
                break rest.split(' ').next().context("a port")?.parse()?;
            }
        };
        let rate = echo_rate(tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)), mib).await?;
        let how = if websockets == "true" { "kubectl port-forward (SPDY in WebSocket)" } else { "kubectl port-forward (SPDY)" };
        println!("| {how} | {rate:.1} | {:.2} |", rate / direct);
        child.kill().await?;
    }
    let time = async |args: &[&str]| -> Result<f64> {
        let started = std::time::Instant::now();
        for _ in 0..runs {
            c.kubectl_ok(args, None).await?;
        }
        Ok(started.elapsed().as_secs_f64() * 1000.0 / runs as f64)
    };
    let get = time(&["get", "pod", "web", "-o", "name"]).await?;
    let exec = time(&["exec", "web", "--", "true"]).await?;
    println!(
        "\n| {runs} runs | ms per command | ratio to get |\n| --- | --- | --- |\n| kubectl get pod | {get:.1} | 1.00 |\n| kubectl exec -- true | {exec:.1} | {:.2} |",
        exec / get
    );
    Ok(())
}
