//! Helpers shared by the integration tests: real Xvfb and friends, started and always cleaned up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod g2g;
pub mod soak;

/// The `playpod` binary of this build profile (`cargo build -p playpod` makes it; the README's
/// test command does that before the tests).
pub fn playpod_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test> or target/<profile>/<bin> -> target/<profile>/playpod
    let mut dir = exe.parent().expect("the binary lives in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target/<profile>/deps has a parent");
    }
    let bin = dir.join("playpod");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p playpod` (same profile) before these tests",
        bin.display()
    );
    bin
}

/// Runs `playpod ARGS...`, asserts that it fails, and returns what it wrote on stderr.
pub fn playpod_fails(args: &[&str]) -> String {
    let out = Command::new(playpod_bin())
        .args(args)
        .output()
        .expect("run playpod");
    assert!(!out.status.success(), "playpod {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn display_taken(n: u32) -> bool {
    Path::new(&format!("/tmp/.X{n}-lock")).exists()
        || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
}

/// A real Xvfb on a free display, killed (and its framebuffer removed) on drop.
#[derive(Debug)]
pub struct Xvfb {
    child: Child,
    pub display: u32,
    pub fbdir: tempfile::TempDir,
    /// The screen's width and height.
    pub size: (u32, u32),
}

impl Xvfb {
    /// Starts `Xvfb :N -screen 0 WxHx24 -fbdir DIR` on the first free display from a
    /// per-process offset (tests run in parallel) and waits until it accepts clients.
    pub fn start(width: u32, height: u32) -> Self {
        Self::start_with(width, height, &[])
    }

    /// [`Xvfb::start`] with more arguments for Xvfb (such as `-extension XTEST`).
    pub fn start_with(width: u32, height: u32, extra: &[&str]) -> Self {
        assert!(have("Xvfb"), "Xvfb is not installed (apt-get install xvfb)");
        let shm = Path::new("/dev/shm");
        let fbdir = tempfile::Builder::new()
            .prefix("playpod-test-fb-")
            .tempdir_in(if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            })
            .expect("temp dir");
        // Tests in one binary start their servers at the same moment: two of them trying the
        // same free display at once, the loser's Xvfb could make its framebuffer, then fail to
        // listen and remove it, after the winner's socket had already appeared. So each start
        // in a process begins at a display of its own.
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
        let mut n = 200 + (std::process::id() % 500) + 500 * (start % 8) + 4000 * (start / 8);
        loop {
            while display_taken(n) {
                n += 1;
            }
            let mut child = Command::new("Xvfb")
                .arg(format!(":{n}"))
                .args(["-screen", "0", &format!("{width}x{height}x24")])
                .args(["-nolisten", "tcp", "-noreset", "-fbdir"])
                .arg(fbdir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start Xvfb");
            let started = Instant::now();
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            loop {
                if child.try_wait().expect("wait Xvfb").is_some() {
                    break; // lost a race for the display; try the next one
                }
                if socket.exists() && fbdir.path().join("Xvfb_screen0").exists() {
                    return Self {
                        child,
                        display: n,
                        fbdir,
                        size: (width, height),
                    };
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "Xvfb :{n} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            n += 1;
        }
    }

    /// `:N`
    pub fn name(&self) -> String {
        format!(":{}", self.display)
    }

    /// The framebuffer file.
    pub fn framebuffer(&self) -> PathBuf {
        self.fbdir.path().join("Xvfb_screen0")
    }

    /// `playpod pod` streaming this screen, its framebuffer read in place, at its size, with
    /// `extra` arguments.
    pub fn pod_args(&self, extra: &[&str]) -> Vec<String> {
        let (w, h) = self.size;
        let mut args: Vec<String> = vec![
            "pod".into(),
            "--display".into(),
            self.name(),
            "--framebuffer".into(),
            self.framebuffer().to_string_lossy().into_owned(),
            "--size".into(),
            format!("{w}x{h}"),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server with SIGTERM (killed if it has not exited within 5 s), so that it
    /// removes its lock file and socket, which dropping it (SIGKILL) leaves behind.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM first, so Xvfb removes its lock file and socket; SIGKILL if it lingers.
        stop_gently(&mut self.child, Duration::from_secs(3));
    }
}

/// SIGTERM, then SIGKILL if `child` has not exited within `grace`; reaps it either way.
fn stop_gently(child: &mut Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        let _ = playpod_ffi::terminate(child.id());
        if exited_within(child, grace).is_none() {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

/// `child`'s exit status once it has exited; `None` if it still runs after `limit` (or cannot
/// be waited for).
pub fn exited_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Sends signal `sig` (as `kill` names it, e.g. `-STOP`) to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// A child process stopped on drop: SIGTERM, so that it can clean up after itself (an Xvfb
/// removes its lock file and socket), then SIGKILL if it lingers.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        stop_gently(&mut self.0, Duration::from_secs(2));
    }
}

/// Runs the built-in game (`playpod game`) on a display.
pub fn start_game(display: &str, scene: &str, size: (u32, u32)) -> Guard {
    let child = Command::new(playpod_bin())
        .args(["game", "--display", display, "--scene", scene])
        .args(["--size", &format!("{}x{}", size.0, size.1)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start playpod game");
    Guard(child)
}

/// A `playpod` process that printed its `playpod: open URL` line. Its stderr is passed through
/// and kept ([`Served::log`]).
#[derive(Debug)]
pub struct Served {
    pub child: Child,
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Starts `playpod ARGS... --listen 127.0.0.1:0` and waits for the URL line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, |_| {})
    }

    /// [`Served::start`], `configure` given the command before it is spawned.
    pub fn start_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Self {
        Self::start_at(args, "127.0.0.1:0", configure)
    }

    /// [`Served::start_with`], listening on `listen` instead of loopback.
    pub fn start_at(args: &[&str], listen: &str, configure: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = Command::new(playpod_bin());
        cmd.args(args)
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("start playpod");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let kept = std::sync::Arc::clone(&log);
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut kept = kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("playpod: open ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("playpod {args:?} printed no URL within 30 s (exit: {status:?})");
            }
        };
        Self {
            child,
            url,
            log,
            log_reader: Some(log_reader),
        }
    }

    /// [`Served::start`] with owned arguments (such as [`Xvfb::pod_args`]).
    pub fn start_owned(args: &[String]) -> Self {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start(&args)
    }

    /// What it wrote on stderr so far; once it has exited (and every child sharing its
    /// stderr), all of it.
    pub fn log(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.log_reader.as_ref().is_some_and(|r| !r.is_finished())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.log_reader.as_ref().is_some_and(|r| r.is_finished()) {
                let _ = self.log_reader.take().map(std::thread::JoinHandle::join);
            }
        }
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        let rest = self.url.split_once("://").map_or("", |(_, r)| r);
        let host = rest.split('/').next().unwrap_or("");
        format!("http://{host}")
    }

    /// `GET PATH` over plain HTTP/1.1: the whole response, status line and headers included.
    pub fn get(&self, path: &str) -> String {
        use std::io::{Read as _, Write as _};
        let origin = self.origin();
        let host = origin.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(host).expect("connect to playpod");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .expect("send the request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read the response");
        text
    }

    /// Sends SIGTERM and waits (up to 15 s) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        playpod_ffi::terminate(self.child.id()).expect("signal playpod");
        exited_within(&mut self.child, Duration::from_secs(15))
            .expect("playpod did not exit within 15 s of SIGTERM")
    }
}

impl Drop for Served {
    /// SIGTERM, then SIGKILL only if it has not exited within 10 s: killing a demo outright
    /// would leave its framebuffer directory behind.
    fn drop(&mut self) {
        stop_gently(&mut self.child, Duration::from_secs(10));
    }
}

/// A process, identified across pid reuse by its start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// `R`, `S`, `T`, `Z`, ... as in `ps`.
    pub state: char,
    pub start_time: u64,
    pub cmdline: Vec<String>,
}

impl Proc {
    /// Process `pid`, if it exists.
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ..." — comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        Some(Self {
            pid,
            ppid: fields.get(1)?.parse().ok()?,
            state: fields.first()?.chars().next()?,
            start_time: fields.get(19)?.parse().ok()?,
            cmdline: cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        })
    }

    /// Every process of the machine.
    pub fn all() -> Vec<Self> {
        std::fs::read_dir("/proc")
            .expect("read /proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter_map(Self::read)
            .collect()
    }

    /// Still running: the same process (not a reused pid) and not a zombie.
    pub fn running(&self) -> bool {
        Self::read(self.pid)
            .is_some_and(|now| now.start_time == self.start_time && now.state != 'Z')
    }

    /// The file name of its program (`argv[0]` without its directory).
    pub fn program(&self) -> &str {
        self.cmdline
            .first()
            .map_or("", |p| p.rsplit('/').next().unwrap_or(p))
    }

    pub fn is_xvfb(&self) -> bool {
        self.program() == "Xvfb"
    }

    pub fn is_game(&self) -> bool {
        self.program() == "playpod" && self.cmdline.get(1).is_some_and(|a| a == "game")
    }

    /// The value after `flag` on the command line.
    pub fn arg_after(&self, flag: &str) -> Option<&str> {
        let at = self.cmdline.iter().position(|a| a == flag)?;
        self.cmdline.get(at + 1).map(String::as_str)
    }
}

/// The children of process `pid` whose program is `name`, with their command lines.
pub fn children_named(pid: u32, name: &str) -> Vec<(u32, String)> {
    Proc::all()
        .into_iter()
        .filter(|p| p.ppid == pid && p.program() == name)
        .map(|p| (p.pid, p.cmdline.join(" ")))
        .collect()
}

/// Decodes an Annex-B H.264 stream with FFmpeg, the independent decoder, into raw pictures of
/// `pix_fmt` (`rgb24`, `bgr0`, ...), one after the other.
///
/// # Panics
/// If FFmpeg cannot be run or fails to decode the stream.
pub fn ffmpeg_decode(stream: Vec<u8>, pix_fmt: &str) -> Vec<u8> {
    use std::io::Write as _;
    assert!(
        have("ffmpeg"),
        "ffmpeg is needed as the independent decoder (apt-get install ffmpeg)"
    );
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "h264", "-i", "-", "-f", "rawvideo"])
        .args(["-pix_fmt", pix_fmt, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let mut stdin = ffmpeg.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || stdin.write_all(&stream));
    let out = ffmpeg.wait_with_output().expect("wait for ffmpeg");
    feeder
        .join()
        .expect("feeder thread")
        .expect("write the stream to ffmpeg");
    assert!(out.status.success(), "ffmpeg failed to decode our stream");
    out.stdout
}

/// Peak signal-to-noise ratio of two equally long byte pictures, in dB.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// A synthetic screen for server tests: a gradient with a bar that moves every frame.
#[derive(Debug)]
pub struct MovingPattern {
    buf: Vec<u8>,
    width: u32,
    height: u32,
    frame: u32,
    noise: Option<u64>,
}

impl MovingPattern {
    pub fn new(width: u32, height: u32) -> Self {
        let mut buf = vec![0u8; (width * height * 4) as usize];
        for (i, px) in buf.chunks_exact_mut(4).enumerate() {
            let (x, y) = (i as u32 % width, i as u32 / width);
            px.copy_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 96, 0]);
        }
        Self {
            buf,
            width,
            height,
            frame: 0,
            noise: None,
        }
    }

    /// Also fills every other row with fresh noise each frame: large access units.
    pub fn with_noise(mut self) -> Self {
        self.noise = Some(0x9e37_79b9_7f4a_7c15);
        self
    }
}

impl playpod_hotpath::capture::FrameSource for MovingPattern {
    fn kind(&self) -> &'static str {
        "synthetic"
    }

    fn grab(
        &mut self,
    ) -> Result<playpod_hotpath::convert::BgrxFrame<'_>, playpod_hotpath::capture::CaptureError>
    {
        let (w, h) = (self.width as usize, self.height as usize);
        let bar = |n: u32| (n as usize * 8) % w;
        let (old, new) = (bar(self.frame), bar(self.frame + 1));
        self.frame += 1;
        for y in 0..h {
            for x in [old, new] {
                for dx in 0..8.min(w - x) {
                    let at = (y * w + x + dx) * 4;
                    let v = if x == new {
                        255
                    } else {
                        ((x + dx) * 255 / w) as u8
                    };
                    self.buf[at] = v;
                    self.buf[at + 1] = if x == new { 255 } else { (y * 255 / h) as u8 };
                    self.buf[at + 2] = if x == new { 255 } else { 96 };
                }
            }
        }
        if let Some(state) = &mut self.noise {
            for row in self
                .buf
                .chunks_exact_mut(w * 4)
                .skip(self.frame as usize % 2)
                .step_by(2)
            {
                for word in row.chunks_exact_mut(8) {
                    *state ^= *state << 13;
                    *state ^= *state >> 7;
                    *state ^= *state << 17;
                    word.copy_from_slice(&state.to_le_bytes());
                }
            }
        }
        Ok(playpod_hotpath::convert::BgrxFrame {
            bytes: &self.buf,
            width: self.width,
            height: self.height,
            stride: w * 4,
        })
    }
}

/// The CPUs this process may run on (its affinity), as the kernel lists them (`0-3,6`) and
/// one by one.
pub fn allowed_cpus() -> (String, Vec<usize>) {
    let list = cpus_allowed_list(Path::new("/proc/self/status")).expect("Cpus_allowed_list");
    let cpus = list
        .split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()
        })
        .collect();
    (list, cpus)
}

/// The `Cpus_allowed_list` of a process's or thread's `status` file (`/proc/PID/status`,
/// `/proc/PID/task/TID/status`), if it can be read.
pub fn cpus_allowed_list(status: &Path) -> Option<String> {
    std::fs::read_to_string(status)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|l| l.trim().to_owned())
}

/// A video viewer on a link far slower than the stream, over loopback: it opens
/// `ws_url` (`ws://HOST:PORT/play/TOKEN/video`) through a receive buffer of 4 KiB, then reads
/// 4 KiB every 100 ms (about 330 kbit/s), frames or not, until aborted or closed. The pod sees
/// it fall behind its ring and, while no player is connected, lowers the bitrate for it.
pub async fn slow_video_viewer(ws_url: &str) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncReadExt as _;
    let host = ws_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default();
    let addr: std::net::SocketAddr = host.parse().unwrap_or_else(|err| panic!("{ws_url}: {err}"));
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small buffer");
    let tcp = socket.connect(addr).await.expect("connect");
    let (mut viewer, _) = tokio_tungstenite::client_async(ws_url, tcp)
        .await
        .expect("the video handshake");
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match viewer.get_mut().read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
}
