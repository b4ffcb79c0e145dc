//! Which held instances this member hands to another, and when: one no
//! port here can serve (to the first member that can host it; kept, and
//! said, when none can), and with `failback = "auto"` one a member before
//! this in its list has been able to host for `failback_delay`. Handovers
//! that failed pause a second.
use crate::cluster::rules;
use crate::daemon::health::HealthTable;
use crate::daemon::ports::PortTable;
use crate::protocol::MemberStatus;
use baton_config::model::Failback;
use baton_config::{Config, InstanceName, MemberId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The pause after a failed handover (the instance is off this host, and
/// nothing here can serve it meanwhile).
const RETRY: Duration = Duration::from_secs(1);

/// Why an instance is handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// No port of this member can serve it.
    NoPortHere,
    /// A member it prefers has been able to host it for failback_delay.
    Failback,
}

/// The cluster as a handover decision reads it.
pub struct Site<'a> {
    pub me: &'a MemberId,
    pub held: &'a BTreeSet<InstanceName>,
    pub members: &'a [MemberStatus],
}

#[derive(Default)]
pub struct Handovers {
    /// Held instances no port here can serve and no member can take.
    pub no_taker: BTreeSet<InstanceName>,
    /// After a failed handover: not tried again before this.
    retry: BTreeMap<InstanceName, Instant>,
    /// A preferred member seen able to host the instance, and since when.
    preferred_since: BTreeMap<InstanceName, (MemberId, Instant)>,
    /// When the first of those is due.
    next_failback: Option<Instant>,
}

impl Handovers {
    pub fn pause(&mut self, instance: &InstanceName) {
        self.retry.insert(instance.clone(), Instant::now() + RETRY);
    }

    /// When a failback falls due (a wake-up for the loop).
    pub fn wake_at(&self) -> Option<Instant> {
        self.next_failback
    }

    /// The held instances no port here can serve now (each of their ports
    /// failed, past hold_down, or missing, or a check they need failed),
    /// each with the member to hand it to.
    pub fn unservable(
        &mut self,
        on: &Site,
        config: &Config,
        ports: &PortTable,
        health: &HealthTable,
        now: Duration,
    ) -> Vec<(InstanceName, MemberId)> {
        let at = Instant::now();
        self.retry.retain(|_, t| *t > at);
        let mut out = Vec::new();
        let mut no_taker = BTreeSet::new();
        for (name, inst) in &config.instances {
            let served = health.failing_for(config, inst, now).is_none()
                && ports.any_serves(&inst.ports, config, now);
            if served || !on.held.contains(name) || self.retry.contains_key(name) {
                continue;
            }
            match rules::handover_target(on.me, name, &inst.members, on.members) {
                Some(m) => out.push((name.clone(), m.clone())),
                None => {
                    no_taker.insert(name.clone());
                }
            }
        }
        for name in no_taker.difference(&self.no_taker) {
            warn!(instance = %name, "no port here can serve it and no member can host it: it stays");
        }
        self.no_taker = no_taker;
        out
    }

    /// The held instances with failback = "auto" whose preferred member
    /// has been able to host them for failback_delay, each with it.
    pub fn failbacks(
        &mut self,
        on: &Site,
        config: &Config,
        at: Instant,
    ) -> Vec<(InstanceName, MemberId)> {
        let delay = config.timers.failback_delay;
        let mut seen = BTreeMap::new();
        let mut due = Vec::new();
        for (name, inst) in &config.instances {
            if inst.failback != Failback::Auto
                || !on.held.contains(name)
                || self.retry.contains_key(name)
            {
                continue;
            }
            let Some(m) = rules::failback_target(on.me, name, &inst.members, on.members) else {
                continue;
            };
            let since = match self.preferred_since.get(name) {
                Some((was, since)) if was == m => *since,
                _ => {
                    info!(instance = %name, member = %m, "a preferred member can host it: failback after failback_delay");
                    at
                }
            };
            if at.saturating_duration_since(since) >= delay {
                due.push((name.clone(), m.clone()));
            } else {
                seen.insert(name.clone(), (m.clone(), since));
            }
        }
        self.next_failback = seen.values().map(|(_, since)| *since + delay).min();
        self.preferred_since = seen;
        due
    }
}
