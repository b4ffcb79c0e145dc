//! The instance table on real traffic: ARP flux gone, TC egress pinning.
use baton_lab::dataplane::{attach, baton_ok};
use baton_lab::{CLIENT_ADDR, Lab, LabSpec};

const INSTANCE: &str = "192.0.2.100";

/// Source MACs of the ARP replies the client receives for one request.
fn arp_replies(lab: &Lab) -> anyhow::Result<Vec<String>> {
    let capture = lab.capture(&lab.client, "eth0", "arp[6:2] == 2")?;
    baton_lab::traffic::arping(lab, INSTANCE.parse()?, 1)?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(capture
        .lines()?
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect())
}

#[test]
fn arp_flux_is_gone_only_the_owner_answers() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    // The flux condition: Linux's default weak-host ARP (arp_ignore = 0), two
    // ports on one segment, the address on ge0.
    for dev in ["all", "ge0", "ge1"] {
        gw.ns
            .sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "0")?;
    }
    gw.ns
        .ip(&["addr", "add", &format!("{INSTANCE}/24"), "dev", "ge0"])?;
    let ge0_mac = gw.ns.mac("ge0")?;

    let before = arp_replies(&lab)?;
    assert!(
        before.len() >= 2,
        "the test premise failed: without baton expected ARP flux (2 replies), got {before:?}"
    );

    attach(gw)?;
    baton_ok(
        gw,
        &["dataplane", "own", INSTANCE, "--port", "ge0", "--id", "1"],
    )?;
    let after = arp_replies(&lab)?;
    assert_eq!(
        after,
        vec![ge0_mac.clone()],
        "with baton exactly one reply, from the owner ge0"
    );

    // The flip: ge1 becomes the owner (address moved too), and only ge1 answers.
    gw.ns
        .ip(&["addr", "del", &format!("{INSTANCE}/24"), "dev", "ge0"])?;
    gw.ns
        .ip(&["addr", "add", &format!("{INSTANCE}/24"), "dev", "ge1"])?;
    baton_ok(
        gw,
        &["dataplane", "own", INSTANCE, "--port", "ge1", "--id", "1"],
    )?;
    assert_eq!(arp_replies(&lab)?, vec![gw.ns.mac("ge1")?]);

    let table = baton_ok(gw, &["dataplane", "instances", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&table)?;
    let dropped: u64 = v[0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["solicits_dropped"].as_u64().unwrap_or(0))
        .sum();
    assert!(dropped >= 2, "drops not counted: {table}");
    Ok(())
}

#[test]
fn tc_egress_sends_instance_replies_out_of_the_owner() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    gw.ns
        .ip(&["addr", "add", &format!("{INSTANCE}/24"), "dev", "ge0"])?;
    attach(gw)?;
    baton_ok(
        gw,
        &["dataplane", "own", INSTANCE, "--port", "ge0", "--id", "1"],
    )?;
    // Kernel routes point the wrong way: replies to the client leave via ge1.
    gw.ns.ip(&[
        "route",
        "add",
        &format!("{CLIENT_ADDR}/32"),
        "dev",
        "ge1",
        "src",
        INSTANCE,
    ])?;

    let on_owner = lab.capture(&lab.switch, "g0p0", "icmp[icmptype] == icmp-echoreply")?;
    let on_other = lab.capture(&lab.switch, "g0p1", "icmp[icmptype] == icmp-echoreply")?;
    let answered = baton_lab::traffic::ping(&lab, INSTANCE.parse()?, 20)?;
    let (owner_lines, other_lines) = (on_owner.lines()?, on_other.lines()?);
    assert_eq!(answered, 20);
    assert_eq!(
        owner_lines.len(),
        20,
        "replies seen on the owner's cable: {owner_lines:?}"
    );
    assert!(
        other_lines.is_empty(),
        "replies leaked out of ge1: {other_lines:?}"
    );
    let ge0_mac = gw.ns.mac("ge0")?;
    assert!(
        owner_lines
            .iter()
            .all(|l| l.starts_with(&ge0_mac) || l.contains(&format!("{ge0_mac} >"))),
        "source MAC is not ge0's: {owner_lines:?}"
    );

    let table = baton_ok(gw, &["dataplane", "instances", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&table)?;
    let ge1 = v[0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"] == "ge1")
        .cloned();
    assert_eq!(
        ge1.map(|p| p["egress_redirected"].as_u64()),
        Some(Some(20)),
        "{table}"
    );
    Ok(())
}
