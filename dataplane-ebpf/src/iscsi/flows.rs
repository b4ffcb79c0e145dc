//! The flow table: each connection direction's place in its PDU stream,
//! in a two-way set-associative array.
use crate::parse::Segment;
use aya_ebpf::{macros::map, maps::Array};
use baton_common::{FLOW_SETS, FlowKey, FlowState, FlowWay};

/// The flow table: two ways per set, elements `2 * set` and `2 * set + 1`
/// (a set in one element put the state at one of two offsets, and the
/// verifier then walked the accounting twice). Shared by all CPUs and
/// programs, as the LRU hash before it was: segments of one flow racing on
/// two CPUs can only make that flow resync. Unlike the hash, a third flow
/// taking a way while another CPU updates the flow it evicts can mix the
/// two states; it needs three flows in one of 8,192 sets at that instant.
#[map(name = "BATON_FLOW_WAYS")]
static FLOWS: Array<FlowWay> = Array::pinned(2 * FLOW_SETS, 0);

/// The two ways of the flow's set.
#[inline(always)]
pub(super) fn ways(flow: &FlowKey) -> Option<(&'static mut FlowWay, &'static mut FlowWay)> {
    let first = 2 * flow.set();
    let (a, b) = (FLOWS.get_ptr_mut(first)?, FLOWS.get_ptr_mut(first + 1)?);
    // SAFETY: elements of a global array map, valid while the program runs.
    unsafe { Some((&mut *a, &mut *b)) }
}

/// The flow's state in its set, or (with `fresh`) a way taken for it with
/// that state: a free way, else the one used less recently (way 0 keeps
/// which).
#[inline(always)]
pub(super) fn flow_state(
    flow: &FlowKey,
    fresh: Option<&FlowState>,
) -> Option<&'static mut FlowState> {
    let (w0, w1) = ways(flow)?;
    if w0.key == *flow {
        if w0.recent != 0 {
            w0.recent = 0;
        }
        return Some(&mut w0.state);
    }
    if w1.key == *flow {
        if w0.recent != 1 {
            w0.recent = 1;
        }
        return Some(&mut w1.state);
    }
    let fresh = fresh?;
    let take_first = w0.key.family == 0 || (w1.key.family != 0 && w0.recent == 1);
    w0.recent = (!take_first) as u32;
    let way = if take_first { w0 } else { w1 };
    way.key = *flow;
    way.state = *fresh;
    Some(&mut way.state)
}

/// Whether a segment holds nothing to count and changes nothing: no
/// payload (an ACK), or, in a flow in sync, it ends before the next PDU
/// header (most segments of a transfer). Inlined in the callers, ahead of
/// the accounting call: one array lookup and a compare.
#[inline(always)]
pub fn nothing_to_count(flow: &FlowKey, seg: &Segment) -> bool {
    if seg.syn || seg.rst {
        return false;
    }
    if seg.payload_len == 0 {
        return true;
    }
    let Some((w0, w1)) = ways(flow) else {
        return false;
    };
    for way in [w0, w1] {
        if way.key == *flow {
            let state = &way.state;
            let wanted = state.next.wrapping_add(state.have as u32);
            return state.synced != 0
                && seg.payload_len <= 0xffff
                && seg.seq.wrapping_add(seg.payload_len).wrapping_sub(wanted) as i32 <= 0;
        }
    }
    false
}

/// Frees the flow's way (its connection was reset).
#[inline(always)]
pub(super) fn forget(flow: &FlowKey) {
    let Some((w0, w1)) = ways(flow) else {
        return;
    };
    for way in [w0, w1] {
        if way.key == *flow {
            way.key.family = 0;
        }
    }
}
