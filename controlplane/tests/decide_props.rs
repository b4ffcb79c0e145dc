//! Properties of the decision engine over random configurations and random
//! sequences of port events and clock steps.
use baton::decide::*;
use baton_config::model::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PORTS: [&str; 4] = ["ge0", "ge1", "ge2", "ge3"];

#[derive(Debug, Clone)]
struct Scenario {
    config: Config,
    claims: Vec<usize>,
    /// (milliseconds after the previous event, port index, link up?)
    events: Vec<(u64, usize, bool)>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let timers = (
        prop_oneof![Just(0u64), Just(500), Just(2000)],
        prop_oneof![Just(0u64), Just(500), Just(2000)],
        prop_oneof![Just(0u64), Just(1000), Just(5000)],
    );
    let instance = (
        proptest::sample::subsequence(vec![0usize, 1, 2, 3], 1..=4).prop_shuffle(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(Just(100u16)),
    );
    (
        2usize..=4,
        timers,
        1u32..=6,
        1u32..=3,
        proptest::collection::vec(instance, 1..=12),
        proptest::collection::vec(0usize..12, 0..3),
        proptest::collection::vec((0u64..3000, 0usize..4, any::<bool>()), 1..40),
        proptest::collection::vec(any::<bool>(), 4),
    )
        .prop_map(
            |(nports, (hd, hu, fd), addr_cap, mac_cap, insts, claims, events, vlan_ok)| {
                let networks = BTreeMap::from([(
                    "storage".to_string(),
                    Network {
                        subnets: vec!["192.0.2.0/24".parse().expect("net")],
                        vlans: vec![],
                    },
                )]);
                let ports = (0..nports)
                    .map(|i| {
                        (
                            PortName::from(PORTS[i]),
                            Port {
                                networks: vec!["storage".into()],
                                subnets: vec![],
                                vlans: if vlan_ok[i] { vec![100] } else { vec![] },
                                max_addresses: None,
                                max_macs: None,
                            },
                        )
                    })
                    .collect();
                let instances = insts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (order, mac, auto, vlan))| {
                        let ports: Vec<PortName> = order
                            .into_iter()
                            .filter(|p| *p < nports)
                            .map(|p| PortName::from(PORTS[p]))
                            .collect();
                        let ports = if ports.is_empty() {
                            vec!["ge0".into()]
                        } else {
                            ports
                        };
                        (
                            InstanceName::from(format!("i{i:02}")),
                            Instance {
                                address: format!("192.0.2.{}/24", 100 + i).parse().expect("addr"),
                                ports,
                                vlan,
                                mac: mac.then_some([2, 0, 0, 0, 0, i as u8]),
                                routes: vec![],
                                services: vec![3260],
                                iscsi_ports: vec![3260],
                                iscsi_digests: Default::default(),
                                cpus: vec![],
                                failback: if auto {
                                    Failback::Auto
                                } else {
                                    Failback::Never
                                },
                                revert_backoff: None,
                                members: vec![],
                                checks: None,
                            },
                        )
                    })
                    .collect();
                let timers = Timers {
                    hold_down: ms(hd),
                    hold_up: ms(hu),
                    failback_delay: ms(fd),
                    ..Timers::default()
                };
                let config = Config {
                    ports,
                    networks,
                    instances,
                    timers,
                    limits: Limits {
                        addresses_per_port: addr_cap,
                        macs_per_port: mac_cap,
                    },
                    cluster: None,
                    health: Default::default(),
                    metrics: Metrics::default(),
                    daemon: DaemonSettings::default(),
                };
                let events = events
                    .into_iter()
                    .map(|(dt, p, up)| (dt, p % nports, up))
                    .collect();
                Scenario {
                    config,
                    claims,
                    events,
                }
            },
        )
}

struct Sim<'a> {
    s: &'a Scenario,
    ports: BTreeMap<PortName, PortState>,
    cluster: ClusterView,
    placement: BTreeMap<InstanceName, PortName>,
    now: Duration,
    moves: Vec<(Duration, Move)>,
    none_in_use: BTreeSet<(InstanceName, PortName)>,
    no_retries: BTreeMap<(InstanceName, PortName), Duration>,
}

impl<'a> Sim<'a> {
    fn new(s: &'a Scenario) -> Self {
        let ports = all_ports_up(&s.config);
        // Every instance held here but the claimed ones, which gw9 holds.
        let mut cluster = ClusterView::default();
        for (i, name) in s.config.instances.keys().enumerate() {
            if s.claims.contains(&i) {
                cluster.withheld.insert(
                    name.clone(),
                    Reason::ClaimedByMember {
                        member: "gw9".into(),
                    },
                );
            } else {
                cluster.held.insert(name.clone());
            }
        }
        Sim {
            s,
            ports,
            cluster,
            placement: BTreeMap::new(),
            now: Duration::ZERO,
            moves: vec![],
            none_in_use: BTreeSet::new(),
            no_retries: BTreeMap::new(),
        }
    }

    /// The engine's inputs now (no probe conflicts, no failed moves).
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            config: &self.s.config,
            ports: &self.ports,
            cluster: Some(&self.cluster),
            in_use: &self.none_in_use,
            retry_at: &self.no_retries,
            placement: &self.placement,
            now: self.now,
        }
    }

    fn decide(&self) -> Plan {
        decide(&self.inputs())
    }

    /// Decides, checks the invariants, applies the moves.
    fn step(&mut self) -> Result<Option<Duration>, TestCaseError> {
        let c = &self.s.config;
        let plan = self.decide();
        for m in &plan.moves {
            let st = self.ports[&m.to];
            prop_assert!(
                st.link == Link::Up && (st.at_start || self.now >= st.since + c.timers.hold_up),
                "moved {} to {} which is not up: {st:?} at {:?}",
                m.instance,
                m.to,
                self.now
            );
            prop_assert!(
                self.cluster.held.contains(&m.instance),
                "took an instance another member holds: {m:?}"
            );
            self.placement.insert(m.instance.clone(), m.to.clone());
            self.moves.push((self.now, m.clone()));
        }
        let mut load: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
        for (name, p) in &self.placement {
            let e = load.entry(p).or_default();
            e.0 += 1;
            e.1 += u32::from(c.instances[name].mac.is_some());
        }
        for (p, (a, m)) in load {
            prop_assert!(
                a <= c.address_cap(p) && m <= c.mac_cap(p),
                "{p} holds {a} addresses / {m} MACs"
            );
        }
        let again = self.decide();
        prop_assert!(again.moves.is_empty(), "not stable: {:?}", again.moves);
        if let Some(stuck) = self.stuck() {
            return Err(TestCaseError::fail(stuck));
        }
        Ok(plan.next_check)
    }

    /// Liveness: an instance of this member whose port has failed (down
    /// for hold_down) is not left there while one of its ports is up past
    /// hold_up and eligible (the engine's own check, with the load as it
    /// is): an engine that moved nothing would pass every safety check.
    fn stuck(&self) -> Option<String> {
        let c = &self.s.config;
        let usable = |p: &PortName| {
            let st = self.ports[p];
            st.link == Link::Up && (st.at_start || self.now >= st.since + c.timers.hold_up)
        };
        for (name, owner) in &self.placement {
            let st = self.ports[owner];
            let failed =
                st.link == Link::Down && (st.at_start || self.now >= st.since + c.timers.hold_down);
            if !failed || !self.cluster.held.contains(name) {
                continue;
            }
            let inputs = self.inputs();
            let eligible = c.instances[name]
                .ports
                .iter()
                .filter(|p| *p != owner && usable(p))
                .find(|p| check_move(&inputs, name, p).is_none());
            if let Some(p) = eligible {
                return Some(format!(
                    "{name} left on failed {owner} ({st:?}) at {:?} though {p} could take it",
                    self.now
                ));
            }
        }
        None
    }

    /// When a port's hold timer next runs out after now: a decision is due
    /// then whatever the engine asked for.
    fn next_hold_expiry(&self, until: Duration) -> Option<Duration> {
        let t = &self.s.config.timers;
        self.ports
            .values()
            .filter(|st| !st.at_start)
            .map(|st| {
                st.since
                    + if st.link == Link::Down {
                        t.hold_down
                    } else {
                        t.hold_up
                    }
            })
            .filter(|e| *e > self.now && *e <= until)
            .min()
    }

    /// Advances the clock to `until`, deciding at every timer expiry on the way.
    fn advance(&mut self, until: Duration) -> Result<(), TestCaseError> {
        loop {
            let next = self.step()?;
            let asked = next.filter(|t| *t <= until && *t > self.now);
            // Also at each hold timer's end: the liveness check looks then,
            // even if the engine did not ask to decide again.
            match [asked, self.next_hold_expiry(until)]
                .into_iter()
                .flatten()
                .min()
            {
                Some(t) => self.now = t,
                None => break,
            }
        }
        self.now = until;
        self.step()?;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn plans_respect_ports_caps_claims_and_are_stable(s in scenario()) {
        let mut sim = Sim::new(&s);
        sim.step()?;
        for &(dt, p, up) in &s.events {
            let t = sim.now + ms(dt);
            sim.advance(t)?;
            let port = PortName::from(PORTS[p]);
            let link = if up { Link::Up } else { Link::Down };
            if sim.ports[&port].link != link {
                sim.ports.insert(port, PortState { link, since: t, at_start: false });
            }
            sim.step()?;
        }
        let end = sim.now + ms(20_000);
        sim.advance(end)?;
    }

    #[test]
    fn one_flap_moves_an_instance_at_most_twice_and_not_early(
        hd in 0u64..3000, hu in 0u64..3000, fd in 0u64..6000, down_for in 1u64..8000, auto in any::<bool>(),
    ) {
        let s = Scenario {
            config: Config {
                ports: ["ge0", "ge1"].iter().map(|p| (PortName::from(*p), Port { networks: vec!["storage".into()], subnets: vec![], vlans: vec![], max_addresses: None, max_macs: None })).collect(),
                networks: BTreeMap::from([("storage".to_string(), Network { subnets: vec!["192.0.2.0/24".parse().expect("net")], vlans: vec![] })]),
                instances: BTreeMap::from([(InstanceName::from("a"), Instance {
                    address: "192.0.2.100/24".parse().expect("addr"), ports: vec!["ge0".into(), "ge1".into()], vlan: None, mac: None,
                    routes: vec![], services: vec![], iscsi_ports: vec![], iscsi_digests: Default::default(), cpus: vec![], failback: if auto { Failback::Auto } else { Failback::Never }, revert_backoff: None, members: vec![], checks: None,
                })]),
                timers: Timers { hold_down: ms(hd), hold_up: ms(hu), failback_delay: ms(fd), ..Timers::default() },
                limits: Limits::default(),
                cluster: None, health: Default::default(), metrics: Metrics::default(), daemon: DaemonSettings::default(),
            },
            claims: vec![],
            events: vec![],
        };
        let mut sim = Sim::new(&s);
        sim.step()?;
        let t0 = ms(1000);
        sim.advance(t0)?;
        sim.ports.insert("ge0".into(), PortState { link: Link::Down, since: t0, at_start: false });
        sim.advance(t0 + ms(down_for))?;
        sim.ports.insert("ge0".into(), PortState { link: Link::Up, since: t0 + ms(down_for), at_start: false });
        sim.advance(t0 + ms(down_for + 20_000))?;
        let moves: Vec<&(Duration, Move)> = sim.moves.iter().filter(|(_, m)| m.kind != MoveKind::Initial).collect();
        prop_assert!(moves.len() <= 2, "{moves:?}");
        if down_for < hd {
            prop_assert!(moves.is_empty(), "moved on a flap shorter than hold_down: {moves:?}");
        }
        if let Some((t, _)) = moves.first() {
            prop_assert!(*t >= t0 + ms(hd), "failover before hold_down: {moves:?}");
        }
        if let Some((t, _)) = moves.get(1) {
            prop_assert!(auto, "failed back under failback = never");
            prop_assert!(*t >= t0 + ms(hd + hu), "second move within hold_down + hold_up: {moves:?}");
        }
    }
}
