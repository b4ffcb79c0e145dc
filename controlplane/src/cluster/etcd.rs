//! The cluster's [`Backend`] on etcd v3 (etcd-client; checked against
//! Debian's etcd-server 3.4).
use super::backend::{Backend, Change, Keeper, LeaseGone, Ttl, WatchStream};
use anyhow::{Context as _, Result, bail};
use baton_config::model::Cluster;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One client per endpoint, used in turn: a request that fails or takes
/// longer than `attempt` goes to the next member, so a dead or cut etcd
/// member costs one attempt, not a connection timeout. (etcd-client's
/// own balancing would keep sending to a member that stopped answering
/// until HTTP/2 keepalives gave up on it.)
#[derive(Clone)]
pub struct Etcd {
    clients: Arc<Vec<Client>>,
    preferred: Arc<AtomicUsize>,
    attempt: Duration,
}

impl Etcd {
    /// Connects to every endpoint (lazily: nothing is dialled yet).
    /// `attempt` bounds one try at one member; requests are refused at
    /// once by a member that has no leader.
    pub async fn connect(c: &Cluster, attempt: Duration) -> Result<Etcd> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(attempt)
            .with_timeout(attempt)
            .with_keep_alive(Duration::from_millis(500), attempt)
            .with_require_leader(true);
        if let Some(tls) = &c.tls {
            let ca = std::fs::read(&tls.ca_file)
                .with_context(|| format!("reading {}", tls.ca_file.display()))?;
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                let cert =
                    std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
                let key =
                    std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
                t = t.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(t);
        }
        let mut clients = Vec::new();
        for ep in &c.endpoints {
            clients.push(
                Client::connect([ep.as_str()], Some(opts.clone()))
                    .await
                    .with_context(|| format!("etcd endpoint {ep}"))?,
            );
        }
        Ok(Etcd {
            clients: Arc::new(clients),
            preferred: Arc::new(AtomicUsize::new(0)),
            attempt,
        })
    }

    fn current(&self) -> (usize, Client) {
        let i = self.preferred.load(Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// The member at `i` failed us: the next request goes to the next one.
    fn failed(&self, i: usize) {
        let _ = self.preferred.compare_exchange(
            i,
            (i + 1) % self.clients.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// `op` on each member in turn, from the preferred one, each try
    /// bounded by `attempt`; the last error if none answered.
    async fn any<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.clients.len() {
            let (i, client) = self.current();
            match tokio::time::timeout(self.attempt, op(client)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if lease_not_found(&e) => {
                    return Err(anyhow::Error::new(LeaseGone).context(what.to_string()));
                }
                Ok(Err(e)) => last = Some(anyhow::Error::from(e)),
                Err(_) => last = Some(anyhow::anyhow!("no answer within {:?}", self.attempt)),
            }
            self.failed(i);
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no endpoint"))
            .context(what.to_string()))
    }
}

/// A keepalive stream on one member. Dropped after a failure (the caller
/// opens another); dropping it after a failure moves on to the next member.
pub struct EtcdKeeper {
    keeper: etcd_client::LeaseKeeper,
    answers: etcd_client::LeaseKeepAliveStream,
    on: usize,
    etcd: Etcd,
    ok: bool,
}

impl Keeper for EtcdKeeper {
    async fn keep_alive(&mut self) -> Result<Ttl> {
        self.ok = false;
        self.keeper.keep_alive().await.context("keepalive")?;
        let ttl = match self.answers.message().await {
            Ok(Some(a)) => a.ttl(),
            Ok(None) => bail!("the keepalive stream ended"),
            // etcd ends the stream with NotFound for a revoked or expired lease.
            Err(e) if lease_not_found(&e) => 0,
            Err(e) => return Err(e).context("keepalive answer"),
        };
        self.ok = true;
        Ok(ttl)
    }
}

impl Drop for EtcdKeeper {
    fn drop(&mut self) {
        if !self.ok {
            self.etcd.failed(self.on);
        }
    }
}

pub struct EtcdWatch {
    stream: etcd_client::WatchStream,
}

impl WatchStream for EtcdWatch {
    async fn next(&mut self) -> Result<Option<Vec<Change>>> {
        let Some(r) = self.stream.message().await.context("watch")? else {
            return Ok(None);
        };
        if r.canceled() || r.compact_revision() != 0 {
            // Compacted past us or cancelled: read again.
            return Ok(None);
        }
        let mut out = Vec::new();
        for e in r.events() {
            let Some(kv) = e.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            out.push(match e.event_type() {
                EventType::Put => Change::Put {
                    key,
                    value: kv.value().to_vec(),
                },
                EventType::Delete => Change::Delete { key },
            });
        }
        Ok(Some(out))
    }
}

fn lease_not_found(e: &etcd_client::Error) -> bool {
    e.to_string().contains("requested lease not found")
}

fn with_lease(lease: i64) -> Option<PutOptions> {
    Some(PutOptions::new().with_lease(lease))
}

impl Backend for Etcd {
    type Keeper = EtcdKeeper;
    type Watch = EtcdWatch;

    async fn grant(&self, ttl_s: i64) -> Result<i64> {
        let r = self
            .any("granting a lease", |mut c| async move {
                c.lease_grant(ttl_s, None).await
            })
            .await?;
        Ok(r.id())
    }

    async fn time_to_live(&self, lease: i64) -> Result<Option<i64>> {
        let r = self
            .any("reading a lease", |mut c| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await?;
        Ok((r.ttl() > 0).then_some(r.ttl()))
    }

    async fn revoke(&self, lease: i64) -> Result<()> {
        let r = self
            .any("revoking a lease", |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            // Already gone: what the caller wanted.
            Err(e) if super::backend::lease_gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn keeper(&self, lease: i64) -> Result<EtcdKeeper> {
        let (on, mut client) = self.current();
        match tokio::time::timeout(self.attempt, client.lease_keep_alive(lease)).await {
            Ok(Ok((keeper, answers))) => Ok(EtcdKeeper {
                keeper,
                answers,
                on,
                etcd: self.clone(),
                ok: true,
            }),
            Ok(Err(e)) => {
                self.failed(on);
                Err(e).context("opening the keepalive stream")
            }
            Err(_) => {
                self.failed(on);
                bail!(
                    "opening the keepalive stream: no answer within {:?}",
                    self.attempt
                )
            }
        }
    }

    async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<()> {
        self.any(&format!("writing {key}"), |mut c| async move {
            c.put(key, value, with_lease(lease)).await
        })
        .await?;
        Ok(())
    }

    async fn create(&self, key: &str, value: &[u8], lease: i64) -> Result<bool> {
        let r = self
            .any(&format!("claiming {key}"), |mut c| async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, with_lease(lease))]);
                c.txn(txn).await
            })
            .await?;
        Ok(r.succeeded())
    }

    async fn delete_if(
        &self,
        key: &str,
        value: &[u8],
        then: Option<(&str, &[u8], i64)>,
    ) -> Result<bool> {
        let r = self
            .any(&format!("releasing {key}"), |mut c| async move {
                let mut ops = vec![TxnOp::delete(key, None)];
                if let Some((k, v, lease)) = then {
                    ops.push(TxnOp::put(k, v, with_lease(lease)));
                }
                let txn = Txn::new()
                    .when([Compare::value(key, CompareOp::Equal, value)])
                    .and_then(ops);
                c.txn(txn).await
            })
            .await?;
        Ok(r.succeeded())
    }

    async fn read(&self, prefix: &str) -> Result<(Vec<(String, Vec<u8>)>, i64)> {
        let r = self
            .any(&format!("reading {prefix}"), |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let revision = r.header().map_or(0, |h| h.revision());
        let kvs = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok((kvs, revision))
    }

    async fn watch(&self, prefix: &str, revision: i64) -> Result<EtcdWatch> {
        let stream = self
            .any(&format!("watching {prefix}"), |mut c| async move {
                c.watch(
                    prefix,
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                )
                .await
            })
            .await?;
        Ok(EtcdWatch { stream })
    }

    fn failover(&self) {
        let (i, _) = self.current();
        self.failed(i);
    }
}
