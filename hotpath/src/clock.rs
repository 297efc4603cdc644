//! The frame clock: absolute deadlines `start + n * period`, so timing errors never accumulate.
//! Pure: the caller passes the current time in and sleeps as told.

use std::time::{Duration, Instant};

/// The next frame to make and how many were missed before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Frame number (0, 1, 2, ...; skipped numbers are the missed frames).
    pub frame: u64,
    /// When this frame is due.
    pub deadline: Instant,
    /// Frames skipped because we were late by a whole period or more.
    pub missed: u64,
}

/// A fixed-rate clock with absolute deadlines.
#[derive(Debug, Clone)]
pub struct FrameClock {
    start: Instant,
    period: Duration,
    next: u64,
}

impl FrameClock {
    /// A clock ticking `fps` times a second from `start`. `fps` must be at least 1.
    pub fn new(start: Instant, fps: u32) -> Self {
        assert!(fps > 0, "fps is validated by the command line");
        Self {
            start,
            period: Duration::from_secs(1) / fps,
            next: 0,
        }
    }

    /// The period between frames.
    pub fn period(&self) -> Duration {
        self.period
    }

    fn deadline_of(&self, frame: u64) -> Instant {
        // u32 frames cover 2 years at 60 fps; beyond that the period multiply saturates.
        let n = u32::try_from(frame).unwrap_or(u32::MAX);
        self.start + self.period * n
    }

    /// The next frame to make, given the time now. When `now` is a whole period or more past
    /// the next deadline, the frames in between are skipped (counted in `missed`) rather than
    /// made in a burst.
    pub fn next_tick(&mut self, now: Instant) -> Tick {
        let mut frame = self.next;
        let due = self.deadline_of(frame);
        let mut missed = 0;
        if now > due {
            let late = now - due;
            let behind = (late.as_nanos() / self.period.as_nanos().max(1)) as u64;
            missed = behind;
            frame += behind;
        }
        self.next = frame + 1;
        Tick {
            frame,
            deadline: self.deadline_of(frame),
            missed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_ticks_are_evenly_spaced() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(t0, 60);
        let p = clock.period();
        for n in 0..120u32 {
            let tick = clock.next_tick(t0 + p * n);
            assert_eq!(tick.frame, u64::from(n));
            assert_eq!(tick.deadline, t0 + p * n);
            assert_eq!(tick.missed, 0);
        }
    }

    #[test]
    fn early_calls_do_not_advance_time() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(t0, 50);
        // Asking long before the deadline still gives the next frame and its deadline.
        assert_eq!(clock.next_tick(t0).deadline, t0);
        let tick = clock.next_tick(t0);
        assert_eq!(tick.frame, 1);
        assert_eq!(tick.deadline, t0 + Duration::from_millis(20));
    }

    #[test]
    fn late_by_periods_skips_frames_without_drift() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(t0, 50);
        clock.next_tick(t0);
        // Frame 1 was due at 20 ms; at 75 ms frames 1 and 2 are lost and frame 3 (60 ms) is made.
        let tick = clock.next_tick(t0 + Duration::from_millis(75));
        assert_eq!(tick.missed, 2);
        assert_eq!(tick.frame, 3);
        assert_eq!(tick.deadline, t0 + Duration::from_millis(60));
        let tick = clock.next_tick(t0 + Duration::from_millis(76));
        assert_eq!((tick.frame, tick.missed), (4, 0));
        assert_eq!(tick.deadline, t0 + Duration::from_millis(80));
    }

    #[test]
    fn slightly_late_is_not_a_miss() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(t0, 60);
        let tick = clock.next_tick(t0 + Duration::from_millis(5));
        assert_eq!((tick.frame, tick.missed), (0, 0));
    }
}
