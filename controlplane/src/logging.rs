//! The daemon's log lines go through a bounded queue to a writer thread
//! (tracing-appender): the loop never blocks on stderr. When the queue is
//! full (the reader stopped reading) lines are dropped, counted, and the
//! loop says so once the count moves.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use tracing_appender::non_blocking::ErrorCounter;

/// Lines queued before new ones are dropped: ~2 MB at most.
pub const BUFFERED_LINES: usize = 8192;

static DROPS: OnceLock<ErrorCounter> = OnceLock::new();
static REPORTED: AtomicUsize = AtomicUsize::new(0);

/// Called once by `main` with the writer's counter.
pub fn watch_drops(counter: ErrorCounter) {
    let _ = DROPS.set(counter);
}

/// Lines dropped since the last call (0 when logging is blocking).
pub fn newly_dropped() -> usize {
    let Some(counter) = DROPS.get() else {
        return 0;
    };
    let now = counter.dropped_lines();
    now.saturating_sub(REPORTED.swap(now, Ordering::Relaxed))
}
