//! systemd's notify protocol (sd_notify(3)), without libsystemd: one
//! datagram per message to $NOTIFY_SOCKET. READY=1 after the first
//! reconcile, WATCHDOG=1 from the main loop at half of $WATCHDOG_USEC (so a
//! hung loop stops feeding it and systemd restarts the daemon; the pinned
//! dataplane keeps forwarding meanwhile), RELOADING=1 / STOPPING=1, STATUS=.
//! Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;
use tracing::warn;

pub struct Notifier {
    to: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let to = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = match path.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    SocketAddr::from_abstract_name(name.as_bytes())
                }
                None => SocketAddr::from_pathname(&path),
            };
            match (UnixDatagram::unbound(), addr) {
                (Ok(sock), Ok(addr)) => Some((sock, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    warn!(%path, error = %e, "NOTIFY_SOCKET unusable");
                    None
                }
            }
        });
        // WATCHDOG_PID, when set, names the process meant (ours, or not us).
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u) / 2);
        Notifier { to, watchdog }
    }

    /// How often the main loop must feed the watchdog (half its timeout).
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.to.is_some())
    }

    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.to
            && let Err(e) = sock.send_to_addr(msg.as_bytes(), addr)
        {
            warn!(error = %e, "sd_notify");
        }
    }
}
