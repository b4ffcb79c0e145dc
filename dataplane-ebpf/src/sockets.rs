//! `iter/tcp`: every TCP socket of the host's network namespace, as one
//! [`TcpSocketRecord`] each, for the backoff revert after a move (RFC 6069).
//! Fields are read with bpf_probe_read_kernel at offsets userspace took
//! from the kernel's BTF ([`TcpOffsets`]), so no CO-RE is needed here.
//! Request and time-wait sockets are skipped (bpf_skc_to_tcp_sock is null
//! for them); so are listeners. Not on any packet path.
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_probe_read_kernel, bpf_seq_write, bpf_skc_to_tcp_sock},
    macros::map,
    maps::Array,
};
use baton_common::{TcpOffsets, TcpSocketRecord};

#[map(name = "BATON_TCP_OFFSETS")]
static TCP_OFFSETS: Array<TcpOffsets> = Array::with_max_entries(1, 0);

/// The kernel's `struct bpf_iter_meta` (its first field is all we use).
#[repr(C)]
pub struct bpf_iter_meta {
    seq: *mut c_void,
    session_id: u64,
    seq_num: u64,
}

/// The kernel's context for `iter/tcp` (the BTF names it so).
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct bpf_iter__tcp {
    meta: *mut bpf_iter_meta,
    sk_common: *mut c_void,
    uid: u32,
}

const TCP_LISTEN: u8 = 10;

#[inline(always)]
unsafe fn read<T: Default>(base: *const u8, off: u32) -> T {
    let mut v = T::default();
    // SAFETY: a kernel read through the helper; a fault leaves `v` zero.
    unsafe {
        bpf_probe_read_kernel(
            (&mut v as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            base.add(off as usize).cast(),
        );
    }
    v
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub extern "C" fn baton_tcp_sockets(ctx: *mut bpf_iter__tcp) -> i32 {
    // SAFETY: the kernel passes a valid context.
    let (meta, skc) = unsafe { ((*ctx).meta, (*ctx).sk_common) };
    if skc.is_null() || meta.is_null() {
        return 0;
    }
    let Some(o) = TCP_OFFSETS.get(0) else {
        return 0;
    };
    // SAFETY: the helper takes any sock_common and returns null for others.
    let tp = unsafe { bpf_skc_to_tcp_sock(skc) } as *const u8;
    if tp.is_null() {
        return 0;
    }
    let mut r = TcpSocketRecord::default();
    // SAFETY: reads through bpf_probe_read_kernel at BTF offsets.
    unsafe {
        r.state = read::<u8>(tp, o.state);
        if r.state == TCP_LISTEN {
            return 0;
        }
        r.family = read::<u16>(tp, o.family);
        r.lport = read::<u16>(tp, o.num);
        r.rport_be = read::<u16>(tp, o.dport);
        r.backoff = read::<u8>(tp, o.backoff);
        r.retransmits = read::<u8>(tp, o.retransmits);
        r.snd_una = read::<u32>(tp, o.snd_una);
        r.rcv_nxt = read::<u32>(tp, o.rcv_nxt);
        if r.family == 2 {
            let l: [u8; 4] = read(tp, o.rcv_saddr);
            let d: [u8; 4] = read(tp, o.daddr);
            r.laddr[..4].copy_from_slice(&l);
            r.raddr[..4].copy_from_slice(&d);
        } else {
            r.laddr = read(tp, o.v6_rcv_saddr);
            r.raddr = read(tp, o.v6_daddr);
        }
        let seq = (*meta).seq;
        bpf_seq_write(
            seq.cast(),
            (&r as *const TcpSocketRecord).cast(),
            core::mem::size_of::<TcpSocketRecord>() as u32,
        );
    }
    0
}
