//! Request telemetry: one tracing span per request (method, matched path, status, request
//! id, user) and Prometheus metrics labelled by method, matched path and status.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Response;
use axum::middleware::Next;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Span;

pub fn metrics_handle() -> PrometheusHandle {
    jobq_common::metrics::recorder()
}

/// The span of one request. The matched path and status are filled in later; the URI is
/// left out on purpose, as `/auth/{user}/{password}` carries a password.
pub fn request_span<B>(req: &axum::http::Request<B>) -> Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path,
        request_id,
        status = tracing::field::Empty,
        user = tracing::field::Empty,
    )
}

/// Records the status on the request span and logs the answer.
pub fn on_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    span.record("status", status);
    let latency_ms = latency.as_millis() as u64;
    if response.status().is_server_error() {
        tracing::error!(status, latency_ms, "answered");
    } else {
        tracing::info!(status, latency_ms, "answered");
    }
}

/// Counts requests and measures their duration.
pub async fn track_metrics(req: Request, next: Next) -> axum::response::Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    let labels = [
        ("method", method),
        ("path", path),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("jobq_http_requests_total", &labels).increment(1);
    metrics::histogram!("jobq_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
