//! Address defence while placed (RFC 5227 section 2.4): another host's ARP
//! or NA naming an address baton holds, from a MAC that is not ours, is a
//! conflict. It is reported at once (event, status, metric) and defended
//! with one announcement at most every DEFEND_INTERVAL; the address is kept
//! (2.4 (c): a service address is not given up to a stranger), and the
//! announcements stay rate-limited so two defenders cannot storm.
use super::Context;
use super::actuator::Actuator;
use super::on_port::OnPort;
use crate::daemon::wire::announce;
use crate::netdev;
use crate::protocol::{ConflictRecord, Event};
use baton_config::model::mac_string;
use baton_config::{InstanceName, PortName};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::warn;

/// RFC 5227's DEFEND_INTERVAL.
const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

struct Conflict {
    record: ConflictRecord,
    last_defence: Option<Instant>,
}

/// The last conflict of each placed instance.
#[derive(Default)]
pub struct Defence {
    conflicts: BTreeMap<InstanceName, Conflict>,
}

impl Defence {
    /// The last conflict seen for `instance`, for status.
    pub fn record(&self, instance: &InstanceName) -> Option<&ConflictRecord> {
        self.conflicts.get(instance).map(|c| &c.record)
    }

    /// One claim from the watch; true when it was a conflict.
    pub fn on_sighting(
        &mut self,
        (ifindex, seen): announce::Seen,
        ctx: &Context,
        placement: &BTreeMap<InstanceName, PortName>,
        actuator: &mut Actuator,
    ) -> bool {
        // A probe only asks; the kernel answers it for an address we hold.
        if seen.probe {
            return false;
        }
        let (config, ports, report) = (ctx.config, ctx.ports, ctx.report);
        // Counted once, on the owner port: the same broadcast also reaches
        // the other ports of the segment and the macvlans stacked on them.
        let Some(port) = ports.name_of(ifindex).cloned() else {
            return false;
        };
        let Some((name, inst)) = config
            .instances
            .iter()
            .find(|(_, i)| i.address.addr() == seen.addr)
        else {
            return false;
        };
        let Some(owner) = placement.get(name).cloned().filter(|o| *o == port) else {
            return false;
        };
        let ours = inst.mac == Some(seen.mac)
            || config.instances.values().any(|i| i.mac == Some(seen.mac))
            || ports
                .iter()
                .any(|(p, _)| netdev::mac_of(p).ok() == Some(seen.mac));
        if ours {
            return false;
        }
        let vlan = inst.vlan;
        let now = Instant::now();
        let entry = self.conflicts.entry(name.clone()).or_insert(Conflict {
            record: ConflictRecord {
                by: String::new(),
                port: PortName::default(),
                at_ms: 0,
                count: 0,
                defended: false,
            },
            last_defence: None,
        });
        let defend = entry
            .last_defence
            .is_none_or(|t| now.duration_since(t) >= DEFEND_INTERVAL);
        if defend {
            entry.last_defence = Some(now);
        }
        let by = mac_string(&seen.mac);
        let at_ms = report.at_ms();
        entry.record = ConflictRecord {
            by: by.clone(),
            port: port.clone(),
            at_ms,
            count: entry.record.count + 1,
            defended: defend,
        };
        if defend {
            let on = OnPort {
                name,
                inst,
                port: &owner,
            };
            let sent = ports
                .ifindex(&owner)
                .zip(on.entry(ports).ok())
                .map(|(ifindex, e)| actuator.announce_now(ifindex, e.mac, seen.addr, vlan));
            if let Some(Err(e)) = sent {
                warn!(instance = %name, error = %format!("{e:#}"), "defending the address");
            }
        }
        report.report(Event::Conflict {
            at_ms,
            instance: name.clone(),
            port,
            by,
            defended: defend,
        });
        true
    }
}
