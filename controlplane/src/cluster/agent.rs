//! The cluster agent: its loop, the lease and its keepalives (the
//! deadline). What the watch shows is in view.rs, liveness and revokes in
//! liveness.rs, claims and releases in claims.rs, what it publishes in
//! publish.rs. Every etcd request is bounded; a lost stream is read again.
use super::alive::AliveCounters;
use super::backend::{Backend, Change, lease_gone};
use super::etcd::Etcd;
use super::records::{Conn, ConnRecord, Handover, Key, Keys, MemberRecord, OwnerRecord};
use super::rules::takeover_wait;
use super::streams::{Lease, Seen, attempt_limit, keepalive_task, watch_task};

mod claims;
mod liveness;
mod publish;
mod view;
use super::{ClusterEvent, ClusterState, ToAgent, rules};
use crate::dataplane::fence::FenceClock;
use crate::decide::{FenceCause, Reason};
use crate::protocol::MemberStatus;
use anyhow::Result;
use baton_config::model::{Cluster, Instance};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tracing::{info, warn};

/// A handover names its taker for this long; then any member may claim.
const HANDOVER_FRESH: Duration = Duration::from_secs(2);
/// A held instance's connections are written again this often even when
/// unchanged (a key someone deleted comes back).
const CONNS_REFRESH: Duration = Duration::from_secs(10);

pub struct Setup {
    pub cluster: Cluster,
    pub instances: BTreeMap<String, Instance>,
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
    let fence = std::sync::Arc::new(std::sync::Mutex::new(fence));
    Agent::new(s.cluster.clone(), backend, s.instances.clone())
        .run(&mut s, fence)
        .await;
}

fn request_limit(c: &Cluster) -> Duration {
    c.dead_after.max(Duration::from_millis(500))
}

fn publish_fenced(s: &Setup, cause: FenceCause) {
    let view = rules::view(
        "",
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

struct Agent<B: Backend> {
    c: Cluster,
    me: String,
    keys: Keys,
    backend: B,
    instances: BTreeMap<String, Instance>,
    digests: BTreeMap<String, String>,
    lease: Option<i64>,
    lease_lost: bool,
    members: BTreeMap<String, MemberRecord>,
    alive: AliveCounters,
    owners: BTreeMap<String, OwnerRecord>,
    handovers: BTreeMap<String, (Handover, Instant)>,
    /// Instances whose owner vanished with its member: not claimed before.
    wait_until: BTreeMap<String, Instant>,
    released_to_us: BTreeSet<String>,
    /// instance -> (its last owner, that owner's digest), kept after the
    /// owner vanished: a takeover needs the same definition.
    last_owner: BTreeMap<String, (String, String)>,
    /// instance -> the last client connections a member published for it,
    /// kept after the key went (with its owner's lease): a taker's tickles.
    conns_seen: BTreeMap<String, ConnRecord>,
    /// instance -> the connections on its address here, from the daemon.
    conns_here: BTreeMap<String, Vec<Conn>>,
    /// instance -> what this member last published for it, and when.
    conns_published: BTreeMap<String, (Vec<Conn>, Instant)>,
    /// Leases this member revoked (not revoked twice).
    revoked: BTreeSet<i64>,
    hostable: BTreeSet<String>,
    why_not: BTreeMap<String, Reason>,
    published: Option<MemberRecord>,
    /// After a failed publish: not before this.
    publish_retry_at: Instant,
    fenced: Option<FenceCause>,
    leaving: bool,
}

impl<B: Backend> Agent<B> {
    fn new(c: Cluster, backend: B, instances: BTreeMap<String, Instance>) -> Self {
        let digests = instances
            .iter()
            .map(|(n, i)| (n.clone(), rules::digest(i)))
            .collect();
        // Unknown history at start: an owner may have vanished just now.
        // Where another member comes first, give it a lease's time to show
        // up (members starting together end as their order says).
        let now = Instant::now();
        let start_wait = |inst: &Instance| {
            let first = inst.members.first() == Some(&c.member_id);
            now + if first {
                takeover_wait(&c)
            } else {
                takeover_wait(&c).max(c.lease_ttl)
            }
        };
        let alive = AliveCounters::new(&c.member_id, c.heartbeat, c.dead_after);
        Agent {
            me: c.member_id.clone(),
            keys: Keys {
                prefix: c.prefix.clone(),
            },
            wait_until: instances
                .iter()
                .map(|(n, i)| (n.clone(), start_wait(i)))
                .collect(),
            c,
            backend,
            instances,
            digests,
            lease: None,
            lease_lost: false,
            members: BTreeMap::new(),
            alive,
            owners: BTreeMap::new(),
            handovers: BTreeMap::new(),
            released_to_us: BTreeSet::new(),
            last_owner: BTreeMap::new(),
            conns_seen: BTreeMap::new(),
            conns_here: BTreeMap::new(),
            conns_published: BTreeMap::new(),
            revoked: BTreeSet::new(),
            hostable: BTreeSet::new(),
            why_not: BTreeMap::new(),
            published: None,
            publish_retry_at: Instant::now(),
            fenced: Some(FenceCause::NoQuorum),
            leaving: false,
        }
    }

    async fn run(mut self, s: &mut Setup, fence: std::sync::Arc<std::sync::Mutex<FenceClock>>) {
        let (seen_tx, mut seen) = mpsc::channel(64);
        let prefix = self.c.prefix.clone();
        let start_watch = |b: &B| {
            tokio::task::spawn_local(watch_task(b.clone(), prefix.clone(), seen_tx.clone()))
        };
        let mut watcher = start_watch(&self.backend);
        let mut watch_restarted = Instant::now();
        let (lease_tx, mut lease_rx) = mpsc::channel(4);
        let mut deadline_rx = s.deadline.subscribe();
        let mut keepalive: Option<tokio::task::JoinHandle<()>> = None;
        let mut tick = tokio::time::interval(self.c.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.lease.is_none() && !self.leaving {
                match self.acquire_lease().await {
                    Ok(lease) => {
                        if let Some(k) = keepalive.take() {
                            k.abort();
                        }
                        keepalive = Some(tokio::task::spawn_local(keepalive_task(
                            self.backend.clone(),
                            self.c.clone(),
                            lease,
                            self.keys.alive(&self.me),
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
            tokio::select! {
                Some(batch) = seen.recv() => {
                    self.apply(batch, s);
                    while let Ok(b) = seen.try_recv() {
                        self.apply(b, s);
                    }
                }
                Some(Lease::Lost(lease)) = lease_rx.recv() => {
                    if self.lease == Some(lease) {
                        self.lose_lease();
                    }
                }
                _ = deadline_rx.changed() => {}
                cmd = s.from_daemon.recv() => match cmd {
                    Some(ToAgent::Local { hostable }) => self.hostable = hostable,
                    Some(ToAgent::Connections { instance, conns }) => {
                        self.conns_here.insert(instance, conns);
                    }
                    Some(ToAgent::Release { instance, to, done }) => {
                        let r = self.release(&instance, to.clone()).await;
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
                    if !self.c.owner_deadline.is_zero() {
                        self.poll_alive().await;
                    }
                }
                // A takeover's wait ends: claim at once, not at the next tick.
                _ = sleep_until_first(&self.wait_until) => {}
            }
            let deadline = *s.deadline.borrow();
            // Our own alive counter moves every answered keepalive: if the
            // watch stops showing it while keepalives are answered, the
            // watch is stuck on a member; follow another.
            let stall = (self.c.heartbeat * 4).max(Duration::from_millis(200));
            let now = Instant::now();
            if deadline.is_some_and(|d| d > now)
                && self
                    .alive
                    .last_change(&self.me)
                    .is_some_and(|t| now.duration_since(t) > stall)
                && now.duration_since(watch_restarted) > stall
            {
                warn!("the etcd watch is silent; following another member");
                watcher.abort();
                self.backend.failover();
                watcher = start_watch(&self.backend);
                watch_restarted = now;
            }
            self.note_fence(deadline, s);
            if self.fenced.is_none() {
                self.revoke_silent(s).await;
                self.claim(s).await;
            }
            self.publish_record().await;
            self.publish_conns().await;
            self.publish_state(s);
        }
    }

    /// The instances this member holds now (under its current lease).
    fn held_here(&self) -> BTreeSet<String> {
        self.owners
            .iter()
            .filter(|(_, o)| o.member == self.me && Some(o.lease) == self.lease)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A request found the lease gone: fenced until a new one is granted.
    fn note_error(&mut self, e: &anyhow::Error) {
        if lease_gone(e) && self.lease.is_some() {
            self.lose_lease();
        }
    }

    /// The lease is gone (the keepalives or a request said so): fenced,
    /// and the next loop asks for a new one.
    fn lose_lease(&mut self) {
        warn!(lease = ?self.lease, "the lease is gone: fenced, asking for a new one");
        self.lease = None;
        self.lease_lost = true;
        self.published = None;
    }

    /// The lease of a restarted daemon if it still lives (a hitless
    /// restart keeps its owner keys), else a new one.
    async fn acquire_lease(&mut self) -> Result<i64> {
        let limit = request_limit(&self.c);
        let (kvs, _) = bounded(limit, self.backend.read(&self.keys.member(&self.me))).await?;
        let mine = kvs
            .iter()
            .filter(|(k, _)| *k == self.keys.member(&self.me))
            .find_map(|(_, v)| serde_json::from_slice::<MemberRecord>(v).ok());
        if let Some(rec) = mine
            && !self.lease_lost
            && bounded(limit, self.backend.time_to_live(rec.lease))
                .await?
                .is_some()
        {
            info!(lease = rec.lease, "resuming the lease of the last run");
            self.lease = Some(rec.lease);
            return Ok(rec.lease);
        }
        let lease = bounded(limit, self.backend.grant(self.c.lease_ttl.as_secs() as i64)).await?;
        info!(lease, ttl_s = self.c.lease_ttl.as_secs(), "lease granted");
        self.lease = Some(lease);
        self.lease_lost = false;
        Ok(lease)
    }
}

async fn bounded<T>(limit: Duration, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("etcd did not answer within {limit:?}"),
    }
}

/// Sleeps until the earliest of `until`'s instants still to come (forever
/// when none: a passed one must not make the loop spin).
async fn sleep_until_first(until: &BTreeMap<String, Instant>) {
    let now = Instant::now();
    match until.values().filter(|t| **t > now).min() {
        Some(t) => tokio::time::sleep_until((*t).into()).await,
        None => std::future::pending().await,
    }
}
