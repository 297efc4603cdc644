//! The command line of the `playpod` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::control::ControlArgs;
use crate::game::{GameArgs, Scene};

/// playpod streams an X11 game running on a virtual screen to web browsers: H.264 video over
/// WebSocket, decoded with WebCodecs, with the lowest latency and the least CPU.
#[derive(Debug, Parser)]
#[command(name = "playpod", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human-readable text, or one JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PLAYPOD_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The value of `--log-format` that selects this format.
    pub fn as_arg(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a virtual screen (Xvfb), a sound server (PulseAudio), the built-in two-player game
    /// on them, and serve it.
    ///
    /// Prints one line `playpod: open http://ADDR/play/TOKEN/`. Ctrl-C or SIGTERM stops every
    /// child process and removes every framebuffer file and shared-memory segment it made.
    Demo(DemoArgs),
    /// Stream a display someone else started (inside a game pod).
    ///
    /// With `--framebuffer` (Xvfb -fbdir) or `--shmid` (Xvfb -shmem) the screen is read in place
    /// with no copy; with neither, it is captured through MIT-SHM XShmGetImage (one copy), which
    /// works with any X server.
    ///
    /// When the display's X server goes away (the game ended and its entrypoint stopped Xvfb),
    /// the session is over: the pod stops by itself, with exit status 0.
    Pod(PodArgs),
    /// Run the Kubernetes control plane that creates game sessions on demand.
    Control(ControlArgs),
    /// Run the built-in game as an X11 client (started by `playpod demo`).
    #[command(hide = true)]
    Game(GameArgs),
}

/// Options shared by every command that streams a display.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Address to serve on. `[::]:PORT` serves IPv6 and IPv4 (IPv4 only on a host without IPv6).
    #[arg(long, default_value = "127.0.0.1:8080", env = "PLAYPOD_LISTEN")]
    pub listen: SocketAddr,
    /// Session token: the secret path segment under /play/. Default: 128 random bits.
    #[arg(long, env = "PLAYPOD_TOKEN", hide_env_values = true, value_parser = crate::token::parse_token)]
    pub token: Option<String>,
    /// Picture size, `WxH`; both even.
    #[arg(long, default_value = "768x768", value_parser = parse_size)]
    pub size: (u16, u16),
    /// Frames per second.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=240))]
    pub fps: u32,
    /// Target video bitrate in kbit/s: the most the stream takes.
    ///
    /// While a player's link cannot carry the stream (its round trip grows 60 ms above the
    /// least it has had, or it falls a quarter second behind and skips to the next keyframe;
    /// a spectator's counts only while no player is connected),
    /// the target is lowered by a quarter (or to 80 % of what the kernel saw that link
    /// deliver, where lower), at most once a second, down to a tenth of this, and
    /// openh264 may skip frames (NVENC lowers quality instead); four seconds after the last
    /// such sign it climbs back by a twentieth a second. The target now is on /readyz and
    /// /metrics.
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub bitrate_kbps: u32,
    /// Keep --bitrate-kbps (and --audio-bitrate-kbps) whatever the viewers' links: a viewer
    /// that cannot keep up skips ahead to the next keyframe, and nobody else's picture or
    /// sound changes.
    #[arg(long)]
    pub fixed_bitrate: bool,
    /// Offer no low rendition. By default, while players' links set the bitrate, a spectator
    /// whose link cannot carry the stream is moved to the same picture at half its width and
    /// height (a second encoder, a quarter of the bitrate, running only while someone watches
    /// it; a try at the full picture after 10 s without trouble) rather than left to stand
    /// still for seconds each time it falls behind. CPU encoders only (not with NVENC).
    #[arg(long)]
    pub no_low_rendition: bool,
    /// Video encoder and where the colour conversion runs.
    ///
    /// `auto`: NVENC fed by the CUDA conversion on a GPU that has NVENC; openh264 fed by the
    /// CUDA conversion on a GPU without NVENC (H100, H200); the SIMD CPU conversion and
    /// openh264 with no GPU. `openh264`: the CPU path, GPU or not. `nvenc`: fail at start where
    /// NVENC is missing. The choice and its reason are logged and shown on /readyz and /metrics.
    #[arg(long, value_enum, default_value_t = EncoderChoice::Auto)]
    pub encoder: EncoderChoice,
    /// Encode and send a frame on every tick, even when nothing on the screen changed, and
    /// every 10 ms of sound, even of silence.
    ///
    /// By default a tick with nothing new makes no frame, so a paused or waiting game costs
    /// next to nothing: where the X server's DAMAGE extension says nothing was drawn the
    /// screen is not even read; where something was drawn, a picture equal to the last one
    /// encoded is not encoded. After the picture last changed (or an IDR) 15 more frames are
    /// encoded for the encoder to refine it, and one frame a second keeps the stream alive.
    /// Likewise digital silence (every sample zero) is neither encoded nor sent once three
    /// silent 10 ms frames have followed the last sound; the player plays silence meanwhile.
    #[arg(long)]
    pub every_frame: bool,
    /// Tick on the frame thread's own clock, at the phase it started with, rather than just
    /// after the game draws.
    ///
    /// By default (where the X server reports drawing, DAMAGE) the ticks move to 2 ms after
    /// each of the game's frames starts being drawn, so a frame waits about that long for its
    /// capture, not up to a whole period, and is not captured half drawn.
    #[arg(long)]
    pub free_clock: bool,
    /// Pin the frame thread to this CPU core; the player threads go on others.
    ///
    /// By default: where the process's CPU affinity is narrower than the machine (cores of its
    /// own, as a Kubernetes cpuset gives), the last of them; where it is the whole machine,
    /// `demo` uses the machine's last core and `pod` pins nothing, as the machine's cores are
    /// shared with other pods. The choice is logged at start.
    #[arg(long)]
    pub pin_core: Option<usize>,
    /// Do not pin the frame thread and the player input threads to cores.
    #[arg(long, conflicts_with = "pin_core")]
    pub no_pin: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten, next_help_heading = "Players' input")]
    pub input: crate::input::InputArgs,
    #[command(flatten, next_help_heading = "Game audio")]
    pub audio: AudioArgs,
}

/// The game's sound: recorded from PulseAudio, streamed as Opus.
#[derive(Debug, Clone, Args)]
pub struct AudioArgs {
    /// Do not stream the game's sound (`/readyz` says audio "off").
    #[arg(long)]
    pub no_audio: bool,
    /// Opus bitrate of the game's sound in kbit/s (stereo, 10 ms frames). While a slow link
    /// holds the video below --bitrate-kbps, the sound gives up the same share, down to 32
    /// kbit/s (not with --fixed-bitrate).
    #[arg(long, default_value_t = 96, value_parser = clap::value_parser!(u32).range(16..=510))]
    pub audio_bitrate_kbps: u32,
}

/// TLS: browsers only allow WebCodecs in a secure context (HTTPS, or http://127.0.0.1).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain; serve HTTPS with it (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate made at start (for players on the LAN).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncoderChoice {
    Auto,
    Openh264,
    Nvenc,
}

/// The help heading of the demo's own flags (after the flattened groups, clap would file them
/// under the last group's heading).
const DEMO_HEADING: &str = "The demo's screen and game";
/// The help heading of the pod's display flags.
const POD_HEADING: &str = "The display to stream";

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// What the built-in game shows.
    #[arg(long, value_enum, default_value_t = Scene::Pong, help_heading = DEMO_HEADING)]
    pub scene: Scene,
    /// Seed of the built-in game.
    #[arg(long, default_value_t = 1, help_heading = DEMO_HEADING)]
    pub seed: u64,
    /// X display number for the virtual screen, `99` or `:99` (default: the first free one
    /// from :99).
    #[arg(long, value_name = "N", value_parser = parse_display_number, help_heading = DEMO_HEADING)]
    pub display: Option<u32>,
    /// Share the framebuffer as a SysV segment (Xvfb -shmem) instead of a file on tmpfs.
    #[arg(long, help_heading = DEMO_HEADING)]
    pub shmem: bool,
    /// Stamp each frame's draw time, number and the players' keys into the top-left corner, for
    /// glass-to-glass measurements (see the README).
    #[arg(long, help_heading = DEMO_HEADING)]
    pub stamp: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PodArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// X display to stream, e.g. `:0`.
    #[arg(long, env = "DISPLAY", value_parser = parse_x_display, help_heading = POD_HEADING)]
    pub display: String,
    /// The framebuffer file Xvfb writes with -fbdir (DIR/Xvfb_screen0), read in place.
    #[arg(long, conflicts_with = "shmid", help_heading = POD_HEADING)]
    pub framebuffer: Option<PathBuf>,
    /// The SysV shared-memory id Xvfb prints with -shmem, read in place.
    #[arg(long, help_heading = POD_HEADING)]
    pub shmid: Option<i32>,
    /// PulseAudio server to record the game's sound from, e.g. `unix:/run/pulse/native`
    /// (default: $PULSE_SERVER; with neither, no audio).
    #[arg(long, env = "PULSE_SERVER")]
    pub pulse_server: Option<String>,
    /// PulseAudio source to record: the monitor of the sink the game plays to.
    #[arg(long, default_value = "game.monitor")]
    pub pulse_source: String,
    /// Wait up to this many seconds for the display (and the framebuffer, if given) to
    /// appear, instead of failing at once: in a game pod the streamer starts beside the game,
    /// which starts Xvfb. An X server that takes the connection but never answers (hung or
    /// stopped) is given up on 10 s after that.
    #[arg(long, value_name = "SECONDS", default_value_t = 0, help_heading = POD_HEADING)]
    pub wait_for_display: u32,
}

/// H.264 level 5.2, the highest openh264 and NVENC take: at most this many 16x16 macroblocks
/// in a frame ...
pub const MAX_MACROBLOCKS_PER_FRAME: u64 = 36_864;
/// ... and this many a second.
pub const MAX_MACROBLOCKS_PER_SECOND: u64 = 2_073_600;

impl StreamArgs {
    /// Checks what each flag alone cannot: that `--size` at `--fps` fits H.264 level 5.2
    /// (a larger picture would fail at the first viewer's first frame), and that no player's
    /// `--input-port-N` is the `--listen` port (it would fail once the display is up).
    pub fn check(&self) -> Result<(), String> {
        let listen = self.listen;
        for (player, port) in [(1, self.input.input_port_1), (2, self.input.input_port_2)] {
            if let Some(port) = port.filter(|&p| p != 0 && p == listen.port()) {
                return Err(format!(
                    "--input-port-{player} {port} is the port of --listen {listen}: a player's \
                     own port must be another one (its socket is also served on --listen)"
                ));
            }
        }
        let (w, h) = self.size;
        let mbs = u64::from(w).div_ceil(16) * u64::from(h).div_ceil(16);
        if mbs > MAX_MACROBLOCKS_PER_FRAME {
            return Err(format!(
                "--size {w}x{h} is larger than H.264 (level 5.2) allows: at most \
                 {MAX_MACROBLOCKS_PER_FRAME} macroblocks of 16x16 pixels a frame, such as \
                 4096x2304 or 3840x2160; it has {mbs}"
            ));
        }
        let per_second = mbs * u64::from(self.fps);
        if per_second > MAX_MACROBLOCKS_PER_SECOND {
            let fps_max = MAX_MACROBLOCKS_PER_SECOND / mbs;
            return Err(format!(
                "--size {w}x{h} at --fps {} is more than H.264 (level 5.2) allows: at most \
                 {MAX_MACROBLOCKS_PER_SECOND} macroblocks of 16x16 pixels a second; this size \
                 goes up to --fps {fps_max}",
                self.fps
            ));
        }
        Ok(())
    }
}

/// The largest X display number an X client takes: it may try TCP port 6000 + N, which must
/// fit in 16 bits (beyond, the X library's port arithmetic overflows).
pub const MAX_DISPLAY: u32 = 65_535 - 6000;

/// Parses an X display number for the demo, `99` or `:99`, at most [`MAX_DISPLAY`].
pub fn parse_display_number(s: &str) -> Result<u32, String> {
    let n = s.strip_prefix(':').unwrap_or(s);
    n.parse().ok().filter(|&n| n <= MAX_DISPLAY).ok_or_else(|| {
        format!("expected a display number such as 99 or :99, at most {MAX_DISPLAY}, got {s:?}")
    })
}

/// Checks an X display name (`:0`, `:0.0`, `host:0`, `unix:0`, a socket's path) as the X
/// library reads it, its display number at most [`MAX_DISPLAY`].
pub fn parse_x_display(s: &str) -> Result<String, String> {
    use x11rb::reexports::x11rb_protocol::parse_display;
    // A socket's path is taken as it is: it may not exist yet (--wait-for-display).
    let parsed = parse_display::parse_display_with_file_exists_callback(s, |_| true)
        .map_err(|err| format!("expected an X display such as :0, got {s:?}: {err}"))?;
    if u32::from(parsed.display) > MAX_DISPLAY {
        return Err(format!(
            "display number {} of {s:?} is too large: at most {MAX_DISPLAY}",
            parsed.display
        ));
    }
    Ok(s.to_owned())
}

/// Parses `WxH` with both sides even and between 16 and 4096.
pub fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT such as 768x768, got {s:?}"))?;
    let parse = |v: &str, what: &str| -> Result<u16, String> {
        let n: u16 = v
            .trim()
            .parse()
            .map_err(|_| format!("{what} {v:?} is not a whole number from 16 to 4096"))?;
        if !(16..=4096).contains(&n) || !n.is_multiple_of(2) {
            return Err(format!("{what} {n} must be even and between 16 and 4096"));
        }
        Ok(n)
    };
    Ok((parse(w, "width")?, parse(h, "height")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("768x768"), Ok((768, 768)));
        assert_eq!(parse_size("1280X720"), Ok((1280, 720)));
        for bad in [
            "", "768", "x768", "767x768", "8x8", "99999x2", "axb", "-2x4",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn stream(args: &[&str]) -> StreamArgs {
        let cli = Cli::try_parse_from(["playpod", "pod", "--display", ":0"].iter().chain(args))
            .expect("valid flags");
        match cli.command {
            Command::Pod(pod) => pod.stream,
            _ => unreachable!(),
        }
    }

    #[test]
    fn sizes_beyond_h264_level_5_2_are_refused_before_anything_starts() {
        for ok in [
            &["--size", "768x768", "--fps", "240"][..],
            &["--size", "3840x2160", "--fps", "60"],
            &["--size", "4096x2304", "--fps", "56"],
            &[],
        ] {
            assert_eq!(stream(ok).check(), Ok(()), "{ok:?}");
        }
        let frame = stream(&["--size", "4096x4096", "--fps", "1"]).check();
        assert!(
            frame
                .as_ref()
                .is_err_and(|e| e.contains("36864") && e.contains("65536")),
            "{frame:?}"
        );
        let rate = stream(&["--size", "4096x2304"]).check();
        assert!(
            rate.as_ref()
                .is_err_and(|e| e.contains("--fps 60") && e.contains("up to --fps 56")),
            "{rate:?}"
        );
        // Odd sizes round up to whole macroblocks, as the encoder sees them.
        assert!(
            stream(&["--size", "4090x2306", "--fps", "1"])
                .check()
                .is_err()
        );
    }

    #[test]
    fn the_demo_takes_its_display_with_or_without_the_colon() {
        assert_eq!(parse_display_number("99"), Ok(99));
        assert_eq!(parse_display_number(":7"), Ok(7));
        assert_eq!(parse_display_number(":59535"), Ok(59535));
        for bad in [
            "",
            ":",
            "::9",
            "x",
            "-1",
            ":99.0",
            "59536",
            "65536",
            ":4294967295",
        ] {
            assert!(parse_display_number(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_pod_takes_display_names_the_x_library_reads() {
        for ok in [
            ":0",
            ":0.1",
            "host:3",
            "unix:0",
            "/tmp/.X11-unix/X0",
            ":59535",
        ] {
            assert_eq!(parse_x_display(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "0", "x", ":x", ":59536", "localhost:65535.0", ":70000"] {
            assert!(parse_x_display(bad).is_err(), "{bad:?} accepted");
        }
    }
}
