//! Game audio delay: a click played into the PulseAudio null sink -> its Opus packet in the
//! broadcast ring, p50/p99 over many clicks, on the real audio threads against a PulseAudio
//! server of its own (like `playpod demo`'s). Also prints the capture-time -> ring delay the
//! pipeline measures itself, and the Opus encoder's time per 10 ms frame.
//!
//! `cargo build --release -p playpod-benches && target/release/audio-probe --clicks 100`

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use playpod::audio::daemon::{MONITOR, PulseDaemon, PulseHome};
use playpod_benches::probe::arg;
use playpod_hotpath::audio::{
    AudioConfig, AudioPipeline, FRAME_BYTES, FRAME_SAMPLES, FRAME_VALUES, PulseConnector,
    PulsePlayer, SAMPLE_RATE,
};
use playpod_hotpath::pipeline::unix_micros;
use playpod_hotpath::ring::ReadOutcome;
use playpod_hotpath::stats::percentile;

fn click() -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_BYTES);
    for i in 0..FRAME_SAMPLES {
        let t = i as f64 / f64::from(SAMPLE_RATE);
        let v = (16_000.0 * (2.0 * std::f64::consts::PI * 1_000.0 * t).sin()) as i16;
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn summary(name: &str, values: &mut [u32]) {
    let n = values.len();
    let mut p = |q| {
        percentile(values, q).map_or("-".to_owned(), |v| format!("{:.1}", f64::from(v) / 1000.0))
    };
    let (p50, p95, p99, max) = (p(50.0), p(95.0), p(99.0), p(100.0));
    println!("{name}: n={n} p50={p50} ms p95={p95} ms p99={p99} ms max={max} ms");
}

fn main() -> anyhow::Result<()> {
    let clicks = arg("--clicks", 100) as usize;
    let gap_frames = arg("--gap-ms", 200) as usize / 10;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let home = PulseHome::new()?;
    let program = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pulseaudio"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| anyhow::anyhow!("pulseaudio is not installed"))?;
    let daemon = runtime.block_on(PulseDaemon::start(&program, &home))?;
    let server = home.server();

    let (pipeline, ring, stats) = AudioPipeline::spawn(
        Box::new(PulseConnector {
            server: Some(server.clone()),
            source: MONITOR.to_owned(),
        }),
        AudioConfig {
            always_encode: true,
            ..AudioConfig::default()
        },
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut reader = ring.subscribe().map_err(|e| anyhow::anyhow!("{e}"))?;

    // The player: silence, then a 10 ms click, `clicks` times; the time each click's write
    // returned (it is then queued in the sink) goes to the reader.
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let player = {
        let server = server.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut player = PulsePlayer::connect(Some(&server), "audio probe", 20)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let silence = vec![0u8; FRAME_BYTES];
            let click = click();
            // Warm-up: a new recording gets no data for a second or two.
            for _ in 0..300 {
                player.write(&silence).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            for _ in 0..clicks {
                for _ in 0..gap_frames {
                    player.write(&silence).map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                player.write(&click).map_err(|e| anyhow::anyhow!("{e}"))?;
                let _ = tx.send(unix_micros());
            }
            for _ in 0..30 {
                player.write(&silence).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            Ok(())
        })
    };

    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo)?;
    let mut pcm = [0i16; FRAME_VALUES * 6];
    let mut packet = Vec::new();
    let mut in_click = false;
    let mut sink_to_ring = Vec::new();
    let mut capture_error = Vec::new();
    let deadline =
        Instant::now() + Duration::from_secs(10 + (clicks * (gap_frames + 1)) as u64 / 100 * 2);
    while sink_to_ring.len() < clicks && Instant::now() < deadline {
        packet.clear();
        let ReadOutcome::Frame(meta) = reader.read_blocking(&mut packet, Duration::from_secs(5))
        else {
            continue;
        };
        let in_ring = unix_micros();
        let n = decoder.decode(&packet, &mut pcm, false)?;
        let loud = pcm[..n * 2].iter().any(|s| s.unsigned_abs() > 4_000);
        if loud && !in_click {
            let written = rx.recv_timeout(Duration::from_secs(5))?;
            sink_to_ring.push(u32::try_from(in_ring.saturating_sub(written)).unwrap_or(u32::MAX));
            // How far the packet's capture time is from when the click was written.
            capture_error.push(meta.capture_us as i64 - written as i64);
        }
        in_click = loud;
    }
    player.join().expect("player thread")?;
    drop(pipeline);
    runtime.block_on(daemon.stop());

    println!(
        "audio probe: {clicks} clicks, {} ms apart, PulseAudio null sink 48 kHz stereo, 10 ms fragments, Opus 96 kbit/s 10 ms",
        gap_frames * 10 + 10
    );
    summary(
        "click written into the sink -> packet in the ring",
        &mut sink_to_ring,
    );
    let mut encode = stats.encode_time_window.snapshot();
    let p = |v: &mut Vec<u32>, q| percentile(v, q).unwrap_or(0);
    println!(
        "Opus encode per 10 ms frame: p50={} µs p99={} µs (n={})",
        p(&mut encode, 50.0),
        p(&mut encode, 99.0),
        encode.len()
    );
    let mut c2r = stats.capture_to_ring_window.snapshot();
    summary("packet capture time -> packet in the ring", &mut c2r);
    capture_error.sort_unstable();
    if let Some(mid) = capture_error.get(capture_error.len() / 2) {
        println!(
            "packet capture time - click write time: median {:.1} ms",
            *mid as f64 / 1000.0
        );
    }
    println!(
        "PCM ring: overruns {}, underruns {}",
        stats.pcm_overruns.load(Ordering::Relaxed),
        stats.pcm_underruns.load(Ordering::Relaxed)
    );
    anyhow::ensure!(
        sink_to_ring.len() == clicks,
        "only {} of {clicks} clicks came through",
        sink_to_ring.len()
    );
    Ok(())
}
