//! Prometheus metrics shared by every service: the process-wide recorder (installed once,
//! whichever part of the process asks first — in `jobq standalone` the frontend, the
//! workers and the observer share it) and the small `/metrics` + `/health` server that
//! workers and observers run on `metrics.listen`.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Buckets of every `…duration_seconds` histogram: milliseconds (requests) to an hour (jobs).
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];

/// The process-wide recorder, installed on first use. If something else installed one
/// first, a detached handle is returned (its metrics stay empty) and a warning logged.
pub fn recorder() -> PrometheusHandle {
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

/// Serves `GET /metrics` (Prometheus text) and `GET /health` on `addr` until `shutdown`.
pub async fn serve(addr: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = recorder();
    let app = Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// Installs the recorder now (metrics recorded before it would be lost) and runs [`serve`]
/// in the background when `addr` is set, logging a failure.
pub fn spawn_server(
    addr: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    recorder();
    addr.map(|addr| {
        tokio::spawn(async move {
            if let Err(e) = serve(addr, shutdown).await {
                tracing::error!(error = %e, %addr, "metrics server failed");
            }
        })
    })
}
