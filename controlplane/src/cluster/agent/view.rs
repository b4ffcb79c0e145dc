//! The cluster as the watch (a snapshot, then changes) and the alive poll
//! show it, and what an owner key's going means: released by a live
//! member, or lost with it.
use super::super::backend::Change;
use super::super::records::{ConnRecord, Handover, Key, Keys, MemberRecord, OwnerRecord};
use super::super::silence::AliveCounters;
use super::super::streams::Seen;
use baton_config::{InstanceName, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use tracing::warn;

pub(super) struct View {
    pub members: BTreeMap<MemberId, MemberRecord>,
    pub alive: AliveCounters,
    pub owners: BTreeMap<InstanceName, OwnerRecord>,
    /// Each fresh handover, and when it was seen.
    pub handovers: BTreeMap<InstanceName, (Handover, Instant)>,
    /// instance -> (its last owner, that owner's digest), kept after the
    /// owner vanished: a takeover needs the same definition.
    pub last_owner: BTreeMap<InstanceName, (MemberId, String)>,
    /// instance -> the last client connections a member published for it,
    /// kept after the key went (with its owner's lease): a taker's tickles.
    pub conns_seen: BTreeMap<InstanceName, ConnRecord>,
}

/// How an owner key went, as this member reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gone {
    Ours,
    /// Its live member released it with a handover to this member.
    ReleasedToUs,
    /// Its live member released it, to nobody or to another member.
    Released,
    /// It went with its member: any keepalive that member had answered was
    /// sent before this, so its dataplane is silent within a deadline.
    WithMember,
}

impl View {
    pub fn new(alive: AliveCounters) -> Self {
        View {
            members: BTreeMap::new(),
            alive,
            owners: BTreeMap::new(),
            handovers: BTreeMap::new(),
            last_owner: BTreeMap::new(),
            conns_seen: BTreeMap::new(),
        }
    }

    /// Takes in what the watch saw; returns the owner keys that went.
    pub fn apply(
        &mut self,
        seen: Seen,
        keys: &Keys,
        me: &MemberId,
        now: Instant,
    ) -> Vec<(InstanceName, Gone)> {
        let before = self.owners.clone();
        match seen {
            Seen::Snapshot(kvs) => {
                self.members.clear();
                self.owners.clear();
                self.handovers.clear();
                let mut alive = Vec::new();
                for (k, v) in kvs {
                    if let Some(Key::Alive(m)) = keys.parse(&k) {
                        alive.push((m, v));
                    } else {
                        self.put(keys, &k, v, now);
                    }
                }
                // Unchanged counters stay silent since they last moved.
                self.alive.replace(alive, now);
            }
            Seen::Changes(changes) => {
                for ch in changes {
                    match ch {
                        Change::Put { key, value } => self.put(keys, &key, value, now),
                        Change::Delete { key } => self.delete(keys, &key),
                    }
                }
            }
        }
        let mut gone = Vec::new();
        for (instance, old) in before {
            if self.owners.contains_key(&instance) {
                continue;
            }
            if old.member != *me && !old.digest.is_empty() {
                self.last_owner
                    .insert(instance.clone(), (old.member.clone(), old.digest.clone()));
            }
            let how = if old.member == *me {
                Gone::Ours
            } else if !self.members.contains_key(&old.member) {
                Gone::WithMember
            } else if self.handed_to(&instance) == Some(me) {
                Gone::ReleasedToUs
            } else {
                Gone::Released
            };
            gone.push((instance, how));
        }
        gone
    }

    /// One key's value, read at `now`.
    pub fn put(&mut self, keys: &Keys, key: &str, value: Vec<u8>, now: Instant) {
        match keys.parse(key) {
            Some(Key::Member(m)) => match serde_json::from_slice(&value) {
                Ok(r) => {
                    self.members.insert(m, r);
                }
                Err(e) => warn!(%key, error = %e, "unreadable member record: ignored"),
            },
            Some(Key::Alive(m)) => self.alive.seen(&m, value, now),
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

    fn delete(&mut self, keys: &Keys, key: &str) {
        match keys.parse(key) {
            Some(Key::Member(m)) => {
                self.members.remove(&m);
            }
            Some(Key::Alive(m)) => self.alive.remove(&m),
            Some(Key::Owner(i)) => {
                self.owners.remove(&i);
            }
            Some(Key::Handover(i)) => {
                self.handovers.remove(&i);
            }
            // Kept: the taker tickles what the owner had.
            Some(Key::Conns(_)) | None => {}
        }
    }

    /// The member a handover of `instance` names, while it is fresh.
    pub fn handed_to(&self, instance: &InstanceName) -> Option<&MemberId> {
        self.handovers.get(instance).map(|(h, _)| &h.to)
    }

    /// The instances `me` holds under `lease` (a record under another
    /// lease is stale).
    pub fn held_by(&self, me: &MemberId, lease: Option<i64>) -> BTreeSet<InstanceName> {
        self.owners
            .iter()
            .filter(|(_, o)| o.member == *me && Some(o.lease) == lease)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `member`'s `lease` was revoked from here: its keys are gone now, not
    /// when the watch brings the deletes (it may be stuck on the etcd
    /// member that died with the unit). Returns the instances it held.
    pub fn forget_lease(&mut self, member: &MemberId, lease: i64) -> Vec<InstanceName> {
        self.members.remove(member);
        self.alive.remove(member);
        let gone: Vec<InstanceName> = self
            .owners
            .iter()
            .filter(|(_, o)| o.lease == lease)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &gone {
            if let Some(o) = self.owners.remove(name)
                && !o.digest.is_empty()
            {
                self.last_owner.insert(name.clone(), (o.member, o.digest));
            }
        }
        gone
    }
}
