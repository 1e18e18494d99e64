//! What the API does with jobs, shared by the original and the resource routes: submit,
//! find (with the ownership rule), list, cancel, download an output file, read a log.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jobq_common::domain::{Dispatch, Job, JobEvent, JobId, JobStatus, artifact_keys};
use jobq_common::lifecycle;
use jobq_common::ports::{CancelResult, JobPage, Page, Principal};
use jobq_common::{ErrorKind, PortResult, domain};
use std::future::Future;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::io::ReaderStream;

use crate::AppState;
use crate::dto::SubmitJob;
use crate::error::{ApiError, PortResultExt};
use crate::schedule::Requested;

pub(crate) const STORE: &str = "the job store";
const ARTIFACTS: &str = "the artifact store";

/// Whether `caller` may see, download and cancel `job`: its owner, or the admin role.
pub fn visible_to(state: &AppState, caller: &Principal, job: &Job) -> bool {
    job.owner == caller.username || caller.has_role(&state.admin_role)
}

/// Runs a store write again while the store is unavailable, pausing 100 ms, then twice as
/// long each time (at most 1 s), until `deadline`; the last error is returned. A store
/// restart then costs a submission some latency, not an answer.
pub(crate) async fn retry_store<T, F, Fut>(
    deadline: Instant,
    what: &str,
    mut write: F,
) -> PortResult<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = PortResult<T>>,
{
    let mut pause = Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match write(tries).await {
            Err(e) if e.kind == ErrorKind::Unavailable && Instant::now() + pause < deadline => {
                if tries == 1 {
                    tracing::warn!(error = %e, what, "store write failed; retrying");
                }
                metrics::counter!("jobq_store_write_retries_total").increment(1);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Validates the request, stores the job as queued, hands it to the queue and announces
/// it. A store write that fails is retried for `frontend.store_retry_ms`; if the store or
/// the queue still refuses, the answer is 503 (with `Retry-After`) and the job is not
/// accepted: a job the queue refused is cancelled so it never runs.
pub async fn submit(
    state: &AppState,
    caller: &Principal,
    request: SubmitJob,
) -> Result<Job, ApiError> {
    let (mut job, requested) = prepare(state, caller, request)?;
    let at = Instant::now();
    schedule_job(state, caller, &mut job, requested).await?;
    let at = submit_stage("schedule", at);
    match store_new(state, &job, false).await? {
        Some(stored) => Ok(stored),
        None => hand_over(state, job, at).await,
    }
}

/// The queued job a valid request asks for, with its id chosen (not stored yet), and the
/// scheduling it asks for ([`schedule_job`] gives the job its schedule).
pub(crate) fn prepare(
    state: &AppState,
    caller: &Principal,
    request: SubmitJob,
) -> Result<(Job, Requested), ApiError> {
    let now = OffsetDateTime::now_utc();
    let requested = Requested::parse(&request, &state.scheduling, now)?;
    let spec = request.into_spec(&state.limits, state.allow_local_repos)?;
    Ok((Job::new(caller.username.clone(), spec, now), requested))
}

/// Gives a prepared job its schedule: 429 while the caller's waiting jobs are at
/// `scheduling.max_queued_per_user`; otherwise the caller's running limit and the job's
/// fair-share tag.
pub(crate) async fn schedule_job(
    state: &AppState,
    caller: &Principal,
    job: &mut Job,
    requested: Requested,
) -> Result<(), ApiError> {
    job.schedule = crate::schedule::schedule(state, caller, requested, job.created_at).await?;
    Ok(())
}

/// Stores a new job, retrying while the store is unavailable. `None`: this call stored it
/// and must hand it over. With `shared` (another submit of the same idempotency key may
/// store the same job) a job already stored under its id is answered as stored: `Some`.
pub(crate) async fn store_new(
    state: &AppState,
    job: &Job,
    shared: bool,
) -> Result<Option<Job>, ApiError> {
    let deadline = Instant::now() + Duration::from_millis(state.limits.store_retry_ms);
    let stored = retry_store(deadline, "insert", |tries| async move {
        match state.jobs.insert(job).await {
            Ok(()) => Ok(true),
            // An earlier try was stored but its answer lost: the id is new, so the
            // stored job is this one.
            Err(e) if e.kind == ErrorKind::AlreadyExists && tries > 1 => Ok(true),
            Err(e) if e.kind == ErrorKind::AlreadyExists && shared => Ok(false),
            Err(e) => Err(e),
        }
    })
    .await
    .or_api(STORE)?;
    if stored {
        return Ok(None);
    }
    match state.jobs.get(&job.id).await.or_api(STORE)? {
        Some(found) => Ok(Some(found)),
        None => Err(ApiError::Internal(format!(
            "job {} was stored by another submit, then not found",
            job.id
        ))),
    }
}

/// Hands a job just stored to the queue and announces it; a job the queue refuses is
/// cancelled (it never runs) and the answer is 503.
pub(crate) async fn hand_over(state: &AppState, job: Job, at: Instant) -> Result<Job, ApiError> {
    let at = submit_stage("insert", at);
    state.live.remember_owner(&job.id, &job.owner);
    let message = Dispatch {
        id: job.id.clone(),
        attempt: job.attempt,
    };
    if let Err(e) = state.dispatch.dispatch(&message).await {
        metrics::counter!("jobq_dispatch_failures_total").increment(1);
        tracing::error!(job_id = %job.id, error = %e, "dispatch failed; cancelling the job");
        let deadline = Instant::now() + Duration::from_millis(state.limits.store_retry_ms);
        let cancelled = retry_store(deadline, "cancel", |_| {
            state.jobs.cancel(&job.id, OffsetDateTime::now_utc())
        })
        .await;
        if let Err(e) = cancelled {
            tracing::error!(job_id = %job.id, error = %e, "could not cancel the undispatched job");
        }
        return Err(ApiError::Unavailable(
            "the queue is unavailable; the job was not accepted".into(),
        ));
    }
    let at = submit_stage("dispatch", at);
    publish(state, lifecycle::submitted(&job, OffsetDateTime::now_utc())).await;
    submit_stage("publish", at);
    metrics::counter!("jobq_jobs_submitted_total").increment(1);
    tracing::info!(job_id = %job.id, owner = %job.owner, url = %job.spec.redacted_url(), "job submitted");
    Ok(job)
}

/// Records one stage of a submission (`jobq_submit_stage_duration_seconds{stage}`: the
/// schedule — waiting limit and fair-share reads —, the store insert, the dispatch produce,
/// the event publish) up to now, and returns now.
fn submit_stage(stage: &'static str, since: Instant) -> Instant {
    let now = Instant::now();
    metrics::histogram!("jobq_submit_stage_duration_seconds", "stage" => stage)
        .record((now - since).as_secs_f64());
    now
}

/// The job with this id if the caller may see it; unknown, malformed and other users' ids
/// all answer the same 404.
pub async fn find(state: &AppState, caller: &Principal, id: &str) -> Result<Job, ApiError> {
    let id: JobId = id.parse().map_err(|_| ApiError::job_not_found())?;
    match state.jobs.get(&id).await.or_api(STORE)? {
        Some(job) if visible_to(state, caller, &job) => Ok(job),
        _ => Err(ApiError::job_not_found()),
    }
}

/// The caller's jobs, newest first; with `all` and the admin role, everyone's.
pub async fn list(
    state: &AppState,
    caller: &Principal,
    all: bool,
    page: Page,
) -> Result<JobPage, ApiError> {
    list_in_status(state, caller, all, None, page).await
}

/// Like [`list`], only the jobs in `status` (all when `None`).
pub async fn list_in_status(
    state: &AppState,
    caller: &Principal,
    all: bool,
    status: Option<JobStatus>,
    page: Page,
) -> Result<JobPage, ApiError> {
    let owner = if all && caller.has_role(&state.admin_role) {
        None
    } else {
        Some(caller.username.as_str())
    };
    state
        .jobs
        .list_in_status(owner, status, page)
        .await
        .or_api(STORE)
}

/// Cancels a queued or running job; a job that already ended is answered as it is.
pub async fn cancel(state: &AppState, caller: &Principal, id: &str) -> Result<Job, ApiError> {
    let job = find(state, caller, id).await?;
    let result = state
        .jobs
        .cancel(&job.id, OffsetDateTime::now_utc())
        .await
        .or_api(STORE)?
        .ok_or_else(ApiError::job_not_found)?;
    let (job, from) = match result {
        CancelResult::Cancelled(job) => (job, JobStatus::Queued),
        CancelResult::CancelledWhileRunning(job) => (job, JobStatus::Running),
        CancelResult::AlreadyTerminal(job) => return Ok(job),
    };
    publish(
        state,
        JobEvent::after(&job, Some(from), None, OffsetDateTime::now_utc()),
    )
    .await;
    metrics::counter!("jobq_jobs_cancelled_total").increment(1);
    tracing::info!(job_id = %job.id, from = %from, by = %caller.username, "job cancelled");
    Ok(job)
}

/// Announces a transition. The store already holds it, so a bus that does not answer is
/// logged and counted, not reported to the caller.
async fn publish(state: &AppState, event: JobEvent) {
    if let Err(e) = state.events.publish(&event).await {
        metrics::counter!("jobq_event_publish_failures_total").increment(1);
        tracing::warn!(job_id = %event.job_id, to = %event.to, error = %e, "job event not published");
    }
}

/// Streams one of the job's output files. Only names listed in the job's `outputFiles`
/// are served, and the object key is built from the job id, so no name can reach outside
/// the job's own prefix.
pub async fn download(
    state: &AppState,
    caller: &Principal,
    id: &str,
    file: &str,
) -> Result<Response, ApiError> {
    let job = find(state, caller, id).await?;
    if domain::safe_relative_path(file).is_none() {
        return Err(ApiError::BadRequest(
            "the file name must be a relative path inside the job's output".into(),
        ));
    }
    let listed = job.output_files.iter().any(|f| f == file);
    let key = artifact_keys::output(&job.id, file);
    let (true, Some(key)) = (listed, key) else {
        return Err(ApiError::NotFound("file not found".into()));
    };
    let artifact = match state.artifacts.get(&key).await {
        Ok(artifact) => artifact,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(ApiError::NotFound("file not found".into()));
        }
        Err(e) => return Err(ApiError::from_port(ARTIFACTS, e)),
    };
    let name = file.rsplit('/').next().unwrap_or(file);
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_str(mime.as_ref())
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(artifact.len)),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&content_disposition(name))
                .unwrap_or(HeaderValue::from_static("attachment")),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    let body = Body::from_stream(ReaderStream::new(artifact.body));
    Ok((headers, body).into_response())
}

/// `attachment` with an ASCII `filename` fallback and the exact name as RFC 5987 `filename*`.
pub fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        let attr_char = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        if attr_char {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Which of a job's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "stdout" => Some(LogStream::Stdout),
            "stderr" => Some(LogStream::Stderr),
            _ => None,
        }
    }

    fn key(self, id: &JobId) -> String {
        match self {
            LogStream::Stdout => artifact_keys::stdout(id),
            LogStream::Stderr => artifact_keys::stderr(id),
        }
    }
}

/// A log's text as stored so far; empty when the worker has not uploaded it yet.
pub async fn read_log(state: &AppState, job: &Job, stream: LogStream) -> Result<String, ApiError> {
    let mut artifact = match state.artifacts.get(&stream.key(&job.id)).await {
        Ok(artifact) => artifact,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(ApiError::from_port(ARTIFACTS, e)),
    };
    let mut bytes = Vec::with_capacity(artifact.len.min(1 << 20) as usize);
    if let Err(e) = artifact.body.read_to_end(&mut bytes).await {
        tracing::warn!(job_id = %job.id, error = %e, "reading a log failed");
        return Err(ApiError::Unavailable(format!(
            "{ARTIFACTS} is unavailable, try again"
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
