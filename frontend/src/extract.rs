//! Extractors whose rejections use the API's error shape, and the bearer-token check.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use jobq_common::ports::Principal;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, PortResultExt};

/// A JSON body. The content type is not checked (the original clients do not always send
/// one); malformed JSON is 400, JSON of the wrong shape 422, a body over the limit 413.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = AppState::from_ref(state).limits.max_body_bytes;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_rejection(rejection.status(), limit))?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => ApiError::Unprocessable(format!("invalid request body: {e}")),
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::BadRequest(format!("malformed JSON: {e}"))
                }
            }
        })
    }
}

fn body_rejection(status: axum::http::StatusCode, limit: usize) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(format!("the request body is larger than {limit} bytes"))
    } else {
        ApiError::BadRequest("the request body could not be read".into())
    }
}

/// An `application/x-www-form-urlencoded` body.
#[derive(Debug)]
pub struct ApiForm<T>(pub T);

impl<T, S> FromRequest<S> for ApiForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::FormRejection;
        let limit = AppState::from_ref(state).limits.max_body_bytes;
        match axum::extract::Form::<T>::from_request(req, state).await {
            Ok(axum::extract::Form(value)) => Ok(ApiForm(value)),
            Err(FormRejection::FailedToDeserializeForm(e)) => Err(ApiError::Unprocessable(
                format!("invalid form body: {}", e.body_text()),
            )),
            Err(FormRejection::FailedToDeserializeFormBody(e)) => Err(ApiError::Unprocessable(
                format!("invalid form body: {}", e.body_text()),
            )),
            Err(FormRejection::InvalidFormContentType(_)) => Err(ApiError::BadRequest(
                "expected an application/x-www-form-urlencoded body".into(),
            )),
            Err(other) => Err(body_rejection(other.status(), limit)),
        }
    }
}

/// Query parameters; a malformed query is 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
    }
}

/// Path parameters; a path that cannot be decoded is 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// The authenticated caller of an `/api` route.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let state = AppState::from_ref(state);
        authenticate(&state, &parts.headers).await
    }
}

/// Middleware on every `/api` route: no valid bearer token, no handler.
pub async fn require_auth(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, req.headers()).await?;
    tracing::Span::current().record("user", caller.0.username.as_str());
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

async fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, ApiError> {
    let token = bearer_token(headers)?;
    let principal = state
        .tokens
        .validate(token)
        .await
        .or_api("the identity provider")?;
    Ok(Caller(principal))
}

/// The token of `Authorization: Bearer <token>`. A bare JWT without the scheme is accepted
/// too, as some older clients send it that way.
fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        Some(_) => {
            return Err(ApiError::Unauthorized(
                "the Authorization header must carry a bearer token".into(),
            ));
        }
        None if value.split('.').count() == 3 => value,
        None => {
            return Err(ApiError::Unauthorized(
                "the Authorization header must carry a bearer token".into(),
            ));
        }
    };
    if token.is_empty() {
        return Err(ApiError::Unauthorized("missing bearer token".into()));
    }
    Ok(token)
}
