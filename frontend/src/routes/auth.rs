//! Login: the original path-parameter route and a form route for new clients. Both use
//! the identity provider's password grant and answer its access token.

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::dto::{Credentials, Token, TokenGrant};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiForm, ApiPath};

const IDENTITY: &str = "the identity provider";

async fn login(state: &AppState, username: &str, password: &str) -> Result<String, ApiError> {
    match state.login.login(username, password).await {
        Ok(token) => Ok(token),
        Err(e) if e.kind == jobq_common::ErrorKind::Unauthorized => {
            tracing::info!(user = %username, "login refused");
            Err(ApiError::LoginFailed)
        }
        Err(e) => Err(ApiError::from_port(IDENTITY, e)),
    }
}

/// Exchanges a user name and password for an access token (original route).
#[utoipa::path(
    get,
    path = "/auth/{user}/{password}",
    tag = "auth",
    params(("user" = String, Path), ("password" = String, Path)),
    responses(
        (status = 200, body = Token),
        (status = 401, description = "wrong user name or password", body = ErrorBody),
        (status = 503, description = "the identity provider is unavailable", body = ErrorBody),
    )
)]
pub async fn login_path(
    State(state): State<AppState>,
    ApiPath((user, password)): ApiPath<(String, String)>,
) -> Result<Json<Token>, ApiError> {
    let token = login(&state, &user, &password).await?;
    Ok(Json(Token { token }))
}

/// Exchanges a user name and password, sent as a form, for an access token.
#[utoipa::path(
    post,
    path = "/auth/token",
    tag = "auth",
    request_body(content = Credentials, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = TokenGrant),
        (status = 401, description = "wrong user name or password", body = ErrorBody),
        (status = 422, description = "missing username or password", body = ErrorBody),
        (status = 503, description = "the identity provider is unavailable", body = ErrorBody),
    )
)]
pub async fn login_form(
    State(state): State<AppState>,
    ApiForm(credentials): ApiForm<Credentials>,
) -> Result<Json<TokenGrant>, ApiError> {
    let token = login(&state, &credentials.username, &credentials.password).await?;
    Ok(Json(TokenGrant {
        token: token.clone(),
        access_token: token,
        token_type: "Bearer".into(),
    }))
}
