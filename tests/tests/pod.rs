//! `playpod pod` streams a display someone else started, through each capture path: the
//! `-fbdir` file and the `-shmem` segment read in place, and MIT-SHM XShmGetImage.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use playpod_tests::{Guard, Served, Xvfb, start_game};
use tokio_tungstenite::tungstenite::Message;

/// Connects a viewer to the served session and returns (config, first 10 binary messages).
fn watch(served: &Served) -> (serde_json::Value, Vec<Vec<u8>>) {
    let url = served.url.replacen("http://", "ws://", 1) + "video";
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("video socket");
            let mut config = None;
            let mut frames = Vec::new();
            while frames.len() < 10 {
                let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .expect("a message within 10 s")
                    .expect("open")
                    .expect("valid");
                match msg {
                    Message::Text(t) => config = Some(serde_json::from_str(&t).unwrap()),
                    Message::Binary(b) => frames.push(b.to_vec()),
                    _ => {}
                }
            }
            (config.expect("config first"), frames)
        })
}

/// Stops an Xvfb a test started itself on `display` with SIGTERM, so that it removes its lock
/// file and socket (dropping its [`Guard`] kills it, leaving both in /tmp), and checks they are
/// gone.
fn stop_xvfb(mut xvfb: Guard, display: u32) {
    playpod_ffi::terminate(xvfb.0.id()).expect("signal Xvfb");
    playpod_tests::exited_within(&mut xvfb.0, Duration::from_secs(5)).expect("Xvfb exits");
    let lock = format!("/tmp/.X{display}-lock");
    assert!(!std::path::Path::new(&lock).exists(), "{lock} left behind");
}

fn check_stream(served: &Served, width: u32) {
    let (config, frames) = watch(served);
    assert_eq!(config["width"], width);
    assert_eq!(frames[0][1] & 1, 1, "starts with a keyframe");
    let info = playpod_hotpath::h264::inspect(&frames[0][16..]);
    assert!(info.sps && info.pps && info.idr);
}

#[test]
fn pod_reads_an_fbdir_framebuffer_in_place() {
    let xvfb = Xvfb::start(640, 480);
    let _game = start_game(&xvfb.name(), "pong", (640, 480));
    let served = Served::start_owned(&xvfb.pod_args(&[]));
    check_stream(&served, 640);
}

#[test]
fn pod_captures_any_x_server_through_mit_shm() {
    let xvfb = Xvfb::start(640, 480);
    let _game = start_game(&xvfb.name(), "pong", (640, 480));
    let served = Served::start(&["pod", "--display", &xvfb.name(), "--size", "640x480"]);
    check_stream(&served, 640);
}

#[test]
fn pod_reads_an_shmem_segment_in_place() {
    // Xvfb -shmem prints "screen 0 shmid N" and leaves the segment behind: remove it after.
    let display = 700 + std::process::id() % 200;
    let mut child = Command::new("Xvfb")
        .arg(format!(":{display}"))
        .args(["-screen", "0", "640x480x24", "-nolisten", "tcp", "-shmem"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("Xvfb");
    let stderr = child.stderr.take().unwrap();
    let xvfb = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some((_, id)) = line.split_once("shmid") {
                let _ = tx.send(id.trim().parse::<i32>().unwrap());
            }
        }
    });
    let shmid = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("Xvfb prints its shmid");
    let started = Instant::now();
    while !std::path::Path::new(&format!("/tmp/.X11-unix/X{display}")).exists() {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let name = format!(":{display}");
    let game = start_game(&name, "pong", (640, 480));
    let served = Served::start(&[
        "pod",
        "--display",
        &name,
        "--shmid",
        &shmid.to_string(),
        "--size",
        "640x480",
    ]);
    check_stream(&served, 640);
    drop(served);
    drop(game);
    stop_xvfb(xvfb, display);
    let _ = playpod_ffi::remove_shm_segment(shmid);
}

#[test]
fn pod_with_a_bad_framebuffer_fails_clearly() {
    let err = playpod_tests::playpod_fails(&[
        "pod",
        "--display",
        ":0",
        "--framebuffer",
        "/nonexistent/Xvfb_screen0",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("/nonexistent/Xvfb_screen0"), "{err}");
    // The -fbdir directory instead of the file in it.
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path().to_str().expect("a UTF-8 path");
    let err = playpod_tests::playpod_fails(&[
        "pod",
        "--display",
        ":0",
        "--framebuffer",
        dir,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(
        err.contains(&format!(
            "--framebuffer {dir} is a directory: give the file Xvfb writes in it ({dir}/Xvfb_screen0)"
        )),
        "{err}"
    );
}

#[test]
fn display_numbers_no_x_client_takes_are_refused_without_a_panic() {
    // An X client may try TCP port 6000 + N: N above 59535 does not fit, in the pod's own
    // display name or the demo's display number.
    for args in [
        &["pod", "--display", ":65535"][..],
        &["pod", "--display", "localhost:59536.0"],
        &["demo", "--no-audio", "--display", "65535"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--listen", "127.0.0.1:0"]);
        let out = Command::new(playpod_tests::playpod_bin())
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run playpod");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}: {stderr}",
            out.status
        );
        assert!(
            !stderr.contains("panicked") && stderr.contains("at most 59535"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn pod_whose_stdout_is_gone_serves_on() {
    // Its output piped to a reader that has gone (a log collector that died): the
    // `playpod: open` line cannot be written, and the pod serves on regardless.
    let xvfb = Xvfb::start(320, 240);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut args = xvfb.pod_args(&["--no-pin"]);
    args.extend(["--listen".to_owned(), format!("127.0.0.1:{port}")]);
    let mut child = Command::new(playpod_tests::playpod_bin())
        .args(&args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start playpod");
    drop(child.stdout.take());
    let guard_pid = child.id();
    let answered = |path: &str| {
        use std::io::{Read as _, Write as _};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answered("/readyz").contains("\"ready\":true") {
        if let Some(status) = child.try_wait().expect("wait playpod") {
            let mut stderr = String::new();
            let _ = child.stderr.take().map(|mut e| {
                use std::io::Read as _;
                e.read_to_string(&mut stderr)
            });
            panic!("the pod exited ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "not ready within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait playpod").is_none(),
        "the pod exited"
    );
    playpod_ffi::terminate(guard_pid).expect("signal playpod");
    let status = playpod_tests::exited_within(&mut child, Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn a_failure_with_stderr_gone_exits_1_not_in_a_panic() {
    // Its log piped to a reader that has gone: the failure is still an exit status of 1.
    let mut child = Command::new(playpod_tests::playpod_bin())
        .args([
            "pod",
            "--display",
            ":0",
            "--framebuffer",
            "/nonexistent/Xvfb_screen0",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start playpod");
    drop(child.stderr.take());
    let status =
        playpod_tests::exited_within(&mut child, Duration::from_secs(10)).expect("playpod exits");
    assert_eq!(status.code(), Some(1), "{status}");
}

/// Waits (up to 10 s) for the served pod to exit by itself; its exit status and log.
fn exits_by_itself(served: &mut Served) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = served.child.try_wait().expect("wait playpod") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "playpod pod still runs 10 s after its X server stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, served.log())
}

#[test]
fn pod_stops_when_its_x_server_goes_away() {
    // The game pod's entrypoint stops Xvfb when the game exits: the session is over, whether
    // the screen is read in place (nothing there would notice) or through XShmGetImage.
    for in_place in [true, false] {
        let xvfb = Xvfb::start(320, 240);
        let _game = start_game(&xvfb.name(), "pong", (320, 240));
        let fb = xvfb.framebuffer();
        let name = xvfb.name();
        let mut args = vec!["pod", "--display", &name, "--size", "320x240"];
        if in_place {
            args.extend(["--framebuffer", fb.to_str().unwrap()]);
        }
        let mut served = Served::start(&args);
        check_stream(&served, 320);
        let ready = served.get("/readyz");
        assert!(ready.contains("\"display\":\"ok\""), "{ready}");
        xvfb.stop();
        let (status, log) = exits_by_itself(&mut served);
        assert!(
            status.success(),
            "in place {in_place}: exit {status}\n{log}"
        );
        assert!(
            log.contains("the X server closed the display"),
            "in place {in_place}: {log}"
        );
        assert!(!log.contains("ERROR"), "in place {in_place}: {log}");
    }
}

#[test]
fn pod_waits_for_a_display_that_comes_up_later() {
    // In a game pod the streamer may start before the game container's Xvfb: with
    // --wait-for-display it waits for the display and its framebuffer, then streams.
    let fbdir = tempfile::Builder::new()
        .prefix("playpod-test-fb-")
        .tempdir_in("/dev/shm")
        .expect("temp dir");
    let display = 1100 + std::process::id() % 200;
    let name = format!(":{display}");
    let fb = fbdir.path().join("Xvfb_screen0");
    let args = [
        "pod".to_owned(),
        "--display".to_owned(),
        name.clone(),
        "--framebuffer".to_owned(),
        fb.to_str().unwrap().to_owned(),
        "--size".to_owned(),
        "320x240".to_owned(),
        "--wait-for-display".to_owned(),
        "20".to_owned(),
    ];
    let pod = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Served::start(&args)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!pod.is_finished(), "the pod did not wait for its display");
    let xvfb = Guard(
        Command::new("Xvfb")
            .arg(&name)
            .args(["-screen", "0", "320x240x24", "-nolisten", "tcp", "-fbdir"])
            .arg(fbdir.path())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb"),
    );
    let mut served = pod.join().expect("the pod came up");
    check_stream(&served, 320);
    let log = served.log();
    assert!(log.contains("waiting up to 20 s for the display"), "{log}");
    assert!(log.contains("the display is up"), "{log}");
    drop(served);
    stop_xvfb(xvfb, display);
}

#[test]
fn pod_gives_up_waiting_clearly() {
    let err = playpod_tests::playpod_fails(&[
        "pod",
        "--display",
        ":1399",
        "--framebuffer",
        "/nonexistent/Xvfb_screen0",
        "--wait-for-display",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(
        err.contains("not up after waiting 1 s") && err.contains("/nonexistent/Xvfb_screen0"),
        "{err}"
    );
}

/// An X server that takes connections but never answers (here a real Xvfb stopped with
/// SIGSTOP; a hung one looks the same): a pod waiting for it still stops at once on SIGTERM,
/// and without a signal it gives up with the reason once --wait-for-display (and a grace for
/// the attempt under way) has passed, rather than hanging for good.
#[test]
fn pod_facing_a_stopped_x_server_stops_on_a_signal_and_gives_up_clearly() {
    let xvfb = Xvfb::start(320, 240);
    let name = xvfb.name();
    playpod_tests::signal(xvfb.pid(), "-STOP");
    let pod = |wait: &str| {
        Command::new(playpod_tests::playpod_bin())
            .args(["pod", "--display", &name, "--size", "320x240", "--no-audio"])
            .args(["--listen", "127.0.0.1:0", "--wait-for-display", wait])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start playpod pod")
    };

    let mut waiting = Guard(pod("60"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        waiting.0.try_wait().unwrap().is_none(),
        "the pod did not wait for its display"
    );
    let asked = Instant::now();
    playpod_tests::signal(waiting.0.id(), "-TERM");
    let status = playpod_tests::exited_within(&mut waiting.0, Duration::from_secs(5))
        .expect("the pod did not stop within 5 s of SIGTERM");
    assert!(status.success(), "{status}");
    eprintln!("stopped {:?} after SIGTERM", asked.elapsed());

    let started = Instant::now();
    let out = pod("1").wait_with_output().expect("wait for playpod pod");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "X display {name} takes connections but does not answer"
        )),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
    eprintln!("gave up after {took:?}");
    playpod_tests::signal(xvfb.pid(), "-CONT");
    xvfb.stop();
}

/// A display that is up but can never be streamed (a screen smaller than --size: the game
/// container and the streamer disagree) fails at once, not after all of --wait-for-display
/// (60 s in a session pod).
#[test]
fn pod_does_not_wait_for_a_display_that_is_up_but_cannot_be_streamed() {
    let xvfb = Xvfb::start(320, 240);
    let fb = xvfb.framebuffer();
    let name = xvfb.name();
    for in_place in [true, false] {
        let mut args = vec![
            "pod",
            "--display",
            &name,
            "--size",
            "640x480",
            "--wait-for-display",
            "30",
            "--listen",
            "127.0.0.1:0",
        ];
        if in_place {
            args.extend(["--framebuffer", fb.to_str().unwrap()]);
        }
        let started = Instant::now();
        let err = playpod_tests::playpod_fails(&args);
        let took = started.elapsed();
        assert!(
            err.contains("the screen is 320x240, smaller than the stream's 640x480"),
            "in place {in_place}: {err}"
        );
        assert!(
            took < Duration::from_secs(10),
            "in place {in_place}: failed only after {took:?}: {err}"
        );
    }
}

/// The CPUs a thread named `name` of process `pid` may run on (its `Cpus_allowed_list`), once
/// the thread exists (up to 10 s).
fn thread_cpus(pid: u32, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .find(|task| {
                std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .and_then(|task| playpod_tests::cpus_allowed_list(&task.path().join("status")));
        if let Some(cpus) = found {
            return cpus;
        }
        assert!(
            Instant::now() < deadline,
            "no thread {name} in playpod {pid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A session pod runs on a node it shares with other pods: it pins no thread unless told, as
/// pods that each pinned their frame thread to "the last core" would all queue on that core.
/// Told a core (`--pin-core`) its frame thread runs there and the players' threads elsewhere;
/// a core it may not run on is refused at start, naming the ones it may.
#[test]
fn pod_pins_threads_only_where_told() {
    let xvfb = Xvfb::start(640, 480);
    let (all, cpus) = playpod_tests::allowed_cpus();

    let mut served = Served::start_owned(&xvfb.pod_args(&[]));
    let pid = served.child.id();
    // Frames come: the frame thread is past where it would have pinned itself.
    check_stream(&served, 640);
    for thread in ["playpod-frames", "player-1", "player-2"] {
        assert_eq!(thread_cpus(pid, thread), all, "{thread} of an unpinned pod");
    }
    assert!(served.terminate().success());
    let log = served.log();
    assert!(log.contains("threads not pinned"), "{log}");

    let first = cpus[0];
    let mut served = Served::start_owned(&xvfb.pod_args(&["--pin-core", &first.to_string()]));
    let pid = served.child.id();
    assert_eq!(thread_cpus(pid, "playpod-frames"), first.to_string());
    let player_core = cpus.get(1).copied().unwrap_or(first).to_string();
    for thread in ["player-1", "player-2"] {
        assert_eq!(thread_cpus(pid, thread), player_core, "{thread}");
    }
    assert!(served.terminate().success());

    let outside = (cpus.last().unwrap() + 1).to_string();
    let args = xvfb.pod_args(&["--pin-core", &outside, "--listen", "127.0.0.1:0"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = playpod_tests::playpod_fails(&args);
    assert!(
        err.contains(&format!(
            "--pin-core {outside}: this process may only run on cores {all}"
        )),
        "{err}"
    );
}
