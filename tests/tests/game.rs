//! The built-in game on a real Xvfb: it draws Pong and the plasma, XTEST key presses play it, and
//! the process stops cleanly on SIGTERM and with a clear error when the X server goes away.
//!
//! Pong and the plasma run in this test process (`playpod::game::run_until` on a thread), so
//! those tests need no binary; the process tests run `target/<profile>/playpod` and need
//! `cargo build -p playpod` first (the README's test command does it).

use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use playpod::game::keys::{DEFAULT_KEYMAP, Key, KeycodeTable};
use playpod::game::plasma::Plasma;
use playpod::game::pong::Pong;
use playpod::game::render::{Ink, PixelFormat};
use playpod::game::stamp::Stamp;
use playpod::game::{GameArgs, Scene};
use playpod_tests::{Guard, Xvfb, playpod_bin};
use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::protocol::xproto::{
    ConnectionExt as _, ImageFormat, KEY_PRESS_EVENT, KEY_RELEASE_EVENT,
};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

const W: u16 = 768;
const H: u16 = 768;

/// The game running on a thread of this process; stopped and joined on drop.
struct Game {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Game {
    fn start(display: &str, scene: Scene, seed: u64) -> Game {
        Game::start_with(display, scene, seed, false)
    }

    fn start_with(display: &str, scene: Scene, seed: u64, stamp: bool) -> Game {
        let args = GameArgs {
            display: display.to_owned(),
            scene,
            seed,
            size: (W, H),
            fps: 60,
            pulse_server: None,
            no_sound: true,
            stamp,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || playpod::game::run_until(&args, &flag));
        Game {
            stop,
            thread: Some(thread),
        }
    }

    /// Panics with the game's own error if it has stopped.
    fn assert_running(&mut self) {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            let result = self.thread.take().map(JoinHandle::join);
            panic!("the game stopped: {result:?}");
        }
    }

    /// Stops the game and returns how its loop ended.
    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("joined only once");
        thread.join().expect("the game thread does not panic")
    }
}

impl Drop for Game {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client of the test's own that reads the screen and presses keys.
struct Screen {
    conn: RustConnection,
    root: u32,
    keycodes: KeycodeTable,
}

impl Screen {
    fn connect(display: &str) -> Screen {
        let (conn, n) = RustConnection::connect(Some(display)).expect("connect to Xvfb");
        let setup = conn.setup();
        let root = setup.roots[n].root;
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let mapping = conn
            .get_keyboard_mapping(min, max.saturating_sub(min).saturating_add(1))
            .expect("send GetKeyboardMapping")
            .reply()
            .expect("keyboard mapping");
        let keycodes = KeycodeTable::new(
            min,
            mapping.keysyms_per_keycode,
            &mapping.keysyms,
            &DEFAULT_KEYMAP,
        );
        conn.extension_information(x11rb::protocol::xtest::X11_EXTENSION_NAME)
            .expect("query XTEST")
            .expect("Xvfb has XTEST");
        Screen {
            conn,
            root,
            keycodes,
        }
    }

    /// The whole screen, one `0xRRGGBB` per pixel.
    fn grab(&self) -> Vec<u32> {
        let reply = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, self.root, 0, 0, W, H, !0)
            .expect("send GetImage")
            .reply()
            .expect("GetImage");
        assert_eq!(reply.depth, 24);
        assert_eq!(reply.data.len(), usize::from(W) * usize::from(H) * 4);
        reply
            .data
            .chunks_exact(4)
            .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) & 0x00ff_ffff)
            .collect()
    }

    /// Presses or releases `player`'s `key` through XTEST, as the input path does.
    fn key(&self, player: u8, key: Key, down: bool) {
        let code = self
            .keycodes
            .keycode_of(player, key)
            .expect("Xvfb's keyboard has the default keys");
        let kind = if down {
            KEY_PRESS_EVENT
        } else {
            KEY_RELEASE_EVENT
        };
        self.conn
            .xtest_fake_input(kind, code, x11rb::CURRENT_TIME, x11rb::NONE, 0, 0, 0)
            .expect("send XTEST FakeInput");
        self.conn.sync().expect("XTEST FakeInput");
    }
}

fn rgb(ink: Ink) -> u32 {
    let [r, g, b] = ink.rgb();
    u32::from_be_bytes([0, r, g, b])
}

/// The bounding box `(x, y, width, height)` of the pixels of `ink`, and their number.
fn find(img: &[u32], ink: Ink) -> Option<((usize, usize, usize, usize), usize)> {
    let colour = rgb(ink);
    let w = usize::from(W);
    let (mut x0, mut y0, mut x1, mut y1, mut n) = (usize::MAX, usize::MAX, 0, 0, 0);
    for (i, _) in img.iter().enumerate().filter(|&(_, &p)| p == colour) {
        let (x, y) = (i % w, i / w);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        n += 1;
    }
    (n > 0).then(|| ((x0, y0, x1 - x0 + 1, y1 - y0 + 1), n))
}

/// Grabs the screen until `pred` holds; panics after `timeout`.
fn wait_for(
    screen: &Screen,
    game: &mut Game,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&[u32]) -> bool,
) -> Vec<u32> {
    let start = Instant::now();
    loop {
        game.assert_running();
        let img = screen.grab();
        if pred(&img) {
            return img;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn left_paddle_top(img: &[u32]) -> Option<usize> {
    find(img, Ink::LeftPaddle).map(|((_, y, _, _), _)| y)
}

#[test]
fn pong_draws_moves_and_obeys_xtest_keys() {
    let xvfb = Xvfb::start(W.into(), H.into());
    let screen = Screen::connect(&xvfb.name());
    let mut game = Game::start(&xvfb.name(), Scene::Pong, 1);
    let second = Duration::from_secs(1);

    // The first frame: paddles, ball, net and scores where Pong puts them.
    let first = wait_for(&screen, &mut game, 10 * second, "the first frame", |img| {
        find(img, Ink::LeftPaddle).is_some()
    });
    let geo = Pong::new(1, W, H).geometry();
    let (ph, pw) = (geo.paddle_height as usize, geo.paddle_width as usize);
    let (left, n) = find(&first, Ink::LeftPaddle).expect("left paddle");
    assert_eq!(
        (left.0, left.2, left.3, n),
        (32, pw, ph, pw * ph),
        "left paddle {left:?}"
    );
    let (right, _) = find(&first, Ink::RightPaddle).expect("right paddle");
    assert_eq!(
        (right.0, right.2, right.3),
        (768 - 32 - pw, pw, ph),
        "right paddle {right:?}"
    );
    let (ball, n) = find(&first, Ink::Ball).expect("ball");
    assert_eq!((ball.2, ball.3, n), (12, 12, 144), "ball {ball:?}");
    assert!(find(&first, Ink::Net).is_some(), "net");
    assert!(find(&first, Ink::Score).is_some(), "scores");
    let background = first.iter().filter(|&&p| p == rgb(Ink::Background)).count();
    assert!(background > first.len() * 3 / 4, "mostly background");

    // The picture changes: the ball is served after a second and moves.
    wait_for(&screen, &mut game, 5 * second, "the ball to move", |img| {
        find(img, Ink::Ball).is_some_and(|(b, _)| b.0 != ball.0 || b.1 != ball.1)
    });

    // XTEST keys of player 1 take over the left paddle from the AI: up to the top...
    screen.key(0, Key::Up, true);
    wait_for(
        &screen,
        &mut game,
        5 * second,
        "the paddle at the top",
        |img| left_paddle_top(img) == Some(0),
    );
    screen.key(0, Key::Up, false);
    // ... then `s` moves it down to the bottom, where no AI would park it.
    let bottom = usize::from(H) - ph;
    screen.key(0, Key::Down, true);
    wait_for(
        &screen,
        &mut game,
        5 * second,
        "the paddle at the bottom",
        |img| left_paddle_top(img) == Some(bottom),
    );
    screen.key(0, Key::Down, false);
    // Without keys a human paddle stays where its player left it.
    std::thread::sleep(Duration::from_millis(300));
    game.assert_running();
    assert_eq!(left_paddle_top(&screen.grab()), Some(bottom));

    game.stop().expect("the game ends cleanly when asked to");
    drop(xvfb);
}

#[test]
fn plasma_changes_nearly_every_pixel_every_frame() {
    let xvfb = Xvfb::start(W.into(), H.into());
    let screen = Screen::connect(&xvfb.name());
    let mut game = Game::start(&xvfb.name(), Scene::Plasma, 7);
    let pixels = usize::from(W) * usize::from(H);

    let colourful = |img: &[u32]| {
        let mut seen: Vec<u32> = img.iter().step_by(97).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len() > 100
    };
    let mut before = wait_for(
        &screen,
        &mut game,
        Duration::from_secs(10),
        "the plasma",
        colourful,
    );
    let mut best = 0.0f64;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(40));
        game.assert_running();
        let after = screen.grab();
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Two grabs of the same frame (the game was slow) prove nothing: grab again.
        if changed > 0 {
            best = best.max(changed as f64 / pixels as f64);
            if best >= 0.99 {
                break;
            }
        }
        before = after;
    }
    assert!(
        best >= 0.99,
        "only {:.1} % of the pixels changed",
        best * 100.0
    );
    game.stop().expect("the game ends cleanly when asked to");
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for playpod game") {
            return status;
        }
        assert!(start.elapsed() < timeout, "playpod game did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_game_process(display: &str) -> Guard {
    let child = Command::new(playpod_bin())
        .args([
            "game",
            "--display",
            display,
            "--scene",
            "pong",
            "--seed",
            "3",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start playpod game");
    Guard(child)
}

fn wait_for_window(screen: &Screen) {
    let start = Instant::now();
    while find(&screen.grab(), Ink::LeftPaddle).is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "no game window");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_game_process_exits_0_on_sigterm() {
    let xvfb = Xvfb::start(W.into(), H.into());
    let screen = Screen::connect(&xvfb.name());
    let mut game = start_game_process(&xvfb.name());
    wait_for_window(&screen);
    let pid = game.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(kill.expect("run kill").success());
    let status = wait_exit(&mut game.0, Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn the_game_process_fails_clearly_when_the_x_server_goes_away() {
    let xvfb = Xvfb::start(W.into(), H.into());
    let screen = Screen::connect(&xvfb.name());
    let mut game = start_game_process(&xvfb.name());
    wait_for_window(&screen);
    drop(screen);
    drop(xvfb);
    let status = wait_exit(&mut game.0, Duration::from_secs(5));
    assert!(!status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    let pipe = game.0.stderr.as_mut().expect("stderr is piped");
    std::io::Read::read_to_string(pipe, &mut stderr).expect("read stderr");
    assert!(
        stderr.contains("lost the connection to the X server"),
        "stderr: {stderr}"
    );
}

/// The stamp read from a grabbed screen (`0xRRGGBB` pixels; the green channel as brightness).
fn read_stamp(img: &[u32]) -> Option<Stamp> {
    Stamp::read(|x, y| (img[usize::from(y) * usize::from(W) + usize::from(x)] >> 8) as u8)
}

fn now_ms() -> u32 {
    Stamp::now(0, [0, 0]).time_ms
}

#[test]
fn the_stamp_carries_draw_time_frame_number_and_keys() {
    let xvfb = Xvfb::start(W.into(), H.into());
    let screen = Screen::connect(&xvfb.name());
    let mut game = Game::start_with(&xvfb.name(), Scene::Pong, 1, true);
    let first = wait_for(
        &screen,
        &mut game,
        Duration::from_secs(10),
        "a stamped frame",
        |img| read_stamp(img).is_some(),
    );
    let a = read_stamp(&first).expect("stamp");
    let age = now_ms().wrapping_sub(a.time_ms) as i32;
    assert!(
        (0..1000).contains(&age),
        "the stamp's draw time is {age} ms from now: {a:?}"
    );
    assert_eq!(a.keys, [0, 0], "no key is held: {a:?}");
    std::thread::sleep(Duration::from_millis(200));
    let b = read_stamp(&screen.grab()).expect("stamp");
    let frames = b.frame.wrapping_sub(a.frame);
    let ms = b.time_ms.wrapping_sub(a.time_ms);
    assert!(
        frames >= 6 && (100..2000).contains(&ms),
        "200 ms later: {frames} frames, {ms} ms on ({a:?} -> {b:?})"
    );
    // A key held by player 2 shows in its bits, and goes when released.
    screen.key(1, Key::B, true);
    wait_for(
        &screen,
        &mut game,
        Duration::from_secs(5),
        "player 2's B in the stamp",
        |img| read_stamp(img).is_some_and(|s| s.keys == [0, Key::B.bit()]),
    );
    screen.key(1, Key::B, false);
    wait_for(
        &screen,
        &mut game,
        Duration::from_secs(5),
        "no key in the stamp",
        |img| read_stamp(img).is_some_and(|s| s.keys == [0, 0]),
    );
    game.stop().expect("the game ends cleanly when asked to");
}

#[test]
fn a_stamped_plasma_frame_is_regenerated_exactly_from_its_stamp() {
    let xvfb = Xvfb::start(W.into(), H.into());
    let screen = Screen::connect(&xvfb.name());
    let mut game = Game::start_with(&xvfb.name(), Scene::Plasma, 7, true);
    let img = wait_for(
        &screen,
        &mut game,
        Duration::from_secs(10),
        "a stamped plasma frame",
        |img| read_stamp(img).is_some_and(|s| s.frame > 2),
    );
    let stamp = read_stamp(&img).expect("stamp");
    // What a quality score does: the plasma of that frame number, with the same stamp on it.
    let mut plasma = Plasma::new(7, W, H, PixelFormat::BGRX);
    let mut reference = vec![0u8; plasma.len()];
    plasma.render(u64::from(stamp.frame), &mut reference);
    stamp.paint_x32(&mut reference, usize::from(W) * 4);
    let differ = img
        .iter()
        .zip(reference.chunks_exact(4))
        .filter(|&(&p, r)| p != u32::from_le_bytes([r[0], r[1], r[2], 0]))
        .count();
    assert_eq!(
        differ, 0,
        "{differ} pixels differ from the regenerated frame {stamp:?}"
    );
    game.stop().expect("the game ends cleanly when asked to");
}
