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

/// The response for an embedded file, or `None` if there is no such file.
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
            ],
            *body,
        )
            .into_response(),
    )
}
