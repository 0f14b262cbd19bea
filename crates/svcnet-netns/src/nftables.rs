//! nftables in-process, through libnftables (the library behind the `nft` command): a script is
//! parsed, checked against the kernel's tables and committed as one transaction exactly as
//! `nft -f` does it, without starting a process (about 10 ms of every `nft -f`, most of the cost
//! of one small change).
//!
//! A libnftables context talks to the kernel over a netlink socket that it opens when it is
//! created, in the network namespace of the thread that creates it. [`Nft`] is such a context, in
//! the creating thread's namespace; [`NftThread`] keeps one on a thread of its own that has
//! entered a given namespace, and runs the scripts sent to it one after the other.
//!
//! libnftables keeps some process-wide state (an interface cache it frees after every command,
//! the GMP allocator hooks), so every call into it holds one process-wide lock: contexts of
//! different namespaces (several simulated nodes in one process) take turns.
//!
//! The library is linked by its soname, `libnftables.so.1` (Debian's `libnftables1`, which the
//! `nftables` package depends on), so no development package is needed to build.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, mpsc};

use nix::sched::{CloneFlags, setns};

use crate::NetNs;

#[link(name = "libnftables.so.1", kind = "dylib", modifiers = "+verbatim")]
#[allow(unsafe_code)]
unsafe extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut c_void;
    fn nft_ctx_free(ctx: *mut c_void);
    fn nft_ctx_buffer_output(ctx: *mut c_void) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut c_void) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_ctx_get_error_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_run_cmd_from_buffer(ctx: *mut c_void, buf: *const c_char) -> c_int;
}

// glibc's, linked with every Rust program on this target.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn malloc_trim(pad: usize) -> c_int;
}

/// Scripts at least this long are followed by `malloc_trim`: libnftables frees what it allocated
/// for a script (about 200 MB for a 10,000-Service full sync), but the allocator keeps it for the
/// process unless told to give it back.
const TRIM_AFTER: usize = 1 << 20;

/// `NFT_CTX_DEFAULT`: a context with a netlink socket.
const NFT_CTX_DEFAULT: u32 = 0;

/// Serializes every call into libnftables in this process.
static LIBNFTABLES: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    // A panic while holding the lock happened in Rust code around the call, not inside it.
    LIBNFTABLES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Errors of running nftables scripts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// nft refused the script (syntax, a missing object, a conflict), or the kernel refused the
    /// transaction; nothing of it was applied. The message is nft's own error text (for an error
    /// the kernel reports, libnftables 1.0.6 marks the right columns but may quote another line of
    /// a script given as a buffer).
    #[error("nft: {message}")]
    Script {
        /// What nft printed to its error stream.
        message: String,
    },

    /// The script contains a NUL byte, which the C API cannot take.
    #[error("nft script has a NUL byte at offset {0}")]
    Nul(usize),

    /// libnftables could not create a context (or set up its output buffers).
    #[error("libnftables could not create a context")]
    Context,

    /// The thread that was to hold the context could not enter the namespace.
    #[error("entering the network namespace for nftables: {0}")]
    Namespace(#[source] crate::Error),

    /// The thread that was to hold the context could not be started.
    #[error("starting the nftables thread: {0}")]
    Thread(#[source] std::io::Error),

    /// The thread holding the context is gone (it panicked).
    #[error("the nftables thread is gone")]
    ThreadGone,
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One libnftables context, bound to the network namespace of the thread that created it.
/// Neither `Send` nor `Sync`: it stays on the thread (and so in the namespace) it was made on.
#[derive(Debug)]
pub struct Nft {
    ctx: NonNull<c_void>,
}

// === impl Nft ===

impl Nft {
    /// A context whose netlink socket is in the calling thread's network namespace, with its
    /// output and error streams buffered (so nothing is printed, and errors come back as text).
    ///
    /// libnftables ends the process when it cannot open a netlink socket at all (no
    /// `AF_NETLINK`), as `nft` does; that does not happen on a kernel with nftables.
    pub fn new() -> Result<Nft> {
        let _guard = lock();
        // SAFETY: `nft_ctx_new` has no preconditions; it returns an owned context or NULL.
        #[allow(unsafe_code)]
        let ctx = unsafe { nft_ctx_new(NFT_CTX_DEFAULT) };
        let ctx = NonNull::new(ctx).ok_or(Error::Context)?;
        let nft = Nft { ctx };
        // SAFETY: `ctx` is a live context owned by `nft`; buffering only swaps its output streams
        // for memory streams that the context owns and frees with itself.
        #[allow(unsafe_code)]
        let buffered = unsafe { nft_ctx_buffer_output(ctx.as_ptr()) == 0 && nft_ctx_buffer_error(ctx.as_ptr()) == 0 };
        if !buffered {
            return Err(Error::Context);
        }
        Ok(nft)
    }

    /// Runs `script` (the `nft -f` language) as one transaction and returns what nft printed
    /// (the output of `list` commands), or nft's error text.
    pub fn run(&mut self, script: &str) -> Result<String> {
        let script = CString::new(script).map_err(|e| Error::Nul(e.nul_position()))?;
        self.run_c(&script)
    }

    /// [`Nft::run`] for a script already NUL-terminated.
    pub fn run_c(&mut self, script: &CStr) -> Result<String> {
        let _guard = lock();
        let ctx = self.ctx.as_ptr();
        // SAFETY: `ctx` is a live context owned by `self` and used only from this thread (`Nft`
        // is neither Send nor Sync); `script` is a NUL-terminated string that outlives the call
        // and that libnftables only reads (it copies it first).
        #[allow(unsafe_code)]
        let rc = unsafe { nft_run_cmd_from_buffer(ctx, script.as_ptr()) };
        // SAFETY: as above; each getter returns the context's own NUL-terminated buffer (or NULL)
        // and rewinds it for the next command, so both are read on every run and copied before
        // anything else touches the context.
        #[allow(unsafe_code)]
        let (output, error) = unsafe { (buffer_text(nft_ctx_get_output_buffer(ctx)), buffer_text(nft_ctx_get_error_buffer(ctx))) };
        if script.to_bytes().len() >= TRIM_AFTER {
            // SAFETY: `malloc_trim` only returns free memory of the allocator's arenas to the
            // kernel; it takes the arenas' locks and has no preconditions.
            #[allow(unsafe_code)]
            unsafe {
                malloc_trim(0)
            };
        }
        if rc == 0 { Ok(output) } else { Err(Error::Script { message: error.trim_end().to_owned() }) }
    }
}

/// Copies a buffer returned by libnftables.
///
/// # Safety
/// `text` is NULL or points to a NUL-terminated string valid for the duration of the call.
#[allow(unsafe_code)]
unsafe fn buffer_text(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL, and NUL-terminated and valid by this function's contract.
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _guard = lock();
        // SAFETY: `ctx` came from `nft_ctx_new`, is freed exactly once, here, and is not used
        // afterwards; freeing closes its netlink socket and its buffers.
        #[allow(unsafe_code)]
        unsafe {
            nft_ctx_free(self.ctx.as_ptr())
        };
    }
}

/// A script for the thread, and where its result goes.
struct Request {
    script: String,
    reply: tokio::sync::oneshot::Sender<Result<String>>,
}

/// A thread of its own inside a network namespace, holding one [`Nft`] context there and running
/// the scripts sent to it in order. The thread ends when the last clone of this handle is
/// dropped (after the scripts already sent).
#[derive(Clone, Debug)]
pub struct NftThread {
    requests: mpsc::Sender<Request>,
}

// === impl NftThread ===

impl NftThread {
    /// Starts the thread: it enters `netns` (or stays in the calling thread's namespace for
    /// `None`) and creates its context there. Returns once the context exists (a few
    /// milliseconds), or with the error that prevented it.
    pub fn spawn(netns: Option<&NetNs>) -> Result<NftThread> {
        let fd = netns.map(NetNs::shared_fd);
        let name = netns.map_or("nftables".to_owned(), |ns| format!("nft {}", ns.name()));
        let (requests, incoming) = mpsc::channel::<Request>();
        let (ready, started) = mpsc::sync_channel::<Result<()>>(1);
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let entered = match &fd {
                    Some(fd) => setns(fd.as_ref(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::Namespace(crate::Error::sys("setns(CLONE_NEWNET)")(e))),
                    None => Ok(()),
                };
                drop(fd);
                let mut nft = match entered.and_then(|()| Nft::new()) {
                    Ok(nft) => nft,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                for Request { script, reply } in incoming {
                    let result = CString::new(script).map_err(|e| Error::Nul(e.nul_position())).and_then(|script| nft.run_c(&script));
                    let _ = reply.send(result);
                }
            })
            .map_err(Error::Thread)?;
        started.recv().map_err(|_| Error::ThreadGone)??;
        Ok(NftThread { requests })
    }

    /// Runs `script` on the thread as one transaction; see [`Nft::run`].
    pub async fn run(&self, script: String) -> Result<String> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.requests.send(Request { script, reply }).map_err(|_| Error::ThreadGone)?;
        result.await.map_err(|_| Error::ThreadGone)?
    }

    /// [`NftThread::run`], blocking the calling thread (not for async code).
    pub fn run_blocking(&self, script: String) -> Result<String> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.requests.send(Request { script, reply }).map_err(|_| Error::ThreadGone)?;
        result.blocking_recv().map_err(|_| Error::ThreadGone)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(name: &str) -> String {
        format!("nft{name}{}", std::process::id())
    }

    #[test]
    fn runs_in_its_namespace_and_reports_errors() {
        let ns = NetNs::create(&unique("a")).unwrap();
        let other = NetNs::create(&unique("b")).unwrap();
        let nft = NftThread::spawn(Some(&ns)).unwrap();
        let table = "table inet svcnet-nft-test {\n set s {\n type ipv4_addr\n elements = { 10.1.2.3 }\n }\n}\n";
        nft.run_blocking(table.into()).unwrap();
        let listed = nft.run_blocking("list table inet svcnet-nft-test".into()).unwrap();
        assert!(listed.contains("10.1.2.3"), "{listed}");
        // The table is in `ns` only: the other namespace (and the test's own) does not see it.
        let elsewhere = NftThread::spawn(Some(&other)).unwrap();
        let error = elsewhere.run_blocking("list table inet svcnet-nft-test".into()).unwrap_err();
        assert!(matches!(&error, Error::Script { message } if message.contains("No such file")), "{error}");
        // A failed transaction applies nothing and says why, and the context keeps working.
        let error = nft.run_blocking("add element inet svcnet-nft-test s { 10.9.9.9 }\nadd element inet svcnet-nft-test nope { 1.2.3.4 }".into()).unwrap_err();
        assert!(matches!(&error, Error::Script { message } if message.contains("No such file")), "{error}");
        let listed = nft.run_blocking("list set inet svcnet-nft-test s".into()).unwrap();
        assert!(!listed.contains("10.9.9.9"), "{listed}");
        assert!(matches!(nft.run_blocking("list\0".into()), Err(Error::Nul(4))));
        nft.run_blocking("add element inet svcnet-nft-test s { 10.9.9.9 }".into()).unwrap();
        assert!(nft.run_blocking("list set inet svcnet-nft-test s".into()).unwrap().contains("10.9.9.9"));
    }
}
