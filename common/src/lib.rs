//! Types shared by the BPF programs (`dataplane-ebpf`) and userspace
//! (`controlplane`). Everything here is `#[repr(C)]` and plain data, so the
//! same bytes mean the same thing on both sides of a BPF map.
#![no_std]

mod iscsi;
pub use iscsi::*;

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
    /// Network byte order; u32 words so the key is 4-byte aligned and the
    /// BPF programs copy it in words, not bytes.
    pub addr: [u32; 4],
}

/// An entry with the key it is for: a lookup that reaches it through
/// the index confirms the key whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyedEntry {
    pub key: InstanceKey,
    pub entry: InstanceEntry,
}

impl InstanceKey {
    /// The key's own position in the instance index.
    #[inline(always)]
    pub fn index_slot(&self) -> u32 {
        let a = self.addr;
        let mut h = (self.vlan as u32) << 8 | self.family as u32;
        h ^= a[0];
        h = h.wrapping_mul(0x9e37_79b1);
        h ^= a[1] ^ a[2].rotate_left(11) ^ a[3].rotate_left(22);
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h & (INDEX_SLOTS - 1)
    }

    pub const fn v4(vlan: u16, addr: [u8; 4]) -> Self {
        InstanceKey {
            vlan,
            family: 4,
            _pad: 0,
            addr: [u32::from_ne_bytes(addr), 0, 0, 0],
        }
    }
    pub const fn v6(vlan: u16, addr: [u8; 16]) -> Self {
        InstanceKey {
            vlan,
            family: 6,
            _pad: 0,
            addr: words(addr),
        }
    }

    /// The address bytes (IPv4 in the first four).
    pub const fn bytes(&self) -> [u8; 16] {
        let [a, b, c, d] = self.addr;
        let (a, b, c, d) = (
            a.to_ne_bytes(),
            b.to_ne_bytes(),
            c.to_ne_bytes(),
            d.to_ne_bytes(),
        );
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    }
}

/// 16 address bytes as four words in memory order.
pub const fn words(b: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// Value of the instance table. Moving an instance is one update: the new
/// entry goes into the key's idle element, then one 4-byte store of the
/// index points lookups at it, so readers see the old or the new entry
/// whole, never a mix (see ARCHITECTURE.md).
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
    /// TCP ports whose payload is iSCSI (RFC 7143) PDUs; 0 = unused slot.
    pub iscsi_ports: [u16; MAX_ISCSI_PORTS],
    /// CPUs the instance's flows are steered to: the first `cpu_count`.
    pub cpus: [u16; MAX_INSTANCE_CPUS],
    pub cpu_count: u8,
    pub _pad: u8,
    /// The instance's VLAN (0: untagged). With [`flags::VLAN_TAGS`] the
    /// dataplane pops its tag at ingress and pushes it at egress.
    pub vlan: u16,
    /// Its element of the per-instance counter array (userspace assigns it).
    pub slot: u16,
    pub _pad2: u16,
    /// Ifindexes of the ports it is counted on (its configured ports, owner
    /// among them); position i is element i of its [`SlotCounters`].
    pub ports: [u32; MAX_COUNTED_PORTS],
}

impl InstanceEntry {
    /// Whether `port` is one of the instance's iSCSI ports.
    #[inline(always)]
    pub fn is_iscsi_port(&self, port: u16) -> bool {
        port != 0
            && (self.iscsi_ports[0] == port
                || self.iscsi_ports[1] == port
                || self.iscsi_ports[2] == port
                || self.iscsi_ports[3] == port)
    }
}

pub const MAX_ISCSI_PORTS: usize = 4;
/// Ports an instance is counted on (its first four configured ports).
pub const MAX_COUNTED_PORTS: usize = 4;
/// Instances with counters: the size of the per-CPU counter array.
pub const MAX_INSTANCE_SLOTS: u32 = 1024;

/// One element of the per-instance counter array: counters for each of the
/// instance's [`InstanceEntry::ports`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounters {
    pub ports: [InstanceCounters; MAX_COUNTED_PORTS],
}
pub const MAX_INSTANCE_CPUS: usize = 8;

pub mod flags {
    /// The instance has a MAC of its own (a macvlan on the owner port).
    pub const OWN_MAC: u16 = 1;
    /// iSCSI HeaderDigest=CRC32C was negotiated: 4 bytes after each BHS+AHS.
    pub const HEADER_DIGEST: u16 = 2;
    /// iSCSI DataDigest=CRC32C: 4 bytes after each non-empty data segment.
    pub const DATA_DIGEST: u16 = 4;
    /// The kernel sees the instance untagged (no 802.1Q netdev): pop its
    /// VLAN tag at ingress, push it at egress.
    pub const VLAN_TAGS: u16 = 8;
    /// Held under a cluster lease: silent (no ARP/ND answers, no traffic in
    /// or out) once the member's fence deadline ([`super::names::FENCE_MAP`]) has passed.
    pub const CLUSTER: u16 = 16;
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
    /// bpf_ktime_get_coarse_ns() of the last such frame (the coarse clock
    /// moves once a jiffy: read once a jiffy, at `last_seen_jiffies`).
    pub last_seen_ns: u64,
    pub last_seen_jiffies: u64,
    /// ARP requests / neighbour solicitations for the instance on this port.
    pub solicits: u64,
    /// Of those, dropped because this port is not the owner.
    pub solicits_dropped: u64,
    /// Frames sourced from the instance that TC egress redirected to the owner.
    pub egress_redirected: u64,
    /// VLAN tags taken off at ingress / put on at egress ([`flags::VLAN_TAGS`]).
    pub tags_popped: u64,
    pub tags_pushed: u64,
}

impl InstanceCounters {
    pub fn add(&mut self, o: &InstanceCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.last_seen_ns = self.last_seen_ns.max(o.last_seen_ns);
        self.last_seen_jiffies = self.last_seen_jiffies.max(o.last_seen_jiffies);
        self.solicits += o.solicits;
        self.solicits_dropped += o.solicits_dropped;
        self.egress_redirected += o.egress_redirected;
        self.tags_popped += o.tags_popped;
        self.tags_pushed += o.tags_pushed;
    }
}

/// Capacity of the instance table.
pub const MAX_INSTANCES: u32 = 4096;
/// Positions of the instance index (a power of two, 8x its entries: short
/// probe runs, few positions for the verifier to walk).
pub const INDEX_SLOTS: u32 = 8 * MAX_INSTANCES;
/// Positions a lookup tries from the key's own (linear probing).
pub const MAX_PROBES: u32 = 4;
/// An index position whose key was removed: lookups probe on past it.
pub const INDEX_DELETED: u32 = u32::MAX;
/// Elements of the entry array: two per key.
pub const ENTRY_ELEMENTS: u32 = 2 * MAX_INSTANCES;

/// Names of the BPF objects, shared so userspace never spells them twice.
pub mod names {
    /// The data-port XDP program.
    pub const XDP_PROGRAM: &str = "baton_xdp";
    /// An empty XDP_PASS program with the same flags: the benchmark baseline.
    pub const XDP_PASS_PROGRAM: &str = "baton_xdp_pass";
    /// Per-CPU array: ingress ifindex (u32) -> [`super::PortStats`].
    pub const PORT_STATS_MAP: &str = "BATON_PORT_STATS";
    /// Array: position (a hash of the key, probed on) -> element + 1 of
    /// [`INSTANCE_ENTRIES_MAP`] (0 free, [`super::INDEX_DELETED`]).
    pub const INSTANCE_INDEX_MAP: &str = "BATON_INST_INDEX";
    /// Array: element -> [`super::KeyedEntry`]; two per key, one live.
    pub const INSTANCE_ENTRIES_MAP: &str = "BATON_INST_ENTRY";
    /// Array of one u64: the cluster member's fence deadline, in
    /// bpf_ktime_get_ns() time (CLOCK_MONOTONIC); 0 = none yet (silent).
    pub const FENCE_MAP: &str = "BATON_FENCE";
    /// Per-CPU array: [`super::InstanceEntry::slot`] -> [`super::SlotCounters`].
    pub const INSTANCE_STATS_MAP: &str = "BATON_INSTANCE_STATS";
    /// The benchmarks' empty TC egress baseline (TC_ACT_OK).
    pub const TC_PASS_PROGRAM: &str = "baton_tc_pass";
    /// The TC egress program of the data ports.
    pub const TC_EGRESS_PROGRAM: &str = "baton_tc_egress";
    /// On each instance macvlan's egress: counts what it sends.
    pub const TC_MACVLAN_PROGRAM: &str = "baton_tc_macvlan";
    /// The ingress logic at TCX ingress (the alternative to XDP).
    pub const TC_INGRESS_PROGRAM: &str = "baton_tc_ingress";
    /// Per-CPU hash: [`super::InstancePortKey`] -> [`super::PduCounters`].
    pub const PDU_STATS_MAP: &str = "BATON_PDU_STATS";
    /// Array: `2 * set + way` (set: a hash of the key) -> [`super::FlowWay`].
    pub const FLOW_WAYS_MAP: &str = "BATON_FLOW_WAYS";
    /// CPU map the XDP program steers instance flows into.
    pub const CPU_MAP: &str = "BATON_CPUS";
    /// Per-CPU array: target CPU -> frames steered to it.
    pub const STEERED_MAP: &str = "BATON_STEERED";
    /// Array of one [`super::TcpOffsets`] for the socket iterator (not pinned).
    pub const TCP_OFFSETS_MAP: &str = "BATON_TCP_OFFSETS";
    /// The `iter/tcp` program.
    pub const TCP_ITER_PROGRAM: &str = "baton_tcp_sockets";
    /// Hash: link id -> what made the link (userspace's record; no program
    /// reads it).
    pub const LINK_MARKS_MAP: &str = "BATON_LINK_MARKS";
}

/// Size of the CPU map (CPU ids below this can be steered to).
pub const MAX_CPUS: u32 = 256;
/// Sets of the iSCSI flow table (a power of two): two flows each, 16,384
/// flow directions in all.
pub const FLOW_SETS: u32 = 8192;

/// Size of the port statistics array: ports are counted at their ifindex
/// below this, in slot 0 above it (data ports are created early and have
/// small ifindexes).
pub const MAX_PORT_IFINDEX: u32 = 1024;

/// Where the socket iterator finds each field, in bytes from the start of
/// the kernel's `struct tcp_sock` (read from its BTF by userspace, so the
/// iterator follows this kernel's layout without CO-RE).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOffsets {
    pub state: u32,
    pub family: u32,
    /// skc_num: the local port, host order.
    pub num: u32,
    /// skc_dport: the remote port, network order.
    pub dport: u32,
    pub daddr: u32,
    pub rcv_saddr: u32,
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    pub snd_una: u32,
    pub rcv_nxt: u32,
    pub backoff: u32,
    pub retransmits: u32,
}

/// One TCP socket as the iterator (`iter/tcp`) reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSocketRecord {
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// The local port, host order.
    pub lport: u16,
    /// The remote port, network order (as on the wire).
    pub rport_be: u16,
    /// TCP_ESTABLISHED = 1, ... (include/net/tcp_states.h).
    pub state: u8,
    /// icsk_backoff: exponential backoff steps of the retransmission timer.
    pub backoff: u8,
    pub retransmits: u8,
    pub _pad: [u8; 3],
    pub snd_una: u32,
    pub rcv_nxt: u32,
    /// Network order bytes; IPv4 in the first four.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::TcpOffsets {}
    unsafe impl aya::Pod for super::TcpSocketRecord {}
    // SAFETY: plain #[repr(C)] integers with no padding.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::PortStats {}
    unsafe impl aya::Pod for super::InstanceKey {}
    unsafe impl aya::Pod for super::InstanceEntry {}
    unsafe impl aya::Pod for super::KeyedEntry {}
    unsafe impl aya::Pod for super::InstancePortKey {}
    unsafe impl aya::Pod for super::InstanceCounters {}
    unsafe impl aya::Pod for super::PduCounters {}
    unsafe impl aya::Pod for super::SlotCounters {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowState {}
    unsafe impl aya::Pod for super::FlowWay {}
}
