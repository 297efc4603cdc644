//! XTEST key events into the game's display, on an X connection of the player's own.

use std::io::IoSlice;

use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::errors::{ConnectError, ConnectionError, ReplyError};
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AutoRepeatMode, ChangeKeyboardControlAux, ConnectionExt as _, InputFocus, MapState, Window,
    WindowClass,
};
use x11rb::protocol::xtest::{self, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;
use x11rb::x11_utils::X11Error;

use super::{Key, Keymap, PlayerKeys, changes};

/// Where a player's key changes go: the X display in the server, a recorder in tests.
pub trait KeySink {
    /// Makes the keys go from `old` to `new` (see [`changes`]).
    fn apply(&mut self, old: PlayerKeys, new: PlayerKeys) -> Result<(), InjectError>;

    /// Releases every key of `held`.
    fn release_all(&mut self, held: PlayerKeys) -> Result<(), InjectError> {
        self.apply(held, PlayerKeys::NONE)
    }
}

impl<S: KeySink + ?Sized> KeySink for &mut S {
    fn apply(&mut self, old: PlayerKeys, new: PlayerKeys) -> Result<(), InjectError> {
        (**self).apply(old, new)
    }

    fn release_all(&mut self, held: PlayerKeys) -> Result<(), InjectError> {
        (**self).release_all(held)
    }
}

/// Why key events could not be sent to the game's display.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot connect to the X display {display}: {source}")]
    Connect {
        display: String,
        #[source]
        source: ConnectError,
    },
    #[error("the X display {display} has no screen {screen}")]
    NoScreen { display: String, screen: usize },
    #[error(
        "the X display {display} lacks the XTEST extension, which injects the players' keys \
         (Xvfb has it unless started with -extension XTEST)"
    )]
    NoXtest { display: String },
    #[error("no free keycode on the X display to bind keysym {keysym:#x} of key \"{key}\" to")]
    NoSpareKeycode { key: &'static str, keysym: u32 },
    #[error("lost the connection to the X display: {0}")]
    Connection(#[from] ConnectionError),
    #[error("the X server refused a request: {0}")]
    Request(#[from] ReplyError),
    #[error("the X server rejected a key event: {0:?}")]
    Rejected(X11Error),
}

/// Sends one player's key changes as XTEST `FakeInput` key events to the game's display, on a
/// connection of its own, so that two players never wait on each other.
///
/// Sending a message's key events does not allocate: each request is written into a stack
/// array and handed to x11rb's write buffer, then flushed. Every [`Self::SYNC_EVERY`] requests
/// the injector makes one round trip to the server, so that x11rb can forget the requests before
/// it; reading that reply is the only allocation, once per `SYNC_EVERY` key events.
#[derive(Debug)]
pub struct XtestInjector {
    conn: RustConnection,
    root: Window,
    /// The major opcode of the XTEST extension on this connection.
    xtest_opcode: u8,
    /// The keycode of each key, in [`Key::ALL`] order.
    keycodes: [u8; 8],
    /// Requests sent since the last sync.
    since_sync: u32,
}

/// The `type` of a FakeInput request that presses a key (the core KeyPress event code).
const KEY_PRESS: u8 = 2;
/// The `type` of a FakeInput request that releases a key (the core KeyRelease event code).
const KEY_RELEASE: u8 = 3;
/// The minor opcode of XTEST's FakeInput request.
const FAKE_INPUT: u8 = xtest::FAKE_INPUT_REQUEST;
/// The length of a FakeInput request in bytes.
const FAKE_INPUT_LEN: usize = 36;

/// The 36-byte XTEST FakeInput request that presses or releases `keycode` now (time 0 is
/// CurrentTime; root, position and device are unused for keys), in the connection's native
/// byte order, as x11rb's own serialisation writes it.
pub(crate) fn fake_key_request(xtest_opcode: u8, keycode: u8, pressed: bool) -> [u8; 36] {
    let mut req = [0u8; FAKE_INPUT_LEN];
    let len_words = (FAKE_INPUT_LEN / 4) as u16;
    req[0] = xtest_opcode;
    req[1] = FAKE_INPUT;
    req[2..4].copy_from_slice(&len_words.to_ne_bytes());
    req[4] = if pressed { KEY_PRESS } else { KEY_RELEASE };
    req[5] = keycode;
    req
}

impl XtestInjector {
    /// How many requests go out between two syncs with the server.
    pub const SYNC_EVERY: u32 = 4096;

    /// Connects to `display` for one player whose keys press `keymap`'s keysyms.
    ///
    /// Checks that the display has XTEST; finds the keycode of every keysym, binding a keysym
    /// that no key has to a free keycode (as xdotool does); turns key auto-repeat off on the
    /// display (a held pad key must stay one press, as in the browser); and, when the input
    /// focus is nowhere (None, PointerRoot or the root window, as without a window manager),
    /// gives it to the game's window ([`Self::focus_game_window`]).
    pub fn connect(display: &str, keymap: &Keymap) -> Result<XtestInjector, InjectError> {
        let (conn, screen) =
            RustConnection::connect(Some(display)).map_err(|source| InjectError::Connect {
                display: display.to_owned(),
                source,
            })?;
        let root = conn
            .setup()
            .roots
            .get(screen)
            .ok_or_else(|| InjectError::NoScreen {
                display: display.to_owned(),
                screen,
            })?
            .root;
        let xtest_opcode = conn
            .extension_information(xtest::X11_EXTENSION_NAME)?
            .ok_or_else(|| InjectError::NoXtest {
                display: display.to_owned(),
            })?
            .major_opcode;
        conn.xtest_get_version(2, 2)?.reply()?;
        let keycodes = bind_keysyms(&conn, keymap)?;
        conn.change_keyboard_control(
            &ChangeKeyboardControlAux::new().auto_repeat_mode(AutoRepeatMode::OFF),
        )?
        .check()?;

        let mut injector = XtestInjector {
            conn,
            root,
            xtest_opcode,
            keycodes,
            since_sync: 0,
        };
        let focus = injector.conn.get_input_focus()?.reply()?.focus;
        if focus == u32::from(InputFocus::NONE)
            || focus == u32::from(InputFocus::POINTER_ROOT)
            || focus == root
        {
            injector.focus_game_window()?;
        }
        Ok(injector)
    }

    /// The keycode each key presses, in [`Key::ALL`] order.
    pub fn keycodes(&self) -> [u8; 8] {
        self.keycodes
    }

    /// Gives the input focus to the largest mapped top-level window, the game's (there is no
    /// window manager to do it). Does nothing when no window is mapped.
    pub fn focus_game_window(&mut self) -> Result<(), InjectError> {
        let tree = self.conn.query_tree(self.root)?.reply()?;
        let mut best: Option<(u32, Window)> = None;
        for &window in &tree.children {
            // A window may go away between the two requests: skip it.
            let attrs = match self.conn.get_window_attributes(window)?.reply() {
                Ok(attrs) => attrs,
                Err(ReplyError::X11Error(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if attrs.map_state != MapState::VIEWABLE
                || attrs.override_redirect
                || attrs.class == WindowClass::INPUT_ONLY
            {
                continue;
            }
            let geometry = match self.conn.get_geometry(window)?.reply() {
                Ok(g) => g,
                Err(ReplyError::X11Error(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let area = u32::from(geometry.width) * u32::from(geometry.height);
            if best.is_none_or(|(a, _)| area > a) {
                best = Some((area, window));
            }
        }
        if let Some((_, window)) = best {
            match self
                .conn
                .set_input_focus(InputFocus::PARENT, window, x11rb::CURRENT_TIME)?
                .check()
            {
                // Unmapped since: nothing to focus.
                Ok(()) | Err(ReplyError::X11Error(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Sends a KeyRelease or KeyPress for every key in [`changes`]`(old, new)`, in that order,
    /// and flushes them to the server. Does not allocate, but once every
    /// [`Self::SYNC_EVERY`] key events.
    pub fn apply(&mut self, old: PlayerKeys, new: PlayerKeys) -> Result<(), InjectError> {
        for (key, pressed) in changes(old, new) {
            self.send_key(key, pressed)?;
        }
        self.conn.flush()?;
        Ok(())
    }

    /// Releases every key of `held`.
    pub fn release_all(&mut self, held: PlayerKeys) -> Result<(), InjectError> {
        self.apply(held, PlayerKeys::NONE)
    }

    /// How many more requests go out before the next sync with the server (the only time
    /// sending key events allocates; see [`XtestInjector`]).
    pub fn requests_until_sync(&self) -> u32 {
        Self::SYNC_EVERY - self.since_sync
    }

    /// Waits until the server has handled every request sent so far (a round trip), and
    /// reports an error the server sent about a key event.
    pub fn sync_with_server(&mut self) -> Result<(), InjectError> {
        self.conn.get_input_focus()?.reply()?;
        while let Some(event) = self.conn.poll_for_event()? {
            if let Event::Error(e) = event {
                return Err(InjectError::Rejected(e));
            }
        }
        Ok(())
    }

    /// Queues one key event.
    fn send_key(&mut self, key: Key, pressed: bool) -> Result<(), InjectError> {
        let request = fake_key_request(self.xtest_opcode, self.keycodes[key as usize], pressed);
        // Dropping the cookie tells x11rb that nobody waits for an error of this request.
        drop(
            self.conn
                .send_request_without_reply(&[IoSlice::new(&request)], Vec::new())?,
        );
        self.since_sync += 1;
        if self.since_sync >= Self::SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// A round trip to the server every [`Self::SYNC_EVERY`] requests: once the reply is in,
    /// x11rb forgets every request before it (it keeps one record per request until then).
    fn sync(&mut self) -> Result<(), InjectError> {
        self.since_sync = 0;
        self.sync_with_server()
    }
}

impl KeySink for XtestInjector {
    fn apply(&mut self, old: PlayerKeys, new: PlayerKeys) -> Result<(), InjectError> {
        XtestInjector::apply(self, old, new)
    }

    fn release_all(&mut self, held: PlayerKeys) -> Result<(), InjectError> {
        XtestInjector::release_all(self, held)
    }
}

/// The keycode of each of `keymap`'s keysyms, binding those that no key has to free keycodes.
/// The server is grabbed meanwhile, so that two players' injectors never take the same free
/// keycode.
fn bind_keysyms(conn: &RustConnection, keymap: &Keymap) -> Result<[u8; 8], InjectError> {
    conn.grab_server()?;
    let bound = bind_keysyms_grabbed(conn, keymap);
    // Ungrab whatever happened; the binding's own error, if any, is the one to report.
    let ungrabbed = conn.ungrab_server().map(drop).and_then(|()| conn.flush());
    let keycodes = bound?;
    ungrabbed?;
    Ok(keycodes)
}

fn bind_keysyms_grabbed(conn: &RustConnection, keymap: &Keymap) -> Result<[u8; 8], InjectError> {
    let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
    let count = max.saturating_sub(min).saturating_add(1);
    let reply = conn.get_keyboard_mapping(min, count)?.reply()?;
    let per = reply.keysyms_per_keycode.max(1);
    let mut table = reply.keysyms;
    let (keycodes, added) = plan_bindings(keymap, min, usize::from(per), &mut table)?;
    for (code, row) in added {
        conn.change_keyboard_mapping(1, code, per, &row)?.check()?;
    }
    Ok(keycodes)
}

/// A keycode to bind and its new keysyms (one per column).
type Binding = (u8, Vec<u32>);

/// The keycode of each of `keymap`'s keysyms in a keyboard mapping (`per` keysyms for each
/// keycode from `min` on; a keysym in any column counts, as xdotool does), and the keycodes to
/// bind, with their new keysyms, for keysyms that no keycode has: the highest keycodes without
/// any keysym (`table` is updated to match).
fn plan_bindings(
    keymap: &Keymap,
    min: u8,
    per: usize,
    table: &mut [u32],
) -> Result<([u8; 8], Vec<Binding>), InjectError> {
    let mut keycodes = [0u8; 8];
    let mut added = Vec::new();
    // Only keycodes up to 255 exist, whatever the table's length.
    let usable = (256 - usize::from(min)).min(table.len() / per.max(1));
    let per = per.max(1);
    for key in Key::ALL {
        let sym = keymap.keysym(key);
        let none_free = || InjectError::NoSpareKeycode {
            key: key.name(),
            keysym: sym,
        };
        let found = table
            .chunks_exact(per)
            .take(usable)
            .position(|syms| syms.contains(&sym));
        let index = match found {
            Some(i) => i,
            None => {
                let spare = table
                    .chunks_exact(per)
                    .take(usable)
                    .rposition(|syms| syms.iter().all(|&s| s == 0))
                    .ok_or_else(none_free)?;
                // The keysym in the first two columns (unshifted and shifted), as xdotool does.
                let row = &mut table[spare * per..(spare + 1) * per];
                for (column, slot) in row.iter_mut().enumerate() {
                    *slot = if column < 2 { sym } else { 0 };
                }
                let code = u8::try_from(usize::from(min) + spare).map_err(|_| none_free())?;
                added.push((code, row.to_vec()));
                spare
            }
        };
        keycodes[key as usize] = u8::try_from(usize::from(min) + index).map_err(|_| none_free())?;
    }
    Ok((keycodes, added))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x11rb::protocol::xtest::FakeInputRequest;

    #[test]
    fn keysyms_found_in_any_column_and_missing_ones_bound_to_free_keycodes() {
        // Keycodes 8..=15, two columns: w/W, s, a, d, f, g, Return, Tab on 8..=15 shuffled, and
        // keycodes 16..=19 free except 18.
        #[rustfmt::skip]
        let mut table = vec![
            0xff09, 0, 0x77, 0x57, 0x73, 0, 0x61, 0, 0x64, 0, 0, 0x66, 0x67, 0, 0xff0d, 0,
            0, 0, 0, 0, 0x41, 0, 0, 0,
        ];
        let (codes, added) = plan_bindings(&Keymap::PLAYER_1, 8, 2, &mut table).unwrap();
        assert_eq!(codes, [9, 10, 11, 12, 13, 14, 15, 8]);
        assert!(added.is_empty());

        let map = Keymap::PLAYER_1
            .with_overrides("a=F35,b=0x100263a")
            .unwrap();
        let (codes, added) = plan_bindings(&map, 8, 2, &mut table).unwrap();
        assert_eq!(codes, [9, 10, 11, 12, 19, 17, 15, 8]);
        assert_eq!(
            added,
            [(19, vec![0xffe0, 0xffe0]), (17, vec![0x100263a, 0x100263a])]
        );
        // Bound once: the next player finds them.
        let (again, added) = plan_bindings(&map, 8, 2, &mut table).unwrap();
        assert_eq!((again, added.len()), (codes, 0));

        let map = Keymap::PLAYER_1.with_overrides("up=F1,down=F2").unwrap();
        assert!(matches!(
            plan_bindings(&map, 8, 2, &mut table),
            Err(InjectError::NoSpareKeycode {
                key: "down",
                keysym: 0xffbf
            })
        ));
    }

    #[test]
    fn odd_keyboard_mappings_give_errors_not_panics() {
        // A table whose length is not a multiple of the columns, and keycodes past 255.
        let mut table = vec![0x77, 0, 0x73];
        assert!(plan_bindings(&Keymap::PLAYER_1, 8, 2, &mut table).is_err());
        let mut table = vec![0; 300];
        let (codes, added) = plan_bindings(&Keymap::PLAYER_1, 8, 1, &mut table).unwrap();
        assert_eq!(codes, [255, 254, 253, 252, 251, 250, 249, 248]);
        assert_eq!(added.len(), 8);
        // No column at all counts as one.
        assert!(plan_bindings(&Keymap::PLAYER_1, 8, 0, &mut [0; 8]).is_ok());
        assert!(plan_bindings(&Keymap::PLAYER_1, 8, 1, &mut []).is_err());
    }

    #[test]
    fn fake_key_request_matches_x11rbs_serialisation() {
        for (keycode, pressed) in [(8, true), (9, false), (255, true), (38, false)] {
            let reference = FakeInputRequest {
                type_: if pressed { KEY_PRESS } else { KEY_RELEASE },
                detail: keycode,
                time: x11rb::CURRENT_TIME,
                root: x11rb::NONE,
                root_x: 0,
                root_y: 0,
                deviceid: 0,
            }
            .serialize(131);
            let ([bytes], _) = reference;
            assert_eq!(&fake_key_request(131, keycode, pressed)[..], &bytes[..]);
        }
    }
}
