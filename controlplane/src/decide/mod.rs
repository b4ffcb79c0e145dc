//! The decision engine: which port (if any) each instance should be on.
//! Pure, no I/O, no clock.
//!
//! `decide(config, port states, cluster view, probe results, current
//! placement, now) -> Plan`. Time is the caller's monotonic clock, as a
//! `Duration` since the daemon started.
mod port;
mod reason;

pub use port::{Link, PortCondition, PortState, Time, all_ports_up, port_condition};
pub use reason::{ClusterView, FenceCause, Reason};

use baton_config::model::{Config, Failback, Instance, InstanceName, PortName};
use port::{Health, health};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub ports: &'a BTreeMap<PortName, PortState>,
    /// None: a single host, every instance is this host's.
    pub cluster: Option<&'a ClusterView>,
    /// (instance, port) pairs whose RFC 5227 / DAD probe found the address in use.
    pub in_use: &'a BTreeSet<(InstanceName, PortName)>,
    /// (instance, port) pairs whose last move failed, and until when the
    /// move is not tried again (the daemon's backoff).
    pub retry_at: &'a BTreeMap<(InstanceName, PortName), Time>,
    /// instance -> the port its address is on now.
    pub placement: &'a BTreeMap<InstanceName, PortName>,
    pub now: Time,
}

/// Why a port cannot take an instance, as shown in status
/// and logs; in JSON `{"reason": "port-settling", "remaining": 1500}` (ms).

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    On(PortName),
    /// The cluster says it is not this member's: off every port here.
    Withheld {
        at: Option<PortName>,
        reason: Reason,
    },
    /// No port can take it: it stays where it is (or unplaced), with the
    /// reason each port refused.
    Stays {
        at: Option<PortName>,
        refused: Vec<(PortName, Reason)>,
    },
}

/// Why an instance moved. `Planned` is an operator's `baton move`, or a
/// reload that took an instance's port off its list: make-before-break
/// with no outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveKind {
    /// First placement after start.
    Initial,
    /// Its port failed.
    Failover,
    /// Back to a preferred port (`failback = "auto"`).
    Failback,
    /// `baton move`, or its port taken off its list by a reload.
    Planned,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub instance: InstanceName,
    pub from: Option<PortName>,
    pub to: PortName,
    pub kind: MoveKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub placements: BTreeMap<InstanceName, Placement>,
    pub moves: Vec<Move>,
    /// The earliest time a timer may change the plan: decide again then.
    pub next_check: Option<Time>,
}

/// Addresses and MACs the plan puts on each port so far.
#[derive(Default)]
struct Load(BTreeMap<PortName, (u32, u32)>);

impl Load {
    fn add(&mut self, port: &PortName, inst: &Instance, sign: i32) {
        let e = self.0.entry(port.clone()).or_default();
        e.0 = e.0.saturating_add_signed(sign);
        if inst.mac.is_some() {
            e.1 = e.1.saturating_add_signed(sign);
        }
    }
    fn get(&self, port: &PortName) -> (u32, u32) {
        self.0.get(port).copied().unwrap_or_default()
    }
}

/// Decides where every instance should be. Plans in single passes until a
/// pass moves nothing: a move can free a slot an instance planned earlier
/// would prefer. This ends (a failover happens once per instance, a failback
/// only moves to an earlier port of its list), and its result is stable:
/// deciding again with the plan applied yields no moves. Each instance gets
/// at most one move (from where it is to where it ends).
pub fn decide(inp: &Inputs) -> Plan {
    let mut placement = inp.placement.clone();
    let mut moves: Vec<Move> = Vec::new();
    let bound = inp
        .config
        .instances
        .values()
        .map(|i| i.ports.len() + 1)
        .sum::<usize>()
        + 1;
    for _ in 0..bound {
        let plan = plan_once(&Inputs {
            placement: &placement,
            ..*inp
        });
        if plan.moves.is_empty() {
            return Plan { moves, ..plan };
        }
        for m in plan.moves {
            placement.insert(m.instance.clone(), m.to.clone());
            match moves.iter_mut().find(|x| x.instance == m.instance) {
                Some(first) => first.to = m.to,
                None => moves.push(m),
            }
        }
        moves.retain(|m| m.from.as_ref() != Some(&m.to));
    }
    // Unreachable by the argument above; settle for the last plan.
    let plan = plan_once(&Inputs {
        placement: &placement,
        ..*inp
    });
    Plan { moves, ..plan }
}

/// One planning pass from the current placement.
fn plan_once(inp: &Inputs) -> Plan {
    let c = inp.config;
    let health_of = |p: &PortName| health(inp.ports.get(p), c, inp.now);
    let mut load = Load::default();
    let mut placements = BTreeMap::new();
    let mut movers: Vec<Mover> = Vec::new();

    // Pass 1: who stays (their load counts first), who must or may move.
    for (name, inst) in &c.instances {
        let placed = inp.placement.get(name);
        let owner = placed.filter(|o| inst.ports.contains(o));
        if let Some(reason) = inp.cluster.and_then(|v| v.refusal(name)) {
            placements.insert(
                name.clone(),
                Placement::Withheld {
                    at: owner.cloned(),
                    reason,
                },
            );
            continue;
        }
        // A reload took its port off its list: it moves make-before-break
        // to a listed port, as `baton move` would (the address is ours: no
        // probe), and stays where it is until one can take it.
        if let Some(o) = placed.filter(|_| owner.is_none()) {
            let kind = match health_of(o) {
                Health::Failed | Health::Missing => MoveKind::Failover,
                _ => MoveKind::Planned,
            };
            movers.push((name, Some(o), inst.ports.iter().collect(), kind));
            continue;
        }
        match owner {
            Some(o) if !matches!(health_of(o), Health::Failed | Health::Missing) => {
                load.add(o, inst, 1);
                placements.insert(name.clone(), Placement::On(o.clone()));
                let pos = inst.ports.iter().position(|p| p == o).unwrap_or(0);
                if inst.failback == Failback::Auto && pos > 0 {
                    movers.push((
                        name,
                        Some(o),
                        inst.ports[..pos].iter().collect(),
                        MoveKind::Failback,
                    ));
                }
            }
            Some(o) => movers.push((
                name,
                Some(o),
                inst.ports.iter().filter(|p| *p != o).collect(),
                MoveKind::Failover,
            )),
            None => movers.push((name, None, inst.ports.iter().collect(), MoveKind::Initial)),
        }
    }

    // Pass 2: failbacks first (only they free slots), then failovers and
    // initial placements, each in name order; caps count over the whole plan.
    let (failbacks, others): (Vec<_>, Vec<_>) =
        movers.into_iter().partition(|m| m.3 == MoveKind::Failback);
    let mut moves = Vec::new();
    // A failback that cannot happen yet leaves the instance on its owner.
    place(inp, failbacks, &mut load, &mut placements, &mut moves);
    for ((name, owner, _, _), refused) in place(inp, others, &mut load, &mut placements, &mut moves)
    {
        placements.insert(
            name.clone(),
            Placement::Stays {
                at: owner.cloned(),
                refused,
            },
        );
    }

    Plan {
        placements,
        moves,
        next_check: next_check(inp),
    }
}

/// Why `port` cannot take `instance` now, for a planned move (`baton move`):
/// the same eligibility checks, with the load of every other instance where it is.
pub fn check_move(inp: &Inputs, instance: &InstanceName, port: &PortName) -> Option<Reason> {
    let inst = inp.config.instances.get(instance)?;
    let mut load = Load::default();
    for (name, p) in inp.placement {
        if let Some(other) = inp.config.instances.get(name).filter(|_| name != instance) {
            load.add(p, other, 1);
        }
    }
    eligibility(inp, &load, instance, inst, port, MoveKind::Failover)
}

/// (instance, current owner, ports it may move to, kind)
type Mover<'a> = (
    &'a InstanceName,
    Option<&'a PortName>,
    Vec<&'a PortName>,
    MoveKind,
);

/// One pass over `movers`: each takes its first eligible port. Returns those
/// that found none, with every port's reason.
fn place<'a>(
    inp: &Inputs<'a>,
    movers: Vec<Mover<'a>>,
    load: &mut Load,
    placements: &mut BTreeMap<InstanceName, Placement>,
    moves: &mut Vec<Move>,
) -> Vec<(Mover<'a>, Vec<(PortName, Reason)>)> {
    let mut refused_all = Vec::new();
    for mover in movers {
        let (name, owner, candidates, kind) = &mover;
        let inst = &inp.config.instances[*name];
        let mut refused = Vec::new();
        let target =
            candidates
                .iter()
                .find(|p| match eligibility(inp, load, name, inst, p, *kind) {
                    None => true,
                    Some(r) => {
                        refused.push(((**p).clone(), r));
                        false
                    }
                });
        let Some(&p) = target else {
            refused_all.push((mover, refused));
            continue;
        };
        if *kind == MoveKind::Failback
            && let Some(o) = owner
        {
            load.add(o, inst, -1);
        }
        load.add(p, inst, 1);
        placements.insert((*name).clone(), Placement::On(p.clone()));
        moves.push(Move {
            instance: (*name).clone(),
            from: owner.cloned(),
            to: p.clone(),
            kind: *kind,
        });
    }
    refused_all
}

/// Why `port` cannot take `inst` now (None: it can): the port's health
/// first, then the eligibility checks.
fn eligibility(
    inp: &Inputs,
    load: &Load,
    name: &InstanceName,
    inst: &Instance,
    port: &PortName,
    kind: MoveKind,
) -> Option<Reason> {
    match health(inp.ports.get(port), inp.config, inp.now) {
        Health::Missing => Some(Reason::PortMissing),
        Health::Failed | Health::HeldDown { .. } => Some(Reason::PortDown),
        Health::Settling { until } => Some(Reason::PortSettling {
            remaining: until - inp.now,
        }),
        Health::Up {
            stable_since: Some(since),
        } if kind == MoveKind::Failback && inp.now < since + inp.config.timers.failback_delay => {
            Some(Reason::PortSettling {
                remaining: since + inp.config.timers.failback_delay - inp.now,
            })
        }
        Health::Up { .. } => ineligible(inp, load, name, inst, port),
    }
}

/// The static and load-dependent eligibility checks, first failure first.
fn ineligible(
    inp: &Inputs,
    load: &Load,
    name: &InstanceName,
    inst: &Instance,
    port: &PortName,
) -> Option<Reason> {
    let c = inp.config;
    let p = c.ports.get(port)?;
    let addr = inst.address.addr();
    let home: BTreeSet<&String> = c
        .networks
        .iter()
        .filter(|(_, n)| n.subnets.iter().any(|s| s.contains(&addr)))
        .map(|(n, _)| n)
        .collect();
    if !p.networks.iter().any(|n| home.contains(n)) {
        return Some(Reason::DifferentNetwork);
    }
    if !c.port_subnets(port).iter().any(|s| s.contains(&addr)) {
        return Some(Reason::SubnetMismatch);
    }
    if let Some(vlan) = inst.vlan
        && !p.vlans.contains(&vlan)
    {
        return Some(Reason::VlanNotAllowed { vlan });
    }
    if let Some(reason) = inp.cluster.and_then(|v| v.refusal(name)) {
        return Some(reason);
    }
    if inp.in_use.contains(&(name.clone(), port.clone())) {
        return Some(Reason::AddressInUse);
    }
    if let Some(until) = inp.retry_at.get(&(name.clone(), port.clone()))
        && *until > inp.now
    {
        return Some(Reason::RetryBackoff {
            remaining: *until - inp.now,
        });
    }
    let (addrs, macs) = load.get(port);
    if addrs >= c.address_cap(port) {
        return Some(Reason::AddressCapReached {
            cap: c.address_cap(port),
        });
    }
    if inst.mac.is_some() && macs >= c.mac_cap(port) {
        return Some(Reason::MacCapReached {
            cap: c.mac_cap(port),
        });
    }
    None
}

/// The next time a hold timer or failback delay expires.
fn next_check(inp: &Inputs) -> Option<Time> {
    let t = &inp.config.timers;
    inp.ports
        .values()
        .filter(|s| !s.at_start)
        .flat_map(|s| match s.link {
            Link::Up => vec![
                s.since + t.hold_up,
                s.since + t.hold_up.max(t.failback_delay),
            ],
            Link::Down => vec![s.since + t.hold_down],
        })
        .chain(inp.retry_at.values().copied())
        .filter(|at| *at > inp.now)
        .min()
}
