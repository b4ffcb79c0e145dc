//! The probes of `[health]` checks, each a task of its own that sends what
//! it sees to the loop: a process (its exit heard at once through a pidfd,
//! not by polling), a TCP listener, a command. Rise/fall damping is the
//! table's, not theirs.
use baton_config::model::{Check, Config, Probe, ProcessMatch};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// One observation of a check.
#[derive(Debug)]
pub struct Observation {
    pub check: String,
    pub ok: bool,
    /// What was seen, for status and logs ("pid 412 exited", "refused").
    pub detail: String,
}

/// Starts a task for each check that is not a links check. They live as
/// long as the daemon (a change of `[health]` needs a restart).
pub fn start(config: &Config) -> mpsc::Receiver<Observation> {
    let (tx, rx) = mpsc::channel(64);
    for (name, check) in &config.health {
        let probe = Prober {
            name: name.clone(),
            check: check.clone(),
            tx: tx.clone(),
        };
        match &check.probe {
            Probe::Links { .. } => {}
            Probe::Process(m) => {
                let m = m.clone();
                tokio::spawn(async move { probe.process(&m).await });
            }
            Probe::Tcp(_) | Probe::Exec(_) => {
                tokio::spawn(async move { probe.periodic().await });
            }
        }
    }
    rx
}

struct Prober {
    name: String,
    check: Check,
    tx: mpsc::Sender<Observation>,
}

impl Prober {
    /// Sends one observation; false when the loop is gone.
    async fn send(&self, ok: bool, detail: String) -> bool {
        let o = Observation {
            check: self.name.clone(),
            ok,
            detail,
        };
        self.tx.send(o).await.is_ok()
    }

    /// tcp and exec: one observation every interval.
    async fn periodic(self) {
        let mut tick = tokio::time::interval(self.check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (ok, detail) = match &self.check.probe {
                Probe::Tcp(addr) => tcp(*addr, self.check.timeout).await,
                Probe::Exec(argv) => exec(argv, self.check.timeout).await,
                _ => return,
            };
            if !self.send(ok, detail).await {
                return;
            }
        }
    }

    /// A process: found (pidfile or name) and held by a pidfd, whose
    /// readability is its exit; while it runs, a passing observation every
    /// interval (the rise count after a restart needs them); while it does
    /// not, it is looked for every interval.
    async fn process(self, m: &ProcessMatch) {
        loop {
            let found = match find(m) {
                Ok(found) => found,
                Err(why) => {
                    if !self.send(false, why).await {
                        return;
                    }
                    tokio::time::sleep(self.check.interval).await;
                    continue;
                }
            };
            let (pid, fd) = found;
            // SAFETY: the AsyncFd owns the pidfd; nothing else closes it.
            let Ok(fd) = (unsafe { AsyncFd::register(fd) }) else {
                if !self
                    .send(false, format!("pid {pid}: cannot wait on its pidfd"))
                    .await
                {
                    return;
                }
                tokio::time::sleep(self.check.interval).await;
                continue;
            };
            loop {
                if !self.send(true, format!("pid {pid} running")).await {
                    return;
                }
                tokio::select! {
                    r = fd.readable() => {
                        let detail = match r {
                            Ok(_) => format!("pid {pid} exited"),
                            Err(e) => format!("pid {pid}: pidfd: {e}"),
                        };
                        if !self.send(false, detail).await {
                            return;
                        }
                        break;
                    }
                    _ = tokio::time::sleep(self.check.interval) => {}
                }
            }
            tokio::time::sleep(self.check.interval).await;
        }
    }
}

/// Connects from this host; the connection is closed at once.
async fn tcp(addr: std::net::SocketAddr, timeout: Duration) -> (bool, String) {
    let began = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (
            true,
            format!("{addr} accepted in {} ms", began.elapsed().as_millis()),
        ),
        Ok(Err(e)) => (false, format!("{addr}: {e}")),
        Err(_) => (false, format!("{addr}: no answer in {timeout:?}")),
    }
}

/// Runs the command in a process group of its own, killed whole when the
/// timeout passes; its last line of output is the detail.
async fn exec(argv: &[String], timeout: Duration) -> (bool, String) {
    let Some((prog, args)) = argv.split_first() else {
        return (false, "no command".into());
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("{prog}: {e}")),
    };
    let pgid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let text = [&out.stdout[..], &out.stderr[..]].concat();
            let text = String::from_utf8_lossy(&text);
            let last: String = text
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            (out.status.success(), format!("{}: {last}", out.status))
        }
        Ok(Err(e)) => (false, format!("{prog}: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                // SAFETY: kill(2) on the group this command leads; no memory involved.
                unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
            }
            (false, format!("{prog}: killed after {timeout:?}"))
        }
    }
}

/// The process `m` names, with a pidfd that holds it: its pid cannot be
/// reused while the fd is open, and the name or pidfile is read again after
/// opening it, so a pid reused before the open is not taken for it.
fn find(m: &ProcessMatch) -> Result<(i32, OwnedFd), String> {
    match m {
        ProcessMatch::Pidfile(path) => {
            let pid = read_pid(path)?;
            let fd =
                pidfd_open(pid).map_err(|e| format!("pid {pid} (from {}): {e}", path.display()))?;
            if read_pid(path)? != pid {
                return Err(format!("{} changed while it was read", path.display()));
            }
            alive(pid, fd)
        }
        ProcessMatch::Name(name) => {
            let dir = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                if comm(pid).as_deref() != Some(name.as_str()) {
                    continue;
                }
                let Ok(fd) = pidfd_open(pid) else { continue };
                if comm(pid).as_deref() == Some(name.as_str())
                    && let Ok(found) = alive(pid, fd)
                {
                    return Ok(found);
                }
            }
            Err(format!("no process named {name:?}"))
        }
    }
}

fn read_pid(path: &Path) -> Result<i32, String> {
    use std::io::Read as _;
    // A pid is short: a pidfile that names something else is read no further.
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{}: {:?} is not a pid", path.display(), text.trim()))
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pidfd is readable once its process exited (a zombie included).
fn alive(pid: i32, fd: OwnedFd) -> Result<(i32, OwnedFd), String> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack, a zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n == 0 {
        Ok((pid, fd))
    } else {
        Err(format!("pid {pid} exited"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfile_finds_a_live_process_and_not_a_dead_one() {
        let dir = std::env::temp_dir().join(format!("baton-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sleep.pid");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&file, format!("{}\n", child.id())).unwrap();
        let m = ProcessMatch::Pidfile(file.clone());
        assert!(find(&m).is_ok());
        child.kill().unwrap();
        // Not reaped yet: a zombie, which is not running.
        std::thread::sleep(Duration::from_millis(50));
        assert!(find(&m).is_err(), "a zombie counted as running");
        child.wait().unwrap();
        assert!(find(&m).is_err());
        std::fs::write(&file, "garbage").unwrap();
        assert!(find(&m).unwrap_err().contains("is not a pid"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_name_finds_only_a_process_of_exactly_that_name() {
        // sleep under a name of its own (a symlink: comm is the name
        // exec'd; a copy could be "text file busy" while another test forks).
        let dir = std::env::temp_dir().join(format!("baton-probe-name-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("btp{}", std::process::id() % 1_000_000);
        let prog = dir.join(&name);
        std::os::unix::fs::symlink("/bin/sleep", &prog).unwrap();
        let mut child = std::process::Command::new(&prog).arg("30").spawn().unwrap();
        // Its comm is set at exec: wait for it.
        for _ in 0..100 {
            if comm(child.id() as i32).as_deref() == Some(name.as_str()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (pid, _) = find(&ProcessMatch::Name(name.clone())).unwrap();
        assert_eq!(pid, child.id() as i32);
        // A prefix of the name is not the name.
        assert!(find(&ProcessMatch::Name(name[..name.len() - 1].to_string())).is_err());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(find(&ProcessMatch::Name(name)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn exec_reports_status_and_kills_what_overstays() {
        let (ok, detail) = exec(
            &["/bin/sh".into(), "-c".into(), "echo fine".into()],
            Duration::from_secs(5),
        )
        .await;
        assert!(ok, "{detail}");
        assert!(detail.ends_with("fine"), "{detail}");
        let (ok, _) = exec(&["/bin/false".into()], Duration::from_secs(5)).await;
        assert!(!ok);
        let began = Instant::now();
        let (ok, detail) = exec(
            &["/bin/sleep".into(), "10".into()],
            Duration::from_millis(100),
        )
        .await;
        assert!(!ok && detail.contains("killed"), "{detail}");
        assert!(began.elapsed() < Duration::from_secs(5));
    }
}
