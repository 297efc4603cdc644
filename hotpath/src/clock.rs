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
        // In nanoseconds: `Duration * u32` would cap the frame number at 2^32 (207 days at
        // 240 fps), after which every deadline is the same past instant and the frame thread
        // never sleeps again. Frame numbers follow the time that passed, so this stays near now.
        let nanos = self.period.as_nanos() * u128::from(frame);
        let offset = Duration::new(
            u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
            (nanos % 1_000_000_000) as u32,
        );
        self.start + offset
    }

    /// Moves every later deadline by `by`, earlier when `earlier`: how the frame thread lines
    /// its ticks up with the game's drawing ([`phase_correction`]).
    pub fn shift(&mut self, by: Duration, earlier: bool) {
        if earlier {
            if let Some(start) = self.start.checked_sub(by) {
                self.start = start;
            }
        } else {
            self.start += by;
        }
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

/// How long after the game starts drawing a frame the tick should come: the drawing itself
/// (one image put, or a few fills) is done well within it, and a frame captured then waits
/// no longer than this for its tick.
pub const DRAW_LAG: Duration = Duration::from_millis(2);

/// Errors smaller than this are left alone (timing noise), so the clock does not dither.
const DEADBAND: Duration = Duration::from_micros(500);

/// How to move the clock so that its ticks come [`DRAW_LAG`] after the game starts drawing:
/// `since_drawing` is from the start of the latest drawing to this tick. `None`: leave the
/// clock as it is (on time, or the drawing too old to say anything). Otherwise the shift and
/// whether it is earlier: a quarter of the error, so a late drawing now and then only nudges
/// it, and a steady game is followed within a few frames.
pub fn phase_correction(since_drawing: Duration, period: Duration) -> Option<(Duration, bool)> {
    // Drawings more than two periods old: the game is paused or slow; nothing to follow.
    if since_drawing >= period * 2 || period.is_zero() {
        return None;
    }
    // Where in the period the tick falls after the drawing, as a signed error around the lag:
    // a tick just before the next drawing is a little early, not nearly a period late.
    let phase = Duration::from_nanos((since_drawing.as_nanos() % period.as_nanos()) as u64);
    let (error, late) = if phase >= DRAW_LAG {
        let late_by = phase - DRAW_LAG;
        if late_by > period / 2 {
            (period - late_by, false)
        } else {
            (late_by, true)
        }
    } else {
        (DRAW_LAG - phase, false)
    };
    if error < DEADBAND {
        return None;
    }
    // The error is at most half a period: a step is at most an eighth.
    Some((error / 4, late))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_drawing_to_just_after_it() {
        let p = Duration::from_secs(1) / 60;
        let ms = |m: f64| Duration::from_secs_f64(m / 1000.0);
        // On time: nothing to do.
        assert_eq!(phase_correction(DRAW_LAG, p), None);
        assert_eq!(phase_correction(DRAW_LAG + ms(0.3), p), None);
        // 8 ms after the drawing: come earlier, by a quarter of the 6 ms error.
        assert_eq!(phase_correction(ms(8.0), p), Some((ms(1.5), true)));
        // Just before the next drawing (16 ms after this one): a little later, not 14 ms earlier.
        let (by, earlier) = phase_correction(ms(16.0), p).unwrap();
        assert!(!earlier && by < ms(1.0), "{by:?} earlier={earlier}");
        // Too soon after the drawing starts: later.
        assert_eq!(phase_correction(ms(0.0), p), Some((ms(0.5), false)));
        // 10.5 ms after the drawing is nearer the next one (+2 ms at 18.67 ms): later, by a
        // quarter of 8.17 ms.
        let (by, earlier) = phase_correction(ms(10.5), p).unwrap();
        assert!(
            !earlier && by > ms(2.0) && by < ms(2.1),
            "{by:?} earlier={earlier}"
        );
        // A game that drew nothing for two periods is not followed.
        assert_eq!(phase_correction(p * 2, p), None);
        // A 30 fps game (drawing every other tick) lines up the same way.
        assert_eq!(phase_correction(p + ms(8.0), p), Some((ms(1.5), true)));
    }

    #[test]
    fn a_followed_clock_converges_and_stays() {
        // The game draws at 5.3 ms into each of its periods; the clock starts at 0.
        let t0 = Instant::now();
        let p = Duration::from_secs(1) / 60;
        let draw_offset = Duration::from_micros(5300);
        let mut clock = FrameClock::new(t0, 60);
        let mut last_since = Duration::ZERO;
        for n in 0..60u32 {
            let tick = clock.next_tick(t0 + p * n);
            // The latest drawing at or before the tick.
            let since_start = tick.deadline - t0;
            let k = (since_start.saturating_sub(draw_offset).as_nanos() / p.as_nanos()) as u32;
            let drawn = t0 + draw_offset + p * k;
            let since = tick.deadline.saturating_duration_since(drawn);
            last_since = since;
            if let Some((by, earlier)) = phase_correction(since, p) {
                clock.shift(by, earlier);
            }
        }
        assert!(
            last_since >= DRAW_LAG - DEADBAND && last_since <= DRAW_LAG + DEADBAND * 2,
            "ticks come {last_since:?} after the drawing"
        );
    }

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
    fn ticks_stay_a_period_apart_past_u32_frames() {
        // 2^32 frames are 207 days at 240 fps, within a session's lifetime (at most a year).
        let t0 = Instant::now();
        let mut clock = FrameClock::new(t0, 240);
        let p = clock.period();
        let now = t0 + p * u32::MAX + p * 10;
        let tick = clock.next_tick(now);
        assert_eq!(tick.frame, u64::from(u32::MAX) + 10);
        assert_eq!(tick.deadline, now);
        // The next tick is a period later, in the future: the frame thread sleeps until then
        // rather than spinning on a deadline that no longer moves.
        let next = clock.next_tick(now);
        assert_eq!(next.frame, tick.frame + 1);
        assert_eq!(next.deadline, now + p);
    }

    #[test]
    fn slightly_late_is_not_a_miss() {
        let t0 = Instant::now();
        let mut clock = FrameClock::new(t0, 60);
        let tick = clock.next_tick(t0 + Duration::from_millis(5));
        assert_eq!((tick.frame, tick.missed), (0, 0));
    }
}
