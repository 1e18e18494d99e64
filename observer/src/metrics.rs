//! Prometheus gauges of each observation (the names the Grafana dashboard uses) and the
//! small HTTP server for `GET /metrics` and `GET /health` on `metrics.listen`.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use jobq_common::domain::Observation;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Sets every gauge from one observation.
pub fn export(o: &Observation) {
    metrics::gauge!("jobq_observation_arrival_rate").set(o.avg_rate_of_arrival);
    metrics::gauge!("jobq_observation_service_rate").set(o.avg_rate_of_service);
    metrics::gauge!("jobq_observation_finish_rate").set(o.avg_rate_of_finished);
    metrics::gauge!("jobq_observation_response_time_seconds").set(o.avg_response_time);
    metrics::gauge!("jobq_queue_depth").set(o.queue_depth as f64);
    metrics::gauge!("jobq_workers").set(o.workers as f64);
    metrics::gauge!("jobq_busy_slots").set(o.busy_slots as f64);
    metrics::gauge!("jobq_queue_wait_p50_seconds").set(o.queue_wait_p50);
    metrics::gauge!("jobq_queue_wait_p95_seconds").set(o.queue_wait_p95);
    metrics::gauge!("jobq_desired_workers").set(o.desired_workers as f64);
}

/// The process-wide Prometheus recorder, installed on first use. When another part of the
/// process (the frontend in standalone mode) installed one first, a detached handle is
/// returned and the gauges go to that other recorder.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}

/// Serves `/metrics` and `/health` on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "observer metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
