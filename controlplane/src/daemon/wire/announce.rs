//! baton's frames on the wire ([`frames`] builds and reads them): the
//! announcements after a move, the probes before taking an address that is
//! not ours yet (RFC 5227 ARP probe, DAD-style NS), and the watch for other
//! hosts claiming an address baton holds. AF_PACKET sockets bound to a port:
//! no process is spawned on the move path.
use super::frames::{self, ETH_P_ARP, ETH_P_IPV6, Sighting};
use anyhow::{Context as _, Result, bail};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// An AF_PACKET socket bound to one port.
pub struct PortSocket {
    fd: OwnedFd,
}

impl PortSocket {
    pub fn open(ifindex: u32, protocol: u16) -> Result<Self> {
        // SAFETY: plain socket(2); ownership moves into OwnedFd.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error())
                .context("opening an AF_PACKET socket (CAP_NET_RAW needed)");
        }
        // SAFETY: raw is a fresh, valid fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: valid fd and sockaddr_ll of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("binding an AF_PACKET socket to ifindex {ifindex}"));
        }
        Ok(PortSocket { fd })
    }

    pub fn for_sending(ifindex: u32) -> Result<Self> {
        // Protocol 0: bound for sending only, receives nothing.
        Self::open(ifindex, 0)
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a frame");
        }
        Ok(())
    }

    /// Receives one frame (the socket is ready); its length and where from.
    fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, libc::sockaddr_ll)> {
        // SAFETY: sockaddr_ll is plain data.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: valid fd, buffer and address storage of the sizes given.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("recvfrom");
        }
        Ok((n as usize, from))
    }

    /// A classic BPF filter that keeps only ICMPv6 NS and NA in a plain
    /// IPv6 header: the watch never copies data traffic.
    fn only_neighbour_discovery(&self) -> Result<()> {
        let f = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        let prog = [
            f(0x28, 0, 0, 12),     // ldh [12]         ethertype
            f(0x15, 0, 6, 0x86dd), // jeq IPv6 ? : drop
            f(0x30, 0, 0, 20),     // ldb [20]         next header
            f(0x15, 0, 4, 58),     // jeq ICMPv6 ? : drop
            f(0x30, 0, 0, 54),     // ldb [54]         ICMPv6 type
            f(0x15, 1, 0, 135),    // jeq NS ? keep :
            f(0x15, 0, 1, 136),    // jeq NA ? keep : drop
            f(0x06, 0, 0, 0xffff), // keep
            f(0x06, 0, 0, 0),      // drop
        ];
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        crate::daemon::sockopt::set(self.fd.as_raw_fd(), libc::SO_ATTACH_FILTER, &fprog)
            .context("SO_ATTACH_FILTER")
    }
}

/// Probes many addresses at once on one port: one probe each, one
/// listening window. Returns the addresses another device claims (with its
/// MAC): it answers for one, or probes for it too (RFC 5227 2.1.1).
pub fn probe_many(
    ifindex: u32,
    own_macs: &[[u8; 6]],
    addrs: &[(IpAddr, Option<u16>)],
    wait: Duration,
) -> Result<Vec<(IpAddr, [u8; 6])>> {
    let mac = *own_macs.first().context("no MAC to probe from")?;
    let mut socks = Vec::new();
    for (v6, proto) in [(false, ETH_P_ARP), (true, ETH_P_IPV6)] {
        if addrs.iter().any(|(a, _)| a.is_ipv6() == v6) {
            socks.push(PortSocket::open(ifindex, proto)?);
        }
    }
    // Open before sending: an answer cannot arrive before we listen.
    for (a, vlan) in addrs {
        // Any packet socket on the port sends any frame.
        let sock = socks.first().context("no socket")?;
        sock.send(&frames::probe(mac, *a, *vlan))?;
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1600];
    let mut found = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(n) = recv_any(&socks, &mut buf, left)? else {
            break;
        };
        if let Some(c) = frames::sighting(&buf[..n])
            && !own_macs.contains(&c.mac)
            && addrs.iter().any(|(a, _)| *a == c.addr)
            && !found.iter().any(|(x, _)| *x == c.addr)
        {
            found.push((c.addr, c.mac));
        }
    }
    Ok(found)
}

/// Waits for a frame on any of `socks`; its length, None on timeout.
fn recv_any(socks: &[PortSocket], buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: pfds is a valid array of pollfd of the length given.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("poll");
    }
    for (i, p) in pfds.iter().enumerate() {
        if p.revents & libc::POLLIN != 0 {
            let (n, _) = socks[i].recv_from(buf)?;
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// Sends `count` rounds of announcements, `interval` apart, from `ifindex`.
pub async fn announce(
    ifindex: u32,
    mac: [u8; 6],
    addr: IpAddr,
    vlan: Option<u16>,
    count: u32,
    interval: Duration,
) -> Result<()> {
    if count == 0 {
        bail!("announce_count is 0");
    }
    let sock = PortSocket::for_sending(ifindex)?;
    let frames = frames::announcements(mac, addr, vlan);
    for round in 0..count {
        for f in &frames {
            sock.send(f)?;
        }
        if round + 1 < count {
            tokio::time::sleep(interval).await;
        }
    }
    Ok(())
}

/// A claim seen on a device (its ifindex).
pub type Seen = (u32, Sighting);

/// Watches every device of the namespace for ARP and ND claims (frames
/// baton itself sent are skipped) and hands them to the loop. A flood
/// cannot grow the daemon: the channel is bounded and excess is dropped.
pub fn watch(tx: tokio::sync::mpsc::Sender<Seen>) -> Result<()> {
    let arp = PortSocket::open(0, ETH_P_ARP)?;
    let nd = PortSocket::open(0, ETH_P_IPV6)?;
    nd.only_neighbour_discovery()?;
    std::thread::Builder::new()
        .name("baton-watch".into())
        .spawn(move || {
            // Threads inherit SCHED_FIFO; a flood of ARP must not starve others.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sched_setscheduler on the calling thread.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
            let socks = [arp, nd];
            let mut buf = [0u8; 1600];
            loop {
                if tx.is_closed() {
                    return;
                }
                let mut pfds = socks.each_ref().map(|s| libc::pollfd {
                    fd: s.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                // SAFETY: two valid pollfds.
                if unsafe { libc::poll(pfds.as_mut_ptr(), 2, 1000) } < 0 {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                for (i, p) in pfds.iter().enumerate() {
                    if p.revents & libc::POLLIN == 0 {
                        continue;
                    }
                    let Ok((n, from)) = socks[i].recv_from(&mut buf) else {
                        continue;
                    };
                    if from.sll_pkttype == libc::PACKET_OUTGOING {
                        continue;
                    }
                    if let Some(c) = frames::sighting(&buf[..n]) {
                        let _ = tx.try_send((from.sll_ifindex as u32, c));
                    }
                }
            }
        })
        .context("starting the address watch")?;
    Ok(())
}
