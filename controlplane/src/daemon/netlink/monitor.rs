//! The kernel monitor: rtnetlink notifications for links, IPv4/IPv6
//! addresses and routes, subscribed before the initial dump so no change
//! between the two is missed. No polling. An overrun (ENOBUFS: the kernel
//! dropped notifications) is reported as [`Observation::Lost`]; so is the
//! end of the monitor (the channel closes), after which the daemon starts a
//! new one. Either way the daemon resyncs from a fresh dump.
use super::decode::{LinkEvent, Observation};
use anyhow::{Context as _, Result};
use rtnetlink::sys::{
    AsyncSocket as _, AsyncSocketExt as _, TokioSocket, protocols::NETLINK_ROUTE,
};
use std::os::fd::AsRawFd as _;
use tokio::sync::mpsc;
use tracing::warn;

/// Receive buffer for notifications: a burst of a few thousand link
/// changes fits (the default, ~200 KiB, overruns after a few hundred).
/// `BATON_NETLINK_RCVBUF` overrides it (the overrun test makes it small).
const RCVBUF: usize = 8 << 20;

/// rtnetlink multicast groups (RTNLGRP_*): links, IPv4/IPv6 addresses and routes.
const GROUPS: [u32; 5] = [1, 5, 9, 7, 11];

/// A notification datagram holds one message; a link's is ~1.5 KB (one
/// that fills this is taken as events lost).
const DATAGRAM: usize = 64 << 10;

/// Starts a monitor: returns every link now, and a channel of changes that
/// closes when the monitor ends. Notifications are read from a socket of
/// its own and decoded lazily ([`super::decode`]); the links are dumped
/// after the subscription, so nothing falls between.
pub async fn start() -> Result<(Vec<LinkEvent>, mpsc::UnboundedReceiver<Observation>)> {
    let mut socket =
        TokioSocket::new(NETLINK_ROUTE).context("opening the rtnetlink monitor socket")?;
    socket
        .socket_mut()
        .bind_auto()
        .context("binding the rtnetlink monitor socket")?;
    for group in GROUPS {
        socket
            .socket_ref()
            .add_membership(group)
            .with_context(|| format!("subscribing to rtnetlink group {group}"))?;
    }
    let size = std::env::var("BATON_NETLINK_RCVBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RCVBUF);
    set_rcvbuf(socket.as_raw_fd(), size);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(DATAGRAM);
        loop {
            buf.clear();
            match socket.recv(&mut buf).await {
                Ok(()) => {
                    for o in super::decode::observations_of_read(&buf, buf.capacity()) {
                        if tx.send(o).is_err() {
                            return;
                        }
                    }
                }
                // The kernel dropped notifications (the buffer overran).
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    if tx.send(Observation::Lost).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "rtnetlink monitor ended");
                    return;
                }
            }
        }
    });
    let links = super::dump::links().await?;
    Ok((links, rx))
}

/// SO_RCVBUFFORCE (root may exceed rmem_max), else SO_RCVBUF.
fn set_rcvbuf(fd: i32, size: usize) {
    let size = size.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        if crate::daemon::sockopt::set(fd, opt, &size).is_ok() {
            return;
        }
    }
    warn!(size, error = %std::io::Error::last_os_error(), "could not size the netlink receive buffer");
}
