//! Address defence while placed (RFC 5227 section 2.4): another host's ARP
//! or NA naming an address baton holds, from a MAC that is not ours, is a
//! conflict. It is reported at once (event, status, metric) and defended
//! with one announcement at most every DEFEND_INTERVAL; the address is kept
//! (2.4 (c): a service address is not given up to a stranger), and the
//! announcements stay rate-limited so two defenders cannot storm.
use super::{Daemon, announce, metrics};
use crate::netdev;
use crate::protocol::{ConflictRecord, Event};
use baton_config::model::mac_string;
use std::time::{Duration, Instant};
use tracing::warn;

/// RFC 5227's DEFEND_INTERVAL.
const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

pub struct Conflict {
    pub record: ConflictRecord,
    last_defence: Option<Instant>,
}

impl Daemon {
    /// One claim from the watch; true when it was a conflict.
    pub(super) fn on_claim(&mut self, (ifindex, claim): announce::Seen) -> bool {
        // A probe only asks; the kernel answers it for an address we hold.
        if claim.probe {
            return false;
        }
        // Counted once, on the owner port: the same broadcast also reaches
        // the other ports of the segment and the macvlans stacked on them.
        let Some(port) = self.port_name(ifindex).cloned() else {
            return false;
        };
        let Some((name, inst)) = self
            .config
            .instances
            .iter()
            .find(|(_, i)| i.address.addr() == claim.addr)
        else {
            return false;
        };
        let Some(owner) = self.placement.get(name).cloned().filter(|o| *o == port) else {
            return false;
        };
        let ours = inst.mac == Some(claim.mac)
            || self
                .config
                .instances
                .values()
                .any(|i| i.mac == Some(claim.mac))
            || self
                .ports
                .keys()
                .any(|p| netdev::mac_of(p).ok() == Some(claim.mac));
        if ours {
            return false;
        }
        let (name, vlan) = (name.clone(), inst.vlan);
        let now = Instant::now();
        let entry = self.conflicts.entry(name.clone()).or_insert(Conflict {
            record: ConflictRecord {
                by: String::new(),
                port: String::new(),
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
        let by = mac_string(&claim.mac);
        let at_ms = self.start.elapsed().as_millis() as u64;
        entry.record = ConflictRecord {
            by: by.clone(),
            port: port.clone(),
            at_ms,
            count: entry.record.count + 1,
            defended: defend,
        };
        warn!(instance = %name, %by, %port, defended = defend, "address conflict: another host claims the address");
        self.metrics
            .conflicts
            .get_or_create(&metrics::InstanceLabel {
                instance: name.clone(),
            })
            .inc();
        if defend {
            let sent = self
                .ports
                .get(&owner)
                .and_then(|p| p.ifindex)
                .zip(self.entry_on(&name, &owner).ok())
                .map(|(ifindex, e)| self.actuator.announce_now(ifindex, e.mac, claim.addr, vlan));
            if let Some(Err(e)) = sent {
                warn!(instance = %name, error = %format!("{e:#}"), "defending the address");
            }
        }
        self.emit(Event::Conflict {
            at_ms,
            instance: name,
            port,
            by,
            defended: defend,
        });
        true
    }
}
