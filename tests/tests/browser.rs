//! End to end in a real browser: `playpod demo` streams Pong to headless Chromium, driven over
//! WebDriver (chromedriver) on 127.0.0.1. The page decodes the H.264 stream with WebCodecs at
//! full rate and its canvas shows the game, moving; a wrong token gets the same 404 as any
//! unknown path.
//!
//! Needs Debian's `chromium` and `chromium-driver` (the README's test command installs them);
//! without them this test fails rather than skipping.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fantoccini::Client;
use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use playpod_tests::browser::{Chromedriver, WAIT_PLAYER, new_session, require_browser};
use playpod_tests::{Served, Xvfb, children_named, g2g, start_game};
use serde_json::{Value, json};

/// Waits in the page for the first decoded frame, then counts the frames decoded in the 3 s
/// after it, timed by the page's own clock.
const COUNT_FRAMES: &str = r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
const stats = () => window.playpodStats;
(function waitFirst() {
  const s = stats();
  if (s && s.framesDecoded > 0) {
    const first = performance.now();
    const atFirst = s.framesDecoded;
    setTimeout(() => {
      const s = stats();
      done({ firstAfterMs: first - t0, atFirst, after3s: s.framesDecoded,
             elapsedMs: performance.now() - first, stats: s });
    }, 3000);
  } else if (performance.now() - t0 > 30000) {
    done({ error: 'no frame decoded within 30 s of loading the page', stats: s || null,
           message: document.getElementById('message')?.textContent ?? null });
  } else {
    setTimeout(waitFirst, 5);
  }
})();
";

/// A summary of what the canvas shows: size, pixels by colour class, and a checksum.
const SAMPLE_CANVAS: &str = r"
const c = document.getElementById('screen');
const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let bright = 0, background = 0, left = 0, right = 0, hash = 0x811c9dc5;
const near = (v, w) => Math.abs(v - w) <= 48;
for (let i = 0; i < px.length; i += 4) {
  const r = px[i], g = px[i + 1], b = px[i + 2];
  if (Math.max(r, g, b) >= 160) bright++;
  if (r < 64 && g < 64 && b < 80) background++;
  if (near(r, 0xff) && near(g, 0x8c) && near(b, 0x1a)) left++;
  if (near(r, 0x2a) && near(g, 0xc8) && near(b, 0xff)) right++;
  hash = Math.imul(hash ^ r, 16777619);
  hash = Math.imul(hash ^ g, 16777619);
  hash = Math.imul(hash ^ b, 16777619);
}
return { width: c.width, height: c.height, pixels: px.length / 4, bright, background,
         leftPaddle: left, rightPaddle: right, checksum: hash >>> 0 };
";

fn int(v: &Value, key: &str) -> i64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}")) as i64
}

/// One raw HTTP/1.1 GET: the status line and headers (less `date`, lower-cased, sorted) and
/// the body.
fn http_get(origin: &str, path: &str) -> (u16, Vec<String>, String) {
    let host = origin.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect to playpod");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let mut headers: Vec<String> = lines
        .map(str::to_ascii_lowercase)
        .filter(|h| !h.starts_with("date:"))
        .collect();
    headers.sort();
    (status, headers, body.to_owned())
}

async fn check_player(client: &Client, served: &Served) {
    let started = Instant::now();
    client.goto(&served.url).await.expect("open the player");

    // (a) more than 100 frames decoded within 3 s of the first one.
    let frames = client
        .execute_async(COUNT_FRAMES, vec![])
        .await
        .expect("count decoded frames");
    assert!(
        frames.get("error").is_none(),
        "the player decoded nothing: {frames}"
    );
    let decoded = int(&frames, "after3s");
    eprintln!(
        "first frame {:.0} ms after the page started ({:.1} s after goto); {decoded} frames \
         decoded by 3 s later",
        frames["firstAfterMs"].as_f64().unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64() - 3.0,
    );
    assert!(
        decoded > 100,
        "only {decoded} frames decoded in the 3 s after the first (want > 100): {frames}"
    );

    // (b) what the stream says it is.
    let stats = &frames["stats"];
    let codec = stats["codec"].as_str().unwrap_or_default();
    assert!(
        codec.len() == 11
            && codec.starts_with("avc1.42")
            && codec[7..].chars().all(|c| c.is_ascii_hexdigit()),
        "codec {codec:?} is not H.264 constrained baseline (avc1.42....): {stats}"
    );
    assert_eq!(
        (int(stats, "width"), int(stats, "height")),
        (768, 768),
        "{stats}"
    );
    assert_eq!(stats["connected"], json!(true), "{stats}");

    // (c) the canvas shows the game and it moves. The ball waits ~1 s at the centre before each
    // serve, so allow a few samples for the picture to change.
    let first = client
        .execute(SAMPLE_CANVAS, vec![])
        .await
        .expect("sample the canvas");
    eprintln!("canvas: {first}");
    assert_eq!((int(&first, "width"), int(&first, "height")), (768, 768));
    let pixels = int(&first, "pixels");
    let bright = int(&first, "bright");
    assert!(
        bright > 200 && bright < pixels / 2,
        "the canvas does not look like Pong (bright pixels {bright} of {pixels}): {first}"
    );
    assert!(
        int(&first, "background") > pixels / 2,
        "the canvas is not mostly Pong's dark background: {first}"
    );
    assert!(
        int(&first, "leftPaddle") > 200 && int(&first, "rightPaddle") > 200,
        "no orange left paddle or cyan right paddle on the canvas: {first}"
    );
    let mut changed = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = client
            .execute(SAMPLE_CANVAS, vec![])
            .await
            .expect("sample the canvas");
        if next["checksum"] != first["checksum"] {
            assert!(int(&next, "bright") > 200, "the canvas went blank: {next}");
            changed = Some(next);
            break;
        }
    }
    assert!(
        changed.is_some(),
        "the canvas did not change within 3 s: {first}"
    );
    let drawn = client
        .execute("return window.playpodStats;", vec![])
        .await
        .expect("read stats");
    eprintln!("stats: {drawn}");
    assert!(int(&drawn, "framesDrawn") > 0, "{drawn}");
    assert_eq!(int(&drawn, "decodeErrors"), 0, "{drawn}");
    // The status region is in the page from the start (a screen reader announces what later
    // appears in it), empty and taking no room while the game plays.
    let status = client
        .execute(
            "const m = document.querySelector('[role=status]'); \
             return m && { id: m.id, text: m.textContent, hidden: m.hidden, \
                           display: getComputedStyle(m).display, \
                           width: m.offsetWidth, height: m.offsetHeight };",
            vec![],
        )
        .await
        .expect("read the status region");
    assert_eq!(
        status,
        json!({ "id": "message", "text": "", "hidden": false, "display": "block",
                "width": 0, "height": 0 }),
        "the status region while playing"
    );
    check_overlay(client).await;
    check_full_screen(client).await;

    // (d) a wrong token is a 404, in the browser and on the wire, like an unknown path.
    let token = served
        .url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .expect("token in the URL")
        .to_owned();
    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    let origin = served.origin();
    client
        .goto(&format!("{origin}/play/{wrong}/"))
        .await
        .expect("open a wrong-token page");
    let text = client
        .execute(
            "return document.body ? document.body.innerText : '';",
            vec![],
        )
        .await
        .expect("page text");
    assert_eq!(
        text.as_str().map(str::trim),
        Some("not found"),
        "wrong token page"
    );
    let unknown = http_get(&origin, "/no/such/path");
    assert_eq!(unknown.0, 404);
    for path in [
        format!("/play/{wrong}/"),
        format!("/play/{token}x/"),
        format!("/play/{wrong}/player.js"),
        "/play/".to_owned(),
    ] {
        assert_eq!(
            http_get(&origin, &path),
            unknown,
            "{path} answers unlike an unknown path"
        );
    }
    assert_eq!(http_get(&origin, &format!("/play/{token}/")).0, 200);
}

/// Starts `playpod ARGS...` and headless Chromium, runs `check` with them, and stops both
/// whatever happened in `check` (its panic is passed on afterwards).
async fn in_chromium<F>(args: &'static [&'static str], check: F)
where
    F: for<'a> FnOnce(&'a Client, &'a Served) -> BoxFuture<'a, ()>,
{
    in_chromium_with(move || Served::start(args), check).await;
}

/// One Chromium test at a time: each streams 60 fps into a browser decoding it, and on a
/// two-core machine several at once starve each other (seen: audio decoding at 75 % of real
/// time with five running).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// [`in_chromium`] with the playpod that `start` starts.
async fn in_chromium_with<S, F>(start: S, check: F)
where
    S: FnOnce() -> Served + Send + 'static,
    F: for<'a> FnOnce(&'a Client, &'a Served) -> BoxFuture<'a, ()>,
{
    require_browser();
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let profile = tempfile::Builder::new()
        .prefix("playpod-chromium-")
        .tempdir()
        .expect("profile dir");
    let served = tokio::task::spawn_blocking(start)
        .await
        .expect("start playpod");
    let driver = Chromedriver::start();
    let client = new_session(&driver, profile.path()).await;
    eprintln!(
        "playpod and Chromium ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let result = std::panic::AssertUnwindSafe(check(&client, &served))
        .catch_unwind()
        .await;
    // Quit Chromium whatever happened; chromedriver's process group is killed on drop.
    let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
    drop(driver);
    drop(served);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// What the full-screen button says and whether the page is shown full screen.
const READ_FULL_SCREEN: &str = r"
const b = document.getElementById('full');
return { button: b.hidden ? null : b.textContent, full: document.fullscreenElement !== null,
         stats: window.playpodStats.fullScreen, wakeLock: window.playpodStats.wakeLock };
";

/// The page goes full screen with its button or a double click on the picture, and back with
/// the button; while the game is shown, it holds the screen on.
async fn check_full_screen(client: &Client) {
    let full_is = |want: bool| {
        let condition =
            format!("s.fullScreen === {want} && (document.fullscreenElement !== null) === {want}");
        async move { poll_page(client, &condition, 5).await }
    };
    let before = client
        .execute(READ_FULL_SCREEN, vec![])
        .await
        .expect("read the full-screen button");
    eprintln!("before full screen: {before}");
    assert_eq!(
        before,
        json!({ "button": "full screen", "full": false, "stats": false, "wakeLock": "held" }),
        "the page offers full screen and holds the screen on while the game is shown"
    );
    let button = client
        .find(fantoccini::Locator::Id("full"))
        .await
        .expect("the full-screen button");
    button.click().await.expect("click full screen");
    assert_eq!(
        full_is(true).await["met"],
        json!(true),
        "the button did not go full screen"
    );
    let full = client
        .execute(READ_FULL_SCREEN, vec![])
        .await
        .expect("read the full-screen button");
    assert_eq!(full["button"], json!("exit full screen"), "{full}");
    button.click().await.expect("click exit full screen");
    assert_eq!(
        full_is(false).await["met"],
        json!(true),
        "the button did not leave full screen"
    );
    // A double click on the picture, where a video player takes it.
    let canvas = client
        .find(fantoccini::Locator::Id("screen"))
        .await
        .expect("the canvas");
    client
        .perform_actions(
            fantoccini::actions::MouseActions::new("mouse".to_owned())
                .then(fantoccini::actions::PointerAction::MoveToElement {
                    element: canvas,
                    duration: None,
                    x: 0.0,
                    y: 0.0,
                })
                .then(fantoccini::actions::PointerAction::Down {
                    button: fantoccini::actions::MOUSE_BUTTON_LEFT,
                })
                .then(fantoccini::actions::PointerAction::Up {
                    button: fantoccini::actions::MOUSE_BUTTON_LEFT,
                })
                .then(fantoccini::actions::PointerAction::Down {
                    button: fantoccini::actions::MOUSE_BUTTON_LEFT,
                })
                .then(fantoccini::actions::PointerAction::Up {
                    button: fantoccini::actions::MOUSE_BUTTON_LEFT,
                }),
        )
        .await
        .expect("double click the picture");
    assert_eq!(
        full_is(true).await["met"],
        json!(true),
        "a double click did not go full screen"
    );
    button.click().await.expect("click exit full screen");
    assert_eq!(
        full_is(false).await["met"],
        json!(true),
        "the button did not leave full screen"
    );
}

/// The overlay shows fps, bitrate, latency and dropped frames, and the clock probe found this
/// machine's own clock (offset within its round trip of zero).
async fn check_overlay(client: &Client) {
    let seen = client
        .execute(
            "return { text: document.getElementById('stats').textContent, \
             stats: window.playpodStats };",
            vec![],
        )
        .await
        .expect("read the overlay");
    let text = seen["text"].as_str().unwrap_or_default();
    eprintln!("overlay: {text:?}");
    let number_before = |unit: &str| {
        text.split(unit)
            .next()
            .filter(|before| before.len() < text.len())
            .and_then(|before| before.split_whitespace().last())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let fps = number_before(" fps").unwrap_or_else(|| panic!("no fps in the overlay: {seen}"));
    assert!(fps > 10.0, "the overlay says {fps} fps: {seen}");
    let kbps =
        number_before(" kbit/s").unwrap_or_else(|| panic!("no bitrate in the overlay: {seen}"));
    assert!(kbps > 10.0, "the overlay says {kbps} kbit/s: {seen}");
    let latency = number_before(" ms capture→decoded")
        .unwrap_or_else(|| panic!("no latency in the overlay: {seen}"));
    // On loopback the true figure is ~2 ms (capture, encode, send, decode); the page's
    // correction to the pod's clock was once seen 6 ms off on a loaded CI machine, so a few
    // ms below zero still means the capture times are on the right clock.
    assert!(
        latency > -20.0 && latency < 2000.0,
        "the overlay says {latency} ms: {seen}"
    );
    assert!(
        text.contains("dropped "),
        "no dropped frames in the overlay: {seen}"
    );
    let stats = &seen["stats"];
    let (offset, rtt) = (
        stats["clockOffsetMs"].as_f64(),
        stats["clockRttMs"].as_f64(),
    );
    let (Some(offset), Some(rtt)) = (offset, rtt) else {
        panic!("the clock probe got no answer: {seen}");
    };
    assert!(
        rtt >= 0.0 && offset.abs() <= rtt / 2.0 + 2.0,
        "same machine, yet the clock offset is {offset} ms (round trip {rtt} ms): {seen}"
    );
    // A click folds the overlay to one word, another brings the figures back.
    let overlay = client
        .find(fantoccini::Locator::Id("stats"))
        .await
        .expect("the overlay");
    let mut texts = Vec::new();
    for _ in 0..2 {
        overlay.click().await.expect("click the overlay");
        texts.push(overlay.text().await.expect("overlay text"));
    }
    assert_eq!(texts[0], "stats", "folded overlay: {texts:?}");
    assert!(
        texts[1].contains(" fps") && texts[1].contains("dropped "),
        "unfolded overlay: {texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_demo() {
    in_chromium(&["demo"], |client, served| {
        check_player(client, served).boxed()
    })
    .await;
}

/// Records, for every frame the page draws, the right (cyan) paddle's centre row, read from the
/// canvas pixels of a column through the paddle, with the count of frames decoded so far; and
/// the page time and decoded-frame count of every key press.
const WATCH_PADDLE: &str = r"
const c = document.getElementById('screen');
const g = c.getContext('2d', { willReadFrequently: true });
window.__paddle = [];
window.__keys = [];
window.addEventListener('keydown', (ev) => {
  window.__keys.push({ t: performance.now(), frame: window.playpodStats.framesDecoded, code: ev.code });
}, true);
let last = -1;
const near = (v, w) => Math.abs(v - w) <= 48;
(function sample() {
  const s = window.playpodStats;
  if (s.framesDrawn !== last) {
    last = s.framesDrawn;
    const x = Math.round(c.width * 728 / 768);
    const px = g.getImageData(x, 0, 1, c.height).data;
    let sum = 0, n = 0;
    for (let y = 0; y < c.height; y++) {
      const i = y * 4;
      if (near(px[i], 0x2a) && near(px[i + 1], 0xc8) && near(px[i + 2], 0xff)) { sum += y; n++; }
    }
    window.__paddle.push({ t: performance.now(), frame: s.framesDecoded, y: n > 20 ? sum / n : null });
  }
  requestAnimationFrame(sample);
})();
";

/// One sample of the paddle watcher.
#[derive(Debug, Clone, Copy)]
struct PaddleSample {
    t: f64,
    frame: i64,
    y: Option<f64>,
}

fn paddle_samples(v: &Value) -> Vec<PaddleSample> {
    v.as_array()
        .expect("paddle samples")
        .iter()
        .map(|s| PaddleSample {
            t: s["t"].as_f64().unwrap(),
            frame: int(s, "frame"),
            y: s["y"].as_f64(),
        })
        .collect()
}

/// From a key press at page time `t` (`frame` frames decoded by then): the frames and milliseconds until
/// the paddle's centre moved more than 4 px in `direction` (-1 up, +1 down) from where it was.
fn reaction(samples: &[PaddleSample], t: f64, frame: i64, direction: f64) -> Option<(i64, f64)> {
    let before = samples
        .iter()
        .rev()
        .find(|s| s.t <= t && s.y.is_some())?
        .y?;
    samples
        .iter()
        .filter(|s| s.t > t)
        .find(|s| s.y.is_some_and(|y| (y - before) * direction > 4.0))
        .map(|s| (s.frame - frame, s.t - t))
}

async fn check_paddle_follows_keys(client: &Client, served: &Served) {
    client
        .goto(&format!("{}?player=2", served.url))
        .await
        .expect("open the player as player 2");
    let ready = client
        .execute_async(WAIT_PLAYER, vec![])
        .await
        .expect("wait for the player");
    assert!(ready.get("error").is_none(), "{ready}");
    assert_eq!(ready["input"]["player"], json!("2"), "{ready}");
    // The pod gave the page's input connection a seat, and the page shows it with its video's
    // clock probes: the pod counts this viewer as a player's (its link sets the bitrate).
    let seated = poll_page(
        client,
        "/^[0-9a-f]{32}$/.test(window.playpodInput.seat || '')",
        5,
    )
    .await;
    assert_eq!(seated["met"], json!(true), "the page got no seat: {seated}");
    let counted_by = Instant::now() + Duration::from_secs(5);
    while metric(served, "playpod_viewers_seated") != 1.0 {
        assert!(
            Instant::now() < counted_by,
            "the pod never counted the page as player 2's"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let badge = client
        .execute(
            "return document.getElementById('badge').textContent;",
            vec![],
        )
        .await
        .expect("badge");
    assert_eq!(badge.as_str(), Some("player 2 · connected"), "{badge}");
    // Any key hands the paddle from the AI to its player (the page's X is player 2's A);
    // then it stands still until a direction is held.
    let take = KeyActions::new("keyboard".to_owned())
        .then(KeyAction::Down { value: 'x' })
        .then(KeyAction::Pause {
            duration: Duration::from_millis(100),
        })
        .then(KeyAction::Up { value: 'x' });
    client.perform_actions(take).await.expect("press A");
    client
        .execute(WATCH_PADDLE, vec![])
        .await
        .expect("watch the paddle");
    // The paddle may still be finishing the AI's last move: wait (up to 5 s on a loaded
    // machine) until the last 20 decoded frames show it standing still.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (y0, still) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = paddle_samples(
            &client
                .execute("return window.__paddle;", vec![])
                .await
                .expect("samples"),
        );
        let y0 = now
            .iter()
            .rev()
            .find_map(|s| s.y)
            .unwrap_or_else(|| panic!("no cyan right paddle on the canvas: {now:?}"));
        let still: Vec<f64> = now.iter().rev().take(20).filter_map(|s| s.y).collect();
        if still.len() >= 20 && still.iter().all(|y| (y - y0).abs() < 2.0)
            || std::time::Instant::now() > deadline
        {
            break (y0, still);
        }
    };
    assert!(
        still.iter().all(|y| (y - y0).abs() < 2.0),
        "the paddle moves with no key held (the AI still plays it?): {still:?}"
    );
    // Move away from the nearer edge first, then back: both moves are then visible.
    const UP: char = '\u{e013}';
    const DOWN: char = '\u{e015}';
    let (first, second) = if y0 < 384.0 { (DOWN, UP) } else { (UP, DOWN) };
    let hold = Duration::from_millis(1300);
    let keys = KeyActions::new("keyboard".to_owned())
        .then(KeyAction::Down { value: first })
        .then(KeyAction::Pause { duration: hold })
        .then(KeyAction::Up { value: first })
        .then(KeyAction::Down { value: second })
        .then(KeyAction::Pause { duration: hold })
        .then(KeyAction::Up { value: second });
    client.perform_actions(keys).await.expect("press the keys");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let watched = client
        .execute(
            "return { paddle: window.__paddle, keys: window.__keys, input: window.playpodInput, \
             stats: window.playpodStats };",
            vec![],
        )
        .await
        .expect("read what the page saw");
    let samples = paddle_samples(&watched["paddle"]);
    let presses: Vec<Value> = watched["keys"]
        .as_array()
        .expect("key presses")
        .iter()
        .filter(|k| k["code"].as_str().is_some_and(|c| c.starts_with("Arrow")))
        .cloned()
        .collect();
    assert_eq!(
        presses.len(),
        2,
        "the page saw {} arrow key presses: {}",
        presses.len(),
        watched["keys"]
    );
    let input = &watched["input"];
    assert!(
        int(input, "sent") >= 4,
        "the page sent fewer than 4 changes: {input}"
    );
    assert_eq!(int(input, "errors"), 0, "{input}");
    // Frames already in flight on the video path when the key goes down (captured, not yet
    // decoded) show the old position: allow them on top of the frames for the key itself. The
    // bound is generous (a second) because CI's two cores run the other suites alongside; the
    // measured figure is printed and reported (3-4 frames on an idle machine), the latency
    // target is checked by input-probe, not here.
    let video_ms = watched["stats"]["latencyMs"].as_f64().unwrap_or(0.0);
    let allowed = 60 + (video_ms / (1000.0 / 60.0)).ceil() as i64;
    eprintln!("video latency (capture -> decoded) {video_ms:.0} ms: allowing {allowed} frames");
    for (press, key) in presses.iter().zip([first, second]) {
        let direction = if key == UP { -1.0 } else { 1.0 };
        let (t, frame) = (press["t"].as_f64().unwrap(), int(press, "frame"));
        let Some((frames, ms)) = reaction(&samples, t, frame, direction) else {
            panic!(
                "the paddle did not move {} after the key press at {t:.0} ms: {:?}",
                if key == UP { "up" } else { "down" },
                samples
                    .iter()
                    .filter(|s| s.t > t - 100.0 && s.t < t + 1500.0)
                    .map(|s| (s.frame, s.y.map(|y| y.round())))
                    .collect::<Vec<_>>()
            );
        };
        eprintln!(
            "{} pressed: the paddle moved on the canvas {frames} decoded frames ({ms:.0} ms) later",
            press["code"]
        );
        assert!(
            frames <= allowed,
            "the paddle moved only {frames} frames ({ms:.0} ms) after the key press \
             (video latency {video_ms:.0} ms)"
        );
    }
    // While a key is held the paddle keeps going to the edge: the held key really plays it.
    let end_of = |t: f64| {
        samples
            .iter()
            .rev()
            .find(|s| s.t <= t && s.y.is_some())
            .and_then(|s| s.y)
            .expect("a sample")
    };
    let second_at = presses[1]["t"].as_f64().unwrap();
    let at_first_end = end_of(second_at);
    let edge_ok = if first == UP {
        at_first_end < 100.0
    } else {
        at_first_end > 668.0
    };
    assert!(
        edge_ok,
        "after holding the first key for {hold:?} the paddle's centre is at {at_first_end:.0}"
    );
    check_touch_pad_layout(client, DOWN).await;
}

/// The touch pad's buttons (shown here by hand: a desktop Chromium has a fine pointer), as
/// `[name, left, top, right, bottom, pressed]`.
const PAD_KEYS: &str = r"
const pad = document.getElementById('pad');
pad.hidden = false;
return [...pad.querySelectorAll('[data-pad]')].map((e) => {
  const r = e.getBoundingClientRect();
  return [e.dataset.pad, r.left, r.top, r.right, r.bottom, e.classList.contains('pressed')];
});
";

/// The page's width and its other controls (the overlay, the badge, the player choice, the
/// sound and full-screen buttons, the notice of a lowered picture quality), as `[id, left, top, right, bottom]`;
/// the overlay and the notice with their longest texts first (a still picture, a long latency
/// line, a lowered target: their lines wrap on a phone).
const CONTROLS: &str = r"
document.getElementById('stats').textContent = '768x768 avc1.42C01F\n60 fps (picture still)  2500 kbit/s' +
  ' (target 1234 of 2500)\nlatency 123 ms capture→decoded (clock ±12.3 ms)\nqueue 0  dropped 1234  errors 0';
const quality = document.getElementById('quality');
quality.textContent = 'Picture quality lowered for a slow connection elsewhere';
quality.hidden = false;
return { width: innerWidth, controls: ['stats', 'badge', 'players', 'audio', 'full', 'quality'].map((id) => {
  const r = document.getElementById(id).getBoundingClientRect();
  return [id, r.left, r.top, r.right, r.bottom];
}) };
";

/// A pressed pad button stays where the finger is (it once jumped away when pressed), shows it
/// is pressed, and on a phone no button or control covers another or runs off the page: once
/// the overlay sat under the D-pad and the B button, on a phone 320 px wide the D-pad's right
/// button covered B, and on a small phone on its side the overlay covered the sound button
/// and the player choice.
async fn check_touch_pad_layout(client: &Client, down_key: char) {
    let keys = |v: Value| -> Vec<(String, [f64; 4], bool)> {
        v.as_array()
            .expect("pad keys")
            .iter()
            .map(|k| {
                let n = |i: usize| k[i].as_f64().expect("a coordinate");
                (
                    k[0].as_str().expect("a name").to_owned(),
                    [n(1), n(2), n(3), n(4)],
                    k[5].as_bool().expect("pressed"),
                )
            })
            .collect()
    };
    let before = keys(client.execute(PAD_KEYS, vec![]).await.expect("pad keys"));
    assert_eq!(before.len(), 8, "{before:?}");
    client
        .perform_actions(
            KeyActions::new("keyboard".to_owned()).then(KeyAction::Down { value: down_key }),
        )
        .await
        .expect("hold down");
    let held = keys(client.execute(PAD_KEYS, vec![]).await.expect("pad keys"));
    client
        .perform_actions(
            KeyActions::new("keyboard".to_owned()).then(KeyAction::Up { value: down_key }),
        )
        .await
        .expect("release down");
    for ((name, was, _), (_, now, pressed)) in before.iter().zip(&held) {
        assert_eq!(was, now, "the {name} button moved while down was held");
        assert_eq!(*pressed, name == "down", "{name} shown pressed: {pressed}");
    }
    // Phones held upright (the smallest 320 px wide) and on their side: the windows' sizes,
    // with room for the browser's own bars.
    for (width, height) in [(390, 844), (320, 711), (568, 463)] {
        client
            .set_window_size(width, height)
            .await
            .expect("a phone-sized window");
        // The overlay's figures are refreshed twice a second: wait for them at the new size.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut boxes: Vec<(String, [f64; 4])> =
            keys(client.execute(PAD_KEYS, vec![]).await.expect("pad keys"))
                .into_iter()
                .map(|(name, rect, _)| (format!("the {name} button"), rect))
                .collect();
        let seen = client.execute(CONTROLS, vec![]).await.expect("controls");
        let inner = seen["width"].as_f64().expect("the page's width");
        for control in seen["controls"].as_array().expect("controls") {
            let n = |i: usize| control[i].as_f64().expect("a coordinate");
            let rect = [n(1), n(2), n(3), n(4)];
            assert!(
                rect[2] > rect[0] && rect[3] > rect[1],
                "{control} takes no room"
            );
            assert!(
                rect[0] >= 0.0 && rect[2] <= inner,
                "at {width}x{height} {control} runs off the page ({inner} px wide)"
            );
            boxes.push((format!("#{}", control[0].as_str().expect("an id")), rect));
        }
        for (i, (a, ra)) in boxes.iter().enumerate() {
            for (b, rb) in &boxes[i + 1..] {
                // Neighbouring D-pad keys share their 1-px borders: more than that is a cover.
                const SHARED: f64 = 5.0;
                let overlap = ra[0] + SHARED < rb[2]
                    && rb[0] + SHARED < ra[2]
                    && ra[1] + SHARED < rb[3]
                    && rb[1] + SHARED < ra[3];
                assert!(
                    !overlap,
                    "at {width}x{height} {a} {ra:?} overlaps {b} {rb:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_player_moves_a_paddle() {
    in_chromium(&["demo", "--scene", "pong"], |client, served| {
        check_paddle_follows_keys(client, served).boxed()
    })
    .await;
}

/// Waits for the page's first decoded audio, then counts the audio decoded in the 2 s after it.
const COUNT_AUDIO: &str = r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
const stats = () => window.playpodAudioStats;
(function waitFirst() {
  const s = stats();
  if (s && s.decoded > 0) {
    const at = s.decoded;
    setTimeout(() => done({ firstAfterMs: performance.now() - t0, atFirst: at,
                            after2s: stats().decoded, stats: stats() }), 2000);
  } else if (performance.now() - t0 > 30000) {
    done({ error: 'no audio decoded within 30 s of loading the page', stats: s || null });
  } else {
    setTimeout(waitFirst, 10);
  }
})();
";

/// After the click: waits until the worklet plays, then reports 2 s of its figures.
const WATCH_PLAYBACK: &str = r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
(function wait() {
  const s = window.playpodAudioStats;
  if (s.playing && s.bufferedMs > 0) {
    const before = { ...s };
    setTimeout(() => done({ before, after: { ...window.playpodAudioStats },
                            video: { ...window.playpodStats },
                            button: document.getElementById('audio').textContent }), 2000);
  } else if (performance.now() - t0 > 15000) {
    done({ error: 'the audio worklet did not start playing within 15 s of the click',
           stats: s, button: document.getElementById('audio').textContent });
  } else {
    setTimeout(wait, 20);
  }
})();
";

/// Clicks the sound button (the user gesture that lets the page play sound), then runs the
/// asynchronous script `watch` and returns what it reports.
async fn click_sound_then(client: &Client, watch: &str) -> Value {
    let button = client
        .find(fantoccini::Locator::Id("audio"))
        .await
        .expect("the sound button");
    button.click().await.expect("click the sound button");
    client
        .execute_async(watch, vec![])
        .await
        .expect("watch playback")
}

async fn check_audio(client: &Client, served: &Served) {
    client.goto(&served.url).await.expect("open the player");
    // Decoding starts before any gesture: the AudioDecoder turns every packet into audio data.
    let decoded = client
        .execute_async(COUNT_AUDIO, vec![])
        .await
        .expect("count decoded audio");
    eprintln!("audio before the click: {decoded}");
    assert!(decoded.get("error").is_none(), "{decoded}");
    let in_2s = int(&decoded, "after2s") - int(&decoded, "atFirst");
    // ~200 on an idle machine (one per 10 ms); a loaded CI machine decodes fewer in time.
    assert!(
        in_2s > 50,
        "{in_2s} audio frames decoded in 2 s (want ~200, one per 10 ms): {decoded}"
    );
    assert_eq!(decoded["stats"]["state"], json!("ok"), "{decoded}");
    assert_eq!(int(&decoded["stats"], "decodeErrors"), 0, "{decoded}");

    let played = click_sound_then(client, WATCH_PLAYBACK).await;
    eprintln!("audio after the click: {played}");
    assert!(played.get("error").is_none(), "{played}");
    let (before, after) = (&played["before"], &played["after"]);
    let buffered = after["bufferedMs"].as_f64().unwrap_or(-1.0);
    assert!(
        (0.0..=250.0).contains(&buffered),
        "jitter buffer at {buffered} ms: {played}"
    );
    // ~200 in 2 s on an idle machine; the bound is the one before the click (under load the
    // page decodes late, not never: one run decoded 145 of the 205 packets it got in 2 s).
    assert!(
        int(after, "decoded") - int(before, "decoded") > 50,
        "decoding went on while playing: {played}"
    );
    assert_eq!(
        after["muted"],
        json!(false),
        "the click started the sound unmuted: {played}"
    );
    assert!(
        played["button"]
            .as_str()
            .is_some_and(|t| t.contains("mute") && !t.contains("unmute")),
        "the button offers mute: {played}"
    );
    assert!(
        int(&played["video"], "framesDecoded") > 100,
        "the video plays alongside: {played}"
    );
}

/// Polls `condition` (a JavaScript expression) in the page every 50 ms for up to `secs`;
/// returns `{ met, stats, text }`: whether it held, the video stats and the overlay's text.
async fn poll_page(client: &Client, condition: &str, secs: u32) -> Value {
    let script = format!(
        r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
(function poll() {{
  const s = window.playpodStats;
  const text = document.getElementById('stats').textContent;
  if ({condition}) done({{ met: true, stats: {{ ...s }}, text }});
  else if (performance.now() - t0 > {ms}) done({{ met: false, stats: {{ ...s }}, text }});
  else setTimeout(poll, 50);
}})();
",
        ms = secs * 1000
    );
    client
        .execute_async(&script, vec![])
        .await
        .expect("poll the page")
}

/// A Chrome DevTools command through chromedriver (`goog/cdp/execute`): fantoccini has no
/// method for it.
#[derive(Debug)]
struct Cdp(&'static str, Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.0, "params": self.1 });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Before the page's own scripts: the video decoder fails on every frame (as if the stream's
/// codec were one this browser lacks), and `?unsupported` makes the browser say it has no such
/// decoder at all; the page's keyframe requests are counted.
const BROKEN_DECODER: &str = r"
const configure = VideoDecoder.prototype.configure;
VideoDecoder.prototype.configure = function (c) { return configure.call(this, { ...c, codec: 'xyz1.000000' }); };
if (location.search.includes('unsupported')) {
  VideoDecoder.isConfigSupported = async (config) => ({ supported: false, config });
}
window.__keyframeRequests = 0;
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (d) { if (d === 'keyframe') window.__keyframeRequests++; return send.call(this, d); };
";

/// A browser whose decoder cannot play the stream says so, and does not flood the pod with
/// keyframe requests (every IDR goes to every viewer): once a decoder that failed on every
/// frame restarted at task speed and asked for a keyframe each time (8,460 in 4 s).
async fn check_broken_decoder(client: &Client, served: &Served) {
    client
        .issue_cmd(Cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": BROKEN_DECODER }),
        ))
        .await
        .expect("add the broken decoder");
    client
        .goto(&format!("{}?unsupported", served.url))
        .await
        .expect("open the player");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unsupported = read_decoder_state(client).await;
    eprintln!("no such decoder: {unsupported}");
    assert!(
        unsupported["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot decode")),
        "{unsupported}"
    );
    assert_eq!(int(&unsupported, "requests"), 0, "{unsupported}");
    assert_eq!(
        unsupported["stats"]["connected"],
        json!(false),
        "{unsupported}"
    );

    client.goto(&served.url).await.expect("open the player");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let failing = read_decoder_state(client).await;
    eprintln!("a decoder failing on every frame: {failing}");
    let errors = int(&failing["stats"], "decodeErrors");
    assert!(
        (1..=8).contains(&errors),
        "{errors} decoder errors in 6 s: {failing}"
    );
    assert!(
        int(&failing, "requests") <= 7,
        "keyframe requests: {failing}"
    );
    assert!(
        failing["message"]
            .as_str()
            .is_some_and(|m| m.contains("keeps failing")),
        "{failing}"
    );
}

async fn read_decoder_state(client: &Client) -> Value {
    client
        .execute(
            "const m = document.getElementById('message'); \
             return { message: m.textContent && m.offsetWidth > 0 ? m.textContent : null, stats: window.playpodStats, \
                      requests: window.__keyframeRequests };",
            vec![],
        )
        .await
        .expect("read the page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_says_when_it_cannot_decode_the_stream() {
    in_chromium(&["demo", "--scene", "pong"], |client, served| {
        check_broken_decoder(client, served).boxed()
    })
    .await;
}

/// Sends SIGCONT to a process stopped with SIGSTOP, also when the test fails in between.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Self {
        playpod_tests::signal(pid, "-STOP");
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        playpod_tests::signal(self.0, "-CONT");
    }
}

/// A paused game: the pod sends a frame a second, and the overlay says the picture is still
/// (rather than leaving a viewer to think the connection is slow); when the game goes on, the
/// label goes.
async fn check_still_picture_label(client: &Client, served: &Served) {
    client.goto(&served.url).await.expect("open the player");
    let playing = poll_page(client, "s.fps > 20 && !s.still", 30).await;
    assert_eq!(
        playing["met"],
        json!(true),
        "the game never played: {playing}"
    );
    let game = children_named(served.child.id(), "playpod")
        .into_iter()
        .find(|(_, cmdline)| cmdline.contains(" game"))
        .expect("the demo's game process");
    let paused = Stopped::new(game.0);
    let still = poll_page(client, "s.still && text.includes('fps (picture still)')", 8).await;
    eprintln!("game paused: {still}");
    assert_eq!(still["met"], json!(true), "no still label: {still}");
    assert_eq!(int(&still["stats"], "missedFrames"), 0, "{still}");
    drop(paused);
    let moving = poll_page(
        client,
        "s.fps > 20 && !s.still && !text.includes('still')",
        8,
    )
    .await;
    eprintln!("game going on: {moving}");
    assert_eq!(moving["met"], json!(true), "the label stayed: {moving}");

    // A stalled connection is not a still picture: the pod itself stopped, nothing comes.
    let stalled = Stopped::new(served.child.id());
    let stall = poll_page(client, "performance.now() - t0 > 3000", 5).await;
    drop(stalled);
    eprintln!("pod stopped for 3 s: {stall}");
    assert_eq!(int(&stall["stats"], "fps"), 0, "{stall}");
    assert_eq!(stall["stats"]["still"], json!(false), "{stall}");
    assert!(
        !stall["text"].as_str().unwrap_or_default().contains("still"),
        "{stall}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_labels_a_still_picture() {
    in_chromium(&["demo", "--no-audio"], |client, served| {
        check_still_picture_label(client, served).boxed()
    })
    .await;
}

/// Another viewer on a link far slower than the stream (no player is connected, so its link
/// counts): the pod lowers the bitrate, and this page, whose own link is fine, says the
/// picture got worse for a slow connection elsewhere, with the target in its overlay.
async fn check_quality_notice(client: &Client, served: &Served) {
    client.goto(&served.url).await.expect("open the player");
    let fine = poll_page(client, "s.framesDrawn > 10 && s.fullKbps > 0", 30).await;
    assert_eq!(
        fine["met"],
        json!(true),
        "no frames or clock answer: {fine}"
    );
    assert_eq!(fine["stats"]["fullKbps"], json!(2500), "{fine}");
    assert_eq!(fine["stats"]["quality"], json!(""), "{fine}");
    let hidden = client
        .execute("return document.getElementById('quality').hidden;", vec![])
        .await
        .expect("the notice");
    assert_eq!(hidden, json!(true));

    let ws_url = format!("{}video", served.url.replacen("http://", "ws://", 1));
    let slow = playpod_tests::slow_video_viewer(&ws_url).await;
    let lowered = poll_page(client, "s.quality !== ''", 20).await;
    slow.abort();
    assert_eq!(
        lowered["met"],
        json!(true),
        "the page never said: {lowered}"
    );
    let stats = &lowered["stats"];
    assert_eq!(
        stats["quality"],
        json!("Picture quality lowered for a slow connection elsewhere"),
        "{lowered}"
    );
    assert_eq!(stats["slowLink"], json!(false), "{lowered}");
    assert!(
        stats["bitrateKbps"].as_u64().unwrap_or(u64::MAX) < 2500 * 95 / 100,
        "{lowered}"
    );
    let shown = client
        .execute(
            "const q = document.getElementById('quality'); return { hidden: q.hidden, \
             text: q.textContent };",
            vec![],
        )
        .await
        .expect("the notice");
    assert_eq!(shown["hidden"], json!(false), "{shown}");
    assert_eq!(shown["text"], stats["quality"], "{shown}");
    // The overlay, redrawn twice a second, shows the target beside the measured rate.
    let overlay = poll_page(client, "/\\(target \\d+ of 2500\\)/.test(text)", 5).await;
    assert_eq!(overlay["met"], json!(true), "{overlay}");
    eprintln!(
        "a slow viewer elsewhere: target {} of 2500 kbit/s, the page says {:?}",
        stats["bitrateKbps"], stats["quality"]
    );

    // A page that asks for the low rendition (`?rendition=low`) gets the picture at half its
    // width and height, decodes and draws it, and needs no notice of it.
    client
        .goto(&format!("{}?rendition=low", served.url))
        .await
        .expect("open the player asking for the low rendition");
    let low = poll_page(
        client,
        "s.rendition === 'low' && s.width === 384 && s.height === 384 && s.framesDrawn > 30 && \
         document.getElementById('screen').width === 384 && \
         document.getElementById('screen').height === 384",
        20,
    )
    .await;
    eprintln!("asking for the low rendition: {low}");
    assert_eq!(low["met"], json!(true), "{low}");
    assert_eq!(low["stats"]["quality"], json!(""), "{low}");
    assert_eq!(low["stats"]["decodeErrors"], json!(0), "{low}");
    let metrics = served.get("/metrics");
    assert_eq!(
        playpod_tests::soak::metric_value(&metrics, "playpod_viewers_low_rendition"),
        Some(1.0),
        "the pod does not count the page on the low rendition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_says_why_the_picture_got_worse() {
    in_chromium(
        &["demo", "--scene", "plasma", "--no-audio"],
        |client, served| check_quality_notice(client, served).boxed(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_decodes_and_plays_the_demo_audio() {
    // --every-frame: a packet every 10 ms, silence too, so the decoding rate is measurable.
    in_chromium(&["demo", "--every-frame"], |client, served| {
        check_audio(client, served).boxed()
    })
    .await;
}

/// After the click: waits until the worklet plays, then watches it for 6 s of Pong, whose
/// silences between sounds the pod does not send.
const WATCH_SILENCES: &str = r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
(function wait() {
  const s = window.playpodAudioStats;
  if (s.playing) {
    const before = { ...s };
    setTimeout(() => done({ before, after: { ...window.playpodAudioStats } }), 6000);
  } else if (performance.now() - t0 > 20000) {
    done({ error: 'the audio worklet did not start playing within 20 s of the click', stats: s });
  } else {
    setTimeout(wait, 20);
  }
})();
";

/// The demo as shipped: only Pong's sounds (and the few frames that end each) are sent. The
/// page plays each and tells the silences between them from underruns.
async fn check_audio_silences(client: &Client, served: &Served) {
    client.goto(&served.url).await.expect("open the player");
    let watched = click_sound_then(client, WATCH_SILENCES).await;
    eprintln!("6 s of Pong's sound: {watched}");
    assert!(watched.get("error").is_none(), "{watched}");
    let (before, after) = (&watched["before"], &watched["after"]);
    let decoded = int(after, "decoded") - int(before, "decoded");
    let silences = int(after, "silences") - int(before, "silences");
    let underruns = int(after, "underruns") - int(before, "underruns");
    // Far fewer than the 600 frames of 6 s: sounds come, silences are not sent.
    assert!(
        (10..300).contains(&decoded),
        "{decoded} audio frames decoded in 6 s of Pong: {watched}"
    );
    assert!(
        silences >= 2,
        "{silences} silences seen between Pong's sounds: {watched}"
    );
    assert!(
        underruns < silences,
        "{underruns} underruns against {silences} silences: the page took the silences the \
         pod did not send for late audio: {watched}"
    );
    assert_eq!(int(after, "decodeErrors"), 0, "{watched}");
    assert_eq!(after["state"], json!("ok"), "{watched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_pong_sounds_across_the_silences_not_sent() {
    in_chromium(&["demo"], |client, served| {
        check_audio_silences(client, served).boxed()
    })
    .await;
}

/// Glass to glass for a few seconds (`glass-to-glass` measures a minute): the stamp the game
/// draws is read back from every decoded frame in the page.
async fn check_glass_to_glass(client: &Client, served: &Served) {
    // A press a second (`glass-to-glass` presses twice a second): with the other browser tests
    // on CI's two cores the latency can reach half a second, and a press is only timed from a
    // frame showing the key up.
    let report = g2g::measure(
        client,
        served,
        Duration::from_secs(6),
        Duration::from_millis(1000),
    )
    .await
    .expect("measure glass to glass");
    let json = report.to_json();
    eprintln!("glass to glass: {json}");
    let decoded = report.frames.len();
    // About 380 frames on an idle machine; CI's two cores run other suites alongside.
    assert!(
        decoded >= 100,
        "only {decoded} frames decoded in 6 s: {json}"
    );
    assert!(
        report.unreadable as usize * 50 <= decoded,
        "more than 2 % of the decoded frames have no readable stamp: {json}"
    );
    assert_eq!(report.out_of_order(), 0, "frames went backwards: {json}");
    // Same machine, same clock: every frame is decoded after it was drawn.
    let draw = report.draw_to_decoded().expect("latencies");
    assert!(
        draw.min > 0.0 && draw.p50 < 1000.0,
        "draw -> decoded latencies out of range: {json}"
    );
    // Six presses of the up arrow; each shows in the stamp of a later decoded frame.
    assert!(
        report.presses >= 5,
        "the page saw {} presses: {json}",
        report.presses
    );
    assert!(
        report.key_latencies_ms.len() + 1 >= report.presses,
        "key presses not seen in the stamp: {json}"
    );
    let keys = report.key_to_visible().expect("key latencies");
    assert!(
        keys.min > 0.0 && keys.p50 < 2000.0,
        "key press -> visible latencies out of range: {json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_measures_glass_to_glass() {
    in_chromium(&["demo", "--stamp", "--scene", "pong"], |client, served| {
        check_glass_to_glass(client, served).boxed()
    })
    .await;
}

/// Waits until the page has decoded a frame and player 1's input is connected.
const WAIT_PLAYING: &str = r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
(function wait() {
  const s = window.playpodStats, i = window.playpodInput;
  if (s && s.framesDecoded > 0 && i && i.connected) done({ ok: true });
  else if (performance.now() - t0 > 30000) done({ error: 'not playing within 30 s', stats: s || null, input: i || null });
  else setTimeout(wait, 20);
})();
";

/// Waits until the page says the game has ended, then 3 s more: what it shows, and how often
/// each socket had reconnected when it ended and 3 s later.
const WAIT_ENDED: &str = r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
const counts = () => ({ video: window.playpodStats.reconnects,
                        audio: window.playpodAudioStats.reconnects,
                        input: window.playpodInput.reconnects });
(function wait() {
  if (window.playpodEnded) {
    const at = counts();
    setTimeout(() => {
      const message = document.getElementById('message');
      done({ ended: window.playpodEnded, at, after: counts(), message: message.textContent,
             messageShown: message.offsetWidth > 0 && message.offsetHeight > 0, badge: document.getElementById('badge').textContent,
             videoConnected: window.playpodStats.connected, inputConnected: window.playpodInput.connected });
    }, 3000);
  } else if (performance.now() - t0 > 15000) {
    done({ error: 'the page did not say that the game ended within 15 s',
           stats: window.playpodStats, input: window.playpodInput });
  } else {
    setTimeout(wait, 20);
  }
})();
";

/// Starts `playpod pod` on `xvfb`'s framebuffer (320x240), for [`in_chromium_with`].
fn pod_on(xvfb: &Xvfb) -> impl FnOnce() -> Served + Send + 'static {
    let (name, fb) = (xvfb.name(), xvfb.framebuffer());
    move || {
        let fb = fb.to_str().expect("a UTF-8 path").to_owned();
        Served::start(&[
            "pod",
            "--display",
            &name,
            "--framebuffer",
            &fb,
            "--size",
            "320x240",
        ])
    }
}

/// Opens the player as player 1 and waits until it decodes and its input is connected.
async fn play_as_player_1(client: &Client, served: &Served) {
    client
        .goto(&format!("{}?player=1", served.url))
        .await
        .expect("open the player");
    let playing = client
        .execute_async(WAIT_PLAYING, vec![])
        .await
        .expect("wait for the game");
    assert!(playing.get("error").is_none(), "{playing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_says_when_the_game_has_ended() {
    // A game pod whose game exits: its entrypoint stops Xvfb, playpod pod closes every socket
    // with 4004, and the page says so and stops reconnecting (video, audio and input alike),
    // instead of retrying a session that is gone.
    let xvfb = Xvfb::start(320, 240);
    let game = start_game(&xvfb.name(), "pong", (320, 240));
    in_chromium_with(pod_on(&xvfb), move |client, served| {
        async move {
            play_as_player_1(client, served).await;
            tokio::task::spawn_blocking(move || {
                drop(game);
                xvfb.stop();
            })
            .await
            .expect("stop the game and its X server");
            let seen = client
                .execute_async(WAIT_ENDED, vec![])
                .await
                .expect("wait for the end");
            eprintln!("after the game ended: {seen}");
            assert!(seen.get("error").is_none(), "{seen}");
            assert_eq!(seen["ended"], "the game has ended", "{seen}");
            assert_eq!(seen["message"], "The game has ended.", "{seen}");
            assert_eq!(seen["messageShown"], true, "{seen}");
            assert!(
                seen["badge"]
                    .as_str()
                    .is_some_and(|b| b.contains("the game has ended")),
                "{seen}"
            );
            assert_eq!(seen["at"], seen["after"], "a socket reconnected: {seen}");
            assert_eq!(seen["videoConnected"], false, "{seen}");
            assert_eq!(seen["inputConnected"], false, "{seen}");
            let lock = poll_page(client, "s.wakeLock === 'released'", 5).await;
            assert_eq!(
                lock["met"],
                json!(true),
                "the screen is still held on after the end: {lock}"
            );
        }
        .boxed()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_says_when_keys_cannot_reach_the_game() {
    // A display without XTEST: the pod streams it, but closes every input connection with 4003
    // and its reason. The player sees the game and, on the badge, that the keys do not reach
    // it (the pod's words in the tooltip), not an endless "connecting".
    let xvfb = Xvfb::start_with(320, 240, &["-extension", "XTEST"]);
    in_chromium_with(pod_on(&xvfb), move |client, served| {
        async move {
            client
                .goto(&format!("{}?player=1", served.url))
                .await
                .expect("open the player");
            let seen = poll_page(
                client,
                "s && s.framesDecoded > 0 && window.playpodInput.closeCode === 4003 \
                 && document.getElementById('badge').textContent.includes('retrying')",
                15,
            )
            .await;
            let badge = client
                .execute(
                    "const b = document.getElementById('badge'); \
                     return { text: b.textContent, title: b.title, input: window.playpodInput };",
                    vec![],
                )
                .await
                .expect("read the badge");
            eprintln!("keys refused: {seen} {badge}");
            assert_eq!(seen["met"], true, "{seen} {badge}");
            assert_eq!(
                badge["text"], "player 1 · keys not reaching the game · retrying…",
                "{badge}"
            );
            let title = badge["title"].as_str().unwrap_or_default();
            assert!(
                title.contains("display") && title.contains("XTEST"),
                "{badge}"
            );
            assert_eq!(badge["input"]["connected"], false, "{badge}");
        }
        .boxed()
    })
    .await;
    drop(xvfb);
}

/// Answers 404 to every HTTP request on `listener` until `stop`: an address whose route is gone.
fn answer_404(
    listener: std::net::TcpListener,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut tcp, _)) => {
                let _ = tcp.set_nonblocking(false);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_says_when_the_session_is_gone() {
    // The control plane ends a session (TTL, idle): its pod is stopped and its route removed,
    // so its address answers 404. The page, failing to reconnect, asks for itself, finds the
    // 404 and says the session has ended instead of retrying for ever (no answer at all, as
    // during a restart, keeps it trying).
    let xvfb = Xvfb::start(320, 240);
    let _game = start_game(&xvfb.name(), "pong", (320, 240));
    in_chromium_with(pod_on(&xvfb), move |client, served| {
        async move {
            play_as_player_1(client, served).await;
            let addr = served.origin().trim_start_matches("http://").to_owned();
            playpod_ffi::terminate(served.child.id()).expect("stop the pod");
            // Its address now answers 404, as an Ingress does once the session's route is gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            let listener = loop {
                match std::net::TcpListener::bind(&addr) {
                    Ok(listener) => break listener,
                    Err(err) => {
                        assert!(Instant::now() < deadline, "{addr} still taken: {err}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let gone = std::thread::spawn({
                let stop = stop.clone();
                move || answer_404(listener, stop)
            });
            let seen = client
                .execute_async(WAIT_ENDED, vec![])
                .await
                .expect("wait for the end");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            gone.join().expect("the 404 server");
            eprintln!("after the session was gone: {seen}");
            assert!(seen.get("error").is_none(), "{seen}");
            assert_eq!(seen["ended"], "the session has ended", "{seen}");
            assert_eq!(seen["message"], "The session has ended.", "{seen}");
            assert_eq!(seen["at"], seen["after"], "a socket reconnected: {seen}");
            assert_eq!(seen["videoConnected"], false, "{seen}");
        }
        .boxed()
    })
    .await;
}

/// Before the page's own scripts: while `window.__cut` is set, the page's input sockets go to
/// an address that refuses them (as during a network cut); every input socket is kept in
/// `window.__inputSockets`.
const CUT_INPUT: &str = r"
window.__cut = false;
window.__inputSockets = [];
const Real = WebSocket;
window.WebSocket = class extends Real {
  constructor(url, protocols) {
    const input = String(url).includes('/input/');
    super(input && window.__cut ? String(url).replace(/input\/.*/, 'no-such-socket') : url, protocols);
    if (input) window.__inputSockets.push(this);
  }
};
";

/// A page whose input connection broke (as far as it can tell) while the pod still holds it
/// (the pod notices only within `--input-timeout`) comes back as its player's controller, also
/// when its first attempts fail because the network is still down: once only the first retry
/// asked to take over, and the pod refused the later ones (4001), leaving the player locked
/// out until a click.
async fn check_reconnect_after_a_cut(client: &Client, served: &Served) {
    client
        .issue_cmd(Cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": CUT_INPUT }),
        ))
        .await
        .expect("add the network cut");
    client
        .goto(&format!("{}?player=1", served.url))
        .await
        .expect("open the player as player 1");
    let ready = client
        .execute_async(WAIT_PLAYER, vec![])
        .await
        .expect("wait for the player");
    assert!(ready.get("error").is_none(), "{ready}");
    // The page sees its connection break; the connection itself stays open, as one whose
    // network is gone and that the pod has not noticed yet.
    client
        .execute(
            "window.__cut = true; \
             const s = window.__inputSockets[window.__inputSockets.length - 1]; \
             const broke = s.onclose; s.onclose = null; s.onmessage = null; \
             broke(new CloseEvent('close', { code: 1006 }));",
            vec![],
        )
        .await
        .expect("break the input connection");
    let seen = client
        .execute_async(
            r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
let restored = false;
(function wait() {
  const i = window.playpodInput;
  // The break and two failed attempts: the network comes back.
  if (!restored && i.reconnects >= 3) { restored = true; window.__cut = false; }
  const badge = document.getElementById('badge').textContent;
  if (restored && (i.connected || i.closeCode === 4001)) {
    setTimeout(() => done({ input: { ...window.playpodInput }, badge: document.getElementById('badge').textContent }), 500);
  } else if (performance.now() - t0 > 15000) {
    done({ error: 'no reconnection within 15 s', restored, input: i, badge });
  } else {
    setTimeout(wait, 20);
  }
})();
",
            vec![],
        )
        .await
        .expect("watch the reconnection");
    eprintln!("after the cut: {seen}");
    assert!(seen.get("error").is_none(), "{seen}");
    assert_eq!(seen["input"]["connected"], json!(true), "{seen}");
    assert_eq!(seen["badge"], json!("player 1 · connected"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_player_comes_back_after_a_network_cut() {
    in_chromium(
        &["demo", "--scene", "pong", "--no-audio"],
        |client, served| check_reconnect_after_a_cut(client, served).boxed(),
    )
    .await;
}

/// A video connection that stays open but brings nothing (here the pod is stopped; a network
/// change does the same) is given up after 5 s and a new one made at once: once the page
/// waited for the dead connection's closing handshake, which nothing answers (Chromium gives
/// up on it after a minute), before it tried again.
async fn check_silent_video_reconnects(client: &Client, served: &Served) {
    client.goto(&served.url).await.expect("open the player");
    let playing = poll_page(client, "s.connected && s.fps > 20", 30).await;
    assert_eq!(
        playing["met"],
        json!(true),
        "the game never played: {playing}"
    );
    let stopped = Stopped::new(served.child.id());
    let silent = poll_page(client, "s.reconnects > 0", 9).await;
    drop(stopped);
    eprintln!("pod stopped: {silent}");
    assert_eq!(
        silent["met"],
        json!(true),
        "no new connection within 9 s of the pod going silent: {silent}"
    );
    let back = poll_page(client, "s.connected && s.fps > 20", 15).await;
    eprintln!("pod going on: {back}");
    assert_eq!(
        back["met"],
        json!(true),
        "the page did not play again: {back}"
    );
    assert_eq!(int(&back["stats"], "reconnects"), 1, "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reconnects_a_silent_video_connection() {
    in_chromium(&["demo", "--no-audio"], |client, served| {
        check_silent_video_reconnects(client, served).boxed()
    })
    .await;
}

/// Before the page's own scripts: every socket of the page is kept in `window.__sockets`
/// (`__kind`: video, audio or input; `__heard`: the messages it delivered), and `window.__deaden(s)` turns one into a
/// connection whose network is gone without a goodbye: what the page sends or closes goes
/// nowhere, and nothing comes back, not even a close event.
const DEAD_SOCKETS: &str = r"
window.__sockets = [];
const Real = WebSocket;
window.WebSocket = class extends Real {
  constructor(url, protocols) {
    super(url, protocols);
    this.__kind = String(url).includes('/input/') ? 'input' : String(url).endsWith('/audio') ? 'audio' : 'video';
    this.__heard = 0;
    this.addEventListener('message', () => { if (!this.__dead) this.__heard++; });
    window.__sockets.push(this);
  }
};
for (const type of ['open', 'close', 'message', 'error']) {
  const real = Object.getOwnPropertyDescriptor(Real.prototype, 'on' + type);
  Object.defineProperty(window.WebSocket.prototype, 'on' + type, {
    get() { return this['__on' + type] ?? null; },
    set(f) {
      this['__on' + type] = f;
      real.set.call(this, f && ((ev) => { if (!this.__dead) f.call(this, ev); }));
    },
  });
}
window.__deaden = (s) => { s.__dead = true; s.send = () => {}; s.close = () => {}; };
window.__socketsNow = () => window.__sockets.map((s) => ({
  kind: s.__kind, url: s.url, readyState: s.readyState, dead: !!s.__dead, heard: s.__heard }));
";

/// A counter from the pod's `/metrics`.
fn metric(served: &Served, name: &str) -> f64 {
    let (status, _, body) = http_get(&served.origin(), "/metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics: {body}"))
}

/// After a network change (Wi-Fi switched, a laptop asleep) the page's connections can stay
/// open on a network that is gone, and nothing closes them in time (the page cannot see the
/// pod's pings, and TCP gives up only minutes later). The video notices (nothing for 5 s);
/// the input and audio cannot tell by themselves, so the page replaces them along with the
/// video: the input as its player's controller (the pod has not noticed the old connection
/// died), sending the keys held now. Once the page went on sending its keys into the dead
/// connection, and heard no sound again, until TCP gave up.
async fn check_dead_input_recovers(client: &Client, served: &Served) {
    client
        .issue_cmd(Cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": DEAD_SOCKETS }),
        ))
        .await
        .expect("add the dead sockets");
    play_as_player_1(client, served).await;
    let audio = poll_page(
        client,
        "window.__sockets.some((x) => x.__kind === 'audio' && x.__heard >= 2)",
        10,
    )
    .await;
    assert_eq!(audio["met"], json!(true), "no audio connection: {audio}");
    let takeovers = metric(served, "playpod_input_takeovers_total");
    // The network goes: the page's connections die without a word (the pod still holds them).
    let sockets = client
        .execute(
            "window.__sockets.forEach(window.__deaden); return window.__socketsNow();",
            vec![],
        )
        .await
        .expect("kill the connections");
    eprintln!("dead: {sockets}");
    // Up, held from now on: the page sends it into the dead connection.
    const UP: char = '\u{e013}';
    client
        .perform_actions(KeyActions::new("keyboard".to_owned()).then(KeyAction::Down { value: UP }))
        .await
        .expect("hold up");
    let messages = metric(served, "playpod_input_messages_total");
    let silent = poll_page(client, "s.reconnects > 0", 8).await;
    let back_at = Instant::now();
    assert_eq!(
        silent["met"],
        json!(true),
        "the video did not give up its silent connection: {silent}"
    );
    let back = poll_page(
        client,
        "(() => { const i = window.playpodInput, all = window.__sockets; \
          const last = (k) => all.filter((x) => x.__kind === k).pop(); \
          return i.connected && !last('input').__dead && last('input').readyState === 1 \
            && !last('audio').__dead && last('audio').__heard >= 2; })()",
        8,
    )
    .await;
    let sockets = client
        .execute(
            "return { sockets: window.__socketsNow(), input: window.playpodInput, \
                      audio: window.playpodAudioStats };",
            vec![],
        )
        .await
        .expect("read the sockets");
    eprintln!(
        "{:.1} s after the video gave up: {back}\n{sockets}",
        back_at.elapsed().as_secs_f64()
    );
    assert_eq!(
        back["met"],
        json!(true),
        "the page did not connect its input and audio anew within 8 s: {sockets}"
    );
    // The new input connection took the slot over, and brought the key held.
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(served, "playpod_input_messages_total") < messages + 1.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(served, "playpod_input_takeovers_total"),
        takeovers + 1.0,
        "{sockets}"
    );
    assert!(
        metric(served, "playpod_input_messages_total") >= messages + 1.0,
        "the key held did not reach the pod: {sockets}"
    );
    assert_eq!(sockets["input"]["lastSent"], json!(1), "{sockets}");
    client
        .perform_actions(KeyActions::new("keyboard".to_owned()).then(KeyAction::Up { value: UP }))
        .await
        .expect("release up");
    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(served, "playpod_input_messages_total") < messages + 2.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metric(served, "playpod_input_messages_total") >= messages + 2.0,
        "the release did not reach the pod"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_recovers_input_and_audio_after_a_network_change() {
    in_chromium(&["demo", "--scene", "pong"], |client, served| {
        check_dead_input_recovers(client, served).boxed()
    })
    .await;
}

/// Counts the animation-frame callbacks the page has asked for and not yet had
/// (`window.__frameCallbacks`).
const COUNT_FRAME_CALLBACKS: &str = r"
window.__frameCallbacks = 0;
const request = window.requestAnimationFrame;
window.requestAnimationFrame = (f) => {
  window.__frameCallbacks++;
  return request((t) => { window.__frameCallbacks--; f(t); });
};
";

/// The page in a background tab (hidden, so the browser runs no animation frames): the keys
/// held are released on the wire, and the page does not pile up a drawing callback per decoded
/// frame (once 60 a second, for as long as the tab stayed in the background); back in front,
/// it draws again.
async fn check_background_tab(client: &Client, served: &Served) {
    client
        .goto(&format!("{}?player=1", served.url))
        .await
        .expect("open the player as player 1");
    let ready = client
        .execute_async(WAIT_PLAYER, vec![])
        .await
        .expect("wait for the player");
    assert!(ready.get("error").is_none(), "{ready}");
    client
        .execute(COUNT_FRAME_CALLBACKS, vec![])
        .await
        .expect("count frame callbacks");
    const UP: char = '\u{e013}';
    client
        .perform_actions(KeyActions::new("keyboard".to_owned()).then(KeyAction::Down { value: UP }))
        .await
        .expect("hold up");
    let held = client
        .execute("return window.playpodInput.lastSent;", vec![])
        .await
        .expect("read the input");
    assert_eq!(held, json!(1), "up held: {held}");
    // The screen is held on in front (asked for once the stream is described: a moment).
    let held = poll_page(client, "s.wakeLock === 'held'", 5).await;
    assert_eq!(
        held["met"],
        json!(true),
        "the screen is not held on in front: {held}"
    );
    let before = client
        .execute("return window.playpodStats;", vec![])
        .await
        .expect("read the stats");
    // A new tab in front hides this one.
    client
        .issue_cmd(Cdp("Target.createTarget", json!({ "url": "about:blank" })))
        .await
        .expect("open a tab in front");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hidden = client
        .execute(
            "return { hidden: document.hidden, callbacks: window.__frameCallbacks, \
                      input: window.playpodInput, stats: window.playpodStats };",
            vec![],
        )
        .await
        .expect("read the hidden page");
    eprintln!("3 s in the background: {hidden}");
    assert_eq!(hidden["hidden"], json!(true), "{hidden}");
    assert_eq!(
        hidden["stats"]["wakeLock"],
        json!("released"),
        "the hidden page kept the screen on: {hidden}"
    );
    assert_eq!(
        hidden["input"]["lastSent"],
        json!(0),
        "a key stayed held: {hidden}"
    );
    assert!(
        int(&hidden, "callbacks") <= 2,
        "{} drawing callbacks waiting: {hidden}",
        hidden["callbacks"]
    );
    // Frames decoded while hidden are not drawn, and not counted as dropped either.
    let dropped = int(&hidden["stats"], "droppedFrames") - int(&before, "droppedFrames");
    assert!(
        dropped <= 2,
        "{dropped} frames counted as dropped while hidden: {hidden}"
    );
    client
        .issue_cmd(Cdp("Page.bringToFront", json!({})))
        .await
        .expect("bring the page to front");
    client
        .perform_actions(KeyActions::new("keyboard".to_owned()).then(KeyAction::Up { value: UP }))
        .await
        .expect("release up");
    let drawn = int(&hidden["stats"], "framesDrawn");
    let back = poll_page(
        client,
        &format!("!document.hidden && s.framesDrawn > {drawn} + 10"),
        10,
    )
    .await;
    assert_eq!(
        back["met"],
        json!(true),
        "the page did not draw again: {back}"
    );
    let held = poll_page(client, "s.wakeLock === 'held'", 5).await;
    assert_eq!(
        held["met"],
        json!(true),
        "back in front, the screen is not held on again: {held}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_page_in_a_background_tab() {
    in_chromium(&["demo", "--no-audio"], |client, served| {
        check_background_tab(client, served).boxed()
    })
    .await;
}

/// What the badge says and where it is, with the take-over button (and what a tap on its centre
/// reaches), and the controls the badge must not cover, as `[id, left, top, right, bottom]`.
const READ_BADGE: &str = r"
const rect = (e) => { const r = e.getBoundingClientRect(); return [e.id, r.left, r.top, r.right, r.bottom]; };
const take = document.getElementById('takeover');
const r = take && take.getBoundingClientRect();
const hit = r && document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
return { text: document.getElementById('badge').textContent, badge: rect(document.getElementById('badge')),
         tapped: hit ? hit.id || hit.textContent : null, closeCode: window.playpodInput.closeCode,
         others: ['players', 'audio', 'stats'].map((id) => rect(document.getElementById(id))) };
";

/// A player's page that another connection replaced (4002), or that finds its player taken
/// (4001), says so in words for someone using the page and offers to take over, also on a phone
/// held upright: once the pod's reason for other clients ("reconnect with ?takeover=1") ran
/// over two or three lines, under the sound button and the player choice, and a tap on
/// "take over" reached the sound button instead.
async fn check_taken_player(client: &Client, served: &Served) {
    client
        .goto(&format!("{}?player=1", served.url))
        .await
        .expect("open the player as player 1");
    let ready = client
        .execute_async(WAIT_PLAYER, vec![])
        .await
        .expect("wait for the player");
    assert!(ready.get("error").is_none(), "{ready}");
    client
        .set_window_size(390, 844)
        .await
        .expect("a phone-sized window");
    let other = format!("{}input/1?takeover=1", served.url.replacen("http", "ws", 1));
    let (_other, _) = tokio_tungstenite::connect_async(&other)
        .await
        .expect("take player 1 over");
    let poll = |code: u16| {
        format!(
            "window.playpodInput.closeCode === {code} && document.getElementById('takeover') && \
             performance.now() - t0 > 600"
        )
    };
    for (code, how) in [(4002, "replaced"), (4001, "refused")] {
        if code == 4001 {
            client
                .execute(
                    "document.querySelector('#players [data-player=\"1\"]').click();",
                    vec![],
                )
                .await
                .expect("ask for player 1 again");
        }
        let met = poll_page(client, &poll(code), 10).await;
        assert_eq!(
            met["met"],
            json!(true),
            "no {code} with a take-over button: {met}"
        );
        let seen = client
            .execute(READ_BADGE, vec![])
            .await
            .expect("read the badge");
        eprintln!("{how}: {seen}");
        let text = seen["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("player 1 · ") && !text.contains("?takeover"),
            "{how}: {seen}"
        );
        assert_eq!(seen["tapped"], json!("takeover"), "{how}: {seen}");
        let n = |v: &Value, i: usize| v[i].as_f64().expect("a coordinate");
        let badge = &seen["badge"];
        for other in seen["others"].as_array().expect("controls") {
            let overlap = n(badge, 1) < n(other, 3)
                && n(other, 1) < n(badge, 3)
                && n(badge, 2) < n(other, 4)
                && n(other, 2) < n(badge, 4);
            assert!(!overlap, "{how}: the badge covers {}: {seen}", other[0]);
        }
    }
    client
        .find(fantoccini::Locator::Id("takeover"))
        .await
        .expect("the take-over button")
        .click()
        .await
        .expect("take over");
    let back = poll_page(client, "window.playpodInput.connected", 10).await;
    assert_eq!(back["met"], json!(true), "not player 1 again: {back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_says_when_its_player_is_taken() {
    in_chromium(&["demo", "--no-audio"], |client, served| {
        check_taken_player(client, served).boxed()
    })
    .await;
}
