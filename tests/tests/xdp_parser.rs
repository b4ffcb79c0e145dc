//! Table-driven BPF_PROG_TEST_RUN tests of `baton_xdp`: each case is a
//! crafted frame, the action expected, and the counter classes it must bump.
use aya::maps::{MapData, PerCpuArray};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use baton::dataplane::{PinDir, load_xdp};
use baton_common::{Class, PortStats, names};
use baton_lab::frames::{
    self, ETH_LEN, L4, arp_request, ipv4, ipv6, set_u8, set_u16, with_ipv4_options,
};

const XDP_PASS: u32 = 2;

struct Harness {
    ebpf: aya::Ebpf,
    _pins: TempPins,
}

/// A bpffs directory of this test's own, removed on drop.
struct TempPins(PinDir);
impl Drop for TempPins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.path());
    }
}

impl Harness {
    fn new(program: &str) -> Harness {
        baton_lab::ensure_bpffs().expect("bpffs");
        let pins = TempPins(PinDir::new(format!(
            "/sys/fs/bpf/{}-parser",
            baton_lab::unique_prefix()
        )));
        let (ebpf, _) = load_xdp(&pins.0, program).expect("program loads and verifies");
        Harness { ebpf, _pins: pins }
    }

    fn run(&self, frame: &[u8]) -> Result<u32, ProgramError> {
        let prog: &Xdp = self
            .ebpf
            .program(names::XDP_PROGRAM)
            .expect("program")
            .try_into()
            .expect("xdp");
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .map(|r| r.return_value)
    }

    /// Counters summed over every port key and CPU.
    fn totals(&self) -> PortStats {
        let map = self.ebpf.map(names::PORT_STATS_MAP).expect("stats map");
        let map: PerCpuArray<&MapData, PortStats> =
            PerCpuArray::try_from(map).expect("per-cpu array");
        let mut total = PortStats::default();
        for (_, s) in baton::dataplane::stats::port_totals(&map).expect("read") {
            total.add(&s);
        }
        total
    }
}

fn delta(after: &PortStats, before: &PortStats) -> Vec<(Class, u64, u64)> {
    Class::ALL
        .iter()
        .map(|&c| {
            (
                c,
                after.get(c).packets - before.get(c).packets,
                after.get(c).bytes - before.get(c).bytes,
            )
        })
        .filter(|(_, p, _)| *p != 0)
        .collect()
}

fn expect(name: &str, frame: Vec<u8>, classes: &[Class]) -> (String, Vec<u8>, Vec<Class>) {
    (name.to_string(), frame, classes.to_vec())
}

fn cases() -> Vec<(String, Vec<u8>, Vec<Class>)> {
    use Class::*;
    let tcp4 = ipv4(&[], L4::Tcp, b"iscsi!");
    let udp4 = ipv4(&[], L4::Udp, b"echo");
    let tcp6 = ipv6(&[], L4::Tcp, b"iscsi!");
    let ip = ETH_LEN;
    let mut cases = vec![
        expect("arp request", arp_request(&[], frames::GATEWAY_V4), &[Arp]),
        expect(
            "arp, one tag",
            arp_request(&[7], frames::GATEWAY_V4),
            &[Arp],
        ),
        expect("ipv4 icmp", ipv4(&[], L4::Icmp, b"ping"), &[Ipv4]),
        expect("ipv4 tcp", tcp4.clone(), &[Ipv4, Tcp]),
        expect("ipv4 udp", udp4.clone(), &[Ipv4, Udp]),
        expect("ipv6 icmp", ipv6(&[], L4::Icmp, b"ping"), &[Ipv6]),
        expect("ipv6 tcp", tcp6.clone(), &[Ipv6, Tcp]),
        expect("ipv6 udp", ipv6(&[], L4::Udp, b"echo"), &[Ipv6, Udp]),
        expect("802.1Q tcp", ipv4(&[100], L4::Tcp, b"x"), &[Ipv4, Tcp]),
        expect(
            "802.1ad+802.1Q udp",
            ipv4(&[0x1000 | 200, 300], L4::Udp, b"x"),
            &[Ipv4, Udp],
        ),
        expect(
            "802.1Q+802.1Q ipv6 tcp",
            ipv6(&[5, 6], L4::Tcp, b"x"),
            &[Ipv6, Tcp],
        ),
        expect(
            "three tags: not parsed further",
            ipv4(&[1, 2, 3], L4::Tcp, b"x"),
            &[Other],
        ),
        expect(
            "lldp ethertype",
            set_u16(tcp4.clone(), 12, 0x88cc),
            &[Other],
        ),
        expect(
            "ipv4 with options",
            with_ipv4_options(&tcp4, &[1, 1, 1, 1, 1, 1, 1]),
            &[Ipv4, Tcp],
        ),
        expect(
            "ipv4 with 40 bytes of options",
            with_ipv4_options(&tcp4, &[1; 40]),
            &[Ipv4, Tcp],
        ),
        expect(
            "ethernet padding after ipv4",
            {
                let mut f = udp4.clone();
                f.resize(60, 0);
                f
            },
            &[Ipv4, Udp],
        ),
        expect(
            "ipv4 later fragment",
            set_u16(tcp4.clone(), ip + 6, 0x0010),
            &[Ipv4],
        ),
        // Lies and garbage.
        expect(
            "ethernet header only",
            tcp4[..ETH_LEN].to_vec(),
            &[Malformed],
        ),
        expect("ipv4 ihl 4", set_u8(tcp4.clone(), ip, 0x44), &[Malformed]),
        expect("ipv4 ihl 0", set_u8(tcp4.clone(), ip, 0x40), &[Malformed]),
        expect(
            "ipv4 ihl 15 beyond frame",
            set_u8(udp4[..ip + 24].to_vec(), ip, 0x4f),
            &[Malformed],
        ),
        expect(
            "version 6 in an ipv4 ethertype",
            set_u8(tcp4.clone(), ip, 0x65),
            &[Malformed],
        ),
        expect(
            "ipv4 total length > frame",
            set_u16(tcp4.clone(), ip + 2, 1500),
            &[Malformed],
        ),
        expect(
            "ipv4 total length < header",
            set_u16(tcp4.clone(), ip + 2, 19),
            &[Malformed],
        ),
        expect(
            "tcp data offset 4",
            set_u8(tcp4.clone(), ip + 20 + 12, 0x40),
            &[Malformed],
        ),
        expect(
            "tcp data offset beyond packet",
            set_u8(tcp4.clone(), ip + 20 + 12, 0xf0),
            &[Malformed],
        ),
        expect(
            "udp length 7",
            set_u16(udp4.clone(), ip + 20 + 4, 7),
            &[Malformed],
        ),
        expect(
            "udp length > ip payload",
            set_u16(udp4.clone(), ip + 20 + 4, 200),
            &[Malformed],
        ),
        expect(
            "ipv6 payload length > frame",
            set_u16(tcp6.clone(), ip + 4, 1000),
            &[Malformed],
        ),
        expect(
            "ipv6 version 4",
            set_u8(tcp6.clone(), ip, 0x40),
            &[Malformed],
        ),
        expect(
            "vlan tag cut short",
            ipv4(&[100], L4::Tcp, b"x")[..ETH_LEN + 2].to_vec(),
            &[Malformed],
        ),
    ];
    // Truncated at every length from the Ethernet header to one byte short.
    for (name, frame) in [
        ("ipv4 tcp two tags", ipv4(&[10, 20], L4::Tcp, b"")),
        ("ipv6 udp one tag", ipv6(&[10], L4::Udp, b"")),
        ("arp", arp_request(&[], frames::GATEWAY_V4)),
        ("ipv4 options tcp", with_ipv4_options(&tcp4, &[1; 8])),
    ] {
        for len in ETH_LEN..frame.len() {
            cases.push(expect(
                &format!("{name} cut to {len}"),
                frame[..len].to_vec(),
                &[Malformed],
            ));
        }
    }
    cases
}

#[test]
fn every_case_passes_and_bumps_exactly_its_classes() {
    let h = Harness::new(names::XDP_PROGRAM);
    let mut failures = Vec::new();
    for (name, frame, want) in cases() {
        let before = h.totals();
        let action = h
            .run(&frame)
            .unwrap_or_else(|e| panic!("{name}: test run failed: {e}"));
        let got = delta(&h.totals(), &before);
        let want: Vec<(Class, u64, u64)> =
            want.iter().map(|&c| (c, 1, frame.len() as u64)).collect();
        if action != XDP_PASS || got != want {
            failures.push(format!(
                "{name}: action {action}, counted {got:?}, expected {want:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel_and_count_nothing() {
    // BPF_PROG_TEST_RUN refuses data shorter than ETH_HLEN with EINVAL (as a
    // NIC never hands XDP such a frame); the program must not have run.
    let h = Harness::new(names::XDP_PROGRAM);
    for len in [0usize, 1, 13] {
        let frame = vec![0u8; len];
        let before = h.totals();
        assert!(
            h.run(&frame).is_err(),
            "a {len}-byte frame was accepted by the kernel harness"
        );
        assert_eq!(h.totals(), before, "{len}-byte frame changed the counters");
    }
}

#[test]
fn empty_program_passes_everything() {
    let h = Harness::new(names::XDP_PASS_PROGRAM);
    let prog: &Xdp = h
        .ebpf
        .program(names::XDP_PASS_PROGRAM)
        .expect("program")
        .try_into()
        .expect("xdp");
    let frame = ipv4(&[], L4::Tcp, b"x");
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            ..Default::default()
        })
        .expect("runs");
    assert_eq!(result.return_value, XDP_PASS);
}
