//! The built-in game: a separate X11 client process (`playpod game`), so that playpod drives it
//! exactly as it would drive an emulator: through the X server's framebuffer and key events.
//!
//! The game logic ([`pong`], [`plasma`]) is pure and deterministic; [`x11`] draws and reads keys;
//! [`run_until`] ties them together on a fixed frame clock ([`clock`]).

pub mod clock;
pub mod keys;
pub mod plasma;
pub mod pong;
pub mod render;
pub mod sound;
pub mod stamp;
pub mod x11;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::{Args, ValueEnum};
use x11rb::protocol::xproto::Gcontext;

use self::clock::{FrameClock, steps_due};
use self::keys::KeyState;
use self::plasma::Plasma;
use self::pong::{Pong, STEPS_PER_SECOND};
use self::render::{DrawList, Ink};
use self::x11::GameWindow;

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
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fps: u32,
    /// PulseAudio server to play Pong's sounds to (`unix:PATH`); with none, the game is silent.
    #[arg(long, env = "PULSE_SERVER")]
    pub pulse_server: Option<String>,
    /// Play no sound.
    #[arg(long)]
    pub no_sound: bool,
    /// Stamp every frame's draw time, number and the players' keys into the top-left corner as
    /// black and white blocks (160x32 pixels), for glass-to-glass measurements.
    #[arg(long)]
    pub stamp: bool,
}

/// The most logic steps one frame catches up on after a stall; game time beyond is dropped.
const MAX_CATCH_UP_STEPS: u64 = 30;

/// Runs the game until the X server goes away (an error) or the process gets SIGTERM or SIGINT
/// (`Ok`).
pub fn run(args: &GameArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&stop))?;
    run_until(args, &stop)
}

/// Runs the game until `stop` is set (`Ok`) or the X server goes away (an error). Installs no
/// signal handler, so tests can run it on a thread.
pub fn run_until(args: &GameArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut window = GameWindow::open(&args.display, args.size)?;
    let mut scene = match args.scene {
        Scene::Pong => SceneState::pong(args, &window)?,
        Scene::Plasma => SceneState::plasma(args, &window)?,
    };
    // Pong plays its sounds through the sound server; the plasma stays silent.
    let sound = match (&args.pulse_server, args.no_sound, args.scene) {
        (Some(server), false, Scene::Pong) => sound::Sound::start(server.clone())
            .inspect_err(|err| tracing::warn!(%err, "no sound thread; playing silently"))
            .ok(),
        _ => None,
    };
    tracing::info!(scene = ?args.scene, seed = args.seed, fps = args.fps, "game running");
    let clock = FrameClock::new(Instant::now(), args.fps);
    let mut keys = KeyState::default();
    let mut stamper = if args.stamp {
        Some(Stamper::new(&window)?)
    } else {
        None
    };
    let mut frame = 0u64;
    let mut skipped = 0u64;
    while !stop.load(Ordering::Relaxed) {
        window.pump_events(&mut keys)?;
        let input = keys.take_frame_input();
        scene.frame(frame, args.fps, input, &window, sound.as_ref())?;
        if let Some(stamper) = &mut stamper {
            stamper.draw(frame, input, &window)?;
        }
        window.present()?;

        let next = clock.next_frame(frame, Instant::now());
        if next > frame + 1 {
            skipped += next - frame - 1;
            tracing::debug!(frame, next, skipped, "late: frames skipped");
        }
        frame = next;
        let wait = clock
            .deadline(frame)
            .saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
    tracing::info!(frames = frame, skipped, "game stopped");
    Ok(())
}

/// Draws the [`stamp::Stamp`] of each frame over the scene.
struct Stamper {
    white: Gcontext,
    black: Gcontext,
    ones: Vec<x11rb::protocol::xproto::Rectangle>,
    zeros: Vec<x11rb::protocol::xproto::Rectangle>,
}

impl Stamper {
    fn new(window: &GameWindow) -> anyhow::Result<Stamper> {
        let gcs = window.solid_gcs(&[[0xff; 3], [0; 3]])?;
        Ok(Stamper {
            white: gcs[0],
            black: gcs[1],
            ones: Vec::new(),
            zeros: Vec::new(),
        })
    }

    fn draw(
        &mut self,
        frame: u64,
        input: [keys::PlayerKeys; 2],
        window: &GameWindow,
    ) -> anyhow::Result<()> {
        stamp::Stamp::now(frame, [input[0].0, input[1].0]).rects(&mut self.ones, &mut self.zeros);
        window.fill(self.white, &self.ones)?;
        window.fill(self.black, &self.zeros)
    }
}

/// What is on the screen, with what it needs to draw itself.
enum SceneState {
    Pong {
        pong: Box<Pong>,
        /// Logic steps done, counted on the frame clock (the game may drop some after a stall).
        steps: u64,
        list: DrawList,
        gcs: Vec<Gcontext>,
    },
    Plasma {
        plasma: Box<Plasma>,
        pixels: Vec<u8>,
    },
}

impl SceneState {
    fn pong(args: &GameArgs, window: &GameWindow) -> anyhow::Result<SceneState> {
        let (w, h) = args.size;
        Ok(SceneState::Pong {
            pong: Box::new(Pong::new(args.seed, w, h)),
            steps: 0,
            list: DrawList::default(),
            gcs: window.solid_gcs(&Ink::ALL.map(Ink::rgb))?,
        })
    }

    fn plasma(args: &GameArgs, window: &GameWindow) -> anyhow::Result<SceneState> {
        let (w, h) = args.size;
        let plasma = Plasma::new(args.seed, w, h, window.image_format()?);
        let pixels = vec![0; plasma.len()];
        Ok(SceneState::Plasma {
            plasma: Box::new(plasma),
            pixels,
        })
    }

    /// Advances to frame `frame` and draws it into the window's back buffer.
    fn frame(
        &mut self,
        frame: u64,
        fps: u32,
        input: [keys::PlayerKeys; 2],
        window: &GameWindow,
        sound: Option<&sound::Sound>,
    ) -> anyhow::Result<()> {
        match self {
            SceneState::Pong {
                pong,
                steps,
                list,
                gcs,
            } => {
                let due = steps_due(frame, fps, STEPS_PER_SECOND);
                *steps = (*steps).max(due.saturating_sub(MAX_CATCH_UP_STEPS));
                while *steps < due {
                    *steps += 1;
                    let events = pong.step(input);
                    if let Some(sound) = sound {
                        sound.play(&events);
                    }
                    if events.point.is_some() {
                        tracing::debug!(score = ?pong.score(), "point");
                    }
                }
                render::draw_pong(pong, list);
                for (ink, &gc) in Ink::ALL.iter().zip(gcs.iter()) {
                    window.fill(gc, list.rects(*ink))?;
                }
                Ok(())
            }
            SceneState::Plasma { plasma, pixels } => {
                plasma.render(frame, pixels);
                window.put_image(pixels)
            }
        }
    }
}

/// Sets `stop` on SIGTERM or SIGINT. The handlers are installed before this returns; a tokio
/// runtime on a small thread waits for the signals, so no raw signal handler is needed.
fn watch_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    std::thread::Builder::new()
        .name("game-signals".into())
        .spawn(move || {
            let name = runtime.block_on(async {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            });
            tracing::info!(signal = name, "stopping the game");
            stop.store(true, Ordering::Relaxed);
        })?;
    Ok(())
}
