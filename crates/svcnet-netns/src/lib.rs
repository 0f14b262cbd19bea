//! The privileged edge of svcnet's node agent: Linux network namespaces, links, addresses and
//! routes over rtnetlink, nf_tables set elements over netlink ([`nf_tables`]), and pod sandbox
//! processes.
//!
//! This is the one crate of the workspace that may use `unsafe` (see its `Cargo.toml`): the
//! `unsafe` blocks are the `pre_exec` hooks of [`Sandbox::spawn`] and [`EnterCommand::spawn`] and
//! the terminal `ioctl`s of the latter, and `sendmmsg` in [`udp`]; each says why it is sound.
//!
//! # Objects and their guards
//!
//! Every object this crate creates is owned by a guard whose `Drop` removes it, so a caller (or a
//! test) that fails half-way still cleans up:
//!
//! - [`NetNs`]: a named network namespace, `ip netns`-compatible (a bind mount of the namespace at
//!   `/run/netns/<name>`). Created by [`NetNs::create`], removed (unmounted and unlinked) on drop.
//!   [`NetNs::open`] and [`NetNs::current`] give namespaces we did not create; those are never
//!   removed.
//! - [`Link`]: a network device (bridge, veth) created through a [`Netlink`] handle, deleted on drop.
//! - [`Sandbox`]: the per-pod files (`resolv.conf`, `hosts`), removed on drop.
//! - [`PodProcess`]: a process started in a sandbox, `SIGKILL`ed on drop (which, as it is PID 1 of
//!   its own PID namespace, kills everything it started too).
//!
//! # Threads, never the caller's namespace
//!
//! Namespaces are per thread. Nothing here changes the namespaces of a thread it did not start:
//! creating a namespace, [`NetNs::run_in`], opening a [`Netlink`] handle inside a namespace and
//! spawning a pod process each happen on a short-lived dedicated thread that `setns`/`unshare`s
//! and then exits. A netlink or ordinary socket keeps the network namespace it was created in, so a
//! socket opened in [`NetNs::run_in`] can be used from any thread afterwards.
//!
//! # Namespace layout of a pod process
//!
//! [`Sandbox::spawn`] starts a process with:
//!
//! | namespace | what the process gets |
//! | --- | --- |
//! | network | the sandbox's [`NetNs`] (shared by all processes of the pod) |
//! | UTS | a new one per process, hostname = the sandbox's hostname |
//! | mount | a new one per process, a copy of the node's with propagation `private` (recursively, so nothing mounted in it reaches the node and nothing mounted later on the node reaches it), then: `/etc/resolv.conf` and `/etc/hosts` bind-mounted from the sandbox's files; a new `proc` on `/proc` (showing only the pod's PID namespace); a new `sysfs` on `/sys` (showing the pod's network devices, as `ip netns exec` does); `/run/netns` and every namespace mount below it detached, so the pod pins no other namespace |
//! | PID | a new one per process: the process is PID 1 in it; `kill 1` or `kill -1` inside reaches only the pod's own processes; when it exits, the kernel kills whatever it left behind |
//! | IPC, user, cgroup, time | the node's (not isolated yet) |
//!
//! Each process gets its own PID namespace, as Kubernetes gives each container one unless
//! `shareProcessNamespace` is set. Being PID 1, the process ignores signals it has no handler for,
//! from inside the pod and from the node alike, except `SIGKILL`/`SIGSTOP` sent from the node:
//! a plain `SIGTERM` to a process that does not handle it does nothing, as with any container
//! runtime without an init process. The files come from the node's filesystem (no images).
//!
//! # Host safety
//!
//! Nothing here changes the node's own addresses, routes or sysctls unless asked to through a
//! function named for it: [`NetNs::enable_ip_forward`] refuses namespaces this process did not
//! create, and [`enable_ip_forward_in_current_netns`] is the explicit way to change the calling
//! thread's (possibly the host's) `net.ipv4.ip_forward`.

mod enter;
mod error;
mod link;
mod netns;
pub mod nf_tables;
mod sandbox;
pub mod udp;

pub use enter::{EnterCommand, EnteredProcess, ProcessInput, ProcessOutput, Terminal, run_in_netns_path};
pub use error::{Error, Result};
pub use link::{FdbEntry, Link, LinkKind, LinkState, Neighbour, Netlink, Route, VxlanConfig};
pub use netns::{NETNS_RUN_DIR, NetNs, enable_ip_forward_in_current_netns, validate_link_name};
pub use nix::sys::signal::Signal;
pub use sandbox::{DEFAULT_PATH, PodCommand, PodProcess, Sandbox, SandboxConfig};
