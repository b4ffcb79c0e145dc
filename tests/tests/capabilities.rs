//! The systemd unit's capability list, proven: the daemon runs and fails
//! over with exactly that bounding set and no_new_privs (setpriv), and
//! taking any one of them away makes it fail, or say what it cannot do.
use baton_lab::daemon::{Daemon, lab_config, setpriv, unit_caps};
use baton_lab::{Lab, LabSpec};
use std::time::Duration;

const TIMERS: &str = "hold_down = \"0\"\nannounce_count = 1";

#[test]
fn the_daemon_fails_over_with_exactly_the_units_capabilities() -> anyhow::Result<()> {
    let caps = unit_caps()?;
    let lab = Lab::build(&LabSpec::default())?;
    let wrapper = setpriv(&caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let config = lab_config(TIMERS, "mac = \"02:ba:70:00:00:01\"");
    let daemon = Daemon::start_wrapped(&lab, 0, &config, &[], &wrapper)?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let pid = daemon.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    assert_eq!(
        bnd.count_ones() as usize,
        caps.len(),
        "CapBnd {bnd:#x} for {caps:?}"
    );
    // Its memory locked, on fault: every page it has resident stays so
    // (but the vDSO's, a mapping mlock skips).
    let unlocked = unlocked_mappings(pid)?;
    let unlocked_kb: u64 = unlocked.iter().map(|(kb, _)| kb).sum();
    assert!(unlocked_kb <= 64, "resident but not locked: {unlocked:#?}");
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(3))?;
    assert!(
        !daemon
            .log_text()
            .contains("could not run with real-time priority"),
        "{}",
        daemon.log_text()
    );
    Ok(())
}

#[test]
fn each_capability_of_the_unit_is_needed() -> anyhow::Result<()> {
    let caps = unit_caps()?;
    let mut report = Vec::new();
    for drop in &caps {
        let lab = Lab::build(&LabSpec::default())?;
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        let wrapper = setpriv(&fewer);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let config = lab_config(TIMERS, "mac = \"02:ba:70:00:00:01\"");
        let outcome = match Daemon::start_wrapped(&lab, 0, &config, &[], &wrapper) {
            Err(e) => {
                let text = format!("{e:#}");
                let said = text
                    .lines()
                    .find(|l| l.starts_with("baton: error:"))
                    .unwrap_or(&text);
                format!(
                    "refused to start: {}",
                    said.chars().take(400).collect::<String>()
                )
            }
            Ok(d) => {
                let placed = d
                    .wait_owner("iscsi-a", "ge0", Duration::from_secs(3))
                    .is_ok();
                let log = d.log_text();
                let said = log
                    .lines()
                    .find(|l| l.contains("WARN") || l.contains("ERROR"))
                    .map(last_line)
                    .unwrap_or_default();
                if placed && said.is_empty() {
                    "RAN FINE without it: not needed, remove it from the unit".to_string()
                } else {
                    format!("ran degraded (placed: {placed}): {said}")
                }
            }
        };
        println!("without CAP_{}: {outcome}", drop.to_uppercase());
        report.push((drop.clone(), outcome));
    }
    // Each one missing stops the daemon, before it changes anything, with
    // an error that names it.
    let unclear: Vec<&(String, String)> = report
        .iter()
        .filter(|(cap, o)| {
            !o.starts_with("refused to start")
                || !o
                    .to_uppercase()
                    .contains(&format!("CAP_{}", cap.to_uppercase()))
        })
        .collect();
    assert!(unclear.is_empty(), "{unclear:#?}");
    Ok(())
}

/// The mappings of `pid` with resident pages that are not locked, as
/// (kB not locked, the mapping's line). smaps gives `Locked` as a
/// proportional share (a page shared by n processes counts 1/n): it is
/// compared with `Pss`, not `Rss`.
fn unlocked_mappings(pid: u32) -> anyhow::Result<Vec<(u64, String)>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let (mut out, mut mapping, mut pss) = (Vec::new(), String::new(), 0);
    for l in smaps.lines() {
        // A mapping's first line; its fields' lines start "Key:".
        if l.split_whitespace()
            .next()
            .is_some_and(|w| !w.ends_with(':'))
        {
            mapping = l.to_string();
        }
        if let Some(n) = baton_lab::kb_field(l, "Pss:") {
            pss = n;
        }
        if let Some(locked) = baton_lab::kb_field(l, "Locked:")
            && pss > locked
        {
            out.push((pss - locked, mapping.clone()));
        }
    }
    Ok(out)
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}
