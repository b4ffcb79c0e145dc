//! The cluster agent: its loop, which owns the stages' state and calls
//! them in order. What the watch shows is in [`view`], the lease, the fence
//! and the revoke of silent members in [`liveness`], claims and releases in
//! [`claims`], what it publishes in [`publish`]; [`store`] bounds every
//! etcd request. A lost stream is read again.
mod claims;
mod liveness;
mod publish;
mod store;
mod view;

use super::backend::{Backend, lease_gone};
use super::etcd::Etcd;
use super::records::MemberRecord;
use super::silence::AliveCounters;
use super::streams::{Lease, Seen, attempt_limit, keepalive_task, watch_task};
use super::{ClusterEvent, ClusterState, ToAgent, rules};
use crate::dataplane::fence::FenceClock;
use crate::decide::FenceCause;
use baton_config::model::{Cluster, Instance};
use baton_config::{InstanceName, MemberId};
use claims::Claims;
use liveness::Liveness;
use publish::Publisher;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::Store;
use tokio::sync::{mpsc, watch};
use tracing::warn;
use view::{Gone, View};

pub struct Setup {
    pub cluster: Cluster,
    pub instances: BTreeMap<InstanceName, Instance>,
    pub state: watch::Sender<ClusterState>,
    pub deadline: watch::Sender<Option<Instant>>,
    pub from_daemon: mpsc::UnboundedReceiver<ToAgent>,
    pub events: mpsc::UnboundedSender<ClusterEvent>,
}

pub async fn run(mut s: Setup, fence: FenceClock) {
    let c = s.cluster.clone();
    // The dataplane is silent until a keepalive is answered.
    let _ = s.deadline.send(None);
    let backend = loop {
        match Etcd::connect(&c, attempt_limit(&c)).await {
            Ok(b) => break b,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "etcd unreachable; holding nothing");
                publish_fenced(&s, FenceCause::NoQuorum);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let fence = Arc::new(Mutex::new(fence));
    Agent::new(c, backend, s.instances.clone())
        .run(&mut s, fence)
        .await;
}

fn publish_fenced(s: &Setup, cause: FenceCause) {
    let view = rules::view(
        &MemberId::default(),
        None,
        s.instances.keys().cloned(),
        &BTreeMap::new(),
        Some(cause),
        &BTreeMap::new(),
    );
    s.state.send_if_modified(|st| {
        let changed = st.fenced != Some(cause) || st.view != view;
        st.fenced = Some(cause);
        st.view = view;
        changed
    });
}

/// What this member is and can do.
pub(super) struct Local {
    instances: BTreeMap<InstanceName, Instance>,
    /// Each instance's definition, digested (see `rules::digest`).
    digests: BTreeMap<InstanceName, String>,
    /// Instances the daemon can place now (one of their ports is up).
    hostable: BTreeSet<InstanceName>,
    /// Shutting down: releasing, not a candidate for anything.
    leaving: bool,
}

struct Agent<B: Backend> {
    store: Store<B>,
    local: Local,
    view: View,
    claims: Claims,
    liveness: Liveness,
    publisher: Publisher,
}

impl<B: Backend> Agent<B> {
    fn new(c: Cluster, backend: B, instances: BTreeMap<InstanceName, Instance>) -> Self {
        let digests = instances
            .iter()
            .map(|(n, i)| (n.clone(), rules::digest(i)))
            .collect();
        let alive = AliveCounters::new(&c.member_id, c.heartbeat, c.dead_after);
        Agent {
            claims: Claims::new(&c, &instances),
            store: Store::new(c, backend),
            local: Local {
                instances,
                digests,
                hostable: BTreeSet::new(),
                leaving: false,
            },
            view: View::new(alive),
            liveness: Liveness::new(),
            publisher: Publisher::new(),
        }
    }

    async fn run(mut self, s: &mut Setup, fence: Arc<Mutex<FenceClock>>) {
        let c = self.store.c.clone();
        let (seen_tx, mut seen) = mpsc::channel(64);
        let start_watch = |b: &B| {
            tokio::task::spawn_local(watch_task(b.clone(), c.prefix.clone(), seen_tx.clone()))
        };
        let mut watcher = start_watch(&self.store.backend);
        let mut watch_restarted = Instant::now();
        let (lease_tx, mut lease_rx) = mpsc::channel(4);
        let mut deadline_rx = s.deadline.subscribe();
        let mut keepalive: Option<tokio::task::JoinHandle<()>> = None;
        let mut tick = tokio::time::interval(c.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.liveness.lease.is_none() && !self.local.leaving {
                match self.liveness.acquire(&self.store).await {
                    Ok(lease) => {
                        if let Some(k) = keepalive.take() {
                            k.abort();
                        }
                        keepalive = Some(tokio::task::spawn_local(keepalive_task(
                            self.store.backend.clone(),
                            c.clone(),
                            lease,
                            self.store.keys.alive(&self.store.me),
                            fence.clone(),
                            s.deadline.clone(),
                            lease_tx.clone(),
                        )));
                    }
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "no lease from etcd; holding nothing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            let wait_end = self.claims.next_wait_end(Instant::now());
            tokio::select! {
                Some(batch) = seen.recv() => {
                    self.apply(batch, s);
                    while let Ok(b) = seen.try_recv() {
                        self.apply(b, s);
                    }
                }
                Some(Lease::Lost(lease)) = lease_rx.recv() => {
                    if self.liveness.lease == Some(lease) {
                        self.lose_lease();
                    }
                }
                _ = deadline_rx.changed() => {}
                cmd = s.from_daemon.recv() => match cmd {
                    Some(ToAgent::Local { hostable }) => self.local.hostable = hostable,
                    Some(ToAgent::Connections { instance, conns }) => {
                        self.publisher.conns_here.insert(instance, conns);
                    }
                    Some(ToAgent::Release { instance, to, done }) => {
                        let r = self.release(&instance, to.as_ref()).await;
                        if r.is_ok() {
                            let _ = s.events.send(ClusterEvent::Released { instance, to });
                        }
                        let _ = done.send(r);
                    }
                    Some(ToAgent::Leave { done }) => {
                        // No renewal may move the deadline past the fence.
                        if let Some(k) = keepalive.take() {
                            k.abort();
                        }
                        self.leave(s, &fence).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if !c.owner_deadline.is_zero() {
                        liveness::poll_alive(&self.store, &mut self.view).await;
                    }
                }
                // A takeover's wait ends: claim at once, not at the next tick.
                _ = sleep_until(wait_end) => {}
            }
            let deadline = *s.deadline.borrow();
            // Our own alive counter moves every answered keepalive: if the
            // watch stops showing it while keepalives are answered, the
            // watch is stuck on a member; follow another.
            let stall = (c.heartbeat * 4).max(Duration::from_millis(200));
            let now = Instant::now();
            if deadline.is_some_and(|d| d > now)
                && self
                    .view
                    .alive
                    .last_change(&self.store.me)
                    .is_some_and(|t| now.duration_since(t) > stall)
                && now.duration_since(watch_restarted) > stall
            {
                warn!("the etcd watch is silent; following another member");
                watcher.abort();
                self.store.backend.failover();
                watcher = start_watch(&self.store.backend);
                watch_restarted = now;
            }
            self.liveness.note_fence(deadline, &s.events);
            if self.liveness.fenced.is_none() {
                self.revoke_silent(s).await;
                self.claim(s).await;
            }
            self.publish_record().await;
            self.publish_conns().await;
            self.publish_state(s);
        }
    }

    /// What the watch saw, into the view; an owner key that went, into the
    /// claims (and said, if it was ours).
    fn apply(&mut self, seen: Seen, s: &Setup) {
        let now = Instant::now();
        let gone = self.view.apply(seen, &self.store.keys, &self.store.me, now);
        for (instance, how) in gone {
            if how == Gone::Ours && !self.local.leaving {
                let _ = s.events.send(ClusterEvent::Lost {
                    instance: instance.clone(),
                });
            }
            self.claims.note_gone(instance, how, &self.store.c, now);
        }
    }

    /// A request found the lease gone: fenced until a new one is granted.
    fn note_error(&mut self, e: &anyhow::Error) {
        if lease_gone(e) && self.liveness.lease.is_some() {
            self.lose_lease();
        }
    }

    fn lose_lease(&mut self) {
        self.liveness.lose();
        self.publisher.forget();
    }

    /// Revokes silent members; their instances wait out their deadline.
    async fn revoke_silent(&mut self, s: &Setup) {
        for r in self.liveness.revoke_silent(&self.store, &self.view).await {
            for name in self.view.forget_lease(&r.member, r.lease) {
                self.claims
                    .note_gone(name, Gone::WithMember, &self.store.c, r.at);
            }
            let _ = s.events.send(ClusterEvent::Revoked {
                member: r.member,
                silent_ms: r.silent.as_millis() as u64,
            });
        }
    }

    async fn claim(&mut self, s: &Setup) {
        let Some(lease) = self.liveness.lease else {
            return;
        };
        let claimed = self
            .claims
            .claim(&self.store, &mut self.view, &self.local, lease, &s.events)
            .await;
        if let Err(e) = claimed {
            self.note_error(&e);
        }
    }

    async fn release(
        &mut self,
        instance: &InstanceName,
        to: Option<&MemberId>,
    ) -> anyhow::Result<()> {
        self.claims
            .release(
                &self.store,
                &mut self.view,
                self.liveness.lease,
                instance,
                to,
            )
            .await
    }

    async fn publish_record(&mut self) {
        let Some(lease) = self.liveness.lease else {
            return;
        };
        let rec = MemberRecord {
            member: self.store.me.clone(),
            lease,
            digests: self.local.digests.clone(),
            hostable: self.local.hostable.clone(),
            held: self.view.held_by(&self.store.me, Some(lease)),
            leaving: self.local.leaving,
        };
        if let Err(e) = self.publisher.record(&self.store, rec).await {
            self.note_error(&e);
        }
    }

    async fn publish_conns(&mut self) {
        let Some(lease) = self.liveness.lease else {
            return;
        };
        let held = self.view.held_by(&self.store.me, Some(lease));
        if let Err(e) = self.publisher.conns(&self.store, held, lease).await {
            self.note_error(&e);
        }
    }

    fn publish_state(&self, s: &Setup) {
        let state = publish::cluster_state(
            &self.store,
            &self.local,
            &self.view,
            &self.liveness,
            &self.claims,
        );
        s.state.send_if_modified(|st| {
            if *st == state {
                false
            } else {
                *st = state;
                true
            }
        });
    }

    /// SIGTERM: say so, let everything go, end the lease.
    async fn leave(&mut self, s: &Setup, fence: &Mutex<FenceClock>) {
        self.local.leaving = true;
        // Silent now, whatever the daemon left behind, before any key goes.
        if let Ok(mut f) = fence.lock()
            && let Err(e) = f.fence_now()
        {
            warn!(error = %format!("{e:#}"), "fence map");
        }
        self.publish_record().await;
        let me = self.store.me.clone();
        for name in self.view.held_by(&me, self.liveness.lease) {
            // To the next member that can host it: it takes it without a probe.
            let to = self.local.instances[&name]
                .members
                .iter()
                .find(|m| {
                    **m != me
                        && self
                            .view
                            .members
                            .get(*m)
                            .is_some_and(|r| !r.leaving && r.hostable.contains(&name))
                })
                .cloned();
            match self.release(&name, to.as_ref()).await {
                Ok(()) => {
                    let _ = s.events.send(ClusterEvent::Released { instance: name, to });
                }
                Err(e) => warn!(instance = %name, error = %format!("{e:#}"), "release at exit"),
            }
        }
        if let Some(lease) = self.liveness.lease.take() {
            let _ = self.store.bounded(self.store.backend.revoke(lease)).await;
        }
        let _ = s.deadline.send(Some(Instant::now()));
    }
}

/// Sleeps until `until` (forever when None: a passed one must not make
/// the loop spin).
async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
