//! Players' input end to end below the browser: a real Xvfb, `playpod pod` streaming it, and an
//! X client in the test that owns the focused window and records every KeyPress and KeyRelease
//! (keycodes turned into keysyms through GetKeyboardMapping). Players drive their input
//! WebSockets (`/play/TOKEN/input/1` and `/2`) exactly as a browser does.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use playpod_tests::{Served, Xvfb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use x11rb::connection::Connection as _;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    ConnectionExt as _, CreateWindowAux, EventMask, InputFocus, MapState, WindowClass,
};
use x11rb::wrapper::ConnectionExt as _;

const TOKEN: &str = "inputtestinputtestinputtest01234";

/// X keysyms of the default keymaps (player 1: W S A D F G Return Tab; player 2: arrows K L P O).
mod sym {
    pub const W: u32 = b'w' as u32;
    pub const F: u32 = b'f' as u32;
    pub const G: u32 = b'g' as u32;
    pub const I: u32 = b'i' as u32;
    pub const K: u32 = b'k' as u32;
    pub const RETURN: u32 = 0xff0d;
    pub const LEFT: u32 = 0xff51;
    pub const UP: u32 = 0xff52;
    pub const DOWN: u32 = 0xff54;
}

/// One key event the recorder saw: pressed or released, and the keysyms of its keycode.
#[derive(Debug, Clone)]
struct KeyEvent {
    pressed: bool,
    keysyms: Vec<u32>,
}

/// An X client with a focused full-screen window that records every key event it gets.
struct Recorder {
    events: Arc<Mutex<Vec<KeyEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type KeyTable = Vec<Vec<u32>>;

fn keyboard_table(conn: &impl x11rb::connection::Connection) -> KeyTable {
    let setup = conn.setup();
    let (min, max) = (setup.min_keycode, setup.max_keycode);
    let reply = conn
        .get_keyboard_mapping(min, max - min + 1)
        .unwrap()
        .reply()
        .unwrap();
    let per = usize::from(reply.keysyms_per_keycode.max(1));
    let mut table = vec![Vec::new(); 256];
    for (i, syms) in reply.keysyms.chunks(per).enumerate() {
        let code = usize::from(min) + i;
        if code < 256 {
            table[code] = syms.iter().copied().filter(|&s| s != 0).collect();
        }
    }
    table
}

impl Recorder {
    fn start(display: &str) -> Self {
        let (conn, screen_num) = x11rb::connect(Some(display)).expect("connect to Xvfb");
        let screen = conn.setup().roots[screen_num].clone();
        let win = conn.generate_id().unwrap();
        conn.create_window(
            x11rb::COPY_DEPTH_FROM_PARENT,
            win,
            screen.root,
            0,
            0,
            screen.width_in_pixels,
            screen.height_in_pixels,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new().event_mask(EventMask::KEY_PRESS | EventMask::KEY_RELEASE),
        )
        .unwrap();
        conn.map_window(win).unwrap();
        conn.flush().unwrap();
        let started = Instant::now();
        while conn
            .get_window_attributes(win)
            .unwrap()
            .reply()
            .unwrap()
            .map_state
            != MapState::VIEWABLE
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "window not mapped"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        conn.set_input_focus(InputFocus::PARENT, win, x11rb::CURRENT_TIME)
            .unwrap();
        conn.sync().unwrap();
        let mut table = keyboard_table(&conn);
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (events, stop) = (events.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(event) = conn.poll_for_event().expect("X connection") else {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    };
                    let (pressed, code) = match event {
                        Event::KeyPress(e) => (true, e.detail),
                        Event::KeyRelease(e) => (false, e.detail),
                        // The injector may bind a keysym to a spare keycode: read the new mapping
                        // before the key events that follow it.
                        Event::MappingNotify(_) => {
                            table = keyboard_table(&conn);
                            continue;
                        }
                        _ => continue,
                    };
                    let keysyms = table[usize::from(code)].clone();
                    events.lock().unwrap().push(KeyEvent { pressed, keysyms });
                }
            })
        };
        Self {
            events,
            stop,
            thread: Some(thread),
        }
    }

    fn events(&self) -> Vec<KeyEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The events whose keysym is one of `keysyms`, as (pressed, keysym).
    fn of(&self, keysyms: &[u32]) -> Vec<(bool, u32)> {
        self.events()
            .iter()
            .filter_map(|e| {
                keysyms
                    .iter()
                    .find(|&&k| e.keysyms.contains(&k))
                    .map(|&k| (e.pressed, k))
            })
            .collect()
    }

    /// Waits (up to 10 s) until `n` events with one of `keysyms` were recorded.
    async fn wait_for(&self, keysyms: &[u32], n: usize) -> Vec<(bool, u32)> {
        let started = Instant::now();
        loop {
            let got = self.of(keysyms);
            if got.len() >= n {
                return got;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "waited 10 s for {n} key events of {keysyms:x?}, got {got:x?} (all: {:?})",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pod streaming a fresh Xvfb, with the recorder's window focused on it.
struct Setup {
    served: Served,
    recorder: Recorder,
    _xvfb: Xvfb,
}

impl Setup {
    fn start(extra: &[&str]) -> Self {
        let xvfb = Xvfb::start(320, 240);
        let recorder = Recorder::start(&xvfb.name());
        let mut args = vec![
            "pod",
            "--display",
            &xvfb.name(),
            "--size",
            "320x240",
            "--token",
            TOKEN,
            "--no-pin",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let served = Served::start(&args);
        Self {
            served,
            recorder,
            _xvfb: xvfb,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.served
            .origin()
            .trim_start_matches("http://")
            .parse()
            .expect("origin address")
    }

    fn ws_url(&self, path: &str) -> String {
        format!("ws://{}/play/{TOKEN}/{path}", self.addr())
    }

    async fn player(&self, n: u8) -> Ws {
        connect(&self.ws_url(&format!("input/{n}"))).await
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let (ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|err| panic!("input WebSocket {url}: {err}"));
    assert_eq!(response.status(), 101);
    ws
}

async fn send_bits(ws: &mut Ws, bits: u8) {
    ws.send(Message::Binary(vec![bits].into())).await.unwrap();
}

async fn send_json(ws: &mut Ws, json: &str) {
    ws.send(Message::text(json)).await.unwrap();
}

/// The next message within `within`, if any (pings are answered by the client).
async fn next_message(ws: &mut Ws, within: Duration) -> Option<Message> {
    match tokio::time::timeout(within, ws.next()).await {
        Ok(Some(Ok(msg))) => Some(msg),
        _ => None,
    }
}

/// The next text reply (skipping anything else) within 5 s.
async fn next_text(ws: &mut Ws) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_message(ws, left).await {
            // The seat comes first on every controller (`seat_of`); replies come after it.
            Some(Message::Text(t)) if t.starts_with(r#"{"seat":"#) => {}
            Some(Message::Text(t)) => return t.to_string(),
            Some(_) => {}
            None => panic!("no text reply within 5 s"),
        }
    }
}

/// The seat a controller is told first: 32 hex digits, its page's proof that it holds the
/// player's controls.
async fn seat_of(ws: &mut Ws) -> String {
    let first = next_message(ws, Duration::from_secs(5))
        .await
        .expect("a first message on a controller");
    let Message::Text(text) = first else {
        panic!("the first message is not the seat: {first:?}");
    };
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let seat = v["seat"].as_str().unwrap_or_else(|| panic!("{text}"));
    assert!(
        seat.len() == 32 && seat.chars().all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
    seat.to_owned()
}

/// Reads until the server closes the socket; returns its close frame.
async fn close_frame(ws: &mut Ws) -> Option<CloseFrame> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return None,
            Err(_) => panic!("the server did not close the socket within 10 s"),
        }
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The status and body of a WebSocket upgrade request for `path`.
async fn upgrade_request(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    )
    .await
}

/// Sends `request` and reads one response: up to its Content-Length, or to the end.
async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
        let mut buf = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn readyz_players(addr: SocketAddr) -> i64 {
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["players"].as_i64().unwrap()
}

/// Waits (up to 5 s) for /readyz to count `n` players.
async fn wait_players(addr: SocketAddr, n: i64) {
    let started = Instant::now();
    while readyz_players(addr).await != n {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "/readyz does not count {n} players"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a metric line starting with `prefix` in /metrics.
async fn metric(addr: SocketAddr, prefix: &str) -> f64 {
    let (_, text) = http_get(addr, "/metrics").await;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_players_in_parallel_then_released_on_disconnect() {
    let setup = Setup::start(&[]);
    let addr = setup.addr();
    let (mut p1, mut p2) = tokio::join!(setup.player(1), setup.player(2));
    wait_players(addr, 2).await;

    // Both players at once, each mixing the JSON and binary forms.
    let one = async {
        send_json(&mut p1, r#"{"up":true}"#).await;
        send_bits(&mut p1, 0b0001_0001).await; // up + a
        send_json(&mut p1, r#"{"up":false,"a":true,"b":false}"#).await;
        send_bits(&mut p1, 0).await;
    };
    let two = async {
        send_bits(&mut p2, 0b0000_0010).await; // down
        send_json(&mut p2, r#"{"left":true}"#).await;
        send_bits(&mut p2, 0b0000_0100).await; // left only
        send_json(
            &mut p2,
            r#"{"up":false,"down":false,"left":false,"right":false,"a":false,"b":false,"start":false,"select":false}"#,
        )
        .await;
    };
    tokio::join!(one, two);
    let rec = &setup.recorder;
    let p1_events = rec.wait_for(&[sym::W, sym::F], 4).await;
    let p2_events = rec.wait_for(&[sym::DOWN, sym::LEFT], 4).await;
    assert_eq!(
        p1_events,
        [
            (true, sym::W),
            (true, sym::F),
            (false, sym::W),
            (false, sym::F)
        ],
        "player 1's events in order"
    );
    assert_eq!(
        p2_events,
        [
            (true, sym::DOWN),
            (true, sym::LEFT),
            (false, sym::DOWN),
            (false, sym::LEFT)
        ],
        "player 2's events in order"
    );

    // Keys held when a player goes are released: player 1 vanishes without a close frame,
    // player 2 closes politely.
    send_json(&mut p1, r#"{"up":true,"b":true}"#).await;
    send_bits(&mut p2, 0b0010_0001).await; // up + b for player 2: Up, L
    rec.wait_for(&[sym::W, sym::G], 4).await;
    rec.wait_for(&[sym::UP], 1).await;
    drop(p1);
    p2.close(None).await.unwrap();
    let p1_tail = rec.wait_for(&[sym::W, sym::G], 6).await;
    assert_eq!(
        p1_tail[2..],
        [
            (true, sym::W),
            (true, sym::G),
            (false, sym::W),
            (false, sym::G)
        ]
    );
    let p2_up = rec.wait_for(&[sym::UP], 2).await;
    assert_eq!(p2_up, [(true, sym::UP), (false, sym::UP)]);
    wait_players(addr, 0).await;
    assert!(metric(addr, "playpod_input_messages_total").await >= 10.0);
    assert!(metric(addr, "playpod_input_latency_seconds_count").await >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_whose_network_is_gone_is_released_after_the_input_timeout() {
    let setup = Setup::start(&["--input-timeout", "1"]);
    let addr = setup.addr();
    let (mut gone, mut alive) = tokio::join!(setup.player(1), setup.player(2));
    wait_players(addr, 2).await;
    send_bits(&mut gone, 0b0000_0001).await; // up: W
    send_bits(&mut alive, 0b0000_0010).await; // down: Down
    let rec = &setup.recorder;
    rec.wait_for(&[sym::W], 1).await;
    rec.wait_for(&[sym::DOWN], 1).await;
    // Player 1's network is gone: its socket stays open, but nothing reads it, so the pod's
    // pings go unanswered. Player 2 holds its key and says nothing either, but its client
    // answers the pings, for three times the timeout.
    let quiet = Instant::now();
    let mut pings = 0;
    while quiet.elapsed() < Duration::from_secs(3) {
        if let Some(Message::Ping(_)) = next_message(&mut alive, Duration::from_millis(100)).await {
            pings += 1;
        }
    }
    assert!(pings >= 3, "a quiet player is pinged: {pings} pings in 3 s");
    assert_eq!(
        rec.of(&[sym::W]),
        [(true, sym::W), (false, sym::W)],
        "the silent player's key was released"
    );
    assert_eq!(
        rec.of(&[sym::DOWN]),
        [(true, sym::DOWN)],
        "a player that answers pings keeps its key, however long it says nothing"
    );
    assert_eq!(
        metric(addr, "playpod_input_silent_disconnects_total").await,
        1.0
    );
    // The freed slot takes a new connection at once (the page reconnecting).
    let _again = setup.player(1).await;
    wait_players(addr, 2).await;
    send_bits(&mut alive, 0).await;
    rec.wait_for(&[sym::DOWN], 2).await;
}

/// A pod stopped and continued (SIGSTOP and SIGCONT: a debugger, a frozen container, a node
/// under memory pressure) keeps its players and their keys: the continue interrupts the player
/// threads' reads, which must be taken up again, not taken for the end of the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stopped_and_continued_keeps_its_players() {
    let setup = Setup::start(&[]);
    let addr = setup.addr();
    let (mut p1, mut p2) = tokio::join!(setup.player(1), setup.player(2));
    wait_players(addr, 2).await;
    send_bits(&mut p1, 0b0000_0001).await; // up: W
    let rec = &setup.recorder;
    rec.wait_for(&[sym::W], 1).await;
    let pid = setup.served.child.id();
    for _ in 0..3 {
        playpod_tests::signal(pid, "-STOP");
        tokio::time::sleep(Duration::from_millis(200)).await;
        playpod_tests::signal(pid, "-CONT");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(readyz_players(addr).await, 2, "a player was dropped");
    assert_eq!(
        rec.of(&[sym::W]),
        [(true, sym::W)],
        "the held key was released"
    );
    send_bits(&mut p1, 0).await;
    send_bits(&mut p2, 0b0000_0010).await; // down: Down
    assert_eq!(
        rec.wait_for(&[sym::W], 2).await,
        [(true, sym::W), (false, sym::W)]
    );
    rec.wait_for(&[sym::DOWN], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_controller_per_slot_and_takeover_releases_the_old_keys() {
    let setup = Setup::start(&[]);
    let addr = setup.addr();
    let rec = &setup.recorder;
    let mut first = setup.player(1).await;
    let first_seat = seat_of(&mut first).await;
    send_bits(&mut first, 0b0000_0001).await; // up
    rec.wait_for(&[sym::W], 1).await;

    // A second controller is refused, with the reason and no seat, and the first keeps playing.
    let mut second = setup.player(1).await;
    let Some(Message::Close(Some(frame))) =
        next_message(&mut second, Duration::from_secs(10)).await
    else {
        panic!("the refused connection got something before its close frame");
    };
    assert_eq!(u16::from(frame.code), 4001, "{frame:?}");
    assert!(
        frame.reason.contains("player 1 is already connected")
            && frame.reason.contains("takeover=1"),
        "{frame:?}"
    );
    send_bits(&mut first, 0b0001_0001).await; // up + a
    rec.wait_for(&[sym::F], 1).await;

    // A takeover shuts the first one down, releases its keys, then plays.
    let mut third = connect(&setup.ws_url("input/1?takeover=1")).await;
    let frame = close_frame(&mut first)
        .await
        .expect("a close frame for the replaced connection");
    assert_eq!(u16::from(frame.code), 4002, "{frame:?}");
    assert!(frame.reason.contains("taken over"), "{frame:?}");
    // A seat of its own; player 2's is another.
    let third_seat = seat_of(&mut third).await;
    assert_ne!(third_seat, first_seat);
    let mut other = setup.player(2).await;
    assert!(![&first_seat, &third_seat].contains(&&seat_of(&mut other).await));
    other.close(None).await.unwrap();
    send_bits(&mut third, 0b0010_0000).await; // b
    let events = rec.wait_for(&[sym::W, sym::F, sym::G], 5).await;
    assert_eq!(
        events,
        [
            (true, sym::W),
            (true, sym::F),
            (false, sym::W),
            (false, sym::F),
            (true, sym::G)
        ],
        "the old controller's keys are released before the new one's land"
    );
    wait_players(addr, 1).await;
    assert_eq!(metric(addr, "playpod_input_refused_total").await, 1.0);
    assert_eq!(metric(addr, "playpod_input_takeovers_total").await, 1.0);
    third.close(None).await.unwrap();
    rec.wait_for(&[sym::G], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_answered_and_floods_are_limited() {
    let setup = Setup::start(&["--input-rate", "20"]);
    let addr = setup.addr();
    let rec = &setup.recorder;
    let mut p = setup.player(2).await;

    for (bad, names) in [
        (Message::text(r#"{"up":tru}"#), ""),
        (Message::text(r#"{"jump":true}"#), "jump"),
        (Message::text(r#"{"up":1}"#), "up"),
        (Message::Binary(vec![1, 2].into()), ""),
        (Message::Binary(vec![0u8; 2000].into()), ""),
    ] {
        let shown = format!("{bad:?}");
        p.send(bad).await.unwrap();
        let reply = next_text(&mut p).await;
        let v: serde_json::Value = serde_json::from_str(&reply)
            .unwrap_or_else(|err| panic!("reply {reply:?} to {shown} is not JSON: {err}"));
        let error = v["error"].as_str().unwrap_or_else(|| panic!("{reply}"));
        assert!(
            !error.is_empty() && error.contains(names),
            "{shown}: {reply}"
        );
    }
    // The binary form works, and none of the above pressed anything.
    send_bits(&mut p, 0b0001_0000).await; // a: K
    let events = rec.wait_for(&[sym::K], 1).await;
    assert_eq!(events, [(true, sym::K)]);
    assert_eq!(
        rec.events().len(),
        1,
        "invalid messages changed keys: {:?}",
        rec.events()
    );
    assert!(metric(addr, "playpod_input_errors_total{kind=\"invalid\"}").await >= 5.0);

    // A flood far over 20 messages/s: the excess is dropped with a rate-limit error.
    let flood = 200;
    for i in 0..flood {
        send_bits(&mut p, if i % 2 == 0 { 0 } else { 0b0001_0000 }).await;
    }
    let mut limited = 0;
    while let Some(msg) = next_message(&mut p, Duration::from_millis(1500)).await {
        if let Message::Text(t) = msg {
            assert!(t.contains("rate limit"), "{t}");
            limited += 1;
        }
    }
    let accepted = flood - limited;
    assert!(
        (150..flood).contains(&limited),
        "{limited} of {flood} messages limited"
    );
    // Each accepted message toggled K at most once; no dropped one did.
    let k_events = rec.of(&[sym::K]).len() - 1;
    assert!(
        k_events <= accepted,
        "{k_events} K events from {accepted} accepted messages"
    );
    assert!(metric(addr, "playpod_input_errors_total{kind=\"rate_limit\"}").await >= 150.0);
    // Once the flood is over, messages pass again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send_bits(&mut p, 0b0000_0010).await; // down
    rec.wait_for(&[sym::DOWN], 1).await;
    assert!(
        next_message(&mut p, Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_messages_close_the_socket_and_leave_the_slot_usable() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let setup = Setup::start(&[]);
    let rec = &setup.recorder;

    // A text message that is not UTF-8: answered, then the connection fails (RFC 6455 8.1).
    let mut p = setup.player(1).await;
    let not_utf8 = Frame::message(&b"{\"up\":\xff}"[..], OpCode::Data(Data::Text), true);
    p.send(Message::Frame(not_utf8)).await.unwrap();
    let reply = next_text(&mut p).await;
    assert!(reply.contains("not valid UTF-8"), "{reply}");
    let close = close_frame(&mut p).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1007, "{close:?}");

    // The slot serves the next connection, which plays.
    let mut p = setup.player(1).await;
    send_bits(&mut p, 0b0000_0001).await; // up: W
    rec.wait_for(&[sym::W], 1).await;

    // Over the 64 KiB read limit: closed with 1009, keys released, and again the slot is fine.
    let _ = p
        .send(Message::Binary(vec![0u8; 64 * 1024 + 1].into()))
        .await;
    let close = close_frame(&mut p).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
    assert_eq!(
        rec.wait_for(&[sym::W], 2).await,
        [(true, sym::W), (false, sym::W)]
    );
    let mut p = setup.player(1).await;
    send_bits(&mut p, 0b0000_0001).await;
    assert_eq!(rec.wait_for(&[sym::W], 3).await[2], (true, sym::W));
    p.close(None).await.unwrap();
    rec.wait_for(&[sym::W], 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keymaps_tokens_and_a_port_per_player() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let setup = Setup::start(&[
        "--keymap-1",
        "up=i,a=Return,start=0xff8d",
        "--input-port-2",
        &port.to_string(),
    ]);
    let addr = setup.addr();
    let rec = &setup.recorder;

    // The keymap flag changes what player 1's keys press.
    let mut p1 = setup.player(1).await;
    send_json(&mut p1, r#"{"up":true,"a":true}"#).await;
    let events = rec
        .wait_for(&[sym::I, sym::RETURN, sym::W, sym::F], 2)
        .await;
    assert_eq!(events, [(true, sym::I), (true, sym::RETURN)]);

    // A wrong token, a wrong player or a wrong path answers like any unknown path.
    let unknown = upgrade_request(addr, "/no/such/path").await;
    assert_eq!(unknown, (404, "not found\n".to_owned()));
    let mut wrong = TOKEN.to_owned().into_bytes();
    wrong[0] ^= 1;
    let wrong = String::from_utf8(wrong).unwrap();
    for path in [
        format!("/play/{wrong}/input/1"),
        format!("/play/{TOKEN}x/input/1"),
        format!("/play/{TOKEN}/input/3"),
        format!("/play/{TOKEN}/input/0"),
        format!("/play/{TOKEN}/input/1/x"),
    ] {
        assert_eq!(upgrade_request(addr, &path).await, unknown, "{path}");
    }
    // Not an upgrade: a clear 400.
    let (status, body) = http_get(addr, &format!("/play/{TOKEN}/input/1")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("WebSocket"), "{body}");

    // Player 2 on its own port, through the same slot.
    let port_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Requests that are no handshake get the main port's answer, not a closed connection.
    let path = format!("/play/{TOKEN}/input/2");
    assert_eq!(
        http_get(port_addr, &path).await,
        http_get(addr, &path).await
    );
    let (status, body) = http_request(
        port_addr,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (405, "only GET opens a WebSocket\n")
    );
    let (status, body) = http_request(port_addr, "\x16\x03\x01 not http\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (400, "malformed HTTP request\n"));
    assert_eq!(
        upgrade_request(port_addr, &format!("/play/{wrong}/input/2")).await,
        unknown
    );
    assert_eq!(
        upgrade_request(port_addr, &format!("/play/{TOKEN}/input/1")).await,
        unknown,
        "player 1 is not served on player 2's port"
    );
    let mut p2 = connect(&format!("ws://{port_addr}/play/{TOKEN}/input/2")).await;
    send_bits(&mut p2, 0b0000_0001).await;
    rec.wait_for(&[sym::UP], 1).await;
    // The main port's /input/2 now finds the slot taken.
    let mut again = setup.player(2).await;
    let frame = close_frame(&mut again).await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4001, "{frame:?}");
    wait_players(addr, 2).await;
    drop(p2);
    rec.wait_for(&[sym::UP], 2).await;
    p1.close(None).await.unwrap();
    let all = rec.wait_for(&[sym::I, sym::RETURN], 4).await;
    assert_eq!(all[2..], [(false, sym::I), (false, sym::RETURN)]);
    wait_players(addr, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_nothing_do_not_hold_up_a_players_own_port() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let setup = Setup::start(&["--input-port-1", &port.to_string()]);
    let port_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Connections that never send their request (a scanner, a stalled client, on purpose or
    // not): the player still gets in at once.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(port_addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let url = format!("ws://{port_addr}/play/{TOKEN}/input/1");
    let mut p1 = tokio::time::timeout(Duration::from_secs(3), connect(&url))
        .await
        .unwrap_or_else(|_| panic!("no handshake within 3 s behind idle connections"));
    eprintln!("player 1 in after {:?}", started.elapsed());
    send_bits(&mut p1, 0b0000_0001).await; // up: W
    setup.recorder.wait_for(&[sym::W], 1).await;
    drop(idle);
    p1.close(None).await.unwrap();
    setup.recorder.wait_for(&[sym::W], 2).await;
}

#[test]
fn a_display_without_xtest_closes_the_socket_with_the_reason() {
    // Video through a real Xvfb started without XTEST: the pod serves, and each input
    // connection is closed with 4003 and a reason naming the display and what it lacks.
    let xvfb = Xvfb::start_with(320, 240, &["-extension", "XTEST"]);
    let served = Served::start_owned(&xvfb.pod_args(&["--token", TOKEN, "--no-pin"]));
    let url = served.url.replacen("http://", "ws://", 1) + "input/1";
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut ws = connect(&url).await;
            let frame = close_frame(&mut ws).await.expect("close frame");
            assert_eq!(u16::from(frame.code), 4003, "{frame:?}");
            assert!(frame.reason.contains(&xvfb.name()), "{frame:?}");
            assert!(frame.reason.contains("XTEST"), "{frame:?}");
        });
}

#[test]
fn a_pod_on_an_unreachable_display_fails_clearly() {
    // The display is the game: without it the pod does not start (keys could not reach it),
    // even with a readable framebuffer.
    let xvfb = Xvfb::start(320, 240);
    let fb = xvfb.framebuffer();
    let err = playpod_tests::playpod_fails(&[
        "pod",
        "--display",
        ":999",
        "--framebuffer",
        fb.to_str().unwrap(),
        "--size",
        "320x240",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("cannot connect to X display :999"), "{err}");
}

#[test]
fn the_input_socket_is_handed_off_over_https_too() {
    // With TLS the player's thread takes the TLS session over from tokio with the socket: the
    // upgrade answers 101 and the slot counts a player while the client stays connected.
    assert!(playpod_tests::have("curl"), "curl is needed for this test");
    let xvfb = Xvfb::start(320, 240);
    let fb = xvfb.framebuffer();
    let served = Served::start(&[
        "pod",
        "--display",
        &xvfb.name(),
        "--framebuffer",
        fb.to_str().unwrap(),
        "--size",
        "320x240",
        "--token",
        TOKEN,
        "--no-pin",
        "--tls-self-signed",
    ]);
    assert!(served.url.starts_with("https://"), "{}", served.url);
    let curl = |extra: &[&str], url: String| {
        std::process::Command::new("curl")
            .args(["-sk", "--http1.1"])
            .args(extra)
            .arg(url)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl")
    };
    let upgrade = curl(
        &[
            "-i",
            "--max-time",
            "4",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
        format!("{}input/1", served.url),
    );
    let origin = served.url.split("/play/").next().unwrap().to_owned();
    let started = Instant::now();
    let mut players = None;
    while started.elapsed() < Duration::from_secs(3) {
        let out = curl(&[], format!("{origin}/readyz"))
            .wait_with_output()
            .expect("curl /readyz");
        let ready: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        players = ready["players"].as_i64();
        if players == Some(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = upgrade.wait_with_output().expect("curl upgrade");
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the accept key of RFC 6455's example: {head}"
    );
    assert_eq!(
        players,
        Some(1),
        "/readyz did not count the player connected over HTTPS"
    );
}
