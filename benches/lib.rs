//! Shared pieces of playpod's benchmarks: deterministic test content.
//!
//! - `benches/pipeline.rs` (criterion): conversion, encoding and the ring, per frame.
//! - `latency-probe`: the real frame thread at 60 fps on a real Xvfb, frame ready -> ring p50/p99.
//! - `compare.py`: `playpod pod` against the ffmpeg x11grab + libx264 peer, CPU per frame.
//!   `compare.sh` installs its tools, builds and runs it; it adds quality (PSNR/SSIM against the
//!   source frames) and the fan-out to 1, 10 and 50 spectators.
//! - `ws-viewer`: one or many viewers of a session's video, counting frames; saves the stream.
//! - `quality`: PSNR and SSIM of a decoded stream of the stamped plasma against its source frames.

use playpod::game::plasma::Plasma;
use playpod::game::render::PixelFormat;
use playpod_hotpath::convert::{BgrxFrame, I420Frame, bgrx_to_i420};

/// `n` consecutive plasma frames (every pixel changes every frame), BGRX.
pub fn plasma_frames(width: u16, height: u16, n: u64) -> Vec<Vec<u8>> {
    let mut plasma = Plasma::new(7, width, height, PixelFormat::BGRX);
    (0..n)
        .map(|i| {
            let mut out = vec![0u8; plasma.len()];
            plasma.render(i, &mut out);
            out
        })
        .collect()
}

/// The same frames converted to I420.
pub fn plasma_pictures(width: u16, height: u16, n: u64) -> Vec<I420Frame> {
    plasma_frames(width, height, n)
        .iter()
        .map(|bytes| {
            let mut picture = I420Frame::new(u32::from(width), u32::from(height));
            let src = BgrxFrame {
                bytes,
                width: u32::from(width),
                height: u32::from(height),
                stride: usize::from(width) * 4,
            };
            bgrx_to_i420(&src, &mut picture).expect("sizes match");
            picture
        })
        .collect()
}

/// What the probes share: their command-line numbers, and a real Xvfb with the built-in game on
/// it, both stopped (and the framebuffer directory removed) on drop.
pub mod probe {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// The number after `name` on the command line, or `default`.
    ///
    /// # Panics
    /// If the value is not a number.
    pub fn arg(name: &str, default: u64) -> u64 {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
    }

    /// A child stopped on drop: SIGTERM first (so Xvfb removes its lock file and socket), then
    /// SIGKILL if it has not exited within 3 s.
    #[derive(Debug)]
    pub struct Kill(pub Child);

    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `Xvfb` at 768x768 with its framebuffer in a file, and `playpod game --scene SCENE` on it
    /// (the `playpod` binary next to this one).
    #[derive(Debug)]
    pub struct GameScreen {
        /// The X display, `:N`.
        pub display: String,
        /// Xvfb's framebuffer file, to read in place.
        pub framebuffer: PathBuf,
        fbdir: PathBuf,
        // Dropped in this order: the game, then its X server.
        _game: Kill,
        _xvfb: Kill,
    }

    impl GameScreen {
        /// # Panics
        /// If Xvfb or the game cannot start.
        pub fn start(scene: &str) -> GameScreen {
            let fbdir = std::env::temp_dir().join(format!("playpod-probe-{}", std::process::id()));
            std::fs::create_dir_all(&fbdir).expect("fb dir");
            let n = (300..400)
                .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
                .expect("a free display");
            let display = format!(":{n}");
            let xvfb = Kill(
                Command::new("Xvfb")
                    .arg(&display)
                    .args(["-screen", "0", "768x768x24", "-nolisten", "tcp", "-fbdir"])
                    .arg(&fbdir)
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("Xvfb (apt-get install xvfb)"),
            );
            let framebuffer = fbdir.join("Xvfb_screen0");
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            let t0 = Instant::now();
            while !(framebuffer.exists() && socket.exists()) {
                assert!(t0.elapsed() < Duration::from_secs(10), "Xvfb did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            let game = Kill(
                Command::new(playpod())
                    .args(["game", "--display", &display, "--scene", scene])
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("playpod game (cargo build -p playpod first, same profile)"),
            );
            std::thread::sleep(Duration::from_millis(500));
            GameScreen {
                display,
                framebuffer,
                fbdir,
                _game: game,
                _xvfb: xvfb,
            }
        }
    }

    impl Drop for GameScreen {
        fn drop(&mut self) {
            // The children go after this body: the directory is removed under a live Xvfb,
            // which keeps its mapping until it exits.
            let _ = std::fs::remove_dir_all(&self.fbdir);
        }
    }

    /// The `playpod` binary of this build profile.
    ///
    /// # Panics
    /// If this program's path is unknown.
    pub fn playpod() -> PathBuf {
        std::env::current_exe()
            .expect("this program's path")
            .with_file_name("playpod")
    }
}
