//! The daemon keeps what it wants true whoever changes the host: drift
//! repaired, lost events resynced, reloads and restarts applied by
//! difference, bounded control input, one daemon per pin dir. Each test is
//! a failure seen on the edge-triggered daemon, on the real daemon in a lab.
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec, traffic};
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

const INSTANCE: &str = "192.0.2.100";
const TIMERS: &str = "hold_down = \"0\"\nannounce_count = 2\nannounce_interval = \"50ms\"";
const MAC: &str = "mac = \"02:ba:70:00:00:01\"";

/// The devices of gateway 0 that hold `addr`.
fn holders_of(lab: &Lab, addr: &str) -> anyhow::Result<Vec<String>> {
    Ok(lab
        .holders(0, addr)?
        .into_iter()
        .map(|(dev, _)| dev)
        .collect())
}

/// Polls `f` until it holds; the time it took, or an error after `timeout`.
fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if f()? {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    anyhow::bail!("{what}: not within {timeout:?}")
}

fn last_repair(daemon: &Daemon) -> anyhow::Result<String> {
    let s = daemon.status()?;
    Ok(s["instances"][0]["last_repair"]["what"]
        .as_str()
        .unwrap_or("none")
        .to_string())
}

fn reachable(lab: &Lab) -> anyhow::Result<bool> {
    Ok(traffic::ping(lab, INSTANCE.parse()?, 3)? > 0)
}

#[test]
fn an_address_deleted_by_hand_is_put_back() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    lab.gw(0)
        .ns
        .ip(&["addr", "del", &format!("{INSTANCE}/24"), "dev", "ge0"])?;
    let took = wait_for("address back on ge0", Duration::from_secs(1), || {
        Ok(holders_of(&lab, INSTANCE)? == ["ge0"])
    })?;
    assert_eq!(last_repair(&daemon)?, "address", "{}", daemon.log_text());
    assert!(reachable(&lab)?, "service unreachable after the repair");
    println!("address repaired {took:?} after the deletion");
    Ok(())
}

#[test]
fn a_macvlan_set_down_by_hand_is_brought_up() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, MAC))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let dev = holders_of(&lab, INSTANCE)?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no device holds the address"))?;
    assert!(dev.starts_with("bt"), "address on {dev}, not a macvlan");
    lab.gw(0).ns.ip(&["link", "set", &dev, "down"])?;
    wait_for(
        "macvlan up with the address",
        Duration::from_secs(1),
        || {
            let link = lab.gw(0).ns.ip(&["-br", "link", "show", "dev", &dev])?;
            Ok(link.contains(" UP ") && holders_of(&lab, INSTANCE)? == [dev.clone()])
        },
    )?;
    assert_eq!(last_repair(&daemon)?, "device");
    assert!(reachable(&lab)?, "service unreachable after the repair");
    Ok(())
}

#[test]
fn a_cable_pulled_while_events_overrun_is_still_seen() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    // A tiny receive buffer: the burst below overruns it for certain.
    let daemon = Daemon::start_with_env(
        &lab,
        0,
        &lab_config(TIMERS, ""),
        &[("BATON_NETLINK_RCVBUF", "4096")],
    )?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let pid = daemon.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    baton_lab::run_checked("kill", &["-STOP", &pid.to_string()])?;
    let batch: String = (0..300)
        .map(|i| format!("link add ob{i}a type veth peer name ob{i}b\n"))
        .collect();
    let file = daemon.dir.join("burst.ip");
    std::fs::write(&file, batch)?;
    let burst = lab.gw(0).ns.ip(&["-batch", &file.display().to_string()]);
    lab.pull_cable(0, 0)?;
    baton_lab::run_checked("kill", &["-CONT", &pid.to_string()])?;
    burst?;
    let took = daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(3))?;
    assert_eq!(holders_of(&lab, INSTANCE)?, ["ge1"]);
    assert!(
        daemon.log_shows("full resync", Duration::from_secs(1)),
        "no resync logged: {}",
        daemon.log_text()
    );
    println!("moved {took:?} after SIGCONT");
    Ok(())
}

#[test]
fn an_endless_control_line_is_cut_off() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, ""))?;
    let pid = daemon.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let mut s = std::os::unix::net::UnixStream::connect(&daemon.socket)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    // The daemon stops reading after 64 KiB; writes then fail or block.
    for _ in 0..64 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.contains("longer than 65536 bytes"),
        "answer: {answer:?} after {sent} bytes"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| baton_lab::kb_field(l, "VmRSS:"))
        .unwrap_or(u64::MAX);
    assert!(rss_kb < 64 * 1024, "daemon RSS {rss_kb} kB after the flood");
    daemon.status()?;
    Ok(())
}

#[test]
fn a_reload_that_narrows_the_ports_leaves_nothing_on_the_old_one() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, MAC))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let narrowed =
        lab_config(TIMERS, MAC).replace("ports = [\"ge0\", \"ge1\"]", "ports = [\"ge1\"]");
    std::fs::write(&daemon.config, narrowed)?;
    let out = daemon.cli(&["reload"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(3))?;
    let holders = holders_of(&lab, INSTANCE)?;
    assert_eq!(holders.len(), 1, "holders: {holders:?}");
    let links = lab.gw(0).ns.ip(&["-br", "link", "show"])?;
    let on_ge0: Vec<&str> = links
        .lines()
        .filter(|l| l.starts_with("bt") && l.contains("@ge0"))
        .collect();
    assert!(on_ge0.is_empty(), "macvlans left on ge0: {on_ge0:?}");
    assert!(reachable(&lab)?);
    Ok(())
}

#[test]
fn a_restart_removes_what_a_deleted_instance_had() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let second = "[instances.iscsi-b]\naddress = \"192.0.2.101/24\"\nports = [\"ge0\", \"ge1\"]\nmac = \"02:ba:70:00:00:02\"";
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, second))?;
    daemon.wait_owner("iscsi-b", "ge0", Duration::from_secs(3))?;
    assert_eq!(holders_of(&lab, "192.0.2.101")?.len(), 1);
    let mut daemon = daemon;
    daemon.stop();
    std::fs::write(&daemon.config, lab_config(TIMERS, ""))?;
    let daemon = daemon.restart(&[])?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    wait_for("iscsi-b's address gone", Duration::from_secs(2), || {
        Ok(holders_of(&lab, "192.0.2.101")?.is_empty())
    })?;
    let links = lab.gw(0).ns.ip(&["-br", "link", "show"])?;
    assert!(
        !links.lines().any(|l| l.starts_with("bt")),
        "macvlans left: {links}"
    );
    let table = daemon.dataplane_instances()?;
    assert!(
        !table.to_string().contains("192.0.2.101"),
        "map entry left: {table}"
    );
    Ok(())
}

#[test]
fn a_second_daemon_on_the_same_pin_dir_is_refused() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, ""))?;
    let pid = daemon.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let started = Instant::now();
    let log = daemon.dir.join("second.log");
    let mut second = lab
        .gw(0)
        .ns
        .command(baton_lab::baton_bin()?)
        .args(["run", "-c"])
        .arg(&daemon.config)
        .arg("--pin-dir")
        .arg(&lab.gw(0).pin_dir)
        .arg("--socket")
        .arg(daemon.dir.join("second.sock"))
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let status = loop {
        if let Some(s) = second.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(3) {
            second.kill()?;
            second.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(&log)?;
    assert!(
        status.is_some_and(|s| !s.success()),
        "second daemon still running after 3 s: {err}"
    );
    assert!(
        err.contains(&format!("pid {pid}")),
        "holder not named: {err}"
    );
    daemon.status()?;
    Ok(())
}

#[test]
fn a_port_created_again_gets_its_programs_back() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let g = lab.gw(0);
    // ge1 goes away and comes back as a new device (a driver reload).
    lab.replace_port(0, 1)?;
    wait_for("XDP on the new ge1", Duration::from_secs(2), || {
        Ok(g.ns.ip(&["link", "show", "dev", "ge1"])?.contains("xdp"))
    })?;
    // And it serves: the instance can fail over to it.
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(3))?;
    assert!(reachable(&lab)?);
    Ok(())
}

#[test]
fn the_dataplane_bench_leaves_a_live_daemons_maps_alone() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    // The entries (not their counters, which live traffic moves).
    let entries = || -> anyhow::Result<Vec<String>> {
        Ok(daemon
            .dataplane_instances()?
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{} {} {} {}", e["address"], e["id"], e["owner"], e["mac"]))
            .collect())
    };
    let before = entries()?;
    let out = baton_lab::dataplane::baton(lab.gw(0), &["dataplane", "bench", "--repeat", "1000"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entries()?, before, "the bench wrote into the live map");
    let dirs: Vec<String> = std::fs::read_dir("/sys/fs/bpf")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&lab.prefix) && n.contains("-bench-"))
        .collect();
    assert!(dirs.is_empty(), "bench pins left: {dirs:?}");
    Ok(())
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" of the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0))
}

#[test]
fn accept_errors_back_off_instead_of_spinning() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, ""))?;
    let pid = daemon.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    // Leave the daemon four spare descriptors, then open more connections:
    // accept fails with EMFILE while the backlog stays readable.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    // The soft limit only: raising it again needs no privilege.
    let limit = format!("--nofile={}:", open + 4);
    baton_lab::run_checked("prlimit", &["--pid", &pid.to_string(), &limit])?;
    let held: Vec<_> = (0..32)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&daemon.socket).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid)? - before;
    // 2 s at 100 ticks/s: a spinning accept loop burns ~200.
    assert!(used < 20, "{used} ticks of CPU in 2 s with accept failing");
    assert!(
        daemon.log_text().contains("accept failed"),
        "{}",
        daemon.log_text()
    );
    drop(held);
    // And it serves again once descriptors are free.
    let unlimited = "--nofile=1024:";
    baton_lab::run_checked("prlimit", &["--pid", &pid.to_string(), unlimited])?;
    std::thread::sleep(Duration::from_millis(1200));
    daemon.status()?;
    Ok(())
}

#[test]
fn the_kernel_refusing_one_instance_stops_no_other() -> anyhow::Result<()> {
    // IPv6 is off in this lab's gateway: the kernel refuses every IPv6
    // address, so instance v6-broken can never be placed.
    let lab = Lab::build(&LabSpec::default())?;
    let config = baton_lab::daemon::with_ipv6_instance(&lab_config(TIMERS, ""), "v6-broken");
    let daemon = Daemon::start(&lab, 0, &config)?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    wait_for("the refusal recorded", Duration::from_secs(3), || {
        Ok(daemon.status()?.to_string().contains("retry-backoff"))
    })?;
    // The other instance still fails over.
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(3))?;
    assert!(reachable(&lab)?);
    // The failing one is retried with a growing pause, not in a tight loop.
    std::thread::sleep(Duration::from_secs(3));
    let tries = daemon.log_text().matches("move failed").count();
    assert!(
        (2..=6).contains(&tries),
        "{tries} failed moves in ~4 s: {}",
        daemon.log_text()
    );
    Ok(())
}

#[test]
fn a_restart_with_another_ingress_hook_moves_the_ports_to_it() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let mut daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let g = lab.gw(0);
    assert!(g.ns.ip(&["link", "show", "dev", "ge0"])?.contains("xdp"));
    daemon.stop();
    std::fs::write(
        &daemon.config,
        format!("[daemon]\ningress = \"tcx\"\n\n{}", lab_config(TIMERS, "")),
    )?;
    let daemon = daemon.restart(&[])?;
    for port in ["ge0", "ge1"] {
        assert!(
            !g.ns.ip(&["link", "show", "dev", port])?.contains("xdp"),
            "{port} still has XDP"
        );
        let pins: Vec<String> = std::fs::read_dir(g.pin_dir.join("links"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert!(
            pins.contains(&format!("tc-ingress-{port}")) && !pins.contains(&format!("xdp-{port}")),
            "pins: {pins:?}"
        );
    }
    // The restart moved nothing, and the instance still fails over.
    assert_eq!(daemon.owner("iscsi-a")?.as_deref(), Some("ge0"));
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(3))?;
    assert!(reachable(&lab)?);
    Ok(())
}

#[test]
fn a_reload_refuses_what_needs_a_restart_and_says_why() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &lab_config(TIMERS, ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    std::fs::write(
        &daemon.config,
        format!("[daemon]\ningress = \"tcx\"\n\n{}", lab_config(TIMERS, "")),
    )?;
    let out = daemon.cli(&["reload"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "reload accepted an ingress change");
    assert!(err.contains("[daemon] ingress changed"), "{err}");
    // Nothing changed: XDP still on the ports.
    assert!(
        lab.gw(0)
            .ns
            .ip(&["link", "show", "dev", "ge0"])?
            .contains("xdp")
    );
    Ok(())
}

#[test]
fn a_later_move_cancels_the_earlier_moves_announcements() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    // Twenty announcements 100 ms apart: the first move's still going when we
    // move back, even on a loaded machine.
    let timers =
        "hold_down = \"0\"\nhold_up = \"0\"\nannounce_count = 20\nannounce_interval = \"100ms\"";
    let daemon = Daemon::start(&lab, 0, &lab_config(timers, ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    // The start-up's own rounds over first.
    std::thread::sleep(Duration::from_millis(2200));
    let ge0 = lab.gw(0).ns.mac("ge0")?;
    let ge1 = lab.gw(0).ns.mac("ge1")?;
    let capture = lab.capture(&lab.client, "eth0", "arp")?;
    lab.pull_cable(0, 0)?;
    daemon.wait_owner("iscsi-a", "ge1", Duration::from_secs(2))?;
    lab.plug_cable(0, 0)?;
    std::thread::sleep(Duration::from_millis(250));
    let out = daemon.cli(&["move", "iscsi-a", "ge0"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1300));
    let lines = capture.lines()?;
    // The reply form names the MAC in the ARP payload (TC egress may have
    // sent a stale one out of the new owner, but it still says ge1).
    let announces = |l: &String, mac: &str| l.contains(&format!("192.0.2.100 is-at {mac}"));
    let first_ge1 = lines.iter().position(|l| announces(l, &ge1));
    let last_ge1 = lines.iter().rposition(|l| announces(l, &ge1));
    // The move back's first announcement (the start-up's are before ge1's).
    let move_back =
        first_ge1.and_then(|first| (first..lines.len()).find(|&i| announces(&lines[i], &ge0)));
    let rounds_for_ge1 = lines.iter().filter(|l| announces(l, &ge1)).count();
    // The causal claim: once ge0 announces again, ge1 never does; and the
    // move back came while ge1's rounds were still due (else nothing was
    // cancelled and the test proved nothing).
    assert!(
        matches!((last_ge1, move_back), (Some(last), Some(back)) if last < back)
            && rounds_for_ge1 < 20,
        "ge1 announced {rounds_for_ge1} of 20 rounds; its last at line {last_ge1:?}, \
         the move back's first at line {move_back:?}: {lines:#?}"
    );
    Ok(())
}

/// A NOTIFY_SOCKET for gw0's daemon, as systemd's (reads time out after
/// 50 ms), and its path. In the daemon's own directory: removed with it,
/// also on failure.
fn notify_socket(lab: &Lab) -> anyhow::Result<(std::os::unix::net::UnixDatagram, String)> {
    let dir = std::env::temp_dir().join(format!("{}-gw0-daemon", lab.prefix));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok((sock, path.display().to_string()))
}

#[test]
fn systemd_hears_ready_and_a_watchdog_that_stops_with_the_loop() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let (sock, path_s) = notify_socket(&lab)?;
    let daemon = Daemon::start_with_env(
        &lab,
        0,
        &lab_config(TIMERS, ""),
        &[("NOTIFY_SOCKET", &path_s), ("WATCHDOG_USEC", "200000")],
    )?;
    // What arrives in `window`: (READY seen, WATCHDOG count).
    let listen = |window: Duration| {
        let (mut ready, mut dogs) = (false, 0);
        let started = Instant::now();
        let mut buf = [0u8; 512];
        while started.elapsed() < window {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                ready |= msg.contains("READY=1");
                dogs += msg.matches("WATCHDOG=1").count();
            }
        }
        (ready, dogs)
    };
    let (ready, dogs) = listen(Duration::from_millis(1000));
    assert!(ready, "no READY=1");
    // Fed every 100 ms (half of WATCHDOG_USEC).
    assert!((6..=14).contains(&dogs), "{dogs} WATCHDOG=1 in 1 s");
    let pid = daemon
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no pid"))?
        .to_string();
    baton_lab::run_checked("kill", &["-STOP", &pid])?;
    // A ping sent just before the stop may still sit in the socket: wait
    // until every thread is stopped, then drop what was queued before.
    baton_lab::wait_until("every thread stopped", Duration::from_secs(2), || {
        Ok(all_threads_stopped(&pid))
    })?;
    listen(Duration::from_millis(50));
    let (_, stopped) = listen(Duration::from_millis(600));
    baton_lab::run_checked("kill", &["-CONT", &pid])?;
    assert_eq!(
        stopped, 0,
        "the watchdog was fed while the loop was stopped"
    );
    let (_, again) = listen(Duration::from_millis(500));
    assert!(again >= 3, "{again} WATCHDOG=1 after SIGCONT");
    Ok(())
}

/// Every thread of `pid` is in the stopped state (`T` in its stat).
fn all_threads_stopped(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

/// systemd's STATUS= follows the daemon: placed after the first placement
/// (it stayed "placed 0 of 1" before), then the move a pulled cable made.
#[test]
fn systemd_status_follows_placement_and_moves() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let (sock, path_s) = notify_socket(&lab)?;
    let _daemon = Daemon::start_with_env(
        &lab,
        0,
        &lab_config(TIMERS, ""),
        &[("NOTIFY_SOCKET", &path_s)],
    )?;
    // The STATUS= lines until `want` arrives (or `within` passes).
    let statuses = |want: &str, within: Duration| {
        let mut seen: Vec<String> = Vec::new();
        let started = Instant::now();
        let mut buf = [0u8; 512];
        while started.elapsed() < within && !seen.iter().any(|l| l == want) {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.extend(
                    msg.lines()
                        .filter_map(|l| l.strip_prefix("STATUS="))
                        .map(str::to_string),
                );
            }
        }
        seen
    };
    let seen = statuses("placed 1 of 1 instances", Duration::from_secs(3));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("placed 1 of 1 instances"),
        "STATUS= lines: {seen:?}"
    );
    lab.pull_cable(0, 0)?;
    let seen = statuses("placed 1 of 1 instances; 1 move", Duration::from_secs(3));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("placed 1 of 1 instances; 1 move"),
        "STATUS= lines after the pull: {seen:?}"
    );
    Ok(())
}
