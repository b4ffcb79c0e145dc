//! The daemon's end of the cluster ([`crate::cluster`]): the engine's view
//! (the agent's word, and nothing held past the deadline whatever the
//! agent says), what this member can host, the instances it is releasing,
//! and what it tells the agent (releases, leaving at SIGTERM); [`handover`]
//! decides which held instances go to another member. On a single host
//! there is no link and this member may hold everything.
mod handover;

use super::health::HealthTable;
use super::ports::PortTable;
use super::report::Reporter;
use crate::cluster::records::Conn;
use crate::cluster::{ClusterEvent, ClusterLink, ClusterState, ToAgent};
use crate::decide::{ClusterView, FenceCause, Reason};
use crate::protocol::{ClusterStatus, Event, MemberStatus};
use anyhow::{Result, bail};
use baton_config::Config;
use baton_config::{InstanceName, MemberId};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::info;

/// What woke the loop on the cluster's side.
pub enum Wake {
    /// The agent's state or the deadline moved.
    Changed,
    Event(ClusterEvent),
}

pub struct Membership {
    /// The agent (None on a single host).
    link: Option<ClusterLink>,
    /// What the engine is told (None on a single host).
    view: Option<ClusterView>,
    state: ClusterState,
    deadline: Option<Instant>,
    /// The hostable set the agent was last told.
    hostable_sent: Option<BTreeSet<InstanceName>>,
    /// Instances being handed over: off this host, never re-adopted.
    releasing: BTreeSet<InstanceName>,
    /// Which held instances go to another member, and when.
    handovers: handover::Handovers,
}

/// What this member is releasing is not the engine's to place again, even
/// while the agent still says it holds the key: the engine reads the view,
/// and a stale "held" placed a handed-over instance again for 4 ms.
fn withhold_releasing(view: &mut ClusterView, releasing: &BTreeSet<InstanceName>) {
    for name in releasing {
        if view.held.remove(name) {
            view.withheld.insert(name.clone(), Reason::NotClaimed);
        }
    }
}

/// Each member's say in a handover: alive, leaving, what it can host.
fn hosting(members: &[MemberStatus]) -> Vec<(&MemberId, bool, bool, &[InstanceName])> {
    members
        .iter()
        .map(|m| (&m.id, m.alive, m.leaving, m.hostable.as_slice()))
        .collect()
}

impl Membership {
    /// In a cluster the daemon starts holding nothing.
    pub fn new(config: &Config, link: Option<ClusterLink>) -> Membership {
        let view = config.cluster.as_ref().map(|c| {
            crate::cluster::rules::view(
                &c.member_id,
                None,
                config.instances.keys().cloned(),
                &Default::default(),
                Some(FenceCause::NoQuorum),
                &Default::default(),
            )
        });
        Membership {
            link,
            view,
            state: ClusterState::default(),
            deadline: None,
            hostable_sent: None,
            releasing: BTreeSet::new(),
            handovers: handover::Handovers::default(),
        }
    }

    pub fn in_cluster(&self) -> bool {
        self.link.is_some()
    }

    /// What the engine is told of the cluster (None on a single host).
    pub fn view(&self) -> Option<&ClusterView> {
        self.view.as_ref()
    }

    /// Instances a live member released to this one: placed without a probe.
    pub fn released_to_us(&self) -> &BTreeSet<InstanceName> {
        &self.state.released_to_us
    }

    /// instance -> its owner, as the agent last said.
    pub fn owner_of(&self, instance: &InstanceName) -> Option<&MemberId> {
        self.state.owners.get(instance)
    }

    /// Waits for the agent (never returns without a cluster, or once the
    /// agent is gone: the deadline then passes and fences).
    pub async fn wake(&mut self) -> Wake {
        let Some(l) = &mut self.link else {
            return std::future::pending().await;
        };
        tokio::select! {
            Ok(()) = l.state.changed() => Wake::Changed,
            Ok(()) = l.deadline.changed() => Wake::Changed,
            Some(e) = l.events.recv() => Wake::Event(e),
            else => std::future::pending().await,
        }
    }

    /// The engine's view now; true when it changed.
    pub fn refresh(&mut self) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        let state = link.state.borrow().clone();
        let deadline = *link.deadline.borrow();
        let mut view = state.view.clone();
        if deadline.is_none_or(|d| Instant::now() >= d) {
            // Past the deadline nothing is held, whatever the agent last said.
            let cause = state.fenced.unwrap_or(FenceCause::NoQuorum);
            for name in std::mem::take(&mut view.held) {
                view.withheld.insert(name, Reason::Fenced { cause });
            }
        }
        // A release is over once the key is no longer ours.
        self.releasing.retain(|n| view.held.contains(n));
        withhold_releasing(&mut view, &self.releasing);
        self.deadline = deadline;
        // Who can host what changed: a kept instance may find a taker, a
        // failback its preferred member.
        let takers_changed = hosting(&self.state.members) != hosting(&state.members);
        self.state = state;
        let changed = self.view.as_ref() != Some(&view) || takers_changed;
        self.view = Some(view);
        changed
    }

    /// When the deadline passes (a wake-up for the loop).
    pub fn wake_at(&self) -> Option<Instant> {
        let held = self.view.as_ref().is_some_and(|v| !v.held.is_empty());
        let deadline = self.deadline.filter(|_| held);
        [deadline, self.handovers.wake_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether this member may hold `instance` (always, on a single host):
    /// the cluster says so and it is not being released.
    pub fn may_hold(&self, instance: &InstanceName) -> bool {
        !self.releasing.contains(instance)
            && self.view.as_ref().is_none_or(|v| v.held.contains(instance))
    }

    /// A cluster event reported; a claim of ours returns the connections
    /// its last owner published (to tickle once it is placed).
    pub fn on_event(
        &mut self,
        e: ClusterEvent,
        report: &Reporter,
    ) -> Option<(InstanceName, Vec<Conn>)> {
        let at_ms = report.at_ms();
        let mut claimed = None;
        let event = match e {
            ClusterEvent::Claimed {
                instance,
                from,
                conns,
            } => {
                // A claim of ours is a new holding: whatever release of the
                // instance was under way is over (a release and a claim back
                // within one view left it withheld for good).
                self.releasing.remove(&instance);
                claimed = Some((instance.clone(), conns));
                Event::Claimed {
                    at_ms,
                    instance,
                    from,
                }
            }
            ClusterEvent::Released { instance, to } => Event::Released {
                at_ms,
                instance,
                to,
            },
            ClusterEvent::Lost { instance } => Event::OwnerLost { at_ms, instance },
            ClusterEvent::Revoked { member, silent_ms } => Event::MemberRevoked {
                at_ms,
                member,
                silent_ms,
            },
            ClusterEvent::Fenced { cause } => Event::Fenced { at_ms, cause },
            ClusterEvent::Unfenced => Event::Unfenced { at_ms },
        };
        report.report(event);
        claimed
    }

    /// Tells the agent which instances this member could place now (one of
    /// their ports has its link up, every check they need passes), when
    /// that changed.
    pub fn send_hostable(
        &mut self,
        config: &Config,
        ports: &PortTable,
        health: &HealthTable,
        now: Duration,
    ) {
        let Some(link) = &self.link else { return };
        let hostable: BTreeSet<InstanceName> = config
            .instances
            .iter()
            .filter(|(_, i)| {
                i.ports.iter().any(|p| ports.link_up(p)) && health.all_pass_for(config, i, now)
            })
            .map(|(n, _)| n.clone())
            .collect();
        if self.hostable_sent.as_ref() != Some(&hostable) {
            let _ = link.to_agent.send(ToAgent::Local {
                hostable: hostable.clone(),
            });
            self.hostable_sent = Some(hostable);
        }
    }

    /// `baton move INSTANCE --member ID`, checked: a cluster, a member of the
    /// instance's list, an instance this member holds.
    pub fn check_handover(
        &self,
        config: &Config,
        instance: &InstanceName,
        member: &MemberId,
    ) -> Result<()> {
        if self.link.is_none() {
            bail!("no [cluster] here: a handover needs one");
        }
        let Some(inst) = config.instances.get(instance) else {
            bail!("no instance {instance}");
        };
        if !inst.members.iter().any(|m| m == member) {
            bail!(
                "{member} is not one of {instance}'s members ({})",
                inst.members.join(", ")
            );
        }
        if !self.may_hold(instance) {
            bail!("{instance} is not held by this member");
        }
        Ok(())
    }

    /// The held instances to hand to another member now, each with the
    /// member and why: no port here serves it, or (failback = "auto") a
    /// member before this one in its list has been able to host it for
    /// failback_delay.
    pub fn handovers_due(
        &mut self,
        config: &Config,
        ports: &PortTable,
        health: &HealthTable,
        now: Duration,
    ) -> Vec<(InstanceName, MemberId, handover::Why)> {
        let (Some(cluster), Some(view)) = (&config.cluster, &self.view) else {
            return Vec::new();
        };
        let on = handover::Site {
            me: &cluster.member_id,
            held: &view.held,
            members: &self.state.members,
        };
        let mut due: Vec<_> = self
            .handovers
            .unservable(&on, config, ports, health, now)
            .into_iter()
            .map(|(i, m)| (i, m, handover::Why::NoPortHere))
            .collect();
        let failbacks = self.handovers.failbacks(&on, config, Instant::now());
        for (i, m) in failbacks {
            if !due.iter().any(|(d, _, _)| *d == i) {
                due.push((i, m, handover::Why::Failback));
            }
        }
        due
    }

    /// Why this member keeps `instance` although no port here serves it.
    pub fn kept_because(&self, instance: &InstanceName) -> Option<Reason> {
        self.handovers
            .no_taker
            .contains(instance)
            .then_some(Reason::NoMemberCanHost)
    }

    /// A handover failed with the instance already off this host: it may be
    /// placed here again, and is handed over again after a pause.
    pub fn abandon_release(&mut self, instance: &InstanceName) {
        self.releasing.remove(instance);
        self.handovers.pause(instance);
    }

    /// Off this host for good (no re-adoption) before their keys go.
    pub fn begin_release(&mut self, instances: impl IntoIterator<Item = InstanceName>) {
        self.releasing.extend(instances);
        if let Some(v) = self.view.as_mut() {
            withhold_releasing(v, &self.releasing);
        }
    }

    /// Lets the agent release `instance` (already off this host) to `member`.
    pub async fn release(
        &self,
        instance: &InstanceName,
        member: &MemberId,
        began: Instant,
    ) -> Result<String> {
        let Some(link) = &self.link else {
            bail!("no [cluster] here: a handover needs one");
        };
        let (done, answer) = oneshot::channel();
        let _ = link.to_agent.send(ToAgent::Release {
            instance: instance.clone(),
            to: Some(member.clone()),
            done,
        });
        match tokio::time::timeout(Duration::from_secs(3), answer).await {
            Ok(Ok(Ok(()))) => Ok(format!(
                "{instance} released to {member} after {} µs here",
                began.elapsed().as_micros()
            )),
            Ok(Ok(Err(e))) => Err(e.context("the release failed; the instance is off this host")),
            _ => bail!("the cluster agent did not answer; the instance is off this host"),
        }
    }

    /// SIGTERM: the agent releases everything and revokes the lease
    /// (bounded: 3 s); the instances are already off this host.
    pub async fn leave(&self, released: usize) {
        let Some(link) = &self.link else { return };
        let (done, answer) = oneshot::channel();
        let _ = link.to_agent.send(ToAgent::Leave { done });
        let left = tokio::time::timeout(Duration::from_secs(3), answer).await;
        info!(released, clean = left.is_ok(), "left the cluster");
    }

    /// The agent's end of connections (for the connection publisher).
    pub fn to_agent(&self) -> Option<tokio::sync::mpsc::UnboundedSender<ToAgent>> {
        self.link.as_ref().map(|l| l.to_agent.clone())
    }

    /// How long the deadline has to run (zero: passed, or none yet).
    fn deadline_left(&self) -> Duration {
        self.deadline.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }

    /// Why this member is fenced now (None: not, or a single host): the
    /// agent's cause, or no quorum once the deadline has passed.
    pub fn fenced(&self) -> Option<FenceCause> {
        self.link.as_ref()?;
        self.state.fenced.or_else(|| {
            self.deadline_left()
                .is_zero()
                .then_some(FenceCause::NoQuorum)
        })
    }

    pub fn status(&self, config: &Config) -> Option<ClusterStatus> {
        let c = config.cluster.as_ref()?;
        let st = &self.state;
        Some(ClusterStatus {
            member: c.member_id.clone(),
            lease: st.lease,
            fenced: self.fenced(),
            deadline_left_ms: self.deadline_left().as_millis() as u64,
            members: st.members.clone(),
            owners: st.owners.clone(),
        })
    }
}
