//! The daemon's control paths: flapping, crash repair, hitless restart,
//! planned moves, reload, the root-only socket.
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec, traffic};
use std::time::{Duration, Instant};

const INSTANCE: &str = "192.0.2.100";

fn holders(lab: &Lab) -> anyhow::Result<Vec<String>> {
    let mut v = Vec::new();
    for port in ["ge0", "ge1"] {
        if lab
            .gw(0)
            .ns
            .ip(&["-br", "addr", "show", "dev", port])?
            .contains(INSTANCE)
        {
            v.push(port.to_string());
        }
    }
    Ok(v)
}

/// The instance table's owner of the instance, as the dataplane sees it.
fn map_owner(lab: &Lab) -> anyhow::Result<String> {
    let out = baton_lab::dataplane::baton(lab.gw(0), &["dataplane", "instances", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let entry = v
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["address"] == INSTANCE)
        .cloned()
        .unwrap_or_default();
    Ok(entry["owner"].as_str().unwrap_or("none").to_string())
}

/// How long the iperf3 streams of the restart and planned-move tests run:
/// past their pings (3-4 s at least, more on a loaded machine).
const STREAM_S: usize = 8;

/// The client's reset counter is only the event's while the stream runs:
/// at its end iperf3's own teardown may send one.
fn read_before_the_streams_end(started: Instant) -> anyhow::Result<()> {
    let at = started.elapsed();
    anyhow::ensure!(
        at < Duration::from_secs(STREAM_S as u64),
        "the resets were read {at:?} after the stream began, past its end: \
         they cannot be told from iperf3's teardown"
    );
    Ok(())
}

/// Pings in the background: `count` at `interval`; returns answered.
fn pinger(
    lab: &Lab,
    count: u32,
    interval: &'static str,
) -> std::thread::JoinHandle<anyhow::Result<u32>> {
    let mut cmd = lab.client.command("ping");
    cmd.args([
        "-q",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        interval,
        "-W",
        "1",
        INSTANCE,
    ]);
    std::thread::spawn(move || {
        let out = String::from_utf8_lossy(&cmd.output()?.stdout).into_owned();
        let line = out
            .lines()
            .find(|l| l.contains("received"))
            .unwrap_or("")
            .to_string();
        Ok(line
            .split(',')
            .find(|f| f.contains("received"))
            .and_then(|f| f.split_whitespace().next()?.parse().ok())
            .unwrap_or(0))
    })
}

#[test]
fn flapping_at_20_hz_moves_no_more_than_the_timers_allow() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let timers = "hold_down = \"0\"\nhold_up = \"1s\"\nfailback_delay = \"1s\"";
    let daemon = Daemon::start(&lab, 0, &lab_config(timers, "failback = \"auto\""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let events = std::fs::File::create(daemon.dir.join("events.json"))?;
    let mut follower = daemon.events(true, events)?;
    std::thread::sleep(Duration::from_millis(200));
    // 200 pulls and plugs, 25 ms each: 10 s at 20 Hz.
    let script = "for i in $(seq 200); do ip link set g0p0 down; sleep 0.025; ip link set g0p0 up; sleep 0.025; done";
    lab.switch.run(&["sh", "-c", script])?;
    let plugged = Instant::now();
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(4))?;
    let back = plugged.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let _ = follower.kill();
    let _ = follower.wait();
    let text = std::fs::read_to_string(daemon.dir.join("events.json"))?;
    let moves: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "move")
        .collect();
    let kinds: Vec<&str> = moves.iter().filter_map(|m| m["kind"].as_str()).collect();
    // hold_down 0: away at the first pull; hold_up + failback_delay: back only once stable.
    assert_eq!(
        kinds,
        vec!["failover", "failback"],
        "moves during 10 s of flapping: {moves:#?}"
    );
    // Measured from after the script's last 25 ms sleep, so a little under 1 s.
    assert!(
        back >= Duration::from_millis(950),
        "failed back {back:?} after the last plug, before hold_up"
    );
    assert_eq!(holders(&lab)?, vec!["ge0"]);
    Ok(())
}

#[test]
fn a_crash_after_any_step_of_a_move_is_repaired_on_restart() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let config = lab_config("hold_down = \"0\"", "");
    for step in ["prepared", "flipped", "cleaned"] {
        let mut daemon = Daemon::start_with_env(&lab, 0, &config, &[("BATON_FAILPOINT", step)])?;
        daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
        lab.pull_cable(0, 0)?;
        let status = daemon.wait_exit(Duration::from_secs(5))?;
        assert!(!status.success(), "{step}: the failpoint did not fire");
        let daemon = daemon.restart(&[])?;
        daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(3))?;
        assert_eq!(
            holders(&lab)?,
            vec!["ge1"],
            "{step}: address not on exactly one port"
        );
        assert_eq!(
            map_owner(&lab)?,
            "ge1",
            "{step}: the map disagrees with the kernel"
        );
        let answered = traffic::ping(&lab, INSTANCE.parse()?, 5);
        assert!(
            matches!(answered, Ok(5)),
            "{step}: no traffic after repair: {answered:?}\n{}",
            daemon.log_text()
        );
        // Back to ge0 for the next step.
        lab.plug_cable(0, 0)?;
        std::thread::sleep(Duration::from_millis(2200)); // hold_up
        let out = daemon.cli(&["move", "iscsi-a", "ge0"])?;
        assert!(
            out.status.success(),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(daemon);
    }
    Ok(())
}

#[test]
fn a_restart_under_traffic_is_hitless() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config("hold_down = \"0\"", ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let resets_before = traffic::tcp_counters(&lab)?.0;
    // Longer than the pings (≥ 4 s, more on a loaded machine): the resets
    // are read while the stream still runs.
    let stream_started = Instant::now();
    let stream = traffic::stream_in_background(&lab, 0, INSTANCE, STREAM_S as u32, "100M")?;
    let ping = pinger(&lab, 2000, "0.002");
    std::thread::sleep(Duration::from_millis(800));
    let mut daemon = daemon;
    daemon.stop();
    // Stopped: the address and the programs stay.
    assert_eq!(holders(&lab)?, vec!["ge0"]);
    assert!(
        lab.gw(0)
            .ns
            .ip(&["-d", "link", "show", "ge0"])?
            .contains("prog/xdp")
    );
    std::thread::sleep(Duration::from_millis(300));
    let daemon = daemon.restart(&[])?;
    assert_eq!(daemon.owner("iscsi-a")?.as_deref(), Some("ge0"));
    let answered = ping
        .join()
        .map_err(|_| anyhow::anyhow!("ping thread panicked"))??;
    assert_eq!(answered, 2000, "packets lost across the restart");
    // Before the stream's end: iperf3's own teardown may end with a RST.
    let resets = traffic::tcp_counters(&lab)?.0 - resets_before;
    read_before_the_streams_end(stream_started)?;
    let result = stream
        .join()
        .map_err(|_| anyhow::anyhow!("iperf thread panicked"))??;
    traffic::stream_survived(&result, STREAM_S)?;
    assert_eq!(resets, 0, "TCP resets across the restart");
    assert!(
        daemon.status()?["instances"][0]["last_move"].is_null(),
        "the restart moved something"
    );
    assert_eq!(holders(&lab)?, vec!["ge0"]);
    Ok(())
}

/// A reload that takes the owner port off an instance's list moves it
/// make-before-break, as `baton move` does: no probe (on the old code its
/// own port answered the probe, the port was refused as `address-in-use`,
/// and the instance was placed nowhere for ~10 s), no packet lost, an
/// owner in every status read.
#[test]
fn a_reload_that_narrows_the_ports_is_a_planned_move() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let config = lab_config("", "");
    let daemon = Daemon::start(&lab, 0, &config)?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let ping = pinger(&lab, 1500, "0.002");
    std::thread::sleep(Duration::from_millis(500));
    let narrowed = config.replace("ports = [\"ge0\", \"ge1\"]", "ports = [\"ge1\"]");
    assert_ne!(narrowed, config, "the lab config lists ge0 and ge1");
    std::fs::write(&daemon.config, narrowed)?;
    let out = daemon.cli(&["reload"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every read until the ping ends (~2 s after the reload) names an owner.
    let mut owners = Vec::new();
    while !ping.is_finished() {
        owners.push(daemon.owner("iscsi-a")?);
        std::thread::sleep(Duration::from_millis(10));
    }
    let answered = ping
        .join()
        .map_err(|_| anyhow::anyhow!("ping thread panicked"))??;
    assert!(owners.len() >= 20, "only {} status reads", owners.len());
    assert!(
        owners.iter().all(Option::is_some),
        "no owner in {} of {} reads after the reload\n{}",
        owners.iter().filter(|o| o.is_none()).count(),
        owners.len(),
        daemon.log_text()
    );
    assert_eq!(owners.last().cloned().flatten().as_deref(), Some("ge1"));
    assert_eq!(answered, 1500, "packets lost in the narrowing reload");
    assert_eq!(holders(&lab)?, vec!["ge1"]);
    let last = &daemon.status()?["instances"][0]["last_move"];
    assert_eq!(last["kind"], "planned", "{last}");
    Ok(())
}

#[test]
fn a_planned_move_loses_no_packet() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config("", ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let resets_before = traffic::tcp_counters(&lab)?.0;
    let stream_started = Instant::now();
    let stream = traffic::stream_in_background(&lab, 0, INSTANCE, STREAM_S as u32, "100M")?;
    let ping = pinger(&lab, 1500, "0.002");
    std::thread::sleep(Duration::from_millis(700));
    let out = daemon.cli(&["move", "iscsi-a", "ge1"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved to ge1"));
    std::thread::sleep(Duration::from_millis(700));
    let out = daemon.cli(&["move", "iscsi-a", "ge0"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answered = ping
        .join()
        .map_err(|_| anyhow::anyhow!("ping thread panicked"))??;
    assert_eq!(answered, 1500, "packets lost during planned moves");
    // Before the stream's end: iperf3's own teardown may end with a RST.
    let resets = traffic::tcp_counters(&lab)?.0 - resets_before;
    read_before_the_streams_end(stream_started)?;
    let result = stream
        .join()
        .map_err(|_| anyhow::anyhow!("iperf thread panicked"))??;
    traffic::stream_survived(&result, STREAM_S)?;
    assert_eq!(resets, 0, "TCP resets during planned moves");
    assert_eq!(holders(&lab)?, vec!["ge0"]);
    // Refusals: not one of its ports; a port that is down.
    let out = daemon.cli(&["move", "iscsi-a", "ge7"])?;
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("not one of iscsi-a's ports")
    );
    lab.pull_cable(0, 1)?;
    std::thread::sleep(Duration::from_millis(100));
    let out = daemon.cli(&["move", "iscsi-a", "ge1"])?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ge1 cannot take iscsi-a: port-down"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn an_invalid_reload_changes_nothing_and_a_valid_one_applies() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let config = lab_config("", "");
    let daemon = Daemon::start(&lab, 0, &config)?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let before = daemon.status()?;
    std::fs::write(
        &daemon.config,
        config.replace("ports = [\"ge0\", \"ge1\"]", "ports = [\"ge0\", \"ge9\"]"),
    )?;
    let out = daemon.cli(&["reload"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("instances.iscsi-a.ports[1]: port \"ge9\" is not defined")
            && err.contains("nothing changed"),
        "{err}"
    );
    let after = daemon.status()?;
    let placement =
        |s: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
            s["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        i["name"].clone(),
                        i["owner"].clone(),
                        i["last_move"].clone(),
                    )
                })
                .collect()
        };
    assert_eq!(placement(&before), placement(&after));
    assert_eq!(holders(&lab)?, vec!["ge0"]);

    let more =
        config + "[instances.iscsi-b]\naddress = \"192.0.2.101/24\"\nports = [\"ge1\", \"ge0\"]\n";
    std::fs::write(&daemon.config, more)?;
    let out = daemon.cli(&["reload"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_owner("iscsi-b", "ge1", Duration::from_secs(3))?;
    assert_eq!(daemon.owner("iscsi-a")?.as_deref(), Some("ge0"));
    Ok(())
}

#[test]
fn the_control_socket_is_root_only() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config("", ""))?;
    assert_eq!(
        std::fs::metadata(&daemon.socket)?.permissions().mode() & 0o777,
        0o600
    );
    // Open the file up, so only the daemon's SO_PEERCRED check stands in the way.
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666))?;
    std::fs::set_permissions(&daemon.dir, std::fs::Permissions::from_mode(0o755))?;
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(baton_lab::baton_bin()?)
        .args(["status", "--socket"])
        .arg(&daemon.socket)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("root only (peer uid 65534)"), "{err}");
    Ok(())
}

#[test]
fn metrics_show_the_failover() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config("hold_down = \"0\"", ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let scrape = || -> anyhow::Result<String> {
        let body = lab
            .gw(0)
            .ns
            .http_get("127.0.0.1:9750".parse()?, "/metrics")?;
        anyhow::ensure!(body.starts_with("HTTP/1.1 200"), "{body}");
        Ok(body)
    };
    let value = |body: &str, series: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let before = scrape()?;
    assert_eq!(
        value(
            &before,
            "baton_instance_owner{instance=\"iscsi-a\",port=\"ge0\"}"
        ),
        Some(1.0),
        "{before}"
    );
    assert_eq!(value(&before, "baton_port_up{port=\"ge0\"}"), Some(1.0));
    assert_eq!(
        value(
            &before,
            "baton_moves_total{kind=\"initial\",result=\"done\"}"
        ),
        Some(1.0)
    );

    // One iSCSI session: its PDUs by opcode (services = [3260] makes 3260 an iSCSI port).
    let target = baton_lab::iscsi::Target::start(&lab.gw(0).ns, INSTANCE.parse()?, 8)?;
    let inq = lab
        .client
        .command("iscsi-inq")
        .args(["-i", "iqn.2026-11.lab.baton:client", &target.url()])
        .output()?;
    anyhow::ensure!(inq.status.success(), "iscsi-inq failed");
    let iscsi = scrape()?;
    for (dir, opcode) in [
        ("rx", "login-request"),
        ("rx", "logout-request"),
        ("tx", "login-response"),
    ] {
        let series = format!(
            "baton_iscsi_pdus_total{{instance=\"iscsi-a\",port=\"ge0\",direction=\"{dir}\",opcode=\"{opcode}\"}}"
        );
        assert_eq!(value(&iscsi, &series), Some(1.0), "{series} in {iscsi}");
    }
    drop(target);

    traffic::ping(&lab, INSTANCE.parse()?, 5)?;
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(2))?;
    let after = scrape()?;
    assert_eq!(
        value(
            &after,
            "baton_instance_owner{instance=\"iscsi-a\",port=\"ge1\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        value(
            &after,
            "baton_instance_owner{instance=\"iscsi-a\",port=\"ge0\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &after,
            "baton_moves_total{kind=\"failover\",result=\"done\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        value(&after, "baton_move_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(value(&after, "baton_port_up{port=\"ge0\"}"), Some(0.0));
    let rx = value(
        &after,
        "baton_dataplane_rx_packets_total{instance=\"iscsi-a\",port=\"ge0\"}",
    )
    .unwrap_or(0.0);
    assert!(rx >= 5.0, "dataplane counters not exported: {after}");
    let other = lab.gw(0).ns.http_get("127.0.0.1:9750".parse()?, "/")?;
    assert!(other.starts_with("HTTP/1.1 404"));
    Ok(())
}

#[test]
fn metrics_can_be_turned_off() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(
        &lab,
        0,
        &(lab_config("", "") + "\n[metrics]\nenabled = false\n"),
    )?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    assert!(
        lab.gw(0)
            .ns
            .http_get("127.0.0.1:9750".parse()?, "/metrics")
            .is_err(),
        "metrics served although disabled"
    );
    Ok(())
}
