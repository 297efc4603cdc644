//! `playpod demo`: a virtual screen (Xvfb), a sound server (PulseAudio with a null sink), the
//! built-in game on both, and the session serving them, supervised together. Stopping the demo
//! stops every child and removes every framebuffer file, shared-memory segment and PulseAudio
//! directory it made.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use playpod_hotpath::capture::{FrameSource, FramebufferFile, FramebufferSegment};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::audio::AudioSource;
use crate::audio::daemon::{self, PulseDaemon, PulseHome};
use crate::cli::{DemoArgs, LogFormat};
use crate::cores::{Machine, Placement};
use crate::display::DisplayWatch;
use crate::game::Scene;
use crate::session::{self, Session};

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Finds `name` on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn x_lock(n: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/.X{n}-lock"))
}

fn x_socket(n: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/.X11-unix/X{n}"))
}

/// The process id in display `n`'s lock file: `None` where the file holds none (a server
/// starting now is writing it, or it is not a server's); an error where there is no such file.
fn lock_pid(n: u32) -> std::io::Result<Option<u32>> {
    let text = std::fs::read_to_string(x_lock(n))?;
    Ok(text.trim().parse::<u32>().ok().filter(|&pid| pid > 0))
}

/// Whether display `n` is in use: its lock file names a process that runs (or cannot be read),
/// or it has a socket but no lock file. A lock file left by a server that died is stale: Xvfb
/// takes such a display over, lock file and socket.
fn display_taken(n: u32) -> bool {
    match lock_pid(n) {
        Ok(Some(pid)) => Path::new(&format!("/proc/{pid}")).exists(),
        Ok(None) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => x_socket(n).exists(),
        Err(_) => true,
    }
}

/// The first display number from `from` (99 at first) that is not in use.
fn free_display(from: u32) -> anyhow::Result<u32> {
    (from..400)
        .find(|&n| !display_taken(n))
        .ok_or_else(|| anyhow!("no free X display between :99 and :399; pass --display N"))
}

/// A child we started, with a name for messages.
struct Managed {
    name: &'static str,
    child: Child,
    /// Its process id, kept after it has been waited for.
    pid: Option<u32>,
    /// Copies what the child writes on stderr to ours, line by line.
    forward: Option<tokio::task::JoinHandle<()>>,
}

impl Managed {
    fn spawn(name: &'static str, mut cmd: std::process::Command) -> anyhow::Result<Self> {
        playpod_ffi::supervised(&mut cmd);
        let mut cmd = Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name,
            pid: child.id(),
            child,
            forward: None,
        })
    }

    /// [`Managed::spawn`] for a child that logs: its stderr is a pipe the demo copies onto its
    /// own. In a process group of its own the child is a background job of the terminal, and
    /// a background job that writes to a terminal set to `tostop` is stopped (SIGTTOU).
    fn spawn_logging(name: &'static str, mut cmd: std::process::Command) -> anyhow::Result<Self> {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut managed = Self::spawn(name, cmd)?;
        if let Some(stderr) = managed.child.stderr.take() {
            managed.forward = Some(tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let mut lines = BufReader::new(stderr).split(b'\n');
                let mut out = tokio::io::stderr();
                while let Ok(Some(mut line)) = lines.next_segment().await {
                    line.push(b'\n');
                    if out.write_all(&line).await.is_err() {
                        break;
                    }
                }
                let _ = out.flush().await;
            }));
        }
        Ok(managed)
    }

    /// Asks the child to exit (SIGTERM), then kills it if it has not within [`STOP_TIMEOUT`].
    async fn stop(mut self) {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        if !exited {
            if let Some(pid) = self.child.id() {
                let _ = playpod_ffi::terminate(pid);
            }
            match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
                Ok(_) => tracing::debug!(child = self.name, "stopped"),
                Err(_) => {
                    tracing::warn!(child = self.name, "did not stop on SIGTERM; killing it");
                    let _ = self.child.kill().await;
                }
            }
        }
        // Its last lines, written before it exited.
        if let Some(forward) = self.forward.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), forward).await;
        }
    }
}

/// What the virtual screen shares its framebuffer through.
enum Framebuffer {
    File(PathBuf),
    Segment(i32),
}

/// The lines Xvfb wrote on stderr, and the shmid it announced.
#[derive(Default, Clone)]
struct XvfbOutput {
    lines: Vec<String>,
    shmid: Option<i32>,
}

fn watch_stderr(child: &mut Child) -> watch::Receiver<XvfbOutput> {
    let (tx, rx) = watch::channel(XvfbOutput::default());
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "xvfb", "{line}");
                tx.send_modify(|out| {
                    // "screen 0 shmid 12345"
                    if let Some(id) = line
                        .split_once("shmid")
                        .and_then(|(_, rest)| rest.trim().parse().ok())
                    {
                        out.shmid = Some(id);
                    }
                    out.lines.push(line);
                    if out.lines.len() > 40 {
                        out.lines.remove(0);
                    }
                });
            }
        });
    }
    rx
}

fn exit_message(name: &str, status: ExitStatus, output: &XvfbOutput) -> String {
    let lines: Vec<&str> = output
        .lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
    format!(
        "{name} exited ({status}){}",
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    )
}

/// Xvfb exited while starting (display taken, for one), with its last words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct XvfbExited(String);

/// Ctrl-C, SIGTERM or SIGHUP came while the demo was starting: what had started is stopped.
#[derive(Debug, thiserror::Error)]
#[error("stopped while starting")]
struct StoppedWhileStarting;

/// Removes the lock file and socket of display `n` that Xvfb `pid` left behind because it could
/// not remove them itself (it was killed): with them, the display would look taken to the next
/// demo. Files of another server (another pid in the lock) are left alone.
fn remove_x_leftovers(n: u32, pid: u32) {
    if lock_pid(n).is_ok_and(|owner| owner == Some(pid)) {
        let _ = std::fs::remove_file(x_socket(n));
        let _ = std::fs::remove_file(x_lock(n));
        tracing::debug!(
            display = n,
            "removed the lock file and socket Xvfb left behind"
        );
    }
}

/// Starts Xvfb and waits until it serves the display and its framebuffer exists, or until
/// `stop` resolves ([`StoppedWhileStarting`], Xvfb stopped).
async fn start_xvfb(
    xvfb: &Path,
    display: u32,
    size: (u16, u16),
    fbdir: &Path,
    shmem: bool,
    stop: &mut (impl Future<Output = ()> + Unpin),
) -> anyhow::Result<(Managed, Framebuffer, watch::Receiver<XvfbOutput>)> {
    let mut cmd = std::process::Command::new(xvfb);
    cmd.arg(format!(":{display}"))
        .args(["-screen", "0", &format!("{}x{}x24", size.0, size.1)])
        .args(["-nolisten", "tcp", "-noreset"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if shmem {
        cmd.arg("-shmem");
    } else {
        cmd.arg("-fbdir").arg(fbdir);
    }
    let mut managed = Managed::spawn("Xvfb", cmd)?;
    let output = watch_stderr(&mut managed.child);
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{display}"));
    let fb_file = fbdir.join("Xvfb_screen0");
    let started = Instant::now();
    loop {
        if let Some(status) = managed.child.try_wait()? {
            // Let the stderr reader catch up before quoting it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Err(XvfbExited(format!(
                "{}. If display :{display} is taken, pick another with --display N; \
                 if Xvfb is missing, install it (apt-get install xvfb)",
                exit_message("Xvfb", status, &output.borrow())
            ))
            .into());
        }
        let framebuffer = if shmem {
            output.borrow().shmid.map(Framebuffer::Segment)
        } else {
            std::fs::metadata(&fb_file)
                .is_ok_and(|m| m.len() > 0)
                .then(|| Framebuffer::File(fb_file.clone()))
        };
        if let Some(fb) = framebuffer
            && socket.exists()
            && x11rb::connect(Some(&format!(":{display}"))).is_ok()
        {
            return Ok((managed, fb, output));
        }
        if started.elapsed() > READY_TIMEOUT {
            stop_unready(managed, &output).await;
            bail!("Xvfb did not become ready on :{display} within {READY_TIMEOUT:?}");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(25)) => {}
            () = &mut *stop => {
                stop_unready(managed, &output).await;
                return Err(StoppedWhileStarting.into());
            }
        }
    }
}

/// Stops an Xvfb that has not become ready, and removes the segment it may have announced
/// (`-shmem` leaves it behind).
async fn stop_unready(xvfb: Managed, output: &watch::Receiver<XvfbOutput>) {
    xvfb.stop().await;
    let shmid = output.borrow().shmid;
    if let Some(id) = shmid {
        let _ = playpod_ffi::remove_shm_segment(id);
    }
}

/// Starts PulseAudio in `home`, or says why not (the demo then has no sound).
async fn start_pulse(home: &PulseHome) -> Option<PulseDaemon> {
    let Some(program) = find_program("pulseaudio") else {
        tracing::warn!(
            "pulseaudio is not installed (apt-get install pulseaudio): the demo has no sound"
        );
        return None;
    };
    match PulseDaemon::start(&program, home).await {
        Ok(daemon) => Some(daemon),
        Err(err) => {
            tracing::warn!("{}; the demo has no sound", crate::error_text(&err));
            None
        }
    }
}

/// Keeps the demo's sound server running: when it dies, starts it again in the same home (the
/// capture and the game reconnect by themselves), waiting 1 s, then longer after each failed
/// start, up to 30 s. Never returns; with no server to watch (none could start) it waits forever.
async fn keep_pulse_running(pulse: &mut Option<PulseDaemon>, home: Option<&PulseHome>) -> ! {
    let (Some(home), Some(program), true) = (home, find_program("pulseaudio"), pulse.is_some())
    else {
        // It never started: nothing to keep.
        loop {
            std::future::pending::<()>().await;
        }
    };
    let mut delay = PULSE_RESTART_DELAY;
    loop {
        if let Some(daemon) = pulse.as_mut() {
            let how = daemon.exited().await;
            tracing::warn!("{how}; starting it again in {delay:?}");
            *pulse = None;
        }
        tokio::time::sleep(delay).await;
        match PulseDaemon::start(&program, home).await {
            Ok(daemon) => {
                *pulse = Some(daemon);
                delay = PULSE_RESTART_DELAY;
            }
            Err(err) => {
                delay = (delay * 2).min(Duration::from_secs(30));
                tracing::warn!("{}; trying again in {delay:?}", crate::error_text(&err));
            }
        }
    }
}

/// The wait before the first restart of a sound server that died.
const PULSE_RESTART_DELAY: Duration = Duration::from_secs(1);

fn game_command(
    args: &DemoArgs,
    log_format: LogFormat,
    display: u32,
    pulse_server: Option<&str>,
) -> anyhow::Result<std::process::Command> {
    let exe = std::env::current_exe().context("cannot find the playpod executable")?;
    let mut cmd = std::process::Command::new(exe);
    let scene = match args.scene {
        Scene::Pong => "pong",
        Scene::Plasma => "plasma",
    };
    cmd.arg("game")
        .arg("--display")
        .arg(format!(":{display}"))
        .args(["--scene", scene])
        .args(["--seed", &args.seed.to_string()])
        .args([
            "--size",
            &format!("{}x{}", args.stream.size.0, args.stream.size.1),
        ])
        .args(["--fps", &args.stream.fps.to_string()])
        .stdin(Stdio::null());
    match pulse_server {
        Some(server) => cmd.args(["--pulse-server", server]),
        None => cmd.arg("--no-sound"),
    };
    if args.stamp {
        cmd.arg("--stamp");
    }
    // The game logs like the demo, so that a log shipper reads one format.
    cmd.args(["--log-format", log_format.as_arg()]);
    Ok(cmd)
}

/// Resolves when the first of the children exits, with a message saying which and how.
async fn first_exit(
    xvfb: &mut Managed,
    game: &mut Managed,
    output: &watch::Receiver<XvfbOutput>,
) -> String {
    tokio::select! {
        status = xvfb.child.wait() => match status {
            Ok(s) => exit_message(xvfb.name, s, &output.borrow()),
            Err(e) => format!("cannot wait for Xvfb: {e}"),
        },
        status = game.child.wait() => match status {
            Ok(s) => format!("the built-in game exited ({s})"),
            Err(e) => format!("cannot wait for the game: {e}"),
        },
    }
}

pub async fn run(args: DemoArgs, log_format: LogFormat) -> anyhow::Result<()> {
    // Watch Ctrl-C and SIGTERM before starting anything, so that a signal at any point from here
    // on stops the children and removes the framebuffer instead of killing the process outright.
    let mut stop_signal = std::pin::pin!(session::shutdown_signal());
    let xvfb_path = find_program("Xvfb").ok_or_else(|| {
        anyhow!("Xvfb is not installed: install it with `apt-get install xvfb` (the README's demo command does this for you)")
    })?;
    // Check the cores and bind first: a bad core or a taken port fails before anything starts.
    session::preflight(&args.stream)?;
    let cores = Placement::decide_here(&args.stream, Machine::Ours)?;
    let (listener, addr) = session::bind(args.stream.listen)?;
    let tls = crate::tls::config(&args.stream.tls, addr).await?;
    let mut display = match args.display {
        Some(n) if display_taken(n) => bail!(
            "display :{n} is taken (its lock file names a running process, or it has a socket); pick another with --display N, or leave it out"
        ),
        Some(n) => n,
        None => free_display(99)?,
    };
    let shm_root = Path::new("/dev/shm");
    let fbdir = tempfile::Builder::new()
        .prefix("playpod-fb-")
        .tempdir_in(if shm_root.is_dir() {
            shm_root.to_path_buf()
        } else {
            std::env::temp_dir()
        })
        .context("cannot make a directory for the framebuffer")?;

    let mut attempts = 0;
    let (mut xvfb, framebuffer, xvfb_output) = loop {
        match start_xvfb(
            &xvfb_path,
            display,
            args.stream.size,
            fbdir.path(),
            args.shmem,
            &mut stop_signal,
        )
        .await
        {
            Ok(started) => break started,
            Err(err) if err.is::<StoppedWhileStarting>() => return Ok(()),
            // Another X server (another demo started at the same moment) may have taken the
            // display we picked before our Xvfb could: try the next free one, a little later.
            Err(err) if args.display.is_none() && attempts < 5 && err.is::<XvfbExited>() => {
                let failed = display; // `display` is a name inside tracing's macros
                tracing::debug!(%err, failed, "Xvfb did not start; trying the next display");
                attempts += 1;
                let jitter = u64::from(std::process::id() % 32);
                tokio::time::sleep(Duration::from_millis(10 + jitter)).await;
                display = free_display(display + 1)?;
            }
            Err(err) => return Err(err),
        }
    };
    let screen = format!(":{display}");
    tracing::info!(%screen, "virtual screen ready");
    let segment = match framebuffer {
        Framebuffer::Segment(id) => Some(id),
        Framebuffer::File(_) => None,
    };

    // The game's sound server. Without it the demo goes on silent, its audio "down".
    let pulse_home = if args.stream.audio.no_audio {
        None
    } else {
        Some(PulseHome::new()?)
    };
    let mut pulse = None;

    let result = async {
        if let Some(home) = &pulse_home {
            tokio::select! {
                started = start_pulse(home) => pulse = started,
                () = &mut stop_signal => return Ok(()),
            }
        }
        let (w, h) = (u32::from(args.stream.size.0), u32::from(args.stream.size.1));
        let source: Box<dyn FrameSource> = match &framebuffer {
            Framebuffer::File(path) => Box::new(FramebufferFile::open(path, w, h)?),
            Framebuffer::Segment(id) => Box::new(FramebufferSegment::attach(*id, w, h)?),
        };
        let audio = match &pulse_home {
            Some(home) => AudioSource::Pulse {
                server: home.server(),
                source: daemon::MONITOR.to_owned(),
            },
            None => AudioSource::Off,
        };
        let pulse_server = pulse_home.as_ref().map(PulseHome::server);
        let mut game = Managed::spawn_logging(
            "game",
            game_command(&args, log_format, display, pulse_server.as_deref())?,
        )?;
        // Only for the damage: the demo watches its Xvfb as its child.
        let watch = DisplayWatch::start(&screen, !args.stream.every_frame)?;
        let mut session =
            Session::start_with_audio(source, watch.screen_changes(), &args.stream, &audio, cores)?;
        // Players' keys go into the demo's own virtual screen, where the game reads them.
        session.start_input(&screen, &args.stream, tls.as_ref())?;
        let mut died = None;
        let served = {
            let shutdown = async {
                tokio::select! {
                    () = &mut stop_signal => {}
                    msg = first_exit(&mut xvfb, &mut game, &xvfb_output) => {
                        tracing::error!("{msg}");
                        died = Some(msg);
                    }
                    never = keep_pulse_running(&mut pulse, pulse_home.as_ref()) => match never {},
                }
            };
            session::serve(session, listener, tls, shutdown).await
        };
        game.stop().await;
        served?;
        match died {
            Some(msg) => Err(anyhow!(msg)),
            None => Ok(()),
        }
    }
    .await;

    let xvfb_pid = xvfb.pid;
    xvfb.stop().await;
    if let Some(pid) = xvfb_pid {
        remove_x_leftovers(display, pid);
    }
    if let Some(pulse) = pulse {
        pulse.stop().await;
    }
    drop(pulse_home);
    if let Some(id) = segment {
        // Xvfb -shmem leaves its segment behind; it is ours to remove.
        if let Err(err) = playpod_ffi::remove_shm_segment(id) {
            tracing::debug!(%err, "framebuffer segment already gone");
        }
    }
    drop(fbdir);
    result
}
