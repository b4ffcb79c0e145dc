//! What the pulls bench's sides share: the lab's address and timing, the
//! scripted baseline, where the lab's threads run, the status poller, and
//! the records one pull or one still run leaves.
use crate::ktrace::Ftrace;
use crate::pull_trace::CpuUse;
use crate::stall_meter::{Stall, StallMeter};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub const ADDR: &str = "192.0.2.100";
pub const INSTANCE_MAC: &str = "02:ba:70:00:00:01";
/// How long the trace runs after the pull command returned.
pub const WINDOW: Duration = Duration::from_millis(60);
/// A probe run: the pull comes `BEFORE_PULL` after its start.
pub const PROBE_RUN: Duration = Duration::from_millis(800);
pub const BEFORE_PULL: Duration = Duration::from_millis(300);
/// With `Setup::Separate`: the gateway's CPU and the client's.
const GATEWAY_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

/// The scripted baseline: `ip monitor link` triggering `ip addr del/add` on
/// the other port and `arping -U -c 3`, as administrators do today.
pub const BASELINE: &str = r#"
ip monitor link | while read -r line; do
  case "$line" in
    *" ge0"*NO-CARRIER*) ip addr del 192.0.2.100/24 dev ge0 2>/dev/null; ip addr add 192.0.2.100/24 dev ge1; arping -q -U -c 3 -I ge1 192.0.2.100 & ;;
    *" ge1"*NO-CARRIER*) ip addr del 192.0.2.100/24 dev ge1 2>/dev/null; ip addr add 192.0.2.100/24 dev ge0; arping -q -U -c 3 -I ge0 192.0.2.100 & ;;
  esac
done
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SideKind {
    Baton,
    Script,
}

/// How a side's lab runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Setup {
    /// Threads anywhere: the client's probe threads (SCHED_FIFO 50) and the
    /// gateway's daemon (SCHED_FIFO 10) compete for both CPUs.
    Shared,
    /// The gateway (daemon or script, echo responder) on CPU 0; the client's
    /// probe threads and the pull's `ip` (the switch) on CPU 1.
    Separate,
    /// As `Separate`, and the daemon is asked for its status 20 times a
    /// second (as monitoring does): it is never idle for long.
    Polled,
}

impl Setup {
    pub fn gateway(self) -> Option<usize> {
        (self != Setup::Shared).then_some(GATEWAY_CPU)
    }
    pub fn client(self) -> Option<usize> {
        (self != Setup::Shared).then_some(CLIENT_CPU)
    }
    /// `taskset -c CPU` before a gateway command, or nothing.
    pub fn wrapper(self) -> Vec<String> {
        match self.gateway() {
            Some(c) => vec!["taskset".into(), "-c".into(), c.to_string()],
            None => Vec::new(),
        }
    }
}

/// Asks a daemon for its status every 50 ms on its control socket (no
/// process per request) until dropped.
pub struct Poller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    pub fn start(socket: std::path::PathBuf) -> Poller {
        use std::io::{BufRead as _, Write as _};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) {
                    let _ = s.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n");
                    let mut line = String::new();
                    let _ = std::io::BufReader::new(s).read_line(&mut line);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Poller {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One pull, on one clock.
#[derive(Debug, Serialize)]
pub struct Pull {
    pub side: SideKind,
    pub setup: Setup,
    /// The outage, ms: the probe's gap the switch's learning of the new
    /// port falls in (traced), else the longest gap around the pull.
    pub gap_ms: f64,
    /// The longest gap that ends after the carrier's loss and begins
    /// within 20 ms of it (the outage as the bench measured it before), ms.
    pub window_gap_ms: f64,
    /// The longest gap of the whole 1.5 s probe run, ms (a stall elsewhere
    /// in the run shows here, not in `gap_ms`).
    pub run_longest_gap_ms: f64,
    /// CLOCK_MONOTONIC µs of the pull command.
    pub pulled_us: u64,
    /// µs after the pull command, for each step that was seen.
    pub steps: BTreeMap<&'static str, f64>,
    /// µs between consecutive steps that explain the gap.
    pub segments: BTreeMap<&'static str, f64>,
    /// What ran on each CPU from the carrier's loss to the first echo.
    pub cpu_use: Vec<CpuUse>,
    /// The machine's stalls that overlap the outage.
    pub stalls: Vec<Stall>,
    /// The cold meter at the pull (µs of its pointer chase, cold then at
    /// once again warm): a machine whose memory is slow at that moment
    /// shows here, whatever baton does.
    pub cold_meter_us: (f64, f64),
    /// The first echo after the gap came after the trace window closed.
    pub beyond_window: bool,
    /// The trace from the carrier's loss to the first echo, as ftrace printed it.
    #[serde(skip)]
    pub trace: Vec<String>,
}

/// What watches a traced pull: the kernel's tracepoints, the machine's
/// stalls.
pub struct Instruments {
    pub trace: Ftrace,
    pub stalls: StallMeter,
}

/// A pull's outage is the longest gap that begins within this many ms of
/// the pull command (its `ip` process takes a few ms to down the link).
pub const OUTAGE_WITHIN_MS: f64 = 50.0;

pub struct Outage {
    /// CLOCK_MONOTONIC µs of the last echo before the gap.
    pub start_us: f64,
    pub ms: f64,
    /// The earlier rule's outage ([`Pull::window_gap_ms`]), ms.
    pub window_ms: f64,
}

/// A probe run without a pull.
#[derive(Debug, Serialize)]
pub struct Still {
    pub side: SideKind,
    pub setup: Setup,
    /// The longest gap in the 50 ms after the moment a pull would come.
    pub gap_at_pull_ms: f64,
    pub longest_gap_ms: f64,
    /// What ran on each CPU during the longest gap.
    pub longest_cpus: Vec<CpuUse>,
}
