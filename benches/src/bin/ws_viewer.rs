//! A viewer for benchmarks: connects to a session's video WebSocket (once, or `--connections N`
//! times at once, each connection reading every message), reads for SECONDS and prints one JSON
//! line of totals:
//!
//! `{"connections":1,"connected":1,"frames":..,"bytes":..,"keyframes":..,"min_frames":..,
//!   "max_frames":..,"missed":..,"max_missed":..,"malformed":..}`
//!
//! `missed` counts the access units a connection never got (gaps in the header's sequence
//! number), so `missed: 0` means every viewer got every frame from the moment it joined.
//! `age_ms` gives percentiles (p50, p95, p99, max) of each frame's age when it arrived: the
//! viewer's clock minus the capture time in its header, so meaningful only with the server on
//! the same machine (or clocks in step); `age_last_s_ms` the same over the last second of reading.
//! `--save FILE` writes the first connection's access units, in order, from its first keyframe,
//! as a raw Annex-B H.264 file that any decoder reads (`ffmpeg -i FILE ...`).
//!
//! `--low` asks for the low rendition (`{"rendition":"low"}`), as a page opened with
//! `?rendition=low` does: the counts are then of its frames, after those of the full stream
//! that came before the move.
//!
//! `ws-viewer ws://127.0.0.1:8080/play/TOKEN/video 20 [--connections 50] [--save first.h264] [--low]`
//!
//! Exits 1, after printing the totals, if a connection failed or the saved file could not be
//! written; 2 on bad arguments.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use playpod::server::{KIND_VIDEO, MEDIA_HEADER_LEN};
use playpod_hotpath::pipeline::unix_micros;
use playpod_hotpath::stats::percentile;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(
    name = "ws-viewer",
    about = "Reads a playpod session's video WebSocket with one or more viewers and counts what arrives."
)]
struct Args {
    /// The video WebSocket, e.g. ws://127.0.0.1:8080/play/TOKEN/video.
    url: String,
    /// How long to read, in seconds, from the start.
    #[arg(default_value_t = 10.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Concurrent viewers of the same stream in this process; each reads every message.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// Write the first connection's access units, from its first keyframe, to this raw Annex-B
    /// H.264 file.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Ask for the low rendition (half the width and height) right after connecting.
    #[arg(long)]
    low: bool,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!(
            "seconds must be above 0 and at most a day, got {s}"
        ))
    }
}

/// What one connection saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    connected: bool,
    frames: u64,
    bytes: u64,
    keyframes: u64,
    /// Access units skipped: gaps in the sequence numbers.
    missed: u64,
    /// Binary messages too short for the header or of another kind, and text after the first.
    malformed: u64,
    last_seq: Option<u32>,
    /// Each frame's age on arrival, µs, with the arrival time.
    ages: Vec<(Instant, u32)>,
}

impl Tally {
    /// Counts one binary message; returns its access unit and whether it is a keyframe, or
    /// `None` when the message is no video message.
    fn binary<'a>(&mut self, message: &'a [u8]) -> Option<(&'a [u8], bool)> {
        if message.len() < MEDIA_HEADER_LEN || message[0] != KIND_VIDEO {
            self.malformed += 1;
            return None;
        }
        let keyframe = message[1] & 1 == 1;
        let seq = u32::from_le_bytes([message[4], message[5], message[6], message[7]]);
        if let Some(last) = self.last_seq {
            // The sequence wraps at 2^32; a step back (a reordering, which the server never
            // does) is not counted as a gap.
            let gap = seq.wrapping_sub(last).wrapping_sub(1);
            if gap < u32::MAX / 2 {
                self.missed += u64::from(gap);
            }
        }
        self.last_seq = Some(seq);
        let capture_us = u64::from_le_bytes(message[8..16].try_into().expect("8 bytes"));
        let age = unix_micros().saturating_sub(capture_us);
        self.ages
            .push((Instant::now(), u32::try_from(age).unwrap_or(u32::MAX)));
        self.frames += 1;
        self.bytes += message.len() as u64;
        self.keyframes += u64::from(keyframe);
        Some((&message[MEDIA_HEADER_LEN..], keyframe))
    }
}

/// Where the first connection's access units go.
struct Saver {
    out: std::io::BufWriter<std::fs::File>,
    started: bool,
    units: u64,
}

impl Saver {
    /// Appends `unit` once the first keyframe has come.
    fn unit(&mut self, unit: &[u8], keyframe: bool) -> std::io::Result<()> {
        self.started |= keyframe;
        if self.started {
            self.out.write_all(unit)?;
            self.units += 1;
        }
        Ok(())
    }
}

/// One connection: reads until `deadline`, the end of the stream or an error.
async fn view(url: String, deadline: Instant, mut saver: Option<Saver>, low: bool) -> ViewEnd {
    let mut tally = Tally::default();
    let mut error = None;
    match tokio::time::timeout_at(deadline, tokio_tungstenite::connect_async(url.as_str())).await {
        Err(_) => error = Some("no connection before the deadline".to_string()),
        Ok(Err(err)) => error = Some(format!("cannot connect: {err}")),
        Ok(Ok((mut ws, _))) => {
            tally.connected = true;
            let mut config_seen = false;
            if low {
                use futures_util::SinkExt as _;
                if let Err(err) = ws.send(Message::text(r#"{"rendition":"low"}"#)).await {
                    error = Some(format!("cannot ask for the low rendition: {err}"));
                }
            }
            loop {
                match tokio::time::timeout_at(deadline, ws.next()).await {
                    Err(_) | Ok(None) => break,
                    Ok(Some(Err(err))) => {
                        error = Some(format!("stream broke: {err}"));
                        break;
                    }
                    Ok(Some(Ok(Message::Text(_)))) if !config_seen => config_seen = true,
                    // A move to another rendition: its frames are numbered on their own.
                    Ok(Some(Ok(Message::Text(t)))) if t.contains("\"codec\"") => {
                        tally.last_seq = None;
                    }
                    Ok(Some(Ok(Message::Text(_)))) => tally.malformed += 1,
                    Ok(Some(Ok(Message::Binary(b)))) => {
                        if let (Some((unit, keyframe)), Some(s)) = (tally.binary(&b), &mut saver)
                            && let Err(err) = s.unit(unit, keyframe)
                        {
                            error = Some(format!("cannot write the saved stream: {err}"));
                            break;
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                }
            }
            let _ = ws.close(None).await;
        }
    }
    let saved = match saver {
        Some(mut s) => {
            if let Err(err) = s.out.flush() {
                error.get_or_insert(format!("cannot write the saved stream: {err}"));
            }
            Some(s.units)
        }
        None => None,
    };
    ViewEnd {
        tally,
        error,
        saved,
    }
}

#[derive(Debug)]
struct ViewEnd {
    tally: Tally,
    error: Option<String>,
    saved: Option<u64>,
}

/// The totals line.
fn summary(ends: &[ViewEnd]) -> serde_json::Value {
    let sum = |f: fn(&Tally) -> u64| ends.iter().map(|e| f(&e.tally)).sum::<u64>();
    let frames = ends.iter().map(|e| e.tally.frames);
    let mut out = serde_json::json!({
        "connections": ends.len(),
        "connected": ends.iter().filter(|e| e.tally.connected).count(),
        "frames": sum(|t| t.frames),
        "bytes": sum(|t| t.bytes),
        "keyframes": sum(|t| t.keyframes),
        "min_frames": frames.clone().min().unwrap_or(0),
        "max_frames": frames.max().unwrap_or(0),
        "missed": sum(|t| t.missed),
        "max_missed": ends.iter().map(|e| e.tally.missed).max().unwrap_or(0),
        "malformed": sum(|t| t.malformed),
        "failed": ends.iter().filter(|e| e.error.is_some()).count(),
    });
    let mut ages: Vec<u32> = ends
        .iter()
        .flat_map(|e| e.tally.ages.iter().map(|&(_, age)| age))
        .collect();
    out["age_ms"] = age_percentiles(&mut ages);
    let end = ends
        .iter()
        .filter_map(|e| e.tally.ages.last().map(|&(at, _)| at))
        .max();
    let mut last: Vec<u32> = ends
        .iter()
        .flat_map(|e| e.tally.ages.iter())
        .filter(|(at, _)| end.is_some_and(|end| end.duration_since(*at) < Duration::from_secs(1)))
        .map(|&(_, age)| age)
        .collect();
    out["age_last_s_ms"] = age_percentiles(&mut last);
    if let Some(saved) = ends.first().and_then(|e| e.saved) {
        out["saved_units"] = saved.into();
    }
    out
}

/// `{"p50":..,"p95":..,"p99":..,"max":..}` in ms, or null with no frame.
fn age_percentiles(ages: &mut [u32]) -> serde_json::Value {
    let ms = |us: Option<u32>| us.map(|us| (f64::from(us) / 100.0).round() / 10.0);
    if ages.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "p50": ms(percentile(ages, 50.0)),
        "p95": ms(percentile(ages, 95.0)),
        "p99": ms(percentile(ages, 99.0)),
        "max": ms(percentile(ages, 100.0)),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let saver = match &args.save {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Some(Saver {
                out: std::io::BufWriter::with_capacity(1 << 20, file),
                started: false,
                units: 0,
            }),
            Err(err) => {
                eprintln!("ws-viewer: cannot create {}: {err}", path.display());
                return std::process::ExitCode::from(1);
            }
        },
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut saver = saver;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.connections {
        let url = args.url.clone();
        let saver = if i == 0 { saver.take() } else { None };
        let low = args.low;
        tasks.spawn(async move { (i, view(url, deadline, saver, low).await) });
    }
    let mut ends: Vec<Option<ViewEnd>> = (0..args.connections).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, end)) => ends[i as usize] = Some(end),
            Err(err) => eprintln!("ws-viewer: a connection task ended abnormally: {err}"),
        }
    }
    let ends: Vec<ViewEnd> = ends.into_iter().flatten().collect();
    let mut failed = ends.len() < args.connections as usize;
    for (i, end) in ends.iter().enumerate() {
        if let Some(err) = &end.error {
            eprintln!("ws-viewer: connection {i}: {err}");
            failed = true;
        }
    }
    println!("{}", summary(&ends));
    if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, keyframe: bool, seq: u32, unit: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, u8::from(keyframe), 0, 0];
        m.extend_from_slice(&seq.to_le_bytes());
        m.extend_from_slice(&7u64.to_le_bytes());
        m.extend_from_slice(unit);
        m
    }

    #[test]
    fn counts_frames_keyframes_and_sequence_gaps() {
        let mut t = Tally::default();
        let m = message(1, true, 10, b"\0\0\0\x01\x67");
        assert_eq!(t.binary(&m), Some((&b"\0\0\0\x01\x67"[..], true)));
        t.binary(&message(1, false, 11, b"x"));
        t.binary(&message(1, false, 14, b"y"));
        assert_eq!((t.frames, t.keyframes, t.missed), (3, 1, 2));
        assert_eq!(t.bytes, (16 + 5 + 17 + 17) as u64);
        // The sequence wraps without a gap.
        let mut w = Tally::default();
        w.binary(&message(1, false, u32::MAX, b""));
        w.binary(&message(1, false, 0, b""));
        assert_eq!(w.missed, 0);
    }

    #[test]
    fn short_or_foreign_messages_are_malformed_not_counted() {
        let mut t = Tally::default();
        assert_eq!(t.binary(&[1, 0, 0]), None);
        assert_eq!(t.binary(&message(2, false, 1, b"opus")), None);
        assert_eq!((t.frames, t.malformed), (0, 2));
    }

    #[test]
    fn the_saved_stream_starts_at_the_first_keyframe() {
        let dir = tempfile_dir();
        let path = dir.join("saved.h264");
        let mut s = Saver {
            out: std::io::BufWriter::new(std::fs::File::create(&path).unwrap()),
            started: false,
            units: 0,
        };
        s.unit(b"P0", false).unwrap();
        s.unit(b"I1", true).unwrap();
        s.unit(b"P2", false).unwrap();
        s.out.flush().unwrap();
        assert_eq!(s.units, 2);
        assert_eq!(std::fs::read(&path).unwrap(), b"I1P2");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn arguments_keep_the_positional_form_and_refuse_bad_values() {
        let a = Args::try_parse_from(["ws-viewer", "ws://h/play/t/video", "20"]).unwrap();
        assert_eq!((a.seconds, a.connections, a.save), (20.0, 1, None));
        let a = Args::try_parse_from(["ws-viewer", "ws://x", "--connections", "50", "--save", "f"])
            .unwrap();
        assert_eq!((a.seconds, a.connections), (10.0, 50));
        for bad in [
            &["ws-viewer", "ws://x", "ten"][..],
            &["ws-viewer", "ws://x", "-1"],
            &["ws-viewer", "ws://x", "--connections", "0"],
            &["ws-viewer"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_summary_gives_totals_and_the_weakest_connection() {
        let end = |frames, missed, error: Option<&str>| ViewEnd {
            tally: Tally {
                connected: true,
                frames,
                missed,
                ..Tally::default()
            },
            error: error.map(str::to_string),
            saved: None,
        };
        let s = summary(&[end(600, 0, None), end(590, 3, None), end(0, 0, Some("x"))]);
        assert_eq!(s["frames"], 1190);
        assert_eq!(s["min_frames"], 0);
        assert_eq!(s["max_frames"], 600);
        assert_eq!(s["missed"], 3);
        assert_eq!(s["failed"], 1);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ws-viewer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unreachable_server_is_an_error_not_a_panic() {
        let deadline = Instant::now() + Duration::from_secs(2);
        // Port 9 on loopback: nothing listens there.
        let end = view(
            "ws://127.0.0.1:9/play/t/video".into(),
            deadline,
            None,
            false,
        )
        .await;
        assert!(!end.tally.connected);
        assert!(end.error.is_some());
        let end = view("not a url".into(), deadline, None, false).await;
        assert!(end.error.unwrap().contains("cannot connect"));
    }
}
