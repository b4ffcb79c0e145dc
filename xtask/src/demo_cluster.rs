//! `cargo xtask demo cluster`: two gateways and three etcd members, tgtd on
//! both gateways serving one shared LUN file under one target name on
//! iscsi-a's address, iscsi-perf (logging in again when its connection
//! breaks) and the 10 kHz probe from the client. Three acts: gw0 fails
//! whole (daemon SIGKILLed, data and HA cables pulled) and gw1 takes over,
//! with tickle ACKs and without; then gw0's storage link (watched by a
//! `[health]` check) is pulled with everything else fine, and gw0 hands
//! iscsi-a over. Prints all three, writes target/lab/cluster.json and
//! cluster.svg, and fails if an address had two owners or the initiator did
//! not get back to I/O with tickles on.
use crate::demo::{capture_iscsi_data, finish_iscsi_perf, iscsi_perf};
use crate::report;
use anyhow::{Result, bail};
use baton_lab::cluster::{ClusterLab, TwoOwnerChecker};
use baton_lab::daemon::Daemon;
use baton_lab::{iscsi, probe};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const A: &str = "192.0.2.100";
const B: &str = "192.0.2.101";
const INSTANCE: &str = "iscsi-a";
const KILL_AT: Duration = Duration::from_secs(6);
/// After the kill: long enough for an initiator without tickles to notice.
const AFTER: Duration = Duration::from_secs(20);
const TIMERS: &str =
    "hold_down = \"0\"\nprobe_time = \"50ms\"\nannounce_count = 3\nannounce_interval = \"100ms\"";
/// The lab's fast path (see tests/tests/cluster.rs).
const FAST: &str = "heartbeat = \"50ms\"\ndead_after = \"300ms\"\nowner_deadline = \"600ms\"";

/// What fails in an act.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Act {
    /// gw0 whole: its daemon killed, its data and HA cables pulled.
    WholeUnit,
    /// gw0's storage link, its daemon and cables fine.
    StorageLink,
}

impl Act {
    fn says(self) -> &'static str {
        match self {
            Act::WholeUnit => "gw0 fails whole",
            Act::StorageLink => "gw0's storage link fails",
        }
    }
}

/// One unit failure, as the report gives it (ms after the failure).
#[derive(Debug, serde::Serialize)]
struct Run {
    act: Act,
    tickle: bool,
    /// gw1 holds iscsi-a (its status says so; polled every 5 ms).
    takeover_ms: f64,
    /// The probe's longest gap between two echoes.
    probe_outage_ms: f64,
    /// The first iSCSI data segment the client got after the kill: the
    /// initiator has logged in again and does I/O (None: not within AFTER).
    relogin_ms: Option<f64>,
    iops_before: f64,
    iops_after: f64,
    /// The two-owner checker: requests answered from two ports, answers
    /// after another port's announcement.
    two_owner_windows: usize,
    checker_answers: usize,
    tickled_connections: Option<u64>,
    /// iscsi-perf's IOPS per second (ms after the kill, IOPS).
    iops: Vec<(f64, u64)>,
}

pub fn run(bin: &Path) -> Result<()> {
    let began = Instant::now();
    baton_lab::use_baton_bin(bin.to_path_buf());
    let _ = baton_lab::sweep_stale();
    let out_dir = crate::workspace_root().join("target/lab");
    std::fs::create_dir_all(&out_dir)?;
    println!(
        "[demo cluster] gw0 and gw1 (two ports each, an HA port) with three etcd members; \
         iscsi-a on gw0, iscsi-b on gw1; tgtd on both with one shared LUN"
    );
    let runs = [
        one_run(Act::WholeUnit, true)?,
        one_run(Act::WholeUnit, false)?,
        one_run(Act::StorageLink, true)?,
    ];
    std::fs::write(
        out_dir.join("cluster.json"),
        serde_json::to_string_pretty(&runs)?,
    )?;
    svg(&runs, &out_dir.join("cluster.svg"))?;
    println!("\n{}", render(&runs));
    println!(
        "[demo cluster] wrote {0}/cluster.json and {0}/cluster.svg in {1:.0} s",
        out_dir.display(),
        began.elapsed().as_secs_f64()
    );
    for r in &runs {
        if r.two_owner_windows > 0 {
            bail!(
                "two owners seen {} times with tickle = {}",
                r.two_owner_windows,
                r.tickle
            );
        }
    }
    for r in runs.iter().filter(|r| r.tickle) {
        if r.relogin_ms.is_none() {
            bail!(
                "{}, tickles on: the initiator did not get back to I/O",
                r.act.says()
            );
        }
    }
    Ok(())
}

fn one_run(act: Act, tickle: bool) -> Result<Run> {
    let cluster = format!("{FAST}\ntickle = {tickle}\n\n[health.san]\nlinks = [\"san0\"]\n");
    let c = ClusterLab::build()?;
    let lab = &c.lab;
    // Each gateway's storage link: san0, its peer san0p down takes san0's carrier.
    for g in &lab.gateways {
        g.ns.ip(&[
            "link", "add", "san0", "type", "veth", "peer", "name", "san0p",
        ])?;
        g.ns.ip(&["link", "set", "san0", "up"])?;
        g.ns.ip(&["link", "set", "san0p", "up"])?;
    }
    let mut gw = (0..2)
        .map(|g| Daemon::start(lab, g, &ClusterLab::config(g, TIMERS, &cluster)))
        .collect::<Result<Vec<_>>>()?;
    gw[0].wait_owner(INSTANCE, "ge0", Duration::from_secs(10))?;
    let addr: IpAddr = A.parse()?;
    // gw1's tgtd and echo listen on the address before gw1 holds it.
    lab.gw(1)
        .ns
        .run(&["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"])?;
    let lun = std::env::temp_dir().join(format!("{}-shared-lun.img", baton_lab::unique_prefix()));
    std::fs::File::create(&lun)?.set_len(128 << 20)?;
    let targets = [
        iscsi::Target::start_shared(&lab.gw(0).ns, addr, &lun)?,
        iscsi::Target::start_shared(&lab.gw(1).ns, addr, &lun)?,
    ];
    let _echo = [
        probe::Echo::start(&lab.gw(0).ns, addr)?,
        probe::Echo::start(&lab.gw(1).ns, addr)?,
    ];
    let pcap = gw[1].dir.join("iscsi-data.pcap");
    let capture = capture_iscsi_data(lab, addr, &pcap)?;
    let checker = TwoOwnerChecker::start(lab, &[A, B])?;
    let total = KILL_AT + AFTER;
    let t0 = Instant::now();
    let t0_unix_ms = unix_ms();
    let probe_run = probe::run(&lab.client, addr, 10_000, total)?;
    let (iops, iscsi_out, perf_pid) =
        iscsi_perf(lab, &targets[0].url(), t0, total.as_secs(), true)?;
    println!(
        "[demo cluster] {}, tickles {}: iscsi-perf and the probe for {} s; the failure at {} s",
        act.says(),
        if tickle { "on" } else { "off" },
        total.as_secs(),
        KILL_AT.as_secs()
    );
    std::thread::sleep(KILL_AT);
    let killed = Instant::now();
    let killed_ms = t0.elapsed().as_secs_f64() * 1000.0;
    match act {
        Act::WholeUnit => {
            gw[0].kill();
            lab.pull_cable(0, 0)?;
            lab.pull_cable(0, 1)?;
            c.pull_ha(0)?;
        }
        Act::StorageLink => {
            lab.gw(0).ns.ip(&["link", "set", "san0p", "down"])?;
        }
    }
    let takeover_ms = loop {
        if gw[1].owner(INSTANCE)?.is_some() {
            break killed.elapsed().as_secs_f64() * 1000.0;
        }
        if killed.elapsed() > Duration::from_secs(10) {
            bail!(
                "gw1 did not take iscsi-a over; its log:\n{}",
                gw[1].log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    println!("[demo cluster]   gw1 holds iscsi-a {takeover_ms:.0} ms after the failure");
    let probe = probe_run
        .join()
        .map_err(|_| anyhow::anyhow!("probe panicked"))??;
    // Its own errors (a session it could not get back) show in the figures.
    let _ = finish_iscsi_perf(iscsi_out, perf_pid)?;
    lab.kill(capture)?;
    let overlaps = checker.finish()?;
    // A new login: the target's first segment on another connection (a
    // handover can be too quick to leave a silence in the stream).
    let frames = crate::pcap::pcap_frames(&pcap)?;
    let relogin_ms = crate::pcap::relogin_after(&frames, t0_unix_ms + killed_ms)?;
    let tickled_connections = gw[1]
        .status()?
        .get("instances")
        .and_then(|v| v.as_array().cloned())
        .into_iter()
        .flatten()
        .find(|i| i["name"] == INSTANCE)
        .and_then(|i| i["last_move"]["tickled"].as_u64());
    let iops: Vec<(f64, u64)> = iops
        .lock()
        .map(|v| v.iter().map(|(t, n)| (t - killed_ms, *n)).collect())
        .unwrap_or_default();
    let mean = |from: f64, to: f64| {
        let v: Vec<f64> = iops
            .iter()
            .filter(|(t, _)| *t > from && *t <= to)
            .map(|(_, n)| *n as f64)
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let iops_before = mean(-4000.0, 0.0);
    let iops_after = relogin_ms.map_or(0.0, |r| mean(r + 1000.0, AFTER.as_secs_f64() * 1000.0));
    let _ = std::fs::remove_file(&lun);
    drop(targets);
    Ok(Run {
        act,
        tickle,
        takeover_ms,
        probe_outage_ms: probe.longest_gap_ms,
        relogin_ms,
        iops_before,
        iops_after,
        two_owner_windows: overlaps.double_answers.len() + overlaps.after_announcement.len(),
        checker_answers: overlaps.answers,
        tickled_connections,
        iops,
    })
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn render(runs: &[Run]) -> String {
    let mut t = comfy_table::Table::new();
    t.set_header(vec![
        "failure",
        "tickles",
        "takeover",
        "probe outage",
        "I/O again (re-login)",
        "IOPS before",
        "IOPS after",
        "tickled",
        "two-owner windows",
    ]);
    for r in runs {
        t.add_row(vec![
            r.act.says().to_string(),
            if r.tickle { "on" } else { "off" }.to_string(),
            format!("{:.0} ms", r.takeover_ms),
            format!("{:.0} ms", r.probe_outage_ms),
            r.relogin_ms
                .map_or(format!("none within {} s", AFTER.as_secs()), |ms| {
                    format!("{ms:.0} ms")
                }),
            format!("{:.0}", r.iops_before),
            format!("{:.0}", r.iops_after),
            r.tickled_connections
                .map_or("-".into(), |n| format!("{n} connections")),
            format!(
                "{} ({} answers checked)",
                r.two_owner_windows, r.checker_answers
            ),
        ]);
    }
    format!("[demo cluster] a unit failure (ms after it):\n{t}")
}

fn svg(runs: &[Run], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 260 * runs.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((runs.len(), 1));
    let ymax = runs
        .iter()
        .flat_map(|r| r.iops.iter().map(|x| x.1 as f64))
        .fold(1.0, f64::max)
        * 1.15;
    let x0 = -(KILL_AT.as_secs_f64());
    for (panel, r) in panels.iter().zip(runs) {
        let title = format!(
            "iSCSI IOPS, {}, tickles {} (seconds after it)",
            r.act.says(),
            if r.tickle { "on" } else { "off" }
        );
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..AFTER.as_secs_f64(), 0f64..ymax)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let points: Vec<(f64, f64)> = report::zero_filled(&r.iops)
            .iter()
            .map(|(t, v)| (t / 1000.0, *v as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut marks = vec![(0.0, r.act.says().to_string())];
        marks.push((r.takeover_ms / 1000.0, "gw1 holds iscsi-a".into()));
        if let Some(ms) = r.relogin_ms {
            marks.push((ms / 1000.0, "I/O again".into()));
        }
        for (i, (x, label)) in marks.into_iter().enumerate() {
            chart
                .draw_series(LineSeries::new(
                    vec![(x, 0.0), (x, ymax)],
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label,
                    (x + 0.1, ymax * (0.9 - 0.12 * i as f64)),
                    ("sans-serif", 11),
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
