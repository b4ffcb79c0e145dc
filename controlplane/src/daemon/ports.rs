//! The configured ports as the kernel shows them: state with timestamps,
//! from link events and dumps, read against the hold timers by the engine's
//! one rule ([`crate::decide::port_condition`]).
use super::netlink::decode::LinkEvent;
use super::report::Reporter;
use crate::decide::{Link, PortState};
use crate::protocol::{Event, LinkCondition, PortCondition};
use baton_common::MAX_COUNTED_PORTS;
use baton_config::Config;
use baton_config::PortName;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tracing::info;

pub struct Port {
    pub ifindex: Option<u32>,
    pub admin_up: bool,
    pub carrier: bool,
    pub state: PortState,
    pub changed: Instant,
}

pub fn link_condition(p: &Port) -> LinkCondition {
    match (p.ifindex.is_some(), p.admin_up, p.carrier) {
        (false, _, _) => LinkCondition::Missing,
        (true, false, _) => LinkCondition::AdminDown,
        (true, true, false) => LinkCondition::NoCarrier,
        (true, true, true) => LinkCondition::Up,
    }
}

/// What link events did to the table.
#[derive(Default)]
pub struct LinkChange {
    /// A configured port changed (the engine decides again).
    pub changed: bool,
    /// Ports that appeared (or came back as new devices): they need their
    /// programs and a full reconcile.
    pub appeared: Vec<(PortName, u32)>,
}

pub struct PortTable {
    ports: BTreeMap<PortName, Port>,
    /// Conditions last reported, so timer-driven changes (held-down ->
    /// failed, settling -> up) become events too.
    reported: BTreeMap<PortName, PortCondition>,
    /// When the last link change arrived: a move's trace starts there.
    pub last_link_event: Instant,
}

impl PortTable {
    /// The configured ports as the start-up dump shows them: their state
    /// holds since start (a port down at start counts as failed at once).
    pub fn from_dump(config: &Config, links: &[LinkEvent]) -> PortTable {
        let now = Instant::now();
        let ports = config
            .ports
            .keys()
            .map(|name| {
                let link = links.iter().find(|l| l.name == name.as_str());
                let port = Port {
                    ifindex: link.map(|l| l.ifindex),
                    admin_up: link.is_some_and(|l| l.admin_up),
                    carrier: link.is_some_and(|l| l.carrier),
                    state: PortState::at_start(link.map_or(Link::Down, LinkEvent::link)),
                    changed: now,
                };
                (name.clone(), port)
            })
            .collect();
        PortTable {
            ports,
            reported: BTreeMap::new(),
            last_link_event: now,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Port> {
        self.ports.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PortName, &Port)> {
        self.ports.iter()
    }

    /// The port's device now (None: missing, or not a configured port).
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.ports.get(name)?.ifindex
    }

    /// The devices of the ports that exist now.
    pub fn ifindexes(&self) -> impl Iterator<Item = u32> + '_ {
        self.ports.values().filter_map(|p| p.ifindex)
    }

    /// The ports that exist now.
    pub fn present(&self) -> Vec<PortName> {
        self.ports
            .iter()
            .filter(|(_, p)| p.ifindex.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn name_of(&self, ifindex: u32) -> Option<&PortName> {
        self.ports
            .iter()
            .find(|(_, p)| p.ifindex == Some(ifindex))
            .map(|(n, _)| n)
    }

    /// The port exists and its link is up (hold timers aside).
    pub fn link_up(&self, name: &str) -> bool {
        self.ports
            .get(name)
            .is_some_and(|p| p.ifindex.is_some() && p.state.link == Link::Up)
    }

    /// The engine's port states: those of the ports that exist.
    pub fn states(&self) -> BTreeMap<PortName, PortState> {
        self.ports
            .iter()
            .filter(|(_, p)| p.ifindex.is_some())
            .map(|(n, p)| (n.clone(), p.state))
            .collect()
    }

    /// A link event at `now` (the engine's clock).
    pub fn on_link(&mut self, ev: LinkEvent, now: Duration) -> LinkChange {
        let Some((name, port)) = self
            .ports
            .iter_mut()
            .find(|(n, p)| n.as_str() == ev.name || (p.ifindex == Some(ev.ifindex) && ev.removed))
        else {
            return LinkChange::default();
        };
        let ifindex = if ev.removed { None } else { Some(ev.ifindex) };
        let appeared = ifindex.is_some() && port.ifindex != ifindex;
        let changed =
            port.ifindex != ifindex || port.admin_up != ev.admin_up || port.carrier != ev.carrier;
        port.ifindex = ifindex;
        port.admin_up = ev.admin_up;
        port.carrier = ev.carrier;
        let link = ev.link();
        if port.state.link != link {
            port.state = PortState::changed(link, now);
            port.changed = Instant::now();
            self.last_link_event = port.changed;
            info!(port = %name, link = %link_condition(port), "link changed");
        }
        let mut change = LinkChange {
            changed,
            appeared: Vec::new(),
        };
        if appeared {
            info!(port = %name, ifindex = ev.ifindex, "port appeared");
            change.appeared.push((name.clone(), ev.ifindex));
        }
        change
    }

    /// A fresh link dump: every configured port is set from it; a port
    /// missing from it is gone.
    pub fn apply_dump(&mut self, links: &[LinkEvent], now: Duration) -> LinkChange {
        let mut all = LinkChange::default();
        let names: Vec<PortName> = self.ports.keys().cloned().collect();
        for name in names {
            let Some(ev) = LinkEvent::in_dump(links, &name, self.ports[&name].ifindex) else {
                continue;
            };
            let change = self.on_link(ev, now);
            all.changed |= change.changed;
            all.appeared.extend(change.appeared);
        }
        all
    }

    /// Whether any of `ports` can serve now (not failed past hold_down, not
    /// missing).
    pub fn any_serves(&self, ports: &[PortName], config: &Config, now: Duration) -> bool {
        ports
            .iter()
            .any(|p| !self.condition(p, config, now).is_down())
    }

    pub fn condition(&self, name: &str, config: &Config, now: Duration) -> PortCondition {
        let state = self
            .ports
            .get(name)
            .filter(|p| p.ifindex.is_some())
            .map(|p| &p.state);
        crate::decide::port_condition(state, config, now)
    }

    /// Reports the ports whose condition changed since the last report.
    pub fn report_conditions(&mut self, config: &Config, report: &Reporter) {
        let now = report.now();
        for (name, port) in &self.ports {
            let state = self.condition(name, config, now);
            if self.reported.get(name) == Some(&state) {
                continue;
            }
            report.report(Event::Port {
                at_ms: report.at_ms(),
                port: name.clone(),
                link: link_condition(port),
                state,
            });
            self.reported.insert(name.clone(), state);
        }
    }

    /// Ifindexes of the ports the dataplane counts an instance on: its
    /// first configured ports (0 for one that does not exist now).
    pub fn counted(&self, inst: &baton_config::model::Instance) -> [u32; MAX_COUNTED_PORTS] {
        let mut out = [0; MAX_COUNTED_PORTS];
        for (slot, port) in out.iter_mut().zip(&inst.ports) {
            *slot = self.ifindex(port).unwrap_or(0);
        }
        out
    }
}
