//! Integration tests against the real kernel. They need root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
//!
//! Every test works only in network namespaces it creates, with names unique to the test (this
//! process's pid and a counter), so tests run in parallel and alongside other runs; the host's
//! links, addresses, routes and sysctls are never touched (bridges live in a test namespace too).
//! Guards remove everything, and each test ends by checking that the host shows nothing of its
//! own names.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use svcnet_netns::{Error, NetNs, Netlink, PodCommand, Sandbox, SandboxConfig, Signal};

// === helpers ===

/// The names and addresses one test uses, all unique to it.
struct TestNames {
    n: u32,
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl TestNames {
    fn new() -> TestNames {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        TestNames { n: COUNTER.fetch_add(1, Ordering::Relaxed), namespaces: vec![], links: vec![] }
    }

    /// A namespace name: `svcnet-t<pid>-<n>-<tag>`.
    fn netns(&mut self, tag: &str) -> String {
        let name = format!("svcnet-t{}-{}-{tag}", std::process::id(), self.n);
        self.namespaces.push(name.clone());
        name
    }

    /// A link name of at most 15 bytes: `s<pid hex><n hex><tag>`.
    fn link(&mut self, tag: &str) -> String {
        let name = format!("s{:x}{:x}{tag}", std::process::id(), self.n);
        assert!(name.len() <= 15, "{name} is too long for a link name");
        self.links.push(name.clone());
        name
    }

    /// `10.<a>.<b>.<host>`, where `<a>.<b>` is this test's own range (`subnet` 0..4).
    fn ip(&self, subnet: u32, host: u8) -> Ipv4Addr {
        let block = (std::process::id() % 50) * 1024 + self.n * 4 + subnet;
        Ipv4Addr::new(10, 190 + (block / 256 % 60) as u8, (block % 256) as u8, host)
    }

    /// Asserts that the host's `ip netns list` and `ip link` show none of this test's names.
    fn assert_host_clean(&self) {
        let netns = run("ip", &["netns", "list"]);
        for name in &self.namespaces {
            assert!(!netns.lines().any(|line| line.split_whitespace().next() == Some(name)), "namespace {name} left behind:\n{netns}");
            assert!(!std::path::Path::new("/run/netns").join(name).exists(), "/run/netns/{name} left behind");
        }
        self.assert_no_host_links();
    }

    /// Asserts that the host's `ip link` shows none of this test's link names.
    fn assert_no_host_links(&self) {
        let links = run("ip", &["-o", "link", "show"]);
        for name in &self.links {
            assert!(!links.lines().any(|line| line_link_name(line) == Some(name)), "link {name} visible on the host:\n{links}");
        }
    }
}

/// The name in a line of `ip -o link`: `3: name@peer: <...>`.
fn line_link_name(line: &str) -> Option<&str> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next().unwrap_or(name))
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().expect("run command");
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The calling thread's namespace of a kind, as `net:[4026531840]`.
fn thread_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/thread-self/ns/{kind}")).unwrap().display().to_string()
}

async fn loopback_up(netlink: &Netlink) -> Result<()> {
    let lo = netlink.link_index("lo").await?.context("no lo")?;
    netlink.set_up(lo).await?;
    Ok(())
}

/// Configures a pod's `eth0` (`address/24`, up) and its loopback.
async fn configure_pod(pod: &NetNs, address: Ipv4Addr) -> Result<Netlink> {
    let netlink = pod.netlink()?;
    loopback_up(&netlink).await?;
    let eth0 = netlink.link_index("eth0").await?.context("no eth0 in the pod")?;
    netlink.add_address(eth0, address, 24).await?;
    netlink.set_up(eth0).await?;
    Ok(netlink)
}

/// Opens a listener in `server_ns`, connects from `client_ns`, exchanges a line, and returns the
/// client address the server saw.
fn tcp_exchange(server_ns: &NetNs, server_ip: Ipv4Addr, client_ns: &NetNs) -> Result<SocketAddr> {
    let listener = server_ns.run_in(|| TcpListener::bind((server_ip, 0)))??;
    let server_addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let server = thread::spawn(move || -> Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nonblocking(false)?;
        let mut request = [0; 5];
        stream.read_exact(&mut request)?;
        ensure!(&request == b"ping\n", "server got {request:?}");
        stream.write_all(b"pong\n")?;
        Ok(peer)
    });
    let reply = client_ns.run_in(|| -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&server_addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"ping\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    })??;
    ensure!(reply == "pong\n", "client got {reply:?}");
    server.join().expect("server thread")
}

// === tests ===

#[test]
fn namespace_lifecycle_is_ip_netns_compatible() -> Result<()> {
    let mut names = TestNames::new();
    let name = names.netns("a");
    let host_net = thread_ns("net");
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;

    let ns = NetNs::create(&name)?;
    assert!(ns.is_owned());
    assert_eq!(thread_ns("net"), host_net, "the calling thread's namespace must not change");
    let inside = ns.run_in(|| thread_ns("net"))?;
    assert_ne!(inside, host_net);

    // iproute2 sees it and can enter it.
    assert!(run("ip", &["netns", "list"]).lines().any(|l| l.split_whitespace().next() == Some(&name)));
    let links = run("ip", &["netns", "exec", &name, "ip", "-o", "link", "show"]);
    assert_eq!(links.lines().filter_map(line_link_name).collect::<Vec<_>>(), ["lo"]);

    // A second create of the same name fails and leaves the first in place.
    assert!(matches!(NetNs::create(&name), Err(Error::NamespaceExists(n)) if n == name));
    let opened = NetNs::open(&name)?;
    assert!(!opened.is_owned());
    assert_eq!(opened.run_in(|| thread_ns("net"))?, inside);
    drop(opened);
    assert_eq!(ns.run_in(|| thread_ns("net"))?, inside, "dropping an opened namespace keeps it");

    // ip_forward: only in namespaces we created, and never the host's.
    assert!(!ns.ip_forward()?);
    ns.enable_ip_forward()?;
    assert!(ns.ip_forward()?);
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?, host_forward);
    assert!(matches!(NetNs::open(&name)?.enable_ip_forward(), Err(Error::NotOwned(_))));
    assert!(matches!(NetNs::current()?.enable_ip_forward(), Err(Error::NotOwned(_))));

    ns.delete()?;
    assert!(matches!(NetNs::open(&name), Err(Error::NamespaceNotFound(_))));

    // Dropping the guard removes it too.
    let dropped = names.netns("b");
    drop(NetNs::create(&dropped)?);
    assert!(matches!(NetNs::open(&dropped), Err(Error::NamespaceNotFound(_))));

    assert!(matches!(NetNs::create("a/b"), Err(Error::InvalidName { .. })));
    names.assert_host_clean();
    Ok(())
}

#[tokio::test]
async fn pods_on_a_bridge_reach_each_other_without_nat() -> Result<()> {
    let mut names = TestNames::new();
    // The "node": a namespace holding the bridge, so the host's network is never touched.
    let node = NetNs::create(&names.netns("node"))?;
    let pod_a = NetNs::create(&names.netns("a"))?;
    let pod_b = NetNs::create(&names.netns("b"))?;
    let (gateway, ip_a, ip_b) = (names.ip(0, 1), names.ip(0, 2), names.ip(0, 3));

    let node_nl = node.netlink()?;
    loopback_up(&node_nl).await?;
    let bridge = node_nl.create_bridge(&names.link("br")).await?;
    node_nl.add_address(bridge.index(), gateway, 24).await?;
    assert_eq!(node_nl.addresses(bridge.index()).await?, [(gateway, 24)]);

    let mut veths = Vec::new();
    for (pod, ip, tag) in [(&pod_a, ip_a, "va"), (&pod_b, ip_b, "vb")] {
        let veth = node_nl.create_veth(&names.link(tag), pod, "eth0").await?;
        node_nl.set_controller(veth.index(), bridge.index()).await?;
        node_nl.set_up(veth.index()).await?;
        let state = node_nl.link_state(veth.index()).await?;
        assert_eq!((state.up, state.controller), (true, Some(bridge.index())));
        let pod_nl = configure_pod(pod, ip).await?;
        pod_nl.add_default_route(gateway).await?;
        veths.push(veth);
    }

    // a -> b, and the server sees a's own address (no NAT).
    let peer = tcp_exchange(&pod_b, ip_b, &pod_a)?;
    assert_eq!(peer.ip(), ip_a);
    // node -> a over the bridge, and b -> a.
    assert_eq!(tcp_exchange(&pod_a, ip_a, &node)?.ip(), gateway);
    assert_eq!(tcp_exchange(&pod_a, ip_a, &pod_b)?.ip(), ip_b);

    // MTU and down/up.
    node_nl.set_mtu(veths[0].index(), 1400).await?;
    node_nl.set_down(veths[0].index()).await?;
    let state = node_nl.link_state(veths[0].index()).await?;
    assert_eq!((state.mtu, state.up), (1400, false));

    // The host's `ip link` never showed any of it; the veth peers are `eth0` in the pods.
    names.assert_no_host_links();
    let node_links: Vec<String> = node_nl.links().await?.into_iter().map(|(_, n)| n).collect();
    for link in &names.links {
        assert!(node_links.contains(link), "{link} not in the node namespace: {node_links:?}");
    }

    // Deleting a veth guard removes both ends.
    let veth_b = veths.pop().unwrap();
    let veth_b_name = veth_b.name().to_owned();
    veth_b.delete().await?;
    assert_eq!(node_nl.link_index(&veth_b_name).await?, None);
    assert_eq!(pod_b.netlink()?.link_index("eth0").await?, None);

    drop((veths, bridge, pod_a, pod_b, node));
    names.assert_host_clean();
    Ok(())
}

#[tokio::test]
async fn a_router_namespace_forwards_between_subnets() -> Result<()> {
    let mut names = TestNames::new();
    let router = NetNs::create(&names.netns("rtr"))?;
    let pod_a = NetNs::create(&names.netns("a"))?;
    let pod_b = NetNs::create(&names.netns("b"))?;
    let (gw_a, ip_a) = (names.ip(1, 1), names.ip(1, 2));
    let (gw_b, ip_b) = (names.ip(2, 1), names.ip(2, 2));

    let router_nl = router.netlink()?;
    let mut guards = Vec::new();
    for (pod, gw, tag) in [(&pod_a, gw_a, "ra"), (&pod_b, gw_b, "rb")] {
        let veth = router_nl.create_veth(&names.link(tag), pod, "eth0").await?;
        router_nl.add_address(veth.index(), gw, 24).await?;
        router_nl.set_up(veth.index()).await?;
        guards.push(veth);
    }
    // a reaches b's subnet through a route to the CIDR; b uses a default route.
    let a_nl = configure_pod(&pod_a, ip_a).await?;
    let a_eth0 = a_nl.link_index("eth0").await?.context("eth0")?;
    a_nl.add_route(names.ip(2, 0), 24, Some(gw_a), Some(a_eth0)).await?;
    configure_pod(&pod_b, ip_b).await?.add_default_route(gw_b).await?;

    // Without forwarding in the router, nothing gets across.
    assert!(!router.ip_forward()?);
    let blocked = pod_a.run_in(|| TcpStream::connect_timeout(&(ip_b, 9).into(), Duration::from_secs(1)))?;
    assert!(blocked.is_err(), "connected across a router that does not forward");

    router.enable_ip_forward()?;
    assert_eq!(tcp_exchange(&pod_b, ip_b, &pod_a)?.ip(), ip_a);
    assert_eq!(tcp_exchange(&pod_a, ip_a, &pod_b)?.ip(), ip_b);

    // An on-link route (no gateway) to a /32 through a device.
    let router_a = guards[0].index();
    router_nl.add_route(names.ip(3, 9), 32, None, Some(router_a)).await?;

    drop((guards, router, pod_a, pod_b));
    names.assert_host_clean();
    Ok(())
}

#[tokio::test]
async fn a_sandboxed_process_sees_its_own_hostname_pid_and_files() -> Result<()> {
    let mut names = TestNames::new();
    let ns = NetNs::create(&names.netns("pod"))?;
    loopback_up(&ns.netlink()?).await?;
    let dir = tempfile::tempdir()?;
    let hostname = format!("pod-{}-{}", std::process::id(), names.n);
    let resolv_conf = "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
    let hosts = format!("127.0.0.1\tlocalhost\n{}\t{hostname}\n", names.ip(0, 2));
    let sandbox = Sandbox::new(&ns, SandboxConfig { hostname: &hostname, resolv_conf, hosts: &hosts, state_dir: &dir.path().join("sandbox") })?;

    let host_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf")?;
    let (host_mnt, host_pid_ns, host_uts) = (thread_ns("mnt"), thread_ns("pid"), thread_ns("uts"));

    let log = dir.path().join("out.log");
    let script = r#"
        echo "pid=$$"
        echo "hostname=$(cat /proc/sys/kernel/hostname)"
        echo "env=$FOO path=$PATH"
        echo "cwd=$(pwd)"
        echo "procs=$(ls /proc | grep -c '^[0-9]')"
        echo "init=$(tr '\0' ' ' < /proc/1/cmdline)"
        echo "netdevs=$(ls /sys/class/net | tr '\n' ' ')"
        echo "--- resolv.conf"
        cat /etc/resolv.conf
        echo "--- hosts"
        cat /etc/hosts
        echo "to stderr" >&2
    "#;
    let mut process = sandbox.spawn(PodCommand::new("sh").args(["-c", script]).env("FOO", "bar").current_dir("/tmp").stdout(&log).stderr(&log))?;
    assert_ne!(process.pid(), 1, "pid() is the node-side pid");
    let status = process.wait().await?;
    let output = std::fs::read_to_string(&log)?;
    assert!(status.success(), "{status}: {output}");

    let line = |key: &str| -> String {
        output.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}= in {output}")).trim().to_owned()
    };
    assert_eq!(line("pid"), "1");
    assert_eq!(line("hostname"), hostname);
    assert!(line("env").starts_with("bar path=/usr/local/sbin:"), "{output}");
    assert_eq!(line("cwd"), "/tmp");
    // sh, the subshell of `$(...)` and its ls and grep: nothing of the node's.
    let procs: u32 = line("procs").parse()?;
    assert!((1..=4).contains(&procs), "saw {procs} processes:\n{output}");
    assert!(line("init").starts_with("sh -c"), "{output}");
    assert_eq!(line("netdevs"), "lo");
    let files = output.split_once("--- resolv.conf\n").unwrap().1;
    assert_eq!(files, format!("{resolv_conf}--- hosts\n{hosts}to stderr\n"));

    // The node is as it was.
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/hostname")?, host_hostname);
    assert_eq!(std::fs::read_to_string("/etc/resolv.conf")?, host_resolv);
    assert_eq!((thread_ns("mnt"), thread_ns("pid"), thread_ns("uts")), (host_mnt, host_pid_ns, host_uts));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(!mountinfo.contains(dir.path().to_str().unwrap()), "a sandbox mount leaked:\n{mountinfo}");

    // A program that does not exist is a spawn error.
    let missing = sandbox.spawn(&PodCommand::new("/nonexistent/svcnet-test-program"));
    assert!(matches!(missing, Err(Error::Spawn { .. })), "{missing:?}");

    drop((sandbox, ns));
    names.assert_host_clean();
    Ok(())
}

#[tokio::test]
async fn killing_inside_a_pod_stays_inside_it() -> Result<()> {
    let mut names = TestNames::new();
    let dir = tempfile::tempdir()?;
    let mut sandboxes = Vec::new();
    for tag in ["a", "b"] {
        let ns = NetNs::create(&names.netns(tag))?;
        let config = SandboxConfig { hostname: tag, resolv_conf: "nameserver 10.96.0.10\n", hosts: "127.0.0.1\tlocalhost\n", state_dir: &dir.path().join(tag) };
        sandboxes.push((Sandbox::new(&ns, config)?, ns));
    }

    let mut sleeper = sandboxes[0].0.spawn(PodCommand::new("sleep").arg("60"))?;
    // Pod b's PID 1 kills everything it can see, then tries to kill itself. `kill -1` is only
    // sent once `$$` proves we are PID 1 of our own PID namespace.
    let log = dir.path().join("b.log");
    let script = r#"
        [ "$$" = 1 ] || { echo "not pid 1: $$"; exit 99; }
        sleep 60 &
        kill -KILL -1
        wait
        kill -TERM 1
        kill -KILL 1
        echo survived
    "#;
    let mut killer = sandboxes[1].0.spawn(PodCommand::new("sh").args(["-c", script]).stdout(&log).stderr(&log))?;
    let status = tokio::time::timeout(Duration::from_secs(20), killer.wait()).await??;
    let output = std::fs::read_to_string(&log)?;
    assert!(status.success(), "{status}: {output}");
    assert_eq!(output, "survived\n");

    // Pod a's process never noticed.
    assert_eq!(sleeper.try_wait()?, None);
    // As PID 1 without a handler it ignores SIGTERM, even from the node.
    sleeper.signal(Signal::SIGTERM)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sleeper.try_wait()?, None);
    // SIGKILL from the node ends it.
    let status = sleeper.kill().await?;
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    // Signalling a reaped process does nothing.
    sleeper.signal(Signal::SIGKILL)?;

    // Dropping a running process kills it.
    let running = sandboxes[0].0.spawn(PodCommand::new("sleep").arg("60"))?;
    let pid = running.pid();
    drop(running);
    wait_until(|| !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie_or_gone(pid)).await?;

    drop(sandboxes);
    names.assert_host_clean();
    Ok(())
}

#[test]
fn guards_clean_up_when_a_test_panics() -> Result<()> {
    let mut names = TestNames::new();
    let outer_name = names.netns("outer");
    let inner_name = names.netns("inner");
    let bridge_name = names.link("br");
    let runtime = tokio::runtime::Runtime::new()?;
    let outer = NetNs::create(&outer_name)?;

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let _inner = NetNs::create(&inner_name).unwrap();
            let _bridge = outer.netlink().unwrap().create_bridge(&bridge_name).await.unwrap();
            panic!("the test fails half-way");
        })
    }));
    assert!(panicked.is_err());
    assert!(matches!(NetNs::open(&inner_name), Err(Error::NamespaceNotFound(_))));
    let left = runtime.block_on(async { outer.netlink()?.link_index(&bridge_name).await })?;
    assert_eq!(left, None, "the bridge guard did not delete the bridge");

    // A link whose namespace is already gone drops quietly.
    let bridge = runtime.block_on(async { outer.netlink()?.create_bridge(&bridge_name).await })?;
    drop(outer);
    drop(bridge);

    names.assert_host_clean();
    Ok(())
}

async fn wait_until(mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        if Instant::now() > deadline {
            bail!("timed out");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn is_zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}
