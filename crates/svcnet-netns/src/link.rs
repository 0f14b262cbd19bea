//! Links, addresses and routes of one network namespace, over rtnetlink.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

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
    /// A VXLAN tunnel device.
    Vxlan,
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

/// A VXLAN device as [`Netlink::create_vxlan`] makes it (flannel's `vxlan` backend shape:
/// unicast only, no learning; peers are programmed with fdb and neighbour entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The UDP destination port (flannel's is 8472, the IANA one 4789).
    pub port: u16,
    /// The local tunnel endpoint address.
    pub local: Ipv4Addr,
    /// The index of the underlay device the tunnel sends through.
    pub dev: u32,
    /// The device's MTU (the underlay's minus 50 bytes of encapsulation).
    pub mtu: u32,
    /// The device's MAC address.
    pub mac: [u8; 6],
}

/// An IPv4 route of the main table, as [`Netlink::routes`] lists it and [`Netlink::replace_route`]
/// and [`Netlink::delete_route`] take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination network.
    pub destination: Ipv4Addr,
    /// Its prefix length (0 for the default route).
    pub prefix_len: u8,
    /// The next hop, if any.
    pub gateway: Option<Ipv4Addr>,
    /// The output device's index, if any.
    pub dev: Option<u32>,
    /// The next hop is on the device even though no address of the device covers it (`onlink`).
    pub onlink: bool,
    /// The routing protocol number (`ip route ... proto N`), which says who owns the route.
    pub protocol: u8,
}

/// A permanent neighbour (ARP) entry: `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The IPv4 address.
    pub ip: Ipv4Addr,
    /// The link-layer address.
    pub mac: [u8; 6],
}

/// A forwarding database entry of a VXLAN device: `bridge fdb append MAC dev DEV dst IP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The link-layer address.
    pub mac: [u8; 6],
    /// The remote tunnel endpoint.
    pub dst: Ipv4Addr,
}

// === impl Netlink: tunnels, bridge ports, neighbours, routes ===

impl Netlink {
    /// Creates a VXLAN device named `name`, down, with learning off (`ip link add NAME type vxlan
    /// id VNI local LOCAL dev DEV dstport PORT nolearning`, with `mtu` and `address` set).
    pub async fn create_vxlan(&self, name: &str, config: &VxlanConfig) -> Result<Link> {
        validate_link_name(name)?;
        let message = LinkVxlan::new(name, config.vni)
            .dev(config.dev)
            .local(config.local)
            .port(config.port)
            .learning(false)
            .mtu(config.mtu)
            .address(config.mac.to_vec())
            .build();
        self.add_link(name, LinkKind::Vxlan, message).await
    }

    /// A guard for an existing link named `name` (one this process or an earlier run of it
    /// created), which deletes it on drop like a created one; `None` if there is no such link.
    pub async fn adopt_link(&self, name: &str, kind: LinkKind) -> Result<Option<Link>> {
        Ok(self.link_index(name).await?.map(|index| Link { netlink: self.clone(), name: name.to_owned(), index, kind, armed: true }))
    }

    /// The kind of the link with index `index` as `ip -d link` names it (`bridge`, `veth`,
    /// `vxlan`, ...), or `None` for a device without one (a physical NIC, `lo`).
    pub async fn link_kind(&self, index: u32) -> Result<Option<String>> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let message = links.try_next().await.map_err(Error::netlink(format!("get link {index}")))?.ok_or_else(|| Error::LinkNotFound(index.to_string()))?;
        Ok(message.attributes.iter().find_map(|attribute| match attribute {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
                LinkInfo::Kind(kind) => Some(match kind {
                    InfoKind::Other(other) => other.clone(),
                    kind => kind.to_string(),
                }),
                _ => None,
            }),
            _ => None,
        }))
    }

    /// Makes a bridge port isolated or not (`ip link set DEV type bridge_slave isolated on|off`):
    /// an isolated port exchanges frames only with non-isolated ports and the bridge itself, never
    /// with another isolated port.
    pub async fn set_bridge_port_isolated(&self, index: u32, isolated: bool) -> Result<()> {
        let message = LinkBridgePort::new(index).isolated(isolated).build();
        self.handle.link().change(message).execute().await.map_err(Error::netlink(format!("set link {index} isolated {isolated}")))
    }

    /// Adds or replaces a permanent forwarding entry of a VXLAN device (`bridge fdb replace MAC dev
    /// DEV dst DST self permanent`).
    pub async fn replace_fdb(&self, index: u32, entry: &FdbEntry) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(index, &entry.mac)
            .destination(IpAddr::V4(entry.dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink(format!("replace fdb {} dst {} dev {index}", format_mac(&entry.mac), entry.dst)))
    }

    /// The forwarding entries of device `index` that have a remote IPv4 destination.
    pub async fn fdb_entries(&self, index: u32) -> Result<Vec<FdbEntry>> {
        let messages = self.neighbour_dump(AddressFamily::Bridge).await?;
        Ok(messages.iter().filter(|m| m.header.ifindex == index).filter_map(|m| Some(FdbEntry { mac: neighbour_mac(m)?, dst: neighbour_ip(m)? })).collect())
    }

    /// Deletes a forwarding entry of device `index` (`bridge fdb del MAC dev DEV dst DST self`).
    pub async fn delete_fdb(&self, index: u32, entry: &FdbEntry) -> Result<()> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = index;
        message.header.flags = NeighbourFlags::Own;
        message.attributes.push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
        message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.dst)));
        self.ignore_missing(self.handle.neighbours().del(message).execute().await, format!("delete fdb {} dev {index}", format_mac(&entry.mac)))
    }

    /// Adds or replaces a permanent neighbour entry (`ip neigh replace IP lladdr MAC dev DEV nud
    /// permanent`).
    pub async fn replace_neighbour(&self, index: u32, neighbour: &Neighbour) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(neighbour.ip))
            .link_layer_address(&neighbour.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink(format!("replace neighbour {} lladdr {} dev {index}", neighbour.ip, format_mac(&neighbour.mac))))
    }

    /// The permanent IPv4 neighbour entries of device `index`.
    pub async fn permanent_neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        let messages = self.neighbour_dump(AddressFamily::Inet).await?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| Some(Neighbour { ip: neighbour_ip(m)?, mac: neighbour_mac(m)? }))
            .collect())
    }

    /// Deletes the neighbour entry of `ip` on device `index` (`ip neigh del IP dev DEV`).
    pub async fn delete_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<()> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = index;
        message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        self.ignore_missing(self.handle.neighbours().del(message).execute().await, format!("delete neighbour {ip} dev {index}"))
    }

    async fn neighbour_dump(&self, family: AddressFamily) -> Result<Vec<NeighbourMessage>> {
        let mut request = self.handle.neighbours().get();
        request = request.set_address_family(family);
        request.execute().try_collect().await.map_err(Error::netlink("list neighbours"))
    }

    /// The IPv4 unicast routes of the main table.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let messages: Vec<RouteMessage> = self.handle.route().get(request).execute().try_collect().await.map_err(Error::netlink("list routes"))?;
        Ok(messages
            .iter()
            .filter(|m| route_table(m) == u32::from(RouteHeader::RT_TABLE_MAIN) && m.header.kind == RouteType::Unicast)
            .map(route_from_message)
            .collect())
    }

    /// Adds the route, or replaces the main table's route to the same destination
    /// (`ip route replace DEST/LEN [via GATEWAY] [dev DEV] [onlink] proto N`).
    pub async fn replace_route(&self, route: &Route) -> Result<()> {
        self.handle.route().add(route_message(route)).replace().execute().await.map_err(Error::netlink(format!("replace route {}", format_route(route))))
    }

    /// Deletes the route (`ip route del DEST/LEN [via GATEWAY] [dev DEV] proto N`); a route that
    /// is already gone is not an error.
    pub async fn delete_route(&self, route: &Route) -> Result<()> {
        let result = self.handle.route().del(route_message(route)).execute().await;
        match result {
            Err(e) => {
                let e = Error::netlink(format!("delete route {}", format_route(route)))(e);
                if e.errno() == Some(Errno::ESRCH) { Ok(()) } else { Err(e) }
            }
            Ok(()) => Ok(()),
        }
    }

    fn ignore_missing(&self, result: std::result::Result<(), rtnetlink::Error>, op: String) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = Error::netlink(op)(e);
                if matches!(e.errno(), Some(Errno::ENOENT | Errno::ESRCH)) { Ok(()) } else { Err(e) }
            }
        }
    }
}

fn neighbour_mac(message: &NeighbourMessage) -> Option<[u8; 6]> {
    message.attributes.iter().find_map(|attribute| match attribute {
        NeighbourAttribute::LinkLayerAddress(mac) => mac.as_slice().try_into().ok(),
        _ => None,
    })
}

fn neighbour_ip(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|attribute| match attribute {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // Bridge (fdb) entries carry their remote's address untyped.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(Ipv4Addr::from),
        _ => None,
    })
}

fn route_table(message: &RouteMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table))
}

fn route_from_message(message: &RouteMessage) -> Route {
    let mut route = Route {
        destination: Ipv4Addr::UNSPECIFIED,
        prefix_len: message.header.destination_prefix_length,
        gateway: None,
        dev: None,
        onlink: message.header.flags.contains(RouteFlags::Onlink),
        protocol: message.header.protocol.into(),
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(address)) => route.destination = *address,
            RouteAttribute::Gateway(RouteAddress::Inet(address)) => route.gateway = Some(*address),
            RouteAttribute::Oif(index) => route.dev = Some(*index),
            _ => {}
        }
    }
    route
}

fn route_message(route: &Route) -> RouteMessage {
    let mut builder =
        RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(route.destination, route.prefix_len).protocol(RouteProtocol::from(route.protocol));
    match route.gateway {
        Some(gateway) => builder = builder.gateway(gateway),
        None => builder = builder.scope(RouteScope::Link),
    }
    if let Some(index) = route.dev {
        builder = builder.output_interface(index);
    }
    if route.onlink {
        builder = builder.onlink();
    }
    builder.build()
}

fn format_route(route: &Route) -> String {
    format!(
        "{}/{}{}{}{} proto {}",
        route.destination,
        route.prefix_len,
        route.gateway.map(|g| format!(" via {g}")).unwrap_or_default(),
        route.dev.map(|d| format!(" dev {d}")).unwrap_or_default(),
        if route.onlink { " onlink" } else { "" },
        route.protocol
    )
}

/// `aa:bb:cc:dd:ee:ff`.
fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
