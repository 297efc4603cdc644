//! A PulseAudio server of our own for `playpod demo`: user mode, its runtime directory, config
//! and socket in a temporary directory, one null sink `game` (48 kHz stereo) as the default
//! sink. It is a child that dies with us and is stopped, and its directory removed, on exit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::process::{Child, Command};

/// How long the server gets to open its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it gets to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// The sink the game plays to; its monitor is what we record.
pub const SINK: &str = "game";
/// The source recorded: the game sink's monitor.
pub const MONITOR: &str = "game.monitor";

/// The configuration script (`pulseaudio -n -F FILE`): nothing but the null sink and a socket.
///
/// `norewinds=1` caps the null sink's latency at 50 ms. Without it the sink renders its first
/// block at its 2-s default before any client asks for less, so its monitor stays silent for
/// about 1.9 s after the server starts (recording blocks, and so does stopping in that time).
pub fn config_script(socket: &Path) -> String {
    format!(
        "load-module module-null-sink sink_name={SINK} rate=48000 channels=2 norewinds=1 \
         sink_properties=device.description=playpod-game\n\
         set-default-sink {SINK}\n\
         load-module module-native-protocol-unix socket={} auth-anonymous=1\n",
        socket.display()
    )
}

/// The directory a [`PulseDaemon`] lives in (removed on drop), and so its socket's address,
/// known before the server starts: the audio threads record from it even when the server
/// cannot start, and pick it up if it does later.
#[derive(Debug)]
pub struct PulseHome {
    dir: tempfile::TempDir,
}

impl PulseHome {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("playpod-pulse-")
            .tempdir()
            .context("cannot make a directory for PulseAudio")?;
        Ok(Self { dir })
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("native")
    }

    /// The server address clients take (`PULSE_SERVER`): `unix:PATH`.
    pub fn server(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// The command that runs `program` (pulseaudio) in the foreground in this home, its
    /// configuration written: the null sink `game` as the default sink, the socket
    /// [`PulseHome::socket`], nothing read from the user's own configuration.
    pub fn command(&self, program: &Path) -> anyhow::Result<std::process::Command> {
        let dir = self.dir.path();
        let config = dir.join("playpod.pa");
        std::fs::write(&config, config_script(&self.socket()))
            .context("cannot write the PulseAudio configuration")?;
        let runtime = dir.join("runtime");
        // Kept from a server that died: a restart reuses the home.
        std::fs::create_dir_all(&runtime).context("cannot make PulseAudio's runtime directory")?;
        let mut cmd = std::process::Command::new(program);
        cmd.arg("-n")
            .arg("-F")
            .arg(&config)
            .args([
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disallow-exit",
            ])
            .env("HOME", dir)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("PULSE_RUNTIME_PATH", &runtime)
            .env("PULSE_STATE_PATH", dir.join("state"))
            .env_remove("PULSE_SERVER")
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        Ok(cmd)
    }
}

/// The running server.
#[derive(Debug)]
pub struct PulseDaemon {
    child: Child,
    log: PathBuf,
    socket: PathBuf,
}

impl PulseDaemon {
    /// Starts `pulseaudio` in `home` and waits until its socket accepts connections.
    pub async fn start(program: &Path, home: &PulseHome) -> anyhow::Result<Self> {
        let socket = home.socket();
        let log_path = home.dir.path().join("pulseaudio.log");
        let log = std::fs::File::create(&log_path).context("cannot make PulseAudio's log file")?;
        let mut cmd = home.command(program)?;
        cmd.arg("--log-target=stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        playpod_ffi::supervised(&mut cmd);
        let mut cmd = Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd.spawn().context("cannot start pulseaudio")?;
        let mut daemon = Self {
            child,
            log: log_path,
            socket,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = daemon.child.try_wait()? {
                let tail = daemon.log_tail();
                bail!("pulseaudio exited ({status}) while starting: {tail}");
            }
            if daemon.socket.exists()
                && tokio::net::UnixStream::connect(&daemon.socket)
                    .await
                    .is_ok()
            {
                tracing::info!(server = %home.server(), "PulseAudio ready");
                return Ok(daemon);
            }
            if started.elapsed() > READY_TIMEOUT {
                let tail = daemon.log_tail();
                daemon.stop().await;
                return Err(anyhow!(
                    "pulseaudio did not open its socket within {READY_TIMEOUT:?}: {tail}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The last lines PulseAudio logged, warnings about running as root left out.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("W: ")).collect();
        lines[lines.len().saturating_sub(4)..].join(" | ")
    }

    /// Waits until the server exits, and says how, with the last lines it logged.
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => format!("PulseAudio exited ({status}): {}", self.log_tail()),
            Err(err) => format!("cannot wait for PulseAudio: {err}"),
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = self.child.id() {
                let _ = playpod_ffi::terminate(pid);
            }
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_err()
            {
                tracing::warn!("PulseAudio did not stop on SIGTERM; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script() {
        let s = config_script(Path::new("/run/x/native"));
        assert!(s.contains("module-null-sink sink_name=game rate=48000 channels=2 norewinds=1"));
        assert!(s.contains("set-default-sink game\n"));
        assert!(s.contains("socket=/run/x/native auth-anonymous=1"));
    }
}
