//! RFC 6069 at the move: with the default 2 s hold_down both ends' timers
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

/// One lab at a time: the claim is about the kernel's reaction, not about
/// how the VM shares two cores among parallel labs.
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
        lab.client_ipv6()?;
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
    // The claim is causal: the backoff was ended, so the retransmission
    // follows the announcement, not the backed-off timer (~1.1 s here,
    // asserted below for the run without the revert). The bound is a
    // quarter of TCP's minimum RTO (200 ms): wide of the figure (2-3 ms at
    // the median) because this VM stalls for up to ~25 ms (the stall meter
    // of `cargo xtask bench failover`). The speed itself is measured by
    // `cargo xtask bench revert` (20 pulls each way, p50 and p99).
    assert!(
        on.after_garp_ms <= 50.0,
        "{side}: {:.1} ms with the revert: the backoff was not ended",
        on.after_garp_ms
    );
    // Without the revert the next retransmission waits for the backed-off
    // timer (~1.1 s here), except where the gateway sends over IPv6: there
    // the segments queued on the failed port's neighbour entry each make
    // the kernel send the socket an ICMPv6 address unreachable when baton
    // flushes that port's neighbours (ndisc_error_report; seen on lo), an
    // RFC 6069 revert of its own. That case is printed, not asserted.
    if !(reverse && v6) {
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

/// A Python program in `ns` whose stdin is a pipe: each line it reads
/// releases its next step.
fn stepped(ns: &baton_lab::Netns, program: &str) -> anyhow::Result<std::process::Child> {
    use std::process::Stdio;
    Ok(ns
        .command("python3")
        .args(["-c", program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

fn release(child: &mut std::process::Child) -> anyhow::Result<()> {
    use std::io::Write;
    let stdin = child
        .stdin
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    stdin.write_all(b"go\n")?;
    Ok(stdin.flush()?)
}

fn finish(child: std::process::Child) -> anyhow::Result<(String, String)> {
    let out = child.wait_with_output()?;
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `ss -tni` lines of `state` in the gateway's namespace.
fn sockets_in(lab: &Lab, state: &str) -> anyhow::Result<String> {
    lab.gw(0).ns.run(&["ss", "-Htni", "state", state])
}

/// The gateway's own handshake in flight across the move: its SYNs have
/// been dropped long enough for a retransmission, so at the revert it is
/// in SYN_SENT with backoff > 0, where an ICMP would abort it. (The client
/// drops them by a full accept queue: a listener with backlog 0 and one
/// connection not accepted yet.) Removing the state rule fails this test.
#[test]
fn the_gateways_handshake_in_flight_is_not_aborted() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config("hold_down = \"2s\"", ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let mut listener = stepped(
        &lab.client,
        "import socket, sys\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('192.0.2.1', 5301)); l.listen(0); l.settimeout(30)\n\
         filler = socket.create_connection(('192.0.2.1', 5301))\n\
         print('full', flush=True); sys.stdin.readline()\n\
         l.accept(); c, peer = l.accept(); print('accepted', peer[0], flush=True)\n",
    )?;
    lab.client.wait_listening(5301)?;
    std::thread::sleep(Duration::from_millis(200));
    // This kernel retries its first four SYNs at a constant 1 s with backoff
    // 0 (tcp_syn_linear_timeouts): with 0, SYN_SENT backs off at once, as
    // on older kernels and after four retries here.
    lab.gw(0)
        .ns
        .sysctl("net.ipv4.tcp_syn_linear_timeouts", "0")?;
    let connect = stepped(
        &lab.gw(0).ns,
        "import socket\n\
         s = socket.create_connection(('192.0.2.1', 5301), timeout=30, source_address=('192.0.2.100', 0))\n\
         print('connected', flush=True)\n",
    )?;
    // Past the first SYN retransmission (1 s): backoff 1.
    std::thread::sleep(Duration::from_millis(1500));
    let before = sockets_in(&lab, "syn-sent")?;
    assert!(
        before.contains("192.0.2.100") && before.contains("backoff:"),
        "no backed-off SYN_SENT socket on the instance address before the move: {before:?}"
    );
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(4))?;
    let (sockets, icmps) = revived(&daemon)?;
    let after = sockets_in(&lab, "syn-sent")?;
    release(&mut listener)?;
    let (connected, error) = finish(connect)?;
    let (accepted, _) = finish(listener)?;
    println!(
        "SYN_SENT before the move: {}; after the revert ({sockets} sockets, {icmps} ICMPs): {}; client: {}",
        before.trim(),
        after.trim(),
        accepted.trim()
    );
    assert!(
        connected.contains("connected"),
        "the gateway's handshake was aborted: {error}"
    );
    assert!(accepted.contains("accepted 192.0.2.100"), "{accepted}");
    Ok(())
}

/// The client's handshake in flight across the move (the gateway holds it
/// in SYN_RECV: the client's final ACKs are dropped on its way out by an
/// htb class whose queue holds nothing) completes after it.
#[test]
fn the_clients_handshake_in_flight_completes_after_the_move() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config("hold_down = \"2s\"", ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let server = stepped(
        &lab.gw(0).ns,
        "import socket\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('192.0.2.100', 5302)); l.listen(8); l.settimeout(30)\n\
         c, peer = l.accept(); c.settimeout(30); data = c.recv(16); c.sendall(b'ok')\n\
         print('served', peer[0], data.decode(), flush=True)\n",
    )?;
    lab.gw(0).ns.wait_listening(5302)?;
    let tc = |args: &str| -> anyhow::Result<String> {
        let mut all = vec!["tc"];
        all.extend(args.split_whitespace());
        lab.client.run(&all)
    };
    tc("qdisc add dev eth0 root handle 1: htb default 1")?;
    tc("class add dev eth0 parent 1: classid 1:1 htb rate 10gbit")?;
    tc("class add dev eth0 parent 1: classid 1:2 htb rate 10gbit")?;
    tc("qdisc add dev eth0 parent 1:2 handle 20: pfifo limit 0")?;
    // Pure ACKs (flags 0x10, IPv4 header of 20 bytes) to port 5302.
    tc(
        "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match ip dport 5302 0xffff match u8 0x10 0xff at 33 flowid 1:2",
    )?;
    let mut client = stepped(
        &lab.client,
        "import socket, sys\n\
         s = socket.create_connection(('192.0.2.100', 5302), timeout=30)\n\
         print('syn-ack', flush=True); sys.stdin.readline()\n\
         s.sendall(b'hello'); print('reply', s.recv(16).decode(), flush=True)\n",
    )?;
    std::thread::sleep(Duration::from_millis(1500));
    let before = sockets_in(&lab, "syn-recv")?;
    assert!(
        before.contains("192.0.2.100:5302"),
        "no SYN_RECV on the instance address before the move: {before:?}"
    );
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(4))?;
    let (sockets, icmps) = revived(&daemon)?;
    tc("qdisc del dev eth0 root")?;
    release(&mut client)?;
    let (reply, error) = finish(client)?;
    let (served, _) = finish(server)?;
    println!(
        "SYN_RECV before the move: {}; revert: {sockets} sockets, {icmps} ICMPs; gateway: {}",
        before.trim(),
        served.trim()
    );
    assert!(
        reply.contains("reply ok"),
        "the client's connection failed: {error}"
    );
    assert!(served.contains("served 192.0.2.1 hello"), "{served}");
    Ok(())
}
