//! The control plane's HTTP API. Everything under `/api` needs `Authorization: Bearer <token>`,
//! compared in constant time (with the token replaced last, for a while after a reload of
//! `--api-token-file`: see [`super::api_token`]); errors are `{"error":"..."}` with a 4xx/5xx status.
//!
//! - `GET /api/games` the catalog
//! - `POST /api/sessions` `{"game":"pong"}` -> 201 `{"id","url","token","expiresAt",...}`
//! - `GET /api/sessions`, `GET /api/sessions/{id}`, `DELETE /api/sessions/{id}` (204)
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (no token)

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::api_token::ApiToken;
use super::error::{Error, Result};
use super::manifests::is_session_id;
use super::plane::ControlPlane;

/// Largest request body the API reads.
pub const MAX_BODY: usize = 4096;

#[derive(Debug, Clone)]
struct Ctx {
    plane: Arc<ControlPlane>,
    api_token: Arc<ApiToken>,
}

/// A JSON error response that is also counted in the errors metric.
struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// The API's router, with a token that never changes.
pub fn router(plane: Arc<ControlPlane>, api_token: &str) -> Router {
    router_with_token(plane, Arc::new(ApiToken::new(api_token)))
}

/// The API's router, with a token that may be replaced while it serves.
pub fn router_with_token(plane: Arc<ControlPlane>, api_token: Arc<ApiToken>) -> Router {
    let ctx = Ctx { plane, api_token };
    Router::new()
        .route("/api/games", get(games))
        .route("/api/sessions", get(list_sessions).post(create_session))
        .route(
            "/api/sessions/{id}",
            get(get_session).delete(delete_session),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(Error::NotFound("no such path".to_owned())) })
        .method_not_allowed_fallback(|| async { ApiError(Error::MethodNotAllowed) })
        .layer(middleware::from_fn_with_state(ctx.clone(), auth_and_count))
        .with_state(ctx)
}

/// Requires the bearer token under /api, and counts every error response by kind.
async fn auth_and_count(State(ctx): State<Ctx>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        if !ctx.api_token.matches(presented) {
            let err = Error::Unauthorized;
            ctx.plane.metrics().error(&err);
            return err.into_response();
        }
    }
    let response = next.run(request).await;
    if let Some(kind) = response.extensions().get::<ErrorKind>() {
        ctx.plane
            .metrics()
            .errors
            .get_or_create(&super::metrics::KindLabel { kind: kind.0 })
            .inc();
    }
    response
}

/// The token of an `Authorization: Bearer TOKEN` value. The scheme is case-insensitive and may
/// be followed by several spaces (RFC 9110, 11.4).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Marks a response as an error of this kind, for the metrics layer.
#[derive(Debug, Clone, Copy)]
struct ErrorKind(&'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.0.metric_label();
        if self.0.status().is_server_error() {
            tracing::warn!(err = %self.0, "API request failed");
        }
        let mut response = self.0.into_response();
        response.extensions_mut().insert(ErrorKind(kind));
        response
    }
}

async fn games(State(ctx): State<Ctx>) -> Response {
    let games: Vec<_> = ctx
        .plane
        .catalog()
        .games
        .iter()
        .map(|g| json!({ "name": g.name, "title": g.title, "gpu": g.gpu }))
        .collect();
    axum::Json(json!({ "games": games })).into_response()
}

async fn list_sessions(State(ctx): State<Ctx>) -> Response {
    axum::Json(json!({ "sessions": ctx.plane.list() })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    game: String,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn create_session(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(Error::UnsupportedMediaType.into());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(Error::PayloadTooLarge(MAX_BODY).into());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| Error::PayloadTooLarge(MAX_BODY))?;
    let request: CreateRequest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::BadRequest(format!(
            "bad JSON body: {e}; expected {{\"game\":\"NAME\"}}"
        ))
    })?;
    // In a task of its own: a client that hangs up must not stop it half-way (a pod without its
    // Service and Ingress); it ends with the session made, or with nothing left behind.
    let plane = ctx.plane.clone();
    let view = tokio::spawn(async move { plane.create(&request.game).await })
        .await
        .map_err(|e| Error::Io(format!("session creation stopped: {e}")))??;
    let location = format!("/api/sessions/{}", view.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view),
    )
        .into_response())
}

/// The session id of the path, or why there is no such session (a segment that does not even
/// decode, such as `%FF`, is one more malformed id).
fn checked_id(id: Result<Path<String>, PathRejection>) -> Result<String> {
    match id {
        Ok(Path(id)) if is_session_id(&id) => Ok(id),
        Ok(Path(id)) => Err(Error::NotFound(format!(
            "no session with id {:?} (ids are 16 hex digits)",
            id.chars().take(64).collect::<String>()
        ))),
        Err(rejection) => Err(Error::NotFound(format!(
            "no session with that id ({}; ids are 16 hex digits)",
            rejection.body_text()
        ))),
    }
}

async fn get_session(
    State(ctx): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let view = ctx.plane.get(&checked_id(id)?)?;
    Ok(axum::Json(view).into_response())
}

async fn delete_session(
    State(ctx): State<Ctx>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = checked_id(id)?;
    // In a task of its own, like a creation: a client that hangs up leaves no half-deleted session.
    let plane = ctx.plane.clone();
    tokio::spawn(async move { plane.delete(&id).await })
        .await
        .map_err(|e| Error::Io(format!("session deletion stopped: {e}")))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.plane.metrics().encode(),
    )
        .into_response()
}
