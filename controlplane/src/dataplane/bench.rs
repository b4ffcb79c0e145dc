//! Per-packet cost of each program through BPF_PROG_TEST_RUN (the kernel
//! runs the program `repeat` times on one frame and reports the mean).
use super::{InstanceTable, PinDir, load, load_program};
use anyhow::{Context as _, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use baton_common::{InstanceEntry, InstanceKey, names};
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const CLIENT: [u8; 4] = [192, 0, 2, 1];
const INSTANCE: [u8; 4] = [192, 0, 2, 100];

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Result<Vec<u8>> {
    segment(src, dst, (sport, dport), SEQ, false, payload)
}

const SEQ: u32 = 1000;

fn segment(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    seq: u32,
    syn: bool,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let mut f = Vec::new();
    let tcp = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(src, dst, 64)
        .tcp(ports.0, ports.1, seq, 65000);
    if syn {
        tcp.syn().write(&mut f, payload)?;
    } else {
        tcp.write(&mut f, payload)?;
    }
    Ok(f)
}

/// A flow to prime the iSCSI accounting with: its SYN, then the start of a
/// 64 KiB PDU (`opcode`, BHS and 1000 bytes of data).
fn iscsi_flow_start(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    opcode: u8,
) -> Result<[Vec<u8>; 2]> {
    let mut bhs = vec![0u8; 48 + 1000];
    bhs[0] = opcode;
    bhs[1] = 0x80;
    bhs[5..8].copy_from_slice(&[1, 0, 0]); // DataSegmentLength 65536
    Ok([
        segment(src, dst, ports, SEQ - 1, true, &[])?,
        segment(src, dst, ports, SEQ, false, &bhs)?,
    ])
}

/// A data segment in the middle of that PDU: what most segments of a
/// storage transfer are.
fn iscsi_mid_pdu(src: [u8; 4], dst: [u8; 4], ports: (u16, u16)) -> Result<Vec<u8>> {
    segment(src, dst, ports, SEQ + 48 + 1000, false, &[0u8; 1448])
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
    /// A data segment to the instance on a port that is not iSCSI.
    pub xdp_ns_tcp_to_instance: f64,
    /// A data segment to an address that is not an instance.
    pub xdp_ns_tcp_not_instance: f64,
    pub xdp_ns_arp: f64,
    pub xdp_ns_empty: f64,
    /// TC egress on an iSCSI Data-In segment from the instance.
    pub tc_ns: f64,
    /// TC egress on a frame from an address that is not an instance.
    pub tc_ns_not_instance: f64,
    pub tc_ingress_ns_iscsi: f64,
}

/// Measures every program on the loopback device of the caller's namespace
/// (ifindex 1, which owns the instance here). Nothing is attached. The
/// iSCSI frames run through PDU accounting: their flows are primed with a
/// SYN and the start of a 64 KiB PDU, then the measured segment is data in
/// the middle of it (Data-Out to the instance at XDP and TCX ingress,
/// Data-In from it at TC egress), as most segments of a transfer are.
/// Runs the bench on a scratch pin dir beside `pins` (its own maps, removed
/// after): the test entries never touch a live daemon's maps.
pub fn run(pins: &PinDir, repeat: u32) -> Result<Costs> {
    stay_on_this_cpu();
    let scratch = PinDir::new(format!(
        "{}-bench-{}",
        pins.path().display(),
        std::process::id()
    ));
    std::fs::create_dir_all(scratch.path())
        .with_context(|| format!("creating {}", scratch.path().display()))?;
    let result = run_on(&scratch, repeat);
    // Pinned maps are files on bpffs: removing them frees them.
    if let Err(e) = std::fs::remove_dir_all(scratch.path()) {
        tracing::warn!(dir = %scratch.path().display(), error = %e, "removing the bench pins");
    }
    result
}

/// Pins the calling thread to the CPU it runs on: a migration in the
/// middle of a million runs is noise in the mean the kernel reports.
fn stay_on_this_cpu() {
    // SAFETY: sched_getcpu and sched_setaffinity on this thread with a
    // cpu_set_t of our own.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!("could not pin the bench to CPU {cpu}");
        }
    }
}

fn run_on(pins: &PinDir, repeat: u32) -> Result<Costs> {
    let mut ebpf = load(pins)?;
    for p in [
        names::XDP_PROGRAM,
        names::XDP_PASS_PROGRAM,
        names::TC_EGRESS_PROGRAM,
        names::TC_INGRESS_PROGRAM,
    ] {
        load_program(&mut ebpf, p)?;
    }
    InstanceTable::open(pins)?.set(
        &InstanceKey::v4(0, INSTANCE),
        &InstanceEntry {
            id: 1,
            owner_ifindex: 1,
            mac: GATEWAY_MAC,
            iscsi_ports: [3260, 0, 0, 0],
            ports: [1, 0, 0, 0],
            ..Default::default()
        },
    )?;
    let to_target = (40000, 3260);
    let from_target = (3260, 40000);
    let iscsi = iscsi_mid_pdu(CLIENT, INSTANCE, to_target)?;
    let data_in = iscsi_mid_pdu(INSTANCE, CLIENT, from_target)?;
    // From an address that is not an instance: egress looks it up and lets it go.
    let reply = tcp([192, 0, 2, 99], CLIENT, 3260, 40000, &[0u8; 512])?;
    let xdp = |prog: &str, frame: &[u8], repeat: u32| -> Result<f64> {
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
    let tc = |prog: &str, frame: &[u8], repeat: u32| -> Result<f64> {
        let p: &SchedClassifier = ebpf.program(prog).context("program")?.try_into()?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok(r.duration.as_nanos() as f64)
    };
    // Prime the flows (the XDP and TCX ingress programs share the flow table).
    for f in iscsi_flow_start(CLIENT, INSTANCE, to_target, 0x05)? {
        xdp(names::XDP_PROGRAM, &f, 1)?;
    }
    for f in iscsi_flow_start(INSTANCE, CLIENT, from_target, 0x25)? {
        tc(names::TC_EGRESS_PROGRAM, &f, 1)?;
    }
    Ok(Costs {
        repeat,
        xdp_ns_iscsi: xdp(names::XDP_PROGRAM, &iscsi, repeat)?,
        xdp_ns_tcp_to_instance: xdp(
            names::XDP_PROGRAM,
            &tcp(CLIENT, INSTANCE, 40001, 7000, &[0u8; 1448])?,
            repeat,
        )?,
        xdp_ns_tcp_not_instance: xdp(names::XDP_PROGRAM, &iscsi_segment([192, 0, 2, 99])?, repeat)?,
        xdp_ns_arp: xdp(names::XDP_PROGRAM, &arp_request(INSTANCE)?, repeat)?,
        xdp_ns_empty: xdp(names::XDP_PASS_PROGRAM, &iscsi, repeat)?,
        tc_ns: tc(names::TC_EGRESS_PROGRAM, &data_in, repeat)?,
        tc_ns_not_instance: tc(names::TC_EGRESS_PROGRAM, &reply, repeat)?,
        tc_ingress_ns_iscsi: tc(names::TC_INGRESS_PROGRAM, &iscsi, repeat)?,
    })
}
