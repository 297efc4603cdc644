//! The session server over a real socket: WebSocket viewers, tokens, many viewers at once, a
//! stalled viewer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use playpod::cli::{Cli, Command, StreamArgs};
use playpod::server::AppState;
use playpod::session::{self, Session};
use playpod_hotpath::h264;
use playpod_tests::MovingPattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Running {
    addr: SocketAddr,
    state: std::sync::Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn stream_args(size: &str, bitrate_kbps: u32) -> StreamArgs {
    let cli = Cli::try_parse_from([
        "playpod",
        "pod",
        "--display",
        ":0",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--size",
        size,
        "--no-pin",
        "--bitrate-kbps",
        &bitrate_kbps.to_string(),
    ])
    .unwrap();
    match cli.command {
        Command::Pod(pod) => pod.stream,
        _ => unreachable!(),
    }
}

async fn start(size: (u32, u32)) -> Running {
    start_with(MovingPattern::new(size.0, size.1), size, 2500).await
}

async fn start_with(source: MovingPattern, size: (u32, u32), bitrate_kbps: u32) -> Running {
    let args = stream_args(&format!("{}x{}", size.0, size.1), bitrate_kbps);
    let (listener, addr) = session::bind(args.listen).unwrap();
    let session = Session::start(Box::new(source), &args).unwrap();
    let state = session.state.clone();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        session::serve(session, listener, None, async {
            let _ = rx.await;
        })
        .await
    });
    // The server is spawned: wait until it accepts.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        addr,
        state,
        stop: Some(tx),
        task,
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with_headers(addr, path).await;
    (status, body)
}

/// Status, header lines (names lower-cased) and body.
async fn http_get_with_headers(addr: SocketAddr, path: &str) -> (u16, Vec<String>, String) {
    http_request(addr, "GET", path).await
}

async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<String>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let headers = head
        .lines()
        .skip(1)
        .map(|l| match l.split_once(':') {
            Some((name, value)) => format!("{}:{}", name.to_ascii_lowercase(), value),
            None => l.to_owned(),
        })
        .collect();
    (status, headers, body.to_owned())
}

fn header_value<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn viewer(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/play/{TOKEN}/video"))
        .await
        .expect("video WebSocket");
    ws
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message within 5 s")
        .expect("stream open")
        .expect("valid message")
}

struct Header {
    kind: u8,
    key: bool,
    seq: u32,
    capture_us: u64,
}

async fn next_or_end(
    ws: &mut Ws,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message or the end within 5 s")
}

fn header(b: &[u8]) -> Header {
    assert!(b.len() > 16);
    assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0, "reserved is zero");
    Header {
        kind: b[0],
        key: b[1] & 1 == 1,
        seq: u32::from_le_bytes(b[4..8].try_into().unwrap()),
        capture_us: u64::from_le_bytes(b[8..16].try_into().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_gets_config_then_a_keyframe_with_parameter_sets() {
    let server = start((320, 240)).await;
    let mut ws = viewer(server.addr).await;
    let Message::Text(config) = next(&mut ws).await else {
        panic!("the first message is the JSON config");
    };
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["width"], 320);
    assert_eq!(config["height"], 240);
    assert_eq!(config["fps"], 60);
    let codec = config["codec"].as_str().unwrap();
    assert!(codec.starts_with("avc1.42"), "{codec}");
    let mut last_seq = None;
    for n in 0..30 {
        let Message::Binary(b) = next(&mut ws).await else {
            panic!("binary media messages after the config");
        };
        let h = header(&b);
        assert_eq!(h.kind, 1);
        let now = playpod_hotpath::pipeline::unix_micros();
        assert!(
            h.capture_us <= now && now - h.capture_us < 5_000_000,
            "capture time is recent"
        );
        let info = h264::inspect(&b[16..]);
        if n == 0 {
            assert!(h.key, "the first video message is a keyframe");
            assert!(info.sps && info.pps && info.idr, "with SPS and PPS");
            assert_eq!(
                h264::codec_string(&b[16..]).as_deref(),
                Some(codec),
                "config codec is the SPS's"
            );
        } else {
            assert_eq!(h.key, info.idr);
            assert_eq!(
                h.seq,
                last_seq.unwrap() + 1,
                "no gaps for a viewer that keeps up"
            );
        }
        last_seq = Some(h.seq);
    }
    // A viewer closing gets the pod's close frame back: a clean close, not a dropped one.
    ws.close(None).await.unwrap();
    loop {
        match next_or_end(&mut ws).await {
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(_)) => continue,
            other => panic!("the pod did not answer the close frame: {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_indistinguishable_from_an_unknown_path() {
    let server = start((64, 64)).await;
    let unknown = http_get(server.addr, "/no/such/path").await;
    assert_eq!(unknown.0, 404);
    for path in [
        "/play/0123456789abcdef0123456789abcdeX/",
        "/play/0123456789abcdef0123456789abcdeX/video",
        "/play/0123456789abcdef0123456789abcdeX/player.js",
        "/play/short/",
        "/play/",
        &format!("/play/{TOKEN}/no-such-file"),
        // Escapes that decode to no UTF-8 text: no token, no file of ours.
        "/play/%ff%fe/",
        "/play/%ff",
        "/play/%C3%28/video",
        "/play/%ff/audio",
        "/play/%ff/input/1",
        &format!("/play/{TOKEN}/%ff"),
        &format!("/play/{TOKEN}/input/%ff"),
    ] {
        assert_eq!(http_get(server.addr, path).await, unknown, "{path}");
    }
    // Another method: the same answer whatever the token, right or wrong.
    for path in [
        "/play/0123456789abcdef0123456789abcdeX/".to_owned(),
        format!("/play/{TOKEN}/"),
        format!("/play/{TOKEN}/video"),
        "/nothing".to_owned(),
    ] {
        let (status, _, body) = http_request(server.addr, "POST", &path).await;
        assert_eq!((status, body), unknown, "POST {path}");
    }
    let err = tokio_tungstenite::connect_async(format!(
        "ws://{}/play/0123456789abcdef0123456789abcdeX/video",
        server.addr
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    // The right token works, and redirects to the slash form.
    let (status, body) = http_get(server.addr, &format!("/play/{TOKEN}/")).await;
    assert_eq!(status, 200);
    assert!(body.contains("player.js"));
    assert_eq!(
        http_get(server.addr, &format!("/play/{TOKEN}")).await.0,
        308
    );
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    let (status, ready) = http_get(server.addr, "/readyz").await;
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["encoder"], "openh264");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_keeps_its_query_through_the_redirect_and_limits_what_it_loads() {
    let server = start((64, 64)).await;
    // A link without the trailing slash still makes its reader player 1.
    let (status, headers, _) =
        http_get_with_headers(server.addr, &format!("/play/{TOKEN}?player=1&overlay=0")).await;
    assert_eq!(status, 308);
    assert_eq!(
        header_value(&headers, "location"),
        Some(format!("/play/{TOKEN}/?player=1&overlay=0").as_str())
    );
    let (status, headers, _) = http_get_with_headers(server.addr, &format!("/play/{TOKEN}")).await;
    assert_eq!(status, 308);
    assert_eq!(
        header_value(&headers, "location"),
        Some(format!("/play/{TOKEN}/").as_str())
    );
    // A wrong token with a query is still just not found.
    let (status, headers, _) = http_get_with_headers(
        server.addr,
        "/play/0123456789abcdef0123456789abcdeX?player=1",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(header_value(&headers, "location"), None);
    // The page and its files: their own origin only, never framed, the token never sent on.
    for file in ["", "player.js", "audio-worklet.js", "player.css"] {
        let (status, headers, _) =
            http_get_with_headers(server.addr, &format!("/play/{TOKEN}/{file}")).await;
        assert_eq!(status, 200, "{file}");
        let csp = header_value(&headers, "content-security-policy")
            .unwrap_or_else(|| panic!("{file}: no Content-Security-Policy in {headers:?}"));
        for directive in [
            "default-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{file}: {directive} missing in {csp}"
            );
        }
        assert!(!csp.contains("unsafe"), "{file}: {csp}");
        assert_eq!(
            header_value(&headers, "referrer-policy"),
            Some("no-referrer"),
            "{file}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_asking_for_keyframes_all_the_time_gets_about_one_a_second() {
    let server = start((320, 240)).await;
    let mut ws = viewer(server.addr).await;
    let Message::Text(_) = next(&mut ws).await else {
        panic!("the config first");
    };
    let Message::Binary(first) = next(&mut ws).await else {
        panic!("then media");
    };
    assert!(header(&first).key, "a new viewer's first frame is an IDR");
    // A few frames, none of them IDRs: nobody asked.
    for _ in 0..10 {
        let Message::Binary(b) = next(&mut ws).await else {
            panic!("media");
        };
        assert!(!header(&b).key, "an IDR nobody asked for");
    }
    // Now ask after every frame, as a page whose decoder fails on every frame would.
    let started = std::time::Instant::now();
    let mut keyframes = 0u32;
    let mut frames = 0u32;
    while frames < 120 {
        ws.send(Message::Text("keyframe".into())).await.unwrap();
        let Message::Binary(b) = next(&mut ws).await else {
            continue;
        };
        frames += 1;
        keyframes += u32::from(header(&b).key);
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!(keyframes >= 1, "the first request is honoured");
    // Unpaced, nearly every one of the 120 frames would be an IDR.
    assert!(
        f64::from(keyframes) <= seconds + 2.0,
        "{keyframes} IDRs in {frames} frames over {seconds:.1} s: at most about one a second"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_viewers_at_once_all_receive_frames() {
    let server = start((320, 240)).await;
    let mut viewers = Vec::new();
    for _ in 0..20 {
        viewers.push(viewer(server.addr).await);
    }
    // All twenty are served at once.
    for _ in 0..250 {
        if server.state.health.viewers.load(Ordering::Relaxed) == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.state.health.viewers.load(Ordering::Relaxed), 20);
    let tasks: Vec<_> = viewers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                assert!(matches!(next(&mut ws).await, Message::Text(_)));
                let mut seqs = Vec::new();
                for n in 0..60 {
                    let Message::Binary(b) = next(&mut ws).await else {
                        panic!()
                    };
                    let h = header(&b);
                    if n == 0 {
                        assert!(h.key, "first frame is a keyframe");
                    }
                    seqs.push(h.seq);
                }
                seqs
            })
        })
        .collect();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "in order");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_delays_neither_the_encoder_nor_other_viewers() {
    // Noise at 40 Mbit/s: about 80 KB a frame, so the stalled viewer's socket buffers fill
    // within a second or two and it falls behind the ring.
    let size = (640, 480);
    let server = start_with(
        MovingPattern::new(size.0, size.1).with_noise(),
        size,
        40_000,
    )
    .await;
    // A viewer that connects and then never reads: its socket buffers fill up.
    let stalled = viewer(server.addr).await;
    let mut healthy = viewer(server.addr).await;
    assert!(matches!(next(&mut healthy).await, Message::Text(_)));
    let before = server.state.ring.published();
    let mut last = None;
    // 4 s at 60 fps: long enough to fill the stalled viewer's buffers many times over.
    let mut bytes = 0;
    for _ in 0..240 {
        let Message::Binary(b) = next(&mut healthy).await else {
            panic!()
        };
        bytes += b.len();
        let h = header(&b);
        if let Some(last) = last {
            assert_eq!(h.seq, last + 1, "the healthy viewer misses nothing");
        }
        last = Some(h.seq);
    }
    let published = server.state.ring.published() - before;
    // The healthy viewer's 240 frames were all published after `before` (give or take the one
    // in flight): the encoder never waited for the stalled viewer.
    assert!(
        published >= 239,
        "the encoder kept going ({published} frames)"
    );
    assert!(bytes > 8_000_000, "large frames: {bytes} bytes in 240");
    // The stalled viewer really stalled: its sends stopped long before the healthy one's.
    let sent_to_stalled = server
        .state
        .health
        .frames_sent
        .load(Ordering::Relaxed)
        .saturating_sub(240);
    assert!(
        sent_to_stalled < 200,
        "the stalled viewer took {sent_to_stalled} frames"
    );
    drop(stalled);
    server.stop().await;
}
