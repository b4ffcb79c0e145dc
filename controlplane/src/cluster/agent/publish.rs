//! What the agent tells others and the daemon: its member record and its
//! instances' client connections in etcd, the cluster's state to the daemon.
use super::*;

impl<B: Backend> Agent<B> {
    pub(super) async fn publish_record(&mut self) {
        let Some(lease) = self.lease else { return };
        let rec = MemberRecord {
            member: self.me.clone(),
            lease,
            digests: self.digests.clone(),
            hostable: self.hostable.clone(),
            held: self.held_here(),
            leaving: self.leaving,
        };
        if self.published.as_ref() == Some(&rec) {
            return;
        }
        let Ok(value) = serde_json::to_vec(&rec) else {
            return;
        };
        let key = self.keys.member(&self.me);
        if Instant::now() < self.publish_retry_at {
            return;
        }
        let put = self.backend.put(&key, &value, lease);
        match bounded(request_limit(&self.c), put).await {
            Ok(()) => self.published = Some(rec),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "publishing the member record; again in 200 ms");
                self.publish_retry_at = Instant::now() + Duration::from_millis(200);
                self.note_error(&e);
            }
        }
    }

    /// The client connections of each instance held here, when they
    /// changed or every [`CONNS_REFRESH`].
    pub(super) async fn publish_conns(&mut self) {
        let Some(lease) = self.lease else { return };
        let now = Instant::now();
        let held = self.held_here();
        self.conns_published.retain(|n, _| held.contains(n));
        for name in held {
            let conns = self.conns_here.get(&name).cloned().unwrap_or_default();
            let fresh = self
                .conns_published
                .get(&name)
                .is_some_and(|(c, at)| *c == conns && now.duration_since(*at) < CONNS_REFRESH);
            if fresh {
                continue;
            }
            let rec = ConnRecord {
                member: self.me.clone(),
                conns: conns.clone(),
            };
            let Ok(value) = serde_json::to_vec(&rec) else {
                continue;
            };
            let key = self.keys.conns(&name);
            let put = self.backend.put(&key, &value, lease);
            match bounded(request_limit(&self.c), put).await {
                Ok(()) => {
                    self.conns_published.insert(name, (conns, now));
                }
                Err(e) => {
                    warn!(instance = %name, error = %format!("{e:#}"), "publishing connections");
                    self.note_error(&e);
                    return;
                }
            }
        }
    }

    pub(super) fn publish_state(&self, s: &Setup) {
        let now = Instant::now();
        let view = rules::view(
            &self.me,
            self.lease,
            self.instances.keys().cloned(),
            &self.owners,
            self.fenced,
            &self.why_not,
        );
        let members = self
            .members
            .values()
            .map(|r| MemberStatus {
                id: r.member.clone(),
                alive: self
                    .alive
                    .silent_for(&r.member, now)
                    .is_some_and(|quiet| quiet < self.c.dead_after),
                silent_ms: self
                    .alive
                    .silent_for(&r.member, now)
                    .map(|quiet| quiet.as_millis() as u64),
                digests_match: r
                    .digests
                    .iter()
                    .all(|(i, d)| self.digests.get(i).is_none_or(|mine| mine == d)),
                held: r.held.iter().cloned().collect(),
                leaving: r.leaving,
            })
            .collect();
        let state = ClusterState {
            view,
            fenced: self.fenced,
            released_to_us: self.released_to_us.clone(),
            owners: self
                .owners
                .iter()
                .map(|(n, o)| (n.clone(), o.member.clone()))
                .collect(),
            members,
            lease: self.lease,
        };
        s.state.send_if_modified(|st| {
            if *st == state {
                false
            } else {
                *st = state;
                true
            }
        });
    }
}
