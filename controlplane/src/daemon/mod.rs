//! `baton run`: the daemon. The folder reads in the order data flows:
//! [`monitor`] (kernel events) -> [`ports`] (port states) -> decide (pure,
//! `crate::decide`) -> [`moves`] (plans carried out by the
//! [`actuator`], [`announce`]) and [`reconcile`] (desired vs [`observed`],
//! repaired) -> report ([`status`], [`control`], [`metrics`]).
//!
//! Level-triggered: the daemon keeps the desired state (the placement) and
//! compares it with the kernel's whenever an event says something of an
//! instance changed, after a lost event, and every `resync_interval`; any
//! difference is repaired, whoever caused it. This module is only the loop.
pub mod actuator;
pub mod announce;
mod conflict;
mod connections;
mod control;
mod frames;
mod io_thread;
mod lock;
mod membership;
mod metrics;
mod monitor;
mod moves;
mod notification;
mod notify;
mod observed;
mod ports;
mod process;
mod raw;
mod reconcile;
mod reload;
mod revive;
mod rtnl_batch;
mod sockopt;
mod status;
mod tickle;

use crate::dataplane::{self, AttachMode, InstanceTable, PinDir};
use crate::decide::Reason;
use crate::protocol::{Event, MoveRecord, RepairRecord, Request, Response};
use actuator::Actuator;
use anyhow::{Result, bail};
use baton_config::Config;
use monitor::Observation;
use ports::Port;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

pub use baton_config::instance_id;

pub struct Options {
    pub config: PathBuf,
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
}

pub fn run(opts: Options) -> Result<()> {
    // Before anything is touched: one daemon per pin dir.
    let lock = lock::lock(&opts.pin_dir)?;
    // One thread for the loop: moves are sequential by design (the plan is
    // one transaction). The sockets live on a thread of their own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut daemon = Daemon::start(opts, lock).await?;
        // After the first reconcile: systemd's READY.
        daemon.notify.send(&format!(
            "READY=1\nSTATUS=placed {} of {} instances",
            daemon.placement.len(),
            daemon.config.instances.len()
        ));
        daemon.main_loop().await
    })
}

/// Which instances the next reconcile looks at.
#[derive(Default)]
struct Dirty {
    all: bool,
    instances: BTreeSet<String>,
}

/// A takeover's tickles: what they did, or (instance, error).
type TickleResult = Result<tickle::Tickled, (String, String)>;

/// Events a `baton events` follower may fall behind before it is told it
/// missed some (bounded memory: a few hundred bytes each).
const EVENT_BUFFER: usize = 4096;

/// A reconcile error on one instance, retried with backoff.
struct Trouble {
    error: String,
    attempts: u32,
    retry_at: Instant,
}

struct Daemon {
    opts: Options,
    config: Config,
    pins: PinDir,
    start: Instant,
    ports: BTreeMap<String, Port>,
    /// The desired state: instance -> the port it lives on.
    placement: BTreeMap<String, String>,
    /// (instance, port) -> until when an RFC 5227 conflict keeps it off.
    in_use: BTreeMap<(String, String), Instant>,
    /// (instance, port) -> until when a failed move is not retried.
    failed: BTreeMap<(String, String), Instant>,
    /// (instance, port) -> failed moves in a row (the pause doubles with each).
    move_failures: BTreeMap<(String, String), u32>,
    refused: BTreeMap<String, Vec<(String, Reason)>>,
    /// Port conditions last reported, so timer-driven changes (held-down ->
    /// failed, settling -> up) become events too.
    port_states: BTreeMap<String, crate::protocol::PortCondition>,
    last_move: BTreeMap<String, MoveRecord>,
    last_repair: BTreeMap<String, RepairRecord>,
    trouble: BTreeMap<String, Trouble>,
    dirty: Dirty,
    /// A link dump is due (events were lost): ports are set from it.
    refresh_links: bool,
    /// When the engine's timers (hold, failback) next need a decision.
    next_check: Option<Instant>,
    next_resync: Instant,
    /// Other hosts' ARP/ND claims, from the address watch.
    claims: mpsc::Receiver<announce::Seen>,
    /// The last conflict of each placed instance (RFC 5227 2.4).
    conflicts: BTreeMap<String, conflict::Conflict>,
    /// Ends the sockets' retransmission backoff after a move (None when no
    /// instance asks for it, or the socket iterator could not load).
    reviver: Option<revive::Reviver>,
    revived_tx: mpsc::UnboundedSender<revive::Revival>,
    revived: mpsc::UnboundedReceiver<revive::Revival>,
    /// instance -> the connections to tickle once a takeover placed it.
    tickles_due: BTreeMap<String, Vec<crate::cluster::records::Conn>>,
    tickled_tx: mpsc::UnboundedSender<TickleResult>,
    tickled: mpsc::UnboundedReceiver<TickleResult>,
    /// The background announcements of each instance's last move.
    announcing: BTreeMap<String, tokio::task::AbortHandle>,
    events: broadcast::Sender<Event>,
    actuator: Actuator,
    monitor: mpsc::UnboundedReceiver<Observation>,
    calls: mpsc::Receiver<control::Call>,
    metrics: std::sync::Arc<metrics::Metrics>,
    /// When the last link change arrived: a move's reaction time is logged.
    last_link_event: Instant,
    notify: notify::Notifier,
    /// When the main loop next feeds systemd's watchdog.
    next_watchdog: Option<Instant>,
    /// The cluster agent (None on a single host).
    cluster: Option<crate::cluster::ClusterLink>,
    /// What the engine is told of the cluster (None on a single host).
    cluster_view: Option<crate::decide::ClusterView>,
    cluster_state: crate::cluster::ClusterState,
    cluster_deadline: Option<Instant>,
    /// The hostable set the agent was last told.
    hostable_sent: Option<BTreeSet<String>>,
    /// Instances being handed over: off this host, never re-adopted.
    releasing: BTreeSet<String>,
    _lock: lock::PinDirLock,
}

/// Attaches the programs to ports, one port at a time so that one that
/// refuses does not keep the others bare. A pin of another hook (after
/// `[daemon] ingress` changed) or of a device that is gone is replaced.
fn attach(pins: &PinDir, config: &Config, ports: &[String]) -> Result<()> {
    let programs = match config.daemon.ingress {
        baton_config::model::IngressHook::Xdp => dataplane::ProgramSet::Baton,
        baton_config::model::IngressHook::Tcx => dataplane::ProgramSet::TcIngress,
    };
    let mut first_error = None;
    let mut attached = 0;
    for port in ports {
        match dataplane::attach_set(pins, std::slice::from_ref(port), AttachMode::Auto, programs) {
            Ok(done) => {
                attached += 1;
                for a in done.iter().filter(|a| !a.already()) {
                    info!(port = %a.port, mode = %a.mode, "dataplane attached");
                }
            }
            Err(e) => {
                warn!(%port, error = %format!("{e:#}"), "could not attach the dataplane");
                first_error.get_or_insert(e);
            }
        }
    }
    // Some ports without programs: a warning each. None at all: baton
    // would run blind (no ARP ownership, no steering), so it says so and stops.
    match first_error {
        Some(e) if attached == 0 => {
            Err(e.context("the dataplane could not be attached to any port"))
        }
        _ => Ok(()),
    }
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
    async fn start(opts: Options, lock: lock::PinDirLock) -> Result<Daemon> {
        let config = baton_config::load(&opts.config)
            .map_err(|d| anyhow::anyhow!("{d}invalid configuration; nothing was applied"))?;
        process::set_realtime(config.daemon.realtime_priority)?;
        process::lock_memory(config.daemon.lock_memory)?;
        // Raw sockets are how baton announces and probes: without them (no
        // CAP_NET_RAW) it could move nothing safely, so it stops here.
        let (claim_tx, claims) = mpsc::channel(256);
        announce::watch(claim_tx).map_err(|e| {
            e.context("opening raw sockets for announcements and probes; nothing was applied")
        })?;
        let start = Instant::now();
        let pins = PinDir::new(&opts.pin_dir);
        // Subscribe before anything else so no change is missed.
        let (links_now, monitor) = monitor::start().await?;
        let ports = ports::from_dump(&config, &links_now);
        if ports.values().all(|p| p.ifindex.is_none()) {
            bail!(
                "none of the configured ports exists here ({})",
                config.ports.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        warn_hook_limits(&config);
        let present: Vec<String> = ports
            .iter()
            .filter(|(_, p)| p.ifindex.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        attach(&pins, &config, &present)?;
        let actuator = Actuator::new(
            InstanceTable::open(&pins)?,
            crate::dataplane::macvlan::MacvlanTc::load(&pins)?,
        )?;
        // The socket iterator: the backoff revert's, and a cluster member's
        // connections for a taker's tickles.
        let reverts = config
            .instances
            .values()
            .any(|i| i.reverts_backoff(&config.timers));
        let tickles = config.cluster.as_ref().is_some_and(|c| c.tickle);
        let sockets = if reverts || tickles {
            match crate::dataplane::sockets::TcpSockets::load(&pins) {
                Ok(s) => Some(std::sync::Arc::new(std::sync::Mutex::new(s))),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "no backoff revert and no tickles: the socket iterator did not load");
                    None
                }
            }
        } else {
            None
        };
        let reviver = sockets
            .clone()
            .filter(|_| reverts)
            .map(revive::Reviver::new);
        let (revived_tx, revived) = mpsc::unbounded_channel();
        let (tickled_tx, tickled) = mpsc::unbounded_channel();
        let cluster = match &config.cluster {
            Some(_) => Some(crate::cluster::spawn(&config, &pins)?),
            None => None,
        };
        if let (Some(link), Some(sockets)) = (&cluster, sockets.filter(|_| tickles)) {
            let addrs = config
                .instances
                .iter()
                .map(|(n, i)| (n.clone(), i.address.addr()))
                .collect();
            connections::spawn(sockets, addrs, link.to_agent.clone());
        }
        // A failover of 1,000 instances brings ~1,000 events: with 1,024
        // the scale bench's follower missed ~100 of them.
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (call_tx, calls) = mpsc::channel(16);
        let metrics = metrics::Metrics::new(pins.clone());
        io_thread::spawn(
            control::listen(&opts.socket)?,
            call_tx,
            events.clone(),
            config.metrics.listen,
            metrics.clone(),
        )?;
        let cluster_view = Daemon::initial_view(&config);
        let mut d = Daemon {
            opts,
            next_resync: Instant::now() + config.daemon.resync_interval,
            config,
            pins,
            start,
            ports,
            placement: BTreeMap::new(),
            in_use: BTreeMap::new(),
            failed: BTreeMap::new(),
            move_failures: BTreeMap::new(),
            refused: BTreeMap::new(),
            port_states: BTreeMap::new(),
            last_move: BTreeMap::new(),
            last_repair: BTreeMap::new(),
            trouble: BTreeMap::new(),
            dirty: Dirty {
                all: true,
                instances: BTreeSet::new(),
            },
            refresh_links: false,
            reviver,
            revived_tx,
            revived,
            tickles_due: BTreeMap::new(),
            tickled_tx,
            tickled,
            claims,
            conflicts: BTreeMap::new(),
            next_check: None,
            announcing: BTreeMap::new(),
            events,
            actuator,
            monitor,
            calls,
            metrics,
            last_link_event: start,
            next_watchdog: None,
            notify: notify::Notifier::from_env(),
            cluster_view,
            cluster,
            cluster_state: Default::default(),
            cluster_deadline: None,
            hostable_sent: None,
            releasing: BTreeSet::new(),
            _lock: lock,
        };
        for ifindex in d.ports.values().filter_map(|p| p.ifindex) {
            d.actuator.prepare_port(ifindex);
        }
        d.reconcile().await;
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

    /// [`attach`] with this daemon's pins and config (a port that appeared).
    fn attach(&self, ports: &[String]) {
        // Its error is logged per port; the daemon goes on with the others.
        let _ = attach(&self.pins, &self.config, ports);
    }

    async fn main_loop(&mut self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        loop {
            self.feed_watchdog();
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
            if self.reconcile_due() && self.reconcile().await {
                continue;
            }
            // Wait for something that matters: an event of a port or an
            // instance, a request, a timer.
            loop {
                let wake = self.next_wake();
                tokio::select! {
                    o = self.monitor.recv() => {
                        let mut relevant = match o {
                            Some(o) => self.observe(o),
                            None => self.restart_monitor().await,
                        };
                        // A burst is handled as one: drain before acting.
                        while let Ok(o) = self.monitor.try_recv() {
                            relevant |= self.observe(o);
                        }
                        if relevant {
                            break;
                        }
                    }
                    Some(r) = self.revived.recv() => {
                        self.on_revival(r);
                    }
                    Some(t) = self.tickled.recv() => {
                        self.on_tickled(t);
                    }
                    Some(seen) = self.claims.recv() => {
                        let mut relevant = self.on_claim(seen);
                        while let Ok(seen) = self.claims.try_recv() {
                            relevant |= self.on_claim(seen);
                        }
                        if relevant {
                            break;
                        }
                    }
                    w = membership::wake(&mut self.cluster) => {
                        let relevant = match w {
                            membership::Wake::Changed => self.refresh_cluster(),
                            membership::Wake::Event(e) => {
                                self.on_cluster_event(e);
                                self.refresh_cluster()
                            }
                        };
                        if relevant {
                            break;
                        }
                    }
                    Some((req, reply)) = self.calls.recv() => {
                        let response = self.on_request(req).await;
                        let _ = reply.send(response);
                        break;
                    }
                    _ = tokio::time::sleep_until(wake.into()) => {
                        self.feed_watchdog();
                        self.refresh_cluster();
                        if Instant::now() >= self.next_resync {
                            self.next_resync = Instant::now() + self.config.daemon.resync_interval;
                            self.dirty.all = true;
                        }
                        break;
                    }
                    _ = hup.recv() => {
                        let r = self.reload().await;
                        info!(ok = r.is_ok(), "SIGHUP reload");
                        break;
                    }
                    _ = term.recv() => {
                        if self.cluster.is_some() {
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

    /// The earliest timer: a port's hold timer, a conflict or failed move
    /// expiring, a retry, the periodic resync.
    fn next_wake(&self) -> Instant {
        [
            self.next_check,
            Some(self.next_resync),
            self.next_watchdog,
            self.cluster_wake_at(),
        ]
        .into_iter()
        .flatten()
        .chain(self.in_use.values().copied())
        .chain(self.failed.values().copied())
        .chain(self.trouble.values().map(|t| t.retry_at))
        .min()
        .unwrap_or(self.next_resync)
    }

    /// WATCHDOG=1 when due: only this loop feeds it, so a loop that hangs
    /// (however its threads are doing) gets restarted by systemd.
    fn feed_watchdog(&mut self) {
        let Some(every) = self.notify.watchdog_every() else {
            return;
        };
        let now = Instant::now();
        if self.next_watchdog.is_none_or(|t| t <= now) {
            self.notify.send("WATCHDOG=1");
            self.next_watchdog = Some(now + every);
        }
    }

    /// Takes in one observation; true when it concerns a port or an instance.
    fn observe(&mut self, o: Observation) -> bool {
        match o {
            Observation::Link(ev) => {
                if let Some(id) = actuator::macvlan_owner_id(&ev.name) {
                    match self.instance_by_id(id) {
                        Some(name) => self.dirty.instances.insert(name),
                        None => {
                            self.dirty.all = true;
                            true
                        }
                    }
                } else {
                    self.on_link(ev)
                }
            }
            Observation::Address(addr) => self.mark_instances(|i| i.address.addr() == addr),
            Observation::Route(dst) => {
                self.mark_instances(|i| i.routes.iter().any(|r| r.to.addr() == dst))
            }
            Observation::Lost => {
                self.lost_events("netlink overrun: the kernel dropped notifications");
                true
            }
        }
    }

    fn mark_instances(&mut self, f: impl Fn(&baton_config::model::Instance) -> bool) -> bool {
        let hit: Vec<String> = self
            .config
            .instances
            .iter()
            .filter(|(_, i)| f(i))
            .map(|(n, _)| n.clone())
            .collect();
        let any = !hit.is_empty();
        self.dirty.instances.extend(hit);
        any
    }

    fn instance_by_id(&self, id: u32) -> Option<String> {
        self.config
            .instances
            .keys()
            .find(|n| instance_id(n) == id)
            .cloned()
    }

    /// Anything may have changed: read the links again and reconcile all.
    fn lost_events(&mut self, reason: &str) {
        warn!(reason, "events may be lost: full resync");
        self.metrics.resyncs.inc();
        self.emit(Event::Resync {
            at_ms: self.at_ms(),
            reason: reason.to_string(),
        });
        self.dirty.all = true;
        self.refresh_links = true;
    }

    /// The monitor ended: a new one (with a fresh dump), never silence.
    async fn restart_monitor(&mut self) -> bool {
        let mut delay = Duration::from_millis(10);
        loop {
            match monitor::start().await {
                Ok((links, rx)) => {
                    self.monitor = rx;
                    self.lost_events("the rtnetlink monitor ended; started a new one");
                    self.apply_link_dump(&links);
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

    async fn on_request(&mut self, req: Request) -> Response {
        let result = match req {
            Request::Status => return Response::Status(self.status()),
            Request::Move { instance, port } => self.planned_move(&instance, &port).await,
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
}
