//! The counters the programs keep: per port per class, per instance per
//! port, and per-CPU hash values created on first use.
use crate::parse;
use crate::{INSTANCE_STATS, PORT_STATS};
use aya_ebpf::maps::PerCpuHashMap;
use baton_common::{InstanceCounters, InstanceEntry, MAX_PORT_IFINDEX, PortStats};

#[inline(always)]
pub(crate) fn count(ifindex: u32, parsed: &parse::Parsed, bytes: u64) {
    let slot = if ifindex < MAX_PORT_IFINDEX {
        ifindex
    } else {
        0
    };
    let Some(stats) = PORT_STATS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: this CPU's element; no other writer while we run.
    let stats = unsafe { &mut *stats };
    bump(stats, parsed.l3, bytes);
    if parsed.l4 != parse::NO_L4 {
        bump(stats, parsed.l4, bytes);
    }
}

/// This CPU's counters of `entry` on port `ifindex` (None: a port it is
/// not counted on).
#[inline(always)]
pub(crate) fn instance_counters(
    entry: &InstanceEntry,
    ifindex: u32,
) -> Option<&'static mut InstanceCounters> {
    let pos = entry.ports.iter().position(|p| *p == ifindex)?;
    let slot = INSTANCE_STATS.get_ptr_mut(entry.slot as u32)?;
    // SAFETY: this CPU's element; no other writer while we run.
    unsafe { (*slot).ports.get_mut(pos) }
}

/// This CPU's value for `key`, created zeroed on first use. A lost race with
/// another CPU's insert is harmless (NOEXIST).
#[inline(always)]
/// `zero` is a static: a zero value built on the stack costs a memset of
/// the whole value on every packet (and stack the programs lack).
pub(crate) fn per_cpu_entry<K, V>(
    map: &PerCpuHashMap<K, V>,
    key: &K,
    zero: &'static V,
) -> Option<&'static mut V> {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: a per-CPU value: no other writer on this CPU while we run.
        return Some(unsafe { &mut *p });
    }
    let _ = map.insert(key, zero, 1 /* BPF_NOEXIST */);
    // SAFETY: as above.
    map.get_ptr_mut(key).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn bump(stats: &mut PortStats, class: u32, bytes: u64) {
    if let Some(counter) = stats.classes.get_mut(class as usize) {
        counter.packets += 1;
        counter.bytes += bytes;
    }
}
