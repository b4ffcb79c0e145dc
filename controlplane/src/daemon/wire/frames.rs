//! The frames baton sends and the claims it reads, pure: gratuitous ARP
//! (both forms) and unsolicited NA (a move's announcements), RFC 5227 ARP probes and
//! DAD-style NS probes (from ::), each with the instance's 802.1Q tag when it
//! has one (this kernel has no VLAN devices to add it), and the parser that
//! finds another host claiming an address in an ARP or ND frame.
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv6Type, PacketBuilder,
    icmpv6::NeighborAdvertisementHeader,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const BROADCAST: [u8; 6] = [0xff; 6];
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// The frames announcing `addr` at `mac`: for IPv4 a gratuitous ARP request
/// and a gratuitous ARP reply (switches differ in which they heed); for IPv6
/// an unsolicited NA to all-nodes with the override flag.
pub fn announcements(mac: [u8; 6], addr: IpAddr, vlan: Option<u16>) -> Vec<Vec<u8>> {
    let frames = match addr {
        IpAddr::V4(a) => [ArpOperation::REQUEST, ArpOperation::REPLY]
            .into_iter()
            .map(|op| arp(op, mac, a.octets(), [0; 6], a.octets()))
            .collect(),
        IpAddr::V6(a) => vec![unsolicited_na(mac, a)],
    };
    frames.into_iter().map(|f| tagged(f, vlan)).collect()
}

/// The probe for an address not ours yet: RFC 5227 "who has ADDR?" with
/// sender 0.0.0.0, or for IPv6 a DAD neighbour solicitation from ::.
pub fn probe(mac: [u8; 6], addr: IpAddr, vlan: Option<u16>) -> Vec<u8> {
    let f = match addr {
        IpAddr::V4(a) => arp(ArpOperation::REQUEST, mac, [0; 4], [0; 6], a.octets()),
        IpAddr::V6(a) => dad_ns(mac, a),
    };
    tagged(f, vlan)
}

/// Inserts an 802.1Q tag after the MAC addresses.
fn tagged(mut frame: Vec<u8>, vlan: Option<u16>) -> Vec<u8> {
    if let Some(v) = vlan
        && frame.len() >= 12
    {
        let tci = (v & 0x0fff).to_be_bytes();
        frame.splice(12..12, [0x81, 0x00, tci[0], tci[1]]);
    }
    frame
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

/// RFC 4862 5.4.2: NS from :: to the solicited-node group, no source
/// link-layer option.
fn dad_ns(mac: [u8; 6], addr: Ipv6Addr) -> Vec<u8> {
    let o = addr.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let group_mac = [0x33, 0x33, 0xff, o[13], o[14], o[15]];
    let mut out = Vec::with_capacity(78);
    let _ = PacketBuilder::ethernet2(mac, group_mac)
        .ipv6(Ipv6Addr::UNSPECIFIED.octets(), group.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborSolicitation)
        .write(&mut out, &o);
    out
}

/// Another host's word about an address, read from an ARP or ND frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub addr: IpAddr,
    /// The claimant's MAC (ARP sender, or the frame's source for ND).
    pub mac: [u8; 6],
    /// A probe (sender 0.0.0.0 / ::): it wants the address, it does not hold it.
    pub probe: bool,
}

/// The claim in a frame: an ARP packet with a sender address (or a probe
/// for a target), an NA for a target, or a DAD NS for a target. Up to two
/// VLAN tags are skipped. None for anything else, and for short frames.
pub fn sighting(frame: &[u8]) -> Option<Sighting> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        at += 4;
        ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    let body = frame.get(at + 2..)?;
    match ethertype {
        ETH_P_ARP => {
            let arp = body.get(..28)?;
            if arp[0..6] != [0, 1, 8, 0, 6, 4] {
                return None;
            }
            let mac: [u8; 6] = arp[8..14].try_into().ok()?;
            let spa: [u8; 4] = arp[14..18].try_into().ok()?;
            let tpa: [u8; 4] = arp[24..28].try_into().ok()?;
            let op = u16::from_be_bytes([arp[6], arp[7]]);
            if spa != [0; 4] {
                Some(Sighting {
                    addr: IpAddr::V4(Ipv4Addr::from(spa)),
                    mac,
                    probe: false,
                })
            } else {
                (op == 1).then_some(Sighting {
                    addr: IpAddr::V4(Ipv4Addr::from(tpa)),
                    mac,
                    probe: true,
                })
            }
        }
        ETH_P_IPV6 => {
            // Fixed header only: ND is never sent with extension headers.
            let ip = body.get(..40)?;
            if ip[6] != 58 {
                return None;
            }
            let icmp = body.get(40..64)?;
            let target: [u8; 16] = icmp[8..24].try_into().ok()?;
            let mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
            let from_unspecified = ip[8..24] == [0; 16];
            let addr = IpAddr::V6(Ipv6Addr::from(target));
            match icmp[0] {
                136 => Some(Sighting {
                    addr,
                    mac,
                    probe: false,
                }),
                135 if from_unspecified => Some(Sighting {
                    addr,
                    mac,
                    probe: true,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0xba, 0x70, 0, 0, 1];

    #[test]
    fn garp_forms_are_valid_arp_announcing_the_address() {
        let addr: IpAddr = "192.0.2.100".parse().unwrap();
        let frames = announcements(MAC, addr, None);
        assert_eq!(frames.len(), 2);
        for (f, op) in frames.iter().zip([1u16, 2]) {
            assert_eq!(&f[..6], &BROADCAST);
            assert_eq!(&f[6..12], &MAC);
            assert_eq!(f[12..14], [8, 6]);
            assert_eq!(u16::from_be_bytes([f[20], f[21]]), op);
            assert_eq!(&f[28..32], &[192, 0, 2, 100], "sender IP");
            assert_eq!(&f[38..42], &[192, 0, 2, 100], "target IP");
            let c = sighting(f).unwrap();
            assert_eq!((c.addr, c.mac, c.probe), (addr, MAC, false));
        }
    }

    #[test]
    fn a_vlan_instance_announces_and_probes_tagged() {
        let v4: IpAddr = "192.0.2.100".parse().unwrap();
        let v6: IpAddr = "2001:db8::100".parse().unwrap();
        let mut frames = announcements(MAC, v4, Some(100));
        frames.extend(announcements(MAC, v6, Some(100)));
        frames.push(probe(MAC, v4, Some(100)));
        frames.push(probe(MAC, v6, Some(100)));
        for f in &frames {
            assert_eq!(f[12..16], [0x81, 0x00, 0x00, 100], "tag");
            let sliced = etherparse::SlicedPacket::from_ethernet(f).expect("valid");
            assert_eq!(sliced.vlan_ids().first().map(|v| v.value()), Some(100));
            assert!(
                sighting(f).is_some(),
                "its own claim parses through the tag"
            );
        }
    }

    #[test]
    fn unsolicited_na_has_override_target_and_valid_checksum() {
        let mac = [2, 0, 0, 0, 0, 9];
        let addr: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let f = &announcements(mac, IpAddr::V6(addr), None)[0];
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
        assert_eq!(sighting(f).map(|c| c.probe), Some(false));
    }

    #[test]
    fn a_dad_probe_is_an_ns_from_unspecified_to_the_solicited_node_group() {
        let addr: Ipv6Addr = "2001:db8::12:3456".parse().unwrap();
        let f = probe(MAC, IpAddr::V6(addr), None);
        assert_eq!(f[..6], [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        let sliced = etherparse::SlicedPacket::from_ethernet(&f).expect("valid");
        let Some(etherparse::NetSlice::Ipv6(ip)) = &sliced.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.header().source(), [0; 16]);
        assert_eq!(
            ip.header().destination_addr(),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(ip.header().hop_limit(), 255);
        let c = sighting(&f).unwrap();
        assert_eq!((c.addr, c.probe), (IpAddr::V6(addr), true));
    }

    #[test]
    fn probes_and_short_or_foreign_frames() {
        let addr: IpAddr = "192.0.2.100".parse().unwrap();
        let p = probe(MAC, addr, None);
        assert_eq!(&p[28..32], &[0, 0, 0, 0]);
        assert_eq!(
            sighting(&p),
            Some(Sighting {
                addr,
                mac: MAC,
                probe: true
            })
        );
        for n in [0, 13, 20, 41] {
            assert_eq!(sighting(&p[..n]), None, "truncated to {n}");
        }
        let mut ipv4 = p.clone();
        ipv4[12..14].copy_from_slice(&[8, 0]);
        assert_eq!(sighting(&ipv4), None, "not ARP");
        // An ARP reply with sender 0.0.0.0 claims nothing.
        let mut reply = p;
        reply[21] = 2;
        assert_eq!(sighting(&reply), None);
    }
}
