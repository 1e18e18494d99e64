//! Idempotent submits: the `Idempotency-Key` header of `POST /api/v1/jobs` and
//! `POST /api/addJob`. The rule (same key, same owner, within 24 h → the same job; another
//! body → 422) is [`jobq_common::idempotency::claim`]; this module is its HTTP side and the
//! order of the writes (docs/scheduling.md, "Idempotent submit"):
//!
//! 1. the job's id is chosen, then the key's record (that id, the body's hash) is stored;
//! 2. the submit whose record was stored stores the job and dispatches it as any submit;
//! 3. a submit that finds a record of the same body answers that job; if the job is not
//!    stored (the first submit is still between its two writes, or failed or crashed
//!    there), it stores the job under that id itself. Whichever submit stores the job
//!    dispatches it; the unique job id makes the second insert a no-op.
//!
//! A job the queue refused is cancelled as always, and its key released, so the client's
//! retry makes a new job instead of answering a cancelled one.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use jobq_common::domain::{Job, JobId, from_unix_ms, unix_ms};
use jobq_common::idempotency::{self, Claim, IdempotencyKey, KeyRecord};
use jobq_common::ports::Principal;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::AppState;
use crate::dto::SubmitJob;
use crate::error::{ApiError, PortResultExt};
use crate::jobs;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The answer header of a replayed submit: `Idempotent-Replayed: true`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

const STORE: &str = "the job store";

/// The `Idempotency-Key` of a request, if it has one; a key that is empty, longer than 255
/// characters, not printable ASCII or given twice is a 400.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(&IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(ApiError::BadRequest(
                "give one Idempotency-Key header, not several".into(),
            ));
        }
        IdempotencyKey::from_bytes(value.as_bytes())
            .map(|key| Self(Some(key)))
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

/// A submit's job, and whether it was made by an earlier submit with the same key.
#[derive(Debug)]
pub struct Submission {
    pub job: Job,
    pub replayed: bool,
}

impl Submission {
    /// The answer headers that say a submit was replayed (none for a new job).
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        if self.replayed {
            vec![(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))]
        } else {
            Vec::new()
        }
    }
}

/// Submits `request`; with a key, at most one job per key, owner and 24 h (module comment).
pub async fn submit(
    state: &AppState,
    caller: &Principal,
    request: SubmitJob,
    key: Option<IdempotencyKey>,
) -> Result<Submission, ApiError> {
    let Some(key) = key else {
        let job = jobs::submit(state, caller, request).await?;
        return Ok(Submission {
            job,
            replayed: false,
        });
    };
    let (mut job, requested) = jobs::prepare(state, caller, request)?;
    let now = OffsetDateTime::now_utc();
    let record = KeyRecord {
        job_id: job.id.clone(),
        body_hash: idempotency::body_hash(&job.spec, &requested),
        // Stores keep milliseconds: the record read back must equal this one.
        created_at: from_unix_ms(unix_ms(now)),
    };
    let deadline = Instant::now() + Duration::from_millis(state.limits.store_retry_ms);
    let claimed = jobs::retry_store(deadline, "idempotency key", |_| {
        idempotency::claim(
            state.idempotency.as_ref(),
            &caller.username,
            &key,
            &record,
            now,
        )
    })
    .await
    .or_api(STORE)?;
    match claimed {
        Claim::Won => {
            // Scheduled only now, so a replay is never refused for the caller's full queue.
            if let Err(refused) = jobs::schedule_job(state, caller, &mut job, requested).await {
                release(state, caller, &key, &job.id).await;
                return Err(refused);
            }
            store_and_hand_over(state, caller, &key, job, false).await
        }
        Claim::Conflict => {
            metrics::counter!("jobq_submits_idempotency_conflicts_total").increment(1);
            Err(ApiError::Unprocessable(
                "this Idempotency-Key was used for a different job in the last 24 h".into(),
            ))
        }
        Claim::Replay(id) => {
            metrics::counter!("jobq_submits_replayed_total").increment(1);
            let found = state.jobs.get(&id).await.or_api(STORE)?;
            let submission = match found {
                Some(job) => Submission {
                    job,
                    replayed: true,
                },
                // The first submit has not stored its job (yet): store it under its id.
                None => {
                    let mut job = Job { id, ..job };
                    jobs::schedule_job(state, caller, &mut job, requested).await?;
                    store_and_hand_over(state, caller, &key, job, true).await?
                }
            };
            // The record is named by the caller and the key, so its job is the caller's;
            // anything else is a bug, and must not show another user's job.
            if submission.job.owner != caller.username {
                return Err(ApiError::Internal(format!(
                    "idempotency record of {} names job {} of another owner",
                    caller.username, submission.job.id
                )));
            }
            tracing::info!(job_id = %submission.job.id, owner = %caller.username, "submit replayed");
            Ok(submission)
        }
    }
}

/// Stores `job` (another submit of the key may store it first: then that one dispatches
/// it) and hands it to the queue; a job the queue refused releases its key.
async fn store_and_hand_over(
    state: &AppState,
    caller: &Principal,
    key: &IdempotencyKey,
    job: Job,
    replayed: bool,
) -> Result<Submission, ApiError> {
    let at = Instant::now();
    if let Some(stored) = jobs::store_new(state, &job, true).await? {
        return Ok(Submission {
            job: stored,
            replayed,
        });
    }
    let id = job.id.clone();
    match jobs::hand_over(state, job, at).await {
        Ok(job) => Ok(Submission { job, replayed }),
        Err(refused) => {
            release(state, caller, key, &id).await;
            Err(refused)
        }
    }
}

/// Frees `key` of a job that was not accepted, so the client's retry makes a new one.
async fn release(state: &AppState, caller: &Principal, key: &IdempotencyKey, id: &JobId) {
    let released =
        idempotency::release(state.idempotency.as_ref(), &caller.username, key, id).await;
    if let Err(e) = released {
        tracing::error!(job_id = %id, error = %e, "could not release the idempotency key of a job not accepted");
    }
}
