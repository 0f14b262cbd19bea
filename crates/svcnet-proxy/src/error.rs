//! The proxy's errors.

use std::path::PathBuf;

/// What can go wrong while programming the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command (`conntrack`, `ip`, `arping`) could not be started.
    #[error("starting {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    /// A command exited with an error.
    #[error("{command} failed ({status}): {stderr}")]
    Command { command: String, status: std::process::ExitStatus, stderr: String },
    /// The kernel refused an nf_tables transaction (nothing of it was applied), or the
    /// netlink socket could not be opened in the node's namespace.
    #[error("{0}")]
    NfTables(svcnet_netns::Error),
    /// Entering the node's network namespace failed.
    #[error("network namespace: {0}")]
    Netns(#[from] svcnet_netns::Error),
    /// Binding a listener (metrics, health check) failed.
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
