//! How the daemon's process runs: the loop at real-time priority, and its
//! memory locked, so neither a busy host nor one short of memory can make a
//! failover wait (for a CPU, or for a page read back from disk).
use anyhow::{Context, Result, bail};

/// SCHED_FIFO for the daemon's main thread.
/// The configured priority, or a clear error: a daemon that was asked to
/// run real-time and cannot would fail over late on a busy host.
pub fn set_realtime(priority: u32) -> Result<()> {
    if priority == 0 {
        return Ok(());
    }
    let param = libc::sched_param {
        sched_priority: priority as i32,
    };
    // SAFETY: plain sched_setscheduler on the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "could not run at SCHED_FIFO priority {priority} ({e}; CAP_SYS_NICE is needed); \
             [daemon] realtime_priority = 0 runs without; nothing was applied"
        );
    }
    Ok(())
}

/// mlockall, now and for every later mapping, on fault (only the pages the
/// daemon touches are resident, as before). Without the lock a host under
/// memory pressure drops the binary's pages (no swap needed for that) and
/// the first failover in a while waits for the disk.
///
/// Without CAP_IPC_LOCK the lock counts against RLIMIT_MEMLOCK (8 MiB by
/// systemd's default): a later allocation past it would fail and abort
/// the daemon mid-run, so that case is refused at start.
pub fn lock_memory(enabled: bool) -> Result<()> {
    if !enabled {
        return Ok(());
    }
    if !has_ipc_lock()? && !memlock_unlimited() {
        bail!(
            "could not lock the daemon's memory (CAP_IPC_LOCK is needed, or an unlimited \
             RLIMIT_MEMLOCK); [daemon] lock_memory = false runs without; nothing was applied"
        );
    }
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "could not lock the daemon's memory (mlockall: {e}); \
             [daemon] lock_memory = false runs without; nothing was applied"
        );
    }
    Ok(())
}

/// The capability's number (linux/capability.h; libc does not name it).
const CAP_IPC_LOCK: u32 = 14;

/// CAP_IPC_LOCK in this process's effective set.
fn has_ipc_lock() -> Result<bool> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    Ok(cap_eff(&status).is_some_and(|eff| eff & (1 << CAP_IPC_LOCK) != 0))
}

/// The CapEff mask of a /proc/PID/status text.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn memlock_unlimited() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0 && lim.rlim_cur == libc::RLIM_INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_from_status() {
        let status = "Name:\tbaton\nCapInh:\t0000000000000000\nCapEff:\t0000000000004000\n";
        assert_eq!(cap_eff(status), Some(1 << CAP_IPC_LOCK));
        assert_eq!(cap_eff("Name:\tbaton\n"), None);
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
    }
}
