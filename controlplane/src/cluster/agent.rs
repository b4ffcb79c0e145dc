//! The cluster agent: the lease and its keepalives (the deadline), the
//! watch of the cluster's keys, claims, releases and revokes of silent
//! members. Every etcd request is bounded; a lost stream is read again.
use super::backend::{Backend, Change, lease_gone};
use super::etcd::Etcd;
use super::records::{Conn, ConnRecord, Handover, Key, Keys, MemberRecord, OwnerRecord};
use super::rules::takeover_wait;
use super::streams::{Lease, Seen, attempt_limit, keepalive_task, watch_task};

mod publish;
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
    /// member -> (its alive counter, when it last changed here).
    alive: BTreeMap<String, (Vec<u8>, Instant)>,
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
            alive: BTreeMap::new(),
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
                    .get(&self.me)
                    .is_some_and(|(_, t)| now.duration_since(*t) > stall)
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

    fn apply(&mut self, seen: Seen, s: &Setup) {
        let now = Instant::now();
        let before = self.owners.clone();
        match seen {
            Seen::Snapshot(kvs) => {
                self.members.clear();
                self.owners.clear();
                self.handovers.clear();
                let mut alive = BTreeMap::new();
                for (k, v) in kvs {
                    if let Some(Key::Alive(m)) = self.keys.parse(&k) {
                        // Unchanged since we last saw it: still silent since
                        // then; else (or new) moving now.
                        let since = match self.alive.get(&m) {
                            Some((old, t)) if *old == v => *t,
                            _ => now,
                        };
                        alive.insert(m, (v, since));
                    } else {
                        self.put(&k, v, now);
                    }
                }
                self.alive = alive;
            }
            Seen::Changes(changes) => {
                for ch in changes {
                    match ch {
                        Change::Put { key, value } => self.put(&key, value, now),
                        Change::Delete { key } => match self.keys.parse(&key) {
                            Some(Key::Member(m)) => {
                                self.members.remove(&m);
                            }
                            Some(Key::Alive(m)) => {
                                self.alive.remove(&m);
                            }
                            Some(Key::Owner(i)) => {
                                self.owners.remove(&i);
                            }
                            Some(Key::Handover(i)) => {
                                self.handovers.remove(&i);
                            }
                            // Kept: the taker tickles what the owner had.
                            Some(Key::Conns(_)) => {}
                            None => {}
                        },
                    }
                }
            }
        }
        // Owner keys that went: released by a live member, or lost with it.
        for (instance, old) in before {
            if self.owners.contains_key(&instance) {
                continue;
            }
            if old.member != self.me && !old.digest.is_empty() {
                self.last_owner
                    .insert(instance.clone(), (old.member.clone(), old.digest.clone()));
            }
            if old.member == self.me {
                self.released_to_us.remove(&instance);
                if !self.leaving {
                    let _ = s.events.send(ClusterEvent::Lost {
                        instance: instance.clone(),
                    });
                }
                continue;
            }
            if self.members.contains_key(&old.member) {
                if self
                    .handovers
                    .get(&instance)
                    .is_some_and(|(h, _)| h.to == self.me)
                {
                    self.released_to_us.insert(instance.clone());
                }
            } else {
                // Any keepalive it had answered was sent before this: its
                // dataplane is silent within D of that.
                self.wait_until
                    .insert(instance.clone(), now + takeover_wait(&self.c));
            }
        }
    }

    fn put(&mut self, key: &str, value: Vec<u8>, now: Instant) {
        match self.keys.parse(key) {
            Some(Key::Member(m)) => match serde_json::from_slice(&value) {
                Ok(r) => {
                    self.members.insert(m, r);
                }
                Err(e) => warn!(%key, error = %e, "unreadable member record: ignored"),
            },
            Some(Key::Alive(m)) => {
                let changed = self.alive.get(&m).is_none_or(|(v, _)| *v != value);
                if changed {
                    self.alive.insert(m, (value, now));
                }
            }
            Some(Key::Owner(i)) => match serde_json::from_slice(&value) {
                Ok(r) => {
                    self.owners.insert(i, r);
                }
                Err(e) => warn!(%key, error = %e, "unreadable owner record: ignored"),
            },
            Some(Key::Handover(i)) => {
                if let Ok(h) = serde_json::from_slice(&value) {
                    self.handovers.insert(i, (h, now));
                }
            }
            Some(Key::Conns(i)) => match serde_json::from_slice(&value) {
                Ok(r) => {
                    self.conns_seen.insert(i, r);
                }
                Err(e) => warn!(%key, error = %e, "unreadable connections record: ignored"),
            },
            None => {}
        }
    }

    fn note_fence(&mut self, deadline: Option<Instant>, s: &Setup) {
        let now = Instant::now();
        let fenced = if self.lease_lost {
            Some(FenceCause::LeaseLost)
        } else if deadline.is_none_or(|d| now >= d) {
            Some(FenceCause::NoQuorum)
        } else {
            None
        };
        if fenced != self.fenced {
            match fenced {
                Some(cause) => {
                    warn!(%cause, "fenced: holding nothing");
                    let _ = s.events.send(ClusterEvent::Fenced { cause });
                }
                None => {
                    info!("etcd answers again: may hold instances");
                    let _ = s.events.send(ClusterEvent::Unfenced);
                }
            }
            self.fenced = fenced;
        }
    }

    /// Reads every alive counter (one linearizable read, any member that
    /// answers): liveness does not wait for a watch that is stuck on a
    /// member that died with its unit.
    async fn poll_alive(&mut self) {
        let prefix = format!("{}alive/", self.c.prefix);
        let read = self.backend.read(&prefix);
        let Ok(Ok((kvs, _))) = timeout(attempt_limit(&self.c), read).await else {
            return;
        };
        let now = Instant::now();
        for (k, v) in kvs {
            self.put(&k, v, now);
        }
    }

    /// Revokes the lease of a member whose alive counter stood still for
    /// `dead_after`, while this member's own counter moves (its view is
    /// current). Fast path only.
    async fn revoke_silent(&mut self, s: &Setup) {
        if self.c.owner_deadline.is_zero() {
            return;
        }
        let now = Instant::now();
        let fresh = |t: &Instant| now.duration_since(*t) < self.c.dead_after;
        if !self.alive.get(&self.me).is_some_and(|(_, t)| fresh(t)) {
            return;
        }
        let silent: Vec<(String, i64, Duration)> = self
            .members
            .iter()
            .filter(|(m, r)| **m != self.me && !r.leaving && !self.revoked.contains(&r.lease))
            .filter_map(|(m, r)| {
                let since = self.alive.get(m).map(|(_, t)| *t)?;
                (!fresh(&since)).then(|| (m.clone(), r.lease, now.duration_since(since)))
            })
            .collect();
        for (member, lease, quiet) in silent {
            match bounded(request_limit(&self.c), self.backend.revoke(lease)).await {
                Ok(()) => {
                    warn!(%member, lease, silent_ms = quiet.as_millis() as u64, "revoked a silent member's lease");
                    self.revoked.insert(lease);
                    // Its keys went with the revoke: known here now, not
                    // when the watch brings the deletes (it may be stuck on
                    // the member that died with the unit).
                    let answered = Instant::now();
                    self.members.remove(&member);
                    self.alive.remove(&member);
                    let gone: Vec<String> = self
                        .owners
                        .iter()
                        .filter(|(_, o)| o.lease == lease)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for name in gone {
                        if let Some(o) = self.owners.remove(&name)
                            && !o.digest.is_empty()
                        {
                            self.last_owner.insert(name.clone(), (o.member, o.digest));
                        }
                        self.wait_until
                            .insert(name, answered + takeover_wait(&self.c));
                    }
                    let _ = s.events.send(ClusterEvent::Revoked {
                        member,
                        silent_ms: quiet.as_millis() as u64,
                    });
                }
                Err(e) => warn!(%member, error = %format!("{e:#}"), "revoking a silent member"),
            }
        }
    }

    /// Claims every unowned instance this member is the one to take.
    async fn claim(&mut self, s: &Setup) {
        let Some(lease) = self.lease else { return };
        let now = Instant::now();
        self.why_not.clear();
        self.wait_until.retain(|_, t| *t > now);
        self.handovers
            .retain(|_, (_, at)| now.duration_since(*at) < HANDOVER_FRESH);
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in names {
            if let Some(o) = self.owners.get(&name) {
                self.last_owner.remove(&name);
                // Held after a release to us: still no probe on a re-placement.
                if o.member != self.me {
                    self.released_to_us.remove(&name);
                }
                continue;
            }
            let inst = &self.instances[&name];
            // Released to us: seen with the owner key's delete, or after it.
            let released = self.released_to_us.contains(&name)
                || self
                    .handovers
                    .get(&name)
                    .is_some_and(|(h, _)| h.to == self.me);
            if released {
                self.released_to_us.insert(name.clone());
            }
            let differs = self
                .last_owner
                .get(&name)
                .filter(|(_, d)| *d != self.digests[&name])
                .map(|(m, _)| m.clone());
            let verdict = if let Some(member) = differs {
                Err(Reason::ConfigDiffers { member })
            } else if released {
                Ok(())
            } else if self.wait_until.contains_key(&name)
                || self
                    .handovers
                    .get(&name)
                    .is_some_and(|(h, _)| h.to != self.me)
            {
                // A takeover waits out the old owner's deadline; a handover
                // names another taker.
                Err(Reason::NotClaimed)
            } else {
                rules::claim_ok(
                    &self.me,
                    &name,
                    &inst.members,
                    &self.digests[&name],
                    self.hostable.contains(&name),
                    &self.members,
                )
            };
            if let Err(r) = verdict {
                self.why_not.insert(name, r);
                continue;
            }
            let rec = OwnerRecord {
                member: self.me.clone(),
                lease,
                digest: self.digests[&name].clone(),
            };
            let Ok(value) = serde_json::to_vec(&rec) else {
                continue;
            };
            let key = self.keys.owner(&name);
            match bounded(
                request_limit(&self.c),
                self.backend.create(&key, &value, lease),
            )
            .await
            {
                Ok(true) => {
                    let from = self.handovers.get(&name).map(|(h, _)| h.from.clone());
                    // The connections of whoever held it last (not ours).
                    let conns = self
                        .conns_seen
                        .get(&name)
                        .filter(|r| r.member != self.me)
                        .map(|r| r.conns.clone())
                        .unwrap_or_default();
                    info!(instance = %name, ?from, connections = conns.len(), "claimed");
                    self.owners.insert(name.clone(), rec);
                    let _ = s.events.send(ClusterEvent::Claimed {
                        instance: name,
                        from,
                        conns,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(instance = %name, error = %format!("{e:#}"), "claim failed");
                    self.note_error(&e);
                    return;
                }
            }
        }
    }

    async fn release(&mut self, instance: &str, to: Option<String>) -> Result<()> {
        let lease = self.lease.ok_or_else(|| anyhow::anyhow!("no lease"))?;
        let rec = self
            .owners
            .get(instance)
            .filter(|o| o.member == self.me)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{instance} is not held by {}", self.me))?;
        let value = serde_json::to_vec(&rec)?;
        let handover = to
            .as_ref()
            .map(|to| {
                serde_json::to_vec(&Handover {
                    from: self.me.clone(),
                    to: to.clone(),
                })
            })
            .transpose()?;
        let hkey = self.keys.handover(instance);
        let then = handover.as_deref().map(|h| (hkey.as_str(), h, lease));
        let done = bounded(
            request_limit(&self.c),
            self.backend
                .delete_if(&self.keys.owner(instance), &value, then),
        )
        .await?;
        if !done {
            anyhow::bail!("{instance}: the owner key changed under us");
        }
        self.owners.remove(instance);
        // Released to us once, but ours no more: claiming it back on that
        // ground took a handover away from its taker (the cluster bench's
        // fifth handover in a row).
        self.released_to_us.remove(instance);
        // Known here at once (the watch brings it later): this member must
        // not claim back what it just handed over.
        if let Some(to) = &to {
            let h = Handover {
                from: self.me.clone(),
                to: to.clone(),
            };
            self.handovers
                .insert(instance.to_string(), (h, Instant::now()));
        }
        info!(instance, ?to, "released");
        Ok(())
    }

    /// SIGTERM: say so, let everything go, end the lease.
    async fn leave(&mut self, s: &Setup, fence: &std::sync::Mutex<FenceClock>) {
        self.leaving = true;
        // Silent now, whatever the daemon left behind, before any key goes.
        if let Ok(mut f) = fence.lock()
            && let Err(e) = f.fence_now()
        {
            warn!(error = %format!("{e:#}"), "fence map");
        }
        self.publish_record().await;
        let held = self.held_here();
        for name in held {
            // To the next member that can host it: it takes it without a probe.
            let to = self.instances[&name]
                .members
                .iter()
                .find(|m| {
                    **m != self.me
                        && self
                            .members
                            .get(*m)
                            .is_some_and(|r| !r.leaving && r.hostable.contains(&name))
                })
                .cloned();
            match self.release(&name, to.clone()).await {
                Ok(()) => {
                    let _ = s.events.send(ClusterEvent::Released { instance: name, to });
                }
                Err(e) => warn!(instance = %name, error = %format!("{e:#}"), "release at exit"),
            }
        }
        if let Some(lease) = self.lease.take() {
            let _ = bounded(request_limit(&self.c), self.backend.revoke(lease)).await;
        }
        let _ = s.deadline.send(Some(Instant::now()));
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
