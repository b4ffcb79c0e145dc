//! The cluster member's fence deadline in the dataplane (`BATON_FENCE`):
//! past it, every instance entry flagged `CLUSTER` is silent, whether or
//! not the daemon still runs. Times are CLOCK_MONOTONIC ns, the clock
//! bpf_ktime_get_ns() reads.
use super::{PinDir, pinned_map};
use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use baton_common::names;
use std::time::{Duration, Instant};

pub struct FenceClock {
    map: Array<MapData, u64>,
}

impl FenceClock {
    pub fn open(pins: &PinDir) -> Result<FenceClock> {
        let data = pinned_map(pins, names::FENCE_MAP)?;
        let map = Array::try_from(Map::Array(data))
            .context("BATON_FENCE is not baton's fence deadline")?;
        Ok(FenceClock { map })
    }

    /// The dataplane goes silent at `at` (an `Instant`: both are CLOCK_MONOTONIC).
    pub fn set(&mut self, at: Instant) -> Result<()> {
        self.map
            .set(0, ns_of(at), 0)
            .context("writing the fence deadline")
    }

    /// Silent from now on.
    pub fn fence_now(&mut self) -> Result<()> {
        self.map.set(0, 0, 0).context("writing the fence deadline")
    }

    /// How long the dataplane still answers (zero when fenced).
    pub fn remaining(&self) -> Result<Duration> {
        let deadline = self.map.get(&0, 0).context("reading the fence deadline")?;
        Ok(Duration::from_nanos(
            deadline.saturating_sub(monotonic_ns()),
        ))
    }
}

/// CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns() reads.
pub fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An `Instant` (CLOCK_MONOTONIC on Linux) as monotonic ns.
pub fn ns_of(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ns = monotonic_ns();
    match at.checked_duration_since(now) {
        Some(ahead) => now_ns + ahead.as_nanos() as u64,
        None => now_ns.saturating_sub(now.duration_since(at).as_nanos() as u64),
    }
}
