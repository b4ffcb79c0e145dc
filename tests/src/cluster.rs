//! A cluster lab as a real site is built: two gateways (two data ports
//! each, on the switch's br0, and an HA port `ha0`), a client on the data
//! network, and three etcd members on the HA network (`brha` in the
//! switch namespace): one in each gateway's namespace and one in a
//! witness namespace (a pair of gateways needs a third vote).
//!
//! ```text
//!  gw0[ha0] 198.51.100.1 ─ h0 ┐
//!  gw1[ha0] 198.51.100.2 ─ h1 ├─ brha (switch)     etcd e0, e1, e2
//!  witness[ha0] .3        ─ hw ┘
//! ```
//! The [`TwoOwnerChecker`] runs beside every cluster test: the client asks
//! for each instance address every 10 ms and the switch's captures fail the
//! test if one request is answered from two ports, or a port answers after
//! another announced the address.
use crate::{Lab, LabSpec, Netns, cable_to};
use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const HA_NET: &str = "198.51.100";

pub struct ClusterLab {
    pub lab: Lab,
    pub witness: Netns,
    etcd: Vec<Option<u32>>,
    data: Vec<PathBuf>,
    /// With TLS: the directory of the CA, etcd's and the client's certificates.
    pub tls: Option<PathBuf>,
}

/// Where etcd member `i` runs: gateway 0, gateway 1, the witness.
fn ha_addr(i: usize) -> String {
    format!("{HA_NET}.{}", i + 1)
}

impl ClusterLab {
    pub fn build() -> Result<ClusterLab> {
        Self::build_with(false, false)
    }

    /// With IPv6 enabled in the lab's namespaces.
    pub fn build_ipv6() -> Result<ClusterLab> {
        Self::build_with(false, true)
    }

    /// etcd serving clients over TLS only, asking for client certificates
    /// (a CA, a server certificate for the three HA addresses, a client
    /// certificate: openssl, valid one day).
    pub fn build_tls() -> Result<ClusterLab> {
        Self::build_with(true, false)
    }

    fn build_with(tls: bool, ipv6: bool) -> Result<ClusterLab> {
        let lab = Lab::build(&LabSpec { gateways: 2, ipv6 })?;
        let witness = Netns::new(&lab.prefix, "witness", false)?;
        let mut c = ClusterLab {
            data: (0..3)
                .map(|i| PathBuf::from(format!("/dev/shm/{}-etcd{i}", lab.prefix)))
                .collect(),
            lab,
            witness,
            etcd: vec![None; 3],
            tls: None,
        };
        if tls {
            c.tls = Some(make_certificates(&c.lab.prefix)?);
        }
        let sw = &c.lab.switch;
        sw.ip(&["link", "add", "brha", "type", "bridge"])?;
        sw.ip(&["link", "set", "brha", "up"])?;
        for i in 0..3 {
            let (ns, side) = match i {
                0 | 1 => (&c.lab.gateways[i].ns, format!("h{i}")),
                _ => (&c.witness, "hw".to_string()),
            };
            cable_to(sw, "brha", &side, ns, "ha0")?;
            ns.ip(&["addr", "add", &format!("{}/24", ha_addr(i)), "dev", "ha0"])?;
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        for i in 0..3 {
            c.start_etcd(i, true)?;
        }
        c.wait_healthy(Duration::from_secs(15))?;
        Ok(c)
    }

    fn ns_of(&self, i: usize) -> &Netns {
        match i {
            0 | 1 => &self.lab.gateways[i].ns,
            _ => &self.witness,
        }
    }

    /// The `endpoints = [...]` line for a gateway's config.
    pub fn endpoints() -> String {
        let urls: Vec<String> = (0..3)
            .map(|i| format!("\"http://{}:2379\"", ha_addr(i)))
            .collect();
        format!("endpoints = [{}]", urls.join(", "))
    }

    /// Starts etcd member `i` (`fresh`: a new cluster; else it rejoins with its data).
    pub fn start_etcd(&mut self, i: usize, fresh: bool) -> Result<()> {
        let initial: Vec<String> = (0..3)
            .map(|j| format!("e{j}=http://{}:2380", ha_addr(j)))
            .collect();
        let ip = ha_addr(i);
        if fresh {
            let _ = std::fs::remove_dir_all(&self.data[i]);
        }
        let data = self.data[i].display().to_string();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{ip}:2379");
        let metrics = format!("http://{ip}:2381");
        let peer = format!("http://{ip}:2380");
        let initial = initial.join(",");
        let state = if fresh { "new" } else { "existing" };
        let args = [
            "etcd",
            "--name",
            &format!("e{i}"),
            "--data-dir",
            &data,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            &self.lab.prefix,
            // A LAN's figures: a dead leader is replaced in 0.2-0.4 s,
            // inside the owners' deadline (no false fence).
            "--heartbeat-interval",
            "20",
            "--election-timeout",
            "200",
            "--pre-vote",
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
            // Health and leadership readable without a client certificate.
            "--listen-metrics-urls",
            &metrics,
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(dir) = &self.tls {
            for (flag, file) in [
                ("--cert-file", "server.pem"),
                ("--key-file", "server.key"),
                ("--trusted-ca-file", "ca.pem"),
            ] {
                args.push(flag.into());
                args.push(dir.join(file).display().to_string());
            }
            args.push("--client-cert-auth".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pid = self.lab.spawn(self.ns_of(i), &args)?;
        self.etcd[i] = Some(pid);
        Ok(())
    }

    /// SIGKILLs etcd member `i`.
    pub fn kill_etcd(&mut self, i: usize) -> Result<()> {
        let pid = self.etcd[i]
            .take()
            .context("that etcd member is not running")?;
        // SAFETY: kill(2) on a child the lab started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        self.lab.kill(pid)
    }

    /// SIGSTOPs every running etcd member for `how_long`, then SIGCONTs
    /// them: the engine stands still, as it does in a long election.
    pub fn pause_etcd(&self, how_long: Duration) {
        let pids: Vec<i32> = self.etcd.iter().flatten().map(|p| *p as i32).collect();
        for p in &pids {
            // SAFETY: kill(2) on a child the lab started.
            unsafe { libc::kill(*p, libc::SIGSTOP) };
        }
        std::thread::sleep(how_long);
        for p in &pids {
            // SAFETY: as above.
            unsafe { libc::kill(*p, libc::SIGCONT) };
        }
    }

    /// The etcd member that leads now (from its /metrics).
    pub fn etcd_leader(&self) -> Result<usize> {
        for i in (0..3).filter(|i| self.etcd[*i].is_some()) {
            let addr = format!("{}:2381", ha_addr(i)).parse()?;
            let m = self.ns_of(i).http_get(addr, "/metrics")?;
            if m.lines().any(|l| l.trim() == "etcd_server_is_leader 1") {
                return Ok(i);
            }
        }
        bail!("no etcd member leads")
    }

    /// Waits until every running member answers /health with true.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        'outer: while started.elapsed() < timeout {
            for i in (0..3).filter(|i| self.etcd[*i].is_some()) {
                let addr = format!("{}:2381", ha_addr(i)).parse()?;
                let ok = self
                    .ns_of(i)
                    .http_get(addr, "/health")
                    .is_ok_and(|b| b.contains("\"health\":\"true\""));
                if !ok {
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'outer;
                }
            }
            return Ok(());
        }
        bail!("etcd not healthy after {timeout:?}")
    }

    /// Cuts gateway `g` off the HA network (its etcd member goes with it).
    /// Gateway `g` cut off the HA network with its link up (its switch
    /// port stops forwarding: a failed switch path, a firewall): the
    /// partition a member cannot see on its own carrier.
    pub fn partition_ha(&self, g: usize, cut: bool) -> Result<()> {
        let state = if cut { "0" } else { "3" };
        self.lab.switch.run(&[
            "bridge",
            "link",
            "set",
            "dev",
            &format!("h{g}"),
            "state",
            state,
        ])?;
        Ok(())
    }

    pub fn pull_ha(&self, g: usize) -> Result<()> {
        self.lab
            .switch
            .ip(&["link", "set", &format!("h{g}"), "down"])?;
        Ok(())
    }

    pub fn plug_ha(&self, g: usize) -> Result<()> {
        self.lab
            .switch
            .ip(&["link", "set", &format!("h{g}"), "up"])?;
        Ok(())
    }

    /// Gateway `g`'s config: the lab's (`iscsi-a`, gw0 first) with member
    /// `gw{g}`, `iscsi-b` (192.0.2.101, gw1 first) and `cluster` lines
    /// added to the [cluster] table.
    pub fn config(g: usize, timers: &str, cluster: &str) -> String {
        crate::daemon::lab_config(
            timers,
            &format!(
                r#"members = ["gw0", "gw1"]

[instances.iscsi-b]
address = "192.0.2.101/24"
ports = ["ge0", "ge1"]
services = [3260]
members = ["gw1", "gw0"]

[cluster]
member_id = "gw{g}"
ha_port = "ha0"
{endpoints}
{cluster}
"#,
                endpoints = Self::endpoints()
            ),
        )
    }
}

/// A CA, etcd's server certificate (for the three HA addresses) and a
/// client certificate, under a fresh temporary directory.
fn make_certificates(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-tls"));
    std::fs::create_dir_all(&dir)?;
    let ssl = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .context("running openssl")?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=baton-lab-ca",
    ]);
    ssl(&ca)?;
    let ips: Vec<String> = (0..3).map(|i| format!("IP:{}", ha_addr(i))).collect();
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
            ips.join(",")
        ),
    )?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
    for who in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=baton-lab"]);
        ssl(&req)?;
        ssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ])?;
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        dir.join("client.key"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    Ok(dir)
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        if let Some(dir) = &self.tls {
            let _ = std::fs::remove_dir_all(dir);
        }
        for d in &self.data {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The two-owner checker: ARP requests from the client for each address
/// every 10 ms, replies captured on every gateway-facing switch port.
pub struct TwoOwnerChecker {
    asker: crate::Peer,
    captures: Vec<(String, crate::Capture)>,
    addrs: Vec<String>,
    /// When it had asked for a second (seconds of the day, tcpdump's
    /// clock): the test's event comes after it.
    started: f64,
    _ready: ReadyFile,
}

/// The file the asker writes once it has asked for a second; removed with
/// the checker, also on failure.
struct ReadyFile(std::path::PathBuf);

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Answers the checker must see in the second before [`TwoOwnerChecker::start`]
/// returns (before the test's event) and in the second before it finishes
/// (after it); it asks 100 times a second per address. A checker that saw
/// nothing, or nothing before or after the event it judges, proved nothing
/// and fails.
pub const ANSWER_FLOOR_PER_S: usize = 20;

/// What the checker saw.
#[derive(Debug, Default)]
pub struct Overlaps {
    /// Replies to the client (answers) seen in all.
    pub answers: usize,
    /// Requests answered from two ports (two answers within 5 ms).
    pub double_answers: Vec<String>,
    /// Answers from one port after another port announced the address.
    pub after_announcement: Vec<String>,
    /// (address, switch port) -> first and last answer (seconds of the day).
    pub answered: std::collections::BTreeMap<(String, String), (f64, f64)>,
    /// Every answer: (seconds of the day, address, switch port), in time order.
    pub answers_seen: Vec<(f64, String, String)>,
    /// The window judged: (first request, finish), seconds of the day.
    pub window: (f64, f64),
}

impl Overlaps {
    /// Gateway `g`'s last answer for `addr` (seconds of the day; MIN: none).
    pub fn last_answer(&self, addr: &str, g: usize) -> f64 {
        self.answers_of(addr, g)
            .map(|(_, last)| last)
            .fold(f64::MIN, f64::max)
    }

    /// Gateway `g`'s first answer for `addr` (MAX: none).
    pub fn first_answer(&self, addr: &str, g: usize) -> f64 {
        self.answers_of(addr, g)
            .map(|(first, _)| first)
            .fold(f64::MAX, f64::min)
    }

    /// Gateway `g`'s first answer for `addr` after `t` (seconds of the day).
    pub fn first_answer_after(&self, addr: &str, g: usize, t: f64) -> Option<f64> {
        let port = format!("g{g}p");
        self.answers_seen
            .iter()
            .find(|(at, a, p)| *at > t && a == addr && p.starts_with(&port))
            .map(|(at, _, _)| *at)
    }

    fn answers_of(&self, addr: &str, g: usize) -> impl Iterator<Item = (f64, f64)> + '_ {
        let (addr, ports) = (addr.to_string(), format!("g{g}p"));
        self.answered
            .iter()
            .filter(move |((a, p), _)| *a == addr && p.starts_with(&ports))
            .map(|(_, t)| *t)
    }

    /// Answers in each whole second of the window, from its start.
    pub fn answers_per_second(&self) -> Vec<usize> {
        let (from, to) = self.window;
        let seconds = ((to - from).floor().max(0.0)) as usize;
        let mut per = vec![0; seconds];
        for (t, _, _) in &self.answers_seen {
            let i = (t - from).floor();
            if i >= 0.0 && (i as usize) < seconds {
                per[i as usize] += 1;
            }
        }
        per
    }

    /// Two owners seen, or too little seen to tell: at least
    /// [`ANSWER_FLOOR_PER_S`] answers in the window's first second (before
    /// the event) and in its last (after it).
    pub fn judge(&self) -> Result<(), String> {
        if !self.double_answers.is_empty() || !self.after_announcement.is_empty() {
            return Err(format!("two owners: {self:#?}"));
        }
        let (from, to) = self.window;
        let in_second = |start: f64| {
            self.answers_seen
                .iter()
                .filter(|(t, _, _)| *t >= start && *t < start + 1.0)
                .count()
        };
        let (before, after) = (in_second(from - 1.0), in_second(to - 1.0));
        if to - from < 1.0 || before < ANSWER_FLOOR_PER_S || after < ANSWER_FLOOR_PER_S {
            return Err(format!(
                "the checker saw too little to judge: {} answers; {before} in the second \
                 before the event and {after} in the last second of its {:.1} s after it \
                 (at least {ANSWER_FLOOR_PER_S} each, and 1 s after); per second after: {:?}",
                self.answers,
                to - from,
                self.answers_per_second()
            ));
        }
        Ok(())
    }

    pub fn assert_none(&self) {
        let per = self.answers_per_second();
        println!(
            "two-owner checker: {} answers in {:.1} s (per second: least {}, most {}), {} requests answered from two ports, {} answers after another port's announcement",
            self.answers,
            self.window.1 - self.window.0,
            per.iter().min().copied().unwrap_or(0),
            per.iter().max().copied().unwrap_or(0),
            self.double_answers.len(),
            self.after_announcement.len()
        );
        if let Err(e) = self.judge() {
            panic!("{e}");
        }
    }
}

impl TwoOwnerChecker {
    pub fn start(lab: &Lab, addrs: &[&str]) -> Result<TwoOwnerChecker> {
        let mut captures = Vec::new();
        for g in &lab.gateways {
            for p in &g.ports {
                let cap = lab.capture(&lab.switch, &p.switch_side, "arp")?;
                captures.push((p.switch_side.clone(), cap));
            }
        }
        let mac = lab.client.mac("eth0")?;
        let ready = std::env::temp_dir().join(format!("{}-checker.ready", lab.prefix));
        let targets: Vec<String> = addrs.iter().map(|a| format!("'{a}'")).collect();
        let program = format!(
            "import socket, time\n\
             s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
             s.bind(('eth0', 0))\n\
             me = bytes.fromhex('{mac}'.replace(':', ''))\n\
             src = socket.inet_aton('192.0.2.1')\n\
             frames = []\n\
             for t in [{targets}]:\n\
             \x20   frames.append(b'\\xff' * 6 + me + b'\\x08\\x06' + bytes.fromhex('0001080006040001') + me + src + b'\\x00' * 6 + socket.inet_aton(t))\n\
             rounds = 0\n\
             while True:\n\
             \x20   for f in frames:\n\
             \x20       s.send(f)\n\
             \x20   rounds += 1\n\
             \x20   if rounds == 100:\n\
             \x20       open('{ready}', 'w').close()\n\
             \x20   time.sleep(0.01)\n",
            targets = targets.join(", "),
            ready = ready.display()
        );
        let ready = ReadyFile(ready);
        let mut asker = lab.client.spawn(&["python3", "-c", &program])?;
        // The test's event must come after a second of asking: the
        // judgement needs answers from before it.
        let waiting = std::time::Instant::now();
        while !ready.0.exists() {
            if let Some(status) = asker.try_wait()? {
                bail!("the checker's ARP asker exited ({status}) before asking a second");
            }
            if waiting.elapsed() > std::time::Duration::from_secs(20) {
                bail!("the checker's ARP asker did not ask 100 rounds in 20 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(TwoOwnerChecker {
            asker,
            captures,
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            started: now_of_day(),
            _ready: ready,
        })
    }

    /// Stops and judges: per address, answers (unicast replies) from two
    /// ports within 5 ms, or an answer from a port after another port's
    /// announcement (a broadcast reply or a request from the address itself).
    pub fn finish(mut self) -> Result<Overlaps> {
        // An asker that died asked nothing: that must fail, not pass.
        if self.asker.try_wait()?.is_some() {
            let out = self.asker.stop()?;
            bail!(
                "the checker's ARP asker exited early: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        drop(self.asker);
        let window = (self.started, now_of_day());
        let mut seen: Vec<(f64, String, String, bool)> = Vec::new();
        for (port, cap) in self.captures {
            for line in cap.lines()? {
                let t = seconds(&line);
                for a in &self.addrs {
                    let answer = line.contains(&format!("Reply {a} is-at"))
                        && !line.contains("> ff:ff:ff:ff:ff:ff");
                    let announce = line.contains(&format!("who-has {a} tell {a}"))
                        || (line.contains(&format!("Reply {a} is-at"))
                            && line.contains("> ff:ff:ff:ff:ff:ff"));
                    if answer || announce {
                        seen.push((t, port.clone(), a.clone(), answer));
                    }
                }
            }
        }
        seen.sort_by(|x, y| x.0.total_cmp(&y.0));
        // A new owner's first answer may go out just before its own
        // announcement (the flip, then the GARP): one placement, not an
        // answer after the old owner's announcement.
        let announces: Vec<(f64, String, String)> = seen
            .iter()
            .filter(|s| !s.3)
            .map(|(t, p, a, _)| (*t, p.clone(), a.clone()))
            .collect();
        let announces_soon = |addr: &str, port: &str, after: f64, t: f64| {
            announces
                .iter()
                .any(|(ta, p, a)| a == addr && p == port && *ta > after && *ta <= t + 0.005)
        };
        let mut o = Overlaps {
            window,
            ..Overlaps::default()
        };
        let mut last_answer: std::collections::BTreeMap<String, (f64, String)> = Default::default();
        let mut announced: std::collections::BTreeMap<String, (f64, String)> = Default::default();
        for (t, port, addr, answer) in seen {
            if answer {
                o.answers += 1;
                o.answers_seen.push((t, addr.clone(), port.clone()));
                o.answered
                    .entry((addr.clone(), port.clone()))
                    .and_modify(|(_, last)| *last = t)
                    .or_insert((t, t));
                if let Some((t0, p0)) = last_answer.get(&addr)
                    && *p0 != port
                    && t - t0 < 0.005
                {
                    o.double_answers
                        .push(format!("{addr}: {p0} at {t0:.6} and {port} at {t:.6}"));
                }
                if let Some((ta, pa)) = announced.get(&addr)
                    && *pa != port
                    && t > ta + 0.001
                    && !announces_soon(&addr, &port, *ta, t)
                {
                    o.after_announcement.push(format!(
                        "{addr}: {port} answered at {t:.6} after {pa} announced at {ta:.6}"
                    ));
                }
                last_answer.insert(addr, (t, port));
            } else {
                announced.insert(addr, (t, port));
            }
        }
        Ok(o)
    }
}

/// Now as seconds of the day (UTC), tcpdump's clock.
pub fn now_of_day() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_secs_f64() % 86_400.0
}

fn seconds(line: &str) -> f64 {
    let t = line.split_whitespace().next().unwrap_or("0:0:0");
    t.split(':').fold(0.0, |acc, part| {
        acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(times: impl Iterator<Item = f64>) -> Overlaps {
        let answers_seen: Vec<(f64, String, String)> = times
            .map(|t| (t, "192.0.2.100".to_string(), "g0p0".to_string()))
            .collect();
        Overlaps {
            answers: answers_seen.len(),
            answers_seen,
            window: (100.0, 105.0),
            ..Overlaps::default()
        }
    }

    #[test]
    fn a_checker_that_saw_nothing_fails() {
        let empty = seen(std::iter::empty());
        assert!(empty.judge().is_err(), "an empty capture passed");
    }

    #[test]
    fn a_checker_that_saw_only_before_the_event_fails() {
        // 100 answers a second, but only until a second after the event.
        let before = seen((0..200).map(|i| 99.0 + f64::from(i) * 0.01));
        let e = before.judge().expect_err("nothing after the event passed");
        assert!(e.contains("0 in the last second"), "{e}");
    }

    #[test]
    fn a_checker_that_saw_nothing_before_the_event_fails() {
        let after = seen((0..500).map(|i| 100.0 + f64::from(i) * 0.01));
        let e = after.judge().expect_err("nothing before the event passed");
        assert!(e.contains("0 in the second before"), "{e}");
    }

    #[test]
    fn a_checker_that_saw_both_sides_passes() {
        let all = seen((0..600).map(|i| 99.0 + f64::from(i) * 0.01));
        assert_eq!(all.judge(), Ok(()));
        assert_eq!(all.answers_per_second(), vec![100; 5]);
    }
}
