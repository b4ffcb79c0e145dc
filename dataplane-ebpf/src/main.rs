//! baton's data-port programs.
//!
//! `baton_xdp` parses every frame (bounds-checked against a hostile sender),
//! counts it per port per class and passes it on. `baton_xdp_pass` is the
//! empty baseline benchmarks compare against.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuHashMap, programs::XdpContext,
};
use baton_common::{Class, MAX_PORTS, PortStats};

/// ingress ifindex -> per-class counters. Pinned by name so the counters
/// outlive the loader process and are shared by every port's program.
#[map(name = "BATON_PORT_STATS")]
static PORT_STATS: PerCpuHashMap<u32, PortStats> = PerCpuHashMap::pinned(MAX_PORTS, 0);

#[xdp]
pub fn baton_xdp(ctx: XdpContext) -> u32 {
    let frame = parse::Frame::new(ctx.data(), ctx.data_end());
    let parsed = parse::classify(&frame);
    count(ctx.ingress_ifindex() as u32, &parsed, frame.len() as u64);
    xdp_action::XDP_PASS
}

#[xdp]
pub fn baton_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(ifindex: u32, parsed: &parse::Parsed, bytes: u64) {
    let stats = match PORT_STATS.get_ptr_mut(&ifindex) {
        Some(stats) => stats,
        None => {
            // First frame on this port (on this CPU's view): create the entry.
            // A lost race with another CPU's insert is harmless (NOEXIST).
            let _ = PORT_STATS.insert(&ifindex, &PortStats::default(), 1 /* BPF_NOEXIST */);
            match PORT_STATS.get_ptr_mut(&ifindex) {
                Some(stats) => stats,
                None => return,
            }
        }
    };
    // SAFETY: a per-CPU value: no other writer on this CPU while we run.
    let stats = unsafe { &mut *stats };
    bump(stats, parsed.l3, bytes);
    if let Some(l4) = parsed.l4 {
        bump(stats, l4, bytes);
    }
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
