//! `WS /play/TOKEN/input/N`: the WebSocket handshake answered here, then the connection taken
//! back from hyper as a plain (or TLS) TCP stream and handed to the player's thread.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::stream::{Incoming, PlayerStream};
use crate::server::{AppState, not_found};

/// The player number in a path segment: `1` or `2`.
pub fn parse_player(segment: &str) -> Option<u8> {
    match segment {
        "1" => Some(1),
        "2" => Some(2),
        _ => None,
    }
}

/// Whether the query string asks to take the slot over (`takeover=1`).
pub fn wants_takeover(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "takeover=1" | "takeover=true"))
    })
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Why a request is not a WebSocket opening handshake, in the words both the main port and a
/// player's own port answer with (400, with `Sec-WebSocket-Version: 13`).
pub mod refusal {
    pub const NO_CONNECTION_UPGRADE: &str =
        "expected a WebSocket upgrade: the Connection header does not include 'upgrade'";
    pub const NO_UPGRADE_WEBSOCKET: &str =
        "expected a WebSocket upgrade: the Upgrade header is not 'websocket'";
    pub const VERSION: &str = "unsupported WebSocket version: Sec-WebSocket-Version must be 13";
    pub const NO_KEY: &str = "the Sec-WebSocket-Key header is missing";
    /// Answered with 426: the request cannot switch protocols at all.
    pub const NOT_HTTP_1_1: &str =
        "this connection cannot be upgraded to a WebSocket (HTTP/1.1 is needed)";
}

/// Checks a WebSocket opening handshake (RFC 6455 4.2.1) and returns the
/// `Sec-WebSocket-Accept` value, or the reason it is not one.
pub fn check_handshake(headers: &HeaderMap) -> Result<String, &'static str> {
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(refusal::NO_CONNECTION_UPGRADE);
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(refusal::NO_UPGRADE_WEBSOCKET);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(refusal::VERSION);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(refusal::NO_KEY)?;
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// `WS /play/{token}/input/{player}`.
pub async fn input_socket(
    State(app): State<Arc<AppState>>,
    Path((token, player)): Path<(String, String)>,
    mut req: Request,
) -> Response {
    if !app.token_ok(&token) {
        return not_found();
    }
    let Some(player) = parse_player(&player) else {
        return not_found();
    };
    let players = app.input.clone();
    if !players.serving() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this session takes no players' input\n",
        )
            .into_response();
    }
    let accept = match check_handshake(req.headers()) {
        Ok(accept) => accept,
        Err(why) => {
            return (
                StatusCode::BAD_REQUEST,
                [(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                )],
                format!("{why}\n"),
            )
                .into_response();
        }
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            format!("{}\n", refusal::NOT_HTTP_1_1),
        )
            .into_response();
    };
    let takeover = wants_takeover(req.uri().query());
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(player, %err, "input socket upgrade failed");
                return;
            }
        };
        let incoming = match into_blocking(upgraded, takeover) {
            Ok(incoming) => incoming,
            Err(err) => {
                tracing::warn!(player, %err, "cannot hand an input socket to its player thread");
                return;
            }
        };
        // Refusals write a close frame and wait for the answer: blocking, off the runtime.
        let _ = tokio::task::spawn_blocking(move || players.hand_off(player, incoming)).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

type TlsIo = TokioIo<tokio_rustls::server::TlsStream<TcpStream>>;

/// Takes the TCP stream (and the TLS session over it) back from hyper as blocking std types.
fn into_blocking(upgraded: hyper::upgrade::Upgraded, takeover: bool) -> std::io::Result<Incoming> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let tcp = parts.io.into_inner().into_std()?;
            return Incoming::new(PlayerStream::Plain(tcp), parts.read_buf.to_vec(), takeover);
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TlsIo>() {
        Ok(parts) => {
            let (tcp, session) = parts.io.into_inner().into_inner();
            let tcp = tcp.into_std()?;
            let stream = rustls::StreamOwned::new(session, tcp);
            Incoming::new(
                PlayerStream::Tls(Box::new(stream)),
                parts.read_buf.to_vec(),
                takeover,
            )
        }
        Err(_) => Err(std::io::Error::other(
            "the upgraded connection is neither TCP nor TLS over TCP",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn players_and_takeover() {
        assert_eq!(parse_player("1"), Some(1));
        assert_eq!(parse_player("2"), Some(2));
        for bad in ["0", "3", "01", "", "1 ", "x"] {
            assert_eq!(parse_player(bad), None);
        }
        assert!(wants_takeover(Some("takeover=1")));
        assert!(wants_takeover(Some("a=b&takeover=1")));
        assert!(!wants_takeover(Some("takeover=0")));
        assert!(!wants_takeover(Some("xtakeover=1")));
        assert!(!wants_takeover(None));
    }

    #[test]
    fn handshake_headers() {
        let mut h = HeaderMap::new();
        assert!(check_handshake(&h).is_err());
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        assert!(
            check_handshake(&h)
                .unwrap_err()
                .contains("Sec-WebSocket-Key")
        );
        // RFC 6455 section 1.3's example.
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(check_handshake(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(check_handshake(&h).unwrap_err().contains("version"));
    }
}
