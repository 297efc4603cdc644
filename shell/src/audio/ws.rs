//! `WS /play/TOKEN/audio`: the config text message, then one binary message per Opus packet
//! behind the 16-byte media header (kind 2, flags 0), plus a text message
//! `{"audio":"ok"|"down"}` whenever the sound server comes or goes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use playpod_hotpath::audio::{AudioState, CHANNELS, SAMPLE_RATE};
use playpod_hotpath::ring::{FrameMeta, ReadOutcome, RingReader};

use super::AudioFeed;
use crate::server::{
    AppState, Health, MEDIA_HEADER_LEN, not_found, send_or_drop, write_media_header,
};

/// Media message kind of an audio packet.
pub const KIND_AUDIO: u8 = 2;
/// How often a listener's task looks at the audio state while no packet comes.
const STATE_POLL: Duration = Duration::from_millis(250);

/// The first text message of the audio stream.
pub fn audio_config() -> String {
    serde_json::json!({
        "codec": "opus",
        "sampleRate": SAMPLE_RATE,
        "channels": CHANNELS,
    })
    .to_string()
}

/// The text message telling the listener whether sound flows.
pub fn state_message(state: AudioState) -> String {
    serde_json::json!({ "audio": state.as_str() }).to_string()
}

/// Writes the 16-byte header of an audio packet: kind 2, flags 0, reserved 0, u32 sequence,
/// u64 capture time (µs since the Unix epoch), little-endian.
pub fn write_audio_header(buf: &mut [u8], meta: &FrameMeta) {
    // Every Opus packet stands alone: no keyframe flag.
    let meta = FrameMeta {
        keyframe: false,
        ..*meta
    };
    write_media_header(buf, KIND_AUDIO, &meta);
}

/// The route handler.
pub async fn audio(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !crate::token::token_matches(&app.token, &token) {
        return not_found();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(feed) = app.audio.clone() else {
        // Audio is off: say so in the close frame, so the player shows "no audio" and stays quiet.
        return ws.on_upgrade(|mut socket: WebSocket| async move {
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: close_code::NORMAL,
                    reason: "audio is off".into(),
                })))
                .await;
        });
    };
    let reader = match feed.ring.subscribe() {
        Ok(reader) => reader,
        Err(err) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response(),
    };
    ws.on_upgrade(move |socket: WebSocket| async move {
        let (sink, stream) = socket.split();
        stream_audio(sink, stream, reader, &feed, &app.health).await;
    })
}

async fn send<S: Sink<Message> + Unpin>(sink: &mut S, msg: Message) -> bool {
    send_or_drop(sink, msg, "an audio listener", None).await
}

/// Serves one listener: the config, the current state, then every packet from its ring
/// reader. Ends when the listener goes, stalls for ten seconds, or the stream ends. Generic
/// over the socket so tests can drive it.
pub async fn stream_audio<S, R>(
    mut sink: S,
    mut incoming: R,
    mut reader: RingReader,
    feed: &AudioFeed,
    health: &Health,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    if !send(&mut sink, Message::Text(audio_config().into())).await {
        return;
    }
    let mut state = feed.stats.state();
    if !send(&mut sink, Message::Text(state_message(state).into())).await {
        return;
    }
    let mut buf = Vec::with_capacity(MEDIA_HEADER_LEN + feed.ring.slot_bytes());
    let mut poll = tokio::time::interval(STATE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        buf.clear();
        buf.resize(MEDIA_HEADER_LEN, 0);
        let outcome = tokio::select! {
            outcome = std::future::poll_fn(|cx| reader.poll_read(cx, &mut buf)) => Some(outcome),
            msg = incoming.next() => match msg {
                Some(Ok(Message::Close(_))) => {
                    crate::server::answer_close(&mut sink).await;
                    return;
                }
                Some(Err(_)) | None => return,
                Some(Ok(_)) => None,
            },
            _ = poll.tick() => None,
        };
        let now = feed.stats.state();
        if now != state {
            state = now;
            if !send(&mut sink, Message::Text(state_message(state).into())).await {
                return;
            }
        }
        let meta = match outcome {
            Some(ReadOutcome::Frame(meta)) => meta,
            None | Some(ReadOutcome::Empty) => continue,
            Some(ReadOutcome::Closed) => {
                let _ = sink.send(Message::Close(Some(health.stream_end()))).await;
                return;
            }
        };
        write_audio_header(&mut buf, &meta);
        if !send(&mut sink, Message::Binary(Bytes::copy_from_slice(&buf))).await {
            return;
        }
        feed.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_messages() {
        let mut buf = [0xffu8; 16];
        let meta = FrameMeta {
            seq: 0x1_0000_0003,
            keyframe: true,
            capture_us: 0x0102_0304_0506_0708,
            len: 0,
        };
        write_audio_header(&mut buf, &meta);
        assert_eq!(buf, [2, 0, 0, 0, 3, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
        let config: serde_json::Value = serde_json::from_str(&audio_config()).unwrap();
        assert_eq!(
            config,
            serde_json::json!({"codec":"opus","sampleRate":48000,"channels":2})
        );
        assert_eq!(state_message(AudioState::Down), r#"{"audio":"down"}"#);
    }
}
