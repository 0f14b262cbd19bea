//! Links, addresses and routes of one network namespace, over rtnetlink.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::{run_in_fd, validate_link_name};
use crate::{Error, NetNs, Result};

/// An rtnetlink handle bound to one network namespace: every request made through it acts in
/// that namespace, whichever thread makes it.
///
/// Cheap to clone. Its connection runs as a task on the tokio runtime it was opened from and ends
/// when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    ns: Arc<OwnedFd>,
}

/// What a [`Link`] is, as far as this crate creates links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// One end of a veth pair; deleting it deletes the other end, wherever that is.
    Veth,
}

/// A link created through a [`Netlink`] handle, deleted when dropped (or by [`Link::delete`]).
///
/// Dropping it deletes the link from a short-lived thread with its own netlink connection, so it
/// works inside or outside a runtime; a link that is already gone (its namespace was destroyed, or
/// it was the peer of a deleted veth) is not an error.
#[derive(Debug)]
pub struct Link {
    netlink: Netlink,
    name: String,
    index: u32,
    kind: LinkKind,
    armed: bool,
}

// === impl NetNs ===

impl NetNs {
    /// Opens an rtnetlink connection inside this namespace. Must be called from within a tokio
    /// runtime, which runs the connection.
    pub fn netlink(&self) -> Result<Netlink> {
        Netlink::open_in(self.shared_fd())
    }
}

// === impl Netlink ===

impl Netlink {
    fn open_in(ns: Arc<OwnedFd>) -> Result<Netlink> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        // The socket belongs to the namespace of the thread that creates it; entering the runtime
        // registers it with the runtime's reactor.
        let (connection, handle, _) = run_in_fd(&ns, || {
            let _entered = runtime.enter();
            rtnetlink::new_connection()
        })?
        .map_err(Error::NetlinkSocket)?;
        runtime.spawn(connection);
        Ok(Netlink { handle, ns })
    }

    /// The underlying rtnetlink handle, for requests this type does not wrap.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// The index of the link named `name`, if there is one.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        validate_link_name(name)?;
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = Error::netlink(format!("get link {name}"))(e);
                if e.errno() == Some(Errno::ENODEV) { Ok(None) } else { Err(e) }
            }
        }
    }

    /// The names and indexes of all links, in index order.
    pub async fn links(&self) -> Result<Vec<(u32, String)>> {
        let messages: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await.map_err(Error::netlink("list links"))?;
        Ok(messages.iter().map(|m| (m.header.index, link_name(m).unwrap_or_default())).collect())
    }

    /// The state of the link with index `index`: name, whether it is administratively up, its MTU
    /// and the index of the bridge it is attached to.
    pub async fn link_state(&self, index: u32) -> Result<LinkState> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let message = links.try_next().await.map_err(Error::netlink(format!("get link {index}")))?.ok_or_else(|| Error::LinkNotFound(index.to_string()))?;
        let mut state = LinkState { name: link_name(&message).unwrap_or_default(), up: message.header.flags.contains(LinkFlags::Up), mtu: 0, controller: None };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::Mtu(mtu) => state.mtu = *mtu,
                LinkAttribute::Controller(index) => state.controller = Some(*index),
                _ => {}
            }
        }
        Ok(state)
    }

    /// Creates a bridge named `name`, up (`ip link add NAME type bridge; ip link set NAME up`).
    pub async fn create_bridge(&self, name: &str) -> Result<Link> {
        validate_link_name(name)?;
        self.add_link(name, LinkKind::Bridge, LinkBridge::new(name).build()).await
    }

    /// Creates a veth pair: `name` in this namespace, down, and its peer `peer_name` (e.g. `eth0`)
    /// directly in `peer_ns`, down, as `ip link add NAME type veth peer name PEER netns NS` does.
    /// The peer is made in its namespace, so its name never collides with a link here.
    ///
    /// The returned guard owns the pair: deleting `name` deletes the peer.
    pub async fn create_veth(&self, name: &str, peer_ns: &NetNs, peer_name: &str) -> Result<Link> {
        validate_link_name(name)?;
        validate_link_name(peer_name)?;
        let peer = LinkMessageBuilder::<LinkUnspec>::new().name(peer_name).setns_by_fd(peer_ns.as_fd().as_raw_fd()).build();
        let message = LinkVeth::new(name, peer_name).set_info_data(InfoData::Veth(InfoVeth::Peer(peer))).build();
        self.add_link(name, LinkKind::Veth, message).await
    }

    async fn add_link(&self, name: &str, kind: LinkKind, message: LinkMessage) -> Result<Link> {
        self.handle.link().add(message).execute().await.map_err(Error::netlink(format!("add link {name}")))?;
        let index = self.link_index(name).await?.ok_or_else(|| Error::LinkNotFound(name.to_owned()))?;
        Ok(Link { netlink: self.clone(), name: name.to_owned(), index, kind, armed: true })
    }

    /// Sets the link up (`ip link set DEV up`).
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.set(index, "up", LinkUnspec::new_with_index(index).up().build()).await
    }

    /// Sets the link down (`ip link set DEV down`).
    pub async fn set_down(&self, index: u32) -> Result<()> {
        self.set(index, "down", LinkUnspec::new_with_index(index).down().build()).await
    }

    /// Sets the link's MTU (`ip link set DEV mtu MTU`).
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set(index, "mtu", LinkUnspec::new_with_index(index).mtu(mtu).build()).await
    }

    /// Attaches the link to a bridge (`ip link set DEV master BRIDGE`).
    pub async fn set_controller(&self, index: u32, bridge: u32) -> Result<()> {
        self.set(index, "master", LinkUnspec::new_with_index(index).controller(bridge).build()).await
    }

    async fn set(&self, index: u32, what: &str, message: LinkMessage) -> Result<()> {
        self.handle.link().set(message).execute().await.map_err(Error::netlink(format!("set link {index} {what}")))
    }

    /// Deletes the link with index `index` (`ip link del DEV`).
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.handle.link().del(index).execute().await.map_err(Error::netlink(format!("delete link {index}")))
    }

    /// Adds an IPv4 address (`ip addr add ADDR/PREFIX dev DEV`).
    pub async fn add_address(&self, index: u32, address: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .execute()
            .await
            .map_err(Error::netlink(format!("add address {address}/{prefix_len} to link {index}")))
    }

    /// The IPv4 addresses of a link, with their prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink(format!("list addresses of link {index}")))?;
        let mut addresses = Vec::new();
        for message in messages {
            if message.header.index != index {
                continue;
            }
            for attribute in &message.attributes {
                if let AddressAttribute::Local(IpAddr::V4(address)) = attribute {
                    addresses.push((*address, message.header.prefix_len));
                }
            }
        }
        Ok(addresses)
    }

    /// Adds the default route via `gateway` (`ip route add default via GATEWAY`).
    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        self.add_route(Ipv4Addr::UNSPECIFIED, 0, Some(gateway), None).await
    }

    /// Adds a route to `destination/prefix_len`, via a gateway, out of a device, or both
    /// (`ip route add DEST/LEN [via GATEWAY] [dev DEV]`). Without a gateway the route is on-link
    /// (scope link), as `ip route` makes it.
    pub async fn add_route(&self, destination: Ipv4Addr, prefix_len: u8, via: Option<Ipv4Addr>, dev: Option<u32>) -> Result<()> {
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(destination, prefix_len);
        match via {
            Some(gateway) => route = route.gateway(gateway),
            None => route = route.scope(RouteScope::Link),
        }
        if let Some(index) = dev {
            route = route.output_interface(index);
        }
        self.handle.route().add(route.build()).execute().await.map_err(Error::netlink(format!(
            "add route {destination}/{prefix_len}{}{}",
            via.map(|g| format!(" via {g}")).unwrap_or_default(),
            dev.map(|d| format!(" dev {d}")).unwrap_or_default(),
        )))
    }
}

/// What [`Netlink::link_state`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The link's name.
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The MTU.
    pub mtu: u32,
    /// The index of the bridge it is attached to.
    pub controller: Option<u32>,
}

fn link_name(message: &LinkMessage) -> Option<String> {
    message.attributes.iter().find_map(|attribute| match attribute {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

// === impl Link ===

impl Link {
    /// The link's name in its namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The link's index in its namespace.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// What the link is.
    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// The handle of the namespace the link is in.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// Deletes the link now, reporting errors that dropping ignores.
    pub async fn delete(mut self) -> Result<()> {
        self.armed = false;
        self.netlink.delete_link(self.index).await
    }

    /// Leaves the link in place when this guard is dropped (for links that outlive the process,
    /// such as a node's bridge adopted on restart).
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.armed {
            let _ = delete_link_blocking(&self.netlink.ns, self.index, &self.name);
        }
    }
}

/// Deletes link `index` of namespace `ns` if it is still named `name`, on a new thread with a
/// runtime and netlink connection of its own: `Drop` may run on a runtime thread, where blocking
/// on the runtime's own connection could deadlock.
fn delete_link_blocking(ns: &OwnedFd, index: u32, name: &str) -> Result<()> {
    run_in_fd(ns, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(Error::NetlinkSocket)?;
        runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::NetlinkSocket)?;
            tokio::spawn(connection);
            let mut links = handle.link().get().match_index(index).execute();
            let current = match links.try_next().await {
                Ok(Some(message)) => link_name(&message),
                Ok(None) => None,
                Err(e) => {
                    let e = Error::netlink(format!("get link {index}"))(e);
                    if e.errno() == Some(Errno::ENODEV) {
                        return Ok(());
                    }
                    return Err(e);
                }
            };
            // Gone, or the index now names another link: nothing of ours to delete.
            if current.as_deref() != Some(name) {
                return Ok(());
            }
            match handle.link().del(index).execute().await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let e = Error::netlink(format!("delete link {name}"))(e);
                    if e.errno() == Some(Errno::ENODEV) { Ok(()) } else { Err(e) }
                }
            }
        })
    })?
}
