//! One network namespace, and processes running inside it.
use anyhow::{Context as _, Result, bail};
use std::io::Read;
use std::process::{Child, Command, Stdio};

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str, role: &str, ipv6: bool) -> Result<Netns> {
        let name = format!("{prefix}-{role}");
        run_checked("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        if !ipv6 {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// A command that runs inside this namespace. nsenter (unlike `ip netns
    /// exec`) keeps our mount namespace, so /sys/fs/bpf pins stay visible.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `args` in the namespace; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("empty command")?;
        let out = self
            .command(program)
            .args(rest)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{args:?} in {} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_checked("ip", &full)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// MAC address of a device in this namespace.
    pub fn mac(&self, dev: &str) -> Result<String> {
        let out = self.ip(&["-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing ip -j link")?;
        v[0]["address"]
            .as_str()
            .map(str::to_string)
            .context("no address in ip -j link output")
    }

    /// GET `path` from an HTTP server at `addr` inside this namespace.
    pub fn http_get(&self, addr: std::net::SocketAddr, path: &str) -> Result<String> {
        let (ns, path) = (self.path(), path.to_string());
        std::thread::spawn(move || -> Result<String> {
            use std::io::{Read as _, Write as _};
            crate::probe::enter(&ns)?;
            let mut s =
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("http thread panicked"))?
    }

    /// Waits up to 5 s for a TCP listener on `port` in this namespace.
    pub fn wait_listening(&self, port: u16) -> Result<()> {
        let filter = format!("sport = :{port}");
        for _ in 0..500 {
            if !self.run(&["ss", "-Hltn", &filter])?.trim().is_empty() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        bail!(
            "nothing listens on TCP port {port} in {} after 5 s",
            self.name
        )
    }

    /// A long-running process in the namespace, killed when the [`Peer`] drops.
    pub fn spawn(&self, args: &[&str]) -> Result<Peer> {
        let (program, rest) = args.split_first().context("empty command")?;
        let child = self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {args:?} in {}", self.name))?;
        Ok(Peer::from_child(child))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A process started in a namespace (nsenter execs it, so the pid is its own).
pub struct Peer {
    child: Option<Child>,
    /// Readers of its piped stdout and stderr, so that a peer nobody reads
    /// until it stops (etcd logging every lost peer) never blocks on a full
    /// pipe.
    drains: [Option<std::thread::JoinHandle<Vec<u8>>>; 2],
}

/// Reads `from` to its end on a thread of its own.
fn drain(from: Option<impl Read + Send + 'static>) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    let mut from = from?;
    Some(std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        all
    }))
}

/// What a drain read; a child the peer left behind may hold the pipe
/// open, so 2 s at most.
fn collect(d: Option<std::thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(d) = d else { return Vec::new() };
    for _ in 0..200 {
        if d.is_finished() {
            return d.join().unwrap_or_default();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Vec::new()
}

impl Peer {
    pub fn from_child(mut child: Child) -> Peer {
        let drains = [drain(child.stdout.take()), drain(child.stderr.take())];
        Peer {
            child: Some(child),
            drains,
        }
    }

    /// Exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Stops it (SIGTERM, then SIGKILL after 2 s) and returns its output.
    pub fn stop(mut self) -> Result<std::process::Output> {
        let mut child = self.child.take().context("peer already stopped")?;
        terminate(&mut child);
        let status = child.wait().context("waiting for a peer")?;
        let [stdout, stderr] = std::mem::take(&mut self.drains).map(collect);
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }
}

fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// Runs a command in the caller's namespace; its stdout or an error with stderr.
pub fn run_checked(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed? cargo xtask setup)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
