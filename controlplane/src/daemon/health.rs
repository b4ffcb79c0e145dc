//! The `[health]` checks: the links each watches (the storage side, never
//! a data port), kept from the same kernel link events and dumps as the
//! ports and read against the ports' hold timers. A check fails by its
//! `fail_when`; an instance is served here only while every check it needs
//! passes.
use super::netlink::decode::LinkEvent;
use super::report::Reporter;
use crate::decide::{Link, PortCondition, PortState, port_condition};
use crate::protocol::{CheckStatus, Event, LinkStatus};
use baton_config::model::{Config, FailWhen, Instance};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{info, warn};

/// One watched link: its device now (None: missing) and its state.
struct Watched {
    ifindex: Option<u32>,
    state: PortState,
}

#[derive(Default)]
pub struct HealthTable {
    links: BTreeMap<String, Watched>,
    /// Each check's result last reported (events on a change).
    reported: BTreeMap<String, bool>,
}

impl HealthTable {
    /// The watched links as the start-up dump shows them (their state holds
    /// since start, as the ports' does).
    pub fn from_dump(config: &Config, links: &[LinkEvent]) -> HealthTable {
        let mut t = HealthTable::default();
        for name in config.health.values().flat_map(|c| &c.links) {
            let link = links.iter().find(|l| l.name == *name);
            let up = link.is_some_and(LinkEvent::is_up);
            t.links.insert(
                name.clone(),
                Watched {
                    ifindex: link.map(|l| l.ifindex),
                    state: PortState {
                        link: if up { Link::Up } else { Link::Down },
                        since: Duration::ZERO,
                        at_start: true,
                    },
                },
            );
        }
        t
    }

    /// A link event at `now` (the engine's clock); true when a watched
    /// link changed.
    pub fn on_link(&mut self, ev: &LinkEvent, now: Duration) -> bool {
        let Some((name, w)) = self
            .links
            .iter_mut()
            .find(|(n, w)| **n == ev.name || (ev.removed && w.ifindex == Some(ev.ifindex)))
        else {
            return false;
        };
        let ifindex = (!ev.removed).then_some(ev.ifindex);
        let link = if ev.is_up() { Link::Up } else { Link::Down };
        let changed = w.ifindex != ifindex || w.state.link != link;
        w.ifindex = ifindex;
        if w.state.link != link {
            w.state = PortState {
                link,
                since: now,
                at_start: false,
            };
            info!(link = %name, up = ev.is_up(), "watched link changed");
        }
        changed
    }

    /// A fresh link dump: a watched link missing from it is gone.
    pub fn apply_dump(&mut self, links: &[LinkEvent], now: Duration) -> bool {
        let mut changed = false;
        let watched: Vec<(String, Option<u32>)> = self
            .links
            .iter()
            .map(|(n, w)| (n.clone(), w.ifindex))
            .collect();
        for (name, ifindex) in watched {
            let ev = match links.iter().find(|l| l.name == name) {
                Some(l) => l.clone(),
                None => match ifindex {
                    Some(ifindex) => LinkEvent::gone(ifindex, name),
                    None => continue,
                },
            };
            changed |= self.on_link(&ev, now);
        }
        changed
    }

    fn condition(&self, link: &str, config: &Config, now: Duration) -> PortCondition {
        let state = self
            .links
            .get(link)
            .filter(|w| w.ifindex.is_some())
            .map(|w| &w.state);
        port_condition(state, config, now)
    }

    fn down(&self, link: &str, config: &Config, now: Duration) -> bool {
        self.condition(link, config, now).is_down()
    }

    /// Whether the check `name` passes now.
    pub fn passes(&self, config: &Config, name: &str, now: Duration) -> bool {
        let Some(check) = config.health.get(name) else {
            return true;
        };
        let mut down = check.links.iter().map(|l| self.down(l, config, now));
        match check.fail_when {
            FailWhen::Any => !down.any(|d| d),
            FailWhen::All => !down.all(|d| d),
        }
    }

    /// The first check `inst` needs that fails now (None: all pass).
    pub fn failing_for(&self, config: &Config, inst: &Instance, now: Duration) -> Option<String> {
        config
            .health
            .keys()
            .find(|name| inst.needs(name) && !self.passes(config, name, now))
            .cloned()
    }

    /// Reports each check whose result changed since it was last reported
    /// (the hold timers make results change with time, not only events).
    pub fn report_changes(&mut self, config: &Config, report: &Reporter, now: Duration) {
        for name in config.health.keys() {
            let ok = self.passes(config, name, now);
            if self.reported.get(name) == Some(&ok) {
                continue;
            }
            if ok {
                info!(check = %name, "check passes");
            } else {
                warn!(check = %name, "check failed: the instances that need it are not served here");
            }
            report.report(Event::Check {
                at_ms: report.at_ms(),
                check: name.clone(),
                ok,
            });
            self.reported.insert(name.clone(), ok);
        }
    }

    /// When a watched link's hold timer next runs out (a check's result
    /// may change then without an event).
    pub fn next_change(&self, config: &Config, now: Duration) -> Option<Duration> {
        let t = &config.timers;
        self.links
            .values()
            .filter(|w| !w.state.at_start)
            .map(|w| match w.state.link {
                Link::Up => w.state.since + t.hold_up,
                Link::Down => w.state.since + t.hold_down,
            })
            .filter(|at| *at > now)
            .min()
    }

    /// Each check and its links, for status.
    pub fn status(&self, config: &Config, now: Duration) -> Vec<CheckStatus> {
        config
            .health
            .iter()
            .map(|(name, check)| CheckStatus {
                name: name.clone(),
                ok: self.passes(config, name, now),
                links: check
                    .links
                    .iter()
                    .map(|l| LinkStatus {
                        name: l.clone(),
                        state: self.condition(l, config, now),
                    })
                    .collect(),
            })
            .collect()
    }
}
