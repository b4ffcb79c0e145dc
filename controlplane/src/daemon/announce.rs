//! Frames on the wire from baton itself: gratuitous ARP (both forms) and
//! unsolicited neighbour advertisements after a move (seed block 356), and
//! the RFC 5227 ARP probe before taking an address that is not ours yet.
//! Sent and received on an AF_PACKET socket bound to one port: no process is
//! spawned on the move path.
use anyhow::{Context as _, Result, bail};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv6Type, PacketBuilder,
    icmpv6::NeighborAdvertisementHeader,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const BROADCAST: [u8; 6] = [0xff; 6];
const ETH_P_ARP: u16 = 0x0806;

/// The frames announcing `addr` at `mac`: for IPv4 a gratuitous ARP request
/// and a gratuitous ARP reply (switches differ in which they heed); for IPv6
/// an unsolicited NA to all-nodes with the override flag.
pub fn announcements(mac: [u8; 6], addr: IpAddr) -> Vec<Vec<u8>> {
    match addr {
        IpAddr::V4(a) => [ArpOperation::REQUEST, ArpOperation::REPLY]
            .into_iter()
            .map(|op| arp(op, mac, a.octets(), [0; 6], a.octets()))
            .collect(),
        IpAddr::V6(a) => vec![unsolicited_na(mac, a)],
    }
}

/// RFC 5227 probe: "who has ADDR?" with sender IP 0.0.0.0.
pub fn arp_probe(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    arp(ArpOperation::REQUEST, mac, [0; 4], [0; 6], addr.octets())
}

fn arp(
    op: ArpOperation,
    mac: [u8; 6],
    sender: [u8; 4],
    target_mac: [u8; 6],
    target: [u8; 4],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(42);
    // Valid lengths by construction (6-byte MACs, 4-byte addresses).
    if let Ok(packet) = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &mac,
        &sender,
        &target_mac,
        &target,
    ) {
        let _ = PacketBuilder::ethernet2(mac, BROADCAST)
            .arp(packet)
            .write(&mut out);
    }
    out
}

fn unsolicited_na(mac: [u8; 6], addr: Ipv6Addr) -> Vec<u8> {
    let all_nodes: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut payload = addr.octets().to_vec();
    payload.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    payload.extend_from_slice(&mac);
    let na = NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    };
    let mut out = Vec::with_capacity(86);
    let _ = PacketBuilder::ethernet2(mac, [0x33, 0x33, 0, 0, 0, 1])
        .ipv6(addr.octets(), all_nodes.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(na))
        .write(&mut out, &payload);
    out
}

/// An AF_PACKET socket bound to one port.
pub struct PortSocket {
    fd: OwnedFd,
}

impl PortSocket {
    pub fn open(ifindex: u32, protocol: u16) -> Result<Self> {
        // SAFETY: plain socket(2); ownership moves into OwnedFd.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error())
                .context("opening an AF_PACKET socket (root needed)");
        }
        // SAFETY: raw is a fresh, valid fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: valid fd and sockaddr_ll of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("binding an AF_PACKET socket to ifindex {ifindex}"));
        }
        Ok(PortSocket { fd })
    }

    pub fn for_sending(ifindex: u32) -> Result<Self> {
        // Protocol 0: bound for sending only, receives nothing.
        Self::open(ifindex, 0)
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a frame");
        }
        Ok(())
    }

    /// Receives one frame, waiting at most `timeout`; None on timeout.
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("poll");
        }
        if rc == 0 {
            return Ok(None);
        }
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("recv");
        }
        Ok(Some(n as usize))
    }
}

/// The sender MAC of an ARP frame showing `addr` in use: it claims `addr` as
/// its sender address, or it is another probe for `addr` (RFC 5227 2.1.1).
fn conflict(frame: &[u8], addr: Ipv4Addr) -> Option<[u8; 6]> {
    let arp = frame.get(14..42)?;
    if u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_ARP || arp[0..6] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let sender_mac: [u8; 6] = arp[8..14].try_into().ok()?;
    let (spa, tpa) = (&arp[14..18], &arp[24..28]);
    let op = u16::from_be_bytes([arp[6], arp[7]]);
    let probe_for_it = op == 1 && spa == [0, 0, 0, 0] && tpa == addr.octets();
    (spa == addr.octets() || probe_for_it).then_some(sender_mac)
}

/// RFC 5227 for many addresses at once: one probe each, one listening
/// window. Returns the addresses another device uses (with its MAC).
pub fn probe_v4_many(
    ifindex: u32,
    own_macs: &[[u8; 6]],
    addrs: &[Ipv4Addr],
    wait: Duration,
) -> Result<Vec<(Ipv4Addr, [u8; 6])>> {
    let sock = PortSocket::open(ifindex, ETH_P_ARP)?;
    let mac = *own_macs.first().context("no MAC to probe from")?;
    for a in addrs {
        sock.send(&arp_probe(mac, *a))?;
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1600];
    let mut found = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(n) = sock.recv(&mut buf, left)? else {
            break;
        };
        for a in addrs {
            if let Some(sender) = conflict(&buf[..n], *a)
                && !own_macs.contains(&sender)
                && !found.iter().any(|(x, _)| x == a)
            {
                found.push((*a, sender));
            }
        }
    }
    Ok(found)
}

/// Sends `count` rounds of announcements, `interval` apart, from `ifindex`.
pub async fn announce(
    ifindex: u32,
    mac: [u8; 6],
    addr: IpAddr,
    count: u32,
    interval: Duration,
) -> Result<()> {
    if count == 0 {
        bail!("announce_count is 0");
    }
    let sock = PortSocket::for_sending(ifindex)?;
    let frames = announcements(mac, addr);
    for round in 0..count {
        for f in &frames {
            sock.send(f)?;
        }
        if round + 1 < count {
            tokio::time::sleep(interval).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_forms_are_valid_arp_announcing_the_address() {
        let mac = [2, 0xba, 0x70, 0, 0, 1];
        let frames = announcements(mac, "192.0.2.100".parse().unwrap());
        assert_eq!(frames.len(), 2);
        for (f, op) in frames.iter().zip([1u16, 2]) {
            let sliced = etherparse::SlicedPacket::from_ethernet(f).expect("valid");
            assert_eq!(&f[..6], &BROADCAST);
            assert_eq!(&f[6..12], &mac);
            assert!(sliced.net.is_some() || f[12..14] == [8, 6]);
            assert_eq!(u16::from_be_bytes([f[20], f[21]]), op);
            assert_eq!(&f[28..32], &[192, 0, 2, 100], "sender IP");
            assert_eq!(&f[38..42], &[192, 0, 2, 100], "target IP");
            assert_eq!(conflict(f, "192.0.2.100".parse().unwrap()), Some(mac));
        }
    }

    #[test]
    fn unsolicited_na_has_override_target_and_valid_checksum() {
        let mac = [2, 0, 0, 0, 0, 9];
        let addr: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let f = &announcements(mac, IpAddr::V6(addr))[0];
        let sliced = etherparse::SlicedPacket::from_ethernet(f).expect("valid");
        let Some(etherparse::TransportSlice::Icmpv6(icmp)) = sliced.transport else {
            panic!("not ICMPv6")
        };
        let Icmpv6Type::NeighborAdvertisement(na) = icmp.icmp_type() else {
            panic!("not an NA")
        };
        assert!(na.r#override && !na.solicited);
        assert_eq!(&icmp.payload()[..16], &addr.octets());
        assert_eq!(&icmp.payload()[16..24], &[2, 1, 2, 0, 0, 0, 0, 9]);
        let Some(etherparse::NetSlice::Ipv6(ip)) = &sliced.net else {
            panic!("not IPv6")
        };
        let expected = icmp
            .header()
            .icmp_type
            .calc_checksum(
                ip.header().source(),
                ip.header().destination(),
                icmp.payload(),
            )
            .unwrap();
        assert_eq!(icmp.header().checksum, expected);
    }

    #[test]
    fn a_probe_is_not_a_conflict_with_itself_but_another_probe_is() {
        let addr: Ipv4Addr = "192.0.2.100".parse().unwrap();
        let probe = arp_probe([2, 0, 0, 0, 0, 1], addr);
        assert_eq!(&probe[28..32], &[0, 0, 0, 0]);
        assert_eq!(conflict(&probe, addr), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(conflict(&probe, "192.0.2.101".parse().unwrap()), None);
        assert_eq!(conflict(&probe[..30], addr), None, "truncated");
    }
}
