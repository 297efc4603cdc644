//! PulseAudio through the simple API of the system libpulse: a recorder of the game sink's
//! monitor (10 ms fragments) and a player (the built-in game's sound, test tones).

use libpulse_binding::def::BufferAttr;
use libpulse_binding::sample::{Format, Spec};
use libpulse_binding::stream::Direction;
use libpulse_simple_binding::Simple;

use super::pipeline::{PcmConnector, PcmSource, SourceError};
use super::{CHANNELS, FRAME_BYTES, SAMPLE_RATE, valid_name};

/// "Server default" for a buffer attribute.
const DEFAULT: u32 = u32::MAX;

fn spec() -> Spec {
    Spec {
        format: Format::S16le,
        channels: CHANNELS as u8,
        rate: SAMPLE_RATE,
    }
}

fn check(what: &str, value: Option<&str>) -> Result<(), SourceError> {
    match value {
        Some(v) if !valid_name(v) => Err(SourceError::Connect(format!(
            "the {what} name {v:?} holds a NUL byte"
        ))),
        _ => Ok(()),
    }
}

/// A recording stream, kept connected: the server sends a 10 ms fragment at a time.
pub struct PulseRecorder {
    simple: Simple,
}

impl std::fmt::Debug for PulseRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulseRecorder").finish_non_exhaustive()
    }
}

impl PulseRecorder {
    /// Records `source` (e.g. `game.monitor`) on `server` (`unix:PATH`; `None`: the library's
    /// default, `$PULSE_SERVER`), asking for 10 ms fragments, as `PULSE_LATENCY_MSEC=10` would.
    pub fn connect(server: Option<&str>, source: &str) -> Result<Self, SourceError> {
        check("server", server)?;
        check("source", Some(source))?;
        let attr = BufferAttr {
            maxlength: DEFAULT,
            tlength: DEFAULT,
            prebuf: DEFAULT,
            minreq: DEFAULT,
            fragsize: FRAME_BYTES as u32,
        };
        let simple = Simple::new(
            server,
            "playpod",
            Direction::Record,
            Some(source),
            "game audio capture",
            &spec(),
            None,
            Some(&attr),
        )
        .map_err(|err| {
            SourceError::Connect(format!(
                "cannot record {source:?} from the PulseAudio server {}: {err}",
                server.unwrap_or("$PULSE_SERVER")
            ))
        })?;
        Ok(Self { simple })
    }
}

impl PcmSource for PulseRecorder {
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), SourceError> {
        self.simple
            .read(bytes)
            .map_err(|err| SourceError::Read(format!("recording from PulseAudio failed: {err}")))
    }

    fn latency_us(&mut self) -> Option<u64> {
        self.simple.get_latency().ok().map(|us| us.0)
    }
}

/// Connects a [`PulseRecorder`] each time the capture thread asks.
#[derive(Debug, Clone)]
pub struct PulseConnector {
    pub server: Option<String>,
    pub source: String,
}

impl PcmConnector for PulseConnector {
    fn connect(&mut self) -> Result<Box<dyn PcmSource>, SourceError> {
        Ok(Box::new(PulseRecorder::connect(
            self.server.as_deref(),
            &self.source,
        )?))
    }

    fn describe(&self) -> String {
        format!(
            "{} on {}",
            self.source,
            self.server.as_deref().unwrap_or("$PULSE_SERVER")
        )
    }
}

/// A playback stream of S16LE stereo 48 kHz with a small buffer.
pub struct PulsePlayer {
    simple: Simple,
}

impl std::fmt::Debug for PulsePlayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsePlayer").finish_non_exhaustive()
    }
}

impl PulsePlayer {
    /// Plays to the server's default sink with about `buffer_ms` of buffering.
    pub fn connect(server: Option<&str>, name: &str, buffer_ms: u32) -> Result<Self, SourceError> {
        check("server", server)?;
        check("stream", Some(name))?;
        let bytes_per_ms = SAMPLE_RATE / 1000 * CHANNELS as u32 * 2;
        let attr = BufferAttr {
            maxlength: DEFAULT,
            tlength: buffer_ms.max(1) * bytes_per_ms,
            prebuf: DEFAULT,
            minreq: DEFAULT,
            fragsize: DEFAULT,
        };
        let simple = Simple::new(
            server,
            "playpod",
            Direction::Playback,
            None,
            name,
            &spec(),
            None,
            Some(&attr),
        )
        .map_err(|err| {
            SourceError::Connect(format!(
                "cannot play to the PulseAudio server {}: {err}",
                server.unwrap_or("$PULSE_SERVER")
            ))
        })?;
        Ok(Self { simple })
    }

    /// Queues S16LE stereo samples; blocks while the buffer is full, so the writer is paced
    /// by the sound card clock.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SourceError> {
        self.simple
            .write(bytes)
            .map_err(|err| SourceError::Read(format!("playing to PulseAudio failed: {err}")))
    }

    /// How long until a sample written now is played, µs.
    pub fn latency_us(&mut self) -> Option<u64> {
        self.simple.get_latency().ok().map(|us| us.0)
    }

    /// Waits until everything written was played.
    pub fn drain(&mut self) -> Result<(), SourceError> {
        self.simple.drain().map_err(|err| {
            SourceError::Read(format!("draining the PulseAudio stream failed: {err}"))
        })
    }
}
