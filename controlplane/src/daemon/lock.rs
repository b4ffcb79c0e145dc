//! One daemon per pin directory: an exclusive flock on the directory itself
//! (bpffs holds no regular files), taken before anything is touched and held
//! for the process's life; the kernel drops it when the process dies, however
//! it dies. A second daemon learns the holder's pid from /proc/locks.
use anyhow::{Context as _, Result, bail};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

pub struct PinDirLock {
    _fd: OwnedFd,
}

pub fn lock(dir: &Path) -> Result<PinDirLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let fd = OwnedFd::from(file);
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let holder = holder_of(dir)
                .map(|pid| format!("pid {pid}"))
                .unwrap_or_else(|| "another process".into());
            bail!(
                "another baton daemon ({holder}) already runs on pin dir {}; \
                 one daemon per pin dir",
                dir.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", dir.display()));
    }
    Ok(PinDirLock { _fd: fd })
}

/// The pid holding a flock on `dir`, from /proc/locks
/// ("1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF").
fn holder_of(dir: &Path) -> Option<u32> {
    let meta = std::fs::metadata(dir).ok()?;
    let ino = meta.ino().to_string();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let at = f.iter().position(|w| *w == "FLOCK")?;
        let pid = f.get(at + 3)?;
        let dev_ino = f.get(at + 4)?;
        (dev_ino.rsplit(':').next() == Some(ino.as_str()))
            .then(|| pid.parse().ok())
            .flatten()
    })
}
