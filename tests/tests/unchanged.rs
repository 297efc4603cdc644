//! Unchanged screens cost next to nothing: with a real Xvfb and its DAMAGE extension, ticks on
//! which nothing was drawn neither read the screen nor encode, and still no drawing is left out
//! of the stream; `playpod pod` under a paused game sends a frame a second, not sixty.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use playpod::display::DisplayWatch;
use playpod_hotpath::capture::{CaptureError, FrameSource, FramebufferFile};
use playpod_hotpath::convert::BgrxFrame;
use playpod_hotpath::encode::{EncoderSettings, Openh264Encoder};
use playpod_hotpath::pipeline::{FrameStage, Pipeline, PipelineConfig, Unchanged, unix_micros};
use playpod_hotpath::ring::ReadOutcome;
use playpod_tests::{Served, Xvfb, ffmpeg_decode, start_game};
use tokio_tungstenite::tungstenite::Message;
use x11rb::connection::Connection as _;
use x11rb::protocol::xproto::{
    ChangeGCAux, ConnectionExt as _, CoordMode, CreateGCAux, Point, Rectangle,
};

const W: u32 = 320;
const H: u32 = 240;

/// The framebuffer, read in place, noting the colour at the top-left corner of each read.
struct Watched {
    inner: FramebufferFile,
    last_read: Arc<AtomicU32>,
    reads: Arc<AtomicU64>,
}

impl FrameSource for Watched {
    fn kind(&self) -> &'static str {
        "fbdir"
    }

    fn grab(&mut self) -> Result<BgrxFrame<'_>, CaptureError> {
        let frame = self.inner.grab()?;
        let px = &frame.bytes[..4];
        let rgb = u32::from(px[2]) << 16 | u32::from(px[1]) << 8 | u32::from(px[0]);
        self.last_read.store(rgb, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(frame)
    }
}

/// Round `k`'s colour, 0xRRGGBB; no two rounds alike.
fn colour(k: u32) -> u32 {
    ((k * 53 + 40) % 256) << 16 | ((k * 97 + 20) % 256) << 8 | ((k * 29 + 60) % 256)
}

/// A frame stage over `source`, W x H at 60 fps and 500 kbit/s, with its ring and statistics.
fn stage_over(
    source: Box<dyn FrameSource>,
) -> (
    FrameStage,
    playpod_hotpath::ring::Ring,
    Arc<playpod_hotpath::stats::PipelineStats>,
) {
    let settings = EncoderSettings {
        width: W,
        height: H,
        fps: 60,
        bitrate_bps: 500_000,
    };
    FrameStage::with_ring(
        source,
        Box::new(Openh264Encoder::new(settings).unwrap()),
        settings,
    )
}

/// Fills the whole screen with `rgb` (the request is sent, not waited for).
fn fill_screen(conn: &impl x11rb::connection::Connection, root: u32, gc: u32, rgb: u32) {
    conn.change_gc(gc, &ChangeGCAux::new().foreground(rgb))
        .unwrap();
    let all = Rectangle {
        x: 0,
        y: 0,
        width: W as u16,
        height: H as u16,
    };
    conn.poly_fill_rectangle(root, gc, &[all]).unwrap();
}

#[test]
fn every_drawing_reaches_the_stream_and_idle_ticks_read_nothing() {
    const ROUNDS: u32 = 40;
    const SETTLE: u32 = 2;
    let xvfb = Xvfb::start(W, H);
    let watch = DisplayWatch::start(&xvfb.name(), true).expect("watch the display");
    let changes = watch.screen_changes().expect("Xvfb has DAMAGE");

    let last_read = Arc::new(AtomicU32::new(u32::MAX));
    let reads = Arc::new(AtomicU64::new(0));
    let source = Watched {
        inner: FramebufferFile::open(&xvfb.framebuffer(), W, H).unwrap(),
        last_read: last_read.clone(),
        reads: reads.clone(),
    };
    let (stage, ring, stats) = stage_over(Box::new(source));
    // No refresh frames: every frame after the settling ones must come from damage.
    let mut stage = stage
        .skip_unchanged(Unchanged {
            settle_frames: SETTLE,
            refresh_ticks: u32::MAX,
        })
        .with_screen_changes(changes);
    let mut reader = ring.subscribe().unwrap();
    let mut stream = Vec::new();
    let mut tick = |stream: &mut Vec<u8>| {
        stage.tick(Instant::now(), unix_micros()).expect("tick");
        while let ReadOutcome::Frame(_) = reader.try_read(stream) {}
    };

    // The drawer: fills the screen with round k's colour at a random moment against the
    // ticks, and says so once the server has drawn it.
    let drawn = Arc::new(AtomicU32::new(0));
    let (next_tx, next_rx) = std::sync::mpsc::channel::<()>();
    let drawer = {
        let (display, drawn) = (xvfb.name(), drawn.clone());
        std::thread::spawn(move || {
            let (conn, screen) = x11rb::connect(Some(&display)).expect("connect");
            let root = conn.setup().roots[screen].root;
            let gc = conn.generate_id().unwrap();
            conn.create_gc(gc, root, &CreateGCAux::new()).unwrap();
            let mut seed = 0x9e37_79b9_u32;
            for k in 1..=ROUNDS {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                std::thread::sleep(Duration::from_micros(u64::from(seed % 8000)));
                fill_screen(&conn, root, gc, colour(k));
                conn.get_input_focus().unwrap().reply().unwrap();
                drawn.store(k, Ordering::Release);
                if next_rx.recv().is_err() {
                    return;
                }
            }
        })
    };

    let mut ticks = 0u64;
    for k in 1..=ROUNDS {
        // Tick (every 2 ms) until round k is drawn, then 20 ticks more.
        let started = Instant::now();
        while drawn.load(Ordering::Acquire) < k {
            assert!(started.elapsed() < Duration::from_secs(10), "round {k}");
            tick(&mut stream);
            ticks += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        let published = stats.frames_published.load(Ordering::Relaxed);
        for _ in 0..20 {
            tick(&mut stream);
            ticks += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            last_read.load(Ordering::Relaxed),
            colour(k),
            "round {k}: the last picture read is not the one drawn"
        );
        assert!(
            stats.frames_published.load(Ordering::Relaxed) > published,
            "round {k}: the drawing was not sent"
        );
        let _ = next_tx.send(());
    }
    drop(next_tx);
    drawer.join().unwrap();

    // Nothing drawn any more: once the settling frames are out, ticks read nothing.
    for _ in 0..=SETTLE {
        tick(&mut stream);
    }
    let (reads_idle, encoded_idle) = (
        reads.load(Ordering::Relaxed),
        stats.frames_encoded.load(Ordering::Relaxed),
    );
    for _ in 0..100 {
        tick(&mut stream);
        ticks += 1;
    }
    assert_eq!(
        reads.load(Ordering::Relaxed),
        reads_idle,
        "the screen was read with nothing drawn"
    );
    assert_eq!(
        stats.frames_encoded.load(Ordering::Relaxed),
        encoded_idle,
        "frames were encoded with nothing drawn"
    );
    let encoded = stats.frames_encoded.load(Ordering::Relaxed);
    println!(
        "{ticks} ticks: {} reads, {encoded} frames encoded, {} unchanged",
        reads.load(Ordering::Relaxed),
        stats.frames_unchanged.load(Ordering::Relaxed)
    );
    assert!(
        encoded < ticks / 4,
        "{encoded} frames for {ticks} ticks: the unchanged ones were encoded"
    );

    // An independent decoder shows the last colour drawn at the end of the stream.
    let decoded = ffmpeg_decode(stream, "rgb24");
    let size = (W * H * 3) as usize;
    assert_eq!(
        decoded.len() / size,
        encoded as usize,
        "every frame decodes"
    );
    let last = &decoded[decoded.len() - size..];
    let centre = ((H / 2 * W + W / 2) * 3) as usize;
    let want = colour(ROUNDS).to_be_bytes();
    for (c, (got, want)) in last[centre..centre + 3].iter().zip(&want[1..]).enumerate() {
        assert!(
            got.abs_diff(*want) <= 8,
            "channel {c} of the last decoded frame: {got}, drawn {want}"
        );
    }
}

#[test]
fn a_game_drawing_in_many_pieces_cannot_keep_the_watch_busy() {
    let xvfb = Xvfb::start(W, H);
    let watch = DisplayWatch::start(&xvfb.name(), true).expect("watch the display");
    let changes = watch.screen_changes().expect("Xvfb has DAMAGE");
    let (conn, screen) = x11rb::connect(Some(&xvfb.name())).expect("connect");
    let root = conn.setup().roots[screen].root;
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, root, &CreateGCAux::new().foreground(0xffffff))
        .unwrap();
    conn.get_input_focus().unwrap().reply().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // One pixel at a time, as fast as the server takes them, for a second.
    let before = changes.marks();
    let started = Instant::now();
    let mut pieces = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        let point = Point {
            x: (pieces % W) as i16,
            y: (pieces / W % H) as i16,
        };
        conn.poly_point(CoordMode::ORIGIN, root, gc, &[point])
            .unwrap();
        conn.flush().unwrap();
        pieces += 1;
        if pieces.is_multiple_of(64) {
            conn.get_input_focus().unwrap().reply().unwrap();
        }
    }
    let marks = changes.marks() - before;
    println!("{pieces} pieces drawn in 1 s: the flag was raised {marks} times");
    assert!(pieces > 2000, "only {pieces} pieces drawn");
    assert!(marks > 50, "the drawing was seen only {marks} times");
    // At most one emptying of the region per MIN_INTERVAL (2 ms): 500 a second.
    assert!(
        marks <= 520,
        "the watch thread handled {marks} notifications in 1 s (bound: 500)"
    );
}

/// From each captured frame back to the start of the latest drawing before it (ms), for a game
/// that fills the screen 60 times a second, starting `phase` after the frame thread's clock.
fn capture_lags(xvfb: &Xvfb, follow_drawing: bool, phase: Duration) -> Vec<f64> {
    let watch = DisplayWatch::start(&xvfb.name(), true).expect("watch the display");
    let changes = watch.screen_changes().expect("Xvfb has DAMAGE");
    let source = FramebufferFile::open(&xvfb.framebuffer(), W, H).unwrap();
    let (stage, ring, _stats) = stage_over(Box::new(source));
    let stage = stage
        .skip_unchanged(Unchanged::for_fps(60))
        .with_screen_changes(changes);
    let mut reader = ring.subscribe().unwrap();
    let pipeline = Pipeline::spawn(
        stage,
        PipelineConfig {
            fps: 60,
            pin_core: None,
            always_encode: true,
            follow_drawing,
        },
    )
    .expect("the frame thread");
    let started = Instant::now();

    // The game: a new colour every 1/60 s on a clock of its own, `phase` after the pipeline's.
    let draws = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let drawer = {
        let (display, draws) = (xvfb.name(), draws.clone());
        std::thread::spawn(move || {
            let (conn, screen) = x11rb::connect(Some(&display)).expect("connect");
            let root = conn.setup().roots[screen].root;
            let gc = conn.generate_id().unwrap();
            conn.create_gc(gc, root, &CreateGCAux::new()).unwrap();
            let period = Duration::from_secs(1) / 60;
            for k in 0..150u32 {
                let due = started + phase + period * k;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                draws.lock().unwrap().push(unix_micros());
                fill_screen(&conn, root, gc, colour(k));
                conn.flush().unwrap();
            }
        })
    };
    let mut captures = Vec::new();
    let mut buf = Vec::new();
    while !drawer.is_finished() {
        if let ReadOutcome::Frame(meta) = reader.read_blocking(&mut buf, Duration::from_millis(50))
        {
            captures.push(meta.capture_us);
        }
    }
    drawer.join().unwrap();
    pipeline.stop().expect("the frame thread ran");
    let draws = draws.lock().unwrap();
    // The last second: the first half second is for the clock to find the game.
    let from = draws[draws.len() - 60];
    captures
        .iter()
        .filter(|&&c| c > from)
        .filter_map(|&c| {
            draws
                .iter()
                .rev()
                .find(|&&d| d <= c)
                .map(|&d| (c - d) as f64 / 1000.0)
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn ticks_follow_the_game_to_just_after_it_draws() {
    let xvfb = Xvfb::start(W, H);
    // The game draws 7 ms after the frame thread's clock ticks: on its own clock each frame
    // waits ~9.7 ms for its capture.
    let phase = Duration::from_millis(7);
    let free = capture_lags(&xvfb, false, phase);
    let followed = capture_lags(&xvfb, true, phase);
    let (free_median, followed_median) = (median(&free), median(&followed));
    println!(
        "drawing -> capture, median of the last second: free clock {free_median:.1} ms \
         ({} frames), following the drawing {followed_median:.1} ms ({} frames)",
        free.len(),
        followed.len()
    );
    assert!(followed.len() >= 50 && free.len() >= 50, "frames were lost");
    assert!(
        followed_median < 4.0,
        "the ticks do not follow the drawing: {followed_median:.1} ms after it"
    );
    assert!(
        followed_median + 3.0 < free_median,
        "following the drawing gained nothing: {followed_median:.1} vs {free_median:.1} ms"
    );
}

/// `playpod pod` over a real game: frames per second a viewer gets, and the metrics.
struct PausedRig {
    served: Served,
    game: playpod_tests::Guard,
    _xvfb: Xvfb,
}

impl PausedRig {
    fn start(extra: &[&str]) -> Self {
        let xvfb = Xvfb::start(W, H);
        let game = start_game(&xvfb.name(), "pong", (W, H));
        let mut args = vec!["--no-audio", "--no-pin"];
        args.extend(extra);
        let served = Served::start_owned(&xvfb.pod_args(&args));
        Self {
            served,
            game,
            _xvfb: xvfb,
        }
    }

    fn signal_game(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.game.0.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {signal}");
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.served.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }
}

/// Counts the video frames that arrive in each of the windows, back to back, running `between`
/// before each window.
async fn frames_in_windows(
    rig: &PausedRig,
    windows: &[(Duration, Option<&str>)],
) -> Vec<(u64, f64, f64)> {
    let url = rig.served.url.replacen("http://", "ws://", 1) + "video";
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("video socket");
    // Into the stream first.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Binary(_)) {
                return;
            }
        }
    })
    .await;
    assert!(first.is_ok(), "no video within 10 s");
    let mut counts = Vec::new();
    for (length, signal) in windows {
        if let Some(signal) = signal {
            rig.signal_game(signal);
            // The game's last drawing and the settling frames go by first.
            let end = tokio::time::Instant::now() + Duration::from_millis(600);
            while tokio::time::timeout_at(end, ws.next()).await.is_ok() {}
        }
        let captured = rig.metric("playpod_frames_captured_total");
        let unchanged = rig.metric("playpod_frames_unchanged_total");
        let end = tokio::time::Instant::now() + *length;
        let mut n = 0;
        while let Ok(msg) = tokio::time::timeout_at(end, ws.next()).await {
            match msg {
                Some(Ok(Message::Binary(_))) => n += 1,
                Some(Ok(_)) => {}
                other => panic!("the video ended: {other:?}"),
            }
        }
        counts.push((
            n,
            rig.metric("playpod_frames_captured_total") - captured,
            rig.metric("playpod_frames_unchanged_total") - unchanged,
        ));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_game_is_sent_once_a_second_and_resumes_at_once() {
    let rig = PausedRig::start(&[]);
    let counts = frames_in_windows(
        &rig,
        &[
            (Duration::from_secs(2), None),
            (Duration::from_secs(3), Some("-STOP")),
            (Duration::from_secs(2), Some("-CONT")),
        ],
    )
    .await;
    println!("(frames, screen reads, unchanged ticks) per window: {counts:?}");
    let [
        (running, _, _),
        (paused, paused_reads, paused_skips),
        (resumed, _, _),
    ] = counts[..]
    else {
        unreachable!()
    };
    assert!(running > 60, "{running} frames in 2 s of play");
    // One a second while paused, and the screen is read only for those (DAMAGE: nothing
    // drawn).
    assert!(
        (1..=5).contains(&paused),
        "{paused} frames in 3 s of a paused game (want ~3, one a second)"
    );
    assert!(
        paused_reads <= 5.0,
        "the screen was read {paused_reads} times in 3 s with nothing drawn"
    );
    assert!(
        paused_skips > 120.0,
        "{paused_skips} unchanged ticks counted in 3 s"
    );
    assert!(
        resumed > 60,
        "{resumed} frames in 2 s after the game resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_sends_a_paused_game_on_every_tick() {
    let rig = PausedRig::start(&["--every-frame"]);
    let counts = frames_in_windows(&rig, &[(Duration::from_secs(2), Some("-STOP"))]).await;
    rig.signal_game("-CONT");
    let (paused, _, skipped) = counts[0];
    assert!(
        paused > 60,
        "{paused} frames in 2 s of a paused game with --every-frame"
    );
    assert_eq!(skipped, 0.0, "--every-frame skipped ticks");
}
