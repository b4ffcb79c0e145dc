//! The kernel's actual state, read in one dump per kind (links, addresses,
//! routes of the main table): what the reconciler compares with the desired.
use super::decode::{self, LinkEvent};
use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use rtnetlink::Handle;
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteMessage};
use std::net::IpAddr;

/// An address configured on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configured {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSeen {
    pub dst: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

pub struct Observed {
    pub links: Vec<LinkEvent>,
    pub addresses: Vec<Configured>,
    pub routes: Vec<RouteSeen>,
}

impl Observed {
    pub async fn dump(handle: &Handle) -> Result<Observed> {
        let mut links = Vec::new();
        let mut dump = handle.link().get().execute();
        while let Some(msg) = dump.next().await {
            if let Some(l) = decode::parse_link(&msg.context("dumping links")?, false) {
                links.push(l);
            }
        }
        let mut addresses = Vec::new();
        let mut dump = handle.address().get().execute();
        while let Some(msg) = dump.next().await {
            let msg = msg.context("dumping addresses")?;
            if let Some(addr) = decode::address_of(&msg) {
                addresses.push(Configured {
                    ifindex: msg.header.index,
                    addr,
                    prefix: msg.header.prefix_len,
                });
            }
        }
        let mut routes = Vec::new();
        for v6 in [false, true] {
            let filter = if v6 {
                rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            } else {
                rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            };
            let mut dump = handle.route().get(filter).execute();
            while let Some(msg) = dump.next().await {
                let msg = msg.context("dumping routes")?;
                if msg.header.table == RouteHeader::RT_TABLE_MAIN {
                    routes.extend(route_of(&msg));
                }
            }
        }
        Ok(Observed {
            links,
            addresses,
            routes,
        })
    }

    pub fn link(&self, name: &str) -> Option<&LinkEvent> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The devices holding `addr`.
    pub fn holders(&self, addr: IpAddr) -> impl Iterator<Item = u32> + '_ {
        self.addresses
            .iter()
            .filter(move |c| c.addr == addr)
            .map(|c| c.ifindex)
    }

    pub fn has_route(&self, to: ipnet::IpNet, via: IpAddr, oif: u32) -> bool {
        self.routes.iter().any(|r| {
            r.dst == to.addr()
                && r.prefix == to.prefix_len()
                && r.gateway == Some(via)
                && r.oif == Some(oif)
        })
    }
}

fn route_of(msg: &RouteMessage) -> Option<RouteSeen> {
    use rtnetlink::packet_route::route::RouteAddress;
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    };
    let gateway = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => ip(g),
        _ => None,
    });
    let oif = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    Some(RouteSeen {
        dst: decode::route_destination(msg)?,
        prefix: msg.header.destination_prefix_length,
        gateway,
        oif,
    })
}
