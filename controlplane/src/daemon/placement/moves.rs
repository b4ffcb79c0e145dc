//! Plans carried out: the engine decides, the actuator moves, the
//! announcements follow. Relocations go first; first placements are probed
//! (RFC 5227) afterwards, so a probe never delays a failover in the same plan.
use super::Stage;
use super::actuator::{self, MoveSpec};
use super::on_port::OnPort;
use super::state::PlacementState;
use crate::daemon::report::Reporter;
use crate::daemon::wire::{TickleResult, announce, revive};
use crate::decide::{self, Move, MoveKind, Plan};
use crate::netdev;
use crate::protocol::{Event, MoveRecord};
use anyhow::{Context as _, Result, bail};
use baton_config::{InstanceName, PortName};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// An address a plan places for the first time.
struct NewAddress {
    instance: InstanceName,
    addr: std::net::IpAddr,
    vlan: Option<u16>,
}

/// How long an RFC 5227 conflict keeps an address off a port before baton probes again.
const CONFLICT_HOLD: Duration = Duration::from_secs(10);
impl Stage<'_> {
    /// Carries out a plan: relocations first, then the first placements,
    /// probed; true when something moved (or a probe found a conflict), so
    /// the engine must decide again.
    pub async fn carry_out(&mut self, plan: &Plan) -> bool {
        let (relocations, initial): (Vec<&Move>, Vec<&Move>) =
            plan.moves.iter().partition(|m| m.from.is_some());
        let mut progressed = false;
        let mut failed_sources = BTreeSet::new();
        let mut families = (false, false);
        for m in &relocations {
            progressed |= self
                .execute_noted(m, &mut failed_sources, &mut families)
                .await;
        }
        let initial: Vec<Move> = initial.into_iter().cloned().collect();
        let (initial, conflicts) = self.probe_new(&initial).await;
        progressed |= conflicts > 0;
        for m in &initial {
            progressed |= self
                .execute_noted(m, &mut failed_sources, &mut families)
                .await;
        }
        if progressed {
            let failed_sources: Vec<u32> = failed_sources.into_iter().collect();
            if let Err(e) = actuator::after_plan(self.actuator, &failed_sources, families).await {
                warn!(error = %format!("{e:#}"), "cleaning after the plan");
            }
        }
        progressed
    }

    async fn execute_noted(
        &mut self,
        m: &Move,
        failed_sources: &mut BTreeSet<u32>,
        families: &mut (bool, bool),
    ) -> bool {
        if !self.execute(m).await {
            return false;
        }
        if let Some(p) = m
            .from
            .as_ref()
            .and_then(|f| self.ctx.ports.get(f))
            .filter(|p| p.state.link == decide::Link::Down)
        {
            failed_sources.extend(p.ifindex);
        }
        let v4 = self
            .ctx
            .config
            .instances
            .get(&m.instance)
            .is_some_and(|i| i.address.addr().is_ipv4());
        *families = (families.0 || v4, families.1 || !v4);
        true
    }

    /// Probes, per target port, every address a plan places for the first
    /// time (ARP probe or DAD NS, tagged for a VLAN instance); returns the
    /// moves that may go ahead and how many conflicted.
    async fn probe_new(&mut self, moves: &[Move]) -> (Vec<Move>, usize) {
        let mut by_port: BTreeMap<PortName, Vec<NewAddress>> = BTreeMap::new();
        // Released to us by a live member that took it off first: no probe
        // (a planned handover's outage is the move alone).
        let released = self.ctx.cluster.released_to_us();
        for m in moves.iter().filter(|m| !released.contains(&m.instance)) {
            if let Some(inst) = self.ctx.config.instances.get(&m.instance) {
                by_port.entry(m.to.clone()).or_default().push(NewAddress {
                    instance: m.instance.clone(),
                    addr: inst.address.addr(),
                    vlan: inst.vlan,
                });
            }
        }
        if by_port.is_empty() {
            // Nothing to probe (a plan of relocations): not even this host's MACs to read.
            return (moves.to_vec(), 0);
        }
        let config = self.ctx.config;
        // An answer from this host (any of its ports, any instance's MAC)
        // is never another host's.
        let host_macs: Vec<[u8; 6]> = config
            .ports
            .keys()
            .filter_map(|p| netdev::mac_of(p).ok())
            .chain(config.instances.values().filter_map(|i| i.mac))
            .collect();
        let mut conflicted = BTreeSet::new();
        for (port, wanted) in by_port {
            let (Some(ifindex), Ok(_)) = (self.ctx.ports.ifindex(&port), netdev::mac_of(&port))
            else {
                continue;
            };
            // The port's own MAC is among them (a configured port).
            let own = host_macs.clone();
            let addrs: Vec<_> = wanted.iter().map(|w| (w.addr, w.vlan)).collect();
            let wait = self.ctx.config.timers.probe_time;
            let found = tokio::task::spawn_blocking(move || {
                announce::probe_many(ifindex, &own, &addrs, wait)
            })
            .await;
            let found = match found {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    warn!(%port, error = %format!("{e:#}"), "probe failed; not taking new addresses there now");
                    wanted.iter().map(|w| (w.addr, [0; 6])).collect()
                }
                Err(e) => {
                    warn!(%port, error = %e, "probe task failed");
                    continue;
                }
            };
            for (addr, by) in found {
                for w in wanted.iter().filter(|w| w.addr == addr) {
                    warn!(instance = %w.instance, %port, by = %baton_config::model::mac_string(&by), "address in use on the wire");
                    self.state.in_use.insert(
                        (w.instance.clone(), port.clone()),
                        Instant::now() + CONFLICT_HOLD,
                    );
                    conflicted.insert((w.instance.clone(), port.clone()));
                }
            }
        }
        let n = conflicted.len();
        let ok = moves
            .iter()
            .filter(|m| !conflicted.contains(&(m.instance.clone(), m.to.clone())))
            .cloned()
            .collect();
        (ok, n)
    }

    /// Carries out one move; false when it could not (and why is logged).
    async fn execute(&mut self, m: &Move) -> bool {
        let kind = m.kind;
        let report = self.ctx.report;
        let began = Instant::now();
        let result = self.try_move(m).await;
        match result {
            Ok(steps) => {
                let took_us = began.elapsed().as_micros() as u64;
                self.log_steps(m, &steps);
                let record = MoveRecord {
                    from: m.from.clone(),
                    to: m.to.clone(),
                    kind,
                    at_ms: report.at_ms(),
                    took_us,
                    revived_sockets: None,
                    revert_icmps: None,
                    tickled: None,
                };
                self.revive_after(m);
                self.tickle_after(m);
                report.report(Event::Move {
                    at_ms: record.at_ms,
                    instance: m.instance.clone(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                    kind,
                    took_us,
                });
                self.state.moved(&m.instance, &m.to, record);
                if let Some(inst) = self.ctx.config.instances.get(&m.instance) {
                    report
                        .metrics
                        .set_owner(&m.instance, &inst.ports, Some(&m.to));
                }
                true
            }
            Err(e) => {
                report.report(Event::MoveFailed {
                    at_ms: report.at_ms(),
                    instance: m.instance.clone(),
                    to: m.to.clone(),
                    kind: Some(kind),
                    error: format!("{e:#}"),
                });
                // Leave the address on exactly one port: look at the kernel again.
                self.state.move_failed(&m.instance, &m.to);
                false
            }
        }
    }

    /// A move's trace in CLOCK_MONOTONIC µs (the clock of the kernel's
    /// tracepoints): the failover bench lines it up with theirs.
    fn log_steps(&self, m: &Move, s: &actuator::MoveSteps) {
        let us = |t: Instant| crate::dataplane::fence::ns_of(t) / 1000;
        debug!(
            instance = %m.instance,
            link_event = us(self.ctx.ports.last_link_event),
            began = us(s.began),
            prepared = us(s.prepared),
            local = us(s.local),
            flipped = us(s.flipped),
            announced = us(s.announced),
            cleaned = us(s.cleaned),
            "move steps"
        );
    }

    async fn try_move(&mut self, m: &Move) -> Result<actuator::MoveSteps> {
        let ports = self.ctx.ports;
        let to = OnPort::new(self.ctx.config, &m.instance, &m.to).context("instance vanished")?;
        let to_ifindex = ports
            .ifindex(&m.to)
            .with_context(|| format!("port {} is missing", m.to))?;
        let from = m.from.as_ref().map(|f| OnPort { port: f, ..to });
        let spec = MoveSpec {
            name: &m.instance,
            instance: to.inst,
            to_ifindex,
            to_macvlan: to.macvlan(),
            from_ifindex: from.as_ref().and_then(|f| ports.ifindex(f.port)),
            from_macvlan: from.as_ref().and_then(OnPort::macvlan),
            entry: to.entry(ports)?,
        };
        // The last move's announcements name the old port: they stop here.
        self.state.stop_announcing(&m.instance);
        let steps = self.actuator.move_instance(&spec).await?;
        self.spawn_announcements(&m.instance, to_ifindex, spec.entry.mac);
        Ok(steps)
    }

    /// After a relocation's first announcement: end the backoff of the
    /// sockets on the address (a first placement has none).
    fn revive_after(&self, m: &Move) {
        let Some(inst) = self.ctx.config.instances.get(&m.instance) else {
            return;
        };
        if m.from.is_none() || !inst.reverts_backoff(&self.ctx.config.timers) {
            return;
        }
        self.after.revive(
            &m.instance,
            inst.address.addr(),
            m.kind == MoveKind::Failover,
        );
    }

    /// After a takeover's placement: the old owner's clients are told.
    fn tickle_after(&mut self, m: &Move) {
        if m.from.is_none() {
            self.tickle_due(&m.instance);
        }
    }

    /// Sends the tickles due for `instance` (once: they are taken).
    pub fn tickle_due(&mut self, instance: &InstanceName) {
        let (Some(conns), Some(inst)) = (
            self.state.tickles_due.remove(instance),
            self.ctx.config.instances.get(instance),
        ) else {
            return;
        };
        self.after.tickle(instance, inst.address.addr(), conns);
    }

    /// The announcements after the first one, paced, without holding up
    /// other moves; a later move of the instance cancels them.
    pub fn spawn_announcements(&mut self, instance: &InstanceName, ifindex: u32, mac: [u8; 6]) {
        self.state.stop_announcing(instance);
        let Some(inst) = self.ctx.config.instances.get(instance) else {
            return;
        };
        let (addr, vlan) = (inst.address.addr(), inst.vlan);
        let t = &self.ctx.config.timers;
        if t.announce_count > 1 {
            let (count, interval) = (t.announce_count - 1, t.announce_interval);
            let task = tokio::spawn(async move {
                tokio::time::sleep(interval).await;
                if let Err(e) = announce::announce(ifindex, mac, addr, vlan, count, interval).await
                {
                    warn!(error = %format!("{e:#}"), "announcement");
                }
            });
            self.state
                .announcing
                .insert(instance.clone(), task.abort_handle());
        }
        self.state.announcing.retain(|_, h| !h.is_finished());
    }

    /// `baton move`: make-before-break to an eligible port.
    pub async fn planned_move(
        &mut self,
        instance: &InstanceName,
        port: &PortName,
    ) -> Result<String> {
        let inst = self
            .ctx
            .config
            .instances
            .get(instance)
            .with_context(|| format!("no instance named {instance:?}"))?;
        if !inst.ports.iter().any(|p| p == port) {
            bail!(
                "{port} is not one of {instance}'s ports ({})",
                inst.ports.join(", ")
            );
        }
        let from = self.state.placement.get(instance).cloned();
        if from.as_deref() == Some(port) {
            return Ok(format!("{instance} is already on {port}"));
        }
        if let Some(reason) = super::with_inputs(&self.ctx, self.state, |i| {
            decide::check_move(i, instance, port)
        }) {
            bail!("{port} cannot take {instance}: {reason}");
        }
        let m = Move {
            instance: instance.clone(),
            from,
            to: port.clone(),
            kind: MoveKind::Planned,
        };
        if self.execute(&m).await {
            Ok(format!("{instance} moved to {port}"))
        } else {
            bail!("the move of {instance} to {port} failed; see `baton events` or the log")
        }
    }
}

/// Tickles sent: into the move's record, an event, the metrics.
pub fn on_tickled(state: &mut PlacementState, report: &Reporter, t: TickleResult) {
    match t {
        Ok(t) => {
            if let Some(rec) = state.last_move.get_mut(&t.instance) {
                rec.tickled = Some(t.connections as u64);
            }
            report.report(Event::Tickled {
                at_ms: report.at_ms(),
                instance: t.instance,
                connections: t.connections as u64,
                acks: t.acks as u64,
            });
        }
        Err((instance, error)) => {
            warn!(%instance, %error, "tickles failed");
        }
    }
}

/// A revert's result: into the move's record, an event, the metrics.
pub fn on_revival(state: &mut PlacementState, report: &Reporter, r: revive::Revival) {
    let (sockets, icmps) = (r.sockets as u64, r.icmps as u64);
    if let Some(rec) = state.last_move.get_mut(&r.instance) {
        rec.revived_sockets = Some(sockets);
        rec.revert_icmps = Some(icmps);
    }
    report.report(Event::Revived {
        at_ms: report.at_ms(),
        instance: r.instance,
        sockets,
        icmps,
        left: r.left as u64,
    });
}
