//! A cluster member's client connections, for a taker's tickle ACKs: every
//! `SAMPLE` the established TCP sockets on each instance's address (read
//! exactly by the `iter/tcp` program), at most `MAX_CONNS` per instance,
//! go to the agent when they changed; it publishes those of the instances
//! it holds.
use crate::cluster::ToAgent;
use crate::cluster::records::Conn;
use crate::dataplane::sockets::{TCP_CLOSE_WAIT, TCP_ESTABLISHED, TcpSocket, TcpSockets};
use baton_config::InstanceName;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

const SAMPLE: Duration = Duration::from_millis(500);
/// Per instance: bounds the record in etcd (about 60 bytes a connection).
pub const MAX_CONNS: usize = 256;

/// Samples until the agent's end closes.
pub fn spawn(
    sockets: Arc<Mutex<TcpSockets>>,
    addrs: BTreeMap<InstanceName, IpAddr>,
    to_agent: mpsc::UnboundedSender<ToAgent>,
) {
    tokio::spawn(async move {
        let mut last: BTreeMap<InstanceName, Vec<Conn>> = BTreeMap::new();
        let mut tick = tokio::time::interval(SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = sockets.clone();
            let all = tokio::task::spawn_blocking(move || {
                s.lock()
                    .map_err(|_| anyhow::anyhow!("socket reader poisoned"))
                    .and_then(|mut s| s.read())
            })
            .await;
            let all = match all {
                Ok(Ok(all)) => all,
                Ok(Err(e)) => {
                    warn!(error = %format!("{e:#}"), "reading TCP sockets for the cluster");
                    continue;
                }
                Err(_) => continue,
            };
            for (instance, addr) in &addrs {
                let conns = on_address(&all, *addr);
                if last.get(instance) == Some(&conns) {
                    continue;
                }
                let msg = ToAgent::Connections {
                    instance: instance.clone(),
                    conns: conns.clone(),
                };
                if to_agent.send(msg).is_err() {
                    return;
                }
                last.insert(instance.clone(), conns);
            }
        }
    });
}

/// The connections a taker can tickle: established (or half-closed by the
/// client) sockets on `addr`, sorted, at most [`MAX_CONNS`].
pub fn on_address(all: &[TcpSocket], addr: IpAddr) -> Vec<Conn> {
    let mut conns: Vec<Conn> = all
        .iter()
        .filter(|s| s.local == addr && matches!(s.state, TCP_ESTABLISHED | TCP_CLOSE_WAIT))
        .map(|s| Conn {
            local_port: s.local_port,
            remote: s.remote,
            remote_port: s.remote_port,
        })
        .collect();
    conns.sort();
    conns.dedup();
    conns.truncate(MAX_CONNS);
    conns
}
