//! Request telemetry: one tracing span per request (method, matched path, status, request
//! id, user) and Prometheus metrics labelled by method, matched path and status.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Response;
use axum::middleware::Next;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Span;

/// Buckets of the request-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The process-wide Prometheus recorder, installed on first use. If another recorder is
/// already installed, a detached one is returned (its metrics stay empty).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &DURATION_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder is already installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
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
