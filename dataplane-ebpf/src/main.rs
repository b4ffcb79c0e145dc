//! baton's data-port programs.
//!
//! `baton_xdp` (ingress) parses every frame (bounds-checked against a hostile
//! sender), counts it per port per class and per instance, and drops ARP
//! requests / neighbour solicitations for an instance on every port but its
//! owner (no ARP flux). For an instance it also counts iSCSI PDUs on its
//! iSCSI ports (`iscsi`), steers its flows to its CPU set through a cpumap
//! (per-flow hash: a TCP stream stays on one CPU, never reordered) and pops
//! its VLAN tag when the kernel has no VLAN device for it. `baton_tc_egress`
//! sends frames sourced from an instance address out of its owner port with
//! its MAC, even while kernel routes still point elsewhere, counts the PDUs
//! the instance sends and pushes its tag back. `baton_xdp_pass` and
//! `baton_tc_pass` are the benchmarks' empty baselines. No per-packet
//! logging anywhere.
#![no_std]
#![no_main]

mod counters;
mod iscsi;
mod parse;
mod sockets;
mod table;

use counters::{count, instance_counters};
use table::instance;

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_SHOT, xdp_action, xdp_md},
    helpers::{
        bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_redirect, bpf_skb_load_bytes,
        bpf_skb_vlan_pop, bpf_skb_vlan_push, bpf_xdp_adjust_head, bpf_xdp_load_bytes,
    },
    macros::{classifier, map, xdp},
    maps::{Array, CpuMap, PerCpuArray, PerCpuHashMap},
    programs::{TcContext, XdpContext},
};
use baton_common::{
    Class, ENTRY_ELEMENTS, FlowKey, INDEX_DELETED, INDEX_SLOTS, InstanceCounters, InstanceEntry,
    InstanceKey, InstancePortKey, KeyedEntry, MAX_CPUS, MAX_INSTANCE_SLOTS, MAX_PORT_IFINDEX,
    MAX_PROBES, PortStats, RX, SlotCounters, TX, flags,
};

/// ingress ifindex -> per-class counters. Pinned by name so the counters
/// outlive the loader process and are shared by every port's program. An
/// array: the verifier inlines its lookup (no hash) on every frame; ports
/// with an ifindex past its end share slot 0.
#[map(name = "BATON_PORT_STATS")]
static PORT_STATS: PerCpuArray<PortStats> = PerCpuArray::pinned(MAX_PORT_IFINDEX, 0);

/// (VLAN, address) -> instance and owner, as two arrays the verifier
/// inlines (the hash map before them cost ~20 ns a frame): the index, at
/// the key's hash and the positions after it, holds the element of the
/// entry array that is live for the key. A move writes the key's idle
/// element, then switches the index to it with one 4-byte store: a reader
/// sees the old entry or the new one whole. Userspace writes an element
/// only while no program can still be reading it (InstanceTable).
#[map(name = "BATON_INST_INDEX")]
static INSTANCE_INDEX: Array<u32> = Array::pinned(INDEX_SLOTS, 0);

#[map(name = "BATON_INST_ENTRY")]
static INSTANCE_ENTRIES: Array<KeyedEntry> = Array::pinned(ENTRY_ELEMENTS, 0);

/// The cluster member's fence deadline (ns, bpf_ktime_get_ns): its
/// daemon moves it on with every answered keepalive. Past it, the
/// instances it holds fall silent here even if the daemon is dead.
#[map(name = "BATON_FENCE")]
static FENCE: Array<u64> = Array::pinned(1, 0);

/// A cluster instance whose member's deadline has passed.
#[inline(always)]
fn fenced(entry: &InstanceEntry) -> bool {
    if entry.flags & flags::CLUSTER == 0 {
        return false;
    }
    let deadline = FENCE.get(0).copied().unwrap_or(0);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    now >= deadline
}

/// slot -> counters per port of the instance. An array: its lookup is
/// inlined, where a per-CPU hash cost ~20 ns a frame.
#[map(name = "BATON_INSTANCE_STATS")]
static INSTANCE_STATS: PerCpuArray<SlotCounters> = PerCpuArray::pinned(MAX_INSTANCE_SLOTS, 0);

/// CPU id -> cpumap queue; userspace fills the CPUs instances name.
#[map(name = "BATON_CPUS")]
static CPUS: CpuMap = CpuMap::pinned(MAX_CPUS, 0);

/// Target CPU -> frames steered to it (per source CPU; sum them).
#[map(name = "BATON_STEERED")]
static STEERED: PerCpuArray<u64> = PerCpuArray::pinned(MAX_CPUS, 0);

/// Reads packet bytes beyond the parsed headers (iSCSI headers sit at
/// offsets the verifier cannot bound; the helpers check at run time).
pub trait Bytes {
    /// 8 bytes at `offset` as a little-endian u64 (byte i in bits 8i..).
    fn load8(&self, offset: u32) -> Option<u64>;
    /// iSCSI accounting for a segment of this packet.
    fn account(&self, seg: &parse::Segment, job: &iscsi::Job) -> u32;
}

pub(crate) struct XdpBytes(pub(crate) *mut xdp_md);

impl Bytes for XdpBytes {
    #[inline(always)]
    fn account(&self, seg: &parse::Segment, job: &iscsi::Job) -> u32 {
        iscsi::baton_iscsi_xdp(self.0, seg, job)
    }
    #[inline(always)]
    fn load8(&self, offset: u32) -> Option<u64> {
        let mut buf = [0u8; 8];
        // SAFETY: the helper bounds-checks against the frame.
        let r = unsafe { bpf_xdp_load_bytes(self.0, offset, buf.as_mut_ptr().cast(), 8) };
        (r == 0).then(|| u64::from_le_bytes(buf))
    }
}

pub(crate) struct SkbBytes(pub(crate) *mut __sk_buff);

impl Bytes for SkbBytes {
    #[inline(always)]
    fn account(&self, seg: &parse::Segment, job: &iscsi::Job) -> u32 {
        iscsi::baton_iscsi_skb(self.0, seg, job)
    }
    #[inline(always)]
    fn load8(&self, offset: u32) -> Option<u64> {
        let mut buf = [0u8; 8];
        // SAFETY: the helper bounds-checks against the skb (linear or paged).
        let r = unsafe { bpf_skb_load_bytes(self.0.cast(), offset, buf.as_mut_ptr().cast(), 8) };
        (r == 0).then(|| u64::from_le_bytes(buf))
    }
}

/// What ingress decided for a frame.
struct Verdict {
    pass: bool,
    /// Steer to this CPU (XDP only).
    cpu: Option<u32>,
    /// Take the instance's VLAN tag off (it is the frame's only tag).
    pop: bool,
    /// The instance's counters on this port, for the tag counter.
    counters: Option<&'static mut InstanceCounters>,
}

const PASS: Verdict = Verdict {
    pass: true,
    cpu: None,
    pop: false,
    counters: None,
};

#[xdp]
pub fn baton_xdp(ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let frame = parse::Frame::new(ctx.data(), ctx.data_end());
    let v = ingress(&XdpBytes(ctx.ctx), &frame, ifindex, 0);
    if !v.pass {
        return xdp_action::XDP_DROP;
    }
    if v.pop
        && pop_tag(&ctx)
        && let Some(c) = v.counters
    {
        c.tags_popped += 1;
    }
    if let Some(cpu) = v.cpu {
        if let Some(n) = STEERED.get_ptr_mut(cpu) {
            // SAFETY: this CPU's slot.
            unsafe { *n += 1 };
        }
        // A CPU without a queue in the map: pass here instead.
        return match CPUS.redirect(cpu, xdp_action::XDP_PASS as u64) {
            Ok(action) | Err(action) => action,
        };
    }
    xdp_action::XDP_PASS
}

/// The same ingress logic at TCX ingress, for drivers where XDP costs more
/// than it gives (on veth a native XDP program turns the peer's TSO off).
/// No CPU steering here: cpumaps take XDP frames only.
#[classifier]
pub fn baton_tc_ingress(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: the context's skb pointer is valid for the program's run.
    let (ifindex, len, hw_vlan) = unsafe { ((*skb).ifindex, (*skb).len, hw_vlan(skb)) };
    let frame = parse::Frame::with_wire_len(ctx.data(), ctx.data_end(), len as usize);
    let v = ingress(&SkbBytes(skb), &frame, ifindex, hw_vlan);
    if !v.pass {
        return TC_ACT_SHOT;
    }
    // SAFETY: plain helper call on our skb.
    if v.pop
        && unsafe { bpf_skb_vlan_pop(skb) } == 0
        && let Some(c) = v.counters
    {
        c.tags_popped += 1;
    }
    TC_ACT_OK
}

/// The VLAN id the kernel already took out of a received frame, or 0.
#[inline(always)]
unsafe fn hw_vlan(skb: *mut __sk_buff) -> u16 {
    // SAFETY: the caller passes the program's skb.
    unsafe {
        if (*skb).vlan_present != 0 {
            ((*skb).vlan_tci & 0x0fff) as u16
        } else {
            0
        }
    }
}

/// Parses, counts per port and per instance, accounts iSCSI PDUs; the
/// verdict drops an ARP request or neighbour solicitation for an instance
/// arriving on a port that is not its owner (only the owner answers, no ARP flux).
#[inline(always)]
fn ingress<P: Bytes>(pkt: &P, frame: &parse::Frame, ifindex: u32, hw_vlan: u16) -> Verdict {
    let mut parsed = parse::Parsed::new();
    parse::classify(frame, hw_vlan, &mut parsed);
    let p = &parsed;
    let len = frame.len() as u64;
    count(ifindex, p, len);
    if !p.addrs {
        return PASS;
    }
    let Some(entry) = instance(&p.dst) else {
        return PASS;
    };
    // The untagged twin of a VLAN instance's entry serves egress only.
    if entry.vlan != p.dst.vlan {
        return PASS;
    }
    // Fenced: neither this host's ARP/ND answers nor its sockets may
    // take the address while another member may hold it.
    if fenced(entry) {
        return Verdict {
            pass: false,
            ..PASS
        };
    }
    let mine = entry.owner_ifindex == ifindex;
    let mut counters = instance_counters(entry, ifindex);
    if let Some(c) = counters.as_deref_mut() {
        if p.solicit {
            c.solicits += 1;
            if !mine {
                c.solicits_dropped += 1;
            }
        } else {
            c.rx_packets += 1;
            c.rx_bytes += len;
            // The coarse clock changes once a jiffy; reading it cost ~15 ns
            // a frame, jiffies (inlined by the verifier) ~0.
            // SAFETY: helpers without arguments.
            let jiffies = unsafe { bpf_jiffies64() };
            if c.last_seen_jiffies != jiffies {
                c.last_seen_jiffies = jiffies;
                // SAFETY: as above.
                c.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
            }
        }
    }
    if p.solicit && !mine {
        return Verdict {
            pass: false,
            ..PASS
        };
    }
    if p.tcp && entry.is_iscsi_port(p.dport) {
        let flow = flow_key(p);
        if iscsi::nothing_to_count(&flow, &p.seg) {
            return verdict(entry, p, hw_vlan, counters);
        }
        let job = iscsi::Job {
            flow,
            stats: InstancePortKey {
                id: entry.id,
                ifindex,
            },
            dir: RX as u32,
            flags: entry.flags as u32,
        };
        pkt.account(&p.seg, &job);
    }
    verdict(entry, p, hw_vlan, counters)
}

/// An instance's frame passes: steered to its CPU set, its tag popped.
#[inline(always)]
fn verdict(
    entry: &InstanceEntry,
    p: &parse::Parsed,
    hw_vlan: u16,
    counters: Option<&'static mut InstanceCounters>,
) -> Verdict {
    let ip = p.l3 == Class::Ipv4 as u32 || p.l3 == Class::Ipv6 as u32;
    Verdict {
        pass: true,
        cpu: if ip { steer(entry, p) } else { None },
        pop: entry.flags & flags::VLAN_TAGS != 0
            && entry.vlan != 0
            && p.tags + (hw_vlan != 0) as u8 == 1,
        counters,
    }
}

/// The CPU of the instance's set this flow belongs to: a hash of its
/// addresses and ports, so every packet of a stream picks the same one.
#[inline(always)]
fn steer(entry: &InstanceEntry, p: &parse::Parsed) -> Option<u32> {
    let n = entry.cpu_count as u32;
    if n == 0 {
        return None;
    }
    let mut h = (p.sport as u32) << 16 | p.dport as u32;
    let (s, d) = (p.src.addr, p.dst.addr);
    for w in [s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]] {
        h ^= w;
        h = h.wrapping_mul(0x9e37_79b1).rotate_left(13);
    }
    // murmur3's finaliser spreads the bits before the modulo.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    entry.cpus.get((h % n) as usize).map(|c| *c as u32)
}

#[inline(always)]
fn flow_key(p: &parse::Parsed) -> FlowKey {
    FlowKey {
        saddr: p.src.addr,
        daddr: p.dst.addr,
        sport: p.sport,
        dport: p.dport,
        vlan: p.dst.vlan,
        family: p.dst.family,
        _pad: 0,
    }
}

/// Takes a frame's only 802.1Q tag off: the MAC addresses move 4 bytes
/// up over it and the frame starts 4 bytes later.
#[inline(always)]
fn pop_tag(ctx: &XdpContext) -> bool {
    let start = ctx.data();
    if start + 16 > ctx.data_end() {
        return false;
    }
    // SAFETY: 16 bytes are in the frame (checked above).
    unsafe {
        let macs = core::ptr::read_unaligned(start as *const [u8; 12]);
        core::ptr::write_unaligned((start + 4) as *mut [u8; 12], macs);
        bpf_xdp_adjust_head(ctx.ctx, 4) == 0
    }
}

#[xdp]
pub fn baton_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub fn baton_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[classifier]
pub fn baton_tc_egress(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: the context's skb pointer is valid for the program's run.
    let (ifindex, len, tagged) = unsafe { ((*skb).ifindex, (*skb).len, (*skb).vlan_present != 0) };
    let frame = parse::Frame::with_wire_len(ctx.data(), ctx.data_end(), len as usize);
    let mut parsed = parse::Parsed::new();
    parse::classify(&frame, 0, &mut parsed);
    let p = &parsed;
    if !p.addrs {
        return TC_ACT_OK;
    }
    let Some(entry) = instance(&p.src) else {
        return TC_ACT_OK;
    };
    // Tagged for another VLAN than the instance's: not its frame.
    if p.src.vlan != 0 && p.src.vlan != entry.vlan {
        return TC_ACT_OK;
    }
    if fenced(entry) {
        return TC_ACT_SHOT;
    }
    let out = if entry.owner_ifindex == 0 {
        ifindex
    } else {
        entry.owner_ifindex
    };
    // What came down through the instance's macvlan was counted there.
    let via_macvlan = counted_on_macvlan(entry) && ctx.load::<[u8; 6]>(6).ok() == Some(entry.mac);
    if !via_macvlan {
        account_tx(skb, p, entry, out);
    }
    // The kernel sent it untagged (no VLAN device): put the instance's tag on.
    if entry.flags & flags::VLAN_TAGS != 0 && entry.vlan != 0 && p.tags == 0 && !tagged {
        // SAFETY: plain helper call on our skb.
        if unsafe { bpf_skb_vlan_push(skb, 0x8100u16.to_be(), entry.vlan) } == 0 {
            if let Some(c) = instance_counters(entry, out) {
                c.tags_pushed += 1;
            }
        }
    }
    if out == ifindex {
        return TC_ACT_OK;
    }
    // Leaving through the wrong port: source MAC of the owner, then redirect.
    if ctx.store(6, &entry.mac, 0).is_err() {
        return TC_ACT_OK;
    }
    if let Some(c) = instance_counters(entry, ifindex) {
        c.egress_redirected += 1;
    }
    // SAFETY: plain helper call; returns TC_ACT_REDIRECT or TC_ACT_SHOT.
    unsafe { bpf_redirect(out, 0) as i32 }
}

/// On an instance's own macvlan: the PDUs it sends are counted here, not
/// on the port, because while the port has no carrier the macvlan's qdisc
/// is noop and drops them before the port's program could see them (until
/// the move); TCP then sends those bytes again after what followed them,
/// and a count kept on the port alone would have a gap it cannot fill.
#[classifier]
pub fn baton_tc_macvlan(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: the context's skb pointer is valid for the program's run.
    let len = unsafe { (*skb).len };
    let frame = parse::Frame::with_wire_len(ctx.data(), ctx.data_end(), len as usize);
    let mut parsed = parse::Parsed::new();
    parse::classify(&frame, 0, &mut parsed);
    let p = &parsed;
    if !p.addrs {
        return TC_ACT_OK;
    }
    if let Some(entry) = instance(&p.src)
        && p.src.vlan == 0
        && counted_on_macvlan(entry)
    {
        account_tx(skb, p, entry, entry.owner_ifindex);
    }
    TC_ACT_OK
}

/// An instance with its own MAC, placed: its macvlan's program counts what
/// it sends (the port's program skips frames with its MAC as source).
#[inline(always)]
fn counted_on_macvlan(entry: &InstanceEntry) -> bool {
    entry.flags & flags::OWN_MAC != 0 && entry.owner_ifindex != 0
}

/// iSCSI accounting of a frame an instance sends, on port `out`'s counters.
#[inline(always)]
fn account_tx(skb: *mut __sk_buff, p: &parse::Parsed, entry: &InstanceEntry, out: u32) {
    if p.tcp && entry.is_iscsi_port(p.sport) {
        let flow = flow_key(p);
        if iscsi::nothing_to_count(&flow, &p.seg) {
            return;
        }
        let job = iscsi::Job {
            flow,
            stats: InstancePortKey {
                id: entry.id,
                ifindex: out,
            },
            dir: TX as u32,
            flags: entry.flags as u32,
        };
        iscsi::baton_iscsi_skb(skb, &p.seg, &job);
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
