//! A player's socket once it has left tokio: a blocking TCP stream, plain or TLS, and the
//! WebSocket over it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// The largest WebSocket message read at all. Messages above the input contract's 1 KiB up to
/// this size are read and answered with an error; larger ones close the connection (1009).
pub const MAX_READ_MESSAGE: usize = 64 * 1024;

/// A write that blocks this long (a client that does not read its replies) ends the
/// connection, so a player thread never hangs on one client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Close codes in the application range (RFC 6455 7.4.2) with their meaning on input sockets.
pub mod close_code {
    /// The player slot has a controller and the connection did not ask to take over.
    pub const SLOT_TAKEN: u16 = 4001;
    /// Another connection took this player slot over (`?takeover=1`).
    pub const TAKEN_OVER: u16 = 4002;
    /// The game's display cannot be reached, or went away.
    pub const DISPLAY: u16 = 4003;
    /// The game has ended (its display closed): every socket of the session (video, audio,
    /// input) closes with it, and the page stops reconnecting.
    pub const GAME_OVER: u16 = 4004;
    /// The reason [`GAME_OVER`] comes with; the page shows it.
    pub const GAME_OVER_REASON: &str = "the game has ended";
    /// The session is ending.
    pub const GOING_AWAY: u16 = 1001;
    /// A message larger than [`super::MAX_READ_MESSAGE`].
    pub const TOO_BIG: u16 = 1009;
    /// A text message that is not UTF-8 (RFC 6455 8.1: the connection fails).
    pub const NOT_UTF8: u16 = 1007;
    /// The pod failed on the connection (a bug); the slot serves the next one.
    pub const INTERNAL: u16 = 1011;
}

/// The blocking byte stream under a player's WebSocket.
#[derive(Debug)]
pub enum PlayerStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl PlayerStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            PlayerStream::Plain(s) => s,
            PlayerStream::Tls(s) => &s.sock,
        }
    }
}

/// Runs `op` again while it is interrupted. A read or write with a timeout (SO_RCVTIMEO,
/// SO_SNDTIMEO) is not restarted after a signal, nor after the process was stopped and continued
/// (SIGSTOP, SIGCONT); nothing was read or written then, and the connection is fine.
fn uninterrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

impl Read for PlayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        uninterrupted(|| match self {
            PlayerStream::Plain(s) => s.read(buf),
            PlayerStream::Tls(s) => s.read(buf),
        })
    }
}

impl Write for PlayerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        uninterrupted(|| match self {
            PlayerStream::Plain(s) => s.write(buf),
            PlayerStream::Tls(s) => s.write(buf),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            PlayerStream::Plain(s) => s.flush(),
            PlayerStream::Tls(s) => s.flush(),
        }
    }
}

/// The WebSocket settings of input sockets: small buffers, bounded messages.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_READ_MESSAGE))
        .max_frame_size(Some(MAX_READ_MESSAGE))
}

/// One accepted input WebSocket, on its way to a player slot.
#[derive(Debug)]
pub struct Incoming {
    pub ws: WebSocket<PlayerStream>,
    /// A handle on the same socket, to end a blocking read from another thread.
    pub shutdown: TcpStream,
    /// The URL asked to take the slot over from its controller (`?takeover=1`).
    pub takeover: bool,
}

impl Incoming {
    /// Makes a blocking server-side WebSocket of `stream`, whose handshake is done; `read_buf`
    /// holds bytes that came after the handshake request.
    pub fn new(stream: PlayerStream, read_buf: Vec<u8>, takeover: bool) -> io::Result<Self> {
        stream.tcp().set_nonblocking(false)?;
        let ws = WebSocket::from_partially_read(stream, read_buf, Role::Server, Some(ws_config()));
        Self::from_ws(ws, takeover)
    }

    /// Readies an accepted WebSocket for its player thread: blocking reads (the player thread
    /// sets their timeout, its ping interval), writes bounded by `WRITE_TIMEOUT`.
    pub fn from_ws(ws: WebSocket<PlayerStream>, takeover: bool) -> io::Result<Self> {
        let tcp = ws.get_ref().tcp();
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let shutdown = tcp.try_clone()?;
        Ok(Self {
            ws,
            shutdown,
            takeover,
        })
    }

    /// Closes the WebSocket with `code` and `reason` (blocking, bounded by the socket's
    /// timeouts), then the socket.
    pub fn close(mut self, code: u16, reason: &str) {
        close_ws(&mut self.ws, code, reason);
        let _ = self.shutdown.shutdown(Shutdown::Both);
    }
}

/// The most a close frame's reason may hold (RFC 6455: 125 bytes of payload, 2 of them the code).
pub const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut to what a close frame holds: a longer one makes the frame invalid, and the peer
/// would see no close frame at all (the log has the whole text). A cut one ends at a word, with
/// an ellipsis, so that what the page shows reads as cut rather than as garbled.
pub fn close_reason(reason: &str) -> String {
    const MORE: &str = "…";
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_CLOSE_REASON - MORE.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let head = &reason[..end];
    // At the last space, unless that throws most of it away (one long word).
    let head = match head.rfind(' ') {
        Some(space) if space >= end / 2 => &head[..space],
        _ => head,
    };
    format!("{}{MORE}", head.trim_end_matches([' ', ',', ':', ';', '(']))
}

/// Sends a close frame and waits (at most a second) for the peer's, so that the browser sees
/// the code and reason.
pub fn close_ws(ws: &mut WebSocket<PlayerStream>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: code.into(),
        reason: close_reason(reason).into(),
    };
    if ws.close(Some(frame)).is_err() {
        return;
    }
    let _ = ws
        .get_ref()
        .tcp()
        .set_read_timeout(Some(Duration::from_secs(1)));
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = ws.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("the game has ended"), "the game has ended");
        let long = "é".repeat(100); // 200 bytes, two per character, no space
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.len() >= MAX_CLOSE_REASON - 1);
        let kept = cut.strip_suffix('…').expect("an ellipsis");
        assert!(long.starts_with(kept), "{cut}");
        let exact = "x".repeat(MAX_CLOSE_REASON);
        assert_eq!(close_reason(&exact), exact);
        // Words are not cut in two.
        let words = "the X display :42 lacks the XTEST extension, which injects the players' \
                     keys (Xvfb has it unless started with -extension XTEST), said twice";
        let cut = close_reason(words);
        assert!(cut.len() <= MAX_CLOSE_REASON, "{cut}");
        assert_eq!(
            cut,
            "the X display :42 lacks the XTEST extension, which injects the players' keys \
             (Xvfb has it unless started with…"
        );
    }
}
