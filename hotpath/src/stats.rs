//! Counters and histograms the frame thread updates with relaxed atomics only: no lock, no
//! allocation. The shell reads them for `/metrics` and `/readyz`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Upper bounds (µs) of the latency histogram buckets; a last bucket catches the rest.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 16_667, 33_333, 66_667,
    250_000,
];

/// A fixed-bucket histogram of microseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn record(&self, us: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative), matching [`LATENCY_BUCKETS_US`] plus the overflow.
    pub fn bucket_counts(&self) -> [u64; LATENCY_BUCKETS_US.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The last `N` samples of a measurement, for exact percentiles in benchmarks.
#[derive(Debug)]
pub struct SampleWindow {
    samples: Box<[AtomicU32]>,
    next: AtomicU64,
}

impl SampleWindow {
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: (0..capacity.max(1)).map(|_| AtomicU32::new(0)).collect(),
            next: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u32) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.samples[(n % self.samples.len() as u64) as usize].store(value, Ordering::Relaxed);
    }

    /// The recorded samples (the last `capacity` of them), unsorted.
    pub fn snapshot(&self) -> Vec<u32> {
        let n = self
            .next
            .load(Ordering::Relaxed)
            .min(self.samples.len() as u64) as usize;
        self.samples[..n]
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    }
}

/// The `p`-th percentile (0..=100) of `values`, nearest-rank; `None` when empty.
pub fn percentile(values: &mut [u32], p: f64) -> Option<u32> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// Everything the frame thread counts.
#[derive(Debug)]
pub struct PipelineStats {
    pub frames_captured: AtomicU64,
    pub frames_encoded: AtomicU64,
    pub frames_published: AtomicU64,
    /// Ticks with nothing new on the screen: nothing encoded or sent (and, when the X server
    /// reported no damage, nothing captured either).
    pub frames_unchanged: AtomicU64,
    /// Ticks skipped because the frame thread was late.
    pub frames_dropped_late: AtomicU64,
    /// Access units too large for a ring slot.
    pub frames_dropped_oversize: AtomicU64,
    /// Frames the encoder skipped to hold a bitrate lowered for a slow viewer.
    pub frames_dropped_rate: AtomicU64,
    pub keyframes: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub bytes_encoded: AtomicU64,
    /// The encoder's target bitrate now, bits per second (lowered while viewers lag).
    pub bitrate_target_bps: AtomicU64,
    /// The bitrate set (`--bitrate-kbps`), bits per second: the target's ceiling.
    pub bitrate_full_bps: AtomicU64,
    /// Times the target was lowered because viewers lagged.
    pub bitrate_decreases: AtomicU64,
    /// Frame ready (tick) -> access unit in the ring.
    pub ready_to_ring: Histogram,
    /// Time inside the encoder alone.
    pub encode_time: Histogram,
    /// Time converting BGRX -> I420.
    pub convert_time: Histogram,
    /// Last samples of `ready_to_ring`, µs.
    pub ready_to_ring_window: SampleWindow,
}

impl Default for PipelineStats {
    fn default() -> Self {
        Self {
            frames_captured: AtomicU64::new(0),
            frames_encoded: AtomicU64::new(0),
            frames_published: AtomicU64::new(0),
            frames_unchanged: AtomicU64::new(0),
            frames_dropped_late: AtomicU64::new(0),
            frames_dropped_oversize: AtomicU64::new(0),
            frames_dropped_rate: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            bytes_encoded: AtomicU64::new(0),
            bitrate_target_bps: AtomicU64::new(0),
            bitrate_full_bps: AtomicU64::new(0),
            bitrate_decreases: AtomicU64::new(0),
            ready_to_ring: Histogram::default(),
            encode_time: Histogram::default(),
            convert_time: Histogram::default(),
            ready_to_ring_window: SampleWindow::new(8192),
        }
    }
}

impl PipelineStats {
    /// The bitrate set, `bps`: the ceiling, and the target until viewers' links lower it.
    pub fn set_full_bitrate(&self, bps: u32) {
        for counter in [&self.bitrate_target_bps, &self.bitrate_full_bps] {
            counter.store(u64::from(bps), Ordering::Relaxed);
        }
    }
}

/// Relaxed add, the only way the hot path touches these.
pub fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let h = Histogram::default();
        for us in [0, 250, 251, 5_999, 6_000, 1_000_000] {
            h.record(us);
        }
        let c = h.bucket_counts();
        assert_eq!(c[0], 2);
        assert_eq!(c[1], 1);
        assert_eq!(c[7], 2);
        assert_eq!(c[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum_us(), 250 + 251 + 5_999 + 6_000 + 1_000_000);
    }

    #[test]
    fn window_and_percentiles() {
        let w = SampleWindow::new(4);
        assert!(w.snapshot().is_empty());
        for v in 1..=10 {
            w.record(v);
        }
        let mut s = w.snapshot();
        s.sort_unstable();
        assert_eq!(s, vec![7, 8, 9, 10]);
        let mut v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50));
        assert_eq!(percentile(&mut v, 99.0), Some(99));
        assert_eq!(percentile(&mut v, 100.0), Some(100));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}
