//! A VLAN instance on a port without 802.1Q devices (this kernel has none):
//! a client's tagged ARP request reaches the stack untagged (tag popped at
//! TCX ingress) and the answer leaves tagged (pushed at TC egress), seen on
//! the client's cable.
//!
//! Through a Linux bridge and veth the tag travels as skb metadata
//! (hardware-accelerated VLAN tag), which TCX sees and XDP does not (XDP
//! pops in-band tags only: NICs with `rxvlan off`; BPF_PROG_TEST_RUN
//! fixtures cover that path). So VLAN instances take `ingress = "tcx"`
//! here, and the XDP case below checks the limit is what we say it is.
use baton_lab::dataplane::{attach_programs, baton_ok};
use baton_lab::frames::arp_request;
use baton_lab::{Lab, LabSpec};

const INSTANCE: [u8; 4] = [192, 0, 2, 100];

#[test]
fn a_tagged_arp_request_gets_a_tagged_reply_at_tcx() -> anyhow::Result<()> {
    let replies = tagged_arp("tc-ingress")?;
    assert_eq!(
        replies, 1,
        "expected one tagged ARP reply on the client's cable"
    );
    Ok(())
}

#[test]
fn at_xdp_a_metadata_tag_is_not_seen() -> anyhow::Result<()> {
    // The XDP program sees an untagged ARP request for an address that lives
    // on VLAN 100 only: not the instance's, passed untouched, and the stack
    // drops a frame tagged for a VLAN it has no device for.
    assert_eq!(tagged_arp("baton")?, 0);
    Ok(())
}

/// Sends one tagged ARP request; returns how many tagged replies came back.
fn tagged_arp(programs: &str) -> anyhow::Result<usize> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    gw.ns.ip(&["addr", "add", "192.0.2.100/24", "dev", "ge0"])?;
    attach_programs(gw, programs)?;
    baton_ok(
        gw,
        &[
            "dataplane",
            "own",
            "192.0.2.100",
            "--vlan",
            "100",
            "--port",
            "ge0",
            "--id",
            "1",
        ],
    )?;
    let ge0_mac = gw.ns.mac("ge0")?;
    let capture = lab.capture(&lab.client, "eth0", "vlan 100 and arp")?;
    baton_lab::traffic::send_raw(&lab.client, "eth0", &arp_request(&[100], INSTANCE))?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let lines = capture.lines()?;
    let replies: Vec<&String> = lines.iter().filter(|l| l.contains("is-at")).collect();
    if replies.is_empty() {
        return Ok(0);
    }
    assert_eq!(replies.len(), 1, "{lines:?}");
    assert!(
        replies[0].starts_with(&ge0_mac) || replies[0].contains(&format!(" {ge0_mac} ")),
        "reply not from ge0 ({ge0_mac}): {}",
        replies[0]
    );
    assert!(replies[0].contains("vlan 100"), "{}", replies[0]);

    let table: serde_json::Value =
        serde_json::from_str(&baton_ok(gw, &["dataplane", "instances", "--json"])?)?;
    let sum = |field: &str| -> u64 {
        table
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["vlan"] == 100)
            .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| p[field].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(sum("tags_popped"), 1, "{table}");
    // The push is counted under the instance id on the port it left by.
    let pushed: u64 = table
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| p["tags_pushed"].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(pushed >= 1, "{table}");
    Ok(replies.len())
}
