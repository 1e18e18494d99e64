//! The original design's job routes, same paths and shapes, so its clients (and its
//! Postman workflow) work unchanged.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jobq_common::ports::Page;

use crate::AppState;
use crate::dto::{Cancelled, JobSummary, StatusQuery, SubmitJob, Submitted};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::idempotent::{self, IdempotencyKeyHeader};
use crate::jobs;

/// Most jobs `GET /api/status` lists, newest first.
pub const STATUS_LIST_LIMIT: u64 = 1000;

/// Submits a job. With an `Idempotency-Key`, a repeat of the same submit within 24 h
/// answers the same job id (with `Idempotent-Replayed: true`) instead of making another.
#[utoipa::path(
    post,
    path = "/api/addJob",
    tag = "jobs (original)",
    request_body = SubmitJob,
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255,
        description = "1 to 255 printable ASCII characters; the same key from the same user within 24 h answers the same job")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the job made, or for a repeat with the same Idempotency-Key the job the first submit made (then with `Idempotent-Replayed: true`)", body = Submitted,
            headers(("Idempotent-Replayed" = String, description = "`true` on a repeat"))),
        (status = 400, description = "malformed JSON, or an Idempotency-Key that is empty, over 255 characters or not printable ASCII", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, description = "body, config or args over its limit", body = ErrorBody),
        (status = 422, description = "missing or refused url, args that cannot be split, a scheduling field (priority, retries, notBefore, expireAfterSecs, deadline, expectedDurationSecs) of the wrong type or out of its range, or an Idempotency-Key used for a different job in the last 24 h", body = ErrorBody),
        (status = 429, description = "the caller already has `scheduling.max_queued_per_user` jobs waiting; submit again when some have started", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before submitting again"))),
        (status = 503, description = "the queue or the job store is unavailable", body = ErrorBody),
    )
)]
pub async fn add_job(
    State(state): State<AppState>,
    Caller(caller): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(request): ApiJson<SubmitJob>,
) -> Result<Response, ApiError> {
    let submission = idempotent::submit(&state, &caller, request, key).await?;
    let estimate = state
        .plans
        .estimate(state.observations.as_ref(), &submission.job)
        .await;
    let mut response = Json(Submitted::new(&submission.job, estimate)).into_response();
    response.headers_mut().extend(submission.headers());
    Ok(response)
}

/// The caller's jobs, newest first (at most 1000).
#[utoipa::path(
    get,
    path = "/api/status",
    tag = "jobs (original)",
    params(StatusQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<JobSummary>),
        (status = 401, body = ErrorBody),
    )
)]
pub async fn status_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> Result<Json<Vec<JobSummary>>, ApiError> {
    let page = Page {
        offset: 0,
        limit: STATUS_LIST_LIMIT,
    };
    let found = jobs::list(&state, &caller, query.all.unwrap_or(false), page).await?;
    Ok(Json(found.jobs.iter().map(JobSummary::from).collect()))
}

/// One job's state and output files.
#[utoipa::path(
    get,
    path = "/api/status/{id}",
    tag = "jobs (original)",
    params(("id" = String, Path, description = "job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobSummary),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such job, or not the caller's", body = ErrorBody),
    )
)]
pub async fn status_one(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobSummary>, ApiError> {
    let job = jobs::find(&state, &caller, &id).await?;
    Ok(Json(JobSummary::from(&job)))
}

/// Downloads one of the job's output files; `file` is its path under `output/` and may
/// contain slashes.
#[utoipa::path(
    get,
    path = "/api/results/{id}/{file}",
    tag = "jobs (original)",
    params(
        ("id" = String, Path, description = "job id"),
        ("file" = String, Path, description = "path of the file under `output/`, e.g. `a/b/c.txt`"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the file, streamed", content_type = "application/octet-stream"),
        (status = 400, description = "not a relative path", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such job or file", body = ErrorBody),
    )
)]
pub async fn results(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((id, file)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    jobs::download(&state, &caller, &id, &file).await
}

/// Cancels a job: a queued job never starts; a running one is killed by its worker.
#[utoipa::path(
    get,
    path = "/api/deleteJob/{id}",
    tag = "jobs (original)",
    params(("id" = String, Path, description = "job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Cancelled),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such job, or not the caller's", body = ErrorBody),
    )
)]
pub async fn delete_job(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Cancelled>, ApiError> {
    let job = jobs::cancel(&state, &caller, &id).await?;
    Ok(Json(Cancelled {
        id: job.id.to_string(),
        status: job.status,
    }))
}
