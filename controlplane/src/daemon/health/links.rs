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
    /// Up again after a failure (down past hold_down, or gone): it counts
    /// as down until it has been up for hold_up, so a check that failed
    /// passes only then.
    after_failure: bool,
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
            t.0.insert(
                name.clone(),
                Watched {
                    ifindex: link.map(|l| l.ifindex),
                    state: PortState::at_start(link.map_or(Link::Down, LinkEvent::link)),
                    after_failure: false,
                },
            );
        }
        t
    }

    /// A link event at `now` (the engine's clock); true when a watched
    /// link changed.
    pub fn on_link(&mut self, ev: &LinkEvent, config: &Config, now: Duration) -> bool {
        let Some((name, w)) = self
            .0
            .iter_mut()
            .find(|(n, w)| **n == ev.name || (ev.removed && w.ifindex == Some(ev.ifindex)))
        else {
            return false;
        };
        let ifindex = (!ev.removed).then_some(ev.ifindex);
        let link = ev.link();
        let changed = w.ifindex != ifindex || w.state.link != link;
        if changed {
            w.after_failure = link == Link::Up
                && (w.ifindex.is_none()
                    || now.saturating_sub(w.state.since) >= config.timers.hold_down);
        }
        w.ifindex = ifindex;
        if w.state.link != link {
            w.state = PortState::changed(link, now);
            info!(link = %name, up = ev.is_up(), "watched link changed");
        }
        changed
    }

    /// A fresh link dump: a watched link missing from it is gone.
    pub fn apply_dump(&mut self, links: &[LinkEvent], config: &Config, now: Duration) -> bool {
        let mut changed = false;
        let watched: Vec<(String, Option<u32>)> =
            self.0.iter().map(|(n, w)| (n.clone(), w.ifindex)).collect();
        for (name, ifindex) in watched {
            if let Some(ev) = LinkEvent::in_dump(links, &name, ifindex) {
                changed |= self.on_link(&ev, config, now);
            }
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

    /// Whether `link` serves now: up, or down within hold_down (unless
    /// `hosting`: a member is offered instances only while its links are
    /// up), and not still settling after a failure.
    fn serves(&self, link: &str, config: &Config, now: Duration, hosting: bool) -> bool {
        let after_failure = self.0.get(link).is_some_and(|w| w.after_failure);
        match self.condition(link, config, now) {
            PortCondition::Up => true,
            PortCondition::Settling => !after_failure,
            PortCondition::HeldDown => !hosting,
            PortCondition::Failed | PortCondition::Missing => false,
        }
    }

    /// Whether a links check of `links` passes now (`hosting`: strictly,
    /// for offering this member instances).
    pub fn pass(
        &self,
        links: &[String],
        fail_when: FailWhen,
        config: &Config,
        now: Duration,
        hosting: bool,
    ) -> bool {
        let mut serving = links.iter().map(|l| self.serves(l, config, now, hosting));
        match fail_when {
            FailWhen::Any => serving.all(|s| s),
            FailWhen::All => serving.any(|s| s),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[timers]
hold_down = "300ms"
hold_up = "2s"
[networks.n]
subnets = ["192.0.2.0/24"]
[ports.ge0]
networks = ["n"]
[instances.a]
address = "192.0.2.1/24"
ports = ["ge0"]
[health.san]
links = ["san0"]
"#;
        baton_config::parse("t.toml", text, &baton_config::Host::with_cpus(1)).unwrap()
    }

    fn event(up: bool) -> LinkEvent {
        LinkEvent {
            ifindex: 7,
            name: "san0".into(),
            admin_up: true,
            carrier: up,
            removed: false,
            mac: None,
            lower: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// (passes, hosts) at `at` ms.
    fn seen(w: &WatchedLinks, c: &Config, at: u64) -> (bool, bool) {
        let links = ["san0".to_string()];
        (
            w.pass(&links, FailWhen::Any, c, ms(at), false),
            w.pass(&links, FailWhen::Any, c, ms(at), true),
        )
    }

    #[test]
    fn a_failed_link_passes_again_only_after_hold_up_and_a_blip_never_fails() {
        let c = config();
        let mut w = WatchedLinks::from_dump(&c, &[event(true)]);
        assert_eq!(seen(&w, &c, 0), (true, true));
        // A blip shorter than hold_down: never failed, but hosts nothing
        // while down.
        w.on_link(&event(false), &c, ms(1000));
        assert_eq!(seen(&w, &c, 1100), (true, false));
        w.on_link(&event(true), &c, ms(1200));
        assert_eq!(seen(&w, &c, 1300), (true, true));
        // Down past hold_down: failed; up again, still failed until hold_up.
        w.on_link(&event(false), &c, ms(5000));
        assert_eq!(seen(&w, &c, 5400), (false, false));
        w.on_link(&event(true), &c, ms(6000));
        assert_eq!(seen(&w, &c, 7000), (false, false));
        assert_eq!(seen(&w, &c, 8000), (true, true));
    }
}
