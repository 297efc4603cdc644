//! The game's eight keys per player, their default X keysyms, and the keycode table that turns
//! X key events into them.
//!
//! [`Key`] and [`PlayerKeys`] live with the input parser in `playpod_hotpath::input`; their bit
//! order is the one of the input WebSocket's binary message (DESIGN.md): bit 0 up, 1 down,
//! 2 left, 3 right, 4 a, 5 b, 6 start, 7 select.

use playpod_hotpath::input::Keymap;
pub use playpod_hotpath::input::{Key, PlayerKeys, keysym};

/// The default keys of player 1 (index 0) and player 2 (index 1), as `(key, X keysym)` in
/// [`Key::ALL`] order: the keymaps the input injection presses by default
/// ([`Keymap::PLAYER_1`], [`Keymap::PLAYER_2`]).
pub const DEFAULT_KEYMAP: [[(Key, u32); 8]; 2] = [pairs(Keymap::PLAYER_1), pairs(Keymap::PLAYER_2)];

/// A keymap as `(key, keysym)` pairs.
const fn pairs(keymap: Keymap) -> [(Key, u32); 8] {
    let mut out = [(Key::Up, 0); 8];
    let mut i = 0;
    while i < out.len() {
        out[i] = (Key::ALL[i], keymap.keysyms[i]);
        i += 1;
    }
    out
}

/// The default keysym of `key` for `player` (0 or 1).
pub const fn default_keysym(player: usize, key: Key) -> u32 {
    DEFAULT_KEYMAP[player][key as usize].1
}

/// Which player and key an X keycode stands for, for every keycode (0..=255).
#[derive(Debug, Clone)]
pub struct KeycodeTable {
    entries: [Option<(u8, Key)>; 256],
}

impl KeycodeTable {
    /// Builds the table from a GetKeyboardMapping reply: `keysyms` holds
    /// `keysyms_per_keycode` keysyms for each keycode from `first_keycode` on. A keycode matches
    /// a binding when any of its keysyms equals the binding's keysym (for letters, either case),
    /// so Shift or a keysym in another column still plays.
    pub fn new(
        first_keycode: u8,
        keysyms_per_keycode: u8,
        keysyms: &[u32],
        keymap: &[[(Key, u32); 8]; 2],
    ) -> KeycodeTable {
        let mut entries = [None; 256];
        let per = usize::from(keysyms_per_keycode.max(1));
        for (i, syms) in keysyms.chunks(per).enumerate() {
            let Some(code) = usize::from(first_keycode)
                .checked_add(i)
                .filter(|&c| c < entries.len())
            else {
                break;
            };
            entries[code] = syms.iter().find_map(|&sym| lookup(keymap, sym));
        }
        KeycodeTable { entries }
    }

    /// The player (0 or 1) and key that `keycode` stands for, if any.
    pub fn get(&self, keycode: u8) -> Option<(u8, Key)> {
        self.entries[usize::from(keycode)]
    }

    /// The first keycode bound to `player`'s `key`, if the keyboard has one.
    pub fn keycode_of(&self, player: u8, key: Key) -> Option<u8> {
        (0..=255u8).find(|&code| self.get(code) == Some((player, key)))
    }
}

fn lookup(keymap: &[[(Key, u32); 8]; 2], sym: u32) -> Option<(u8, Key)> {
    if sym == 0 {
        return None;
    }
    // Uppercase Latin letters (keysyms 0x41..=0x5a) play as their lowercase key.
    let sym = if (0x41..=0x5a).contains(&sym) {
        sym + 0x20
    } else {
        sym
    };
    keymap.iter().zip(0u8..).find_map(|(keys, player)| {
        keys.iter()
            .find(|&&(_, bound)| bound == sym)
            .map(|&(key, _)| (player, key))
    })
}

/// The keys of both players as X reports them, plus the keys pressed since the last frame so
/// that a press shorter than a frame still counts once.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyState {
    held: [PlayerKeys; 2],
    pressed: [PlayerKeys; 2],
}

impl KeyState {
    pub fn press(&mut self, player: u8, key: Key) {
        let p = usize::from(player & 1);
        self.held[p].set(key, true);
        self.pressed[p].set(key, true);
    }

    pub fn release(&mut self, player: u8, key: Key) {
        self.held[usize::from(player & 1)].set(key, false);
    }

    /// Releases every key (focus lost: the releases will not come to us).
    pub fn release_all(&mut self) {
        self.held = [PlayerKeys::NONE; 2];
    }

    /// What the game sees this frame: held keys and those pressed since the last call.
    pub fn take_frame_input(&mut self) -> [PlayerKeys; 2] {
        let input = [
            PlayerKeys(self.held[0].0 | self.pressed[0].0),
            PlayerKeys(self.held[1].0 | self.pressed[1].0),
        ];
        self.pressed = [PlayerKeys::NONE; 2];
        input
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_wire_order() {
        for (i, key) in Key::ALL.iter().enumerate() {
            assert_eq!(key.bit(), 1 << i);
        }
        for player in &DEFAULT_KEYMAP {
            for (i, (key, _)) in player.iter().enumerate() {
                assert_eq!(*key, Key::ALL[i]);
            }
        }
        assert_eq!(default_keysym(0, Key::Down), 0x73);
        assert_eq!(default_keysym(1, Key::Start), 0x70);
    }

    #[test]
    fn default_keysyms_are_distinct() {
        let mut all: Vec<u32> = DEFAULT_KEYMAP.iter().flatten().map(|&(_, s)| s).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 16);
    }

    #[test]
    fn keycode_table_from_a_keyboard_mapping() {
        // Keycodes 8.. with two keysyms each: 8 = s/S, 9 = Up, 10 = nothing, 11 = W only (shifted).
        let syms = [0x73, 0x53, keysym::UP, 0, 0, 0, 0, 0x57];
        let table = KeycodeTable::new(8, 2, &syms, &DEFAULT_KEYMAP);
        assert_eq!(table.get(8), Some((0, Key::Down)));
        assert_eq!(table.get(9), Some((1, Key::Up)));
        assert_eq!(table.get(10), None);
        assert_eq!(table.get(11), Some((0, Key::Up)));
        assert_eq!(table.get(0), None);
        assert_eq!(table.get(255), None);
        assert_eq!(table.keycode_of(0, Key::Down), Some(8));
        assert_eq!(table.keycode_of(1, Key::Select), None);
    }

    #[test]
    fn keycode_table_ignores_out_of_range_and_odd_replies() {
        let syms = vec![0x73; 300];
        let table = KeycodeTable::new(200, 1, &syms, &DEFAULT_KEYMAP);
        assert_eq!(table.get(255), Some((0, Key::Down)));
        let table = KeycodeTable::new(8, 0, &[0x73], &DEFAULT_KEYMAP);
        assert_eq!(table.get(8), Some((0, Key::Down)));
    }

    #[test]
    fn a_tap_shorter_than_a_frame_counts_once() {
        let mut keys = KeyState::default();
        keys.press(1, Key::Start);
        keys.release(1, Key::Start);
        assert_eq!(
            keys.take_frame_input(),
            [PlayerKeys::NONE, PlayerKeys::of(&[Key::Start])]
        );
        assert_eq!(keys.take_frame_input(), [PlayerKeys::NONE; 2]);
        keys.press(0, Key::Up);
        assert_eq!(keys.take_frame_input()[0], PlayerKeys::of(&[Key::Up]));
        assert_eq!(keys.take_frame_input()[0], PlayerKeys::of(&[Key::Up]));
        keys.release_all();
        assert_eq!(keys.take_frame_input(), [PlayerKeys::NONE; 2]);
    }
}
