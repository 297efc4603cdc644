//! Game audio: the PulseAudio sink's monitor, recorded in 10 ms fragments, through an SPSC ring
//! to an Opus encoder, into a broadcast ring of its own.
//!
//! ```text
//! game -> null sink "game" -> capture thread (10 ms reads) -> SPSC ring (rtrb) -> encoder thread
//!      -> Opus, 10 ms frames -> broadcast ring -> listeners
//! ```
//!
//! The capture thread stays connected and reconnects by itself, with a backoff, when the server
//! goes away; meanwhile the state is [`AudioState::Down`] and the video goes on. The pure parts
//! (the capture clock, the backoff, the encoder stage) are driven from outside, so tests run them
//! without a sound server.

pub mod clock;
pub mod encode;
pub mod pipeline;
pub mod pulse;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::stats::{Histogram, SampleWindow};

pub use clock::{Backoff, CaptureClock};
pub use encode::{OpusSettings, OpusStage};
pub use pipeline::{AudioConfig, AudioPipeline, PcmConnector, PcmSource, SourceError};
pub use pulse::{PulseConnector, PulsePlayer, PulseRecorder};

/// Sample rate of the capture and the stream, Hz.
pub const SAMPLE_RATE: u32 = 48_000;
/// Interleaved channels (stereo).
pub const CHANNELS: usize = 2;
/// Sample frames (one sample per channel) in one 10 ms frame.
pub const FRAME_SAMPLES: usize = 480;
/// Samples (all channels) in one frame.
pub const FRAME_VALUES: usize = FRAME_SAMPLES * CHANNELS;
/// Bytes of one frame of S16LE PCM: the capture fragment size.
pub const FRAME_BYTES: usize = FRAME_VALUES * 2;
/// Duration of one frame, µs.
pub const FRAME_US: u64 = 10_000;
/// Largest Opus packet we make; a 10 ms packet at the highest bitrate is far smaller.
pub const MAX_PACKET: usize = 1276;

/// One 10 ms frame of interleaved stereo PCM with the capture time of its first sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmFrame {
    /// When the first sample was captured, µs since the Unix epoch.
    pub capture_us: u64,
    pub samples: [i16; FRAME_VALUES],
}

impl Default for PcmFrame {
    fn default() -> Self {
        Self {
            capture_us: 0,
            samples: [0; FRAME_VALUES],
        }
    }
}

impl PcmFrame {
    /// Fills the samples from S16LE bytes (`FRAME_BYTES` of them; a shorter input leaves the
    /// rest silent).
    pub fn fill_from_le_bytes(&mut self, bytes: &[u8]) {
        let mut pairs = bytes.chunks_exact(2);
        for sample in &mut self.samples {
            *sample = pairs.next().map_or(0, |p| i16::from_le_bytes([p[0], p[1]]));
        }
    }

    /// Whether every sample is zero: digital silence, what a null sink's monitor gives while
    /// nothing plays. Branch-free, so it vectorises (~0.1 µs a frame).
    pub fn is_silent(&self) -> bool {
        self.samples.iter().fold(0u16, |acc, &s| acc | s as u16) == 0
    }
}

/// Whether audio is streamed, as `/readyz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioState {
    /// Turned off (`--no-audio`).
    Off = 0,
    /// Wanted, but the sound server is unreachable or sends nothing (reconnecting).
    Down = 1,
    /// Recording and encoding.
    Ok = 2,
}

impl AudioState {
    pub fn as_str(self) -> &'static str {
        match self {
            AudioState::Off => "off",
            AudioState::Down => "down",
            AudioState::Ok => "ok",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => AudioState::Down,
            2 => AudioState::Ok,
            _ => AudioState::Off,
        }
    }
}

/// Everything the audio threads count, with relaxed atomics only.
#[derive(Debug)]
pub struct AudioStats {
    state: AtomicU8,
    /// 10 ms frames read from the sound server.
    pub frames_captured: AtomicU64,
    /// Frames dropped because the PCM ring was full (the encoder fell behind).
    pub pcm_overruns: AtomicU64,
    /// Times the encoder found the PCM ring empty for longer than two frames while recording.
    pub pcm_underruns: AtomicU64,
    /// Opus packets put in the broadcast ring.
    pub packets: AtomicU64,
    /// Frames of digital silence neither encoded nor sent (after the few that end a sound).
    pub frames_silent: AtomicU64,
    /// Opus bytes put in the broadcast ring.
    pub bytes_encoded: AtomicU64,
    pub encode_errors: AtomicU64,
    /// Connections to the sound server made after the first.
    pub reconnects: AtomicU64,
    /// Audio messages sent to listeners (bumped by the server).
    pub packets_sent: AtomicU64,
    /// The Opus encoder's target bitrate now: the one set, lower while it follows the video's.
    pub bitrate_target_bps: AtomicU64,
    /// Time in the Opus encoder per frame.
    pub encode_time: Histogram,
    /// Capture time of a frame's first sample -> its packet in the ring.
    pub capture_to_ring: Histogram,
    /// Last samples of `encode_time`, µs.
    pub encode_time_window: SampleWindow,
    /// Last samples of `capture_to_ring`, µs.
    pub capture_to_ring_window: SampleWindow,
}

impl AudioStats {
    /// Fresh statistics in `state`.
    pub fn new(state: AudioState) -> Self {
        Self {
            state: AtomicU8::new(state as u8),
            frames_captured: AtomicU64::new(0),
            pcm_overruns: AtomicU64::new(0),
            pcm_underruns: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            frames_silent: AtomicU64::new(0),
            bytes_encoded: AtomicU64::new(0),
            encode_errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            bitrate_target_bps: AtomicU64::new(0),
            encode_time: Histogram::default(),
            capture_to_ring: Histogram::default(),
            encode_time_window: SampleWindow::new(4096),
            capture_to_ring_window: SampleWindow::new(4096),
        }
    }

    pub fn state(&self) -> AudioState {
        AudioState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: AudioState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }
}

impl Default for AudioStats {
    fn default() -> Self {
        Self::new(AudioState::Down)
    }
}

/// Whether `name` can be handed to the sound server library (no NUL byte in it).
pub fn valid_name(name: &str) -> bool {
    !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_from_bytes() {
        let mut f = PcmFrame::default();
        f.fill_from_le_bytes(&[0x01, 0x00, 0xff, 0xff, 0x00, 0x80]);
        assert_eq!(&f.samples[..4], &[1, -1, i16::MIN, 0]);
        let bytes: Vec<u8> = (0..FRAME_BYTES).map(|i| i as u8).collect();
        f.fill_from_le_bytes(&bytes);
        let (lo, hi) = ((FRAME_BYTES - 2) as u8, (FRAME_BYTES - 1) as u8);
        assert_eq!(f.samples[FRAME_VALUES - 1], i16::from_le_bytes([lo, hi]));
    }

    #[test]
    fn states() {
        let s = AudioStats::new(AudioState::Off);
        assert_eq!(s.state(), AudioState::Off);
        s.set_state(AudioState::Ok);
        assert_eq!(s.state().as_str(), "ok");
        s.set_state(AudioState::Down);
        assert_eq!(s.state().as_str(), "down");
    }
}
