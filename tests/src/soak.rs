//! A soak run: `playpod demo` (or `playpod pod` on an Xvfb and game of its own, as in a session's
//! pod) kept busy by viewers, listeners and players that come and go, for as long as asked,
//! while its memory, file descriptors, threads and CPU are sampled.
//!
//! What keeps it busy, all at once:
//! - one steady viewer and one steady listener for the whole run, which must miss nothing (no gap
//!   in the video's or the audio's sequence numbers);
//! - viewers and listeners that connect, read a few frames or packets, sometimes ask for a
//!   keyframe, the pod's clock or the low rendition (whose first frame must be a keyframe), and
//!   leave, half of them without a close frame;
//! - both players, pressing random keys at 60 messages a second in binary and JSON, now and then
//!   a bad message (each must get its `{"error":...}`), leaving with keys held, half of them
//!   without a close frame; and a second controller of player 1 that must be refused (4001) and
//!   then takes over (the one it replaces is closed with 4002);
//! - the page, `/readyz`, `/metrics` and a wrong token (404), four times a second.
//!
//! At the end the pod must be as it was after warming up: every churned connection gone from the
//! metrics (the low rendition's viewers too), no key held on the X server, no more file descriptors or threads than then, its
//! memory grown by at most the given limit; and on SIGTERM it must exit 0 leaving none of its
//! processes, no framebuffer or sound-server directory and no shared-memory segment behind.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::{Served, Xvfb, start_game};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What to run and what to allow.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the churn lasts.
    pub duration: Duration,
    /// Time between two samples of the pod.
    pub sample_every: Duration,
    /// The pod's baseline is its sample at this time (allocator pools and the tokio runtime
    /// have grown to their working size by then).
    pub warm_up: Duration,
    /// How much the pod's resident memory may grow from the baseline to the end.
    pub max_rss_growth_kib: u64,
    /// Stream with `playpod pod --framebuffer` from an Xvfb and game started here, as in a
    /// session's pod, instead of `playpod demo` (no audio then).
    pub pod: bool,
    /// More arguments for `playpod demo` (or `playpod pod`).
    pub extra_args: Vec<String>,
}

/// One look at the pod.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub at_s: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    /// The children (Xvfb, the game, PulseAudio) together.
    pub children_rss_kib: u64,
    /// Share of one core the pod used since the previous sample.
    pub cpu_share: f64,
    pub viewers: f64,
    pub players: f64,
    pub frames_encoded: f64,
    /// Opus packets published (silence is not: only sound and the frames that end it).
    pub audio_packets: f64,
}

/// What the churning clients counted.
#[derive(Debug, Default)]
struct Tally {
    video_sessions: AtomicU64,
    audio_sessions: AtomicU64,
    player_sessions: AtomicU64,
    player_messages: AtomicU64,
    bad_messages_answered: AtomicU64,
    refusals: AtomicU64,
    takeovers: AtomicU64,
    replaced: AtomicU64,
    keyframes_asked: AtomicU64,
    /// Viewers that asked for the low rendition and were moved there.
    moved_low: AtomicU64,
    clock_probes: AtomicU64,
    http_requests: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() < 50 {
            failures.push(what);
        }
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Media a steady client received.
#[derive(Debug, Default, Clone, Copy)]
struct Steady {
    messages: u64,
    gaps: u64,
    first_was_keyframe: bool,
}

/// The verdict and every figure behind it.
#[derive(Debug)]
pub struct Report {
    pub samples: Vec<Sample>,
    pub problems: Vec<String>,
    pub json: serde_json::Value,
}

/// A small xorshift generator: the churn needs variety, not quality.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Runs the soak and returns its report; `Err` only when it could not be run at all.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let before = leftovers();
    // In pod mode the X server and the game are this run's, dropped after the pod has ended
    // (the game first: tuple fields drop in order).
    let (display, mut args, _screen) = if options.pod {
        let xvfb = Xvfb::start(768, 768);
        let game = start_game(&xvfb.name(), "pong", (768, 768));
        let args: Vec<String> = vec![
            "pod".into(),
            "--display".into(),
            xvfb.name(),
            "--framebuffer".into(),
            xvfb.framebuffer().to_string_lossy().into_owned(),
            "--no-audio".into(),
        ];
        (xvfb.display, args, Some((game, xvfb)))
    } else {
        let display = free_display();
        let args = vec!["demo".into(), "--display".into(), display.to_string()];
        (display, args, None)
    };
    args.extend(options.extra_args.iter().cloned());
    let audio_on = !args.iter().any(|a| a == "--no-audio");
    let mut served = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Served::start(&args)
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting playpod: {e}"))?;
    let pid = served.child.id();
    let page = served.url.clone();
    let ws_base = page.replacen("http://", "ws://", 1);
    let addr = served.origin().trim_start_matches("http://").to_owned();
    let token_path = page
        .split_once("/play/")
        .map(|(_, rest)| format!("/play/{rest}"))
        .ok_or_else(|| anyhow::anyhow!("unexpected URL {page}"))?;
    let children = children_of(pid);

    let tally = Arc::new(Tally::default());
    let (stop_tx, stop) = watch::channel(false);
    // The steady clients stay until the churned ones are gone and the pod has been looked at.
    let (release_tx, release) = watch::channel(false);
    let seed = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.subsec_nanos()),
    );

    let steady_video = tokio::spawn(steady(
        format!("{ws_base}video"),
        1,
        release.clone(),
        tally.clone(),
    ));
    let steady_audio = audio_on
        .then(|| tokio::spawn(steady(format!("{ws_base}audio"), 2, release, tally.clone())));
    let mut churn = Vec::new();
    for (i, (path, kind)) in [("video", 1u8), ("video", 1), ("audio", 2)]
        .into_iter()
        .enumerate()
        .filter(|(_, (_, kind))| audio_on || *kind == 1)
    {
        churn.push(tokio::spawn(media_churn(
            format!("{ws_base}{path}"),
            kind,
            Rng::new(seed + i as u64),
            stop.clone(),
            tally.clone(),
        )));
    }
    for player in [1u8, 2] {
        churn.push(tokio::spawn(player_churn(
            format!("{ws_base}input/{player}"),
            Rng::new(seed * 31 + u64::from(player)),
            stop.clone(),
            tally.clone(),
        )));
    }
    churn.push(tokio::spawn(takeover_churn(
        format!("{ws_base}input/1"),
        Rng::new(seed * 77),
        stop.clone(),
        tally.clone(),
    )));
    churn.push(tokio::spawn(http_churn(
        addr.clone(),
        token_path.clone(),
        stop.clone(),
        tally.clone(),
    )));

    // Sampling, for the duration.
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last_cpu = (cpu_ticks(pid), Instant::now());
    loop {
        let now = start.elapsed();
        let mut s = sample(pid, &addr, now, &mut last_cpu).await;
        s.children_rss_kib = children.iter().map(|&c| rss_kib(c)).sum();
        eprintln!(
            "soak: {:>6.0} s  rss {:>7} KiB  fds {:>3}  threads {:>3}  children rss {:>7} KiB  cpu {:>5.1} %  viewers {}  players {}  frames {}  audio packets {}",
            s.at_s,
            s.rss_kib,
            s.fds,
            s.threads,
            s.children_rss_kib,
            s.cpu_share * 100.0,
            s.viewers,
            s.players,
            s.frames_encoded,
            s.audio_packets
        );
        samples.push(s);
        if now >= options.duration {
            break;
        }
        let next = options.sample_every.min(options.duration - now);
        tokio::time::sleep(next).await;
    }

    // Stop the churn; the steady clients stay until the churned ones are gone.
    let _ = stop_tx.send(true);
    for task in churn {
        if let Err(e) = task.await {
            tally.fail(format!("a churn task panicked: {e}"));
        }
    }
    let mut problems = Vec::new();
    let settled = settle(&addr, 1.0, 0.0).await;
    if let Err(what) = &settled {
        problems.push(what.clone());
    }
    let held = keys_held(display);
    match &held {
        Ok(keys) if !keys.is_empty() => problems.push(format!(
            "keys still held on the X server after every player left: keycodes {keys:?}"
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("could not read the X keyboard: {e}")),
    }
    // The last look at the pod, churned connections gone, steady ones still there.
    let mut end = sample(pid, &addr, start.elapsed(), &mut last_cpu).await;
    end.children_rss_kib = children.iter().map(|&c| rss_kib(c)).sum();
    let _ = release_tx.send(true);
    let video = steady_video
        .await
        .map_err(|e| anyhow::anyhow!("steady viewer: {e}"))?;
    let audio = match steady_audio {
        Some(task) => task
            .await
            .map_err(|e| anyhow::anyhow!("steady listener: {e}"))?,
        None => Steady::default(),
    };

    let seconds = options.duration.as_secs_f64();
    let baseline = samples
        .iter()
        .find(|s| s.at_s >= options.warm_up.as_secs_f64())
        .or(samples.first())
        .copied()
        .unwrap_or_default();
    let peak_threads_warm = samples
        .iter()
        .filter(|s| s.at_s <= baseline.at_s)
        .map(|s| s.threads)
        .max()
        .unwrap_or(baseline.threads);
    let rss_growth = end.rss_kib.saturating_sub(baseline.rss_kib);
    if rss_growth > options.max_rss_growth_kib {
        problems.push(format!(
            "resident memory grew by {rss_growth} KiB from {} KiB at {:.0} s to {} KiB at the end (limit {} KiB)",
            baseline.rss_kib, baseline.at_s, end.rss_kib, options.max_rss_growth_kib
        ));
    }
    // tokio keeps an idle blocking thread (the input hand-off uses one) for 10 s.
    let threads = at_most_within(|| status_field(pid, "Threads:"), peak_threads_warm).await;
    if threads > peak_threads_warm {
        problems.push(format!(
            "threads: {threads} 12 s after the churn, at most {peak_threads_warm} while warming up; now: {}",
            thread_names(pid)
        ));
    }
    let fds = at_most_within(|| fd_count(pid), baseline.fds).await;
    if fds > baseline.fds {
        problems.push(format!(
            "file descriptors: {fds} 12 s after the churn, {} after warming up",
            baseline.fds
        ));
    }
    let min_frames = (seconds * 60.0 * 0.9) as u64;
    if video.messages < min_frames || video.gaps > 0 || !video.first_was_keyframe {
        problems.push(format!(
            "steady viewer: {} frames (at least {min_frames} expected), {} gaps, first a keyframe: {}",
            video.messages, video.gaps, video.first_was_keyframe
        ));
    }
    // Silence is not sent: the steady listener must have every packet the pod published while
    // it listened (it was there from the start, and until after the last look), and the game
    // must have made some sound. A second of slack for a churned listener that came first.
    let published = if end.audio_packets.is_finite() {
        end.audio_packets as u64
    } else {
        0
    };
    if audio_on && (audio.gaps > 0 || published == 0 || audio.messages + 100 < published) {
        problems.push(format!(
            "steady listener: {} packets of the {published} published, {} gaps",
            audio.messages, audio.gaps
        ));
    }
    let failures = tally
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    problems.extend(failures.iter().cloned());
    let cycles = tally.video_sessions.load(Ordering::Relaxed)
        + tally.audio_sessions.load(Ordering::Relaxed)
        + tally.player_sessions.load(Ordering::Relaxed);
    if cycles == 0 {
        problems.push("no churned connection completed".into());
    }

    // The steady clients are gone now: the pod must come back to nobody connected.
    if let Err(what) = settle(&addr, 0.0, 0.0).await {
        problems.push(what);
    }
    if let Ok((_, body)) = http_get(&addr, "/metrics").await {
        let low = metric_value(&body, "playpod_viewers_low_rendition");
        if low != Some(0.0) {
            problems.push(format!(
                "the pod still counts {low:?} viewers on the low rendition with nobody connected"
            ));
        }
    }
    let exit = tokio::task::spawn_blocking(move || {
        let status = served.terminate();
        let _ = served.log();
        status
    })
    .await
    .map_err(|e| anyhow::anyhow!("stopping playpod: {e}"))?;
    if !exit.success() {
        problems.push(format!("playpod exited with {exit} on SIGTERM"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive: Vec<u32> = children
        .iter()
        .copied()
        .filter(|c| Path::new(&format!("/proc/{c}")).exists())
        .collect();
    if !alive.is_empty() {
        problems.push(format!("processes of the demo still alive: {alive:?}"));
    }
    let left: Vec<String> = leftovers().difference(&before).cloned().collect();
    if !left.is_empty() {
        problems.push(format!("left behind: {left:?}"));
    }
    let made_by_demo: Vec<u64> = shm_segments()
        .into_iter()
        .filter(|(_, creator)| *creator == pid || children.contains(creator))
        .map(|(id, _)| id)
        .collect();
    if !made_by_demo.is_empty() {
        problems.push(format!(
            "shared-memory segments of the demo left behind: {made_by_demo:?}"
        ));
    }

    let minutes = seconds / 60.0;
    let rss_per_minute = if end.at_s > baseline.at_s {
        (end.rss_kib as f64 - baseline.rss_kib as f64) / ((end.at_s - baseline.at_s) / 60.0)
    } else {
        0.0
    };
    let cpu: Vec<f64> = samples.iter().skip(1).map(|s| s.cpu_share).collect();
    let json = serde_json::json!({
        "seconds": seconds,
        "baseline": {"atSeconds": baseline.at_s, "rssKiB": baseline.rss_kib, "fds": baseline.fds, "threads": baseline.threads, "childrenRssKiB": baseline.children_rss_kib},
        "end": {"rssKiB": end.rss_kib, "fds": end.fds, "threads": end.threads, "childrenRssKiB": end.children_rss_kib},
        "rssGrowthKiB": rss_growth,
        "rssKiBPerMinuteAfterWarmUp": rss_per_minute,
        "childrenRssGrowthKiB": end.children_rss_kib as i64 - baseline.children_rss_kib as i64,
        "cpuShareFirst": cpu.first(),
        "cpuShareLast": cpu.last(),
        "steadyViewer": {"frames": video.messages, "gaps": video.gaps},
        "steadyListener": {"packets": audio.messages, "gaps": audio.gaps},
        "churn": {
            "videoSessions": tally.video_sessions.load(Ordering::Relaxed),
            "audioSessions": tally.audio_sessions.load(Ordering::Relaxed),
            "playerSessions": tally.player_sessions.load(Ordering::Relaxed),
            "playerMessages": tally.player_messages.load(Ordering::Relaxed),
            "badMessagesAnswered": tally.bad_messages_answered.load(Ordering::Relaxed),
            "refusals": tally.refusals.load(Ordering::Relaxed),
            "takeovers": tally.takeovers.load(Ordering::Relaxed),
            "replaced": tally.replaced.load(Ordering::Relaxed),
            "keyframesAsked": tally.keyframes_asked.load(Ordering::Relaxed),
            "movedToLowRendition": tally.moved_low.load(Ordering::Relaxed),
            "clockProbes": tally.clock_probes.load(Ordering::Relaxed),
            "httpRequests": tally.http_requests.load(Ordering::Relaxed),
            "sessionsPerMinute": cycles as f64 / minutes.max(1e-9),
        },
        "exit": exit.code(),
        "problems": problems,
    });
    Ok(Report {
        samples,
        problems,
        json,
    })
}

/// Paths a demo may leave behind: its framebuffer directories and its sound server's home.
fn leftovers() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for dir in ["/dev/shm", &std::env::temp_dir().to_string_lossy()] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("playpod-") && !name.starts_with("playpod-test-") {
                    found.insert(format!("{dir}/{name}"));
                }
            }
        }
    }
    found
}

/// SysV shared-memory segments: (shmid, creator pid).
fn shm_segments() -> Vec<(u64, u32)> {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.get(1)?.parse().ok()?, fields.get(4)?.parse().ok()?))
        })
        .collect()
}

fn free_display() -> u32 {
    (600 + std::process::id() % 200..)
        .find(|n| {
            !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .unwrap_or(899)
}

/// A number of `/proc/PID/status` (`Threads:`, `VmRSS:` in KiB, ...), 0 where there is none.
pub fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// User + system time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Polls `value` for up to 12 s until it is at most `limit`; returns the last value.
async fn at_most_within(value: impl Fn() -> u64, limit: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let v = value();
        if v <= limit || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The names of a process's threads, with how many share each.
fn thread_names(pid: u32) -> String {
    let mut names = std::collections::BTreeMap::<String, u32>::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            *names.entry(name.trim().to_owned()).or_default() += 1;
        }
    }
    names
        .iter()
        .map(|(name, n)| format!("{name} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if status_field(child, "PPid:") == u64::from(pid) {
                found.push(child);
            }
        }
    }
    found
}

async fn sample(pid: u32, addr: &str, at: Duration, last_cpu: &mut (u64, Instant)) -> Sample {
    let ticks = cpu_ticks(pid);
    let now = Instant::now();
    // Clock ticks are 1/100 s on Linux.
    let cpu_share = (ticks.saturating_sub(last_cpu.0)) as f64
        / 100.0
        / now.duration_since(last_cpu.1).as_secs_f64().max(1e-3);
    *last_cpu = (ticks, now);
    let metrics = http_get(addr, "/metrics").await.map(|(_, body)| body);
    let metric = |name: &str| {
        metrics
            .as_ref()
            .ok()
            .and_then(|m| metric_value(m, name))
            .unwrap_or(f64::NAN)
    };
    Sample {
        at_s: at.as_secs_f64(),
        rss_kib: rss_kib(pid),
        fds: fd_count(pid),
        threads: status_field(pid, "Threads:"),
        children_rss_kib: 0,
        cpu_share,
        viewers: metric("playpod_viewers"),
        players: metric("playpod_players"),
        frames_encoded: metric("playpod_frames_encoded_total"),
        audio_packets: metric("playpod_audio_packets_total"),
    }
}

/// The value of an unlabelled series in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.split_once(' ')?;
        (series == name).then(|| value.trim().parse().ok())?
    })
}

/// Waits (up to 10 s) until the pod counts this many viewers and players.
async fn settle(addr: &str, viewers: f64, players: f64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (f64::NAN, f64::NAN);
    while Instant::now() < deadline {
        if let Ok((_, body)) = http_get(addr, "/metrics").await {
            last = (
                metric_value(&body, "playpod_viewers").unwrap_or(f64::NAN),
                metric_value(&body, "playpod_players").unwrap_or(f64::NAN),
            );
            if last == (viewers, players) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the pod still counts {} viewers and {} players 10 s after the churn stopped ({viewers} and {players} expected)",
        last.0, last.1
    ))
}

/// Keycodes the X server has down.
fn keys_held(display: u32) -> anyhow::Result<Vec<u8>> {
    use x11rb::protocol::xproto::ConnectionExt as _;
    let (conn, _) = x11rb::connect(Some(&format!(":{display}")))?;
    let keys = conn.query_keymap()?.reply()?.keys;
    Ok((0..=255u8)
        .filter(|&k| keys[usize::from(k / 8)] & (1 << (k % 8)) != 0)
        .collect())
}

async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_owned());
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer within 10 s")))
}

async fn connect(url: &str) -> Result<Ws, String> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within 10 s")),
    }
}

/// The next message within 5 s; `None` when the socket ended or nothing came.
async fn next(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(m))) => Some(m),
        _ => None,
    }
}

/// Leaves a socket: with a close frame (waiting for the pod's), or by dropping the connection.
async fn leave(mut ws: Ws, politely: bool) {
    if politely {
        let _ = ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

/// Sequence number and flags of a media message.
fn header(bytes: &[u8], kind: u8) -> Option<(u32, u8)> {
    if bytes.len() < 16 || bytes[0] != kind {
        return None;
    }
    Some((u32::from_le_bytes(bytes[4..8].try_into().ok()?), bytes[1]))
}

/// One connection for the whole run, reading every message.
async fn steady(
    url: String,
    kind: u8,
    mut stop: watch::Receiver<bool>,
    tally: Arc<Tally>,
) -> Steady {
    let mut got = Steady::default();
    let mut ws = match connect(&url).await {
        Ok(ws) => ws,
        Err(e) => {
            tally.fail(format!("steady client: {e}"));
            return got;
        }
    };
    let mut last: Option<u32> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => {}
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let Some((seq, flags)) = header(&b, kind) else {
                        tally.fail(format!("steady client of {url}: malformed message of {} bytes", b.len()));
                        continue;
                    };
                    if last.is_none() {
                        got.first_was_keyframe = flags & 1 == 1;
                    }
                    if let Some(prev) = last
                        && seq != prev.wrapping_add(1)
                    {
                        got.gaps += 1;
                    }
                    last = Some(seq);
                    got.messages += 1;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tally.fail(format!("steady client of {url}: {e}"));
                    return got;
                }
                None => {
                    tally.fail(format!("steady client of {url}: the pod closed the socket"));
                    return got;
                }
            },
        }
        if *stop.borrow() {
            break;
        }
    }
    leave(ws, true).await;
    got
}

/// Viewers (kind 1) or listeners (kind 2) that come and go.
async fn media_churn(
    url: String,
    kind: u8,
    mut rng: Rng,
    stop: watch::Receiver<bool>,
    tally: Arc<Tally>,
) {
    while !*stop.borrow() {
        let mut ws = match connect(&url).await {
            Ok(ws) => ws,
            Err(e) => {
                tally.fail(format!("churn: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match next(&mut ws).await {
            Some(Message::Text(t)) if t.contains("codec") => {}
            other => {
                tally.fail(format!("churn: {url} began with {other:?}, not its codec"));
                continue;
            }
        }
        let want = rng.between(1, if kind == 1 { 90 } else { 150 });
        let mut got = 0;
        let mut first = true;
        let mut asked_low = false;
        let mut asked_clock = false;
        let mut clock_answered = false;
        while got < want {
            let m = if kind == 2 {
                // Silence is not sent: a listener leaves after 1.5 s of it.
                match tokio::time::timeout(Duration::from_millis(1500), ws.next()).await {
                    Err(_) => break,
                    Ok(Some(Ok(m))) => Some(m),
                    Ok(_) => None,
                }
            } else {
                next(&mut ws).await
            };
            let Some(m) = m else {
                tally.fail(format!(
                    "churn: {url} stopped after {got} of {want} messages"
                ));
                break;
            };
            match m {
                Message::Binary(b) => {
                    let Some((_, flags)) = header(&b, kind) else {
                        tally.fail(format!("churn: {url}: malformed message"));
                        break;
                    };
                    if first && kind == 1 && flags & 1 == 0 {
                        tally.fail(format!(
                            "churn: a viewer's first frame{} was not a keyframe",
                            if asked_low {
                                " on the low rendition"
                            } else {
                                ""
                            }
                        ));
                    }
                    first = false;
                    got += 1;
                    if kind == 1 && got == 5 {
                        if rng.chance(20) {
                            Tally::count(&tally.keyframes_asked);
                            let _ = ws.send(Message::text("keyframe")).await;
                        } else if rng.chance(30) {
                            asked_clock = true;
                            let _ = ws.send(Message::text(r#"{"ping":42.5}"#)).await;
                        } else if rng.chance(30) {
                            asked_low = true;
                            let _ = ws.send(Message::text(r#"{"rendition":"low"}"#)).await;
                        }
                    }
                }
                Message::Text(t) if t.contains("\"pong\"") => clock_answered = true,
                // The move to the low rendition: its own description, then its own frames
                // from a keyframe.
                Message::Text(t) if asked_low && t.contains("\"rendition\":\"low\"") => {
                    Tally::count(&tally.moved_low);
                    first = true;
                }
                _ => {}
            }
        }
        if asked_clock {
            Tally::count(&tally.clock_probes);
            if !clock_answered && got == want {
                // The answer may still be on its way behind the frames.
                let answered = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(m)) = ws.next().await {
                        if matches!(&m, Message::Text(t) if t.contains("\"pong\"")) {
                            return true;
                        }
                    }
                    false
                })
                .await
                .unwrap_or(false);
                if !answered {
                    tally.fail("churn: a clock probe got no answer".into());
                }
            }
        }
        Tally::count(if kind == 1 {
            &tally.video_sessions
        } else {
            &tally.audio_sessions
        });
        let polite = rng.chance(50);
        leave(ws, polite).await;
        tokio::time::sleep(Duration::from_millis(rng.between(20, 300))).await;
    }
}

const KEYS: [&str; 8] = ["up", "down", "left", "right", "a", "b", "start", "select"];

/// One player's controllers, one after another.
async fn player_churn(url: String, mut rng: Rng, stop: watch::Receiver<bool>, tally: Arc<Tally>) {
    while !*stop.borrow() {
        // Take over: the takeover churner may hold the slot.
        let ws = match connect(&format!("{url}?takeover=1")).await {
            Ok(ws) => ws,
            Err(e) => {
                tally.fail(format!("player churn: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        Tally::count(&tally.player_sessions);
        let messages = rng.between(10, 200);
        play(ws, messages, &mut rng, &tally, &url).await;
        tokio::time::sleep(Duration::from_millis(rng.between(10, 200))).await;
    }
}

/// Presses random keys at 60 messages a second; returns when done, or when replaced.
async fn play(mut ws: Ws, messages: u64, rng: &mut Rng, tally: &Tally, url: &str) {
    let mut bad_sent = 0u64;
    let mut bad_answered = 0u64;
    let mut tick = tokio::time::interval(Duration::from_micros(16_667));
    let mut sent = 0;
    while sent < messages {
        tokio::select! {
            _ = tick.tick() => {
                let roll = rng.next() % 100;
                let m = if roll < 80 {
                    Message::Binary(vec![(rng.next() & 0xff) as u8].into())
                } else if roll < 96 {
                    let mut keys = Vec::new();
                    for key in KEYS {
                        if rng.chance(40) {
                            keys.push(format!("\"{key}\":{}", rng.chance(50)));
                        }
                    }
                    Message::text(format!("{{{}}}", keys.join(",")))
                } else {
                    bad_sent += 1;
                    match roll % 4 {
                        0 => Message::text(r#"{"jump":true}"#),
                        1 => Message::Binary(vec![1, 2].into()),
                        2 => Message::text(r#"{"up":1}"#),
                        _ => Message::text("{\"up\":tru"),
                    }
                };
                if ws.send(m).await.is_err() {
                    break;
                }
                sent += 1;
                Tally::count(&tally.player_messages);
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) if t.contains("\"error\"") => {
                    if t.contains("rate limit") {
                        tally.fail(format!("player churn: rate limited at 60 messages a second: {t}"));
                    }
                    bad_answered += 1;
                }
                Some(Ok(Message::Close(frame))) => {
                    if close_code(frame.as_ref()) == Some(4002) {
                        Tally::count(&tally.replaced);
                    } else {
                        tally.fail(format!("player churn: {url} closed with {frame:?}"));
                    }
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    tally.fail(format!("player churn: {url} ended without a close frame"));
                    return;
                }
            },
        }
    }
    // The answers to the last bad messages.
    let deadline = Instant::now() + Duration::from_secs(2);
    while bad_answered < bad_sent && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"error\"") => bad_answered += 1,
            Ok(Some(Ok(Message::Close(frame)))) => {
                if close_code(frame.as_ref()) == Some(4002) {
                    Tally::count(&tally.replaced);
                    return;
                }
                break;
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    if bad_answered != bad_sent {
        tally.fail(format!(
            "player churn: {bad_answered} of {bad_sent} bad messages answered with an error"
        ));
    }
    tally
        .bad_messages_answered
        .fetch_add(bad_answered, Ordering::Relaxed);
    // Keys may still be held: the pod must release them.
    let polite = rng.chance(50);
    leave(ws, polite).await;
}

fn close_code(frame: Option<&CloseFrame>) -> Option<u16> {
    frame.map(|f| u16::from(f.code))
}

/// A second controller of one player: refused while the slot is held, then taking over.
async fn takeover_churn(url: String, mut rng: Rng, stop: watch::Receiver<bool>, tally: Arc<Tally>) {
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(rng.between(1_000, 3_000))).await;
        if *stop.borrow() {
            break;
        }
        // Without takeover: refused (4001) if the slot is held, which it nearly always is.
        if let Ok(mut ws) = connect(&url).await {
            let first = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
            match first {
                Ok(Some(Ok(Message::Close(frame)))) if close_code(frame.as_ref()) == Some(4001) => {
                    Tally::count(&tally.refusals);
                }
                // The slot was free for a moment, and the other controller took it back.
                Ok(Some(Ok(Message::Close(frame)))) if close_code(frame.as_ref()) == Some(4002) => {
                    Tally::count(&tally.replaced);
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    tally.fail(format!("second controller closed with {frame:?}, not 4001"));
                }
                // The slot was free for a moment: this one holds it now.
                _ => {}
            }
            leave(ws, true).await;
        }
        match connect(&format!("{url}?takeover=1")).await {
            Ok(ws) => {
                Tally::count(&tally.takeovers);
                let messages = rng.between(10, 60);
                play(ws, messages, &mut rng, &tally, &url).await;
            }
            Err(e) => tally.fail(format!("takeover: {e}")),
        }
    }
}

/// The page, the probes, the metrics and a wrong token.
async fn http_churn(addr: String, path: String, stop: watch::Receiver<bool>, tally: Arc<Tally>) {
    let wrong = "/play/0123456789abcdef0123456789abcdef/".to_owned();
    let checks: [(&str, u16); 4] = [
        (path.as_str(), 200),
        ("/readyz", 200),
        ("/metrics", 200),
        (wrong.as_str(), 404),
    ];
    while !*stop.borrow() {
        for (p, want) in checks {
            match http_get(&addr, p).await {
                Ok((status, _)) if status == want => Tally::count(&tally.http_requests),
                Ok((status, _)) => tally.fail(format!("GET {p}: {status}, not {want}")),
                Err(e) => tally.fail(format!("GET {p}: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
