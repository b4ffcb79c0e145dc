//! What the daemon wants and remembers of its instances: where each lives,
//! what keeps a port off one for a while, what was refused, moved,
//! repaired or failed last, what is still being announced or tickled. The
//! loop owns it; the move and reconcile stages take it as an argument.
use super::super::backoff::Backoff;
use super::super::report::Reporter;
use crate::cluster::records::Conn;
use crate::decide::{Placement, Plan, Reason};
use crate::protocol::{Event, MoveRecord, Repair, RepairRecord};
use baton_config::{InstanceName, PortName};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;

/// (instance, port).
pub type OnPortKey = (InstanceName, PortName);

/// How long a failed move waits before it is tried again.
const MOVE_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// How long a failing instance waits before its reconcile is tried again.
const RECONCILE_RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// Which instances the next reconcile looks at.
#[derive(Default)]
pub struct Dirty {
    pub all: bool,
    pub instances: BTreeSet<InstanceName>,
}

/// A reconcile error on one instance, retried with backoff.
pub struct Trouble {
    pub error: String,
    attempts: u32,
    pub retry_at: Instant,
}

#[derive(Default)]
pub struct PlacementState {
    /// The desired state: instance -> the port it lives on.
    pub placement: BTreeMap<InstanceName, PortName>,
    /// (instance, port) -> until when an RFC 5227 conflict keeps it off.
    pub in_use: BTreeMap<OnPortKey, Instant>,
    /// (instance, port) -> until when a failed move is not retried.
    pub failed: BTreeMap<OnPortKey, Instant>,
    /// (instance, port) -> failed moves in a row (the pause doubles with each).
    move_failures: BTreeMap<OnPortKey, u32>,
    pub refused: BTreeMap<InstanceName, Vec<(PortName, Reason)>>,
    pub last_move: BTreeMap<InstanceName, MoveRecord>,
    pub last_repair: BTreeMap<InstanceName, RepairRecord>,
    pub trouble: BTreeMap<InstanceName, Trouble>,
    /// The background announcements of each instance's last move.
    pub announcing: BTreeMap<InstanceName, AbortHandle>,
    /// instance -> the connections to tickle once a takeover placed it.
    pub tickles_due: BTreeMap<InstanceName, Vec<Conn>>,
    pub dirty: Dirty,
    /// Relocations done since start (first placements are not moves).
    pub moves_done: u64,
}

impl PlacementState {
    /// Drops the holds that have run out.
    pub fn expire_holds(&mut self, now: Instant) {
        self.in_use.retain(|_, until| *until > now);
        self.failed.retain(|_, until| *until > now);
    }

    /// The earliest hold or retry that ends.
    pub fn next_timer(&self) -> Option<Instant> {
        self.in_use
            .values()
            .copied()
            .chain(self.failed.values().copied())
            .chain(self.trouble.values().map(|t| t.retry_at))
            .min()
    }

    pub fn reconcile_due(&self, now: Instant) -> bool {
        self.dirty.all
            || !self.dirty.instances.is_empty()
            || self.trouble.values().any(|t| t.retry_at <= now)
    }

    /// The instances the next reconcile looks at (taken: dirty no more).
    pub fn take_dirty(
        &mut self,
        all_names: impl Iterator<Item = InstanceName>,
    ) -> (bool, BTreeSet<InstanceName>) {
        let all = std::mem::take(&mut self.dirty.all);
        let mut names = std::mem::take(&mut self.dirty.instances);
        let now = Instant::now();
        names.extend(
            self.trouble
                .iter()
                .filter(|(_, t)| t.retry_at <= now)
                .map(|(n, _)| n.clone()),
        );
        if all {
            names.extend(all_names);
        }
        (all, names)
    }

    /// Stops the background announcements of an instance's last move.
    pub fn stop_announcing(&mut self, instance: &InstanceName) {
        if let Some(h) = self.announcing.remove(instance) {
            h.abort();
        }
    }

    /// An instance that left the config or changed identity: nothing of it is kept.
    pub fn forget(&mut self, instance: &InstanceName) {
        self.placement.remove(instance);
        self.trouble.remove(instance);
        self.stop_announcing(instance);
    }

    /// A move done: the instance lives on `to`, its failed moves are forgotten.
    pub fn moved(&mut self, instance: &InstanceName, to: &PortName, record: MoveRecord) {
        self.placement.insert(instance.clone(), to.clone());
        self.move_failures.retain(|(i, _), _| i != instance);
        if record.from.is_some() {
            self.moves_done += 1;
        }
        self.last_move.insert(instance.clone(), record);
    }

    /// A move failed: that port waits (longer with each failure in a row),
    /// and the instance is looked at again, so its address ends on one port.
    pub fn move_failed(&mut self, instance: &InstanceName, to: &PortName) {
        let key = (instance.clone(), to.clone());
        let streak = self.move_failures.entry(key.clone()).or_insert(0);
        *streak += 1;
        self.failed
            .insert(key, Instant::now() + MOVE_RETRY.after(*streak));
        self.dirty.instances.insert(instance.clone());
    }

    /// A repair reported (log, metric, event) and kept for status.
    pub fn note_repair(
        &mut self,
        report: &Reporter,
        instance: &InstanceName,
        what: Repair,
        detail: String,
    ) {
        let at_ms = report.at_ms();
        report.report(Event::Repaired {
            at_ms,
            instance: instance.clone(),
            what,
            detail: detail.clone(),
        });
        self.last_repair.insert(
            instance.clone(),
            RepairRecord {
                what,
                detail,
                at_ms,
            },
        );
    }

    /// A reconcile of `instance` failed: retried with backoff.
    pub fn note_trouble(&mut self, instance: &InstanceName, error: String, report: &Reporter) {
        let attempts = self.trouble.get(instance).map_or(0, |t| t.attempts) + 1;
        let wait = RECONCILE_RETRY.after(attempts);
        report.report(Event::RepairFailed {
            at_ms: report.at_ms(),
            instance: instance.clone(),
            error: error.clone(),
            attempts,
            retry_ms: wait.as_millis() as u64,
        });
        self.trouble.insert(
            instance.clone(),
            Trouble {
                error,
                attempts,
                retry_at: Instant::now() + wait,
            },
        );
    }

    /// Each port refusal that is new since the last plan: a log line, a
    /// metric, an event.
    pub fn note_refusals(&mut self, plan: &Plan, report: &Reporter) {
        let mut now_refused = BTreeMap::new();
        for (name, p) in &plan.placements {
            let Placement::Stays { refused, .. } = p else {
                continue;
            };
            if self.refused.get(name) != Some(refused) {
                for (port, reason) in refused {
                    report.report(Event::Refused {
                        at_ms: report.at_ms(),
                        instance: name.clone(),
                        port: port.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            now_refused.insert(name.clone(), refused.clone());
        }
        self.refused = now_refused;
    }

    /// Takes off this host every instance the plan withholds (the cluster
    /// says another member holds it, or this one is fenced); the reconcile
    /// that follows removes its address, macvlan and entry.
    pub fn withdraw(&mut self, plan: &Plan, report: &Reporter) {
        for (name, p) in &plan.placements {
            let Placement::Withheld { reason, .. } = p else {
                continue;
            };
            if self.placement.remove(name).is_some() {
                report.report(Event::Withdrawn {
                    at_ms: report.at_ms(),
                    instance: name.clone(),
                    reason: reason.clone(),
                });
                self.dirty.instances.insert(name.clone());
            }
        }
    }
}
