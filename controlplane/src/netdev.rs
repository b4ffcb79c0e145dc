//! Small, synchronous look-ups of network devices in the current network
//! namespace. (sysfs is not used: under `nsenter --net` it still shows the
//! namespace that mounted it.)
use anyhow::{Context as _, Result, bail};
use std::ffi::CString;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netdev {
    pub name: String,
    pub ifindex: u32,
}

/// Resolves a port name, refusing what can never be a data port.
pub fn data_port(name: &str) -> Result<Netdev> {
    let c_name =
        CString::new(name).with_context(|| format!("port name {name:?} contains a NUL byte"))?;
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("port name {name:?} is not a valid interface name (1 to 15 bytes)");
    }
    // SAFETY: c_name is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if ifindex == 0 {
        bail!("no port named {name:?} in this network namespace (see `ip link`)");
    }
    if flags(name)? & libc::IFF_LOOPBACK as u32 != 0 {
        bail!("{name} is a loopback device, not a data port; baton refuses to attach to it");
    }
    Ok(Netdev {
        name: name.to_string(),
        ifindex,
    })
}

/// ifindex of a device by name, if it exists in this namespace.
pub fn index_of(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return None;
    }
    let req = ifreq(name, libc::SIOCGIFINDEX).ok()?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    let ifindex = unsafe { req.ifr_ifru.ifru_ifindex };
    u32::try_from(ifindex).ok().filter(|i| *i != 0)
}

/// Name of an ifindex in this namespace, if it still exists.
pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated string into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Hardware address of a device (SIOCGIFHWADDR).
pub fn mac_of(name: &str) -> Result<[u8; 6]> {
    let req = ifreq(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// IFF_* flags of a device (SIOCGIFFLAGS).
fn flags(name: &str) -> Result<u32> {
    let req = ifreq(name, libc::SIOCGIFFLAGS)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_flags } as u16 as u32)
}

thread_local! {
    /// The socket SIOCGIF* ioctls go through, one per thread, opened once:
    /// a socket(2) + close(2) per look-up cost ~10 µs on a move's path.
    /// (baton's threads never change network namespace.)
    static IOCTL_SOCKET: std::cell::OnceCell<std::os::fd::OwnedFd> = const { std::cell::OnceCell::new() };
}

fn ioctl_socket() -> Result<std::os::fd::RawFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    IOCTL_SOCKET.with(|cell| {
        if let Some(fd) = cell.get() {
            return Ok(fd.as_raw_fd());
        }
        // SAFETY: plain socket(2); ownership moves into the OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket for SIOCGIF* ioctls");
        }
        // SAFETY: fd is a fresh socket nobody else owns.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        Ok(cell.get_or_init(|| owned).as_raw_fd())
    })
}

/// One SIOCGIF* ioctl.
fn ifreq(name: &str, request: libc::c_ulong) -> Result<libc::ifreq> {
    let fd = ioctl_socket()?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: fd is a socket, req a properly sized ifreq.
    if unsafe { libc::ioctl(fd, request, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("ioctl {request:#x} on {name}"));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_ups_find_loopback_and_refuse_bad_names() {
        // Loopback is ifindex 1 in every network namespace; nothing is changed.
        for _ in 0..3 {
            assert_eq!(index_of("lo"), Some(1));
        }
        assert_eq!(mac_of("lo").ok(), Some([0; 6]));
        assert_eq!(index_of(""), None);
        assert_eq!(index_of("a-name-too-long-for-linux"), None);
        assert_eq!(index_of("no\0pe"), None);
        assert_eq!(index_of("btnosuchdev0"), None);
        assert!(mac_of("btnosuchdev0").is_err());
    }
}
