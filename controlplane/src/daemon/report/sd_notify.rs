//! systemd's notify protocol (sd_notify(3)), without libsystemd: one
//! datagram per message to $NOTIFY_SOCKET. READY=1 after the first
//! reconcile, WATCHDOG=1 from the main loop at half of $WATCHDOG_USEC (so a
//! hung loop stops feeding it and systemd restarts the daemon; the pinned
//! dataplane keeps forwarding meanwhile), RELOADING=1 / STOPPING=1, STATUS=.
//! Outside systemd (no $NOTIFY_SOCKET) every call does nothing.
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};
use tracing::warn;

pub struct Notifier {
    to: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    /// The STATUS= line last sent.
    status: String,
}

/// What `systemctl status` shows on its Status: line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub placed: usize,
    pub instances: usize,
    /// Relocations since start.
    pub moves: u64,
    /// In a cluster: why this member is fenced, if it is.
    pub fenced: Option<crate::decide::FenceCause>,
    /// Instances whose reconcile keeps failing.
    pub failing: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "placed {} of {} instances", self.placed, self.instances)?;
        match self.moves {
            0 => {}
            1 => write!(f, "; 1 move")?,
            n => write!(f, "; {n} moves")?,
        }
        if let Some(cause) = self.fenced {
            write!(f, "; fenced ({cause})")?;
        }
        if self.failing > 0 {
            write!(f, "; {} failing (see baton status)", self.failing)?;
        }
        Ok(())
    }
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
        Notifier {
            to,
            watchdog,
            status: String::new(),
        }
    }

    /// How often the main loop must feed the watchdog (half its timeout).
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.to.is_some())
    }

    /// READY=1 with the first STATUS= line.
    pub fn ready(&mut self, summary: &Summary) {
        self.status = summary.to_string();
        self.send(&format!("READY=1\nSTATUS={}", self.status));
    }

    /// STATUS=, when the summary changed since the last one sent.
    pub fn status(&mut self, summary: &Summary) {
        let line = summary.to_string();
        if line != self.status {
            self.send(&format!("STATUS={line}"));
            self.status = line;
        }
    }

    /// WATCHDOG=1 when `next` is due: only the loop feeds it, so a loop
    /// that hangs (however its threads are doing) gets restarted by systemd.
    pub fn feed_watchdog(&self, next: &mut Option<Instant>) {
        let Some(every) = self.watchdog_every() else {
            return;
        };
        let now = Instant::now();
        if next.is_none_or(|t| t <= now) {
            self.send("WATCHDOG=1");
            *next = Some(now + every);
        }
    }

    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.to
            && let Err(e) = sock.send_to_addr(msg.as_bytes(), addr)
        {
            warn!(error = %e, "sd_notify");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_changed() {
        let mut s = Summary {
            placed: 0,
            instances: 1,
            moves: 0,
            fenced: None,
            failing: 0,
        };
        assert_eq!(s.to_string(), "placed 0 of 1 instances");
        s.placed = 1;
        s.moves = 2;
        s.fenced = Some(crate::decide::FenceCause::NoQuorum);
        s.failing = 1;
        assert_eq!(
            s.to_string(),
            "placed 1 of 1 instances; 2 moves; fenced (no quorum); 1 failing (see baton status)"
        );
    }
}
