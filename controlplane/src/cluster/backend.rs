//! What the cluster needs of a distributed engine, small enough that
//! another (corosync/votequorum) could stand behind it: leases with
//! keepalives, keys under a lease, create-if-absent and delete-if-equal,
//! a prefix read and a watch from a revision.
// The agent runs its tasks on a LocalSet: the futures need not be Send.
#![allow(async_fn_in_trait)]
use anyhow::Result;

/// One change of a key under the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// The answer to a keepalive: the lease's remaining time (0: gone).
pub type Ttl = i64;

/// A request failed because the lease it names no longer exists (revoked
/// by another member, or expired): the member holds nothing under it.
#[derive(Debug, thiserror::Error)]
#[error("the lease is gone (revoked or expired)")]
pub struct LeaseGone;

/// Whether `e` (or what it wraps) is [`LeaseGone`].
pub fn lease_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<LeaseGone>())
}

pub trait Backend: Clone + Send + Sync + 'static {
    type Keeper: Keeper;
    type Watch: WatchStream;

    async fn grant(&self, ttl_s: i64) -> Result<i64>;
    /// Remaining seconds of a lease, None when it is gone.
    async fn time_to_live(&self, lease: i64) -> Result<Option<i64>>;
    async fn revoke(&self, lease: i64) -> Result<()>;
    async fn keeper(&self, lease: i64) -> Result<Self::Keeper>;
    async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<()>;
    /// Writes `key` only if it does not exist; true when it did.
    async fn create(&self, key: &str, value: &[u8], lease: i64) -> Result<bool>;
    /// Deletes `key` only if it holds `value`, and writes `then` (if any)
    /// in the same transaction; true when it did.
    async fn delete_if(
        &self,
        key: &str,
        value: &[u8],
        then: Option<(&str, &[u8], i64)>,
    ) -> Result<bool>;
    /// Every key under `prefix` and the revision of that read.
    async fn read(&self, prefix: &str) -> Result<(Vec<(String, Vec<u8>)>, i64)>;
    /// Changes under `prefix` after `revision`.
    async fn watch(&self, prefix: &str, revision: i64) -> Result<Self::Watch>;
    /// The engine member in use seems stuck (a silent watch): use another.
    fn failover(&self);
}

pub trait Keeper: Send + 'static {
    /// One keepalive, sent and answered.
    async fn keep_alive(&mut self) -> Result<Ttl>;
}

pub trait WatchStream: Send + 'static {
    /// The next batch of changes (one revision's or more), None when the
    /// stream ended (the caller reads again and watches anew).
    async fn next(&mut self) -> Result<Option<Vec<Change>>>;
}
