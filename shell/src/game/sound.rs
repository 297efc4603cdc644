//! The game's sound: short synthesized tones for Pong's events, played through PulseAudio on a
//! thread of their own. The game only sets bits in an atomic; it never waits for the sound, and
//! plays on silently while no sound server can be reached (the thread keeps trying).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use playpod_hotpath::audio::{Backoff, FRAME_VALUES, PulsePlayer, SAMPLE_RATE};

use super::pong::Events;

/// A sound the game makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// The ball hit a paddle: a bright blip.
    PaddleHit = 0,
    /// The ball bounced off a wall: a lower, shorter blip.
    WallBounce = 1,
    /// A point was scored: a falling two-note chime.
    Point = 2,
}

impl Cue {
    const ALL: [Cue; 3] = [Cue::PaddleHit, Cue::WallBounce, Cue::Point];

    const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The notes: (frequency Hz, start ms, length ms).
    fn notes(self) -> &'static [(f32, u32, u32)] {
        match self {
            Cue::PaddleHit => &[(880.0, 0, 60)],
            Cue::WallBounce => &[(330.0, 0, 40)],
            Cue::Point => &[(660.0, 0, 120), (440.0, 120, 200)],
        }
    }

    /// The cues a step's events call for.
    pub fn for_events(events: &Events) -> u32 {
        let mut bits = 0;
        if events.paddle_hit.is_some() {
            bits |= Cue::PaddleHit.bit();
        }
        if events.wall_bounce {
            bits |= Cue::WallBounce.bit();
        }
        if events.point.is_some() {
            bits |= Cue::Point.bit();
        }
        bits
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Voice {
    /// Phase increment per sample, radians.
    step: f32,
    phase: f32,
    /// Samples until the note starts.
    delay: u32,
    /// Samples left to play, and the note's length.
    left: u32,
    len: u32,
}

/// A tiny polyphonic tone synthesizer: sines with a short attack and a linear decay.
#[derive(Debug, Clone)]
pub struct Synth {
    voices: [Voice; 8],
    /// Peak amplitude of one voice, of full scale.
    level: f32,
}

impl Default for Synth {
    fn default() -> Self {
        Self {
            voices: [Voice::default(); 8],
            level: 0.25,
        }
    }
}

impl Synth {
    /// Starts the notes of every cue in `bits` (see [`Cue::for_events`]).
    pub fn trigger(&mut self, bits: u32) {
        for cue in Cue::ALL {
            if bits & cue.bit() == 0 {
                continue;
            }
            for &(freq, start_ms, len_ms) in cue.notes() {
                let ms = SAMPLE_RATE / 1000;
                let voice = Voice {
                    step: 2.0 * std::f32::consts::PI * freq / SAMPLE_RATE as f32,
                    phase: 0.0,
                    delay: start_ms * ms,
                    left: len_ms * ms,
                    len: len_ms * ms,
                };
                // A free voice, else the one closest to its end.
                let slot = self
                    .voices
                    .iter_mut()
                    .min_by_key(|v| v.left + v.delay)
                    .expect("eight voices");
                *slot = voice;
            }
        }
    }

    /// Whether a note is playing or waiting to.
    pub fn busy(&self) -> bool {
        self.voices.iter().any(|v| v.left > 0)
    }

    /// Renders the next 10 ms, interleaved stereo, into `out`.
    pub fn render(&mut self, out: &mut [i16; FRAME_VALUES]) {
        let attack = (SAMPLE_RATE / 1000 * 2) as f32;
        for frame in out.chunks_exact_mut(2) {
            let mut mix = 0.0f32;
            for v in &mut self.voices {
                if v.delay > 0 {
                    v.delay -= 1;
                    continue;
                }
                if v.left == 0 {
                    continue;
                }
                let played = (v.len - v.left) as f32;
                let envelope = (played / attack).min(1.0) * (v.left as f32 / v.len as f32);
                mix += v.phase.sin() * envelope * self.level;
                v.phase = (v.phase + v.step) % (2.0 * std::f32::consts::PI);
                v.left -= 1;
            }
            let s = (mix.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
            frame[0] = s;
            frame[1] = s;
        }
    }
}

/// The sound thread, and the cues waiting for it.
#[derive(Debug)]
pub struct Sound {
    cues: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sound {
    /// Starts the sound thread, playing to `server` (`unix:PATH`).
    pub fn start(server: String) -> std::io::Result<Self> {
        let cues = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (cues, stop) = (cues.clone(), stop.clone());
            std::thread::Builder::new()
                .name("game-sound".into())
                .spawn(move || sound_loop(&server, &cues, &stop))?
        };
        Ok(Self {
            cues,
            stop,
            thread: Some(thread),
        })
    }

    /// Queues the sounds of a step's events; never blocks.
    pub fn play(&self, events: &Events) {
        let bits = Cue::for_events(events);
        if bits != 0 {
            self.cues.fetch_or(bits, Ordering::Relaxed);
        }
    }
}

impl Drop for Sound {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// About three frames of buffering: the sound follows the picture within ~30 ms.
const BUFFER_MS: u32 = 30;

fn sound_loop(server: &str, cues: &AtomicU32, stop: &AtomicBool) {
    let mut synth = Synth::default();
    let mut pcm = [0i16; FRAME_VALUES];
    let mut bytes = [0u8; FRAME_VALUES * 2];
    let mut backoff = Backoff::new();
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let mut player = match PulsePlayer::connect(Some(server), "playpod game", BUFFER_MS) {
            Ok(player) => player,
            Err(err) => {
                if !warned {
                    tracing::warn!(%err, "game sound: no sound server; playing on silently");
                    warned = true;
                }
                let wait = backoff.next_delay();
                let mut waited = Duration::ZERO;
                while waited < wait && !stop.load(Ordering::Relaxed) {
                    // Sounds due while there is no server are dropped, not played late.
                    cues.store(0, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                    waited += Duration::from_millis(20);
                }
                continue;
            }
        };
        tracing::info!(%server, "game sound: playing");
        backoff.reset();
        warned = false;
        while !stop.load(Ordering::Relaxed) {
            synth.trigger(cues.swap(0, Ordering::Relaxed));
            synth.render(&mut pcm);
            for (b, s) in bytes.chunks_exact_mut(2).zip(pcm) {
                b.copy_from_slice(&s.to_le_bytes());
            }
            // Blocks while the server's buffer is full: paced by the sink's clock.
            if let Err(err) = player.write(&bytes) {
                tracing::warn!(%err, "game sound: the sound server went away");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::pong::Side;

    fn render(synth: &mut Synth, frames: usize) -> Vec<i16> {
        let mut all = Vec::new();
        let mut pcm = [0i16; FRAME_VALUES];
        for _ in 0..frames {
            synth.render(&mut pcm);
            all.extend_from_slice(&pcm);
        }
        all
    }

    /// Zero crossings per second of the left channel.
    fn crossings_hz(samples: &[i16]) -> f32 {
        let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
        let n = left.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        n as f32 / 2.0 / (left.len() as f32 / SAMPLE_RATE as f32)
    }

    #[test]
    fn silence_until_an_event_then_the_right_tone() {
        let mut synth = Synth::default();
        assert!(render(&mut synth, 5).iter().all(|&s| s == 0));
        let events = Events {
            paddle_hit: Some(Side::Left),
            ..Events::default()
        };
        synth.trigger(Cue::for_events(&events));
        assert!(synth.busy());
        let out = render(&mut synth, 6);
        let hz = crossings_hz(&out);
        assert!((850.0..910.0).contains(&hz), "{hz} Hz");
        let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 6_000 && peak < 9_000, "peak {peak}");
        assert!(!synth.busy(), "a paddle blip lasts 60 ms");
        assert!(render(&mut synth, 2).iter().all(|&s| s == 0));
    }

    #[test]
    fn a_point_plays_two_notes_and_nothing_is_a_cue() {
        assert_eq!(Cue::for_events(&Events::default()), 0);
        let mut synth = Synth::default();
        synth.trigger(Cue::Point.bit());
        let out = render(&mut synth, 32);
        let (first, second) = out.split_at(12 * FRAME_VALUES);
        assert!((640.0..680.0).contains(&crossings_hz(first)));
        assert!((420.0..460.0).contains(&crossings_hz(&second[..20 * FRAME_VALUES])));
    }
}
