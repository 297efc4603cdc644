//! `--input-port-N`: a player's input on a port of its own, as the original platform had it.
//! A plain thread accepts; each connection's WebSocket handshake (same path, same token check)
//! runs on a short-lived thread of its own, which hands the socket to the same player slot as
//! the main port does.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tungstenite::HandshakeError;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tungstenite::http::{HeaderValue, StatusCode, header};
use tungstenite::protocol::{Role, WebSocket};

use super::Players;
use super::stream::{Incoming, PlayerStream, ws_config};
use super::upgrade::{parse_player, refusal, wants_takeover};
use crate::token::token_matches;

/// How long a client gets for the TLS and WebSocket handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at most, each on a thread of its own (so that a client that sends
/// nothing holds up nobody but itself); a connection beyond them is closed at once.
const MAX_HANDSHAKES: usize = 32;

/// A port listener thread; stopped and joined on drop.
#[derive(Debug)]
pub struct PortListener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PortListener {
    /// Starts serving `player`'s input on `listener`.
    pub fn spawn(
        listener: TcpListener,
        player: u8,
        token: String,
        players: Arc<Players>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(false)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("input-port-{player}"))
                .spawn(move || {
                    accept_loop(&listener, player, &token, &players, tls.as_ref(), &stop);
                })?
        };
        tracing::info!(player, %addr, "player input on its own port");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PortListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    player: u8,
    token: &str,
    players: &Arc<Players>,
    tls: Option<&Arc<rustls::ServerConfig>>,
    stop: &AtomicBool,
) {
    let under_way = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                tracing::warn!(player, %err, "cannot accept an input connection");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if under_way.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES {
            under_way.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(
                player,
                "too many input handshakes under way: connection closed"
            );
            continue;
        }
        let (token, players, tls, done) = (
            token.to_owned(),
            players.clone(),
            tls.cloned(),
            under_way.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("input-hs-{player}"))
            .spawn(move || {
                match handshake(tcp, player, &token, tls.as_ref()) {
                    Ok(incoming) => players.hand_off(player, incoming),
                    Err(err) => tracing::debug!(player, %err, "input handshake failed"),
                }
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(err) = spawned {
            under_way.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(player, %err, "cannot start an input handshake thread");
        }
    }
}

/// Answers the WebSocket handshake on `tcp` if the path is `/play/TOKEN/input/PLAYER`, else a
/// 404 like the main port's for any unknown path; a request that is no WebSocket handshake gets
/// the main port's 400 (or 405, 426) with the reason.
fn handshake(
    tcp: TcpStream,
    player: u8,
    token: &str,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> anyhow::Result<Incoming> {
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let mut stream = match tls {
        None => PlayerStream::Plain(tcp),
        Some(config) => PlayerStream::Tls(Box::new(rustls::StreamOwned::new(
            rustls::ServerConnection::new(config.clone())?,
            tcp,
        ))),
    };
    let mut takeover = false;
    let callback = PathCheck {
        token,
        player,
        takeover: &mut takeover,
    };
    // The handshake borrows the stream so that a request that is no handshake at all (a plain
    // GET, say) can still be answered on it: tungstenite closes those without a word.
    match tungstenite::accept_hdr_with_config(&mut stream, callback, Some(ws_config())) {
        // Done: nothing was read beyond the request (tungstenite refuses bytes after it).
        Ok(_) => {}
        Err(HandshakeError::Failure(err)) => {
            if let Some((status, why)) = refusal_of(&err) {
                let _ = write_refusal(&mut stream, status, why);
            }
            anyhow::bail!("{err}");
        }
        Err(err) => anyhow::bail!("{err}"),
    }
    let ws = WebSocket::from_raw_socket(stream, Role::Server, Some(ws_config()));
    Ok(Incoming::from_ws(ws, takeover)?)
}

/// The answer to a request that is not a WebSocket handshake, as the main port gives it.
fn refusal_of(err: &tungstenite::Error) -> Option<(StatusCode, &'static str)> {
    use tungstenite::error::ProtocolError as P;
    let tungstenite::Error::Protocol(err) = err else {
        return None;
    };
    Some(match err {
        P::WrongHttpMethod => (StatusCode::METHOD_NOT_ALLOWED, "only GET opens a WebSocket"),
        P::WrongHttpVersion => (StatusCode::UPGRADE_REQUIRED, refusal::NOT_HTTP_1_1),
        P::MissingConnectionUpgradeHeader => {
            (StatusCode::BAD_REQUEST, refusal::NO_CONNECTION_UPGRADE)
        }
        P::MissingUpgradeWebSocketHeader => {
            (StatusCode::BAD_REQUEST, refusal::NO_UPGRADE_WEBSOCKET)
        }
        P::MissingSecWebSocketVersionHeader => (StatusCode::BAD_REQUEST, refusal::VERSION),
        P::MissingSecWebSocketKey => (StatusCode::BAD_REQUEST, refusal::NO_KEY),
        P::HttparseError(_) | P::JunkAfterRequest => {
            (StatusCode::BAD_REQUEST, "malformed HTTP request")
        }
        _ => return None,
    })
}

/// Writes a plain-text HTTP answer and flushes it; the connection closes after it.
fn write_refusal(stream: &mut PlayerStream, status: StatusCode, why: &str) -> std::io::Result<()> {
    let allow = if status == StatusCode::METHOD_NOT_ALLOWED {
        "Allow: GET\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n{allow}\r\n{why}\n",
        why.len() + 1,
    )?;
    stream.flush()
}

/// The handshake's check of the request: the path, and whether it asks to take over.
struct PathCheck<'a> {
    token: &'a str,
    player: u8,
    takeover: &'a mut bool,
}

impl Callback for PathCheck<'_> {
    fn on_request(self, req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
        if !path_matches(req.uri().path(), self.token, self.player) {
            const BODY: &str = "not found\n";
            let mut not_found = ErrorResponse::new(Some(BODY.to_owned()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            let headers = not_found.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(BODY.len()));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(not_found);
        }
        *self.takeover = wants_takeover(req.uri().query());
        Ok(resp)
    }
}

/// Whether `path` is `/play/TOKEN/input/PLAYER` with the session's token (compared in
/// constant time) and this port's player.
pub fn path_matches(path: &str, token: &str, player: u8) -> bool {
    let Some(rest) = path.strip_prefix("/play/") else {
        return false;
    };
    let Some((presented, rest)) = rest.split_once('/') else {
        return false;
    };
    let token_ok = token_matches(token, presented);
    let player_ok = rest
        .strip_prefix("input/")
        .and_then(parse_player)
        .is_some_and(|p| p == player);
    token_ok && player_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = "0123456789abcdef0123456789abcdef";
        assert!(path_matches(&format!("/play/{t}/input/1"), t, 1));
        assert!(path_matches(&format!("/play/{t}/input/2"), t, 2));
        assert!(!path_matches(&format!("/play/{t}/input/2"), t, 1));
        assert!(!path_matches(&format!("/play/{t}/input/1/"), t, 1));
        assert!(!path_matches(&format!("/play/{t}x/input/1"), t, 1));
        assert!(!path_matches(&format!("/play/{t}/video"), t, 1));
        assert!(!path_matches("/play/", t, 1));
        assert!(!path_matches("/", t, 1));
    }
}
