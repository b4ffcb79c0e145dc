//! Types shared by the BPF programs (`dataplane-ebpf`) and userspace
//! (`controlplane`). Everything here is `#[repr(C)]` and plain data, so the
//! same bytes mean the same thing on both sides of a BPF map.
#![no_std]

/// Traffic classes the dataplane counts per port.
///
/// Every frame is counted in exactly one of `Arp`, `Ipv4`, `Ipv6`, `Other`,
/// `Malformed` (so those five add up to all frames seen), and additionally
/// in `Tcp` or `Udp` when its IPv4/IPv6 packet carries a complete TCP or UDP
/// header (first fragments only).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Arp = 0,
    Ipv4 = 1,
    Ipv6 = 2,
    Other = 3,
    Malformed = 4,
    Tcp = 5,
    Udp = 6,
}

pub const NUM_CLASSES: usize = 7;

impl Class {
    pub const ALL: [Class; NUM_CLASSES] = [
        Class::Arp,
        Class::Ipv4,
        Class::Ipv6,
        Class::Other,
        Class::Malformed,
        Class::Tcp,
        Class::Udp,
    ];

    /// Lower-case name, as printed by `baton dataplane stats`.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Arp => "arp",
            Class::Ipv4 => "ipv4",
            Class::Ipv6 => "ipv6",
            Class::Other => "other",
            Class::Malformed => "malformed",
            Class::Tcp => "tcp",
            Class::Udp => "udp",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

/// Value of the per-CPU port statistics map, keyed by ingress ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub classes: [Counter; NUM_CLASSES],
}

impl PortStats {
    pub fn get(&self, class: Class) -> Counter {
        self.classes[class as usize]
    }

    /// Sum of the classes every frame lands in exactly once.
    pub fn frames(&self) -> Counter {
        let mut total = Counter::default();
        for class in [
            Class::Arp,
            Class::Ipv4,
            Class::Ipv6,
            Class::Other,
            Class::Malformed,
        ] {
            total.add(&self.get(class));
        }
        total
    }

    pub fn add(&mut self, other: &PortStats) {
        for (mine, theirs) in self.classes.iter_mut().zip(other.classes.iter()) {
            mine.add(theirs);
        }
    }
}

/// Names of the BPF objects, shared so userspace never spells them twice.
pub mod names {
    /// The data-port XDP program.
    pub const XDP_PROGRAM: &str = "baton_xdp";
    /// An empty XDP_PASS program with the same flags: the benchmark baseline.
    pub const XDP_PASS_PROGRAM: &str = "baton_xdp_pass";
    /// Per-CPU hash: ingress ifindex (u32) -> [`super::PortStats`].
    pub const PORT_STATS_MAP: &str = "BATON_PORT_STATS";
}

/// Capacity of the port statistics map (ports per host).
pub const MAX_PORTS: u32 = 64;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers with no padding.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::PortStats {}
}
