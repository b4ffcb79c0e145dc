//! iSCSI PDU accounting (RFC 7143) on an instance's iSCSI ports.
//!
//! A PDU header (BHS) does not always start a TCP segment, so each flow
//! direction keeps the sequence number where its next BHS starts. A segment
//! that covers that point is walked, PDU by PDU (bounded), using only the
//! first 8 bytes of each BHS: opcode, TotalAHSLength, DataSegmentLength.
//! Segments that end before it (retransmissions, the middle of a PDU) hold
//! no new header. A segment beyond it means a gap (loss, or a failover
//! delivering new segments before the lost ones are sent again): whole PDUs
//! there are held as an island, counted only if the walk from the gap lands
//! exactly on the island's start; a gap that does not fill is given up on
//! and counted as a resync. A flow out of sync (or one that began before
//! baton) is found again only on a segment that starts with a valid BHS and
//! whose PDUs end exactly where the segment ends; nothing is counted from a
//! guess.
mod flows;

use crate::counters::per_cpu_entry;
use crate::{Bytes, parse::Segment};
use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    macros::map,
    maps::PerCpuHashMap,
};
use baton_common::{FlowKey, FlowState, InstancePortKey, MAX_INSTANCES, PduCounters, RX, flags};
pub use flows::nothing_to_count;
use flows::{flow_state, forget};

/// Allocated on first use (NO_PREALLOC): only instances with iSCSI traffic cost memory.
#[map(name = "BATON_PDU_STATS")]
static PDU_STATS: PerCpuHashMap<InstancePortKey, PduCounters> =
    PerCpuHashMap::pinned(MAX_INSTANCES * 4, 1);

/// The first value of a PDU_STATS element (1 KiB: too large for the BPF stack).
static ZERO: PduCounters = PduCounters::ZERO;

/// PDUs one segment's walk reads (the verifier's bound): an MSS holds at
/// most 30 header-only PDUs; more in one segment (a large GSO send at TC
/// egress) is a resync.
const MAX_PDUS_PER_SEGMENT: u32 = 32;
/// Segments past a missing header before the flow counts as out of sync.
const AHEAD_LIMIT: u8 = 8;
/// The same while those segments are held as an island: a failover's new
/// segments overtake a whole window of retransmissions.
const ISLAND_AHEAD_LIMIT: u8 = 64;
const BHS_LEN: u32 = 48;
const DIGEST_LEN: u32 = 4;
/// Login Request (0x03) and Login Response (0x23) in their low five bits.
const LOGIN: u8 = 0x03;

/// Opcodes an initiator sends (RFC 7143 §11.1.1): NOP-Out, SCSI Command,
/// Task Management, Login, Text, Data-Out, Logout, SNACK, vendor 0x1c-0x1e.
const INITIATOR_OPCODES: u64 = 0x7f | 1 << 0x10 | 0b111 << 0x1c;
/// Opcodes a target sends: NOP-In .. Logout Response, R2T, Async, vendor, Reject.
const TARGET_OPCODES: u64 = 0x7f << 0x20 | 0b11 << 0x31 | 0b1111 << 0x3c;
/// Opcodes whose byte 1 always has its top bit set (RFC 7143 §11): NOP-Out,
/// Task Management, Logout, SNACK and their target counterparts, R2T, Async,
/// Reject. Zeroed data is not a stream of NOP-Outs.
const TOP_BIT_SET: u64 =
    1 | 1 << 0x02 | 1 << 0x06 | 1 << 0x10 | 0b111 << 0x20 | 1 << 0x26 | 0b11 << 0x31 | 1 << 0x3f;

/// One segment to account: its flow direction, where its counts go,
/// RX (to the instance's iSCSI port) or TX (from it), the instance's flags
/// (the negotiated digests).
#[repr(C)]
pub struct Job {
    pub flow: FlowKey,
    pub stats: InstancePortKey,
    pub dir: u32,
    pub flags: u32,
}

/// Accounts one TCP segment of an iSCSI flow seen by XDP. A global BPF
/// function: the verifier checks it once, on its own, not once per state
/// its callers reach it in. Returns 1 while the flow is in sync.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn baton_iscsi_xdp(ctx: *mut xdp_md, seg: *const Segment, job: *const Job) -> u32 {
    if ctx.is_null() || seg.is_null() || job.is_null() {
        return 0;
    }
    // SAFETY: non-null pointers to the caller's values.
    let (seg, job) = unsafe { (&*seg, &*job) };
    segment(&crate::XdpBytes(ctx), seg, job)
}

/// The same for the TC programs.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn baton_iscsi_skb(
    skb: *mut __sk_buff,
    seg: *const Segment,
    job: *const Job,
) -> u32 {
    if skb.is_null() || seg.is_null() || job.is_null() {
        return 0;
    }
    // SAFETY: as above.
    let (seg, job) = unsafe { (&*seg, &*job) };
    segment(&crate::SkbBytes(skb), seg, job)
}

/// Returns whether the flow is in sync after the segment.
#[inline(always)]
fn segment<P: Bytes>(pkt: &P, seg: &Segment, job: &Job) -> u32 {
    let flow = &job.flow;
    if seg.rst {
        forget(flow);
        return 0;
    }
    if seg.syn {
        // The byte stream starts after the SYN.
        let state = FlowState {
            next: seg.seq.wrapping_add(1),
            synced: 1,
            ..FlowState::default()
        };
        let _ = flow_state(flow, Some(&state)).map(|s| *s = state);
        return 0;
    }
    // Offsets below stay small: a segment is at most 64 KiB.
    if seg.payload_len == 0 || seg.payload_len > 0xffff {
        return 0;
    }
    // A flow not in the table starts out of sync.
    let Some(state) = flow_state(flow, Some(&FlowState::default())) else {
        return 0;
    };
    let walk = Walk {
        pkt,
        seg,
        dir: (job.dir & 1) as usize,
        allowed: if job.dir & 1 == RX as u32 {
            INITIATOR_OPCODES
        } else {
            TARGET_OPCODES
        },
        header_digest: (job.flags & flags::HEADER_DIGEST as u32 != 0) as u32,
        data_digest: (job.flags & flags::DATA_DIGEST as u32 != 0) as u32,
        stats: &job.stats,
    };
    if state.synced == 0 {
        walk.acquire(state);
    } else {
        walk.follow(state);
    }
    state.synced as u32
}

struct Walk<'a, P> {
    pkt: &'a P,
    seg: &'a Segment,
    dir: usize,
    /// Opcodes the side that sends this direction uses.
    allowed: u64,
    /// 1 or 0.
    header_digest: u32,
    data_digest: u32,
    stats: &'a InstancePortKey,
}

impl<P: Bytes> Walk<'_, P> {
    /// In sync: count every BHS that starts inside this segment at or after `state.next`.
    #[inline(always)]
    fn follow(&self, state: &mut FlowState) {
        let len = self.seg.payload_len;
        let wanted = state.next.wrapping_add(state.have as u32);
        if self.seg.seq.wrapping_add(len).wrapping_sub(wanted) as i32 <= 0 {
            // Ends before the next header: a retransmission or the middle
            // of a PDU (most segments of a transfer end here).
            return;
        }
        let Some(counters) = self.counters() else {
            return;
        };
        if self.seg.seq.wrapping_sub(wanted) as i32 > 0 {
            // The byte we need is missing: reordering or loss. Keep whole
            // PDUs from here as an island until the gap is filled.
            self.hold_island(state);
            state.ahead = state.ahead.saturating_add(1);
            let limit = if state.island != 0 {
                ISLAND_AHEAD_LIMIT
            } else {
                AHEAD_LIMIT
            };
            if state.ahead > limit {
                lose(state, counters);
            }
            return;
        }
        state.ahead = 0;
        let mut off = wanted.wrapping_sub(self.seg.seq);
        if state.have == 0 {
            land(state, counters, self.dir);
            off = state.next.wrapping_sub(self.seg.seq);
            if off >= len {
                return;
            }
        }
        for _ in 0..MAX_PDUS_PER_SEGMENT {
            // The header's first 8 bytes, from this segment (and the last).
            let have = state.have as u32;
            if off + (8 - have) > len {
                self.keep_tail(state, counters, off);
                return;
            }
            let Some(bytes) = self.bytes_at(off) else {
                lose(state, counters);
                return;
            };
            let hdr = if have == 0 {
                bytes
            } else {
                state.hdr | bytes << (have * 8)
            };
            let Some((opcode, pdu_len)) = self.header(hdr) else {
                lose(state, counters);
                return;
            };
            count(counters, self.dir, opcode);
            state.next = state.next.wrapping_add(pdu_len);
            state.have = 0;
            // Landing inside the segment too: a retransmission that TCP
            // collapsed from the lost segments and the island's first ones
            // reaches the island mid-segment, and the island's later bytes
            // will not come again.
            land(state, counters, self.dir);
            off = state.next.wrapping_sub(self.seg.seq);
            if off >= len {
                return;
            }
        }
        // More PDUs than one pass walks: rather lose the place than guess.
        lose(state, counters);
    }

    /// A segment beyond the gap: if it is whole PDUs (and starts the island
    /// or continues it), note them in the island, uncounted.
    #[inline(always)]
    fn hold_island(&self, state: &mut FlowState) {
        let extends = state.island != 0 && state.island_end == self.seg.seq;
        if state.island != 0 && !extends {
            return;
        }
        let Some(found) = self.whole_pdus() else {
            return;
        };
        let mut counts = if extends {
            state.island_counts
        } else {
            [0u16; 8]
        };
        for (c, n) in counts.iter_mut().zip(found.iter()) {
            let Some(sum) = c.checked_add(*n) else {
                return;
            };
            *c = sum;
        }
        if !extends {
            state.island_start = self.seg.seq;
        }
        state.island_end = self.seg.seq.wrapping_add(self.seg.payload_len);
        state.island_counts = counts;
        state.island = 1;
    }

    /// The segment ends inside the next header: keep its bytes for the next one.
    #[inline(always)]
    fn keep_tail(&self, state: &mut FlowState, counters: &mut PduCounters, off: u32) {
        let tail = self.seg.payload_len - off; // < 8 - have
        let Some(bytes) = self.bytes_at(off) else {
            lose(state, counters);
            return;
        };
        let have = state.have as u32;
        state.hdr = if have == 0 {
            bytes
        } else {
            state.hdr | bytes << (have * 8)
        };
        state.have = (have + tail) as u8;
    }

    /// Payload bytes from `off` on, little endian; fewer than 8 near the
    /// end of the payload (the rest zero). None for a payload under 8 bytes.
    #[inline(always)]
    fn bytes_at(&self, off: u32) -> Option<u64> {
        let len = self.seg.payload_len;
        if off + 8 <= len {
            return self.pkt.load8(self.seg.payload_offset + off);
        }
        if len < 8 || off >= len {
            return None;
        }
        // The payload's last 8 bytes, shifted so that byte `off` comes first.
        let last8 = self.pkt.load8(self.seg.payload_offset + len - 8)?;
        Some(last8 >> ((8 - (len - off)) * 8))
    }

    /// Out of sync: take the segment only if it is whole PDUs, first byte to last.
    #[inline(always)]
    fn acquire(&self, state: &mut FlowState) {
        let Some(counters) = self.counters() else {
            return;
        };
        let len = self.seg.payload_len;
        let Some(found) = self.whole_pdus() else {
            counters.unsynced_segments += 1;
            return;
        };
        add_low(counters, self.dir, &found);
        state.next = self.seg.seq.wrapping_add(len);
        state.have = 0;
        state.ahead = 0;
        state.synced = 1;
    }

    /// How many PDUs of each of the first seven opcodes (opcode & 7) the
    /// segment holds, if it is whole valid PDUs of those opcodes, first byte
    /// to last (the opcodes streams are made of; a segment with an R2T, a
    /// SNACK or a Reject is not taken whole).
    #[inline(always)]
    fn whole_pdus(&self) -> Option<[u16; 8]> {
        let len = self.seg.payload_len;
        let mut counts = [0u16; 8];
        let mut off = 0u32;
        for _ in 0..MAX_PDUS_PER_SEGMENT {
            if off + 8 > len {
                return None;
            }
            let hdr = self.pkt.load8(self.seg.payload_offset + off)?;
            let (opcode, pdu_len) = self.header(hdr)?;
            if opcode & 0x18 != 0 {
                return None;
            }
            if let Some(c) = counts.get_mut((opcode & 7) as usize) {
                *c += 1;
            }
            off += pdu_len;
            if off >= len {
                return (off == len).then_some(counts);
            }
        }
        None
    }

    /// This port's counters for the instance, looked up only when a segment
    /// holds something to count.
    #[inline(always)]
    fn counters(&self) -> Option<&'static mut PduCounters> {
        per_cpu_entry(&PDU_STATS, self.stats, &ZERO)
    }

    /// (opcode, whole PDU length) of a BHS's first 8 bytes (little endian
    /// u64: byte i in bits 8i..), if it is one.
    #[inline(always)]
    fn header(&self, hdr: u64) -> Option<(u8, u32)> {
        let byte0 = hdr as u8;
        let opcode = byte0 & 0x3f;
        let bit = 1u64 << opcode;
        // Byte 0 bit 7 is reserved; the opcode must be one this side sends;
        // some opcodes always have byte 1's top bit set. One test, few
        // verifier paths.
        let top_bit_missing = (TOP_BIT_SET & bit != 0) & ((hdr >> 8) as u8 & 0x80 == 0);
        if (byte0 & 0x80 != 0) | (self.allowed & bit == 0) | top_bit_missing {
            return None;
        }
        let ahs = (hdr >> 32) as u8 as u32 * 4;
        // Bytes 5..8, big endian.
        let data =
            ((hdr >> 40) as u8 as u32) << 16 | ((hdr >> 48) as u8 as u32) << 8 | (hdr >> 56) as u32;
        // Digests are negotiated by the login, so login PDUs never carry them.
        let digests = ((opcode & 0x1f) != LOGIN) as u32;
        let pdu = BHS_LEN
            + ahs
            + (data + 3) / 4 * 4
            + digests * self.header_digest * DIGEST_LEN
            + digests * self.data_digest * (data > 0) as u32 * DIGEST_LEN;
        Some((opcode, pdu))
    }
}

#[inline(always)]
fn count(counters: &mut PduCounters, dir: usize, opcode: u8) {
    if let Some(c) = counters
        .pdus
        .get_mut(dir)
        .and_then(|d| d.get_mut(opcode as usize))
    {
        *c += 1;
    }
}

/// The walk is at a PDU boundary: if that is where the island starts, the
/// guess is confirmed: count its PDUs and go on after it. A walk that has
/// gone past the island's start without landing on it drops the island.
#[inline(always)]
fn land(state: &mut FlowState, counters: &mut PduCounters, dir: usize) {
    if state.island == 0 {
        return;
    }
    if state.next == state.island_start {
        add_low(counters, dir, &state.island_counts);
        state.next = state.island_end;
        state.island = 0;
    } else if state.next.wrapping_sub(state.island_start) as i32 > 0 {
        state.island = 0;
    }
}

/// Adds counts of the first seven opcodes of the side that sends `dir`.
#[inline(always)]
fn add_low(counters: &mut PduCounters, dir: usize, counts: &[u16; 8]) {
    let base = if dir == RX { 0 } else { 0x20 };
    for (i, n) in counts.iter().enumerate() {
        if let Some(c) = counters.pdus.get_mut(dir).and_then(|d| d.get_mut(base + i)) {
            *c += *n as u64;
        }
    }
}

#[inline(always)]
fn lose(state: &mut FlowState, counters: &mut PduCounters) {
    state.synced = 0;
    state.have = 0;
    state.ahead = 0;
    state.island = 0;
    counters.resyncs += 1;
}
