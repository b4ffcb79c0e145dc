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

/// Key of the instance table: (VLAN, address). IPv4 addresses sit in the
/// first four bytes of `addr`, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    /// 0 for untagged.
    pub vlan: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad: u8,
    pub addr: [u8; 16],
}

impl InstanceKey {
    pub const fn v4(vlan: u16, addr: [u8; 4]) -> Self {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        InstanceKey {
            vlan,
            family: 4,
            _pad: 0,
            addr: a,
        }
    }
    pub const fn v6(vlan: u16, addr: [u8; 16]) -> Self {
        InstanceKey {
            vlan,
            family: 6,
            _pad: 0,
            addr,
        }
    }
}

/// Value of the instance table. Moving an instance is one update of this
/// value (see ARCHITECTURE.md: the map is BPF_F_NO_PREALLOC, so readers see
/// the old or the new value whole, never a mix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceEntry {
    /// baton's id for the instance (index in config order).
    pub id: u32,
    /// The port the address lives on now.
    pub owner_ifindex: u32,
    /// Source MAC for the instance's frames on the owner: its own MAC, or
    /// the owner port's.
    pub mac: [u8; 6],
    pub flags: u16,
}

pub mod flags {
    /// The instance has a MAC of its own (a macvlan on the owner port).
    pub const OWN_MAC: u16 = 1;
}

/// Key of the per-instance, per-port counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstancePortKey {
    pub id: u32,
    pub ifindex: u32,
}

/// Per-instance, per-port counters (per CPU; sum packets/bytes, max last_seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceCounters {
    /// Frames addressed to the instance seen at ingress on this port.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// bpf_ktime_get_ns() of the last such frame.
    pub last_seen_ns: u64,
    /// ARP requests / neighbour solicitations for the instance on this port.
    pub solicits: u64,
    /// Of those, dropped because this port is not the owner.
    pub solicits_dropped: u64,
    /// Frames sourced from the instance that TC egress redirected to the owner.
    pub egress_redirected: u64,
}

impl InstanceCounters {
    pub fn add(&mut self, o: &InstanceCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.last_seen_ns = self.last_seen_ns.max(o.last_seen_ns);
        self.solicits += o.solicits;
        self.solicits_dropped += o.solicits_dropped;
        self.egress_redirected += o.egress_redirected;
    }
}

/// Capacity of the instance table.
pub const MAX_INSTANCES: u32 = 4096;

/// Names of the BPF objects, shared so userspace never spells them twice.
pub mod names {
    /// The data-port XDP program.
    pub const XDP_PROGRAM: &str = "baton_xdp";
    /// An empty XDP_PASS program with the same flags: the benchmark baseline.
    pub const XDP_PASS_PROGRAM: &str = "baton_xdp_pass";
    /// Per-CPU hash: ingress ifindex (u32) -> [`super::PortStats`].
    pub const PORT_STATS_MAP: &str = "BATON_PORT_STATS";
    /// Hash: [`super::InstanceKey`] -> [`super::InstanceEntry`].
    pub const INSTANCES_MAP: &str = "BATON_INSTANCES";
    /// Per-CPU hash: [`super::InstancePortKey`] -> [`super::InstanceCounters`].
    pub const INSTANCE_STATS_MAP: &str = "BATON_INSTANCE_STATS";
    /// The TC egress program of the data ports.
    pub const TC_EGRESS_PROGRAM: &str = "baton_tc_egress";
    /// The ingress logic at TCX ingress (the alternative to XDP).
    pub const TC_INGRESS_PROGRAM: &str = "baton_tc_ingress";
}

/// Capacity of the port statistics map (ports per host).
pub const MAX_PORTS: u32 = 64;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers with no padding.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::PortStats {}
    unsafe impl aya::Pod for super::InstanceKey {}
    unsafe impl aya::Pod for super::InstanceEntry {}
    unsafe impl aya::Pod for super::InstancePortKey {}
    unsafe impl aya::Pod for super::InstanceCounters {}
}
