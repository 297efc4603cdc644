//! The two audio threads: capture (blocking 10 ms reads, reconnecting with a backoff) and
//! encode (Opus into the broadcast ring), joined by an SPSC ring of PCM frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::pipeline::unix_micros;
use crate::ring::{Ring, RingConfig};
use crate::stats::{PipelineStats, bump};

use super::clock::{Backoff, CaptureClock};
use super::encode::{AudioEncodeError, OpusSettings, OpusStage};
use super::{AudioState, AudioStats, FRAME_BYTES, FRAME_SAMPLES, FRAME_US, PcmFrame, SAMPLE_RATE};

/// Why the sound server could not be used; the capture thread logs it and retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Read(String),
}

/// A connected PCM source: S16LE stereo 48 kHz.
pub trait PcmSource: Send {
    /// Fills `bytes` completely, blocking until the data is there.
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), SourceError>;
    /// The age of the newest sample read, µs, if the source knows it.
    fn latency_us(&mut self) -> Option<u64>;
}

/// Makes a connection to the sound server; called again after each failure.
pub trait PcmConnector: Send {
    fn connect(&mut self) -> Result<Box<dyn PcmSource>, SourceError>;
    /// What is recorded from where, for logs.
    fn describe(&self) -> String;
}

/// Audio pipeline settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioConfig {
    pub opus: OpusSettings,
    /// Frames the PCM ring holds between the threads.
    pub pcm_frames: usize,
    /// The broadcast ring of packets.
    pub ring: RingConfig,
    /// Encode even when nobody listens (tests, benchmarks).
    pub always_encode: bool,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            opus: OpusSettings::default(),
            // 80 ms: far more than the encoder needs per frame, so it only fills when the
            // encoder thread is starved of CPU.
            pcm_frames: 8,
            // 64 packets: 640 ms of audio for listeners to fall behind by before they skip.
            ring: RingConfig {
                slots: 64,
                slot_bytes: 1536,
                max_readers: 1024,
            },
            always_encode: false,
        }
    }
}

/// The running audio threads. Dropping it stops them.
#[derive(Debug)]
pub struct AudioPipeline {
    stop: Arc<AtomicBool>,
    capture: Option<JoinHandle<()>>,
    encoder: Option<JoinHandle<()>>,
}

/// The longest a capture thread blocked in a read (a hung server) is waited for on stop.
const STOP_WAIT: Duration = Duration::from_secs(1);

impl AudioPipeline {
    /// Starts both threads. The Opus encoder is made here, so a bad setting fails at once.
    /// With `follow`, the frame thread's counters, the audio's bitrate follows the video's
    /// ([`OpusStage::follow_video`]).
    pub fn spawn(
        connector: Box<dyn PcmConnector>,
        config: AudioConfig,
        follow: Option<Arc<PipelineStats>>,
    ) -> Result<(Self, Ring, Arc<AudioStats>), AudioEncodeError> {
        let (ring, writer) = Ring::new(config.ring);
        let stats = Arc::new(AudioStats::new(AudioState::Down));
        let mut stage = OpusStage::new(writer, stats.clone(), config.opus)?;
        if let Some(follow) = follow {
            stage.follow_video(follow);
        }
        let (producer, consumer) = rtrb::RingBuffer::<PcmFrame>::new(config.pcm_frames.max(2));
        let stop = Arc::new(AtomicBool::new(false));
        let encoder = {
            let stop = stop.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("playpod-audio-enc".into())
                .spawn(move || encode_loop(stage, consumer, &stats, &stop, config.always_encode))
                .ok()
        };
        let Some(encoder) = encoder else {
            return Err(AudioEncodeError::Opus(
                "cannot start the audio encoder thread",
            ));
        };
        let capture = {
            let stop = stop.clone();
            let stats = stats.clone();
            let wake = encoder.thread().clone();
            std::thread::Builder::new()
                .name("playpod-audio-cap".into())
                .spawn(move || capture_loop(connector, producer, &stats, &stop, &wake))
                .ok()
        };
        let pipeline = Self {
            stop,
            capture,
            encoder: Some(encoder),
        };
        if pipeline.capture.is_none() {
            return Err(AudioEncodeError::Opus(
                "cannot start the audio capture thread",
            ));
        }
        Ok((pipeline, ring, stats))
    }

    /// Whether both threads still run.
    pub fn is_running(&self) -> bool {
        [&self.capture, &self.encoder]
            .iter()
            .all(|h| h.as_ref().is_some_and(|h| !h.is_finished()))
    }
}

impl Drop for AudioPipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.encoder.take() {
            h.thread().unpark();
            if h.join().is_err() {
                tracing::error!("the audio encoder thread panicked");
            }
        }
        if let Some(h) = self.capture.take() {
            // A read returns within 10 ms unless the server hangs; then leave the thread be,
            // it holds nothing that needs cleaning up.
            let deadline = Instant::now() + STOP_WAIT;
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                if h.join().is_err() {
                    tracing::error!("the audio capture thread panicked");
                }
            } else {
                tracing::warn!("the audio capture thread is blocked in a read; leaving it");
            }
        }
    }
}

/// Sleeps for `d`, waking early when `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// Above this, a reported recording latency is not believed: with 10 ms fragments the real one
/// is a few fragments at most.
const MAX_PLAUSIBLE_LATENCY_US: u64 = 100_000;
/// Frames of a new connection whose reported latency is not used. Until the first timing update
/// after data starts flowing, PulseAudio interpolates from timing taken before the stream ran:
/// hundreds of milliseconds, shrinking in step with the wall clock, reaching the real value
/// within about a second and a half.
pub const LATENCY_WARMUP_FRAMES: u64 = 200;

/// The reported latency of the `frame`-th frame of a connection, or 0 while warming up, when
/// unknown, or when implausible.
pub fn plausible_latency(frame: u64, reported: Option<u64>) -> u64 {
    if frame < LATENCY_WARMUP_FRAMES {
        return 0;
    }
    reported
        .filter(|&us| us <= MAX_PLAUSIBLE_LATENCY_US)
        .unwrap_or(0)
}

fn capture_loop(
    mut connector: Box<dyn PcmConnector>,
    mut producer: rtrb::Producer<PcmFrame>,
    stats: &AudioStats,
    stop: &AtomicBool,
    wake: &std::thread::Thread,
) {
    let mut backoff = Backoff::new();
    let mut clock = CaptureClock::new(SAMPLE_RATE);
    let mut bytes = [0u8; FRAME_BYTES];
    let mut frame = PcmFrame::default();
    let mut connections = 0u64;
    let mut last_error: Option<SourceError> = None;
    while !stop.load(Ordering::Acquire) {
        let mut source = match connector.connect() {
            Ok(source) => source,
            Err(err) => {
                stats.set_state(AudioState::Down);
                if last_error.as_ref() != Some(&err) {
                    tracing::warn!(%err, "audio: no sound server; retrying");
                    last_error = Some(err);
                }
                sleep_unless_stopped(backoff.next_delay(), stop);
                continue;
            }
        };
        connections += 1;
        if connections > 1 {
            bump(&stats.reconnects, 1);
        }
        tracing::info!(source = %connector.describe(), "audio: recording");
        clock.reset();
        let mut first = true;
        let mut read = 0u64;
        while !stop.load(Ordering::Acquire) {
            if let Err(err) = source.read(&mut bytes) {
                stats.set_state(AudioState::Down);
                tracing::warn!(%err, "audio: the sound server went away; reconnecting");
                last_error = None;
                break;
            }
            let now = unix_micros();
            let latency = plausible_latency(read, source.latency_us());
            read += 1;
            if first {
                // Data flows: the source is up.
                stats.set_state(AudioState::Ok);
                backoff.reset();
                first = false;
            }
            frame.capture_us = clock.stamp(now, latency, FRAME_SAMPLES as u32);
            frame.fill_from_le_bytes(&bytes);
            bump(&stats.frames_captured, 1);
            if producer.push(frame).is_err() {
                bump(&stats.pcm_overruns, 1);
            }
            wake.unpark();
        }
        drop(source);
        if !stop.load(Ordering::Acquire) {
            sleep_unless_stopped(backoff.next_delay(), stop);
        }
    }
    stats.set_state(AudioState::Down);
}

fn encode_loop(
    mut stage: OpusStage,
    mut consumer: rtrb::Consumer<PcmFrame>,
    stats: &AudioStats,
    stop: &AtomicBool,
    always_encode: bool,
) {
    let gap = Duration::from_micros(2 * FRAME_US);
    let mut last_frame = Instant::now();
    let mut in_gap = true;
    let mut logged = false;
    while !stop.load(Ordering::Acquire) {
        match consumer.pop() {
            Ok(frame) => {
                last_frame = Instant::now();
                in_gap = false;
                if !always_encode && !stage.has_readers() {
                    continue;
                }
                match stage.encode(&frame) {
                    Ok(_) => logged = false,
                    Err(err) if !logged => {
                        tracing::warn!(%err, "audio: a frame could not be encoded");
                        logged = true;
                    }
                    Err(_) => {}
                }
            }
            Err(_) => {
                if !in_gap && last_frame.elapsed() > gap && stats.state() == AudioState::Ok {
                    bump(&stats.pcm_underruns, 1);
                    in_gap = true;
                }
                std::thread::park_timeout(Duration::from_micros(FRAME_US));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::ReadOutcome;
    use std::sync::Mutex;

    /// A source that makes a quiet hum (every sample 1: not silence, which is not sent) at
    /// real-time pace and fails after `left` reads.
    struct Synthetic {
        left: u32,
    }

    impl PcmSource for Synthetic {
        fn read(&mut self, bytes: &mut [u8]) -> Result<(), SourceError> {
            if self.left == 0 {
                return Err(SourceError::Read("the synthetic source ended".into()));
            }
            self.left -= 1;
            for pair in bytes.chunks_exact_mut(2) {
                pair.copy_from_slice(&1i16.to_le_bytes());
            }
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        }

        fn latency_us(&mut self) -> Option<u64> {
            Some(1_000)
        }
    }

    /// Fails the first connection, then gives sources of 20 frames.
    struct Flaky {
        attempts: Arc<Mutex<u32>>,
    }

    impl PcmConnector for Flaky {
        fn connect(&mut self) -> Result<Box<dyn PcmSource>, SourceError> {
            let mut n = self.attempts.lock().unwrap();
            *n += 1;
            if *n == 1 {
                return Err(SourceError::Connect("not yet".into()));
            }
            Ok(Box::new(Synthetic { left: 20 }))
        }

        fn describe(&self) -> String {
            "synthetic".into()
        }
    }

    #[test]
    fn reconnects_and_keeps_publishing() {
        let attempts = Arc::new(Mutex::new(0));
        let config = AudioConfig {
            always_encode: true,
            ..AudioConfig::default()
        };
        let (pipeline, ring, stats) = AudioPipeline::spawn(
            Box::new(Flaky {
                attempts: attempts.clone(),
            }),
            config,
            None,
        )
        .unwrap();
        let mut reader = ring.subscribe().unwrap();
        let mut out = Vec::new();
        let mut got = 0;
        while got < 50 {
            out.clear();
            match reader.read_blocking(&mut out, Duration::from_secs(10)) {
                ReadOutcome::Frame(meta) => {
                    assert!(meta.capture_us > 0);
                    got += 1;
                }
                other => panic!("after {got} packets: {other:?}"),
            }
        }
        assert!(*attempts.lock().unwrap() >= 4, "the source was reconnected");
        assert!(stats.reconnects.load(Ordering::Relaxed) >= 2);
        drop(pipeline);
        assert_eq!(reader.try_read(&mut out), ReadOutcome::Closed);
    }
}
