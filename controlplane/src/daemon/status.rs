//! What the daemon reports: `baton status` and the metrics' names and owners.
use super::Daemon;
use super::ports::link_condition;
use crate::dataplane;
use crate::protocol::{InstanceStatus, PortStatus, PortTraffic, Refusal, Status};

impl Daemon {
    /// Tells the metrics where every instance is and what the ids mean.
    pub(super) fn publish_placement(&self) {
        for (name, inst) in &self.config.instances {
            self.metrics.set_owner(
                name,
                &inst.ports,
                self.placement.get(name).map(String::as_str),
            );
        }
        if let Ok(mut counted) = self.metrics.counted.lock() {
            *counted = self.actuator.table.counted();
        }
        if let Ok(mut names) = self.metrics.names.lock() {
            names.0 = self
                .config
                .instances
                .keys()
                .map(|n| (baton_config::instance_id(n), n.clone()))
                .collect();
            names.1 = self
                .ports
                .iter()
                .filter_map(|(n, p)| Some((p.ifindex?, n.clone())))
                .collect();
        }
    }

    pub(super) fn status(&self) -> Status {
        let ifindexes: Vec<u32> = self.ports.values().filter_map(|p| p.ifindex).collect();
        let stats = dataplane::read_port_stats(&self.pins, &ifindexes).unwrap_or_default();
        let counters = self.actuator.table.counters().unwrap_or_default();
        let mono_now = crate::dataplane::fence::monotonic_ns();
        let ports = self
            .ports
            .iter()
            .map(|(name, p)| PortStatus {
                name: name.clone(),
                ifindex: p.ifindex,
                state: self.port_condition(name),
                link: link_condition(p),
                since_ms: p.changed.elapsed().as_millis() as u64,
                rx_frames: stats
                    .iter()
                    .find(|(i, _)| Some(*i) == p.ifindex)
                    .map_or(0, |(_, s)| s.frames().packets),
            })
            .collect();
        let instances = self
            .config
            .instances
            .iter()
            .map(|(name, inst)| {
                let id = baton_config::instance_id(name);
                let traffic = counters
                    .iter()
                    .filter(|(k, _)| k.id == id)
                    .filter_map(|(k, c)| {
                        Some(PortTraffic {
                            port: self.port_name(k.ifindex)?.clone(),
                            rx_packets: c.rx_packets,
                            last_seen_ms: (c.last_seen_ns > 0)
                                .then(|| mono_now.saturating_sub(c.last_seen_ns) / 1_000_000),
                        })
                    })
                    .collect();
                InstanceStatus {
                    name: name.clone(),
                    address: inst.address.to_string(),
                    ports: inst.ports.clone(),
                    owner: self.placement.get(name).cloned(),
                    refused: self
                        .refused
                        .get(name)
                        .map(|r| {
                            r.iter()
                                .map(|(port, reason)| Refusal {
                                    port: port.clone(),
                                    reason: reason.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    last_move: self.last_move.get(name).cloned(),
                    last_repair: self.last_repair.get(name).cloned(),
                    error: self.trouble.get(name).map(|t| t.error.clone()),
                    conflict: self.conflicts.get(name).map(|c| c.record.clone()),
                    traffic,
                    cluster_owner: self.cluster_state.owners.get(name).cloned(),
                    withheld: self.cluster_view.as_ref().and_then(|v| v.refusal(name)),
                }
            })
            .collect();
        Status {
            config: self.opts.config.display().to_string(),
            uptime_ms: self.at_ms(),
            ports,
            instances,
            cluster: self.cluster_status(),
        }
    }
}
