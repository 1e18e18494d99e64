//! The resource routes for new clients: `/api/v1/jobs` and below.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jobq_common::ports::Page;

use crate::AppState;
use crate::dto::{JobList, JobView, ListQuery, Logs, LogsQuery, SubmitJob};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::idempotent::{self, IdempotencyKeyHeader};
use crate::jobs::{self, LogStream};

/// Page size when none is asked for.
pub const DEFAULT_PAGE: u64 = 20;
/// Largest page.
pub const MAX_PAGE: u64 = 100;

/// Submits a job; answers it with its location. With an `Idempotency-Key`, a repeat of the
/// same submit within 24 h answers the same job (200) instead of making another.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body = SubmitJob,
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255,
        description = "1 to 255 printable ASCII characters; the same key from the same user within 24 h answers the same job")),
    security(("bearer" = [])),
    responses(
        (status = 201, body = JobView, headers(("Location" = String, description = "the job's URL"))),
        (status = 200, description = "a repeat of an earlier submit with the same Idempotency-Key: its job", body = JobView,
            headers(("Location" = String, description = "the job's URL"), ("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "malformed JSON, or an Idempotency-Key that is empty, over 255 characters or not printable ASCII", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, description = "body, config or args over its limit", body = ErrorBody),
        (status = 422, description = "missing or refused url, args that cannot be split, a scheduling field (priority, retries, notBefore, expireAfterSecs, deadline, expectedDurationSecs) of the wrong type or out of its range, or an Idempotency-Key used for a different job in the last 24 h", body = ErrorBody),
        (status = 429, description = "the caller already has `scheduling.max_queued_per_user` jobs waiting; submit again when some have started", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before submitting again"))),
        (status = 503, description = "the queue or the job store is unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(request): ApiJson<SubmitJob>,
) -> Result<Response, ApiError> {
    let submission = idempotent::submit(&state, &caller, request, key).await?;
    let job = &submission.job;
    let location = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id))
        .map_err(|e| ApiError::Internal(format!("location header: {e}")))?;
    let status = if submission.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let estimate = state.plans.estimate(state.observations.as_ref(), job).await;
    let mut response = (
        status,
        [(header::LOCATION, location)],
        Json(JobView::from(job).estimated(estimate)),
    )
        .into_response();
    response.headers_mut().extend(submission.headers());
    Ok(response)
}

/// The caller's jobs, newest first, one page at a time; `status` keeps one status only.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobList),
        (status = 400, description = "malformed query", body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let page = Page {
        offset: query.offset.unwrap_or(0),
        limit: query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
    };
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(ApiError::BadRequest))
        .transpose()?;
    let found =
        jobs::list_in_status(&state, &caller, query.all.unwrap_or(false), status, page).await?;
    let mut views = Vec::with_capacity(found.jobs.len());
    for job in &found.jobs {
        let estimate = state.plans.estimate(state.observations.as_ref(), job).await;
        views.push(JobView::from(job).estimated(estimate));
    }
    Ok(Json(JobList {
        jobs: views,
        total: found.total,
        offset: page.offset,
        limit: page.limit,
    }))
}

/// One job in full.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such job, or not the caller's", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = jobs::find(&state, &caller, &id).await?;
    let estimate = state
        .plans
        .estimate(state.observations.as_ref(), &job)
        .await;
    Ok(Json(JobView::from(&job).estimated(estimate)))
}

/// Cancels a job and answers it; a job that already ended is answered unchanged.
#[utoipa::path(
    delete,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such job, or not the caller's", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = jobs::cancel(&state, &caller, &id).await?;
    Ok(Json(JobView::from(&job)))
}

/// The job's stdout and stderr as stored so far (empty before the worker uploads them);
/// with `?stream=stdout|stderr`, that one log alone as plain text; with `?follow=true`,
/// Server-Sent Events as the logs grow: `stdout` and `stderr` (data `{"text"}`), then
/// `end` (data `{"status", "exitCode"}`) once the job has ended and both logs were sent.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs",
    tag = "jobs",
    params(("id" = String, Path, description = "job id"), LogsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Logs),
        (status = 200, description = "with `stream`: the log as text", content_type = "text/plain"),
        (status = 200, description = "with `follow=true`: `stdout`/`stderr` events (data `LogChunk`), then `end` (data `LogEnd`)", content_type = "text/event-stream"),
        (status = 400, description = "unknown stream", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "no such job, or not the caller's", body = ErrorBody),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let stream = query
        .stream
        .as_deref()
        .map(|name| {
            LogStream::parse(name)
                .ok_or_else(|| ApiError::BadRequest("stream must be stdout or stderr".into()))
        })
        .transpose()?;
    let job = jobs::find(&state, &caller, &id).await?;
    if query.follow.unwrap_or(false) {
        return Ok(crate::routes::streams::follow_logs(state, job));
    }
    if let Some(stream) = stream {
        let text = jobs::read_log(&state, &job, stream).await?;
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            text,
        )
            .into_response());
    }
    let (stdout, stderr) = futures::try_join!(
        jobs::read_log(&state, &job, LogStream::Stdout),
        jobs::read_log(&state, &job, LogStream::Stderr),
    )?;
    Ok(Json(Logs { stdout, stderr }).into_response())
}

/// Downloads one of the job's output files; `file` may contain slashes.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/results/{file}",
    tag = "jobs",
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
