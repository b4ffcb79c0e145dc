//! The daemon's one retry pause: it doubles with each failure in a row, up
//! to a cap (a failed move, a failing reconcile).
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The pause after the `failures`-th failure in a row (1: the first).
    pub fn after(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.first
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ms = |n| b.after(n).as_millis();
        assert_eq!([ms(0), ms(1), ms(2), ms(3)], [500, 500, 1000, 2000]);
        assert_eq!(ms(7), 30_000, "32 s is past the cap");
        assert_eq!(ms(u32::MAX), 30_000, "no overflow");
    }
}
