//! A newer baton started on an earlier one's pins (a package upgrade, then
//! `systemctl restart baton`): links that run other programs, or programs
//! on other maps, are given this baton's in place, the same links, so a
//! port never runs without one; a pinned map of another shape is made anew
//! instead of being verified against. The earlier baton is played by
//! programs of other code (the benchmarks' empty ones) and by a map of
//! another shape. The daemon runs with the unit's capabilities only.
use baton::dataplane::{PinDir, links::PinnedLink, load, load_program, pinned_maps, program_fd};
use baton_common::names;
use baton_lab::daemon::{Daemon, lab_config, setpriv, unit_caps};
use baton_lab::{Lab, LabSpec, dataplane, traffic};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SWAPPED: &str = "its program swapped in place";

/// (link id, program name) of the link pinned at `pin`.
fn runs(pin: &Path) -> anyhow::Result<(u32, String)> {
    let link = PinnedLink::open(pin)?;
    Ok((link.id, link.program_name()?))
}

/// A program's name as the kernel keeps it (15 bytes).
fn kernel_name(name: &str) -> String {
    name.chars().take(15).collect()
}

/// The instance with its own MAC, so its macvlans have links of their own.
fn config() -> String {
    lab_config("hold_down = \"0\"", "mac = \"02:ba:70:00:00:01\"")
}

/// baton run in gateway 0 as the unit runs it.
fn start(lab: &Lab) -> anyhow::Result<Daemon> {
    let wrapper = setpriv(&unit_caps()?);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let daemon = Daemon::start_wrapped(lab, 0, &config(), &[], &wrapper)?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    Ok(daemon)
}

fn port_pins(pins: &PinDir) -> Vec<PathBuf> {
    ["ge0", "ge1"]
        .iter()
        .flat_map(|p| [pins.xdp_link(p), pins.tc_link(p)])
        .collect()
}

fn macvlan_pins(pins: &PinDir) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(pins.path().join("links"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("tc-macvlan-"))
        .collect();
    found.sort();
    Ok(found)
}

fn all_runs(pins: &[PathBuf]) -> anyhow::Result<Vec<(u32, String)>> {
    pins.iter().map(|p| runs(p)).collect()
}

/// The program ids the links run.
fn prog_ids(pins: &[PathBuf]) -> anyhow::Result<Vec<u32>> {
    pins.iter()
        .map(|p| Ok(PinnedLink::open(p)?.prog_id))
        .collect()
}

#[test]
fn an_earlier_batons_programs_are_replaced_in_place() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    let pins = PinDir::new(&gw.pin_dir);
    dataplane::attach_programs(gw, "empty")?;
    let ports = port_pins(&pins);
    let before = all_runs(&ports)?;
    for (_, name) in &before {
        assert!(
            [names::XDP_PASS_PROGRAM, names::TC_PASS_PROGRAM].contains(&name.as_str()),
            "the earlier programs: {before:?}"
        );
    }

    let daemon = start(&lab)?;
    for (pin, (id, _)) in ports.iter().zip(&before) {
        let (now_id, now) = runs(pin)?;
        let xdp = pin
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with("xdp-"));
        let wanted = if xdp {
            names::XDP_PROGRAM
        } else {
            names::TC_EGRESS_PROGRAM
        };
        assert_eq!(now, wanted, "{} runs {now}", pin.display());
        assert_eq!(
            now_id,
            *id,
            "{}: a new link, not the same one",
            pin.display()
        );
    }
    assert_eq!(
        daemon.log_text().matches(SWAPPED).count(),
        4,
        "swaps logged"
    );
    println!("ports: {before:?} -> baton's programs on the same links");

    // The instance's macvlans (the owner's and the standby's): make their
    // links run other code, as an earlier baton's would, while the daemon
    // is stopped (SIGTERM leaves it all).
    let macvlans = macvlan_pins(&pins)?;
    assert_eq!(macvlans.len(), 2, "owner and standby: {macvlans:?}");
    let macvlan_links = all_runs(&macvlans)?;
    for (_, running) in &macvlan_links {
        assert_eq!(*running, kernel_name(names::TC_MACVLAN_PROGRAM));
    }
    let mut daemon = daemon;
    daemon.stop();
    let ports_ran = prog_ids(&ports)?;
    let mut other = load(&pins)?;
    load_program(&mut other, names::TC_PASS_PROGRAM)?;
    for pin in &macvlans {
        PinnedLink::open(pin)?.swap(program_fd(&other, names::TC_PASS_PROGRAM)?)?;
        assert_eq!(runs(pin)?.1, kernel_name(names::TC_PASS_PROGRAM));
    }
    drop(other);

    let log_before = daemon.log_text().len();
    let daemon = daemon.restart(&[])?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let wanted: Vec<(u32, String)> = macvlan_links
        .iter()
        .map(|(id, _)| (*id, kernel_name(names::TC_MACVLAN_PROGRAM)))
        .collect();
    let started = std::time::Instant::now();
    while all_runs(&macvlans)? != wanted && started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let since = daemon.log_text()[log_before..].to_string();
    assert_eq!(
        all_runs(&macvlans)?,
        wanted,
        "the macvlans' links; the daemon's log since the restart:\n{since}"
    );
    // The ports' links are this baton's (its code, its marks): a restart
    // of the same baton leaves their programs.
    assert_eq!(
        prog_ids(&ports)?,
        ports_ran,
        "the ports' programs at the restart"
    );
    assert_eq!(since.matches(SWAPPED).count(), 2, "swaps logged:\n{since}");
    Ok(())
}

/// Frames ge0's program counted, read from the map pinned now.
fn counted_on_ge0(lab: &Lab) -> anyhow::Result<u64> {
    let stats = dataplane::counters(lab.gw(0))?;
    Ok(stats.get("ge0").map(|c| c.values().sum()).unwrap_or(0))
}

#[test]
fn a_pinned_map_of_another_shape_is_made_anew_under_running_links() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    let pins = PinDir::new(&gw.pin_dir);
    // This baton ran and stopped: its links stay attached, on its maps.
    let mut daemon = start(&lab)?;
    daemon.stop();
    let ports = port_pins(&pins);
    let links = all_runs(&ports)?;
    let ran = prog_ids(&ports)?;
    // An earlier baton's map, of another shape, where the counters are.
    let path = pins.map(names::PORT_STATS_MAP);
    std::fs::remove_file(&path)?;
    let earlier = pinned_maps::Shape {
        map_type: 2, // BPF_MAP_TYPE_ARRAY
        key_size: 4,
        value_size: 8,
        max_entries: 4,
        flags: 0,
    };
    pinned_maps::create_pinned(&path, names::PORT_STATS_MAP, &earlier)?;
    let wanted = pinned_maps::wanted()?
        .iter()
        .find(|(n, _)| n == names::PORT_STATS_MAP)
        .map(|(_, s)| *s)
        .ok_or_else(|| anyhow::anyhow!("no {} in the object", names::PORT_STATS_MAP))?;
    let old = pinned_maps::pinned_shape(&path)?;
    assert_ne!(old, wanted);

    // Reused as it was, the map would fail baton_xdp's verification (its
    // counters lie beyond 8 bytes); and the links, left as they were,
    // would go on counting into the map no longer pinned.
    let daemon = daemon.restart(&[])?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    assert_eq!(
        pinned_maps::pinned_shape(&path)?,
        wanted,
        "the map at {}",
        path.display()
    );
    let log = daemon.log_text();
    assert!(
        log.contains("a pinned map of another shape"),
        "no replacement logged"
    );
    assert_eq!(
        all_runs(&ports)?,
        links,
        "the same links, the same programs' code"
    );
    let now = prog_ids(&ports)?;
    assert!(
        now.iter().zip(&ran).all(|(a, b)| a != b),
        "a link kept the program on the old map: {ran:?} -> {now:?}"
    );
    let answered = traffic::ping(&lab, "192.0.2.100".parse()?, 3)?;
    assert!(answered > 0, "no ping answered");
    let ge0 = counted_on_ge0(&lab)?;
    assert!(ge0 > 0, "nothing counted on ge0 in the new map");
    println!(
        "{}: {old} -> {wanted}; the links' programs swapped; ge0 counted {ge0} frames",
        names::PORT_STATS_MAP
    );
    Ok(())
}
