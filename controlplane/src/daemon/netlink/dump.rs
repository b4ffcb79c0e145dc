//! Dumps of the kernel's links, addresses and routes, each on a socket of
//! its own and read by the same decoder as the monitor's notifications
//! ([`super::decode`]): one reading of a link, an address or a route.
use super::decode::{self, Configured, LinkEvent, RouteSeen};
use anyhow::{Context as _, Result, bail};
use rtnetlink::sys::{
    AsyncSocket as _, AsyncSocketExt as _, TokioSocket, protocols::NETLINK_ROUTE,
};
use std::time::Duration;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
/// NLM_F_ROOT | NLM_F_MATCH.
const NLM_F_DUMP: u16 = 0x300;
const RTM_GETLINK: u16 = 18;
const RTM_GETADDR: u16 = 22;
const RTM_GETROUTE: u16 = 26;

/// A dump's datagrams are at most 32 KiB (the kernel's dump size cap); one
/// that fills this buffer was cut, and the dump fails rather than miss
/// what the cut held.
const DATAGRAM: usize = 64 << 10;
/// The kernel answers a dump at once; this only bounds one that does not.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Every link.
pub async fn links() -> Result<Vec<LinkEvent>> {
    dump("links", RTM_GETLINK, decode::LINK_HEADER, 0, |p| {
        decode::link(p, false)
    })
    .await
}

/// Every address of every device (IPv4 and IPv6).
pub async fn addresses() -> Result<Vec<Configured>> {
    dump(
        "addresses",
        RTM_GETADDR,
        decode::ADDRESS_HEADER,
        0,
        decode::configured,
    )
    .await
}

/// Every route of `family` (`libc::AF_UNSPEC`: both) in every table.
pub async fn routes(family: i32) -> Result<Vec<RouteSeen>> {
    dump(
        "routes",
        RTM_GETROUTE,
        decode::ROUTE_HEADER,
        family as u8,
        decode::route,
    )
    .await
}

/// Sends one dump request (its family header zeroed but for the family)
/// and reads the answer to its end.
async fn dump<T>(
    what: &str,
    request: u16,
    header: usize,
    family: u8,
    decode: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>> {
    let mut socket =
        TokioSocket::new(NETLINK_ROUTE).with_context(|| format!("a socket to dump {what}"))?;
    socket
        .socket_mut()
        .bind_auto()
        .with_context(|| format!("binding the socket to dump {what}"))?;
    let len = 16 + header;
    let mut wire = Vec::with_capacity(len);
    wire.extend_from_slice(&(len as u32).to_ne_bytes());
    wire.extend_from_slice(&request.to_ne_bytes());
    wire.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    wire.extend_from_slice(&1u32.to_ne_bytes());
    wire.extend_from_slice(&0u32.to_ne_bytes());
    wire.push(family);
    wire.resize(len, 0);
    socket
        .send(&wire)
        .await
        .with_context(|| format!("requesting a dump of {what}"))?;
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(DATAGRAM);
    loop {
        buf.clear();
        tokio::time::timeout(ANSWER_TIMEOUT, socket.recv(&mut buf))
            .await
            .with_context(|| format!("no answer to a dump of {what} in {ANSWER_TIMEOUT:?}"))?
            .with_context(|| format!("reading a dump of {what}"))?;
        if buf.len() >= buf.capacity() {
            bail!("a datagram of the dump of {what} was cut");
        }
        for (kind, payload) in decode::messages(&buf) {
            match kind {
                NLMSG_DONE | NLMSG_ERROR => {
                    let code = payload
                        .get(..4)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map_or(0, i32::from_ne_bytes);
                    if code != 0 {
                        let e = std::io::Error::from_raw_os_error(-code);
                        return Err(anyhow::Error::new(e).context(format!("dumping {what}")));
                    }
                    return Ok(out);
                }
                _ => out.extend(decode(payload)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::netlink::batch::{Batch, Request};
    use crate::daemon::netlink::in_fresh_netns;
    use crate::daemon::netlink::requests::{address_request, up_request};
    use rtnetlink::LinkVeth;
    use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use rtnetlink::packet_route::RouteNetlinkMessage;

    /// A veth up with an address: the dumps show the device, the address
    /// and its routes as the kernel made them.
    #[test]
    fn the_dumps_show_what_the_kernel_has() -> Result<()> {
        let net: ipnet::IpNet = "192.0.2.7/24".parse()?;
        let (links, addrs, routes) = in_fresh_netns(move || {
            Batch::new()?.run(vec![
                Request {
                    message: RouteNetlinkMessage::NewLink(
                        LinkVeth::new("bt-a", "bt-b").index(10).build(),
                    ),
                    flags: NLM_F_CREATE | NLM_F_EXCL,
                    what: "creating a veth".into(),
                },
                up_request("bt-a", 10),
                address_request(10, net),
            ])?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async { Ok((links().await?, addresses().await?, routes(0).await?)) })
        })?;
        let veth = links.iter().find(|l| l.name == "bt-a");
        assert!(
            veth.is_some_and(|l| l.ifindex == 10 && l.admin_up && l.mac.is_some() && !l.removed),
            "{links:?}"
        );
        assert!(links.iter().any(|l| l.name == "bt-b"), "{links:?}");
        let configured = Configured {
            ifindex: 10,
            addr: net.addr(),
            prefix: 24,
        };
        assert!(addrs.contains(&configured), "{addrs:?}");
        // The subnet's route in main; the address's own, local, in local.
        let subnet = routes
            .iter()
            .find(|r| r.dst == net.network() && r.prefix == 24 && r.table == 254);
        assert!(
            subnet.is_some_and(|r| r.oif == Some(10) && !r.local),
            "{routes:?}"
        );
        let own = routes
            .iter()
            .find(|r| r.dst == net.addr() && r.prefix == 32);
        assert!(own.is_some_and(|r| r.local && r.table == 255), "{routes:?}");
        Ok(())
    }
}
