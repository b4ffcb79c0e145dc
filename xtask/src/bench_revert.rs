//! `cargo xtask bench revert` (also part of `bench failover`): RFC 6069 at
//! the move, measured under iSCSI with the revert on and off in one run.
use crate::stats::percentile;
use anyhow::Result;
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec, probe};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use std::time::Duration;

const ADDR: &str = "192.0.2.100";

/// Pulls per side of the backoff-revert comparison.
const REVERT_REPS: usize = 20;

/// RFC 6069 at the move, under iSCSI (tgtd + iscsi-perf) with the default
/// 2 s hold_down: per pull, the probe's outage and the iSCSI stream's
/// stall (the longest gap between the target's data segments on the
/// client's cable, from a pcap of 64-byte heads), with the revert on and off.
pub fn revert() -> Result<serde_json::Value> {
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut resets = 0u64;
    for revert in [true, false] {
        println!(
            "[bench] revert {}: {REVERT_REPS} pulls, hold_down 2 s, under iSCSI",
            if revert { "on" } else { "off" }
        );
        let lab = Lab::build(&LabSpec::default())?;
        let timers = format!(
            "hold_down = \"2s\"\nhold_up = \"200ms\"\nannounce_count = 3\nannounce_interval = \"100ms\"\nrevert_backoff = {revert}"
        );
        let daemon = Daemon::start(&lab, 0, &lab_config(&timers, ""))?;
        daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
        let target = baton_lab::iscsi::Target::start(&lab.gw(0).ns, ADDR.parse()?, 64)?;
        let _echo = probe::Echo::start(&lab.gw(0).ns, ADDR.parse()?)?;
        let resets_before = baton_lab::traffic::tcp_counters(&lab)?.0;
        let secs = (REVERT_REPS as u64 * 8 + 10).to_string();
        let _perf = lab.spawn(
            &lab.client,
            &[
                "iscsi-perf",
                "-m",
                "8",
                "-b",
                "8",
                "-t",
                &secs,
                "-x",
                "0",
                &target.url(),
            ],
        )?;
        std::thread::sleep(Duration::from_millis(1500));
        let mut owner = 0;
        for rep in 0..REVERT_REPS {
            let pcap = daemon.dir.join(format!("revert-{rep}.pcap"));
            let capture = lab.capture_pcap(
                &lab.client,
                "eth0",
                &format!("tcp and src host {ADDR} and src port 3260 and greater 100"),
                &pcap,
            )?;
            let run = probe::run(
                &lab.client,
                ADDR.parse()?,
                10_000,
                Duration::from_millis(4500),
            )?;
            std::thread::sleep(Duration::from_millis(300));
            lab.pull_cable(0, owner)?;
            // Past hold_down and the move, with room for a late retransmission.
            std::thread::sleep(Duration::from_millis(3500));
            lab.plug_cable(0, owner)?;
            let report = run
                .join()
                .map_err(|_| anyhow::anyhow!("probe panicked"))??;
            lab.kill(capture)?;
            let times = crate::pcap::pcap_times_ms(&pcap)?;
            let stall = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
            anyhow::ensure!(
                times.len() > 1000,
                "pull {rep}: only {} iSCSI data segments captured: iscsi-perf stopped?",
                times.len()
            );
            owner = 1 - owner;
            daemon.wait_owner("iscsi-a", ["ge0", "ge1"][owner], Duration::from_secs(3))?;
            let pair = (report.longest_gap_ms, stall);
            if revert {
                on.push(pair)
            } else {
                off.push(pair)
            };
            std::thread::sleep(Duration::from_millis(600));
        }
        resets += baton_lab::traffic::tcp_counters(&lab)?.0 - resets_before;
        // iscsi-perf stops with the lab, after the resets were counted.
    }
    let excess = |v: &[(f64, f64)]| -> Vec<f64> { v.iter().map(|(o, s)| s - o).collect() };
    let (on_x, off_x) = (excess(&on), excess(&off));
    let result = serde_json::json!({
        "reps": REVERT_REPS,
        "hold_down_ms": 2000,
        "on_stall_minus_outage_ms_p50": percentile(&on_x, 50.0),
        "on_stall_minus_outage_ms_p99": percentile(&on_x, 99.0),
        "off_stall_minus_outage_ms_p50": percentile(&off_x, 50.0),
        "off_stall_minus_outage_ms_p99": percentile(&off_x, 99.0),
        "on_outage_and_stall_ms": on,
        "off_outage_and_stall_ms": off,
        "resets_before_teardown": resets,
    });
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header([
        "iSCSI stall - probe outage (ms), hold_down 2 s",
        "revert on",
        "revert off",
        "goal",
    ]);
    let f = |k: &str| format!("{:.1}", result[k].as_f64().unwrap_or(f64::NAN));
    t.add_row([
        "p50".to_string(),
        f("on_stall_minus_outage_ms_p50"),
        f("off_stall_minus_outage_ms_p50"),
        String::new(),
    ]);
    t.add_row([
        "p99".to_string(),
        f("on_stall_minus_outage_ms_p99"),
        f("off_stall_minus_outage_ms_p99"),
        "<= 50 with it on".into(),
    ]);
    t.add_row([
        "TCP resets during the pulls (both runs)".to_string(),
        resets.to_string(),
        String::new(),
        "0".into(),
    ]);
    println!("{t}");
    Ok(result)
}
