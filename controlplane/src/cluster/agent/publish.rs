//! What the agent tells others and the daemon: its member record and its
//! instances' client connections in etcd, the cluster's state to the daemon.
use super::super::backend::Backend;
use super::super::records::{Conn, ConnRecord, MemberRecord};
use super::super::{ClusterState, rules};
use super::Local;
use super::claims::Claims;
use super::liveness::Liveness;
use super::store::Store;
use super::view::View;
use crate::protocol::MemberStatus;
use anyhow::Result;
use baton_config::InstanceName;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tracing::warn;

/// A held instance's connections are written again this often even when
/// unchanged (a key someone deleted comes back).
const CONNS_REFRESH: Duration = Duration::from_secs(10);

pub(super) struct Publisher {
    /// The member record etcd has (None: write it at the next chance).
    published: Option<MemberRecord>,
    /// After a failed write of the record: not before this.
    retry_at: Instant,
    /// instance -> the connections on its address here, from the daemon.
    pub conns_here: BTreeMap<InstanceName, Vec<Conn>>,
    /// instance -> what this member last published for it, and when.
    conns_published: BTreeMap<InstanceName, (Vec<Conn>, Instant)>,
}

impl Publisher {
    pub fn new() -> Self {
        Publisher {
            published: None,
            retry_at: Instant::now(),
            conns_here: BTreeMap::new(),
            conns_published: BTreeMap::new(),
        }
    }

    /// The record went with the lease: written again under the next one.
    pub fn forget(&mut self) {
        self.published = None;
    }

    /// Writes the member record when it changed.
    pub async fn record<B: Backend>(&mut self, store: &Store<B>, rec: MemberRecord) -> Result<()> {
        if self.published.as_ref() == Some(&rec) || Instant::now() < self.retry_at {
            return Ok(());
        }
        let value = serde_json::to_vec(&rec)?;
        let key = store.keys.member(&store.me);
        match store
            .bounded(store.backend.put(&key, &value, rec.lease))
            .await
        {
            Ok(()) => {
                self.published = Some(rec);
                Ok(())
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "publishing the member record; again in 200 ms");
                self.retry_at = Instant::now() + Duration::from_millis(200);
                Err(e)
            }
        }
    }

    /// The client connections of each instance held here, when they
    /// changed or every [`CONNS_REFRESH`].
    pub async fn conns<B: Backend>(
        &mut self,
        store: &Store<B>,
        held: BTreeSet<InstanceName>,
        lease: i64,
    ) -> Result<()> {
        let now = Instant::now();
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
                member: store.me.clone(),
                conns: conns.clone(),
            };
            let Ok(value) = serde_json::to_vec(&rec) else {
                continue;
            };
            let key = store.keys.conns(&name);
            match store.bounded(store.backend.put(&key, &value, lease)).await {
                Ok(()) => {
                    self.conns_published.insert(name, (conns, now));
                }
                Err(e) => {
                    warn!(instance = %name, error = %format!("{e:#}"), "publishing connections");
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// The cluster's state as the daemon reads it: the engine's view, the
/// owners, the members as status shows them.
pub(super) fn cluster_state<B>(
    store: &Store<B>,
    local: &Local,
    view: &View,
    liveness: &Liveness,
    claims: &Claims,
) -> ClusterState {
    let now = Instant::now();
    let dead_after = store.c.dead_after;
    let members = view
        .members
        .values()
        .map(|r| {
            let quiet = view.alive.silent_for(&r.member, now);
            MemberStatus {
                id: r.member.clone(),
                alive: quiet.is_some_and(|q| q < dead_after),
                silent_ms: quiet.map(|q| q.as_millis() as u64),
                digests_match: r
                    .digests
                    .iter()
                    .all(|(i, d)| local.digests.get(i).is_none_or(|mine| mine == d)),
                held: r.held.iter().cloned().collect(),
                hostable: r.hostable.iter().cloned().collect(),
                leaving: r.leaving,
            }
        })
        .collect();
    ClusterState {
        view: rules::view(
            &store.me,
            liveness.lease,
            local.instances.keys().cloned(),
            &view.owners,
            liveness.fenced,
            &claims.why_not,
        ),
        fenced: liveness.fenced,
        released_to_us: claims.released_to_us.clone(),
        owners: view
            .owners
            .iter()
            .map(|(n, o)| (n.clone(), o.member.clone()))
            .collect(),
        members,
        lease: liveness.lease,
    }
}
