//! jobq-frontend: the REST API of jobq (see the README and docs/).
//!
//! [`router`] builds the axum application from an [`AppState`] of ports, so tests drive it
//! with in-memory doubles; [`serve`] connects the production adapters (Kafka, MongoDB,
//! S3, OpenID Connect) and serves until shutdown; [`run`] is what `jobq frontend` and the
//! `jobq-frontend` binary call.
//!
//! Routes: the original design's (`/auth/{user}/{password}`, `/health/`, `/health/load`,
//! `/api/addJob`, `/api/status[/{id}]`, `/api/results/{id}/{file...}`,
//! `/api/deleteJob/{id}`), the resource routes under `/api/v1/jobs`, `POST /auth/token`,
//! `GET /metrics` and `GET /api/openapi.json`; the live views (`/api/v1/events`, followed
//! logs, `/api/v1/observations`, see [`live`]) and the web dashboard at `/`. Every `/api`
//! route needs a bearer token. Both submit routes take an `Idempotency-Key` header
//! ([`idempotent`]).
//! The error policy is in [`error`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use jobq_common::idempotency::IdempotencyKeys;
use jobq_common::kafka::{KafkaAdmin, KafkaDispatch, KafkaEventBus, KafkaProducer};
use jobq_common::mongo::MongoJobStore;
use jobq_common::oidc::OidcClient;
use jobq_common::ports::{
    ArtifactStore, DispatchQueue, EventBus, JobCatalog, ObservationStore, PasswordLogin,
    TokenValidator,
};
use jobq_common::s3::S3ArtifactStore;
use jobq_common::settings::{FrontendSettings, Settings};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub mod dto;
pub mod error;
pub mod estimates;
pub mod extract;
pub mod idempotent;
pub mod jobs;
pub mod live;
pub mod observability;
pub mod openapi;
pub mod routes;
pub mod schedule;
pub mod wire;

pub use error::ApiError;
pub use observability::metrics_handle;

use routes::{auth, dashboard, health, legacy, ops, streams, v1};

pub use live::LiveEvents;
pub use routes::dashboard::{Dashboard, SignIn};

/// What every handler can reach: the ports, the limits and the policy settings.
#[derive(Clone)]
pub struct AppState {
    pub jobs: Arc<dyn JobCatalog>,
    /// The records of idempotent submits (see [`idempotent`]).
    pub idempotency: Arc<dyn IdempotencyKeys>,
    pub dispatch: Arc<dyn DispatchQueue>,
    pub events: Arc<dyn EventBus>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub observations: Arc<dyn ObservationStore>,
    pub tokens: Arc<dyn TokenValidator>,
    pub login: Arc<dyn PasswordLogin>,
    /// Body, config and args limits.
    pub limits: FrontendSettings,
    /// Realm role that sees and cancels every user's jobs.
    pub admin_role: Arc<str>,
    /// Accept `file://` URLs and local hosts (tests, standalone).
    pub allow_local_repos: bool,
    /// Priorities, quotas, fair share, retries (docs/scheduling.md).
    pub scheduling: jobq_common::settings::SchedulingSettings,
    /// The last fair-share tags of this frontend's submits.
    pub fair_clock: Arc<schedule::FairClock>,
    /// The observer's newest plan, for the jobs' estimates.
    pub plans: Arc<estimates::PlanCache>,
    pub metrics: PrometheusHandle,
    /// Job events for the live views, fed by one source per process.
    pub live: LiveEvents,
    /// How the dashboard signs in, and the policy settings it shows.
    pub dashboard: Dashboard,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .field("admin_role", &self.admin_role)
            .field("allow_local_repos", &self.allow_local_repos)
            .finish_non_exhaustive()
    }
}

/// The application: every route, its middleware and the JSON 404/405 answers.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/addJob", post(legacy::add_job))
        .route("/api/status", get(legacy::status_list))
        .route("/api/status/{id}", get(legacy::status_one))
        .route("/api/results/{id}/{*file}", get(legacy::results))
        .route("/api/deleteJob/{id}", get(legacy::delete_job))
        .route("/api/v1/jobs", post(v1::create).get(v1::list))
        .route("/api/v1/jobs/{id}", get(v1::get).delete(v1::cancel))
        .route("/api/v1/jobs/{id}/logs", get(v1::logs))
        .route("/api/v1/jobs/{id}/results/{*file}", get(v1::results))
        .route("/api/v1/events", get(streams::events))
        .route("/api/v1/observations", get(streams::observations))
        .route("/api/v1/fleet/policy", get(dashboard::policy))
        .route("/api/v1/me", get(dashboard::me))
        .route("/api/openapi.json", get(ops::openapi))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            extract::require_auth,
        ));
    let public = Router::new()
        .route("/auth/{user}/{password}", get(auth::login_path))
        .route("/auth/token", post(auth::login_form))
        .route("/auth/config", get(dashboard::sign_in_config))
        .route("/", get(dashboard::index))
        .route("/index.html", get(dashboard::index))
        .route("/favicon.svg", get(dashboard::favicon))
        .route("/assets/{name}", get(dashboard::assets))
        .route("/health", get(health::health_alias))
        .route("/health/", get(health::health))
        .route("/health/load", get(health::load))
        .route("/metrics", get(ops::metrics));
    let body_limit = state.limits.max_body_bytes;
    public
        .merge(api)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .route_layer(middleware::from_fn(observability::track_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(observability::request_span)
                        .on_request(())
                        .on_response(observability::on_response)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

/// Builds the production adapters named by `settings`: the Kafka producer behind the
/// dispatch queue and the event bus (creating the topics if missing), the MongoDB job and
/// observation store, the S3 artifact store and the OpenID Connect client.
pub async fn connect(settings: &Settings) -> anyhow::Result<AppState> {
    let kafka = &settings.kafka;
    let admin = KafkaAdmin::new(&kafka.brokers).context("kafka admin client")?;
    admin
        .ensure_topics(kafka)
        .await
        .context("cannot create the kafka topics")?;
    let producer = KafkaProducer::new(&kafka.brokers).context("kafka producer")?;
    let store = Arc::new(
        MongoJobStore::connect(&settings.mongo)
            .await
            .context("cannot connect to mongodb")?,
    );
    let artifacts = S3ArtifactStore::connect(&settings.s3)
        .await
        .context("cannot connect to the object store")?;
    let oidc = Arc::new(OidcClient::new(settings.oidc.clone()));
    if let Err(e) = oidc.ready().await {
        // Discovery is retried on first use; the API can start before the identity provider.
        tracing::warn!(error = %e, issuer = %settings.oidc.issuer, "identity provider not ready yet");
    }
    let live = LiveEvents::new();
    let feed = jobq_common::kafka::follow_job_events(
        &kafka.brokers,
        &kafka.events_topic,
        std::time::Duration::from_secs(10),
    )
    .context("kafka consumer for live views")?;
    live.spawn_feed(store.clone(), feed);
    let dashboard = Dashboard {
        sign_in: SignIn::Oidc {
            client: oidc.clone(),
            client_id: settings.oidc.dashboard_client_id.clone(),
        },
        policy: (&settings.observer).into(),
    };
    Ok(AppState {
        live,
        dashboard,
        jobs: store.clone(),
        idempotency: store.clone(),
        dispatch: Arc::new(KafkaDispatch::new(producer.clone(), &kafka.jobs_topic)),
        events: Arc::new(KafkaEventBus::new(
            producer,
            &kafka.events_topic,
            &kafka.observations_topic,
        )),
        artifacts: Arc::new(artifacts),
        observations: store,
        tokens: oidc.clone(),
        login: oidc,
        limits: settings.frontend.clone(),
        admin_role: settings.oidc.admin_role.as_str().into(),
        allow_local_repos: settings.worker.allow_local_repos,
        scheduling: settings.scheduling.clone(),
        fair_clock: Default::default(),
        plans: Default::default(),
        metrics: metrics_handle(),
    })
}

/// Connects the production adapters, then serves on `listener` until `shutdown`
/// completes, letting requests in flight finish. Prints
/// `jobq-frontend listening on http://ADDR` on stdout once it accepts requests.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = connect(&settings).await?;
    let addr = listener.local_addr().context("listener address")?;
    let live = state.live.clone();
    let app = router(state);
    tracing::info!(%addr, "listening");
    println!("jobq-frontend listening on http://{addr}");
    axum::serve(wire::JsonErrorListener(listener), app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Live streams never end by themselves; the graceful shutdown waits for them.
            live.close();
        })
        .await
        .context("serving http")?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds `addr` and serves until SIGINT or SIGTERM.
pub async fn run(settings: Settings, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let shutdown = jobq_common::shutdown::on_signal();
    serve(
        settings,
        listener,
        async move { shutdown.cancelled().await },
    )
    .await
}
