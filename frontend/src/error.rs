//! The API's error policy: every error answers `{"error": "..."}` with a fitting status.
//!
//! - Client mistakes get a 4xx and a message that says what to change: 400 (malformed
//!   JSON, query or path), 401 (missing, malformed or refused token; wrong credentials),
//!   404 (unknown job, another user's job, malformed job id, file not in the job's
//!   output), 413 (body over `max_body_bytes`, `config` over `max_config_bytes`, `args`
//!   over `max_args_bytes`), 422 (well-formed JSON with a missing or wrong-typed field, a
//!   refused URL, args that cannot be split into words).
//! - A backing service that does not answer gives 503 `"<service> is unavailable, try
//!   again"` and `Retry-After: 2`; anything unexpected gives 500 `"internal error"`. The
//!   cause of every 5xx is logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jobq_common::{ErrorKind, PortError};
use serde::Serialize;
use utoipa::ToSchema;

/// `Retry-After` of every 503 answer, in seconds.
pub const RETRY_AFTER_SECS: &str = "2";

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words meant for the caller.
    #[schema(example = "url is required")]
    pub error: String,
}

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request could not be read.
    #[error("{0}")]
    BadRequest(String),
    /// 401 with `WWW-Authenticate: Bearer`: no usable token.
    #[error("{0}")]
    Unauthorized(String),
    /// 401 without a challenge: a login with wrong credentials.
    #[error("wrong user name or password")]
    LoginFailed,
    /// 404: no such thing, or not the caller's.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413: the body or one of its fields is over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// 422: well-formed but refused input.
    #[error("{0}")]
    Unprocessable(String),
    /// 429 with `Retry-After`: the caller is over a quota (too many jobs waiting).
    #[error("{0}")]
    TooMany(String),
    /// 503: a backing service did not answer; the message names it.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected answer; the cause is logged only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::LoginFailed => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The 404 answered for unknown jobs and for other users' jobs alike.
    pub fn job_not_found() -> Self {
        ApiError::NotFound("job not found".into())
    }

    /// Maps a port error, naming the service for a 503 (`"the job store"`).
    pub fn from_port(service: &str, e: PortError) -> Self {
        match e.kind {
            ErrorKind::NotFound => ApiError::NotFound("not found".into()),
            ErrorKind::Unauthorized => ApiError::Unauthorized(e.to_string()),
            ErrorKind::Unavailable => {
                tracing::warn!(error = %e, service, "backing service unavailable");
                ApiError::Unavailable(format!("{service} is unavailable, try again"))
            }
            ErrorKind::Invalid | ErrorKind::AlreadyExists | ErrorKind::Internal => {
                ApiError::Internal(format!("{service}: {e}"))
            }
        }
    }
}

/// Turns a port result into an API result, naming the service for 503 answers.
pub trait PortResultExt<T> {
    fn or_api(self, service: &str) -> Result<T, ApiError>;
}

impl<T> PortResultExt<T> for Result<T, PortError> {
    fn or_api(self, service: &str) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::from_port(service, e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error: message })).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"jobq\""),
                );
            }
            // A backing service is away (usually restarting), or the caller's queue is full
            // (jobs end and make room): say when to come back.
            ApiError::Unavailable(_) | ApiError::TooMany(_) => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}
