//! setsockopt(SOL_SOCKET, ...) with a value of any plain type: the one
//! place the daemon's sockets (announcements, raw IP, netlink) set options.
use std::os::fd::RawFd;

/// Sets socket option `name` (SOL_SOCKET) on `fd` to `value`, passed to
/// the kernel as its bytes (a pointer inside it, as in a `sock_fprog`,
/// must stay valid for the call: the borrow sees to that).
pub fn set<T>(fd: RawFd, name: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: the kernel reads size_of::<T>() bytes at a live reference.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
