//! Liveness and the load the observer measured.

use axum::Json;
use axum::extract::State;

use crate::AppState;
use crate::dto::{Health, ObservationView};
use crate::error::{ApiError, ErrorBody, PortResultExt};

/// How many observations `/health/load` answers.
pub const LOAD_OBSERVATIONS: u64 = 10;

/// The service is up.
#[utoipa::path(
    get,
    path = "/health/",
    tag = "health",
    responses((status = 200, body = Health))
)]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The service is up (the same as `/health/`).
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, body = Health))
)]
pub async fn health_alias() -> Json<Health> {
    health().await
}

/// The last observations of the load, newest first; empty until the observer made one.
#[utoipa::path(
    get,
    path = "/health/load",
    tag = "health",
    responses(
        (status = 200, body = Vec<ObservationView>),
        (status = 503, description = "the observation store is unavailable", body = ErrorBody),
    )
)]
pub async fn load(State(state): State<AppState>) -> Result<Json<Vec<ObservationView>>, ApiError> {
    let observations = state
        .observations
        .latest(LOAD_OBSERVATIONS)
        .await
        .or_api("the observation store")?;
    Ok(Json(observations.into_iter().map(Into::into).collect()))
}
