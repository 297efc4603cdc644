//! JSON logs (`--log-format json`, or `PLAYPOD_LOG_FORMAT=json`): every line a command writes on
//! stderr is one JSON object as tracing-subscriber's JSON formatter makes it (`timestamp`,
//! `level`, `fields.message`, `target`); the error that ends a failing command is one too.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use playpod_tests::playpod_bin;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Checks one log line; returns its message.
fn check_log_line(line: &str) -> String {
    let entry: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {line:?}"));
    let timestamp = entry["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp: {line}"));
    timestamp
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("timestamp {timestamp:?} is not RFC 3339 ({e}): {line}"));
    let level = entry["level"].as_str().unwrap_or("");
    assert!(
        ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
        "level {level:?}: {line}"
    );
    assert!(entry["target"].is_string(), "no target: {line}");
    entry["fields"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no fields.message: {line}"))
        .to_owned()
}

/// A display number nobody serves.
fn unused_display() -> u32 {
    (900..1000)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .expect("a free display number")
}

#[test]
fn a_failing_command_logs_json_lines_then_its_error() {
    let display = format!(":{}", unused_display());
    let out = Command::new(playpod_bin())
        .args(["--log-format", "json", "pod", "--display", &display])
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run playpod pod");
    assert!(!out.status.success(), "pod on {display} succeeded");
    let stderr = String::from_utf8(out.stderr).expect("UTF-8 stderr");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "nothing on stderr");
    let messages: Vec<String> = lines.iter().map(|line| check_log_line(line)).collect();
    // The error that ends the command is the last JSON line, at level ERROR, with the reason.
    let last: Value = serde_json::from_str(lines[lines.len() - 1]).expect("JSON");
    assert_eq!(last["level"], "ERROR", "last line: {last}");
    assert_eq!(
        last["fields"]["message"], "playpod: error",
        "last line: {last}"
    );
    let reason = last["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&display),
        "the error does not name {display}: {last}"
    );
    assert!(
        messages.len() > 1,
        "no log line before the error:\n{stderr}"
    );
    let logs = &lines[..lines.len() - 1];
    println!(
        "pod on {display}: {} JSON log lines, then {last}",
        logs.len()
    );
}

/// `--log-format json` reaches the demo's children too (the game gets the flag): the game, the
/// server and the pipeline all log JSON while a viewer watches, and through a clean stop.
#[test]
fn the_demo_logs_json_from_start_to_stop() {
    let started = Instant::now();
    let mut child = playpod_tests::Guard(
        Command::new(playpod_bin())
            .args(["--log-format", "json", "demo", "--listen", "127.0.0.1:0"])
            .env_remove("PLAYPOD_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start playpod demo"),
    );
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).expect("read stderr");
        text
    });
    let stdout = child.0.stdout.take().expect("piped stdout");
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("playpod: open ").map(str::to_owned))
        .expect("the demo prints its URL");

    // A viewer for a moment: the encoder starts and the server logs the connection.
    let frames = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let video = url.replacen("http://", "ws://", 1) + "video";
            let (mut ws, _) = tokio_tungstenite::connect_async(video)
                .await
                .expect("video socket");
            let mut frames = 0;
            while frames < 30 {
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Binary(_)))) => frames += 1,
                    Ok(Some(Ok(_))) => {}
                    other => panic!("video socket: {other:?}"),
                }
            }
            frames
        });

    playpod_ffi::terminate(child.0.id()).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait demo") {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "demo exited with {status}");
    let text = reader.join().expect("stderr reader");

    let mut messages = Vec::new();
    let mut encoder_lines = Vec::new();
    for line in text.lines() {
        // The OpenH264 C library prints its own warnings on stderr when the encoder starts,
        // outside tracing: not a playpod log line.
        if line.starts_with("[OpenH264]") {
            encoder_lines.push(line);
            continue;
        }
        messages.push(check_log_line(line));
    }
    assert!(
        encoder_lines.len() <= 1,
        "OpenH264 printed more than its start-up warning: {encoder_lines:?}"
    );
    for expected in ["virtual screen ready", "game running", "SIGTERM: stopping"] {
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "no JSON log line saying {expected:?} among {messages:?}"
        );
    }
    println!(
        "demo: {} JSON log lines ({} from OpenH264 outside tracing), {frames} frames watched, \
         {:.1} s",
        messages.len(),
        encoder_lines.len(),
        started.elapsed().as_secs_f64()
    );
}
