//! The members' alive counters as this member sees them, and how long each
//! has been silent. Pure (the time is passed in), so the rule is unit-tested.
//!
//! Silence is measured on a clock that runs only while this member sees
//! its own counter move: an etcd election (or an engine that stops) stops
//! every member's counter, and the member whose counter moves first again
//! must not take the others' pause for their death. A gap in its own
//! counter counts for at most `grace` (a normal renewal's gap) on that clock.
use baton_config::MemberId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub struct AliveCounters {
    me: MemberId,
    grace: Duration,
    /// member -> (its counter, when it last changed here, the seeing clock then).
    seen: BTreeMap<MemberId, (Vec<u8>, Instant, Duration)>,
    /// The seeing clock at this member's own counter's last change, and when.
    clock_at_mine: Duration,
    mine_at: Option<Instant>,
}

impl AliveCounters {
    /// `heartbeat` paces the counters; a gap of two of them (at most half
    /// of `dead_after`) in this member's own counter is still seeing.
    pub fn new(me: &MemberId, heartbeat: Duration, dead_after: Duration) -> Self {
        AliveCounters {
            me: me.clone(),
            grace: (heartbeat * 2).min(dead_after / 2),
            seen: BTreeMap::new(),
            clock_at_mine: Duration::ZERO,
            mine_at: None,
        }
    }

    /// The seeing clock at `now`.
    fn clock(&self, now: Instant) -> Duration {
        self.clock_at_mine
            + self.mine_at.map_or(Duration::ZERO, |t| {
                now.saturating_duration_since(t).min(self.grace)
            })
    }

    /// A counter read at `now` (the watch, a poll or a snapshot).
    pub fn seen(&mut self, member: &MemberId, value: Vec<u8>, now: Instant) {
        if self.seen.get(member).is_some_and(|(v, ..)| *v == value) {
            return;
        }
        let clock = self.clock(now);
        if *member == self.me {
            self.clock_at_mine = clock;
            self.mine_at = Some(now);
        }
        self.seen.insert(member.clone(), (value, now, clock));
    }

    /// A snapshot: every counter there is; the others are gone.
    pub fn replace(&mut self, counters: Vec<(MemberId, Vec<u8>)>, now: Instant) {
        let names: std::collections::BTreeSet<&MemberId> =
            counters.iter().map(|(m, _)| m).collect();
        self.seen.retain(|m, _| names.contains(m));
        for (m, v) in counters {
            self.seen(&m, v, now);
        }
    }

    pub fn remove(&mut self, member: &MemberId) {
        self.seen.remove(member);
    }

    /// When `member`'s counter last changed here (wall time, for the
    /// watch's own stall check).
    pub fn last_change(&self, member: &MemberId) -> Option<Instant> {
        self.seen.get(member).map(|(_, t, _)| *t)
    }

    /// How long `member` has been silent while this member saw etcd.
    pub fn silent_for(&self, member: &MemberId, now: Instant) -> Option<Duration> {
        let (_, _, at) = self.seen.get(member)?;
        Some(self.clock(now).saturating_sub(*at))
    }

    /// The other members silent for `dead_after` or longer, with how long.
    pub fn silent(&self, now: Instant, dead_after: Duration) -> Vec<(MemberId, Duration)> {
        self.seen
            .keys()
            .filter(|m| **m != self.me)
            .filter_map(|m| Some((m.clone(), self.silent_for(m, now)?)))
            .filter(|(_, quiet)| *quiet >= dead_after)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Duration = Duration::from_millis(50);
    const DEAD: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Both counters move every heartbeat from `from` for `n` beats.
    fn beat(a: &mut AliveCounters, t0: Instant, from: u64, n: u64, who: &[&str]) {
        for i in 0..n {
            let at = t0 + ms(from + i * 50);
            for m in who {
                a.seen(&(*m).into(), format!("{}", from + i * 50).into_bytes(), at);
            }
        }
    }

    #[test]
    fn a_member_whose_counter_stops_is_silent_after_dead_after() {
        let t0 = Instant::now();
        let mut a = AliveCounters::new(&"gw1".into(), HB, DEAD);
        beat(&mut a, t0, 0, 10, &["gw1", "gw2"]);
        // gw2 stops at 450 ms; gw1 goes on.
        beat(&mut a, t0, 500, 5, &["gw1"]);
        assert!(a.silent(t0 + ms(700), DEAD).is_empty());
        beat(&mut a, t0, 750, 1, &["gw1"]);
        let silent = a.silent(t0 + ms(760), DEAD);
        assert_eq!(silent.len(), 1, "{silent:?}");
        assert_eq!(silent[0].0, "gw2");
        assert_eq!(silent[0].1, ms(310));
    }

    #[test]
    fn an_election_that_stops_every_counter_revokes_nobody() {
        let t0 = Instant::now();
        let mut a = AliveCounters::new(&"gw1".into(), HB, DEAD);
        beat(&mut a, t0, 0, 10, &["gw1", "gw2"]);
        // Nothing moves for 600 ms (an election, the engine stopped);
        // then gw1's counter moves first, gw2's 80 ms later.
        a.seen(&"gw1".into(), b"again".to_vec(), t0 + ms(1050));
        // Wall time since gw2's last change: 650 ms. On the seeing clock:
        // one grace (100 ms) for gw1's gap, and 30 ms since.
        assert_eq!(a.silent_for(&"gw2".into(), t0 + ms(1080)), Some(ms(130)));
        assert!(a.silent(t0 + ms(1080), DEAD).is_empty());
        a.seen(&"gw2".into(), b"again".to_vec(), t0 + ms(1130));
        assert_eq!(a.silent_for(&"gw2".into(), t0 + ms(1130)), Some(ms(0)));
    }

    #[test]
    fn a_member_that_does_not_come_back_after_an_election_is_silent_later() {
        let t0 = Instant::now();
        let mut a = AliveCounters::new(&"gw1".into(), HB, DEAD);
        beat(&mut a, t0, 0, 10, &["gw1", "gw2"]);
        beat(&mut a, t0, 1050, 4, &["gw1"]);
        // gw2 last moved at 450; gw1 saw it missing 100 ms of grace plus
        // 200 ms from 1050 on.
        assert!(a.silent(t0 + ms(1240), DEAD).is_empty());
        assert_eq!(a.silent(t0 + ms(1250), DEAD).len(), 1);
    }

    #[test]
    fn while_its_own_counter_stands_still_a_member_sees_nobody_silent() {
        let t0 = Instant::now();
        let mut a = AliveCounters::new(&"gw1".into(), HB, DEAD);
        beat(&mut a, t0, 0, 10, &["gw1", "gw2"]);
        // gw1 cut off from etcd: for all it knows, only it is.
        assert!(a.silent(t0 + ms(5000), DEAD).is_empty());
        // Before its own counter is ever seen, nobody is silent either.
        let mut b = AliveCounters::new(&"gw1".into(), HB, DEAD);
        b.seen(&"gw2".into(), b"1".to_vec(), t0);
        assert!(b.silent(t0 + ms(5000), DEAD).is_empty());
    }

    #[test]
    fn a_snapshot_keeps_unchanged_counters_and_drops_the_missing() {
        let t0 = Instant::now();
        let mut a = AliveCounters::new(&"gw1".into(), HB, DEAD);
        beat(&mut a, t0, 0, 2, &["gw1", "gw2", "gw3"]);
        beat(&mut a, t0, 100, 8, &["gw1"]);
        a.replace(
            vec![
                ("gw1".into(), b"x".to_vec()),
                ("gw2".into(), b"50".to_vec()),
            ],
            t0 + ms(500),
        );
        assert_eq!(a.last_change(&"gw3".into()), None);
        // gw2's counter did not change: still silent since 50 ms.
        assert_eq!(a.last_change(&"gw2".into()), Some(t0 + ms(50)));
        assert_eq!(a.silent(t0 + ms(500), DEAD).len(), 1);
    }
}
