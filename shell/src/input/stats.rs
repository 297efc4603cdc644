//! What the player threads count, with relaxed atomics only; `/metrics` reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use playpod_hotpath::stats::SampleWindow;

/// Upper bounds (µs) of the input latency histogram's buckets; a last bucket catches the rest.
pub const INPUT_LATENCY_BUCKETS_US: [u64; 12] =
    [5, 10, 20, 30, 50, 75, 100, 200, 500, 1_000, 5_000, 20_000];

/// How many recent latency samples are kept for exact percentiles.
const WINDOW: usize = 65_536;

/// A fixed-bucket histogram of nanoseconds, bucketed in microseconds.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; INPUT_LATENCY_BUCKETS_US.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = INPUT_LATENCY_BUCKETS_US
            .iter()
            .position(|&b| ns <= b * 1000)
            .unwrap_or(INPUT_LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative), matching [`INPUT_LATENCY_BUCKETS_US`] plus the
    /// overflow.
    pub fn bucket_counts(&self) -> [u64; INPUT_LATENCY_BUCKETS_US.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    pub fn sum_ns(&self) -> u64 {
        self.sum_ns.load(Ordering::Relaxed)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Why a message was answered with an error, for the error counter's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not a valid input message (DESIGN.md "Input WebSocket messages").
    Invalid,
    /// Over `--input-rate`.
    RateLimit,
}

/// Everything the player threads count, for both players together.
#[derive(Debug)]
pub struct InputStats {
    /// Messages that changed (or kept) the keys.
    pub messages: AtomicU64,
    pub errors_invalid: AtomicU64,
    pub errors_rate_limit: AtomicU64,
    /// Connections accepted into a player slot.
    pub connections: AtomicU64,
    /// Connections refused because the slot had a controller.
    pub refused: AtomicU64,
    /// Controllers replaced by a `?takeover=1` connection.
    pub takeovers: AtomicU64,
    /// Connections closed because the display could not be reached or went away.
    pub display_errors: AtomicU64,
    /// Connections ended because nothing came from the player (not even a pong) for the
    /// silence limit.
    pub silent: AtomicU64,
    /// WebSocket frame read -> XTEST requests flushed, per valid message.
    pub latency: LatencyHistogram,
    /// The last samples of `latency`, in nanoseconds, for exact percentiles.
    pub latency_window_ns: SampleWindow,
}

impl Default for InputStats {
    fn default() -> Self {
        Self {
            messages: AtomicU64::new(0),
            errors_invalid: AtomicU64::new(0),
            errors_rate_limit: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            display_errors: AtomicU64::new(0),
            silent: AtomicU64::new(0),
            latency: LatencyHistogram::default(),
            latency_window_ns: SampleWindow::new(WINDOW),
        }
    }
}

impl InputStats {
    pub fn error(&self, kind: ErrorKind) {
        match kind {
            ErrorKind::Invalid => &self.errors_invalid,
            ErrorKind::RateLimit => &self.errors_rate_limit,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one message handled in `elapsed` (frame read -> XTEST flushed).
    pub fn handled(&self, elapsed: Duration) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
        self.latency_window_ns
            .record(u32::try_from(elapsed.as_nanos()).unwrap_or(u32::MAX));
    }

    /// The `p`-th percentiles (0..=100) of the recent latencies, in nanoseconds.
    pub fn latency_percentiles_ns(&self, ps: &[f64]) -> Vec<Option<u32>> {
        let mut samples = self.latency_window_ns.snapshot();
        ps.iter()
            .map(|&p| playpod_hotpath::stats::percentile(&mut samples, p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_microseconds() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_nanos(4_999));
        h.record(Duration::from_micros(5));
        h.record(Duration::from_nanos(5_001));
        h.record(Duration::from_secs(1));
        let counts = h.bucket_counts();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[INPUT_LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_ns(), 4_999 + 5_000 + 5_001 + 1_000_000_000);
    }

    #[test]
    fn percentiles_of_the_window() {
        let s = InputStats::default();
        assert_eq!(s.latency_percentiles_ns(&[50.0]), [None]);
        for us in 1..=100 {
            s.handled(Duration::from_micros(us));
        }
        assert_eq!(
            s.latency_percentiles_ns(&[50.0, 99.0]),
            [Some(50_000), Some(99_000)]
        );
        assert_eq!(s.messages.load(Ordering::Relaxed), 100);
    }
}
