//! Bounds-checked frame parsing, shared by the XDP and TC programs. Every
//! read goes through [`Frame::at`], which checks the whole header against
//! `data_end` first: what the verifier needs and what a frame that lies about
//! its lengths deserves.

use baton_common::{Class, InstanceKey};
use core::mem::size_of;
use network_types::{
    eth::EthHdr,
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

// Ethertypes in host order (network-types' EtherType values are in network order).
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Ethernet/IPv4 ARP body: htype, ptype, hlen, plen, oper, sha, spa, tha, tpa.
const ARP_IPV4_LEN: usize = 28;
const ARP_REQUEST: u16 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 header (4) + reserved (4) + target address (16).
const NS_LEN: usize = 24;

/// A frame's bytes in memory (`start..end`) and its length on the wire:
/// at TC egress a large TCP send is one skb whose payload sits beyond
/// `end`, in pages; lengths are checked against `wire_len`, reads against `end`.
pub struct Frame {
    start: usize,
    end: usize,
    wire_len: usize,
}

/// What the parser found: one L3 class, and an L4 class when a complete
/// TCP/UDP header follows; the instance-table keys of the frame's source and
/// destination (ARP: sender and target; neighbour solicitation: its target);
/// whether the frame asks who owns `dst` (ARP request, NS); the VLAN tags
/// in front of L3; TCP/UDP ports and the TCP segment.
pub struct Parsed {
    pub l3: Class,
    pub l4: Option<Class>,
    pub src: Option<InstanceKey>,
    pub dst: Option<InstanceKey>,
    pub solicit: bool,
    pub tags: u8,
    /// (source, destination) of a TCP or UDP header.
    pub ports: Option<(u16, u16)>,
    pub tcp: Option<Segment>,
}

/// A TCP segment: sequence number, flags and where its payload lies.
#[derive(Clone, Copy)]
pub struct Segment {
    pub seq: u32,
    pub syn: bool,
    pub rst: bool,
    /// Offset of the payload from the start of the frame.
    pub payload_offset: u32,
    pub payload_len: u32,
}

impl Frame {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Frame {
            start,
            end,
            wire_len: end - start,
        }
    }

    /// A frame of which only `start..end` is readable in place.
    #[inline(always)]
    pub fn with_wire_len(start: usize, end: usize, wire_len: usize) -> Self {
        let in_memory = end - start;
        Frame {
            start,
            end,
            wire_len: if wire_len < in_memory {
                in_memory
            } else {
                wire_len
            },
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.wire_len
    }

    /// A pointer to a `T` at `offset`, or `None` when the frame is too short.
    #[inline(always)]
    fn at<T>(&self, offset: usize) -> Option<*const T> {
        if self.start + offset + size_of::<T>() > self.end {
            return None;
        }
        Some((self.start + offset) as *const T)
    }
}

const fn just(l3: Class) -> Parsed {
    Parsed {
        l3,
        l4: None,
        src: None,
        dst: None,
        solicit: false,
        tags: 0,
        ports: None,
        tcp: None,
    }
}

const fn malformed() -> Parsed {
    just(Class::Malformed)
}

/// `hw_vlan`: a tag the kernel already took out of the frame (TC sees
/// received tags in skb metadata), 0 if none.
#[inline(always)]
pub fn classify(frame: &Frame, hw_vlan: u16) -> Parsed {
    let Some(eth) = frame.at::<EthHdr>(0) else {
        return malformed();
    };
    // SAFETY: `at` checked the header lies inside the frame.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut offset = EthHdr::LEN;
    let mut vlan = hw_vlan;

    // Up to two tags: 802.1ad (S-tag) or 802.1Q outside, 802.1Q inside.
    for depth in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let Some(tag) = frame.at::<VlanHdr>(offset) else {
            return malformed();
        };
        // SAFETY: bounds checked by `at`.
        let (tci, inner) = unsafe { ((*tag).tci, (*tag).ether_type) };
        if depth == 0 && hw_vlan == 0 {
            vlan = u16::from_be_bytes(tci) & 0x0fff;
        }
        ether_type = u16::from_be(inner);
        offset += VlanHdr::LEN;
    }

    let mut parsed = match ether_type {
        ETH_P_ARP => arp(frame, offset, vlan),
        ETH_P_IP => ipv4(frame, offset, vlan),
        ETH_P_IPV6 => ipv6(frame, offset, vlan),
        // A third tag, or any other ethertype.
        _ => just(Class::Other),
    };
    parsed.tags = ((offset - EthHdr::LEN) / VlanHdr::LEN) as u8;
    parsed
}

#[inline(always)]
fn arp(frame: &Frame, offset: usize, vlan: u16) -> Parsed {
    let Some(arp) = frame.at::<[u8; ARP_IPV4_LEN]>(offset) else {
        return malformed();
    };
    // SAFETY: bounds checked by `at`.
    let a = unsafe { &*arp };
    // Only Ethernet/IPv4 ARP names instance addresses: htype 1, ptype 0x0800, hlen 6, plen 4.
    if a[0..6] != [0, 1, 8, 0, 6, 4] {
        return just(Class::Arp);
    }
    Parsed {
        src: Some(InstanceKey::v4(vlan, [a[14], a[15], a[16], a[17]])),
        dst: Some(InstanceKey::v4(vlan, [a[24], a[25], a[26], a[27]])),
        solicit: u16::from_be_bytes([a[6], a[7]]) == ARP_REQUEST,
        ..just(Class::Arp)
    }
}

#[inline(always)]
fn ipv4(frame: &Frame, offset: usize, vlan: u16) -> Parsed {
    let Some(ip) = frame.at::<Ipv4Hdr>(offset) else {
        return malformed();
    };
    // SAFETY: bounds checked by `at`.
    let ip = unsafe { &*ip };
    let header_len = ip.ihl() as usize; // (IHL & 0xf) * 4: at most 60
    let total_len = ip.tot_len() as usize;
    let available = frame.len() - offset;
    if ip.version() != 4
        || header_len < Ipv4Hdr::LEN
        || total_len < header_len
        || total_len > available
        || frame.at::<u8>(offset + header_len - 1).is_none()
    {
        return malformed();
    }
    // Later fragments carry no L4 header.
    let mut parsed = if ip.frag_offset() != 0 {
        just(Class::Ipv4)
    } else {
        l4(
            frame,
            offset + header_len,
            total_len - header_len,
            ip.proto,
            Class::Ipv4,
        )
    };
    if parsed.l3 == Class::Ipv4 {
        parsed.src = Some(InstanceKey::v4(vlan, ip.src_addr));
        parsed.dst = Some(InstanceKey::v4(vlan, ip.dst_addr));
    }
    parsed
}

#[inline(always)]
fn ipv6(frame: &Frame, offset: usize, vlan: u16) -> Parsed {
    let Some(ip) = frame.at::<Ipv6Hdr>(offset) else {
        return malformed();
    };
    // SAFETY: bounds checked by `at`.
    let ip = unsafe { &*ip };
    let payload_len = ip.payload_len() as usize;
    if ip.version() != 6 || Ipv6Hdr::LEN + payload_len > frame.len() - offset {
        return malformed();
    }
    let l4_offset = offset + Ipv6Hdr::LEN;
    let mut parsed = l4(frame, l4_offset, payload_len, ip.next_hdr, Class::Ipv6);
    if parsed.l3 != Class::Ipv6 {
        return parsed;
    }
    parsed.src = Some(InstanceKey::v6(vlan, ip.src_addr));
    parsed.dst = Some(InstanceKey::v6(vlan, ip.dst_addr));
    // A neighbour solicitation asks for its target, not its (multicast) destination.
    if ip.next_hdr == IPPROTO_ICMPV6
        && payload_len >= NS_LEN
        && let Some(ns) = frame.at::<[u8; NS_LEN]>(l4_offset)
    {
        // SAFETY: bounds checked by `at`.
        let ns = unsafe { &*ns };
        if ns[0] == ND_NEIGHBOR_SOLICIT {
            let mut target = [0u8; 16];
            target.copy_from_slice(&ns[8..NS_LEN]);
            parsed.dst = Some(InstanceKey::v6(vlan, target));
            parsed.solicit = true;
        }
    }
    parsed
}

/// TCP/UDP header at `offset`; `ip_payload` is what the IP header says follows.
#[inline(always)]
fn l4(frame: &Frame, offset: usize, ip_payload: usize, proto: u8, l3: Class) -> Parsed {
    if proto == IpProto::Tcp as u8 {
        let Some(tcp) = frame.at::<TcpHdr>(offset) else {
            return malformed();
        };
        // SAFETY: bounds checked by `at`.
        let tcp = unsafe { &*tcp };
        let header_len = tcp.doff() as usize * 4;
        if header_len < TcpHdr::LEN || header_len > ip_payload {
            return malformed();
        }
        return Parsed {
            l4: Some(Class::Tcp),
            ports: Some((u16::from_be_bytes(tcp.source), u16::from_be_bytes(tcp.dest))),
            tcp: Some(Segment {
                seq: u32::from_be_bytes(tcp.seq),
                syn: tcp.syn() != 0,
                rst: tcp.rst() != 0,
                payload_offset: (offset + header_len) as u32,
                payload_len: (ip_payload - header_len) as u32,
            }),
            ..just(l3)
        };
    }
    if proto == IpProto::Udp as u8 {
        let Some(udp) = frame.at::<UdpHdr>(offset) else {
            return malformed();
        };
        // SAFETY: bounds checked by `at`.
        let udp = unsafe { &*udp };
        let udp_len = udp.len() as usize;
        if udp_len < UdpHdr::LEN || udp_len > ip_payload {
            return malformed();
        }
        return Parsed {
            l4: Some(Class::Udp),
            ports: Some((udp.src_port(), udp.dst_port())),
            ..just(l3)
        };
    }
    just(l3)
}
