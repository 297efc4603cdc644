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
    /// Neither encode nor send frames of digital silence, once [`SILENCE_TAIL_FRAMES`] of them
    /// have followed the last sound.
    pub skip_silence: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        Self {
            bitrate_bps: 96_000,
            skip_silence: true,
        }
    }
}

/// Silent frames still encoded and sent after a sound: the encoder's look-ahead and its
/// overlapping transform carry the sound's last milliseconds into them, and the listeners'
/// decoders end on silence. Encoder and decoders then skip the same frames, so their states
/// stay in step for the next sound.
pub const SILENCE_TAIL_FRAMES: u32 = 3;

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
    skip_silence: bool,
    /// Silent frames in a row up to now.
    silent_run: u32,
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
            skip_silence: settings.skip_silence,
            silent_run: 0,
        })
    }

    /// Whether anyone listens.
    pub fn has_readers(&self) -> bool {
        self.writer.readers() > 0
    }

    /// Encodes one frame and publishes the packet; returns its ring position, or `None` for a
    /// frame of silence that is not sent (see [`OpusSettings::skip_silence`]).
    pub fn encode(&mut self, frame: &PcmFrame) -> Result<Option<u64>, AudioEncodeError> {
        let stats = &*self.stats;
        if frame.is_silent() {
            self.silent_run = self.silent_run.saturating_add(1);
            if self.skip_silence && self.silent_run > SILENCE_TAIL_FRAMES {
                bump(&stats.frames_silent, 1);
                return Ok(None);
            }
        } else {
            self.silent_run = 0;
        }
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
        Ok(Some(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    use crate::audio::{AudioStats, FRAME_SAMPLES, FRAME_VALUES};
    use crate::ring::{ReadOutcome, Ring, RingConfig};

    #[test]
    fn packets_decode_back_to_the_tone() {
        let run = run_script(&[Some(8_000.0); 50], true);
        // A packet for every frame, read at once, in order.
        assert_eq!(run.results, (0..50).map(Some).collect::<Vec<_>>());
        assert_eq!(run.decoded.len(), 50);
        for len in &run.lengths {
            assert!(*len < 400, "{len} bytes for 10 ms");
        }
        // After the codec's start-up, the level is back within a few percent.
        let rms = rms(&run.decoded[25..].concat());
        let want = 8_000.0 / 2f64.sqrt();
        assert!((rms - want).abs() < want * 0.1, "rms {rms} vs {want}");
        assert_eq!(run.stats.packets.load(Ordering::Relaxed), 50);
    }

    /// A 1 kHz tone at `level` for frame `n` (phase continuous across frames).
    fn tone_frame(frame: &mut PcmFrame, n: u64, level: f64) {
        for (i, pair) in frame.samples.chunks_exact_mut(2).enumerate() {
            let t = (n as usize * FRAME_SAMPLES + i) as f64 / f64::from(SAMPLE_RATE);
            let v = (level * (2.0 * std::f64::consts::PI * 1_000.0 * t).sin()) as i16;
            pair.copy_from_slice(&[v, v]);
        }
    }

    /// What [`run_script`] saw.
    struct Run {
        /// What `encode` gave for each frame.
        results: Vec<Option<u64>>,
        /// The decoded left channel of each packet read, and its length in bytes.
        decoded: Vec<Vec<f64>>,
        lengths: Vec<usize>,
        stats: Arc<AudioStats>,
    }

    /// Runs `script` (per frame: `Some(level)` a tone, `None` silence; level 0.0 means one
    /// sample of 1 in an otherwise silent frame) through a stage, reading and decoding the
    /// packet of each frame at once.
    fn run_script(script: &[Option<f64>], skip_silence: bool) -> Run {
        let (ring, writer) = Ring::new(RingConfig {
            slots: 64,
            slot_bytes: 1536,
            max_readers: 4,
        });
        let stats = Arc::new(AudioStats::default());
        let settings = OpusSettings {
            skip_silence,
            ..OpusSettings::default()
        };
        let mut stage = OpusStage::new(writer, stats.clone(), settings).unwrap();
        let mut reader = ring.subscribe().unwrap();
        let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo).unwrap();
        let (mut results, mut decoded, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        let mut frame = PcmFrame::default();
        for (n, step) in script.iter().enumerate() {
            frame.samples.fill(0);
            match step {
                Some(level) if *level > 0.0 => tone_frame(&mut frame, n as u64, *level),
                Some(_) => frame.samples[7] = 1,
                None => {}
            }
            frame.capture_us = 1_000 + n as u64 * 10_000;
            results.push(stage.encode(&frame).unwrap());
            let mut packet = Vec::new();
            if let ReadOutcome::Frame(meta) = reader.try_read(&mut packet) {
                assert_eq!(meta.capture_us, frame.capture_us, "the packet of frame {n}");
                let mut pcm = [0i16; FRAME_VALUES];
                assert_eq!(
                    decoder.decode(&packet, &mut pcm, false).unwrap(),
                    FRAME_SAMPLES
                );
                decoded.push(pcm.iter().step_by(2).map(|&s| f64::from(s)).collect());
                lengths.push(packet.len());
            }
        }
        Run {
            results,
            decoded,
            lengths,
            stats,
        }
    }

    fn rms(x: &[f64]) -> f64 {
        (x.iter().map(|s| s * s).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn silence_is_not_sent_after_its_first_frames() {
        // 20 frames of tone, 10 of silence, one nearly silent (a sample of 1), 5 silent, 20 tone.
        let mut script = vec![Some(8_000.0); 20];
        script.extend([None; 10]);
        script.push(Some(0.0));
        script.extend([None; 5]);
        script.extend([Some(8_000.0); 20]);
        let Run {
            results,
            decoded,
            stats,
            ..
        } = run_script(&script, true);
        let sent: Vec<usize> = (0..script.len())
            .filter(|&n| results[n].is_some())
            .collect();
        let mut want: Vec<usize> = (0..20).collect();
        want.extend(20..20 + SILENCE_TAIL_FRAMES as usize); // the tail of the first tone
        want.push(30); // the sample of 1 is sound
        want.extend(31..31 + SILENCE_TAIL_FRAMES as usize);
        want.extend(36..56);
        assert_eq!(sent, want);
        // Positions in the ring stay consecutive: listeners see no gap, only time passing.
        let seqs: Vec<u64> = results.iter().flatten().copied().collect();
        assert_eq!(seqs, (0..want.len() as u64).collect::<Vec<_>>());
        let skipped = (script.len() - want.len()) as u64;
        assert_eq!(stats.frames_silent.load(Ordering::Relaxed), skipped);
        assert_eq!(stats.packets.load(Ordering::Relaxed), want.len() as u64);
        // The tail ends silent, and the tone after the silence decodes at its level: encoder
        // and decoder skipped the same frames.
        assert!(rms(&decoded[22]) < 50.0, "tail rms {}", rms(&decoded[22]));
        let last: Vec<f64> = decoded[decoded.len() - 10..].concat();
        let want_rms = 8_000.0 / 2f64.sqrt();
        assert!(
            (rms(&last) - want_rms).abs() < want_rms * 0.1,
            "rms {}",
            rms(&last)
        );
    }

    #[test]
    fn with_skipping_off_every_frame_is_sent() {
        let mut script = vec![Some(8_000.0); 5];
        script.extend([None; 20]);
        let Run {
            results,
            decoded,
            stats,
            ..
        } = run_script(&script, false);
        assert!(results.iter().all(Option::is_some), "{results:?}");
        assert_eq!(decoded.len(), 25);
        assert_eq!(stats.frames_silent.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn silence_from_the_start_sends_only_its_first_frames() {
        let Run { results, stats, .. } = run_script(&[None; 50], true);
        let sent = results.iter().flatten().count();
        assert_eq!(sent, SILENCE_TAIL_FRAMES as usize);
        assert_eq!(stats.frames_silent.load(Ordering::Relaxed), 47);
    }
}
