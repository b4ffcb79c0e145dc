//! The lab: hosts built from network namespaces, veth pairs and a Linux
//! bridge, for baton's integration tests, demo and benchmarks.
//!
//! ```text
//!  client[eth0] ── c0 ┐
//!                     ├─ br0 (switch) ─┬─ g0p0 ── [ge0] gateway 0
//!                     │                └─ g0p1 ── [ge1]
//!                     └─ (g1p0, g1p1 for a second gateway; the HA network: [`cluster`])
//! ```
//! Every namespace and bpffs directory is named `bt<pid>x<seq>-ROLE`, so tests
//! run in parallel, and everything is removed on drop (also on panic).
//! [`sweep_stale`] removes what a killed test process left behind.
pub mod cluster;
pub mod daemon;
pub mod dataplane;
pub mod frames;
pub mod iscsi;
mod netns;
pub mod probe;
pub mod traffic;

pub use netns::{Netns, Peer, run_checked};

use anyhow::{Context as _, Result, bail};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The lab's IPv4 subnet (TEST-NET-1: documentation only, never routed).
pub const SUBNET: &str = "192.0.2.0/24";
pub const PREFIX: u8 = 24;
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix `bt<pid>x<seq>` for one lab's names.
pub fn unique_prefix() -> String {
    format!(
        "bt{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Clone, Debug)]
pub struct LabSpec {
    pub gateways: usize,
    /// Leave IPv6 enabled (off by default: its autoconfiguration chatter
    /// would make exact packet counts impossible).
    pub ipv6: bool,
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            gateways: 1,
            ipv6: false,
        }
    }
}

pub struct Port {
    /// Name inside the gateway (ge0, ge1).
    pub name: String,
    /// Name of the switch-side peer (g0p0 ...): pulling the cable downs it.
    pub switch_side: String,
    /// The port's own address (not an instance address).
    pub addr: Ipv4Addr,
}

pub struct Gateway {
    pub ns: Netns,
    pub ports: Vec<Port>,
    /// This gateway's own bpffs directory (`--pin-dir`).
    pub pin_dir: PathBuf,
}

pub struct Lab {
    pub prefix: String,
    pub client: Netns,
    pub switch: Netns,
    pub gateways: Vec<Gateway>,
    peers: std::sync::Mutex<Vec<Peer>>,
}

impl Lab {
    pub fn build(spec: &LabSpec) -> Result<Lab> {
        if spec.gateways == 0 || spec.gateways > 2 {
            bail!("a lab has one or two gateways, not {}", spec.gateways);
        }
        ensure_bpffs()?;
        let prefix = unique_prefix();
        // Namespaces are created first and owned by the Lab at once, so an error
        // part way through still removes everything.
        let switch = Netns::new(&prefix, "sw", spec.ipv6)?;
        let client = Netns::new(&prefix, "client", spec.ipv6)?;
        let mut lab = Lab {
            prefix: prefix.clone(),
            client,
            switch,
            gateways: Vec::new(),
            peers: Default::default(),
        };
        for g in 0..spec.gateways {
            let ns = Netns::new(&prefix, &format!("gw{g}"), spec.ipv6)?;
            let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{prefix}-gw{g}"));
            lab.gateways.push(Gateway {
                ns,
                ports: Vec::new(),
                pin_dir,
            });
        }

        let sw = &lab.switch;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        lab.client.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        cable(sw, "c0", &lab.client, "eth0")?;
        lab.client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/{PREFIX}"),
            "dev",
            "eth0",
        ])?;
        lab.client.ip(&["link", "set", "lo", "up"])?;

        for (g, gw) in lab.gateways.iter_mut().enumerate() {
            for key in ["all", "default"] {
                gw.ns
                    .sysctl(&format!("net.ipv4.conf.{key}.arp_ignore"), "1")?;
                gw.ns
                    .sysctl(&format!("net.ipv4.conf.{key}.arp_announce"), "2")?;
                gw.ns.sysctl(
                    &format!("net.ipv4.conf.{key}.ignore_routes_with_linkdown"),
                    "1",
                )?;
            }
            gw.ns.ip(&["link", "set", "lo", "up"])?;
            for p in 0..2 {
                let name = format!("ge{p}");
                let switch_side = format!("g{g}p{p}");
                cable(sw, &switch_side, &gw.ns, &name)?;
                let addr = Ipv4Addr::new(192, 0, 2, 10 + 10 * g as u8 + p as u8);
                gw.ns
                    .ip(&["addr", "add", &format!("{addr}/{PREFIX}"), "dev", &name])?;
                gw.ports.push(Port {
                    name,
                    switch_side,
                    addr,
                });
            }
        }
        Ok(lab)
    }

    pub fn gw(&self, g: usize) -> &Gateway {
        &self.gateways[g]
    }

    /// Pulls a cable the way a real failure looks: the switch side goes down,
    /// so the gateway port loses carrier but stays administratively up.
    /// The client's IPv6 address on the storage network, 2001:db8::1/64
    /// (no DAD: usable at once). The lab must be built with `ipv6`.
    pub fn client_ipv6(&self) -> Result<()> {
        self.client.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "eth0",
            "nodad",
        ])?;
        Ok(())
    }

    pub fn pull_cable(&self, g: usize, port: usize) -> Result<()> {
        self.switch.ip(&[
            "link",
            "set",
            &self.gateways[g].ports[port].switch_side,
            "down",
        ])?;
        Ok(())
    }

    pub fn plug_cable(&self, g: usize, port: usize) -> Result<()> {
        self.switch.ip(&[
            "link",
            "set",
            &self.gateways[g].ports[port].switch_side,
            "up",
        ])?;
        Ok(())
    }

    /// Replaces a gateway port with a new device of the same name (a
    /// driver reload, a hot-plugged NIC): the old veth pair is deleted and a
    /// new one cabled to the switch.
    pub fn replace_port(&self, g: usize, port: usize) -> Result<()> {
        let gw = &self.gateways[g];
        let p = &gw.ports[port];
        gw.ns.ip(&["link", "del", &p.name])?;
        cable(&self.switch, &p.switch_side, &gw.ns, &p.name)?;
        gw.ns.ip(&[
            "addr",
            "add",
            &format!("{}/{PREFIX}", p.addr),
            "dev",
            &p.name,
        ])?;
        Ok(())
    }

    /// Starts a long-running peer in `ns`; it is killed when the lab drops.
    pub fn spawn(&self, ns: &Netns, args: &[&str]) -> Result<u32> {
        let peer = ns.spawn(args)?;
        let pid = peer.pid();
        self.peers
            .lock()
            .map_err(|_| anyhow::anyhow!("peer list poisoned"))?
            .push(peer);
        Ok(pid)
    }

    /// Kills a peer started with [`Lab::spawn`].
    pub fn kill(&self, pid: u32) -> Result<()> {
        let mut peers = self
            .peers
            .lock()
            .map_err(|_| anyhow::anyhow!("peer list poisoned"))?;
        let i = peers
            .iter()
            .position(|p| p.pid() == pid)
            .context("no such peer")?;
        drop(peers.remove(i));
        Ok(())
    }

    /// Starts tcpdump on `dev` in `ns` (stopped and read by [`Capture::lines`]).
    pub fn capture(&self, ns: &Netns, dev: &str, filter: &str) -> Result<Capture> {
        let peer = ns.spawn(&[
            "tcpdump",
            "-i",
            dev,
            "-nn",
            "-e",
            "-l",
            "--immediate-mode",
            "-Q",
            "in",
            filter,
        ])?;
        // tcpdump needs a moment to open its socket; there is no readiness signal
        // short of parsing its stderr, which it only flushes at exit.
        std::thread::sleep(std::time::Duration::from_millis(700));
        Ok(Capture { peer })
    }

    /// Starts tcpdump writing the 64-byte heads of what `dev` in `ns`
    /// receives to a pcap at `path` (cheap at line rate, unlike text);
    /// stop it with [`Lab::kill`] and read it after. Returns its pid.
    pub fn capture_pcap(
        &self,
        ns: &Netns,
        dev: &str,
        filter: &str,
        path: &std::path::Path,
    ) -> Result<u32> {
        let path = path.display().to_string();
        let pid = self.spawn(
            ns,
            &[
                "tcpdump", "-i", dev, "-Q", "in", "-s", "64", "-w", &path, filter,
            ],
        )?;
        // As in `capture`: no readiness signal short of its stderr.
        std::thread::sleep(std::time::Duration::from_millis(700));
        Ok(pid)
    }

    /// (device, its lower port — or itself) for each device of gateway `g`
    /// that holds the IPv4 address `addr`.
    pub fn holders(&self, g: usize, addr: &str) -> Result<Vec<(String, String)>> {
        let out = self.gateways[g].ns.ip(&["-br", "-4", "addr", "show"])?;
        Ok(out
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .skip(2)
                    .any(|a| a.starts_with(&format!("{addr}/")))
            })
            .filter_map(|l| l.split_whitespace().next())
            .map(|d| match d.split_once('@') {
                Some((dev, lower)) => (dev.to_string(), lower.to_string()),
                None => (d.to_string(), d.to_string()),
            })
            .collect())
    }

    /// Every namespace name of this lab.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names = vec![self.switch.name.clone(), self.client.name.clone()];
        names.extend(self.gateways.iter().map(|g| g.ns.name.clone()));
        names
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(mut peers) = self.peers.lock() {
            peers.clear();
        }
        // Removing the pins detaches the links and frees the maps.
        for gw in &self.gateways {
            let _ = std::fs::remove_dir_all(&gw.pin_dir);
        }
        // The Netns fields delete their namespaces as they drop.
    }
}

/// A running tcpdump.
pub struct Capture {
    peer: Peer,
}

impl Capture {
    /// Stops tcpdump and returns one line per captured frame.
    pub fn lines(self) -> Result<Vec<String>> {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let out = self.peer.stop()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// One cable: a veth pair from the switch's bridge to `host`'s `name`.
fn cable(switch: &Netns, switch_side: &str, host: &Netns, name: &str) -> Result<()> {
    cable_to(switch, "br0", switch_side, host, name)
}

/// A cable from `bridge` in the switch namespace to `host`'s `name`.
pub(crate) fn cable_to(
    switch: &Netns,
    bridge: &str,
    switch_side: &str,
    host: &Netns,
    name: &str,
) -> Result<()> {
    switch.ip(&[
        "link",
        "add",
        switch_side,
        "type",
        "veth",
        "peer",
        "name",
        name,
        "netns",
        &host.name,
    ])?;
    switch.ip(&["link", "set", switch_side, "master", bridge, "up"])?;
    host.ip(&["link", "set", name, "up"])?;
    Ok(())
}

/// The number of a /proc `Key:   N kB` line (status, smaps) when the line
/// is `key`'s: `kb_field("VmRSS:\t  2048 kB", "VmRSS:") == Some(2048)`.
pub fn kb_field(line: &str, key: &str) -> Option<u64> {
    line.strip_prefix(key)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Mounts bpffs at /sys/fs/bpf when nothing is mounted there.
pub fn ensure_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .context("reading /proc/self/mounts")?
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.starts_with("bpf "));
    if !mounted {
        run_checked("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])?;
    }
    Ok(())
}

/// Removes namespaces and bpffs directories left by lab processes that no
/// longer run (a test killed by a signal cannot clean up after itself).
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let alive = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("bt") else {
            return true;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            return true;
        };
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    };
    let list = run_checked("ip", &["netns", "list"])?;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if name.starts_with("bt") && !alive(name) {
            let _ = run_checked("ip", &["netns", "del", name]);
            removed.push(name.to_string());
        }
    }
    // Pins, and the cluster lab's etcd data on tmpfs.
    for root in ["/sys/fs/bpf", "/dev/shm"] {
        let Ok(dir) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("bt") && !alive(&name) {
                let _ = std::fs::remove_dir_all(entry.path());
                removed.push(entry.path().display().to_string());
            }
        }
    }
    Ok(removed)
}

static BATON_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes the lab use this `baton` binary (the demo uses the release build).
pub fn use_baton_bin(path: PathBuf) {
    let _ = BATON_BIN.set(path);
}

/// The `baton` binary under test: [`use_baton_bin`], `$BATON_BIN`, else the
/// workspace's debug build.
pub fn baton_bin() -> Result<PathBuf> {
    if let Some(path) = BATON_BIN.get() {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("BATON_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/baton");
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build -p baton) or set BATON_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// Polls until `cond` holds; how long it took, or the error saying what was seen.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if cond()? {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{what}: not within {timeout:?}")
}
