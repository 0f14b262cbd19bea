//! Pod address management for one podCIDR, persisted in a file (the CNI `host-local` plugin's
//! job).
//!
//! The first address of the range is the gateway (the pod bridge's), the network and broadcast
//! addresses are never handed out, and an address is given to at most one owner (a pod UID) while
//! it is allocated. Addresses are handed out round-robin after the last one given, so an address
//! just released is not reused at once (a late packet to a deleted pod does not reach its
//! successor).
//!
//! Every change is written before it is reported: to a temporary file that is fsynced and renamed
//! over the state file, and the directory is fsynced, so a `kill -9` or power loss leaves the old
//! or the new state, never a torn one. The state file is locked (`flock`) while an [`Ipam`] is
//! open, so two agents given the same state directory fail instead of handing out one address
//! twice.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// The allocator of one podCIDR, with its state file.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    cidr: Ipv4Net,
    last: Option<Ipv4Addr>,
    allocations: BTreeMap<Ipv4Addr, String>,
    _lock: Flock<File>,
}

/// The state file's format.
#[derive(Serialize, Deserialize)]
struct StateFile {
    cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<String>,
    /// address → owner
    #[serde(default)]
    allocations: BTreeMap<String, String>,
}

// === impl Ipam ===

impl Ipam {
    /// Opens (or creates) the allocator of `cidr` whose state is kept at `path`. A state file of
    /// another CIDR (the node's podCIDR changed) is replaced by an empty one for `cidr`: its
    /// addresses cannot be in use on this node's new bridge. Fails if another process holds the
    /// file's lock, or if `cidr` is too small to have a pod address (`/31`, `/32`).
    pub fn open(path: &Path, cidr: Ipv4Net) -> Result<Ipam> {
        let cidr = cidr.trunc();
        if cidr.prefix_len() > 30 {
            return Err(Error::Config(format!("pod CIDR {cidr} has no address for pods (needs a prefix of /30 or shorter)")));
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        }
        let lock_path = path.with_extension("lock");
        let lock_file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(Error::io("opening", &lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| Error::StateLocked { path: lock_path.clone() })?;
        let mut ipam = Ipam { path: path.to_owned(), cidr, last: None, allocations: BTreeMap::new(), _lock: lock };
        match fs::read(path) {
            Ok(bytes) => ipam.load(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("reading", path)(e)),
        }
        Ok(ipam)
    }

    fn load(&mut self, bytes: &[u8]) -> Result<()> {
        let corrupt = |reason: String| Error::StateCorrupt { path: self.path.clone(), reason };
        let state: StateFile = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let cidr: Ipv4Net = state.cidr.parse().map_err(|e| corrupt(format!("cidr {:?}: {e}", state.cidr)))?;
        if cidr != self.cidr {
            tracing::warn!(path = %self.path.display(), old = %cidr, new = %self.cidr, "pod CIDR changed; starting a new address allocation");
            return Ok(());
        }
        self.last = state.last.as_deref().and_then(|a| a.parse().ok()).filter(|a| self.is_pod_address(*a));
        for (address, owner) in state.allocations {
            let address: Ipv4Addr = address.parse().map_err(|e| corrupt(format!("address {address:?}: {e}")))?;
            if !self.is_pod_address(address) {
                return Err(corrupt(format!("{address} is not a pod address of {}", self.cidr)));
            }
            self.allocations.insert(address, owner);
        }
        Ok(())
    }

    /// The range.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The gateway: the first address of the range, never handed out.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway(self.cidr)
    }

    /// How many addresses pods can have (the range minus network, gateway and broadcast).
    pub fn capacity(&self) -> u32 {
        (1u32 << (32 - self.cidr.prefix_len())) - 3
    }

    /// Whether `address` can be handed to a pod.
    pub fn is_pod_address(&self, address: Ipv4Addr) -> bool {
        self.cidr.contains(&address) && address != self.cidr.network() && address != self.cidr.broadcast() && address != self.gateway()
    }

    /// The address of `owner`: the one it already has, or a free one, written durably before it
    /// is returned. [`Error::RangeFull`] when every address is taken.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr> {
        if let Some(address) = self.address_of(owner) {
            return Ok(address);
        }
        let first = u32::from(self.cidr.network()) + 2;
        let count = self.capacity();
        let start = match self.last {
            Some(last) => u32::from(last) + 1 - first,
            None => 0,
        };
        let free = (0..count).map(|i| Ipv4Addr::from(first + (start + i) % count)).find(|a| !self.allocations.contains_key(a));
        let Some(address) = free else {
            return Err(Error::RangeFull { cidr: self.cidr, capacity: count });
        };
        let previous_last = self.last.replace(address);
        self.allocations.insert(address, owner.to_owned());
        if let Err(e) = self.save() {
            self.allocations.remove(&address);
            self.last = previous_last;
            return Err(e);
        }
        Ok(address)
    }

    /// Releases the address of `owner`, if it has one, and returns it.
    pub fn release(&mut self, owner: &str) -> Result<Option<Ipv4Addr>> {
        let Some(address) = self.address_of(owner) else { return Ok(None) };
        self.allocations.remove(&address);
        if let Err(e) = self.save() {
            self.allocations.insert(address, owner.to_owned());
            return Err(e);
        }
        Ok(Some(address))
    }

    /// Releases the addresses of every owner for which `keep` is false, and returns them.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> Result<Vec<(Ipv4Addr, String)>> {
        let released: Vec<(Ipv4Addr, String)> = self.allocations.iter().filter(|(_, owner)| !keep(owner)).map(|(a, o)| (*a, o.clone())).collect();
        if released.is_empty() {
            return Ok(released);
        }
        for (address, _) in &released {
            self.allocations.remove(address);
        }
        if let Err(e) = self.save() {
            self.allocations.extend(released.iter().cloned());
            return Err(e);
        }
        Ok(released)
    }

    /// The address `owner` has, if any.
    pub fn address_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.allocations.iter().find(|(_, o)| *o == owner).map(|(a, _)| *a)
    }

    /// Every allocation, in address order.
    pub fn allocations(&self) -> impl Iterator<Item = (Ipv4Addr, &str)> {
        self.allocations.iter().map(|(a, o)| (*a, o.as_str()))
    }

    fn save(&self) -> Result<()> {
        let state = StateFile {
            cidr: self.cidr.to_string(),
            last: self.last.map(|a| a.to_string()),
            allocations: self.allocations.iter().map(|(a, o)| (a.to_string(), o.clone())).collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&state).expect("serializing a map of strings");
        bytes.push(b'\n');
        write_durably(&self.path, &bytes)
    }
}

/// The gateway of a pod range: its first address.
pub fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content: a temporary file
/// in the same directory, fsynced, renamed over `path`, then the directory fsynced.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(Error::io("creating", &tmp))?;
    file.write_all(bytes).map_err(Error::io("writing", &tmp))?;
    file.sync_all().map_err(Error::io("syncing", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(Error::io("renaming onto", path))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast_and_fills_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(&dir.path().join("ipam.json"), cidr("10.244.1.0/29")).unwrap();
        assert_eq!(ipam.capacity(), 5);
        let mut got: Vec<Ipv4Addr> = (0..5).map(|i| ipam.allocate(&format!("pod-{i}")).unwrap()).collect();
        got.sort();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 244, 1, h)).collect();
        assert_eq!(got, want);
        let err = ipam.allocate("pod-5").unwrap_err();
        assert!(matches!(err, Error::RangeFull { capacity: 5, .. }), "{err}");
        assert_eq!(err.to_string(), "no free address in 10.244.1.0/29: all 5 pod addresses are allocated");
        // The same owner gets its own address back, even when the range is full.
        assert_eq!(ipam.allocate("pod-3").unwrap(), Ipv4Addr::new(10, 244, 1, 5));
    }

    #[test]
    fn release_then_round_robin_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        {
            let mut ipam = Ipam::open(&path, cidr("10.244.1.0/24")).unwrap();
            assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 244, 1, 2));
            assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 244, 1, 3));
            assert_eq!(ipam.release("a").unwrap(), Some(Ipv4Addr::new(10, 244, 1, 2)));
            assert_eq!(ipam.release("a").unwrap(), None);
            // Not the address just released: the next after the last one given.
            assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 244, 1, 4));
        }
        let mut ipam = Ipam::open(&path, cidr("10.244.1.0/24")).unwrap();
        let allocations: Vec<(Ipv4Addr, String)> = ipam.allocations().map(|(a, o)| (a, o.to_owned())).collect();
        assert_eq!(allocations, vec![(Ipv4Addr::new(10, 244, 1, 3), "b".to_owned()), (Ipv4Addr::new(10, 244, 1, 4), "c".to_owned())]);
        assert_eq!(ipam.allocate("d").unwrap(), Ipv4Addr::new(10, 244, 1, 5));
        let released = ipam.retain(|owner| owner == "c").unwrap();
        assert_eq!(released.len(), 2);
        assert_eq!(ipam.allocations().count(), 1);
    }

    #[test]
    fn wraps_around_after_the_last_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(&dir.path().join("ipam.json"), cidr("10.0.0.0/30")).unwrap();
        assert_eq!(ipam.capacity(), 1);
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        ipam.release("a").unwrap();
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn second_open_of_the_same_file_is_refused_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let _first = Ipam::open(&path, cidr("10.244.1.0/24")).unwrap();
        assert!(matches!(Ipam::open(&path, cidr("10.244.1.0/24")), Err(Error::StateLocked { .. })));
    }

    #[test]
    fn another_cidr_starts_empty_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        {
            let mut ipam = Ipam::open(&path, cidr("10.244.1.0/24")).unwrap();
            ipam.allocate("a").unwrap();
        }
        {
            let ipam = Ipam::open(&path, cidr("10.244.2.0/24")).unwrap();
            assert_eq!(ipam.allocations().count(), 0);
        }
        fs::write(&path, r#"{"cidr":"10.244.1.0/24","allocations":{"10.244.1.1":"gw-stolen"}}"#).unwrap();
        let err = Ipam::open(&path, cidr("10.244.1.0/24")).unwrap_err();
        assert!(err.to_string().contains("10.244.1.1 is not a pod address"), "{err}");
        fs::write(&path, "{").unwrap();
        assert!(matches!(Ipam::open(&path, cidr("10.244.1.0/24")), Err(Error::StateCorrupt { .. })));
        assert!(matches!(Ipam::open(&path, cidr("10.244.1.0/31")), Err(Error::Config(_))));
    }
}
