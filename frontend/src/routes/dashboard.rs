//! The web dashboard at `/`: its page and assets, built by Vite from `frontend/dashboard/`
//! and embedded into the binary (see `frontend/dashboard/README.md` for why the build is
//! committed), and the few things it needs that are not jobs: how to sign in, who the
//! caller is, and the fleet policy's settings. The page itself uses only the public API.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jobq_common::oidc::OidcClient;
use jobq_common::settings::ObserverSettings;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody, PortResultExt};
use crate::extract::{ApiPath, Caller};

/// The built page and assets (`npm run build` in `frontend/dashboard`).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../dashboard/dist/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/dist/assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/dist/assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../dashboard/dist/favicon.svg"),
    ),
];

/// How a browser signs in to this deployment.
#[derive(Clone)]
pub enum SignIn {
    /// A user name and password form posted to `/auth/token` (the built-in issuer).
    Form,
    /// The identity provider's own login page: authorization code with PKCE, for a public
    /// client of the realm.
    Oidc {
        client: Arc<OidcClient>,
        client_id: String,
    },
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignIn::Form => f.write_str("Form"),
            SignIn::Oidc { client_id, .. } => f
                .debug_struct("Oidc")
                .field("client_id", client_id)
                .finish(),
        }
    }
}

/// What the dashboard needs besides the ports: how to sign in and the policy's settings.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub sign_in: SignIn,
    pub policy: PolicySettings,
}

impl Dashboard {
    /// The form sign-in and the default policy settings (tests, doubles).
    pub fn form(observer: &ObserverSettings) -> Self {
        Dashboard {
            sign_in: SignIn::Form,
            policy: PolicySettings::from(observer),
        }
    }
}

/// The settings the fleet policy runs with (`JOBQ_OBSERVER__…`), as this deployment is
/// configured.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySettings {
    /// `seed`, `lag` or `queueing`.
    pub policy: String,
    pub scaler: String,
    pub min_workers: u32,
    pub max_workers: u32,
    /// Seconds a job should wait at most (`queueing`).
    pub target_wait_secs: f64,
    /// Share of jobs allowed to wait longer than the target (`queueing`).
    pub wait_fraction: f64,
    /// Queued messages per worker (`lag`).
    pub lag_threshold: u64,
    /// Seconds before a scale-down.
    pub stabilisation_secs: f64,
    /// Worker-seconds per hour (0 = none).
    pub budget_worker_seconds_per_hour: f64,
    /// Seconds between observations.
    pub refresh_rate_secs: f64,
}

impl From<&ObserverSettings> for PolicySettings {
    fn from(o: &ObserverSettings) -> Self {
        PolicySettings {
            policy: o.policy.to_string(),
            scaler: o.scaler.to_string(),
            min_workers: o.min_workers,
            max_workers: o.max_workers,
            target_wait_secs: o.target_wait_secs,
            wait_fraction: o.wait_fraction,
            lag_threshold: o.lag_threshold,
            stabilisation_secs: o.stabilisation_secs,
            budget_worker_seconds_per_hour: o.budget_worker_seconds_per_hour,
            refresh_rate_secs: o.refresh_rate_secs,
        }
    }
}

/// How the dashboard signs in: `{"method": "form"}` (post a user name and password to
/// `/auth/token`) or `{"method": "oidc", ...}` (authorization code with PKCE).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInConfig {
    /// `form` or `oidc`.
    pub method: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
}

/// Who the caller is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub username: String,
    pub roles: Vec<String>,
    /// Sees and cancels every user's jobs.
    pub admin: bool,
}

/// How a browser signs in to this deployment (public: the dashboard asks before it has a token).
#[utoipa::path(
    get,
    path = "/auth/config",
    tag = "auth",
    responses(
        (status = 200, body = SignInConfig),
        (status = 503, description = "the identity provider is unavailable", body = ErrorBody),
    )
)]
pub async fn sign_in_config(State(state): State<AppState>) -> Result<Json<SignInConfig>, ApiError> {
    Ok(Json(match &state.dashboard.sign_in {
        SignIn::Form => SignInConfig {
            method: "form".into(),
            authorization_endpoint: None,
            token_endpoint: None,
            end_session_endpoint: None,
            client_id: None,
            scope: None,
        },
        SignIn::Oidc { client, client_id } => {
            let endpoints = client
                .browser_endpoints()
                .await
                .or_api("the identity provider")?;
            SignInConfig {
                method: "oidc".into(),
                authorization_endpoint: Some(endpoints.authorization),
                token_endpoint: Some(endpoints.token),
                end_session_endpoint: endpoints.end_session,
                client_id: Some(client_id.clone()),
                scope: Some("openid".into()),
            }
        }
    }))
}

/// The caller: user name, roles, and whether they are an admin.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody))
)]
pub async fn me(State(state): State<AppState>, Caller(caller): Caller) -> Json<Me> {
    Json(Me {
        admin: caller.has_role(&state.admin_role),
        username: caller.username,
        roles: caller.roles,
    })
}

/// The settings the fleet policy runs with.
#[utoipa::path(
    get,
    path = "/api/v1/fleet/policy",
    tag = "live",
    security(("bearer" = [])),
    responses((status = 200, body = PolicySettings), (status = 401, body = ErrorBody))
)]
pub async fn policy(
    State(state): State<AppState>,
    Caller(_caller): Caller,
) -> Json<PolicySettings> {
    Json(state.dashboard.policy.clone())
}

fn etag(bytes: &[u8]) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, body)| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                body.hash(&mut hasher);
                format!("\"{:016x}\"", hasher.finish())
            })
            .collect()
    });
    ASSETS
        .iter()
        .position(|(_, _, body)| std::ptr::eq(*body, bytes))
        .map_or("\"\"", |i| tags[i].as_str())
}

fn asset(name: &str, headers: &HeaderMap, csp: Option<String>) -> Response {
    let Some((_, mime, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::NotFound("no such file".into()).into_response();
    };
    let tag = etag(body);
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(mime))],
            *body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    // File names carry no hash: browsers revalidate with the ETag on every load.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The sign-in code arrives in the page's URL: send it to no other site.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(csp) = csp.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// The dashboard's page.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // The page talks to this origin, and to the identity provider's token endpoint when
    // it signs in there.
    let mut connect = String::from("'self'");
    if let SignIn::Oidc { client, .. } = &state.dashboard.sign_in
        && let Ok(endpoints) = client.browser_endpoints().await
        && let Some(origin) = origin_of(&endpoints.token)
    {
        connect.push(' ');
        connect.push_str(&origin);
    }
    let csp = format!(
        "default-src 'self'; connect-src {connect}; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    asset("index.html", &headers, Some(csp))
}

/// One of the dashboard's assets.
pub async fn assets(ApiPath(name): ApiPath<String>, headers: HeaderMap) -> Response {
    asset(&name, &headers, None)
}

/// The page's icon.
pub async fn favicon(headers: HeaderMap) -> Response {
    asset("favicon.svg", &headers, None)
}

fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}"))
}
