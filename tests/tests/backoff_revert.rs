//! RFC 6069 at the move: with the seed's 2 s hold_down both ends' timers
//! back off during the outage; baton's ICMPs end the backoff so the first
//! retransmission follows the first announcement at once, in both
//! directions, with no reset. With `revert_backoff = false` the old stall
//! is seen (the difference is the proof).
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec, traffic};
use std::time::Duration;

const INSTANCE: &str = "192.0.2.100";

/// tcpdump's "HH:MM:SS.micros" as seconds of the day.
fn seconds_of_day(line: &str) -> f64 {
    let t = line.split_whitespace().next().unwrap_or("0:0:0");
    t.split(':').fold(0.0, |acc, part| {
        acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
    })
}

struct Stall {
    /// First announcement -> first data segment of the sender (ms).
    after_garp_ms: f64,
    resets: u64,
    revived: u64,
}

/// One lab at a time: the ≤ 10 ms claim is about the kernel's reaction,
/// not about how the VM shares two cores among parallel labs.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A stream (`reverse`: the gateway sends) across a pulled cable, to the
/// IPv4 instance or (`v6`) to an IPv6 one.
fn stall(revert: bool, reverse: bool, v6: bool) -> anyhow::Result<Stall> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::build(&LabSpec {
        ipv6: v6,
        ..LabSpec::default()
    })?;
    let timers = format!(
        "hold_down = \"2s\"\nannounce_count = 3\nannounce_interval = \"100ms\"\nrevert_backoff = {revert}"
    );
    let (instance, client, name) = if v6 {
        ("2001:db8::100", "2001:db8::1", "iscsi-v6")
    } else {
        (INSTANCE, "192.0.2.1", "iscsi-a")
    };
    let config = if v6 {
        lab.client.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "eth0",
            "nodad",
        ])?;
        // The v6 instance alone: the IPv4 one would be placed first and
        // the status' first instance would be it.
        lab_config(&timers, "")
            .replace(
                "subnets = [\"192.0.2.0/24\"]",
                "subnets = [\"192.0.2.0/24\", \"2001:db8::/64\"]",
            )
            .replace(
                "[instances.iscsi-a]\naddress = \"192.0.2.100/24\"",
                "[instances.iscsi-v6]\naddress = \"2001:db8::100/64\"",
            )
    } else {
        lab_config(&timers, "")
    };
    let daemon = Daemon::start(&lab, 0, &config)?;
    daemon.wait_owner(name, "ge0", Duration::from_secs(3))?;
    let resets_before = traffic::tcp_counters(&lab)?.0;
    lab.spawn(&lab.gw(0).ns, &["iperf3", "-s", "-1", "-B", instance])?;
    lab.gw(0).ns.wait_listening(5201)?;
    let mut cmd = lab.client.command("iperf3");
    cmd.args(["-c", instance, "-t", "6", "-J", "-b", "20M"]);
    if reverse {
        cmd.arg("-R");
    }
    let iperf = std::thread::spawn(move || -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&cmd.output()?.stdout)?)
    });
    std::thread::sleep(Duration::from_millis(1200));
    // Frames to the client (announcements, the gateway's data) and from it.
    let to_client = lab.capture(
        &lab.client,
        "eth0",
        &format!(
            "arp or (icmp6 and ip6[40] == 136) or (tcp and src host {instance} and greater 200)"
        ),
    )?;
    let from_client = lab.capture(
        &lab.switch,
        "c0",
        &format!("tcp and src host {client} and greater 200"),
    )?;
    lab.pull_cable(0, 0)?;
    daemon.wait_owner(name, "ge1", Duration::from_secs(4))?;
    std::thread::sleep(Duration::from_millis(2500));
    let (to, from) = (to_client.lines()?, from_client.lines()?);
    let result = iperf
        .join()
        .map_err(|_| anyhow::anyhow!("iperf thread panicked"))??;
    traffic::stream_survived(&result, 6)?;
    let announcement = |l: &&String| {
        l.contains(&format!("Request who-has {instance} tell {instance}"))
            // Unsolicited, to all-nodes: baton's; the kernel's solicited
            // answers to the client's NS go to the client alone.
            || (l.contains(" > ff02::1:")
                && l.contains("neighbor advertisement")
                && l.contains(&format!("tgt is {instance}")))
    };
    let garp = to
        .iter()
        .find(announcement)
        .map(|l| seconds_of_day(l))
        .ok_or_else(|| anyhow::anyhow!("no announcement seen: {to:#?}"))?;
    let data = if reverse { &to } else { &from };
    let first = data
        .iter()
        .filter(|l| !l.contains("ARP") && !l.contains("ICMP6"))
        .map(|l| seconds_of_day(l))
        .find(|t| *t > garp)
        .ok_or_else(|| anyhow::anyhow!("no data after the announcement"))?;
    let revived = daemon.status()?["instances"][0]["last_move"]["revived_sockets"]
        .as_u64()
        .unwrap_or(0);
    Ok(Stall {
        after_garp_ms: (first - garp) * 1000.0,
        resets: traffic::tcp_counters(&lab)?.0 - resets_before,
        revived,
    })
}

fn check(reverse: bool, v6: bool) -> anyhow::Result<()> {
    let side = match (reverse, v6) {
        (true, false) => "gateway",
        (false, false) => "client",
        (true, true) => "gateway (IPv6)",
        (false, true) => "client (IPv6)",
    };
    let on = stall(true, reverse, v6)?;
    let off = stall(false, reverse, v6)?;
    println!(
        "{side} sends: first retransmission {:.1} ms after the first announcement with the revert ({} sockets revived), {:.1} ms without",
        on.after_garp_ms, on.revived, off.after_garp_ms
    );
    assert_eq!((on.resets, off.resets), (0, 0), "resets");
    assert!(on.revived >= 1, "no socket revived");
    assert!(
        on.after_garp_ms <= 10.0,
        "{side}: {:.1} ms with the revert",
        on.after_garp_ms
    );
    // Without the revert the next retransmission waits for the backed-off
    // timer. Over IPv4 that is seen every time (~1.1 s here); over IPv6
    // it was seen too, but not in every run (once the stream went on at
    // once after the NA), so there the difference is printed, not asserted.
    if !v6 {
        assert!(
            off.after_garp_ms >= 100.0,
            "{side}: {:.1} ms without the revert: the backoff it ends was not there",
            off.after_garp_ms
        );
    }
    Ok(())
}

#[test]
fn the_gateways_stream_resumes_at_the_announcement() -> anyhow::Result<()> {
    check(true, false)
}

#[test]
fn ipv6_streams_both_ways_resume_at_the_announcement() -> anyhow::Result<()> {
    check(true, true)?;
    check(false, true)
}

#[test]
fn the_clients_stream_resumes_at_the_announcement() -> anyhow::Result<()> {
    check(false, false)
}

/// Polls until the last move's revert has run; (sockets, ICMPs).
fn revived(daemon: &Daemon) -> anyhow::Result<(u64, u64)> {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let m = &daemon.status()?["instances"][0]["last_move"];
        if let (Some(s), Some(i)) = (m["revived_sockets"].as_u64(), m["revert_icmps"].as_u64()) {
            return Ok((s, i));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("the revert did not report")
}

#[test]
fn a_planned_move_has_no_outage_and_finds_nothing_to_revert() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config("hold_down = \"0\"", ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let iperf = traffic::stream_in_background(&lab, 0, INSTANCE, 3, "20M")?;
    std::thread::sleep(Duration::from_millis(1000));
    let out = daemon.cli(&["move", "iscsi-a", "ge1"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(revived(&daemon)?, (0, 0), "a planned move sent ICMPs");
    let result = iperf
        .join()
        .map_err(|_| anyhow::anyhow!("iperf thread panicked"))??;
    traffic::stream_survived(&result, 3)?;
    Ok(())
}

/// A regression check on real traffic: no handshake in flight is lost to
/// the revert. (The rule that keeps SYN_SENT/SYN_RECV sockets out is
/// proven by the unit test in daemon/revive.rs: here the socket's backoff
/// was still 0 at the revert, so this alone would not catch its removal.)
#[test]
fn a_connection_still_in_its_handshake_is_not_aborted() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config("hold_down = \"2s\"", ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    lab.spawn(&lab.client, &["iperf3", "-s", "-p", "5301", "-1"])?;
    lab.client.wait_listening(5301)?;
    lab.pull_cable(0, 0)?;
    // From the instance address, during the outage: its SYNs are lost and
    // retried, so at the move it is in SYN_SENT with backoff > 0, where an
    // ICMP would abort it.
    let mut connect = lab.gw(0).ns.command("python3");
    connect.args([
        "-c",
        "import socket; s = socket.create_connection(('192.0.2.1', 5301), timeout=10, source_address=('192.0.2.100', 0)); print('connected')",
    ]);
    let handshake = std::thread::spawn(move || connect.output());
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(4))?;
    let (sockets, icmps) = revived(&daemon)?;
    let out = handshake
        .join()
        .map_err(|_| anyhow::anyhow!("connect thread panicked"))??;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("connected"),
        "the handshake failed: {} (revert: {sockets} sockets, {icmps} ICMPs)",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
