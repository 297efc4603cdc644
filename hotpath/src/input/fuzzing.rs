//! The entry points of the fuzz targets (feature `fuzzing`; also used by the unit tests), and a
//! slow reference parser on `serde_json` that checks the hand-written one.
//!
//! Each check panics when an invariant breaks, which is what a fuzzer looks for; the code under
//! test itself never panics.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use super::{
    ErrorReply, Frame, InjectError, Key, KeySink, Keymap, MAX_MESSAGE_BYTES, PlayerInput,
    PlayerKeys, changes, parse,
};

/// The reference: what [`parse`] must return, worked out with `serde_json` (which decodes the
/// whole message into owned values first). `None` where `parse` must fail.
pub fn parse_reference(frame: Frame<'_>, current: PlayerKeys) -> Option<PlayerKeys> {
    match frame {
        Frame::Binary(&[state]) => Some(PlayerKeys(state)),
        Frame::Binary(_) => None,
        Frame::Text(text) if text.len() > MAX_MESSAGE_BYTES => None,
        Frame::Text(text) => {
            let Members(members) = serde_json::from_slice(text).ok()?;
            let mut keys = current;
            let mut seen = PlayerKeys::NONE;
            for (name, value) in members {
                let key = Key::from_name(name.as_bytes())?;
                if seen.contains(key) {
                    return None;
                }
                seen.set(key, true);
                keys.set(key, value.as_bool()?);
            }
            Some(keys)
        }
    }
}

/// A JSON object's members in message order, duplicates kept.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Members, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// The `input_parse` target: `data` as a text and as a binary message, against every starting
/// state of interest; the result must be the reference's, and every error reply valid JSON.
pub fn check_parse(data: &[u8]) {
    for current in [PlayerKeys::NONE, PlayerKeys(0xff), PlayerKeys(0x5a)] {
        for frame in [Frame::Text(data), Frame::Binary(data)] {
            let got = parse(frame, current);
            let want = parse_reference(frame, current);
            match (got, want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{frame:?}"),
                (Err(e), None) => check_reply(&ErrorReply::new(&e), &e),
                (got, want) => {
                    panic!("{frame:?} from {current:?}: parse {got:?}, reference {want:?}")
                }
            }
        }
    }
}

/// An error reply is `{"error":"<the error's message>"}` in valid JSON (cut if very long).
fn check_reply(reply: &ErrorReply, error: &dyn fmt::Display) {
    let value: serde_json::Value = serde_json::from_str(reply.as_str())
        .unwrap_or_else(|e| panic!("reply {reply:?} is not JSON: {e}"));
    let object = value.as_object().expect("the reply is an object");
    assert_eq!(object.len(), 1, "{reply:?}");
    let message = object["error"].as_str().expect("the error is a string");
    let full = error.to_string();
    assert!(
        !message.is_empty() && full.starts_with(message),
        "{reply:?} for {full:?}"
    );
}

/// A keyboard that remembers which keysyms are down and refuses a press of a key already down
/// or a release of a key already up, as the `input_parse_diff` target's sink.
#[derive(Debug)]
pub struct SimKeyboard {
    keymap: Keymap,
    /// Keysyms down now.
    pub down: Vec<u32>,
}

impl SimKeyboard {
    pub fn new(keymap: Keymap) -> SimKeyboard {
        SimKeyboard {
            keymap,
            down: Vec::new(),
        }
    }

    /// The keysyms `keys` hold down through the keymap, sorted.
    pub fn keysyms_of(&self, keys: PlayerKeys) -> Vec<u32> {
        let mut syms: Vec<u32> = Key::ALL
            .iter()
            .filter(|&&k| keys.contains(k))
            .map(|&k| self.keymap.keysym(k))
            .collect();
        syms.sort_unstable();
        syms
    }
}

impl KeySink for SimKeyboard {
    fn apply(&mut self, old: PlayerKeys, new: PlayerKeys) -> Result<(), InjectError> {
        assert_eq!(
            self.keysyms_of(old),
            sorted(&self.down),
            "the sink is out of step"
        );
        for (key, pressed) in changes(old, new) {
            let sym = self.keymap.keysym(key);
            let at = self.down.iter().position(|&s| s == sym);
            match (pressed, at) {
                (true, None) => self.down.push(sym),
                (false, Some(i)) => {
                    self.down.swap_remove(i);
                }
                _ => panic!("{key:?} pressed={pressed} twice ({old:?} -> {new:?})"),
            }
        }
        assert_eq!(self.keysyms_of(new), sorted(&self.down));
        Ok(())
    }
}

fn sorted(syms: &[u32]) -> Vec<u32> {
    let mut syms = syms.to_vec();
    syms.sort_unstable();
    syms
}

/// The `input_parse_diff` target: a keymap spec, then a sequence of messages, played through a
/// [`PlayerInput`] into a [`SimKeyboard`].
///
/// `data` is split at `0xff` bytes: the first part is a keymap spec (over player 1's or 2's
/// defaults, after the first byte's low bit); each later part is a message, binary when its
/// first byte is `b'#'` (that byte dropped), text otherwise. Checks that an error changes no
/// key; that the keys are the reference's; that `changes(old, new)` applied to `old` gives
/// `new` on the keyboard; and that dropping the player releases every key.
pub fn check_sequence(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xff);
    let spec = parts.next().unwrap_or_default();
    let (player, spec) = match spec.split_first() {
        Some((&b, rest)) => (1 + (b & 1), rest),
        None => (1, spec),
    };
    let base = Keymap::default_for(player);
    let keymap = match std::str::from_utf8(spec).map(|s| base.with_overrides(s)) {
        Ok(Ok(map)) => {
            check_keymap(&map);
            map
        }
        Ok(Err(e)) => {
            assert!(!e.to_string().is_empty());
            base
        }
        Err(_) => base,
    };

    let mut input = PlayerInput::new(SimKeyboard::new(keymap));
    for message in parts {
        let frame = match message.split_first() {
            Some((b'#', rest)) => Frame::Binary(rest),
            _ => Frame::Text(message),
        };
        let old = input.held();
        let want = parse_reference(frame, old);
        match input.handle(frame) {
            Ok(new) => {
                assert_eq!(Some(new), want, "{frame:?}");
                assert_eq!(input.held(), new);
                let mut replay = old;
                for (key, pressed) in changes(old, new) {
                    assert_ne!(replay.contains(key), pressed);
                    replay.set(key, pressed);
                }
                assert_eq!(replay, new);
            }
            Err(e) => {
                assert!(want.is_none(), "{frame:?}: {e}, reference {want:?}");
                assert_eq!(input.held(), old, "an error changed the keys");
                let reply = e.reply().expect("a bad message gets a reply");
                check_reply(&reply, &e);
            }
        }
        let held = input.held();
        assert_eq!(input.sink().keysyms_of(held), sorted(&input.sink().down));
    }
    input.release_all();
    assert!(input.held().is_empty() && input.sink().down.is_empty());
}

/// A keymap the spec parser accepted has eight distinct keysyms and reads back from its
/// display form.
fn check_keymap(map: &Keymap) {
    for (i, a) in map.keysyms.iter().enumerate() {
        assert_ne!(*a, 0);
        assert!(!map.keysyms[i + 1..].contains(a), "{map:?}");
    }
    assert_eq!(Keymap::PLAYER_1.with_overrides(&map.to_string()), Ok(*map));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a fixed sequence, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    /// Pieces that make bytes look like input messages, and bytes that break them.
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b" ",
        b"\n",
        b"\t",
        b"true",
        b"false",
        b"null",
        b"0",
        b"-1",
        b"1e5",
        b"up",
        b"down",
        b"left",
        b"right",
        b"a",
        b"b",
        b"start",
        b"select",
        b"\\",
        b"\\u0075",
        b"\\ud83d\\ude00",
        b"\\ud800",
        b"\\n",
        b"\xc3\xa9",
        b"\xff",
        b"\xc0",
        b"\xe2\x82",
        b"\x00",
        b"\x1f",
        b"x",
        b"\"up\":true",
        b"\"a\":false",
        b"{\"b\":true}",
    ];

    fn random_message(rng: &mut Rng) -> Vec<u8> {
        let mut msg = Vec::new();
        for _ in 0..rng.below(24) {
            if rng.below(8) == 0 {
                msg.push(rng.next() as u8);
            } else {
                msg.extend_from_slice(rng.pick(PIECES));
            }
        }
        msg
    }

    /// A valid message and the keys it gives from `current`: a random subset of the keys in a
    /// random order, random whitespace, some characters of the names escaped.
    fn valid_message(rng: &mut Rng, current: PlayerKeys) -> (Vec<u8>, PlayerKeys) {
        const WS: &[&str] = &["", "", " ", "\n", "\t", "\r\n  "];
        let mut order = Key::ALL;
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut keys = current;
        let mut msg = String::from(rng.pick(WS));
        msg.push('{');
        for (n, key) in order.iter().take(rng.below(9)).enumerate() {
            if n > 0 {
                msg.push(',');
            }
            msg.push_str(rng.pick(WS));
            msg.push('"');
            for c in key.name().chars() {
                if rng.below(5) == 0 {
                    msg.push_str(&format!("\\u{:04x}", u32::from(c)));
                } else {
                    msg.push(c);
                }
            }
            msg.push('"');
            msg.push_str(rng.pick(WS));
            msg.push(':');
            msg.push_str(rng.pick(WS));
            let pressed = rng.below(2) == 0;
            msg.push_str(if pressed { "true" } else { "false" });
            msg.push_str(rng.pick(WS));
            keys.set(*key, pressed);
        }
        msg.push('}');
        msg.push_str(rng.pick(WS));
        (msg.into_bytes(), keys)
    }

    #[test]
    fn valid_messages_in_any_form_parse_to_their_keys() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let current = PlayerKeys(rng.next() as u8);
            let (msg, want) = valid_message(&mut rng, current);
            assert_eq!(
                parse(Frame::Text(&msg), current),
                Ok(want),
                "{}",
                String::from_utf8_lossy(&msg)
            );
            assert_eq!(parse_reference(Frame::Text(&msg), current), Some(want));
        }
    }

    #[test]
    fn any_bytes_parse_as_the_reference_says_and_never_panic() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..30_000 {
            check_parse(&random_message(&mut rng));
        }
        // Fully random bytes of every length up to past the limit.
        for len in [0, 1, 2, 3, 7, 64, 1023, 1024, 1025, 4096] {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_parse(&bytes);
        }
    }

    #[test]
    fn mutated_valid_messages_parse_as_the_reference_says() {
        let mut rng = Rng(0x5851_f42d_4c95_7f2d);
        for _ in 0..20_000 {
            let (mut msg, _) = valid_message(&mut rng, PlayerKeys::NONE);
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(msg.len() + 1);
                match rng.below(3) {
                    0 if at < msg.len() => {
                        msg.remove(at);
                    }
                    1 if at < msg.len() => msg[at] = rng.pick(b"{}[]\":, \\u0tfx\xff"),
                    _ => msg.insert(at, rng.pick(b"{}[]\":, \\u0tfx\xff")),
                }
            }
            check_parse(&msg);
        }
    }

    #[test]
    fn sequences_keep_the_keyboard_in_step() {
        let mut rng = Rng(0x1405_7b7e_f767_814f);
        let specs: &[&[u8]] = &[
            b"\x00",
            b"\x01",
            b"\x00up=x,down=Up",
            b"\x01a=a",
            b"\x00up=s",
        ];
        for _ in 0..3_000 {
            let mut data = rng.pick(specs).to_vec();
            for _ in 0..rng.below(12) {
                data.extend_from_slice(b"\xff");
                match rng.below(3) {
                    0 => data.extend_from_slice(&[b'#', rng.next() as u8]),
                    1 => data.extend_from_slice(&valid_message(&mut rng, PlayerKeys::NONE).0),
                    _ => data.extend_from_slice(&random_message(&mut rng)),
                }
            }
            check_sequence(&data);
        }
    }
}
