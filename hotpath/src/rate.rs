//! Bitrate adaptation: one encoder feeds every viewer, so when a viewer's link cannot carry
//! the stream, the stream gets lighter for a while.
//!
//! The signal is the ring's count of viewer troubles ([`crate::ring::RingWriter::viewer_troubles`]),
//! which the viewers' tasks report: a viewer whose socket does not take frames as fast as they
//! come falls a whole ring behind and skips to the next keyframe (the kernel holds only a few
//! unsent kilobytes per connection, so this happens within a quarter second of the link
//! falling short, not after seconds of video queued); and a viewer whose connection's round
//! trip has grown well above its least has a queue in front of a slow link somewhere on the
//! way, which the sender never sees as a full socket. Which viewers count is the tasks' call
//! (the players', or anyone's while no player is connected). Each trouble lowers the target by a
//! quarter, or to [`LINK_SHARE`] of the rate the kernel saw that link deliver where that is
//! lower, at most once a second, down to a floor; after a few seconds with none the target
//! climbs back by a twentieth of the configured bitrate a second. The configured bitrate is
//! the ceiling: adaptation only ever takes away.

use std::time::{Duration, Instant};

/// Bitrate adaptation's state, driven once a tick from the frame thread.
#[derive(Debug, Clone)]
pub struct RateAdapt {
    max_bps: u32,
    floor_bps: u32,
    current_bps: u32,
    /// The ring's trouble count last seen.
    troubles: u64,
    /// The latest trouble seen.
    last_trouble: Option<Instant>,
    /// The latest change of the target.
    last_change: Instant,
    /// The latest decrease of the target.
    last_decrease: Option<Instant>,
}

/// The least time between two decreases: the one before must have had time to show.
pub const DECREASE_GAP: Duration = Duration::from_secs(1);
/// How long after the latest trouble the target starts to climb.
pub const CALM: Duration = Duration::from_secs(4);
/// The time between two increases.
pub const INCREASE_GAP: Duration = Duration::from_secs(1);
/// The share of a troubled link's measured rate a decrease goes to at most: the rest is room
/// for the stream's peaks (keyframes) and for the queue in front of the link to drain.
pub const LINK_SHARE: f64 = 0.8;

impl RateAdapt {
    /// Starts at `max_bps`, the ceiling; the floor is a tenth of it, and at least 100 kbit/s
    /// (or the ceiling, if lower).
    pub fn new(max_bps: u32, troubles: u64, now: Instant) -> Self {
        Self {
            max_bps,
            floor_bps: (max_bps / 10).max(100_000).min(max_bps),
            current_bps: max_bps,
            troubles,
            last_trouble: None,
            last_change: now,
            last_decrease: None,
        }
    }

    /// The target now, bits per second.
    pub fn current_bps(&self) -> u32 {
        self.current_bps
    }

    /// The lowest target it goes to.
    pub fn floor_bps(&self) -> u32 {
        self.floor_bps
    }

    /// Takes the ring's trouble count `troubles` at `now`, with the least rate a troubled link was
    /// seen to carry, if known; returns the new target when it changes. A decrease goes to a
    /// quarter below the target, or to [`LINK_SHARE`] of the link's rate where that is lower,
    /// so a stream far too heavy for a link is brought down in one step.
    pub fn update(&mut self, now: Instant, troubles: u64, link_bps: Option<u64>) -> Option<u32> {
        if troubles != self.troubles {
            self.troubles = troubles;
            self.last_trouble = Some(now);
            let gap_passed = self
                .last_decrease
                .is_none_or(|at| now.saturating_duration_since(at) >= DECREASE_GAP);
            if gap_passed && self.current_bps > self.floor_bps {
                let quarter_off = u64::from(self.current_bps) * 3 / 4;
                let link_share = link_bps.map_or(u64::MAX, |bps| (bps as f64 * LINK_SHARE) as u64);
                let lower = quarter_off.min(link_share) as u32;
                return self.set(lower.max(self.floor_bps), now, true);
            }
            return None;
        }
        let calm = self
            .last_trouble
            .is_none_or(|at| now.saturating_duration_since(at) >= CALM);
        if calm
            && self.current_bps < self.max_bps
            && now.saturating_duration_since(self.last_change) >= INCREASE_GAP
        {
            let higher = self.current_bps.saturating_add(self.max_bps / 20);
            return self.set(higher.min(self.max_bps), now, false);
        }
        None
    }

    fn set(&mut self, bps: u32, now: Instant, decrease: bool) -> Option<u32> {
        self.current_bps = bps;
        self.last_change = now;
        if decrease {
            self.last_decrease = Some(now);
        }
        Some(bps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_lag_lowers_the_target_by_a_quarter_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut r = RateAdapt::new(2_500_000, 7, t0);
        assert_eq!(
            r.update(t0, 7, None),
            None,
            "no lag, already at the ceiling"
        );
        assert_eq!(r.update(t0 + S / 10, 8, None), Some(1_875_000));
        assert_eq!(
            r.update(t0 + S / 2, 9, None),
            None,
            "too soon after the last decrease"
        );
        assert_eq!(r.update(t0 + S / 10 + S, 10, None), Some(1_406_250));
        assert_eq!(r.current_bps(), 1_406_250);
    }

    #[test]
    fn the_target_stops_at_the_floor() {
        let t0 = Instant::now();
        let mut r = RateAdapt::new(2_500_000, 0, t0);
        let mut last = None;
        for i in 1..=20u32 {
            if let Some(bps) = r.update(t0 + S * i, u64::from(i), None) {
                last = Some(bps);
            }
        }
        assert_eq!(last, Some(250_000));
        assert_eq!(r.current_bps(), r.floor_bps());
        // A low ceiling is its own floor: nothing to take away below 100 kbit/s.
        let mut low = RateAdapt::new(100_000, 0, t0);
        assert_eq!(low.update(t0 + S, 1, None), None);
        assert_eq!(low.current_bps(), 100_000);
    }

    #[test]
    fn after_a_calm_the_target_climbs_back_to_the_ceiling_and_no_further() {
        let t0 = Instant::now();
        let mut r = RateAdapt::new(2_000_000, 0, t0);
        assert_eq!(r.update(t0, 1, None), Some(1_500_000));
        // Calm, but not for long enough yet.
        assert_eq!(r.update(t0 + CALM - S / 10, 1, None), None);
        assert_eq!(r.update(t0 + CALM, 1, None), Some(1_600_000));
        assert_eq!(
            r.update(t0 + CALM + S / 2, 1, None),
            None,
            "one step a second"
        );
        let mut t = t0 + CALM;
        let mut steps = 1;
        while r.current_bps() < 2_000_000 {
            t += S;
            if r.update(t, 1, None).is_some() {
                steps += 1;
            }
            assert!(steps < 10, "climbs in steps of a twentieth");
        }
        assert_eq!(steps, 5);
        assert_eq!(
            r.update(t + S * 10, 1, None),
            None,
            "never above the ceiling"
        );
    }

    #[test]
    fn a_link_rate_brings_the_target_down_in_one_step() {
        let t0 = Instant::now();
        let mut r = RateAdapt::new(1_500_000, 0, t0);
        // A link carrying 600 kbit/s: straight to 80 % of it, not a quarter off.
        assert_eq!(r.update(t0, 1, Some(600_000)), Some(480_000));
        // A rate above a quarter off leaves the quarter.
        assert_eq!(r.update(t0 + S, 2, Some(10_000_000)), Some(360_000));
        // Never below the floor.
        assert_eq!(r.update(t0 + S * 2, 3, Some(1_000)), Some(150_000));
    }

    #[test]
    fn a_lag_while_climbing_starts_the_calm_again() {
        let t0 = Instant::now();
        let mut r = RateAdapt::new(2_000_000, 0, t0);
        r.update(t0, 1, None);
        assert_eq!(r.update(t0 + CALM, 1, None), Some(1_600_000));
        // Lags come in a burst: the first lowers, the next ones (within the gap) do not, but
        // each restarts the calm.
        assert_eq!(r.update(t0 + CALM + S / 10, 2, None), Some(1_200_000));
        assert_eq!(r.update(t0 + CALM + S / 2, 3, None), None);
        assert_eq!(r.update(t0 + CALM + S / 2 + CALM - S / 10, 3, None), None);
        assert_eq!(
            r.update(t0 + CALM + S / 2 + CALM, 3, None),
            Some(1_300_000),
            "the calm counts from the last lag"
        );
    }
}
