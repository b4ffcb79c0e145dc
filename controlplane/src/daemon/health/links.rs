//! The links `[health]` checks watch (the storage side, never a data
//! port), kept from the same kernel link events and dumps as the ports and
//! read against the ports' hold timers.
use crate::daemon::netlink::decode::LinkEvent;
use crate::decide::{Link, PortCondition, PortState, port_condition};
use baton_config::model::{Config, FailWhen, Probe};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::info;

/// One watched link: its device now (None: missing) and its state.
struct Watched {
    ifindex: Option<u32>,
    state: PortState,
}

#[derive(Default)]
pub struct WatchedLinks(BTreeMap<String, Watched>);

impl WatchedLinks {
    /// The watched links as the start-up dump shows them (their state holds
    /// since start, as the ports' does).
    pub fn from_dump(config: &Config, links: &[LinkEvent]) -> WatchedLinks {
        let mut t = WatchedLinks::default();
        let watched = config.health.values().flat_map(|c| match &c.probe {
            Probe::Links { links, .. } => links.as_slice(),
            _ => &[],
        });
        for name in watched {
            let link = links.iter().find(|l| l.name == *name);
            let up = link.is_some_and(LinkEvent::is_up);
            t.0.insert(
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
            .0
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
        let watched: Vec<(String, Option<u32>)> =
            self.0.iter().map(|(n, w)| (n.clone(), w.ifindex)).collect();
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

    pub fn condition(&self, link: &str, config: &Config, now: Duration) -> PortCondition {
        let state = self
            .0
            .get(link)
            .filter(|w| w.ifindex.is_some())
            .map(|w| &w.state);
        port_condition(state, config, now)
    }

    /// Whether a links check of `links` passes now.
    pub fn pass(
        &self,
        links: &[String],
        fail_when: FailWhen,
        config: &Config,
        now: Duration,
    ) -> bool {
        let mut down = links
            .iter()
            .map(|l| self.condition(l, config, now).is_down());
        match fail_when {
            FailWhen::Any => !down.any(|d| d),
            FailWhen::All => !down.all(|d| d),
        }
    }

    /// When a watched link's hold timer next runs out (a check's result
    /// may change then without an event).
    pub fn next_change(&self, config: &Config, now: Duration) -> Option<Duration> {
        let t = &config.timers;
        self.0
            .values()
            .filter(|w| !w.state.at_start)
            .map(|w| match w.state.link {
                Link::Up => w.state.since + t.hold_up,
                Link::Down => w.state.since + t.hold_down,
            })
            .filter(|at| *at > now)
            .min()
    }
}
