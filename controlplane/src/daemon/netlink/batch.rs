//! Several rtnetlink requests in one datagram on a socket of their own.
//! The kernel carries a datagram's requests out in order inside the one
//! sendmsg(2), and answers each; so a move's macvlan-up, address and
//! routes cost one system call, each request finds what the one before it
//! made, and none waits for a trip through the async runtime (through
//! rtnetlink's connection each answer took ~0.1 ms on the bench machine;
//! netlink-proto sends one queued request per poll, so queueing them
//! together did not batch them).
use anyhow::{Context as _, Result};
use rtnetlink::packet_core::{
    Emitable as _, NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{Socket, protocols::NETLINK_ROUTE};
use std::os::fd::AsRawFd as _;

const NLMSG_ERROR: u16 = 2;
/// The answers are queued before sendmsg returns; this only bounds a
/// kernel that does otherwise.
const ANSWER_TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 1,
    tv_usec: 0,
};

pub struct Batch {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// One request: the message and its flags beyond REQUEST|ACK
/// (NLM_F_CREATE, NLM_F_REPLACE ...).
pub struct Request {
    pub message: RouteNetlinkMessage,
    pub flags: u16,
    /// What it does, for its error ("adding 192.0.2.100/24 to ifindex 7").
    pub what: String,
}

impl Batch {
    pub fn new() -> Result<Batch> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("opening an rtnetlink socket")?;
        socket.bind_auto().context("binding an rtnetlink socket")?;
        crate::daemon::sockopt::set(socket.as_raw_fd(), libc::SO_RCVTIMEO, &ANSWER_TIMEOUT)
            .context("SO_RCVTIMEO on the rtnetlink socket")?;
        Ok(Batch {
            socket,
            seq: 0,
            buf: Vec::with_capacity(64 << 10),
        })
    }

    /// Sends `requests` in one datagram; the first failure (in order) is
    /// the error, after every request was answered.
    pub fn run(&mut self, requests: Vec<Request>) -> Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let first_seq = self.seq.wrapping_add(1);
        let mut wire = Vec::new();
        let mut whats = Vec::with_capacity(requests.len());
        for r in requests {
            self.seq = self.seq.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | r.flags;
            header.sequence_number = self.seq;
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(r.message));
            msg.finalize();
            let at = wire.len();
            wire.resize(at + msg.buffer_len(), 0);
            msg.emit(&mut wire[at..]);
            wire.resize((wire.len() + 3) & !3, 0);
            whats.push(r.what);
        }
        self.socket
            .send(&wire, 0)
            .context("sending rtnetlink requests")?;
        let mut answers: Vec<Option<i32>> = vec![None; whats.len()];
        while answers.iter().any(Option::is_none) {
            self.buf.clear();
            self.socket
                .recv(&mut self.buf, 0)
                .context("reading rtnetlink answers")?;
            for (seq, code) in acks(&self.buf) {
                let i = seq.wrapping_sub(first_seq) as usize;
                if let Some(slot) = answers.get_mut(i) {
                    *slot = Some(code);
                }
            }
        }
        for (code, what) in answers.into_iter().zip(whats) {
            if let Some(code) = code.filter(|c| *c != 0) {
                let e = std::io::Error::from_raw_os_error(-code);
                return Err(anyhow::Error::new(e).context(what));
            }
        }
        Ok(())
    }
}

/// (sequence number, error code: 0 or -errno) of each answer in a datagram.
fn acks(datagram: &[u8]) -> Vec<(u32, i32)> {
    super::decode::messages(datagram)
        // struct nlmsgerr: the error, then the request's own header.
        .filter(|(kind, p)| *kind == NLMSG_ERROR && p.len() >= 4 + 16)
        .map(|(_, p)| {
            let code = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
            let seq = u32::from_ne_bytes([p[12], p[13], p[14], p[15]]);
            (seq, code)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::netlink::in_fresh_netns;
    use crate::daemon::netlink::requests::{address_request, route_requests, up_request};
    use baton_config::model::Route;
    use rtnetlink::LinkVeth;
    use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use rtnetlink::packet_route::link::LinkMessage;

    const PORT: u32 = 10;

    /// A veth at ifindex PORT, then (the move's requests) up, an address,
    /// and a route whose gateway is reachable only through that address's
    /// prefix route on the device once it is up.
    fn requests(reversed: bool) -> Result<Vec<Request>> {
        let veth = LinkVeth::new("bt-a", "bt-b").index(PORT).build();
        let create = Request {
            message: RouteNetlinkMessage::NewLink(veth),
            flags: NLM_F_CREATE | NLM_F_EXCL,
            what: "creating a veth".into(),
        };
        let route = Route {
            to: "198.51.100.0/24".parse()?,
            via: "192.0.2.1".parse()?,
            replaces_default: false,
        };
        let mut moves = vec![
            up_request("bt-a", PORT),
            address_request(PORT, "192.0.2.10/24".parse()?),
        ];
        moves.extend(route_requests(&[route], PORT)?);
        if reversed {
            moves.reverse();
        }
        Ok(std::iter::once(create).chain(moves).collect())
    }

    #[test]
    fn a_batch_runs_in_order_each_request_finding_what_the_one_before_made() -> Result<()> {
        in_fresh_netns(|| Batch::new()?.run(requests(false)?))?;
        // Out of order the route has no way to its gateway: the batch's
        // error names it.
        let err = in_fresh_netns(|| Batch::new()?.run(requests(true)?))
            .err()
            .context("a route before its address was accepted")?;
        let text = format!("{err:#}");
        assert!(
            text.contains("route 198.51.100.0/24 via 192.0.2.1"),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn answers_name_their_requests_and_failures_come_back_as_errors() -> Result<()> {
        let err = in_fresh_netns(|| {
            // No such ifindex here: ENODEV, named by its request.
            let mut link = LinkMessage::default();
            link.header.index = 0x7fff_fff0;
            Batch::new()?.run(vec![Request {
                message: RouteNetlinkMessage::SetLink(link),
                flags: 0,
                what: "setting a missing link".into(),
            }])
        })
        .err()
        .context("a missing link was set")?;
        let text = format!("{err:#}");
        assert!(text.contains("setting a missing link"), "{text}");
        assert!(text.contains("No such device"), "{text}");
        Ok(())
    }
}
