//! One node's pod network: the pod bridge, pods' veths and addresses, routes or VXLAN to the
//! other nodes, and the masquerade table.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use svcnet_netns::{FdbEntry, Link, LinkKind, Neighbour, NetNs, Netlink, Route, VxlanConfig, enable_ip_forward_in_current_netns};

use super::ipam::{Ipam, gateway};
use super::{
    DEFAULT_CLUSTER_CIDR, ETH0, Error, POD_BRIDGE, POD_VETH_PREFIX, ROUTE_PROTOCOL, Result, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI, ignore_gone,
    nft, pod_netns_name, pod_veth_name, vtep_mac,
};

/// How pods reach other nodes' pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlay {
    /// Routes to each other node's podCIDR via its node IP: nodes must share an L2 segment
    /// (flannel's `host-gw`, kindnet).
    #[default]
    None,
    /// A VXLAN device ([`super::VXLAN_DEVICE`], VNI 1, UDP port 8472) with one fdb and neighbour
    /// entry per peer and on-link routes through it (flannel's `vxlan` backend). Pods' MTU is the
    /// uplink's minus 50.
    Vxlan,
}

/// What a node's pod network is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Where the pod address allocation is kept (`<state_dir>/ipam.json`).
    pub state_dir: PathBuf,
    /// The cluster CIDR (`10.244.0.0/16`): pod traffic to addresses outside it is masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// Routes or VXLAN to other nodes.
    pub overlay: Overlay,
}

impl NodeConfig {
    /// The defaults with `state_dir`: cluster CIDR `10.244.0.0/16`, routes to other nodes.
    pub fn new(state_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig { state_dir: state_dir.into(), cluster_cidr: DEFAULT_CLUSTER_CIDR, overlay: Overlay::None }
    }
}

/// Which device connects the node to the others, for [`NodeNetwork::in_current_netns`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uplink {
    /// The device of the default route, and its first IPv4 address as the node IP.
    DefaultRoute,
    /// A named device, with the node IP given or (if `None`) its first IPv4 address.
    Device {
        /// The device's name.
        name: String,
        /// The node's IP, if not the device's first address.
        node_ip: Option<Ipv4Addr>,
    },
}

/// A pod's address, as [`NodeNetwork::attach_pod`] configured it on the pod's `eth0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    /// The pod's IP.
    pub ip: Ipv4Addr,
    /// The prefix length of the podCIDR (the pod's `eth0` address is `ip/prefix_len`).
    pub prefix_len: u8,
    /// The default gateway: the pod bridge's address.
    pub gateway: Ipv4Addr,
    /// The MTU of the pod's `eth0`.
    pub mtu: u32,
}

/// What [`NodeNetwork::reconcile`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Addresses released, with the UID that had them.
    pub released: Vec<(Ipv4Addr, String)>,
    /// Pod namespaces removed.
    pub namespaces: Vec<String>,
    /// Pod veths removed.
    pub links: Vec<String>,
}

/// The uplink as found or made.
#[derive(Clone, Debug)]
pub(crate) struct UplinkInfo {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub node_ip: Ipv4Addr,
}

/// The pod side of the node, once it has a podCIDR.
#[derive(Debug)]
struct PodSide {
    cidr: Ipv4Net,
    bridge: Link,
    vxlan: Option<Link>,
    mtu: u32,
    ipam: Ipam,
}

/// One node's network: its namespace, uplink and pod network.
///
/// Safe to share (`Arc<NodeNetwork>`): pods can be attached and detached concurrently; the
/// podCIDR and peers are set under a lock of their own.
///
/// Dropping it without [`NodeNetwork::remove`] removes the pod namespaces named after it, the pod
/// bridge and VXLAN device (with everything attached to them), and the node namespace if it
/// created it; routes via the uplink and the nftables table stay in a namespace it did not create
/// until the next run adopts them.
#[derive(Debug)]
pub struct NodeNetwork {
    netns: Arc<NetNs>,
    netlink: Netlink,
    uplink: UplinkInfo,
    pod_prefix: String,
    config: NodeConfig,
    host_link: Option<Link>,
    pods: Mutex<Option<PodSide>>,
    configure: tokio::sync::Mutex<()>,
    removed: bool,
}

// === impl NodeNetwork ===

impl NodeNetwork {
    pub(crate) fn new(
        netns: Arc<NetNs>,
        netlink: Netlink,
        uplink: UplinkInfo,
        pod_prefix: String,
        config: NodeConfig,
        host_link: Option<Link>,
    ) -> Result<NodeNetwork> {
        Ok(NodeNetwork {
            netns,
            netlink,
            uplink,
            pod_prefix,
            config,
            host_link,
            pods: Mutex::new(None),
            configure: tokio::sync::Mutex::new(()),
            removed: false,
        })
    }

    /// The node network of `svcnet node`: the calling thread's network namespace, connected by
    /// `uplink`. Pod namespaces are named `svcnet-<name>_<uid>`. Its podCIDR, bridge, routes and
    /// table are adopted from an earlier run by [`NodeNetwork::set_pod_cidr`] and
    /// [`NodeNetwork::set_peers`].
    pub async fn in_current_netns(name: &str, uplink: Uplink, config: NodeConfig) -> Result<NodeNetwork> {
        let netns = Arc::new(NetNs::current()?);
        let netlink = netns.netlink()?;
        let (index, node_ip) = match uplink {
            Uplink::DefaultRoute => {
                let routes = netlink.routes().await?;
                let index = routes
                    .iter()
                    .find(|r| r.prefix_len == 0 && r.dev.is_some())
                    .and_then(|r| r.dev)
                    .ok_or_else(|| Error::Uplink("no default route with a device".into()))?;
                (index, None)
            }
            Uplink::Device { name, node_ip } => (netlink.link_index(&name).await?.ok_or_else(|| Error::Uplink(format!("no device {name:?}")))?, node_ip),
        };
        let state = netlink.link_state(index).await?;
        let node_ip = match node_ip {
            Some(ip) => ip,
            None => {
                netlink.addresses(index).await?.first().map(|(a, _)| *a).ok_or_else(|| Error::Uplink(format!("device {:?} has no IPv4 address", state.name)))?
            }
        };
        let uplink = UplinkInfo { name: state.name, index, mtu: state.mtu, node_ip };
        NodeNetwork::new(netns, netlink, uplink, format!("svcnet-{name}"), config, None)
    }

    /// The node's network namespace (for the proxy, NetworkPolicy, probes and the node's API).
    pub fn netns(&self) -> Arc<NetNs> {
        Arc::clone(&self.netns)
    }

    /// A netlink handle in the node's namespace.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// The node's IP (its InternalIP).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.uplink.node_ip
    }

    /// The uplink device's name (`eth0` for simulated nodes).
    pub fn uplink(&self) -> &str {
        &self.uplink.name
    }

    /// The podCIDR, once set.
    pub fn pod_cidr(&self) -> Option<Ipv4Net> {
        self.pods.lock().unwrap().as_ref().map(|p| p.cidr)
    }

    /// The pod bridge's address (the pods' gateway), once the podCIDR is set.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.pod_cidr().map(gateway)
    }

    /// The MTU pods get: the uplink's, less the VXLAN overhead with [`Overlay::Vxlan`].
    pub fn pod_mtu(&self) -> u32 {
        match self.config.overlay {
            Overlay::None => self.uplink.mtu,
            Overlay::Vxlan => self.uplink.mtu - VXLAN_OVERHEAD,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// What every pod namespace of this node starts with, before `_<uid>`.
    pub fn pod_netns_prefix(&self) -> &str {
        &self.pod_prefix
    }

    /// The name of pod `uid`'s namespace: [`super::pod_netns_name`] with this node's prefix.
    pub fn pod_netns_name(&self, uid: &str) -> String {
        pod_netns_name(&self.pod_prefix, uid)
    }

    /// Gives the node its podCIDR: creates (or adopts) `cbr0` with the CIDR's first address,
    /// turns on `ip_forward` in the node's namespace and proxy ARP (with `proxy_arp_pvlan`, and
    /// no redirects, no proxy delay) on `cbr0`, writes the `inet svcnet-node` masquerade table,
    /// with [`Overlay::Vxlan`] creates the VXLAN device, and opens the address allocator.
    ///
    /// Setting the same CIDR again does nothing; another one is [`Error::PodCidrChanged`].
    pub async fn set_pod_cidr(&self, cidr: Ipv4Net) -> Result<()> {
        let cidr = cidr.trunc();
        let _configuring = self.configure.lock().await;
        if let Some(current) = self.pod_cidr() {
            return if current == cidr { Ok(()) } else { Err(Error::PodCidrChanged { current, requested: cidr }) };
        }
        if cidr.prefix_len() > 30 {
            return Err(Error::Config(format!("pod CIDR {cidr} has no address for pods")));
        }
        if !self.config.cluster_cidr.contains(&cidr) {
            tracing::warn!(%cidr, cluster_cidr = %self.config.cluster_cidr, "the pod CIDR is not inside the cluster CIDR");
        }
        let ipam = Ipam::open(&self.config.state_dir.join("ipam.json"), cidr)?;
        let mtu = self.pod_mtu();

        if self.netns.is_owned() {
            self.netns.set_sysctl("net/ipv4/ip_forward", "1")?;
            // Pods on one bridge reach each other through the node; it must not tell them to go
            // direct (they could not: their ports are isolated).
            self.netns.set_sysctl("net/ipv4/conf/all/send_redirects", "0")?;
        } else {
            // `svcnet node`: a node forwards for its pods.
            self.netns.run_in(enable_ip_forward_in_current_netns)??;
        }

        let bridge = match self.netlink.adopt_link(POD_BRIDGE, LinkKind::Bridge).await? {
            Some(link) => {
                let kind = self.netlink.link_kind(link.index()).await?.unwrap_or_default();
                if kind != "bridge" {
                    link.keep();
                    return Err(Error::LinkKindMismatch { name: POD_BRIDGE.into(), kind, expected: "bridge" });
                }
                // An earlier run's bridge (`svcnet node` after `kill -9`): keep its pods' ports,
                // replace its addresses with ours if they differ.
                link
            }
            None => self.netlink.create_bridge(POD_BRIDGE).await?,
        };
        let gateway = gateway(cidr);
        if !self.netlink.addresses(bridge.index()).await?.contains(&(gateway, cidr.prefix_len())) {
            self.netlink.add_address(bridge.index(), gateway, cidr.prefix_len()).await?;
        }
        self.netlink.set_mtu(bridge.index(), mtu).await?;
        for (key, value) in [("conf/proxy_arp", "1"), ("conf/proxy_arp_pvlan", "1"), ("conf/send_redirects", "0"), ("neigh/proxy_delay", "0")] {
            self.netns.set_link_sysctl(POD_BRIDGE, key, value)?;
        }
        self.netlink.set_up(bridge.index()).await?;

        let vxlan = match self.config.overlay {
            Overlay::None => None,
            Overlay::Vxlan => Some(self.create_vxlan(cidr).await?),
        };
        nft::apply(&self.netns, &nft::masquerade_ruleset(cidr, self.config.cluster_cidr))?;
        *self.pods.lock().unwrap() = Some(PodSide { cidr, bridge, vxlan, mtu, ipam });
        tracing::info!(pod_cidr = %cidr, %gateway, overlay = ?self.config.overlay, "pod network configured");
        Ok(())
    }

    /// The VXLAN device: recreated if an earlier run left one (its settings may differ), with the
    /// podCIDR's network address as a /32 (the address peers' routes point at, as flannel does).
    async fn create_vxlan(&self, cidr: Ipv4Net) -> Result<Link> {
        if let Some(stale) = self.netlink.adopt_link(VXLAN_DEVICE, LinkKind::Vxlan).await? {
            ignore_gone(stale.delete().await)?;
        }
        let config = VxlanConfig {
            vni: VXLAN_VNI,
            port: VXLAN_PORT,
            local: self.uplink.node_ip,
            dev: self.uplink.index,
            mtu: self.uplink.mtu - VXLAN_OVERHEAD,
            mac: vtep_mac(self.uplink.node_ip),
        };
        let link = self.netlink.create_vxlan(VXLAN_DEVICE, &config).await?;
        self.netlink.add_address(link.index(), cidr.network(), 32).await?;
        self.netlink.set_up(link.index()).await?;
        Ok(link)
    }

    /// Makes the routes (and with VXLAN the fdb and neighbour entries) to other nodes' podCIDRs
    /// exactly `peers` (node IP, podCIDR): adds what is new, changes what moved, removes what is
    /// gone. Entries for this node itself are ignored. Routes carry [`ROUTE_PROTOCOL`]; other
    /// routes are never touched.
    pub async fn set_peers(&self, peers: &[(Ipv4Addr, Ipv4Net)]) -> Result<()> {
        let _configuring = self.configure.lock().await;
        let (own_cidr, vxlan) = {
            let pods = self.pods.lock().unwrap();
            (pods.as_ref().map(|p| p.cidr), pods.as_ref().and_then(|p| p.vxlan.as_ref().map(Link::index)))
        };
        if self.config.overlay == Overlay::Vxlan && vxlan.is_none() {
            return Err(Error::NoPodCidr);
        }
        let peers: BTreeSet<(Ipv4Addr, Ipv4Net)> =
            peers.iter().map(|(ip, cidr)| (*ip, cidr.trunc())).filter(|(ip, cidr)| *ip != self.uplink.node_ip && Some(*cidr) != own_cidr).collect();

        let want: Vec<Route> = peers
            .iter()
            .map(|(ip, cidr)| match vxlan {
                None => Route {
                    destination: cidr.network(),
                    prefix_len: cidr.prefix_len(),
                    gateway: Some(*ip),
                    dev: Some(self.uplink.index),
                    onlink: false,
                    protocol: ROUTE_PROTOCOL,
                },
                Some(dev) => Route {
                    destination: cidr.network(),
                    prefix_len: cidr.prefix_len(),
                    gateway: Some(cidr.network()),
                    dev: Some(dev),
                    onlink: true,
                    protocol: ROUTE_PROTOCOL,
                },
            })
            .collect();
        let have: Vec<Route> = self.netlink.routes().await?.into_iter().filter(|r| r.protocol == ROUTE_PROTOCOL).collect();
        for route in have.iter().filter(|r| !want.contains(r)) {
            self.netlink.delete_route(route).await?;
        }
        if let Some(dev) = vxlan {
            let want_fdb: Vec<FdbEntry> = peers.iter().map(|(ip, _)| FdbEntry { mac: vtep_mac(*ip), dst: *ip }).collect();
            let want_neigh: Vec<Neighbour> = peers.iter().map(|(ip, cidr)| Neighbour { ip: cidr.network(), mac: vtep_mac(*ip) }).collect();
            for entry in self.netlink.fdb_entries(dev).await?.iter().filter(|e| !want_fdb.contains(e)) {
                self.netlink.delete_fdb(dev, entry).await?;
            }
            for neighbour in self.netlink.permanent_neighbours(dev).await?.iter().filter(|n| !want_neigh.contains(n)) {
                self.netlink.delete_neighbour(dev, neighbour.ip).await?;
            }
            for entry in &want_fdb {
                self.netlink.replace_fdb(dev, entry).await?;
            }
            for neighbour in &want_neigh {
                self.netlink.replace_neighbour(dev, neighbour).await?;
            }
        }
        for route in want.iter().filter(|r| !have.contains(r)) {
            self.netlink.replace_route(route).await?;
        }
        Ok(())
    }

    /// Creates pod `uid`'s network namespace ([`NodeNetwork::pod_netns_name`]; one an earlier
    /// run left is removed first) and attaches it ([`NodeNetwork::attach_pod`]). The namespace
    /// guard is the caller's; [`NodeNetwork::detach_pod`] removes the namespace's name too.
    pub async fn setup_pod(&self, uid: &str) -> Result<(NetNs, PodNetwork)> {
        let name = self.pod_netns_name(uid);
        NetNs::remove_named(&name)?;
        let pod_ns = NetNs::create(&name)?;
        let network = self.attach_pod(uid, &pod_ns).await?;
        Ok((pod_ns, network))
    }

    /// Wires pod `uid`'s namespace: an address from the podCIDR (the one it already has, if
    /// any), a veth [`super::pod_veth_name`] whose node side is an isolated, up port of `cbr0`
    /// and whose pod side is `eth0` with the address, up, with the default route via the gateway;
    /// `lo` up. A veth of the pod left by an earlier attempt is replaced. On failure the address
    /// is released and the veth removed.
    pub async fn attach_pod(&self, uid: &str, pod_ns: &NetNs) -> Result<PodNetwork> {
        let (ip, cidr, bridge, mtu) = {
            let mut pods = self.pods.lock().unwrap();
            let side = pods.as_mut().ok_or(Error::NoPodCidr)?;
            (side.ipam.allocate(uid)?, side.cidr, side.bridge.index(), side.mtu)
        };
        let network = PodNetwork { ip, prefix_len: cidr.prefix_len(), gateway: gateway(cidr), mtu };
        match self.wire_pod(uid, pod_ns, bridge, &network).await {
            Ok(()) => Ok(network),
            Err(e) => {
                let _ = self.delete_pod_veth(uid).await;
                if let Some(side) = self.pods.lock().unwrap().as_mut() {
                    let _ = side.ipam.release(uid);
                }
                Err(e)
            }
        }
    }

    async fn wire_pod(&self, uid: &str, pod_ns: &NetNs, bridge: u32, network: &PodNetwork) -> Result<()> {
        self.delete_pod_veth(uid).await?;
        let pod_netlink = pod_ns.netlink()?;
        if let Some(stale) = pod_netlink.link_index(ETH0).await? {
            pod_netlink.delete_link(stale).await?;
        }
        let veth = self.netlink.create_veth(&pod_veth_name(uid), pod_ns, ETH0).await?;
        let index = veth.index();
        // Managed by name from here on (detach, reconcile), not by this guard.
        veth.keep();
        self.netlink.set_mtu(index, network.mtu).await?;
        self.netlink.set_controller(index, bridge).await?;
        self.netlink.set_bridge_port_isolated(index, true).await?;
        self.netlink.set_up(index).await?;

        let lo = pod_netlink.link_index("lo").await?.ok_or_else(|| Error::Uplink("no lo in the pod namespace".into()))?;
        pod_netlink.set_up(lo).await?;
        let eth0 = pod_netlink.link_index(ETH0).await?.ok_or_else(|| Error::Uplink("the pod's eth0 vanished".into()))?;
        pod_netlink.set_mtu(eth0, network.mtu).await?;
        pod_netlink.add_address(eth0, network.ip, network.prefix_len).await?;
        pod_netlink.set_up(eth0).await?;
        pod_netlink.add_default_route(network.gateway).await?;
        Ok(())
    }

    async fn delete_pod_veth(&self, uid: &str) -> Result<Option<String>> {
        let name = pod_veth_name(uid);
        match self.netlink.adopt_link(&name, LinkKind::Veth).await? {
            Some(link) => {
                ignore_gone(link.delete().await)?;
                Ok(Some(name))
            }
            None => Ok(None),
        }
    }

    /// Undoes [`NodeNetwork::attach_pod`] (and [`NodeNetwork::setup_pod`]): deletes the pod's
    /// veth, releases its address, and removes the name of its namespace
    /// ([`NodeNetwork::pod_netns_name`]) if there is one. Detaching a pod that is not attached
    /// does nothing.
    pub async fn detach_pod(&self, uid: &str) -> Result<Option<Ipv4Addr>> {
        self.delete_pod_veth(uid).await?;
        NetNs::remove_named(&self.pod_netns_name(uid))?;
        let mut pods = self.pods.lock().unwrap();
        match pods.as_mut() {
            Some(side) => side.ipam.release(uid),
            None => Ok(None),
        }
    }

    /// Pod `uid`'s network as attached (for a restarted agent adopting a running pod): its
    /// address, if it has one and its veth exists.
    pub async fn pod(&self, uid: &str) -> Result<Option<PodNetwork>> {
        let found = {
            let pods = self.pods.lock().unwrap();
            pods.as_ref().and_then(|side| {
                side.ipam.address_of(uid).map(|ip| PodNetwork { ip, prefix_len: side.cidr.prefix_len(), gateway: gateway(side.cidr), mtu: side.mtu })
            })
        };
        match found {
            Some(network) if self.netlink.link_index(&pod_veth_name(uid)).await?.is_some() => Ok(Some(network)),
            _ => Ok(None),
        }
    }

    /// The pods with an address, by UID.
    pub fn pod_addresses(&self) -> Vec<(String, Ipv4Addr)> {
        let pods = self.pods.lock().unwrap();
        pods.as_ref().map(|side| side.ipam.allocations().map(|(a, o)| (o.to_owned(), a)).collect()).unwrap_or_default()
    }

    /// Removes what belongs to pods not in `live` (after a restart, or a crash between steps):
    /// releases their addresses, removes their namespaces (named after this node) and their veths
    /// on `cbr0`.
    pub async fn reconcile<I, S>(&self, live: I) -> Result<ReconcileReport>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let live: HashSet<String> = live.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let mut report = ReconcileReport::default();
        let bridge = {
            let mut pods = self.pods.lock().unwrap();
            match pods.as_mut() {
                Some(side) => {
                    report.released = side.ipam.retain(|owner| live.contains(owner))?;
                    Some(side.bridge.index())
                }
                None => None,
            }
        };
        let live_namespaces: HashSet<String> = live.iter().map(|uid| self.pod_netns_name(uid)).collect();
        for name in NetNs::list(&format!("{}_", self.pod_prefix))? {
            if !live_namespaces.contains(&name) {
                NetNs::remove_named(&name)?;
                report.namespaces.push(name);
            }
        }
        if let Some(bridge) = bridge {
            let live_veths: HashSet<String> = live.iter().map(|uid| pod_veth_name(uid)).collect();
            for (index, name) in self.netlink.links().await? {
                if !name.starts_with(POD_VETH_PREFIX) || live_veths.contains(&name) {
                    continue;
                }
                if self.netlink.link_state(index).await.ok().and_then(|s| s.controller) == Some(bridge) {
                    // The pair may vanish meanwhile: the kernel destroys a namespace (and its
                    // veths) asynchronously once its last user is gone.
                    ignore_gone(self.netlink.delete_link(index).await)?;
                    report.links.push(name);
                }
            }
        }
        if !report.released.is_empty() || !report.namespaces.is_empty() || !report.links.is_empty() {
            tracing::info!(
                released = report.released.len(),
                namespaces = report.namespaces.len(),
                links = report.links.len(),
                "removed the networks of pods that are gone"
            );
        }
        Ok(report)
    }

    /// Removes everything this node's network made: every pod namespace named after it and
    /// every pod veth, the routes to other nodes, the VXLAN device, `cbr0`, the nftables table,
    /// all address allocations, and the node's namespace with its uplink if it was made by
    /// [`super::HostNetwork::create_node`]. In a namespace it did not create, the uplink and
    /// `ip_forward` are left as they are.
    pub async fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.reconcile(std::iter::empty::<&str>()).await?;
        let side = self.pods.lock().unwrap().take();
        for route in self.netlink.routes().await?.into_iter().filter(|r| r.protocol == ROUTE_PROTOCOL) {
            self.netlink.delete_route(&route).await?;
        }
        if let Some(side) = side {
            if let Some(vxlan) = side.vxlan {
                ignore_gone(vxlan.delete().await)?;
            }
            ignore_gone(side.bridge.delete().await)?;
        }
        nft::apply(&self.netns, &nft::delete_ruleset())?;
        if let Some(host_link) = self.host_link.take() {
            ignore_gone(host_link.delete().await)?;
        }
        if self.netns.is_owned() {
            NetNs::remove_named(self.netns.name())?;
        }
        Ok(())
    }
}

impl NodeNetwork {
    /// Leaves the node's network as it is (pods, bridge, routes, table, addresses), for the next
    /// run to adopt, as a crash would; only this process's hold on it ends (the allocator's lock
    /// is released). A node namespace this process created stays too (its handle is leaked).
    pub fn keep(mut self) {
        self.removed = true;
        if let Some(side) = self.pods.lock().unwrap().take() {
            side.bridge.keep();
            if let Some(vxlan) = side.vxlan {
                vxlan.keep();
            }
        }
        if let Some(host_link) = self.host_link.take() {
            host_link.keep();
        }
        if self.netns.is_owned() {
            std::mem::forget(Arc::clone(&self.netns));
        }
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Best effort without a runtime: pod namespaces by name; `cbr0`, the VXLAN device and the
        // host side of the uplink through their guards (in `pods` and `host_link`); the node's
        // namespace when the last `Arc` of it goes.
        if let Ok(names) = NetNs::list(&format!("{}_", self.pod_prefix)) {
            for name in names {
                let _ = NetNs::remove_named(&name);
            }
        }
        if !self.netns.is_owned() {
            let _ = nft::apply(&self.netns, &nft::delete_ruleset());
        }
    }
}
