//! Game audio end to end against a real PulseAudio (started here, with its own runtime
//! directory) and a real `playpod pod` on a real Xvfb: a tone played into the null sink comes
//! out of the Opus stream at the right frequency and level (decoded by libopus through the
//! `opus` crate, independently of the server's encoder settings); a click reaches the listener
//! quickly; killing PulseAudio leaves the video flowing and restarting it brings the sound back;
//! when the game ends (its X server stops) the audio socket closes saying so, like the video
//! and input ones; a viewer too slow for the video lowers the audio's bitrate with the video's;
//! and the per-frame work (PCM ring -> Opus -> broadcast ring) allocates nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use playpod::audio::daemon::PulseHome;
use playpod_ffi::{CountingAllocator, count_allocations};
use playpod_hotpath::audio::pipeline::plausible_latency;
use playpod_hotpath::audio::{
    AudioStats, CaptureClock, FRAME_BYTES, FRAME_SAMPLES, FRAME_VALUES, OpusSettings, OpusStage,
    PcmFrame, PcmSource, PulsePlayer, PulseRecorder, SAMPLE_RATE,
};
use playpod_hotpath::pipeline::unix_micros;
use playpod_hotpath::ring::{ReadOutcome, Ring, RingConfig};
use playpod_tests::{Served, Xvfb, children_named, have};
use tokio_tungstenite::tungstenite::Message;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const TOKEN: &str = "00112233445566778899aabbccddeeff";

/// A PulseAudio server like the demo's (null sink `game`, 48 kHz stereo, default sink), in a
/// directory of its own; killed on drop. It can be killed and started again on the same socket.
struct TestPulse {
    child: Option<Child>,
    home: PulseHome,
}

impl TestPulse {
    fn start() -> Self {
        assert!(
            have("pulseaudio"),
            "pulseaudio is not installed (apt-get install pulseaudio)"
        );
        let home = PulseHome::new().expect("a home for PulseAudio");
        let mut pulse = Self { child: None, home };
        pulse.restart();
        pulse
    }

    fn socket(&self) -> PathBuf {
        self.home.socket()
    }

    fn server(&self) -> String {
        self.home.server()
    }

    /// Starts the server (again) and waits until its socket accepts connections.
    fn restart(&mut self) {
        let child = self
            .home
            .command(Path::new("pulseaudio"))
            .expect("the PulseAudio command")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pulseaudio");
        self.child = Some(child);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pulseaudio did not open its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server dies as a crashed one would, leaving its socket file behind.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestPulse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `amplitude * sin(2 pi f t)` in both channels, S16LE, `ms` long, from sample `from`.
fn tone(freq: f64, amplitude: f64, ms: usize, from: usize) -> Vec<u8> {
    let n = SAMPLE_RATE as usize / 1000 * ms;
    let mut out = Vec::with_capacity(n * 4);
    for i in from..from + n {
        let t = i as f64 / f64::from(SAMPLE_RATE);
        let v = (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Plays `pcm` into the sink in 10 ms writes; returns the wall time (µs) each write returned.
fn play(server: &str, pcm: &[u8]) -> Vec<u64> {
    let mut player = PulsePlayer::connect(Some(server), "playpod test", 20).expect("play");
    let times = pcm
        .chunks(FRAME_BYTES)
        .map(|chunk| {
            player.write(chunk).expect("write");
            unix_micros()
        })
        .collect();
    let _ = player.drain();
    times
}

/// Goertzel power of `freq` in `x`.
fn goertzel(x: &[f64], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn rms(x: &[f64]) -> f64 {
    (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Xvfb, PulseAudio and `playpod pod` streaming both.
struct Rig {
    pulse: TestPulse,
    pod: Served,
    /// Taken by a test that ends the game.
    xvfb: Option<Xvfb>,
}

impl Rig {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let xvfb = Xvfb::start(320, 240);
        let pulse = TestPulse::start();
        let server = pulse.server();
        let mut args = vec!["--pulse-server", &server, "--token", TOKEN, "--no-pin"];
        args.extend(extra);
        let pod = Served::start_owned(&xvfb.pod_args(&args));
        Self {
            pulse,
            pod,
            xvfb: Some(xvfb),
        }
    }

    fn ws_url(&self, what: &str) -> String {
        format!(
            "{}/play/{TOKEN}/{what}",
            self.pod.origin().replacen("http://", "ws://", 1)
        )
    }

    async fn connect(&self, what: &str) -> Ws {
        tokio_tungstenite::connect_async(self.ws_url(what))
            .await
            .unwrap_or_else(|e| panic!("connect to {what}: {e}"))
            .0
    }

    async fn readyz(&self) -> serde_json::Value {
        let origin = self.pod.origin();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("curl")
                .args(["-s", &format!("{origin}/readyz")])
                .output()
                .expect("curl");
            serde_json::from_slice(&out.stdout).expect("readyz JSON")
        })
        .await
        .unwrap()
    }
}

/// One audio message: header fields, the packet, when it arrived.
#[derive(Debug, Clone)]
struct Packet {
    seq: u32,
    capture_us: u64,
    arrival_us: u64,
    opus: Vec<u8>,
}

fn parse(b: &[u8], arrival_us: u64) -> Packet {
    assert!(b.len() > 16, "an audio message of {} bytes", b.len());
    assert_eq!(&b[..4], &[2, 0, 0, 0], "kind 2, flags 0, reserved 0");
    Packet {
        seq: u32::from_le_bytes(b[4..8].try_into().unwrap()),
        capture_us: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        arrival_us,
        opus: b[16..].to_vec(),
    }
}

/// Reads the config and state messages, checking them.
async fn handshake(ws: &mut Ws) -> String {
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("config within 5 s")
        .expect("open")
        .expect("message");
    let Message::Text(config) = first else {
        panic!("first message is not text: {first:?}")
    };
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"codec":"opus","sampleRate":48000,"channels":2})
    );
    let second = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("state within 5 s")
        .expect("open")
        .expect("message");
    let Message::Text(state) = second else {
        panic!("second message is not text: {second:?}")
    };
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    state["audio"].as_str().expect("audio state").to_owned()
}

/// Collects audio packets for `time`, skipping text messages.
async fn collect(ws: &mut Ws, time: Duration) -> Vec<Packet> {
    let deadline = tokio::time::Instant::now() + time;
    let mut packets = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Binary(b) = msg.expect("audio socket") {
            packets.push(parse(&b, unix_micros()));
        }
    }
    packets
}

/// With `--every-frame` (silence sent too): waits until sound flows (a new recording gets its
/// first data a second or two after it connects), up to 10 s for 10 packets.
async fn wait_for_sound(ws: &mut Ws) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut packets = 0;
    while packets < 10 {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(_)))) => packets += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("no sound within 10 s ({packets} packets): {other:?}"),
        }
    }
}

/// Waits until the pod records (`state` is what the handshake said): from then on a sound
/// played into the sink reaches the listeners. Silence sends nothing, so no packet says so.
async fn wait_for_recording(ws: &mut Ws, state: &str) {
    if state == "ok" {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == r#"{"audio":"ok"}"# => return,
            Ok(Some(Ok(_))) => {}
            other => panic!("not recording within 10 s: {other:?}"),
        }
    }
}

/// Decodes packets in order into the left channel's samples.
fn decode(packets: &[Packet]) -> Vec<f64> {
    let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo).unwrap();
    let mut pcm = [0i16; FRAME_VALUES * 6];
    let mut left = Vec::new();
    for p in packets {
        let n = decoder.decode(&p.opus, &mut pcm, false).expect("decode");
        assert_eq!(n, FRAME_SAMPLES, "a 10 ms packet");
        left.extend(pcm[..n * 2].iter().step_by(2).map(|&s| f64::from(s)));
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tone_in_the_sink_comes_out_of_the_opus_stream_and_silence_does_not() {
    let rig = Rig::start();
    let mut ws = rig.connect("audio").await;
    let state = handshake(&mut ws).await;
    assert!(state == "ok" || state == "down", "state {state:?}");
    wait_for_recording(&mut ws, &state).await;
    // The few silent frames sent when recording starts.
    let start = collect(&mut ws, Duration::from_millis(500)).await;
    assert!(
        start.len() <= 3,
        "{} packets of silence at the start",
        start.len()
    );

    const AMPLITUDE: f64 = 0.3 * 32767.0;
    let server = rig.pulse.server();
    let player = std::thread::spawn(move || {
        let mut pcm = vec![0u8; FRAME_BYTES * 30];
        pcm.extend(tone(440.0, AMPLITUDE, 1500, 0));
        pcm.extend(vec![0u8; FRAME_BYTES * 30]);
        play(&server, &pcm)
    });
    let packets = collect(&mut ws, Duration::from_millis(3000)).await;
    player.join().unwrap();
    // The 300 ms of silence around the tone are not sent: the tone's 150 frames (151 when it
    // straddles a frame boundary) and the 3 silent ones that end it, not 210.
    assert!(
        (150..=155).contains(&packets.len()),
        "{} packets for a 1.5 s tone (want 150 and 3 of silence after it)",
        packets.len()
    );

    // Headers: consecutive sequence numbers, 10 ms apart in capture time, recent.
    for pair in packets.windows(2) {
        assert_eq!(
            pair[1].seq,
            pair[0].seq.wrapping_add(1),
            "a gap in the stream"
        );
        let step = pair[1].capture_us as i64 - pair[0].capture_us as i64;
        assert!(
            (7_000..=13_000).contains(&step),
            "capture times {step} µs apart (want ~10 ms)"
        );
    }
    let ages: Vec<i64> = packets
        .iter()
        .map(|p| p.arrival_us as i64 - p.capture_us as i64)
        .collect();
    assert!(
        ages.iter().all(|&a| (0..200_000).contains(&a)),
        "capture -> arrival out of 0..200 ms: {:?}",
        &ages[..ages.len().min(20)]
    );

    // The tone: the 10 ms blocks well above silence, a second of them, checked in the middle.
    let left = decode(&packets);
    let loud: Vec<usize> = left
        .chunks(FRAME_SAMPLES)
        .enumerate()
        .filter(|(_, b)| rms(b) > AMPLITUDE / 4.0)
        .map(|(i, _)| i)
        .collect();
    assert!(
        loud.len() >= 120 && loud.len() <= 160,
        "{} loud 10 ms blocks (the tone lasts 150)",
        loud.len()
    );
    let after = packets.len() - 1 - loud[loud.len() - 1];
    assert!(
        after <= 4,
        "{after} packets after the tone (want its 3 silent tail frames)"
    );
    let mid = loud[loud.len() / 2];
    let window = &left[(mid - 40) * FRAME_SAMPLES..(mid + 40) * FRAME_SAMPLES];
    let level = rms(window);
    let want = AMPLITUDE / 2f64.sqrt();
    let at = |f: f64| goertzel(window, f);
    let tone_power = at(440.0);
    let others = [220.0, 330.0, 400.0, 480.0, 550.0, 880.0, 1000.0];
    let worst = others.iter().map(|&f| at(f)).fold(0.0, f64::max);
    let crossings = window
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    let hz = crossings as f64 / 2.0 / (window.len() as f64 / f64::from(SAMPLE_RATE));
    eprintln!(
        "tone: {hz:.1} Hz by zero crossings, RMS {level:.0} (played {want:.0}), \
         440 Hz / strongest other bin = {:.0}x",
        tone_power / worst
    );
    assert!((hz - 440.0).abs() < 3.0, "{hz} Hz");
    assert!(tone_power > 100.0 * worst, "440 Hz does not dominate");
    assert!(
        (level - want).abs() < want * 0.1,
        "RMS {level:.0}, played {want:.0}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_reaches_the_listener_quickly() {
    let rig = Rig::start();
    let mut ws = rig.connect("audio").await;
    let state = handshake(&mut ws).await;
    // Once the pod records, clicks after silence (which is not sent).
    wait_for_recording(&mut ws, &state).await;
    let server = rig.pulse.server();
    const CLICKS: usize = 5;
    let player = std::thread::spawn(move || {
        let mut pcm = Vec::new();
        for _ in 0..CLICKS {
            pcm.extend(vec![0u8; FRAME_BYTES * 30]);
            pcm.extend(tone(1000.0, 16_000.0, 10, 0));
        }
        pcm.extend(vec![0u8; FRAME_BYTES * 10]);
        play(&server, &pcm)
    });
    let packets = collect(&mut ws, Duration::from_millis(2500)).await;
    let writes = player.join().unwrap();
    // Write k (0-based) of each 31-write group holds a click at k = 30.
    let click_writes: Vec<u64> = (0..CLICKS).map(|c| writes[c * 31 + 30]).collect();
    let left = decode(&packets);
    let mut delays = Vec::new();
    let mut in_click = false;
    for (i, block) in left.chunks(FRAME_SAMPLES).enumerate() {
        let loud = block.iter().any(|s| s.abs() > 4_000.0);
        if loud && !in_click {
            let p = &packets[i];
            let written = click_writes[delays.len().min(CLICKS - 1)];
            delays.push(p.arrival_us as i64 - written as i64);
        }
        in_click = loud;
    }
    eprintln!("click written into the sink -> its packet at the listener (µs): {delays:?}");
    assert_eq!(delays.len(), CLICKS, "every click came through once");
    for from_write in delays {
        assert!(
            (0..250_000).contains(&from_write),
            "a click took {from_write} µs from the write to the listener"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_pulseaudio_keeps_the_video_and_a_restart_brings_the_sound_back() {
    // Nothing moves on this screen: --every-frame keeps the video at its full rate, so that a
    // stall of the frame thread while PulseAudio is gone would show.
    let mut rig = Rig::start_with(&["--every-frame"]);
    let mut audio = rig.connect("audio").await;
    handshake(&mut audio).await;
    wait_for_sound(&mut audio).await;
    assert!(
        collect(&mut audio, Duration::from_millis(2000)).await.len() > 50,
        "sound flows at first"
    );
    assert_eq!(rig.readyz().await["audio"], "ok");

    // A video viewer throughout.
    let video_frames = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let viewer = {
        let mut video = rig.connect("video").await;
        let (frames, stop) = (video_frames.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(2), video.next()).await {
                    Ok(Some(Ok(Message::Binary(_)))) => {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(Ok(_))) => {}
                    other => panic!("the video stopped: {other:?}"),
                }
            }
        })
    };

    rig.pulse.kill();
    let killed = Instant::now();
    let mut down = false;
    while killed.elapsed() < Duration::from_secs(5) {
        if rig.readyz().await["audio"] == "down" {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        down,
        "/readyz does not say audio \"down\" 5 s after PulseAudio died"
    );
    // The listener is told, and gets no sound while the server is gone.
    let mut told = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, audio.next()).await {
        if msg == Message::Text(r#"{"audio":"down"}"#.into()) {
            told = true;
            break;
        }
    }
    assert!(told, "the listener was not told the audio is down");
    let before = video_frames.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = video_frames.load(Ordering::Relaxed) - before;
    assert!(
        during > 30,
        "only {during} video frames in 2 s without PulseAudio"
    );
    let readyz = rig.readyz().await;
    assert_eq!(readyz["ready"], true, "video is still ready: {readyz}");

    rig.pulse.restart();
    let restarted = Instant::now();
    let mut ok = false;
    while restarted.elapsed() < Duration::from_secs(15) {
        if rig.readyz().await["audio"] == "ok" {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "audio not \"ok\" within 15 s of restarting PulseAudio");
    eprintln!(
        "audio back {:.1} s after the restart",
        restarted.elapsed().as_secs_f64()
    );
    // The same listener gets sound again.
    wait_for_sound(&mut audio).await;
    let again = collect(&mut audio, Duration::from_millis(1500)).await;
    assert!(
        again.len() > 50,
        "{} packets in 1.5 s after the restart",
        again.len()
    );
    // And so does a new one.
    let mut fresh = rig.connect("audio").await;
    assert_eq!(handshake(&mut fresh).await, "ok");
    wait_for_sound(&mut fresh).await;
    assert!(collect(&mut fresh, Duration::from_millis(1000)).await.len() > 50);

    stop.store(true, Ordering::Relaxed);
    viewer.await.expect("the video viewer");
    let metrics = {
        let origin = rig.pod.origin();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("curl")
                .args(["-s", &format!("{origin}/metrics")])
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .unwrap()
    };
    let reconnects = metrics
        .lines()
        .find_map(|l| l.strip_prefix("playpod_audio_reconnects_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(
        reconnects.is_some_and(|n| n >= 1),
        "no reconnection counted: {reconnects:?}"
    );
    assert!(metrics.contains("playpod_audio_state 2"), "{metrics}");
}

/// Reads `ws` until the server's close frame (up to 10 s): its code and reason.
async fn close_frame(ws: &mut Ws, what: &str) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: no close frame within 10 s"));
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.as_str().to_owned());
            }
            Some(Ok(_)) => {}
            other => panic!("{what}: ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_game_ends_every_socket_says_so() {
    // The game pod's entrypoint stops Xvfb when the game exits. Every socket of the session
    // (video, audio, a player's input) closes with 4004 "the game has ended", which the page
    // shows instead of reconnecting, and the pod exits 0.
    let mut rig = Rig::start();
    let mut video = rig.connect("video").await;
    let mut audio = rig.connect("audio").await;
    let mut input = rig.connect("input/1").await;
    handshake(&mut audio).await;
    // The video is flowing and the player is attached before the game ends.
    let first = tokio::time::timeout(Duration::from_secs(10), video.next())
        .await
        .expect("video config within 10 s");
    assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");
    let started = Instant::now();
    while rig.readyz().await["players"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "player 1 never attached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let xvfb = rig.xvfb.take().expect("the rig's Xvfb");
    tokio::task::spawn_blocking(move || xvfb.stop())
        .await
        .unwrap();
    for (what, ws) in [
        ("video", &mut video),
        ("audio", &mut audio),
        ("input", &mut input),
    ] {
        let (code, reason) = close_frame(ws, what).await;
        assert_eq!(
            (code, reason.as_str()),
            (4004, "the game has ended"),
            "{what}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = rig.pod.child.try_wait().expect("wait playpod") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the pod still runs after its game ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "pod exit: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_audio_says_off() {
    let xvfb = Xvfb::start(320, 240);
    let pod = Served::start_owned(&xvfb.pod_args(&[
        "--pulse-server",
        "unix:/nonexistent/native",
        "--no-audio",
        "--token",
        TOKEN,
        "--no-pin",
    ]));
    let url = format!(
        "{}/play/{TOKEN}/audio",
        pod.origin().replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    match msg {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1000);
            assert_eq!(frame.reason.as_str(), "audio is off");
        }
        other => panic!("expected a close frame saying audio is off: {other:?}"),
    }
    // A wrong token is a 404 like any unknown path.
    let wrong = url.replace(TOKEN, "ffeeddccbbaa99887766554433221100");
    assert!(tokio_tungstenite::connect_async(&wrong).await.is_err());
    let origin = pod.origin();
    let readyz = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-s", &format!("{origin}/readyz")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let readyz: serde_json::Value = serde_json::from_slice(&readyz.stdout).unwrap();
    assert_eq!(readyz["audio"], "off", "{readyz}");
    drop(xvfb);
}

#[test]
fn a_missing_server_is_down_not_an_error() {
    // The pipeline starts without a server, says "down", and keeps trying.
    let (pipeline, ring, stats) = playpod_hotpath::audio::AudioPipeline::spawn(
        Box::new(playpod_hotpath::audio::PulseConnector {
            server: Some("unix:/nonexistent/playpod/native".into()),
            source: "game.monitor".into(),
        }),
        playpod_hotpath::audio::AudioConfig::default(),
        None,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stats.state().as_str(), "down");
    assert!(pipeline.is_running());
    assert_eq!(ring.published(), 0);
    drop(pipeline);
}

/// Zero heap allocations per 10 ms frame: the capture thread's work (a real 10 ms read from
/// PulseAudio, the capture clock, the PCM ring push) and the encoder thread's (the pop, Opus,
/// the broadcast ring), counted by the counting global allocator while a listener reads the
/// ring on another thread. (The C library's own buffers are not Rust heap allocations.)
#[test]
fn steady_state_audio_frames_allocate_nothing() {
    let pulse = TestPulse::start();
    let server = pulse.server();
    let stop = Arc::new(AtomicBool::new(false));
    // Something to encode: a tone, played for as long as the test runs.
    let player = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut player = PulsePlayer::connect(Some(&server), "test", 20).unwrap();
            let mut from = 0;
            while !stop.load(Ordering::Relaxed) {
                player.write(&tone(440.0, 8_000.0, 10, from)).unwrap();
                from += FRAME_SAMPLES;
            }
        })
    };
    let mut recorder = PulseRecorder::connect(Some(&server), "game.monitor").unwrap();
    let (ring, writer) = Ring::new(RingConfig {
        slots: 64,
        slot_bytes: 1536,
        max_readers: 4,
    });
    let stats = Arc::new(AudioStats::default());
    // Every frame encoded and published, the silence before the tone too (the skipped frames
    // of silence return before the encoder: nothing to allocate there).
    let settings = OpusSettings {
        skip_silence: false,
        ..OpusSettings::default()
    };
    let mut stage = OpusStage::new(writer, stats.clone(), settings).unwrap();
    let (mut producer, mut consumer) = rtrb::RingBuffer::<PcmFrame>::new(8);
    let listener = {
        let mut reader = ring.subscribe().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut got = 0u64;
            while !stop.load(Ordering::Relaxed) {
                buf.clear();
                if let ReadOutcome::Frame(_) =
                    reader.read_blocking(&mut buf, Duration::from_millis(50))
                {
                    got += 1;
                }
            }
            got
        })
    };
    let mut clock = CaptureClock::new(SAMPLE_RATE);
    let mut bytes = [0u8; FRAME_BYTES];
    let mut frame = PcmFrame::default();
    let mut step = || {
        recorder.read(&mut bytes).expect("read");
        let latency = plausible_latency(u64::MAX, recorder.latency_us());
        frame.capture_us = clock.stamp(unix_micros(), latency, FRAME_SAMPLES as u32);
        frame.fill_from_le_bytes(&bytes);
        producer.push(frame).expect("the ring has room");
        let popped = consumer.pop().expect("a frame");
        stage.encode(&popped).expect("encode")
    };
    for _ in 0..50 {
        step();
    }
    let (last, allocations) = count_allocations(|| {
        let mut last = None;
        for _ in 0..300 {
            last = step();
        }
        last
    });
    stop.store(true, Ordering::Relaxed);
    let heard = listener.join().unwrap();
    player.join().unwrap();
    assert_eq!(last, Some(349), "every frame was published");
    assert!(heard > 300, "the listener read the packets ({heard})");
    assert_eq!(allocations, 0, "heap allocations in 300 audio frames");
    let (_, one) = count_allocations(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert_eq!(one, 1, "the counter counts");
    drop(pulse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_pong_sounds_and_stops_its_pulseaudio() {
    let mut demo = Served::start(&["demo", "--token", TOKEN, "--no-pin"]);
    let pulse = children_named(demo.child.id(), "pulseaudio");
    assert_eq!(pulse.len(), 1, "one PulseAudio child: {pulse:?}");
    let (pulse_pid, cmdline) = pulse[0].clone();
    let config = cmdline
        .split(' ')
        .find(|a| a.ends_with("playpod.pa"))
        .map(PathBuf::from)
        .expect("the config file on its command line");
    let dir = config.parent().unwrap().to_path_buf();
    assert!(dir.is_dir());

    let url = format!(
        "{}/play/{TOKEN}/audio",
        demo.origin().replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let state = handshake(&mut ws).await;
    wait_for_recording(&mut ws, &state).await;
    // The ball is served after a second and bounces off walls and paddles: within 8 s some
    // 10 ms frames are loud. The silences between the sounds are not sent.
    let packets = collect(&mut ws, Duration::from_secs(8)).await;
    let left = decode(&packets);
    let loud = left
        .chunks(FRAME_SAMPLES)
        .filter(|b| rms(b) > 1_000.0)
        .count();
    eprintln!("demo: {} packets in 8 s, {loud} loud", packets.len());
    assert!(loud >= 3, "no game sound in 8 s of Pong");
    assert!(
        packets.len() < 400,
        "{} packets in 8 s: the silences between Pong's sounds were sent",
        packets.len()
    );

    let status = demo.terminate();
    assert!(status.success(), "the demo exited with {status}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pulse_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pulse_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "PulseAudio ({pulse_pid}) outlived the demo"
    );
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_too_slow_for_the_video_lowers_the_audio_bitrate_too() {
    // The plasma moves every frame: 1500 kbit/s of video. A spectator (no player is connected,
    // so its link counts) that reads 40 KB/s, through a receive buffer of 4 KiB, falls behind the
    // ring: the video's target comes down, and the audio gives up the same share of its 96
    // kbit/s, down to its floor; a listener keeps the audio encoder running.
    let rig = Rig::start_with(&["--bitrate-kbps", "1500"]);
    let display = rig.xvfb.as_ref().expect("the rig's screen").name();
    let _game = playpod_tests::start_game(&display, "plasma", (320, 240));
    let _listener = rig.connect("audio").await;
    let audio_target = playpod_tests::soak::metric_value(
        &rig.pod.get("/metrics"),
        "playpod_audio_bitrate_target_bits_per_second",
    );
    assert_eq!(audio_target, Some(96_000.0));

    let reader = playpod_tests::slow_video_viewer(&rig.ws_url("video")).await;

    // Both targets from one scrape; the audio thread takes a new video target within a frame.
    let targets = || {
        let metrics = rig.pod.get("/metrics");
        let value = |name| playpod_tests::soak::metric_value(&metrics, name).unwrap_or(f64::NAN);
        (
            value("playpod_video_bitrate_target_bits_per_second"),
            value("playpod_audio_bitrate_target_bits_per_second"),
        )
    };
    let by = Instant::now() + Duration::from_secs(20);
    loop {
        let (video, audio) = targets();
        // The same share, in whole kbit/s, down to the floor.
        let share = ((96.0 * video / 1_500_000.0).floor() * 1e3).max(32_000.0);
        if video <= 1_500_000.0 * 0.4 && audio == share {
            eprintln!(
                "video target {:.0} kbit/s, audio {:.0} kbit/s",
                video / 1e3,
                audio / 1e3
            );
            break;
        }
        assert!(
            Instant::now() < by,
            "after 20 s: video target {video}, audio target {audio} (want {share})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reader.abort();
}
