//! The player's thread: serves the slot's connections one after another, reading each with
//! blocking tungstenite and sending its key changes into the game's display through XTEST.

use std::io::ErrorKind as IoErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use playpod_hotpath::input::{ErrorReply, Frame, HandleError, Keymap, PlayerInput, XtestInjector};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use super::rate::TokenBucket;
use super::slot::Slot;
use super::stats::{ErrorKind, InputStats};
use super::stream::{Incoming, MAX_READ_MESSAGE, PlayerStream, close_code, close_ws, ws_config};
use crate::server::Health;

/// What a player's thread needs.
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// The X display keys go to, e.g. `:99`.
    pub display: String,
    pub keymap: Keymap,
    /// Messages per second allowed per connection.
    pub rate: u32,
    /// Nothing heard for this long (pings are sent every third of it) ends the connection.
    pub silence_limit: Duration,
    pub core: Option<usize>,
}

/// Serves `slot` until it stops.
pub fn run(slot: &Slot, config: &PlayerConfig, stats: &InputStats, health: &Health) {
    let player = slot.player;
    if let Some(id) = config.core {
        if core_affinity::set_for_current(core_affinity::CoreId { id }) {
            tracing::debug!(player, core = id, "player thread pinned");
        } else {
            tracing::warn!(
                player,
                core = id,
                "cannot pin the player thread to its core"
            );
        }
    }
    while let Some((incoming, seat)) = slot.next() {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        health.players.fetch_add(1, Ordering::Relaxed);
        health.touch();
        tracing::info!(player, "player connected");
        let Incoming { mut ws, .. } = incoming;
        // A bug met by one connection must not take the player away for the rest of the
        // session: the keys are released as the injector unwinds, and the slot goes on.
        let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve(&mut ws, &seat, slot, config, stats)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(
                player,
                "the player's connection failed on a bug; the slot goes on"
            );
            End::Failed
        });
        // A read that stopped inside a message (too large, not UTF-8) leaves tungstenite's
        // reader mid-frame: the close frame goes out on a fresh WebSocket over the stream.
        let broken_read = matches!(end, End::TooBig | End::NotUtf8 | End::Failed);
        // Keys are released (the injector dropped) before the slot is free for the next one.
        health.touch();
        health.players.fetch_sub(1, Ordering::Relaxed);
        let replaced = slot.finished();
        let (code, reason): (u16, String) = if replaced {
            stats.takeovers.fetch_add(1, Ordering::Relaxed);
            (
                close_code::TAKEN_OVER,
                format!("player {player} was taken over by another connection"),
            )
        } else if health.game_over() && !matches!(end, End::Closed) {
            (
                close_code::GAME_OVER,
                close_code::GAME_OVER_REASON.to_owned(),
            )
        } else {
            match end {
                End::Closed => (0, String::new()),
                End::Stopping => (close_code::GOING_AWAY, "the session is ending".to_owned()),
                End::Display(reason) => (close_code::DISPLAY, reason),
                End::TooBig => (
                    close_code::TOO_BIG,
                    format!("message larger than {MAX_READ_MESSAGE} bytes"),
                ),
                End::Failed => (
                    close_code::INTERNAL,
                    "the pod failed on this connection; reconnect".to_owned(),
                ),
                End::NotUtf8 => (
                    close_code::NOT_UTF8,
                    "a text message that is not valid UTF-8".to_owned(),
                ),
                End::Silent => (
                    close_code::GOING_AWAY,
                    format!(
                        "nothing heard from the player for {} s",
                        config.silence_limit.as_secs()
                    ),
                ),
            }
        };
        tracing::info!(player, reason = %if code == 0 { "closed" } else { reason.as_str() }, "player disconnected");
        if code != 0 {
            // A read that failed (the socket shut down under it) leaves tungstenite unable to
            // write: a fresh WebSocket over the same stream still sends the close frame.
            if broken_read || !ws.can_write() {
                ws = WebSocket::from_raw_socket(ws.into_inner(), Role::Server, Some(ws_config()));
            }
            let closing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                close_ws(&mut ws, code, &reason);
            }));
            if closing.is_err() {
                tracing::error!(player, "closing the player's connection failed on a bug");
            }
        }
        let _ = ws.get_ref().tcp().shutdown(std::net::Shutdown::Both);
    }
}

/// How a connection ended.
enum End {
    /// The peer closed it, or it broke.
    Closed,
    Stopping,
    /// The display could not be reached or went away; the close reason.
    Display(String),
    TooBig,
    /// Nothing came, not even a pong, for the silence limit: the peer's network is gone.
    Silent,
    /// A text message that is not UTF-8; it was answered with an error first.
    NotUtf8,
    /// Serving the connection panicked.
    Failed,
}

fn serve(
    ws: &mut WebSocket<PlayerStream>,
    seat: &str,
    slot: &Slot,
    config: &PlayerConfig,
    stats: &InputStats,
) -> End {
    let player = slot.player;
    let injector = match XtestInjector::connect(&config.display, &config.keymap) {
        Ok(injector) => injector,
        Err(err) => {
            stats.display_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(player, display = %config.display, %err, "cannot send keys to the display");
            // The error names the display where it matters; the log has it in any case.
            return End::Display(format!("keys cannot reach the game: {err}"));
        }
    };
    let mut input = PlayerInput::new(injector);
    let end = play(ws, seat, slot, config, stats, &mut input);
    tracing::debug!(player, held = input.held().0, "releasing the player's keys");
    input.release_all();
    // A round trip, so the X server has processed the releases before the connection closes:
    // requests still unread when a client goes are dropped with it.
    if let Err(err) = input.sink_mut().sync_with_server() {
        tracing::debug!(player, %err, "cannot confirm the key releases");
    }
    end
}

/// Tells the page its seat, then reads messages and plays them until the connection ends.
fn play(
    ws: &mut WebSocket<PlayerStream>,
    seat: &str,
    slot: &Slot,
    config: &PlayerConfig,
    stats: &InputStats,
    input: &mut PlayerInput,
) -> End {
    let player = slot.player;
    let clock = Instant::now();
    let mut bucket = TokenBucket::new(config.rate, clock.elapsed());
    // A quiet read wakes every third of the silence limit to ping the peer; its pong (or any
    // message) proves it is still there. Reads return as soon as a message comes either way.
    let ping_every = (config.silence_limit / 3).max(Duration::from_millis(100));
    if let Err(err) = ws.get_ref().tcp().set_read_timeout(Some(ping_every)) {
        tracing::debug!(player, %err, "cannot set the input socket's read timeout");
    }
    // The page shows the seat with its video connection's clock probes: only the page that
    // holds a player's controls counts as that player there.
    if reply_text(ws, &format!(r#"{{"seat":"{seat}"}}"#)).is_err() {
        return End::Closed;
    }
    let mut heard = Instant::now();
    loop {
        let msg = match ws.read() {
            Ok(msg) => msg,
            Err(tungstenite::Error::Io(err))
                if matches!(err.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) =>
            {
                if slot.stopping() {
                    return End::Stopping;
                }
                if heard.elapsed() >= config.silence_limit {
                    stats.silent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        player,
                        silent_s = heard.elapsed().as_secs(),
                        "no answer from the player: taking its connection as gone"
                    );
                    return End::Silent;
                }
                if ws.send(Message::Ping(Default::default())).is_err() {
                    return End::Closed;
                }
                continue;
            }
            Err(tungstenite::Error::Utf8(_)) => {
                stats.error(ErrorKind::Invalid);
                let _ = reply_text(
                    ws,
                    ErrorReply::message(&"text message is not valid UTF-8").as_str(),
                );
                return End::NotUtf8;
            }
            Err(tungstenite::Error::Capacity(err)) => {
                tracing::info!(player, %err, "closing an input socket");
                return End::TooBig;
            }
            Err(err) => {
                if slot.stopping() {
                    return End::Stopping;
                }
                tracing::debug!(player, %err, "input socket ended");
                return End::Closed;
            }
        };
        let read_at = Instant::now();
        heard = read_at;
        let frame = match &msg {
            Message::Text(text) => Frame::Text(text.as_bytes()),
            Message::Binary(bytes) => Frame::Binary(bytes),
            // Pings are answered by tungstenite on the next read; a close is answered there too,
            // and that read then ends the loop.
            _ => continue,
        };
        if !bucket.take(read_at.duration_since(clock)) {
            stats.error(ErrorKind::RateLimit);
            let reply = ErrorReply::message(&format_args!(
                "rate limit: more than {} messages per second; message dropped",
                bucket.rate()
            ));
            if reply_text(ws, reply.as_str()).is_err() {
                return End::Closed;
            }
            continue;
        }
        match input.handle(frame) {
            Ok(_keys) => stats.handled(read_at.elapsed()),
            Err(HandleError::Input(err)) => {
                stats.error(ErrorKind::Invalid);
                if reply_text(ws, ErrorReply::new(&err).as_str()).is_err() {
                    return End::Closed;
                }
            }
            Err(HandleError::Inject(err)) => {
                stats.display_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(player, display = %config.display, %err, "lost the display");
                return End::Display(format!("lost the game's display {}: {err}", config.display));
            }
        }
    }
}

fn reply_text(ws: &mut WebSocket<PlayerStream>, text: &str) -> tungstenite::Result<()> {
    ws.send(Message::text(text))
}

/// The player's thread, named for `ps` and debuggers.
pub fn spawn(
    slot: Arc<Slot>,
    config: PlayerConfig,
    stats: Arc<InputStats>,
    health: Arc<Health>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("player-{}", slot.player))
        .spawn(move || run(&slot, &config, &stats, &health))
}
