//! The host's TCP sockets, read exactly through the `iter/tcp` program:
//! state, snd_una, rcv_nxt, icsk_backoff and retransmits (tcp_info and
//! sock_diag have no sequence numbers). Loaded once; each [`read`] runs
//! the iterator anew.
//!
//! [`read`]: TcpSockets::read
use super::{PinDir, kernel_btf, load};
use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya::maps::Array;
use aya::programs::Iter;
use baton_common::{TcpOffsets, TcpSocketRecord, names};
use std::io::Read as _;
use std::net::IpAddr;

pub struct TcpSockets {
    ebpf: Ebpf,
}

/// One socket, in the daemon's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub state: u8,
    pub snd_una: u32,
    pub rcv_nxt: u32,
    pub backoff: u8,
    pub retransmits: u8,
}

/// include/net/tcp_states.h
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_CLOSE_WAIT: u8 = 8;

fn offsets() -> Result<TcpOffsets> {
    let btf = kernel_btf::Btf::from_sys_fs()?;
    let sk = |f: &str| btf.offset("sock_common", f);
    let tp = |f: &str| btf.offset("tcp_sock", f);
    // sock_common opens struct sock, which opens inet_sock ... tcp_sock.
    let common = tp("inet_conn.icsk_inet.sk.__sk_common")?;
    Ok(TcpOffsets {
        state: common + sk("skc_state")?,
        family: common + sk("skc_family")?,
        num: common + sk("skc_num")?,
        dport: common + sk("skc_dport")?,
        daddr: common + sk("skc_daddr")?,
        rcv_saddr: common + sk("skc_rcv_saddr")?,
        v6_daddr: common + sk("skc_v6_daddr")?,
        v6_rcv_saddr: common + sk("skc_v6_rcv_saddr")?,
        snd_una: tp("snd_una")?,
        rcv_nxt: tp("rcv_nxt")?,
        backoff: tp("inet_conn.icsk_backoff")?,
        retransmits: tp("inet_conn.icsk_retransmits")?,
    })
}

impl TcpSockets {
    pub fn load(pins: &PinDir) -> Result<TcpSockets> {
        let mut ebpf = load(pins)?;
        let btf = aya::Btf::from_sys_fs().context("the kernel's BTF")?;
        let prog: &mut Iter = ebpf
            .program_mut(names::TCP_ITER_PROGRAM)
            .context("the socket iterator is missing from the BPF object")?
            .try_into()?;
        prog.load("tcp", &btf)
            .context("loading the iter/tcp program (CAP_BPF and CAP_PERFMON)")?;
        let mut map: Array<_, TcpOffsets> = Array::try_from(
            ebpf.map_mut(names::TCP_OFFSETS_MAP)
                .context("the socket iterator's offsets map")?,
        )?;
        map.set(0, offsets()?, 0)?;
        Ok(TcpSockets { ebpf })
    }

    /// Every TCP socket of this namespace but listeners, now.
    pub fn read(&mut self) -> Result<Vec<TcpSocket>> {
        let prog: &mut Iter = self
            .ebpf
            .program_mut(names::TCP_ITER_PROGRAM)
            .context("iterator")?
            .try_into()?;
        let link = prog.attach()?;
        let link = prog.take_link(link)?;
        let mut file = link.into_file()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .context("reading the socket iterator")?;
        let size = std::mem::size_of::<TcpSocketRecord>();
        Ok(bytes.chunks_exact(size).map(record).collect())
    }
}

fn record(chunk: &[u8]) -> TcpSocket {
    // SAFETY: the chunk holds one TcpSocketRecord as the program wrote it
    // (plain #[repr(C)] integers); read unaligned.
    let r: TcpSocketRecord = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
    let addr = |a: [u8; 16]| -> IpAddr {
        if r.family == libc::AF_INET as u16 {
            IpAddr::from([a[0], a[1], a[2], a[3]])
        } else {
            IpAddr::from(a)
        }
    };
    TcpSocket {
        local: addr(r.laddr),
        local_port: r.lport,
        remote: addr(r.raddr),
        remote_port: u16::from_be(r.rport_be),
        state: r.state,
        snd_una: r.snd_una,
        rcv_nxt: r.rcv_nxt,
        backoff: r.backoff,
        retransmits: r.retransmits,
    }
}
