//! Which X key each of a player's eight keys presses: defaults for the built-in game, and
//! overrides from a flag such as `up=w,down=s,a=Return,b=0xff0d` to match any emulator.

use std::fmt;

use super::Key;

/// The X keysym each of a player's keys presses, in [`Key::ALL`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keymap {
    pub keysyms: [u32; 8],
}

/// X keysyms used by the default keymaps (X11/keysymdef.h).
pub mod keysym {
    pub const RETURN: u32 = 0xff0d;
    pub const TAB: u32 = 0xff09;
    pub const LEFT: u32 = 0xff51;
    pub const UP: u32 = 0xff52;
    pub const RIGHT: u32 = 0xff53;
    pub const DOWN: u32 = 0xff54;
}

impl Keymap {
    /// Player 1's default keys: W S A D move, F G are A B, Return is start, Tab is select.
    pub const PLAYER_1: Keymap = Keymap {
        keysyms: [
            b'w' as u32,
            b's' as u32,
            b'a' as u32,
            b'd' as u32,
            b'f' as u32,
            b'g' as u32,
            keysym::RETURN,
            keysym::TAB,
        ],
    };

    /// Player 2's default keys: the arrows move, K L are A B, P is start, O is select.
    pub const PLAYER_2: Keymap = Keymap {
        keysyms: [
            keysym::UP,
            keysym::DOWN,
            keysym::LEFT,
            keysym::RIGHT,
            b'k' as u32,
            b'l' as u32,
            b'p' as u32,
            b'o' as u32,
        ],
    };

    /// The default keys of `player` (numbered 1 and 2, as in `/input/1` and `/input/2`), the
    /// ones the built-in game reads. Any number other than 2 gets player 1's keys.
    pub const fn default_for(player: u8) -> Keymap {
        match player {
            2 => Keymap::PLAYER_2,
            _ => Keymap::PLAYER_1,
        }
    }

    /// The keysym `key` presses.
    pub const fn keysym(&self, key: Key) -> u32 {
        self.keysyms[key as usize]
    }

    /// This keymap with the bindings of `spec` changed: comma-separated `key=keysym` entries,
    /// where `key` is one of the eight key names and `keysym` an X keysym name
    /// ([`keysym_from_name`]) or a hex value such as `0xff0d`. Spaces around the parts are
    /// ignored, and so are empty entries (an empty spec changes nothing). A key named twice, or
    /// two keys on the same keysym, is an error.
    pub fn with_overrides(self, spec: &str) -> Result<Keymap, KeymapError> {
        let mut map = self;
        let mut named = [false; 8];
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, value) = entry
                .split_once('=')
                .ok_or_else(|| KeymapError::MissingEquals(entry.to_owned()))?;
            let (name, value) = (name.trim(), value.trim());
            let key = Key::from_name(name.as_bytes())
                .ok_or_else(|| KeymapError::UnknownKey(name.to_owned()))?;
            if std::mem::replace(&mut named[key as usize], true) {
                return Err(KeymapError::DuplicateKey(key.name()));
            }
            map.keysyms[key as usize] =
                keysym_from_name(value).ok_or_else(|| KeymapError::UnknownKeysym {
                    key: key.name(),
                    keysym: value.to_owned(),
                })?;
        }
        for (i, a) in Key::ALL.iter().enumerate() {
            for b in &Key::ALL[i + 1..] {
                if map.keysym(*a) == map.keysym(*b) {
                    return Err(KeymapError::SameKeysym {
                        first: a.name(),
                        second: b.name(),
                        keysym: map.keysym(*a),
                    });
                }
            }
        }
        Ok(map)
    }
}

impl fmt::Display for Keymap {
    /// The keymap in the form [`Keymap::with_overrides`] reads, with hex keysyms.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in Key::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}={:#x}", key.name(), self.keysym(*key))?;
        }
        Ok(())
    }
}

/// Why a keymap spec was refused; each variant names the part of the spec that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeymapError {
    #[error("keymap entry \"{0}\" is not of the form key=keysym")]
    MissingEquals(String),
    #[error(
        "unknown key \"{0}\" in keymap; the keys are up, down, left, right, a, b, start, select"
    )]
    UnknownKey(String),
    #[error("key \"{0}\" is mapped twice in the keymap")]
    DuplicateKey(&'static str),
    #[error(
        "unknown X keysym \"{keysym}\" for key \"{key}\"; use a name such as Return, w, F1, \
         KP_Enter or a hex value such as 0xff0d"
    )]
    UnknownKeysym { key: &'static str, keysym: String },
    #[error("keys \"{first}\" and \"{second}\" are both mapped to keysym {keysym:#x}")]
    SameKeysym {
        first: &'static str,
        second: &'static str,
        keysym: u32,
    },
}

/// Named X keysyms beyond the letters and digits (X11/keysymdef.h).
const NAMED: &[(&str, u32)] = &[
    ("space", 0x20),
    ("exclam", 0x21),
    ("quotedbl", 0x22),
    ("numbersign", 0x23),
    ("dollar", 0x24),
    ("percent", 0x25),
    ("ampersand", 0x26),
    ("apostrophe", 0x27),
    ("parenleft", 0x28),
    ("parenright", 0x29),
    ("asterisk", 0x2a),
    ("plus", 0x2b),
    ("comma", 0x2c),
    ("minus", 0x2d),
    ("period", 0x2e),
    ("slash", 0x2f),
    ("colon", 0x3a),
    ("semicolon", 0x3b),
    ("less", 0x3c),
    ("equal", 0x3d),
    ("greater", 0x3e),
    ("question", 0x3f),
    ("at", 0x40),
    ("bracketleft", 0x5b),
    ("backslash", 0x5c),
    ("bracketright", 0x5d),
    ("asciicircum", 0x5e),
    ("underscore", 0x5f),
    ("grave", 0x60),
    ("braceleft", 0x7b),
    ("bar", 0x7c),
    ("braceright", 0x7d),
    ("asciitilde", 0x7e),
    ("BackSpace", 0xff08),
    ("Tab", 0xff09),
    ("Return", 0xff0d),
    ("Pause", 0xff13),
    ("Scroll_Lock", 0xff14),
    ("Escape", 0xff1b),
    ("Home", 0xff50),
    ("Left", 0xff51),
    ("Up", 0xff52),
    ("Right", 0xff53),
    ("Down", 0xff54),
    ("Prior", 0xff55),
    ("Page_Up", 0xff55),
    ("Next", 0xff56),
    ("Page_Down", 0xff56),
    ("End", 0xff57),
    ("Print", 0xff61),
    ("Insert", 0xff63),
    ("Menu", 0xff67),
    ("Num_Lock", 0xff7f),
    ("KP_Space", 0xff80),
    ("KP_Tab", 0xff89),
    ("KP_Enter", 0xff8d),
    ("KP_Home", 0xff95),
    ("KP_Left", 0xff96),
    ("KP_Up", 0xff97),
    ("KP_Right", 0xff98),
    ("KP_Down", 0xff99),
    ("KP_Prior", 0xff9a),
    ("KP_Page_Up", 0xff9a),
    ("KP_Next", 0xff9b),
    ("KP_Page_Down", 0xff9b),
    ("KP_End", 0xff9c),
    ("KP_Begin", 0xff9d),
    ("KP_Insert", 0xff9e),
    ("KP_Delete", 0xff9f),
    ("KP_Multiply", 0xffaa),
    ("KP_Add", 0xffab),
    ("KP_Separator", 0xffac),
    ("KP_Subtract", 0xffad),
    ("KP_Decimal", 0xffae),
    ("KP_Divide", 0xffaf),
    ("KP_Equal", 0xffbd),
    ("Shift_L", 0xffe1),
    ("Shift_R", 0xffe2),
    ("Control_L", 0xffe3),
    ("Control_R", 0xffe4),
    ("Caps_Lock", 0xffe5),
    ("Meta_L", 0xffe7),
    ("Meta_R", 0xffe8),
    ("Alt_L", 0xffe9),
    ("Alt_R", 0xffea),
    ("Super_L", 0xffeb),
    ("Super_R", 0xffec),
    ("Delete", 0xffff),
];

/// The largest keysym value: keysyms are 29-bit (the top three bits of the 32 are zero).
const MAX_KEYSYM: u32 = 0x1fff_ffff;

/// The X keysym called `name` (as in X11/keysymdef.h without the `XK_` prefix: `a`, `A`, `0`,
/// `space`, `Return`, `Up`, `F1`..`F35`, `KP_0`..`KP_9`, `KP_Enter`, `Shift_L`, `minus`, ...), or
/// written in hex (`0xff0d`). `None` for an unknown name, NoSymbol (0) or an out-of-range value.
pub fn keysym_from_name(name: &str) -> Option<u32> {
    if let Some(hex) = name.strip_prefix("0x").or_else(|| name.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u32::from_str_radix(hex, 16)
            .ok()
            .filter(|&v| v != 0 && v <= MAX_KEYSYM);
    }
    // Letters and digits: Latin-1 keysyms equal their code point.
    if let &[c] = name.as_bytes()
        && c.is_ascii_alphanumeric()
    {
        return Some(u32::from(c));
    }
    if let Some(n) = name.strip_prefix("KP_").and_then(single_digit) {
        return Some(0xffb0 + n);
    }
    if let Some(n) = name
        .strip_prefix('F')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=35).contains(n) && !name[1..].starts_with('0'))
    {
        return Some(0xffbe + n - 1);
    }
    NAMED.iter().find(|(n, _)| *n == name).map(|&(_, sym)| sym)
}

fn single_digit(s: &str) -> Option<u32> {
    match s.as_bytes() {
        &[c @ b'0'..=b'9'] => Some(u32::from(c - b'0')),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_built_in_games_keys() {
        assert_eq!(Keymap::default_for(1), Keymap::PLAYER_1);
        assert_eq!(Keymap::default_for(2), Keymap::PLAYER_2);
        assert_eq!(Keymap::PLAYER_1.keysym(Key::Down), 0x73);
        assert_eq!(Keymap::PLAYER_1.keysym(Key::Start), 0xff0d);
        assert_eq!(Keymap::PLAYER_2.keysym(Key::Up), 0xff52);
        assert_eq!(Keymap::PLAYER_2.keysym(Key::Start), 0x70);
        // Both defaults are valid keymaps (no keysym used twice).
        for map in [Keymap::PLAYER_1, Keymap::PLAYER_2] {
            assert_eq!(map.with_overrides(""), Ok(map));
        }
    }

    #[test]
    fn keysym_names() {
        let cases = [
            ("a", 0x61),
            ("z", 0x7a),
            ("A", 0x41),
            ("Z", 0x5a),
            ("0", 0x30),
            ("9", 0x39),
            ("space", 0x20),
            ("Return", 0xff0d),
            ("Tab", 0xff09),
            ("Escape", 0xff1b),
            ("BackSpace", 0xff08),
            ("Up", 0xff52),
            ("Down", 0xff54),
            ("Left", 0xff51),
            ("Right", 0xff53),
            ("Home", 0xff50),
            ("End", 0xff57),
            ("Prior", 0xff55),
            ("Next", 0xff56),
            ("Insert", 0xff63),
            ("Delete", 0xffff),
            ("F1", 0xffbe),
            ("F12", 0xffc9),
            ("F35", 0xffe0),
            ("Shift_L", 0xffe1),
            ("Shift_R", 0xffe2),
            ("Control_L", 0xffe3),
            ("Control_R", 0xffe4),
            ("Alt_L", 0xffe9),
            ("Alt_R", 0xffea),
            ("KP_0", 0xffb0),
            ("KP_9", 0xffb9),
            ("KP_Enter", 0xff8d),
            ("KP_Add", 0xffab),
            ("minus", 0x2d),
            ("equal", 0x3d),
            ("comma", 0x2c),
            ("period", 0x2e),
            ("slash", 0x2f),
            ("semicolon", 0x3b),
            ("apostrophe", 0x27),
            ("bracketleft", 0x5b),
            ("bracketright", 0x5d),
            ("backslash", 0x5c),
            ("grave", 0x60),
            ("0xff0d", 0xff0d),
            ("0XFF0D", 0xff0d),
            ("0x1008ff13", 0x1008_ff13),
        ];
        for (name, sym) in cases {
            assert_eq!(keysym_from_name(name), Some(sym), "{name}");
        }
        for bad in [
            "",
            "return",
            "RETURN",
            "F0",
            "F36",
            "F01",
            "KP_10",
            "KP_",
            "0x",
            "0x0",
            "0xg",
            "0x123456789",
            "0x20000000",
            "-1",
            "é",
            " a",
            "aa",
            "Shift",
        ] {
            assert_eq!(keysym_from_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn overrides_change_only_the_named_keys() {
        let map = Keymap::default_for(1)
            .with_overrides("up=Up, down = Down ,a=Return,b=0x,start=space,")
            .unwrap_err();
        assert_eq!(
            map,
            KeymapError::UnknownKeysym {
                key: "b",
                keysym: "0x".into()
            }
        );
        let map = Keymap::default_for(1)
            .with_overrides("up=Up, down = Down ,a=x,b=0xff8d,start=space,")
            .unwrap();
        assert_eq!(
            map.keysyms,
            [0xff52, 0xff54, 0x61, 0x64, 0x78, 0xff8d, 0x20, 0xff09]
        );
        // The display form reads back as the same keymap.
        assert_eq!(Keymap::PLAYER_2.with_overrides(&map.to_string()), Ok(map));
    }

    #[test]
    fn bad_overrides_name_the_bad_part() {
        let p1 = Keymap::default_for(1);
        let err = |spec: &str| p1.with_overrides(spec).unwrap_err();
        assert_eq!(err("up"), KeymapError::MissingEquals("up".into()));
        assert_eq!(err("jump=w"), KeymapError::UnknownKey("jump".into()));
        assert_eq!(err("Up=w"), KeymapError::UnknownKey("Up".into()));
        assert_eq!(err("up=w,up=x"), KeymapError::DuplicateKey("up"));
        assert_eq!(
            err("up=Enter"),
            KeymapError::UnknownKeysym {
                key: "up",
                keysym: "Enter".into()
            }
        );
        assert_eq!(
            err("up=s"),
            KeymapError::SameKeysym {
                first: "up",
                second: "down",
                keysym: 0x73
            }
        );
        assert!(err("a=").to_string().contains("\"\" for key \"a\""));
        assert!(err("jump=w").to_string().contains("\"jump\""));
    }
}
