//! The probe: sequenced UDP datagrams from the client at 10 kHz or faster to
//! an echo responder bound to the instance address on the gateway. It reports
//! lost datagrams and the longest gap between echoes: the outage a client
//! feels, at sub-millisecond resolution. Both ends are threads that enter
//! their namespace with setns(2) (per thread for network namespaces).
use crate::Netns;
use anyhow::{Context as _, Result, bail};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const PORT: u16 = 7777;

/// CLOCK_MONOTONIC in µs: the clock of `Instant`, of ftrace's "mono" clock
/// and of baton's move trace, so a probe's gap lines up with both.
pub fn monotonic_us() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Makes the calling thread a real-time one with a tight timer: the probe
/// measures the network, not how long a busy 2-core machine leaves it waiting.
fn realtime() {
    // SAFETY: plain prctl/sched_setscheduler on the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64);
        let param = libc::sched_param { sched_priority: 50 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param);
    }
}

/// Binds the calling thread to one CPU (the bench keeps the client's
/// threads off the gateway's CPU: on real machines they are separate).
pub fn pin_to(cpu: usize) -> Result<()> {
    set_affinity(std::iter::once(cpu)).with_context(|| format!("pinning to CPU {cpu}"))
}

/// Lets the calling thread run on every CPU again.
pub fn unpin() -> Result<()> {
    set_affinity(0..libc::CPU_SETSIZE as usize).context("unpinning")
}

fn set_affinity(cpus: impl Iterator<Item = usize>) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus.filter(|c| *c < libc::CPU_SETSIZE as usize) {
        // SAFETY: cpu < CPU_SETSIZE, inside the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread into `ns`.
pub(crate) fn enter(ns_path: &str) -> Result<()> {
    let f = std::fs::File::open(ns_path).with_context(|| format!("opening {ns_path}"))?;
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

/// The echo responder in the gateway. It binds the instance address before
/// the address exists (IP_FREEBIND), so it can start before baton places it.
pub struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Echo {
    pub fn start(ns: &Netns, addr: std::net::IpAddr) -> Result<Echo> {
        Self::start_on(ns, addr, None)
    }

    /// As [`Echo::start`], the responder bound to `cpu` when given.
    pub fn start_on(ns: &Netns, addr: std::net::IpAddr, cpu: Option<usize>) -> Result<Echo> {
        let stop = Arc::new(AtomicBool::new(false));
        let (path, flag) = (ns.path(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<u64> {
            let bound = (|| -> Result<UdpSocket> {
                enter(&path)?;
                realtime();
                if let Some(c) = cpu {
                    pin_to(c)?;
                }
                let sock = freebind_udp(SocketAddr::new(addr, PORT))?;
                sock.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(sock)
            })();
            let sock = match bound {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            let mut buf = [0u8; 64];
            let mut echoed = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf)
                    && sock.send_to(&buf[..n], from).is_ok()
                {
                    echoed += 1;
                }
            }
            Ok(echoed)
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Echo {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => bail!("echo responder: {e}"),
            Err(_) => bail!("echo responder thread died"),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn freebind_udp(addr: SocketAddr) -> Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); ownership moves into the UdpSocket below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: fd is a fresh socket we own.
    let sock = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: valid fd, option pointer and length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_IP,
            libc::IP_FREEBIND,
            (&one as *const libc::c_int).cast(),
            4,
        );
    }
    let raw: socket2_addr::Raw = socket2_addr::from(addr);
    // SAFETY: raw holds a sockaddr of length raw.len.
    if unsafe { libc::bind(fd, raw.as_ptr(), raw.len) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("binding {addr}"));
    }
    Ok(sock)
}

/// A sockaddr for bind(2), without another dependency.
mod socket2_addr {
    pub struct Raw {
        storage: libc::sockaddr_storage,
        pub len: libc::socklen_t,
    }
    impl Raw {
        pub fn as_ptr(&self) -> *const libc::sockaddr {
            (&self.storage as *const libc::sockaddr_storage).cast()
        }
    }
    pub fn from(addr: std::net::SocketAddr) -> Raw {
        // SAFETY: sockaddr_storage is plain data; zeroed is valid.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            std::net::SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
                let sin = unsafe {
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as u16;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            std::net::SocketAddr::V6(a) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe {
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as u16;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        Raw {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

/// What one probe run saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProbeReport {
    pub rate_hz: u32,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// Longest time between two consecutive echoes, in ms.
    pub longest_gap_ms: f64,
    /// When that gap began, ms after the probe started.
    pub longest_gap_at_ms: f64,
    /// CLOCK_MONOTONIC µs of the probe's start ([`monotonic_us`]).
    pub start_mono_us: u64,
    /// Every echo's arrival, ms after the start, in order.
    #[serde(skip)]
    pub echoes_ms: Vec<f64>,
    /// Echoes per 10 ms bucket, from the start.
    pub per_10ms: Vec<u32>,
}

impl ProbeReport {
    /// The gap between two echoes that `at_ms` falls in (ms after the
    /// start): (gap start, gap length), ms; none if an echo came then.
    pub fn gap_spanning(&self, at_ms: f64) -> Option<(f64, f64)> {
        self.echoes_ms
            .windows(2)
            .find(|w| w[0] <= at_ms && at_ms < w[1])
            .map(|w| (w[0], w[1] - w[0]))
    }

    /// The longest gap between two echoes that ends after `from_ms` and
    /// begins before `until_ms` (ms after the start): the outage of an
    /// event in that window, not a stall elsewhere in the run.
    /// Returns (gap start, gap length), ms.
    pub fn gap_in(&self, from_ms: f64, until_ms: f64) -> Option<(f64, f64)> {
        self.echoes_ms
            .windows(2)
            .filter(|w| w[1] > from_ms && w[0] < until_ms)
            .map(|w| (w[0], w[1] - w[0]))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Runs the probe from the client for `duration`, `rate_hz` datagrams a second.
pub fn run(
    client: &Netns,
    target: std::net::IpAddr,
    rate_hz: u32,
    duration: Duration,
) -> Result<std::thread::JoinHandle<Result<ProbeReport>>> {
    run_on(client, target, rate_hz, duration, None)
}

/// As [`run`], both of the client's threads bound to `cpu` when given.
pub fn run_on(
    client: &Netns,
    target: std::net::IpAddr,
    rate_hz: u32,
    duration: Duration,
    cpu: Option<usize>,
) -> Result<std::thread::JoinHandle<Result<ProbeReport>>> {
    let path = client.path();
    Ok(std::thread::spawn(move || -> Result<ProbeReport> {
        enter(&path)?;
        realtime();
        if let Some(c) = cpu {
            pin_to(c)?;
        }
        let sock = UdpSocket::bind(if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })?;
        sock.connect(SocketAddr::new(target, PORT))?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let receiver = sock.try_clone()?;
        let start = Instant::now();
        let start_mono_us = monotonic_us();
        let total = (u64::from(rate_hz) * duration.as_millis() as u64) / 1000;
        let recv = std::thread::spawn(move || -> Vec<(u64, f64)> {
            realtime();
            let mut got = Vec::with_capacity(total as usize);
            let mut buf = [0u8; 16];
            let end = duration + Duration::from_millis(500);
            while start.elapsed() < end {
                if let Ok(8) = receiver.recv(&mut buf) {
                    let seq = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default());
                    got.push((seq, start.elapsed().as_secs_f64() * 1000.0));
                }
            }
            got
        });
        let period = Duration::from_secs_f64(1.0 / f64::from(rate_hz));
        let mut sent = 0u64;
        while sent < total {
            let due = start + period * sent as u32;
            let now = Instant::now();
            if due > now {
                // With 1 µs timer slack, sleeping paces to a few µs without burning a core.
                std::thread::sleep(due - now);
            }
            // A send error (no route during a move) is just a lost datagram.
            let _ = sock.send(&sent.to_be_bytes());
            sent += 1;
        }
        let got = recv
            .join()
            .map_err(|_| anyhow::anyhow!("probe receiver panicked"))?;
        Ok(ProbeReport {
            start_mono_us,
            ..summarise(rate_hz, sent, &got, duration)
        })
    }))
}

fn summarise(rate_hz: u32, sent: u64, got: &[(u64, f64)], duration: Duration) -> ProbeReport {
    let mut seen = std::collections::HashSet::with_capacity(got.len());
    let mut times: Vec<f64> = Vec::with_capacity(got.len());
    for (seq, t) in got {
        if *seq < sent && seen.insert(*seq) {
            times.push(*t);
        }
    }
    times.sort_by(f64::total_cmp);
    let (mut gap, mut gap_at) = (0.0, 0.0);
    for w in times.windows(2) {
        if w[1] - w[0] > gap {
            gap = w[1] - w[0];
            gap_at = w[0];
        }
    }
    let buckets = duration.as_millis() as usize / 10 + 50;
    let mut per_10ms = vec![0u32; buckets];
    for t in &times {
        if let Some(b) = per_10ms.get_mut((*t / 10.0) as usize) {
            *b += 1;
        }
    }
    let received = times.len() as u64;
    ProbeReport {
        rate_hz,
        sent,
        received,
        lost: sent - received,
        longest_gap_ms: gap,
        longest_gap_at_ms: gap_at,
        start_mono_us: 0,
        echoes_ms: times,
        per_10ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_losses_duplicates_and_the_longest_gap() {
        let got = vec![(0, 0.1), (1, 0.2), (1, 0.25), (3, 5.2), (4, 5.3), (99, 6.0)];
        let r = summarise(10_000, 5, &got, Duration::from_millis(10));
        assert_eq!((r.sent, r.received, r.lost), (5, 4, 1));
        assert!((r.longest_gap_ms - 5.0).abs() < 1e-9);
        assert!((r.longest_gap_at_ms - 0.2).abs() < 1e-9);
        assert_eq!(r.per_10ms[0], 4);
        // The gap of an event at 1 ms is the long one; one at 5.25 ms had a short one.
        assert_eq!(r.gap_in(1.0, 1.0).map(|g| g.0), Some(0.2));
        let (at, len) = r.gap_in(5.25, 5.25).expect("a gap");
        assert!((at - 5.2).abs() < 1e-9 && (len - 0.1).abs() < 1e-9);
        assert_eq!(r.gap_in(7.0, 8.0), None);
        // The gap a moment falls in, however long a later one is.
        let (at, len) = r.gap_spanning(5.22).expect("a gap");
        assert!((at - 5.2).abs() < 1e-9 && (len - 0.1).abs() < 1e-9);
        assert_eq!(r.gap_spanning(3.0).map(|g| g.0), Some(0.2));
        assert_eq!(r.gap_spanning(9.0), None);
    }
}
