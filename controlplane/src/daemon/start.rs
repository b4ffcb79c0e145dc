//! What the daemon sets up once, before its loop: the programs on the
//! ports, the warnings of the ingress hook, the socket iterator, the
//! cluster agent, the sockets' thread; then the first reconcile.
use super::health::HealthTable;
use super::membership::Membership;
use super::netlink;
use super::placement::actuator::Actuator;
use super::placement::defence::Defence;
use super::placement::state::PlacementState;
use super::ports::PortTable;
use super::report::sd_notify::Notifier;
use super::report::{self, Reporter};
use super::wire::announce;
use super::wire::{Aftercare, AftercareResults};
use super::{Daemon, Inbox, Timers, lock, process};
use crate::dataplane::InstanceTable;
use crate::dataplane::sockets::TcpSockets;
use crate::dataplane::{self, AttachMode, PinDir};
use anyhow::Result;
use anyhow::bail;
use baton_config::Config;
use baton_config::PortName;
use baton_config::model::IngressHook;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{info, warn};

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
        let mut daemon = daemon(opts, lock).await?;
        // After the first reconcile: systemd's READY.
        let summary = daemon.summary();
        daemon.notify.ready(&summary);
        daemon.main_loop().await
    })
}

/// The daemon set up and reconciled once: ready for its loop.
pub async fn daemon(opts: Options, lock: lock::PinDirLock) -> Result<Daemon> {
    let config = baton_config::load(&opts.config)
        .map_err(|d| anyhow::anyhow!("{d}invalid configuration; nothing was applied"))?;
    process::set_realtime(config.daemon.realtime_priority)?;
    process::lock_memory(config.daemon.lock_memory)?;
    // Raw sockets are how baton announces and probes: without them (no
    // CAP_NET_RAW) it could move nothing safely, so it stops here.
    let (sighting_tx, sightings) = mpsc::channel(256);
    announce::watch(sighting_tx).map_err(|e| {
        e.context("opening raw sockets for announcements and probes; nothing was applied")
    })?;
    let started = Instant::now();
    let pins = PinDir::new(&opts.pin_dir);
    // Subscribe before anything else so no change is missed.
    let (links_now, monitor) = netlink::monitor::start().await?;
    let ports = PortTable::from_dump(&config, &links_now);
    let health = HealthTable::from_dump(&config, &links_now);
    let probes = super::health::probe::start(&config);
    if ports.ifindexes().next().is_none() {
        bail!(
            "none of the configured ports exists here ({})",
            config.ports.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    warn_hook_limits(&config);
    attach(&pins, &config, &ports.present())?;
    let mut actuator = Actuator::new(
        InstanceTable::open(&pins)?,
        crate::dataplane::macvlan::MacvlanTc::load(&pins)?,
    )?;
    let (after, after_results, membership) = aftercare_and_cluster(&config, &pins)?;
    let (call_tx, calls) = mpsc::channel(16);
    let report = Reporter::new(started, report::metrics::Metrics::new(pins.clone()));
    report::io_thread::spawn(
        report::control::listen(&opts.socket)?,
        call_tx,
        report.events(),
        config.metrics.listen,
        report.metrics.clone(),
    )?;
    for ifindex in ports.ifindexes() {
        actuator.prepare_port(ifindex);
    }
    let mut placement = PlacementState::default();
    placement.dirty.all = true;
    let mut d = Daemon {
        timers: Timers {
            next_check: None,
            next_resync: Instant::now() + config.daemon.resync_interval,
            next_watchdog: None,
        },
        opts,
        config,
        pins,
        ports,
        health,
        placement,
        actuator,
        membership,
        defence: Defence::default(),
        after,
        report,
        notify: Notifier::from_env(),
        inbox: Inbox {
            monitor,
            calls,
            sightings,
            probes,
            after: after_results,
        },
        refresh_links: false,
        _lock: lock,
    };
    d.reconcile().await;
    info!(
        instances = d.config.instances.len(),
        placed = d.placement.placement.len(),
        "baton running"
    );
    Ok(d)
}

/// Attaches the programs to ports, one port at a time so that one that
/// refuses does not keep the others bare. A pin of another hook (after
/// `[daemon] ingress` changed) or of a device that is gone is replaced.
pub fn attach(pins: &PinDir, config: &Config, ports: &[PortName]) -> Result<()> {
    let programs = match config.daemon.ingress {
        IngressHook::Xdp => dataplane::ProgramSet::Baton,
        IngressHook::Tcx => dataplane::ProgramSet::TcIngress,
    };
    let mut first_error = None;
    let mut attached = 0;
    for port in ports {
        match dataplane::attach_set(pins, &[port.to_string()], AttachMode::Auto, programs) {
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
pub fn warn_hook_limits(config: &Config) {
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

/// Who needs the socket iterator.
pub struct SocketUsers {
    /// An instance reverts the backoff after a move.
    pub reverts: bool,
    /// A cluster member publishes its connections for a taker's tickles.
    pub tickles: bool,
}

impl SocketUsers {
    pub fn of(config: &Config) -> SocketUsers {
        SocketUsers {
            reverts: config
                .instances
                .values()
                .any(|i| i.reverts_backoff(&config.timers)),
            tickles: config.cluster.as_ref().is_some_and(|c| c.tickle),
        }
    }
}

/// The socket iterator when someone needs it (None if it did not load:
/// said once, and the daemon runs without reverts and tickles).
pub fn socket_iterator(pins: &PinDir, users: &SocketUsers) -> Option<Arc<Mutex<TcpSockets>>> {
    if !users.reverts && !users.tickles {
        return None;
    }
    match TcpSockets::load(pins) {
        Ok(s) => Some(Arc::new(Mutex::new(s))),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "no backoff revert and no tickles: the socket iterator did not load");
            None
        }
    }
}

/// What TCP peers are told after a move (the backoff revert needs the
/// socket iterator), and the cluster agent with the connections a member
/// publishes for a taker's tickles.
pub fn aftercare_and_cluster(
    config: &Config,
    pins: &PinDir,
) -> Result<(Aftercare, AftercareResults, Membership)> {
    let users = SocketUsers::of(config);
    let sockets = socket_iterator(pins, &users);
    let reviver = sockets
        .clone()
        .filter(|_| users.reverts)
        .map(super::wire::revive::Reviver::new);
    let (after, results) = Aftercare::new(reviver);
    let link = match &config.cluster {
        Some(_) => Some(crate::cluster::spawn(config, pins)?),
        None => None,
    };
    let membership = Membership::new(config, link);
    if let (Some(to_agent), Some(sockets)) =
        (membership.to_agent(), sockets.filter(|_| users.tickles))
    {
        let addrs = config
            .instances
            .iter()
            .map(|(n, i)| (n.clone(), i.address.addr()))
            .collect();
        super::wire::connections::spawn(sockets, addrs, to_agent);
    }
    Ok((after, results, membership))
}
