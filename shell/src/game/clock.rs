//! A fixed frame clock with absolute deadlines: frame `n` is due at `start + n / fps`, so
//! timing errors never add up; a frame whose deadline has passed is skipped, not queued.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct FrameClock {
    start: Instant,
    fps: u32,
}

impl FrameClock {
    /// A clock whose frame 0 is due at `start`. `fps` below 1 counts as 1.
    pub fn new(start: Instant, fps: u32) -> FrameClock {
        FrameClock {
            start,
            fps: fps.max(1),
        }
    }

    /// When frame `frame` is due.
    pub fn deadline(&self, frame: u64) -> Instant {
        let nanos = u128::from(frame) * 1_000_000_000 / u128::from(self.fps);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The frame to draw after frame `done` at time `now`: the next one; or, when its deadline
    /// has passed already, the latest frame that is due (the ones between are skipped).
    pub fn next_frame(&self, done: u64, now: Instant) -> u64 {
        let next = done.saturating_add(1);
        if now <= self.deadline(next) {
            return next;
        }
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let due = elapsed * u128::from(self.fps) / 1_000_000_000;
        next.max(u64::try_from(due).unwrap_or(u64::MAX))
    }
}

/// Game logic steps that are due by frame `frame` at `fps` frames per second, when the logic runs
/// at `steps_per_second`: the game runs at the same speed whatever the frame rate.
pub fn steps_due(frame: u64, fps: u32, steps_per_second: u32) -> u64 {
    let steps = u128::from(frame) * u128::from(steps_per_second) / u128::from(fps.max(1));
    u64::try_from(steps).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_absolute() {
        let t0 = Instant::now();
        let clock = FrameClock::new(t0, 60);
        assert_eq!(clock.deadline(0), t0);
        assert_eq!(clock.deadline(3), t0 + Duration::from_nanos(50_000_000));
        assert_eq!(clock.deadline(60), t0 + Duration::from_secs(1));
        assert_eq!(
            clock.deadline(6000),
            t0 + Duration::from_secs(100),
            "no drift"
        );
    }

    #[test]
    fn on_time_goes_to_the_next_frame() {
        let t0 = Instant::now();
        let clock = FrameClock::new(t0, 60);
        assert_eq!(clock.next_frame(0, t0 + Duration::from_millis(5)), 1);
        assert_eq!(clock.next_frame(9, clock.deadline(10)), 10);
    }

    #[test]
    fn late_skips_to_the_frame_that_is_due() {
        let t0 = Instant::now();
        let clock = FrameClock::new(t0, 60);
        // Frame 1 was due at 16.7 ms; at 20 ms frame 1 is the one due: drawn at once.
        assert_eq!(clock.next_frame(0, t0 + Duration::from_millis(20)), 1);
        // At 110 ms frames 1..=5 are past: frame 6 (due at 100 ms) is next.
        assert_eq!(clock.next_frame(0, t0 + Duration::from_millis(110)), 6);
        // Never goes backwards.
        assert_eq!(clock.next_frame(50, t0 + Duration::from_millis(110)), 51);
    }

    #[test]
    fn logic_steps_follow_game_time() {
        assert_eq!(steps_due(120, 60, 60), 120);
        assert_eq!(steps_due(30, 30, 60), 60);
        assert_eq!(steps_due(120, 120, 60), 60);
        assert_eq!(steps_due(7, 0, 60), 420);
    }
}
