//! A real Prometheus server (Debian's `prometheus`) scrapes a running `playpod demo`, with a
//! video viewer and a player connected, and the control plane's HTTP API (its code against the
//! fake Kubernetes API server, after sessions were created, deleted, reaped and refused), every
//! second. The test then asks Prometheus, through its HTTP API, what it stored: both targets are
//! up, the pod encodes at the demo's frame rate, the ready -> ring histogram gives a finite p99,
//! the build facts, viewers, players and audio state are what the test set up, and dropped frames
//! are one family by reason. Every metric the Grafana dashboard
//! (charts/playpod/dashboards/playpod.json) uses must exist in Prometheus, and every panel's query
//! must evaluate to data. Last, tests/charts/metric-names.txt (the names the chart checks hold the
//! dashboard to) must equal the names Prometheus saw: run with `PLAYPOD_UPDATE_METRIC_NAMES=1` to
//! rewrite it after a metric is added, renamed or removed.

mod control_common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use control_common::{FakeApi, FakeProbe, plane};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use playpod_tests::{Guard, Served, have};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const API_TOKEN: &str = "prometheus-test-token-0123456789";
/// How long a condition on the stored series may take to hold (the first scrapes, the rate
/// windows filling up) before the test fails.
const PATIENCE: Duration = Duration::from_secs(40);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

fn require_prometheus() {
    assert!(
        have("prometheus"),
        "this test needs a real Prometheus server, but `prometheus` is not on PATH: install it \
         with `apt-get install prometheus` (the README's test command, ./test.sh, does this)"
    );
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn http_get(http: &HttpClient, url: &str, bearer: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::builder().method(Method::GET).uri(url);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        http.request(request.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("GET {url}: no answer within 10 s"))
    .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Prometheus server on a free port with its configuration and storage in a temporary
/// directory; killed (and waited for) on drop, and sent SIGTERM by the kernel if the thread
/// that started it dies first.
struct Prometheus {
    _child: Guard,
    origin: String,
    http: HttpClient,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `/metrics` of each `(job, host:port)` every second, and waits
    /// until it is ready.
    async fn start(jobs: &[(&str, String)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("playpod-prometheus-")
            .tempdir()
            .expect("temp dir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n",
        );
        for (job, target) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    metrics_path: /metrics\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log_path = dir.path().join("prometheus.log");
        let http = http_client();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut cmd = Command::new("prometheus");
            cmd.arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log);
            playpod_ffi::supervised(&mut cmd);
            let mut child = Guard(cmd.spawn().expect("start prometheus"));
            let origin = format!("http://127.0.0.1:{port}");
            let started = Instant::now();
            loop {
                if let Some(status) = child.0.try_wait().expect("wait prometheus") {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    assert!(
                        attempt < 3 && log.contains("address already in use"),
                        "prometheus exited ({status}) at start:\n{log}"
                    );
                    break; // another process took the port meanwhile: try another
                }
                let ready = Request::get(format!("{origin}/-/ready"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                if let Ok(Ok(response)) =
                    tokio::time::timeout(Duration::from_secs(2), http.request(ready)).await
                    && response.status() == StatusCode::OK
                {
                    println!(
                        "prometheus ready on port {port} after {:.2} s",
                        started.elapsed().as_secs_f64()
                    );
                    return Self {
                        _child: child,
                        origin,
                        http,
                        dir,
                    };
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "prometheus not ready within 30 s:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/PATH`: the `data` of a successful answer.
    async fn api(&self, path_and_query: &str) -> Value {
        let url = format!("{}/api/v1/{path_and_query}", self.origin);
        let (status, body) = http_get(&self.http, &url, None).await;
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url}: {status}, not JSON ({e}): {body}"));
        assert_eq!(answer["status"], "success", "GET {url}: {status} {answer}");
        answer["data"].clone()
    }

    /// An instant query: the result vector, or Prometheus's error message.
    async fn try_query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/query?query={}", self.origin, encode(expr));
        let (status, body) = http_get(&self.http, &url, None).await;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}, not JSON ({e}): {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{status}: {answer}"));
        }
        match answer["data"]["resultType"].as_str() {
            Some("vector") => Ok(answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            Some("scalar") => Ok(vec![
                json!({"metric": {}, "value": answer["data"]["result"]}),
            ]),
            other => Err(format!("unexpected result type {other:?}: {answer}")),
        }
    }

    async fn query(&self, expr: &str) -> Vec<Value> {
        self.try_query(expr)
            .await
            .unwrap_or_else(|e| panic!("query {expr}: {e}"))
    }

    /// Polls `expr` (one sample) until `good` holds of its value, for up to [`PATIENCE`];
    /// returns the last value seen (`None`: no single sample yet).
    async fn eventually(&self, expr: &str, good: impl Fn(f64) -> bool) -> Option<f64> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let result = self.query(expr).await;
            let value = match &result[..] {
                [one] => Some(sample_value(one)),
                _ => None,
            };
            if value.is_some_and(&good) || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The value of one sample of a query result (`"NaN"` and `"+Inf"` included).
fn sample_value(sample: &Value) -> f64 {
    let text = sample["value"][1].as_str().unwrap_or("NaN");
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text.parse().unwrap_or(f64::NAN),
    }
}

/// Every `playpod_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("playpod_") {
        let preceded_by_word = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The dashboard's panels (rows' nested panels included) and its variables' queries.
fn dashboard() -> (Vec<Value>, Vec<String>) {
    let path = repo_root().join("charts/playpod/dashboards/playpod.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut panels = Vec::new();
    for panel in json["panels"].as_array().expect("panels") {
        for nested in panel["panels"].as_array().into_iter().flatten() {
            panels.push(nested.clone());
        }
        panels.push(panel.clone());
    }
    let variables = json["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            v["definition"]
                .as_str()
                .expect("a variable query")
                .to_owned()
        })
        .collect();
    (panels, variables)
}

/// A dashboard expression as Grafana would send it with every variable on "All".
fn substitute(expr: &str) -> String {
    expr.replace("$namespace", ".*")
        .replace("$pod", ".*")
        .replace("$__rate_interval", "10s")
        .replace("$__range", "30s")
}

/// The fixture the chart checks read: every metric name the code exposes.
const NAMES_FIXTURE: &str = "tests/charts/metric-names.txt";

fn read_names_fixture() -> BTreeSet<String> {
    let path = repo_root().join(NAMES_FIXTURE);
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn write_names_fixture(names: &BTreeSet<String>) {
    let mut text = String::from(
        "# Every metric name playpod exposes (a game pod's /metrics and the control plane's), as\n\
         # Prometheus stores them. tests/charts/check.py holds the Grafana dashboard to this list;\n\
         # tests/tests/prometheus.rs checks it against a real Prometheus scraping both, and\n\
         # rewrites it with PLAYPOD_UPDATE_METRIC_NAMES=1.\n",
    );
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    std::fs::write(repo_root().join(NAMES_FIXTURE), text).expect("write the names fixture");
}

/// The control plane's API, served over HTTP on a free port, after it created four sessions
/// (one of which failed), deleted one, reaped one whose pod ended, and refused a request without
/// the token: every one of its series has a sample.
async fn control_plane(http: &HttpClient) -> (SocketAddr, FakeApi) {
    let api = FakeApi::start().await;
    let plane = plane(&api, Arc::new(FakeProbe::default()), 10);
    let deleted = plane.create("pong").await.expect("create");
    let ended = plane.create("pong").await.expect("create");
    plane.create("pong").await.expect("create");
    api.fail(Method::PATCH, "services", 409, 1);
    plane
        .create("pong")
        .await
        .expect_err("the API server refuses the Service");
    plane.delete(&deleted.id).await.expect("delete");
    api.set_pod_status(
        &playpod::control::manifests::object_name(&ended.id),
        json!({"phase": "Failed", "podIP": "10.0.0.3"}),
    );
    let reaped = plane.reap_once(jiff::Timestamp::now()).await.expect("reap");
    assert_eq!(reaped, vec![(ended.id.clone(), "ended")]);

    let app = playpod::control::api::router(plane, API_TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (status, _) = http_get(http, &format!("http://{addr}/api/sessions"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = http_get(
        http,
        &format!("http://{addr}/api/sessions"),
        Some(API_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (addr, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_a_pod_and_the_control_plane() {
    require_prometheus();
    let started = Instant::now();
    let http = http_client();

    // The pod, watched by one viewer and played by player 1.
    let demo = tokio::task::block_in_place(|| Served::start(&["demo"]));
    let origin = demo.origin();
    let ws_base = demo.url.replacen("http://", "ws://", 1);
    let (mut video, _) = tokio_tungstenite::connect_async(format!("{ws_base}video"))
        .await
        .expect("video socket");
    let received = Arc::new(AtomicU64::new(0));
    let viewer = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(Ok(msg)) = video.next().await {
                if matches!(msg, Message::Binary(_)) {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let (mut input, _) = tokio_tungstenite::connect_async(format!("{ws_base}input/1"))
        .await
        .expect("input socket");
    let player = tokio::spawn(async move {
        // Up pressed and released, 20 times: input messages and their latency.
        for i in 0..40u8 {
            if input
                .send(Message::Binary(vec![i % 2].into()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        while let Some(Ok(_)) = input.next().await {}
    });

    let (control, _api) = control_plane(&http).await;
    let pod_target = origin.trim_start_matches("http://").to_owned();
    let prometheus =
        Prometheus::start(&[("pod", pod_target), ("control", control.to_string())]).await;

    // Both targets up, as Prometheus's target page says.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let targets = prometheus.api("targets?state=active").await;
        let health: Vec<(String, String, String)> = targets["activeTargets"]
            .as_array()
            .expect("activeTargets")
            .iter()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or("").to_owned(),
                    t["health"].as_str().unwrap_or("").to_owned(),
                    t["lastError"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        if health.len() == 2 && health.iter().all(|(_, h, _)| h == "up") {
            println!("targets up: {health:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "targets not up within {PATIENCE:?}: {health:?}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for job in ["pod", "control"] {
        let up = prometheus
            .eventually(&format!("up{{job=\"{job}\"}}"), |v| v == 1.0)
            .await;
        assert_eq!(up, Some(1.0), "up{{job={job:?}}}");
    }

    // Frames are encoded since the viewer connected, before Prometheus started: once it holds
    // five seconds of samples, the rate window lies wholly in the streaming time.
    let samples = prometheus
        .eventually("count_over_time(playpod_frames_encoded_total[5s])", |v| {
            v >= 5.0
        })
        .await;
    assert!(
        samples.is_some_and(|v| v >= 5.0),
        "samples in 5 s: {samples:?}"
    );
    let fps = prometheus
        .eventually("rate(playpod_frames_encoded_total[5s])", |v| v > 30.0)
        .await;
    println!("encoded fps (rate over 5 s, as Prometheus computes it): {fps:?}");
    assert!(
        fps.is_some_and(|v| v > 30.0),
        "rate(playpod_frames_encoded_total[5s]) = {fps:?}, want > 30 (the demo runs at 60 fps); \
         the viewer received {} frames",
        received.load(Ordering::Relaxed)
    );

    let p99 = prometheus
        .eventually(
            "histogram_quantile(0.99, rate(playpod_frame_ready_to_ring_seconds_bucket[10s]))",
            |v| v.is_finite() && v < 1.0,
        )
        .await;
    println!("frame ready -> ring p99 over 10 s: {p99:?} s");
    assert!(
        p99.is_some_and(|v| v.is_finite() && (0.0..1.0).contains(&v)),
        "ready -> ring p99 = {p99:?}, want a finite number of seconds below 1"
    );

    let viewers = prometheus.eventually("playpod_viewers", |v| v == 1.0).await;
    assert_eq!(
        viewers,
        Some(1.0),
        "playpod_viewers with one viewer connected"
    );
    let players = prometheus.eventually("playpod_players", |v| v == 1.0).await;
    assert_eq!(
        players,
        Some(1.0),
        "playpod_players with player 1 connected"
    );
    let messages = prometheus
        .eventually("playpod_input_messages_total", |v| v >= 40.0)
        .await;
    assert_eq!(
        messages,
        Some(40.0),
        "the 40 input messages the player sent"
    );
    // The demo runs its own PulseAudio: the audio path is up.
    let audio = prometheus
        .eventually("playpod_audio_state", |v| v == 2.0)
        .await;
    assert_eq!(audio, Some(2.0), "playpod_audio_state (2: ok)");

    let build = prometheus.query("playpod_build_info").await;
    assert_eq!(build.len(), 1, "{build:?}");
    let labels = &build[0]["metric"];
    println!("playpod_build_info: {labels}");
    assert!(
        ["openh264", "nvenc"].contains(&labels["encoder"].as_str().unwrap_or("")),
        "encoder label: {labels}"
    );
    assert!(
        ["cpu", "cuda"].contains(&labels["conversion"].as_str().unwrap_or("")),
        "conversion label: {labels}"
    );
    assert_eq!(labels["capture"], "fbdir", "{labels}");
    assert_eq!(sample_value(&build[0]), 1.0);

    let dropped = prometheus.query("playpod_frames_dropped_total").await;
    let reasons: BTreeSet<&str> = dropped
        .iter()
        .filter_map(|s| s["metric"]["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["late", "oversize", "rate"]),
        "playpod_frames_dropped_total by reason: {dropped:?}"
    );
    for old in [
        "playpod_frames_dropped_late_total",
        "playpod_frames_dropped_oversize_total",
    ] {
        assert!(
            prometheus.query(old).await.is_empty(),
            "{old} still exported"
        );
    }
    let control_active = prometheus
        .eventually("playpod_control_sessions_active", |v| v == 1.0)
        .await;
    assert_eq!(
        control_active,
        Some(1.0),
        "one session left in the control plane"
    );

    // The dashboard: every name it uses exists, and every panel's query gives data.
    let stored: BTreeSet<String> = prometheus
        .api("label/__name__/values")
        .await
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|n| n.starts_with("playpod_"))
        .map(str::to_owned)
        .collect();
    let (panels, variables) = dashboard();
    let mut used = BTreeSet::new();
    let mut failures = Vec::new();
    let mut queries = 0;
    for panel in &panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            used.extend(metric_names(expr));
            queries += 1;
            match prometheus.try_query(&substitute(expr)).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => failures.push(format!("{:?}: {expr}: no data", panel["title"])),
                Err(e) => failures.push(format!("{:?}: {expr}: {e}", panel["title"])),
            }
        }
    }
    for definition in &variables {
        used.extend(metric_names(definition));
    }
    let missing: Vec<&String> = used.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics Prometheus never saw: {missing:?}\nstored: {stored:?}"
    );
    assert!(
        failures.is_empty(),
        "dashboard queries that fail or give no data:\n{}",
        failures.join("\n")
    );
    println!(
        "dashboard: {} panels, {queries} queries, {} metric names, all present and answering",
        panels.len(),
        used.len()
    );

    // The fixture of the chart checks is what the code exposes.
    if std::env::var_os("PLAYPOD_UPDATE_METRIC_NAMES").is_some() {
        write_names_fixture(&stored);
        println!("wrote {NAMES_FIXTURE} ({} names)", stored.len());
    }
    let fixture = read_names_fixture();
    let gone: Vec<&String> = fixture.difference(&stored).collect();
    let new: Vec<&String> = stored.difference(&fixture).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{NAMES_FIXTURE} is out of date: not exposed any more: {gone:?}; not listed: {new:?}. \
         Rerun this test with PLAYPOD_UPDATE_METRIC_NAMES=1 to rewrite it."
    );

    viewer.abort();
    player.abort();
    drop(prometheus);
    drop(demo);
    println!(
        "prometheus test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn metric_names_of_an_expression() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (pod, le) (rate(playpod_encode_seconds_bucket\
         {namespace=~\"$namespace\"}[5m]))) / my_playpod_thing + playpod_viewers",
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "playpod_encode_seconds_bucket".to_owned(),
            "playpod_viewers".to_owned()
        ])
    );
}
