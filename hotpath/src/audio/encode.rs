//! PCM frame -> Opus packet -> broadcast ring, one frame per call, allocation-free.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::pipeline::unix_micros;
use crate::ring::{PublishError, RingWriter};
use crate::stats::{PipelineStats, bump};

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

/// The least the audio goes down to while it follows the video: game sound stays clear in
/// Opus stereo at this rate.
pub const FOLLOW_FLOOR_BPS: u32 = 32_000;

/// The audio's bitrate while the video's target is `video_bps` of its full `video_max_bps`: the
/// same share of `full_bps`, in whole kbit/s, no lower than [`FOLLOW_FLOOR_BPS`] (nor above
/// `full_bps`). A target of 0 (not set) or at the full bitrate leaves the audio at `full_bps`.
pub fn following_bitrate(full_bps: u32, video_bps: u64, video_max_bps: u64) -> u32 {
    if video_bps == 0 || video_bps >= video_max_bps {
        return full_bps;
    }
    let share = u64::from(full_bps) * video_bps / video_max_bps / 1000 * 1000;
    u32::try_from(share)
        .unwrap_or(full_bps)
        .max(FOLLOW_FLOOR_BPS.min(full_bps))
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
    skip_silence: bool,
    /// Silent frames in a row up to now.
    silent_run: u32,
    /// The bitrate set (`--audio-bitrate-kbps`), and the one the encoder has now.
    full_bps: u32,
    bitrate_bps: u32,
    /// The frame thread's counters, whose bitrate target the audio follows.
    follow: Option<Arc<PipelineStats>>,
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
    set_bitrate(&mut encoder, settings.bitrate_bps)?;
    // Constant packet timing for the listeners' jitter buffers; VBR keeps quality where it counts.
    encoder.set_vbr(true)?;
    Ok(encoder)
}

/// `bps` within what Opus takes.
fn opus_bitrate(bps: u32) -> u32 {
    bps.clamp(6_000, 510_000)
}

fn set_bitrate(encoder: &mut opus::Encoder, bps: u32) -> Result<(), AudioEncodeError> {
    // Within Opus's range, which fits an i32.
    let bits = i32::try_from(opus_bitrate(bps)).unwrap_or(96_000);
    Ok(encoder.set_bitrate(opus::Bitrate::Bits(bits))?)
}

impl OpusStage {
    pub fn new(
        writer: RingWriter,
        stats: Arc<AudioStats>,
        settings: OpusSettings,
    ) -> Result<Self, AudioEncodeError> {
        let full_bps = opus_bitrate(settings.bitrate_bps);
        stats
            .bitrate_target_bps
            .store(u64::from(full_bps), Ordering::Relaxed);
        Ok(Self {
            encoder: new_encoder(settings)?,
            packet: [0; MAX_PACKET],
            writer,
            stats,
            skip_silence: settings.skip_silence,
            silent_run: 0,
            full_bps,
            bitrate_bps: full_bps,
            follow: None,
        })
    }

    /// Follows the bitrate target of the video whose frame thread counts in `video` from now
    /// on: while a slow link holds the video below its full bitrate, the audio gives up the
    /// same share ([`following_bitrate`]); checked before each frame (two relaxed loads; the
    /// encoder is only told of a change).
    pub fn follow_video(&mut self, video: Arc<PipelineStats>) {
        self.follow = Some(video);
    }

    fn follow_the_video(&mut self) -> Result<(), AudioEncodeError> {
        let Some(video) = &self.follow else {
            return Ok(());
        };
        let want = following_bitrate(
            self.full_bps,
            video.bitrate_target_bps.load(Ordering::Relaxed),
            video.bitrate_full_bps.load(Ordering::Relaxed),
        );
        if want != self.bitrate_bps {
            set_bitrate(&mut self.encoder, want)?;
            self.bitrate_bps = want;
            self.stats
                .bitrate_target_bps
                .store(u64::from(want), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether anyone listens.
    pub fn has_readers(&self) -> bool {
        self.writer.readers() > 0
    }

    /// Encodes one frame and publishes the packet; returns its ring position, or `None` for a
    /// frame of silence that is not sent (see [`OpusSettings::skip_silence`]).
    pub fn encode(&mut self, frame: &PcmFrame) -> Result<Option<u64>, AudioEncodeError> {
        self.follow_the_video()?;
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

    #[test]
    fn the_audio_gives_up_the_share_the_video_gives_up() {
        let full = 96_000;
        // Not set yet, at or above the full video bitrate: the full audio bitrate.
        for video in [0, 1_500_000, 2_000_000] {
            assert_eq!(following_bitrate(full, video, 1_500_000), full, "{video}");
        }
        assert_eq!(following_bitrate(full, 1_125_000, 1_500_000), 72_000);
        // Whole kbit/s: 96 * 0.7 = 67.2.
        assert_eq!(following_bitrate(full, 1_050_000, 1_500_000), 67_000);
        // Not below the floor, nor the floor above a lower setting.
        assert_eq!(
            following_bitrate(full, 150_000, 1_500_000),
            FOLLOW_FLOOR_BPS
        );
        assert_eq!(following_bitrate(24_000, 150_000, 1_500_000), 24_000);
    }

    #[test]
    fn a_stage_following_the_video_encodes_at_its_share() {
        let (ring, writer) = Ring::new(RingConfig {
            slots: 64,
            slot_bytes: 1536,
            max_readers: 4,
        });
        let stats = Arc::new(AudioStats::default());
        let video = Arc::new(PipelineStats::default());
        let max_bps = 2_000_000;
        video.bitrate_target_bps.store(max_bps, Ordering::Relaxed);
        video.bitrate_full_bps.store(max_bps, Ordering::Relaxed);
        let mut stage = OpusStage::new(writer, stats.clone(), OpusSettings::default()).unwrap();
        stage.follow_video(video.clone());
        let mut reader = ring.subscribe().unwrap();
        // Loud noise: the encoder spends what it is allowed.
        let mut seed = 0x2545_f491_u32;
        let mut frame = PcmFrame::default();
        let mut run = |stage: &mut OpusStage, frames: usize| -> f64 {
            let mut bytes = 0;
            for _ in 0..frames {
                for v in frame.samples.iter_mut() {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *v = (seed >> 16) as i16 / 2;
                }
                stage.encode(&frame).unwrap().expect("a packet");
                let mut packet = Vec::new();
                assert!(matches!(
                    reader.try_read(&mut packet),
                    ReadOutcome::Frame(_)
                ));
                bytes += packet.len();
            }
            // bits per second, 10 ms frames
            bytes as f64 * 8.0 * 100.0 / frames as f64
        };
        let target = |stats: &AudioStats| stats.bitrate_target_bps.load(Ordering::Relaxed);
        let full = run(&mut stage, 100);
        assert_eq!(target(&stats), 96_000);
        // A slow link holds the video at a quarter: the audio goes to its floor.
        video
            .bitrate_target_bps
            .store(max_bps / 4, Ordering::Relaxed);
        let low = run(&mut stage, 100);
        assert_eq!(target(&stats), u64::from(FOLLOW_FLOOR_BPS));
        // The video climbs back: so does the audio.
        video.bitrate_target_bps.store(max_bps, Ordering::Relaxed);
        let again = run(&mut stage, 100);
        assert_eq!(target(&stats), 96_000);
        eprintln!(
            "noise at {:.0} / {:.0} / {:.0} kbit/s",
            full / 1e3,
            low / 1e3,
            again / 1e3
        );
        assert!(low < full * 0.5, "{low} vs {full}");
        assert!(again > low * 2.0, "{again} vs {low}");
    }
}
