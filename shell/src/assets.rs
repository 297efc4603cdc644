//! The web player: static files compiled into the binary, so there is nothing to deploy.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "player.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/player.js"),
    ),
    (
        "audio.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/audio.js"),
    ),
    (
        "audio-worklet.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/audio-worklet.js"),
    ),
    (
        "input.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/input.js"),
    ),
    (
        "player.css",
        "text/css; charset=utf-8",
        include_str!("../assets/player.css"),
    ),
];

/// What the page may load and do: only its own files and its own sockets, no inline code, and
/// no framing by another site.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The response for an embedded file, or `None` if there is no such file. The page's address
/// holds the session's token: no `Referer` carries it elsewhere.
pub fn response(name: &str) -> Option<Response> {
    let (_, mime, body) = FILES.iter().find(|(n, _, _)| *n == name)?;
    Some(
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CONTENT_SECURITY_POLICY),
                ),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
            ],
            *body,
        )
            .into_response(),
    )
}
