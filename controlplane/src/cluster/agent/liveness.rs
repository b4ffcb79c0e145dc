//! Liveness: this member's fence from its own deadline, the other members'
//! alive counters read every heartbeat, and the revoke of a member whose
//! counter stood still for `dead_after`.
use super::*;

impl<B: Backend> Agent<B> {
    pub(super) fn note_fence(&mut self, deadline: Option<Instant>, s: &Setup) {
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
    pub(super) async fn poll_alive(&mut self) {
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
    /// `dead_after` while this member saw its own counter move (see
    /// `AliveCounters`: an election that stops every counter is nobody's
    /// death). Fast path only.
    pub(super) async fn revoke_silent(&mut self, s: &Setup) {
        if self.c.owner_deadline.is_zero() {
            return;
        }
        let silent: Vec<(String, i64, Duration)> = self
            .alive
            .silent(Instant::now(), self.c.dead_after)
            .into_iter()
            .filter_map(|(m, quiet)| {
                let r = self.members.get(&m)?;
                (!r.leaving && !self.revoked.contains(&r.lease)).then_some((m, r.lease, quiet))
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
}
