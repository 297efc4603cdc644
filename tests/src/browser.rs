//! Headless Chromium driven over WebDriver (chromedriver) on 127.0.0.1, for the end-to-end tests
//! and the glass-to-glass harness.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::have;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "chromedriver";

/// chromedriver on a free 127.0.0.1 port, in a process group of its own so that it and the
/// Chromium it started are killed on drop, whatever happened in the test.
#[derive(Debug)]
pub struct Chromedriver {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Chromedriver {
    pub fn start() -> Self {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self) -> String {
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

/// Panics with how to install them when Chromium or chromedriver is missing.
pub fn require_browser() {
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

/// A new headless Chromium session with its profile in `profile`.
pub async fn new_session(driver: &Chromedriver, profile: &Path) -> Client {
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

/// Waits in the page until the input channel is connected and frames are drawn.
pub const WAIT_PLAYER: &str = r"
const done = arguments[arguments.length - 1];
const t0 = performance.now();
(function wait() {
  const input = window.playpodInput, s = window.playpodStats;
  if (input && input.connected && s && s.framesDrawn > 10) {
    done({ input, stats: s });
  } else if (performance.now() - t0 > 30000) {
    done({ error: 'no connected input channel and drawn frames within 30 s', input: input || null, stats: s || null });
  } else {
    setTimeout(wait, 20);
  }
})();
";
