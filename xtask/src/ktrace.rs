//! Kernel tracing for the benchmarks: an ftrace instance of our own
//! (`/sys/kernel/tracing/instances/NAME`, so nobody else's tracing is
//! touched) on the "mono" clock — CLOCK_MONOTONIC, the clock of the probe
//! and of baton's move trace — with the scheduler, softirq, workqueue,
//! ARP-transmit, bridge and neighbour tracepoints. Tracing runs only in the
//! windows the bench opens around a pull, so the buffers hold all of them.
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";

/// (event, filter): what a failover's trace needs.
const EVENTS: &[(&str, Option<&str>)] = &[
    ("sched/sched_switch", None),
    ("sched/sched_wakeup", None),
    ("irq/softirq_entry", None),
    ("irq/softirq_exit", None),
    ("workqueue/workqueue_queue_work", None),
    ("workqueue/workqueue_execute_start", None),
    ("workqueue/workqueue_execute_end", None),
    // ARP only: the announcements, requests and replies on every device.
    ("net/net_dev_start_xmit", Some("protocol == 0x0806")),
    ("bridge/br_fdb_update", None),
    ("neigh/neigh_create", None),
    ("neigh/neigh_update", None),
];

/// One tracepoint hit as ftrace printed it.
#[derive(Clone, Debug)]
pub struct Event {
    /// CLOCK_MONOTONIC, µs.
    pub t_us: f64,
    pub cpu: u32,
    /// The task the event happened in (its command name).
    pub comm: String,
    pub name: String,
    /// The event's own text after "name: ".
    pub text: String,
    /// The whole line, for the traces the bench keeps.
    pub line: String,
}

impl Event {
    /// The value of `key=` in the event's text (up to the next space).
    pub fn field(&self, key: &str) -> Option<&str> {
        let mut from = 0;
        while let Some(i) = self.text[from..].find(key) {
            let at = from + i;
            let before_ok = at == 0 || self.text.as_bytes()[at - 1] == b' ';
            let rest = &self.text[at + key.len()..];
            if before_ok && let Some(v) = rest.strip_prefix('=') {
                return Some(v.split_whitespace().next().unwrap_or(""));
            }
            from = at + key.len();
        }
        None
    }
}

pub struct Ftrace {
    dir: PathBuf,
}

impl Ftrace {
    /// A new instance with the events above, not yet tracing.
    pub fn new(name: &str) -> Result<Ftrace> {
        let root = Path::new(TRACEFS);
        if !root.join("instances").exists() {
            crate::sh("mount", &["-t", "tracefs", "tracefs", TRACEFS])
                .context("mounting tracefs (the failover bench traces the kernel)")?;
        }
        let dir = root.join("instances").join(name);
        if dir.exists() {
            // A killed run's instance: ours by its name.
            let _ = std::fs::remove_dir(&dir);
        }
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let trace = Ftrace { dir };
        trace.write("tracing_on", "0")?;
        trace.write("trace_clock", "mono")?;
        trace.write("buffer_size_kb", "8192")?;
        for (event, filter) in EVENTS {
            if let Some(f) = filter {
                trace.write(&format!("events/{event}/filter"), f)?;
            }
            trace.write(&format!("events/{event}/enable"), "1")?;
        }
        Ok(trace)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .with_context(|| format!("writing {value} to {}", path.display()))
    }

    /// Traces the system calls and page faults of one thread (the daemon's
    /// loop), or none.
    pub fn syscalls_of(&self, tid: Option<u32>) -> Result<()> {
        for event in [
            "raw_syscalls/sys_enter",
            "raw_syscalls/sys_exit",
            "exceptions/page_fault_user",
        ] {
            match tid {
                Some(t) => {
                    self.write(
                        &format!("events/{event}/filter"),
                        &format!("common_pid == {t}"),
                    )?;
                    self.write(&format!("events/{event}/enable"), "1")?;
                }
                None => self.write(&format!("events/{event}/enable"), "0")?,
            }
        }
        Ok(())
    }

    /// Empties the buffers and starts tracing.
    pub fn start(&self) -> Result<()> {
        self.write("trace", "")?;
        self.write("tracing_on", "1")
    }

    /// Stops tracing and returns what the buffers hold, in time order.
    pub fn stop(&self) -> Result<Vec<Event>> {
        self.write("tracing_on", "0")?;
        let path = self.dir.join("trace");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if text.contains("LOST") {
            bail!("ftrace lost events: the buffers are too small for the window");
        }
        let mut events: Vec<Event> = text.lines().filter_map(parse_line).collect();
        events.sort_by(|a, b| a.t_us.total_cmp(&b.t_us));
        Ok(events)
    }
}

impl Drop for Ftrace {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        for (event, _) in EVENTS {
            let _ = self.write(&format!("events/{event}/enable"), "0");
        }
        let _ = self.syscalls_of(None);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `COMM-PID [CPU] FLAGS SECS.USECS: EVENT: TEXT`; COMM may hold spaces
/// and dashes, so the line is read around the "[CPU]" field.
fn parse_line(line: &str) -> Option<Event> {
    if line.starts_with('#') {
        return None;
    }
    let open = line.find(" [")?;
    let close = open + line[open..].find("] ")?;
    let cpu: u32 = line[open + 2..close].trim().parse().ok()?;
    let (comm, pid) = line[..open].trim().rsplit_once('-')?;
    pid.parse::<i32>().ok()?;
    let mut rest = line[close + 2..].split_whitespace();
    let _flags = rest.next()?;
    let t_us = rest.next()?.strip_suffix(':')?.parse::<f64>().ok()? * 1e6;
    let after_t = line[close + 2..].split_once(": ")?.1;
    let (name, text) = after_t
        .split_once(": ")
        .unwrap_or((after_t.trim_end_matches(':'), ""));
    Some(Event {
        t_us,
        cpu,
        comm: comm.to_string(),
        name: name.to_string(),
        text: text.to_string(),
        line: line.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_spaces_and_dashes_in_the_command_parse() {
        let e = parse_line(
            "    tokio-rt w-x-1234  [001] d..2.  5012.345678: sched_switch: prev_comm=a prev_pid=1 prev_prio=120 prev_state=S ==> next_comm=baton next_pid=1234 next_prio=89",
        )
        .expect("parses");
        assert_eq!((e.cpu, e.comm.as_str()), (1, "tokio-rt w-x"));
        assert!((e.t_us - 5_012_345_678.0).abs() < 1.0);
        assert_eq!(e.name, "sched_switch");
        assert_eq!(e.field("next_pid"), Some("1234"));
        assert_eq!(e.field("prev_pid"), Some("1"));
        assert_eq!(e.field("pid"), None);
        let w = parse_line(
            " kworker/u8:1-77 [000] ..... 12.000001: workqueue_execute_start: work struct 00000000a1b2c3d4: function linkwatch_event",
        )
        .expect("parses");
        assert!(w.text.ends_with("linkwatch_event"));
        assert!(parse_line("# tracer: nop").is_none());
    }
}
