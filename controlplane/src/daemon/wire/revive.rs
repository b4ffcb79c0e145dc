//! The end of TCP's retransmission backoff at a move (RFC 6069, TCP-LD):
//! while an address was gone, both ends' retransmission timers backed off
//! (200 ms, 400, 800 ...), so the first retransmission after the move may
//! come a second late. The kernel reverts one backoff step for each ICMP
//! destination unreachable that quotes the socket's own segment with
//! sequence number = its snd_una, and retransmits at once when the
//! reverted timer has passed (tcp_ld_RTO_revert in tcp_v4_err/tcp_v6_err).
//!
//! After a move's first announcement: every TCP socket on the instance's
//! address, read exactly by the `iter/tcp` program, that is established
//! (or FIN_WAIT1/2, CLOSE_WAIT) gets two ICMPs for its peer (quoting the
//! peer's segment: seq = our rcv_nxt; a receiving socket is not backed off
//! itself, its sending peer is), and, with backoff > 0, `backoff` for
//! itself (to its own address: they never leave the host). Then again
//! shortly after, where backoff is still > 0 (the kernel drops the ICMP
//! while user space holds the socket lock). Never a SYN_SENT/SYN_RECV socket (an ICMP
//! there aborts the connection), never a guessed sequence number.
use super::raw::{RawSocket, checksum};
use crate::dataplane::sockets::{
    TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TcpSocket, TcpSockets,
};
use anyhow::Result;
use baton_config::InstanceName;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, warn};

/// Pauses before each look at the sockets after the first.
const ROUNDS: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(20),
    Duration::from_millis(100),
];
/// ICMPs for the peer of each socket (it may lose one).
const TO_PEER: usize = 2;

/// What one revival did.
#[derive(Clone, Debug, Default)]
pub struct Revival {
    pub instance: InstanceName,
    /// Sockets that were backed off and got ICMPs.
    pub sockets: usize,
    pub icmps: usize,
    /// Sockets still backed off after the last round.
    pub left: usize,
}

#[derive(Clone)]
pub struct Reviver {
    sockets: Arc<Mutex<TcpSockets>>,
}

impl Reviver {
    pub fn new(sockets: Arc<Mutex<TcpSockets>>) -> Reviver {
        Reviver { sockets }
    }

    /// Revives the sockets on `addr` off the main loop; the result goes to
    /// `done`. `outage`: the address was gone (a failover), so the peers
    /// may be backed off too; a planned move or failback had no outage.
    pub fn spawn(
        &self,
        instance: InstanceName,
        addr: IpAddr,
        outage: bool,
        done: tokio::sync::mpsc::UnboundedSender<Revival>,
    ) {
        let sockets = self.sockets.clone();
        tokio::task::spawn_blocking(move || {
            let revival = match revive(&sockets, &instance, addr, outage) {
                Ok(r) => r,
                Err(e) => {
                    warn!(%instance, error = %format!("{e:#}"), "backoff revert");
                    Revival {
                        instance,
                        ..Revival::default()
                    }
                }
            };
            let _ = done.send(revival);
        });
    }
}

/// The sockets the revert may touch: on `addr`, synchronised (never
/// SYN_SENT/SYN_RECV: there the ICMP would abort the connection).
fn synchronised(all: Vec<TcpSocket>, addr: IpAddr) -> Vec<TcpSocket> {
    all.into_iter()
        .filter(|s| s.local == addr)
        .filter(|s| {
            matches!(
                s.state,
                TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSE_WAIT
            )
        })
        .collect()
}

fn revive(
    sockets: &Mutex<TcpSockets>,
    instance: &InstanceName,
    addr: IpAddr,
    outage: bool,
) -> Result<Revival> {
    let read = || -> Result<Vec<TcpSocket>> {
        let mut s = sockets
            .lock()
            .map_err(|_| anyhow::anyhow!("socket reader poisoned"))?;
        Ok(synchronised(s.read()?, addr))
    };
    let protocol = if addr.is_ipv6() {
        libc::IPPROTO_ICMPV6
    } else {
        libc::IPPROTO_ICMP
    };
    let raw = RawSocket::open(addr.is_ipv6(), protocol)?;
    let mut revival = Revival {
        instance: instance.clone(),
        ..Revival::default()
    };
    let mut touched = std::collections::BTreeSet::new();
    let all = read()?;
    // The peers: their backoff cannot be seen from here, and an ICMP that
    // does not match their snd_una is ignored, so after an outage every
    // synchronised socket's peer gets its two, once.
    for s in all.iter().filter(|_| outage) {
        for _ in 0..TO_PEER {
            raw.send(&quote(s, Toward::Peer), s.remote)?;
            revival.icmps += 1;
        }
        touched.insert((s.local_port, s.remote, s.remote_port));
    }
    // Our own sockets: one ICMP per backoff step, again while any is left.
    let mut backed: Vec<TcpSocket> = all.into_iter().filter(|s| s.backoff > 0).collect();
    for s in &backed {
        touched.insert((s.local_port, s.remote, s.remote_port));
    }
    for pause in ROUNDS
        .iter()
        .copied()
        .chain(std::iter::once(Duration::ZERO))
    {
        for s in &backed {
            for _ in 0..s.backoff {
                raw.send(&quote(s, Toward::Us), s.local)?;
                revival.icmps += 1;
            }
        }
        if pause.is_zero() || backed.is_empty() {
            break;
        }
        std::thread::sleep(pause);
        backed = read()?.into_iter().filter(|s| s.backoff > 0).collect();
    }
    revival.sockets = touched.len();
    revival.left = backed.len();
    debug!(
        %instance,
        sockets = revival.sockets,
        icmps = revival.icmps,
        left = revival.left,
        "backoff reverted"
    );
    Ok(revival)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Toward {
    /// Our own socket: it quotes our segment (seq = our snd_una).
    Us,
    /// The peer: it quotes the peer's segment (seq = our rcv_nxt).
    Peer,
}

/// An ICMP (v4: type 3 code 1) or ICMPv6 (type 1 code 0) destination
/// unreachable quoting the first 8 bytes of a TCP segment of `s`.
fn quote(s: &TcpSocket, to: Toward) -> Vec<u8> {
    let (src, dst, sport, dport, seq) = match to {
        Toward::Us => (s.local, s.remote, s.local_port, s.remote_port, s.snd_una),
        Toward::Peer => (s.remote, s.local, s.remote_port, s.local_port, s.rcv_nxt),
    };
    let mut tcp = Vec::with_capacity(8);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            let sum = checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            let mut m = vec![3, 1, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&ip);
            m.extend_from_slice(&tcp);
            let sum = checksum(&m);
            m[2..4].copy_from_slice(&sum.to_be_bytes());
            m
        }
        (src, dst) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            // The kernel fills the ICMPv6 checksum of a raw socket.
            let mut m = vec![1, 0, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
            m.extend_from_slice(&v6(src));
            m.extend_from_slice(&v6(dst));
            m.extend_from_slice(&tcp);
            m
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(v6: bool) -> TcpSocket {
        let (l, r): (IpAddr, IpAddr) = if v6 {
            (
                "2001:db8::100".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            )
        } else {
            ("192.0.2.100".parse().unwrap(), "192.0.2.1".parse().unwrap())
        };
        TcpSocket {
            local: l,
            local_port: 3260,
            remote: r,
            remote_port: 40000,
            state: TCP_ESTABLISHED,
            snd_una: 0x0102_0304,
            rcv_nxt: 0x0a0b_0c0d,
            backoff: 3,
            retransmits: 3,
        }
    }

    #[test]
    fn the_icmp_to_our_socket_quotes_its_segment_at_snd_una() {
        let m = quote(&socket(false), Toward::Us);
        assert_eq!(
            &m[..2],
            &[3, 1],
            "destination unreachable, host unreachable"
        );
        assert_eq!(checksum(&m), 0, "ICMP checksum");
        let ip = &m[8..28];
        assert_eq!(checksum(ip), 0, "inner IPv4 header checksum");
        assert_eq!(
            (ip[9], &ip[12..16], &ip[16..20]),
            (6, &[192, 0, 2, 100][..], &[192, 0, 2, 1][..])
        );
        assert_eq!(&m[28..32], &[0x0c, 0xbc, 0x9c, 0x40], "ports 3260 -> 40000");
        assert_eq!(&m[32..36], &[1, 2, 3, 4], "seq = snd_una");
    }

    #[test]
    fn the_icmp_to_the_peer_quotes_the_peers_segment_at_our_rcv_nxt() {
        let m = quote(&socket(false), Toward::Peer);
        assert_eq!(
            &m[8 + 12..8 + 16],
            &[192, 0, 2, 1],
            "inner source: the peer"
        );
        assert_eq!(&m[28..32], &[0x9c, 0x40, 0x0c, 0xbc]);
        assert_eq!(&m[32..36], &[0x0a, 0x0b, 0x0c, 0x0d]);
        let v6 = quote(&socket(true), Toward::Us);
        assert_eq!((v6[0], v6[1], v6[8] >> 4, v6[14]), (1, 0, 6, 6));
        assert_eq!(&v6[8 + 40 + 4..8 + 40 + 8], &[1, 2, 3, 4]);
    }

    #[test]
    fn only_synchronised_sockets_on_the_address_are_touched() {
        let addr: IpAddr = "192.0.2.100".parse().unwrap();
        let mut syn_recv = socket(false);
        syn_recv.state = 3;
        let mut syn_sent = socket(false);
        syn_sent.state = 2;
        let mut calm = socket(false);
        calm.backoff = 0;
        let mut elsewhere = socket(false);
        elsewhere.local = "192.0.2.10".parse().unwrap();
        let kept = synchronised(
            vec![socket(false), syn_recv, syn_sent, calm, elsewhere],
            addr,
        );
        assert_eq!(kept, vec![socket(false), calm]);
    }
}
