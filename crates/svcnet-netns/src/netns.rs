//! Named network namespaces, compatible with `ip netns`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::{Error, Result};

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The calling thread's network namespace (`/proc/self/ns/net` is the main thread's).
const THREAD_SELF_NET: &str = "/proc/thread-self/ns/net";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// A network namespace: a named one under `/run/netns` or the calling thread's.
///
/// Created with [`NetNs::create`] it is removed when dropped (unmounted and unlinked, as
/// `ip netns delete` does; the kernel frees it, with its devices, once no process, socket or open
/// handle refers to it any more). Opened with [`NetNs::open`] or [`NetNs::current`] it is left
/// alone.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    fd: Arc<OwnedFd>,
    owned: bool,
}

// === impl NetNs ===

impl NetNs {
    /// Creates a new, empty network namespace named `name`, as `ip netns add NAME` does, with its
    /// loopback device down (see [`crate::Netlink::set_up`]).
    ///
    /// The namespace is made by a dedicated thread that `unshare`s `CLONE_NEWNET` and bind-mounts
    /// its own namespace at `/run/netns/NAME`; the calling thread's namespace never changes.
    pub fn create(name: &str) -> Result<NetNs> {
        validate_netns_name(name)?;
        ensure_run_dir()?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        // The mount point; `O_EXCL` makes a concurrent or earlier `ip netns add NAME` an error
        // rather than something we would later delete.
        match OpenOptions::new().read(true).write(true).create_new(true).mode(0o444).open(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::NamespaceExists(name.to_owned()));
            }
            Err(e) => return Err(Error::io("creating", &path)(e)),
        }
        let mounted = on_new_thread(|| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(Error::sys("unshare(CLONE_NEWNET)"))?;
            mount(Some(THREAD_SELF_NET), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(Error::sys(format!("bind-mounting a new network namespace on {}", path.display())))
        });
        if let Err(e) = mounted {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let ns = NetNs { name: name.to_owned(), fd: Arc::new(open_ns(&path)?), path, owned: true };
        Ok(ns)
    }

    /// Opens the existing namespace `/run/netns/NAME` (made by `ip netns add` or by another
    /// process). Dropping it leaves the namespace in place.
    pub fn open(name: &str) -> Result<NetNs> {
        validate_netns_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let fd = open_ns(&path).map_err(|e| match e.errno() {
            Some(Errno::ENOENT) => Error::NamespaceNotFound(name.to_owned()),
            _ => e,
        })?;
        // A plain file that is not a mounted namespace would be the namespace of its filesystem's
        // directory, not a network namespace: setns tells the two apart.
        let ns = NetNs { name: name.to_owned(), path, fd: Arc::new(fd), owned: false };
        ns.run_in(|| ())?;
        Ok(ns)
    }

    /// The calling thread's network namespace (the one `svcnet node` was started in). Dropping it
    /// does nothing.
    pub fn current() -> Result<NetNs> {
        let path = PathBuf::from(THREAD_SELF_NET);
        Ok(NetNs { name: String::new(), fd: Arc::new(open_ns(&path)?), path, owned: false })
    }

    /// The name under `/run/netns`, or `""` for [`NetNs::current`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process created the namespace (and so removes it on drop).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// A handle on the namespace that keeps it alive even after [`NetNs::delete`].
    pub(crate) fn shared_fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.fd)
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns what it returns.
    /// Sockets opened by `f` stay in this namespace wherever they are used later. A panic in `f`
    /// is resumed on the calling thread.
    ///
    /// This blocks the calling thread until `f` returns; from async code keep `f` short (open a
    /// socket, read a sysctl) or call it from `spawn_blocking`.
    pub fn run_in<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        run_in_fd(&self.fd, f)
    }

    /// Enables `net.ipv4.ip_forward` inside this namespace. Only for namespaces this process
    /// created ([`Error::NotOwned`] otherwise), so the node's own setting is never changed here.
    pub fn enable_ip_forward(&self) -> Result<()> {
        if !self.owned {
            return Err(Error::NotOwned(self.name.clone()));
        }
        self.run_in(|| fs::write(IP_FORWARD, "1").map_err(Error::io("writing", IP_FORWARD)))?
    }

    /// Reads `net.ipv4.ip_forward` inside this namespace.
    pub fn ip_forward(&self) -> Result<bool> {
        self.run_in(read_ip_forward)?
    }

    /// Sets the sysctl `key` (a path below `/proc/sys`, e.g. `net/ipv4/ip_forward`) to `value`
    /// inside this namespace. Only for namespaces this process created ([`Error::NotOwned`]
    /// otherwise), so the node's own settings are never changed here.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        if !self.owned {
            return Err(Error::NotOwned(self.name.clone()));
        }
        self.write_sysctl(key, value)
    }

    /// Sets a per-device IPv4 sysctl of `link` inside this namespace, whoever created it: `key`
    /// is `conf/NAME` (`net/ipv4/conf/LINK/NAME`, e.g. `conf/proxy_arp`) or `neigh/NAME`
    /// (`net/ipv4/neigh/LINK/NAME`, e.g. `neigh/proxy_delay`). A device's own settings change
    /// nothing else, so this is allowed in the node's own namespace too, for devices the caller
    /// created.
    pub fn set_link_sysctl(&self, link: &str, key: &str, value: &str) -> Result<()> {
        validate_link_name(link)?;
        let (section, name) = match key.split_once('/') {
            Some((section @ ("conf" | "neigh"), name)) if !name.contains('/') => (section, name),
            _ => return Err(Error::InvalidName { name: key.to_owned(), reason: "not conf/NAME or neigh/NAME" }),
        };
        self.write_sysctl(&format!("net/ipv4/{section}/{link}/{name}"), value)
    }

    /// Reads the sysctl `key` (a path below `/proc/sys`) inside this namespace, trimmed.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        self.run_in(|| fs::read_to_string(&path).map(|v| v.trim().to_owned()).map_err(Error::io("reading", &path)))?
    }

    fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key)?;
        self.run_in(|| fs::write(&path, value).map_err(Error::io("writing", &path)))?
    }

    /// The names under `/run/netns` that start with `prefix`, sorted.
    pub fn list(prefix: &str) -> Result<Vec<String>> {
        let entries = match fs::read_dir(NETNS_RUN_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", NETNS_RUN_DIR)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("listing", NETNS_RUN_DIR))?;
            if let Some(name) = entry.file_name().to_str()
                && name.starts_with(prefix)
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes the named namespace `/run/netns/NAME` as `ip netns delete NAME` does, whoever
    /// created it; a name that does not exist is not an error. For namespaces a previous run left
    /// behind (after `kill -9`), found by [`NetNs::list`]; a [`NetNs`] guard that still holds the
    /// namespace keeps it alive (its devices too) until it is dropped.
    pub fn remove_named(name: &str) -> Result<()> {
        validate_netns_name(name)?;
        remove_mount_point(&Path::new(NETNS_RUN_DIR).join(name))
    }

    /// Removes the namespace (as `ip netns delete NAME`), reporting errors that dropping ignores.
    /// Does nothing to namespaces this process did not create.
    pub fn delete(mut self) -> Result<()> {
        let owned = std::mem::replace(&mut self.owned, false);
        if owned { remove_mount_point(&self.path) } else { Ok(()) }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned {
            let _ = remove_mount_point(&self.path);
        }
    }
}

/// Sets `net.ipv4.ip_forward` = 1 in the calling thread's network namespace: on the host, the
/// host's. For the node agent running inside a node's namespace; never call it from tests that run
/// in the host's namespace.
pub fn enable_ip_forward_in_current_netns() -> Result<()> {
    fs::write(IP_FORWARD, "1").map_err(Error::io("writing", IP_FORWARD))
}

/// Checks a link name the way the kernel's `dev_valid_name` does: 1 to 15 bytes, no `/`, `:` or
/// whitespace, not `.` or `..`.
pub fn validate_link_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 15 {
        "longer than 15 bytes (IFNAMSIZ - 1)"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        "contains '/', ':' or whitespace"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName { name: name.to_owned(), reason })
}

fn validate_netns_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name.contains('/') || name.contains('\0') {
        "contains '/' or NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName { name: name.to_owned(), reason })
}

/// `/proc/sys/KEY`, for a key of `/`-separated components without `.`/`..` components.
fn sysctl_path(key: &str) -> Result<PathBuf> {
    if key.is_empty() || key.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(Error::InvalidName { name: key.to_owned(), reason: "not a sysctl path below /proc/sys" });
    }
    Ok(Path::new("/proc/sys").join(key))
}

fn read_ip_forward() -> Result<bool> {
    let value = fs::read_to_string(IP_FORWARD).map_err(Error::io("reading", IP_FORWARD))?;
    Ok(value.trim() == "1")
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::Sys { op: format!("opening {}", path.display()), source: Errno::from_raw(e.raw_os_error().unwrap_or(0)) })
}

/// Makes `/run/netns` exist and be a shared mount point, exactly as `ip netns add` does, so that a
/// namespace unmounted here is unmounted in every mount namespace that copied it.
fn ensure_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).map_err(Error::io("creating", NETNS_RUN_DIR))?;
    let make_shared = || mount(Some("none"), NETNS_RUN_DIR, Some("none"), MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind-mount it onto itself first.
        Err(Errno::EINVAL) => {
            match mount(Some(NETNS_RUN_DIR), NETNS_RUN_DIR, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>) {
                Ok(()) => {}
                // Another process won the race to make it a mount point.
                Err(Errno::EBUSY) => {}
                Err(e) => return Err(Error::sys("bind-mounting /run/netns")(e)),
            }
            make_shared().map_err(Error::sys("making /run/netns a shared mount"))
        }
        Err(e) => Err(Error::sys("making /run/netns a shared mount")(e)),
    }
}

fn remove_mount_point(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::sys(format!("unmounting {}", path.display()))(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path)(e)),
    }
}

/// Runs `f` on a new thread that has entered the network namespace `fd`.
pub(crate) fn run_in_fd<F, T>(fd: &OwnedFd, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    on_new_thread(|| {
        setns(fd, CloneFlags::CLONE_NEWNET).map_err(Error::sys("setns(CLONE_NEWNET)"))?;
        Ok(f())
    })
}

/// Runs `f` on a new thread, so whatever namespaces it enters die with that thread.
pub(crate) fn on_new_thread<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names() {
        validate_link_name("eth0").unwrap();
        validate_link_name("a23456789012345").unwrap();
        for bad in ["", "a234567890123456", "a/b", "a b", "a:b", ".", ".."] {
            assert!(matches!(validate_link_name(bad), Err(Error::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn netns_names() {
        validate_netns_name("svcnet-node-1").unwrap();
        for bad in ["", "a/b", ".", ".."] {
            assert!(matches!(validate_netns_name(bad), Err(Error::InvalidName { .. })), "{bad:?}");
        }
    }
}
