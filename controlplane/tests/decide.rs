//! The decision engine, rule by rule: hold timers, eligibility, caps,
//! failback, the cluster's word.
use baton::decide::*;
use baton_config::{Config, Host, InstanceName, PortName, parse};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

fn config(extra: &str) -> Config {
    let text = format!(
        r#"
[timers]
hold_down = "2s"
hold_up = "2s"
failback_delay = "5s"

[networks.storage]
subnets = ["192.0.2.0/24", "198.51.100.0/24"]
vlans = [100]

[networks.backup]
subnets = ["203.0.113.0/24"]

[ports.ge0]
networks = ["storage"]
vlans = [100]

[ports.ge1]
networks = ["storage"]
vlans = [100]

[ports.ge2]
networks = ["backup"]

[ports.ge3]
networks = ["storage"]
subnets = ["198.51.100.0/24"]

{extra}"#
    );
    parse("test.toml", &text, &Host::with_cpus(2)).unwrap_or_else(|e| panic!("{e}"))
}

struct World {
    config: Config,
    ports: BTreeMap<PortName, PortState>,
    cluster: Option<ClusterView>,
    in_use: BTreeSet<(InstanceName, PortName)>,
    retry_at: BTreeMap<(InstanceName, PortName), Duration>,
    placement: BTreeMap<InstanceName, PortName>,
}

impl World {
    fn new(config: Config) -> World {
        let ports = all_ports_up(&config);
        World {
            config,
            ports,
            cluster: None,
            in_use: BTreeSet::new(),
            retry_at: BTreeMap::new(),
            placement: BTreeMap::new(),
        }
    }
    fn decide(&self, now: Duration) -> Plan {
        decide(&Inputs {
            config: &self.config,
            ports: &self.ports,
            cluster: self.cluster.as_ref(),
            in_use: &self.in_use,
            retry_at: &self.retry_at,
            placement: &self.placement,
            now,
        })
    }
    /// Decides and applies the moves; returns the plan.
    fn step(&mut self, now: Duration) -> Plan {
        let plan = self.decide(now);
        for m in &plan.moves {
            self.placement.insert(m.instance.clone(), m.to.clone());
        }
        plan
    }
    fn link(&mut self, port: &str, link: Link, now: Duration) {
        self.ports.insert(
            port.into(),
            PortState {
                link,
                since: now,
                at_start: false,
            },
        );
    }
    fn down_at_start(&mut self, port: &str) {
        self.ports.insert(
            port.into(),
            PortState {
                link: Link::Down,
                since: Duration::ZERO,
                at_start: true,
            },
        );
    }
}

fn one(ports: &str) -> String {
    format!("[instances.a]\naddress = \"192.0.2.100/24\"\nports = {ports}\n")
}

fn refused(plan: &Plan, inst: &str) -> Vec<(String, String)> {
    match &plan.placements[inst] {
        Placement::Stays { refused, .. } => refused
            .iter()
            .map(|(p, r)| (p.to_string(), r.name().to_string()))
            .collect(),
        other => panic!("{inst} was placed: {other:?}"),
    }
}

fn pair(p: &str, r: &str) -> (String, String) {
    (p.to_string(), r.to_string())
}

#[test]
fn starts_on_the_primary() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    let plan = w.step(Duration::ZERO);
    assert_eq!(
        plan.moves,
        vec![Move {
            instance: "a".into(),
            from: None,
            to: "ge0".into(),
            kind: MoveKind::Initial
        }]
    );
    assert!(w.step(Duration::ZERO).moves.is_empty(), "not stable");
}

#[test]
fn a_port_down_at_start_puts_its_instance_on_the_secondary_at_once() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.down_at_start("ge0");
    let plan = w.step(Duration::ZERO);
    assert_eq!(plan.moves[0].to, "ge1");
}

#[test]
fn fails_over_only_after_hold_down() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, 10 * S);
    let plan = w.step(11 * S);
    assert!(plan.moves.is_empty(), "moved before hold_down: {plan:?}");
    assert_eq!(plan.placements["a"], Placement::On("ge0".into()));
    assert_eq!(plan.next_check, Some(12 * S));
    let plan = w.step(12 * S);
    assert_eq!(
        plan.moves,
        vec![Move {
            instance: "a".into(),
            from: Some("ge0".into()),
            to: "ge1".into(),
            kind: MoveKind::Failover
        }]
    );
}

#[test]
fn hold_down_zero_moves_at_once() {
    let mut c = config(&one(r#"["ge0", "ge1"]"#));
    c.timers.hold_down = Duration::ZERO;
    let mut w = World::new(c);
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, 10 * S);
    assert_eq!(w.step(10 * S).moves.len(), 1);
}

#[test]
fn a_short_flap_moves_nothing() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, 10 * S);
    w.link("ge0", Link::Up, 11 * S);
    for t in 11..20 {
        assert!(w.step(t * S).moves.is_empty());
    }
}

#[test]
fn failback_never_stays_on_the_secondary() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, S);
    w.step(3 * S);
    w.link("ge0", Link::Up, 4 * S);
    for t in 4..60 {
        assert!(w.step(t * S).moves.is_empty());
    }
    assert_eq!(w.placement["a"], "ge1");
}

#[test]
fn failback_auto_waits_for_failback_delay() {
    let mut w = World::new(config(
        &(one(r#"["ge0", "ge1"]"#) + "failback = \"auto\"\n"),
    ));
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, S);
    w.step(3 * S);
    w.link("ge0", Link::Up, 4 * S);
    // hold_up 2 s, failback_delay 5 s: back at 9 s, not before.
    for t in 4..9 {
        assert!(w.step(t * S).moves.is_empty(), "failed back at {t}s");
    }
    let plan = w.step(9 * S);
    assert_eq!(
        plan.moves,
        vec![Move {
            instance: "a".into(),
            from: Some("ge1".into()),
            to: "ge0".into(),
            kind: MoveKind::Failback
        }]
    );
}

#[test]
fn a_target_settling_after_hold_up_is_not_taken() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.step(Duration::ZERO);
    w.link("ge1", Link::Down, S);
    w.link("ge1", Link::Up, 10 * S);
    w.link("ge0", Link::Down, 9 * S); // failed at 11 s; ge1 settles until 12 s
    let plan = w.step(12 * S - Duration::from_millis(1));
    assert_eq!(refused(&plan, "a"), vec![pair("ge1", "port-settling")]);
    assert_eq!(w.step(12 * S).moves[0].to, "ge1");
}

// A port's eligibility for an instance: network, subnet, VLAN, caps.
#[test]
fn different_network_is_refused() {
    let mut w = World::new(config(&one(r#"["ge0", "ge2"]"#)));
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, S);
    let plan = w.step(10 * S);
    assert_eq!(refused(&plan, "a"), vec![pair("ge2", "different-network")]);
    assert_eq!(
        plan.placements["a"],
        Placement::Stays {
            at: Some("ge0".into()),
            refused: vec![("ge2".into(), Reason::DifferentNetwork)]
        }
    );
}

#[test]
fn different_subnet_is_refused() {
    let mut w = World::new(config(&one(r#"["ge0", "ge3"]"#)));
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, S);
    assert_eq!(
        refused(&w.step(10 * S), "a"),
        vec![pair("ge3", "subnet-mismatch")]
    );
}

#[test]
fn vlan_not_supported_on_the_target_is_refused() {
    let mut c = config(&(one(r#"["ge0", "ge1"]"#) + "vlan = 100\n"));
    c.ports.get_mut("ge1").expect("ge1").vlans.clear();
    let mut w = World::new(c);
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, S);
    assert_eq!(
        refused(&w.step(10 * S), "a"),
        vec![pair("ge1", "vlan-not-allowed")]
    );
}

#[test]
fn an_instance_another_member_holds_is_never_taken() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    let claimed = Reason::ClaimedByMember {
        member: "gw2".into(),
    };
    w.cluster = Some(ClusterView {
        withheld: [("a".into(), claimed.clone())].into(),
        ..ClusterView::default()
    });
    let plan = w.step(Duration::ZERO);
    assert!(plan.moves.is_empty(), "{plan:?}");
    assert_eq!(
        plan.placements["a"],
        Placement::Withheld {
            at: None,
            reason: claimed
        }
    );
    // A planned move is refused with the same reason.
    let inputs_refusal = w.cluster.as_ref().and_then(|v| v.refusal("a"));
    assert_eq!(inputs_refusal.map(|r| r.name()), Some("claimed-by-member"));
}

#[test]
fn a_held_instance_is_placed_and_withheld_once_the_member_is_fenced() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.cluster = Some(ClusterView {
        held: ["a".into()].into(),
        ..ClusterView::default()
    });
    let plan = w.step(Duration::ZERO);
    assert_eq!(plan.placements["a"], Placement::On("ge0".into()));
    let fenced = Reason::Fenced {
        cause: baton::decide::FenceCause::NoQuorum,
    };
    w.cluster = Some(ClusterView {
        withheld: [("a".into(), fenced.clone())].into(),
        ..ClusterView::default()
    });
    let plan = w.step(S);
    assert!(plan.moves.is_empty(), "{plan:?}");
    assert_eq!(
        plan.placements["a"],
        Placement::Withheld {
            at: Some("ge0".into()),
            reason: fenced
        },
        "the daemon withdraws what the plan withholds"
    );
}

#[test]
fn an_address_in_use_on_the_wire_is_refused() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.step(Duration::ZERO);
    w.in_use.insert(("a".into(), "ge1".into()));
    w.link("ge0", Link::Down, S);
    assert_eq!(
        refused(&w.step(10 * S), "a"),
        vec![pair("ge1", "address-in-use")]
    );
}

#[test]
fn a_failed_move_is_retried_only_after_its_backoff() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.step(Duration::ZERO);
    w.retry_at.insert(("a".into(), "ge1".into()), 11 * S);
    w.link("ge0", Link::Down, S);
    let plan = w.step(10 * S);
    assert_eq!(refused(&plan, "a"), vec![pair("ge1", "retry-backoff")]);
    assert_eq!(plan.next_check, Some(11 * S), "woken when the pause ends");
    assert!(w.step(11 * S).moves.iter().any(|m| m.to == "ge1"));
}

#[test]
fn a_target_at_fifteen_addresses_is_refused() {
    // 15 instances live on ge1 (the default cap); a 16th fails over from ge0.
    let mut extra = one(r#"["ge0", "ge1"]"#);
    for i in 0..15 {
        extra += &format!(
            "[instances.b{i:02}]\naddress = \"192.0.2.{}/24\"\nports = [\"ge1\"]\n",
            10 + i
        );
    }
    let mut w = World::new(config(&extra));
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, S);
    let plan = w.step(10 * S);
    assert_eq!(
        plan.placements["a"],
        Placement::Stays {
            at: Some("ge0".into()),
            refused: vec![("ge1".into(), Reason::AddressCapReached { cap: 15 })]
        }
    );
}

#[test]
fn a_target_out_of_macs_is_refused() {
    let extra = one(r#"["ge0", "ge1"]"#)
        + "mac = \"02:ba:70:00:00:01\"\n[instances.b]\naddress = \"192.0.2.101/24\"\nports = [\"ge1\"]\nmac = \"02:ba:70:00:00:02\"\n[limits]\nmacs_per_port = 1\n";
    let mut w = World::new(config(&extra));
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, S);
    assert_eq!(
        refused(&w.step(10 * S), "a"),
        vec![pair("ge1", "mac-cap-reached")]
    );
}

#[test]
fn many_instances_off_one_port_respect_the_cap_together() {
    // Three instances leave ge0; ge1 has room for two: the first two by name go.
    let mut extra = String::new();
    for i in 0..3 {
        extra += &format!(
            "[instances.i{i}]\naddress = \"192.0.2.{}/24\"\nports = [\"ge0\", \"ge1\"]\n",
            100 + i
        );
    }
    let mut c = config(&extra);
    c.ports.get_mut("ge1").expect("ge1").max_addresses = Some(2);
    let mut w = World::new(c);
    w.step(Duration::ZERO);
    w.link("ge0", Link::Down, S);
    let plan = w.step(10 * S);
    let moved: Vec<&str> = plan.moves.iter().map(|m| m.instance.as_str()).collect();
    assert_eq!(moved, vec!["i0", "i1"]);
    assert_eq!(
        refused(&plan, "i2"),
        vec![pair("ge1", "address-cap-reached")]
    );
    assert_eq!(w.decide(10 * S), w.decide(10 * S), "not deterministic");
}

#[test]
fn a_missing_port_is_named() {
    let mut w = World::new(config(&one(r#"["ge0", "ge1"]"#)));
    w.ports.remove("ge1");
    w.down_at_start("ge0");
    assert_eq!(
        refused(&w.step(Duration::ZERO), "a"),
        vec![pair("ge0", "port-down"), pair("ge1", "port-missing")]
    );
}
