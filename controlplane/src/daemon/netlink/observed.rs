//! The kernel's actual state, read in one dump per kind (links, addresses,
//! routes of the main table): what the reconciler compares with the desired.
use super::decode::{Configured, LinkEvent, RouteSeen};
use super::dump;
use anyhow::Result;
use std::net::IpAddr;

/// The main routing table.
const RT_TABLE_MAIN: u32 = 254;

pub struct Observed {
    pub links: Vec<LinkEvent>,
    pub addresses: Vec<Configured>,
    /// The routes of the main table.
    pub routes: Vec<RouteSeen>,
}

impl Observed {
    pub async fn dump() -> Result<Observed> {
        let links = dump::links().await?;
        let addresses = dump::addresses().await?;
        let mut routes = dump::routes(libc::AF_UNSPEC).await?;
        routes.retain(|r| r.table == RT_TABLE_MAIN);
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
