//! Where each instance lives, kept true: the [`state`] the loop owns, the
//! engine's plan carried out ([`moves`], through the [`actuator`]), the
//! kernel made to agree with it ([`reconcile`]), each instance on each
//! port described once ([`on_port`]), a placed address defended against
//! another host's claim ([`defence`]), and a reload's difference
//! ([`reload`]).
pub mod actuator;
pub mod defence;
pub mod moves;
pub mod on_port;
pub mod reconcile;
pub mod reload;
pub mod state;

use super::health::HealthTable;
use super::membership::Membership;
use super::netlink::decode::{LinkEvent, Observation};
use super::ports::PortTable;
use super::report::Reporter;
use super::wire::Aftercare;
use crate::decide::{ClusterView, Inputs};
use actuator::Actuator;
use baton_config::Config;
use baton_config::{InstanceName, PortName};
use state::PlacementState;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What a placement step reads and does not change.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub config: &'a Config,
    pub ports: &'a PortTable,
    pub report: &'a Reporter,
    pub cluster: &'a Membership,
    pub health: &'a HealthTable,
}

impl Context<'_> {
    /// Whether this host may hold `instance` now: the cluster's word, or
    /// on a single host that no failed `withdraw` check keeps it off.
    pub fn may_hold(&self, instance: &InstanceName) -> bool {
        self.cluster.may_hold(instance)
            && (self.cluster.view().is_some()
                || self
                    .health
                    .withdrawing(self.config, instance, self.report.now())
                    .is_none())
    }
}

/// A placement step: what it reads, the state it changes, the kernel
/// through the actuator, and what TCP peers are told after a move.
pub struct Stage<'a> {
    pub ctx: Context<'a>,
    pub state: &'a mut PlacementState,
    pub actuator: &'a mut Actuator,
    pub after: &'a Aftercare,
}

/// Runs `f` on the engine's inputs as they are now: the states of the
/// ports that exist, the (instance, port) pairs a probe found in use, the
/// failed moves' pauses, the cluster's view, the placement and the clock.
pub fn with_inputs<R>(ctx: &Context, state: &PlacementState, f: impl FnOnce(&Inputs) -> R) -> R {
    let ports = ctx.ports.states();
    let in_use: BTreeSet<(InstanceName, PortName)> = state.in_use.keys().cloned().collect();
    let now = Instant::now();
    let engine_now = ctx.report.now();
    let retry_at: BTreeMap<(InstanceName, PortName), Duration> = state
        .failed
        .iter()
        .map(|(k, until)| (k.clone(), engine_now + until.saturating_duration_since(now)))
        .collect();
    // With no cluster, a failed `withdraw` check keeps its instances off
    // this host as the cluster's word would.
    let alone = match ctx.cluster.view() {
        Some(_) => None,
        None => {
            let withheld = ctx.health.withdrawn(ctx.config, engine_now);
            (!withheld.is_empty()).then(|| ClusterView {
                held: ctx
                    .config
                    .instances
                    .keys()
                    .filter(|n| !withheld.contains_key(*n))
                    .cloned()
                    .collect(),
                withheld,
            })
        }
    };
    f(&Inputs {
        config: ctx.config,
        ports: &ports,
        cluster: ctx.cluster.view().or(alone.as_ref()),
        in_use: &in_use,
        retry_at: &retry_at,
        placement: &state.placement,
        now: engine_now,
    })
}

/// What a kernel event concerns.
pub enum Concern {
    /// A configured port's link, or any link that is not an instance's macvlan.
    Port(LinkEvent),
    /// These instances (their address, route or macvlan changed).
    Instances(Vec<InstanceName>),
    /// Everything: a macvlan of baton's that no instance owns now.
    All,
    /// Events were lost: anything may have changed.
    Lost,
}

/// Which instances (or ports) an observation is about.
pub fn concern_of(config: &Config, o: Observation) -> Concern {
    let instances = |f: &dyn Fn(&baton_config::model::Instance) -> bool| {
        Concern::Instances(
            config
                .instances
                .iter()
                .filter(|(_, i)| f(i))
                .map(|(n, _)| n.clone())
                .collect(),
        )
    };
    match o {
        Observation::Link(ev) => match on_port::macvlan_owner_id(&ev.name) {
            None => Concern::Port(ev),
            Some(id) => match config
                .instances
                .keys()
                .find(|n| baton_config::instance_id(n) == id)
            {
                Some(name) => Concern::Instances(vec![name.clone()]),
                None => Concern::All,
            },
        },
        Observation::Address(addr) => instances(&|i| i.address.addr() == addr),
        Observation::Route(dst) => instances(&|i| i.routes.iter().any(|r| r.to.addr() == dst)),
        Observation::Lost => Concern::Lost,
    }
}
