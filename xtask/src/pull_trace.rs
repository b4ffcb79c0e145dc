//! A traced pull's window read: the carrier's loss, baton's move steps
//! from its log, what ran on each CPU, and the segments the outage is cut
//! into. Pure functions over `ktrace` events and log text.
use crate::ktrace::Event;
use serde::Serialize;
use std::collections::BTreeMap;

/// What one CPU did between the carrier's loss and the first echo after it.
#[derive(Debug, Serialize)]
pub struct CpuUse {
    pub cpu: u32,
    /// µs per task ("comm:pid prio"), the largest first.
    pub tasks: Vec<(String, f64)>,
    /// µs per softirq (NET_RX, TIMER, ...), inside the tasks' time.
    pub softirq: BTreeMap<String, f64>,
}

/// When the pull's `ip` queued linkwatch after `from` µs: the carrier's
/// loss (downing the switch side drops the peer's carrier in that call).
/// Another lab's earlier plug queues linkwatch too, up to a second later
/// and from a timer: not in an `ip` process.
pub fn carrier_lost(events: &[Event], from: f64) -> Option<f64> {
    events
        .iter()
        .find(|e| {
            e.t_us >= from
                && e.comm == "ip"
                && e.name == "workqueue_queue_work"
                && e.text.contains("function=linkwatch_event")
        })
        .map(|e| e.t_us)
}

/// When the switch (bridge) first learned `mac` on `switch_side` after
/// `from` µs: the announcement has reached it, the new path is there.
pub fn switch_learned(events: &[Event], from: f64, switch_side: &str, mac: &str) -> Option<f64> {
    let learned = format!("source {switch_side} addr {mac}");
    events
        .iter()
        .find(|e| e.t_us >= from && e.name == "br_fdb_update" && e.text.contains(&learned))
        .map(|e| e.t_us)
}

/// (name, from step, to step): the gap cut into what explains it.
pub const SEGMENTS: &[(&str, &str, &str)] = &[
    ("kernel: carrier -> linkwatch ran", "carrier", "linkwatch"),
    (
        "kernel: linkwatch -> daemon woken",
        "linkwatch",
        "daemon_woken",
    ),
    ("daemon: woken -> running", "daemon_woken", "daemon_running"),
    (
        "daemon: running -> event read",
        "daemon_running",
        "link_event",
    ),
    ("daemon: event -> move began", "link_event", "began"),
    ("daemon: macvlan up, address, routes", "began", "prepared"),
    ("daemon: address local (IPv6)", "prepared", "local"),
    ("daemon: flip + first GARP", "local", "announced"),
    (
        "daemon: running -> first GARP",
        "daemon_running",
        "announced",
    ),
    (
        "kernel: linkwatch -> announcement sent",
        "linkwatch",
        "announcement_sent",
    ),
    (
        "wire: announcement -> switch learned",
        "announcement_sent",
        "switch_learned",
    ),
    (
        "wire: switch learned -> first echo",
        "switch_learned",
        "first_echo",
    ),
    ("whole: carrier -> first echo", "carrier", "first_echo"),
];

/// Every "move steps" line of the daemon's log, each step's CLOCK_MONOTONIC µs.
pub fn all_move_steps(log: &str) -> Vec<BTreeMap<&'static str, f64>> {
    const KEYS: &[&str] = &[
        "link_event",
        "began",
        "prepared",
        "local",
        "flipped",
        "announced",
        "cleaned",
    ];
    log.lines()
        .filter(|l| l.contains("move steps"))
        .map(|line| {
            let value = |key: &str| -> Option<f64> {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
            };
            KEYS.iter().filter_map(|k| Some((*k, value(k)?))).collect()
        })
        .collect()
}

/// The daemon's "move steps" line whose link event falls in [from, to] µs.
pub fn move_steps(log: &str, from: f64, to: f64) -> Option<BTreeMap<&'static str, f64>> {
    all_move_steps(log).into_iter().find(|s| {
        s.get("link_event")
            .is_some_and(|ev| (from..=to).contains(ev))
    })
}

/// Per CPU, what ran in [from, to] µs: tasks by the scheduler's switches,
/// softirqs by their entry and exit.
pub fn cpu_use(events: &[Event], from: f64, to: f64) -> Vec<CpuUse> {
    // Per CPU: (µs per task, µs per softirq).
    type Use = (BTreeMap<String, f64>, BTreeMap<String, f64>);
    let mut per: BTreeMap<u32, Use> = BTreeMap::new();
    let mut running: BTreeMap<u32, (String, f64)> = BTreeMap::new();
    let mut in_softirq: BTreeMap<u32, (String, f64)> = BTreeMap::new();
    let clip = |a: f64, b: f64| (b.min(to) - a.max(from)).max(0.0);
    for e in events {
        match e.name.as_str() {
            "sched_switch" => {
                let next = format!(
                    "{}:{} prio {}",
                    e.field("next_comm").unwrap_or("?"),
                    e.field("next_pid").unwrap_or("?"),
                    e.field("next_prio").unwrap_or("?")
                );
                if let Some((task, since)) = running.insert(e.cpu, (next, e.t_us)) {
                    *per.entry(e.cpu).or_default().0.entry(task).or_default() +=
                        clip(since, e.t_us);
                }
            }
            "softirq_entry" => {
                let vec = e
                    .text
                    .split("action=")
                    .nth(1)
                    .map(|s| s.trim_end_matches(']').to_string())
                    .unwrap_or_default();
                in_softirq.insert(e.cpu, (vec, e.t_us));
            }
            "softirq_exit" => {
                if let Some((vec, since)) = in_softirq.remove(&e.cpu) {
                    *per.entry(e.cpu).or_default().1.entry(vec).or_default() += clip(since, e.t_us);
                }
            }
            _ => {}
        }
    }
    for (cpu, (task, since)) in running {
        *per.entry(cpu).or_default().0.entry(task).or_default() += clip(since, to);
    }
    per.into_iter()
        .map(|(cpu, (tasks, softirq))| {
            let mut tasks: Vec<(String, f64)> =
                tasks.into_iter().filter(|(_, us)| *us >= 1.0).collect();
            tasks.sort_by(|a, b| b.1.total_cmp(&a.1));
            tasks.truncate(8);
            CpuUse {
                cpu,
                tasks,
                softirq: softirq.into_iter().filter(|(_, us)| *us >= 1.0).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_steps_are_read_from_the_log_and_matched_by_link_event() {
        let log = "2026-12-01T21:08:00Z DEBUG baton::daemon::moves: move steps instance=iscsi-a link_event=100 began=110 prepared=130 local=132 flipped=140 announced=150 cleaned=300\n\
                   2026-12-01T21:08:01Z  INFO baton::daemon::moves: move done instance=iscsi-a\n\
                   2026-12-01T21:08:02Z DEBUG baton::daemon::moves: move steps instance=iscsi-a link_event=900 began=910 prepared=930 local=932 flipped=940 announced=950 cleaned=990";
        let all = all_move_steps(log);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].get("announced"), Some(&150.0));
        assert_eq!(all[0].len(), 7);
        let second = move_steps(log, 800.0, 1000.0).expect("the second move");
        assert_eq!(second.get("began"), Some(&910.0));
        assert!(move_steps(log, 200.0, 800.0).is_none());
    }
}
