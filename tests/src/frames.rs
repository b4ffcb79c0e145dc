//! Test frames: valid ones built with etherparse, and the byte surgery that
//! makes them lie (truncation, bad lengths, extra tags, IPv4 options).
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const CLIENT_V4: [u8; 4] = [192, 0, 2, 1];
pub const GATEWAY_V4: [u8; 4] = [192, 0, 2, 10];
pub const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const GATEWAY_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Offsets in an untagged frame.
pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;

pub enum L4 {
    Tcp,
    Udp,
    Icmp,
}

/// An IPv4 frame carrying `l4` with `payload`, with the given 802.1Q tags.
pub fn ipv4(vlans: &[u16], l4: L4, payload: &[u8]) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC).ipv4(CLIENT_V4, GATEWAY_V4, 64);
    let mut out = Vec::new();
    let written = match l4 {
        L4::Tcp => ip.tcp(40000, 3260, 1000, 64000).write(&mut out, payload),
        L4::Udp => ip.udp(40000, 7).write(&mut out, payload),
        L4::Icmp => ip.icmpv4_echo_request(1, 1).write(&mut out, payload),
    };
    written.expect("etherparse writes into a Vec");
    tag(out, vlans)
}

/// An IPv6 frame carrying `l4` with `payload`.
pub fn ipv6(vlans: &[u16], l4: L4, payload: &[u8]) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC).ipv6(CLIENT_V6, GATEWAY_V6, 64);
    let mut out = Vec::new();
    let written = match l4 {
        L4::Tcp => ip.tcp(40000, 3260, 1000, 64000).write(&mut out, payload),
        L4::Udp => ip.udp(40000, 7).write(&mut out, payload),
        L4::Icmp => ip.icmpv6_echo_request(1, 1).write(&mut out, payload),
    };
    written.expect("etherparse writes into a Vec");
    tag(out, vlans)
}

/// An ARP request (who has `target`? tell CLIENT_V4), broadcast.
pub fn arp_request(vlans: &[u16], target: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &CLIENT_MAC,
        &CLIENT_V4,
        &[0; 6],
        &target,
    )
    .expect("valid ARP lengths");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
        .arp(arp)
        .write(&mut out)
        .expect("etherparse writes into a Vec");
    tag(out, vlans)
}

/// An IPv6 neighbour solicitation for `target` (to its solicited-node group).
pub fn neighbor_solicit(vlans: &[u16], target: [u8; 16]) -> Vec<u8> {
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&target[13..]);
    let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&target);
    let mut out = Vec::new();
    PacketBuilder::ethernet2(
        CLIENT_MAC,
        [0x33, 0x33, 0xff, target[13], target[14], target[15]],
    )
    .ipv6(CLIENT_V6, group, 255)
    .write(&mut out, etherparse::IpNumber::IPV6_ICMP, &body)
    .expect("etherparse writes into a Vec");
    tag(out, vlans)
}

/// A gratuitous ARP reply for `addr` from `mac` (what baton announces).
pub fn garp_reply(mac: [u8; 6], addr: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REPLY,
        &mac,
        &addr,
        &[0xff; 6],
        &addr,
    )
    .expect("valid ARP lengths");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac, [0xff; 6])
        .arp(arp)
        .write(&mut out)
        .expect("etherparse writes into a Vec");
    out
}

/// A UDP frame between the given MACs and addresses (port 9, discard).
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    payload: &[u8],
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(40000, 9)
        .write(out, payload)?;
    Ok(())
}

/// Inserts 802.1Q tags after the MAC addresses, outermost first. An
/// outermost tag above 0x0fff is written as 802.1ad (S-tag) with the low
/// 12 bits as its id.
pub fn tag(frame: Vec<u8>, vlans: &[u16]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for (i, vlan) in vlans.iter().enumerate() {
        let tpid: u16 = if i == 0 && *vlan > 0x0fff {
            0x88a8
        } else {
            0x8100
        };
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// Adds IPv4 options (padded to 4 bytes with EOL) to an untagged IPv4 frame,
/// fixing IHL, total length and the header checksum.
pub fn with_ipv4_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let ip = ETH_LEN;
    let ihl = (frame[ip] & 0x0f) as usize * 4;
    let mut out = frame[..ip + ihl].to_vec();
    out.extend_from_slice(&opts);
    out.extend_from_slice(&frame[ip + ihl..]);
    out[ip] = 0x40 | ((ihl + opts.len()) / 4) as u8;
    let total = u16::from_be_bytes([out[ip + 2], out[ip + 3]]) + opts.len() as u16;
    out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut out);
    out
}

pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ip = ETH_LEN;
    let ihl = (frame[ip] & 0x0f) as usize * 4;
    frame[ip + 10] = 0;
    frame[ip + 11] = 0;
    let mut sum: u32 = 0;
    for pair in frame[ip..ip + ihl.max(20).min(frame.len() - ip)].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[ip + 10..ip + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Overwrites a big-endian u16 at `offset`.
pub fn set_u16(mut frame: Vec<u8>, offset: usize, value: u16) -> Vec<u8> {
    frame[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
    frame
}

/// Overwrites one byte at `offset`.
pub fn set_u8(mut frame: Vec<u8>, offset: usize, value: u8) -> Vec<u8> {
    frame[offset] = value;
    frame
}

/// A gratuitous ARP reply: `mac` claims `addr` (what another host sends when
/// it takes an address).
pub fn gratuitous_arp(mac: [u8; 6], addr: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REPLY,
        &mac,
        &addr,
        &[0xff; 6],
        &addr,
    )
    .expect("valid lengths by construction");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac, [0xff; 6])
        .arp(arp)
        .write(&mut out)
        .expect("etherparse writes into a Vec");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_produce_frames_etherparse_accepts() {
        for frame in [
            ipv4(&[], L4::Tcp, b"x"),
            ipv6(&[], L4::Udp, b"x"),
            arp_request(&[], GATEWAY_V4),
        ] {
            etherparse::SlicedPacket::from_ethernet(&frame).expect("valid frame");
        }
        let tagged = ipv4(&[10, 20], L4::Tcp, b"x");
        let sliced = etherparse::SlicedPacket::from_ethernet(&tagged).expect("valid tagged frame");
        let ids: Vec<u16> = sliced.vlan_ids().iter().map(|v| v.value()).collect();
        assert_eq!(ids, vec![10, 20]);
    }

    #[test]
    fn options_fix_lengths_and_checksum() {
        let frame = with_ipv4_options(&ipv4(&[], L4::Tcp, b"abc"), &[1, 1, 1]);
        let (hdr, _) =
            etherparse::Ipv4Header::from_slice(&frame[ETH_LEN..]).expect("valid IPv4 header");
        assert_eq!(hdr.ihl(), 6);
        assert_eq!(hdr.calc_header_checksum(), hdr.header_checksum);
        assert_eq!(hdr.total_len as usize, frame.len() - ETH_LEN);
    }
}
