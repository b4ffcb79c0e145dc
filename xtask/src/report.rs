//! The demo's report: a time line, the numbers that prove (or disprove) that
//! no session reset, a table for the terminal, JSON and an SVG picture.
use anyhow::{Context as _, Result};
use baton_lab::probe::ProbeReport;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Mark {
    pub t_ms: f64,
    pub label: String,
}

impl Mark {
    pub fn new(t_ms: f64, label: &str) -> Mark {
        Mark {
            t_ms,
            label: label.to_string(),
        }
    }

    /// The time-line entries one daemon event stands for.
    pub fn from_event(
        t_ms: f64,
        e: &serde_json::Value,
        timers: &baton_config::Timers,
    ) -> Vec<Mark> {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        match e["event"].as_str() {
            Some("port") => vec![Mark {
                t_ms,
                label: format!("port {} {} ({})", s("port"), s("state"), s("link")),
            }],
            Some("move") => {
                let mut v = vec![Mark {
                    t_ms,
                    label: format!(
                        "{} {} {} -> {} done in {} us",
                        s("kind"),
                        s("instance"),
                        s("from"),
                        s("to"),
                        e["took_us"]
                    ),
                }];
                let last = t_ms
                    + timers.announce_interval.as_secs_f64()
                        * 1000.0
                        * f64::from(timers.announce_count.saturating_sub(1));
                v.push(Mark {
                    t_ms: last,
                    label: format!(
                        "last of {} announcements from {}",
                        timers.announce_count,
                        s("to")
                    ),
                });
                v
            }
            Some("refused") => vec![Mark {
                t_ms,
                label: format!(
                    "refused {} on {}: {}",
                    s("instance"),
                    s("port"),
                    s("reason")
                ),
            }],
            Some("revived") => vec![Mark {
                t_ms,
                label: format!(
                    "backoff reverted: {} sockets revived ({} ICMPs)",
                    e["sockets"].as_u64().unwrap_or(0),
                    e["icmps"].as_u64().unwrap_or(0)
                ),
            }],
            Some("move-failed") => vec![Mark {
                t_ms,
                label: format!("MOVE FAILED {}: {}", s("instance"), s("error")),
            }],
            _ => vec![],
        }
    }
}

pub struct Inputs<'a> {
    pub marks: Vec<Mark>,
    pub probe: ProbeReport,
    pub iops: Vec<(f64, u64)>,
    pub iscsi_text: String,
    pub iperf_json: &'a str,
    pub iperf_started_ms: f64,
    pub nexus_start: Vec<u64>,
    pub nexus_end: Vec<u64>,
    pub tcp_before: (u64, u64),
    pub tcp_after: (u64, u64),
    pub owner_now: Option<String>,
    pub demo_seconds: f64,
    /// `baton dataplane instances --json` at the end.
    pub dataplane: serde_json::Value,
    /// When the target's iSCSI data segments reached the client (ms after t0).
    pub iscsi_segments_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub timeline: Vec<Mark>,
    pub probe: ProbeReport,
    pub iops_before: f64,
    pub iops_during: f64,
    pub iops_after: f64,
    pub iops_series: Vec<(f64, u64)>,
    /// (start ms, Gbit/s) per iperf3 interval.
    pub tcp_gbps_series: Vec<(f64, f64)>,
    /// Longest run of iperf3 intervals (0.2 s) without data.
    pub tcp_stall_ms: f64,
    /// The longest gap between the target's data segments on the client's
    /// cable after the pull: the iSCSI stream's TCP stall, which
    /// retransmission backoff would make longer than the probe's outage.
    pub iscsi_stall_ms: f64,
    /// Sockets baton's backoff revert revived at the failover.
    pub revived_sockets: u64,
    pub iscsi_errors: u64,
    pub iscsi_exit: String,
    pub nexus_start: Vec<u64>,
    pub nexus_end: Vec<u64>,
    pub relogins: u64,
    pub tcp_resets: u64,
    pub tcp_retransmissions: u64,
    pub iperf_error: Option<String>,
    pub owner_now: Option<String>,
    pub demo_seconds: f64,
    /// iSCSI PDUs baton's dataplane counted per port: (port, to the target,
    /// from it, resyncs).
    pub iscsi_pdus: Vec<(String, u64, u64, u64)>,
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

impl Report {
    pub fn build(i: Inputs) -> Result<Report> {
        let pull = i
            .marks
            .iter()
            .find(|m| m.label.contains("pulled"))
            .map_or(f64::MAX, |m| m.t_ms);
        let settled = i
            .marks
            .iter()
            .find(|m| m.t_ms > pull && m.label.starts_with("last of"))
            .map_or(pull, |m| m.t_ms);
        // "during": from the pull until the last announcement, plus one sample.
        let iops_before = mean(i.iops.iter().filter(|(t, _)| *t < pull).map(|x| x.1 as f64));
        let iops_during = mean(
            i.iops
                .iter()
                .filter(|(t, _)| *t >= pull && *t < settled + 1000.0)
                .map(|x| x.1 as f64),
        );
        let iops_after = mean(
            i.iops
                .iter()
                .filter(|(t, _)| *t >= settled + 1000.0)
                .map(|x| x.1 as f64),
        );
        let iperf: serde_json::Value =
            serde_json::from_str(i.iperf_json).context("parsing iperf3 -J output")?;
        let tcp_gbps_series = iperf["intervals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|iv| {
                (
                    i.iperf_started_ms + iv["sum"]["start"].as_f64().unwrap_or(0.0) * 1000.0,
                    iv["sum"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
                )
            })
            .collect();
        let tcp_stall_ms = longest_stall(&iperf);
        let after_pull: Vec<f64> = i
            .iscsi_segments_ms
            .iter()
            .copied()
            .filter(|t| *t >= pull - 1000.0)
            .collect();
        let iscsi_stall_ms = after_pull
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(0.0, f64::max);
        let revived_sockets = i
            .marks
            .iter()
            .filter_map(|m| {
                m.label
                    .strip_prefix("backoff reverted: ")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        let iscsi_errors = i
            .iscsi_text
            .lines()
            .filter(|l| l.to_lowercase().contains("error") || l.to_lowercase().contains("fail"))
            .count() as u64;
        let iscsi_exit = i
            .iscsi_text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("exit: "))
            .unwrap_or("?")
            .to_string();
        let relogins = if i.nexus_start.is_empty() {
            1
        } else {
            i.nexus_end
                .iter()
                .filter(|n| !i.nexus_start.contains(n))
                .count() as u64
        };
        Ok(Report {
            timeline: i.marks,
            probe: i.probe,
            iops_before,
            iops_during,
            iops_after,
            iops_series: i.iops,
            tcp_gbps_series,
            tcp_stall_ms,
            iscsi_stall_ms,
            revived_sockets,
            iscsi_errors,
            iscsi_exit,
            nexus_start: i.nexus_start,
            nexus_end: i.nexus_end,
            relogins,
            tcp_resets: i.tcp_after.0 - i.tcp_before.0,
            tcp_retransmissions: i.tcp_after.1 - i.tcp_before.1,
            iperf_error: iperf["error"].as_str().map(str::to_string),
            owner_now: i.owner_now,
            demo_seconds: i.demo_seconds,
            iscsi_pdus: pdus_per_port(&i.dataplane),
        })
    }

    /// Why the demo failed its claim, if it did.
    pub fn failure(&self) -> Option<String> {
        if self.tcp_resets > 0 {
            return Some(format!("{} TCP resets on the client", self.tcp_resets));
        }
        if self.relogins > 0 || self.nexus_end.is_empty() {
            return Some(format!(
                "iSCSI re-login: I_T nexus {:?} before, {:?} after",
                self.nexus_start, self.nexus_end
            ));
        }
        if self.iscsi_errors > 0 || !self.iscsi_exit.contains("exit status: 0") {
            return Some(format!(
                "iscsi-perf reported {} errors, {}",
                self.iscsi_errors, self.iscsi_exit
            ));
        }
        if let Some(e) = &self.iperf_error {
            return Some(format!("iperf3: {e}"));
        }
        None
    }

    pub fn render(&self) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(["ms", "time line"]);
        for m in &self.timeline {
            t.add_row([format!("{:.1}", m.t_ms), m.label.clone()]);
        }
        let mut n = Table::new();
        n.load_preset(UTF8_BORDERS_ONLY);
        n.set_header(["measure", "value"]);
        let p = &self.probe;
        let rows: Vec<(&str, String)> = vec![
            (
                "longest probe gap",
                format!(
                    "{:.1} ms (at {:.0} ms)",
                    p.longest_gap_ms, p.longest_gap_at_ms
                ),
            ),
            (
                "probe datagrams",
                format!("{} sent at {} Hz, {} lost", p.sent, p.rate_hz, p.lost),
            ),
            (
                "iSCSI IOPS before / during / after",
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    self.iops_before, self.iops_during, self.iops_after
                ),
            ),
            (
                "iSCSI errors / re-logins",
                format!("{} / {}", self.iscsi_errors, self.relogins),
            ),
            (
                "iSCSI session (I_T nexus) start -> end",
                format!("{:?} -> {:?}", self.nexus_start, self.nexus_end),
            ),
            (
                "iSCSI TCP stall (target's data on the client's cable) - longest probe gap",
                format!(
                    "{:.1} ms - {:.1} ms = {:.1} ms",
                    self.iscsi_stall_ms,
                    p.longest_gap_ms,
                    self.iscsi_stall_ms - p.longest_gap_ms
                ),
            ),
            (
                "sockets whose backoff baton ended (RFC 6069)",
                self.revived_sockets.to_string(),
            ),
            (
                "TCP stall (iperf3, 0.2 s resolution)",
                format!("{:.0} ms", self.tcp_stall_ms),
            ),
            ("TCP resets (client)", self.tcp_resets.to_string()),
            (
                "TCP retransmissions (client)",
                self.tcp_retransmissions.to_string(),
            ),
            (
                "instance lives on",
                self.owner_now.clone().unwrap_or_else(|| "nowhere".into()),
            ),
            (
                "iSCSI PDUs baton counted: port to/from target (resyncs)",
                self.iscsi_pdus
                    .iter()
                    .map(|(p, rx, tx, r)| format!("{p} {rx}/{tx} ({r})"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ];
        for (k, v) in rows {
            n.add_row([k.to_string(), v]);
        }
        format!("{t}\n{n}")
    }
}

fn pdus_per_port(instances: &serde_json::Value) -> Vec<(String, u64, u64, u64)> {
    let mut out = Vec::new();
    for inst in instances.as_array().into_iter().flatten() {
        for p in inst["ports"].as_array().into_iter().flatten() {
            let i = &p["iscsi"];
            if i.is_null() {
                continue;
            }
            let n = |k: &str| i[k].as_u64().unwrap_or(0);
            out.push((
                p["port"].as_str().unwrap_or("?").to_string(),
                n("rx_total"),
                n("tx_total"),
                n("resyncs"),
            ));
        }
    }
    out
}

/// Points of a once-a-second series with every missing second drawn as
/// zero (a second without I/O), instead of a line straight across it.
pub fn zero_filled(series: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(series.len());
    for (i, p) in series.iter().enumerate() {
        if let Some(prev) = i.checked_sub(1).and_then(|j| series.get(j))
            && p.0 - prev.0 > 1500.0
        {
            out.push((prev.0 + 1000.0, 0));
            out.push((p.0 - 1000.0, 0));
        }
        out.push(*p);
    }
    out
}

fn longest_stall(iperf: &serde_json::Value) -> f64 {
    let (mut run, mut best) = (0.0, 0.0f64);
    for iv in iperf["intervals"].as_array().into_iter().flatten() {
        if iv["sum"]["bytes"].as_u64() == Some(0) {
            run += iv["sum"]["seconds"].as_f64().unwrap_or(0.0) * 1000.0;
            best = best.max(run);
        } else {
            run = 0.0;
        }
    }
    best
}

/// One chart of the picture: title, y range, points, colour.
pub type Panel<'a> = (&'a str, f64, Vec<(f64, f64)>, plotters::style::RGBColor);

#[cfg(test)]
mod tests {
    use super::zero_filled;

    #[test]
    fn a_second_without_io_is_drawn_as_zero() {
        let series = [(1000.0, 900), (2000.0, 910), (5000.0, 880), (6000.0, 905)];
        let drawn = zero_filled(&series);
        assert_eq!(
            drawn,
            vec![
                (1000.0, 900),
                (2000.0, 910),
                (3000.0, 0),
                (4000.0, 0),
                (5000.0, 880),
                (6000.0, 905)
            ]
        );
        assert_eq!(
            zero_filled(&series[..2]),
            series[..2].to_vec(),
            "no gap, no zero"
        );
    }
}
