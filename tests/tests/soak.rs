//! Fault soak: a driver draws faults at random against the real daemon and,
//! after each, an invariant checker asserts the address is on exactly one
//! port, the map's owner is the kernel's, and the client reaches the service,
//! within a bound. About 60 s here; `BATON_SOAK_SECS` (or `cargo xtask
//! soak`) runs it longer. Prints faults, violations (must be 0) and the
//! longest time to repair.
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec, traffic};
use std::time::{Duration, Instant};

const INSTANCE: &str = "192.0.2.100";
const ROUTE: &str = "198.51.100.0/24";
/// Time from a fault to the invariant holding again.
const BOUND: Duration = Duration::from_secs(5);

/// xorshift64: reproducible from the printed seed, no dependency.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn config(with_b: bool) -> String {
    let mut extra = format!(
        "mac = \"02:ba:70:00:00:01\"\nroutes = [{{ to = \"{ROUTE}\", via = \"192.0.2.254\" }}]\n"
    );
    if with_b {
        extra.push_str(
            "\n[instances.iscsi-b]\naddress = \"192.0.2.101/24\"\nports = [\"ge1\", \"ge0\"]\n",
        );
    }
    lab_config(
        "hold_down = \"0\"\nhold_up = \"0\"\nannounce_interval = \"50ms\"\nannounce_count = 2",
        &extra,
    )
}

/// (device, lower port) for each device of gateway 0 holding `addr`.
fn holders(lab: &Lab, addr: &str) -> anyhow::Result<Vec<(String, String)>> {
    lab.holders(0, addr)
}

/// What is wrong now, or None when every invariant holds (the client's
/// reach is checked only with `reach`).
fn violation(
    lab: &Lab,
    daemon: &Daemon,
    with_b: bool,
    reach: bool,
) -> anyhow::Result<Option<String>> {
    let h = holders(lab, INSTANCE)?;
    let [(dev, port)] = h.as_slice() else {
        return Ok(Some(format!("address on {h:?}")));
    };
    if !dev.starts_with("bt") {
        return Ok(Some(format!(
            "address on {dev}, not the instance's macvlan"
        )));
    }
    let table = daemon.dataplane_instances()?;
    let map_owner = table
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["address"] == INSTANCE)
        .and_then(|e| e["owner"].as_str().map(str::to_string));
    if map_owner.as_deref() != Some(port.as_str()) {
        return Ok(Some(format!(
            "map owner {map_owner:?}, kernel owner {port}"
        )));
    }
    let routes = lab.gw(0).ns.ip(&["route", "show", ROUTE])?;
    if !routes.contains(&format!("dev {dev}")) {
        return Ok(Some(format!("route {ROUTE}: {routes:?}")));
    }
    let b = holders(lab, "192.0.2.101")?.len();
    if b != usize::from(with_b) {
        return Ok(Some(format!(
            "iscsi-b on {b} devices, configured: {with_b}"
        )));
    }
    // ping exits non-zero when nothing answers: that is a "no", not an error.
    if reach && traffic::ping(lab, INSTANCE.parse()?, 1).unwrap_or(0) == 0 {
        return Ok(Some("client cannot reach the service".into()));
    }
    Ok(None)
}

#[test]
fn random_faults_are_all_repaired() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("BATON_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = std::env::var("BATON_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        });
    println!("soak: {secs} s, seed {seed} (BATON_SOAK_SEED to replay)");
    let mut rng = Rng(seed);
    let lab = Lab::build(&LabSpec::default())?;
    let mut with_b = true;
    let mut daemon = Daemon::start(&lab, 0, &config(with_b))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let mut pulled: Option<usize> = None;
    let (mut faults, mut violations) = (0u32, Vec::new());
    let mut repair_times = Vec::new();
    let mut drift_repairs = Vec::new();
    let mut flood = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let owner = holders(&lab, INSTANCE)?
            .first()
            .map(|(d, _)| d.clone())
            .unwrap_or_default();
        let pid = daemon.pid().map(|p| p.to_string()).unwrap_or_default();
        let fault = rng.below(9);
        let name = match fault {
            0 => {
                lab.gw(0)
                    .ns
                    .ip(&["addr", "del", &format!("{INSTANCE}/24"), "dev", &owner])?;
                "delete the address"
            }
            1 => {
                lab.gw(0).ns.ip(&["link", "del", &owner])?;
                "delete the macvlan"
            }
            2 => {
                lab.gw(0).ns.ip(&["link", "set", &owner, "down"])?;
                "set the macvlan down"
            }
            3 => {
                lab.gw(0).ns.ip(&["route", "del", ROUTE])?;
                "delete the route"
            }
            4 => {
                // Pull one cable, or plug the pulled one back: one port stays up.
                match pulled.take() {
                    Some(p) => lab.plug_cable(0, p)?,
                    None => {
                        let p = rng.below(2) as usize;
                        lab.pull_cable(0, p)?;
                        pulled = Some(p);
                    }
                }
                "pull or plug a cable"
            }
            5 => {
                baton_lab::run_checked("kill", &["-STOP", &pid])?;
                let batch: String = (0..100)
                    .map(|i| {
                        format!("link add sk{i}a type veth peer name sk{i}b\nlink del sk{i}a\n")
                    })
                    .collect();
                let file = daemon.dir.join("burst.ip");
                std::fs::write(&file, batch)?;
                lab.gw(0).ns.ip(&["-batch", &file.display().to_string()])?;
                lab.gw(0)
                    .ns
                    .ip(&["addr", "del", &format!("{INSTANCE}/24"), "dev", &owner])?;
                baton_lab::run_checked("kill", &["-CONT", &pid])?;
                "a netlink burst and a deleted address while stopped"
            }
            6 => {
                baton_lab::run_checked("kill", &["-KILL", &pid])?;
                let _ = daemon.wait_exit(Duration::from_secs(2));
                daemon = daemon.restart(&[])?;
                "SIGKILL and restart"
            }
            7 => {
                with_b = !with_b;
                std::fs::write(&daemon.config, config(with_b))?;
                let out = daemon.cli(&["reload"])?;
                anyhow::ensure!(
                    out.status.success(),
                    "reload: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                "reload with an instance added or removed"
            }
            _ => {
                flood.push(daemon.flood(200, 50)?);
                "idle floods on both sockets"
            }
        };
        faults += 1;
        let at = Instant::now();
        // First the kernel's state (the repair itself), then the client's reach.
        let mut last = None;
        let mut kernel_at = None;
        while at.elapsed() < BOUND {
            last = violation(&lab, &daemon, with_b, kernel_at.is_some())?;
            if last.is_none() && kernel_at.is_some() {
                break;
            }
            if last.is_none() {
                kernel_at = Some(at.elapsed());
            } else {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if let (Some(t), true) = (kernel_at, matches!(fault, 0..=3 | 5)) {
            drift_repairs.push(t);
        }
        match last {
            None => repair_times.push(at.elapsed()),
            Some(v) => {
                println!("VIOLATION after {name}: {v}");
                violations.push(format!("{name}: {v}"));
            }
        }
        if flood.len() > 2 {
            flood.drain(..).for_each(|f| {
                f.stop();
            });
        }
        std::thread::sleep(Duration::from_millis(rng.below(300)));
    }
    for f in flood {
        f.stop();
    }
    repair_times.sort();
    drift_repairs.sort();
    let pct = |v: &[Duration], p: usize| {
        v.get((v.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "soak: {faults} faults injected, {} violations; time to every invariant (client reach included) p50 {:?} p99 {:?} max {:?}",
        violations.len(),
        pct(&repair_times, 50),
        pct(&repair_times, 99),
        repair_times.last().copied().unwrap_or_default()
    );
    println!(
        "soak: drift to repair in the kernel ({} address/macvlan/route faults, polled by `ip`): p50 {:?} p99 {:?} max {:?}",
        drift_repairs.len(),
        pct(&drift_repairs, 50),
        pct(&drift_repairs, 99),
        drift_repairs.last().copied().unwrap_or_default()
    );
    assert!(
        violations.is_empty(),
        "violations: {violations:#?}\nlog:\n{}",
        daemon.log_text()
    );
    Ok(())
}
