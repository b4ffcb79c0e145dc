//! rtnetlink messages into what the daemon uses ([`LinkEvent`],
//! [`Observation`], [`Configured`], [`RouteSeen`]): the one reader of the
//! kernel's links, addresses and routes, for notifications and dumps
//! alike. It reads the header and only the attributes baton uses (a link's
//! name, MAC and lower device; an address; a route's destination, gateway,
//! device and table). netlink-packet-route's full decode of an RTM_NEWLINK
//! (~1.5 KB of statistics and per-family data) took ~50 µs of the daemon's
//! loop per message on the bench machine, and a move's own steps each
//! bring one (its macvlan up, its address, the local routes): they were
//! decoded in the middle of the move.
use rtnetlink::packet_core::{NetlinkBuffer, NlasIterator};
use rtnetlink::packet_route::link::{LinkFlags, LinkHeader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_OVERRUN: u16 = 4;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
/// rtm_type of a local route (the local table's own addresses).
const RTN_LOCAL: u8 = 2;

/// struct ifinfomsg, ifaddrmsg, rtmsg.
pub const LINK_HEADER: usize = 16;
pub const ADDRESS_HEADER: usize = 8;
pub const ROUTE_HEADER: usize = 12;
const AF_INET6: u8 = libc::AF_INET6 as u8;

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
    /// What a dump without `name` says of it: the device `ifindex` is gone.
    pub fn gone(ifindex: u32, name: String) -> LinkEvent {
        LinkEvent {
            ifindex,
            name,
            admin_up: false,
            carrier: false,
            removed: true,
            mac: None,
            lower: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.admin_up && self.carrier && !self.removed
    }

    /// Its link as the engine reads it.
    pub fn link(&self) -> crate::decide::Link {
        if self.is_up() {
            crate::decide::Link::Up
        } else {
            crate::decide::Link::Down
        }
    }

    /// What a fresh dump says of `name`: its entry, or (when it was known
    /// as `ifindex` and is missing now) that it is gone; None: never seen.
    pub fn in_dump(links: &[LinkEvent], name: &str, ifindex: Option<u32>) -> Option<LinkEvent> {
        match links.iter().find(|l| l.name == name) {
            Some(l) => Some(l.clone()),
            None => ifindex.map(|i| LinkEvent::gone(i, name.to_string())),
        }
    }
}

/// An address configured on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configured {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// A route as the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSeen {
    pub dst: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    /// A local route: the address is this host's (the local table).
    pub local: bool,
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

/// The observations in one datagram from the monitor socket, in order.
pub fn observations(datagram: &[u8]) -> Vec<Observation> {
    messages(datagram)
        .filter_map(|(kind, payload)| observe(kind, payload))
        .collect()
}

/// The observations of one read of `buffer` bytes from the monitor
/// socket. A read that filled the buffer may have been cut (the kernel
/// truncates a datagram to the buffer; a link with many VFs can outgrow
/// it): what the cut held is unknown, so it ends with [`Observation::Lost`].
pub fn observations_of_read(datagram: &[u8], buffer: usize) -> Vec<Observation> {
    let mut out = observations(datagram);
    if datagram.len() >= buffer {
        out.push(Observation::Lost);
    }
    out
}

/// The (type, payload) of each message in a netlink datagram. A malformed
/// message ends the walk (the kernel's framing is trusted no further than
/// its lengths).
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let msg = NetlinkBuffer::new_checked(datagram.get(at..)?).ok()?;
        at += (msg.length() as usize + 3) & !3;
        Some((msg.message_type(), msg.payload()))
    })
}

/// The observation of one message (its type and payload).
pub fn observe(message_type: u16, payload: &[u8]) -> Option<Observation> {
    match message_type {
        RTM_NEWLINK => link(payload, false).map(Observation::Link),
        RTM_DELLINK => link(payload, true).map(Observation::Link),
        RTM_NEWADDR | RTM_DELADDR => configured(payload).map(|c| Observation::Address(c.addr)),
        RTM_NEWROUTE | RTM_DELROUTE => route(payload).map(|r| Observation::Route(r.dst)),
        NLMSG_OVERRUN => Some(Observation::Lost),
        _ => None,
    }
}

fn attributes(payload: &[u8], header: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let rest = payload.get(header..).unwrap_or_default();
    NlasIterator::new(rest)
        .map_while(Result::ok)
        .filter_map(|nla| {
            let (kind, len) = (nla.kind(), nla.length() as usize);
            // The attribute's value: after its 4-byte header, to its length.
            Some((kind, nla.into_inner().get(4..len)?))
        })
}

pub fn link(payload: &[u8], removed: bool) -> Option<LinkEvent> {
    let header = LinkHeader::parse(payload).ok()?;
    let (mut name, mut mac, mut lower) = (None, None, None);
    for (kind, value) in attributes(payload, LINK_HEADER) {
        match kind {
            IFLA_IFNAME => {
                let bytes = value.split(|b| *b == 0).next().unwrap_or_default();
                name = String::from_utf8(bytes.to_vec()).ok();
            }
            IFLA_ADDRESS => mac = <[u8; 6]>::try_from(value).ok(),
            IFLA_LINK => lower = <[u8; 4]>::try_from(value).ok().map(u32::from_ne_bytes),
            _ => {}
        }
    }
    Some(LinkEvent {
        ifindex: header.index,
        name: name?,
        admin_up: header.flags.contains(LinkFlags::Up),
        carrier: header.flags.contains(LinkFlags::LowerUp),
        removed,
        mac,
        lower,
    })
}

fn ip(family: u8, value: &[u8]) -> Option<IpAddr> {
    if family == AF_INET6 {
        <[u8; 16]>::try_from(value)
            .ok()
            .map(|a| IpAddr::V6(a.into()))
    } else {
        <[u8; 4]>::try_from(value)
            .ok()
            .map(|a| IpAddr::V4(a.into()))
    }
}

/// An address message: IFA_LOCAL (the local end on point-to-point
/// links), else IFA_ADDRESS, on its device with its prefix.
pub fn configured(payload: &[u8]) -> Option<Configured> {
    let header = payload.get(..ADDRESS_HEADER)?;
    let (family, prefix) = (header[0], header[1]);
    let ifindex = u32::from_ne_bytes(header[4..8].try_into().ok()?);
    let (mut local, mut address) = (None, None);
    for (kind, value) in attributes(payload, ADDRESS_HEADER) {
        match kind {
            IFA_LOCAL => local = ip(family, value),
            IFA_ADDRESS => address = ip(family, value),
            _ => {}
        }
    }
    Some(Configured {
        ifindex,
        addr: local.or(address)?,
        prefix,
    })
}

/// A route message. No RTA_DST: the default route of the family; RTA_TABLE
/// (tables past 255) over rtm_table.
pub fn route(payload: &[u8]) -> Option<RouteSeen> {
    let header = payload.get(..ROUTE_HEADER)?;
    let family = header[0];
    let mut r = RouteSeen {
        dst: if family == AF_INET6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        },
        prefix: header[1],
        gateway: None,
        oif: None,
        table: u32::from(header[4]),
        local: header[7] == RTN_LOCAL,
    };
    let u32_of = |v: &[u8]| <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes);
    for (kind, value) in attributes(payload, ROUTE_HEADER) {
        match kind {
            RTA_DST => r.dst = ip(family, value)?,
            RTA_GATEWAY => r.gateway = ip(family, value),
            RTA_OIF => r.oif = u32_of(value),
            RTA_TABLE => r.table = u32_of(value).unwrap_or(r.table),
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    //! The lazy reader against netlink-packet-route's full decode, the
    //! reference (the same messages, built by that crate).
    use super::*;
    use rtnetlink::packet_core::{Emitable as _, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, State};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

    fn parse_link(msg: &LinkMessage, removed: bool) -> Option<LinkEvent> {
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
    fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
        let find = |local: bool| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(a) if local => Some(*a),
                AddressAttribute::Address(a) if !local => Some(*a),
                _ => None,
            })
        };
        find(true).or_else(|| find(false))
    }

    fn route_destination(msg: &RouteMessage) -> Option<IpAddr> {
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

    fn wire(inner: RouteNetlinkMessage) -> Vec<u8> {
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    fn link_message(index: u32, flags: LinkFlags, name: &str, lower: Option<u32>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes = vec![
            LinkAttribute::Mtu(1500),
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Address(vec![2, 0xba, 0x70, 0, 0, 1]),
        ];
        if let Some(l) = lower {
            m.attributes.push(LinkAttribute::Link(l));
        }
        m
    }

    #[test]
    fn a_link_reads_as_the_full_decode_reads_it() {
        for (flags, lower, removed) in [
            (
                LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running,
                None,
                false,
            ),
            (LinkFlags::Up, Some(7), false),
            (LinkFlags::empty(), None, true),
        ] {
            let m = link_message(42, flags, "ge0", lower);
            let inner = if removed {
                RouteNetlinkMessage::DelLink(m.clone())
            } else {
                RouteNetlinkMessage::NewLink(m.clone())
            };
            let got = observations(&wire(inner));
            let want = parse_link(&m, removed).map(Observation::Link);
            assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn addresses_and_routes_read_as_the_full_decode_reads_them() {
        let v4: IpAddr = "192.0.2.100"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let v6: IpAddr = "2001:db8::64"
            .parse()
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        for a in [v4, v6] {
            let mut m = AddressMessage::default();
            m.header.family = if a.is_ipv6() {
                rtnetlink::packet_route::AddressFamily::Inet6
            } else {
                rtnetlink::packet_route::AddressFamily::Inet
            };
            m.header.prefix_len = 24;
            m.attributes = vec![AddressAttribute::Address(a), AddressAttribute::Local(a)];
            let got = observations(&wire(RouteNetlinkMessage::NewAddress(m.clone())));
            assert_eq!(
                got,
                vec![Observation::Address(address_of(&m).unwrap_or(v4))]
            );

            let mut r = RouteMessage::default();
            r.header.address_family = m.header.family;
            r.header.destination_prefix_length = 32;
            r.attributes = vec![RouteAttribute::Destination(match a {
                IpAddr::V4(x) => RouteAddress::Inet(x),
                IpAddr::V6(x) => RouteAddress::Inet6(x),
            })];
            let got = observations(&wire(RouteNetlinkMessage::DelRoute(r.clone())));
            assert_eq!(got, vec![Observation::Route(a)]);
            assert_eq!(route_destination(&r), Some(a));
            // No RTA_DST: the family's default route.
            r.attributes.clear();
            let got = observations(&wire(RouteNetlinkMessage::NewRoute(r.clone())));
            assert_eq!(
                got,
                route_destination(&r)
                    .map(Observation::Route)
                    .into_iter()
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn several_messages_in_one_datagram_and_garbage_after_them() {
        let mut datagram = wire(RouteNetlinkMessage::NewLink(link_message(
            3,
            LinkFlags::Up,
            "ge1",
            None,
        )));
        datagram.extend(wire(RouteNetlinkMessage::NewLink(link_message(
            4,
            LinkFlags::Up,
            "ge0",
            None,
        ))));
        datagram.extend([0xff; 7]);
        let names: Vec<String> = observations(&datagram)
            .into_iter()
            .filter_map(|o| match o {
                Observation::Link(l) => Some(l.name),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["ge1", "ge0"]);
    }

    #[test]
    fn a_read_that_filled_the_buffer_is_lost_events() {
        let full = wire(RouteNetlinkMessage::NewLink(link_message(
            3,
            LinkFlags::Up,
            "ge1",
            None,
        )));
        let cut = &full[..64];
        assert_eq!(observations_of_read(cut, 64), vec![Observation::Lost]);
        let got = observations_of_read(&full, full.len() + 1);
        assert!(matches!(got.as_slice(), [Observation::Link(_)]), "{got:?}");
    }

    #[test]
    fn a_truncated_message_is_no_observation() {
        let full = wire(RouteNetlinkMessage::NewLink(link_message(
            3,
            LinkFlags::Up,
            "ge1",
            None,
        )));
        // The length in its header is past the datagram's end: nothing.
        for cut in 0..full.len() {
            let got = observations(&full[..cut]);
            assert!(got.is_empty(), "cut {cut}: {got:?}");
        }
    }
}
