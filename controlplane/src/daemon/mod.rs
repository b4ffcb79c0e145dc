//! `baton run`: the daemon. The flow reads top to bottom:
//! link events ([`monitor`]) -> decision (`baton_config::decide`, pure) ->
//! actions ([`actuator`], [`announce`]) -> status ([`control`]).
//!
//! It reconciles desired with actual state at start and after every event:
//! placement is read back from the kernel's addresses, so a restart moves
//! nothing (programs and maps stay pinned) and a crash mid-move is repaired.
pub mod actuator;
pub mod announce;
mod control;
mod metrics;
mod monitor;

use crate::dataplane::{self, AttachMode, InstanceTable, PinDir, key_for};
use crate::netdev;
use crate::protocol::{
    Event, InstanceStatus, MoveRecord, PortStatus, PortTraffic, Request, Response, Status,
};
use actuator::{Actuator, MoveSpec};
use anyhow::{Context as _, Result, bail};
use baton_common::MAX_COUNTED_PORTS;
use baton_config::Config;
use baton_config::decide::{
    self, ClusterView, Inputs, Link, Move, MoveKind, Placement, PortState, Reason,
};
use monitor::LinkEvent;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, error, info, warn};

pub struct Options {
    pub config: PathBuf,
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
}

/// An address a plan places for the first time: (instance, address, its MAC).
type NewAddress = (String, std::net::Ipv4Addr, Option<[u8; 6]>);

/// How long an RFC 5227 conflict keeps an address off a port before baton probes again.
const CONFLICT_HOLD: Duration = Duration::from_secs(10);
/// How long a failed move waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// SCHED_FIFO for the daemon (threads it starts inherit it).
fn set_realtime(priority: u32) {
    if priority == 0 {
        return;
    }
    let param = libc::sched_param {
        sched_priority: priority as i32,
    };
    // SAFETY: plain sched_setscheduler on the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        warn!(priority, error = %std::io::Error::last_os_error(), "could not run with real-time priority");
    }
}

pub fn run(opts: Options) -> Result<()> {
    // One thread is plenty: moves are sequential by design (the plan is one
    // transaction), and it keeps the daemon small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut daemon = Daemon::start(opts).await?;
        daemon.main_loop().await
    })
}

struct Port {
    ifindex: Option<u32>,
    admin_up: bool,
    carrier: bool,
    state: PortState,
    changed: Instant,
}

struct Daemon {
    opts: Options,
    config: Config,
    pins: PinDir,
    start: Instant,
    ports: BTreeMap<String, Port>,
    placement: BTreeMap<String, String>,
    /// (instance, port) -> until when an RFC 5227 conflict keeps it off.
    in_use: BTreeMap<(String, String), Instant>,
    /// (instance, port) -> until when a failed move is not retried.
    failed: BTreeMap<(String, String), Instant>,
    refused: BTreeMap<String, Vec<(String, Reason)>>,
    /// Port state names last reported, so timer-driven changes (held-down ->
    /// failed, settling -> up) become events too.
    port_states: BTreeMap<String, String>,
    last_move: BTreeMap<String, MoveRecord>,
    events: broadcast::Sender<Event>,
    actuator: Actuator,
    links: mpsc::UnboundedReceiver<LinkEvent>,
    calls: mpsc::Receiver<control::Call>,
    metrics: std::sync::Arc<metrics::Metrics>,
    /// When the last link change arrived: a move's reaction time is logged.
    last_link_event: Instant,
}

/// What each ingress hook cannot do, said once at start.
fn warn_hook_limits(config: &baton_config::Config) {
    use baton_config::model::IngressHook;
    for (name, inst) in &config.instances {
        match config.daemon.ingress {
            IngressHook::Xdp if inst.vlan.is_some() => warn!(
                instance = %name,
                "XDP pops only VLAN tags that arrive in the frame (NICs with rxvlan off); \
                 on veth and VLAN-offloading NICs the tag is metadata: use [daemon] ingress = \"tcx\""
            ),
            IngressHook::Tcx if !inst.cpus.is_empty() => warn!(
                instance = %name,
                "CPU steering needs the XDP hook (cpumaps take XDP frames); cpus ignored with ingress = \"tcx\""
            ),
            _ => {}
        }
    }
}

impl Daemon {
    async fn start(opts: Options) -> Result<Daemon> {
        let config = baton_config::load(&opts.config)
            .map_err(|d| anyhow::anyhow!("{d}invalid configuration; nothing was applied"))?;
        set_realtime(config.daemon.realtime_priority);
        let start = Instant::now();
        let pins = PinDir::new(&opts.pin_dir);
        // Subscribe before anything else so no link change is missed.
        let (links_now, links) = monitor::start().await?;
        let mut ports = BTreeMap::new();
        for name in config.ports.keys() {
            let link = links_now.iter().find(|l| &l.name == name);
            let up = link.is_some_and(LinkEvent::is_up);
            ports.insert(
                name.clone(),
                Port {
                    ifindex: link.map(|l| l.ifindex),
                    admin_up: link.is_some_and(|l| l.admin_up),
                    carrier: link.is_some_and(|l| l.carrier),
                    state: PortState {
                        link: if up { Link::Up } else { Link::Down },
                        since: Duration::ZERO,
                        at_start: true,
                    },
                    changed: start,
                },
            );
        }
        let present: Vec<String> = ports
            .iter()
            .filter(|(_, p)| p.ifindex.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        if present.is_empty() {
            bail!(
                "none of the configured ports exists here ({})",
                config.ports.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let programs = match config.daemon.ingress {
            baton_config::model::IngressHook::Xdp => dataplane::ProgramSet::Baton,
            baton_config::model::IngressHook::Tcx => dataplane::ProgramSet::TcIngress,
        };
        warn_hook_limits(&config);
        for a in dataplane::attach_set(&pins, &present, AttachMode::Auto, programs)? {
            info!(port = %a.port, mode = %a.mode, "dataplane attached");
        }
        let actuator = Actuator::new(InstanceTable::open(&pins)?)?;
        let (events, _) = broadcast::channel(1024);
        let (call_tx, calls) = mpsc::channel(16);
        let listener = control::listen(&opts.socket)?;
        tokio::spawn(control::serve(listener, call_tx, events.clone()));
        let metrics = metrics::Metrics::new(pins.clone());
        if let Some(addr) = config.metrics.listen {
            let m = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr, m).await {
                    error!(error = %format!("{e:#}"), "metrics endpoint");
                }
            });
        }
        let mut d = Daemon {
            opts,
            config,
            pins,
            start,
            ports,
            placement: BTreeMap::new(),
            in_use: BTreeMap::new(),
            failed: BTreeMap::new(),
            refused: BTreeMap::new(),
            port_states: BTreeMap::new(),
            last_move: BTreeMap::new(),
            events,
            actuator,
            links,
            calls,
            metrics,
            last_link_event: start,
        };
        d.reconcile().await?;
        info!(
            instances = d.config.instances.len(),
            placed = d.placement.len(),
            "baton running"
        );
        Ok(d)
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn at_ms(&self) -> u64 {
        self.now().as_millis() as u64
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn port_name(&self, ifindex: u32) -> Option<&String> {
        self.ports
            .iter()
            .find(|(_, p)| p.ifindex == Some(ifindex))
            .map(|(n, _)| n)
    }

    /// The macvlan for an instance with its own MAC on `port` (None otherwise).
    fn macvlan(&self, instance: &str, port: &str) -> Option<String> {
        self.config.instances.get(instance)?.mac?;
        let index = self.config.ports.keys().position(|p| p == port)?;
        Some(actuator::macvlan_name(self.id_of(instance), index))
    }

    /// The device an instance's address lives on when `port` owns it.
    fn device(&self, instance: &str, port: &str) -> Option<u32> {
        match self.macvlan(instance, port) {
            Some(name) => netdev::index_of(&name),
            None => self.ports.get(port)?.ifindex,
        }
    }

    /// Ifindexes of the ports the dataplane counts an instance on: its
    /// first configured ports (0 for one that does not exist now).
    fn counted_ports(&self, inst: &baton_config::model::Instance) -> [u32; MAX_COUNTED_PORTS] {
        let mut out = [0; MAX_COUNTED_PORTS];
        for (slot, port) in out.iter_mut().zip(&inst.ports) {
            *slot = self.ports.get(port).and_then(|p| p.ifindex).unwrap_or(0);
        }
        out
    }

    fn id_of(&self, instance: &str) -> u32 {
        instance_id(instance)
    }

    /// Reads placement back from the kernel: where each instance's address is.
    /// An address on two ports (a crash mid-move) keeps the one the map names
    /// if that port has not failed, else the first healthy one in the
    /// instance's order; the other copies are removed. The map is made to agree.
    async fn reconcile(&mut self) -> Result<()> {
        let cpus: BTreeSet<u32> = self
            .config
            .instances
            .values()
            .flat_map(|i| i.cpus.iter().copied())
            .collect();
        dataplane::steering::enable_cpus(&self.pins, cpus)?;
        let configured = self.actuator.addresses().await?;
        self.placement.clear();
        let names: Vec<String> = self.config.instances.keys().cloned().collect();
        for name in names {
            if let Some(owner) = self.reconcile_instance(&name, &configured).await? {
                self.placement.insert(name, owner);
            }
        }
        self.publish_placement();
        // Entries for addresses no instance has any more.
        let wanted: BTreeSet<_> = self
            .config
            .instances
            .values()
            .flat_map(|i| {
                let key = key_for(i.vlan, i.address.addr());
                [Some(key), dataplane::untagged(&key)]
            })
            .flatten()
            .collect();
        for (key, _) in self.actuator.table.entries() {
            if !wanted.contains(&key) {
                self.actuator.table.remove(&key)?;
            }
        }
        Ok(())
    }

    /// Where one instance is, made consistent: its address on exactly one
    /// port (or none), leftover copies and macvlans removed, the map and the
    /// routes agreeing. Returns the owner.
    async fn reconcile_instance(
        &mut self,
        name: &str,
        configured: &[actuator::Configured],
    ) -> Result<Option<String>> {
        let inst = self.config.instances[name].clone();
        let key = key_for(inst.vlan, inst.address.addr());
        let holders: Vec<String> = inst
            .ports
            .iter()
            .filter(|p| {
                let dev = self.device(name, p);
                configured
                    .iter()
                    .any(|c| Some(c.ifindex) == dev && c.addr == inst.address.addr())
            })
            .cloned()
            .collect();
        let healthy = |p: &String| self.ports.get(p).is_some_and(|p| p.state.link == Link::Up);
        let map_owner = self
            .actuator
            .table
            .get(&key)
            .and_then(|e| self.port_name(e.owner_ifindex).cloned());
        let keep = match holders.len() {
            0 => None,
            1 => holders.first().cloned(),
            _ => map_owner
                .filter(|o| holders.contains(o) && healthy(o))
                .or_else(|| holders.iter().find(|p| healthy(p)).cloned())
                .or_else(|| holders.first().cloned()),
        };
        let mut repaired = false;
        for port in inst.ports.iter().filter(|p| keep.as_ref() != Some(*p)) {
            let held = holders.contains(port);
            repaired |= held;
            if held {
                warn!(instance = %name, %port, "address on two ports (interrupted move): removing this copy");
            }
            match self.macvlan(name, port) {
                // The instance's MAC waits on every other port as a down standby.
                Some(mv) => {
                    self.actuator.standby_macvlan(&mv, inst.address).await?;
                    if let (Some(lower), Some(mac)) = (self.ports[port].ifindex, inst.mac) {
                        self.actuator.ensure_macvlan(&mv, lower, mac, false).await?;
                    }
                }
                None if held => {
                    if let Some(ifindex) = self.ports[port].ifindex {
                        self.actuator.del_address(ifindex, inst.address).await?;
                    }
                }
                None => {}
            }
        }
        let Some(owner) = keep else {
            // Not placed: make sure the dataplane does not claim it either.
            self.actuator.table.remove(&key)?;
            return Ok(None);
        };
        let ifindex = self.ports[&owner].ifindex.context("owner vanished")?;
        let entry = Actuator::entry(
            self.id_of(name),
            &inst,
            ifindex,
            netdev::mac_of(&owner)?,
            self.counted_ports(&inst),
        );
        if self.actuator.table.get(&key) != Some(entry) {
            info!(instance = %name, port = %owner, "instance table repaired");
            self.actuator.table.set(&key, &entry)?;
            repaired = true;
        }
        if repaired {
            // The interrupted move never announced: the clients may still point
            // at the old port.
            let t = &self.config.timers;
            announce::announce(
                ifindex,
                entry.mac,
                inst.address.addr(),
                1,
                t.announce_interval,
            )
            .await?;
            self.spawn_announcements(ifindex, entry.mac, inst.address.addr());
        }
        let dev = self.device(name, &owner).context("owner device vanished")?;
        self.actuator.replace_routes(&inst.routes, dev).await?;
        Ok(Some(owner))
    }

    /// Tells the metrics where every instance is and what the ids mean.
    fn publish_placement(&self) {
        for (name, inst) in &self.config.instances {
            self.metrics.set_owner(
                name,
                &inst.ports,
                self.placement.get(name).map(String::as_str),
            );
        }
        if let Ok(mut names) = self.metrics.names.lock() {
            names.0 = self
                .config
                .instances
                .keys()
                .map(|n| (self.id_of(n), n.clone()))
                .collect();
            names.1 = self
                .ports
                .iter()
                .filter_map(|(n, p)| Some((p.ifindex?, n.clone())))
                .collect();
        }
    }

    /// Runs `f` on the engine's inputs as they are now: the states of the
    /// ports that exist, the (instance, port) pairs a probe found in use,
    /// the placement and the clock.
    fn with_inputs<R>(&self, f: impl FnOnce(&Inputs) -> R) -> R {
        let ports: BTreeMap<String, PortState> = self
            .ports
            .iter()
            .filter(|(_, p)| p.ifindex.is_some())
            .map(|(n, p)| (n.clone(), p.state))
            .collect();
        let in_use: BTreeSet<(String, String)> = self.in_use.keys().cloned().collect();
        f(&Inputs {
            config: &self.config,
            ports: &ports,
            cluster: &ClusterView::default(),
            in_use: &in_use,
            placement: &self.placement,
            now: self.now(),
        })
    }

    fn plan(&mut self) -> decide::Plan {
        let now = Instant::now();
        self.in_use.retain(|_, until| *until > now);
        self.failed.retain(|_, until| *until > now);
        self.with_inputs(decide::decide)
    }

    async fn main_loop(&mut self) -> Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let plan = self.plan();
            self.note_port_states();
            self.note_refusals(&plan);
            // Addresses not ours yet are probed first (RFC 5227), all at once.
            let (moves, conflicts) = self.probe_new(&plan.moves).await;
            let mut progressed = conflicts > 0;
            let mut failed_sources = BTreeSet::new();
            let mut families = (false, false);
            for m in &moves {
                if self
                    .failed
                    .contains_key(&(m.instance.clone(), m.to.clone()))
                {
                    continue;
                }
                if self.execute(m).await {
                    progressed = true;
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
                    families = (families.0 || v4, families.1 || !v4);
                }
            }
            if progressed {
                let failed_sources: Vec<u32> = failed_sources.into_iter().collect();
                if let Err(e) =
                    actuator::after_plan(&self.actuator, &failed_sources, families).await
                {
                    warn!(error = %format!("{e:#}"), "cleaning after the plan");
                }
            }
            if progressed {
                continue;
            }
            let wake = [plan.next_check.map(|t| self.start + t)]
                .into_iter()
                .flatten()
                .chain(self.in_use.values().copied())
                .chain(self.failed.values().copied())
                .min();
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(ev) = self.links.recv() => self.on_link(ev),
                Some((req, reply)) = self.calls.recv() => {
                    let response = self.on_request(req).await;
                    let _ = reply.send(response);
                }
                _ = sleep => {}
                _ = hup.recv() => {
                    let r = self.reload().await;
                    info!(ok = r.is_ok(), "SIGHUP reload");
                }
                _ = term.recv() => {
                    info!("SIGTERM: exiting; addresses and dataplane stay as they are");
                    return Ok(());
                }
            }
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        let now = self.now();
        let Some((name, port)) = self
            .ports
            .iter_mut()
            .find(|(n, p)| **n == ev.name || (p.ifindex == Some(ev.ifindex) && ev.removed))
        else {
            return;
        };
        port.ifindex = if ev.removed { None } else { Some(ev.ifindex) };
        port.admin_up = ev.admin_up;
        port.carrier = ev.carrier;
        let link = if ev.is_up() { Link::Up } else { Link::Down };
        if port.state.link == link {
            return;
        }
        port.state = PortState {
            link,
            since: now,
            at_start: false,
        };
        port.changed = Instant::now();
        self.last_link_event = port.changed;
        info!(port = %name, link = %link_name(port), "link changed");
    }

    fn note_port_states(&mut self) {
        let names: Vec<String> = self.ports.keys().cloned().collect();
        for name in names {
            let state = self.port_state_name(&name);
            if self.port_states.get(&name) != Some(&state) {
                let link = link_name(&self.ports[&name]);
                info!(port = %name, %state, %link, "port state");
                self.metrics
                    .port_up
                    .get_or_create(&metrics::PortLabel { port: name.clone() })
                    .set(i64::from(state == "up"));
                self.emit(Event::Port {
                    at_ms: self.at_ms(),
                    port: name.clone(),
                    link,
                    state: state.clone(),
                });
                self.port_states.insert(name, state);
            }
        }
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
                            reason: reason.to_string(),
                        });
                    }
                }
                now_refused.insert(name.clone(), refused.clone());
            }
        }
        self.refused = now_refused;
    }

    /// Probes, per target port, every IPv4 address a plan places for the first
    /// time; returns the moves that may go ahead and how many conflicted.
    async fn probe_new(&mut self, moves: &[Move]) -> (Vec<Move>, usize) {
        let mut by_port: BTreeMap<String, Vec<NewAddress>> = BTreeMap::new();
        for m in moves.iter().filter(|m| m.from.is_none()) {
            if let Some(inst) = self.config.instances.get(&m.instance)
                && let std::net::IpAddr::V4(a) = inst.address.addr()
            {
                by_port
                    .entry(m.to.clone())
                    .or_default()
                    .push((m.instance.clone(), a, inst.mac));
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
            own.extend(wanted.iter().filter_map(|w| w.2));
            let addrs: Vec<std::net::Ipv4Addr> = wanted.iter().map(|w| w.1).collect();
            let wait = self.config.timers.probe_time;
            let found = tokio::task::spawn_blocking(move || {
                announce::probe_v4_many(ifindex, &own, &addrs, wait)
            })
            .await;
            let found = match found {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    warn!(%port, error = %format!("{e:#}"), "probe failed; not taking new addresses there now");
                    wanted.iter().map(|w| (w.1, [0; 6])).collect()
                }
                Err(e) => {
                    warn!(%port, error = %e, "probe task failed");
                    continue;
                }
            };
            for (addr, by) in found {
                for (name, _, _) in wanted.iter().filter(|w| w.1 == addr) {
                    warn!(instance = %name, %port, by = %baton_config::model::mac_string(&by), "address in use on the wire");
                    self.in_use
                        .insert((name.clone(), port.clone()), Instant::now() + CONFLICT_HOLD);
                    conflicted.insert((name.clone(), port.clone()));
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
        let kind_name = match m.kind {
            MoveKind::Initial => "initial",
            MoveKind::Failover => "failover",
            MoveKind::Failback => "failback",
        };
        self.execute_named(m, kind_name).await
    }

    async fn execute_named(&mut self, m: &Move, kind: &str) -> bool {
        let began = Instant::now();
        debug!(instance = %m.instance, reaction_us = (began - self.last_link_event).as_micros() as u64, "move starts");
        match self.try_move(m).await {
            Ok(true) => {
                let took_us = began.elapsed().as_micros() as u64;
                let record = MoveRecord {
                    from: m.from.clone(),
                    to: m.to.clone(),
                    kind: kind.to_string(),
                    at_ms: self.at_ms(),
                    took_us,
                };
                info!(instance = %m.instance, from = ?m.from, to = %m.to, kind, took_us, "move done");
                self.emit(Event::Move {
                    at_ms: record.at_ms,
                    instance: m.instance.clone(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                    kind: kind.to_string(),
                    took_us,
                });
                self.placement.insert(m.instance.clone(), m.to.clone());
                self.last_move.insert(m.instance.clone(), record);
                self.metrics
                    .moves
                    .get_or_create(&metrics::MoveLabels {
                        kind: kind.to_string(),
                        result: "done".into(),
                    })
                    .inc();
                self.metrics.move_seconds.observe(took_us as f64 / 1e6);
                if let Some(inst) = self.config.instances.get(&m.instance) {
                    self.metrics
                        .set_owner(&m.instance, &inst.ports, Some(&m.to));
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                error!(instance = %m.instance, to = %m.to, error = %format!("{e:#}"), "move failed");
                self.metrics
                    .moves
                    .get_or_create(&metrics::MoveLabels {
                        kind: kind.to_string(),
                        result: "failed".into(),
                    })
                    .inc();
                self.emit(Event::MoveFailed {
                    at_ms: self.at_ms(),
                    instance: m.instance.clone(),
                    to: m.to.clone(),
                    error: format!("{e:#}"),
                });
                self.failed.insert(
                    (m.instance.clone(), m.to.clone()),
                    Instant::now() + RETRY_AFTER,
                );
                // Leave the address on exactly one port: re-read the kernel.
                if let Err(e) = self.reconcile().await {
                    error!(error = %format!("{e:#}"), "reconcile after a failed move");
                }
                false
            }
        }
    }

    async fn try_move(&mut self, m: &Move) -> Result<bool> {
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
        let to_mac = netdev::mac_of(&m.to)?;
        let from = m.from.as_ref().and_then(|f| self.ports.get(f));
        let spec = MoveSpec {
            name: &m.instance,
            instance: &inst,
            to_ifindex: to,
            to_macvlan: self.macvlan(&m.instance, &m.to),
            from_ifindex: from.and_then(|p| p.ifindex),
            from_macvlan: m.from.as_ref().and_then(|f| self.macvlan(&m.instance, f)),
            entry: Actuator::entry(
                self.id_of(&m.instance),
                &inst,
                to,
                to_mac,
                self.counted_ports(&inst),
            ),
        };
        self.actuator.move_instance(&spec).await?;
        self.spawn_announcements(to, spec.entry.mac, inst.address.addr());
        Ok(true)
    }

    /// The announcements after the first one, paced, without holding up other moves.
    fn spawn_announcements(&self, ifindex: u32, mac: [u8; 6], addr: std::net::IpAddr) {
        let t = &self.config.timers;
        if t.announce_count > 1 {
            let (count, interval) = (t.announce_count - 1, t.announce_interval);
            tokio::spawn(async move {
                tokio::time::sleep(interval).await;
                if let Err(e) = announce::announce(ifindex, mac, addr, count, interval).await {
                    warn!(error = %format!("{e:#}"), "announcement");
                }
            });
        }
    }

    async fn on_request(&mut self, req: Request) -> Response {
        match req {
            Request::Status => Response::Status(self.status()),
            Request::Move { instance, port } => match self.planned_move(&instance, &port).await {
                Ok(message) => Response::Done { message },
                Err(e) => Response::Error {
                    message: format!("{e:#}"),
                },
            },
            Request::Reload => match self.reload().await {
                Ok(message) => Response::Done { message },
                Err(e) => Response::Error {
                    message: format!("{e:#}"),
                },
            },
            Request::Events => Response::Error {
                message: "events are served by the socket task".into(),
            },
        }
    }

    /// `baton move`: make-before-break to an eligible port.
    async fn planned_move(&mut self, instance: &str, port: &str) -> Result<String> {
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
            kind: MoveKind::Failover,
        };
        if self.execute_named(&m, "planned").await {
            Ok(format!("{instance} moved to {port}"))
        } else {
            bail!("the move of {instance} to {port} failed; see `baton events` or the log")
        }
    }

    /// Loads the configuration file again: all or nothing.
    async fn reload(&mut self) -> Result<String> {
        let new = match baton_config::load(&self.opts.config) {
            Ok(c) => c,
            Err(d) => {
                let message = format!("{d}reload refused: nothing changed");
                self.emit(Event::Reload {
                    at_ms: self.at_ms(),
                    ok: false,
                    message: message.clone(),
                });
                bail!(message);
            }
        };
        if new.ports.keys().ne(self.config.ports.keys()) {
            let message =
                "reload refused: the set of ports changed; restart baton for that".to_string();
            self.emit(Event::Reload {
                at_ms: self.at_ms(),
                ok: false,
                message: message.clone(),
            });
            bail!(message);
        }
        // Instances that are gone or changed (address, VLAN, MAC) leave their port.
        let leaving: Vec<String> = self
            .config
            .instances
            .iter()
            .filter(|(name, old)| {
                !new.instances.get(*name).is_some_and(|n| {
                    n.address == old.address && n.vlan == old.vlan && n.mac == old.mac
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in leaving {
            self.remove_instance(&name).await?;
        }
        self.config = new;
        self.reconcile().await?;
        let message = format!(
            "reloaded {}: {} instances",
            self.opts.config.display(),
            self.config.instances.len()
        );
        self.emit(Event::Reload {
            at_ms: self.at_ms(),
            ok: true,
            message: message.clone(),
        });
        Ok(message)
    }

    /// Takes an instance off its port and out of the instance table.
    async fn remove_instance(&mut self, name: &str) -> Result<()> {
        let Some(inst) = self.config.instances.get(name).cloned() else {
            return Ok(());
        };
        let owner = self.placement.remove(name);
        for port in &inst.ports {
            match self.macvlan(name, port) {
                // The owner's macvlan and every standby go.
                Some(mv) => {
                    self.actuator.del_link(&mv).await?;
                }
                None if owner.as_ref() == Some(port) => {
                    if let Some(ifindex) = self.ports.get(port).and_then(|p| p.ifindex) {
                        self.actuator.del_address(ifindex, inst.address).await?;
                    }
                }
                None => {}
            }
        }
        self.actuator
            .table
            .remove(&key_for(inst.vlan, inst.address.addr()))
    }

    fn port_state_name(&self, name: &str) -> String {
        let Some(p) = self.ports.get(name) else {
            return "missing".into();
        };
        if p.ifindex.is_none() {
            return "missing".into();
        }
        let t = &self.config.timers;
        let elapsed = self.now().saturating_sub(p.state.since);
        match p.state.link {
            Link::Up if p.state.at_start || elapsed >= t.hold_up => "up",
            Link::Up => "settling",
            Link::Down if p.state.at_start || elapsed >= t.hold_down => "failed",
            Link::Down => "held-down",
        }
        .into()
    }

    fn status(&self) -> Status {
        let stats = dataplane::read_stats(&self.pins).unwrap_or_default();
        let counters = self.actuator.table.counters().unwrap_or_default();
        let mono_now = monotonic_ns();
        let ports = self
            .ports
            .iter()
            .map(|(name, p)| PortStatus {
                name: name.clone(),
                ifindex: p.ifindex,
                state: self.port_state_name(name),
                link: link_name(p),
                since_ms: p.changed.elapsed().as_millis() as u64,
                rx_frames: stats
                    .iter()
                    .find(|s| Some(s.ifindex) == p.ifindex)
                    .map_or(0, |s| s.stats.frames().packets),
            })
            .collect();
        let instances = self
            .config
            .instances
            .iter()
            .map(|(name, inst)| {
                let id = self.id_of(name);
                let traffic = counters
                    .iter()
                    .filter(|(k, _)| k.id == id)
                    .filter_map(|(k, c)| {
                        Some(PortTraffic {
                            port: self.port_name(k.ifindex)?.clone(),
                            rx_packets: c.rx_packets,
                            last_seen_ms: (c.last_seen_ns > 0)
                                .then(|| mono_now.saturating_sub(c.last_seen_ns) / 1_000_000),
                        })
                    })
                    .collect();
                InstanceStatus {
                    name: name.clone(),
                    address: inst.address.to_string(),
                    ports: inst.ports.clone(),
                    owner: self.placement.get(name).cloned(),
                    refused: self
                        .refused
                        .get(name)
                        .map(|r| {
                            r.iter()
                                .map(|(p, why)| (p.clone(), why.to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    last_move: self.last_move.get(name).cloned(),
                    traffic,
                }
            })
            .collect();
        Status {
            config: self.opts.config.display().to_string(),
            uptime_ms: self.at_ms(),
            ports,
            instances,
        }
    }
}

/// An instance's id in the dataplane (counters, macvlan names): a hash of its
/// name, so it survives reloads and restarts whatever else the config holds.
pub fn instance_id(name: &str) -> u32 {
    // FNV-1a, 32 bits; 0 is kept for "none".
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash.max(1)
}

fn link_name(p: &Port) -> String {
    match (p.ifindex.is_some(), p.admin_up, p.carrier) {
        (false, _, _) => "missing",
        (true, false, _) => "admin-down",
        (true, true, false) => "no-carrier",
        (true, true, true) => "up",
    }
    .into()
}

/// CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns() reads.
fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
