//! Tickle ACKs (Samba CTDB's): after this member takes an instance over,
//! each client connection the old owner published gets a TCP ACK with
//! sequence numbers out of its window. The client answers with an ACK of
//! its own (at most one per 500 ms per connection: tcp_invalid_ratelimit);
//! this host has no such connection, so its kernel answers that with a
//! reset, and the client reconnects at once instead of waiting for its own
//! timers (open-iscsi's NOP-Out: 5 s + 5 s). Nothing here guesses a
//! sequence number the client would accept: only the kernel's reset, made
//! from the client's own answer, ends the connection.
use super::raw::{RawSocket, checksum};
use crate::cluster::records::Conn;
use anyhow::Result;
use baton_config::InstanceName;
use std::net::IpAddr;
use std::time::Duration;
use tracing::debug;

/// Rounds per connection and the pause between them: a lost tickle, a lost
/// answer or a lost reset costs one round, not the connection.
const ROUNDS: usize = 3;
const SPACING: Duration = Duration::from_millis(20);

/// What one takeover's tickles did.
#[derive(Clone, Debug, Default)]
pub struct Tickled {
    pub instance: InstanceName,
    pub connections: usize,
    pub acks: usize,
}

/// Sends the tickles off the main loop; the result goes to `done`.
pub fn spawn(
    instance: InstanceName,
    addr: IpAddr,
    conns: Vec<Conn>,
    done: tokio::sync::mpsc::UnboundedSender<Result<Tickled, (InstanceName, String)>>,
) {
    tokio::task::spawn_blocking(move || {
        let r = tickle(&instance, addr, &conns).map_err(|e| (instance, format!("{e:#}")));
        let _ = done.send(r);
    });
}

fn tickle(instance: &InstanceName, addr: IpAddr, conns: &[Conn]) -> Result<Tickled> {
    let raw = RawSocket::open(addr.is_ipv6(), libc::IPPROTO_TCP)?;
    raw.bind(addr)?;
    let mut acks = 0;
    for round in 0..ROUNDS {
        if round > 0 {
            std::thread::sleep(SPACING);
        }
        for c in conns
            .iter()
            .filter(|c| c.remote.is_ipv6() == addr.is_ipv6())
        {
            raw.send(&ack(addr, c), c.remote)?;
            acks += 1;
        }
    }
    debug!(%instance, connections = conns.len(), acks, "tickled");
    Ok(Tickled {
        instance: instance.clone(),
        connections: conns.len(),
        acks,
    })
}

/// A bare TCP ACK (header only) from `local`:`c.local_port` to the peer,
/// sequence and acknowledgement numbers 0, with its checksum.
pub fn ack(local: IpAddr, c: &Conn) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&c.local_port.to_be_bytes());
    tcp.extend_from_slice(&c.remote_port.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes()); // seq
    tcp.extend_from_slice(&0u32.to_be_bytes()); // ack
    tcp.extend_from_slice(&[5 << 4, 0x10]); // 20 bytes, ACK
    tcp.extend_from_slice(&1024u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    let mut pseudo = Vec::with_capacity(40 + 20);
    match (local, c.remote) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 6, 0, 20]);
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            pseudo.extend_from_slice(&v6(s));
            pseudo.extend_from_slice(&v6(d));
            pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        }
    }
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    tcp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(remote: &str) -> Conn {
        Conn {
            local_port: 3260,
            remote: remote.parse().unwrap(),
            remote_port: 40001,
        }
    }

    /// The checksum over pseudo-header and segment, summed again with the
    /// stored checksum, is 0 (RFC 1071): what the receiver checks.
    fn verifies(local: IpAddr, c: &Conn, tcp: &[u8]) -> bool {
        let mut p = Vec::new();
        match (local, c.remote) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&[0, 6, 0, tcp.len() as u8]);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&[0, 0, 0, tcp.len() as u8, 0, 0, 0, 6]);
            }
            _ => return false,
        }
        p.extend_from_slice(tcp);
        checksum(&p) == 0
    }

    #[test]
    fn a_tickle_is_a_bare_ack_from_the_instance_port_to_the_client() {
        for (local, remote) in [
            ("192.0.2.100", "192.0.2.1"),
            ("2001:db8::100", "2001:db8::1"),
        ] {
            let c = conn(remote);
            let local: IpAddr = local.parse().unwrap();
            let t = ack(local, &c);
            assert_eq!(t.len(), 20);
            assert_eq!(u16::from_be_bytes([t[0], t[1]]), 3260);
            assert_eq!(u16::from_be_bytes([t[2], t[3]]), 40001);
            assert_eq!(t[12] >> 4, 5, "data offset");
            assert_eq!(t[13], 0x10, "ACK only: never SYN, RST or FIN");
            assert!(verifies(local, &c, &t), "checksum of {t:?}");
            let mut bad = t.clone();
            bad[4] ^= 1;
            assert!(!verifies(local, &c, &bad));
        }
    }
}
