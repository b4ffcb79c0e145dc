//! Per-packet cost of each program through BPF_PROG_TEST_RUN (the kernel
//! runs the program `repeat` times on one frame and reports the mean).
use super::{PinDir, load, load_program};
use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use baton_common::{InstanceEntry, InstanceKey, names};
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const CLIENT: [u8; 4] = [192, 0, 2, 1];
const INSTANCE: [u8; 4] = [192, 0, 2, 100];

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Result<Vec<u8>> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 65000)
        .write(&mut f, payload)?;
    Ok(f)
}

/// An iSCSI SCSI Data-Out PDU (opcode 0x05): 48-byte BHS and 512 bytes of data.
fn iscsi_segment(dst: [u8; 4]) -> Result<Vec<u8>> {
    let mut pdu = vec![0u8; 48 + 512];
    pdu[0] = 0x05;
    pdu[5..8].copy_from_slice(&[0, 2, 0]); // DataSegmentLength 512
    tcp(CLIENT, dst, 40000, 3260, &pdu)
}

fn arp_request(target: [u8; 4]) -> Result<Vec<u8>> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &CLIENT_MAC,
        &CLIENT,
        &[0; 6],
        &target,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
        .arp(arp)
        .write(&mut f)?;
    Ok(f)
}

#[derive(Debug, serde::Serialize)]
pub struct Costs {
    pub repeat: u32,
    pub xdp_ns_iscsi: f64,
    pub xdp_ns_other_tcp: f64,
    pub xdp_ns_arp: f64,
    pub xdp_ns_empty: f64,
    pub tc_ns: f64,
    pub tc_ingress_ns_iscsi: f64,
}

/// Measures every program on the loopback device of the caller's namespace
/// (ifindex 1, which owns the instance here). Nothing is attached. The
/// iSCSI frame runs through PDU accounting: the first run finds the flow
/// (one whole PDU), the repeats are what most segments of a long transfer
/// are, data inside a PDU whose end is known.
pub fn run(pins: &PinDir, repeat: u32) -> Result<Costs> {
    let mut ebpf = load(pins)?;
    for p in [
        names::XDP_PROGRAM,
        names::XDP_PASS_PROGRAM,
        names::TC_EGRESS_PROGRAM,
        names::TC_INGRESS_PROGRAM,
    ] {
        load_program(&mut ebpf, p)?;
    }
    {
        let mut map: HashMap<&mut MapData, InstanceKey, InstanceEntry> =
            HashMap::try_from(ebpf.map_mut(names::INSTANCES_MAP).context("instance map")?)?;
        map.insert(
            InstanceKey::v4(0, INSTANCE),
            InstanceEntry {
                id: 1,
                owner_ifindex: 1,
                mac: GATEWAY_MAC,
                iscsi_ports: [3260, 0, 0, 0],
                ..Default::default()
            },
            0,
        )?;
    }
    let iscsi = iscsi_segment(INSTANCE)?;
    let xdp = |prog: &str, frame: &[u8]| -> Result<f64> {
        let p: &Xdp = ebpf.program(prog).context("program")?.try_into()?;
        let mut md = [0u8; 24];
        md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        md[12..16].copy_from_slice(&1u32.to_ne_bytes());
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&md),
            repeat,
            ..Default::default()
        })?;
        Ok(r.duration.as_nanos() as f64)
    };
    let tc = |prog: &str, frame: &[u8]| -> Result<f64> {
        let p: &SchedClassifier = ebpf.program(prog).context("program")?.try_into()?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok(r.duration.as_nanos() as f64)
    };
    // Reply from the instance, leaving through its owner (the common case).
    let reply = tcp(INSTANCE, CLIENT, 3260, 40000, &[0u8; 512])?;
    Ok(Costs {
        repeat,
        xdp_ns_iscsi: xdp(names::XDP_PROGRAM, &iscsi)?,
        xdp_ns_other_tcp: xdp(names::XDP_PROGRAM, &iscsi_segment([192, 0, 2, 99])?)?,
        xdp_ns_arp: xdp(names::XDP_PROGRAM, &arp_request(INSTANCE)?)?,
        xdp_ns_empty: xdp(names::XDP_PASS_PROGRAM, &iscsi)?,
        tc_ns: tc(names::TC_EGRESS_PROGRAM, &reply)?,
        tc_ingress_ns_iscsi: tc(names::TC_INGRESS_PROGRAM, &iscsi)?,
    })
}
