//! baton's data-port programs.
//!
//! `baton_xdp` (ingress) parses every frame (bounds-checked against a hostile
//! sender), counts it per port per class and per instance, and drops ARP
//! requests / neighbour solicitations for an instance on every port but its
//! owner (no ARP flux). `baton_tc_egress` sends frames sourced from an
//! instance address out of its owner port with its MAC, even while kernel
//! routes still point elsewhere. `baton_xdp_pass` is the benchmarks' empty
//! baseline. No per-packet logging anywhere.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::{bpf_ktime_get_coarse_ns, bpf_redirect},
    macros::{classifier, map, xdp},
    maps::{HashMap, PerCpuHashMap},
    programs::{TcContext, XdpContext},
};
use baton_common::{
    Class, InstanceCounters, InstanceEntry, InstanceKey, InstancePortKey, MAX_INSTANCES, MAX_PORTS,
    PortStats,
};

/// ingress ifindex -> per-class counters. Pinned by name so the counters
/// outlive the loader process and are shared by every port's program.
#[map(name = "BATON_PORT_STATS")]
static PORT_STATS: PerCpuHashMap<u32, PortStats> = PerCpuHashMap::pinned(MAX_PORTS, 0);

/// (VLAN, address) -> instance and owner. BPF_F_NO_PREALLOC: an update
/// replaces the element under RCU, so a reader sees the old or the new entry
/// whole; a move is one update.
#[map(name = "BATON_INSTANCES")]
static INSTANCES: HashMap<InstanceKey, InstanceEntry> = HashMap::pinned(MAX_INSTANCES, 1);

#[map(name = "BATON_INSTANCE_STATS")]
static INSTANCE_STATS: PerCpuHashMap<InstancePortKey, InstanceCounters> =
    PerCpuHashMap::pinned(MAX_INSTANCES * 4, 0);

#[xdp]
pub fn baton_xdp(ctx: XdpContext) -> u32 {
    if ingress(ctx.data(), ctx.data_end(), ctx.ingress_ifindex() as u32) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// The same ingress logic at TCX ingress, for drivers where XDP costs more
/// than it gives (on veth a native XDP program turns the peer's TSO off).
#[classifier]
pub fn baton_tc_ingress(ctx: TcContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if ingress(ctx.data(), ctx.data_end(), ifindex) {
        TC_ACT_OK
    } else {
        TC_ACT_SHOT
    }
}

/// Parses, counts per port and per instance; false: drop (an ARP request or
/// neighbour solicitation for an instance arriving on a port that is not
/// its owner: only the owner answers, no ARP flux).
#[inline(always)]
fn ingress(start: usize, end: usize, ifindex: u32) -> bool {
    let frame = parse::Frame::new(start, end);
    let parsed = parse::classify(&frame);
    let len = frame.len() as u64;
    count(ifindex, &parsed, len);
    let Some(entry) = parsed.dst.and_then(|k| instance(&k)) else {
        return true;
    };
    let mine = entry.owner_ifindex == ifindex;
    with_instance_counters(entry.id, ifindex, |c| {
        if parsed.solicit {
            c.solicits += 1;
            if !mine {
                c.solicits_dropped += 1;
            }
        } else {
            c.rx_packets += 1;
            c.rx_bytes += len;
            // SAFETY: helper without arguments.
            c.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
        }
    });
    !(parsed.solicit && !mine)
}

#[xdp]
pub fn baton_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub fn baton_tc_egress(ctx: TcContext) -> i32 {
    let frame = parse::Frame::new(ctx.data(), ctx.data_end());
    let parsed = parse::classify(&frame);
    let Some(entry) = parsed.src.and_then(|k| instance(&k)) else {
        return TC_ACT_OK;
    };
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if entry.owner_ifindex == ifindex || entry.owner_ifindex == 0 {
        return TC_ACT_OK;
    }
    // Leaving through the wrong port: source MAC of the owner, then redirect.
    if ctx.store(6, &entry.mac, 0).is_err() {
        return TC_ACT_OK;
    }
    with_instance_counters(entry.id, ifindex, |c| c.egress_redirected += 1);
    // SAFETY: plain helper call; returns TC_ACT_REDIRECT or TC_ACT_SHOT.
    unsafe { bpf_redirect(entry.owner_ifindex, 0) as i32 }
}

#[inline(always)]
fn instance(key: &InstanceKey) -> Option<InstanceEntry> {
    // SAFETY: a copy of the value; the map is NO_PREALLOC (RCU-freed), so the
    // element stays valid while we read it.
    INSTANCES.get_ptr(key).map(|p| unsafe { *p })
}

#[inline(always)]
fn count(ifindex: u32, parsed: &parse::Parsed, bytes: u64) {
    let Some(stats) = per_cpu_entry(&PORT_STATS, &ifindex) else {
        return;
    };
    bump(stats, parsed.l3, bytes);
    if let Some(l4) = parsed.l4 {
        bump(stats, l4, bytes);
    }
}

#[inline(always)]
fn with_instance_counters(id: u32, ifindex: u32, f: impl FnOnce(&mut InstanceCounters)) {
    if let Some(c) = per_cpu_entry(&INSTANCE_STATS, &InstancePortKey { id, ifindex }) {
        f(c);
    }
}

/// This CPU's value for `key`, created zeroed on first use. A lost race with
/// another CPU's insert is harmless (NOEXIST).
#[inline(always)]
fn per_cpu_entry<K, V: Default>(map: &PerCpuHashMap<K, V>, key: &K) -> Option<&'static mut V> {
    let ptr = match map.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            let _ = map.insert(key, &V::default(), 1 /* BPF_NOEXIST */);
            map.get_ptr_mut(key)?
        }
    };
    // SAFETY: a per-CPU value: no other writer on this CPU while we run.
    Some(unsafe { &mut *ptr })
}

#[inline(always)]
fn bump(stats: &mut PortStats, class: Class, bytes: u64) {
    if let Some(counter) = stats.classes.get_mut(class as usize) {
        counter.packets += 1;
        counter.bytes += bytes;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
