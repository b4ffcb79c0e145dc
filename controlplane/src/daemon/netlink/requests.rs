//! The rtnetlink requests a move and a repair write: the instance's
//! address, its routes, a macvlan brought up. Built here, sent in one
//! datagram by [`super::batch`].
use super::batch::Request;
use anyhow::Result;
use baton_config::model::Route;
use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, RouteMessageBuilder};
use std::net::IpAddr;

/// The instance address on a device (replace: idempotent). IPv6
/// addresses skip the kernel's DAD: baton has probed, and a tentative
/// address would not answer for about a second.
pub fn address_request(ifindex: u32, net: IpNet) -> Request {
    let mut msg = address_message(ifindex, net);
    if net.addr().is_ipv6() {
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    Request {
        message: RouteNetlinkMessage::NewAddress(msg),
        flags: NLM_F_CREATE | NLM_F_REPLACE,
        what: format!("adding {net} to ifindex {ifindex}"),
    }
}

pub fn address_message(ifindex: u32, net: IpNet) -> AddressMessage {
    match net.addr() {
        IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(ifindex)
            .address(a, net.prefix_len())
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(ifindex)
            .address(a, net.prefix_len())
            .build(),
    }
}

/// The instance's static routes through `ifindex` (replace: a route to the
/// same destination leaves the old port in the same step).
pub fn route_requests(routes: &[Route], ifindex: u32) -> Result<Vec<Request>> {
    routes
        .iter()
        .map(|r| {
            let msg = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(r.to.addr(), r.to.prefix_len())
                .and_then(|b| b.gateway(r.via))
                .map_err(|e| anyhow::anyhow!("route {} via {}: {e}", r.to, r.via))?
                .output_interface(ifindex)
                .build();
            Ok(Request {
                message: RouteNetlinkMessage::NewRoute(msg),
                flags: NLM_F_CREATE | NLM_F_REPLACE,
                what: format!("route {} via {} dev {ifindex}", r.to, r.via),
            })
        })
        .collect()
}

pub fn up_request(name: &str, ifindex: u32) -> Request {
    Request {
        message: RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(ifindex).up().build()),
        flags: 0,
        what: format!("bringing {name} up"),
    }
}
