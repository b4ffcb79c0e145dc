//! Bounds-checked frame parsing, shared by the XDP and TC programs. Every
//! read goes through [`Frame::at`], which checks the whole header against
//! `data_end` first: what the verifier needs and what a frame that lies about
//! its lengths deserves.

use baton_common::{Class, InstanceKey, words};
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

/// What the parser found, filled in place (one value on the stack, no
/// copies): one L3 class, and an L4 class when a complete TCP/UDP header
/// follows; the instance-table keys of the frame's source and destination
/// when `addrs` (ARP: sender and target; neighbour solicitation: its
/// target); whether the frame asks who owns `dst` (ARP request, NS); the
/// VLAN tags in front of L3; TCP/UDP ports when `ports`; the TCP segment
/// when `tcp`.
pub struct Parsed {
    /// A [`Class`] as u32: the compiler then keeps the bounds check the
    /// verifier needs when it indexes the counters with it.
    pub l3: u32,
    /// [`NO_L4`] or a [`Class`].
    pub l4: u32,
    pub addrs: bool,
    pub solicit: bool,
    pub tags: u8,
    pub ports: bool,
    pub tcp: bool,
    pub sport: u16,
    pub dport: u16,
    pub src: InstanceKey,
    pub dst: InstanceKey,
    pub seg: Segment,
}

/// A TCP segment: sequence number, flags and where its payload lies.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Segment {
    pub seq: u32,
    /// Offset of the payload from the start of the frame.
    pub payload_offset: u32,
    pub payload_len: u32,
    pub syn: bool,
    pub rst: bool,
}

pub const NO_L4: u32 = u32::MAX;

/// A zero the compiler cannot see: zero stores of a known constant get
/// merged into a memset call, which the BPF backend emits as a byte loop.
static OPAQUE_ZERO: u32 = 0;

#[inline(always)]
fn zero() -> u32 {
    // SAFETY: a volatile read of a static (a read-only map value in BPF).
    unsafe { core::ptr::read_volatile(&OPAQUE_ZERO) }
}

impl Parsed {
    #[inline(always)]
    pub fn new() -> Parsed {
        let z = zero();
        let key = InstanceKey {
            vlan: z as u16,
            family: z as u8,
            _pad: z as u8,
            addr: [z; 4],
        };
        Parsed {
            l3: Class::Other as u32,
            l4: NO_L4,
            addrs: false,
            solicit: false,
            tags: z as u8,
            ports: false,
            tcp: false,
            sport: z as u16,
            dport: z as u16,
            src: key,
            dst: key,
            seg: Segment {
                seq: z,
                payload_offset: z,
                payload_len: z,
                syn: false,
                rst: false,
            },
        }
    }

    #[inline(always)]
    fn malformed(&mut self) {
        self.l3 = Class::Malformed as u32;
        self.l4 = NO_L4;
        self.addrs = false;
        self.solicit = false;
        self.ports = false;
        self.tcp = false;
    }
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

/// `hw_vlan`: a tag the kernel already took out of the frame (TC sees
/// received tags in skb metadata), 0 if none.
#[inline(always)]
pub fn classify(frame: &Frame, hw_vlan: u16, out: &mut Parsed) {
    let Some(eth) = frame.at::<EthHdr>(0) else {
        out.malformed();
        return;
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
            out.malformed();
            return;
        };
        // SAFETY: bounds checked by `at`.
        let (tci, inner) = unsafe { ((*tag).tci, (*tag).ether_type) };
        if depth == 0 && hw_vlan == 0 {
            vlan = u16::from_be_bytes(tci) & 0x0fff;
        }
        ether_type = u16::from_be(inner);
        offset += VlanHdr::LEN;
        out.tags += 1;
    }
    out.src.vlan = vlan;
    out.dst.vlan = vlan;
    match ether_type {
        ETH_P_ARP => arp(frame, offset, out),
        ETH_P_IP => ipv4(frame, offset, out),
        ETH_P_IPV6 => ipv6(frame, offset, out),
        // A third tag, or any other ethertype.
        _ => out.l3 = Class::Other as u32,
    }
}

#[inline(always)]
fn arp(frame: &Frame, offset: usize, out: &mut Parsed) {
    let Some(arp) = frame.at::<[u8; ARP_IPV4_LEN]>(offset) else {
        out.malformed();
        return;
    };
    out.l3 = Class::Arp as u32;
    // SAFETY: bounds checked by `at`.
    let a = unsafe { &*arp };
    // Only Ethernet/IPv4 ARP names instance addresses: htype 1, ptype 0x0800, hlen 6, plen 4.
    if a[0..6] != [0, 1, 8, 0, 6, 4] {
        return;
    }
    out.addrs = true;
    out.src.family = 4;
    out.dst.family = 4;
    out.src.addr[0] = u32::from_ne_bytes([a[14], a[15], a[16], a[17]]);
    out.dst.addr[0] = u32::from_ne_bytes([a[24], a[25], a[26], a[27]]);
    // addr[1..] are still the zeros of Parsed::new.
    out.solicit = u16::from_be_bytes([a[6], a[7]]) == ARP_REQUEST;
}

#[inline(always)]
fn ipv4(frame: &Frame, offset: usize, out: &mut Parsed) {
    let Some(ip) = frame.at::<Ipv4Hdr>(offset) else {
        out.malformed();
        return;
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
        out.malformed();
        return;
    }
    out.l3 = Class::Ipv4 as u32;
    // Later fragments carry no L4 header.
    if ip.frag_offset() == 0 {
        l4(
            frame,
            offset + header_len,
            total_len - header_len,
            ip.proto,
            out,
        );
        if out.l3 != Class::Ipv4 as u32 {
            return;
        }
    }
    out.addrs = true;
    out.src.family = 4;
    out.dst.family = 4;
    out.src.addr[0] = u32::from_ne_bytes(ip.src_addr);
    out.dst.addr[0] = u32::from_ne_bytes(ip.dst_addr);
}

#[inline(always)]
fn ipv6(frame: &Frame, offset: usize, out: &mut Parsed) {
    let Some(ip) = frame.at::<Ipv6Hdr>(offset) else {
        out.malformed();
        return;
    };
    // SAFETY: bounds checked by `at`.
    let ip = unsafe { &*ip };
    let payload_len = ip.payload_len() as usize;
    if ip.version() != 6 || Ipv6Hdr::LEN + payload_len > frame.len() - offset {
        out.malformed();
        return;
    }
    out.l3 = Class::Ipv6 as u32;
    let l4_offset = offset + Ipv6Hdr::LEN;
    l4(frame, l4_offset, payload_len, ip.next_hdr, out);
    if out.l3 != Class::Ipv6 as u32 {
        return;
    }
    out.addrs = true;
    out.src.family = 6;
    out.dst.family = 6;
    out.src.addr = words(ip.src_addr);
    out.dst.addr = words(ip.dst_addr);
    // A neighbour solicitation asks for its target, not its (multicast) destination.
    if ip.next_hdr == IPPROTO_ICMPV6
        && payload_len >= NS_LEN
        && let Some(ns) = frame.at::<[u8; NS_LEN]>(l4_offset)
    {
        // SAFETY: bounds checked by `at`.
        let ns = unsafe { &*ns };
        if ns[0] == ND_NEIGHBOR_SOLICIT {
            out.dst.addr = [
                u32::from_ne_bytes([ns[8], ns[9], ns[10], ns[11]]),
                u32::from_ne_bytes([ns[12], ns[13], ns[14], ns[15]]),
                u32::from_ne_bytes([ns[16], ns[17], ns[18], ns[19]]),
                u32::from_ne_bytes([ns[20], ns[21], ns[22], ns[23]]),
            ];
            out.solicit = true;
        }
    }
}

/// TCP/UDP header at `offset`; `ip_payload` is what the IP header says follows.
#[inline(always)]
fn l4(frame: &Frame, offset: usize, ip_payload: usize, proto: u8, out: &mut Parsed) {
    if proto == IpProto::Tcp as u8 {
        let Some(tcp) = frame.at::<TcpHdr>(offset) else {
            out.malformed();
            return;
        };
        // SAFETY: bounds checked by `at`.
        let tcp = unsafe { &*tcp };
        let header_len = tcp.doff() as usize * 4;
        if header_len < TcpHdr::LEN || header_len > ip_payload {
            out.malformed();
            return;
        }
        out.l4 = Class::Tcp as u32;
        out.ports = true;
        out.sport = u16::from_be_bytes(tcp.source);
        out.dport = u16::from_be_bytes(tcp.dest);
        out.tcp = true;
        out.seg = Segment {
            seq: u32::from_be_bytes(tcp.seq),
            payload_offset: (offset + header_len) as u32,
            payload_len: (ip_payload - header_len) as u32,
            syn: tcp.syn() != 0,
            rst: tcp.rst() != 0,
        };
        return;
    }
    if proto == IpProto::Udp as u8 {
        let Some(udp) = frame.at::<UdpHdr>(offset) else {
            out.malformed();
            return;
        };
        // SAFETY: bounds checked by `at`.
        let udp = unsafe { &*udp };
        let udp_len = udp.len() as usize;
        if udp_len < UdpHdr::LEN || udp_len > ip_payload {
            out.malformed();
            return;
        }
        out.l4 = Class::Udp as u32;
        out.ports = true;
        out.sport = udp.src_port();
        out.dport = udp.dst_port();
    }
}
