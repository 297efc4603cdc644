//! Players' input: the WebSocket messages of DESIGN.md ("Input WebSocket messages") turned into
//! XTEST key events in the game's display.
//!
//! ```text
//! Frame (text JSON or 1 binary byte) -> parse -> changes(old, new) -> Keymap -> XTEST FakeInput
//! ```
//!
//! The core ([`parse`], [`changes`], [`Keymap`]) does no IO and never allocates; the IO is in
//! [`XtestInjector`] (one X connection per player), and [`PlayerInput`] ties them together for
//! the thread that reads one player's WebSocket. Bad input is an error value, never a panic.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod inject;
mod keymap;
mod parse;
mod player;

pub use inject::{InjectError, KeySink, XtestInjector};
pub use keymap::{Keymap, KeymapError, keysym, keysym_from_name};
pub use parse::{ErrorReply, InputError, KeyName, parse};
pub use player::{HandleError, PlayerInput};

/// The largest input message accepted, in bytes (DESIGN.md: messages are bounded to 1 KiB).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The payload of one WebSocket message on a player's input channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text message: a JSON object of key names and booleans.
    Text(&'a [u8]),
    /// A binary message: one byte, the full state as a bitmask (see [`Key::bit`]).
    Binary(&'a [u8]),
}

/// One of the eight keys of a player's pad.
///
/// The discriminant is the key's bit in [`PlayerKeys`] and in the input WebSocket's binary
/// message (DESIGN.md): bit 0 up, 1 down, 2 left, 3 right, 4 a, 5 b, 6 start, 7 select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Up = 0,
    Down = 1,
    Left = 2,
    Right = 3,
    A = 4,
    B = 5,
    Start = 6,
    Select = 7,
}

impl Key {
    /// All keys, in bit order.
    pub const ALL: [Key; 8] = [
        Key::Up,
        Key::Down,
        Key::Left,
        Key::Right,
        Key::A,
        Key::B,
        Key::Start,
        Key::Select,
    ];

    /// The key's bit in [`PlayerKeys`] (and in the input WebSocket's binary message).
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The key's name in the input WebSocket's JSON message.
    pub const fn name(self) -> &'static str {
        match self {
            Key::Up => "up",
            Key::Down => "down",
            Key::Left => "left",
            Key::Right => "right",
            Key::A => "a",
            Key::B => "b",
            Key::Start => "start",
            Key::Select => "select",
        }
    }

    /// The key named `name` (exactly, lowercase, as in the JSON message), if any.
    pub fn from_name(name: &[u8]) -> Option<Key> {
        Some(match name {
            b"up" => Key::Up,
            b"down" => Key::Down,
            b"left" => Key::Left,
            b"right" => Key::Right,
            b"a" => Key::A,
            b"b" => Key::B,
            b"start" => Key::Start,
            b"select" => Key::Select,
            _ => return None,
        })
    }
}

/// The state of one player's eight keys, one bit each (see [`Key::bit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PlayerKeys(pub u8);

impl PlayerKeys {
    /// No key held.
    pub const NONE: PlayerKeys = PlayerKeys(0);

    /// Only `keys` held.
    pub fn of(keys: &[Key]) -> PlayerKeys {
        PlayerKeys(keys.iter().fold(0, |bits, k| bits | k.bit()))
    }

    pub const fn contains(self, key: Key) -> bool {
        self.0 & key.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn set(&mut self, key: Key, pressed: bool) {
        if pressed {
            self.0 |= key.bit();
        } else {
            self.0 &= !key.bit();
        }
    }
}

/// The keys whose state differs between `old` and `new`, as `(key, pressed)`: first every
/// release, then every press, each in bit order ([`Key::ALL`]).
///
/// Releases come first so that a message that swaps two keys (left up, right down) never holds
/// both at once in the game.
pub fn changes(old: PlayerKeys, new: PlayerKeys) -> Changes {
    Changes {
        released: old.0 & !new.0,
        pressed: new.0 & !old.0,
    }
}

/// The iterator of [`changes`]: no allocation, at most eight items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// Bits still to report as released.
    released: u8,
    /// Bits still to report as pressed.
    pressed: u8,
}

impl Iterator for Changes {
    type Item = (Key, bool);

    fn next(&mut self) -> Option<(Key, bool)> {
        let (bits, pressed) = if self.released != 0 {
            (&mut self.released, false)
        } else if self.pressed != 0 {
            (&mut self.pressed, true)
        } else {
            return None;
        };
        let key = Key::ALL[bits.trailing_zeros() as usize];
        *bits &= *bits - 1;
        Some((key, pressed))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.released.count_ones() + self.pressed.count_ones()) as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Changes {}
impl std::iter::FusedIterator for Changes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_wire_order() {
        for (i, key) in Key::ALL.iter().enumerate() {
            assert_eq!(key.bit(), 1 << i);
            assert_eq!(*key as usize, i);
        }
    }

    #[test]
    fn names_round_trip() {
        for key in Key::ALL {
            assert_eq!(Key::from_name(key.name().as_bytes()), Some(key));
        }
        for bad in [&b""[..], b"Up", b"UP", b"up ", b"x", b"selectt", b"\xff"] {
            assert_eq!(Key::from_name(bad), None);
        }
    }

    #[test]
    fn player_keys_set_and_contains() {
        let mut keys = PlayerKeys::NONE;
        assert!(keys.is_empty());
        keys.set(Key::B, true);
        keys.set(Key::Up, true);
        assert_eq!(keys, PlayerKeys::of(&[Key::Up, Key::B]));
        assert!(keys.contains(Key::B) && !keys.contains(Key::A));
        keys.set(Key::B, false);
        assert_eq!(keys, PlayerKeys(Key::Up.bit()));
    }

    #[test]
    fn changes_lists_releases_then_presses_in_bit_order() {
        let old = PlayerKeys::of(&[Key::Up, Key::Left, Key::Start]);
        let new = PlayerKeys::of(&[Key::Down, Key::Left, Key::A, Key::Select]);
        let got: Vec<_> = changes(old, new).collect();
        assert_eq!(
            got,
            [
                (Key::Up, false),
                (Key::Start, false),
                (Key::Down, true),
                (Key::A, true),
                (Key::Select, true),
            ]
        );
        assert_eq!(changes(old, new).len(), 5);
        assert_eq!(changes(new, new).next(), None);
        assert_eq!(changes(PlayerKeys::NONE, PlayerKeys(0xff)).count(), 8);
    }

    #[test]
    fn changes_applied_to_old_give_new_for_every_pair() {
        for old in 0..=255u8 {
            for new in 0..=255u8 {
                let mut keys = PlayerKeys(old);
                let mut last: Option<(Key, bool)> = None;
                for (key, pressed) in changes(PlayerKeys(old), PlayerKeys(new)) {
                    assert_ne!(keys.contains(key), pressed, "{old:#x} -> {new:#x}: {key:?}");
                    if let Some((prev, prev_pressed)) = last {
                        // Releases first; within each group, increasing bits.
                        assert!(
                            (prev_pressed, prev as u8) < (pressed, key as u8),
                            "{old:#x} -> {new:#x}"
                        );
                    }
                    keys.set(key, pressed);
                    last = Some((key, pressed));
                }
                assert_eq!(keys, PlayerKeys(new));
            }
        }
    }
}
