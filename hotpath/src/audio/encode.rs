//! PCM frame -> Opus packet -> broadcast ring, one frame per call, allocation-free.

use std::sync::Arc;
use std::time::Instant;

use crate::pipeline::unix_micros;
use crate::ring::{PublishError, RingWriter};
use crate::stats::bump;

use super::{AudioStats, CHANNELS, MAX_PACKET, PcmFrame, SAMPLE_RATE};

/// Opus encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Target bitrate, bits per second (stereo).
    pub bitrate_bps: u32,
}

impl Default for OpusSettings {
    fn default() -> Self {
        Self {
            bitrate_bps: 96_000,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AudioEncodeError {
    #[error("the Opus encoder failed: {0}")]
    Opus(&'static str),
    #[error("an Opus packet of {len} bytes does not fit the ring's slots of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("{0}")]
    Thread(&'static str),
}

impl From<opus::Error> for AudioEncodeError {
    fn from(err: opus::Error) -> Self {
        AudioEncodeError::Opus(err.code().description())
    }
}

/// Encodes 10 ms PCM frames to Opus (restricted low delay, constant frame size) and publishes
/// each packet with its frame's capture time. Owns every buffer it uses.
pub struct OpusStage {
    encoder: opus::Encoder,
    packet: [u8; MAX_PACKET],
    writer: RingWriter,
    stats: Arc<AudioStats>,
}

impl std::fmt::Debug for OpusStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusStage").finish_non_exhaustive()
    }
}

/// A new Opus encoder for the stream's format with `settings`.
pub fn new_encoder(settings: OpusSettings) -> Result<opus::Encoder, AudioEncodeError> {
    let channels = if CHANNELS == 2 {
        opus::Channels::Stereo
    } else {
        opus::Channels::Mono
    };
    let mut encoder = opus::Encoder::new(SAMPLE_RATE, channels, opus::Application::LowDelay)?;
    let bitrate = i32::try_from(settings.bitrate_bps.clamp(6_000, 510_000)).unwrap_or(96_000);
    encoder.set_bitrate(opus::Bitrate::Bits(bitrate))?;
    // Constant packet timing for the listeners' jitter buffers; VBR keeps quality where it counts.
    encoder.set_vbr(true)?;
    Ok(encoder)
}

impl OpusStage {
    pub fn new(
        writer: RingWriter,
        stats: Arc<AudioStats>,
        settings: OpusSettings,
    ) -> Result<Self, AudioEncodeError> {
        Ok(Self {
            encoder: new_encoder(settings)?,
            packet: [0; MAX_PACKET],
            writer,
            stats,
        })
    }

    /// Whether anyone listens.
    pub fn has_readers(&self) -> bool {
        self.writer.readers() > 0
    }

    /// Encodes one frame and publishes the packet; returns its ring position.
    pub fn encode(&mut self, frame: &PcmFrame) -> Result<u64, AudioEncodeError> {
        let stats = &*self.stats;
        let started = Instant::now();
        let len = match self.encoder.encode(&frame.samples, &mut self.packet) {
            Ok(len) => len,
            Err(err) => {
                bump(&stats.encode_errors, 1);
                return Err(err.into());
            }
        };
        let took = started.elapsed().as_micros() as u64;
        stats.encode_time.record(took);
        stats
            .encode_time_window
            .record(u32::try_from(took).unwrap_or(u32::MAX));
        // Every Opus packet starts a decodable unit: all are "keyframes" to the ring, so a new
        // or lagging listener starts at the next packet.
        let seq = self
            .writer
            .publish(true, frame.capture_us, &self.packet[..len])
            .map_err(|PublishError::TooLarge { len, max }| {
                bump(&stats.encode_errors, 1);
                AudioEncodeError::TooLarge { len, max }
            })?;
        bump(&stats.packets, 1);
        bump(&stats.bytes_encoded, len as u64);
        let delay = unix_micros().saturating_sub(frame.capture_us);
        stats.capture_to_ring.record(delay);
        stats
            .capture_to_ring_window
            .record(u32::try_from(delay).unwrap_or(u32::MAX));
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{AudioStats, FRAME_SAMPLES, FRAME_VALUES};
    use crate::ring::{ReadOutcome, Ring, RingConfig};

    #[test]
    fn packets_decode_back_to_the_tone() {
        let (ring, writer) = Ring::new(RingConfig {
            slots: 64,
            slot_bytes: 1536,
            max_readers: 4,
        });
        let stats = Arc::new(AudioStats::default());
        let mut stage = OpusStage::new(writer, stats.clone(), OpusSettings::default()).unwrap();
        let mut reader = ring.subscribe().unwrap();
        let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo).unwrap();
        let mut decoded = Vec::new();
        let mut frame = PcmFrame::default();
        for n in 0..50u64 {
            for (i, pair) in frame.samples.chunks_exact_mut(2).enumerate() {
                let t = (n as usize * FRAME_SAMPLES + i) as f64 / f64::from(SAMPLE_RATE);
                let v = (8_000.0 * (2.0 * std::f64::consts::PI * 1_000.0 * t).sin()) as i16;
                pair.copy_from_slice(&[v, v]);
            }
            frame.capture_us = 1_000 + n * 10_000;
            let seq = stage.encode(&frame).unwrap();
            assert_eq!(seq, n);
            let mut packet = Vec::new();
            let ReadOutcome::Frame(meta) = reader.try_read(&mut packet) else {
                panic!("no packet for frame {n}");
            };
            assert_eq!(meta.capture_us, frame.capture_us);
            assert!(packet.len() < 400, "{} bytes for 10 ms", packet.len());
            let mut pcm = [0i16; FRAME_VALUES];
            let got = decoder.decode(&packet, &mut pcm, false).unwrap();
            assert_eq!(got, FRAME_SAMPLES);
            decoded.extend(pcm.iter().step_by(2).map(|&s| f64::from(s)));
        }
        // After the codec's start-up, the level is back within a few percent.
        let tail = &decoded[decoded.len() / 2..];
        let rms = (tail.iter().map(|s| s * s).sum::<f64>() / tail.len() as f64).sqrt();
        let want = 8_000.0 / 2f64.sqrt();
        assert!((rms - want).abs() < want * 0.1, "rms {rms} vs {want}");
        assert_eq!(stats.packets.load(std::sync::atomic::Ordering::Relaxed), 50);
    }
}
