//! What each event of the daemon logs and counts: the one place where a
//! typed [`Event`] becomes a log line and metrics ([`super::Reporter::report`]
//! sends it to `baton events` too). Label values come from the event's own
//! enums (move kind, refusal reason, repair).
use super::metrics::{self, Metrics};
use crate::protocol::{Event, PortCondition};
use tracing::{error, info, warn};

/// The log line of an event (none for the cluster's: the agent logs those).
pub fn log(e: &Event) {
    match e {
        Event::Port {
            port, link, state, ..
        } => info!(%port, %state, %link, "port state"),
        Event::Move {
            instance,
            from,
            to,
            kind,
            took_us,
            ..
        } => info!(%instance, ?from, %to, %kind, took_us, "move done"),
        Event::MoveFailed {
            instance,
            to,
            error,
            ..
        } => error!(%instance, %to, %error, "move failed"),
        Event::Repaired {
            instance,
            what,
            detail,
            ..
        } => warn!(%instance, %what, %detail, "repaired"),
        Event::RepairFailed {
            instance,
            error,
            attempts,
            retry_ms,
            ..
        } => error!(%instance, %error, attempts, retry_ms, "reconcile failed"),
        Event::Refused {
            instance,
            port,
            reason,
            ..
        } => warn!(%instance, %port, %reason, "port refused"),
        Event::Withdrawn {
            instance, reason, ..
        } => warn!(%instance, %reason, "withdrawn: not this member's now"),
        Event::Conflict {
            instance,
            port,
            by,
            defended,
            ..
        } => {
            warn!(%instance, %by, %port, defended, "address conflict: another host claims the address")
        }
        Event::Tickled {
            instance,
            connections,
            acks,
            ..
        } => info!(%instance, connections, acks, "tickled the old owner's connections"),
        Event::Revived {
            instance,
            sockets,
            icmps,
            left,
            ..
        } => info!(%instance, sockets, icmps, left, "backoff reverted"),
        Event::Resync { reason, .. } => warn!(%reason, "events may be lost: full resync"),
        Event::Reload { ok, message, .. } => info!(ok, %message, "reload"),
        // Logged where the check is read (daemon/health.rs).
        Event::Check { .. }
        | Event::Missed { .. }
        | Event::Claimed { .. }
        | Event::Released { .. }
        | Event::OwnerLost { .. }
        | Event::MemberRevoked { .. }
        | Event::Fenced { .. }
        | Event::Unfenced { .. } => {}
    }
}

/// The cluster's events by the `kind` label of `baton_cluster_events_total`.
fn cluster_kind(e: &Event) -> Option<&'static str> {
    Some(match e {
        Event::Claimed { .. } => "claimed",
        Event::Released { .. } => "released",
        Event::OwnerLost { .. } => "lost",
        Event::MemberRevoked { .. } => "revoked",
        Event::Fenced { .. } => "fenced",
        Event::Unfenced { .. } => "unfenced",
        Event::Withdrawn { .. } => "withdrawn",
        _ => return None,
    })
}

/// The metrics an event moves.
pub fn count(m: &Metrics, e: &Event) {
    if let Some(kind) = cluster_kind(e) {
        m.cluster_events
            .get_or_create(&metrics::KindLabel { kind: kind.into() })
            .inc();
    }
    match e {
        Event::Check { check, ok, .. } => {
            m.check_ok
                .get_or_create(&metrics::CheckLabel {
                    check: check.clone(),
                })
                .set(i64::from(*ok));
        }
        Event::Port { port, state, .. } => {
            m.port_up
                .get_or_create(&metrics::PortLabel {
                    port: port.to_string(),
                })
                .set(i64::from(*state == PortCondition::Up));
        }
        Event::Move { kind, took_us, .. } => {
            count_move(m, &kind.to_string(), "done");
            m.move_seconds.observe(*took_us as f64 / 1e6);
        }
        Event::MoveFailed { kind, .. } => {
            let kind = kind.map_or_else(|| "unknown".into(), |k| k.to_string());
            count_move(m, &kind, "failed");
        }
        Event::Repaired { what, .. } => {
            m.repairs
                .get_or_create(&metrics::RepairLabel {
                    what: what.to_string(),
                })
                .inc();
        }
        Event::RepairFailed { .. } => {
            m.repair_failures.inc();
        }
        Event::Refused { reason, .. } => {
            m.refusals
                .get_or_create(&metrics::ReasonLabel {
                    reason: reason.name().to_string(),
                })
                .inc();
        }
        Event::Conflict { instance, .. } => {
            m.conflicts
                .get_or_create(&metrics::InstanceLabel {
                    instance: instance.to_string(),
                })
                .inc();
        }
        Event::Tickled { acks, .. } => {
            m.tickle_acks.inc_by(*acks);
        }
        Event::Revived { sockets, icmps, .. } => {
            m.revived_sockets.inc_by(*sockets);
            m.revert_icmps.inc_by(*icmps);
        }
        Event::Resync { .. } => {
            m.resyncs.inc();
        }
        _ => {}
    }
}

fn count_move(m: &Metrics, kind: &str, result: &str) {
    m.moves
        .get_or_create(&metrics::MoveLabels {
            kind: kind.to_string(),
            result: result.to_string(),
        })
        .inc();
}
