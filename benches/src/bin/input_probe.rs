//! Players' input latency: WebSocket frame read -> XTEST requests flushed, p50/p99, measured by
//! the player threads of a real `playpod pod` (Xvfb, the built-in game reading the keys, the
//! frame thread streaming at 60 fps) while two players send key changes over their input
//! WebSockets in parallel. The figures are the pod's own (`/metrics`).
//!
//! `cargo build --release -p playpod -p playpod-benches && target/release/input-probe --messages 5000`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use playpod_benches::probe::{self, GameScreen, Kill, arg};
use tokio_tungstenite::tungstenite::{self, Message};

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the pod");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const TOKEN: &str = "inputprobeinputprobeinputprobe00";

fn main() {
    let messages = arg("--messages", 5000);
    let pace_us = arg("--pace-us", 1000);
    let screen = GameScreen::start("pong");
    let (name, fb) = (&screen.display, &screen.framebuffer);
    let mut pod = Command::new(probe::playpod())
        .args(["pod", "--display", name, "--framebuffer"])
        .arg(fb)
        .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
        .args(["--input-rate", "1000000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("playpod pod");
    let stdout = pod.stdout.take().expect("piped stdout");
    let _pod = Kill(pod);
    let mut url = String::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(u) = line.strip_prefix("playpod: open ") {
            url = u.to_owned();
            break;
        }
    }
    assert!(!url.is_empty(), "the pod printed no URL");
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    // Both players at once, each on its own socket and thread, alternating up and down with a
    // release between, every message a change of one or two keys.
    let players: Vec<_> = [1u8, 2]
        .into_iter()
        .map(|player| {
            let url = format!("ws://{addr}/play/{TOKEN}/input/{player}");
            std::thread::spawn(move || {
                let (mut ws, _) = tungstenite::connect(&url).expect("input WebSocket");
                let states = [0b01u8, 0, 0b10, 0];
                let pace = Duration::from_micros(pace_us);
                let start = Instant::now();
                for i in 0..messages {
                    let due = start + pace * u32::try_from(i).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    ws.send(Message::Binary(vec![states[(i % 4) as usize]].into()))
                        .expect("send");
                }
                ws.send(Message::Binary(vec![0].into())).expect("send");
                ws.close(None).ok();
                while ws.read().is_ok() {}
            })
        })
        .collect();
    for p in players {
        p.join().expect("player thread");
    }
    // The pod counts the last messages as it reads them.
    let expected = (2 * (messages + 1)) as f64;
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = http_get(&addr, "/metrics");
        if metric(&text, "playpod_input_messages_total").unwrap_or(0.0) >= expected
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let count = metric(&text, "playpod_input_messages_total").unwrap_or(0.0);
    let p50 = metric(&text, "playpod_input_latency_recent_p50_seconds").expect("p50 in /metrics");
    let p99 = metric(&text, "playpod_input_latency_recent_p99_seconds").expect("p99 in /metrics");
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("playpod_input_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "input latency, WebSocket frame read -> XTEST flushed, 2 players in parallel, \
         {count:.0} messages ({errors:.0} errors), one every {pace_us} µs per player:"
    );
    println!(
        "  p50 {:.1} µs   p99 {:.1} µs   (target: p99 under 100 µs)",
        p50 * 1e6,
        p99 * 1e6
    );
    assert_eq!(count, expected, "every message was played");
}
