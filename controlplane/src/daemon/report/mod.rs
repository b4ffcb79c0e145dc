//! What the daemon says: the [`Reporter`] every stage reports through (the
//! event stream and the metrics, on the daemon's clock), `baton status`
//! ([`status`]), the control socket ([`control`]) and the metrics endpoint
//! ([`metrics`]) on their own thread ([`io_thread`]), and systemd
//! ([`sd_notify`]).
pub mod control;
pub mod io_thread;
pub mod metrics;
pub mod sd_notify;
pub mod status;

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

    pub fn emit(&self, e: Event) {
        // No follower is not an error.
        let _ = self.events.send(e);
    }
}
