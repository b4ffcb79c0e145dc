//! A port as the engine sees it: its link, since when, and what that means
//! against the hold timers (its health, and the condition status shows).
use baton_config::model::{Config, PortName};
use std::collections::BTreeMap;
use std::time::Duration;

pub type Time = Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Up,
    Down,
}

/// What the link monitor knows of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortState {
    pub link: Link,
    /// When the link last changed (or when baton first saw it).
    pub since: Time,
    /// The link has been like this since baton started: no hold timer applies
    /// (a port down at start-up counts as failed at once).
    pub at_start: bool,
}

impl PortState {
    /// Up since baton started: usable at once.
    pub const UP_AT_START: PortState = PortState::at_start(Link::Up);

    /// `link` since baton started (no hold timer applies).
    pub const fn at_start(link: Link) -> PortState {
        PortState {
            link,
            since: Duration::ZERO,
            at_start: true,
        }
    }

    /// `link` since it changed at `now`.
    pub const fn changed(link: Link, now: Time) -> PortState {
        PortState {
            link,
            since: now,
            at_start: false,
        }
    }
}

/// Every configured port up since start (what `baton check` places against).
pub fn all_ports_up(config: &Config) -> BTreeMap<PortName, PortState> {
    config
        .ports
        .keys()
        .map(|p| (p.clone(), PortState::UP_AT_START))
        .collect()
}

/// How a port looks to the engine at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Health {
    /// Up past hold_up; `stable_since` for failback_delay.
    Up {
        stable_since: Option<Time>,
    },
    /// Link up within hold_up.
    Settling {
        until: Time,
    },
    /// Link down within hold_down: still counts for the instances on it.
    HeldDown {
        until: Time,
    },
    Failed,
    Missing,
}

/// What the engine makes of a port, as status and events show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortCondition {
    Up,
    /// Up again, but not yet for `hold_up`.
    Settling,
    /// Down, but not yet for `hold_down`.
    HeldDown,
    Failed,
    Missing,
}

impl PortCondition {
    /// Failed (past `hold_down`) or gone: it serves nothing now.
    pub fn is_down(self) -> bool {
        matches!(self, PortCondition::Failed | PortCondition::Missing)
    }
}

/// The one reading of a port's state against the hold timers (`None`: the
/// port does not exist now).
pub fn port_condition(state: Option<&PortState>, c: &Config, now: Time) -> PortCondition {
    match health(state, c, now) {
        Health::Up { .. } => PortCondition::Up,
        Health::Settling { .. } => PortCondition::Settling,
        Health::HeldDown { .. } => PortCondition::HeldDown,
        Health::Failed => PortCondition::Failed,
        Health::Missing => PortCondition::Missing,
    }
}

pub(super) fn health(state: Option<&PortState>, c: &Config, now: Time) -> Health {
    let Some(s) = state else {
        return Health::Missing;
    };
    let t = &c.timers;
    match s.link {
        Link::Up if s.at_start => Health::Up { stable_since: None },
        Link::Up if now >= s.since + t.hold_up => Health::Up {
            stable_since: Some(s.since),
        },
        Link::Up => Health::Settling {
            until: s.since + t.hold_up,
        },
        Link::Down if s.at_start || now >= s.since + t.hold_down => Health::Failed,
        Link::Down => Health::HeldDown {
            until: s.since + t.hold_down,
        },
    }
}
