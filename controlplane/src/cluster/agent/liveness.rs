//! Liveness: this member's lease and its fence (from its own deadline),
//! the other members' alive counters read every heartbeat, and the revoke
//! of a member whose counter stood still for `dead_after`.
use super::super::ClusterEvent;
use super::super::backend::Backend;
use super::super::records::MemberRecord;
use super::super::streams::attempt_limit;
use super::store::Store;
use super::view::View;
use crate::decide::FenceCause;
use anyhow::Result;
use baton_config::MemberId;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{info, warn};

pub(super) struct Liveness {
    pub lease: Option<i64>,
    /// The last lease went (expired or revoked): do not resume it.
    lease_lost: bool,
    pub fenced: Option<FenceCause>,
    /// Leases this member revoked (not revoked twice).
    revoked: BTreeSet<i64>,
}

/// A silent member whose lease this member revoked.
pub(super) struct Revoked {
    pub member: MemberId,
    pub lease: i64,
    pub silent: Duration,
    /// When etcd answered the revoke.
    pub at: Instant,
}

impl Liveness {
    pub fn new() -> Self {
        Liveness {
            lease: None,
            lease_lost: false,
            fenced: Some(FenceCause::NoQuorum),
            revoked: BTreeSet::new(),
        }
    }

    /// Fenced from the owner's deadline, or with the lease lost; says when
    /// that changes.
    pub fn note_fence(
        &mut self,
        deadline: Option<Instant>,
        events: &mpsc::UnboundedSender<ClusterEvent>,
    ) {
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
                    let _ = events.send(ClusterEvent::Fenced { cause });
                }
                None => {
                    info!("etcd answers again: may hold instances");
                    let _ = events.send(ClusterEvent::Unfenced);
                }
            }
            self.fenced = fenced;
        }
    }

    /// The lease is gone (the keepalives or a request said so): fenced,
    /// and the next loop asks for a new one.
    pub fn lose(&mut self) {
        warn!(lease = ?self.lease, "the lease is gone: fenced, asking for a new one");
        self.lease = None;
        self.lease_lost = true;
    }

    /// The lease of a restarted daemon if it still lives (a hitless
    /// restart keeps its owner keys), else a new one.
    pub async fn acquire<B: Backend>(&mut self, store: &Store<B>) -> Result<i64> {
        let key = store.keys.member(&store.me);
        let (kvs, _) = store.bounded(store.backend.read(&key)).await?;
        let mine = kvs
            .iter()
            .filter(|(k, _)| *k == key)
            .find_map(|(_, v)| serde_json::from_slice::<MemberRecord>(v).ok());
        if let Some(rec) = mine
            && !self.lease_lost
            && store
                .bounded(store.backend.time_to_live(rec.lease))
                .await?
                .is_some()
        {
            info!(lease = rec.lease, "resuming the lease of the last run");
            self.lease = Some(rec.lease);
            return Ok(rec.lease);
        }
        let ttl = store.c.lease_ttl.as_secs();
        let lease = store.bounded(store.backend.grant(ttl as i64)).await?;
        info!(lease, ttl_s = ttl, "lease granted");
        self.lease = Some(lease);
        self.lease_lost = false;
        Ok(lease)
    }

    /// Revokes the lease of each member whose alive counter stood still for
    /// `dead_after` while this member saw its own counter move (see
    /// `AliveCounters`: an election that stops every counter is nobody's
    /// death). Fast path only.
    pub async fn revoke_silent<B: Backend>(
        &mut self,
        store: &Store<B>,
        view: &View,
    ) -> Vec<Revoked> {
        if store.c.owner_deadline.is_zero() {
            return Vec::new();
        }
        let silent: Vec<(MemberId, i64, Duration)> = view
            .alive
            .silent(Instant::now(), store.c.dead_after)
            .into_iter()
            .filter_map(|(m, quiet)| {
                let r = view.members.get(&m)?;
                (!r.leaving && !self.revoked.contains(&r.lease)).then_some((m, r.lease, quiet))
            })
            .collect();
        let mut done = Vec::new();
        for (member, lease, silent) in silent {
            match store.bounded(store.backend.revoke(lease)).await {
                Ok(()) => {
                    warn!(%member, lease, silent_ms = silent.as_millis() as u64, "revoked a silent member's lease");
                    self.revoked.insert(lease);
                    done.push(Revoked {
                        member,
                        lease,
                        silent,
                        at: Instant::now(),
                    });
                }
                Err(e) => warn!(%member, error = %format!("{e:#}"), "revoking a silent member"),
            }
        }
        done
    }
}

/// Reads every alive counter (one linearizable read, any member that
/// answers): liveness does not wait for a watch that is stuck on a member
/// that died with its unit.
pub(super) async fn poll_alive<B: Backend>(store: &Store<B>, view: &mut View) {
    let prefix = format!("{}alive/", store.c.prefix);
    let read = store.backend.read(&prefix);
    let Ok(Ok((kvs, _))) = timeout(attempt_limit(&store.c), read).await else {
        return;
    };
    let now = Instant::now();
    for (k, v) in kvs {
        view.put(&store.keys, &k, v, now);
    }
}
