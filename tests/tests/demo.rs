//! `playpod demo` as a user runs it: started and stopped by the test (SIGTERM, Ctrl-C in a
//! terminal, the terminal closing), it stops its children in order and leaves no child process,
//! framebuffer file, shared-memory segment, sound-server directory or X lock file behind, with the framebuffer
//! in a file (`-fbdir`, the default) and in a SysV segment (`--shmem`). And when Xvfb cannot
//! start (not installed, display taken) it exits non-zero saying what to do.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use playpod_tests::{Proc, Served, Xvfb, playpod_bin};

/// Demos started without `--display` take the first free display: start them one at a time.
static ONE_DEMO_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long the children and files may take to disappear once the demo has exited.
const GRACE: Duration = Duration::from_secs(5);

/// One row of /proc/sysvipc/shm.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Segment {
    shmid: i32,
    size: u64,
    cpid: u32,
}

fn segments() -> BTreeSet<Segment> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").expect("read /proc/sysvipc/shm");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // key shmid perms size cpid lpid nattch ...
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Segment {
                shmid: f.get(1)?.parse().ok()?,
                size: f.get(3)?.parse().ok()?,
                cpid: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// The /dev/shm/playpod-fb-* entries the demo makes for its framebuffer.
fn framebuffer_dirs() -> BTreeSet<PathBuf> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("playpod-fb-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `done` until it holds or [`GRACE`] has passed; whether it held.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + GRACE;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How the demo is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM to the demo alone, as Kubernetes or a process manager does.
    Term,
    /// SIGINT to its whole process group, as a terminal's Ctrl-C does: the demo runs as a
    /// foreground job, leader of its group.
    CtrlC,
    /// SIGHUP, as when the terminal it was started from closes.
    Hangup,
}

impl Stop {
    fn send(self, demo: &mut Served) -> ExitStatus {
        let pid = demo.child.id().to_string();
        let (signal, target) = match self {
            Stop::Term => return demo.terminate(),
            Stop::CtrlC => ("-INT", format!("-{pid}")),
            Stop::Hangup => ("-HUP", pid),
        };
        let sent = Command::new("kill")
            .args([signal, "--", &target])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} -- {target}: {sent}");
        playpod_tests::exited_within(&mut demo.child, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("the demo did not exit within 15 s of {self:?}"))
    }
}

fn starts_and_stops_cleanly(extra: &[&str], stop: Stop) {
    let _one = ONE_DEMO_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let shmem = extra.contains(&"--shmem");
    let dirs_before = framebuffer_dirs();
    let segments_before = segments();

    let started = Instant::now();
    let mut args = vec!["demo"];
    args.extend_from_slice(extra);
    let mut demo = Served::start_with(&args, |cmd| {
        if stop == Stop::CtrlC {
            cmd.process_group(0);
        }
    });
    let demo_pid = demo.child.id();
    eprintln!(
        "demo {extra:?} serving after {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // Its children: a virtual screen and the game.
    let children: Vec<Proc> = Proc::all()
        .into_iter()
        .filter(|p| p.ppid == demo_pid && p.state != 'Z')
        .collect();
    let names: Vec<String> = children.iter().map(|p| p.cmdline.join(" ")).collect();
    let xvfb = children
        .iter()
        .find(|p| p.is_xvfb())
        .unwrap_or_else(|| panic!("no Xvfb among the demo's children: {names:?}"))
        .clone();
    assert!(
        children.iter().any(Proc::is_game),
        "no `playpod game` among the demo's children: {names:?}"
    );
    // No child writes where the demo does: in process groups of their own they are background
    // jobs of the demo's terminal, and one writing to a terminal set to `tostop` is stopped.
    let standard = |pid: u32| -> Vec<String> {
        (0..3)
            .filter_map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target != "/dev/null")
            .collect()
    };
    let demo_outputs = standard(demo_pid);
    for child in &children {
        let shared: Vec<String> = standard(child.pid)
            .into_iter()
            .filter(|target| demo_outputs.contains(target))
            .collect();
        assert!(
            shared.is_empty(),
            "{} writes to the demo's own stdin/stdout/stderr {shared:?}",
            child.cmdline.join(" ")
        );
    }
    // Its sound server's home: the directory of the configuration it was started with.
    let pulse_home = children
        .iter()
        .find(|p| p.program() == "pulseaudio")
        .and_then(|p| Some(PathBuf::from(p.arg_after("-F")?).parent()?.to_path_buf()))
        .unwrap_or_else(|| panic!("no PulseAudio among the demo's children: {names:?}"));
    assert!(
        pulse_home.is_dir(),
        "{} missing while PulseAudio runs",
        pulse_home.display()
    );
    let display: u32 = xvfb
        .cmdline
        .iter()
        .find_map(|a| a.strip_prefix(':')?.parse().ok())
        .unwrap_or_else(|| panic!("no :N on Xvfb's command line: {:?}", xvfb.cmdline));
    let lock = PathBuf::from(format!("/tmp/.X{display}-lock"));
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{display}"));
    assert!(lock.exists(), "{} missing while Xvfb runs", lock.display());

    // Its framebuffer, while it runs.
    let fb_dir = xvfb.arg_after("-fbdir").map(PathBuf::from);
    let new_dirs: BTreeSet<PathBuf> = framebuffer_dirs()
        .difference(&dirs_before)
        .cloned()
        .collect();
    let (w, h) = (768u64, 768u64);
    let segment = if shmem {
        assert!(
            fb_dir.is_none(),
            "--shmem Xvfb got -fbdir: {:?}",
            xvfb.cmdline
        );
        let ours: Vec<Segment> = segments()
            .into_iter()
            .filter(|s| s.cpid == xvfb.pid)
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "Xvfb -shmem should have made one segment: {ours:?}"
        );
        assert!(ours[0].size >= w * h * 4, "segment too small: {ours:?}");
        Some(ours[0].clone())
    } else {
        let dir = fb_dir
            .as_ref()
            .unwrap_or_else(|| panic!("Xvfb runs without -fbdir: {:?}", xvfb.cmdline));
        assert!(
            dir.starts_with("/dev/shm") && new_dirs.contains(dir),
            "framebuffer dir {} is not a new /dev/shm/playpod-fb-*: {new_dirs:?}",
            dir.display()
        );
        let file = dir.join("Xvfb_screen0");
        let len = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .len();
        assert!(len >= w * h * 4, "{} is only {len} bytes", file.display());
        None
    };

    // Stop it the way a user or Kubernetes does.
    let stopping = Instant::now();
    let status = stop.send(&mut demo);
    eprintln!(
        "demo {extra:?} exited ({status}) {:.2} s after {stop:?}",
        stopping.elapsed().as_secs_f64()
    );
    assert!(status.success(), "demo exited with {status} on {stop:?}");
    // Stopped right after its start, every thread still stops: the sound server's monitor
    // gives samples from the start (its null sink is not left rendering a first 2-s block), so
    // the audio capture is not stuck in a read that stopping would have to abandon.
    let log = demo.log();
    assert!(
        log.contains("stopping"),
        "the demo's log was not kept: {log}"
    );
    assert!(
        !log.contains("blocked in a read"),
        "the audio capture was stuck when the demo stopped: {log}"
    );
    // Written to a pipe, the log is plain text for whoever reads or ships it.
    assert!(
        !log.contains('\x1b'),
        "terminal colour codes in a log written to a pipe: {log}"
    );
    // Stopped in order: the stream and the game before the sound server and the screen, so
    // nothing complains of a server gone (as when Ctrl-C reached every child at once).
    let complaints: Vec<&str> = log
        .lines()
        .skip_while(|line| !line.contains("stopping"))
        .filter(|line| line.contains("WARN") || line.contains("ERROR"))
        .collect();
    assert!(
        complaints.is_empty(),
        "warnings or errors while stopping on {stop:?}: {complaints:#?}"
    );

    let alive = || -> Vec<String> {
        children
            .iter()
            .filter(|p| p.running())
            .map(|p| format!("{} {}", p.pid, p.cmdline.join(" ")))
            .collect()
    };
    assert!(
        eventually(|| alive().is_empty()),
        "children still running after the demo exited: {:?}",
        alive()
    );

    // Segments made by the demo or its children (others may come and go meanwhile).
    let ours = |s: &Segment| s.cpid == demo_pid || children.iter().any(|p| p.pid == s.cpid);
    let left_segments = || -> Vec<Segment> {
        segments()
            .into_iter()
            .filter(|s| !segments_before.contains(s) && ours(s))
            .collect()
    };
    assert!(
        eventually(|| left_segments().is_empty()),
        "shared-memory segments left behind: {:?}",
        left_segments()
    );
    if let Some(seg) = &segment {
        assert!(
            !segments().iter().any(|s| s.shmid == seg.shmid),
            "the framebuffer segment {} is still there",
            seg.shmid
        );
    }

    // Framebuffer dirs made while the demo ran (bar any that another Xvfb still uses).
    let left_dirs = || -> Vec<PathBuf> {
        let others: Vec<Proc> = Proc::all().into_iter().filter(Proc::is_xvfb).collect();
        framebuffer_dirs()
            .intersection(&new_dirs)
            .filter(|d| {
                fb_dir.as_ref() == Some(*d)
                    || !others.iter().any(|p| p.arg_after("-fbdir") == d.to_str())
            })
            .cloned()
            .collect()
    };
    assert!(
        eventually(|| left_dirs().is_empty()),
        "framebuffer files left behind: {:?}",
        left_dirs()
    );
    if let Some(dir) = &fb_dir {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }

    assert!(
        eventually(|| !pulse_home.exists()),
        "the sound server's directory {} is still there",
        pulse_home.display()
    );

    assert!(
        eventually(|| !lock.exists() && !socket.exists()),
        "display :{display} not released: lock file {} {}, socket {} {}",
        lock.display(),
        if lock.exists() { "remains" } else { "gone" },
        socket.display(),
        if socket.exists() { "remains" } else { "gone" },
    );
    eprintln!(
        "demo {extra:?}: {:.2} s in all",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn demo_with_framebuffer_file_leaves_nothing_behind() {
    starts_and_stops_cleanly(&[], Stop::Term);
}

#[test]
fn demo_with_shm_segment_leaves_nothing_behind() {
    starts_and_stops_cleanly(&["--shmem"], Stop::Term);
}

#[test]
fn demo_stopped_by_ctrl_c_in_a_terminal_stops_its_children_in_order() {
    starts_and_stops_cleanly(&[], Stop::CtrlC);
}

#[test]
fn demo_whose_terminal_closes_leaves_nothing_behind() {
    starts_and_stops_cleanly(&["--shmem"], Stop::Hangup);
}

/// Runs a `playpod` that is expected to fail on its own; its exit status and stderr.
fn run_to_exit(mut cmd: Command) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start playpod");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait playpod") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("playpod {cmd:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("stderr reader"))
}

#[test]
fn demo_without_xvfb_says_how_to_install_it() {
    let empty = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(playpod_bin());
    cmd.args(["demo", "--listen", "127.0.0.1:0"])
        .env("PATH", empty.path());
    let started = Instant::now();
    let (status, stderr) = run_to_exit(cmd);
    eprintln!(
        "exited ({status}) in {:.2} s: {stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(!status.success(), "demo without Xvfb exited with {status}");
    assert!(
        stderr.contains("Xvfb"),
        "stderr does not name Xvfb: {stderr}"
    );
    assert!(
        stderr.contains("apt-get install xvfb"),
        "stderr does not say how to install Xvfb: {stderr}"
    );
}

#[test]
fn demo_refuses_a_core_it_may_not_run_on_before_starting_anything() {
    // One past the last core the test may run on.
    let (cores, each) = playpod_tests::allowed_cpus();
    let last = *each.last().expect("a core");
    let mut cmd = Command::new(playpod_bin());
    cmd.args(["demo", "--listen", "127.0.0.1:0", "--pin-core"])
        .arg((last + 1).to_string());
    let (status, stderr) = run_to_exit(cmd);
    assert!(!status.success(), "demo on a core it may not use: {status}");
    assert!(
        stderr.contains(&format!(
            "--pin-core {}: this process may only run on cores {cores}",
            last + 1
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("virtual screen ready"),
        "it started Xvfb before refusing: {stderr}"
    );
}

#[test]
fn demo_refuses_what_it_cannot_serve_before_starting_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port().to_string();
    let mut cases = vec![
        (
            vec!["--input-port-1", port.as_str()],
            format!("cannot listen for player 1's input on 127.0.0.1:{port} (--input-port-1)"),
        ),
        (
            vec!["--size", "4096x4096"],
            "--size 4096x4096 is larger than H.264 (level 5.2) allows".to_owned(),
        ),
    ];
    let gpu = playpod_hotpath::gpu::GpuChoice::detect();
    if gpu.nvenc.is_none() {
        cases.push((
            vec!["--encoder", "nvenc"],
            "--encoder nvenc: NVENC is not available".to_owned(),
        ));
    } else {
        eprintln!("NVENC present: --encoder nvenc is not refused here");
    }
    for (flags, want) in cases {
        let mut cmd = Command::new(playpod_bin());
        cmd.args(["demo", "--listen", "127.0.0.1:0"]).args(&flags);
        let (status, stderr) = run_to_exit(cmd);
        assert!(!status.success(), "{flags:?}: {status}");
        assert!(stderr.contains(&want), "{flags:?}: {stderr}");
        assert!(
            !stderr.contains("virtual screen ready"),
            "{flags:?}: it started Xvfb before refusing: {stderr}"
        );
    }
}

#[test]
fn demo_refuses_a_player_port_that_is_its_own_before_starting_anything() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for player in ["1", "2"] {
        let mut cmd = Command::new(playpod_bin());
        cmd.args([
            "demo",
            "--no-audio",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([format!("--input-port-{player}"), port.to_string()]);
        let (status, stderr) = run_to_exit(cmd);
        assert!(!status.success(), "{status}");
        assert!(
            stderr.contains(&format!(
                "--input-port-{player} {port} is the port of --listen 127.0.0.1:{port}"
            )),
            "{stderr}"
        );
        assert!(
            !stderr.contains("virtual screen ready"),
            "it started Xvfb before refusing: {stderr}"
        );
    }
}

#[test]
fn demo_on_a_taken_display_says_so() {
    let xvfb = Xvfb::start(64, 64);
    let mut cmd = Command::new(playpod_bin());
    cmd.args(["demo", "--listen", "127.0.0.1:0", "--display"])
        .arg(xvfb.display.to_string());
    let started = Instant::now();
    let (status, stderr) = run_to_exit(cmd);
    eprintln!(
        "exited ({status}) in {:.2} s: {stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        !status.success(),
        "demo on a taken display exited with {status}"
    );
    let display = xvfb.name();
    assert!(
        stderr.contains(&format!("display {display}")) && stderr.contains("taken"),
        "stderr does not say that display {display} is taken: {stderr}"
    );
    assert!(
        stderr.contains("--display"),
        "stderr does not say what to do (--display N): {stderr}"
    );
    // It left the Xvfb that owns the display alone.
    assert!(
        x11rb::connect(Some(&display)).is_ok(),
        "the test's Xvfb on {display} no longer answers"
    );
    xvfb.stop();
}

/// A display whose X server died and left its lock file and socket (a crash, a SIGKILL) is
/// free again: the demo takes it, as Xvfb does, rather than call it taken.
#[test]
fn demo_takes_a_display_a_dead_server_left_behind() {
    let _one = ONE_DEMO_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = 1700 + std::process::id() % 200;
    while std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
        || std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
    {
        n += 1;
    }
    // The pid of a process that has exited, in the lock file as Xvfb writes it.
    let mut gone = Command::new("true").spawn().expect("run true");
    let dead = gone.id();
    gone.wait().expect("wait for true");
    let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    std::fs::write(&lock, format!("{dead:>10}\n")).expect("write a stale lock file");
    std::fs::create_dir_all("/tmp/.X11-unix").expect("the X socket directory");
    std::fs::write(&socket, "").expect("leave a stale socket");
    let display = n.to_string();
    let mut demo = Served::start(&["demo", "--no-audio", "--display", &display]);
    let ready = demo.get("/readyz");
    assert!(ready.contains("\"ready\":true"), "{ready}");
    let lock_pid = std::fs::read_to_string(&lock).expect("the demo's Xvfb's lock file");
    assert_ne!(
        lock_pid.trim(),
        dead.to_string(),
        "the stale lock file is still there"
    );
    let demo_pid = demo.child.id();
    playpod_ffi::terminate(demo_pid).expect("signal the demo");
    let status = playpod_tests::exited_within(&mut demo.child, Duration::from_secs(10))
        .expect("the demo exits on SIGTERM");
    assert!(status.success(), "{status}: {}", demo.log());
    assert!(
        eventually(|| !lock.exists() && !socket.exists()),
        "lock file or socket left behind"
    );
}

/// The demo's PulseAudio killed: the demo starts another in the same place, and the capture
/// reconnects to it (audio back to "ok", one more reconnection counted).
#[test]
fn demo_restarts_a_sound_server_that_dies() {
    let _one = ONE_DEMO_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let served = Served::start(&["demo"]);
    let demo_pid = served.child.id();
    let pulse = || {
        Proc::all()
            .into_iter()
            .find(|p| p.ppid == demo_pid && p.program() == "pulseaudio" && p.state != 'Z')
    };
    let audio_ok = || served.get("/readyz").contains(r#""audio":"ok""#);
    let reconnected = || {
        served.get("/metrics").lines().any(|l| {
            l.strip_prefix("playpod_audio_reconnects_total ")
                .is_some_and(|n| n.trim() != "0")
        })
    };
    assert!(
        eventually(audio_ok),
        "audio never ok: {}",
        served.get("/readyz")
    );
    assert!(!reconnected(), "a reconnection before the kill");
    let first = pulse().expect("a pulseaudio child of the demo");
    let killed = Instant::now();
    let status = Command::new("kill")
        .args(["-KILL", &first.pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {}", first.pid);
    assert!(
        eventually(|| pulse().is_some_and(|p| p.pid != first.pid)),
        "no new pulseaudio within {GRACE:?} of killing the first"
    );
    let second = pulse().expect("the new pulseaudio");
    // The restart waits 1 s, the capture retries with a backoff of up to 2 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(audio_ok() && reconnected()) {
        assert!(
            Instant::now() < deadline,
            "the audio did not come back within 20 s: {}",
            served.get("/readyz")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "pulseaudio {} killed, {} started; audio ok again {:.1} s after the kill",
        first.pid,
        second.pid,
        killed.elapsed().as_secs_f64()
    );
    assert!(!first.running() && second.running());
}

/// Ctrl-C, SIGTERM or SIGHUP while the demo waits for its Xvfb to come up stops it at once,
/// with the Xvfb it started, as at any other time: not after the 15-s start-up limit, and not
/// as a failure. The Xvfb here never comes up.
#[test]
fn demo_stopped_while_its_screen_starts_stops_at_once() {
    let bin = tempfile::tempdir().expect("temp dir");
    let fake = bin.path().join("Xvfb");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 60\n").expect("write the stand-in Xvfb");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make it executable");
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    for signal in ["-TERM", "-INT", "-HUP"] {
        let dirs_before = framebuffer_dirs();
        let mut demo = Command::new(playpod_bin())
            .args(["demo", "--listen", "127.0.0.1:0", "--no-audio"])
            .env("PATH", &path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start playpod");
        let pid = demo.id();
        let stand_in = || {
            Proc::all()
                .into_iter()
                .find(|p| p.ppid == pid && p.cmdline.iter().any(|a| a == "60") && p.state != 'Z')
        };
        assert!(
            eventually(|| stand_in().is_some()),
            "{signal}: Xvfb not started"
        );
        let xvfb = stand_in().expect("the stand-in Xvfb");
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let stopped = Instant::now();
        let status = playpod_tests::exited_within(&mut demo, Duration::from_secs(10));
        let mut stderr = String::new();
        let _ = demo
            .stderr
            .take()
            .map(|mut e| e.read_to_string(&mut stderr));
        let status = status.unwrap_or_else(|| {
            let _ = demo.kill();
            panic!("{signal}: the demo still runs 10 s after the signal: {stderr}")
        });
        let took = stopped.elapsed();
        eprintln!("{signal}: exited ({status}) in {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "{signal}: took {took:?}: {stderr}"
        );
        assert!(status.success(), "{signal}: {status}: {stderr}");
        assert!(
            eventually(|| !xvfb.running()),
            "{signal}: its Xvfb still runs"
        );
        assert!(
            eventually(|| framebuffer_dirs().is_subset(&dirs_before)),
            "{signal}: framebuffer directory left behind"
        );
    }
}

/// Xvfb killed under the demo (SIGKILL: it removes nothing): the demo exits non-zero saying so,
/// and removes the lock file and socket Xvfb left, so that the display is free again.
#[test]
fn demo_whose_screen_is_killed_frees_its_display() {
    let _one = ONE_DEMO_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = 1500 + std::process::id() % 200;
    while std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
        || std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
    {
        n += 1;
    }
    let display = n.to_string();
    let mut demo = Served::start(&["demo", "--no-audio", "--display", &display]);
    let demo_pid = demo.child.id();
    let xvfb = Proc::all()
        .into_iter()
        .find(|p| p.ppid == demo_pid && p.is_xvfb())
        .expect("the demo's Xvfb");
    let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    assert!(lock.exists() && socket.exists());
    let killed = Command::new("kill")
        .args(["-KILL", &xvfb.pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = playpod_tests::exited_within(&mut demo.child, Duration::from_secs(10))
        .expect("the demo exits when its Xvfb dies");
    let log = demo.log();
    assert!(!status.success(), "{status}");
    assert!(log.contains("Xvfb exited"), "{log}");
    assert!(
        eventually(|| !lock.exists() && !socket.exists()),
        "the dead Xvfb's lock file or socket is left: {} {}",
        lock.exists(),
        socket.exists()
    );
}
