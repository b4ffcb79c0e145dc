//! What the daemon reports: `baton status` and the metrics' names and owners.
use crate::daemon::placement::Context;
use crate::daemon::placement::actuator::Actuator;
use crate::daemon::placement::defence::Defence;
use crate::daemon::placement::state::PlacementState;
use crate::daemon::ports::link_condition;
use crate::dataplane::{self, PinDir};
use crate::decide::Reason;
use crate::protocol::{InstanceStatus, PortStatus, PortTraffic, Refusal, Status};

/// Tells the metrics where every instance is and what the ids mean.
pub fn publish_placement(ctx: &Context, state: &PlacementState, actuator: &Actuator) {
    let metrics = &ctx.report.metrics;
    for (name, inst) in &ctx.config.instances {
        metrics.set_owner(name, &inst.ports, state.placement.get(name));
    }
    if let Ok(mut counted) = metrics.counted.lock() {
        *counted = actuator.table.counted();
    }
    if let Ok(mut names) = metrics.names.lock() {
        names.0 = ctx
            .config
            .instances
            .keys()
            .map(|n| (baton_config::instance_id(n), n.to_string()))
            .collect();
        names.1 = ctx
            .ports
            .iter()
            .filter_map(|(n, p)| Some((p.ifindex?, n.to_string())))
            .collect();
    }
}

/// What this daemon's parts hold now, for `baton status`.
pub struct Sources<'a> {
    pub ctx: Context<'a>,
    pub state: &'a PlacementState,
    pub defence: &'a Defence,
    pub actuator: &'a Actuator,
    pub pins: &'a PinDir,
    pub config_path: &'a std::path::Path,
}

pub fn status(s: &Sources) -> Status {
    let Sources {
        ctx,
        state,
        defence,
        actuator,
        pins,
        config_path,
    } = s;
    let ports = ctx.ports;
    let ifindexes: Vec<u32> = ports.ifindexes().collect();
    let stats = dataplane::read_port_stats(pins, &ifindexes).unwrap_or_default();
    let counters = actuator.table.counters().unwrap_or_default();
    let mono_now = crate::dataplane::fence::monotonic_ns();
    let now = ctx.report.now();
    let port_status = ports
        .iter()
        .map(|(name, p)| PortStatus {
            name: name.clone(),
            ifindex: p.ifindex,
            state: ports.condition(name, ctx.config, now),
            link: link_condition(p),
            since_ms: p.changed.elapsed().as_millis() as u64,
            rx_frames: stats
                .iter()
                .find(|(i, _)| Some(*i) == p.ifindex)
                .map_or(0, |(_, s)| s.frames().packets),
        })
        .collect();
    let instances = ctx
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
                        port: ports.name_of(k.ifindex)?.clone(),
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
                owner: state.placement.get(name).cloned(),
                refused: state
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
                last_move: state.last_move.get(name).cloned(),
                last_repair: state.last_repair.get(name).cloned(),
                error: state.trouble.get(name).map(|t| t.error.clone()),
                conflict: defence.record(name).cloned(),
                traffic,
                cluster_owner: ctx.cluster.owner_of(name).cloned(),
                withheld: ctx.cluster.view().and_then(|v| v.refusal(name)),
                unserved: ctx
                    .health
                    .failing_for(ctx.config, inst, now)
                    .map(|check| Reason::CheckFailed { check })
                    .or_else(|| ctx.cluster.kept_because(name))
                    .or_else(|| {
                        // Only of an instance this member holds (or a
                        // single host's): another member's is not unserved here.
                        let none = !ports.any_serves(&inst.ports, ctx.config, now);
                        (none && ctx.cluster.may_hold(name)).then_some(Reason::NoLocalPort)
                    }),
            }
        })
        .collect();
    Status {
        config: config_path.display().to_string(),
        uptime_ms: ctx.report.at_ms(),
        ports: port_status,
        instances,
        cluster: ctx.cluster.status(ctx.config),
        checks: ctx.health.status(ctx.config, now),
    }
}
