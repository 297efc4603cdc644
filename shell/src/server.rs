//! The HTTP and WebSocket server of one game session: the web player and the media streams
//! under `/play/TOKEN/`, plus `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code as axum_close,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use playpod_hotpath::h264;
use playpod_hotpath::pipeline::unix_micros;
use playpod_hotpath::ring::{FrameMeta, ReadOutcome, Ring, RingReader};
use serde::Serialize;

use crate::assets;
use crate::input::close_code;
use crate::metrics::Metrics;
use crate::token::token_matches;

/// Size of the binary media header (see the wire contract).
pub const MEDIA_HEADER_LEN: usize = 16;
/// Media message kinds.
pub const KIND_VIDEO: u8 = 1;
/// A viewer whose socket does not take a message for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A viewer's `keyframe` requests are honoured at most this often: every IDR goes to every
/// viewer, so a page whose decoder keeps failing (or a hostile one) must not turn the whole
/// stream into IDRs. A new viewer's first IDR does not count.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// How often a viewer's connection is checked for a queue in front of a slow link.
const LINK_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// A round trip this much above the least seen on the connection means a queue on the way:
/// the stream is heavier than the link (see [`LinkProbe`]).
pub const SLOW_LINK_QUEUE: Duration = Duration::from_millis(60);
/// A viewer's link counts as slow in its clock answers for this long after its last sign of it
/// (a queue or a lag): a second past the calm the bitrate waits for before it climbs.
pub const SLOW_LINK_MEMORY: Duration = Duration::from_secs(5);

/// The TCP socket under a request's connection (a duplicate of its descriptor; `None` where
/// it could not be made), put in the request's extensions by the accept loop, so that a
/// viewer's link can be watched.
#[derive(Debug, Clone)]
pub struct ConnSocket(pub Option<Arc<std::os::fd::OwnedFd>>);

/// Watches one viewer's link for a queue: a link slower than the stream fills the buffer in
/// front of it, which the sender never sees as a full socket (the queue is in the network),
/// only as a round trip grown above the least the connection has had. The kernel measures
/// that round trip from the viewer's acknowledgements (`TCP_INFO`).
#[derive(Debug)]
pub struct LinkProbe {
    socket: Arc<std::os::fd::OwnedFd>,
    least_us: u32,
}

impl LinkProbe {
    pub fn new(socket: Arc<std::os::fd::OwnedFd>) -> Self {
        Self {
            socket,
            least_us: u32::MAX,
        }
    }

    /// The link now: the delay of the queue on the way (the smoothed round trip less the
    /// least seen) and the bits a second the kernel last saw delivered. `None` before the
    /// kernel has a measurement, or when it cannot be read.
    pub fn check(&mut self) -> Option<LinkCheck> {
        use std::os::fd::AsFd;
        let path = playpod_ffi::tcp::path_info(self.socket.as_fd()).ok()?;
        if path.smoothed_rtt_us == 0 {
            return None;
        }
        self.least_us = self.least_us.min(path.smoothed_rtt_us);
        Some(LinkCheck {
            queue: Duration::from_micros(u64::from(path.smoothed_rtt_us - self.least_us)),
            delivered_bps: Some(path.delivery_rate.saturating_mul(8)).filter(|&r| r > 0),
        })
    }
}

/// What [`LinkProbe::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCheck {
    pub queue: Duration,
    /// What the link carried in the kernel's latest sample, bits a second.
    pub delivered_bps: Option<u64>,
}

/// The picture the session streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// Liveness and activity of the session, shared with `/readyz`, `/metrics` and the pipeline.
#[derive(Debug)]
pub struct Health {
    pub display_ok: AtomicBool,
    /// The game's display closed: the session is over for good ([`Health::end_game`]).
    game_over: AtomicBool,
    pub encoder: &'static str,
    /// Where BGRX -> YUV runs: `cpu` or `cuda`.
    pub conversion: &'static str,
    /// Why this encoder and conversion were chosen (`--encoder auto` explains itself).
    pub encoder_reason: String,
    pub capture: &'static str,
    pub viewers: AtomicUsize,
    /// Viewers whose page holds a player's seat: their links set the bitrate.
    pub seated_viewers: AtomicUsize,
    /// Viewers reading the low rendition.
    pub low_viewers: AtomicUsize,
    /// Times a viewer moved to the low rendition, and back to the full picture.
    pub rendition_moves_low: AtomicU64,
    pub rendition_moves_full: AtomicU64,
    pub players: AtomicUsize,
    /// Unix seconds when a viewer or player was last connected.
    last_activity: AtomicU64,
    pub frames_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub viewers_dropped_slow: AtomicU64,
}

impl Health {
    pub fn new(encoder: &'static str, capture: &'static str) -> Self {
        Self {
            display_ok: AtomicBool::new(true),
            game_over: AtomicBool::new(false),
            encoder,
            conversion: "cpu",
            encoder_reason: String::new(),
            capture,
            viewers: AtomicUsize::new(0),
            seated_viewers: AtomicUsize::new(0),
            low_viewers: AtomicUsize::new(0),
            rendition_moves_low: AtomicU64::new(0),
            rendition_moves_full: AtomicU64::new(0),
            players: AtomicUsize::new(0),
            last_activity: AtomicU64::new(unix_micros() / 1_000_000),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            viewers_dropped_slow: AtomicU64::new(0),
        }
    }

    /// Marks the session over because the game's display closed (the game exited): the display
    /// is down, and the sockets close with [`close_code::GAME_OVER`].
    pub fn end_game(&self) {
        self.game_over.store(true, Ordering::Relaxed);
        self.display_ok.store(false, Ordering::Relaxed);
    }

    /// Whether the session ended because the game did ([`Health::end_game`]).
    pub fn game_over(&self) -> bool {
        self.game_over.load(Ordering::Relaxed)
    }

    /// The close frame of a media socket whose stream has ended.
    pub fn stream_end(&self) -> CloseFrame {
        if self.game_over() {
            CloseFrame {
                code: close_code::GAME_OVER,
                reason: close_code::GAME_OVER_REASON.into(),
            }
        } else {
            CloseFrame {
                code: axum_close::AWAY,
                reason: "the stream has ended".into(),
            }
        }
    }

    /// Records where conversion runs and why the video path was chosen.
    pub fn with_video_path(mut self, conversion: &'static str, reason: String) -> Self {
        self.conversion = conversion;
        self.encoder_reason = reason;
        self
    }

    pub(crate) fn touch(&self) {
        self.last_activity
            .store(unix_micros() / 1_000_000, Ordering::Relaxed);
    }

    /// Seconds since someone was last connected; 0 while someone is.
    pub fn idle_seconds(&self) -> u64 {
        if self.viewers.load(Ordering::Relaxed) + self.players.load(Ordering::Relaxed) > 0 {
            return 0;
        }
        (unix_micros() / 1_000_000).saturating_sub(self.last_activity.load(Ordering::Relaxed))
    }
}

/// The low rendition ([`playpod_hotpath::rendition`]): its ring, its counters and its picture.
#[derive(Debug)]
pub struct LowStream {
    pub ring: Ring,
    pub stats: Arc<playpod_hotpath::stats::PipelineStats>,
    pub stream: StreamInfo,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub token: String,
    pub ring: Ring,
    pub stream: StreamInfo,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    /// The frame thread's counters (the bitrate target on /readyz).
    pub video: Arc<playpod_hotpath::stats::PipelineStats>,
    /// The low rendition for spectators on slow links, when there is one.
    pub low: Option<LowStream>,
    /// The player slots behind `/input/1` and `/input/2`.
    pub input: Arc<crate::input::Players>,
    /// The game's sound, when audio is on (`WS .../audio`).
    pub audio: Option<crate::audio::AudioFeed>,
}

impl AppState {
    pub(crate) fn token_ok(&self, presented: &str) -> bool {
        token_matches(&self.token, presented)
    }

    /// Whether a page claiming `role` holds that player's seat now.
    fn holds_seat(&self, role: &Role) -> bool {
        let Role::Player { player, seat } = role else {
            return false;
        };
        let seated = self.input.seated(*player, seat);
        if !seated {
            tracing::debug!(
                player,
                "a viewer's page claims a player's seat it does not hold"
            );
        }
        seated
    }

    /// How the stream fits a viewer (of the low rendition when `low`) whose link last showed
    /// trouble at `troubled_at`, which is forgotten once it is [`SLOW_LINK_MEMORY`] old and the
    /// target is back at full.
    fn stream_fit(&self, troubled_at: &mut Option<tokio::time::Instant>, low: bool) -> StreamFit {
        let stats = match &self.low {
            Some(rendition) if low => &rendition.stats,
            _ => &self.video,
        };
        let target = stats.bitrate_target_bps.load(Ordering::Relaxed);
        let full = stats.bitrate_full_bps.load(Ordering::Relaxed);
        if target >= full && troubled_at.is_some_and(|at| at.elapsed() >= SLOW_LINK_MEMORY) {
            *troubled_at = None;
        }
        StreamFit {
            bitrate_kbps: target / 1000,
            full_kbps: full / 1000,
            slow_link: troubled_at.is_some(),
        }
    }
}

/// The session's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/play/{token}", get(play_redirect))
        .route("/play/{token}/", get(player_page))
        .route("/play/{token}/video", get(video))
        .route("/play/{token}/audio", get(crate::audio::ws::audio))
        .route(
            "/play/{token}/input/{player}",
            get(crate::input::input_socket),
        )
        .route("/play/{token}/{file}", get(player_file))
        .fallback(|| async { not_found() })
        // A known path with another method answers as an unknown one: the same for any token.
        .method_not_allowed_fallback(|| async { not_found() })
        .layer(axum::middleware::from_fn(undecodable_path_is_unknown))
        .with_state(state)
}

/// A path whose escapes decode to no UTF-8 text holds no token or file of ours: it answers as
/// an unknown path, not with the 400 (naming the route's segment) of extracting its segments.
async fn undecodable_path_is_unknown(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if decodes_to_utf8(request.uri().path()) {
        next.run(request).await
    } else {
        not_found()
    }
}

/// Whether the percent-escapes of `path` decode to UTF-8 text (a `%` not followed by two hex
/// digits stands for itself, as the router takes it).
fn decodes_to_utf8(path: &str) -> bool {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .is_ok()
}

/// The one answer for every unknown path and every wrong token, so a token cannot be probed.
pub fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "not found\n",
    )
        .into_response()
}

/// `/play/TOKEN` -> `/play/TOKEN/`, the query kept (`?player=1` still chooses the player).
async fn play_redirect(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !app.token_ok(&token) {
        return not_found();
    }
    let location = match query {
        Some(query) => format!("/play/{token}/?{query}"),
        None => format!("/play/{token}/"),
    };
    // The token matched ours and the query came from a parsed URI: both are header-safe.
    match HeaderValue::try_from(location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

async fn player_page(State(app): State<Arc<AppState>>, Path(token): Path<String>) -> Response {
    if !app.token_ok(&token) {
        return not_found();
    }
    assets::response("index.html").unwrap_or_else(not_found)
}

async fn player_file(
    State(app): State<Arc<AppState>>,
    Path((token, file)): Path<(String, String)>,
) -> Response {
    if !app.token_ok(&token) {
        return not_found();
    }
    assets::response(&file).unwrap_or_else(not_found)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Readiness<'a> {
    ready: bool,
    display: &'static str,
    capture: &'static str,
    encoder: &'static str,
    conversion: &'static str,
    encoder_reason: &'a str,
    audio: &'static str,
    viewers: usize,
    players: usize,
    idle_seconds: u64,
    frames_published: u64,
    /// The encoder's target now: --bitrate-kbps, or less while viewers lag.
    bitrate_kbps: u64,
    /// The low rendition for spectators on slow links, `null` where there is none.
    low_rendition: Option<LowReadiness>,
}

/// The low rendition on `/readyz`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LowReadiness {
    width: u32,
    height: u32,
    viewers: usize,
    bitrate_kbps: u64,
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let h = &app.health;
    let display_ok = h.display_ok.load(Ordering::Relaxed);
    let body = Readiness {
        ready: display_ok,
        display: if display_ok { "ok" } else { "down" },
        capture: h.capture,
        encoder: h.encoder,
        conversion: h.conversion,
        encoder_reason: &h.encoder_reason,
        audio: crate::audio::state(app.audio.as_ref()).as_str(),
        viewers: h.viewers.load(Ordering::Relaxed),
        players: h.players.load(Ordering::Relaxed),
        idle_seconds: h.idle_seconds(),
        frames_published: app.ring.published(),
        bitrate_kbps: app.video.bitrate_target_bps.load(Ordering::Relaxed) / 1000,
        low_rendition: app.low.as_ref().map(|low| LowReadiness {
            width: low.stream.width,
            height: low.stream.height,
            viewers: h.low_viewers.load(Ordering::Relaxed),
            bitrate_kbps: low.stats.bitrate_target_bps.load(Ordering::Relaxed) / 1000,
        }),
    };
    let status = if display_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    match app.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn video(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    conn: Option<axum::Extension<ConnSocket>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !app.token_ok(&token) {
        return not_found();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let reader = match app.ring.subscribe() {
        Ok(reader) => reader,
        Err(err) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response(),
    };
    ws.on_upgrade(move |socket: WebSocket| async move {
        let (sink, stream) = socket.split();
        let probe = conn.and_then(|axum::Extension(ConnSocket(socket))| socket.map(LinkProbe::new));
        stream_video(sink, stream, reader, probe, &app).await;
    })
}

/// Writes the binary media header for `meta` into the first 16 bytes of `buf`.
pub fn write_media_header(buf: &mut [u8], kind: u8, meta: &FrameMeta) {
    buf[0] = kind;
    buf[1] = u8::from(meta.keyframe);
    buf[2..4].copy_from_slice(&0u16.to_le_bytes());
    buf[4..8].copy_from_slice(&(meta.seq as u32).to_le_bytes());
    buf[8..16].copy_from_slice(&meta.capture_us.to_le_bytes());
}

/// The first text message of the video stream, and of each change of rendition: the low
/// rendition's says `"rendition":"low"`.
pub fn video_config(codec: &str, stream: StreamInfo, low: bool) -> String {
    let mut config = serde_json::json!({
        "codec": codec,
        "width": stream.width,
        "height": stream.height,
        "fps": stream.fps,
    });
    if low {
        config["rendition"] = "low".into();
    }
    config.to_string()
}

/// A viewer's text message as the JSON object a clock probe is, if it is one (at most 128
/// bytes).
fn probe_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    if text.len() > 128 {
        return None;
    }
    match serde_json::from_str(text).ok()? {
        serde_json::Value::Object(msg) => Some(msg),
        _ => None,
    }
}

/// How the stream fits a viewer's link, told with each clock answer so that its page can say
/// why the picture got worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct StreamFit {
    /// The encoder's target bitrate now, kbit/s.
    bitrate_kbps: u64,
    /// The bitrate set (`--bitrate-kbps`), kbit/s: the target's ceiling.
    full_kbps: u64,
    /// This viewer's own link showed a queue or fell behind within [`SLOW_LINK_MEMORY`], or
    /// since the target was last at the full bitrate (its link may be why it is not).
    slow_link: bool,
}

/// The answer to a clock probe `{"ping":T}` (T: the player's clock, any finite number):
/// `{"pong":T,"serverUs":NOW,"bitrateKbps":B,"fullKbps":F,"slowLink":S}` with our time in µs
/// since the Unix epoch (the clock of the capture times) and how the stream fits the viewer's
/// link. Anything else gets no answer.
fn pong_for(
    msg: &serde_json::Map<String, serde_json::Value>,
    now_us: u64,
    fit: StreamFit,
) -> Option<String> {
    let ping = msg.get("ping")?;
    ping.as_f64().filter(|t| t.is_finite())?;
    Some(
        serde_json::json!({
            "pong": ping,
            "serverUs": now_us,
            "bitrateKbps": fit.bitrate_kbps,
            "fullKbps": fit.full_kbps,
            "slowLink": fit.slow_link,
        })
        .to_string(),
    )
}

/// What a viewer's clock probe says of its page: `{"player":null}` a spectator's,
/// `{"player":N,"seat":S}` player N's, where S is the seat the pod gave that player's input
/// connection (see [`crate::input::Players::seated`]): the pod checks it, so a spectator's page
/// cannot pass for a player's.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Spectator,
    Player { player: u8, seat: String },
}

/// The role a viewer's probe claims; `None` when it says nothing of it. Any `player` but 1
/// or 2 is a spectator's; a player without a seat has an empty one, which no slot holds.
fn role_in(msg: &serde_json::Map<String, serde_json::Value>) -> Option<Role> {
    let player = msg.get("player")?;
    Some(match player.as_u64() {
        Some(n @ (1 | 2)) => Role::Player {
            player: n as u8,
            seat: msg
                .get("seat")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
        _ => Role::Spectator,
    })
}

/// Counts a viewer for as long as it lives, and as seated while its page holds a player's
/// seat.
struct ViewerGuard<'a> {
    health: &'a Health,
    seated: bool,
    low: bool,
}

impl<'a> ViewerGuard<'a> {
    fn new(health: &'a Health) -> Self {
        health.viewers.fetch_add(1, Ordering::Relaxed);
        health.touch();
        Self {
            health,
            seated: false,
            low: false,
        }
    }

    fn set_low(&mut self, low: bool) {
        match (self.low, low) {
            (false, true) => self.health.low_viewers.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.health.low_viewers.fetch_sub(1, Ordering::Relaxed),
            _ => return,
        };
        self.low = low;
    }

    fn set_seated(&mut self, seated: bool) {
        match (self.seated, seated) {
            (false, true) => self.health.seated_viewers.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.health.seated_viewers.fetch_sub(1, Ordering::Relaxed),
            _ => return,
        };
        self.seated = seated;
    }
}

impl Drop for ViewerGuard<'_> {
    fn drop(&mut self) {
        self.set_seated(false);
        self.set_low(false);
        self.health.touch();
        self.health.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a viewer moved to the low rendition stays there without trouble before it tries
/// the full picture again ([`Feed`]).
pub const LOW_RETRY: Duration = Duration::from_secs(10);
/// A try at the full picture that meets trouble within this time failed: the next try waits
/// twice as long, up to [`LOW_RETRY_MAX`].
pub const LOW_PROBATION: Duration = Duration::from_secs(10);
/// The longest wait between two tries at the full picture.
pub const LOW_RETRY_MAX: Duration = Duration::from_secs(160);
/// Link checks in a row that must find a queue before a spectator is moved to the low
/// rendition (a lag moves it at once): a slow link holds its queue, a passing stall of the
/// viewer's machine does not.
pub const QUEUED_CHECKS_TO_MOVE: u32 = 2;

/// How long a viewer moving to the low rendition at `now` waits before it tries the full
/// picture again: twice `retry_after` (at most [`LOW_RETRY_MAX`]) when its last try, at
/// `back_at`, failed within [`LOW_PROBATION`]; [`LOW_RETRY`] otherwise.
fn next_retry(
    retry_after: Duration,
    back_at: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
) -> Duration {
    if back_at.is_some_and(|at| now.duration_since(at) < LOW_PROBATION) {
        (retry_after * 2).min(LOW_RETRY_MAX)
    } else {
        LOW_RETRY
    }
}

/// What one viewer reads: the full stream or the low rendition ([`LowStream`]), and its way
/// back. A viewer whose link does not set the bitrate (a spectator while players play) goes to
/// the low rendition at its link's first sign of trouble; after [`LOW_RETRY`] without trouble
/// (or at once when its link counts again) it subscribes to the full stream beside it, patiently,
/// and moves there at that stream's next keyframe, so it never waits on a still picture.
struct Feed {
    reader: RingReader,
    /// The reader's lags last seen.
    lags: u64,
    /// Whether this reader's stream was described to the viewer (its config message).
    configured: bool,
    low: bool,
    /// The latest trouble on the low rendition, or when the viewer moved there.
    calm_since: tokio::time::Instant,
    retry_after: Duration,
    /// When the viewer last went back to the full picture.
    back_at: Option<tokio::time::Instant>,
    /// The full stream's reader, waiting for its first keyframe.
    full: Option<RingReader>,
    /// The viewer asked for the low rendition (`{"rendition":"low"}`): it stays there.
    asked_low: bool,
    /// Link checks in a row that found a queue.
    queued_checks: u32,
}

impl Feed {
    fn new(reader: RingReader) -> Self {
        Self {
            lags: reader.lags(),
            reader,
            configured: false,
            low: false,
            calm_since: tokio::time::Instant::now(),
            retry_after: LOW_RETRY,
            back_at: None,
            full: None,
            asked_low: false,
            queued_checks: 0,
        }
    }

    /// The viewer asks for the low rendition (`low`), or for the picture to follow its link
    /// again: moved there at once, or left to find its way back.
    fn ask(&mut self, app: &AppState, guard: &mut ViewerGuard<'_>, low: bool) {
        self.asked_low = low;
        if !low || self.low {
            return;
        }
        if let Some(reader) = app.low.as_ref().and_then(|low| low.ring.subscribe().ok()) {
            self.switch(reader, true, guard);
            self.full = None;
        }
    }

    /// The viewer's link showed a queue, or its reader fell behind (`link_bps`: what the link
    /// delivered, if known). Counted for the bitrate of the stream it reads when `counted` or
    /// when that is the low rendition (all of whose viewers' links count); otherwise, it
    /// moves to the low rendition, if there is one, once the trouble is `lasting` (a lag, or
    /// [`QUEUED_CHECKS_TO_MOVE`] queued link checks in a row).
    fn trouble(
        &mut self,
        app: &AppState,
        guard: &mut ViewerGuard<'_>,
        counted: bool,
        link_bps: Option<u64>,
        lasting: bool,
    ) {
        let now = tokio::time::Instant::now();
        match &app.low {
            Some(low) if self.low => {
                low.ring.report_trouble(link_bps);
                self.calm_since = now;
                self.full = None;
            }
            _ if counted => app.ring.report_trouble(link_bps),
            Some(low) if lasting => {
                let Ok(reader) = low.ring.subscribe() else {
                    return;
                };
                self.retry_after = next_retry(self.retry_after, self.back_at, now);
                tracing::debug!(
                    retry_s = self.retry_after.as_secs(),
                    "a spectator's link cannot carry the stream: moved to the low rendition"
                );
                self.switch(reader, true, guard);
                self.calm_since = now;
                app.health
                    .rendition_moves_low
                    .fetch_add(1, Ordering::Relaxed);
            }
            Some(_) | None => {}
        }
    }

    /// On the low rendition: starts waiting for the full stream's next keyframe once the link
    /// has been calm for the retry time, or at once when its troubles count (the full
    /// stream's bitrate then follows it).
    fn try_full(&mut self, app: &AppState, counted: bool) {
        if !self.low || self.full.is_some() || self.asked_low {
            return;
        }
        if counted {
            self.full = app.ring.subscribe().ok();
        } else if self.calm_since.elapsed() >= self.retry_after {
            self.full = app.ring.subscribe_patiently().ok();
        }
    }

    /// Reads from `reader` from now on.
    fn switch(&mut self, reader: RingReader, low: bool, guard: &mut ViewerGuard<'_>) {
        self.lags = reader.lags();
        self.reader = reader;
        self.configured = false;
        self.low = low;
        guard.set_low(low);
    }

    /// The low rendition, while this viewer reads it.
    fn low_stream<'a>(&self, app: &'a AppState) -> Option<&'a LowStream> {
        app.low.as_ref().filter(|_| self.low)
    }

    /// Asks for a keyframe of the stream this viewer reads.
    fn request_keyframe(&self, app: &AppState, counted: bool) {
        match self.low_stream(app) {
            Some(low) => low.ring.request_keyframe(),
            // Like its lags: a viewer whose link does not set the bitrate waits.
            None if counted => app.ring.request_keyframe(),
            None => app.ring.request_keyframe_patiently(),
        }
    }

    /// The picture of the stream this viewer reads.
    fn stream(&self, app: &AppState) -> StreamInfo {
        self.low_stream(app).map_or(app.stream, |low| low.stream)
    }
}

/// What woke a viewer's task.
enum Woken {
    LinkCheck,
    Read(ReadOutcome),
    /// The full stream's reader, waiting to replace the low rendition's, read a frame (its
    /// first keyframe).
    Full(ReadOutcome),
    /// The viewer asked for the low rendition (true) or for the picture to follow its link.
    Ask(bool),
}

/// Serves one viewer: the config message, then every access unit from its ring reader, each
/// behind the 16-byte header. Ends when the viewer goes, is too slow to take a message within
/// ten seconds, or the stream ends. With `probe`, the viewer's link is checked every
/// [`LINK_CHECK_INTERVAL`] and a queue of [`SLOW_LINK_QUEUE`] or more is reported to the ring.
/// Such a slow link, or a lag in the ring, lowers the encoder's bitrate when it is a player's
/// (its clock probes show the seat of a connected player) or when no player is connected. A
/// spectator on a weak link while players watch moves to the low rendition where there is one
/// ([`Feed`]); without one it only skips ahead, and asks for its keyframes patiently
/// ([`RingReader::set_patient`]). Generic over the socket so tests can drive it.
pub async fn stream_video<S, R>(
    mut sink: S,
    mut incoming: R,
    reader: RingReader,
    mut probe: Option<LinkProbe>,
    app: &AppState,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let mut guard = ViewerGuard::new(&app.health);
    let health = &*app.health;
    // Grows to the largest access unit this viewer sees, then stays: no allocation per frame
    // here beyond the message handed to the socket.
    let mut buf = Vec::with_capacity(MEDIA_HEADER_LEN + 64 * 1024);
    // The full stream's first keyframe while coming back from the low rendition.
    let mut full_buf = Vec::new();
    let mut feed = Feed::new(reader);
    let mut last_key_request: Option<tokio::time::Instant> = None;
    // This viewer's last sign of a link too slow for the stream, whether it counts or not.
    let mut troubled_at: Option<tokio::time::Instant> = None;
    // Whether this viewer's troubles count for the bitrate.
    let counts = |seated: bool| seated || health.players.load(Ordering::Relaxed) == 0;
    let mut link_checks = tokio::time::interval(LINK_CHECK_INTERVAL);
    link_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A reader appends only the frame it returns, which is sent (or swapped in) at once.
        for b in [&mut buf, &mut full_buf] {
            b.clear();
            b.resize(MEDIA_HEADER_LEN, 0);
        }
        let counted = counts(guard.seated);
        // A viewer whose link does not set the bitrate asks for its keyframes patiently, so
        // that falling behind does not make every viewer take an IDR (the low rendition's
        // keyframes are its slow viewers' own).
        feed.reader.set_patient(!feed.low && !counted);
        feed.try_full(app, counted);
        let woken = tokio::select! {
            _ = link_checks.tick(), if probe.is_some() => Woken::LinkCheck,
            outcome = std::future::poll_fn(|cx| feed.reader.poll_read(cx, &mut buf)) => {
                Woken::Read(outcome)
            }
            outcome = std::future::poll_fn(|cx| match feed.full.as_mut() {
                Some(full) => full.poll_read(cx, &mut full_buf),
                None => std::task::Poll::Pending,
            }), if feed.full.is_some() => Woken::Full(outcome),
            msg = incoming.next() => match msg {
                // Pings are answered by the socket itself.
                Some(Ok(Message::Close(_))) => {
                    answer_close(&mut sink).await;
                    return;
                }
                Some(Err(_)) | None => return,
                // A player whose decoder restarted asks for a fresh keyframe.
                Some(Ok(Message::Text(t))) if t.as_str() == "keyframe" => {
                    let now = tokio::time::Instant::now();
                    if last_key_request
                        .is_none_or(|at| now.duration_since(at) >= KEYFRAME_REQUEST_INTERVAL)
                    {
                        feed.request_keyframe(app, counted);
                        last_key_request = Some(now);
                    }
                    continue;
                }
                // The player estimates the offset between its clock and ours, so that its
                // overlay's capture -> decoded latency holds across machines.
                Some(Ok(Message::Text(t))) => {
                    let Some(msg) = probe_object(t.as_str()) else {
                        continue;
                    };
                    if let Some(role) = role_in(&msg) {
                        guard.set_seated(app.holds_seat(&role));
                    }
                    let fit = app.stream_fit(&mut troubled_at, feed.low);
                    if let Some(reply) = pong_for(&msg, unix_micros(), fit)
                        && !send(&mut sink, Message::Text(reply.into()), health).await
                    {
                        return;
                    }
                    match msg.get("rendition").and_then(serde_json::Value::as_str) {
                        Some("low") => Woken::Ask(true),
                        Some("auto") => Woken::Ask(false),
                        _ => continue,
                    }
                }
                Some(Ok(_)) => continue,
            },
        };
        let outcome = match woken {
            Woken::Ask(low) => {
                feed.ask(app, &mut guard, low);
                continue;
            }
            Woken::LinkCheck => {
                match probe.as_mut().and_then(LinkProbe::check) {
                    Some(link) if link.queue >= SLOW_LINK_QUEUE => {
                        tracing::debug!(
                            queue_ms = link.queue.as_millis(),
                            delivered_bps = link.delivered_bps,
                            seated = guard.seated,
                            low = feed.low,
                            "a viewer's link holds a queue"
                        );
                        app.ring.report_slow_link();
                        troubled_at = Some(tokio::time::Instant::now());
                        feed.queued_checks = feed.queued_checks.saturating_add(1);
                        let lasting = feed.queued_checks >= QUEUED_CHECKS_TO_MOVE;
                        feed.trouble(app, &mut guard, counted, link.delivered_bps, lasting);
                    }
                    Some(_) => feed.queued_checks = 0,
                    None => {}
                }
                continue;
            }
            Woken::Full(outcome) => {
                if let ReadOutcome::Frame(_) = outcome
                    && let Some(full) = feed.full.take()
                {
                    tracing::debug!("a spectator is back on the full picture");
                    feed.switch(full, false, &mut guard);
                    feed.back_at = Some(tokio::time::Instant::now());
                    health.rendition_moves_full.fetch_add(1, Ordering::Relaxed);
                    std::mem::swap(&mut buf, &mut full_buf);
                }
                outcome
            }
            Woken::Read(outcome) => {
                if feed.reader.lags() != feed.lags {
                    feed.lags = feed.reader.lags();
                    troubled_at = Some(tokio::time::Instant::now());
                    let link = probe.as_mut().and_then(LinkProbe::check);
                    let link_bps = link.and_then(|l| l.delivered_bps);
                    feed.trouble(app, &mut guard, counted, link_bps, true);
                }
                outcome
            }
        };
        let meta = match outcome {
            ReadOutcome::Frame(meta) => meta,
            ReadOutcome::Empty => continue,
            ReadOutcome::Closed => {
                let _ = sink.send(Message::Close(Some(health.stream_end()))).await;
                return;
            }
        };
        if !feed.configured {
            let codec = h264::codec_string(&buf[MEDIA_HEADER_LEN..])
                .unwrap_or_else(|| "avc1.42E01F".to_owned());
            let config = video_config(&codec, feed.stream(app), feed.low);
            if !send(&mut sink, Message::Text(config.into()), health).await {
                return;
            }
            feed.configured = true;
        }
        write_media_header(&mut buf, KIND_VIDEO, &meta);
        let len = buf.len() as u64;
        if !send(
            &mut sink,
            Message::Binary(Bytes::copy_from_slice(&buf)),
            health,
        )
        .await
        {
            return;
        }
        health.frames_sent.fetch_add(1, Ordering::Relaxed);
        health.bytes_sent.fetch_add(len, Ordering::Relaxed);
    }
}

/// Answers the peer's close frame (the socket queued the answer; closing the sink sends it),
/// so the browser sees a clean close rather than a dropped connection. Bounded: a peer that
/// takes nothing more is not waited for.
pub(crate) async fn answer_close<S: Sink<Message> + Unpin>(sink: &mut S) {
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

async fn send<S: Sink<Message> + Unpin>(sink: &mut S, msg: Message, health: &Health) -> bool {
    send_or_drop(sink, msg, "a viewer", Some(&health.viewers_dropped_slow)).await
}

/// Sends one media message, giving the peer [`SEND_TIMEOUT`] to take it. `false` when the
/// socket is gone, or when the peer (`who`, for the log) took nothing for that long: then it is
/// dropped and counted in `dropped_slow`.
pub(crate) async fn send_or_drop<S: Sink<Message> + Unpin>(
    sink: &mut S,
    msg: Message,
    who: &str,
    dropped_slow: Option<&AtomicU64>,
) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            if let Some(count) = dropped_slow {
                count.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!("dropping {who} that took no data for {SEND_TIMEOUT:?}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_header_layout() {
        let mut buf = [0xffu8; 16];
        let meta = FrameMeta {
            seq: 0x1_0000_0002,
            keyframe: true,
            capture_us: 0x0102_0304_0506_0708,
            len: 0,
        };
        write_media_header(&mut buf, KIND_VIDEO, &meta);
        assert_eq!(
            buf,
            [1, 1, 0, 0, 2, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1],
            "kind, flags, reserved, u32 seq (wrapping), u64 capture time, little-endian"
        );
    }

    /// A viewer's text as [`stream_video`] answers it.
    fn pong_reply(text: &str, now_us: u64, fit: StreamFit) -> Option<String> {
        pong_for(&probe_object(text)?, now_us, fit)
    }

    /// The role a viewer's text claims, as [`stream_video`] reads it.
    fn claimed_role(text: &str) -> Option<Role> {
        role_in(&probe_object(text)?)
    }

    #[test]
    fn a_page_says_whether_it_is_a_players() {
        let player = |player, seat: &str| {
            Some(Role::Player {
                player,
                seat: seat.to_owned(),
            })
        };
        assert_eq!(
            claimed_role(r#"{"ping":5,"player":1,"seat":"ab12"}"#),
            player(1, "ab12")
        );
        assert_eq!(
            claimed_role(r#"{"ping":5,"player":2,"seat":"cd"}"#),
            player(2, "cd")
        );
        // A claim without a seat (or with one that is not text) holds none.
        assert_eq!(claimed_role(r#"{"ping":5,"player":1}"#), player(1, ""));
        assert_eq!(
            claimed_role(r#"{"ping":5,"player":1,"seat":7}"#),
            player(1, "")
        );
        assert_eq!(
            claimed_role(r#"{"ping":5,"player":null}"#),
            Some(Role::Spectator)
        );
        for other in [r#"{"player":3}"#, r#"{"player":"1"}"#, r#"{"player":true}"#] {
            assert_eq!(claimed_role(other), Some(Role::Spectator), "{other}");
        }
        for silent in ["keyframe", r#"{"ping":5}"#, "[1]", "", r#"{"seat":"ab"}"#] {
            assert_eq!(claimed_role(silent), None, "{silent}");
        }
        assert!(pong_reply(r#"{"ping":5,"player":1}"#, 9, StreamFit::default()).is_some());
    }

    #[test]
    fn clock_probes_get_our_time_and_nothing_else_does() {
        let fit = StreamFit {
            bitrate_kbps: 600,
            full_kbps: 2500,
            slow_link: true,
        };
        let reply: serde_json::Value =
            serde_json::from_str(&pong_reply(r#"{"ping":1234.5}"#, 99, fit).unwrap()).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({
                "pong": 1234.5,
                "serverUs": 99,
                "bitrateKbps": 600,
                "fullKbps": 2500,
                "slowLink": true
            })
        );
        for bad in [
            "",
            "ping",
            "{}",
            r#"{"ping":"x"}"#,
            r#"{"ping":null}"#,
            "[1]",
            r#"{"ping":1e999}"#,
            &format!(r#"{{"ping":1,"pad":"{}"}}"#, "x".repeat(200)),
        ] {
            assert_eq!(pong_reply(bad, 1, fit), None, "{bad:?}");
        }
    }

    #[test]
    fn paths_that_decode_to_no_text_are_told_apart() {
        for ok in [
            "/",
            "/play/abc/",
            "/play/%41%62c/",
            "/a%2",
            "/%zz",
            "/%C3%A9",
            "/%",
        ] {
            assert!(decodes_to_utf8(ok), "{ok}");
        }
        for bad in ["/%ff", "/play/%C3%28/video", "/x/%e2%82"] {
            assert!(!decodes_to_utf8(bad), "{bad}");
        }
    }

    #[test]
    fn a_failed_try_at_the_full_picture_doubles_the_wait_for_the_next() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs;
        // The first move, and one long after a try that went well.
        assert_eq!(next_retry(LOW_RETRY, None, t0), LOW_RETRY);
        assert_eq!(next_retry(s(40), Some(t0), t0 + LOW_PROBATION), LOW_RETRY);
        // Tries that failed within the probation: 10, 20, 40, 80, 160, 160 s.
        let mut wait = LOW_RETRY;
        let mut waits = Vec::new();
        for _ in 0..5 {
            wait = next_retry(wait, Some(t0), t0 + s(2));
            waits.push(wait.as_secs());
        }
        assert_eq!(waits, [20, 40, 80, 160, 160]);
    }

    #[test]
    fn config_message() {
        let info = StreamInfo {
            width: 768,
            height: 768,
            fps: 60,
        };
        let v: serde_json::Value =
            serde_json::from_str(&video_config("avc1.42C01F", info, false)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"codec":"avc1.42C01F","width":768,"height":768,"fps":60})
        );
        let low = StreamInfo {
            width: 384,
            height: 384,
            fps: 60,
        };
        let v: serde_json::Value =
            serde_json::from_str(&video_config("avc1.42C015", low, true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"codec":"avc1.42C015","width":384,"height":384,"fps":60,
                               "rendition":"low"})
        );
    }
}
