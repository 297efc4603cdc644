//! Players' input against a real Xvfb: zero heap allocations per message through parse, diff and
//! XTEST injection; and two players' injectors driven in parallel, checked by an X client that
//! records the key events its window receives.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use playpod_ffi::{CountingAllocator, count_allocations as counted};
use playpod_hotpath::input::{
    Frame, InjectError, KeySink, Keymap, PlayerInput, PlayerKeys, XtestInjector, changes, parse,
};
use playpod_tests::{Guard, Xvfb};
use x11rb::connection::Connection as _;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AutoRepeatMode, ConnectionExt as _, CreateWindowAux, EventMask, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Messages of both forms: small diffs, full 8-key objects, binary states.
const MESSAGES: &[Frame<'static>] = &[
    Frame::Text(br#"{"up":true}"#),
    Frame::Text(br#"{"up":false,"a":true}"#),
    Frame::Binary(&[0b0000_1111]),
    Frame::Text(
        br#"{"up":true,"down":false,"left":true,"right":false,"a":true,"b":false,"start":true,"select":false}"#,
    ),
    Frame::Binary(&[0]),
    Frame::Text(br#"{ "b" : true , "select":true }"#),
    Frame::Binary(&[0xff]),
    Frame::Text(br#"{"jump":true}"#),
    Frame::Text(
        br#"{"up":false,"down":false,"left":false,"right":false,"a":false,"b":false,"start":false,"select":false}"#,
    ),
];

#[test]
fn steady_state_messages_allocate_nothing() {
    let xvfb = Xvfb::start(320, 240);
    let injector = XtestInjector::connect(&xvfb.name(), &Keymap::default_for(1)).unwrap();
    let mut input = PlayerInput::new(injector);

    // Warm-up: several syncs, so that x11rb's queues have reached their working size.
    let mut events = 0;
    while events < 3 * XtestInjector::SYNC_EVERY as usize {
        for &frame in MESSAGES {
            let old = input.held();
            if let Ok(new) = input.handle(frame) {
                events += changes(old, new).len();
            }
        }
    }

    let (mut messages, mut events, mut allocating) = (0u64, 0u64, 0u64);
    let mut max_sync_allocations = 0;
    for round in 0..2_000 {
        for &frame in MESSAGES {
            let old = input.held();
            let until_sync = input.sink().requests_until_sync();
            let (result, allocations) = counted(|| input.handle(frame));
            let sent = match result {
                Ok(new) => changes(old, new).len() as u32,
                Err(e) => {
                    assert!(e.reply().is_some(), "round {round}: {e}");
                    0
                }
            };
            messages += 1;
            events += u64::from(sent);
            if sent < until_sync {
                assert_eq!(
                    allocations, 0,
                    "round {round}: {frame:?} allocated {allocations} times"
                );
            } else {
                // The message that reached a sync made a round trip: x11rb allocates the reply.
                assert!(allocations <= 8, "a sync allocated {allocations} times");
                max_sync_allocations = max_sync_allocations.max(allocations);
                allocating += 1;
            }
        }
    }
    let syncs = events / u64::from(XtestInjector::SYNC_EVERY);
    assert!(
        allocating <= syncs + 1,
        "{allocating} messages allocated, {syncs} syncs"
    );
    assert!(
        messages > 10 * allocating,
        "{messages} messages, {allocating} allocating"
    );
    input.release_all();
    input.sink_mut().sync_with_server().unwrap();
    println!(
        "{messages} messages, {events} key events: {allocating} messages allocated, at most \
         {max_sync_allocations} times (one round trip every {} key events)",
        XtestInjector::SYNC_EVERY
    );
}

/// An X client with a window that takes the focus and records the key events it receives.
struct Recorder {
    conn: RustConnection,
    window: Window,
}

impl Recorder {
    /// A `width` x `height` window at 0,0 (mapped, not focused: the injectors focus it), and a
    /// smaller one that must not get the focus.
    fn open(display: &str, (width, height): (u16, u16)) -> Recorder {
        let (conn, screen) = RustConnection::connect(Some(display)).unwrap();
        let root = conn.setup().roots[screen].root;
        let mut windows = [0; 2];
        for (i, size) in [(width, height), (40, 30)].into_iter().enumerate() {
            let window = conn.generate_id().unwrap();
            conn.create_window(
                0,
                window,
                root,
                (i * 50) as i16,
                0,
                size.0,
                size.1,
                0,
                WindowClass::INPUT_OUTPUT,
                0,
                &CreateWindowAux::new().event_mask(EventMask::KEY_PRESS | EventMask::KEY_RELEASE),
            )
            .unwrap();
            conn.map_window(window).unwrap();
            windows[i] = window;
        }
        conn.get_input_focus().unwrap().reply().unwrap();
        Recorder {
            conn,
            window: windows[0],
        }
    }

    /// Every key event received so far, as (keysym, pressed), after a round trip: the events
    /// of requests the server handled before are all in.
    fn events(&self) -> Vec<(u32, bool)> {
        let setup = self.conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let mapping = self
            .conn
            .get_keyboard_mapping(min, max - min + 1)
            .unwrap()
            .reply()
            .unwrap();
        let per = usize::from(mapping.keysyms_per_keycode);
        let keysym = |code: u8| mapping.keysyms[usize::from(code - min) * per];
        let mut events = Vec::new();
        while let Some(event) = self.conn.poll_for_event().unwrap() {
            match event {
                Event::KeyPress(e) => {
                    assert_eq!(e.event, self.window);
                    events.push((keysym(e.detail), true));
                }
                Event::KeyRelease(e) => {
                    assert_eq!(e.event, self.window);
                    events.push((keysym(e.detail), false));
                }
                _ => {}
            }
        }
        events
    }
}

/// One player's messages: both forms, with invalid ones in between, repeated.
fn script(player: u8) -> Vec<Frame<'static>> {
    let mut frames: Vec<Frame<'static>> = Vec::new();
    for i in 0..40u8 {
        frames.extend_from_slice(&[
            Frame::Text(br#"{"up":true}"#),
            Frame::Binary(&[0b0001_0001]),
            Frame::Text(br#"{"up":false,"right":true,"start":true}"#),
            Frame::Text(br#"{"up":2}"#),
            Frame::Text(
                br#"{"up":false,"down":true,"left":false,"right":false,"a":false,"b":true,"start":false,"select":true}"#,
            ),
            Frame::Binary(&[1, 2]),
            Frame::Binary(if (i + player).is_multiple_of(2) {
                &[0xff]
            } else {
                &[0x42]
            }),
        ]);
    }
    frames.push(Frame::Text(br#"{"a":true,"left":true}"#));
    frames
}

/// What `script` presses, as (keysym, pressed), ending with the release of what it holds.
fn expected(script: &[Frame<'_>], keymap: &Keymap) -> Vec<(u32, bool)> {
    let mut held = PlayerKeys::NONE;
    let mut out = Vec::new();
    for &frame in script {
        if let Ok(new) = parse(frame, held) {
            out.extend(changes(held, new).map(|(k, p)| (keymap.keysym(k), p)));
            held = new;
        }
    }
    assert!(!held.is_empty(), "the script ends with keys held");
    out.extend(changes(held, PlayerKeys::NONE).map(|(k, p)| (keymap.keysym(k), p)));
    out
}

#[test]
fn two_players_keys_reach_the_focused_window_in_order() {
    let xvfb = Xvfb::start(320, 240);
    let display = xvfb.name();
    let recorder = Recorder::open(&display, (320, 240));

    // Player 2's select is a keysym no key of the keyboard has: it gets bound to a free keycode.
    let keymaps = [
        Keymap::default_for(1),
        Keymap::default_for(2)
            .with_overrides("select=0x100263a")
            .unwrap(),
    ];
    let barrier = Arc::new(Barrier::new(2));
    let players: Vec<_> = (1..=2u8)
        .map(|player| {
            let (display, barrier) = (display.clone(), barrier.clone());
            let keymap = keymaps[usize::from(player - 1)];
            std::thread::spawn(move || {
                barrier.wait();
                let mut injector = XtestInjector::connect(&display, &keymap).unwrap();
                barrier.wait();
                let mut input = PlayerInput::new(&mut injector);
                let mut errors = 0;
                for frame in script(player) {
                    let old = input.held();
                    match input.handle(frame) {
                        Ok(new) => assert_eq!(Ok(new), parse(frame, old)),
                        Err(e) => {
                            assert!(e.reply().is_some(), "{e}");
                            assert_eq!(input.held(), old);
                            errors += 1;
                        }
                    }
                }
                assert!(!input.held().is_empty());
                // Player 1 leaves by releasing its keys, player 2 by dropping its input.
                if player == 1 {
                    input.release_all();
                    assert!(input.held().is_empty());
                }
                drop(input);
                injector.sync_with_server().unwrap();
                (injector.keycodes(), errors)
            })
        })
        .collect();
    let results: Vec<_> = players.into_iter().map(|t| t.join().unwrap()).collect();

    // The injectors gave the focus to the larger window, and turned auto-repeat off.
    let focus = recorder.conn.get_input_focus().unwrap().reply().unwrap();
    assert_eq!(focus.focus, recorder.window);
    let control = recorder
        .conn
        .get_keyboard_control()
        .unwrap()
        .reply()
        .unwrap();
    assert_eq!(control.global_auto_repeat, AutoRepeatMode::OFF);

    let events = recorder.events();
    for (player, keymap) in (1..=2u8).zip(&keymaps) {
        let (keycodes, errors) = results[usize::from(player - 1)];
        assert_eq!(errors, 80, "player {player}");
        let mine: Vec<(u32, bool)> = events
            .iter()
            .copied()
            .filter(|(sym, _)| keymap.keysyms.contains(sym))
            .collect();
        let want = expected(&script(player), keymap);
        assert_eq!(mine.len(), want.len(), "player {player}");
        assert_eq!(mine, want, "player {player}");
        // Eight distinct keycodes per player.
        let mut codes = keycodes.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 8);
    }
    // Nothing else was pressed, and nothing is left held.
    let ours = |sym: &u32| keymaps.iter().any(|m| m.keysyms.contains(sym));
    assert!(events.iter().all(|(sym, _)| ours(sym)));
    let mut down: Vec<u32> = Vec::new();
    for &(sym, pressed) in &events {
        if pressed {
            assert!(!down.contains(&sym), "{sym:#x} pressed twice");
            down.push(sym);
        } else {
            let at = down
                .iter()
                .position(|&s| s == sym)
                .expect("released while up");
            down.swap_remove(at);
        }
    }
    assert!(down.is_empty(), "still held: {down:x?}");
    // The server's keyboard agrees: no key is down.
    let keys = recorder.conn.query_keymap().unwrap().reply().unwrap();
    assert!(keys.keys.iter().all(|&b| b == 0), "{:?}", keys.keys);
}

#[test]
fn a_display_without_xtest_is_reported_clearly() {
    // An Xvfb with XTEST turned off, on a display of its own.
    let mut n = 700 + std::process::id() % 200;
    let (guard, socket) = loop {
        let socket = std::path::PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        if !socket.exists() && !std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists() {
            let child = std::process::Command::new("Xvfb")
                .arg(format!(":{n}"))
                .args(["-nolisten", "tcp", "-extension", "XTEST"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start Xvfb");
            break (Guard(child), socket);
        }
        n += 1;
    };
    let display = format!(":{n}");
    let started = Instant::now();
    let err = loop {
        match XtestInjector::connect(&display, &Keymap::default_for(1)) {
            Err(InjectError::Connect { .. }) if started.elapsed() < Duration::from_secs(15) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break e,
            Ok(_) => panic!("{display} has XTEST"),
        }
    };
    assert!(matches!(err, InjectError::NoXtest { .. }), "{err:?}");
    assert!(
        err.to_string().contains("XTEST") && err.to_string().contains(&display),
        "{err}"
    );
    drop(guard);
    // Killed, it removed neither its socket nor its lock file.
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(format!("/tmp/.X{n}-lock"));

    // A display that does not exist: the error names it.
    let err = XtestInjector::connect(":999999", &Keymap::default_for(1)).unwrap_err();
    assert!(matches!(err, InjectError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(":999999"), "{err}");
}

#[test]
fn the_game_reads_the_default_keymaps() {
    use playpod::game::keys::DEFAULT_KEYMAP;
    for (player, table) in (1..=2u8).zip(&DEFAULT_KEYMAP) {
        let keymap = Keymap::default_for(player);
        for &(key, keysym) in table {
            assert_eq!(keymap.keysym(key), keysym, "player {player} {key:?}");
        }
    }
}

/// A sink that fails, as a display that went away does.
struct Gone;

impl KeySink for Gone {
    fn apply(&mut self, _: PlayerKeys, _: PlayerKeys) -> Result<(), InjectError> {
        Err(x11rb::errors::ConnectionError::UnknownError.into())
    }
}

#[test]
fn an_x_error_is_not_a_bad_message() {
    let mut input = PlayerInput::new(Gone);
    let err = input.handle(Frame::Binary(&[0x03])).unwrap_err();
    assert!(err.reply().is_none());
    assert_eq!(err.metric_label(), "x11");
    // The keys may have been pressed in part: they count as held, to be released.
    assert_eq!(input.held(), PlayerKeys(0x03));
    let err = input.handle(Frame::Binary(&[])).unwrap_err();
    assert!(err.reply().is_some());
}
