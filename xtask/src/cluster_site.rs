//! The cluster bench's site: two gateways running one system (baton or
//! keepalived), tgtd on both, a storage link on each, and what a
//! repetition does to them (a gateway failed, a handover, a storage link
//! down, a target killed, the HA link cut) and reads back.
use crate::cluster_keepalived as keepalived;
use crate::demo::{capture_iscsi_data, finish_iscsi_perf, iscsi_perf};
use anyhow::{Context as _, Result, bail};
use baton_lab::cluster::{ClusterLab, TwoOwnerChecker, now_of_day};
use baton_lab::daemon::Daemon;
use baton_lab::traffic::HeldConnection;
use baton_lab::{iscsi, probe};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const A: &str = "192.0.2.100";
pub const B: &str = "192.0.2.101";
pub const INSTANCE: &str = "iscsi-a";
/// The idle service the client holds a connection to (both gateways).
pub const SERVICE_PORT: u16 = 7000;
pub const TIMERS: &str =
    "hold_down = \"0\"\nprobe_time = \"50ms\"\nannounce_count = 3\nannounce_interval = \"100ms\"";
pub const FAST: &str = "heartbeat = \"50ms\"\ndead_after = \"300ms\"\nowner_deadline = \"600ms\"";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum System {
    Baton,
    Keepalived { tuned: bool },
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Baton => "baton",
            System::Keepalived { tuned: false } => "keepalived (defaults: VRRPv2, advert_int 1)",
            System::Keepalived { tuned: true } => "keepalived (VRRPv3, advert_int 0.1)",
        }
    }
    /// How long after a failure to watch: past the takeover and the
    /// initiator's next retransmission after it (200 ms doubling).
    pub fn window(self) -> Duration {
        match self {
            System::Keepalived { tuned: false } => Duration::from_secs(10),
            _ => Duration::from_secs(4),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Case {
    /// The whole gateway: its process killed, its cables pulled.
    UnitFailure,
    /// A planned move (keepalived: stopped with SIGTERM).
    Handover,
    /// The owner's storage link (san0) down, everything else fine.
    StorageLink,
    /// The owner's tgtd killed, everything else fine.
    TargetDied,
}

impl Case {
    pub const ALL: [Case; 4] = [
        Case::UnitFailure,
        Case::Handover,
        Case::StorageLink,
        Case::TargetDied,
    ];
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Sample {
    pub takeover_ms: Option<f64>,
    pub outage_ms: f64,
    pub client_told_ms: Option<f64>,
    /// The initiator's first data segment on a new connection: logged in
    /// again to the survivor, doing I/O (None: not within the window).
    pub relogin_ms: Option<f64>,
    pub two_owner_windows: usize,
}

/// The gateways running one system.
pub struct Site {
    pub c: ClusterLab,
    pub system: System,
    pub daemons: Vec<Option<Daemon>>,
    /// The probe's echo responders, one per gateway.
    pub _echoes: Vec<probe::Echo>,
    /// tgtd on both gateways: one target name, one shared LUN file.
    pub targets: Vec<iscsi::Target>,
    pub lun: PathBuf,
}

impl Site {
    pub fn start(system: System) -> Result<Site> {
        let c = ClusterLab::build()?;
        let lun = std::env::temp_dir().join(format!("{}-shared-lun.img", c.lab.prefix));
        std::fs::File::create(&lun)?.set_len(128 << 20)?;
        let mut site = Site {
            c,
            system,
            daemons: vec![None, None],
            _echoes: Vec::new(),
            targets: Vec::new(),
            lun,
        };
        let server = hold_server(A);
        let addr: IpAddr = A.parse()?;
        // The services first (each listening on the address before the
        // gateway holds it), then the gateways: one whose target ran first
        // would rightly take the address.
        for g in 0..2 {
            let ns = &site.c.lab.gw(g).ns;
            ns.run(&["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"])?;
            // The storage link a `[health]` check / track_interface watches.
            ns.ip(&[
                "link", "add", "san0", "type", "veth", "peer", "name", "san0p",
            ])?;
            ns.ip(&["link", "set", "san0", "up"])?;
            ns.ip(&["link", "set", "san0p", "up"])?;
            site.c.lab.spawn(ns, &["python3", "-c", &server])?;
            site._echoes.push(probe::Echo::start(ns, addr)?);
            let target = iscsi::Target::start_shared(ns, addr, &site.lun)?;
            std::fs::write(site.pidfile(g), format!("{}\n", target.pid()))?;
            site.targets.push(target);
        }
        for g in 0..2 {
            site.start_gateway(g)?;
        }
        let started = Instant::now();
        while site.owner()?.is_none() {
            if started.elapsed() > Duration::from_secs(15) {
                bail!("{}: nobody holds {A}", system.name());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(site)
    }

    /// Gateway `g`'s tgtd pid, for baton's `[health.target]` and
    /// keepalived's script.
    pub fn pidfile(&self, g: usize) -> PathBuf {
        std::env::temp_dir().join(format!("{}-tgtd-gw{g}.pid", self.c.lab.prefix))
    }

    pub fn keepalived_dir(&self, g: usize) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}-keepalived{g}", self.c.lab.prefix))
    }

    pub fn start_gateway(&mut self, g: usize) -> Result<()> {
        match self.system {
            System::Baton => {
                let cluster = format!(
                    "{FAST}\ntickle = true\n\n[health.san]\nlinks = [\"san0\"]\n\n\
                     [health.target]\npidfile = \"{}\"\n",
                    self.pidfile(g).display()
                );
                self.daemons[g] = Some(Daemon::start(
                    &self.c.lab,
                    g,
                    &ClusterLab::config(g, TIMERS, &cluster),
                )?);
            }
            System::Keepalived { tuned } => {
                let dir = self.keepalived_dir(g);
                let cmd = keepalived::prepare(&dir, g, tuned, &self.pidfile(g))?;
                self.c
                    .lab
                    .spawn(&self.c.lab.gw(g).ns, &["sh", "-c", &cmd])?;
            }
        }
        Ok(())
    }

    /// Kills gateway `g`'s failover process with SIGKILL (keepalived: its
    /// VRRP child too) or stops it with SIGTERM.
    pub fn stop_gateway(&mut self, g: usize, kill: bool) -> Result<()> {
        match self.system {
            System::Baton => {
                if let Some(mut d) = self.daemons[g].take() {
                    if kill {
                        d.kill();
                    } else {
                        d.stop();
                    }
                }
            }
            System::Keepalived { .. } => keepalived::stop(&self.keepalived_dir(g), kill),
        }
        Ok(())
    }

    /// The gateway whose ge0 (or macvlan) holds A now.
    pub fn owner(&self) -> Result<Option<usize>> {
        for g in 0..2 {
            let held = match self.system {
                System::Baton => match &self.daemons[g] {
                    Some(d) => d.owner(INSTANCE)?.is_some(),
                    None => false,
                },
                System::Keepalived { .. } => self
                    .c
                    .lab
                    .gw(g)
                    .ns
                    .run(&["ip", "-4", "addr", "show"])?
                    .contains(&format!("{A}/")),
            };
            if held {
                return Ok(Some(g));
            }
        }
        Ok(None)
    }

    /// Gateway `g` can take the address again: baton's checks pass (a link
    /// after hold_up, a process after rise); keepalived's instance left
    /// FAULT (its script runs every second).
    fn wait_hostable(&self, g: usize) -> Result<()> {
        let Some(d) = &self.daemons[g] else {
            std::thread::sleep(Duration::from_secs(3));
            return Ok(());
        };
        let began = Instant::now();
        loop {
            let status = d.status()?;
            let checks = status["checks"].as_array().cloned().unwrap_or_default();
            if !checks.is_empty() && checks.iter().all(|c| c["ok"] == true) {
                return Ok(());
            }
            if began.elapsed() > Duration::from_secs(15) {
                bail!("gw{g}'s checks did not pass again: {checks:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every baton member holds its lease and is not fenced.
    pub fn members_unfenced(&self) -> Result<bool> {
        for d in self.daemons.iter().flatten() {
            if !d.status()?["cluster"]["fenced"].is_null() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What the daemons say, for a repetition that went wrong.
    pub fn diagnose(&self) -> String {
        let mut out = String::new();
        for (g, d) in self.daemons.iter().enumerate() {
            let Some(d) = d else { continue };
            let status = d
                .cli(&["status"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            out += &format!("gw{g} status:\n{status}\ngw{g} log (last 25 lines):\n");
            let log = d.log_text();
            let lines: Vec<&str> = log.lines().collect();
            out += &lines[lines.len().saturating_sub(25)..].join("\n");
            out += "\n";
        }
        out
    }

    pub fn repetition(&mut self, case: Case) -> Result<Sample> {
        let from = match self.owner()? {
            Some(g) => g,
            None => bail!("nobody holds the address\n{}", self.diagnose()),
        };
        let to = 1 - from;
        let addr: IpAddr = A.parse()?;
        let conn = HeldConnection::open(&self.c.lab, addr, SERVICE_PORT)?;
        let checker = TwoOwnerChecker::start(&self.c.lab, &[A, B])?;
        let window = self.system.window();
        let lead = Duration::from_millis(1000);
        let pcap = std::env::temp_dir().join(format!("{}-iscsi.pcap", self.c.lab.prefix));
        let capture = capture_iscsi_data(&self.c.lab, addr, &pcap)?;
        let probe_run = probe::run(
            &self.c.lab.client,
            addr,
            10_000,
            lead + window + Duration::from_millis(500),
        )?;
        let perf_t0 = Instant::now();
        let (_, perf_out, perf_pid) = iscsi_perf(
            &self.c.lab,
            &self.targets[from].url(),
            perf_t0,
            (lead + window).as_secs() + 1,
            true,
        )?;
        // The initiator logged in, its connection published (baton samples
        // every 500 ms), the probe runs.
        std::thread::sleep(lead);
        let failed = Instant::now();
        let failed_at = now_of_day();
        let failed_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64()
            * 1000.0;
        match case {
            // The unit dies at once: its cables go before its process could
            // say goodbye. The HA link first (keepalived seeing its VIP's
            // port go, or its VRRP child SIGTERMed by the parent's death,
            // sends a priority-0 advert over it), then the standby port (a
            // daemon alive between two pulls would move the address there
            // and announce it).
            Case::UnitFailure => {
                self.c.pull_ha(from)?;
                self.c.lab.pull_cable(from, 1)?;
                self.c.lab.pull_cable(from, 0)?;
                self.stop_gateway(from, true)?;
            }
            Case::Handover => match self.system {
                System::Baton => {
                    let d = self.daemons[from].as_ref().context("no daemon")?;
                    let out = d.cli(&["move", INSTANCE, "--member", &format!("gw{to}")])?;
                    if !out.status.success() {
                        bail!(
                            "baton move failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
                System::Keepalived { .. } => self.stop_gateway(from, false)?,
            },
            Case::StorageLink => {
                self.c
                    .lab
                    .gw(from)
                    .ns
                    .ip(&["link", "set", "san0p", "down"])?;
            }
            Case::TargetDied => self.targets[from].crash()?,
        }
        let told = conn
            .ended_within(window.saturating_sub(failed.elapsed()))
            .map(|(at, _)| at.duration_since(failed).as_secs_f64() * 1000.0);
        let remaining = window.saturating_sub(failed.elapsed());
        std::thread::sleep(remaining);
        let probe = probe_run
            .join()
            .map_err(|_| anyhow::anyhow!("probe panicked"))??;
        let o = checker.finish()?;
        let relogin_ms = self.relogin(&pcap, capture, perf_out, perf_pid, failed_unix_ms)?;
        let takeover_ms = o
            .first_answer_after(A, to, failed_at)
            .map(|first| (first - failed_at) * 1000.0);
        let windows: Vec<&String> = o
            .double_answers
            .iter()
            .chain(&o.after_announcement)
            .collect();
        if !windows.is_empty() {
            println!("[bench cluster]   two-owner windows: {windows:?}");
        }
        if takeover_ms.is_none() && std::env::var("BATON_BENCH_DEBUG").is_ok() {
            println!(
                "[bench cluster]   no takeover seen (from gw{from}):\n{}",
                self.diagnose()
            );
        }
        // Back to two gateways: the failed one rejoins as the standby, its
        // addresses gone as after a reboot.
        if case == Case::UnitFailure {
            let ns = &self.c.lab.gw(from).ns;
            for dev in ns
                .run(&["ip", "-o", "-4", "addr", "show"])?
                .lines()
                .filter(|l| l.contains(A) || l.contains(B))
            {
                if let (Some(name), Some(addr)) =
                    (dev.split_whitespace().nth(1), dev.split_whitespace().nth(3))
                {
                    ns.run(&[
                        "ip",
                        "addr",
                        "del",
                        addr,
                        "dev",
                        name.trim_end_matches(':').split('@').next().unwrap_or(name),
                    ])?;
                }
            }
            self.c.lab.plug_cable(from, 0)?;
            self.c.lab.plug_cable(from, 1)?;
            self.c.plug_ha(from)?;
        }
        match case {
            Case::StorageLink => {
                self.c.lab.gw(from).ns.ip(&["link", "set", "san0p", "up"])?;
            }
            Case::TargetDied => {
                let target = iscsi::Target::start_shared(&self.c.lab.gw(from).ns, addr, &self.lun)?;
                std::fs::write(self.pidfile(from), format!("{}\n", target.pid()))?;
                self.targets[from] = target;
            }
            Case::UnitFailure => self.start_gateway(from)?,
            Case::Handover => {
                if matches!(self.system, System::Keepalived { .. }) {
                    self.start_gateway(from)?;
                }
            }
        }
        self.wait_hostable(from)?;
        // Healthy again before the next: etcd with all members (a unit's
        // member rejoining lags; killing the other unit before it has would
        // leave no quorum), baton's members unfenced, VRRP's backup settled.
        self.c.wait_healthy(Duration::from_secs(15))?;
        let settled = Instant::now();
        while self.system == System::Baton && !self.members_unfenced()? {
            if settled.elapsed() > Duration::from_secs(15) {
                bail!(
                    "a member stayed fenced after the rejoin\n{}",
                    self.diagnose()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1000));
        Ok(Sample {
            takeover_ms,
            outage_ms: probe.longest_gap_ms,
            client_told_ms: told,
            relogin_ms,
            two_owner_windows: o.double_answers.len() + o.after_announcement.len(),
        })
    }

    /// The initiator's first data segment on a new connection after
    /// `failed_ms` (of the Unix clock), in ms after it; ends iscsi-perf
    /// and the capture.
    pub fn relogin(
        &self,
        pcap: &Path,
        capture: u32,
        perf_out: std::thread::JoinHandle<Result<String>>,
        perf_pid: u32,
        failed_ms: f64,
    ) -> Result<Option<f64>> {
        let _ = finish_iscsi_perf(perf_out, perf_pid);
        self.c.lab.kill(capture)?;
        let frames = crate::pcap::pcap_frames(pcap)?;
        let _ = std::fs::remove_file(pcap);
        crate::pcap::relogin_after(&frames, failed_ms)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.targets.clear();
        let _ = std::fs::remove_file(&self.lun);
        for g in 0..2 {
            let _ = std::fs::remove_dir_all(self.keepalived_dir(g));
        }
    }
}

/// A TCP listener on `addr`:7000 (IP_FREEBIND: before the address is here)
/// that accepts and holds every connection.
fn hold_server(addr: &str) -> String {
    format!(
        "import socket\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_IP, 15, 1)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{addr}', {SERVICE_PORT}))\n\
         s.listen(64)\n\
         held = []\n\
         while True:\n\
         \x20   held.append(s.accept()[0])\n"
    )
}
