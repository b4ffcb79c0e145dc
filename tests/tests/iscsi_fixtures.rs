//! iSCSI PDU accounting through BPF_PROG_TEST_RUN. Each case is a PDU byte
//! stream cut into TCP segments (in the order they arrive, repeats and gaps
//! included) and the counts expected per opcode, resyncs and unplaceable
//! segments. Requests go through XDP (or TCX ingress) as they arrive at the
//! gateway; responses through TC egress as they leave it.
#[path = "support/testrun.rs"]
mod testrun;

use baton_common::{InstanceEntry, InstanceKey, PduCounters, RX, TX, flags};
use baton_lab::frames::{CLIENT_MAC, CLIENT_V4, CLIENT_V6, GATEWAY_MAC, GATEWAY_V4, GATEWAY_V6};
use etherparse::PacketBuilder;
use testrun::{HERE, TestDataplane, XDP_PASS};

const ID: u32 = 9;
const ISN: u32 = 0xffff_ff00; // sequence numbers wrap inside every stream
const NOP_OUT: u8 = 0x00;
const SCSI_COMMAND: u8 = 0x01;
const LOGIN_REQUEST: u8 = 0x03;
const DATA_OUT: u8 = 0x05;
const LOGOUT_REQUEST: u8 = 0x06;
const SCSI_RESPONSE: u8 = 0x21;
const LOGIN_RESPONSE: u8 = 0x23;
const DATA_IN: u8 = 0x25;

/// One PDU: BHS with `opcode` and DataSegmentLength `data`, then the data
/// padded to 4 bytes (filled with `fill`), with digests when asked.
fn pdu(opcode: u8, data: usize, fill: u8, digests: (bool, bool)) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = opcode;
    p[1] = 0x80; // F bit
    p[5..8].copy_from_slice(&(data as u32).to_be_bytes()[1..]);
    let login = opcode == LOGIN_REQUEST || opcode == LOGIN_RESPONSE;
    if digests.0 && !login {
        p.extend([0xde, 0xad, 0xbe, 0xef]);
    }
    p.extend(std::iter::repeat_n(fill, data.div_ceil(4) * 4));
    if digests.1 && !login && data > 0 {
        p.extend([0xfe, 0xed, 0xfa, 0xce]);
    }
    p
}

fn plain(opcode: u8, data: usize) -> Vec<u8> {
    pdu(opcode, data, 0, (false, false))
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    V4,
    V6,
    V4Vlan,
}

/// A segment of the flow client:40001 <-> instance:3260.
#[derive(Clone)]
enum Seg {
    Syn,
    Rst,
    /// Stream bytes start..end.
    Bytes(usize, usize),
}

struct Case {
    name: &'static str,
    /// Request stream (client -> instance) and the segments it arrives in.
    stream: Vec<u8>,
    segments: Vec<Seg>,
    /// The way the segments travel.
    dir: usize,
    family: Family,
    /// Run requests through TCX ingress instead of XDP.
    tcx: bool,
    digests: (bool, bool),
    expect: Vec<(u8, u64)>,
    resyncs: u64,
    unsynced: u64,
}

impl Case {
    fn new(
        name: &'static str,
        stream: Vec<u8>,
        segments: Vec<Seg>,
        expect: Vec<(u8, u64)>,
    ) -> Case {
        Case {
            name,
            stream,
            segments,
            dir: RX,
            family: Family::V4,
            tcx: false,
            digests: (false, false),
            expect,
            resyncs: 0,
            unsynced: 0,
        }
    }
}

fn concat(pdus: &[Vec<u8>]) -> Vec<u8> {
    pdus.concat()
}

/// Whole-PDU segments of `pdus`, in order.
fn whole(pdus: &[Vec<u8>]) -> Vec<Seg> {
    let mut at = 0;
    let mut out = vec![Seg::Syn];
    for p in pdus {
        out.push(Seg::Bytes(at, at + p.len()));
        at += p.len();
    }
    out
}

fn frame(case: &Case, seg: &Seg) -> Vec<u8> {
    let (payload, seq) = match seg {
        Seg::Syn | Seg::Rst => (&[][..], ISN),
        Seg::Bytes(a, b) => (&case.stream[*a..*b], ISN.wrapping_add(1 + *a as u32)),
    };
    let (src_mac, dst_mac) = if case.dir == RX {
        (CLIENT_MAC, GATEWAY_MAC)
    } else {
        (GATEWAY_MAC, CLIENT_MAC)
    };
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let ip = match (case.family, case.dir == RX) {
        (Family::V6, true) => eth.ipv6(CLIENT_V6, GATEWAY_V6, 64),
        (Family::V6, false) => eth.ipv6(GATEWAY_V6, CLIENT_V6, 64),
        (_, true) => eth.ipv4(CLIENT_V4, GATEWAY_V4, 64),
        (_, false) => eth.ipv4(GATEWAY_V4, CLIENT_V4, 64),
    };
    let ports = if case.dir == RX {
        (40001, 3260)
    } else {
        (3260, 40001)
    };
    let tcp = ip.tcp(ports.0, ports.1, seq, 64000);
    let tcp = match seg {
        Seg::Syn => tcp.syn(),
        Seg::Rst => tcp.rst(),
        Seg::Bytes(..) => tcp.ack(1),
    };
    let mut f = Vec::new();
    tcp.write(&mut f, payload).expect("frame");
    if case.family == Family::V4Vlan {
        // 802.1Q tag, VLAN 100, after the MAC addresses.
        f.splice(12..12, [0x81, 0x00, 0x00, 100]);
    }
    f
}

fn run(case: &Case) -> Result<(), String> {
    let mut dp = TestDataplane::new();
    let mut flags = 0;
    if case.digests.0 {
        flags |= flags::HEADER_DIGEST;
    }
    if case.digests.1 {
        flags |= flags::DATA_DIGEST;
    }
    let (key, vlan) = match case.family {
        Family::V4 => (InstanceKey::v4(0, GATEWAY_V4), 0),
        Family::V4Vlan => (InstanceKey::v4(100, GATEWAY_V4), 100),
        Family::V6 => (InstanceKey::v6(0, GATEWAY_V6), 0),
    };
    dp.own(
        key,
        InstanceEntry {
            id: ID,
            owner_ifindex: HERE,
            mac: GATEWAY_MAC,
            flags,
            iscsi_ports: [3260, 0, 0, 0],
            vlan,
            ..Default::default()
        },
    );
    for (i, seg) in case.segments.iter().enumerate() {
        let f = frame(case, seg);
        let action = match (case.dir, case.tcx) {
            (RX, false) => dp.xdp(&f).0,
            (RX, true) => dp.tc_ingress(&f).0,
            _ => dp.tc_egress(&f).0,
        };
        let pass = if case.dir == RX && !case.tcx {
            XDP_PASS
        } else {
            0
        };
        if action != pass {
            return Err(format!("segment {i}: action {action}"));
        }
    }
    let got: PduCounters = dp.pdus(ID, HERE);
    let mut want = PduCounters::default();
    for (opcode, n) in &case.expect {
        want.pdus[case.dir][*opcode as usize] = *n;
    }
    want.resyncs = case.resyncs;
    want.unsynced_segments = case.unsynced;
    if got != want {
        let show = |c: &PduCounters| {
            let mut s = String::new();
            for (d, name) in [(RX, "rx"), (TX, "tx")] {
                for (op, n) in c.pdus[d].iter().enumerate() {
                    if *n > 0 {
                        s += &format!("{name}[{op:#04x}]={n} ");
                    }
                }
            }
            format!("{s}resyncs={} unsynced={}", c.resyncs, c.unsynced_segments)
        };
        return Err(format!("got {}, want {}", show(&got), show(&want)));
    }
    Ok(())
}

#[test]
fn pdu_accounting_cases() {
    let login = plain(LOGIN_REQUEST, 200);
    let cmd = plain(SCSI_COMMAND, 0);
    let logout = plain(LOGOUT_REQUEST, 0);
    let three = vec![login.clone(), cmd.clone(), logout.clone()];
    let three_stream = concat(&three);
    let n3 = three_stream.len();
    let counts3 = vec![(LOGIN_REQUEST, 1), (SCSI_COMMAND, 1), (LOGOUT_REQUEST, 1)];
    let data_out = plain(DATA_OUT, 1000);
    let split_stream = concat(&[data_out.clone(), cmd.clone()]);
    // Data that looks like a Logout BHS 100 bytes into a Data-Out's data.
    let mut tricky = plain(DATA_OUT, 512);
    tricky[48 + 100..48 + 148].copy_from_slice(&logout);
    let d = (true, true);
    let digest_pdus = vec![
        pdu(LOGIN_REQUEST, 20, 1, d),
        pdu(SCSI_COMMAND, 0, 0, d),
        pdu(DATA_OUT, 16, 7, d),
        pdu(NOP_OUT, 0, 0, d),
    ];
    let many: Vec<Vec<u8>> = (0..70).map(|_| cmd.clone()).collect();
    // A command, then a Data-Out whose 96 data bytes look like two commands.
    let mut fake = plain(DATA_OUT, 96);
    fake[48..96].copy_from_slice(&cmd);
    fake[96..144].copy_from_slice(&cmd);
    let misleading = concat(&[cmd.clone(), fake, cmd.clone()]);
    let forty = concat(&vec![cmd.clone(); 40]);
    let responses = vec![
        plain(LOGIN_RESPONSE, 100),
        plain(DATA_IN, 36),
        plain(SCSI_RESPONSE, 0),
    ];

    let cases = vec![
        Case::new(
            "one PDU per segment",
            three_stream.clone(),
            whole(&three),
            counts3.clone(),
        ),
        Case::new(
            "three PDUs in one segment",
            three_stream.clone(),
            vec![Seg::Syn, Seg::Bytes(0, n3)],
            counts3.clone(),
        ),
        Case::new(
            "a PDU split across segments",
            split_stream.clone(),
            vec![
                Seg::Syn,
                Seg::Bytes(0, 500),
                Seg::Bytes(500, split_stream.len()),
            ],
            vec![(DATA_OUT, 1), (SCSI_COMMAND, 1)],
        ),
        Case::new(
            "a header split across segments",
            three_stream.clone(),
            vec![
                Seg::Syn,
                Seg::Bytes(0, login.len() + 5),
                Seg::Bytes(login.len() + 5, n3),
            ],
            counts3.clone(),
        ),
        Case {
            resyncs: 1,
            unsynced: 1,
            ..Case::new(
                "a header cut by a segment under 8 bytes: resync, no guess",
                three_stream.clone(),
                vec![
                    Seg::Syn,
                    Seg::Bytes(0, login.len() + 5),
                    Seg::Bytes(login.len() + 5, login.len() + 7),
                    Seg::Bytes(login.len() + 7, n3),
                ],
                vec![(LOGIN_REQUEST, 1)],
            )
        },
        Case::new(
            "a retransmitted segment",
            three_stream.clone(),
            vec![
                Seg::Syn,
                Seg::Bytes(0, login.len()),
                Seg::Bytes(0, login.len()),
                Seg::Bytes(login.len(), n3),
                Seg::Bytes(login.len(), n3),
            ],
            counts3.clone(),
        ),
        Case::new(
            "an overlapping retransmission",
            three_stream.clone(),
            vec![
                Seg::Syn,
                Seg::Bytes(0, login.len() + 20),
                Seg::Bytes(10, n3),
            ],
            counts3.clone(),
        ),
        Case::new(
            "a lost segment, retransmitted",
            three_stream.clone(),
            vec![
                Seg::Syn,
                Seg::Bytes(0, login.len()),
                // login.len()..+48 lost; the next one arrives first
                Seg::Bytes(login.len() + 48, n3),
                Seg::Bytes(login.len(), n3),
            ],
            counts3.clone(),
        ),
        Case::new(
            "data that looks like a BHS, not at a PDU boundary",
            tricky.clone(),
            vec![Seg::Syn, Seg::Bytes(0, 148), Seg::Bytes(148, tricky.len())],
            vec![(DATA_OUT, 1)],
        ),
        Case {
            digests: d,
            ..Case::new(
                "digests on (none on the login)",
                concat(&digest_pdus),
                whole(&digest_pdus),
                vec![
                    (LOGIN_REQUEST, 1),
                    (SCSI_COMMAND, 1),
                    (DATA_OUT, 1),
                    (NOP_OUT, 1),
                ],
            )
        },
        Case {
            digests: d,
            ..Case::new(
                "digests on, all in one segment",
                concat(&digest_pdus),
                vec![Seg::Syn, Seg::Bytes(0, concat(&digest_pdus).len())],
                vec![
                    (LOGIN_REQUEST, 1),
                    (SCSI_COMMAND, 1),
                    (DATA_OUT, 1),
                    (NOP_OUT, 1),
                ],
            )
        },
        Case::new(
            "a failover's reordering: later segments overtake the lost one, held as an island, counted when the retransmission lands on it",
            concat(&many[..6]),
            vec![
                Seg::Syn,
                Seg::Bytes(0, 48),
                Seg::Bytes(96, 144),
                Seg::Bytes(144, 240),
                Seg::Bytes(48, 96),
                Seg::Bytes(240, 288),
            ],
            vec![(SCSI_COMMAND, 6)],
        ),
        Case::new(
            "a retransmission TCP collapsed from the lost segment and the island's first: lands on the island mid-segment",
            concat(&many[..7]),
            vec![
                Seg::Syn,
                Seg::Bytes(0, 48),
                // 48..96 lost; the island is 96..240.
                Seg::Bytes(96, 144),
                Seg::Bytes(144, 240),
                // The retransmission carries 48..144; 144..240 never comes again.
                Seg::Bytes(48, 144),
                Seg::Bytes(240, 336),
            ],
            vec![(SCSI_COMMAND, 7)],
        ),
        Case::new(
            "an island that was data, not PDUs: dropped when the walk passes it",
            misleading.clone(),
            vec![
                Seg::Syn,
                Seg::Bytes(0, 48),
                Seg::Bytes(96, 192),
                Seg::Bytes(48, 96),
                Seg::Bytes(192, 240),
            ],
            vec![(SCSI_COMMAND, 2), (DATA_OUT, 1)],
        ),
        Case {
            resyncs: 1,
            ..Case::new(
                "a gap that never fills: resync, then found again on a whole PDU",
                concat(&many),
                // PDU 1 is lost for good; PDUs 2..65 wait for it (held as an
                // island), PDU 66 gives up (a resync), PDU 67 is taken whole.
                [
                    vec![Seg::Syn, Seg::Bytes(0, 48)],
                    (2..68).map(|i| Seg::Bytes(i * 48, i * 48 + 48)).collect(),
                ]
                .concat(),
                vec![(SCSI_COMMAND, 2)],
            )
        },
        Case {
            unsynced: 1,
            ..Case::new(
                "joined mid-stream: a segment inside a PDU is not guessed at, a whole PDU is taken",
                split_stream.clone(),
                vec![Seg::Bytes(100, 1048), Seg::Bytes(1048, split_stream.len())],
                vec![(SCSI_COMMAND, 1)],
            )
        },
        Case {
            resyncs: 1,
            ..Case::new(
                "more PDUs in one segment than one pass walks",
                forty.clone(),
                vec![Seg::Syn, Seg::Bytes(0, forty.len())],
                vec![(SCSI_COMMAND, 32)],
            )
        },
        Case {
            resyncs: 1,
            ..Case::new(
                "a target's opcode in the initiator's stream",
                concat(&[cmd.clone(), plain(SCSI_RESPONSE, 0)]),
                vec![Seg::Syn, Seg::Bytes(0, 96)],
                vec![(SCSI_COMMAND, 1)],
            )
        },
        Case {
            unsynced: 1,
            ..Case::new(
                "RST forgets the flow",
                split_stream.clone(),
                vec![
                    Seg::Syn,
                    Seg::Bytes(0, 100),
                    Seg::Rst,
                    Seg::Bytes(100, 1048),
                ],
                vec![(DATA_OUT, 1)],
            )
        },
        Case {
            family: Family::V6,
            ..Case::new(
                "IPv6",
                three_stream.clone(),
                vec![Seg::Syn, Seg::Bytes(0, n3)],
                counts3.clone(),
            )
        },
        Case {
            family: Family::V4Vlan,
            ..Case::new(
                "802.1Q tagged, VLAN instance",
                three_stream.clone(),
                vec![Seg::Syn, Seg::Bytes(0, n3)],
                counts3.clone(),
            )
        },
        Case {
            tcx: true,
            ..Case::new(
                "at TCX ingress",
                split_stream.clone(),
                vec![
                    Seg::Syn,
                    Seg::Bytes(0, 500),
                    Seg::Bytes(500, split_stream.len()),
                ],
                vec![(DATA_OUT, 1), (SCSI_COMMAND, 1)],
            )
        },
        Case {
            dir: TX,
            ..Case::new(
                "responses at TC egress",
                concat(&responses),
                vec![
                    Seg::Syn,
                    Seg::Bytes(0, 100),
                    Seg::Bytes(100, concat(&responses).len()),
                ],
                vec![(LOGIN_RESPONSE, 1), (DATA_IN, 1), (SCSI_RESPONSE, 1)],
            )
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = run(case) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
