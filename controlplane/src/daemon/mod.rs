//! `baton run`: the daemon. Its folders follow the data: [`netlink`]
//! (kernel events and dumps) -> [`ports`] (port states) and [`health`] (the
//! storage side's links, the target process, probes) -> decide (pure, `crate::decide`) -> [`placement`]
//! (the plan carried out by the actuator, the kernel reconciled with the
//! placement, the address defended) -> [`wire`] (announcements, probes,
//! what TCP peers are told) -> [`report`] (status, events, metrics,
//! systemd). [`membership`] is the cluster's word.
//!
//! Level-triggered: the daemon keeps the desired state (the placement) and
//! compares it with the kernel's whenever an event says something of an
//! instance changed, after a lost event, and every `resync_interval`; any
//! difference is repaired, whoever caused it. This module owns the stages'
//! state and runs the loop; each stage takes what it needs as arguments.
mod backoff;
mod health;
mod lock;
mod membership;
mod netlink;
mod placement;
mod ports;
mod process;
mod report;
mod sockopt;
mod start;
mod status;
mod wire;

use crate::dataplane::PinDir;
use crate::protocol::{Event, Request, Response};
use anyhow::Result;
use baton_config::Config;
use baton_config::{InstanceName, MemberId};
use health::HealthTable;
use membership::{Membership, Wake};
use netlink::decode::Observation;
use netlink::observed::Observed;
use placement::actuator::Actuator;
use placement::defence::Defence;
use placement::state::PlacementState;
use placement::{Context, Stage};
use ports::{LinkChange, PortTable};
use report::Reporter;
use report::control::Call;
use report::sd_notify::Notifier;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use wire::{Aftercare, AftercareResults, announce};

pub use baton_config::instance_id;
pub use start::{Options, run};

/// Where the loop hears from the kernel, the clients and its own tasks.
struct Inbox {
    monitor: mpsc::UnboundedReceiver<Observation>,
    calls: mpsc::Receiver<Call>,
    /// Other hosts' ARP/ND sightings, from the address watch.
    sightings: mpsc::Receiver<announce::Seen>,
    /// The `[health]` probes' observations.
    probes: mpsc::Receiver<health::probe::Observation>,
    after: AftercareResults,
}

/// The loop's own clocks.
struct Timers {
    /// When the engine's timers (hold, failback) next need a decision.
    next_check: Option<Instant>,
    next_resync: Instant,
    /// When the main loop next feeds systemd's watchdog.
    next_watchdog: Option<Instant>,
}

struct Daemon {
    opts: Options,
    config: Config,
    pins: PinDir,
    ports: PortTable,
    health: HealthTable,
    placement: PlacementState,
    actuator: Actuator,
    membership: Membership,
    defence: Defence,
    after: Aftercare,
    report: Reporter,
    notify: Notifier,
    inbox: Inbox,
    timers: Timers,
    /// A link dump is due (events were lost): ports are set from it.
    refresh_links: bool,
    _lock: lock::PinDirLock,
}

impl Daemon {
    /// What the stages read.
    fn ctx(&self) -> Context<'_> {
        Context {
            config: &self.config,
            ports: &self.ports,
            report: &self.report,
            cluster: &self.membership,
            health: &self.health,
        }
    }

    /// A placement step on this daemon's state.
    fn stage(&mut self) -> Stage<'_> {
        Stage {
            ctx: Context {
                config: &self.config,
                ports: &self.ports,
                report: &self.report,
                cluster: &self.membership,
                health: &self.health,
            },
            state: &mut self.placement,
            actuator: &mut self.actuator,
            after: &self.after,
        }
    }

    async fn main_loop(&mut self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        loop {
            self.notify.feed_watchdog(&mut self.timers.next_watchdog);
            let dropped = crate::logging::newly_dropped();
            if dropped > 0 {
                warn!(
                    lines = dropped,
                    "log lines dropped: the reader of stderr is not keeping up"
                );
            }
            if self.run_plan().await {
                continue;
            }
            if self.placement.reconcile_due(Instant::now()) && self.reconcile().await {
                continue;
            }
            let summary = self.summary();
            self.notify.status(&summary);
            // Wait for something that matters: an event of a port or an
            // instance, a request, a timer.
            loop {
                let wake = self.next_wake();
                tokio::select! {
                    o = self.inbox.monitor.recv() => {
                        let mut relevant = match o {
                            Some(o) => self.observe(o),
                            None => self.restart_monitor().await,
                        };
                        // A burst is handled as one: drain before acting.
                        while let Ok(o) = self.inbox.monitor.try_recv() {
                            relevant |= self.observe(o);
                        }
                        if relevant {
                            break;
                        }
                    }
                    Some(r) = self.inbox.after.revived.recv() => {
                        placement::moves::on_revival(&mut self.placement, &self.report, r);
                    }
                    Some(t) = self.inbox.after.tickled.recv() => {
                        placement::moves::on_tickled(&mut self.placement, &self.report, t);
                    }
                    Some(seen) = self.inbox.sightings.recv() => {
                        let mut relevant = self.on_sighting(seen);
                        while let Ok(seen) = self.inbox.sightings.try_recv() {
                            relevant |= self.on_sighting(seen);
                        }
                        if relevant {
                            break;
                        }
                    }
                    Some(o) = self.inbox.probes.recv() => {
                        let now = self.report.now();
                        let mut changed = self.health.on_probe(&self.config, o, now);
                        while let Ok(o) = self.inbox.probes.try_recv() {
                            changed |= self.health.on_probe(&self.config, o, now);
                        }
                        if changed {
                            break;
                        }
                    }
                    w = self.membership.wake() => {
                        if let Wake::Event(e) = w {
                            self.on_cluster_event(e);
                        }
                        if self.membership.refresh() {
                            break;
                        }
                    }
                    Some((req, reply)) = self.inbox.calls.recv() => {
                        let response = self.on_request(req).await;
                        let _ = reply.send(response);
                        break;
                    }
                    _ = tokio::time::sleep_until(wake.into()) => {
                        self.notify.feed_watchdog(&mut self.timers.next_watchdog);
                        self.membership.refresh();
                        if Instant::now() >= self.timers.next_resync {
                            self.timers.next_resync = Instant::now() + self.config.daemon.resync_interval;
                            self.placement.dirty.all = true;
                        }
                        break;
                    }
                    _ = hup.recv() => {
                        let r = self.reload().await;
                        info!(ok = r.is_ok(), "SIGHUP reload");
                        break;
                    }
                    _ = term.recv() => {
                        if self.membership.in_cluster() {
                            info!("SIGTERM: releasing this member's instances, then exiting");
                            self.notify.send("STOPPING=1");
                            self.leave_cluster().await;
                            return Ok(());
                        }
                        info!("SIGTERM: exiting; addresses and dataplane stay as they are");
                        self.notify.send("STOPPING=1");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The daemon in one line, for systemd.
    fn summary(&self) -> report::sd_notify::Summary {
        report::sd_notify::Summary {
            placed: self.placement.placement.len(),
            instances: self.config.instances.len(),
            moves: self.placement.moves_done,
            fenced: self.membership.fenced(),
            failing: self.placement.trouble.len(),
        }
    }

    /// The earliest timer: a port's hold timer, a conflict or failed move
    /// expiring, a retry, the periodic resync.
    fn next_wake(&self) -> Instant {
        [
            self.timers.next_check,
            Some(self.timers.next_resync),
            self.timers.next_watchdog,
            self.membership.wake_at(),
            self.placement.next_timer(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.timers.next_resync)
    }

    /// Decides and carries out the plan; true when something moved (or a
    /// probe found a conflict), so the engine must decide again.
    async fn run_plan(&mut self) -> bool {
        self.placement.expire_holds(Instant::now());
        self.membership.refresh();
        let plan = placement::with_inputs(&self.ctx(), &self.placement, crate::decide::decide);
        let now = self.report.now();
        let next = [plan.next_check, self.health.next_change(&self.config, now)];
        self.timers.next_check = next
            .into_iter()
            .flatten()
            .min()
            .map(|t| self.report.start() + t);
        self.ports.report_conditions(&self.config, &self.report);
        self.health.report_changes(&self.config, &self.report, now);
        self.membership
            .send_hostable(&self.config, &self.ports, &self.health, now);
        self.placement.withdraw(&plan, &self.report);
        self.placement.note_refusals(&plan, &self.report);
        let moved = self.stage().carry_out(&plan).await;
        moved | self.hand_over_due().await
    }

    /// Hands each held instance that is due to another member (no port
    /// here serves it, or it fails back to a member it prefers), as `baton
    /// move --member` would; true when one went.
    async fn hand_over_due(&mut self) -> bool {
        let now = self.report.now();
        let due = self
            .membership
            .handovers_due(&self.config, &self.ports, &self.health, now);
        for (instance, member, why) in &due {
            info!(%instance, to = %member, why = ?why, "handing it over");
            match self.handover(instance, member).await {
                Ok(done) => info!(%instance, "{done}"),
                Err(e) => {
                    warn!(%instance, error = %format!("{e:#}"), "handover failed; again in a second");
                    self.membership.abandon_release(instance);
                }
            }
        }
        !due.is_empty()
    }

    /// Reconciles what is dirty (and failing instances whose retry is due).
    /// True when it changed the placement or a port, so the engine must
    /// decide again.
    async fn reconcile(&mut self) -> bool {
        let (all, names) = self
            .placement
            .take_dirty(self.config.instances.keys().cloned());
        let observed = match Observed::dump().await {
            Ok(o) => o,
            Err(e) => {
                error!(error = %format!("{e:#}"), "reading the kernel's state; retrying");
                self.placement.dirty.all = true;
                self.timers.next_resync = Instant::now() + Duration::from_secs(1);
                return false;
            }
        };
        let mut changed = false;
        if std::mem::take(&mut self.refresh_links) {
            let now = self.report.now();
            changed |= self.health.apply_dump(&observed.links, &self.config, now);
            let change = self.ports.apply_dump(&observed.links, now);
            changed |= self.on_link_change(change);
        }
        if all {
            let cpus: BTreeSet<u32> = self
                .config
                .instances
                .values()
                .flat_map(|i| i.cpus.iter().copied())
                .collect();
            if let Err(e) = crate::dataplane::steering::enable_cpus(&self.pins, cpus) {
                warn!(error = %format!("{e:#}"), "CPU steering");
            }
        }
        changed |= self.stage().reconcile(names, all, &observed).await;
        status::publish_placement(&self.ctx(), &self.placement, &self.actuator);
        changed
    }

    /// Takes in one observation; true when it concerns a port or an instance.
    fn observe(&mut self, o: Observation) -> bool {
        match placement::concern_of(&self.config, o) {
            placement::Concern::Port(ev) => {
                let now = self.report.now();
                let watched = self.health.on_link(&ev, &self.config, now);
                let change = self.ports.on_link(ev, now);
                self.on_link_change(change) || watched
            }
            placement::Concern::Instances(names) => {
                let any = !names.is_empty();
                self.placement.dirty.instances.extend(names);
                any
            }
            placement::Concern::All => {
                self.placement.dirty.all = true;
                true
            }
            placement::Concern::Lost => {
                self.lost_events("netlink overrun: the kernel dropped notifications");
                true
            }
        }
    }

    /// Ports that appeared get their programs and a full reconcile.
    fn on_link_change(&mut self, change: LinkChange) -> bool {
        for (name, ifindex) in &change.appeared {
            // Its error is logged per port; the daemon goes on with the others.
            let _ = start::attach(&self.pins, &self.config, std::slice::from_ref(name));
            self.actuator.prepare_port(*ifindex);
            self.placement.dirty.all = true;
        }
        change.changed
    }

    /// Anything may have changed: read the links again and reconcile all.
    fn lost_events(&mut self, reason: &str) {
        self.report.report(Event::Resync {
            at_ms: self.report.at_ms(),
            reason: reason.to_string(),
        });
        self.placement.dirty.all = true;
        self.refresh_links = true;
    }

    /// The monitor ended: a new one (with a fresh dump), never silence.
    async fn restart_monitor(&mut self) -> bool {
        let mut delay = Duration::from_millis(10);
        loop {
            match netlink::monitor::start().await {
                Ok((links, rx)) => {
                    self.inbox.monitor = rx;
                    self.lost_events("the rtnetlink monitor ended; started a new one");
                    let now = self.report.now();
                    self.health.apply_dump(&links, &self.config, now);
                    let change = self.ports.apply_dump(&links, now);
                    self.on_link_change(change);
                    return true;
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "restarting the rtnetlink monitor");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Another host's ARP/ND claim; true when it was a conflict.
    fn on_sighting(&mut self, seen: announce::Seen) -> bool {
        let ctx = Context {
            config: &self.config,
            ports: &self.ports,
            report: &self.report,
            cluster: &self.membership,
            health: &self.health,
        };
        self.defence
            .on_sighting(seen, &ctx, &self.placement.placement, &mut self.actuator)
    }

    fn on_cluster_event(&mut self, e: crate::cluster::ClusterEvent) {
        let Some((instance, conns)) = self.membership.on_event(e, &self.report) else {
            return;
        };
        let tickle = self.config.cluster.as_ref().is_some_and(|c| c.tickle);
        if tickle && !conns.is_empty() {
            self.placement.tickles_due.insert(instance.clone(), conns);
            // Placed before the event came: now.
            if self.placement.placement.contains_key(&instance) {
                self.stage().tickle_due(&instance);
            }
        }
    }

    async fn on_request(&mut self, req: Request) -> Response {
        let result = match req {
            Request::Status => {
                return Response::Status(status::status(&status::Sources {
                    ctx: self.ctx(),
                    state: &self.placement,
                    defence: &self.defence,
                    actuator: &self.actuator,
                    pins: &self.pins,
                    config_path: &self.opts.config,
                }));
            }
            Request::Move { instance, port } => self.stage().planned_move(&instance, &port).await,
            Request::Handover { instance, member } => self.handover(&instance, &member).await,
            Request::Reload => self.reload().await,
            Request::Events => {
                return Response::Error {
                    message: "events are served by the socket task".into(),
                };
            }
        };
        match result {
            Ok(message) => Response::Done { message },
            Err(e) => Response::Error {
                message: format!("{e:#}"),
            },
        }
    }

    /// `baton reload` / SIGHUP: the new file validated whole, settings that
    /// need a restart refused with the reason, the difference applied.
    async fn reload(&mut self) -> Result<String> {
        self.notify.send("RELOADING=1");
        let result =
            placement::reload::apply(&self.opts.config, &mut self.config, &mut self.placement);
        if result.is_ok() {
            self.reconcile().await;
        }
        self.notify.send("READY=1");
        self.report.report(Event::Reload {
            at_ms: self.report.at_ms(),
            ok: result.is_ok(),
            message: match &result {
                Ok(m) => m.clone(),
                Err(e) => format!("{e:#}"),
            },
        });
        result
    }

    /// `baton move INSTANCE --member ID`: off this host first, then the
    /// release names the taker, which places it without a probe.
    async fn handover(&mut self, instance: &InstanceName, member: &MemberId) -> Result<String> {
        self.membership
            .check_handover(&self.config, instance, member)?;
        let began = Instant::now();
        // Off this host for good (no re-adoption) before the key goes.
        self.membership.begin_release([instance.clone()]);
        self.placement.placement.remove(instance);
        self.placement.dirty.instances.insert(instance.clone());
        self.reconcile().await;
        self.membership.release(instance, member, began).await
    }

    /// SIGTERM in a cluster: every held instance off this host, then
    /// released, then the lease revoked (bounded: 3 s).
    async fn leave_cluster(&mut self) {
        let held: Vec<InstanceName> = self.placement.placement.keys().cloned().collect();
        self.membership
            .begin_release(self.config.instances.keys().cloned());
        self.placement.placement.clear();
        self.placement.dirty.instances.extend(held.iter().cloned());
        self.reconcile().await;
        self.membership.leave(held.len()).await;
    }
}
