//! Operations: Prometheus metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::AppState;
use crate::openapi::ApiDoc;

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
}

/// This document. Like every `/api` route it needs a token.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json"),
        (status = 401, body = crate::error::ErrorBody),
    )
)]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
