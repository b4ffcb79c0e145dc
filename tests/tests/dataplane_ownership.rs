//! BPF_PROG_TEST_RUN fixtures for the instance table: ARP/ND ownership in
//! `baton_xdp` and egress pinning in `baton_tc_egress`. Each case: a frame,
//! where the instance's owner is, the action expected, the counters expected.
use baton_common::{InstanceEntry, InstanceKey, flags};
use baton_lab::frames::{
    self, GATEWAY_MAC, GATEWAY_V4, GATEWAY_V6, L4, arp_request, garp_reply, ipv4, neighbor_solicit,
};
#[path = "support/testrun.rs"]
mod testrun;

use testrun::{ELSEWHERE, HERE, TC_ACT_OK, TC_ACT_REDIRECT, TestDataplane, XDP_DROP, XDP_PASS};

const INSTANCE_MAC: [u8; 6] = [0x02, 0xba, 0x70, 0, 0, 1];

struct Dataplane(TestDataplane);

impl Dataplane {
    fn new() -> Dataplane {
        Dataplane(TestDataplane::new())
    }

    fn own(&mut self, key: InstanceKey, owner: u32) {
        let entry = InstanceEntry {
            id: 7,
            owner_ifindex: owner,
            mac: INSTANCE_MAC,
            flags: flags::OWN_MAC,
            vlan: key.vlan,
            ..Default::default()
        };
        self.0.own(key, entry);
    }

    fn counters(&self, ifindex: u32) -> baton_common::InstanceCounters {
        self.0.counters(7, ifindex)
    }

    fn xdp(&self, frame: &[u8]) -> u32 {
        self.0.xdp(frame).0
    }

    fn tc(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.0.tc_egress(frame)
    }
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    /// (key, owner ifindex) registered before the frame runs; None: no instance.
    instance: Option<(InstanceKey, u32)>,
    action: u32,
    /// Expected deltas: (solicits, solicits_dropped, rx_packets).
    counted: (u64, u64, u64),
}

fn v4() -> InstanceKey {
    InstanceKey::v4(0, GATEWAY_V4)
}

#[test]
fn ownership_cases() {
    let cases = vec![
        Case {
            name: "ARP request, owner here",
            frame: arp_request(&[], GATEWAY_V4),
            instance: Some((v4(), HERE)),
            action: XDP_PASS,
            counted: (1, 0, 0),
        },
        Case {
            name: "ARP request, owner elsewhere",
            frame: arp_request(&[], GATEWAY_V4),
            instance: Some((v4(), ELSEWHERE)),
            action: XDP_DROP,
            counted: (1, 1, 0),
        },
        Case {
            name: "ARP request, not an instance",
            frame: arp_request(&[], [192, 0, 2, 99]),
            instance: Some((v4(), ELSEWHERE)),
            action: XDP_PASS,
            counted: (0, 0, 0),
        },
        Case {
            name: "ARP request, no instances at all",
            frame: arp_request(&[], GATEWAY_V4),
            instance: None,
            action: XDP_PASS,
            counted: (0, 0, 0),
        },
        Case {
            name: "gratuitous ARP reply, owner elsewhere: passes",
            frame: garp_reply(INSTANCE_MAC, GATEWAY_V4),
            instance: Some((v4(), ELSEWHERE)),
            action: XDP_PASS,
            counted: (0, 0, 1),
        },
        Case {
            name: "TCP to the instance, owner elsewhere: passes, counted",
            frame: ipv4(&[], L4::Tcp, b"x"),
            instance: Some((v4(), ELSEWHERE)),
            action: XDP_PASS,
            counted: (0, 0, 1),
        },
        Case {
            name: "TCP to the instance, owner here",
            frame: ipv4(&[], L4::Tcp, b"x"),
            instance: Some((v4(), HERE)),
            action: XDP_PASS,
            counted: (0, 0, 1),
        },
        Case {
            name: "NS for a v6 instance, owner elsewhere",
            frame: neighbor_solicit(&[], GATEWAY_V6),
            instance: Some((InstanceKey::v6(0, GATEWAY_V6), ELSEWHERE)),
            action: XDP_DROP,
            counted: (1, 1, 0),
        },
        Case {
            name: "NS for a v6 instance, owner here",
            frame: neighbor_solicit(&[], GATEWAY_V6),
            instance: Some((InstanceKey::v6(0, GATEWAY_V6), HERE)),
            action: XDP_PASS,
            counted: (1, 0, 0),
        },
        Case {
            name: "VLAN 100 ARP request, VLAN 100 instance elsewhere",
            frame: arp_request(&[100], GATEWAY_V4),
            instance: Some((InstanceKey::v4(100, GATEWAY_V4), ELSEWHERE)),
            action: XDP_DROP,
            counted: (1, 1, 0),
        },
        Case {
            name: "VLAN 200 ARP request, VLAN 100 instance: another address",
            frame: arp_request(&[200], GATEWAY_V4),
            instance: Some((InstanceKey::v4(100, GATEWAY_V4), ELSEWHERE)),
            action: XDP_PASS,
            counted: (0, 0, 0),
        },
        Case {
            name: "untagged ARP request, VLAN 100 instance",
            frame: arp_request(&[], GATEWAY_V4),
            instance: Some((InstanceKey::v4(100, GATEWAY_V4), ELSEWHERE)),
            action: XDP_PASS,
            counted: (0, 0, 0),
        },
        Case {
            name: "802.1ad+802.1Q NS, outer VLAN 5 instance elsewhere",
            frame: neighbor_solicit(&[0x1000 | 5, 6], GATEWAY_V6),
            instance: Some((InstanceKey::v6(5, GATEWAY_V6), ELSEWHERE)),
            action: XDP_DROP,
            counted: (1, 1, 0),
        },
        Case {
            name: "truncated ARP request for the instance",
            frame: arp_request(&[], GATEWAY_V4)[..40].to_vec(),
            instance: Some((v4(), ELSEWHERE)),
            action: XDP_PASS,
            counted: (0, 0, 0),
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        // A fresh object per case: no state leaks between cases.
        let mut dp = Dataplane::new();
        if let Some((key, owner)) = case.instance {
            dp.own(key, owner);
        }
        let action = dp.xdp(&case.frame);
        let c = dp.counters(HERE);
        let got = (c.solicits, c.solicits_dropped, c.rx_packets);
        if action != case.action || got != case.counted {
            failures.push(format!(
                "{}: action {action} (want {}), counted {got:?} (want {:?})",
                case.name, case.action, case.counted
            ));
        }
        if got.2 > 0 && c.last_seen_ns == 0 {
            failures.push(format!("{}: last_seen not set", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_move_is_one_update_the_programs_see_at_once() {
    let mut dp = Dataplane::new();
    let frame = arp_request(&[], GATEWAY_V4);
    dp.own(v4(), ELSEWHERE);
    assert_eq!(dp.xdp(&frame), XDP_DROP);
    dp.own(v4(), HERE); // the flip
    assert_eq!(dp.xdp(&frame), XDP_PASS);
    dp.own(v4(), ELSEWHERE);
    assert_eq!(dp.xdp(&frame), XDP_DROP);
}

/// Keys whose index positions collide (the instance table probes on from
/// a key's own position): each is found past the others, also after the
/// first is removed (a deleted position is probed past), a removed key is
/// gone, and it comes back when placed again.
#[test]
fn colliding_keys_are_each_found_and_a_removal_leaves_the_rest() {
    let mut dp = Dataplane::new();
    let home = v4().index_slot();
    let addrs: Vec<[u8; 4]> = (0..=255u8)
        .flat_map(|b| (1..=254u8).map(move |c| [10, 0, b, c]))
        .filter(|a| InstanceKey::v4(0, *a).index_slot() == home)
        .take(3)
        .collect();
    assert_eq!(addrs.len(), 3, "three keys at index position {home}");
    let key = |a: [u8; 4]| InstanceKey::v4(0, a);
    for a in &addrs {
        dp.own(key(*a), ELSEWHERE);
    }
    // Owned elsewhere: a request for it is dropped here; else it passes.
    let dropped = |dp: &Dataplane, a: [u8; 4]| dp.xdp(&arp_request(&[], a)) == XDP_DROP;
    assert!(addrs.iter().all(|a| dropped(&dp, *a)), "all three found");
    dp.0.disown(key(addrs[0]));
    assert!(!dropped(&dp, addrs[0]), "the removed key is gone");
    assert!(
        dropped(&dp, addrs[1]) && dropped(&dp, addrs[2]),
        "the others are found past the deleted position"
    );
    dp.own(key(addrs[0]), ELSEWHERE);
    assert!(addrs.iter().all(|a| dropped(&dp, *a)), "placed again");
}

#[test]
fn tc_egress_pins_instance_traffic_to_its_owner() {
    // Replies from the instance leaving through ifindex 1: IPv4, IPv6, and
    // IPv4 tagged by a VLAN device for a VLAN 100 instance.
    let reply = |ip6: bool| {
        let mut f = Vec::new();
        let eth = etherparse::PacketBuilder::ethernet2(GATEWAY_MAC, frames::CLIENT_MAC);
        let ip = if ip6 {
            eth.ipv6(GATEWAY_V6, frames::CLIENT_V6, 64)
        } else {
            eth.ipv4(GATEWAY_V4, frames::CLIENT_V4, 64)
        };
        ip.tcp(3260, 40000, 1, 1000)
            .write(&mut f, b"data")
            .expect("frame");
        f
    };
    pins_to_owner(reply(false), v4());
    pins_to_owner(reply(true), InstanceKey::v6(0, GATEWAY_V6));
    pins_to_owner(
        frames::tag(reply(false), &[100]),
        InstanceKey::v4(100, GATEWAY_V4),
    );
}

fn pins_to_owner(reply: Vec<u8>, key: InstanceKey) {
    let mut dp = Dataplane::new();
    let (action, out) = dp.tc(&reply);
    assert_eq!(
        (action, out.clone()),
        (TC_ACT_OK, reply.clone()),
        "no instance: untouched"
    );

    dp.own(key, HERE);
    let (action, out2) = dp.tc(&reply);
    assert_eq!(
        (action, out2),
        (TC_ACT_OK, reply.clone()),
        "leaving through its owner: untouched"
    );
    assert_eq!(dp.counters(HERE).egress_redirected, 0);

    dp.own(key, ELSEWHERE);
    let (action, out) = dp.tc(&reply);
    assert_eq!(
        action, TC_ACT_REDIRECT,
        "leaving through the wrong port: redirected"
    );
    assert_eq!(&out[6..12], &INSTANCE_MAC, "source MAC is the instance's");
    assert_eq!(&out[..6], &reply[..6], "destination MAC untouched");
    assert_eq!(&out[12..], &reply[12..], "rest of the frame untouched");
    assert_eq!(dp.counters(HERE).egress_redirected, 1);

    // Traffic not sourced from the instance is never touched.
    let other = ipv4(&[], L4::Tcp, b"x"); // source is the client address
    assert_eq!(dp.tc(&other), (TC_ACT_OK, other.clone()));
}
