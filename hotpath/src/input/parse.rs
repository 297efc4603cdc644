//! The input message parser: a hand-written, bounded, allocation-free reader of exactly the JSON
//! that DESIGN.md allows (an object of key names and booleans), and of the 1-byte binary form.
//!
//! Decisions beyond the contract, each tested:
//! - an empty object `{}` is accepted and changes no key (a client may send it as a keep-alive);
//! - whitespace is allowed wherever JSON allows it (space, tab, CR, LF);
//! - key strings may use JSON escapes (`"\u0075p"` is `up`); they are decoded before the name is
//!   looked up, so a duplicate is found whatever its spelling; a malformed escape or an unescaped
//!   control character is "not JSON";
//! - the first problem found is reported, and the keys are only changed when the whole message
//!   is valid.

use std::fmt;

use super::{Frame, Key, MAX_MESSAGE_BYTES, PlayerKeys};

/// Parses one input message against the keys the player holds now and returns the keys the
/// player holds after it.
///
/// A text message names any of the eight keys (all of them, or only those that changed); the
/// keys it does not name keep their state in `current`. A binary message is the full state.
/// Never panics and never allocates; an error leaves the caller's keys as they were.
pub fn parse(frame: Frame<'_>, current: PlayerKeys) -> Result<PlayerKeys, InputError> {
    let bytes = match frame {
        Frame::Text(b) | Frame::Binary(b) => b,
    };
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(InputError::Oversize { len: bytes.len() });
    }
    match frame {
        Frame::Binary(&[state]) => Ok(PlayerKeys(state)),
        Frame::Binary(other) => Err(InputError::BinaryLength { len: other.len() }),
        Frame::Text(text) => {
            if let Err(e) = std::str::from_utf8(text) {
                return Err(InputError::InvalidUtf8 {
                    at: e.valid_up_to(),
                });
            }
            Reader {
                bytes: text,
                pos: 0,
            }
            .message(current)
        }
    }
}

/// Why an input message was refused. `Copy` and allocation-free: a key name it reports is held
/// inline ([`KeyName`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("message of {len} bytes is over the limit of {MAX_MESSAGE_BYTES} bytes")]
    Oversize { len: usize },
    #[error("text message is not valid UTF-8 (at byte {at})")]
    InvalidUtf8 { at: usize },
    #[error("empty text message; expected a JSON object such as {{\"up\":true}}")]
    Empty,
    #[error("not JSON at byte {at}: {problem}")]
    NotJson { at: usize, problem: &'static str },
    #[error("truncated JSON: the message ends before its object is closed")]
    Truncated,
    #[error("not a JSON object; expected an object such as {{\"up\":true}}")]
    NotAnObject,
    #[error("unknown key \"{0}\"; the keys are up, down, left, right, a, b, start, select")]
    UnknownKey(KeyName),
    #[error("duplicate key \"{}\"", .0.name())]
    DuplicateKey(Key),
    #[error("the value of \"{}\" is not a boolean; expected true or false", .0.name())]
    NotBoolean(Key),
    #[error("the value of \"{}\" is an object or an array; expected true or false", .0.name())]
    Nested(Key),
    #[error("trailing data after the JSON object (at byte {at})")]
    TrailingData { at: usize },
    #[error("binary message of {len} bytes; expected exactly 1 byte, the key bitmask")]
    BinaryLength { len: usize },
}

impl InputError {
    /// A short fixed name of the kind of error, for metrics labels and logs.
    pub const fn metric_label(&self) -> &'static str {
        match self {
            InputError::Oversize { .. } => "oversize",
            InputError::InvalidUtf8 { .. } => "invalid_utf8",
            InputError::Empty => "empty",
            InputError::NotJson { .. } => "not_json",
            InputError::Truncated => "truncated",
            InputError::NotAnObject => "not_object",
            InputError::UnknownKey(_) => "unknown_key",
            InputError::DuplicateKey(_) => "duplicate_key",
            InputError::NotBoolean(_) => "not_boolean",
            InputError::Nested(_) => "nested",
            InputError::TrailingData { .. } => "trailing_data",
            InputError::BinaryLength { .. } => "binary_length",
        }
    }
}

/// A key name as a message spelled it (escapes decoded), kept inline up to
/// [`KeyName::CAPACITY`] bytes; longer names are cut there and marked as truncated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyName {
    bytes: [u8; KeyName::CAPACITY],
    len: u8,
    truncated: bool,
}

impl KeyName {
    /// The most bytes of a name that are kept.
    pub const CAPACITY: usize = 24;

    const fn empty() -> KeyName {
        KeyName {
            bytes: [0; KeyName::CAPACITY],
            len: 0,
            truncated: false,
        }
    }

    /// Builds a name from `s`, cut at [`KeyName::CAPACITY`] bytes (on a character boundary).
    pub fn new(s: &str) -> KeyName {
        let mut name = KeyName::empty();
        for c in s.chars() {
            name.push(c);
        }
        name
    }

    /// Appends `c` whole, or marks the name truncated when it does not fit.
    fn push(&mut self, c: char) {
        let len = usize::from(self.len);
        let n = c.len_utf8();
        match self.bytes.get_mut(len..len + n) {
            Some(dst) if !self.truncated => {
                c.encode_utf8(dst);
                // Fits in a u8: len + n <= CAPACITY.
                self.len += n as u8;
            }
            _ => self.truncated = true,
        }
    }

    /// The bytes kept of the name (always whole UTF-8 characters).
    pub fn as_str(&self) -> &str {
        let kept = &self.bytes[..usize::from(self.len)];
        // Only whole characters are ever pushed, so this is always the whole of `kept`.
        match std::str::from_utf8(kept) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&kept[..e.valid_up_to()]).unwrap_or_default(),
        }
    }

    /// Whether the name was longer than what is kept.
    pub const fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The key this name stands for, if it is one of the eight names (and not truncated).
    fn key(&self) -> Option<Key> {
        if self.truncated {
            return None;
        }
        Key::from_name(self.as_str().as_bytes())
    }
}

impl fmt::Display for KeyName {
    /// The name with control characters, quotes and backslashes escaped as Rust does, and `...`
    /// after a truncated name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str().escape_debug())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName(\"{self}\")")
    }
}

/// A cursor over a text message that is already known to be valid UTF-8 and at most
/// [`MAX_MESSAGE_BYTES`] long, so every loop below is bounded by the message length.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next_byte(&mut self) -> Result<u8, InputError> {
        let b = self.peek().ok_or(InputError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn not_json(&self, at: usize, problem: &'static str) -> InputError {
        debug_assert!(at <= self.bytes.len());
        InputError::NotJson { at, problem }
    }

    /// The whole message: one object, optionally surrounded by whitespace.
    fn message(mut self, current: PlayerKeys) -> Result<PlayerKeys, InputError> {
        self.skip_whitespace();
        match self.peek() {
            None => return Err(InputError::Empty),
            Some(b'{') => self.pos += 1,
            Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                return Err(InputError::NotAnObject);
            }
            Some(_) => return Err(self.not_json(self.pos, "expected a JSON object")),
        }
        let keys = self.members(current)?;
        self.skip_whitespace();
        if self.pos < self.bytes.len() {
            return Err(InputError::TrailingData { at: self.pos });
        }
        Ok(keys)
    }

    /// The members of the object after its `{`, up to and including its `}`.
    fn members(&mut self, mut keys: PlayerKeys) -> Result<PlayerKeys, InputError> {
        let mut seen = PlayerKeys::NONE;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(keys);
        }
        loop {
            self.skip_whitespace();
            let at = self.pos;
            if self.next_byte()? != b'"' {
                return Err(self.not_json(at, "expected a key in double quotes"));
            }
            let name = self.string()?;
            let key = name.key().ok_or(InputError::UnknownKey(name))?;
            if seen.contains(key) {
                return Err(InputError::DuplicateKey(key));
            }
            seen.set(key, true);

            self.skip_whitespace();
            let at = self.pos;
            if self.next_byte()? != b':' {
                return Err(self.not_json(at, "expected ':' after a key"));
            }
            self.skip_whitespace();
            let pressed = self.boolean(key)?;
            keys.set(key, pressed);

            self.skip_whitespace();
            let at = self.pos;
            match self.next_byte()? {
                b',' => continue,
                b'}' => return Ok(keys),
                _ => return Err(self.not_json(at, "expected ',' or '}' after a value")),
            }
        }
    }

    /// The value of `key`: `true` or `false`.
    fn boolean(&mut self, key: Key) -> Result<bool, InputError> {
        let at = self.pos;
        let (literal, value): (&[u8], bool) = match self.peek() {
            None => return Err(InputError::Truncated),
            Some(b't') => (b"true", true),
            Some(b'f') => (b"false", false),
            Some(b'{' | b'[') => return Err(InputError::Nested(key)),
            Some(b'"' | b'-' | b'0'..=b'9' | b'n') => return Err(InputError::NotBoolean(key)),
            Some(_) => return Err(self.not_json(at, "expected a value")),
        };
        let rest = &self.bytes[at..];
        if rest.len() < literal.len() && literal.starts_with(rest) {
            return Err(InputError::Truncated);
        }
        if !rest.starts_with(literal) {
            return Err(self.not_json(at, "expected true or false"));
        }
        self.pos += literal.len();
        Ok(value)
    }

    /// A string after its opening quote, up to and including its closing quote, decoded.
    fn string(&mut self) -> Result<KeyName, InputError> {
        let mut name = KeyName::empty();
        loop {
            let at = self.pos;
            let c = match self.next_byte()? {
                b'"' => return Ok(name),
                b'\\' => self.escape(at)?,
                0x00..=0x1f => {
                    return Err(self.not_json(at, "control character in a string"));
                }
                b if b.is_ascii() => char::from(b),
                _ => {
                    // A multi-byte character: the text is valid UTF-8, so decode it whole.
                    let rest = &self.bytes[at..];
                    let len = utf8_len(rest[0]).min(rest.len());
                    let c = std::str::from_utf8(&rest[..len])
                        .ok()
                        .and_then(|s| s.chars().next())
                        .ok_or(InputError::InvalidUtf8 { at })?;
                    self.pos = at + len;
                    c
                }
            };
            name.push(c);
        }
    }

    /// One escape after its backslash (at `at`).
    fn escape(&mut self, at: usize) -> Result<char, InputError> {
        Ok(match self.next_byte()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4(at)?;
                match unit {
                    0xd800..=0xdbff => {
                        let low_at = self.pos;
                        if self.next_byte()? != b'\\' || self.next_byte()? != b'u' {
                            return Err(self.not_json(low_at, "expected a low surrogate escape"));
                        }
                        let low = self.hex4(low_at)?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(self.not_json(low_at, "expected a low surrogate escape"));
                        }
                        let code = 0x10000
                            + ((u32::from(unit) - 0xd800) << 10)
                            + (u32::from(low) - 0xdc00);
                        char::from_u32(code)
                            .ok_or_else(|| self.not_json(at, "invalid \\u escape"))?
                    }
                    0xdc00..=0xdfff => return Err(self.not_json(at, "lone low surrogate")),
                    _ => char::from_u32(u32::from(unit))
                        .ok_or_else(|| self.not_json(at, "invalid \\u escape"))?,
                }
            }
            _ => return Err(self.not_json(at, "invalid escape in a string")),
        })
    }

    /// Four hex digits of a `\u` escape that starts at `at`.
    fn hex4(&mut self, at: usize) -> Result<u16, InputError> {
        let mut unit = 0u16;
        for _ in 0..4 {
            let digit = match self.next_byte()? {
                b @ b'0'..=b'9' => b - b'0',
                b @ b'a'..=b'f' => b - b'a' + 10,
                b @ b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(self.not_json(at, "expected 4 hex digits after \\u")),
            };
            unit = unit << 4 | u16::from(digit);
        }
        Ok(unit)
    }
}

/// The length of the UTF-8 sequence that starts with `first`.
fn utf8_len(first: u8) -> usize {
    match first {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// The text reply `{"error":"..."}` to a refused message, rendered into an inline buffer
/// (no allocation); always valid JSON, whatever key name the error echoes.
#[derive(Clone, Copy)]
pub struct ErrorReply {
    buf: [u8; ErrorReply::CAPACITY],
    len: usize,
}

impl ErrorReply {
    /// The longest reply, in bytes; a longer message is cut (on a character boundary).
    pub const CAPACITY: usize = 384;
    const PREFIX: &'static [u8] = b"{\"error\":\"";
    const SUFFIX: &'static [u8] = b"\"}";

    /// The reply to `error`.
    pub fn new(error: &InputError) -> ErrorReply {
        ErrorReply::message(error)
    }

    /// A reply with any message (for errors that are not about the message itself).
    pub fn message(message: &dyn fmt::Display) -> ErrorReply {
        let mut reply = ErrorReply {
            buf: [0; ErrorReply::CAPACITY],
            len: 0,
        };
        reply.buf[..Self::PREFIX.len()].copy_from_slice(Self::PREFIX);
        reply.len = Self::PREFIX.len();
        // The writer never fails; it stops at the end of the buffer.
        let mut escaper = JsonEscaper {
            reply: &mut reply,
            full: false,
        };
        let _ = fmt::write(&mut escaper, format_args!("{message}"));
        let end = reply.len + Self::SUFFIX.len();
        reply.buf[reply.len..end].copy_from_slice(Self::SUFFIX);
        reply.len = end;
        reply
    }

    /// The reply's JSON text.
    pub fn as_str(&self) -> &str {
        // Only whole characters and ASCII escapes are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or(r#"{"error":"invalid input"}"#)
    }

    /// The reply's JSON text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Debug for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ErrorReply").field(&self.as_str()).finish()
    }
}

/// Writes text into an [`ErrorReply`] as the inside of a JSON string, keeping room for the
/// closing `"}`; what does not fit is dropped whole.
struct JsonEscaper<'a> {
    reply: &'a mut ErrorReply,
    /// Set once something did not fit: nothing after it is written either.
    full: bool,
}

impl fmt::Write for JsonEscaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.full {
            return Ok(());
        }
        let reply = &mut *self.reply;
        let limit = ErrorReply::CAPACITY - ErrorReply::SUFFIX.len();
        for c in s.chars() {
            let mut tmp = [0u8; 6];
            let bytes: &[u8] = match c {
                '"' => b"\\\"",
                '\\' => b"\\\\",
                '\n' => b"\\n",
                '\r' => b"\\r",
                '\t' => b"\\t",
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let v = u32::from(c) as usize;
                    tmp = [b'\\', b'u', b'0', b'0', HEX[v >> 4], HEX[v & 0xf]];
                    &tmp
                }
                c => c.encode_utf8(&mut tmp).as_bytes(),
            };
            let end = reply.len + bytes.len();
            if end > limit {
                // Drop the rest: the reply stays valid JSON, only shorter.
                self.full = true;
                return Ok(());
            }
            reply.buf[reply.len..end].copy_from_slice(bytes);
            reply.len = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::fuzzing::SimKeyboard;
    use crate::input::{HandleError, Keymap, PlayerInput};

    fn text(msg: &str, current: PlayerKeys) -> Result<PlayerKeys, InputError> {
        parse(Frame::Text(msg.as_bytes()), current)
    }

    fn keys(keys: &[Key]) -> PlayerKeys {
        PlayerKeys::of(keys)
    }

    #[test]
    fn only_the_named_keys_change() {
        use Key::*;
        assert_eq!(text(r#"{"up":true}"#, PlayerKeys::NONE), Ok(keys(&[Up])));
        assert_eq!(text(r#"{"up":true}"#, keys(&[A])), Ok(keys(&[Up, A])));
        assert_eq!(text(r#"{"a":false}"#, keys(&[A])), Ok(PlayerKeys::NONE));
        assert_eq!(text(r#"{"a":false}"#, keys(&[B])), Ok(keys(&[B])));
        assert_eq!(
            text(r#"{"select":true,"left":true,"b":false}"#, keys(&[B, Up])),
            Ok(keys(&[Select, Left, Up]))
        );
    }

    #[test]
    fn all_eight_keys_give_the_full_state() {
        let msg = r#"{"up":true,"down":false,"left":true,"right":false,"a":true,"b":false,"start":true,"select":false}"#;
        for current in [PlayerKeys::NONE, PlayerKeys(0xff), PlayerKeys(0xaa)] {
            assert_eq!(text(msg, current), Ok(PlayerKeys(0b0101_0101)));
        }
        let all = r#"{"select":true,"start":true,"b":true,"a":true,"right":true,"left":true,"down":true,"up":true}"#;
        assert_eq!(text(all, PlayerKeys::NONE), Ok(PlayerKeys(0xff)));
    }

    #[test]
    fn whitespace_where_json_allows_it() {
        let msg = " \t\r\n{ \"up\" :\ttrue ,\n\"b\":\r\nfalse\n} \n";
        assert_eq!(
            text(msg, PlayerKeys::of(&[Key::B])),
            Ok(PlayerKeys::of(&[Key::Up]))
        );
    }

    #[test]
    fn an_empty_object_changes_nothing() {
        for msg in ["{}", " { } ", "{\n}"] {
            assert_eq!(text(msg, PlayerKeys(0x81)), Ok(PlayerKeys(0x81)), "{msg}");
        }
    }

    #[test]
    fn escaped_key_names_are_decoded() {
        assert_eq!(
            text(r#"{"\u0075p":true}"#, PlayerKeys::NONE),
            Ok(keys(&[Key::Up]))
        );
        assert_eq!(
            text(r#"{"st\u0061rt":true}"#, PlayerKeys::NONE),
            Ok(keys(&[Key::Start]))
        );
        assert_eq!(
            text(r#"{"SEL\u0045CT":true}"#, PlayerKeys::NONE).map_err(|e| e.metric_label()),
            Err("unknown_key")
        );
        assert_eq!(
            text(r#"{"up":true,"\u0075p":false}"#, PlayerKeys::NONE),
            Err(InputError::DuplicateKey(Key::Up))
        );
        // Escapes decode to what they stand for, and the reply names that.
        let err = text(
            r#"{"a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00":true}"#,
            PlayerKeys::NONE,
        )
        .unwrap_err();
        assert_eq!(
            err,
            InputError::UnknownKey(KeyName::new("a\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{1f600}"))
        );
    }

    #[test]
    fn binary_is_the_full_state() {
        for state in [0u8, 1, 0x5a, 0xff] {
            for current in [PlayerKeys::NONE, PlayerKeys(0xff)] {
                assert_eq!(
                    parse(Frame::Binary(&[state]), current),
                    Ok(PlayerKeys(state))
                );
            }
        }
    }

    #[test]
    fn the_size_limit_is_inclusive() {
        let mut msg = String::from(r#"{"up":true}"#);
        msg.push_str(&" ".repeat(MAX_MESSAGE_BYTES - msg.len()));
        assert_eq!(text(&msg, PlayerKeys::NONE), Ok(keys(&[Key::Up])));
        msg.push(' ');
        assert_eq!(
            text(&msg, PlayerKeys::NONE),
            Err(InputError::Oversize {
                len: MAX_MESSAGE_BYTES + 1
            })
        );
        assert_eq!(
            parse(Frame::Binary(&[0; 5000]), PlayerKeys::NONE),
            Err(InputError::Oversize { len: 5000 })
        );
    }

    /// Every kind of error, each with the exact error it must give.
    fn error_cases() -> Vec<(Frame<'static>, InputError)> {
        use InputError::*;
        let nj = |at, problem| NotJson { at, problem };
        let long = Box::leak(format!(r#"{{"{}":true}}"#, "x".repeat(100)).into_boxed_str());
        let oversize = Box::leak(
            format!(r#"{{"up":true}}{}"#, " ".repeat(MAX_MESSAGE_BYTES)).into_boxed_str(),
        );
        let t = |s: &'static str| Frame::Text(s.as_bytes());
        vec![
            (
                t(oversize),
                Oversize {
                    len: MAX_MESSAGE_BYTES + 11,
                },
            ),
            (Frame::Binary(&[0; 1025]), Oversize { len: 1025 }),
            (Frame::Text(b"{\"up\":\xff}"), InvalidUtf8 { at: 6 }),
            (Frame::Text(b"{\"u\xc0p\":true}"), InvalidUtf8 { at: 3 }),
            (Frame::Text(b"\xe2\x82"), InvalidUtf8 { at: 0 }),
            (t(""), Empty),
            (t(" \r\n\t"), Empty),
            (t("up=true"), nj(0, "expected a JSON object")),
            (t("{up:true}"), nj(1, "expected a key in double quotes")),
            (t(r#"{,}"#), nj(1, "expected a key in double quotes")),
            (
                t(r#"{"up":true,}"#),
                nj(11, "expected a key in double quotes"),
            ),
            (t(r#"{"up" true}"#), nj(6, "expected ':' after a key")),
            (
                t(r#"{"up":true "a":true}"#),
                nj(11, "expected ',' or '}' after a value"),
            ),
            (
                t(r#"{"up":truex}"#),
                nj(10, "expected ',' or '}' after a value"),
            ),
            (t(r#"{"up":tRue}"#), nj(6, "expected true or false")),
            (t(r#"{"up":fals}"#), nj(6, "expected true or false")),
            (t(r#"{"up":+1}"#), nj(6, "expected a value")),
            (t(r#"{"u\qp":true}"#), nj(3, "invalid escape in a string")),
            (
                t(r#"{"\u00zz":true}"#),
                nj(2, "expected 4 hex digits after \\u"),
            ),
            (
                t(r#"{"\ud800":true}"#),
                nj(8, "expected a low surrogate escape"),
            ),
            (
                t(r#"{"\ud800\u0041":true}"#),
                nj(8, "expected a low surrogate escape"),
            ),
            (t(r#"{"\udc00":true}"#), nj(2, "lone low surrogate")),
            (t("{\"u\np\":true}"), nj(3, "control character in a string")),
            (t("{"), Truncated),
            (t(r#"{"up"#), Truncated),
            (t(r#"{"up""#), Truncated),
            (t(r#"{"up":"#), Truncated),
            (t(r#"{"up": tr"#), Truncated),
            (t(r#"{"up":true"#), Truncated),
            (t(r#"{"up":true,"#), Truncated),
            (t(r#"{"\u00"#), Truncated),
            (t(r#"{"\"#), Truncated),
            (t("[]"), NotAnObject),
            (t(r#"[{"up":true}]"#), NotAnObject),
            (t(r#""up""#), NotAnObject),
            (t("true"), NotAnObject),
            (t("12"), NotAnObject),
            (t("-1"), NotAnObject),
            (t("null"), NotAnObject),
            (t(r#"{"jump":true}"#), UnknownKey(KeyName::new("jump"))),
            (t(r#"{"Up":true}"#), UnknownKey(KeyName::new("Up"))),
            (t(r#"{"":true}"#), UnknownKey(KeyName::new(""))),
            (t(r#"{"up":true,"x":1}"#), UnknownKey(KeyName::new("x"))),
            (t(long), UnknownKey(KeyName::new(&"x".repeat(100)))),
            (t(r#"{"up":true,"up":true}"#), DuplicateKey(Key::Up)),
            (t(r#"{"b":false,"a":true,"b":false}"#), DuplicateKey(Key::B)),
            (t(r#"{"up":1}"#), NotBoolean(Key::Up)),
            (t(r#"{"down":"true"}"#), NotBoolean(Key::Down)),
            (t(r#"{"left":null}"#), NotBoolean(Key::Left)),
            (t(r#"{"a":-0}"#), NotBoolean(Key::A)),
            (t(r#"{"start":{}}"#), Nested(Key::Start)),
            (t(r#"{"select":[true]}"#), Nested(Key::Select)),
            (t(r#"{"up":{"up":true}}"#), Nested(Key::Up)),
            (t(r#"{"up":true}x"#), TrailingData { at: 11 }),
            (t(r#"{"up":true}}"#), TrailingData { at: 11 }),
            (t("{} {}"), TrailingData { at: 3 }),
            (Frame::Binary(&[]), BinaryLength { len: 0 }),
            (Frame::Binary(&[1, 2]), BinaryLength { len: 2 }),
            (Frame::Binary(&[0; 1024]), BinaryLength { len: 1024 }),
        ]
    }

    #[test]
    fn every_kind_of_error_is_reported_as_itself_and_changes_no_key() {
        let held = PlayerKeys::of(&[Key::Up, Key::Start]);
        let mut input = PlayerInput::new(SimKeyboard::new(Keymap::PLAYER_1));
        input.handle(Frame::Binary(&[held.0])).unwrap();
        let down = input.sink().keysyms_of(held);
        for (frame, want) in error_cases() {
            assert_eq!(parse(frame, held), Err(want), "{frame:?}");
            match input.handle(frame) {
                Err(HandleError::Input(e)) => assert_eq!(e, want),
                other => panic!("{frame:?}: {other:?}"),
            }
            assert_eq!(input.held(), held, "{frame:?}");
            let mut now = input.sink().down.clone();
            now.sort_unstable();
            assert_eq!(now, down, "{frame:?}");
        }
    }

    #[test]
    fn every_error_has_its_own_label_and_a_clear_reply() {
        let mut labels: Vec<&str> = error_cases()
            .iter()
            .map(|(_, e)| e.metric_label())
            .collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), 12);
        for (frame, error) in error_cases() {
            let reply = ErrorReply::new(&error);
            let json: serde_json::Value = serde_json::from_str(reply.as_str()).unwrap();
            assert_eq!(
                json["error"].as_str(),
                Some(error.to_string().as_str()),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn replies_name_what_was_wrong() {
        let reply = |msg: &str| ErrorReply::new(&text(msg, PlayerKeys::NONE).unwrap_err());
        assert_eq!(
            reply(r#"{"jump":true}"#).as_str(),
            r#"{"error":"unknown key \"jump\"; the keys are up, down, left, right, a, b, start, select"}"#
        );
        assert_eq!(
            reply(r#"{"up":2}"#).as_str(),
            r#"{"error":"the value of \"up\" is not a boolean; expected true or false"}"#
        );
        assert_eq!(
            ErrorReply::new(&InputError::BinaryLength { len: 2 }).as_str(),
            r#"{"error":"binary message of 2 bytes; expected exactly 1 byte, the key bitmask"}"#
        );
        assert!(
            reply(r#"{"up":true,"up":false}"#)
                .as_str()
                .contains(r#"duplicate key \"up\""#)
        );
        assert!(
            reply(r#"{"up":[]}"#)
                .as_str()
                .contains("object or an array")
        );
        assert!(reply(r#"{"up":true"#).as_str().contains("truncated"));
        assert!(reply("[1]").as_str().contains("not a JSON object"));
    }

    #[test]
    fn echoed_key_names_are_cut_and_escaped() {
        // A long name is cut on a character boundary and marked.
        let long = format!(r#"{{"{}":true}}"#, "é".repeat(40));
        let err = text(&long, PlayerKeys::NONE).unwrap_err();
        let InputError::UnknownKey(name) = err else {
            panic!("{err:?}")
        };
        assert!(name.is_truncated());
        assert_eq!(name.as_str(), "é".repeat(KeyName::CAPACITY / 2));
        assert!(
            err.to_string()
                .contains(&format!("\"{}...\"", "é".repeat(12)))
        );

        // Quotes, backslashes and control characters come back as valid JSON, whole.
        let nasty = format!(r#"{{"{}":true}}"#, r#"\"\\\u0001"#.repeat(8));
        let err = text(&nasty, PlayerKeys::NONE).unwrap_err();
        let reply = ErrorReply::new(&err);
        let json: serde_json::Value = serde_json::from_str(reply.as_str()).unwrap();
        assert_eq!(json["error"].as_str(), Some(err.to_string().as_str()));
        assert!(reply.as_str().len() <= ErrorReply::CAPACITY);

        // The worst name of all still fits whole.
        let worst = InputError::UnknownKey(KeyName::new(&"\u{1}".repeat(KeyName::CAPACITY)));
        let reply = ErrorReply::new(&worst);
        let json: serde_json::Value = serde_json::from_str(reply.as_str()).unwrap();
        assert_eq!(json["error"].as_str(), Some(worst.to_string().as_str()));
    }

    #[test]
    fn a_reply_too_long_is_cut_but_stays_json() {
        let long = "\"\\".repeat(400);
        let reply = ErrorReply::message(&long);
        assert!(reply.as_str().len() <= ErrorReply::CAPACITY);
        let json: serde_json::Value = serde_json::from_str(reply.as_str()).unwrap();
        let message = json["error"].as_str().unwrap();
        assert!(message.len() > 100 && long.starts_with(message));
    }
}
