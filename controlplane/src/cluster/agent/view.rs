//! The agent's view of the cluster: what the watch (a snapshot, then
//! changes) and the alive poll show, and what an owner key's going means
//! (released by a live member, or lost with it: a takeover's wait).
use super::*;

impl<B: Backend> Agent<B> {
    pub(super) fn apply(&mut self, seen: Seen, s: &Setup) {
        let now = Instant::now();
        let before = self.owners.clone();
        match seen {
            Seen::Snapshot(kvs) => {
                self.members.clear();
                self.owners.clear();
                self.handovers.clear();
                let mut alive = Vec::new();
                for (k, v) in kvs {
                    if let Some(Key::Alive(m)) = self.keys.parse(&k) {
                        alive.push((m, v));
                    } else {
                        self.put(&k, v, now);
                    }
                }
                // Unchanged counters stay silent since they last moved.
                self.alive.replace(alive, now);
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

    pub(super) fn put(&mut self, key: &str, value: Vec<u8>, now: Instant) {
        match self.keys.parse(key) {
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
}
