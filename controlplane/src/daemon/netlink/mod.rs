//! The kernel's network state through rtnetlink: the [`monitor`] of links,
//! addresses and routes, the [`dump`]s of them (both read by [`decode`]),
//! the state one reconcile compares ([`observed`]), and a move's writes
//! ([`requests`]) in one datagram ([`batch`]).
pub mod batch;
pub mod decode;
pub mod dump;
pub mod monitor;
pub mod observed;
pub mod requests;

/// Runs `f` on a thread of its own in a fresh network namespace: a test
/// touches no interface of the host's.
#[cfg(test)]
pub fn in_fresh_netns<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) moves only this thread to a new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the test thread panicked"))?
}
