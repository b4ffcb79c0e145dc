//! Raw IP sockets (CAP_NET_RAW) for what the daemon sends to TCP peers
//! itself: the backoff revert's ICMPs and a takeover's tickle ACKs. The
//! kernel writes the IP header and routes; the caller writes the rest.
use anyhow::{Context as _, Result};
use std::net::IpAddr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

pub struct RawSocket {
    fd: OwnedFd,
    v6: bool,
}

impl RawSocket {
    /// A raw socket of `protocol` (libc::IPPROTO_*) for IPv6 or IPv4.
    pub fn open(v6: bool, protocol: i32) -> Result<RawSocket> {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2); ownership moves into OwnedFd.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("raw socket (protocol {protocol})"));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Send only: a raw TCP socket would get a copy of every TCP packet
        // the host receives; a classic BPF filter "return 0" takes none.
        let mut drop_all = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let prog = libc::sock_fprog {
            len: 1,
            filter: drop_all.as_mut_ptr(),
        };
        crate::daemon::sockopt::set(fd.as_raw_fd(), libc::SO_ATTACH_FILTER, &prog)
            .context("SO_ATTACH_FILTER on a raw socket")?;
        Ok(RawSocket { fd, v6 })
    }

    /// Sends from `source` (a local address), not the route's choice.
    pub fn bind(&self, source: IpAddr) -> Result<()> {
        let rc = with_sockaddr(source, |sa, len| {
            // SAFETY: valid fd and a sockaddr of the size given.
            unsafe { libc::bind(self.fd.as_raw_fd(), sa, len) }
        });
        if rc < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("bind to {source}"));
        }
        Ok(())
    }

    /// One datagram to `to` (ignored if the family is not the socket's).
    pub fn send(&self, msg: &[u8], to: IpAddr) -> Result<()> {
        if to.is_ipv6() != self.v6 {
            return Ok(());
        }
        let rc = with_sockaddr(to, |sa, len| {
            // SAFETY: valid fd, buffer and a sockaddr of the size given.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    sa,
                    len,
                )
            }
        });
        if rc < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending to {to}"));
        }
        Ok(())
    }
}

fn with_sockaddr<T>(addr: IpAddr, f: impl FnOnce(*const libc::sockaddr, u32) -> T) -> T {
    match addr {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            f(
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_addr.s6_addr = a.octets();
            f(
                (&sin6 as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            )
        }
    }
}

/// RFC 1071.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
