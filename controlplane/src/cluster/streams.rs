//! The agent's two background tasks: the watch of the cluster's keys and
//! the lease's keepalives, which move the owner's deadline.
use super::backend::{Backend, Change, Keeper as _, WatchStream as _, lease_gone};
use crate::dataplane::fence::FenceClock;
use anyhow::Result;
use baton_config::model::Cluster;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tracing::warn;

/// What the watch task hands the agent.
pub(super) enum Seen {
    /// Everything under the prefix (after a start or a lost watch).
    Snapshot(Vec<(String, Vec<u8>)>),
    Changes(Vec<Change>),
}

/// What the keepalive task reports.
pub(super) enum Lease {
    /// etcd answered ttl 0: the lease is gone.
    Lost(i64),
}

/// One try at one etcd member: a member that takes longer is skipped.
pub(super) fn attempt_limit(c: &Cluster) -> Duration {
    (c.heartbeat * 2).max(Duration::from_millis(100))
}

/// Reads everything under the prefix, then follows it; read again after
/// any error or end.
pub(super) async fn watch_task<B: Backend>(backend: B, prefix: String, out: mpsc::Sender<Seen>) {
    loop {
        let result: Result<()> = async {
            let (kvs, revision) = backend.read(&prefix).await?;
            if out.send(Seen::Snapshot(kvs)).await.is_err() {
                return Ok(());
            }
            let mut w = backend.watch(&prefix, revision).await?;
            while let Some(batch) = w.next().await? {
                if out.send(Seen::Changes(batch)).await.is_err() {
                    return Ok(());
                }
            }
            Ok(())
        }
        .await;
        if out.is_closed() {
            return;
        }
        if let Err(e) = result {
            warn!(error = %format!("{e:#}"), "etcd watch; reading again");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Renews the lease every heartbeat. The deadline (daemon and dataplane)
/// moves to the send time of each keepalive answered with ttl > 0 plus the
/// hold; an unanswered one opens a new stream, so a late answer is never
/// taken for a newer keepalive's. The alive counter's put confirms each
/// renewal through the raft log (see below) and is the fast liveness signal.
pub(super) async fn keepalive_task<B: Backend>(
    backend: B,
    c: Cluster,
    lease: i64,
    alive_key: String,
    fence: std::sync::Arc<std::sync::Mutex<FenceClock>>,
    deadline: watch::Sender<Option<Instant>>,
    lost: mpsc::Sender<Lease>,
) {
    let mut keeper = None;
    let mut tick = tokio::time::interval(c.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut count: u64 = 0;
    loop {
        tick.tick().await;
        let fast = c.hold_after_keepalive();
        let attempt = attempt_limit(&c);
        if keeper.is_none() {
            keeper = backend.keeper(lease).await.ok();
        }
        let Some(k) = keeper.as_mut() else { continue };
        let sent = Instant::now();
        match timeout(attempt, k.keep_alive()).await {
            Ok(Ok(ttl)) if ttl > 0 => {
                // The renewal alone is not proof: etcd 3.4 renews leases on
                // a leader cut off from its followers until it steps down,
                // possibly after the majority has revoked the lease. A put
                // under the lease, sent after `sent`, must commit through
                // the raft log too: it fails once a revoke is committed,
                // so a deadline never outlives a revoke by more than D.
                count += 1;
                let value = count.to_string();
                let put = backend.put(&alive_key, value.as_bytes(), lease);
                match timeout(attempt, put).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if lease_gone(&e) => {
                        lose(&fence, &deadline, &lost, lease).await;
                        return;
                    }
                    _ => continue,
                }
                let by_lease = Duration::from_secs(ttl as u64).saturating_sub(c.fence_margin);
                let until = sent + fast.min(by_lease);
                if let Ok(mut f) = fence.lock()
                    && let Err(e) = f.set(until)
                {
                    warn!(error = %format!("{e:#}"), "fence map");
                }
                let _ = deadline.send(Some(until));
            }
            Ok(Ok(_)) => {
                // ttl <= 0: revoked or expired.
                lose(&fence, &deadline, &lost, lease).await;
                return;
            }
            _ => keeper = None,
        }
    }
}

/// The lease is gone: silent now, and the agent asks for another.
async fn lose(
    fence: &std::sync::Mutex<FenceClock>,
    deadline: &watch::Sender<Option<Instant>>,
    lost: &mpsc::Sender<Lease>,
    lease: i64,
) {
    if let Ok(mut f) = fence.lock() {
        let _ = f.fence_now();
    }
    let _ = deadline.send(Some(Instant::now()));
    let _ = lost.send(Lease::Lost(lease)).await;
}
