//! The `[health]` checks: [`links`] (the storage side's links, read from
//! kernel events with the ports' hold timers) and [`probe`] (a process, a
//! TCP listener, a command, observed by tasks of their own and damped here
//! by rise/fall counts). An instance is served here only while every check
//! it needs passes.
mod links;
pub mod probe;

use super::report::Reporter;
use crate::decide::Reason;
use crate::protocol::{CheckStatus, Event, LinkStatus};
use baton_config::model::{Check, Config, Instance, InstanceName, Probe};
use links::WatchedLinks;
use probe::Observation;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{info, warn};

use super::netlink::decode::LinkEvent;

/// What a check says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A probe that has not observed yet: neither hostable nor failed.
    Pending,
    Pass,
    Fail,
}

/// A probe's verdict, damped: `fall` failed observations in a row fail a
/// passing check, `rise` passing ones pass a failed one; the first
/// observation decides at once.
#[derive(Clone, Debug)]
struct Damped {
    verdict: Verdict,
    /// Observations in a row that disagree with the verdict.
    against: u32,
    since: Duration,
    detail: String,
}

impl Damped {
    fn new() -> Damped {
        Damped {
            verdict: Verdict::Pending,
            against: 0,
            since: Duration::ZERO,
            detail: "not observed yet".into(),
        }
    }

    /// Takes one observation; true when the verdict changed.
    fn observe(&mut self, check: &Check, ok: bool, now: Duration) -> bool {
        let seen = if ok { Verdict::Pass } else { Verdict::Fail };
        if self.verdict == seen {
            self.against = 0;
            return false;
        }
        self.against += 1;
        let needed = match self.verdict {
            Verdict::Pending => 1,
            Verdict::Pass => check.fall,
            Verdict::Fail => check.rise,
        };
        if self.against < needed {
            return false;
        }
        self.verdict = seen;
        self.against = 0;
        self.since = now;
        true
    }
}

#[derive(Default)]
pub struct HealthTable {
    links: WatchedLinks,
    probes: BTreeMap<String, Damped>,
    /// Each check's verdict last reported (events on a change).
    reported: BTreeMap<String, Verdict>,
}

impl HealthTable {
    pub fn from_dump(config: &Config, links: &[LinkEvent]) -> HealthTable {
        HealthTable {
            links: WatchedLinks::from_dump(config, links),
            probes: config
                .health
                .iter()
                .filter(|(_, c)| !matches!(c.probe, Probe::Links { .. }))
                .map(|(n, _)| (n.clone(), Damped::new()))
                .collect(),
            reported: BTreeMap::new(),
        }
    }

    /// A link event; true when a watched link changed.
    pub fn on_link(&mut self, ev: &LinkEvent, config: &Config, now: Duration) -> bool {
        self.links.on_link(ev, config, now)
    }

    /// A fresh link dump; true when a watched link changed.
    pub fn apply_dump(&mut self, links: &[LinkEvent], config: &Config, now: Duration) -> bool {
        self.links.apply_dump(links, config, now)
    }

    /// A probe's observation; true when its check's verdict changed.
    pub fn on_probe(&mut self, config: &Config, o: Observation, now: Duration) -> bool {
        let (Some(check), Some(d)) = (config.health.get(&o.check), self.probes.get_mut(&o.check))
        else {
            return false;
        };
        d.detail = o.detail;
        d.observe(check, o.ok, now)
    }

    pub fn verdict(&self, config: &Config, name: &str, now: Duration) -> Verdict {
        self.verdict_for(config, name, now, false)
    }

    /// `hosting`: links read strictly (a link down within hold_down offers
    /// nothing: a member whose link just went is no better off).
    fn verdict_for(&self, config: &Config, name: &str, now: Duration, hosting: bool) -> Verdict {
        let Some(check) = config.health.get(name) else {
            return Verdict::Pass;
        };
        match &check.probe {
            Probe::Links { links, fail_when } => {
                if self.links.pass(links, *fail_when, config, now, hosting) {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                }
            }
            _ => self
                .probes
                .get(name)
                .map_or(Verdict::Pending, |d| d.verdict),
        }
    }

    /// The first check `inst` needs that fails now (None: none fails; one
    /// may still be pending).
    pub fn failing_for(&self, config: &Config, inst: &Instance, now: Duration) -> Option<String> {
        config
            .health
            .keys()
            .find(|name| inst.needs(name) && self.verdict(config, name, now) == Verdict::Fail)
            .cloned()
    }

    /// Whether every check `inst` needs passes now (a member is offered an
    /// instance only then).
    pub fn all_pass_for(&self, config: &Config, inst: &Instance, now: Duration) -> bool {
        config
            .health
            .keys()
            .filter(|name| inst.needs(name))
            .all(|name| self.verdict_for(config, name, now, true) == Verdict::Pass)
    }

    /// The `withdraw` check that keeps `instance` off a single host now
    /// (failed, or not observed yet: the address is not put up before the
    /// target runs).
    pub fn withdrawing(&self, config: &Config, instance: &str, now: Duration) -> Option<String> {
        let inst = config.instances.get(instance)?;
        config
            .health
            .iter()
            .find(|(check, c)| {
                c.withdraw && inst.needs(check) && self.verdict(config, check, now) != Verdict::Pass
            })
            .map(|(check, _)| check.clone())
    }

    /// With no cluster: every instance a `withdraw` check keeps off this
    /// host now, each with why.
    pub fn withdrawn(&self, config: &Config, now: Duration) -> BTreeMap<InstanceName, Reason> {
        config
            .instances
            .keys()
            .filter_map(|name| {
                let check = self.withdrawing(config, name, now)?;
                Some((name.clone(), Reason::CheckFailed { check }))
            })
            .collect()
    }

    /// Reports each check whose verdict changed since it was last reported
    /// (the hold timers make link verdicts change with time, not only events).
    pub fn report_changes(&mut self, config: &Config, report: &Reporter, now: Duration) {
        for name in config.health.keys() {
            let verdict = self.verdict(config, name, now);
            if verdict == Verdict::Pending || self.reported.get(name) == Some(&verdict) {
                continue;
            }
            let ok = verdict == Verdict::Pass;
            let detail = self.probes.get(name).map(|d| d.detail.clone());
            if ok {
                info!(check = %name, detail = detail.as_deref().unwrap_or(""), "check passes");
            } else {
                warn!(check = %name, detail = detail.as_deref().unwrap_or(""),
                    "check failed: the instances that need it are not served here");
            }
            report.report(Event::Check {
                at_ms: report.at_ms(),
                check: name.clone(),
                ok,
                detail,
            });
            self.reported.insert(name.clone(), verdict);
        }
    }

    /// When a watched link's hold timer next runs out.
    pub fn next_change(&self, config: &Config, now: Duration) -> Option<Duration> {
        self.links.next_change(config, now)
    }

    /// Each check, for status.
    pub fn status(&self, config: &Config, now: Duration) -> Vec<CheckStatus> {
        config
            .health
            .iter()
            .map(|(name, check)| {
                let verdict = self.verdict(config, name, now);
                let probe = self.probes.get(name);
                CheckStatus {
                    name: name.clone(),
                    kind: check.probe.kind().into(),
                    ok: verdict == Verdict::Pass,
                    pending: verdict == Verdict::Pending,
                    since_ms: probe.map(|d| d.since.as_millis() as u64),
                    detail: probe.map(|d| d.detail.clone()),
                    links: match &check.probe {
                        Probe::Links { links, .. } => links
                            .iter()
                            .map(|l| LinkStatus {
                                name: l.clone(),
                                state: self.links.condition(l, config, now),
                            })
                            .collect(),
                        _ => Vec::new(),
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_config::model::ProcessMatch;

    fn check(rise: u32, fall: u32) -> Check {
        Check {
            probe: Probe::Process(ProcessMatch::Name("tgtd".into())),
            rise,
            fall,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            withdraw: false,
        }
    }

    /// The verdict after each observation.
    fn run(c: &Check, seen: &[bool]) -> Vec<Verdict> {
        let mut d = Damped::new();
        seen.iter()
            .enumerate()
            .map(|(i, ok)| {
                d.observe(c, *ok, Duration::from_secs(i as u64));
                d.verdict
            })
            .collect()
    }

    #[test]
    fn the_first_observation_decides_then_rise_and_fall_damp() {
        use Verdict::*;
        let c = check(2, 3);
        assert_eq!(run(&c, &[false]), [Fail]);
        assert_eq!(run(&c, &[true]), [Pass]);
        // Two failures are not three; a pass between starts the count again.
        assert_eq!(
            run(&c, &[true, false, false, true, false, false, false]),
            [Pass, Pass, Pass, Pass, Pass, Pass, Fail]
        );
        // One pass is not two.
        assert_eq!(
            run(&c, &[false, true, false, true, true]),
            [Fail, Fail, Fail, Fail, Pass]
        );
    }

    #[test]
    fn a_flapping_probe_with_counts_above_one_never_changes_its_verdict() {
        let c = check(2, 2);
        let flap: Vec<bool> = (0..50).map(|i| i % 2 == 0).collect();
        assert!(run(&c, &flap).iter().all(|v| *v == Verdict::Pass));
    }
}
