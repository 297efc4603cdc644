//! Capture times and retry pacing, as plain values: the capture thread passes the time in.

use std::time::Duration;

/// Beyond this disagreement between the sample count and the wall clock, the clock re-anchors
/// (at once when the wall clock says earlier; after [`LATE_CHUNKS`] chunks when it says later).
const RESYNC_US: i64 = 20_000;
/// Chunks in a row that must look later than the count by more than [`RESYNC_US`] before the
/// clock believes samples were lost. A read that returns late (the thread was not scheduled)
/// looks late too, but the reads after it return at once with buffered data and agree again
/// within a few chunks.
const LATE_CHUNKS: u32 = 10;
/// A raw estimate earlier than the count moves the anchor by this fraction of the difference:
/// the earliest estimates are the ones least delayed by scheduling.
const EARLY_DIVISOR: i64 = 4;
/// A raw estimate later than the count moves it by this (smaller) fraction: enough to follow a
/// sound card clock slower than nominal, little enough to ignore a late read.
const LATE_DIVISOR: i64 = 32;

/// Gives each captured chunk the capture time of its first sample, µs since the Unix epoch.
///
/// The raw estimate for a chunk read at `now` is `now - latency - chunk duration`, where
/// `latency` is what the sound server reports for the newest sample read (its age). That raw
/// estimate is late by however long the reading thread waited to run; consecutive chunks are
/// contiguous in sample time, so the clock counts samples from an anchor and only nudges the
/// anchor toward the raw estimates (quickly toward earlier ones, slowly toward later ones),
/// re-anchoring after a gap.
#[derive(Debug, Clone)]
pub struct CaptureClock {
    rate: u32,
    anchor_us: Option<i64>,
    /// Sample frames since the anchor.
    frames: u64,
    /// Chunks in a row that looked later than the count by more than [`RESYNC_US`].
    late: u32,
}

impl CaptureClock {
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate.max(1),
            anchor_us: None,
            frames: 0,
            late: 0,
        }
    }

    /// Forgets the past (a new connection).
    pub fn reset(&mut self) {
        self.anchor_us = None;
        self.frames = 0;
        self.late = 0;
    }

    fn span_us(&self, frames: u64) -> i64 {
        (u128::from(frames) * 1_000_000 / u128::from(self.rate)) as i64
    }

    /// The capture time of the first sample of a chunk of `frames` sample frames that was read
    /// at `now_us`, the newest of its samples being `latency_us` old.
    pub fn stamp(&mut self, now_us: u64, latency_us: u64, frames: u32) -> u64 {
        let frames = u64::from(frames);
        let raw = now_us as i64 - latency_us as i64 - self.span_us(frames);
        let stamped = match self.anchor_us {
            Some(anchor) => {
                let predicted = anchor + self.span_us(self.frames);
                let error = raw - predicted;
                if error > RESYNC_US {
                    self.late += 1;
                } else {
                    self.late = 0;
                }
                if error < -RESYNC_US || self.late >= LATE_CHUNKS {
                    self.anchor_us = Some(raw);
                    self.frames = 0;
                    self.late = 0;
                    raw
                } else if error > RESYNC_US {
                    // Maybe a late read: keep counting until it persists.
                    predicted
                } else {
                    let divisor = if error < 0 {
                        EARLY_DIVISOR
                    } else {
                        LATE_DIVISOR
                    };
                    let anchor = anchor + error / divisor;
                    self.anchor_us = Some(anchor);
                    anchor + self.span_us(self.frames)
                }
            }
            None => {
                self.anchor_us = Some(raw);
                self.frames = 0;
                raw
            }
        };
        self.frames += frames;
        stamped.max(0) as u64
    }
}

/// Exponential backoff between reconnection attempts: 100 ms, doubling, at most 2 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_chunks_get_contiguous_times_despite_jitter() {
        let mut c = CaptureClock::new(48_000);
        let t0 = 1_700_000_000_000_000u64;
        // Chunk n (480 frames, 10 ms) is read at t0 + 10 ms * (n + 1), up to 4 ms late (and
        // once 35 ms late, the next reads catching up), with 8 ms latency.
        let mut jitter = [0i64, 3_000, 1_000, 2_000, 0, 4_000, 500, 0].repeat(25);
        jitter[100] = 35_000;
        jitter[101] = 25_000;
        jitter[102] = 15_000;
        jitter[103] = 5_000;
        let mut stamps = Vec::new();
        for (n, j) in (0..200u64).zip(jitter.iter()) {
            let now = (t0 + 10_000 * (n + 1)) as i64 + j;
            stamps.push(c.stamp(now as u64, 8_000, 480));
        }
        let want = |n: u64| t0 - 8_000 + 10_000 * n;
        assert_eq!(stamps[0], want(0));
        for (n, &s) in stamps.iter().enumerate() {
            let err = s as i64 - want(n as u64) as i64;
            assert!(
                (-500..=2_000).contains(&err),
                "chunk {n}: {s} is {err} µs off"
            );
        }
        for pair in stamps.windows(2) {
            let step = pair[1] as i64 - pair[0] as i64;
            assert!((9_500..=10_500).contains(&step), "step {step}");
        }
    }

    #[test]
    fn follows_a_drifting_clock_and_reanchors_after_a_gap() {
        let mut c = CaptureClock::new(48_000);
        let t0 = 1_000_000_000u64;
        // The sound card runs 0.5 % fast: each chunk of 480 frames takes 9.95 ms.
        let mut last = 0;
        for n in 0..1_000u64 {
            let now = t0 + 9_950 * (n + 1);
            last = c.stamp(now, 0, 480);
            let want = now - 9_950;
            assert!(
                (last as i64 - want as i64).abs() <= 2_000,
                "chunk {n}: {last} vs {want}"
            );
        }
        // Half a second of samples lost: once that persists, the clock re-anchors.
        let mut after = 0;
        for n in 0..LATE_CHUNKS as u64 {
            let now = t0 + 9_950 * (1_000 + n) + 500_000;
            after = c.stamp(now, 5_000, 480);
        }
        let now = t0 + 9_950 * (1_000 + u64::from(LATE_CHUNKS) - 1) + 500_000;
        assert_eq!(after, now - 5_000 - 10_000);
        assert!(after > last + 400_000);
        // An estimate far earlier than the count re-anchors at once.
        let early = c.stamp(now + 10_000 - 100_000, 0, 480);
        assert_eq!(early, now + 10_000 - 100_000 - 10_000);
    }

    #[test]
    fn follows_a_slow_clock() {
        let mut c = CaptureClock::new(48_000);
        let t0 = 1_000_000_000u64;
        // The sound card runs 0.5 % slow: each chunk of 480 frames takes 10.05 ms.
        for n in 0..2_000u64 {
            let now = t0 + 10_050 * (n + 1);
            let s = c.stamp(now, 0, 480);
            let want = now - 10_050;
            let err = s as i64 - want as i64;
            assert!((-3_000..=100).contains(&err), "chunk {n}: {err} µs off");
        }
    }

    #[test]
    fn never_underflows() {
        let mut c = CaptureClock::new(48_000);
        assert_eq!(c.stamp(5, 1_000_000, 480), 0);
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::FIRST);
    }
}
