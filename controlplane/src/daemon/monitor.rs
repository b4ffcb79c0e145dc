//! The kernel monitor: rtnetlink notifications for links, IPv4/IPv6
//! addresses and routes, subscribed before the initial dump so no change
//! between the two is missed. No polling. An overrun (ENOBUFS: the kernel
//! dropped notifications) is reported as [`Observation::Lost`]; so is the
//! end of the monitor (the channel closes), after which the daemon starts a
//! new one. Either way the daemon resyncs from a fresh dump.
use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{MulticastGroup, new_multicast_connection};
use std::net::IpAddr;
use std::os::fd::AsRawFd as _;
use tokio::sync::mpsc;
use tracing::warn;

/// Receive buffer for notifications: a burst of a few thousand link
/// changes fits (the default, ~200 KiB, overruns after a few hundred).
/// `BATON_NETLINK_RCVBUF` overrides it (the overrun test makes it small).
const RCVBUF: usize = 8 << 20;

/// One link's state as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    pub ifindex: u32,
    pub name: String,
    /// IFF_UP: administratively up.
    pub admin_up: bool,
    /// IFF_LOWER_UP: carrier.
    pub carrier: bool,
    /// RTM_DELLINK: the device is gone.
    pub removed: bool,
    /// Hardware address.
    pub mac: Option<[u8; 6]>,
    /// IFLA_LINK: the lower device of a macvlan.
    pub lower: Option<u32>,
}

impl LinkEvent {
    pub fn is_up(&self) -> bool {
        self.admin_up && self.carrier && !self.removed
    }
}

/// What the monitor saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    Link(LinkEvent),
    /// An address was added to or removed from a device.
    Address(IpAddr),
    /// A route to this destination changed.
    Route(IpAddr),
    /// Notifications were dropped (netlink overrun): anything may have changed.
    Lost,
}

pub fn parse_link(msg: &LinkMessage, removed: bool) -> Option<LinkEvent> {
    let name = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
        _ => None,
    });
    let lower = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(l) => Some(*l),
        _ => None,
    });
    let flags = msg.header.flags;
    Some(LinkEvent {
        ifindex: msg.header.index,
        name,
        admin_up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        removed,
        mac,
        lower,
    })
}

/// The address of an address message (IFA_LOCAL on point-to-point links).
pub fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(a) if local => Some(*a),
            AddressAttribute::Address(a) if !local => Some(*a),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

pub fn route_destination(msg: &RouteMessage) -> Option<IpAddr> {
    let dst = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => Some(d),
        _ => None,
    });
    match dst {
        Some(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        Some(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        Some(_) => None,
        // No RTA_DST: the default route.
        None if msg.header.address_family == rtnetlink::packet_route::AddressFamily::Inet6 => {
            Some(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
        }
        None => Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    }
}

fn observe(payload: NetlinkPayload<RouteNetlinkMessage>) -> Option<Observation> {
    use RouteNetlinkMessage as M;
    match payload {
        NetlinkPayload::InnerMessage(m) => match m {
            M::NewLink(l) => parse_link(&l, false).map(Observation::Link),
            M::DelLink(l) => parse_link(&l, true).map(Observation::Link),
            M::NewAddress(a) | M::DelAddress(a) => address_of(&a).map(Observation::Address),
            M::NewRoute(r) | M::DelRoute(r) => route_destination(&r).map(Observation::Route),
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(Observation::Lost),
        _ => None,
    }
}

/// Starts a monitor: returns every link now, and a channel of changes that
/// closes when the monitor ends.
pub async fn start() -> Result<(Vec<LinkEvent>, mpsc::UnboundedReceiver<Observation>)> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let (mut conn, handle, mut messages) =
        new_multicast_connection(&groups).context("subscribing to rtnetlink events")?;
    let size = std::env::var("BATON_NETLINK_RCVBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RCVBUF);
    set_rcvbuf(conn.socket_mut().as_raw_fd(), size);
    tokio::spawn(conn);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            if let Some(o) = observe(msg.payload)
                && tx.send(o).is_err()
            {
                return;
            }
        }
        warn!("rtnetlink monitor ended");
    });
    let mut links = Vec::new();
    let mut dump = handle.link().get().execute();
    while let Some(link) = dump.next().await {
        if let Some(e) = parse_link(&link.context("dumping links")?, false) {
            links.push(e);
        }
    }
    Ok((links, rx))
}

/// SO_RCVBUFFORCE (root may exceed rmem_max), else SO_RCVBUF.
fn set_rcvbuf(fd: i32, size: usize) {
    let size = size.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on a socket we own with a c_int value.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    warn!(size, error = %std::io::Error::last_os_error(), "could not size the netlink receive buffer");
}
