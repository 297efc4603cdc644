//! The game's sound in the shell: starting the audio threads, the `WS /play/TOKEN/audio`
//! stream, and (for `playpod demo`) a PulseAudio server of our own.

pub mod daemon;
pub mod ws;

use std::sync::Arc;

use playpod_hotpath::audio::{
    AudioConfig, AudioPipeline, AudioState, AudioStats, OpusSettings, PulseConnector, valid_name,
};
use playpod_hotpath::ring::Ring;
use playpod_hotpath::stats::PipelineStats;

/// Where the session's sound comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    /// No audio (`--no-audio`, or no sound server named).
    Off,
    /// Record `source` (a sink's monitor) on the PulseAudio `server` (`unix:PATH`).
    Pulse { server: String, source: String },
}

/// What the server's handlers need of the audio: the packets and the counters.
#[derive(Debug, Clone)]
pub struct AudioFeed {
    pub ring: Ring,
    pub stats: Arc<AudioStats>,
}

/// The audio state `/readyz` and the metrics show for an optional feed.
pub fn state(feed: Option<&AudioFeed>) -> AudioState {
    feed.map_or(AudioState::Off, |f| f.stats.state())
}

/// Starts recording and encoding; `Ok(None)` when audio is off. The threads reconnect by
/// themselves, so a sound server that is not (yet) there is not an error: the state is "down".
/// With `skip_silence`, digital silence is neither encoded nor sent after its first frames.
/// With `follow` (the frame thread's counters), the audio gives up the share of its bitrate
/// that a slow link takes from the video's.
pub fn start(
    source: &AudioSource,
    bitrate_kbps: u32,
    skip_silence: bool,
    follow: Option<Arc<PipelineStats>>,
) -> anyhow::Result<Option<(AudioPipeline, AudioFeed)>> {
    let AudioSource::Pulse { server, source } = source else {
        tracing::info!("audio: off");
        return Ok(None);
    };
    if !valid_name(server) || !valid_name(source) {
        anyhow::bail!("the PulseAudio server or source name holds a NUL byte");
    }
    let config = AudioConfig {
        opus: OpusSettings {
            bitrate_bps: bitrate_kbps.saturating_mul(1000),
            skip_silence,
        },
        ..AudioConfig::default()
    };
    let connector = PulseConnector {
        server: Some(server.clone()),
        source: source.clone(),
    };
    let following = follow.is_some();
    let (pipeline, ring, stats) = AudioPipeline::spawn(Box::new(connector), config, follow)
        .map_err(|err| anyhow::anyhow!("cannot start the audio pipeline: {err}"))?;
    tracing::info!(
        %server,
        %source,
        bitrate_kbps,
        skip_silence,
        follows_the_video = following,
        "audio: Opus, 10 ms frames, 48 kHz stereo"
    );
    Ok(Some((pipeline, AudioFeed { ring, stats })))
}
