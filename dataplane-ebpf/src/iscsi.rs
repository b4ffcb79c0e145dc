//! iSCSI PDU accounting (RFC 7143) on an instance's iSCSI ports.
//!
//! A PDU header (BHS) does not always start a TCP segment, so each flow
//! direction keeps the sequence number where its next BHS starts. A segment
//! that covers that point is walked, PDU by PDU (bounded), using only the
//! first 8 bytes of each BHS: opcode, TotalAHSLength, DataSegmentLength.
//! Segments that end before it (retransmissions, the middle of a PDU) hold
//! no new header. A segment beyond it means a gap: wait for the
//! retransmission a few segments, then give up and count a resync. A flow
//! out of sync (or one that began before baton) is found again only on a
//! segment that starts with a valid BHS and whose PDUs end exactly where the
//! segment ends; nothing is counted from a guess.
use crate::{Bytes, parse::Segment, per_cpu_entry};
use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuHashMap},
};
use baton_common::{
    FlowKey, FlowState, InstancePortKey, MAX_INSTANCES, MAX_ISCSI_FLOWS, PduCounters, RX, flags,
};

#[map(name = "BATON_ISCSI_FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::pinned(MAX_ISCSI_FLOWS, 0);

/// Allocated on first use (NO_PREALLOC): only instances with iSCSI traffic cost memory.
#[map(name = "BATON_PDU_STATS")]
static PDU_STATS: PerCpuHashMap<InstancePortKey, PduCounters> =
    PerCpuHashMap::pinned(MAX_INSTANCES * 4, 1);

/// The first value of a PDU_STATS element (1 KiB: too large for the BPF stack).
static ZERO: PduCounters = PduCounters::ZERO;

/// Enough for a segment full of small PDUs (NOP-Outs, commands without data).
const MAX_PDUS_PER_SEGMENT: u32 = 16;
/// Segments past a missing header before the flow counts as out of sync.
const AHEAD_LIMIT: u8 = 8;
const BHS_LEN: u32 = 48;
const DIGEST_LEN: u32 = 4;
const LOGIN_REQUEST: u8 = 0x03;
const LOGIN_RESPONSE: u8 = 0x23;

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
pub struct Job {
    pub flow: FlowKey,
    pub stats: InstancePortKey,
    pub dir: usize,
    pub flags: u16,
}

/// Accounts one TCP segment of an iSCSI flow. Not inlined: a BPF-to-BPF
/// call has its own stack frame (the callers' are large) and the verifier
/// walks it once per call, not once per path through the parser before it.
/// Callers pass the result to [`crate::keep`].
#[inline(never)]
pub fn account<P: Bytes>(pkt: &P, seg: &Segment, job: &Job) -> u32 {
    segment(pkt, seg, job)
}

#[inline(always)]
/// Returns whether the flow is in sync after the segment.
fn segment<P: Bytes>(pkt: &P, seg: &Segment, job: &Job) -> u32 {
    let flow = &job.flow;
    if seg.rst {
        let _ = FLOWS.remove(flow);
        return 0;
    }
    if seg.syn {
        // The byte stream starts after the SYN.
        let state = FlowState {
            next: seg.seq.wrapping_add(1),
            synced: 1,
            ..FlowState::default()
        };
        let _ = FLOWS.insert(flow, &state, 0);
        return 0;
    }
    // Offsets below stay small: a segment is at most 64 KiB.
    if seg.payload_len == 0 || seg.payload_len > 0xffff {
        return 0;
    }
    let state = match FLOWS.get_ptr_mut(flow) {
        Some(p) => p,
        None => {
            let _ = FLOWS.insert(flow, &FlowState::default(), 0);
            let Some(p) = FLOWS.get_ptr_mut(flow) else {
                return 0;
            };
            p
        }
    };
    // SAFETY: an element of an LRU hash; a racing update of the same flow
    // on another CPU can only make this flow resync.
    let state = unsafe { &mut *state };
    let walk = Walk {
        pkt,
        seg,
        dir: job.dir,
        header_digest: job.flags & flags::HEADER_DIGEST != 0,
        data_digest: job.flags & flags::DATA_DIGEST != 0,
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
    header_digest: bool,
    data_digest: bool,
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
            // The byte we need is missing: reordering or loss.
            state.ahead = state.ahead.saturating_add(1);
            if state.ahead > AHEAD_LIMIT {
                lose(state, counters);
            }
            return;
        }
        state.ahead = 0;
        let mut off = wanted.wrapping_sub(self.seg.seq);
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
            off = state.next.wrapping_sub(self.seg.seq);
            if off >= len {
                return;
            }
        }
        // More PDUs than one pass walks: rather lose the place than guess.
        lose(state, counters);
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
        let mut opcodes = [0u8; MAX_PDUS_PER_SEGMENT as usize];
        let mut found = 0usize;
        let mut off = 0u32;
        for slot in opcodes.iter_mut() {
            if off + 8 > len {
                break;
            }
            let Some(hdr) = self.pkt.load8(self.seg.payload_offset + off) else {
                break;
            };
            let Some((opcode, pdu_len)) = self.header(hdr) else {
                break;
            };
            *slot = opcode;
            found += 1;
            off += pdu_len;
            if off >= len {
                break;
            }
        }
        if found == 0 || off != len {
            counters.unsynced_segments += 1;
            return;
        }
        for opcode in opcodes.iter().take(found) {
            count(counters, self.dir, *opcode);
        }
        state.next = self.seg.seq.wrapping_add(len);
        state.have = 0;
        state.ahead = 0;
        state.synced = 1;
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
        let allowed = if self.dir == RX {
            INITIATOR_OPCODES
        } else {
            TARGET_OPCODES
        };
        // Byte 0 bit 7 is reserved; the opcode must be one this side sends.
        if byte0 & 0x80 != 0 || allowed & (1u64 << opcode) == 0 {
            return None;
        }
        if TOP_BIT_SET & (1u64 << opcode) != 0 && (hdr >> 8) as u8 & 0x80 == 0 {
            return None;
        }
        let ahs = (hdr >> 32) as u8 as u32 * 4;
        // Bytes 5..8, big endian.
        let data =
            ((hdr >> 40) as u8 as u32) << 16 | ((hdr >> 48) as u8 as u32) << 8 | (hdr >> 56) as u32;
        // Digests are negotiated by the login, so login PDUs never carry them.
        let login = opcode == LOGIN_REQUEST || opcode == LOGIN_RESPONSE;
        let mut pdu = BHS_LEN + ahs + (data + 3) / 4 * 4;
        if self.header_digest && !login {
            pdu += DIGEST_LEN;
        }
        if self.data_digest && !login && data > 0 {
            pdu += DIGEST_LEN;
        }
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

#[inline(always)]
fn lose(state: &mut FlowState, counters: &mut PduCounters) {
    state.synced = 0;
    state.have = 0;
    state.ahead = 0;
    counters.resyncs += 1;
}
