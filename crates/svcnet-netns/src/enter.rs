//! Processes started inside the namespaces of a running process: what `kubectl exec` and
//! `nsenter --target PID --net --uts --ipc --pid --mount` do, with stdin, stdout and stderr as
//! pipes or a pseudo-terminal.
//!
//! A dedicated thread unshares its filesystem attributes (so that it may change its mount
//! namespace), enters the target's IPC, UTS, network, PID and mount namespaces through
//! `/proc/PID/ns/*` and forks; the child is in all of them (for PID, it is the first process to
//! be: `setns` on a PID namespace changes only where children go). The thread then exits; no
//! caller's thread ever changes namespace.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};

use nix::errno::Errno;
use nix::pty::{Winsize, openpty};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::Signal;
use nix::unistd::setsid;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::netns::{on_new_thread, run_in_fd};
use crate::sandbox::DEFAULT_PATH;
use crate::{Error, Result};

/// The namespaces entered, in order: the mount namespace last, as entering it moves the thread's
/// root and working directory into it.
const NAMESPACES: [(&str, CloneFlags); 5] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, Winsize);

/// A command to run inside the namespaces of a running process, shaped like
/// [`std::process::Command`].
///
/// The environment defaults to the target process's initial one (`/proc/PID/environ`, what a
/// container's `env` gave it) and the working directory to the target's, as `kubectl exec` gives
/// a container's.
#[derive(Clone, Debug)]
pub struct EnterCommand {
    target: u32,
    program: OsString,
    args: Vec<OsString>,
    env: Option<Vec<(OsString, OsString)>>,
    extra_env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    stdin: bool,
    tty: Option<Winsize>,
}

/// A process started by [`EnterCommand::spawn`]. Dropping it kills it with `SIGKILL`.
#[derive(Debug)]
pub struct EnteredProcess {
    child: tokio::process::Child,
    pid: u32,
    /// Its standard input, if asked for (with a terminal: the terminal's input).
    pub stdin: Option<ProcessInput>,
    /// Its standard output (with a terminal: everything it writes to the terminal).
    pub stdout: Option<ProcessOutput>,
    /// Its standard error (none with a terminal, which carries both).
    pub stderr: Option<ProcessOutput>,
    pty: Option<Arc<OwnedFd>>,
}

/// The terminal of an [`EnteredProcess`] started with [`EnterCommand::tty`], for resizing it
/// from another task than the one waiting for the process.
#[derive(Clone, Debug)]
pub struct Terminal(Arc<OwnedFd>);

/// The writing end of an entered process's standard input.
#[derive(Debug)]
pub struct ProcessInput(Input);

#[derive(Debug)]
enum Input {
    Pipe(tokio::process::ChildStdin),
    Pty(tokio::fs::File),
}

/// The reading end of an entered process's standard output or error.
#[derive(Debug)]
pub struct ProcessOutput(Output);

#[derive(Debug)]
enum Output {
    Stdout(tokio::process::ChildStdout),
    Stderr(tokio::process::ChildStderr),
    Pty(tokio::fs::File),
}

// === impl EnterCommand ===

impl EnterCommand {
    /// A command running `program` inside the namespaces of the process `target` (a PID in the
    /// caller's PID namespace).
    pub fn new(target: u32, program: impl AsRef<OsStr>) -> EnterCommand {
        EnterCommand {
            target,
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: None,
            extra_env: Vec::new(),
            current_dir: None,
            stdin: false,
            tty: None,
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut EnterCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Replaces the environment taken from the target with exactly these variables.
    pub fn env_clear(&mut self) -> &mut EnterCommand {
        self.env = Some(Vec::new());
        self
    }

    /// Sets an environment variable (over the target's or a cleared environment).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut EnterCommand {
        self.extra_env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets the working directory (inside the target's mount namespace).
    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut EnterCommand {
        self.current_dir = Some(dir.into());
        self
    }

    /// Gives the process a standard input to write to (otherwise it reads `/dev/null`).
    pub fn stdin(&mut self, stdin: bool) -> &mut EnterCommand {
        self.stdin = stdin;
        self
    }

    /// Runs the process on a new pseudo-terminal of `cols` x `rows`, as its controlling
    /// terminal in a new session: stdin, stdout and stderr are all the terminal.
    pub fn tty(&mut self, cols: u16, rows: u16) -> &mut EnterCommand {
        self.tty = Some(Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 });
        self
    }

    /// Starts the process. Must be called from within a tokio runtime, which reaps it.
    pub fn spawn(&self) -> Result<EnteredProcess> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let program = self.program.to_string_lossy().into_owned();
        let proc_dir = PathBuf::from(format!("/proc/{}", self.target));
        // Opened first: a target that exits half-way cannot leave us in some of its namespaces only.
        let mut namespaces = Vec::with_capacity(NAMESPACES.len());
        for (name, flag) in NAMESPACES {
            let path = proc_dir.join("ns").join(name);
            let fd = File::open(&path).map(OwnedFd::from).map_err(Error::io("opening", &path))?;
            namespaces.push((fd, flag, name));
        }
        let env = match &self.env {
            Some(env) => env.clone(),
            None => read_environ(&proc_dir.join("environ"))?,
        };
        let current_dir = match &self.current_dir {
            Some(dir) => dir.clone(),
            None => fs::read_link(proc_dir.join("cwd")).unwrap_or_else(|_| PathBuf::from("/")),
        };

        let mut process = tokio::process::Command::new(&self.program);
        process.args(&self.args).env_clear().envs(env.iter().map(|(k, v)| (k, v))).current_dir(&current_dir).kill_on_drop(true);
        if !env.iter().chain(&self.extra_env).any(|(k, _)| k == "PATH") {
            process.env("PATH", DEFAULT_PATH);
        }
        process.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let pty = match self.tty {
            Some(size) => {
                let pty = openpty(Some(&size), None).map_err(Error::sys("openpty"))?;
                let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(|e| Error::Spawn { program: program.clone(), source: e });
                process.stdin(slave(&pty.slave)?).stdout(slave(&pty.slave)?).stderr(Stdio::from(pty.slave));
                #[allow(unsafe_code)]
                // SAFETY: `pre_exec` runs `become_session_leader_on_tty` between fork and exec,
                // where only async-signal-safe operations are allowed: it makes two system calls
                // (`setsid`, `ioctl(TIOCSCTTY)`) and nothing else: no allocation, no lock.
                unsafe {
                    process.pre_exec(become_session_leader_on_tty);
                }
                if env.iter().chain(&self.extra_env).all(|(k, _)| k != "TERM") {
                    process.env("TERM", "xterm");
                }
                Some(pty.master)
            }
            None => {
                process.stdin(if self.stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
                None
            }
        };

        let child = on_new_thread(|| {
            // A thread shares its filesystem attributes with the others; `setns` on a mount
            // namespace wants them private.
            unshare(CloneFlags::CLONE_FS).map_err(Error::sys("unshare(CLONE_FS)"))?;
            for (fd, flag, name) in &namespaces {
                setns(fd, *flag).map_err(Error::sys(format!("setns({name} of pid {})", self.target)))?;
            }
            let _entered = runtime.enter();
            process.spawn().map_err(|source| Error::Spawn { program: program.clone(), source })
        })?;
        drop(process);
        let pid = child.id().expect("a child just spawned has a pid");

        let mut entered = EnteredProcess { child, pid, stdin: None, stdout: None, stderr: None, pty: None };
        match pty {
            Some(master) => {
                let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| Error::Spawn { program: program.clone(), source: e });
                if self.stdin {
                    entered.stdin = Some(ProcessInput(Input::Pty(tokio::fs::File::from_std(File::from(dup(&master)?)))));
                }
                entered.stdout = Some(ProcessOutput(Output::Pty(tokio::fs::File::from_std(File::from(dup(&master)?)))));
                entered.pty = Some(Arc::new(master));
            }
            None => {
                entered.stdin = entered.child.stdin.take().map(|s| ProcessInput(Input::Pipe(s)));
                entered.stdout = entered.child.stdout.take().map(|s| ProcessOutput(Output::Stdout(s)));
                entered.stderr = entered.child.stderr.take().map(|s| ProcessOutput(Output::Stderr(s)));
            }
        }
        Ok(entered)
    }
}

/// Runs between fork and exec: must stay async-signal-safe (no allocation).
fn become_session_leader_on_tty() -> io::Result<()> {
    setsid().map_err(|e: Errno| io::Error::from_raw_os_error(e as i32))?;
    #[allow(unsafe_code)]
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal a terminal from another
    // session); fd 0 is the terminal's slave end, set up by `Command` before this hook runs.
    let rc = unsafe { nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn read_environ(path: &Path) -> Result<Vec<(OsString, OsString)>> {
    let raw = fs::read(path).map_err(Error::io("reading", path))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let eq = entry.iter().position(|b| *b == b'=')?;
            Some((OsStr::from_bytes(&entry[..eq]).to_owned(), OsStr::from_bytes(&entry[eq + 1..]).to_owned()))
        })
        .collect())
}

/// Runs `f` on a new thread that has entered the network namespace at `path` (a bind mount
/// under `/run/netns`, or `/proc/PID/ns/net`). Sockets `f` opens stay in that namespace.
pub fn run_in_netns_path<F, T>(path: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let fd = File::open(path).map(OwnedFd::from).map_err(Error::io("opening", path))?;
    run_in_fd(&fd, f)
}

// === impl EnteredProcess ===

impl EnteredProcess {
    /// Its PID in the caller's PID namespace.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it runs on a terminal.
    pub fn is_tty(&self) -> bool {
        self.pty.is_some()
    }

    /// Its terminal, if it runs on one.
    pub fn terminal(&self) -> Option<Terminal> {
        self.pty.clone().map(Terminal)
    }

    /// Waits for it to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        let pid = self.pid;
        self.child.wait().await.map_err(|e| Error::Spawn { program: format!("pid {pid}"), source: e })
    }

    /// Sends `signal`, unless it has already been reaped.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        crate::sandbox::signal_unreaped(&self.child, self.pid, signal)
    }
}

// === impl Terminal ===

impl Terminal {
    /// Sets the terminal's size (the process gets `SIGWINCH`).
    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let size = Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        #[allow(unsafe_code)]
        // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, which points at a live,
        // initialised `Winsize` (the same layout, from `libc`) for the duration of the call.
        unsafe { set_window_size(self.0.as_raw_fd(), &size) }.map_err(Error::sys("ioctl(TIOCSWINSZ)"))?;
        Ok(())
    }
}

// === impl ProcessInput ===

impl AsyncWrite for ProcessInput {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Input::Pipe(p) => Pin::new(p).poll_write(cx, buf),
            Input::Pty(f) => Pin::new(f).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Input::Pipe(p) => Pin::new(p).poll_flush(cx),
            Input::Pty(f) => Pin::new(f).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Input::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            Input::Pty(f) => Pin::new(f).poll_shutdown(cx),
        }
    }
}

// === impl ProcessOutput ===

impl AsyncRead for ProcessOutput {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Output::Stdout(p) => Pin::new(p).poll_read(cx, buf),
            Output::Stderr(p) => Pin::new(p).poll_read(cx, buf),
            // Once every slave descriptor is closed, reading the master fails with EIO: that
            // is the terminal's end of file.
            Output::Pty(f) => match Pin::new(f).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => Poll::Ready(Ok(())),
                other => other,
            },
        }
    }
}
