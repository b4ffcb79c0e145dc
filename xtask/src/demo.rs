//! The lab demo: a client, a switch and a gateway with two ports; baton on the
//! gateway with `config/examples/lab.toml`; tgtd serving a LUN on the instance
//! address; iscsi-perf, iperf3 and the 10 kHz probe from the client; the
//! primary's cable pulled, later plugged back. Prints a report, writes
//! target/lab/report.json and report.svg, and fails if any session reset.
use crate::report::{self, Mark, Report};
use anyhow::{Context as _, Result, bail};
use baton_lab::daemon::Daemon;
use baton_lab::{Lab, LabSpec, iscsi, probe};
use std::io::{BufRead as _, Read as _};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DURATION: Duration = Duration::from_secs(30);
const PULL_AT: Duration = Duration::from_secs(6);
const PLUG_AT: Duration = Duration::from_secs(14);
const INSTANCE: &str = "iscsi-a";

pub(crate) type Stamped<T> = Arc<Mutex<Vec<(f64, T)>>>;

pub fn run(bin: &Path) -> Result<()> {
    let began = Instant::now();
    baton_lab::use_baton_bin(bin.to_path_buf());
    let _ = baton_lab::sweep_stale();
    let root = crate::workspace_root();
    let out_dir = root.join("target/lab");
    std::fs::create_dir_all(&out_dir)?;
    let example = root.join("config/examples/lab.toml");
    let config_text = std::fs::read_to_string(&example)
        .with_context(|| format!("reading {}", example.display()))?;
    let config = baton_config::parse(
        &example.display().to_string(),
        &config_text,
        &baton_config::Host::this_machine(),
    )
    .map_err(|d| anyhow::anyhow!("{d}"))?;
    let addr: IpAddr = config
        .instances
        .get(INSTANCE)
        .context("lab.toml has no iscsi-a")?
        .address
        .addr();

    println!(
        "[demo] lab: client -- switch (bridge) -- gateway ge0/ge1; baton with {}",
        example.display()
    );
    let lab = Lab::build(&LabSpec::default())?;
    let daemon = Daemon::start(&lab, 0, &config_text)?;
    daemon.wait_owner(INSTANCE, "ge0", Duration::from_secs(5))?;
    let target = iscsi::Target::start(&lab.gw(0).ns, addr, 256)?;
    let _echo = probe::Echo::start(&lab.gw(0).ns, addr)?;
    let tcp_before = baton_lab::traffic::tcp_counters(&lab)?;
    println!(
        "[demo] traffic for {}s: iscsi-perf (16 x 8 KiB reads), iperf3, UDP probe at 10 kHz",
        DURATION.as_secs()
    );
    let pcap = daemon.dir.join("iscsi-data.pcap");
    let capture = capture_iscsi_data(&lab, addr, &pcap)?;
    // Every time in the report is ms after t0.
    let t0 = Instant::now();
    let t0_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64()
        * 1000.0;
    let (events, _follower) = follow_events(&daemon, t0)?;
    let events_text = follow_events_text(&daemon)?;
    let ms = move || t0.elapsed().as_secs_f64() * 1000.0;
    let probe_run = probe::run(&lab.client, addr, 10_000, DURATION)?;
    let (iops, iscsi_out, _) = iscsi_perf(&lab, &target.url(), t0, DURATION.as_secs() - 1, false)?;
    lab.spawn(
        &lab.gw(0).ns,
        &["iperf3", "-s", "-1", "-B", &addr.to_string()],
    )?;
    lab.gw(0).ns.wait_listening(5201)?;
    let iperf = lab
        .client
        .command("iperf3")
        .args([
            "-c",
            &addr.to_string(),
            "-t",
            &(DURATION.as_secs() - 1).to_string(),
            "-i",
            "0.2",
            "-b",
            "300M",
            "-J",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let iperf_started = ms();

    let mut marks = vec![Mark::new(0.0, "traffic starts")];
    let _ = began;
    let mut nexus_start = Vec::new();
    let mut nexus_end = Vec::new();
    let (mut pulled, mut plugged) = (false, false);
    while t0.elapsed() < DURATION + Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(100));
        let now = t0.elapsed();
        if nexus_start.is_empty() && now > Duration::from_secs(2) {
            nexus_start = target.nexus()?;
        }
        // The last look while iscsi-perf (DURATION - 1 s) is still logged in.
        if now + Duration::from_millis(2500) >= DURATION && nexus_end.is_empty() {
            nexus_end = target.nexus()?;
        }
        if !pulled && now >= PULL_AT {
            lab.pull_cable(0, 0)?;
            marks.push(Mark::new(ms(), "cable of ge0 pulled"));
            pulled = true;
        }
        if !plugged && now >= PLUG_AT {
            lab.plug_cable(0, 0)?;
            marks.push(Mark::new(ms(), "cable of ge0 plugged"));
            plugged = true;
        }
        if now.as_millis() % 1000 < 100 {
            let last_iops = iops
                .lock()
                .map(|v| v.last().map(|x| x.1).unwrap_or(0))
                .unwrap_or(0);
            let owner = daemon.owner(INSTANCE)?.unwrap_or_else(|| "-".into());
            print!(
                "\r[demo] t={:>4.1}s  iSCSI {last_iops:>6} IOPS  owner {owner:<4}  events {:>2}   ",
                now.as_secs_f64(),
                events.lock().map(|e| e.len()).unwrap_or(0)
            );
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
        }
    }
    println!();
    let probe = probe_run
        .join()
        .map_err(|_| anyhow::anyhow!("probe panicked"))??;
    let iscsi_text = iscsi_out
        .join()
        .map_err(|_| anyhow::anyhow!("iscsi-perf reader panicked"))??;
    let mut iperf_json = String::new();
    iperf
        .wait_with_output()
        .map(|o| iperf_json = String::from_utf8_lossy(&o.stdout).into_owned())?;
    let tcp_after = baton_lab::traffic::tcp_counters(&lab)?;
    lab.kill(capture)?;
    let iscsi_segments_ms: Vec<f64> = crate::pcap::pcap_times_ms(&pcap)?
        .into_iter()
        .map(|t| t - t0_unix_ms)
        .collect();
    let owner_now = daemon.owner(INSTANCE)?;
    let status_text = String::from_utf8_lossy(&daemon.cli(&["status"])?.stdout).into_owned();
    for (t, e) in events
        .lock()
        .map_err(|_| anyhow::anyhow!("events poisoned"))?
        .iter()
    {
        marks.extend(Mark::from_event(*t, e, &config.timers));
    }
    marks.retain(|m| !m.label.is_empty());
    marks.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));

    let report = Report::build(report::Inputs {
        marks,
        probe,
        iops: iops.lock().map(|v| v.clone()).unwrap_or_default(),
        iscsi_text,
        iperf_json: &iperf_json,
        iperf_started_ms: iperf_started,
        nexus_start,
        nexus_end,
        tcp_before,
        tcp_after,
        owner_now,
        demo_seconds: 0.0,
        dataplane: daemon.dataplane_instances()?,
        iscsi_segments_ms,
    })?;
    let mut report = report;
    report.demo_seconds = began.elapsed().as_secs_f64();
    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    crate::report_svg::svg(&report, &out_dir.join("report.svg"))?;
    let _ = std::fs::copy(&daemon.log, out_dir.join("baton.log"));
    println!("[demo] baton status (on the gateway, now):\n{status_text}");
    println!("[demo] baton events during the run (ms since the daemon started):");
    drop(events_text.1);
    for line in events_text.0.lock().map(|v| v.clone()).unwrap_or_default() {
        println!("  {line}");
    }
    println!("{}", report.render());
    println!(
        "[demo] wrote {0}/report.json, {0}/report.svg and {0}/baton.log in {1:.0} s",
        out_dir.display(),
        report.demo_seconds
    );
    if let Some(why) = report.failure() {
        bail!("the product's claim failed: {why}");
    }
    println!(
        "[demo] no session reset, no re-login: baton kept the iSCSI session and the TCP stream alive"
    );
    Ok(())
}

/// The target's data segments as the client receives them (a pcap of
/// 64-byte heads: cheap at 25,000 IOPS), for the iSCSI stream's stall;
/// returns the capture's pid.
pub(crate) fn capture_iscsi_data(lab: &Lab, addr: IpAddr, pcap: &Path) -> Result<u32> {
    lab.capture_pcap(
        &lab.client,
        "eth0",
        &format!("tcp and src host {addr} and src port 3260 and greater 100"),
        pcap,
    )
}

/// Follows `baton events --json`, stamping each event when it arrives.
fn follow_events(
    daemon: &Daemon,
    t0: Instant,
) -> Result<(Stamped<serde_json::Value>, baton_lab::Peer)> {
    let mut child = daemon.events(true, std::process::Stdio::piped())?;
    let stdout = child.stdout.take().context("events stdout")?;
    let events: Stamped<serde_json::Value> = Arc::default();
    let sink = events.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let (Ok(v), Ok(mut e)) = (serde_json::from_str(&line), sink.lock()) {
                e.push((t0.elapsed().as_secs_f64() * 1000.0, v));
            }
        }
    });
    Ok((events, baton_lab::Peer::from_child(child)))
}

/// `baton events` as a user sees it, collected line by line.
fn follow_events_text(daemon: &Daemon) -> Result<(Arc<Mutex<Vec<String>>>, baton_lab::Peer)> {
    let mut child = daemon.events(false, std::process::Stdio::piped())?;
    let stdout = child.stdout.take().context("events stdout")?;
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    Ok((lines, baton_lab::Peer::from_child(child)))
}

/// Waits for an [`iscsi_perf`] run to end by itself (-t), SIGKILLs one
/// still stuck after 3 s more; its output (Err: its reader panicked).
pub(crate) fn finish_iscsi_perf(
    output: std::thread::JoinHandle<Result<String>>,
    pid: u32,
) -> Result<Result<String>> {
    let waited = Instant::now();
    while !output.is_finished() && waited.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !output.is_finished() {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    output
        .join()
        .map_err(|_| anyhow::anyhow!("iscsi-perf reader panicked"))
}

/// iscsi-perf for `secs` with a line per second; returns the IOPS series,
/// its full output and its pid. Without `reconnect` (-x 0) a broken session shows
/// as an error; with it libiscsi logs in again (a cluster's takeover).
#[allow(clippy::type_complexity)]
pub(crate) fn iscsi_perf(
    lab: &Lab,
    url: &str,
    t0: Instant,
    secs: u64,
    reconnect: bool,
) -> Result<(Stamped<u64>, std::thread::JoinHandle<Result<String>>, u32)> {
    let secs = secs.to_string();
    let mut args = vec!["-m", "16", "-b", "16", "-t", &secs, "-l"];
    args.extend(["-x", if reconnect { "3" } else { "0" }]);
    args.push(url);
    let mut child = lab
        .client
        .command("iscsi-perf")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("iscsi-perf stdout")?;
    let iops: Stamped<u64> = Arc::default();
    let sink = iops.clone();
    let handle = std::thread::spawn(move || -> Result<String> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let mut line = Vec::new();
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                all.push(b);
                if b == b'\n' || b == b'\r' {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if let Some(v) = text
                        .split("iops current ")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next()?.parse().ok())
                        && let Ok(mut s) = sink.lock()
                    {
                        s.push((t0.elapsed().as_secs_f64() * 1000.0, v));
                    }
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
        let status = child.wait()?;
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut err)?;
        }
        Ok(format!(
            "{}{}exit: {status}\n",
            String::from_utf8_lossy(&all),
            err
        ))
    });
    Ok((iops, handle, pid))
}
