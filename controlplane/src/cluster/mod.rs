//! Gateways that share instances through etcd. A single
//! host never starts any of this.
//!
//! Each instance has one owner key, created only if absent under the
//! owner's lease ([`records`]). Only its holder may place the instance
//! ([`rules::view`] feeds the engine). The holder keeps a deadline: the send
//! time of its last answered keepalive plus D (`owner_deadline`), or plus
//! TTL - margin without the fast path; past it the daemon drops the
//! addresses and the dataplane (`BATON_FENCE`) is silent on its own, even
//! if the daemon is dead. A member silent for `dead_after` has its lease
//! revoked by any other; takers wait D and a guard after seeing an owner
//! key vanish with its member, so any keepalive the old owner got answered
//! had been sent before: its dataplane is silent by then. A release (a
//! planned handover, SIGTERM) is taken at once.
//!
//! The agent runs on a thread of its own ([`spawn`]); the daemon sees its
//! [`ClusterState`], its deadline and its [`ClusterEvent`]s.
mod agent;
pub mod backend;
pub mod etcd;
pub mod records;
pub mod rules;
mod silence;
mod streams;

use crate::dataplane::PinDir;
use crate::decide::{ClusterView, FenceCause};
use anyhow::{Context as _, Result};
use baton_config::{Config, InstanceName, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// What the agent tells the daemon (besides its deadline).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    /// For the engine: what this member holds, why not the others.
    pub view: ClusterView,
    pub fenced: Option<FenceCause>,
    /// Instances a member released to this one: placed without a probe
    /// (the releaser has taken the address off before it let go).
    pub released_to_us: BTreeSet<InstanceName>,
    /// instance -> its owner.
    pub owners: BTreeMap<InstanceName, MemberId>,
    pub members: Vec<crate::protocol::MemberStatus>,
    pub lease: Option<i64>,
}

/// What happened in the cluster, for `baton events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    Claimed {
        instance: InstanceName,
        from: Option<MemberId>,
        /// The client connections its last owner published (for tickles).
        conns: Vec<records::Conn>,
    },
    Released {
        instance: InstanceName,
        to: Option<MemberId>,
    },
    Lost {
        instance: InstanceName,
    },
    Revoked {
        member: MemberId,
        silent_ms: u64,
    },
    Fenced {
        cause: FenceCause,
    },
    Unfenced,
}

pub enum ToAgent {
    /// What this member can host now (a usable port) and holds placed.
    Local { hostable: BTreeSet<InstanceName> },
    /// Let `instance` go (its address is already off here), to `to` if named.
    Release {
        instance: InstanceName,
        to: Option<MemberId>,
        done: oneshot::Sender<Result<()>>,
    },
    /// The client connections on an instance's address here now (published
    /// while this member holds it).
    Connections {
        instance: InstanceName,
        conns: Vec<records::Conn>,
    },
    /// Shutting down: release everything, revoke the lease.
    Leave { done: oneshot::Sender<()> },
}

/// The daemon's end of the agent.
pub struct ClusterLink {
    pub state: watch::Receiver<ClusterState>,
    /// The owner's deadline (None: no keepalive answered yet).
    pub deadline: watch::Receiver<Option<Instant>>,
    pub to_agent: mpsc::UnboundedSender<ToAgent>,
    pub events: mpsc::UnboundedReceiver<ClusterEvent>,
}

/// Starts the agent on its own thread (its keepalives never wait for a move).
pub fn spawn(config: &Config, pins: &PinDir) -> Result<ClusterLink> {
    let cluster = config
        .cluster
        .clone()
        .context("no [cluster] in the configuration")?;
    let fence = crate::dataplane::fence::FenceClock::open(pins)?;
    let (state_tx, state) = watch::channel(ClusterState::default());
    let (deadline_tx, deadline) = watch::channel(None);
    let (to_agent, from_daemon) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let instances = config.instances.clone();
    std::thread::Builder::new()
        .name("baton-cluster".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cluster runtime");
                    return;
                }
            };
            // Local tasks: the backend's futures need not be Send.
            let local = tokio::task::LocalSet::new();
            local.block_on(
                &rt,
                agent::run(
                    agent::Setup {
                        cluster,
                        instances,
                        state: state_tx,
                        deadline: deadline_tx,
                        from_daemon,
                        events: events_tx,
                    },
                    fence,
                ),
            );
        })
        .context("starting the cluster thread")?;
    Ok(ClusterLink {
        state,
        deadline,
        to_agent,
        events,
    })
}
