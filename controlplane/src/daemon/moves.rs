//! Plans carried out: the engine decides, the actuator moves, the
//! announcements follow. Relocations go first; first placements are probed
//! (RFC 5227) afterwards, so a probe never delays a failover in the same plan.
use super::actuator::{self, MoveSpec};
use super::{Daemon, announce, metrics};
use crate::decide::{self, Link, Move, Placement};
use crate::netdev;
use crate::protocol::{Event, MoveKind, MoveRecord};
use anyhow::{Context as _, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// An address a plan places for the first time.
struct NewAddress {
    instance: String,
    addr: std::net::IpAddr,
    vlan: Option<u16>,
    mac: Option<[u8; 6]>,
}

/// How long an RFC 5227 conflict keeps an address off a port before baton probes again.
const CONFLICT_HOLD: Duration = Duration::from_secs(10);
/// How long a failed move first waits before it is tried again; each
/// failure in a row doubles it, up to [`RETRY_MAX`].
const RETRY_AFTER: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

fn kind_of(m: &Move) -> MoveKind {
    match m.kind {
        decide::MoveKind::Initial => MoveKind::Initial,
        decide::MoveKind::Failover => MoveKind::Failover,
        decide::MoveKind::Failback => MoveKind::Failback,
    }
}

impl Daemon {
    /// Decides and carries out the plan; true when something moved (or a
    /// probe found a conflict), so the engine must decide again.
    pub(super) async fn run_plan(&mut self) -> bool {
        let now = Instant::now();
        self.in_use.retain(|_, until| *until > now);
        self.failed.retain(|_, until| *until > now);
        self.refresh_cluster();
        let plan = self.with_inputs(decide::decide);
        self.next_check = plan.next_check.map(|t| self.start + t);
        self.note_port_states();
        self.send_hostable();
        self.withdraw(&plan);
        self.note_refusals(&plan);
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
            if let Err(e) = actuator::after_plan(&self.actuator, &failed_sources, families).await {
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
        if !self.execute(m, kind_of(m)).await {
            return false;
        }
        if let Some(p) = m
            .from
            .as_ref()
            .and_then(|f| self.ports.get(f))
            .filter(|p| p.state.link == Link::Down)
        {
            failed_sources.extend(p.ifindex);
        }
        let v4 = self
            .config
            .instances
            .get(&m.instance)
            .is_some_and(|i| i.address.addr().is_ipv4());
        *families = (families.0 || v4, families.1 || !v4);
        true
    }

    fn note_refusals(&mut self, plan: &decide::Plan) {
        let mut now_refused = BTreeMap::new();
        for (name, p) in &plan.placements {
            if let Placement::Stays { refused, .. } = p {
                if self.refused.get(name) != Some(refused) {
                    for (port, reason) in refused {
                        warn!(instance = %name, %port, reason = %reason, "port refused");
                        self.metrics
                            .refusals
                            .get_or_create(&metrics::ReasonLabel {
                                reason: reason.name().to_string(),
                            })
                            .inc();
                        self.emit(Event::Refused {
                            at_ms: self.at_ms(),
                            instance: name.clone(),
                            port: port.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
                now_refused.insert(name.clone(), refused.clone());
            }
        }
        self.refused = now_refused;
    }

    /// Probes, per target port, every address a plan places for the first
    /// time (ARP probe or DAD NS, tagged for a VLAN instance); returns the
    /// moves that may go ahead and how many conflicted.
    async fn probe_new(&mut self, moves: &[Move]) -> (Vec<Move>, usize) {
        let mut by_port: BTreeMap<String, Vec<NewAddress>> = BTreeMap::new();
        // Released to us by a live member that took it off first: no probe
        // (a planned handover's outage is the move alone).
        let released = self.cluster_state.released_to_us.clone();
        for m in moves.iter().filter(|m| !released.contains(&m.instance)) {
            if let Some(inst) = self.config.instances.get(&m.instance) {
                by_port.entry(m.to.clone()).or_default().push(NewAddress {
                    instance: m.instance.clone(),
                    addr: inst.address.addr(),
                    vlan: inst.vlan,
                    mac: inst.mac,
                });
            }
        }
        let mut conflicted = BTreeSet::new();
        for (port, wanted) in by_port {
            let (Some(ifindex), Ok(mac)) = (
                self.ports.get(&port).and_then(|p| p.ifindex),
                netdev::mac_of(&port),
            ) else {
                continue;
            };
            let mut own: Vec<[u8; 6]> = vec![mac];
            own.extend(wanted.iter().filter_map(|w| w.mac));
            let addrs: Vec<_> = wanted.iter().map(|w| (w.addr, w.vlan)).collect();
            let wait = self.config.timers.probe_time;
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
                    self.in_use.insert(
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
    async fn execute(&mut self, m: &Move, kind: MoveKind) -> bool {
        let began = Instant::now();
        let result = self.try_move(m).await;
        let labels = |result: &str| metrics::MoveLabels {
            kind: kind.to_string(),
            result: result.into(),
        };
        match result {
            Ok(steps) => {
                let took_us = began.elapsed().as_micros() as u64;
                self.log_steps(m, &steps);
                let record = MoveRecord {
                    from: m.from.clone(),
                    to: m.to.clone(),
                    kind,
                    at_ms: self.at_ms(),
                    took_us,
                    revived_sockets: None,
                    revert_icmps: None,
                    tickled: None,
                };
                self.revive_after(m, kind);
                self.tickle_after(m);
                info!(instance = %m.instance, from = ?m.from, to = %m.to, %kind, took_us, "move done");
                self.emit(Event::Move {
                    at_ms: record.at_ms,
                    instance: m.instance.clone(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                    kind,
                    took_us,
                });
                self.placement.insert(m.instance.clone(), m.to.clone());
                self.move_failures
                    .retain(|(instance, _), _| *instance != m.instance);
                self.last_move.insert(m.instance.clone(), record);
                self.metrics.moves.get_or_create(&labels("done")).inc();
                self.metrics.move_seconds.observe(took_us as f64 / 1e6);
                if let Some(inst) = self.config.instances.get(&m.instance) {
                    self.metrics
                        .set_owner(&m.instance, &inst.ports, Some(&m.to));
                }
                true
            }
            Err(e) => {
                error!(instance = %m.instance, to = %m.to, error = %format!("{e:#}"), "move failed");
                self.metrics.moves.get_or_create(&labels("failed")).inc();
                self.emit(Event::MoveFailed {
                    at_ms: self.at_ms(),
                    instance: m.instance.clone(),
                    to: m.to.clone(),
                    error: format!("{e:#}"),
                });
                let key = (m.instance.clone(), m.to.clone());
                let streak = self.move_failures.entry(key.clone()).or_insert(0);
                *streak += 1;
                let pause = (RETRY_AFTER * 2u32.saturating_pow(*streak - 1)).min(RETRY_MAX);
                self.failed.insert(key, Instant::now() + pause);
                // Leave the address on exactly one port: look at the kernel again.
                self.dirty.instances.insert(m.instance.clone());
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
            link_event = us(self.last_link_event),
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
        let inst = self
            .config
            .instances
            .get(&m.instance)
            .context("instance vanished")?
            .clone();
        let to = self
            .ports
            .get(&m.to)
            .and_then(|p| p.ifindex)
            .with_context(|| format!("port {} is missing", m.to))?;
        let from = m.from.as_ref().and_then(|f| self.ports.get(f));
        let spec = MoveSpec {
            name: &m.instance,
            instance: &inst,
            to_ifindex: to,
            to_macvlan: self.macvlan(&m.instance, &m.to),
            from_ifindex: from.and_then(|p| p.ifindex),
            from_macvlan: m.from.as_ref().and_then(|f| self.macvlan(&m.instance, f)),
            entry: self.entry_on(&m.instance, &m.to)?,
        };
        // The last move's announcements name the old port: they stop here.
        if let Some(h) = self.announcing.remove(&m.instance) {
            h.abort();
        }
        let steps = self.actuator.move_instance(&spec).await?;
        self.spawn_announcements(&m.instance, to, spec.entry.mac);
        Ok(steps)
    }

    /// After a relocation's first announcement: end the backoff of the
    /// sockets on the address (a first placement has none).
    fn revive_after(&self, m: &Move, kind: MoveKind) {
        let Some(inst) = self.config.instances.get(&m.instance) else {
            return;
        };
        if m.from.is_none() || !inst.reverts_backoff(&self.config.timers) {
            return;
        }
        if let Some(r) = &self.reviver {
            r.spawn(
                m.instance.clone(),
                inst.address.addr(),
                kind == MoveKind::Failover,
                self.revived_tx.clone(),
            );
        }
    }

    /// After a takeover's placement: the old owner's clients are told.
    fn tickle_after(&mut self, m: &Move) {
        if m.from.is_none() {
            self.tickle_due(&m.instance);
        }
    }

    /// Sends the tickles due for `instance` (once: they are taken).
    pub(super) fn tickle_due(&mut self, instance: &str) {
        let (Some(conns), Some(inst)) = (
            self.tickles_due.remove(instance),
            self.config.instances.get(instance),
        ) else {
            return;
        };
        super::tickle::spawn(
            instance.to_string(),
            inst.address.addr(),
            conns,
            self.tickled_tx.clone(),
        );
    }

    /// Tickles sent: into the move's record, an event, the metrics.
    pub(super) fn on_tickled(&mut self, t: super::TickleResult) {
        match t {
            Ok(t) => {
                info!(instance = %t.instance, connections = t.connections, acks = t.acks, "tickled the old owner's connections");
                self.metrics.tickle_acks.inc_by(t.acks as u64);
                if let Some(rec) = self.last_move.get_mut(&t.instance) {
                    rec.tickled = Some(t.connections as u64);
                }
                self.emit(Event::Tickled {
                    at_ms: self.at_ms(),
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
    pub(super) fn on_revival(&mut self, r: super::revive::Revival) {
        let (sockets, icmps) = (r.sockets as u64, r.icmps as u64);
        info!(instance = %r.instance, sockets, icmps, left = r.left, "backoff reverted");
        self.metrics.revived_sockets.inc_by(sockets);
        self.metrics.revert_icmps.inc_by(icmps);
        if let Some(rec) = self.last_move.get_mut(&r.instance) {
            rec.revived_sockets = Some(sockets);
            rec.revert_icmps = Some(icmps);
        }
        self.emit(Event::Revived {
            at_ms: self.at_ms(),
            instance: r.instance,
            sockets,
            icmps,
            left: r.left as u64,
        });
    }

    /// The announcements after the first one, paced, without holding up
    /// other moves; a later move of the instance cancels them.
    pub(super) fn spawn_announcements(&mut self, instance: &str, ifindex: u32, mac: [u8; 6]) {
        if let Some(h) = self.announcing.remove(instance) {
            h.abort();
        }
        let Some(inst) = self.config.instances.get(instance) else {
            return;
        };
        let (addr, vlan) = (inst.address.addr(), inst.vlan);
        let t = &self.config.timers;
        if t.announce_count > 1 {
            let (count, interval) = (t.announce_count - 1, t.announce_interval);
            let task = tokio::spawn(async move {
                tokio::time::sleep(interval).await;
                if let Err(e) = announce::announce(ifindex, mac, addr, vlan, count, interval).await
                {
                    warn!(error = %format!("{e:#}"), "announcement");
                }
            });
            self.announcing
                .insert(instance.to_string(), task.abort_handle());
        }
        self.announcing.retain(|_, h| !h.is_finished());
    }

    /// `baton move`: make-before-break to an eligible port.
    pub(super) async fn planned_move(&mut self, instance: &str, port: &str) -> Result<String> {
        let inst = self
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
        let from = self.placement.get(instance).cloned();
        if from.as_deref() == Some(port) {
            return Ok(format!("{instance} is already on {port}"));
        }
        if let Some(reason) = self.with_inputs(|i| decide::check_move(i, instance, port)) {
            bail!("{port} cannot take {instance}: {reason}");
        }
        let m = Move {
            instance: instance.to_string(),
            from,
            to: port.to_string(),
            kind: decide::MoveKind::Failover,
        };
        if self.execute(&m, MoveKind::Planned).await {
            Ok(format!("{instance} moved to {port}"))
        } else {
            bail!("the move of {instance} to {port} failed; see `baton events` or the log")
        }
    }
}
