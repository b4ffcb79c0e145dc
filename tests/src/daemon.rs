//! A `baton run` daemon in a lab gateway, with its own config file, control
//! socket, pin directory and log file, stopped and cleaned up on drop.
use crate::{Lab, Peer, baton_bin};
use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The lab's standard gateway config: `iscsi-a` (192.0.2.100/24) on ge0,
/// then ge1; `extra` is appended (more instances, [limits]...).
pub fn lab_config(timers: &str, extra: &str) -> String {
    format!(
        r#"[timers]
{timers}

[networks.storage]
subnets = ["192.0.2.0/24"]

[ports.ge0]
networks = ["storage"]

[ports.ge1]
networks = ["storage"]

[instances.iscsi-a]
address = "192.0.2.100/24"
ports = ["ge0", "ge1"]
services = [3260]
{extra}
"#
    )
}

/// `config` (a [`lab_config`]) with the storage network's IPv6 subnet and
/// an IPv6 instance `name`, 2001:db8::100/64 on ge0 then ge1.
pub fn with_ipv6_instance(config: &str, name: &str) -> String {
    config.replace(
        "subnets = [\"192.0.2.0/24\"]",
        "subnets = [\"192.0.2.0/24\", \"2001:db8::/64\"]",
    ) + &format!("[instances.{name}]\naddress = \"2001:db8::100/64\"\nports = [\"ge0\", \"ge1\"]\n")
}

/// CapabilityBoundingSet= of contrib/systemd/baton.service, read from it:
/// lowercase names without `cap_`.
pub fn unit_caps() -> Result<Vec<String>> {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/baton.service"),
    )?;
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .ok_or_else(|| anyhow::anyhow!("the unit has no CapabilityBoundingSet="))?;
    Ok(line
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect())
}

/// A [`Daemon::start_wrapped`] wrapper: exactly `caps` in the bounding
/// set, none inheritable, no_new_privs, and systemd's default
/// RLIMIT_MEMLOCK of 8 MiB (as the unit runs baton).
pub fn setpriv(caps: &[String]) -> Vec<String> {
    let bounding = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "prlimit".into(),
        "--memlock=8388608:8388608".into(),
        "--".into(),
        "setpriv".into(),
        format!("--bounding-set={bounding}"),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

pub struct Daemon {
    peer: Option<Peer>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pin_dir: PathBuf,
    ns_path: String,
    /// A command baton runs under (empty: none).
    pub wrapper: Vec<String>,
}

impl Daemon {
    /// Writes `config` and starts `baton run` in gateway `gw`; returns once
    /// its control socket answers.
    pub fn start(lab: &Lab, gw: usize, config: &str) -> Result<Daemon> {
        Self::start_with_env(lab, gw, config, &[])
    }

    pub fn start_with_env(
        lab: &Lab,
        gw: usize,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        Self::start_wrapped(lab, gw, config, env, &[])
    }

    /// Starts baton under `wrapper` (a command that execs its arguments).
    pub fn start_wrapped(
        lab: &Lab,
        gw: usize,
        config: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Result<Daemon> {
        let g = lab.gw(gw);
        let dir = std::env::temp_dir().join(format!("{}-gw{gw}-daemon", lab.prefix));
        std::fs::create_dir_all(&dir)?;
        let d = Daemon {
            peer: None,
            config: dir.join("baton.toml"),
            socket: dir.join("baton.sock"),
            log: dir.join("baton.log"),
            dir,
            pin_dir: g.pin_dir.clone(),
            ns_path: g.ns.path(),
            wrapper: wrapper.iter().map(|w| w.to_string()).collect(),
        };
        std::fs::write(&d.config, config)?;
        d.launch(env)
    }

    fn launch(mut self, env: &[(&str, &str)]) -> Result<Daemon> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns_path)).arg("--");
        // A wrapper (e.g. setpriv with a capability set) execs baton: same pid.
        cmd.args(&self.wrapper).arg(baton_bin()?);
        cmd.args(["run", "-c"])
            .arg(&self.config)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--socket")
            .arg(&self.socket);
        cmd.env("RUST_LOG", "info,baton=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting baton run")?;
        self.peer = Some(Peer::from_child(child));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self
                .cli(&["status", "--json"])
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                return Ok(self);
            }
            if let Some(p) = self.peer.as_mut()
                && let Some(status) = p.try_wait()?
            {
                bail!(
                    "baton run exited ({status}) before answering; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "baton run did not answer within 10 s; log:\n{}",
            self.log_text()
        )
    }

    /// SIGKILLs the daemon and starts it again with the same files (a
    /// crash and systemd's restart).
    pub fn crash_and_restart(mut self) -> Result<Daemon> {
        self.kill();
        self.launch(&[])
    }

    /// Stops the daemon (SIGTERM) and starts it again with the same files.
    pub fn restart(mut self, env: &[(&str, &str)]) -> Result<Daemon> {
        self.stop();
        self.launch(env)
    }

    /// Waits for the daemon to exit by itself (e.g. a failpoint abort).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(p) = self.peer.as_mut()
                && let Some(status) = p.try_wait()?
            {
                self.peer = None;
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("baton run still running after {timeout:?}")
    }

    /// The daemon's pid (nsenter execs baton, so it is baton's own).
    pub fn pid(&self) -> Option<u32> {
        self.peer.as_ref().map(Peer::pid)
    }

    pub fn stop(&mut self) {
        if let Some(p) = self.peer.take() {
            let _ = p.stop();
        }
    }

    /// SIGKILL: the daemon dies at whatever instruction it was on.
    pub fn kill(&mut self) {
        if let Some(p) = self.peer.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(p.pid() as i32, libc::SIGKILL) };
            let _ = p.stop();
        }
    }

    /// Runs a `baton` CLI command against this daemon's socket.
    /// Starts `baton events` (with `--json` when asked) against this
    /// daemon, writing to `stdout`.
    pub fn events(
        &self,
        json: bool,
        stdout: impl Into<std::process::Stdio>,
    ) -> Result<std::process::Child> {
        let mut cmd = std::process::Command::new(baton_bin()?);
        cmd.arg("events");
        if json {
            cmd.arg("--json");
        }
        cmd.arg("--socket")
            .arg(&self.socket)
            .stdout(stdout)
            .spawn()
            .context("starting baton events")
    }

    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new(baton_bin()?);
        cmd.args(args).arg("--socket").arg(&self.socket);
        Ok(cmd.output()?)
    }

    /// `baton dataplane instances --json` against this daemon's pinned maps,
    /// run in its namespace (port names resolve there).
    pub fn dataplane_instances(&self) -> Result<serde_json::Value> {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path))
            .arg("--")
            .arg(baton_bin()?)
            .args(["dataplane", "instances", "--json", "--pin-dir"])
            .arg(&self.pin_dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "baton dataplane instances: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["status", "--json"])?;
        if !out.status.success() {
            bail!("baton status: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The owner of an instance according to the daemon.
    pub fn owner(&self, instance: &str) -> Result<Option<String>> {
        Ok(self.instance(instance)?["owner"]
            .as_str()
            .map(str::to_string))
    }

    /// `instance`'s entry in the status.
    pub fn instance(&self, instance: &str) -> Result<serde_json::Value> {
        let s = self.status()?;
        s["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["name"] == instance)
            .cloned()
            .context("no such instance")
    }

    /// Polls until `instance` is owned by `port`, or fails after `timeout`.
    pub fn wait_owner(&self, instance: &str, port: &str, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.owner(instance)?.as_deref() == Some(port) {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!(
            "{instance} not on {port} after {timeout:?}; status: {}\nlog:\n{}",
            self.status()?,
            self.log_text()
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the log shows `needle` within `timeout`: the daemon's lines
    /// reach the file through its writer thread, a moment after the event.
    pub fn log_shows(&self, needle: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if started.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Load on a daemon's sockets: idle connections held open to the control
/// socket and the metrics endpoint, and a scraper at a steady rate.
pub struct SocketFlood {
    _control: Vec<std::os::unix::net::UnixStream>,
    _metrics: Vec<std::net::TcpStream>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    scraper: Option<std::thread::JoinHandle<u64>>,
}

impl SocketFlood {
    /// Ends the flood; the number of scrapes that were answered.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.scraper.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}

impl Daemon {
    /// `idle` connections to each socket (the metrics endpoint is on the
    /// gateway's loopback, 127.0.0.1:9750) and `scrapes_per_s` scrapes.
    pub fn flood(&self, idle: usize, scrapes_per_s: u32) -> Result<SocketFlood> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let control = (0..idle)
            .filter_map(|_| std::os::unix::net::UnixStream::connect(&self.socket).ok())
            .collect();
        let ns = self.ns_path.clone();
        let metrics = std::thread::spawn(move || -> Result<Vec<std::net::TcpStream>> {
            crate::probe::enter(&ns)?;
            Ok((0..idle)
                .filter_map(|_| std::net::TcpStream::connect("127.0.0.1:9750").ok())
                .collect())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (ns, halt) = (self.ns_path.clone(), stop.clone());
        let period = Duration::from_secs(1) / scrapes_per_s.max(1);
        let scraper = std::thread::spawn(move || {
            use std::io::{Read as _, Write as _};
            if crate::probe::enter(&ns).is_err() {
                return 0;
            }
            let mut answered = 0;
            let mut next = Instant::now();
            while !halt.load(Ordering::Relaxed) {
                next += period;
                let ok = (|| -> std::io::Result<bool> {
                    let mut s = std::net::TcpStream::connect("127.0.0.1:9750")?;
                    s.set_read_timeout(Some(Duration::from_secs(1)))?;
                    s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")?;
                    let mut body = Vec::new();
                    s.read_to_end(&mut body)?;
                    Ok(body.starts_with(b"HTTP/1.1 200"))
                })();
                answered += u64::from(ok.unwrap_or(false));
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            answered
        });
        Ok(SocketFlood {
            _control: control,
            _metrics: metrics,
            stop,
            scraper: Some(scraper),
        })
    }
}
