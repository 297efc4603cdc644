//! Frame ready -> access unit in the ring, p50/p95/p99, on the real frame thread at 60 fps over
//! a real Xvfb showing the plasma (every pixel changes every frame), plus CPU time per frame.
//!
//! `cargo build --release -p playpod -p playpod-benches && target/release/latency-probe --seconds 20`

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use playpod_benches::probe::{GameScreen, arg};
use playpod_hotpath::capture::FramebufferFile;
use playpod_hotpath::encode::{EncoderSettings, Openh264Encoder};
use playpod_hotpath::pipeline::{FrameStage, Pipeline, PipelineConfig};
use playpod_hotpath::ring::ReadOutcome;
use playpod_hotpath::stats::percentile;

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("stat format")
        .1
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / 100.0
}

fn main() {
    let seconds = arg("--seconds", 20);
    let bitrate = arg("--bitrate-kbps", 2500) as u32 * 1000;
    let (w, h) = (768u32, 768u32);
    let screen = GameScreen::start("plasma");
    let fb = &screen.framebuffer;

    let settings = EncoderSettings {
        width: w,
        height: h,
        fps: 60,
        bitrate_bps: bitrate,
    };
    let (stage, ring, stats) = FrameStage::with_ring(
        Box::new(FramebufferFile::open(fb, w, h).expect("framebuffer")),
        Box::new(Openh264Encoder::new(settings).expect("encoder")),
        settings,
    );
    let mut reader = ring.subscribe().unwrap();
    let viewer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut n = 0u64;
        loop {
            buf.clear();
            match reader.read_blocking(&mut buf, Duration::from_secs(2)) {
                ReadOutcome::Frame(_) => n += 1,
                ReadOutcome::Closed => return n,
                ReadOutcome::Empty => {}
            }
        }
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pipeline = Pipeline::spawn(
        stage,
        PipelineConfig {
            fps: 60,
            pin_core: (cores > 1).then_some(cores - 1),
            always_encode: true,
            follow_drawing: false,
        },
    )
    .unwrap();

    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, frames0, bytes0) = (
        cpu_seconds(),
        stats.frames_published.load(Ordering::Relaxed),
        stats.bytes_encoded.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, frames1, bytes1) = (
        cpu_seconds(),
        stats.frames_published.load(Ordering::Relaxed),
        stats.bytes_encoded.load(Ordering::Relaxed),
    );
    pipeline.stop().expect("pipeline ran cleanly");
    let _ = viewer.join();

    let frames = frames1 - frames0;
    let mut samples = stats.ready_to_ring_window.snapshot();
    let measured = samples.len().min(frames as usize);
    let mut recent = samples.split_off(samples.len() - measured);
    let p = |v: &mut Vec<u32>, q| percentile(v, q).map_or(f64::NAN, |us| f64::from(us) / 1000.0);
    let enc = &stats.encode_time;
    let conv = &stats.convert_time;
    let report = serde_json::json!({
        "seconds": elapsed,
        "fps": frames as f64 / elapsed,
        "late_frames": stats.frames_dropped_late.load(Ordering::Relaxed),
        "bitrate_kbps": (bytes1 - bytes0) as f64 * 8.0 / elapsed / 1000.0,
        "cpu_ms_per_frame": (cpu1 - cpu0) * 1000.0 / frames as f64,
        "cpu_share_of_one_core": (cpu1 - cpu0) / elapsed,
        "ready_to_ring_ms": {"p50": p(&mut recent, 50.0), "p95": p(&mut recent, 95.0), "p99": p(&mut recent, 99.0), "max": p(&mut recent, 100.0)},
        "encode_ms_mean": enc.sum_us() as f64 / enc.count().max(1) as f64 / 1000.0,
        "convert_us_mean": conv.sum_us() as f64 / conv.count().max(1) as f64,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
