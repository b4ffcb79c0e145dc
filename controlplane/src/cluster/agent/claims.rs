//! Ownership: claiming what this member is the one to take, releasing
//! (to a named taker, a handover), and letting everything go at exit.
use super::*;

impl<B: Backend> Agent<B> {
    /// Claims every unowned instance this member is the one to take.
    pub(super) async fn claim(&mut self, s: &Setup) {
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
            let facts = rules::ClaimFacts {
                me: &self.me,
                instance: &name,
                members: &inst.members,
                my_digest: &self.digests[&name],
                hostable_here: self.hostable.contains(&name),
                released_to_us: released,
                last_owner: self
                    .last_owner
                    .get(&name)
                    .map(|(m, d)| (m.as_str(), d.as_str())),
                waiting: self.wait_until.contains_key(&name),
                handed_to_other: self
                    .handovers
                    .get(&name)
                    .is_some_and(|(h, _)| h.to != self.me),
            };
            let verdict = rules::claim_verdict(&facts, &self.members);
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

    pub(super) async fn release(&mut self, instance: &str, to: Option<String>) -> Result<()> {
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
    pub(super) async fn leave(&mut self, s: &Setup, fence: &std::sync::Mutex<FenceClock>) {
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
