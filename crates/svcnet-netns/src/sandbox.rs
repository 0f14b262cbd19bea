//! Pod sandboxes: processes in a pod's network namespace with their own UTS, mount and PID
//! namespaces (the layout is in the crate documentation).

use std::collections::BTreeMap;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, sethostname, setsid};

use crate::netns::{NETNS_RUN_DIR, on_new_thread};
use crate::{Error, NetNs, Result};

/// `PATH` for a pod process whose command sets none: containerd's and Docker's default.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a [`Sandbox`] is made of besides its network namespace.
#[derive(Clone, Copy, Debug)]
pub struct SandboxConfig<'a> {
    /// The hostname its processes see (the pod's name, or `spec.hostname`); 1 to 64 bytes.
    pub hostname: &'a str,
    /// The contents of the pod's `/etc/resolv.conf`.
    pub resolv_conf: &'a str,
    /// The contents of the pod's `/etc/hosts`.
    pub hosts: &'a str,
    /// A directory of the node's where the two files are written (created if missing).
    pub state_dir: &'a Path,
}

/// A pod's sandbox: its network namespace, hostname and the files bind-mounted over
/// `/etc/resolv.conf` and `/etc/hosts` in each of its processes. Dropping it removes the files
/// (processes still running keep theirs).
#[derive(Debug)]
pub struct Sandbox {
    netns: Arc<OwnedFd>,
    hostname: String,
    resolv_conf: PathBuf,
    hosts: PathBuf,
}

/// A command to run in a [`Sandbox`], shaped like [`std::process::Command`].
///
/// Unlike `Command` the environment starts empty (a pod does not inherit the node agent's), with
/// `PATH` defaulting to [`DEFAULT_PATH`]; the working directory defaults to `/`; stdin is
/// `/dev/null`, and stdout and stderr go to `/dev/null` unless files are given (appended to, so
/// a restarted container continues its log).
#[derive(Clone, Debug)]
pub struct PodCommand {
    program: OsString,
    args: Vec<OsString>,
    env: BTreeMap<OsString, OsString>,
    current_dir: Option<PathBuf>,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

/// A process started by [`Sandbox::spawn`]: PID 1 of its own PID namespace. Dropping it kills it
/// with `SIGKILL`, and with it everything it started.
#[derive(Debug)]
pub struct PodProcess {
    child: tokio::process::Child,
    pid: u32,
}

// === impl Sandbox ===

impl Sandbox {
    /// Writes the sandbox's files and returns the sandbox of a pod whose network namespace is
    /// `netns`.
    pub fn new(netns: &NetNs, config: SandboxConfig<'_>) -> Result<Sandbox> {
        if config.hostname.is_empty() || config.hostname.len() > 64 {
            return Err(Error::InvalidName { name: config.hostname.to_owned(), reason: "a hostname must be 1 to 64 bytes" });
        }
        fs::create_dir_all(config.state_dir).map_err(Error::io("creating", config.state_dir))?;
        let resolv_conf = config.state_dir.join("resolv.conf");
        let hosts = config.state_dir.join("hosts");
        write_file(&resolv_conf, config.resolv_conf)?;
        let sandbox = Sandbox { netns: netns.shared_fd(), hostname: config.hostname.to_owned(), resolv_conf, hosts };
        write_file(&sandbox.hosts, config.hosts)?;
        Ok(sandbox)
    }

    /// The hostname its processes see.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The node-side file mounted at the pod's `/etc/resolv.conf`.
    pub fn resolv_conf_path(&self) -> &Path {
        &self.resolv_conf
    }

    /// The node-side file mounted at the pod's `/etc/hosts`.
    pub fn hosts_path(&self) -> &Path {
        &self.hosts
    }

    /// Starts `command` in the sandbox, with the namespace layout described in the crate
    /// documentation. Must be called from within a tokio runtime, which reaps the process.
    ///
    /// A dedicated thread enters the pod's network namespace, unshares new mount, UTS and PID
    /// namespaces, sets them up (hostname, private propagation, the bind mounts, `/sys`) and
    /// forks; the child, the first process of the new PID namespace and so its PID 1, mounts its
    /// own `/proc`, starts a new session and executes the program. The thread then exits, taking
    /// its namespaces with it; the calling thread's never change.
    pub fn spawn(&self, command: &PodCommand) -> Result<PodProcess> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let program = command.program.to_string_lossy().into_owned();
        let spawn_error = |source| Error::Spawn { program: program.clone(), source };

        let mut process = tokio::process::Command::new(&command.program);
        process
            .args(&command.args)
            .env_clear()
            .envs(&command.env)
            .current_dir(command.current_dir.as_deref().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(open_log(command.stdout.as_deref())?)
            .stderr(open_log(command.stderr.as_deref())?)
            .kill_on_drop(true);
        if !command.env.contains_key(OsStr::new("PATH")) {
            process.env("PATH", DEFAULT_PATH);
        }
        #[allow(unsafe_code)]
        // SAFETY: `pre_exec` runs `in_child` between fork and exec, where only async-signal-safe
        // operations are allowed. `in_child` makes two system calls (`setsid`, `mount`) on
        // static C strings: no allocation, no lock, no shared state, nothing that unwinds.
        unsafe {
            process.pre_exec(in_child);
        }

        on_new_thread(|| {
            setns(&*self.netns, CloneFlags::CLONE_NEWNET).map_err(Error::sys("setns(CLONE_NEWNET)"))?;
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWPID)
                .map_err(Error::sys("unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWPID)"))?;
            // First of all, so that nothing below propagates to the node's mount namespace.
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).map_err(Error::sys("making / a private mount"))?;
            sethostname(&self.hostname).map_err(Error::sys("sethostname"))?;
            bind_file(&self.resolv_conf, "/etc/resolv.conf")?;
            bind_file(&self.hosts, "/etc/hosts")?;
            detach_netns_mounts();
            mount_sysfs()?;
            let _entered = runtime.enter();
            let child = process.spawn().map_err(spawn_error)?;
            let pid = child.id().expect("a child just spawned has a pid");
            Ok(PodProcess { child, pid })
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.resolv_conf);
        let _ = fs::remove_file(&self.hosts);
    }
}

/// Runs in the child between fork and exec: must stay async-signal-safe (no allocation).
fn in_child() -> io::Result<()> {
    let errno = |e: Errno| io::Error::from_raw_os_error(e as i32);
    setsid().map_err(errno)?;
    // This process is the new PID namespace's first: a new procfs shows that namespace.
    mount(Some(c"proc"), c"/proc", Some(c"proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&CStr>).map_err(errno)?;
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(Error::io("writing", path))
}

fn open_log(path: Option<&Path>) -> Result<Stdio> {
    let Some(path) = path else {
        return Ok(Stdio::null());
    };
    let file: File = OpenOptions::new().create(true).append(true).mode(0o640).open(path).map_err(Error::io("opening", path))?;
    Ok(Stdio::from(file))
}

fn bind_file(source: &Path, target: &str) -> Result<()> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(Error::sys(format!("bind-mounting {} on {target}", source.display())))
}

/// Detaches `/run/netns` and every namespace mounted below it from this (private) mount namespace,
/// so that a pod's processes keep no other namespace alive. Best effort: nothing here is needed
/// for the pod to work.
fn detach_netns_mounts() {
    let Ok(mountinfo) = fs::read_to_string("/proc/thread-self/mountinfo") else {
        return;
    };
    let prefix = format!("{NETNS_RUN_DIR}/");
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|point| point == NETNS_RUN_DIR || point.starts_with(&prefix))
        .collect();
    // Children before parents.
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    points.dedup();
    for point in points {
        let _ = umount2(point.as_str(), MntFlags::MNT_DETACH);
    }
}

/// Replaces `/sys` with a sysfs of the pod's network namespace, as `ip netns exec` does.
fn mount_sysfs() -> Result<()> {
    match umount2("/sys", MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) => {}
        Err(e) => return Err(Error::sys("unmounting /sys")(e)),
    }
    mount(Some("sysfs"), "/sys", Some("sysfs"), MsFlags::empty(), None::<&str>).map_err(Error::sys("mounting sysfs on /sys"))
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === impl PodCommand ===

impl PodCommand {
    /// A command running `program` (a path, or a name looked up in the command's `PATH`).
    pub fn new(program: impl AsRef<OsStr>) -> PodCommand {
        PodCommand { program: program.as_ref().to_owned(), args: Vec::new(), env: BTreeMap::new(), current_dir: None, stdout: None, stderr: None }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut PodCommand {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut PodCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut PodCommand {
        self.env.insert(key.as_ref().to_owned(), value.as_ref().to_owned());
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut PodCommand
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self.env(key, value);
        }
        self
    }

    /// Sets the working directory (inside the pod's mount namespace).
    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut PodCommand {
        self.current_dir = Some(dir.into());
        self
    }

    /// Appends stdout to this node-side file.
    pub fn stdout(&mut self, path: impl Into<PathBuf>) -> &mut PodCommand {
        self.stdout = Some(path.into());
        self
    }

    /// Appends stderr to this node-side file (may be the stdout file).
    pub fn stderr(&mut self, path: impl Into<PathBuf>) -> &mut PodCommand {
        self.stderr = Some(path.into());
        self
    }
}

/// Sends `signal` to the child `pid`, unless it has already been reaped: from then on its pid
/// may belong to another process (`id()` is `None` once reaped). A child already gone is fine.
pub(crate) fn signal_unreaped(child: &tokio::process::Child, pid: u32, signal: Signal) -> Result<()> {
    if child.id().is_none() {
        return Ok(());
    }
    let pid = i32::try_from(pid).expect("pids fit in pid_t");
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::sys(format!("kill({pid}, {signal})"))(e)),
    }
}

// === impl PodProcess ===

impl PodProcess {
    /// The process's id in the node's PID namespace (inside the pod it is 1).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the process, unless it has already been reaped. As PID 1 of its
    /// namespace it receives only `SIGKILL`, `SIGSTOP` and the signals it has handlers for.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        signal_unreaped(&self.child, self.pid, signal)
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        let pid = self.pid;
        self.child.wait().await.map_err(|e| Error::Spawn { program: format!("pid {pid}"), source: e })
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let pid = self.pid;
        self.child.try_wait().map_err(|e| Error::Spawn { program: format!("pid {pid}"), source: e })
    }

    /// Kills the process (and so its whole PID namespace) with `SIGKILL` and waits for it.
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/run/netns/a\\040b"), "/run/netns/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trail\\04"), "/trail\\04");
    }
}
