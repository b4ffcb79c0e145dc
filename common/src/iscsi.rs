//! What the dataplane keeps of iSCSI: PDUs counted per opcode and
//! direction, and the flow table that follows each connection's PDU stream.
use super::FLOW_SETS;

/// Direction of an iSCSI PDU as the gateway sees it.
pub const RX: usize = 0;
pub const TX: usize = 1;

/// iSCSI PDUs per opcode (BHS byte 0 & 0x3f) of one instance on one port,
/// per CPU: `pdus[RX]` arrived at ingress, `pdus[TX]` left at egress.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduCounters {
    pub pdus: [[u64; 64]; 2],
    /// Times a flow lost its place in the PDU stream (a gap that did not
    /// fill, a header that is not one); counting stops until it is found again.
    pub resyncs: u64,
    /// Segments with payload that could not be placed (flow not in sync).
    pub unsynced_segments: u64,
}

impl PduCounters {
    pub const ZERO: PduCounters = PduCounters {
        pdus: [[0; 64]; 2],
        resyncs: 0,
        unsynced_segments: 0,
    };
}

impl Default for PduCounters {
    fn default() -> Self {
        Self::ZERO
    }
}

impl PduCounters {
    pub fn add(&mut self, o: &PduCounters) {
        for (mine, theirs) in self.pdus.iter_mut().zip(o.pdus.iter()) {
            for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                *a += b;
            }
        }
        self.resyncs += o.resyncs;
        self.unsynced_segments += o.unsynced_segments;
    }
}

/// RFC 7143 name of an iSCSI opcode (as baton prints it).
pub const fn iscsi_opcode_name(opcode: u8) -> Option<&'static str> {
    Some(match opcode {
        0x00 => "nop-out",
        0x01 => "scsi-command",
        0x02 => "task-management-request",
        0x03 => "login-request",
        0x04 => "text-request",
        0x05 => "data-out",
        0x06 => "logout-request",
        0x10 => "snack",
        0x20 => "nop-in",
        0x21 => "scsi-response",
        0x22 => "task-management-response",
        0x23 => "login-response",
        0x24 => "text-response",
        0x25 => "data-in",
        0x26 => "logout-response",
        0x31 => "r2t",
        0x32 => "async-message",
        0x3f => "reject",
        0x1c..=0x1e | 0x3c..=0x3e => "vendor",
        _ => return None,
    })
}

/// One direction of a TCP connection (the key of the iSCSI flow table).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub vlan: u16,
    pub family: u8,
    pub _pad: u8,
}

/// Where the next iSCSI PDU of a flow starts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// TCP sequence number of the next BHS.
    pub next: u32,
    pub _pad0: u32,
    /// First bytes of that BHS when a segment ended inside them, little
    /// endian: byte i of the header is bits 8i..8i+8.
    pub hdr: u64,
    /// How many of `hdr`'s bytes are filled (0..8).
    pub have: u8,
    /// 1 while `next` is known.
    pub synced: u8,
    /// Segments seen beyond `next` since it was last reached.
    pub ahead: u8,
    /// 1 while an island is held: whole PDUs that arrived beyond a gap
    /// (`island_start..island_end`), counted only when the walk from `next`
    /// lands exactly on `island_start` (a failover reorders: new segments
    /// come through the new port before the lost ones are retransmitted).
    pub island: u8,
    pub _pad: [u8; 4],
    pub island_start: u32,
    pub island_end: u32,
    /// PDUs in the island by opcode & 7: the island holds only the first
    /// seven opcodes of each side (NOP, command/response, task management,
    /// login, text, data, logout), which is what a stream is made of.
    pub island_counts: [u16; 8],
}

/// One way of the iSCSI flow table: `key.family == 0` marks it free. An
/// array element the verifier inlines (an LRU hash of 40-byte keys cost
/// ~28 ns a segment); two ways make a set, a third flow evicts the way used
/// less recently, as an LRU would.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowWay {
    pub key: FlowKey,
    pub state: FlowState,
    /// In a set's first way: the way used last (0 or 1).
    pub recent: u32,
    pub _pad: u32,
}

impl FlowKey {
    /// The set of the flow table this flow lives in.
    #[inline(always)]
    pub fn set(&self) -> u32 {
        let (s, d) = (self.saddr, self.daddr);
        let mut h = (self.sport as u32) << 16 | self.dport as u32;
        h ^= s[0] ^ s[1].rotate_left(7) ^ s[2].rotate_left(14) ^ s[3].rotate_left(21);
        h = h.wrapping_mul(0x9e37_79b1);
        h ^= d[0] ^ d[1].rotate_left(7) ^ d[2].rotate_left(14) ^ d[3].rotate_left(21);
        h ^= (self.vlan as u32) << 8 | self.family as u32;
        // murmur3's finaliser: every input bit reaches the low bits.
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h & (FLOW_SETS - 1)
    }
}
