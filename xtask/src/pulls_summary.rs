//! The traced pulls summed up: the distributions of every side (all
//! pulls, and those no machine stall overlapped), the median of every
//! segment, baton's slowest tenth segment by segment, the kept traces.
use crate::bench_pulls::{SIDES, alternating};
use crate::pull_lab::{Pull, Setup, SideKind};
use crate::pull_trace::SEGMENTS;
use crate::stats::{distribution, percentile};
use anyhow::Result;
use std::collections::BTreeMap;

/// What the traced pulls say: the distributions of every side, with and
/// without the pulls a machine stall overlapped; the median of every
/// segment; and baton's slowest tenth segment by segment.
pub struct Summary {
    pub json: serde_json::Value,
    /// baton's and the script's outages with separate CPUs, ms.
    pub baton_gaps: Vec<f64>,
    pub script_gaps: Vec<f64>,
}

pub fn run(n: usize) -> Result<Summary> {
    println!(
        "[bench] unplanned: {n} rounds of 4 traced pulls (baton, script) x (shared, separate CPUs)"
    );
    let runs = alternating(n)?;
    let of = |kind: SideKind, setup: Setup| -> Vec<&Pull> {
        runs.pulls
            .iter()
            .filter(|p| p.side == kind && p.setup == setup)
            .collect()
    };
    let gaps = |p: &[&Pull]| p.iter().map(|p| p.gap_ms).collect::<Vec<_>>();
    let unstalled = |p: &[&Pull]| {
        p.iter()
            .filter(|p| p.stalls.is_empty())
            .map(|p| p.gap_ms)
            .collect::<Vec<_>>()
    };
    let mut sides = serde_json::Map::new();
    for (kind, setup) in SIDES {
        {
            let p = of(kind, setup);
            sides.insert(
                format!("{kind:?}_{setup:?}").to_lowercase(),
                serde_json::json!({
                    "gap_ms": distribution(&gaps(&p)),
                    "gap_ms_without_machine_stalls": distribution(&unstalled(&p)),
                    "window_gap_ms": distribution(&p.iter().map(|p| p.window_gap_ms).collect::<Vec<_>>()),
                    "pulls_a_machine_stall_overlapped": p.len() - unstalled(&p).len(),
                    "segment_p50_us": medians(&p),
                }),
            );
        }
    }
    let baton = of(SideKind::Baton, Setup::Separate);
    let script = of(SideKind::Script, Setup::Separate);
    let (bg, sg) = (gaps(&baton), gaps(&script));
    keep_traces(&runs.pulls)?;
    print_tail(&baton);
    let p99 = |v: &[f64]| percentile(v, 99.0);
    let json = serde_json::json!({
        "rounds": n,
        "probe_hz": 10_000,
        "sides": sides,
        "ratio_p99_separate": p99(&bg) / p99(&sg),
        "ratio_p99_polled": p99(&gaps(&of(SideKind::Baton, Setup::Polled))) / p99(&sg),
        "ratio_p99_shared": p99(&gaps(&of(SideKind::Baton, Setup::Shared)))
            / p99(&gaps(&of(SideKind::Script, Setup::Shared))),
        "machine_stalls": crate::stall_meter::summary(&runs.stalls, runs.watched_s),
        "still_gap_at_pull_ms": distribution(&runs.still.iter().map(|s| s.gap_at_pull_ms).collect::<Vec<_>>()),
        "still_longest_gap_ms": distribution(&runs.still.iter().map(|s| s.longest_gap_ms).collect::<Vec<_>>()),
        "still": runs.still,
        "pulls": runs.pulls,
    });
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header([
        "outage (ms): p50 / p90 / p99 / max",
        "baton",
        "script",
        "p99 ratio",
    ]);
    // The polled daemon is set beside the script with separate CPUs.
    for (setup, script_setup) in [
        (Setup::Shared, Setup::Shared),
        (Setup::Separate, Setup::Separate),
        (Setup::Polled, Setup::Separate),
    ] {
        let earlier = [(", any gap <= 20 ms after the carrier", "window_gap_ms")];
        for (label, key) in [
            ("", "gap_ms"),
            (", no machine stall", "gap_ms_without_machine_stalls"),
        ]
        .into_iter()
        .chain(earlier.into_iter().filter(|_| setup == Setup::Separate))
        {
            let d = |kind: SideKind, setup: Setup| {
                &json["sides"][format!("{kind:?}_{setup:?}").to_lowercase()][key]
            };
            let (b, sc) = (d(SideKind::Baton, setup), d(SideKind::Script, script_setup));
            let ratio =
                b["p99"].as_f64().unwrap_or(f64::NAN) / sc["p99"].as_f64().unwrap_or(f64::NAN);
            t.add_row([
                format!("{setup:?}{label}"),
                fmt_dist(b),
                fmt_dist(sc),
                format!("{ratio:.3}"),
            ]);
        }
    }
    println!("{t}");
    println!(
        "[bench] machine stalls (a SCHED_FIFO 99 thread per CPU woken > {} µs late): {} in {:.0} s ({:.2}/s per CPU), ms {}",
        crate::stall_meter::LATE_US,
        runs.stalls.len(),
        runs.watched_s,
        json["machine_stalls"]["per_s_per_cpu"]
            .as_f64()
            .unwrap_or(f64::NAN),
        fmt_dist(&json["machine_stalls"]["late_ms"])
    );
    println!(
        "[bench] no pull ({} runs): gap where a pull would be {} | longest in a run {}",
        runs.still.len(),
        fmt_dist(&json["still_gap_at_pull_ms"]),
        fmt_dist(&json["still_longest_gap_ms"])
    );
    Ok(Summary {
        json,
        baton_gaps: bg,
        script_gaps: sg,
    })
}

fn medians(p: &[&Pull]) -> BTreeMap<&'static str, f64> {
    SEGMENTS
        .iter()
        .filter_map(|(name, _, _)| {
            let v: Vec<f64> = p
                .iter()
                .filter_map(|p| p.segments.get(name).copied())
                .collect();
            (!v.is_empty()).then(|| (*name, percentile(&v, 50.0)))
        })
        .collect()
}

/// baton's median pull and its slowest tenth, segment by segment.
fn print_tail(baton: &[&Pull]) {
    let gaps: Vec<f64> = baton.iter().map(|p| p.gap_ms).collect();
    let p90 = percentile(&gaps, 90.0);
    let mut tail: Vec<&&Pull> = baton.iter().filter(|p| p.gap_ms >= p90).collect();
    tail.sort_by(|x, y| y.gap_ms.total_cmp(&x.gap_ms));
    let m = medians(baton);
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    let mut header = vec!["segment (µs)".to_string(), "p50".into()];
    header.extend(tail.iter().map(|p| format!("{:.2} ms", p.gap_ms)));
    t.set_header(header);
    for (name, _, _) in SEGMENTS {
        let mut row = vec![name.to_string(), fmt_us(m.get(name))];
        row.extend(tail.iter().map(|p| fmt_us(p.segments.get(name))));
        t.add_row(row);
    }
    let cold = |f: fn(&(f64, f64)) -> f64| {
        let v: Vec<f64> = baton.iter().map(|p| f(&p.cold_meter_us)).collect();
        percentile(&v, 50.0)
    };
    let mut row = vec![
        "cold meter: cold / warm (µs)".to_string(),
        format!("{:.0} / {:.0}", cold(|c| c.0), cold(|c| c.1)),
    ];
    row.extend(
        tail.iter()
            .map(|p| format!("{:.0} / {:.0}", p.cold_meter_us.0, p.cold_meter_us.1)),
    );
    t.add_row(row);
    let mut row = vec!["machine stall overlapping (µs)".to_string(), String::new()];
    row.extend(tail.iter().map(|p| {
        let late: u64 = p.stalls.iter().map(|s| s.late_us).max().unwrap_or(0);
        late.to_string()
    }));
    t.add_row(row);
    println!(
        "[bench] where the time went: baton (separate CPUs), its median pull and its slowest tenth"
    );
    println!("{t}");
}

/// The traces of baton's five slowest pulls and of each side's median pull,
/// in target/bench/pulls-trace/ (SIDE-CPUS-RANK-GAPms.txt).
fn keep_traces(pulls: &[Pull]) -> Result<()> {
    let dir = crate::workspace_root().join("target/bench/pulls-trace");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for kind in [SideKind::Baton, SideKind::Script] {
        for setup in [Setup::Shared, Setup::Separate, Setup::Polled] {
            let mut sorted: Vec<&Pull> = pulls
                .iter()
                .filter(|p| p.side == kind && p.setup == setup)
                .collect();
            sorted.sort_by(|x, y| y.gap_ms.total_cmp(&x.gap_ms));
            let median = sorted.len() / 2;
            for (rank, p) in sorted.iter().enumerate() {
                if rank != median && !(kind == SideKind::Baton && rank < 5) {
                    continue;
                }
                let name =
                    format!("{kind:?}-{setup:?}-{rank:02}-{:.2}ms.txt", p.gap_ms).to_lowercase();
                let mut text = format!(
                    "# {kind:?} pull, {setup:?}, outage {:.3} ms; machine stalls {:?}; steps (µs after the pull command): {:?}\n",
                    p.gap_ms, p.stalls, p.steps
                );
                text += &p.trace.join("\n");
                std::fs::write(dir.join(name), text)?;
            }
        }
    }
    Ok(())
}

fn fmt_us(v: Option<&f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn fmt_dist(d: &serde_json::Value) -> String {
    let g = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2}",
        g("p50"),
        g("p90"),
        g("p99"),
        g("max")
    )
}
