//! Address defence on the real daemon: another host claiming a placed
//! address is a conflict (reported, defended per RFC 5227 2.4), IPv6
//! addresses are probed before first placement (DAD-style NS from ::), and
//! a VLAN instance's probes and announcements carry its tag.
use baton_lab::daemon::{Daemon, lab_config};
use baton_lab::{Lab, LabSpec};
use etherparse::PacketBuilder;
use std::time::{Duration, Instant};

const INTRUDER: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x66];

fn claim_frame() -> Vec<u8> {
    baton_lab::frames::gratuitous_arp(INTRUDER, [192, 0, 2, 100])
}

#[test]
fn another_host_claiming_a_placed_address_is_reported_and_defended() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    // One announcement per move: the capture sees only the defence.
    let timers = "hold_down = \"0\"\nannounce_count = 1";
    let daemon = Daemon::start(&lab, 0, &lab_config(timers, ""))?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    let ge0 = lab.gw(0).ns.mac("ge0")?;
    let capture = lab.capture(&lab.client, "eth0", "arp")?;
    let sent = Instant::now();
    baton_lab::traffic::send_raw(&lab.client, "eth0", &claim_frame())?;
    let mut conflict = serde_json::Value::Null;
    while sent.elapsed() < Duration::from_secs(1) && conflict.is_null() {
        conflict = daemon.status()?["instances"][0]["conflict"].clone();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(conflict["by"], "02:ee:00:00:00:66", "status: {conflict}");
    assert_eq!(conflict["port"], "ge0");
    assert_eq!(conflict["defended"], true);
    // A second claim within DEFEND_INTERVAL is reported, not answered again.
    baton_lab::traffic::send_raw(&lab.client, "eth0", &claim_frame())?;
    std::thread::sleep(Duration::from_millis(300));
    let conflict = daemon.status()?["instances"][0]["conflict"].clone();
    assert_eq!(conflict["count"], 2, "{conflict}");
    assert_eq!(conflict["defended"], false, "{conflict}");
    let lines = capture.lines()?;
    let defences = lines
        .iter()
        .filter(|l| l.starts_with(&ge0) || l.contains(&format!(" {ge0} > ff:ff:ff:ff:ff:ff")))
        .filter(|l| {
            l.contains("192.0.2.100 is-at") || l.contains("who-has 192.0.2.100 tell 192.0.2.100")
        })
        .count();
    assert_eq!(
        defences, 2,
        "one defence (both GARP forms) from ge0: {lines:#?}"
    );
    // A repair beside it: the address deleted by hand comes back.
    lab.gw(0)
        .ns
        .ip(&["addr", "del", "192.0.2.100/24", "dev", "ge0"])?;
    std::thread::sleep(Duration::from_millis(300));
    let text = String::from_utf8_lossy(&daemon.cli(&["status"])?.stdout).into_owned();
    assert!(
        text.contains("address conflict: 02:ee:00:00:00:66"),
        "{text}"
    );
    assert!(text.contains("repaired address"), "{text}");
    println!("{text}");
    // The address stays: a stranger's claim does not take a service address away.
    assert_eq!(daemon.owner("iscsi-a")?.as_deref(), Some("ge0"));
    Ok(())
}

#[test]
fn an_ipv6_address_in_use_on_the_wire_is_not_taken() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec {
        ipv6: true,
        ..LabSpec::default()
    })?;
    // The client already holds the instance's address.
    lab.client.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::100/64",
        "dev",
        "eth0",
        "nodad",
    ])?;
    let config =
        baton_lab::daemon::with_ipv6_instance(&lab_config("hold_down = \"0\"", ""), "iscsi-v6");
    let daemon = Daemon::start(&lab, 0, &config)?;
    daemon.wait_owner("iscsi-a", "ge0", Duration::from_secs(3))?;
    std::thread::sleep(Duration::from_millis(800));
    let status = daemon.status()?;
    let v6 = status["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == "iscsi-v6")
        .cloned()
        .unwrap_or_default();
    assert!(v6["owner"].is_null(), "taken although in use: {v6}");
    assert!(
        v6["refused"].to_string().contains("address-in-use"),
        "refusals: {v6}"
    );
    let addrs = lab.gw(0).ns.ip(&["-6", "addr", "show"])?;
    assert!(!addrs.contains("2001:db8::100"), "{addrs}");
    Ok(())
}

#[test]
fn a_vlan_instance_probes_and_announces_tagged() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let config = r#"[timers]
hold_down = "0"
announce_count = 1

[daemon]
ingress = "tcx"

[networks.storage]
subnets = ["192.0.2.0/24"]

[ports.ge0]
networks = ["storage"]
vlans = [100]

[ports.ge1]
networks = ["storage"]
vlans = [100]

[instances.vlan-a]
address = "192.0.2.100/24"
ports = ["ge0", "ge1"]
vlan = 100
"#;
    let capture = lab.capture(&lab.client, "eth0", "arp")?;
    let daemon = Daemon::start(&lab, 0, config)?;
    daemon.wait_owner("vlan-a", "ge0", Duration::from_secs(3))?;
    std::thread::sleep(Duration::from_millis(300));
    let lines = capture.lines()?;
    let probe: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("who-has 192.0.2.100 tell 0.0.0.0"))
        .collect();
    assert_eq!(probe.len(), 1, "{lines:#?}");
    assert!(
        probe[0].contains("vlan 100"),
        "probe untagged: {}",
        probe[0]
    );
    let garps: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("tell 192.0.2.100") || l.contains("192.0.2.100 is-at"))
        .collect();
    assert!(!garps.is_empty(), "{lines:#?}");
    assert!(
        garps
            .iter()
            .all(|l| l.contains("vlan 100") && !l.contains("vlan 100, p 0, ethertype 802.1Q")),
        "announcements not tagged once: {garps:#?}"
    );
    Ok(())
}

#[test]
fn another_host_advertising_a_placed_ipv6_address_is_a_conflict() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec {
        ipv6: true,
        ..LabSpec::default()
    })?;
    let config = baton_lab::daemon::with_ipv6_instance(
        &lab_config("hold_down = \"0\"\nannounce_count = 1", ""),
        "iscsi-v6",
    );
    let daemon = Daemon::start(&lab, 0, &config)?;
    daemon.wait_owner("iscsi-v6", "ge0", Duration::from_secs(3))?;
    // An unsolicited NA (override) for the address from the intruder's MAC.
    let target: std::net::Ipv6Addr = "2001:db8::100".parse()?;
    let mut payload = target.octets().to_vec();
    payload.extend_from_slice(&[2, 1]);
    payload.extend_from_slice(&INTRUDER);
    let na = etherparse::icmpv6::NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    };
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(INTRUDER, [0x33, 0x33, 0, 0, 0, 1])
        .ipv6(
            "fe80::ee:ff:fe00:66"
                .parse::<std::net::Ipv6Addr>()?
                .octets(),
            "ff02::1".parse::<std::net::Ipv6Addr>()?.octets(),
            255,
        )
        .icmpv6(etherparse::Icmpv6Type::NeighborAdvertisement(na))
        .write(&mut frame, &payload)?;
    baton_lab::traffic::send_raw(&lab.client, "eth0", &frame)?;
    let sent = Instant::now();
    loop {
        let status = daemon.status()?;
        let v6 = status["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["name"] == "iscsi-v6")
            .cloned()
            .unwrap_or_default();
        if v6["conflict"]["by"] == "02:ee:00:00:00:66" {
            assert_eq!(v6["conflict"]["defended"], true, "{v6}");
            return Ok(());
        }
        anyhow::ensure!(
            sent.elapsed() < Duration::from_secs(1),
            "no conflict reported: {v6}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
