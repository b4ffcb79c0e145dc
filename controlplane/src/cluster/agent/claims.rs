//! Ownership: which unowned instances this member claims now (the pure
//! verdicts are in `rules`), releasing one (to a named taker: a
//! handover), and what an owner key's going means for the next claim.
use super::super::ClusterEvent;
use super::super::backend::Backend;
use super::super::records::{Handover, OwnerRecord};
use super::super::rules::{self, takeover_wait};
use super::Local;
use super::store::Store;
use super::view::{Gone, View};
use crate::decide::Reason;
use anyhow::Result;
use baton_config::model::{Cluster, Instance};
use baton_config::{InstanceName, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// A handover names its taker for this long; then any member may claim.
const HANDOVER_FRESH: Duration = Duration::from_secs(2);

pub(super) struct Claims {
    /// Instances not claimed before these instants: their owner vanished
    /// with its member (a takeover waits out its deadline), or, at start,
    /// may just have.
    wait_until: BTreeMap<InstanceName, Instant>,
    /// Released to this member: placed without a probe.
    pub released_to_us: BTreeSet<InstanceName>,
    /// Why each unowned instance was not claimed at the last try.
    pub why_not: BTreeMap<InstanceName, Reason>,
}

impl Claims {
    /// Unknown history at start: an owner may have vanished just now.
    /// Where another member comes first, give it a lease's time to show up
    /// (members starting together end as their order says).
    pub fn new(c: &Cluster, instances: &BTreeMap<InstanceName, Instance>) -> Self {
        let now = Instant::now();
        let start_wait = |inst: &Instance| {
            let first = inst.members.first() == Some(&c.member_id);
            now + if first {
                takeover_wait(c)
            } else {
                takeover_wait(c).max(c.lease_ttl)
            }
        };
        Claims {
            wait_until: instances
                .iter()
                .map(|(n, i)| (n.clone(), start_wait(i)))
                .collect(),
            released_to_us: BTreeSet::new(),
            why_not: BTreeMap::new(),
        }
    }

    /// An owner key went (see [`View::apply`]).
    pub fn note_gone(&mut self, instance: InstanceName, how: Gone, c: &Cluster, now: Instant) {
        match how {
            Gone::Ours => {
                self.released_to_us.remove(&instance);
            }
            Gone::ReleasedToUs => {
                self.released_to_us.insert(instance);
            }
            Gone::Released => {}
            Gone::WithMember => {
                self.wait_until.insert(instance, now + takeover_wait(c));
            }
        }
    }

    /// When the next takeover's wait ends (None: none waits).
    pub fn next_wait_end(&self, now: Instant) -> Option<Instant> {
        self.wait_until
            .values()
            .filter(|t| **t > now)
            .min()
            .copied()
    }

    /// Claims every unowned instance this member is the one to take.
    pub async fn claim<B: Backend>(
        &mut self,
        store: &Store<B>,
        view: &mut View,
        local: &Local,
        lease: i64,
        events: &mpsc::UnboundedSender<ClusterEvent>,
    ) -> Result<()> {
        let now = Instant::now();
        let me = &store.me;
        self.why_not.clear();
        self.wait_until.retain(|_, t| *t > now);
        view.handovers
            .retain(|_, (_, at)| now.duration_since(*at) < HANDOVER_FRESH);
        for (name, inst) in &local.instances {
            if let Some(o) = view.owners.get(name) {
                view.last_owner.remove(name);
                // Held after a release to us: still no probe on a re-placement.
                if o.member != *me {
                    self.released_to_us.remove(name);
                }
                continue;
            }
            // Released to us: seen with the owner key's delete, or after it.
            let released = self.released_to_us.contains(name) || view.handed_to(name) == Some(me);
            if released {
                self.released_to_us.insert(name.clone());
            }
            let facts = rules::ClaimFacts {
                me,
                instance: name,
                members: &inst.members,
                my_digest: &local.digests[name],
                hostable_here: local.hostable.contains(name),
                released_to_us: released,
                last_owner: view.last_owner.get(name).map(|(m, d)| (m, d.as_str())),
                waiting: self.wait_until.contains_key(name),
                handed_to_other: view.handed_to(name).is_some_and(|to| to != me),
            };
            if let Err(r) = rules::claim_verdict(&facts, &view.members) {
                self.why_not.insert(name.clone(), r);
                continue;
            }
            let rec = OwnerRecord {
                member: me.clone(),
                lease,
                digest: local.digests[name].clone(),
            };
            let Ok(value) = serde_json::to_vec(&rec) else {
                continue;
            };
            let key = store.keys.owner(name);
            match store
                .bounded(store.backend.create(&key, &value, lease))
                .await
            {
                Ok(true) => {
                    let from = view.handovers.get(name).map(|(h, _)| h.from.clone());
                    // The connections of whoever held it last (not ours).
                    let conns = view
                        .conns_seen
                        .get(name)
                        .filter(|r| r.member != *me)
                        .map(|r| r.conns.clone())
                        .unwrap_or_default();
                    info!(instance = %name, ?from, connections = conns.len(), "claimed");
                    view.owners.insert(name.clone(), rec);
                    let _ = events.send(ClusterEvent::Claimed {
                        instance: name.clone(),
                        from,
                        conns,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(instance = %name, error = %format!("{e:#}"), "claim failed");
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Deletes this member's owner key of `instance` (with a handover to
    /// `to` in the same transaction, if named).
    pub async fn release<B: Backend>(
        &mut self,
        store: &Store<B>,
        view: &mut View,
        lease: Option<i64>,
        instance: &InstanceName,
        to: Option<&MemberId>,
    ) -> Result<()> {
        let lease = lease.ok_or_else(|| anyhow::anyhow!("no lease"))?;
        let me = &store.me;
        let rec = view
            .owners
            .get(instance)
            .filter(|o| o.member == *me)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{instance} is not held by {me}"))?;
        let value = serde_json::to_vec(&rec)?;
        let handover = to.map(|to| Handover {
            from: me.clone(),
            to: to.clone(),
        });
        let encoded = handover.as_ref().map(serde_json::to_vec).transpose()?;
        let hkey = store.keys.handover(instance);
        let then = encoded.as_deref().map(|h| (hkey.as_str(), h, lease));
        let owner_key = store.keys.owner(instance);
        let done = store
            .bounded(store.backend.delete_if(&owner_key, &value, then))
            .await?;
        if !done {
            anyhow::bail!("{instance}: the owner key changed under us");
        }
        view.owners.remove(instance);
        // Released to us once, but ours no more: claiming it back on that
        // ground took a handover away from its taker (the cluster bench's
        // fifth handover in a row).
        self.released_to_us.remove(instance);
        // Known here at once (the watch brings it later): this member must
        // not claim back what it just handed over.
        if let Some(h) = handover {
            view.handovers.insert(instance.clone(), (h, Instant::now()));
        }
        info!(%instance, ?to, "released");
        Ok(())
    }
}
