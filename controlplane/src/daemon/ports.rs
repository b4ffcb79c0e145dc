//! Port states from link events and dumps, and the engine's inputs built
//! from them.
use super::monitor::LinkEvent;
use super::{Daemon, metrics};
use crate::decide::{Inputs, Link, PortState};
use crate::protocol::{Event, LinkCondition, PortCondition};
use baton_common::MAX_COUNTED_PORTS;
use baton_config::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tracing::info;

pub struct Port {
    pub ifindex: Option<u32>,
    pub admin_up: bool,
    pub carrier: bool,
    pub state: PortState,
    pub changed: Instant,
}

/// The configured ports as the start-up dump shows them: their state holds
/// since start (a port down at start counts as failed at once).
pub fn from_dump(config: &Config, links: &[LinkEvent]) -> BTreeMap<String, Port> {
    let now = Instant::now();
    config
        .ports
        .keys()
        .map(|name| {
            let link = links.iter().find(|l| &l.name == name);
            let up = link.is_some_and(LinkEvent::is_up);
            let port = Port {
                ifindex: link.map(|l| l.ifindex),
                admin_up: link.is_some_and(|l| l.admin_up),
                carrier: link.is_some_and(|l| l.carrier),
                state: PortState {
                    link: if up { Link::Up } else { Link::Down },
                    since: Duration::ZERO,
                    at_start: true,
                },
                changed: now,
            };
            (name.clone(), port)
        })
        .collect()
}

pub fn link_condition(p: &Port) -> LinkCondition {
    match (p.ifindex.is_some(), p.admin_up, p.carrier) {
        (false, _, _) => LinkCondition::Missing,
        (true, false, _) => LinkCondition::AdminDown,
        (true, true, false) => LinkCondition::NoCarrier,
        (true, true, true) => LinkCondition::Up,
    }
}

impl Daemon {
    /// A link event; true when it changed a configured port. A port that
    /// appears (or comes back as a new device) gets its programs and a full
    /// reconcile.
    pub(super) fn on_link(&mut self, ev: LinkEvent) -> bool {
        let now = self.now();
        let Some((name, port)) = self
            .ports
            .iter_mut()
            .find(|(n, p)| **n == ev.name || (p.ifindex == Some(ev.ifindex) && ev.removed))
        else {
            return false;
        };
        let name = name.clone();
        let ifindex = if ev.removed { None } else { Some(ev.ifindex) };
        let appeared = ifindex.is_some() && port.ifindex != ifindex;
        let changed =
            port.ifindex != ifindex || port.admin_up != ev.admin_up || port.carrier != ev.carrier;
        port.ifindex = ifindex;
        port.admin_up = ev.admin_up;
        port.carrier = ev.carrier;
        let link = if ev.is_up() { Link::Up } else { Link::Down };
        if port.state.link != link {
            port.state = PortState {
                link,
                since: now,
                at_start: false,
            };
            port.changed = Instant::now();
            self.last_link_event = port.changed;
            info!(port = %name, link = %link_condition(port), "link changed");
        }
        if appeared {
            info!(port = %name, ifindex = ev.ifindex, "port appeared");
            self.attach(std::slice::from_ref(&name));
            self.actuator.prepare_port(ev.ifindex);
            self.dirty.all = true;
        }
        changed
    }

    /// A fresh link dump: every configured port is set from it; a port
    /// missing from it is gone. True when a port changed.
    pub(super) fn apply_link_dump(&mut self, links: &[LinkEvent]) -> bool {
        let mut changed = false;
        let names: Vec<String> = self.ports.keys().cloned().collect();
        for name in names {
            let ev = match links.iter().find(|l| l.name == name) {
                Some(l) => l.clone(),
                None => match self.ports[&name].ifindex {
                    Some(ifindex) => LinkEvent {
                        ifindex,
                        name: name.clone(),
                        admin_up: false,
                        carrier: false,
                        removed: true,
                        mac: None,
                        lower: None,
                    },
                    None => continue,
                },
            };
            changed |= self.on_link(ev);
        }
        changed
    }

    pub(super) fn port_name(&self, ifindex: u32) -> Option<&String> {
        self.ports
            .iter()
            .find(|(_, p)| p.ifindex == Some(ifindex))
            .map(|(n, _)| n)
    }

    pub(super) fn port_condition(&self, name: &str) -> PortCondition {
        let Some(p) = self.ports.get(name).filter(|p| p.ifindex.is_some()) else {
            return PortCondition::Missing;
        };
        let t = &self.config.timers;
        let elapsed = self.now().saturating_sub(p.state.since);
        match p.state.link {
            Link::Up if p.state.at_start || elapsed >= t.hold_up => PortCondition::Up,
            Link::Up => PortCondition::Settling,
            Link::Down if p.state.at_start || elapsed >= t.hold_down => PortCondition::Failed,
            Link::Down => PortCondition::HeldDown,
        }
    }

    pub(super) fn note_port_states(&mut self) {
        let names: Vec<String> = self.ports.keys().cloned().collect();
        for name in names {
            let state = self.port_condition(&name);
            if self.port_states.get(&name) != Some(&state) {
                let link = link_condition(&self.ports[&name]);
                info!(port = %name, %state, %link, "port state");
                self.metrics
                    .port_up
                    .get_or_create(&metrics::PortLabel { port: name.clone() })
                    .set(i64::from(state == PortCondition::Up));
                self.emit(Event::Port {
                    at_ms: self.at_ms(),
                    port: name.clone(),
                    link,
                    state,
                });
                self.port_states.insert(name, state);
            }
        }
    }

    /// Ifindexes of the ports the dataplane counts an instance on: its
    /// first configured ports (0 for one that does not exist now).
    pub(super) fn counted_ports(
        &self,
        inst: &baton_config::model::Instance,
    ) -> [u32; MAX_COUNTED_PORTS] {
        let mut out = [0; MAX_COUNTED_PORTS];
        for (slot, port) in out.iter_mut().zip(&inst.ports) {
            *slot = self.ports.get(port).and_then(|p| p.ifindex).unwrap_or(0);
        }
        out
    }

    /// Runs `f` on the engine's inputs as they are now: the states of the
    /// ports that exist, the (instance, port) pairs a probe found in use,
    /// the placement and the clock.
    pub(super) fn with_inputs<R>(&self, f: impl FnOnce(&Inputs) -> R) -> R {
        let ports: BTreeMap<String, PortState> = self
            .ports
            .iter()
            .filter(|(_, p)| p.ifindex.is_some())
            .map(|(n, p)| (n.clone(), p.state))
            .collect();
        let in_use: BTreeSet<(String, String)> = self.in_use.keys().cloned().collect();
        let now = Instant::now();
        let retry_at: BTreeMap<(String, String), Duration> = self
            .failed
            .iter()
            .map(|(k, until)| (k.clone(), self.now() + until.saturating_duration_since(now)))
            .collect();
        f(&Inputs {
            config: &self.config,
            ports: &ports,
            cluster: self.cluster_view.as_ref(),
            in_use: &in_use,
            retry_at: &retry_at,
            placement: &self.placement,
            now: self.now(),
        })
    }
}
