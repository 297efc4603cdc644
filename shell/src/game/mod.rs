//! The built-in game: a separate X11 client process (`playpod game`), so that playpod drives it
//! exactly as it would drive an emulator: through the X server's framebuffer and key events.

use clap::{Args, ValueEnum};

/// What the built-in game client shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scene {
    /// Two-player Pong: paddles, a ball, scores, a serve.
    Pong,
    /// A plasma that changes every pixel every frame (for benchmarks).
    Plasma,
}

/// `playpod game`: runs the built-in game as an X11 client on a display.
#[derive(Debug, Clone, Args)]
pub struct GameArgs {
    /// X display to draw on, e.g. `:99`.
    #[arg(long, env = "DISPLAY")]
    pub display: String,
    /// What to show.
    #[arg(long, value_enum, default_value_t = Scene::Pong)]
    pub scene: Scene,
    /// Seed for everything random; the same seed and inputs give the same frames.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Window size, `WxH`.
    #[arg(long, default_value = "768x768", value_parser = crate::cli::parse_size)]
    pub size: (u16, u16),
    /// Frames per second the game runs at.
    #[arg(long, default_value_t = 60)]
    pub fps: u32,
}

/// Runs the game until the X server goes away or the process is told to stop.
pub fn run(args: &GameArgs) -> anyhow::Result<()> {
    anyhow::bail!("the built-in game is not available in this build ({args:?})")
}
