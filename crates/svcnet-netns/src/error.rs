use std::io;
use std::path::PathBuf;

/// Errors of namespace, link and sandbox operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace or link name the kernel or `ip netns` would not accept.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A network namespace of that name already exists under `/run/netns`.
    #[error("network namespace {0:?} already exists")]
    NamespaceExists(String),

    /// No network namespace of that name exists under `/run/netns`.
    #[error("network namespace {0:?} does not exist")]
    NamespaceNotFound(String),

    /// The namespace was not created by this process, so this crate will not change it.
    #[error("network namespace {0:?} was not created by this process; refusing to change it")]
    NotOwned(String),

    /// No link of that name exists in the namespace.
    #[error("no link named {0:?}")]
    LinkNotFound(String),

    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: String,
        /// The error number.
        source: nix::Error,
    },

    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// Starting a process failed (`fork`, the namespace setup before `exec`, or `exec` itself).
    #[error("spawning {program:?}: {source}")]
    Spawn {
        /// The program that was to run.
        program: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A netlink request failed.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// What was being requested.
        op: String,
        /// The error rtnetlink reported.
        source: rtnetlink::Error,
    },

    /// Opening a netlink socket failed.
    #[error("opening a netlink socket: {0}")]
    NetlinkSocket(#[source] io::Error),

    /// The operation needs a tokio runtime (netlink connections, process reaping) and was called
    /// outside one.
    #[error("must be called from within a tokio runtime")]
    NoRuntime,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let op = op.into();
        move |source| Error::Sys { op, source }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
        let op = op.into();
        move |source| Error::Netlink { op, source }
    }

    /// The errno of a failed netlink request or system call, if that is what this is.
    pub fn errno(&self) -> Option<nix::Error> {
        match self {
            Error::Sys { source, .. } => Some(*source),
            Error::Netlink { source: rtnetlink::Error::NetlinkError(message), .. } => Some(nix::Error::from_raw(message.raw_code().abs())),
            Error::Io { source, .. } | Error::Spawn { source, .. } | Error::NetlinkSocket(source) => source.raw_os_error().map(nix::Error::from_raw),
            _ => None,
        }
    }
}
