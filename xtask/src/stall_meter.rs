//! The machine's own stalls, measured while the bench runs (cyclictest's
//! method): one thread per CPU, bound to it at SCHED_FIFO 99, wakes every
//! millisecond on an absolute CLOCK_MONOTONIC timer and records each wake-up
//! later than `LATE_US`. Nothing on the machine outranks it, so a late wake
//! is time the CPU was not the kernel's to give: the hypervisor ran something
//! else, or the kernel sat in a section it does not preempt.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Wake-ups later than this are recorded.
pub const LATE_US: u64 = 200;
const PERIOD: Duration = Duration::from_millis(1);

/// One late wake-up: the CPU was unavailable over [from_us, from_us + late_us].
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Stall {
    pub cpu: usize,
    /// CLOCK_MONOTONIC µs the thread was due.
    pub from_us: u64,
    pub late_us: u64,
}

/// The CPUs the bench watches: this project's VM has two.
pub const CPUS: usize = 2;

/// What `stalls`, watched over `watched_s` seconds, say: how many, how
/// often per CPU, how late (ms).
pub fn summary(stalls: &[Stall], watched_s: f64) -> serde_json::Value {
    let late_ms: Vec<f64> = stalls.iter().map(|s| s.late_us as f64 / 1000.0).collect();
    serde_json::json!({
        "late_over_us": LATE_US,
        "watched_s": watched_s,
        "count": stalls.len(),
        "per_s_per_cpu": stalls.len() as f64 / watched_s / CPUS as f64,
        "late_ms": crate::stats::distribution(&late_ms),
    })
}

pub struct StallMeter {
    stop: Arc<AtomicBool>,
    stalls: Arc<Mutex<Vec<Stall>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started_us: u64,
}

impl StallMeter {
    pub fn start(cpus: usize) -> StallMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let stalls = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..cpus)
            .map(|cpu| {
                let (stop, stalls) = (stop.clone(), stalls.clone());
                std::thread::spawn(move || watch(cpu, &stop, &stalls))
            })
            .collect();
        StallMeter {
            stop,
            stalls,
            threads,
            started_us: baton_lab::probe::monotonic_us(),
        }
    }

    /// The stalls that overlap [from_us, to_us].
    pub fn within(&self, from_us: f64, to_us: f64) -> Vec<Stall> {
        self.stalls
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|s| {
                        (s.from_us as f64) < to_us && (s.from_us + s.late_us) as f64 > from_us
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the threads; returns every stall and the seconds watched.
    pub fn stop(mut self) -> (Vec<Stall>, f64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let secs = (baton_lab::probe::monotonic_us() - self.started_us) as f64 / 1e6;
        let stalls = self.stalls.lock().map(|s| s.clone()).unwrap_or_default();
        (stalls, secs)
    }
}

impl Drop for StallMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn watch(cpu: usize, stop: &AtomicBool, stalls: &Mutex<Vec<Stall>>) {
    if baton_lab::probe::pin_to(cpu).is_err() {
        return;
    }
    let param = libc::sched_param { sched_priority: 99 };
    // SAFETY: sched_setscheduler on the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    let mut due = baton_lab::probe::monotonic_us();
    while !stop.load(Ordering::Relaxed) {
        due += PERIOD.as_micros() as u64;
        let ts = libc::timespec {
            tv_sec: (due / 1_000_000) as libc::time_t,
            tv_nsec: ((due % 1_000_000) * 1000) as libc::c_long,
        };
        // SAFETY: an absolute sleep on CLOCK_MONOTONIC with a valid timespec.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        let now = baton_lab::probe::monotonic_us();
        let late = now.saturating_sub(due);
        if late > LATE_US {
            if let Ok(mut s) = stalls.lock() {
                s.push(Stall {
                    cpu,
                    from_us: due,
                    late_us: late,
                });
            }
            // The next period starts now, not in the past.
            due = now;
        }
    }
}

/// How much slower this machine runs memory-bound code that has not run
/// for a while (caches, TLB and the hypervisor's page tables gone cold):
/// a pointer chase through 4 MiB in random order, timed once cold and at
/// once again warm. Run in a process of its own ([`ColdProcess`]) that
/// sleeps between pulls as long as the daemon does.
pub struct ColdMeter {
    next: Vec<u32>,
}

impl ColdMeter {
    pub fn new() -> ColdMeter {
        const LEN: usize = 1 << 20; // 4 MiB of u32
        // One cycle through every element, in a scrambled order (an LCG
        // permutation: no dependency for a random number crate).
        let mut order: Vec<u32> = (0..LEN as u32).collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in (1..LEN).rev() {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        let mut next = vec![0u32; LEN];
        for w in order.windows(2) {
            next[w[0] as usize] = w[1];
        }
        next[order[LEN - 1] as usize] = order[0];
        ColdMeter { next }
    }

    /// (cold µs, warm µs) of 16,384 dependent loads.
    pub fn measure(&self) -> (f64, f64) {
        let chase = || {
            let t = std::time::Instant::now();
            let mut i = 0u32;
            for _ in 0..16_384 {
                i = self.next[i as usize];
            }
            std::hint::black_box(i);
            t.elapsed().as_secs_f64() * 1e6
        };
        let cold = chase();
        (cold, chase())
    }
}

/// A cold meter in a process of its own (`xtask cold-meter`), idle between
/// the pulls of its side like that side's daemon: a process that slept is
/// what the machine makes slow, not a thread of the busy bench.
pub struct ColdProcess {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl ColdProcess {
    pub fn spawn() -> anyhow::Result<ColdProcess> {
        use anyhow::Context as _;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("cold-meter")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the cold meter")?;
        let input = child.stdin.take().context("cold meter stdin")?;
        let output = std::io::BufReader::new(child.stdout.take().context("cold meter stdout")?);
        Ok(ColdProcess {
            child,
            input,
            output,
        })
    }

    /// (cold µs, warm µs) measured in the meter's process now.
    pub fn measure(&mut self) -> anyhow::Result<(f64, f64)> {
        use std::io::{BufRead as _, Write as _};
        self.input.write_all(b"\n")?;
        self.input.flush()?;
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        let mut v = line.split_whitespace().map(str::parse::<f64>);
        match (v.next(), v.next()) {
            (Some(Ok(c)), Some(Ok(w))) => Ok((c, w)),
            _ => anyhow::bail!("cold meter said {line:?}"),
        }
    }
}

impl Drop for ColdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `xtask cold-meter`: one measurement per line read, until stdin closes.
pub fn serve() -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let meter = ColdMeter::new();
    let _ = meter.measure(); // the first touch of fresh memory is not "cold"
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        line?;
        let (c, w) = meter.measure();
        writeln!(out, "{c} {w}")?;
        out.flush()?;
    }
    Ok(())
}
