//! The daemon on real kernel objects: a pulled cable moves the instance and a
//! live TCP connection survives it.
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec};
use std::time::{Duration, Instant};

const INSTANCE: &str = "192.0.2.100";

fn addresses(lab: &Lab, dev: &str) -> anyhow::Result<String> {
    lab.gw(0).ns.ip(&["-br", "addr", "show", "dev", dev])
}

/// Client TCP counters that mean a connection was reset or aborted.
fn resets(lab: &Lab) -> anyhow::Result<u64> {
    let out = lab.client.run(&[
        "nstat",
        "-asz",
        "TcpEstabResets",
        "TcpExtTCPAbortOnData",
        "TcpExtTCPAbortOnTimeout",
        "TcpOutRsts",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum())
}

/// A TCP stream client -> instance for `secs`, in the background. Returns
/// iperf3's JSON when it ends.
fn stream(
    lab: &Lab,
    secs: u32,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<serde_json::Value>>> {
    lab.spawn(&lab.gw(0).ns, &["iperf3", "-s", "-1", "-B", INSTANCE])?;
    lab.gw(0).ns.wait_listening(5201)?;
    let mut cmd = lab.client.command("iperf3");
    cmd.args(["-c", INSTANCE, "-t", &secs.to_string(), "-J", "-b", "200M"]);
    Ok(std::thread::spawn(move || {
        let out = cmd.output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }))
}

/// tcpdump's "HH:MM:SS.micros" as seconds.
fn seconds_of_day(line: &str) -> f64 {
    let t = line.split_whitespace().next().unwrap_or("0:0:0");
    t.split(':').fold(0.0, |acc, part| {
        acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
    })
}

#[test]
fn pulled_cable_moves_the_instance_and_tcp_survives() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let config = lab_config(
        "hold_down = \"0\"\nannounce_count = 3\nannounce_interval = \"100ms\"",
        "",
    );
    let daemon = Daemon::start(&lab, 0, &config)?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    assert!(addresses(&lab, "ge0")?.contains(INSTANCE));
    assert!(!addresses(&lab, "ge1")?.contains(INSTANCE));

    let resets_before = resets(&lab)?;
    let iperf = stream(&lab, 5)?;
    std::thread::sleep(Duration::from_millis(1500));
    let garps = lab.capture(&lab.client, "eth0", &format!("arp and host {INSTANCE}"))?;
    let pulled = Instant::now();
    lab.pull_cable(0, 0)?;
    let moved_after = daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(2))?;
    std::thread::sleep(Duration::from_millis(600));
    let garp_lines = garps.lines()?;
    let result = iperf
        .join()
        .map_err(|_| anyhow::anyhow!("iperf thread panicked"))??;

    assert!(
        result["error"].is_null(),
        "iperf3 failed: {}",
        result["error"]
    );
    let intervals = result["intervals"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        intervals >= 5,
        "stream stopped early: {intervals} intervals"
    );
    let last = &result["intervals"][intervals - 1]["sum"]["bytes"];
    assert!(
        last.as_u64().unwrap_or(0) > 0,
        "no data in the last second: {result}"
    );
    assert_eq!(resets(&lab)? - resets_before, 0, "the client saw resets");
    assert!(addresses(&lab, "ge1")?.contains(INSTANCE));
    assert!(
        !addresses(&lab, "ge0")?.contains(INSTANCE),
        "address left on the failed port"
    );

    // Announcements: 3 rounds of request + reply form, from ge1's MAC.
    let ge1 = lab.gw(0).ns.mac("ge1")?;
    let from_ge1: Vec<&String> = garp_lines
        .iter()
        .filter(|l| l.contains(&format!(" {ge1} > ff:ff:ff:ff:ff:ff")))
        .collect();
    let requests = from_ge1
        .iter()
        .filter(|l| l.contains("Request who-has 192.0.2.100 tell 192.0.2.100"))
        .count();
    let replies = from_ge1
        .iter()
        .filter(|l| l.contains("Reply 192.0.2.100 is-at"))
        .count();
    assert_eq!(
        (requests, replies),
        (3, 3),
        "announcements seen: {garp_lines:#?}"
    );
    let times: Vec<f64> = from_ge1
        .iter()
        .filter(|l| l.contains("Request"))
        .map(|l| seconds_of_day(l))
        .collect();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (0.08..0.3).contains(&gap),
            "announcements {gap:.3}s apart, configured 100ms: {garp_lines:#?}"
        );
    }
    println!("moved {moved_after:?} after the pull (status poll included); pulled at {pulled:?}");
    Ok(())
}
