//! What the daemon says: the [`Reporter`] every stage reports through (one
//! typed event: its log line, its metrics, the event stream; on the daemon's
//! clock), the control socket ([`control`]) and the metrics endpoint
//! ([`metrics`]) on their own thread ([`io_thread`]), and systemd
//! ([`sd_notify`]).
pub mod control;
pub mod events;
pub mod io_thread;
pub mod metrics;
pub mod sd_notify;

use crate::protocol::Event;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Events a `baton events` follower may fall behind before it is told it
/// missed some (bounded memory: a few hundred bytes each). A failover of
/// 1,000 instances brings ~1,000 events: with 1,024 the scale bench's
/// follower missed ~100 of them.
pub const EVENT_BUFFER: usize = 4096;

/// The one way out for what happened: events for `baton events`, the
/// metrics, and the daemon's clock their times are read on.
pub struct Reporter {
    start: Instant,
    events: broadcast::Sender<Event>,
    pub metrics: Arc<metrics::Metrics>,
}

impl Reporter {
    pub fn new(start: Instant, metrics: Arc<metrics::Metrics>) -> Reporter {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Reporter {
            start,
            events,
            metrics,
        }
    }

    /// The sender the events followers subscribe to.
    pub fn events(&self) -> broadcast::Sender<Event> {
        self.events.clone()
    }

    /// When the daemon started: the engine's clock counts from here.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The engine's clock: time since the daemon started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn at_ms(&self) -> u64 {
        self.now().as_millis() as u64
    }

    /// One thing that happened: its log line and metrics ([`events`]),
    /// and the event stream, all from the one typed event.
    pub fn report(&self, e: Event) {
        events::log(&e);
        events::count(&self.metrics, &e);
        // No follower is not an error.
        let _ = self.events.send(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Reason;
    use crate::protocol::{MoveKind, Repair};

    /// One typed event in: the stream gets it, and its metrics move with
    /// labels from the event's own enums.
    #[test]
    fn one_report_feeds_the_stream_and_the_metrics() {
        let pins = crate::dataplane::PinDir::new("/nonexistent/baton-report-test");
        let report = Reporter::new(Instant::now(), metrics::Metrics::new(pins));
        let mut follower = report.events().subscribe();
        report.report(Event::Move {
            at_ms: 1,
            instance: "a".into(),
            from: Some("ge0".into()),
            to: "ge1".into(),
            kind: MoveKind::Failover,
            took_us: 500,
        });
        report.report(Event::Refused {
            at_ms: 2,
            instance: "a".into(),
            port: "ge0".into(),
            reason: Reason::PortDown,
        });
        report.report(Event::Repaired {
            at_ms: 3,
            instance: "a".into(),
            what: Repair::Address,
            detail: "x".into(),
        });
        report.report(Event::OwnerLost {
            at_ms: 4,
            instance: "a".into(),
        });
        let mut kinds = Vec::new();
        while let Ok(e) = follower.try_recv() {
            kinds.push(serde_json::to_value(&e).expect("json")["event"].clone());
        }
        assert_eq!(kinds, ["move", "refused", "repaired", "owner-lost"]);
        let text = report.metrics.render().expect("render");
        for line in [
            "baton_moves_total{kind=\"failover\",result=\"done\"} 1",
            "baton_refusals_total{reason=\"port-down\"} 1",
            "baton_repairs_total{what=\"address\"} 1",
            "baton_cluster_events_total{kind=\"lost\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
