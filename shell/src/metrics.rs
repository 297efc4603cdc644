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

use crate::input::{INPUT_LATENCY_BUCKETS_US, InputStats};
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

    /// Adds the game audio's counters and state (`None`: audio is off).
    pub fn with_audio(mut self, audio: Option<crate::audio::AudioFeed>) -> Self {
        self.registry
            .register_collector(Box::new(AudioCollector { audio }));
        self
    }

    /// Adds the low rendition's counters (`None`: there is none; its viewers are counted
    /// anyway, as 0).
    pub fn with_low_rendition(mut self, low: Option<Arc<PipelineStats>>) -> Self {
        if let Some(stats) = low {
            self.registry
                .register_collector(Box::new(LowCollector { stats }));
        }
        self
    }

    /// Adds the players' input counters and the input latency histogram.
    pub fn with_input(mut self, input: Arc<InputStats>) -> Self {
        self.registry
            .register_collector(Box::new(InputCollector { input }));
        self
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The low rendition's frames, bytes and bitrate.
#[derive(Debug)]
struct LowCollector {
    stats: Arc<PipelineStats>,
}

impl Collector for LowCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &*self.stats;
        counter(
            &mut enc,
            "low_rendition_frames_encoded",
            "Frames of the low rendition encoded (only while someone reads it).",
            load(&s.frames_encoded),
        )?;
        counter(
            &mut enc,
            "low_rendition_keyframes",
            "IDR frames of the low rendition encoded.",
            load(&s.keyframes),
        )?;
        counter(
            &mut enc,
            "low_rendition_encoded_bytes",
            "Bytes of the low rendition encoded.",
            load(&s.bytes_encoded),
        )?;
        gauge(
            &mut enc,
            "low_rendition_bitrate_target_bits_per_second",
            "The low rendition's target bitrate now: a quarter of --bitrate-kbps, lowered while \
             its viewers' links cannot carry it.",
            load(&s.bitrate_target_bps) as i64,
        )
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
            "frames_unchanged",
            "Ticks with nothing new on the screen: nothing encoded or sent.",
            load(&s.frames_unchanged),
        )?;
        {
            // Every way a frame is lost before the ring, one series per reason, all always
            // present (a zero is a fact too). A capture, conversion or encoder error is not
            // here: it ends the frame thread (`playpod_display_up` turns 0 and the pod exits).
            let mut family = enc.encode_descriptor(
                "frames_dropped",
                "Frames lost before the broadcast ring, by reason: late (frame ticks skipped \
                 because the frame thread was late), oversize (access units too large for a \
                 ring slot), rate (skipped by the encoder to hold a bitrate lowered for a slow \
                 viewer).",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in [
                ("late", load(&s.frames_dropped_late)),
                ("oversize", load(&s.frames_dropped_oversize)),
                ("rate", load(&s.frames_dropped_rate)),
            ] {
                ConstCounter::new(v).encode(family.encode_family(&[("reason", reason)])?)?;
            }
        }
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
            "viewer_slow_links",
            "Checks (four a second per viewer) that found a viewer's round trip 60 ms or more \
             above its least: a queue in front of a link slower than the stream.",
            self.ring.slow_links(),
        )?;
        gauge(
            &mut enc,
            "video_bitrate_target_bits_per_second",
            "The encoder's target bitrate now: --bitrate-kbps, lowered while viewers lag.",
            load(&s.bitrate_target_bps) as i64,
        )?;
        counter(
            &mut enc,
            "video_bitrate_decreases",
            "Times the target bitrate was lowered because a player's viewer (any viewer while no \
             player is connected) lagged or had a slow link.",
            load(&s.bitrate_decreases),
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
            "viewers_seated",
            "Video viewers whose page holds a connected player's seat: their links set the \
             bitrate.",
            h.seated_viewers.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut enc,
            "viewers_low_rendition",
            "Video viewers reading the low rendition (spectators whose links could not carry \
             the stream while players played).",
            h.low_viewers.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            &mut enc,
            "viewer_moves_to_low_rendition",
            "Times a spectator's link could not carry the stream and it moved to the low \
             rendition.",
            load(&h.rendition_moves_low),
        )?;
        counter(
            &mut enc,
            "viewer_moves_to_full_picture",
            "Times a viewer of the low rendition moved back to the full picture.",
            load(&h.rendition_moves_full),
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
            "Capture and BGRX -> YUV conversion time per frame (CPU or GPU).",
            &s.convert_time,
        )?;
        let info = prometheus_client::metrics::info::Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("encoder", h.encoder),
            ("conversion", h.conversion),
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

/// The players' input: messages, errors by kind, connections, and the latency from a
/// WebSocket frame read to its XTEST requests flushed.
#[derive(Debug)]
struct InputCollector {
    input: Arc<InputStats>,
}

impl Collector for InputCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &*self.input;
        counter(
            &mut enc,
            "input_messages",
            "Input messages applied to the players' keys.",
            load(&s.messages),
        )?;
        {
            let mut family = enc.encode_descriptor(
                "input_errors",
                "Input messages answered with an error and dropped, by kind.",
                None,
                MetricType::Counter,
            )?;
            for (kind, v) in [
                ("invalid", load(&s.errors_invalid)),
                ("rate_limit", load(&s.errors_rate_limit)),
            ] {
                ConstCounter::new(v).encode(family.encode_family(&[("kind", kind)])?)?;
            }
        }
        counter(
            &mut enc,
            "input_connections",
            "Input connections that got a player slot.",
            load(&s.connections),
        )?;
        counter(
            &mut enc,
            "input_refused",
            "Input connections refused because the player slot had a controller.",
            load(&s.refused),
        )?;
        counter(
            &mut enc,
            "input_takeovers",
            "Controllers replaced by a connection asking to take over.",
            load(&s.takeovers),
        )?;
        counter(
            &mut enc,
            "input_display_errors",
            "Input connections closed because the game's display could not be reached.",
            load(&s.display_errors),
        )?;
        counter(
            &mut enc,
            "input_silent_disconnects",
            "Input connections ended because nothing, not even a pong, came for --input-timeout.",
            load(&s.silent),
        )?;
        if let [Some(p50), Some(p99)] = s.latency_percentiles_ns(&[50.0, 99.0])[..] {
            for (name, help, ns) in [
                (
                    "input_latency_recent_p50_seconds",
                    "Median input latency (frame read -> XTEST flushed) of the last 65536 messages.",
                    p50,
                ),
                (
                    "input_latency_recent_p99_seconds",
                    "99th percentile input latency of the last 65536 messages.",
                    p99,
                ),
            ] {
                let g = ConstGauge::new(f64::from(ns) / 1e9);
                g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        let h = &s.latency;
        let buckets: Vec<(f64, u64)> = INPUT_LATENCY_BUCKETS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(h.bucket_counts())
            .collect();
        let mut m = enc.encode_descriptor(
            "input_latency_seconds",
            "WebSocket frame read -> XTEST key events flushed, per input message.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_ns() as f64 / 1e9,
            h.count(),
            &buckets,
            None,
        )
    }
}

/// The game audio: packets, the PCM ring's overruns and underruns, reconnections, the state.
#[derive(Debug)]
struct AudioCollector {
    audio: Option<crate::audio::AudioFeed>,
}

impl Collector for AudioCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = crate::audio::state(self.audio.as_ref());
        gauge(
            &mut enc,
            "audio_state",
            "Game audio: 0 off (--no-audio), 1 down (no sound server; reconnecting), 2 ok.",
            state as i64,
        )?;
        let Some(feed) = &self.audio else {
            return Ok(());
        };
        let s = &*feed.stats;
        counter(
            &mut enc,
            "audio_frames_captured",
            "10 ms PCM frames read from the sound server.",
            load(&s.frames_captured),
        )?;
        counter(
            &mut enc,
            "audio_packets",
            "Opus packets put in the audio broadcast ring.",
            load(&s.packets),
        )?;
        counter(
            &mut enc,
            "audio_frames_silent",
            "10 ms frames of digital silence neither encoded nor sent (--every-frame sends them).",
            load(&s.frames_silent),
        )?;
        counter(
            &mut enc,
            "audio_encoded_bytes",
            "Bytes of Opus encoded.",
            load(&s.bytes_encoded),
        )?;
        counter(
            &mut enc,
            "audio_packets_sent",
            "Audio messages sent to listeners (all listeners).",
            load(&s.packets_sent),
        )?;
        gauge(
            &mut enc,
            "audio_bitrate_target_bits_per_second",
            "The Opus encoder's target bitrate now: --audio-bitrate-kbps, lowered with the \
             video's while a slow link holds it down.",
            load(&s.bitrate_target_bps) as i64,
        )?;
        counter(
            &mut enc,
            "audio_pcm_overruns",
            "PCM frames dropped because the ring to the encoder was full.",
            load(&s.pcm_overruns),
        )?;
        counter(
            &mut enc,
            "audio_pcm_underruns",
            "Times the encoder found no PCM for more than two frames while recording.",
            load(&s.pcm_underruns),
        )?;
        counter(
            &mut enc,
            "audio_encode_errors",
            "Frames the Opus encoder or the ring refused.",
            load(&s.encode_errors),
        )?;
        counter(
            &mut enc,
            "audio_reconnects",
            "Connections to the sound server after the first.",
            load(&s.reconnects),
        )?;
        gauge(
            &mut enc,
            "audio_listeners",
            "Audio listeners connected.",
            feed.ring.readers() as i64,
        )?;
        histogram(
            &mut enc,
            "audio_capture_to_ring_seconds",
            "Capture time of a frame's first sample -> its Opus packet in the ring.",
            &s.capture_to_ring,
        )?;
        histogram(
            &mut enc,
            "audio_encode_seconds",
            "Time in the Opus encoder per 10 ms frame.",
            &s.encode_time,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use playpod_hotpath::ring::RingConfig;
    use playpod_hotpath::stats::bump;

    fn session_text(stats: &Arc<PipelineStats>) -> String {
        let (ring, _writer) = Ring::new(RingConfig::for_picture(64, 64));
        let health = Arc::new(Health::new("openh264", "fbdir"));
        Metrics::new(stats.clone(), health, ring)
            .encode()
            .expect("encode")
    }

    #[test]
    fn frames_dropped_is_one_family_by_reason() {
        let stats = Arc::new(PipelineStats::default());
        let text = session_text(&stats);
        for needle in [
            "# TYPE playpod_frames_dropped counter",
            "playpod_frames_dropped_total{reason=\"late\"} 0",
            "playpod_frames_dropped_total{reason=\"oversize\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        bump(&stats.frames_dropped_late, 3);
        bump(&stats.frames_dropped_oversize, 2);
        let text = session_text(&stats);
        for needle in [
            "playpod_frames_dropped_total{reason=\"late\"} 3",
            "playpod_frames_dropped_total{reason=\"oversize\"} 2",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert!(!text.contains("frames_dropped_late"), "{text}");
        assert!(!text.contains("frames_dropped_oversize"), "{text}");
    }

    #[test]
    fn session_names_and_build_info() {
        let stats = Arc::new(PipelineStats::default());
        stats.ready_to_ring.record(4_000);
        let text = session_text(&stats);
        for needle in [
            "playpod_frames_encoded_total 0",
            "playpod_encoded_bytes_total 0",
            "playpod_viewers 0",
            "playpod_frame_ready_to_ring_seconds_bucket{le=\"0.004\"} 1",
            "playpod_frame_ready_to_ring_seconds_count 1",
            "playpod_build_info{version=",
            "encoder=\"openh264\",conversion=\"cpu\",capture=\"fbdir\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
