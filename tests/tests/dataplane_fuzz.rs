//! A million random and mutated frames through every program: the verifier
//! accepted them once, the kernel must run them on anything, every result is
//! a valid action, and the port counters add up to exactly what was sent.
#[path = "support/testrun.rs"]
mod testrun;

use aya::maps::{MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use baton::dataplane::InstanceTable;
use baton_common::{InstanceEntry, InstanceKey, PortStats, flags, names};
use baton_lab::frames::{
    self, GATEWAY_V4, GATEWAY_V6, L4, arp_request, ipv4, ipv6, neighbor_solicit, with_ipv4_options,
};
use testrun::TestDataplane;

// Enough that each TC program, after the frames its harness refuses, still runs over a million.
const FRAMES: u32 = 1_100_000;

/// xorshift64*: deterministic, so a failure reproduces from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid frames of every kind the parser knows, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let tcp = ipv4(&[], L4::Tcp, &[0u8; 64]);
    // iSCSI: a SCSI Command BHS, then a Data-Out BHS with 16 bytes of data.
    let mut pdus = vec![0u8; 48 + 48 + 16];
    pdus[0] = 0x01;
    pdus[48] = 0x05;
    pdus[48 + 7] = 16;
    vec![
        ipv4(&[], L4::Tcp, &pdus),
        ipv4(&[100], L4::Tcp, &pdus),
        ipv6(&[], L4::Tcp, &pdus),
        tcp.clone(),
        ipv4(&[100], L4::Udp, b"udp"),
        ipv4(&[0x1000 | 5, 6], L4::Icmp, b"ping"),
        ipv6(&[], L4::Tcp, b"x"),
        ipv6(&[7], L4::Udp, b"x"),
        arp_request(&[], GATEWAY_V4),
        arp_request(&[100], GATEWAY_V4),
        neighbor_solicit(&[], GATEWAY_V6),
        with_ipv4_options(&tcp, &[1; 12]),
    ]
}

/// One frame: a mutated seed (byte flips, truncation, extension) or noise.
fn frame(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut f = if rng.below(4) == 0 {
        let len = 14 + rng.below(1500);
        (0..len).map(|_| rng.next() as u8).collect()
    } else {
        seeds[rng.below(seeds.len())].clone()
    };
    for _ in 0..rng.below(6) {
        let i = rng.below(f.len());
        f[i] = rng.next() as u8;
    }
    match rng.below(5) {
        0 => f.truncate(14 + rng.below(f.len() - 13)),
        1 => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        _ => {}
    }
    f
}

#[test]
fn a_million_random_frames_through_every_program() {
    // The harness removes its pins when it drops, also on a failed assert.
    let dp = TestDataplane::new();
    {
        // Instances owned elsewhere: the drop and redirect paths get exercised.
        // The keys overlap on purpose: the tagged entry's untagged twin is
        // then overwritten by the steered one.
        let mut table = InstanceTable::open(dp.pins()).expect("instance table");
        // Every branch: iSCSI accounting both ways, CPU steering, tag pop and push.
        let base = InstanceEntry {
            id: 3,
            owner_ifindex: 4242,
            mac: [2, 0, 0, 0, 0, 9],
            iscsi_ports: [3260, 40000, 0, 0],
            ..Default::default()
        };
        let steered = InstanceEntry {
            cpu_count: 1,
            ..base
        };
        let tagged = InstanceEntry {
            owner_ifindex: 1,
            vlan: 100,
            flags: flags::VLAN_TAGS | flags::HEADER_DIGEST,
            ..base
        };
        for (key, entry) in [
            (InstanceKey::v4(100, GATEWAY_V4), tagged),
            (InstanceKey::v4(0, GATEWAY_V4), steered),
            (InstanceKey::v6(0, GATEWAY_V6), base),
            (InstanceKey::v4(0, frames::CLIENT_V4), tagged),
        ] {
            table.set(&key, &entry).expect("insert");
        }
    }
    baton::dataplane::steering::enable_cpus(dp.pins(), [0]).expect("cpumap");
    let ebpf = &dp.ebpf;
    let seeds = seeds();
    let xdp: &Xdp = ebpf
        .program(names::XDP_PROGRAM)
        .expect("xdp")
        .try_into()
        .expect("xdp");
    let egress: &SchedClassifier = ebpf
        .program(names::TC_EGRESS_PROGRAM)
        .expect("tc")
        .try_into()
        .expect("tc");
    let ingress: &SchedClassifier = ebpf
        .program(names::TC_INGRESS_PROGRAM)
        .expect("tc")
        .try_into()
        .expect("tc");
    let mut rng = Rng(0x5eed_ba70_0000_0001);
    let mut md = [0u8; 24];
    md[12..16].copy_from_slice(&1u32.to_ne_bytes()); // ingress on ifindex 1
    let (mut xdp_actions, mut tc_actions) = ([0u64; 8], [0u64; 8]);
    let (mut harness_refused, mut tc_ingress_refused) = (0u64, 0u64);
    for i in 0..FRAMES {
        let f = frame(&mut rng, &seeds);
        md[4..8].copy_from_slice(&(f.len() as u32).to_ne_bytes());
        let a = xdp
            .test_run(TestRunOptions {
                data_in: Some(&f),
                ctx_in: Some(&md),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("frame {i}: XDP run failed: {e}"));
        // XDP_DROP 1, XDP_PASS 2, XDP_REDIRECT 4 (into the cpumap).
        assert!(
            [1, 2, 4].contains(&a.return_value),
            "frame {i}: XDP returned {}",
            a.return_value
        );
        xdp_actions[a.return_value as usize] += 1;
        for (is_ingress, tc) in [(false, egress), (true, ingress)] {
            let r = match tc.test_run(TestRunOptions {
                data_in: Some(&f),
                ..Default::default()
            }) {
                Ok(r) => r,
                // The kernel's skb harness refuses an IP frame whose IP header
                // is cut short (EINVAL), as it refuses frames under 14 bytes;
                // the XDP run above fed the parser that frame.
                Err(e)
                    if format!("{e:?}").contains("code: 22")
                        && [[8, 0], [0x86, 0xdd]].contains(&[f[12], f[13]]) =>
                {
                    harness_refused += 1;
                    if is_ingress {
                        tc_ingress_refused += 1;
                    }
                    continue;
                }
                Err(e) => panic!(
                    "frame {i} ({} bytes, {:02x?}): TC run failed: {e:?}",
                    f.len(),
                    &f[..f.len().min(40)]
                ),
            };
            // TC_ACT_OK 0, TC_ACT_SHOT 2, TC_ACT_REDIRECT 7.
            assert!(
                [0, 2, 7].contains(&r.return_value),
                "frame {i}: TC returned {}",
                r.return_value
            );
            tc_actions[r.return_value as usize] += 1;
        }
    }
    // Every XDP and TCX ingress run counted each frame exactly once.
    let stats: PerCpuArray<&MapData, PortStats> =
        PerCpuArray::try_from(ebpf.map(names::PORT_STATS_MAP).expect("map")).expect("per-cpu");
    let mut total = PortStats::default();
    for (_, s) in baton::dataplane::stats::port_totals(&stats).expect("read") {
        total.add(&s);
    }
    let runs = 2 * u64::from(FRAMES) - tc_ingress_refused;
    let tc_runs = u64::from(FRAMES) - harness_refused / 2;
    assert!(
        tc_runs >= 1_000_000,
        "only about {tc_runs} frames per TC program"
    );
    assert_eq!(total.frames().packets, runs, "frames counted: {total:?}");
    assert!(
        xdp_actions[1] > 0 && xdp_actions[4] > 0 && tc_actions[2] > 0 && tc_actions[7] > 0,
        "paths not reached: XDP {xdp_actions:?} TC {tc_actions:?}"
    );
    assert!(
        harness_refused < u64::from(FRAMES) / 5,
        "the harness refused {harness_refused} frames"
    );
    println!(
        "XDP actions {xdp_actions:?}, TC actions {tc_actions:?}, refused by the skb harness {harness_refused}, classes {total:?}"
    );
}
