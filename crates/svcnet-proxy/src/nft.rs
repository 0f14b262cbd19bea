//! The thin adapter to the kernel, inside the node's network namespace: the table's skeleton
//! goes to `nft -f` (once per full sync, and only when the table lacks this skeleton), elements
//! and dynamic chains go over one nf_tables netlink socket in the namespace
//! ([`svcnet_netns::nf_tables`], encoded by [`crate::netlink`]); `conntrack`, `ip` and `arping`
//! run as commands (`ip netns exec NAME ...`, or directly for the current namespace).
//!
//! No libnftables in this process: it `select()`s on its netlink socket, and glibc aborts a
//! process whose context got a descriptor >= 1024.

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svcnet_netns::NetNs;
use svcnet_netns::nf_tables::{self, NfTables};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::model::Endpoint;
use crate::netlink;
use crate::ruleset::{Ruleset, StaleConntrack, TABLE, Transaction, UdpServing};
use crate::{Error, Result};

/// The network namespace the proxy programs.
#[derive(Clone, Debug)]
pub struct NodeNamespace {
    /// A name under `/run/netns`, or `None` for the namespace this process runs in.
    pub name: Option<String>,
    /// The nf_tables socket in the namespace, opened on first use and shared by clones.
    socket: Arc<Mutex<Option<NfTables>>>,
}

/// How a full sync went, and where its time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct FullSyncTimes {
    /// `nft -f` of the skeleton into a namespace without the table; `None` when the table was
    /// there.
    pub skeleton: Option<Duration>,
    /// `nft -f` of the whole ruleset as one script, replacing a table with another skeleton
    /// (an older svcnet's); nothing else is done then.
    pub replaced: Option<Duration>,
    /// Encoding the elements into netlink messages.
    pub encode: Duration,
    /// The kernel's transaction of every element.
    pub commit: Duration,
    /// Messages and bytes of that transaction.
    pub messages: usize,
    pub bytes: usize,
}

/// What the proxy's table is, as [`NodeNamespace::table_skeleton`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableSkeleton {
    Missing,
    /// There, with this skeleton.
    Current,
    /// There, made by another version.
    Other,
}

// === impl NodeNamespace ===

impl PartialEq for NodeNamespace {
    fn eq(&self, other: &NodeNamespace) -> bool {
        self.name == other.name
    }
}

impl Eq for NodeNamespace {}

impl NodeNamespace {
    pub fn new(name: Option<String>) -> NodeNamespace {
        NodeNamespace { name, socket: Arc::default() }
    }

    /// `program` in the namespace (`ip netns exec NAME program`), to run where there is no
    /// runtime to wait on; [`NodeNamespace::command`] is the async one.
    fn std_command(&self, program: &str) -> std::process::Command {
        match &self.name {
            Some(ns) => {
                let mut command = std::process::Command::new("ip");
                command.args(["netns", "exec", ns, program]);
                command
            }
            None => std::process::Command::new(program),
        }
    }

    fn command(&self, program: &str) -> Command {
        Command::from(self.std_command(program))
    }

    /// Runs `f` with the namespace's nf_tables socket on a blocking thread (a full sync keeps
    /// the kernel busy for a while).
    async fn with_socket<T: Send + 'static>(&self, f: impl FnOnce(&mut NfTables) -> Result<T> + Send + 'static) -> Result<T> {
        let slot = Arc::clone(&self.socket);
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = slot.lock().expect("not poisoned");
            if slot.is_none() {
                let netns = name.as_deref().map(NetNs::open).transpose()?;
                *slot = Some(NfTables::open(netns.as_ref()).map_err(Error::NfTables)?);
            }
            let result = f(slot.as_mut().expect("opened above"));
            if result.is_err() {
                // Replies to what failed may still be queued: the next call opens a new socket.
                *slot = None;
            }
            result
        })
        .await
        .expect("the nf_tables task does not panic")
    }

    /// Installs the whole ruleset as the table's content, so that no Service that keeps its rules
    /// is ever without them and none gets rules before all do:
    ///
    /// - no table: the skeleton with `nft -f` (its maps empty, so it matches nothing: the same
    ///   as no table), then every element and dynamic chain in one netlink transaction;
    /// - a table with this skeleton (its comment carries [`Ruleset::skeleton_version`]: a
    ///   restart): that one netlink transaction, which empties and refills every set;
    /// - a table with another skeleton (an upgrade): the whole ruleset as one `nft -f` script
    ///   replacing the table (the slow way, about 2 s at 10,000 Services, but one transaction).
    pub async fn full_sync(&self, ruleset: &Ruleset) -> Result<FullSyncTimes> {
        let mut times = FullSyncTimes::default();
        match self.table_skeleton(ruleset.skeleton_version()).await? {
            TableSkeleton::Missing => {
                let started = Instant::now();
                self.apply(ruleset.skeleton_script()).await?;
                times.skeleton = Some(started.elapsed());
            }
            TableSkeleton::Other => {
                let started = Instant::now();
                self.apply(ruleset.full_script()).await?;
                times.replaced = Some(started.elapsed());
                return Ok(times);
            }
            TableSkeleton::Current => {}
        }
        let existing = self.with_socket(|nf| nf.chain_names(nf_tables::Family::Inet, TABLE).map_err(Error::NfTables)).await?;
        let started = Instant::now();
        let batch = cpu_bound(|| netlink::full_sync(ruleset, &existing));
        times.encode = started.elapsed();
        (times.messages, times.bytes) = (batch.len(), batch.size());
        let started = Instant::now();
        self.with_socket(move |nf| nf.commit(batch).map_err(Error::NfTables)).await?;
        times.commit = started.elapsed();
        Ok(times)
    }

    /// Whether the table is there, and with the skeleton of `version` (its comment carries
    /// it): one cheap netlink request.
    pub async fn table_skeleton(&self, version: &str) -> Result<TableSkeleton> {
        let marker = format!("skeleton {version}");
        let userdata = self.with_socket(|nf| nf.table_userdata(nf_tables::Family::Inet, TABLE).map_err(Error::NfTables)).await?;
        Ok(match userdata {
            None => TableSkeleton::Missing,
            Some(data) if String::from_utf8_lossy(&data).contains(&marker) => TableSkeleton::Current,
            Some(_) => TableSkeleton::Other,
        })
    }

    /// Applies one incremental transaction (one netlink transaction).
    pub async fn apply_transaction(&self, tx: &Transaction) -> Result<()> {
        let batch = netlink::transaction(tx);
        self.with_socket(move |nf| nf.commit(batch).map_err(Error::NfTables)).await
    }

    /// Applies an nft script as one transaction (`nft -f -`).
    pub async fn apply(&self, script: String) -> Result<()> {
        self.run_checked("nft", &["-f", "-"], Some(&script)).await.map(drop)
    }

    /// `nft list table inet svcnet-proxy`.
    pub async fn list_table(&self) -> Result<String> {
        self.run_checked("nft", &["list", "table", "inet", TABLE], None).await
    }

    /// Deletes the proxy's table, if it exists.
    pub async fn delete_table(&self) -> Result<()> {
        self.apply(format!("table inet {TABLE}\ndelete table inet {TABLE}\n")).await
    }

    async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<std::process::Output> {
        let mut command = self.command(program);
        command.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.kill_on_drop(true);
        let describe = || format!("{program} {}", args.join(" "));
        let mut child = command.spawn().map_err(|source| Error::Spawn { command: describe(), source })?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            let write = pipe.write_all(input.as_bytes()).await;
            drop(pipe);
            write.map_err(|source| Error::Spawn { command: describe(), source })?;
        }
        child.wait_with_output().await.map_err(|source| Error::Spawn { command: describe(), source })
    }

    async fn run_checked(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let output = self.run(program, args, stdin).await?;
        if !output.status.success() {
            return Err(Error::Command {
                command: format!("{program} {}", args.join(" ")),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).chars().take(4000).collect(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Deletes conntrack entries that would keep UDP traffic on a stale path. Entries that do
    /// not exist are not an error.
    pub async fn delete_conntrack(&self, stale: &[StaleConntrack]) -> Result<()> {
        for entry in stale {
            let reply =
                |endpoint: &crate::model::Endpoint| ["--reply-src".to_string(), endpoint.ip.to_string(), "--reply-port-src".into(), endpoint.port.to_string()];
            let (family, args) = match entry {
                StaleConntrack::Endpoint { frontend, port, endpoint } => {
                    let mut args = vec!["--orig-dst".to_string(), frontend.to_string(), "--dport".into(), port.to_string()];
                    args.extend(reply(endpoint));
                    (family(frontend), args)
                }
                StaleConntrack::NodePortEndpoint { node_port, endpoint } => {
                    let mut args = vec!["--dport".to_string(), node_port.to_string()];
                    args.extend(reply(endpoint));
                    (family(&endpoint.ip), args)
                }
                StaleConntrack::Frontend { ip, port } => (family(ip), vec!["--orig-dst".to_string(), ip.to_string(), "--dport".into(), port.to_string()]),
            };
            let mut all = vec!["-D", "-f", family, "-p", "udp"];
            all.extend(args.iter().map(String::as_str));
            let output = self.run("conntrack", &all, None).await?;
            // Exit status 1 with "0 flow entries" means there was nothing to delete.
            if !output.status.success() && !String::from_utf8_lossy(&output.stderr).contains("0 flow entries") {
                return Err(Error::Command {
                    command: format!("conntrack {}", all.join(" ")),
                    status: output.status,
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                });
            }
        }
        Ok(())
    }

    /// Deletes every UDP conntrack entry to a Service frontend whose reply does not come from
    /// an endpoint that frontend may now go to, as kube-proxy does on every sync: entries left
    /// from before this process (a flow to a ClusterIP that was not DNATed while no rules were
    /// there, a flow to an endpoint that left meanwhile) or from a sync that failed. Returns how
    /// many were deleted.
    pub async fn clean_udp_conntrack(&self, serving: &UdpServing) -> Result<usize> {
        let mut deleted = 0;
        for family in ["ipv4", "ipv6"] {
            let output = self.run("conntrack", &["-L", "-f", family, "-p", "udp"], None).await?;
            if !output.status.success() {
                return Err(Error::Command {
                    command: format!("conntrack -L -f {family} -p udp"),
                    status: output.status,
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                });
            }
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let Some(entry) = UdpEntry::parse(line) else { continue };
                let allowed = match serving.frontends.get(&(entry.orig_dst.ip, entry.orig_dst.port)) {
                    Some(allowed) => allowed,
                    None if serving.node_ips.contains(&entry.orig_dst.ip) => match serving.node_ports.get(&entry.orig_dst.port) {
                        Some(allowed) => allowed,
                        None => continue,
                    },
                    None => continue,
                };
                if allowed.contains(&entry.reply_src) {
                    continue;
                }
                let (src, dst, sport, dport) =
                    (entry.orig_src.ip.to_string(), entry.orig_dst.ip.to_string(), entry.orig_src.port.to_string(), entry.orig_dst.port.to_string());
                let args = ["-D", "-f", family, "-p", "udp", "-s", &src, "-d", &dst, "--sport", &sport, "--dport", &dport];
                // Gone already (it expired) is fine.
                let _ = self.run("conntrack", &args, None).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Adds `ip` as a host address to `device` (`/32` or `/128`, no prefix route).
    pub async fn add_address(&self, device: &str, ip: IpAddr) -> Result<()> {
        let cidr = host_cidr(ip);
        let output = self.run("ip", &["addr", "add", &cidr, "dev", device, "noprefixroute"], None).await?;
        if output.status.success() || String::from_utf8_lossy(&output.stderr).contains("File exists") {
            Ok(())
        } else {
            Err(Error::Command {
                command: format!("ip addr add {cidr} dev {device}"),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// Removes a host address added by [`NodeNamespace::add_address`]; a missing one is fine.
    pub async fn remove_address(&self, device: &str, ip: IpAddr) -> Result<()> {
        let cidr = host_cidr(ip);
        let output = self.run("ip", &["addr", "del", &cidr, "dev", device], None).await?;
        removed(device, &cidr, output)
    }

    /// [`NodeNamespace::remove_address`] for where there is no runtime to wait on (a `Drop`).
    pub fn remove_address_blocking(&self, device: &str, ip: IpAddr) -> Result<()> {
        let cidr = host_cidr(ip);
        let args = ["addr", "del", cidr.as_str(), "dev", device];
        let output = self
            .std_command("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn { command: format!("ip {}", args.join(" ")), source })?;
        removed(device, &cidr, output)
    }

    /// Tells the link's neighbours that `ip` is now here: gratuitous ARP (`arping -U`), or an
    /// unsolicited neighbour advertisement for IPv6 (left to the kernel's DAD-less add).
    pub async fn announce(&self, device: &str, ip: IpAddr) -> Result<()> {
        if ip.is_ipv6() {
            return Ok(());
        }
        self.run_checked("arping", &["-U", "-c", "2", "-w", "2", "-I", device, &ip.to_string()], None).await.map(drop)
    }
}

/// Runs `f` (half a second of pure work at 10,000 Services) so that the runtime's other tasks
/// (the API server's, in `svcnet up`) move to another worker meanwhile; directly on a
/// current-thread runtime, which cannot.
pub(crate) fn cpu_bound<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// One line of `conntrack -L -p udp`: the original direction's source and destination, and
/// the reply's source (where the flow really goes).
struct UdpEntry {
    orig_src: Endpoint,
    orig_dst: Endpoint,
    reply_src: Endpoint,
}

impl UdpEntry {
    fn parse(line: &str) -> Option<UdpEntry> {
        let mut addresses = [None; 4];
        let mut ports = [None; 4];
        let (mut a, mut p) = (0, 0);
        for field in line.split_whitespace() {
            if let Some(value) = field.strip_prefix("src=").or_else(|| field.strip_prefix("dst=")) {
                *addresses.get_mut(a)? = value.parse::<IpAddr>().ok();
                a += 1;
            } else if let Some(value) = field.strip_prefix("sport=").or_else(|| field.strip_prefix("dport=")) {
                *ports.get_mut(p)? = value.parse::<u16>().ok();
                p += 1;
            }
        }
        // src, dst, sport, dport of the original direction, then of the reply.
        let at = |i: usize| Some(Endpoint { ip: addresses[i]?, port: ports[i]? });
        Some(UdpEntry { orig_src: at(0)?, orig_dst: at(1)?, reply_src: at(2)? })
    }
}

/// What `ip addr del` said: a missing address is fine.
fn removed(device: &str, cidr: &str, output: std::process::Output) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || stderr.contains("Cannot assign") || stderr.contains("not found") {
        Ok(())
    } else {
        Err(Error::Command { command: format!("ip addr del {cidr} dev {device}"), status: output.status, stderr: stderr.into_owned() })
    }
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "ipv4" } else { "ipv6" }
}

fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}/32"),
        IpAddr::V6(ip) => format!("{ip}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_lines_give_both_directions() {
        let line = "udp      17 28 src=10.244.1.50 dst=10.96.0.53 sport=40053 dport=53 src=10.244.1.10 dst=10.244.1.50 sport=5353 dport=40053 mark=0 use=1";
        let entry = UdpEntry::parse(line).expect("parses");
        assert_eq!(entry.orig_src, Endpoint { ip: "10.244.1.50".parse().unwrap(), port: 40053 });
        assert_eq!(entry.orig_dst, Endpoint { ip: "10.96.0.53".parse().unwrap(), port: 53 });
        assert_eq!(entry.reply_src, Endpoint { ip: "10.244.1.10".parse().unwrap(), port: 5353 });
        assert!(UdpEntry::parse("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.").is_none());
    }
}
