//! `/metrics`: Prometheus (OpenMetrics text) exposition of the session. The hot path only bumps
//! atomics; this collector reads them when Prometheus scrapes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use playpod_hotpath::ring::Ring;
use playpod_hotpath::stats::{Histogram, LATENCY_BUCKETS_US, PipelineStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::server::Health;

/// The session's metric registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(stats: Arc<PipelineStats>, health: Arc<Health>, ring: Ring) -> Self {
        let mut registry = Registry::with_prefix("playpod");
        registry.register_collector(Box::new(SessionCollector {
            stats,
            health,
            ring,
        }));
        Self { registry }
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[derive(Debug)]
struct SessionCollector {
    stats: Arc<PipelineStats>,
    health: Arc<Health>,
    ring: Ring,
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Histogram,
) -> std::fmt::Result {
    let counts = h.bucket_counts();
    let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
        .iter()
        .map(|&us| us as f64 / 1e6)
        .chain([f64::INFINITY])
        .zip(counts)
        .collect();
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_us() as f64 / 1e6,
        h.count(),
        &buckets,
        None,
    )
}

impl Collector for SessionCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.stats;
        let h = &*self.health;
        counter(
            &mut enc,
            "frames_captured",
            "Frames read from the screen.",
            load(&s.frames_captured),
        )?;
        counter(
            &mut enc,
            "frames_encoded",
            "Frames encoded to H.264.",
            load(&s.frames_encoded),
        )?;
        counter(
            &mut enc,
            "frames_published",
            "Access units put in the broadcast ring.",
            load(&s.frames_published),
        )?;
        counter(
            &mut enc,
            "frames_dropped_late",
            "Frame ticks skipped because the frame thread was late.",
            load(&s.frames_dropped_late),
        )?;
        counter(
            &mut enc,
            "frames_dropped_oversize",
            "Access units too large for a ring slot.",
            load(&s.frames_dropped_oversize),
        )?;
        counter(
            &mut enc,
            "keyframes",
            "IDR frames encoded.",
            load(&s.keyframes),
        )?;
        counter(
            &mut enc,
            "keyframe_requests",
            "Keyframes asked for by new or lagging viewers.",
            load(&s.keyframe_requests),
        )?;
        counter(
            &mut enc,
            "encoded_bytes",
            "Bytes of H.264 encoded.",
            load(&s.bytes_encoded),
        )?;
        counter(
            &mut enc,
            "video_frames_sent",
            "Video messages sent to viewers (all viewers).",
            load(&h.frames_sent),
        )?;
        counter(
            &mut enc,
            "video_bytes_sent",
            "Video bytes sent to viewers (all viewers).",
            load(&h.bytes_sent),
        )?;
        counter(
            &mut enc,
            "viewer_lags",
            "Times a viewer fell a whole ring behind and skipped to the next keyframe.",
            self.ring.lagged(),
        )?;
        counter(
            &mut enc,
            "viewers_dropped_slow",
            "Viewers dropped for taking no data for 10 s.",
            load(&h.viewers_dropped_slow),
        )?;
        gauge(
            &mut enc,
            "viewers",
            "Video viewers connected.",
            h.viewers.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut enc,
            "players",
            "Players connected.",
            h.players.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut enc,
            "display_up",
            "1 while the display is captured.",
            i64::from(h.display_ok.load(Ordering::Relaxed)),
        )?;
        histogram(
            &mut enc,
            "frame_ready_to_ring_seconds",
            "Frame due -> encoded access unit in the ring.",
            &s.ready_to_ring,
        )?;
        histogram(
            &mut enc,
            "encode_seconds",
            "Time in the H.264 encoder per frame.",
            &s.encode_time,
        )?;
        histogram(
            &mut enc,
            "convert_seconds",
            "BGRX -> I420 conversion time per frame.",
            &s.convert_time,
        )?;
        let info = prometheus_client::metrics::info::Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("encoder", h.encoder),
            ("capture", h.capture),
        ]);
        info.encode(enc.encode_descriptor(
            "build",
            "Build and pipeline facts.",
            None,
            info.metric_type(),
        )?)
    }
}
