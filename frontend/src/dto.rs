//! Request and response bodies of the API, with their OpenAPI schemas. They are built
//! from the domain types and never expose store documents or credentials.

use jobq_common::domain::{
    AttemptOutcome, AttemptRecord, Job, JobSpec, JobStatus, Observation, from_unix_ms,
};
use jobq_common::plan::Estimate;
use jobq_common::repo_url::RepoUrl;
use jobq_common::settings::FrontendSettings;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// A job's state.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = JobStatus)]
#[allow(dead_code)] // only describes `jobq_common::domain::JobStatus` in the OpenAPI document
#[serde(rename_all = "lowercase")]
pub enum JobStatusDoc {
    Queued,
    Running,
    Finished,
    Failed,
    Cancelled,
}

/// What to run. Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitJob {
    /// Git URL (https, http, git, ssh or `user@host:path`); private repositories carry
    /// credentials in it, which are never shown again.
    #[schema(value_type = String, example = "https://github.com/x/y.git")]
    #[serde(default)]
    pub url: Option<Value>,
    /// Arguments for `npm run start --`, split into words like a shell would (quotes
    /// respected) but never run by one. A list of strings is accepted too.
    #[schema(value_type = Option<String>, example = "--size 10 \"a b\"")]
    #[serde(default)]
    pub args: Option<Value>,
    /// Text written to `config.json`; any other JSON value is written as its JSON text.
    #[schema(value_type = Option<String>, example = "{\"n\": 3}")]
    #[serde(default)]
    pub config: Option<Value>,
    /// Higher first while jobs wait, from -100 to 100 (default 0).
    #[schema(value_type = Option<i32>, example = 10)]
    #[serde(default)]
    pub priority: Option<Value>,
    /// Extra attempts after a failed run, with exponential back-off (default 0; at most
    /// `scheduling.max_retries`). A cancel or a time limit is never retried.
    #[schema(value_type = Option<u32>, example = 2)]
    #[serde(default)]
    pub retries: Option<Value>,
    /// RFC 3339: the job waits until then (at most 366 days ahead).
    #[schema(value_type = Option<String>, example = "2026-12-02T02:00:00Z")]
    #[serde(default, rename = "notBefore")]
    pub not_before: Option<Value>,
    /// A job still waiting this many seconds after the submit ends `cancelled`
    /// (`expired`) and never starts (1 to 2592000).
    #[schema(value_type = Option<u64>, example = 600)]
    #[serde(default, rename = "expireAfterSecs")]
    pub expire_after_secs: Option<Value>,
    /// RFC 3339, finish by: within a priority, jobs with a deadline wait earliest deadline
    /// first, ahead of those without; the `deadline` policy adds workers to meet it, and the
    /// job is flagged `deadlineAtRisk` when the plan predicts it late (in the future, at
    /// most 366 days ahead).
    #[schema(value_type = Option<String>, example = "2026-12-01T18:00:00Z")]
    #[serde(default)]
    pub deadline: Option<Value>,
    /// What a run is expected to take, seconds (above 0, at most 2592000); without it the
    /// observer's learned service time of the repository is used.
    #[schema(value_type = Option<f64>, example = 30)]
    #[serde(default, rename = "expectedDurationSecs")]
    pub expected_duration_secs: Option<Value>,
}

impl SubmitJob {
    /// Checks every field against the limits and the URL policy.
    pub fn into_spec(
        self,
        limits: &FrontendSettings,
        allow_local_repos: bool,
    ) -> Result<JobSpec, ApiError> {
        let url = match self.url {
            None | Some(Value::Null) => {
                return Err(ApiError::Unprocessable("url is required".into()));
            }
            Some(Value::String(url)) => url,
            Some(_) => return Err(ApiError::Unprocessable("url must be a string".into())),
        };
        let url = RepoUrl::parse(&url, allow_local_repos)
            .map_err(|why| ApiError::Unprocessable(format!("url refused: {why}")))?
            .into_string();
        let args = match self.args {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(args)) => args,
            Some(Value::Array(items)) => {
                let words = items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s),
                        _ => Err(ApiError::Unprocessable(
                            "args must be a string or a list of strings".into(),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                shell_words::join(words)
            }
            Some(_) => {
                return Err(ApiError::Unprocessable(
                    "args must be a string or a list of strings".into(),
                ));
            }
        };
        if args.len() > limits.max_args_bytes {
            return Err(ApiError::TooLarge(format!(
                "args is longer than {} bytes",
                limits.max_args_bytes
            )));
        }
        // A NUL cannot reach a process's argv or be told apart in a file name: refused here
        // rather than failing the job later.
        if args.contains('\0') {
            return Err(ApiError::Unprocessable(
                "args must not contain NUL bytes".into(),
            ));
        }
        shell_words::split(&args).map_err(|e| {
            ApiError::Unprocessable(format!("args cannot be split into words: {e}"))
        })?;
        let config = match self.config {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(config)) => config,
            Some(other) => other.to_string(),
        };
        if config.contains('\0') {
            return Err(ApiError::Unprocessable(
                "config must not contain NUL bytes".into(),
            ));
        }
        if config.len() > limits.max_config_bytes {
            return Err(ApiError::TooLarge(format!(
                "config is longer than {} bytes",
                limits.max_config_bytes
            )));
        }
        Ok(JobSpec { url, args, config })
    }
}

/// Answer of `POST /api/addJob`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Submitted {
    pub job_id: String,
    /// RFC 3339: when the observer's plan predicts the job to start (absent without a plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_start_at: Option<String>,
    /// RFC 3339: when the plan predicts it to finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_finish_at: Option<String>,
}

/// A job as the original routes show it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    pub id: String,
    #[schema(value_type = JobStatusDoc)]
    pub status: JobStatus,
    /// Files the job wrote under `output/`, relative to it.
    pub output_files: Vec<String>,
}

impl From<&Job> for JobSummary {
    fn from(job: &Job) -> Self {
        JobSummary {
            id: job.id.to_string(),
            status: job.status,
            output_files: job.output_files.clone(),
        }
    }
}

/// Answer of a cancel through the original route.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    pub id: String,
    /// `cancelled`, or the terminal state the job had already reached.
    #[schema(value_type = JobStatusDoc)]
    pub status: JobStatus,
}

/// A job as the resource routes show it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    /// The user who submitted it.
    pub owner: String,
    #[schema(value_type = JobStatusDoc)]
    pub status: JobStatus,
    /// 1 for the first run; higher when a lost worker's job ran again.
    pub attempt: u32,
    /// RFC 3339.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    /// Time from queued to the end, in milliseconds.
    pub elapsed_ms: Option<u64>,
    pub output_files: Vec<String>,
    /// Why the job failed, in words.
    pub failure: Option<String>,
    /// The repository URL with any credentials removed.
    pub url: String,
    pub args: String,
    /// Every attempt that ended, oldest first (the running one is not listed yet).
    #[serde(default)]
    pub attempts: Vec<AttemptView>,
    /// Higher first while jobs wait.
    #[serde(default)]
    pub priority: i32,
    /// Extra attempts after a failed run that the submit asked for.
    #[serde(default)]
    pub retries: u32,
    /// RFC 3339: the job waits until then.
    #[serde(default)]
    pub not_before: Option<String>,
    /// RFC 3339: a failed run's retry waits until then.
    #[serde(default)]
    pub retry_at: Option<String>,
    /// RFC 3339: a job still waiting then ends `cancelled` (expired).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// RFC 3339: finish by.
    #[serde(default)]
    pub deadline: Option<String>,
    /// What the submit said a run takes, seconds.
    #[serde(default)]
    pub expected_duration_secs: Option<f64>,
    /// The observer's plan predicts the job to finish after its deadline.
    #[serde(default)]
    pub deadline_at_risk: bool,
    /// RFC 3339: the predicted start of a waiting job (the actual start of a running one),
    /// from the observer's newest plan; absent for an ended job or without a plan.
    #[serde(default)]
    pub estimated_start_at: Option<String>,
    /// RFC 3339: the predicted finish of a waiting or running job.
    #[serde(default)]
    pub estimated_finish_at: Option<String>,
}

/// How one attempt ended.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AttemptOutcome)]
#[allow(dead_code)] // only describes `jobq_common::domain::AttemptOutcome` in the OpenAPI document
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcomeDoc {
    Finished,
    Failed,
    Cancelled,
    /// Its worker gave the job back for another attempt (shutting down, or the artifact
    /// store stayed unavailable).
    HandedBack,
    /// Its worker was lost (the lease expired, or the process restarted).
    Lost,
}

/// One ended attempt of a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub ended_at: String,
    #[schema(value_type = AttemptOutcomeDoc)]
    pub outcome: AttemptOutcome,
    /// Why it ended so, in words: the failure, or why it was handed back or lost.
    pub reason: Option<String>,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        AttemptView {
            attempt: a.attempt,
            worker: a.worker.clone(),
            started_at: a.started_at.map(rfc3339),
            ended_at: rfc3339(a.ended_at),
            outcome: a.outcome,
            reason: a.reason.clone(),
        }
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        JobView {
            id: job.id.to_string(),
            owner: job.owner.clone(),
            status: job.status,
            attempt: job.attempt,
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            exit_code: job.exit_code,
            elapsed_ms: job.elapsed_ms,
            output_files: job.output_files.clone(),
            failure: job.failure.as_ref().map(ToString::to_string),
            url: job.spec.redacted_url(),
            args: job.spec.args.clone(),
            attempts: job.attempts.iter().map(AttemptView::from).collect(),
            priority: job.schedule.priority,
            retries: job.schedule.retries,
            not_before: job.schedule.not_before.map(rfc3339),
            retry_at: job.retry_at.map(rfc3339),
            expires_at: job.schedule.expires_at.map(rfc3339),
            deadline: job.schedule.deadline.map(rfc3339),
            expected_duration_secs: job.schedule.expected_secs,
            deadline_at_risk: job.deadline_at_risk,
            estimated_start_at: None,
            estimated_finish_at: None,
        }
    }
}

impl JobView {
    /// The view with the plan's estimates of the job (its flag too, if the plan is newer).
    pub fn estimated(mut self, estimate: Option<Estimate>) -> Self {
        if let Some(e) = estimate {
            self.estimated_start_at = Some(rfc3339(from_unix_ms(e.start_ms)));
            self.estimated_finish_at = Some(rfc3339(from_unix_ms(e.finish_ms)));
            self.deadline_at_risk = e.at_risk;
        }
        self
    }
}

impl Submitted {
    pub fn new(job: &Job, estimate: Option<Estimate>) -> Self {
        Submitted {
            job_id: job.id.to_string(),
            estimated_start_at: estimate.map(|e| rfc3339(from_unix_ms(e.start_ms))),
            estimated_finish_at: estimate.map(|e| rfc3339(from_unix_ms(e.finish_ms))),
        }
    }
}

/// One page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// How many jobs there are in all.
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
}

/// Which jobs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Jobs to skip (default 0).
    pub offset: Option<u64>,
    /// Jobs per page (default 20, at most 100).
    pub limit: Option<u64>,
    /// With the admin role: every user's jobs instead of the caller's own.
    pub all: Option<bool>,
    /// Only jobs in this status (`queued`, `running`, `finished`, `failed`, `cancelled`).
    pub status: Option<String>,
}

/// Which jobs the original status route lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// With the admin role: every user's jobs instead of the caller's own.
    pub all: Option<bool>,
}

/// Which log to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// `stdout` or `stderr`: answer that log alone as `text/plain`.
    pub stream: Option<String>,
    /// Follow the logs as they grow, as Server-Sent Events (`stdout`, `stderr`, then `end`
    /// when the job has ended).
    pub follow: Option<bool>,
}

/// A job's logs; while it runs, what was stored so far.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Logs {
    pub stdout: String,
    pub stderr: String,
}

/// Answer of `GET /auth/{user}/{password}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub token: String,
}

/// Credentials for `POST /auth/token`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Answer of `POST /auth/token`, shaped like an OAuth 2 token answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenGrant {
    pub token: String,
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
}

/// Answer of `GET /health/`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// One observation of the load, as the observer measured it in one period.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservationView {
    /// Jobs queued per second in the period.
    pub avg_rate_of_arrival: f64,
    /// Jobs started per second in the period.
    pub avg_rate_of_service: f64,
    /// Jobs ended per second in the period.
    pub avg_rate_of_finished: f64,
    /// Mean time (seconds) from queued to the end of the jobs ended in the period.
    pub avg_response_time: f64,
    /// End of the period, milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub queue_depth: u64,
    pub workers: u32,
    pub busy_slots: u32,
    pub queue_wait_p50: f64,
    pub queue_wait_p95: f64,
    pub desired_workers: u32,
    pub policy: String,
    /// Waiting and running jobs with a deadline, as the period's plan saw them.
    #[serde(default)]
    pub deadline_jobs: u32,
    /// Of those, the jobs the plan predicts to finish after their deadline.
    #[serde(default)]
    pub deadlines_at_risk: u32,
}

impl From<Observation> for ObservationView {
    fn from(o: Observation) -> Self {
        ObservationView {
            avg_rate_of_arrival: o.avg_rate_of_arrival,
            avg_rate_of_service: o.avg_rate_of_service,
            avg_rate_of_finished: o.avg_rate_of_finished,
            avg_response_time: o.avg_response_time,
            timestamp: o.timestamp,
            queue_depth: o.queue_depth,
            workers: o.workers,
            busy_slots: o.busy_slots,
            queue_wait_p50: o.queue_wait_p50,
            queue_wait_p95: o.queue_wait_p95,
            desired_workers: o.desired_workers,
            policy: o.policy,
            deadline_jobs: o.deadline_jobs,
            deadlines_at_risk: o.deadlines_at_risk,
        }
    }
}
