//! Bounds-checked frame parsing. Every read goes through [`Frame::at`], which
//! checks the whole header against `data_end` first: what the verifier needs
//! and what a frame that lies about its lengths deserves.

use baton_common::Class;
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

pub struct Frame {
    start: usize,
    end: usize,
}

/// What the parser found: one L3 class, and an L4 class when a complete
/// TCP/UDP header follows.
pub struct Parsed {
    pub l3: Class,
    pub l4: Option<Class>,
    /// VLAN id of the outermost tag (0 when untagged). Used by later stages.
    #[allow(dead_code)]
    pub vlan: u16,
}

impl Frame {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Frame { start, end }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
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

const fn malformed(vlan: u16) -> Parsed {
    Parsed {
        l3: Class::Malformed,
        l4: None,
        vlan,
    }
}

#[inline(always)]
pub fn classify(frame: &Frame) -> Parsed {
    let Some(eth) = frame.at::<EthHdr>(0) else {
        return malformed(0);
    };
    // SAFETY: `at` checked the header lies inside the frame.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut offset = EthHdr::LEN;
    let mut vlan = 0;

    // Up to two tags: 802.1ad (S-tag) or 802.1Q outside, 802.1Q inside.
    for depth in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let Some(tag) = frame.at::<VlanHdr>(offset) else {
            return malformed(vlan);
        };
        // SAFETY: bounds checked by `at`.
        let (tci, inner) = unsafe { ((*tag).tci, (*tag).ether_type) };
        if depth == 0 {
            vlan = u16::from_be_bytes(tci) & 0x0fff;
        }
        ether_type = u16::from_be(inner);
        offset += VlanHdr::LEN;
    }

    if ether_type == ETH_P_ARP {
        return if frame.at::<[u8; ARP_IPV4_LEN]>(offset).is_some() {
            Parsed {
                l3: Class::Arp,
                l4: None,
                vlan,
            }
        } else {
            malformed(vlan)
        };
    }
    if ether_type == ETH_P_IP {
        return ipv4(frame, offset, vlan);
    }
    if ether_type == ETH_P_IPV6 {
        return ipv6(frame, offset, vlan);
    }
    // A third tag, or any other ethertype.
    Parsed {
        l3: Class::Other,
        l4: None,
        vlan,
    }
}

#[inline(always)]
fn ipv4(frame: &Frame, offset: usize, vlan: u16) -> Parsed {
    let Some(ip) = frame.at::<Ipv4Hdr>(offset) else {
        return malformed(vlan);
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
        return malformed(vlan);
    }
    // Later fragments carry no L4 header.
    if ip.frag_offset() != 0 {
        return Parsed {
            l3: Class::Ipv4,
            l4: None,
            vlan,
        };
    }
    l4(
        frame,
        offset + header_len,
        total_len - header_len,
        ip.proto,
        Class::Ipv4,
        vlan,
    )
}

#[inline(always)]
fn ipv6(frame: &Frame, offset: usize, vlan: u16) -> Parsed {
    let Some(ip) = frame.at::<Ipv6Hdr>(offset) else {
        return malformed(vlan);
    };
    // SAFETY: bounds checked by `at`.
    let ip = unsafe { &*ip };
    let payload_len = ip.payload_len() as usize;
    if ip.version() != 6 || Ipv6Hdr::LEN + payload_len > frame.len() - offset {
        return malformed(vlan);
    }
    l4(
        frame,
        offset + Ipv6Hdr::LEN,
        payload_len,
        ip.next_hdr,
        Class::Ipv6,
        vlan,
    )
}

/// TCP/UDP header at `offset`; `ip_payload` is what the IP header says follows.
#[inline(always)]
fn l4(frame: &Frame, offset: usize, ip_payload: usize, proto: u8, l3: Class, vlan: u16) -> Parsed {
    if proto == IpProto::Tcp as u8 {
        let Some(tcp) = frame.at::<TcpHdr>(offset) else {
            return malformed(vlan);
        };
        // SAFETY: bounds checked by `at`.
        let header_len = unsafe { (*tcp).doff() } as usize * 4;
        if header_len < TcpHdr::LEN || header_len > ip_payload {
            return malformed(vlan);
        }
        return Parsed {
            l3,
            l4: Some(Class::Tcp),
            vlan,
        };
    }
    if proto == IpProto::Udp as u8 {
        let Some(udp) = frame.at::<UdpHdr>(offset) else {
            return malformed(vlan);
        };
        // SAFETY: bounds checked by `at`.
        let udp_len = unsafe { (*udp).len() } as usize;
        if udp_len < UdpHdr::LEN || udp_len > ip_payload {
            return malformed(vlan);
        }
        return Parsed {
            l3,
            l4: Some(Class::Udp),
            vlan,
        };
    }
    Parsed { l3, l4: None, vlan }
}
