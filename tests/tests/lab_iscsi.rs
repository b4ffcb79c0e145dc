//! iSCSI PDU accounting on real traffic: N runs of libiscsi's iscsi-inq
//! against tgtd through baton's XDP program. What baton counted per opcode
//! must equal what a capture on the client decodes, both directions, with
//! no resync.
use baton_lab::dataplane::{instances, place};
use baton_lab::iscsi::{Target, pdus_in_pcap};
use baton_lab::{Lab, LabSpec};
use std::collections::BTreeMap;

const INSTANCE: &str = "192.0.2.100";
const RUNS: u64 = 5;
const LOGIN_REQUEST: u8 = 0x03;
const SCSI_COMMAND: u8 = 0x01;
const LOGOUT_REQUEST: u8 = 0x06;

/// baton's counts for the instance on `port`, direction "rx" or "tx", by opcode.
fn counted(table: &serde_json::Value, port: &str, dir: &str) -> BTreeMap<u8, u64> {
    let mut out = BTreeMap::new();
    let ports = table[0]["ports"].as_array().cloned().unwrap_or_default();
    for p in ports.iter().filter(|p| p["port"] == port) {
        for (name, n) in p["iscsi"][dir].as_object().cloned().unwrap_or_default() {
            let opcode = (0u8..64)
                .find(|op| baton_common::iscsi_opcode_name(*op) == Some(name.as_str()))
                .unwrap_or_else(|| panic!("unknown opcode name {name}"));
            out.insert(opcode, n.as_u64().unwrap_or(0));
        }
    }
    out
}

#[test]
fn pdu_counts_equal_what_iscsi_inq_sent() -> anyhow::Result<()> {
    let lab = Lab::build(&LabSpec::default())?;
    let gw = lab.gw(0);
    place(gw, INSTANCE, "ge0", &["--iscsi-port", "3260"])?;
    let target = Target::start(&gw.ns, INSTANCE.parse()?, 8)?;

    let pcap = std::env::temp_dir().join(format!("{}-iscsi.pcap", baton_lab::unique_prefix()));
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let capture = lab.client.spawn(&[
        "tcpdump",
        "-i",
        "eth0",
        "-U",
        "-s",
        "0",
        "-w",
        &pcap_arg,
        "tcp port 3260",
    ])?;
    std::thread::sleep(std::time::Duration::from_millis(700));
    for run in 0..RUNS {
        let out = lab
            .client
            .command("iscsi-inq")
            .args(["-i", "iqn.2026-11.lab.baton:client", &target.url()])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "iscsi-inq run {run} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    capture.stop()?;
    let truth = pdus_in_pcap(&pcap);
    let _ = std::fs::remove_file(&pcap);
    let truth = truth?;

    let table = instances(gw)?;
    let rx = counted(&table, "ge0", "rx");
    let tx = counted(&table, "ge0", "tx");
    let iscsi = &table[0]["ports"];
    println!("baton rx {rx:?} tx {tx:?}; capture {truth:?}; {iscsi}");

    // What the runs sent: a login, at least one command and one logout each.
    assert!(
        truth.requests.get(&LOGIN_REQUEST) >= Some(&RUNS),
        "{truth:?}"
    );
    assert!(
        truth.requests.get(&SCSI_COMMAND) >= Some(&RUNS),
        "{truth:?}"
    );
    assert_eq!(
        truth.requests.get(&LOGOUT_REQUEST),
        Some(&RUNS),
        "{truth:?}"
    );
    // baton counted exactly that, both ways.
    assert_eq!(rx, truth.requests, "requests at XDP ingress");
    assert_eq!(tx, truth.responses, "responses at TC egress");
    let resyncs: u64 = iscsi
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["iscsi"]["resyncs"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(resyncs, 0, "no resync on a clean lab");
    drop(target);
    Ok(())
}
