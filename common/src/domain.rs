//! Domain types shared by every part: jobs, their states and transitions, events and
//! observations. Nothing here knows about Kafka, MongoDB, S3 or HTTP.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A job's identity: a UUIDv7 in its canonical text form, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Error for text that is not a job id.
#[derive(Debug, thiserror::Error)]
#[error("not a job id: {0:?}")]
pub struct InvalidJobId(String);

impl FromStr for JobId {
    type Err = InvalidJobId;

    /// Only canonical UUIDs are job ids; anything else (path tricks, other ids) is refused
    /// before it reaches a store query.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uuid =
            uuid::Uuid::parse_str(s).map_err(|_| InvalidJobId(s.chars().take(64).collect()))?;
        Ok(Self(uuid.hyphenated().to_string()))
    }
}

/// Milliseconds since the Unix epoch: how stores keep times, so every backend compares
/// them as plain integers.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The inverse of [`unix_ms`]; out-of-range values become the epoch.
pub fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// What the user asked to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Git URL; may carry credentials, so never log or return it unredacted.
    pub url: String,
    /// Text appended to `npm run start --`, split like a shell would, never run by one.
    #[serde(default)]
    pub args: String,
    /// Text written to `config.json` at the repository root.
    #[serde(default)]
    pub config: String,
}

impl JobSpec {
    /// The URL with any user-info (credentials) removed, safe for logs and answers.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Removes `user:password@` from a URL-like string (`scheme://user:pw@host/...`); see
/// [`crate::repo_url::redact`].
pub fn redact_url(url: &str) -> String {
    crate::repo_url::redact(url)
}

/// The states of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Finished,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The allowed transitions: `queued → running → finished | failed | cancelled`,
    /// `queued → cancelled`, `queued → failed` (poison: too many attempts), and
    /// `running → queued` when the worker's lease expired (a new attempt).
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Queued, Failed)
                | (Running, Finished)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Running, Queued)
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job status {s:?}"))
    }
}

/// Why a job failed, as stored and shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureReason {
    CloneFailed {
        detail: String,
    },
    NoPackageJson,
    NoStartScript,
    ExitCode {
        code: i32,
    },
    Killed {
        signal: i32,
    },
    Timeout {
        limit_secs: u64,
    },
    /// The job's processes together used more memory than `worker.memory_limit_mb`.
    MemoryLimit {
        limit_mb: u64,
    },
    /// The job tried to have more processes at once than `worker.max_processes`.
    ProcessLimit {
        limit: u64,
    },
    /// The job left more than `worker.max_output_mb` under `output/` (none of it is kept).
    OutputLimit {
        limit_mb: u64,
    },
    /// The job's folder grew past `worker.max_job_dir_mb`.
    JobDirLimit {
        limit_mb: u64,
    },
    UploadFailed {
        detail: String,
    },
    WorkerLost {
        attempts: u32,
    },
    /// It waited longer than its `expireAfterSecs` and never started (status `cancelled`).
    Expired {
        after_secs: u64,
    },
    Internal {
        detail: String,
    },
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::CloneFailed { detail } => write!(f, "clone failed: {detail}"),
            FailureReason::NoPackageJson => f.write_str("no package.json"),
            FailureReason::NoStartScript => f.write_str("no start script in package.json"),
            FailureReason::ExitCode { code } => write!(f, "exit code {code}"),
            FailureReason::Killed { signal } => write!(f, "killed by signal {signal}"),
            FailureReason::Timeout { limit_secs } => write!(f, "timeout after {limit_secs} s"),
            FailureReason::MemoryLimit { limit_mb } => {
                write!(f, "memory limit of {limit_mb} MiB exceeded")
            }
            FailureReason::ProcessLimit { limit } => write!(f, "process limit of {limit} exceeded"),
            FailureReason::OutputLimit { limit_mb } => {
                write!(f, "output limit of {limit_mb} MiB exceeded")
            }
            FailureReason::JobDirLimit { limit_mb } => {
                write!(f, "job folder limit of {limit_mb} MiB exceeded")
            }
            FailureReason::UploadFailed { detail } => write!(f, "upload failed: {detail}"),
            FailureReason::WorkerLost { attempts } => {
                write!(f, "worker lost after the last attempt ({attempts})")
            }
            FailureReason::Expired { after_secs } => {
                write!(f, "expired: still waiting after {after_secs} s")
            }
            FailureReason::Internal { detail } => write!(f, "internal error: {detail}"),
        }
    }
}

/// A job as the store holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// The subject (user name) that submitted it.
    pub owner: String,
    pub spec: JobSpec,
    pub status: JobStatus,
    /// 1 for the first run; grows by one each time a lost worker's job is re-queued.
    pub attempt: u32,
    pub lease_owner: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub exit_code: Option<i32>,
    pub elapsed_ms: Option<u64>,
    pub output_files: Vec<String>,
    pub failure: Option<FailureReason>,
    /// Every attempt that ended, oldest first: the current one is not in it while it runs.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// How it competes for a slot, fixed at submit.
    #[serde(default)]
    pub schedule: Schedule,
    /// After a failed run with retries left: the job waits until then for its next attempt.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub retry_at: Option<OffsetDateTime>,
    /// While it runs under its owner's running limit: which of the owner's slots it holds
    /// (the store keeps each slot unique, so the limit holds under concurrent claims).
    #[serde(default)]
    pub quota_slot: Option<u32>,
    /// The observer's last plan predicted it to finish after its deadline.
    #[serde(default)]
    pub deadline_at_risk: bool,
}

/// How a job competes for a slot (docs/scheduling.md): quotas first, then priority, then
/// fair share between users, then age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Schedule {
    /// Higher first; within [`Schedule::PRIORITIES`].
    pub priority: i32,
    /// The job waits until then.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// Extra attempts after a failed run.
    pub retries: u32,
    /// A job still waiting then ends `cancelled` (expired) and never starts.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The owner's running limit when it was submitted (`None`: no limit).
    pub max_running: Option<u32>,
    /// Its place in its owner's share: waiting jobs of several users are taken in this
    /// order (start-time fair queueing, [`crate::scheduling::fair_tag`]).
    pub fair_tag: f64,
    /// Finish by: within a priority, jobs with a deadline are taken earliest deadline first,
    /// before those without; the observer's `deadline` policy plans the fleet to meet it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deadline: Option<OffsetDateTime>,
    /// What the submitter expects a run to take, seconds (`None`: learned per repository).
    #[serde(default)]
    pub expected_secs: Option<f64>,
}

impl Schedule {
    /// The range a priority must lie in.
    pub const PRIORITIES: std::ops::RangeInclusive<i32> = -100..=100;
}

impl Job {
    /// A new queued job, first attempt.
    pub fn new(owner: impl Into<String>, spec: JobSpec, now: OffsetDateTime) -> Self {
        Job {
            id: JobId::new(),
            owner: owner.into(),
            spec,
            status: JobStatus::Queued,
            attempt: 1,
            lease_owner: None,
            lease_expires_at: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            exit_code: None,
            elapsed_ms: None,
            output_files: Vec::new(),
            failure: None,
            attempts: Vec::new(),
            schedule: Schedule::default(),
            retry_at: None,
            quota_slot: None,
            deadline_at_risk: false,
        }
    }

    /// From when the job may start: its creation, its `not_before`, its next retry,
    /// whichever is latest.
    pub fn ready_at(&self) -> OffsetDateTime {
        ready_at(self.created_at, self.schedule.not_before, self.retry_at)
    }

    /// What holds the job back: the later of its `not_before` and its next retry (`None`: it
    /// may start at once). Claims compare this, not the creation time, so a frontend's clock
    /// ahead of a worker's never delays a job.
    pub fn held_until(&self) -> Option<OffsetDateTime> {
        self.schedule.not_before.max(self.retry_at)
    }

    /// How many of its runs failed and were retried.
    pub fn retried(&self) -> u32 {
        self.attempts
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Failed)
            .count() as u32
    }
}

/// The latest of a job's creation, its `not_before` and its next retry.
pub fn ready_at(
    created: OffsetDateTime,
    not_before: Option<OffsetDateTime>,
    retry_at: Option<OffsetDateTime>,
) -> OffsetDateTime {
    [Some(created), not_before, retry_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(created)
}

/// How one attempt of a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Finished,
    Failed,
    Cancelled,
    /// Its worker gave the job back for another attempt (shutting down, or it could not
    /// store the job's files).
    HandedBack,
    /// Its worker was lost: the lease expired, or the process that held it restarted.
    Lost,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Finished => "finished",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::HandedBack => "handed_back",
            AttemptOutcome::Lost => "lost",
        }
    }
}

/// One attempt of a job that ended, as its history keeps it. Serialised with times as
/// milliseconds since the Unix epoch, the stores' form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    /// The worker that held the lease.
    pub worker: Option<String>,
    #[serde(with = "unix_ms_option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "unix_ms_serde")]
    pub ended_at: OffsetDateTime,
    pub outcome: AttemptOutcome,
    /// Why it ended so, in words (a failure, why it was handed back or lost).
    pub reason: Option<String>,
}

mod unix_ms_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(super::unix_ms(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        i64::deserialize(d).map(super::from_unix_ms)
    }
}

mod unix_ms_option {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::unix_ms(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<i64>::deserialize(d).map(|ms| ms.map(super::from_unix_ms))
    }
}

/// How a run ended, as the worker reports it in the terminal transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub elapsed_ms: u64,
    pub output_files: Vec<String>,
    pub failure: Option<FailureReason>,
}

/// The message handed to workers on the dispatch queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    pub id: JobId,
    pub attempt: u32,
}

/// One state transition, published on the event bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    pub job_id: JobId,
    pub attempt: u32,
    pub from: Option<JobStatus>,
    pub to: JobStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The worker that made the transition, when a worker made it.
    pub worker: Option<String>,
    /// For terminal states: time from queued to the end, in milliseconds.
    pub elapsed_ms: Option<u64>,
    /// For `running`: time the job waited in the queue, in milliseconds.
    pub waited_ms: Option<u64>,
    /// The job's repository URL, credentials removed: the observer learns service times
    /// per repository from the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The job has a deadline (the observer weighs arrivals with and without one apart).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_deadline: bool,
    /// Set on a notice that is not a transition (`from` is `to`): the observer's plan now
    /// predicts the job to finish after its deadline (`true`), or in time again (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at_risk: Option<bool>,
}

impl JobEvent {
    /// The event of a transition from `from` (`None` for a new job) to the state `job` is in
    /// now, made by `worker` (when a worker made it). The one place events are made: terminal
    /// events carry the time since the job was queued, `running` the time it waited.
    pub fn after(
        job: &Job,
        from: Option<JobStatus>,
        worker: Option<String>,
        at: OffsetDateTime,
    ) -> Self {
        let since_created = (at - job.created_at).whole_milliseconds().max(0) as u64;
        // A job waits from when it may start (its `not_before`, its next retry).
        let since_ready = (at - job.ready_at()).whole_milliseconds().max(0) as u64;
        JobEvent {
            job_id: job.id.clone(),
            attempt: job.attempt,
            from,
            to: job.status,
            at,
            worker,
            elapsed_ms: job.status.is_terminal().then_some(since_created),
            waited_ms: (job.status == JobStatus::Running).then_some(since_ready),
            repo: Some(job.spec.redacted_url()),
            has_deadline: job.schedule.deadline.is_some(),
            deadline_at_risk: None,
        }
    }

    /// The notice that the observer's plan predicts `job` to finish after its deadline
    /// (`at_risk`), or in time again: no transition, `from` is the job's state.
    pub fn deadline_notice(job: &Job, at_risk: bool, at: OffsetDateTime) -> Self {
        JobEvent {
            job_id: job.id.clone(),
            attempt: job.attempt,
            from: Some(job.status),
            to: job.status,
            at,
            worker: None,
            elapsed_ms: None,
            waited_ms: None,
            repo: None,
            has_deadline: job.schedule.deadline.is_some(),
            deadline_at_risk: Some(at_risk),
        }
    }

    /// Whether it is a notice rather than a transition.
    pub fn is_notice(&self) -> bool {
        self.from == Some(self.to)
    }
}

/// What the observer measured in one period. The first five fields keep the original
/// design's names and meanings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// Jobs queued in the period.
    pub avg_rate_of_arrival: f64,
    /// Jobs that went from queued to running in the period.
    pub avg_rate_of_service: f64,
    /// Jobs that reached a terminal state in the period.
    pub avg_rate_of_finished: f64,
    /// Mean elapsed time (seconds) of the jobs finished in the period.
    pub avg_response_time: f64,
    /// When the period ended, milliseconds since the Unix epoch.
    pub timestamp: i64,
    #[serde(default)]
    pub queue_depth: u64,
    #[serde(default)]
    pub workers: u32,
    #[serde(default)]
    pub busy_slots: u32,
    #[serde(default)]
    pub queue_wait_p50: f64,
    #[serde(default)]
    pub queue_wait_p95: f64,
    #[serde(default)]
    pub desired_workers: u32,
    #[serde(default)]
    pub policy: String,
    /// Waiting and running jobs with a deadline, as the period's plan saw them.
    #[serde(default)]
    pub deadline_jobs: u32,
    /// Of those, the jobs the plan predicts to finish after their deadline.
    #[serde(default)]
    pub deadlines_at_risk: u32,
}

/// Object keys of a job's artifacts. They are built from the job id and, for output
/// files, from a path the worker found under `output/` and checked with [`safe_relative_path`].
pub mod artifact_keys {
    use super::JobId;

    pub fn stdout(id: &JobId) -> String {
        format!("jobs/{id}/logs/stdout")
    }

    pub fn stderr(id: &JobId) -> String {
        format!("jobs/{id}/logs/stderr")
    }

    /// Prefix of every output file of a job.
    pub fn output_prefix(id: &JobId) -> String {
        format!("jobs/{id}/output/")
    }

    /// Key of an output file; `None` when the name is not a safe relative path.
    pub fn output(id: &JobId, relative: &str) -> Option<String> {
        super::safe_relative_path(relative).map(|p| format!("jobs/{id}/output/{p}"))
    }
}

/// A relative file path with `/` separators, no empty, `.` or `..` segments, no leading `/`,
/// no backslashes or control characters; `None` otherwise. Guards object keys and downloads
/// against path traversal.
pub fn safe_relative_path(path: &str) -> Option<&str> {
    if path.is_empty() || path.len() > 1024 || path.starts_with('/') {
        return None;
    }
    let ok = path.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && !seg.chars().any(|c| c.is_control() || c == '\\')
    });
    ok.then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_transitions_match_the_design() {
        use JobStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Queued.can_become(Cancelled));
        assert!(Running.can_become(Finished));
        assert!(Running.can_become(Failed));
        assert!(Running.can_become(Cancelled));
        assert!(Running.can_become(Queued));
        for terminal in [Finished, Failed, Cancelled] {
            assert!(terminal.is_terminal());
            for next in JobStatus::ALL {
                assert!(!terminal.can_become(next), "{terminal} -> {next}");
            }
        }
        assert!(!Queued.can_become(Finished));
        assert!(!Queued.can_become(Queued));
    }

    #[test]
    fn status_round_trips_through_text_and_json() {
        for st in JobStatus::ALL {
            assert_eq!(st.as_str().parse::<JobStatus>().unwrap(), st);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn job_ids_parse_only_uuids() {
        let id = JobId::new();
        assert_eq!(id.as_str().parse::<JobId>().unwrap(), id);
        assert!("../etc/passwd".parse::<JobId>().is_err());
        assert!("".parse::<JobId>().is_err());
    }

    #[test]
    fn credentials_are_removed_from_urls() {
        assert_eq!(
            redact_url("https://user:tok@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("https://github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(redact_url("git://h/a@b"), "git://h/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn only_safe_relative_paths_become_keys() {
        let id = JobId::new();
        assert_eq!(
            artifact_keys::output(&id, "a/b/c.txt"),
            Some(format!("jobs/{id}/output/a/b/c.txt"))
        );
        assert!(artifact_keys::output(&id, "é ü.txt").is_some());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a\nb",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn observation_keeps_the_original_field_names() {
        let json = serde_json::to_value(Observation::default()).unwrap();
        for key in [
            "avgRateOfArrival",
            "avgRateOfService",
            "avgRateOfFinished",
            "avgResponseTime",
            "timestamp",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
