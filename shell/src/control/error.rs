//! Every way the control plane can fail, as one enum: it names the error in metrics
//! (`metric_label`) and answers it over HTTP as `{"error":"..."}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The control plane's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No or a wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// An unknown session id or path.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed (bad JSON, missing or unknown field, wrong method).
    #[error("{0}")]
    BadRequest(String),
    /// The game is not in the catalog.
    #[error("unknown game {game:?}; the catalog has: {known}")]
    UnknownGame { game: String, known: String },
    /// The path exists, the method does not.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The body is larger than the API accepts.
    #[error("request body too large (at most {0} bytes)")]
    PayloadTooLarge(usize),
    /// The body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// The session limit is reached.
    #[error("too many sessions: the limit is {0}; delete one or wait for one to end")]
    TooManySessions(u32),
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// The Kubernetes API did not answer in time.
    #[error("Kubernetes API: {action}: no answer within {after:?}")]
    KubeTimeout {
        action: String,
        after: std::time::Duration,
    },
    /// A session pod's /readyz could not be read.
    #[error("readiness probe of {target}: {reason}")]
    Probe { target: String, reason: String },
    /// The catalog or the session configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// Writing or reading a local file failed.
    #[error("{0}")]
    Io(String),
}

/// The control plane's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a kube error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// The HTTP status code the API server answered, for API errors.
    pub fn kube_code(&self) -> Option<u16> {
        match self {
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }

    /// The name of this error in the `playpod_control_errors_total{kind}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::UnknownGame { .. } => "unknown_game",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooManySessions(_) => "too_many_sessions",
            Self::Kube { .. } => match self.kube_code() {
                Some(409) => "kube_conflict",
                Some(422) => "kube_invalid",
                Some(404) => "kube_not_found",
                Some(_) => "kube_api",
                None => "kube_unreachable",
            },
            Self::KubeTimeout { .. } => "kube_timeout",
            Self::Probe { .. } => "probe",
            Self::Config(_) => "config",
            Self::Io(_) => "io",
        }
    }

    /// Whether retrying the same request may succeed: the API server's 5xx and 429, transport
    /// failures and no answer in time. Conflicts (409) and invalid objects (422) will not change
    /// by retrying. A transient failure of a write also leaves unknown whether it took effect.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube { .. } => match self.kube_code() {
                Some(code) => code == 429 || code >= 500,
                None => true,
            },
            Self::KubeTimeout { .. } => true,
            _ => false,
        }
    }

    /// The status code the control-plane API answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) | Self::UnknownGame { .. } => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManySessions(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Kube { .. } => match self.kube_code() {
                // Another field manager owns these objects: the caller may retry (a new id).
                Some(409) => StatusCode::CONFLICT,
                // The cluster refused the objects this game's catalog entry makes.
                Some(422) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::KubeTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Probe { .. } => StatusCode::BAD_GATEWAY,
            Self::Config(_) | Self::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = axum::Json(serde_json::json!({ "error": self.to_string() }));
        let mut response = (status, body).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::kube(
            "apply",
            kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            ),
        )
    }

    #[test]
    fn kube_errors_are_classified() {
        assert_eq!(api(409).status(), StatusCode::CONFLICT);
        assert_eq!(api(409).metric_label(), "kube_conflict");
        assert!(!api(409).is_transient());
        assert_eq!(api(422).status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!api(422).is_transient());
        assert_eq!(api(500).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(api(500).metric_label(), "kube_api");
        assert!(api(500).is_transient());
        assert!(api(429).is_transient());
        assert!(!Error::TooManySessions(1).is_transient());
        let timeout = Error::KubeTimeout {
            action: "apply pod p".to_owned(),
            after: std::time::Duration::from_secs(10),
        };
        assert!(timeout.is_transient());
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.metric_label(), "kube_timeout");
        assert_eq!(
            timeout.to_string(),
            "Kubernetes API: apply pod p: no answer within 10s"
        );
    }
}
