//! This member's side of etcd: who it is, where the cluster's keys are,
//! the backend, and one bound on every request.
use super::super::backend::Backend;
use super::super::records::Keys;
use anyhow::Result;
use baton_config::MemberId;
use baton_config::model::Cluster;
use std::future::Future;
use std::time::Duration;
use tokio::time::timeout;

pub(super) struct Store<B> {
    pub c: Cluster,
    pub me: MemberId,
    pub keys: Keys,
    pub backend: B,
}

impl<B: Backend> Store<B> {
    pub fn new(c: Cluster, backend: B) -> Self {
        Store {
            me: c.member_id.clone(),
            keys: Keys {
                prefix: c.prefix.clone(),
            },
            c,
            backend,
        }
    }

    /// `f`, failed if etcd does not answer within the request limit.
    pub async fn bounded<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.c.dead_after.max(Duration::from_millis(500));
        match timeout(limit, f).await {
            Ok(r) => r,
            Err(_) => anyhow::bail!("etcd did not answer within {limit:?}"),
        }
    }
}
