//! The thin adapter to the kernel, inside the node's network namespace: nft scripts go to
//! libnftables in-process (a thread inside the namespace holding one context,
//! [`svcnet_netns::nftables::NftThread`]); `conntrack`, `ip` and `arping` run as commands
//! (`ip netns exec NAME ...`, or directly for the current namespace).

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use svcnet_netns::NetNs;
use svcnet_netns::nftables::{self, NftThread};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::ruleset::{StaleConntrack, TABLE};
use crate::{Error, Result};

/// The network namespace the proxy programs.
#[derive(Clone, Debug)]
pub struct NodeNamespace {
    /// A name under `/run/netns`, or `None` for the namespace this process runs in.
    pub name: Option<String>,
    /// The libnftables thread in the namespace, started on first use and shared by clones.
    nft: Arc<Mutex<Option<NftThread>>>,
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
        NodeNamespace { name, nft: Arc::default() }
    }

    fn command(&self, program: &str) -> Command {
        match &self.name {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    /// The libnftables thread inside the namespace (for `None`, the namespace of the thread
    /// that first needs it, which is the process's).
    fn nft(&self) -> Result<NftThread> {
        let mut slot = self.nft.lock().expect("not poisoned");
        if let Some(thread) = &*slot {
            return Ok(thread.clone());
        }
        let netns = self.name.as_deref().map(NetNs::open).transpose()?;
        let thread = NftThread::spawn(netns.as_ref()).map_err(nft_error)?;
        *slot = Some(thread.clone());
        Ok(thread)
    }

    /// Runs an nft script in the namespace as one transaction; returns what nft printed.
    async fn nft_run(&self, script: String) -> Result<String> {
        let thread = self.nft()?;
        let failed_script = tracing::enabled!(tracing::Level::DEBUG).then(|| script.clone());
        let result = thread.run(script).await.map_err(nft_error);
        if result.is_err()
            && let Some(script) = failed_script
        {
            tracing::debug!(script, "the nft script that failed");
        }
        result
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

    /// Applies an nft script as one transaction (what `nft -f` does, in-process).
    pub async fn apply(&self, script: String) -> Result<()> {
        self.nft_run(script).await.map(drop)
    }

    /// `nft list table inet svcnet-proxy`.
    pub async fn list_table(&self) -> Result<String> {
        self.nft_run(format!("list table inet {TABLE}")).await
    }

    /// Deletes the proxy's table, if it exists.
    pub async fn delete_table(&self) -> Result<()> {
        self.apply(format!("table inet {TABLE}\ndelete table inet {TABLE}\n")).await
    }

    /// Deletes conntrack entries that would keep UDP traffic on a stale path. Entries that do
    /// not exist are not an error.
    pub async fn delete_conntrack(&self, stale: &[StaleConntrack]) -> Result<()> {
        for entry in stale {
            let (family, args) = match entry {
                StaleConntrack::Endpoint(endpoint) => {
                    (family(&endpoint.ip), vec!["--reply-src".to_string(), endpoint.ip.to_string(), "--reply-port-src".into(), endpoint.port.to_string()])
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
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || stderr.contains("Cannot assign") || stderr.contains("not found") {
            Ok(())
        } else {
            Err(Error::Command { command: format!("ip addr del {cidr} dev {device}"), status: output.status, stderr: stderr.into_owned() })
        }
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

/// nft's error text is the whole offending line; long element lists are cut.
fn nft_error(error: nftables::Error) -> Error {
    match error {
        nftables::Error::Script { message } if message.len() > 4000 => Error::Nft(nftables::Error::Script { message: message.chars().take(4000).collect() }),
        error => Error::Nft(error),
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
