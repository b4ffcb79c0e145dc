//! The daemon's end of the cluster ([`crate::cluster`]): the engine's view
//! (the agent's word, and nothing held past the deadline whatever the
//! agent says), withdrawing what is not this member's, what it can host,
//! planned handovers, leaving at SIGTERM.
use super::Daemon;
use crate::cluster::{ClusterEvent, ClusterLink, ToAgent};
use crate::decide::{ClusterView, FenceCause, Link, Placement, Plan, Reason};
use crate::protocol::{ClusterStatus, Event};
use anyhow::{Result, bail};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// What woke the loop on the cluster's side.
pub(super) enum Wake {
    /// The agent's state or the deadline moved.
    Changed,
    Event(ClusterEvent),
}

/// Waits for the agent (never returns without a cluster, or once the
/// agent is gone: the deadline then passes and fences).
pub(super) async fn wake(link: &mut Option<ClusterLink>) -> Wake {
    let Some(l) = link else {
        return std::future::pending().await;
    };
    tokio::select! {
        Ok(()) = l.state.changed() => Wake::Changed,
        Ok(()) = l.deadline.changed() => Wake::Changed,
        Some(e) = l.events.recv() => Wake::Event(e),
        else => std::future::pending().await,
    }
}

/// What this member is releasing is not the engine's to place again, even
/// while the agent still says it holds the key: the engine reads the view,
/// and a stale "held" placed a handed-over instance again for 4 ms.
fn withhold_releasing(view: &mut ClusterView, releasing: &BTreeSet<String>) {
    for name in releasing {
        if view.held.remove(name) {
            view.withheld.insert(name.clone(), Reason::NotClaimed);
        }
    }
}

impl Daemon {
    /// The engine's view now; true when it changed.
    pub(super) fn refresh_cluster(&mut self) -> bool {
        let Some(link) = &self.cluster else {
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
        self.cluster_deadline = deadline;
        self.cluster_state = state;
        let changed = self.cluster_view.as_ref() != Some(&view);
        self.cluster_view = Some(view);
        changed
    }

    /// When the deadline passes (a wake-up for the loop).
    pub(super) fn cluster_wake_at(&self) -> Option<Instant> {
        let held = self
            .cluster_view
            .as_ref()
            .is_some_and(|v| !v.held.is_empty());
        self.cluster_deadline.filter(|_| held)
    }

    /// Whether this member may hold `instance` (always, on a single host):
    /// the cluster says so and it is not being released.
    pub(super) fn may_hold(&self, instance: &str) -> bool {
        !self.releasing.contains(instance)
            && self
                .cluster_view
                .as_ref()
                .is_none_or(|v| v.held.contains(instance))
    }

    pub(super) fn on_cluster_event(&mut self, e: ClusterEvent) {
        let at_ms = self.at_ms();
        let (kind, event) = match e {
            ClusterEvent::Claimed {
                instance,
                from,
                conns,
            } => {
                // A claim of ours is a new holding: whatever release of the
                // instance was under way is over (a release and a claim back
                // within one view left it withheld for good).
                self.releasing.remove(&instance);
                let tickle = self.config.cluster.as_ref().is_some_and(|c| c.tickle);
                if tickle && !conns.is_empty() {
                    self.tickles_due.insert(instance.clone(), conns);
                    // Placed before the event came: now.
                    if self.placement.contains_key(&instance) {
                        self.tickle_due(&instance);
                    }
                }
                (
                    "claimed",
                    Event::Claimed {
                        at_ms,
                        instance,
                        from,
                    },
                )
            }
            ClusterEvent::Released { instance, to } => (
                "released",
                Event::Released {
                    at_ms,
                    instance,
                    to,
                },
            ),
            ClusterEvent::Lost { instance } => ("lost", Event::OwnerLost { at_ms, instance }),
            ClusterEvent::Revoked { member, silent_ms } => (
                "revoked",
                Event::MemberRevoked {
                    at_ms,
                    member,
                    silent_ms,
                },
            ),
            ClusterEvent::Fenced { cause } => ("fenced", Event::Fenced { at_ms, cause }),
            ClusterEvent::Unfenced => ("unfenced", Event::Unfenced { at_ms }),
        };
        self.metrics
            .cluster_events
            .get_or_create(&super::metrics::KindLabel { kind: kind.into() })
            .inc();
        self.emit(event);
    }

    /// Takes off this host every instance the plan withholds (the cluster
    /// says another member holds it, or this one is fenced); the reconcile
    /// that follows removes its address, macvlan and entry.
    pub(super) fn withdraw(&mut self, plan: &Plan) {
        for (name, p) in &plan.placements {
            let Placement::Withheld { reason, .. } = p else {
                continue;
            };
            if self.placement.remove(name).is_some() {
                warn!(instance = %name, %reason, "withdrawn: not this member's now");
                self.metrics
                    .cluster_events
                    .get_or_create(&super::metrics::KindLabel {
                        kind: "withdrawn".into(),
                    })
                    .inc();
                self.emit(Event::Withdrawn {
                    at_ms: self.at_ms(),
                    instance: name.clone(),
                    reason: reason.clone(),
                });
                self.dirty.instances.insert(name.clone());
            }
        }
    }

    /// Tells the agent which instances this member could place now (one of
    /// their ports has its link up), when that changed.
    pub(super) fn send_hostable(&mut self) {
        let Some(link) = &self.cluster else { return };
        let hostable: BTreeSet<String> = self
            .config
            .instances
            .iter()
            .filter(|(_, i)| {
                i.ports.iter().any(|p| {
                    self.ports
                        .get(p)
                        .is_some_and(|p| p.ifindex.is_some() && p.state.link == Link::Up)
                })
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

    /// `baton move INSTANCE --member ID`: off this host first, then the
    /// release names the taker, which places it without a probe.
    pub(super) async fn handover(&mut self, instance: &str, member: &str) -> Result<String> {
        let Some(link) = &self.cluster else {
            bail!("no [cluster] here: a handover needs one");
        };
        let Some(inst) = self.config.instances.get(instance) else {
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
        let to_agent = link.to_agent.clone();
        let began = Instant::now();
        // Off this host for good (no re-adoption) before the key goes.
        self.releasing.insert(instance.to_string());
        if let Some(v) = self.cluster_view.as_mut() {
            withhold_releasing(v, &self.releasing);
        }
        self.placement.remove(instance);
        self.dirty.instances.insert(instance.to_string());
        self.reconcile().await;
        let (done, answer) = oneshot::channel();
        let _ = to_agent.send(ToAgent::Release {
            instance: instance.to_string(),
            to: Some(member.to_string()),
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

    /// SIGTERM in a cluster: every held instance off this host, then
    /// released, then the lease revoked (bounded: 3 s).
    pub(super) async fn leave_cluster(&mut self) {
        let Some(link) = &self.cluster else { return };
        let to_agent = link.to_agent.clone();
        let held: Vec<String> = self.placement.keys().cloned().collect();
        self.releasing.extend(self.config.instances.keys().cloned());
        if let Some(v) = self.cluster_view.as_mut() {
            withhold_releasing(v, &self.releasing);
        }
        self.placement.clear();
        self.dirty.instances.extend(held.iter().cloned());
        self.reconcile().await;
        let (done, answer) = oneshot::channel();
        let _ = to_agent.send(ToAgent::Leave { done });
        let left = tokio::time::timeout(Duration::from_secs(3), answer).await;
        info!(
            released = held.len(),
            clean = left.is_ok(),
            "left the cluster"
        );
    }

    pub(super) fn cluster_status(&self) -> Option<ClusterStatus> {
        let c = self.config.cluster.as_ref()?;
        let st = &self.cluster_state;
        let now = Instant::now();
        let left = self
            .cluster_deadline
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
        let fenced = st
            .fenced
            .or_else(|| left.is_zero().then_some(FenceCause::NoQuorum));
        Some(ClusterStatus {
            member: c.member_id.clone(),
            lease: st.lease,
            fenced,
            deadline_left_ms: left.as_millis() as u64,
            members: st.members.clone(),
            owners: st.owners.clone(),
        })
    }

    /// The view a daemon starts with in a cluster: nothing held yet.
    pub(super) fn initial_view(config: &baton_config::Config) -> Option<ClusterView> {
        config.cluster.as_ref().map(|c| {
            crate::cluster::rules::view(
                &c.member_id,
                None,
                config.instances.keys().cloned(),
                &Default::default(),
                Some(FenceCause::NoQuorum),
                &Default::default(),
            )
        })
    }
}
