//! `cargo xtask bench cluster`: a whole gateway failing, a planned handover,
//! a unit failure by its storage link or its dead target (tgtd killed; the
//! daemon and links fine), and a partition (HA link cut, both alive), for
//! baton on etcd and, in the
//! same run, keepalived's VRRP on the same two gateways with its defaults
//! (VRRPv2, advert_int 1) and tuned (VRRPv3, advert_int 0.1). keepalived
//! sends its adverts unicast over the HA link, as baton's cluster talks over
//! it, so cutting that link is the same partition for both.
//!
//! Per repetition: the takeover (the failure to the survivor's first ARP
//! answer, seen on the switch), the probe's outage, when an idle client
//! connection to the address learnt it was gone (a reset; None: not within
//! the window), the re-login (tgtd on both gateways serves one LUN file
//! under one target name; iscsi-perf logs in again when its connection
//! breaks: the target's first segment on a new connection), and the
//! two-owner checker's windows. Results in target/bench/cluster.json.
use crate::cluster_site::{Case, Sample, Site, System};
use crate::stats::percentile;
use anyhow::Result;
use serde_json::json;

pub fn cluster() -> Result<serde_json::Value> {
    let reps: usize = std::env::var("BATON_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // BATON_BENCH_ONLY=baton|keepalived: one side only (while working on it).
    let only = std::env::var("BATON_BENCH_ONLY").unwrap_or_default();
    let systems: Vec<System> = [
        System::Baton,
        System::Keepalived { tuned: false },
        System::Keepalived { tuned: true },
    ]
    .into_iter()
    .filter(|s| only.is_empty() || s.name().starts_with(&only))
    .collect();
    // BATON_BENCH_CASES=StorageLink,TargetDied: those cases only.
    let cases: Vec<Case> = match std::env::var("BATON_BENCH_CASES") {
        Ok(list) => Case::ALL
            .into_iter()
            .filter(|c| list.split(',').any(|n| n.trim() == format!("{c:?}")))
            .collect(),
        Err(_) => Case::ALL.to_vec(),
    };
    let mut results = Vec::new();
    for system in systems {
        let mut site = Site::start(system)?;
        let mut by_case = serde_json::Map::new();
        for case in cases.iter().copied() {
            let mut samples = Vec::new();
            for i in 0..reps {
                let s = site.repetition(case)?;
                println!(
                    "[bench cluster] {} {case:?} {}/{reps}: takeover {:?} ms, outage {:.0} ms, client told {:?} ms, re-login {:?} ms, two-owner {}",
                    system.name(),
                    i + 1,
                    s.takeover_ms.map(|t| t.round()),
                    s.outage_ms,
                    s.client_told_ms.map(|t| t.round()),
                    s.relogin_ms.map(|t| t.round()),
                    s.two_owner_windows
                );
                samples.push(s);
            }
            by_case.insert(format!("{case:?}"), summary(&samples));
        }
        let partition = site.partition()?;
        println!(
            "[bench cluster] {} partition: two-owner windows {}",
            system.name(),
            partition
        );
        by_case.insert("partition_two_owner_windows".into(), json!(partition));
        results.push((system, by_case));
        drop(site);
    }
    let p99 = |name: &str, case: &str, key: &str| -> Option<f64> {
        results
            .iter()
            .find(|(s, _)| s.name() == name)
            .and_then(|(_, m)| m.get(case)?.get(key)?.get("p99")?.as_f64())
    };
    let mut ratios = serde_json::Map::new();
    for k in [
        System::Keepalived { tuned: false },
        System::Keepalived { tuned: true },
    ] {
        for case in Case::ALL.map(|c| format!("{c:?}")) {
            let case = case.as_str();
            for key in ["takeover_ms", "outage_ms", "relogin_ms"] {
                if let (Some(b), Some(kv)) = (
                    p99(System::Baton.name(), case, key),
                    p99(k.name(), case, key),
                ) && kv > 0.0
                {
                    ratios.insert(
                        format!("baton/{} {case} {key} p99", k.name()),
                        json!(b / kv),
                    );
                }
            }
        }
    }
    let out = json!({
        "repetitions": reps,
        "systems": results.iter().map(|(s, m)| json!({"system": s.name(), "results": m})).collect::<Vec<_>>(),
        "ratios": ratios,
    });
    println!("{}", render(&out));
    Ok(out)
}

fn summary(samples: &[Sample]) -> serde_json::Value {
    let stat = |v: Vec<f64>| json!({"p50": percentile(&v, 50.0), "p99": percentile(&v, 99.0), "n": v.len()});
    json!({
        "takeover_ms": stat(samples.iter().filter_map(|s| s.takeover_ms).collect()),
        "outage_ms": stat(samples.iter().map(|s| s.outage_ms).collect()),
        "client_told_ms": stat(samples.iter().filter_map(|s| s.client_told_ms).collect()),
        "client_not_told": samples.iter().filter(|s| s.client_told_ms.is_none()).count(),
        "relogin_ms": stat(samples.iter().filter_map(|s| s.relogin_ms).collect()),
        "no_relogin": samples.iter().filter(|s| s.relogin_ms.is_none()).count(),
        "no_takeover": samples.iter().filter(|s| s.takeover_ms.is_none()).count(),
        "two_owner_windows": samples.iter().map(|s| s.two_owner_windows).sum::<usize>(),
        "samples": samples,
    })
}

fn render(out: &serde_json::Value) -> String {
    let mut t = comfy_table::Table::new();
    t.set_header(vec![
        "system",
        "case",
        "takeover p50/p99",
        "outage p50/p99",
        "client told p50/p99 (not told)",
        "re-login p50/p99 (none)",
        "two-owner",
    ]);
    let ms = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.0}"));
    for s in out["systems"].as_array().into_iter().flatten() {
        for case in Case::ALL.map(|c| format!("{c:?}")) {
            let r = &s["results"][&case];
            t.add_row(vec![
                s["system"].as_str().unwrap_or("").to_string(),
                case.to_string(),
                format!(
                    "{} / {} ms",
                    ms(&r["takeover_ms"]["p50"]),
                    ms(&r["takeover_ms"]["p99"])
                ),
                format!(
                    "{} / {} ms",
                    ms(&r["outage_ms"]["p50"]),
                    ms(&r["outage_ms"]["p99"])
                ),
                format!(
                    "{} / {} ms ({})",
                    ms(&r["client_told_ms"]["p50"]),
                    ms(&r["client_told_ms"]["p99"]),
                    r["client_not_told"]
                ),
                format!(
                    "{} / {} ms ({})",
                    ms(&r["relogin_ms"]["p50"]),
                    ms(&r["relogin_ms"]["p99"]),
                    r["no_relogin"]
                ),
                r["two_owner_windows"].to_string(),
            ]);
        }
        t.add_row(vec![
            s["system"].as_str().unwrap_or("").to_string(),
            "Partition".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            s["results"]["partition_two_owner_windows"].to_string(),
        ]);
    }
    let mut ratios = String::new();
    for (k, v) in out["ratios"].as_object().into_iter().flatten() {
        ratios += &format!(
            "[bench cluster] {k}: {:.2}x\n",
            v.as_f64().unwrap_or(f64::NAN)
        );
    }
    format!("[bench cluster] (ms after the failure)\n{t}\n{ratios}")
}
