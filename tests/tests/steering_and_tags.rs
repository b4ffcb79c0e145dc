//! CPU steering and VLAN tag pop/push through BPF_PROG_TEST_RUN: each case
//! a frame, the instance it meets, the action, the frame after it, counters.
#[path = "support/testrun.rs"]
mod testrun;

use aya::maps::{MapData, PerCpuArray};
use baton_common::{InstanceEntry, InstanceKey, flags, names};
use baton_lab::frames::{
    CLIENT_MAC, CLIENT_V4, GATEWAY_MAC, GATEWAY_V4, GATEWAY_V6, L4, arp_request, ipv4, ipv6,
    neighbor_solicit, tag,
};
use etherparse::PacketBuilder;
use testrun::{HERE, TC_ACT_OK, TestDataplane, XDP_PASS, XDP_REDIRECT};

const ID: u32 = 5;

fn entry(cpus: &[u16], vlan: u16, flags: u16) -> InstanceEntry {
    let mut e = InstanceEntry {
        id: ID,
        owner_ifindex: HERE,
        mac: GATEWAY_MAC,
        flags,
        vlan,
        ..Default::default()
    };
    e.cpus[..cpus.len()].copy_from_slice(cpus);
    e.cpu_count = cpus.len() as u8;
    e
}

fn tcp_from(sport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(CLIENT_V4, GATEWAY_V4, 64)
        .tcp(sport, 3260, 1, 64000)
        .write(&mut f, b"payload")
        .expect("frame");
    f
}

/// Frames steered to each CPU, summed over the CPUs that steered them.
fn steered(dp: &TestDataplane) -> Vec<u64> {
    let map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(dp.ebpf.map(names::STEERED_MAP).expect("map")).expect("array");
    (0..4)
        .map(|cpu| map.get(&cpu, 0).map(|v| v.iter().sum()).unwrap_or(0))
        .collect()
}

#[test]
fn one_flow_always_lands_on_one_cpu_and_flows_spread() {
    let mut dp = TestDataplane::new();
    baton::dataplane::steering::enable_cpus(dp.pins(), [0, 1]).expect("cpumap");
    dp.own(InstanceKey::v4(0, GATEWAY_V4), entry(&[0, 1], 0, 0));

    // One stream, 200 segments: one CPU gets all of them.
    for _ in 0..200 {
        assert_eq!(dp.xdp(&tcp_from(40000)).0, XDP_REDIRECT);
    }
    let one = steered(&dp);
    assert_eq!(one.iter().sum::<u64>(), 200, "{one:?}");
    assert!(one.contains(&200), "a stream was split over CPUs: {one:?}");

    // 64 streams: both CPUs of the set get some, none outside it.
    for sport in 0..64u16 {
        dp.xdp(&tcp_from(41000 + sport));
    }
    let many = steered(&dp);
    assert!(
        many[0] > one[0] && many[1] > one[1],
        "flows did not spread: {many:?}"
    );
    assert_eq!(many[2] + many[3], 0, "steered outside the set: {many:?}");

    // IPv6: the same, one stream one CPU.
    dp.own(InstanceKey::v6(0, GATEWAY_V6), entry(&[0, 1], 0, 0));
    let before = steered(&dp);
    let v6 = ipv6(&[], L4::Tcp, b"x");
    for _ in 0..50 {
        assert_eq!(dp.xdp(&v6).0, XDP_REDIRECT);
    }
    let after = steered(&dp);
    let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(
        grew.contains(&50) && grew.iter().sum::<u64>() == 50,
        "{grew:?}"
    );

    // ARP for the instance is not steered; the owner still answers it here.
    assert_eq!(dp.xdp(&arp_request(&[], GATEWAY_V4)).0, XDP_PASS);
    assert_eq!(steered(&dp).iter().sum::<u64>(), 314);
}

#[test]
fn a_cpu_without_a_queue_passes_the_frame_where_it_is() {
    let mut dp = TestDataplane::new();
    // CPU 1 named by the instance, but no cpumap queue for it.
    dp.own(InstanceKey::v4(0, GATEWAY_V4), entry(&[1], 0, 0));
    assert_eq!(dp.xdp(&tcp_from(40000)).0, XDP_PASS);
}

#[test]
fn instances_without_a_cpu_set_are_not_steered() {
    let mut dp = TestDataplane::new();
    baton::dataplane::steering::enable_cpus(dp.pins(), [0, 1]).expect("cpumap");
    dp.own(InstanceKey::v4(0, GATEWAY_V4), entry(&[], 0, 0));
    assert_eq!(dp.xdp(&tcp_from(40000)).0, XDP_PASS);
    assert_eq!(steered(&dp).iter().sum::<u64>(), 0);
}

struct TagCase {
    name: &'static str,
    frame: Vec<u8>,
    /// Instance key and entry (vlan, flags).
    instance: (InstanceKey, u16, u16),
    /// The frame expected after XDP (None: unchanged).
    out: Option<Vec<u8>>,
    popped: u64,
}

#[test]
fn vlan_tags_are_popped_at_ingress_for_tagged_instances() {
    let tcp = ipv4(&[], L4::Tcp, b"x");
    let arp = arp_request(&[], GATEWAY_V4);
    let v100 = InstanceKey::v4(100, GATEWAY_V4);
    let cases = vec![
        TagCase {
            name: "TCP tagged 100, VLAN 100 instance with VLAN_TAGS: popped",
            frame: tag(tcp.clone(), &[100]),
            instance: (v100, 100, flags::VLAN_TAGS),
            out: Some(tcp.clone()),
            popped: 1,
        },
        TagCase {
            name: "IPv6 TCP tagged 100, VLAN 100 v6 instance: popped",
            frame: tag(ipv6(&[], L4::Tcp, b"x"), &[100]),
            instance: (InstanceKey::v6(100, GATEWAY_V6), 100, flags::VLAN_TAGS),
            out: Some(ipv6(&[], L4::Tcp, b"x")),
            popped: 1,
        },
        TagCase {
            name: "neighbour solicitation tagged 100 for a v6 VLAN instance: popped",
            frame: neighbor_solicit(&[100], GATEWAY_V6),
            instance: (InstanceKey::v6(100, GATEWAY_V6), 100, flags::VLAN_TAGS),
            out: Some(neighbor_solicit(&[], GATEWAY_V6)),
            popped: 1,
        },
        TagCase {
            name: "ARP request tagged 100: popped, the owner's stack answers",
            frame: tag(arp.clone(), &[100]),
            instance: (v100, 100, flags::VLAN_TAGS),
            out: Some(arp.clone()),
            popped: 1,
        },
        TagCase {
            name: "tagged 200 for a VLAN 100 instance: another address, untouched",
            frame: tag(tcp.clone(), &[200]),
            instance: (v100, 100, flags::VLAN_TAGS),
            out: None,
            popped: 0,
        },
        TagCase {
            name: "VLAN instance without VLAN_TAGS (a VLAN device exists): untouched",
            frame: tag(tcp.clone(), &[100]),
            instance: (v100, 100, 0),
            out: None,
            popped: 0,
        },
        TagCase {
            name: "two tags (802.1ad outer 100): only single tags are popped",
            frame: tag(tcp.clone(), &[0x1000 | 100, 7]),
            instance: (v100, 100, flags::VLAN_TAGS),
            out: None,
            popped: 0,
        },
        TagCase {
            name: "untagged frame meets the untagged twin of a VLAN instance: not its frame",
            frame: tcp.clone(),
            instance: (InstanceKey::v4(0, GATEWAY_V4), 100, flags::VLAN_TAGS),
            out: None,
            popped: 0,
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let mut dp = TestDataplane::new();
        dp.own(c.instance.0, entry(&[], c.instance.1, c.instance.2));
        let (action, out) = dp.xdp(&c.frame);
        let want = c.out.clone().unwrap_or_else(|| c.frame.clone());
        let popped = dp.counters(ID, HERE).tags_popped;
        if action != XDP_PASS || out != want || popped != c.popped {
            failures.push(format!(
                "{}: action {action}, popped {popped} (want {}), frame {}",
                c.name,
                c.popped,
                if out == want {
                    "as expected"
                } else {
                    "differs"
                }
            ));
        }
        // The same logic at TCX ingress (the frame carries its tag in-band here).
        let (action, out) = dp.tc_ingress(&c.frame);
        if action != TC_ACT_OK || out != want {
            failures.push(format!(
                "{} (TCX ingress): action {action}, frame {}",
                c.name,
                if out == want {
                    "as expected"
                } else {
                    "differs"
                }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vlan_tags_are_pushed_at_egress_for_tagged_instances() {
    // A reply from the instance: the kernel sends it untagged (no VLAN device).
    let reply = {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(GATEWAY_MAC, CLIENT_MAC)
            .ipv4(GATEWAY_V4, CLIENT_V4, 64)
            .tcp(3260, 40000, 1, 1000)
            .write(&mut f, b"data")
            .expect("frame");
        f
    };
    let mut dp = TestDataplane::new();
    let e = entry(&[], 100, flags::VLAN_TAGS);
    // The table writes the tagged key and its untagged twin (what egress finds).
    dp.own(InstanceKey::v4(100, GATEWAY_V4), e);
    let (action, _) = dp.tc_egress(&reply);
    assert_eq!(action, TC_ACT_OK);
    // bpf_skb_vlan_push puts the tag in the skb's metadata (the driver or the
    // stack writes it on the wire), which BPF_PROG_TEST_RUN does not copy
    // out: the counter shows the push; lab_vlan shows the tag on the wire.
    assert_eq!(dp.counters(ID, HERE).tags_pushed, 1);

    // Already tagged (e.g. by a VLAN device): never a second tag.
    let tagged = tag(reply.clone(), &[100]);
    assert_eq!(dp.tc_egress(&tagged), (TC_ACT_OK, tagged.clone()));
    assert_eq!(dp.counters(ID, HERE).tags_pushed, 1);

    // An instance without VLAN_TAGS: nothing pushed.
    let mut dp = TestDataplane::new();
    dp.own(InstanceKey::v4(0, GATEWAY_V4), entry(&[], 0, 0));
    dp.tc_egress(&reply);
    assert_eq!(dp.counters(ID, HERE).tags_pushed, 0);
}
