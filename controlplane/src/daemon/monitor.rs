//! Link monitor: rtnetlink link notifications (RTNLGRP_LINK), subscribed
//! before the initial dump so no change between the two is missed. No polling.
use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{MulticastGroup, new_multicast_connection};
use tokio::sync::mpsc;

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
}

impl LinkEvent {
    pub fn is_up(&self) -> bool {
        self.admin_up && self.carrier && !self.removed
    }
}

fn parse(msg: &LinkMessage, removed: bool) -> Option<LinkEvent> {
    let name = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    let flags = msg.header.flags;
    Some(LinkEvent {
        ifindex: msg.header.index,
        name,
        admin_up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        removed,
    })
}

/// Starts the monitor: returns every link now, and a channel of changes.
pub async fn start() -> Result<(Vec<LinkEvent>, mpsc::UnboundedReceiver<LinkEvent>)> {
    let (conn, handle, mut messages) = new_multicast_connection(&[MulticastGroup::Link])
        .context("subscribing to rtnetlink link events")?;
    tokio::spawn(conn);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => parse(&l, false),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => parse(&l, true),
                _ => None,
            };
            if let Some(e) = event
                && tx.send(e).is_err()
            {
                break;
            }
        }
    });
    let mut links = Vec::new();
    let mut dump = handle.link().get().execute();
    while let Some(link) = dump.next().await {
        if let Some(e) = parse(&link.context("dumping links")?, false) {
            links.push(e);
        }
    }
    Ok((links, rx))
}
