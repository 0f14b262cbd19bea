//! The host side of `svcnet up`'s simulated nodes: the host bridge and the node namespaces on it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use svcnet_netns::{Link, LinkKind, NetNs, Netlink, validate_link_name};

use super::node::{NodeConfig, NodeNetwork, UplinkInfo};
use super::{DEFAULT_BRIDGE, DEFAULT_NODE_NETWORK, ETH0, Error, MAX_BRIDGE_NAME, Result, ignore_gone};

/// What [`HostNetwork::create`] sets up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// The host bridge's name, at most [`MAX_BRIDGE_NAME`] bytes (`svcnet0`).
    pub bridge: String,
    /// The node network (`172.30.0.0/16`): the bridge has its first address, node `i` (from 1)
    /// address `i + 1`.
    pub node_network: Ipv4Net,
}

impl Default for HostConfig {
    fn default() -> HostConfig {
        HostConfig { bridge: DEFAULT_BRIDGE.to_owned(), node_network: DEFAULT_NODE_NETWORK }
    }
}

/// The host bridge and the namespaces of the nodes on it.
///
/// Dropping it (or [`HostNetwork::shutdown`]) removes the bridge and every namespace and link named
/// after it (`<bridge>-*`, `<bridge>n*`), including those of [`NodeNetwork`]s still alive.
#[derive(Debug)]
pub struct HostNetwork {
    config: HostConfig,
    host_ns: Arc<NetNs>,
    netlink: Netlink,
    bridge: Option<Link>,
    host_ip: Ipv4Addr,
}

// === impl HostNetwork ===

impl HostNetwork {
    /// Creates the host bridge in the calling thread's network namespace (the host's), or adopts
    /// the one a previous run left, after removing whatever else that run left
    /// ([`HostNetwork::remove_stale`]).
    pub async fn create(config: HostConfig) -> Result<HostNetwork> {
        HostNetwork::create_in(Arc::new(NetNs::current()?), config).await
    }

    /// As [`HostNetwork::create`], in the namespace `host_ns` (tests use a namespace of their own
    /// as the "host").
    pub async fn create_in(host_ns: Arc<NetNs>, config: HostConfig) -> Result<HostNetwork> {
        validate_bridge_name(&config.bridge)?;
        let node_network = config.node_network.trunc();
        if node_network.prefix_len() > 29 {
            return Err(Error::Config(format!("node network {node_network} is too small")));
        }
        let host_ip = Ipv4Addr::from(u32::from(node_network.network()) + 1);
        let netlink = host_ns.netlink()?;
        remove_stale_in(&netlink, &config.bridge).await?;

        let bridge = match netlink.adopt_link(&config.bridge, LinkKind::Bridge).await? {
            Some(link) => {
                let kind = netlink.link_kind(link.index()).await?.unwrap_or_default();
                if kind != "bridge" {
                    link.keep();
                    return Err(Error::LinkKindMismatch { name: config.bridge.clone(), kind, expected: "bridge" });
                }
                tracing::info!(bridge = %config.bridge, "adopting the host bridge a previous run left");
                link
            }
            None => netlink.create_bridge(&config.bridge).await?,
        };
        if !netlink.addresses(bridge.index()).await?.contains(&(host_ip, node_network.prefix_len())) {
            netlink.add_address(bridge.index(), host_ip, node_network.prefix_len()).await?;
        }
        netlink.set_up(bridge.index()).await?;
        Ok(HostNetwork { config: HostConfig { bridge: config.bridge, node_network }, host_ns, netlink, bridge: Some(bridge), host_ip })
    }

    /// The host bridge's name.
    pub fn bridge(&self) -> &str {
        &self.config.bridge
    }

    /// The host bridge's address (the node network's first), where cluster DNS listens.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The node network.
    pub fn node_network(&self) -> Ipv4Net {
        self.config.node_network
    }

    /// The namespace the bridge is in.
    pub fn netns(&self) -> &Arc<NetNs> {
        &self.host_ns
    }

    /// The address of node `index` (from 1): the node network's address `index + 1`.
    pub fn node_ip(&self, index: u32) -> Result<Ipv4Addr> {
        let network = self.config.node_network;
        let address = u32::from(network.network()).checked_add(index).and_then(|a| a.checked_add(1)).map(Ipv4Addr::from);
        match address {
            Some(address) if index >= 1 && network.contains(&address) && address != network.broadcast() => Ok(address),
            _ => Err(Error::Config(format!("node index {index} has no address in the node network {network}"))),
        }
    }

    /// The name of node `name`'s namespace: `<bridge>-<name>`.
    pub fn node_netns_name(&self, name: &str) -> String {
        format!("{}-{name}", self.config.bridge)
    }

    /// Creates node `name` (number `index`, from 1): the namespace `<bridge>-<name>` with `lo` up
    /// and `eth0`, a veth whose host side `<bridge>n<index>` is a port of the bridge, with address
    /// [`HostNetwork::node_ip`] and the default route via the host's address. A namespace of that
    /// name left by an earlier run is removed first.
    pub async fn create_node(&self, name: &str, index: u32, config: NodeConfig) -> Result<NodeNetwork> {
        let node_ip = self.node_ip(index)?;
        let ns_name = self.node_netns_name(name);
        let host_side = format!("{}n{index}", self.config.bridge);
        validate_link_name(&host_side)?;
        NetNs::remove_named(&ns_name)?;
        if let Some(stale) = self.netlink.adopt_link(&host_side, LinkKind::Veth).await? {
            ignore_gone(stale.delete().await)?;
        }
        let node_ns = Arc::new(NetNs::create(&ns_name)?);
        let bridge_index = self.bridge.as_ref().expect("the bridge exists until shutdown").index();
        let host_link = self.netlink.create_veth(&host_side, &node_ns, ETH0).await?;
        self.netlink.set_controller(host_link.index(), bridge_index).await?;
        self.netlink.set_up(host_link.index()).await?;

        let netlink = node_ns.netlink()?;
        let lo = netlink.link_index("lo").await?.ok_or_else(|| Error::Uplink("no lo in a new namespace".into()))?;
        netlink.set_up(lo).await?;
        let eth0 = netlink.link_index(ETH0).await?.ok_or_else(|| Error::Uplink(format!("no {ETH0} in {ns_name}")))?;
        netlink.add_address(eth0, node_ip, self.config.node_network.prefix_len()).await?;
        netlink.set_up(eth0).await?;
        netlink.add_default_route(self.host_ip).await?;
        let mtu = netlink.link_state(eth0).await?.mtu;

        let uplink = UplinkInfo { name: ETH0.to_owned(), index: eth0, mtu, node_ip };
        NodeNetwork::new(node_ns, netlink, uplink, ns_name, config, Some(host_link))
    }

    /// Removes every namespace named `<bridge>-*` and every link of `host_ns` named
    /// `<bridge>n<digits>`: what a run of `svcnet up` with this bridge left when it was killed.
    /// The bridge itself is left (it is adopted).
    pub async fn remove_stale(host_ns: &NetNs, bridge: &str) -> Result<()> {
        validate_bridge_name(bridge)?;
        remove_stale_in(&host_ns.netlink()?, bridge).await
    }

    /// Removes every node namespace, pod namespace and link named after the bridge, then the
    /// bridge.
    pub async fn shutdown(mut self) -> Result<()> {
        remove_stale_in(&self.netlink, &self.config.bridge).await?;
        if let Some(bridge) = self.bridge.take() {
            ignore_gone(bridge.delete().await)?;
        }
        Ok(())
    }
}

impl HostNetwork {
    /// Leaves the bridge and the nodes' namespaces in place, as a crash would (the next
    /// [`HostNetwork::create`] with this bridge removes the namespaces and adopts the bridge).
    pub fn keep(mut self) {
        if let Some(bridge) = self.bridge.take() {
            bridge.keep();
        }
    }
}

impl Drop for HostNetwork {
    fn drop(&mut self) {
        if self.bridge.is_some() {
            // Without a runtime to ask netlink: the namespaces go by name; the host ends of
            // their veths go with them once nothing holds them, and the bridge's guard deletes
            // the bridge.
            if let Ok(names) = NetNs::list(&format!("{}-", self.config.bridge)) {
                for name in names {
                    let _ = NetNs::remove_named(&name);
                }
            }
        }
    }
}

fn validate_bridge_name(bridge: &str) -> Result<()> {
    validate_link_name(bridge)?;
    if bridge.len() > MAX_BRIDGE_NAME {
        return Err(Error::Config(format!("bridge name {bridge:?} is longer than {MAX_BRIDGE_NAME} bytes (the links named after it must fit in 15)")));
    }
    Ok(())
}

async fn remove_stale_in(netlink: &Netlink, bridge: &str) -> Result<()> {
    for name in NetNs::list(&format!("{bridge}-"))? {
        tracing::info!(netns = %name, "removing a network namespace an earlier run left");
        NetNs::remove_named(&name)?;
    }
    let prefix = format!("{bridge}n");
    for (index, name) in netlink.links().await? {
        if name.strip_prefix(&prefix).is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())) {
            tracing::info!(link = %name, "removing a link an earlier run left");
            if let Err(e) = netlink.delete_link(index).await
                && e.errno() != Some(nix::errno::Errno::ENODEV)
            {
                return Err(e.into());
            }
        }
    }
    Ok(())
}
