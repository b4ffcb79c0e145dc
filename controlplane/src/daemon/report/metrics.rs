//! Prometheus metrics (OpenMetrics text) on a small HTTP endpoint: port
//! state, instance owner, moves by kind and result, move durations, refusals
//! by reason, and the dataplane's per-instance, per-port counters (read from
//! the BPF maps at scrape time).
use crate::dataplane::{self, PinDir};
use anyhow::{Context as _, Result};
use baton_common::InstancePortKey;
use baton_config::{InstanceName, PortName};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabel {
    pub port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OwnerLabels {
    pub instance: String,
    pub port: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MoveLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabel {
    pub what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PduLabels {
    pub instance: String,
    pub port: String,
    /// "rx" (to the instance, at ingress) or "tx" (from it, at egress).
    pub direction: String,
    pub opcode: String,
}

type Counters = Family<OwnerLabels, Counter<u64, AtomicU64>>;

pub struct Metrics {
    registry: Registry,
    pub port_up: Family<PortLabel, Gauge>,
    pub owner: Family<OwnerLabels, Gauge>,
    pub moves: Family<MoveLabels, Counter>,
    pub move_seconds: Histogram,
    pub refusals: Family<ReasonLabel, Counter>,
    pub repairs: Family<RepairLabel, Counter>,
    pub repair_failures: Counter,
    pub resyncs: Counter,
    pub conflicts: Family<InstanceLabel, Counter>,
    pub revived_sockets: Counter,
    pub revert_icmps: Counter,
    pub tickle_acks: Counter,
    pub cluster_events: Family<KindLabel, Counter>,
    pub check_ok: Family<CheckLabel, Gauge>,
    rx_packets: Counters,
    rx_bytes: Counters,
    solicits: Counters,
    solicits_dropped: Counters,
    egress_redirected: Counters,
    tags_popped: Counters,
    tags_pushed: Counters,
    iscsi_pdus: Family<PduLabels, Counter<u64, AtomicU64>>,
    iscsi_resyncs: Counters,
    /// Names for the dataplane's ids: instance id -> name, ifindex -> port.
    pub names: Mutex<(BTreeMap<u32, String>, BTreeMap<u32, String>)>,
    /// The instance table's entries as the daemon last wrote them: a
    /// scrape reads their counters only (it opened the whole table before:
    /// 32,768 index reads a scrape).
    pub counted: Mutex<Vec<baton_common::InstanceEntry>>,
    pins: PinDir,
}

impl Metrics {
    pub fn new(pins: PinDir) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("baton");
        let m = Metrics {
            port_up: Family::default(),
            owner: Family::default(),
            moves: Family::default(),
            // 100 µs .. ~3 s.
            move_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            refusals: Family::default(),
            repairs: Family::default(),
            repair_failures: Counter::default(),
            resyncs: Counter::default(),
            conflicts: Family::default(),
            cluster_events: Family::default(),
            check_ok: Family::default(),
            revived_sockets: Counter::default(),
            revert_icmps: Counter::default(),
            tickle_acks: Counter::default(),
            rx_packets: Family::default(),
            rx_bytes: Family::default(),
            solicits: Family::default(),
            solicits_dropped: Family::default(),
            egress_redirected: Family::default(),
            tags_popped: Family::default(),
            tags_pushed: Family::default(),
            iscsi_pdus: Family::default(),
            iscsi_resyncs: Family::default(),
            names: Mutex::default(),
            counted: Mutex::default(),
            pins,
            registry: Registry::default(),
        };
        registry.register(
            "port_up",
            "1 when the port is usable (up past hold_up), else 0",
            m.port_up.clone(),
        );
        registry.register(
            "instance_owner",
            "1 for the port an instance's address lives on",
            m.owner.clone(),
        );
        registry.register(
            "moves",
            "Moves carried out, by kind and result",
            m.moves.clone(),
        );
        registry.register(
            "move_duration_seconds",
            "Time from a move's start to its old port cleaned",
            m.move_seconds.clone(),
        );
        registry.register(
            "refusals",
            "Ports refused for an instance, by reason",
            m.refusals.clone(),
        );
        registry.register(
            "repairs",
            "Differences between the kernel and the desired state that baton put right, by what",
            m.repairs.clone(),
        );
        registry.register(
            "repair_failures",
            "Reconciles of an instance that failed (retried with backoff)",
            m.repair_failures.clone(),
        );
        registry.register(
            "resyncs",
            "Full resyncs after events may have been lost (netlink overrun, monitor restart)",
            m.resyncs.clone(),
        );
        registry.register(
            "address_conflicts",
            "ARP/ND claims by another host for an address baton holds, per instance",
            m.conflicts.clone(),
        );
        registry.register(
            "cluster_events",
            "Cluster events of this member: claimed, released, lost, revoked (a silent member), fenced, unfenced, withdrawn",
            m.cluster_events.clone(),
        );
        registry.register(
            "check_ok",
            "1 while a [health] check passes, 0 while it fails",
            m.check_ok.clone(),
        );
        registry.register(
            "revived_sockets",
            "TCP sockets whose retransmission backoff a move ended (RFC 6069)",
            m.revived_sockets.clone(),
        );
        registry.register(
            "revert_icmps",
            "ICMP destination unreachables sent to end a backoff (both ends)",
            m.revert_icmps.clone(),
        );
        registry.register(
            "tickle_acks",
            "Tickle ACKs sent to a taken-over instance's client connections (they answer, this host resets them)",
            m.tickle_acks.clone(),
        );
        registry.register(
            "dataplane_rx_packets",
            "Frames to an instance seen at ingress, per port",
            m.rx_packets.clone(),
        );
        registry.register(
            "dataplane_rx_bytes",
            "Bytes to an instance seen at ingress, per port",
            m.rx_bytes.clone(),
        );
        registry.register(
            "dataplane_solicits",
            "ARP requests / neighbour solicitations for an instance, per port",
            m.solicits.clone(),
        );
        registry.register(
            "dataplane_solicits_dropped",
            "Of those, dropped on a port that is not the owner",
            m.solicits_dropped.clone(),
        );
        registry.register(
            "dataplane_egress_redirected",
            "Frames from an instance redirected to its owner by TC egress",
            m.egress_redirected.clone(),
        );
        registry.register(
            "dataplane_vlan_tags_popped",
            "VLAN tags taken off at ingress for an instance without a VLAN device",
            m.tags_popped.clone(),
        );
        registry.register(
            "dataplane_vlan_tags_pushed",
            "VLAN tags put on at egress for such an instance",
            m.tags_pushed.clone(),
        );
        registry.register(
            "iscsi_pdus",
            "iSCSI PDUs on an instance's iSCSI ports, by port, direction and opcode",
            m.iscsi_pdus.clone(),
        );
        registry.register(
            "iscsi_resyncs",
            "Times an iSCSI flow lost its place in the PDU stream (counting paused until found again)",
            m.iscsi_resyncs.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Marks `port` as the owner of `instance` (and no other port).
    pub fn set_owner(&self, instance: &InstanceName, ports: &[PortName], owner: Option<&PortName>) {
        for p in ports {
            let v = i64::from(Some(p) == owner);
            self.owner
                .get_or_create(&OwnerLabels {
                    instance: instance.to_string(),
                    port: p.to_string(),
                })
                .set(v);
        }
    }

    /// The OpenMetrics text, dataplane counters read now.
    pub fn render(&self) -> Result<String> {
        if let Ok(names) = self.names.lock() {
            // The dataplane's (id, ifindex) as instance and port names.
            let labels_of = |k: &InstancePortKey| {
                Some(OwnerLabels {
                    instance: names.0.get(&k.id)?.clone(),
                    port: names.1.get(&k.ifindex)?.clone(),
                })
            };
            let counted = self.counted.lock().map(|c| c.clone()).unwrap_or_default();
            for (k, c) in dataplane::counters_of_entries(&self.pins, &counted).unwrap_or_default() {
                let Some(labels) = labels_of(&k) else {
                    continue;
                };
                for (family, v) in [
                    (&self.rx_packets, c.rx_packets),
                    (&self.rx_bytes, c.rx_bytes),
                    (&self.solicits, c.solicits),
                    (&self.solicits_dropped, c.solicits_dropped),
                    (&self.egress_redirected, c.egress_redirected),
                    (&self.tags_popped, c.tags_popped),
                    (&self.tags_pushed, c.tags_pushed),
                ] {
                    family
                        .get_or_create(&labels)
                        .inner()
                        .store(v, Ordering::Relaxed);
                }
            }
            for (k, c) in dataplane::pdu_counters(&self.pins).unwrap_or_default() {
                let Some(labels) = labels_of(&k) else {
                    continue;
                };
                for (dir, direction) in [(baton_common::RX, "rx"), (baton_common::TX, "tx")] {
                    for (op, n) in c.pdus[dir].iter().enumerate() {
                        let Some(opcode) = baton_common::iscsi_opcode_name(op as u8) else {
                            continue;
                        };
                        if *n == 0 {
                            continue;
                        }
                        let pdu = PduLabels {
                            instance: labels.instance.clone(),
                            port: labels.port.clone(),
                            direction: direction.into(),
                            opcode: opcode.into(),
                        };
                        self.iscsi_pdus
                            .get_or_create(&pdu)
                            .inner()
                            .store(*n, Ordering::Relaxed);
                    }
                }
                self.iscsi_resyncs
                    .get_or_create(&labels)
                    .inner()
                    .store(c.resyncs, Ordering::Relaxed);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .context("encoding metrics")?;
        Ok(out)
    }
}

/// Serves GET /metrics on `addr`. A minimal HTTP/1.1 responder: one request
/// per connection, nothing else is served.
/// At most this many connections at once; more are closed at once.
const MAX_SCRAPES: usize = 16;
/// A scrape's whole life: request head read, body written. An idle
/// connection holds a slot no longer than this.
const SCRAPE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics: binding {addr}"))?;
    info!(%addr, "metrics endpoint");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    let mut backoff = super::control::AcceptBackoff::default();
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff.reset();
                s
            }
            Err(e) => {
                backoff.wait("metrics", &e).await;
                continue;
            }
        };
        // Past the cap: closed at once (never queued behind idle ones).
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(SCRAPE_DEADLINE, scrape(&mut stream, &metrics))
                .await
                .is_err()
            {
                warn!("metrics client: deadline passed; closed");
            }
        });
    }
}

async fn scrape(stream: &mut tokio::net::TcpStream, metrics: &Metrics) {
    // Read the request head (it may come in several segments), at most 4 KiB.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 4096 {
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let request = String::from_utf8_lossy(&buf);
    let response = if request.starts_with("GET /metrics ") {
        match metrics.render() {
            Ok(body) => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            Err(e) => {
                format!("HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n{e:#}\n")
            }
        }
    } else {
        "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 21\r\n\r\nonly GET /metrics is\n".to_string()
    };
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        warn!(error = %e, "metrics client");
    }
}
