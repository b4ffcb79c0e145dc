//! `cargo xtask bench failover`: what a client feels when baton moves an
//! address, against what administrators script today, measured in one run on
//! the same lab. Writes target/bench/failover.json.
use crate::pull_lab::{ADDR, Setup};
use crate::pull_side::Side;
use crate::stall_meter::{Stall, StallMeter};
use crate::stats::percentile;
use anyhow::{Context as _, Result};
use baton_lab::daemon::Daemon;
use baton_lab::{Lab, LabSpec, probe};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Pulls per side of the traced comparison.
pub const PULLS: usize = 50;
/// Repetitions of the other measures.
const REPS: usize = 20;

/// `REPS` pulls on one side, untraced (the flooded daemon's).
fn untraced(side: &mut Side) -> Result<Vec<f64>> {
    (0..REPS).map(|_| Ok(side.pull(None)?.0)).collect()
}

pub fn failover(pulls: usize) -> Result<serde_json::Value> {
    let _ = baton_lab::sweep_stale();
    let crate::pulls_summary::Summary {
        json: pulls,
        baton_gaps: gaps,
        script_gaps: baseline,
    } = crate::pulls_summary::run(pulls)?;

    println!(
        "[bench] unplanned under socket floods: {REPS} pulls, 1,000 idle connections to each socket, 100 scrapes/s"
    );
    let mut side = Side::baton(Setup::Separate)?;
    // The machine's stalls here too: a slow stretch of these minutes must
    // be told apart from baton (the traced pulls have their own meter).
    let meter = StallMeter::start(crate::stall_meter::CPUS);
    let flood_from = probe::monotonic_us();
    let daemon = side.daemon().context("baton side")?;
    let flood = daemon.flood(1000, 100)?;
    let started = Instant::now();
    let log_before = daemon.log_text().len();
    let flooded = untraced(&mut side)?;
    let daemon = side.daemon().context("baton side")?;
    let scrape_s = started.elapsed().as_secs_f64();
    let scrapes = flood.stop();
    let flooded_timings = move_timings(daemon.log_text().get(log_before..).unwrap_or(""));
    println!("[bench] planned: {REPS} x baton move under the probe and iperf3");
    let planned_from = probe::monotonic_us();
    let planned = planned(side.lab(), daemon, &meter)?;
    let planned_to = probe::monotonic_us();
    let (stalls, _) = meter.stop();
    drop(side);
    let planned_gaps: Vec<f64> = planned.moves.iter().map(|m| m.gap_ms).collect();
    let (over, over_stalled) = planned.gaps_over(PLANNED_GAP_MS);

    println!("[bench] scale: 1,000 instances on one port, its cable pulled");
    let scale = scale(1000)?;
    let revert = crate::bench_revert::revert()?;

    let result = serde_json::json!({
        "pulls": pulls,
        "probe_hz": 10_000,
        "gap_ms_p50": percentile(&gaps, 50.0),
        "gap_ms_p90": percentile(&gaps, 90.0),
        "gap_ms_p99": percentile(&gaps, 99.0),
        "gap_ms_max": gaps.iter().copied().fold(f64::NAN, f64::max),
        "baseline_gap_ms_p50": percentile(&baseline, 50.0),
        "baseline_gap_ms_p90": percentile(&baseline, 90.0),
        "baseline_gap_ms_p99": percentile(&baseline, 99.0),
        "baseline_gap_ms_max": baseline.iter().copied().fold(f64::NAN, f64::max),
        "gap_ratio_p99": percentile(&gaps, 99.0) / percentile(&baseline, 99.0),
        "reps": REPS,
        "flooded_gap_ms_p50": percentile(&flooded, 50.0),
        "flooded_gap_ms_p99": percentile(&flooded, 99.0),
        "flooded_gaps_ms": flooded,
        "flooded_reaction_us_p50": percentile(&flooded_timings.0, 50.0),
        "flooded_announced_us_p50": percentile(&flooded_timings.1, 50.0),
        "flood_idle_connections": 1000,
        "flood_scrapes_answered_per_s": scrapes as f64 / scrape_s,
        "flood_machine_stalls": stalls_between(&stalls, flood_from, planned_from),
        "planned_moves": REPS,
        "planned_lost": planned.lost,
        "planned_resets": planned.resets,
        "planned_gap_ms_p50": percentile(&planned_gaps, 50.0),
        "planned_gap_ms_max": planned_gaps.iter().copied().fold(f64::NAN, f64::max),
        "planned_gaps_over_ms": PLANNED_GAP_MS,
        "planned_gaps_over": over,
        "planned_gaps_over_with_stall": over_stalled,
        "planned_each": planned.moves,
        "planned_machine_stalls": stalls_between(&stalls, planned_from, planned_to),
        "scale_instances": scale.0,
        "scale_ms": scale.1,
        "rss_mb": scale.2,
        "status_json_ms": scale.3,
        "revert": revert,
    });
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(["measure", "baton", "baseline (script)", "goal"]);
    let f = |k: &str| format!("{:.2}", result[k].as_f64().unwrap_or(f64::NAN));
    let n = gaps.len();
    for (p, goal) in [
        ("p50", ""),
        ("p90", ""),
        ("p99", "<= 1.5, <= 0.2x baseline"),
        ("max", ""),
    ] {
        t.add_row([
            format!("unplanned, {n} pulls each (separate CPUs): outage {p} (ms)"),
            f(&format!("gap_ms_{p}")),
            f(&format!("baseline_gap_ms_{p}")),
            goal.to_string(),
        ]);
    }
    t.add_row([
        "p99 ratio baton / baseline".into(),
        f("gap_ratio_p99"),
        String::new(),
        "<= 0.2".into(),
    ]);
    t.add_row([
        "same, under socket floods: gap p50 / p99 (ms)".into(),
        format!("{} / {}", f("flooded_gap_ms_p50"), f("flooded_gap_ms_p99")),
        String::new(),
        "as without".into(),
    ]);
    t.add_row([
        "inside baton, p50 under floods: link event -> move start / first GARP (us)".into(),
        format!(
            "{} / {}",
            f("flooded_reaction_us_p50"),
            f("flooded_announced_us_p50")
        ),
        String::new(),
        String::new(),
    ]);
    t.add_row([
        "machine stalls under floods / in planned moves: per s per CPU, longest (ms)".into(),
        [
            &result["flood_machine_stalls"],
            &result["planned_machine_stalls"],
        ]
        .map(|m| {
            format!(
                "{:.1}, {:.1}",
                m["per_s_per_cpu"].as_f64().unwrap_or(f64::NAN),
                // None: no stall in the stretch.
                m["late_ms"]["max"].as_f64().unwrap_or(0.0)
            )
        })
        .join(" / "),
        String::new(),
        String::new(),
    ]);
    t.add_row([
        "planned: probes lost / TCP resets".into(),
        format!("{} / {}", planned.lost, planned.resets),
        String::new(),
        "0 / 0".into(),
    ]);
    t.add_row([
        format!("planned: echo gap per move p50 / max (ms); moves > {PLANNED_GAP_MS} ms (a stall inside)"),
        format!(
            "{} / {}; {over} ({over_stalled})",
            f("planned_gap_ms_p50"),
            f("planned_gap_ms_max")
        ),
        String::new(),
        String::new(),
    ]);
    t.add_row([
        "scale: 1,000 instances moved + announced (ms)".into(),
        f("scale_ms"),
        String::new(),
        "<= 500".into(),
    ]);
    t.add_row([
        "scale: daemon RSS (MB)".into(),
        f("rss_mb"),
        String::new(),
        "<= 30".into(),
    ]);
    t.add_row([
        "scale: baton status --json (ms)".into(),
        f("status_json_ms"),
        String::new(),
        String::new(),
    ]);
    println!("{t}");
    Ok(result)
}

/// From the daemon's "move steps" lines: (link event -> move start,
/// move start -> first announcement), in µs.
fn move_timings(log: &str) -> (Vec<f64>, Vec<f64>) {
    let mut out = (Vec::new(), Vec::new());
    for s in crate::pull_trace::all_move_steps(log) {
        if let (Some(ev), Some(began), Some(announced)) =
            (s.get("link_event"), s.get("began"), s.get("announced"))
        {
            out.0.push(began - ev);
            out.1.push(announced - began);
        }
    }
    out
}

/// An echo gap of a planned move longer than this (ms) is an outage worth
/// naming: ten probes lost at 10 kHz.
const PLANNED_GAP_MS: f64 = 1.0;

/// The stalls that began in [from_us, to_us], summed up.
fn stalls_between(stalls: &[Stall], from_us: u64, to_us: u64) -> serde_json::Value {
    let inside: Vec<Stall> = stalls
        .iter()
        .filter(|s| (from_us..to_us).contains(&s.from_us))
        .copied()
        .collect();
    crate::stall_meter::summary(&inside, to_us.saturating_sub(from_us) as f64 / 1e6)
}

/// One planned move as the probe saw it.
#[derive(serde::Serialize)]
struct PlannedMove {
    /// The longest echo gap from the command to 50 ms after it returned.
    gap_ms: f64,
    /// The longest machine stall overlapping that gap (0: none).
    stall_ms: f64,
}

struct Planned {
    lost: u64,
    resets: u64,
    moves: Vec<PlannedMove>,
}

impl Planned {
    /// Moves whose gap was over `ms`, and how many of them had a stall inside.
    fn gaps_over(&self, ms: f64) -> (usize, usize) {
        let over = self.moves.iter().filter(|m| m.gap_ms > ms);
        let stalled = over.clone().filter(|m| m.stall_ms > 0.0).count();
        (over.count(), stalled)
    }
}

/// `baton move` back and forth under the probe and iperf3, each move's
/// echo gap set beside the machine's stalls.
fn planned(lab: &Lab, daemon: &Daemon, meter: &StallMeter) -> Result<Planned> {
    let addr: IpAddr = ADDR.parse()?;
    let before = baton_lab::traffic::tcp_counters(lab)?;
    lab.spawn(&lab.gw(0).ns, &["iperf3", "-s", "-1", "-B", ADDR])?;
    lab.gw(0).ns.wait_listening(5201)?;
    let secs = (REPS as u64 * 300 / 1000 + 2).to_string();
    let iperf = lab
        .client
        .command("iperf3")
        .args(["-c", ADDR, "-t", &secs, "-b", "200M", "-J"])
        .output();
    let iperf = std::thread::spawn(move || iperf);
    let run = probe::run(
        &lab.client,
        addr,
        10_000,
        Duration::from_millis(REPS as u64 * 300 + 600),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let mut owner = daemon.owner("iscsi-a")?.context("not placed")?;
    let mut windows = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let to = if owner == "ge0" { "ge1" } else { "ge0" };
        let began = probe::monotonic_us();
        let out = daemon.cli(&["move", "iscsi-a", to])?;
        windows.push((began, probe::monotonic_us()));
        anyhow::ensure!(
            out.status.success(),
            "baton move: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        owner = to.to_string();
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = run
        .join()
        .map_err(|_| anyhow::anyhow!("probe panicked"))??;
    let _ = iperf.join();
    let after = baton_lab::traffic::tcp_counters(lab)?;
    let start_us = report.start_mono_us as f64;
    let moves = windows
        .iter()
        .map(|&(began, returned)| {
            let ms_of = |us: u64| (us as f64 - start_us) / 1000.0;
            let (at_ms, gap_ms) = report
                .gap_in(ms_of(began), ms_of(returned) + 50.0)
                .unwrap_or((ms_of(began), f64::NAN));
            let from_us = start_us + at_ms * 1000.0;
            let stall_us = meter
                .within(from_us, from_us + gap_ms * 1000.0)
                .iter()
                .map(|s| s.late_us)
                .max()
                .unwrap_or(0);
            PlannedMove {
                gap_ms,
                stall_ms: stall_us as f64 / 1000.0,
            }
        })
        .collect();
    Ok(Planned {
        lost: report.lost,
        resets: after.0 - before.0,
        moves,
    })
}

/// 1,000 instances on ge0 (198.18.0.0/15, the benchmarking range), ge0's
/// cable pulled: (instances, ms to the last move, daemon RSS MB, status ms).
fn scale(n: usize) -> Result<(usize, f64, f64, f64)> {
    let lab = Lab::build(&LabSpec::default())?;
    let mut config = String::from(
        "[timers]\nhold_down = \"0\"\nannounce_count = 1\n\n[limits]\naddresses_per_port = 2000\n\n[networks.bench]\nsubnets = [\"198.18.0.0/15\"]\n\n[ports.ge0]\nnetworks = [\"bench\"]\n\n[ports.ge1]\nnetworks = [\"bench\"]\n",
    );
    for i in 0..n {
        config += &format!(
            "\n[instances.i{i:04}]\naddress = \"198.18.{}.{}/15\"\nports = [\"ge0\", \"ge1\"]\n",
            i / 250,
            i % 250 + 1
        );
    }
    let daemon = Daemon::start(&lab, 0, &config)?;
    let started = Instant::now();
    while daemon.status()?["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["owner"] == "ge0")
        .count()
        < n
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "initial placement of {n} instances took over 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut follower = daemon.events(true, std::process::Stdio::piped())?;
    let stdout = follower.stdout.take().context("events")?;
    std::thread::sleep(Duration::from_millis(200));
    let pulled = Instant::now();
    lab.pull_cable(0, 0)?;
    // The follower's lines on a thread: a follower the daemon dropped
    // events for ("events client too slow") must not hang the bench.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("\"event\":\"move\"") && tx.send(pulled.elapsed()).is_err() {
                break;
            }
        }
    });
    let mut moves = 0;
    let mut last = Duration::ZERO;
    while moves < n {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(at) => {
                moves += 1;
                last = at;
            }
            Err(_) => break,
        }
    }
    let _ = follower.kill();
    let on_ge1 = daemon.status()?["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["owner"] == "ge1")
        .count();
    anyhow::ensure!(
        on_ge1 == n,
        "{on_ge1} of {n} instances on ge1 after the pull"
    );
    if moves < n {
        println!(
            "[bench] scale: the event follower saw {moves} of {n} moves (the daemon drops events for a slow follower); the time is the last one it saw"
        );
    }
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid().context("pid")?))?
        .lines()
        .find_map(|l| baton_lab::kb_field(l, "VmRSS:"))
        .context("VmRSS")? as f64;
    let t = Instant::now();
    let out = daemon.cli(&["status", "--json"])?;
    let status_ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(out.status.success(), "status failed");
    Ok((n, last.as_secs_f64() * 1000.0, rss_kb / 1024.0, status_ms))
}
