//! End to end in a real browser: `playpod demo` streams Pong to headless Chromium, driven over
//! WebDriver (chromedriver) on 127.0.0.1. The page decodes the H.264 stream with WebCodecs at
//! full rate and its canvas shows the game, moving; a wrong token gets the same 404 as any
//! unknown path.
//!
//! Needs Debian's `chromium` and `chromium-driver` (the README's test command installs them);
//! without them this test fails rather than skipping.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use futures_util::FutureExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use playpod_tests::{Served, have};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// chromedriver on a free 127.0.0.1 port, in a process group of its own so that it and the
/// Chromium it started are killed on drop, whatever happened in the test.
struct Chromedriver {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Chromedriver {
    fn start() -> Self {
        let log = tempfile::Builder::new()
            .prefix("playpod-chromedriver-")
            .suffix(".log")
            .tempfile()
            .expect("log file");
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .arg(format!("--log-path={}", log.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        // "ChromeDriver was started successfully on port 45887."
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split_once("started successfully on port ") {
                    let port = rest.1.trim_end_matches('.').trim().parse::<u16>();
                    let _ = tx.send(port);
                }
            }
        });
        let mut driver = Self {
            child,
            port: 0,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(port)) => driver.port = port,
            other => panic!(
                "chromedriver did not report its port within 20 s ({other:?}; exit: {:?})\n{}",
                driver.child.try_wait(),
                driver.log_tail()
            ),
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "chromedriver log (last lines):\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browser it launched.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_browser() {
    let missing: Vec<&str> = [
        (
            Path::new(CHROMIUM).is_file(),
            "chromium (/usr/bin/chromium)",
        ),
        (have(CHROMEDRIVER), "chromedriver (on PATH)"),
    ]
    .into_iter()
    .filter_map(|(ok, what)| (!ok).then_some(what))
    .collect();
    assert!(
        missing.is_empty(),
        "this end-to-end test needs a real browser, but {} is missing: install it with \
         `apt-get install chromium chromium-driver` (the README's test command does this)",
        missing.join(" and ")
    );
}

async fn new_session(driver: &Chromedriver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "timeouts".into(),
        json!({ "script": 60_000, "pageLoad": 30_000, "implicit": 0 }),
    );
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--window-size=1024,1024",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(caps);
    match tokio::time::timeout(Duration::from_secs(45), builder.connect(&driver.url())).await {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => panic!(
            "cannot start a Chromium session: {err}\n{}",
            driver.log_tail()
        ),
        Err(_) => panic!("no Chromium session within 45 s\n{}", driver.log_tail()),
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_demo() {
    require_browser();
    let started = Instant::now();
    let profile = tempfile::Builder::new()
        .prefix("playpod-chromium-")
        .tempdir()
        .expect("profile dir");
    let served = tokio::task::spawn_blocking(|| Served::start(&["demo"]))
        .await
        .expect("start the demo");
    let driver = Chromedriver::start();
    let client = new_session(&driver, profile.path()).await;
    eprintln!(
        "demo and Chromium ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let result = std::panic::AssertUnwindSafe(check_player(&client, &served))
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
