//! Running one claimed job end to end: fetch, prepare, run, upload, and the terminal
//! transition, while a companion task renews the lease and notices cancellation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jobq_common::domain::{
    Dispatch, FailureReason, Job, JobEvent, JobStatus, Outcome, artifact_keys,
};
use jobq_common::lifecycle::Retry;
use jobq_common::ports::{ArtifactStore, DispatchQueue, EventBus, JobLeases};
use jobq_common::repo_url::RepoUrl;
use jobq_common::settings::{SchedulingSettings, WorkerSettings};
use jobq_common::store::{Held, Pick};
use jobq_common::{ErrorKind, PortResult};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::executor::{self, JobDir, Limits, RunEnd};
use crate::repo::RepoCache;
use crate::sandbox::{Sandbox, SandboxError};

/// The outside systems a runner talks to.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn JobLeases>,
    pub events: Arc<dyn EventBus>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub dispatch: Arc<dyn DispatchQueue>,
}

/// Least time between two uploads of a running job's logs.
const LOG_UPLOAD_EVERY: Duration = Duration::from_secs(2);

/// Records how long one stage of a job took, up to now, and returns now: the
/// `jobq_worker_stage_duration_seconds{stage}` histogram, and a debug event on the
/// `jobq_worker::stages` target (`RUST_LOG=info,jobq_worker::stages=debug`) that
/// scripts/bench-pipeline reads for its per-stage breakdown of a job.
pub(crate) fn stage_done(stage: &'static str, since: Instant) -> Instant {
    let now = Instant::now();
    stage_took(stage, now.saturating_duration_since(since));
    now
}

/// Records that one stage of a job took `took` (see [`stage_done`]).
pub(crate) fn stage_took(stage: &'static str, took: Duration) {
    metrics::histogram!("jobq_worker_stage_duration_seconds", "stage" => stage)
        .record(took.as_secs_f64());
    tracing::debug!(target: "jobq_worker::stages", stage, us = took.as_micros() as u64, "stage done");
}

/// What storing a run's files came to.
#[derive(Debug)]
enum Finished {
    /// Every file is stored (or was refused for good, which the outcome records as a failure).
    Stored(Outcome),
    /// The artifact store did not answer for `upload_retry_secs`; why, in words.
    StoreUnavailable(String),
}

/// A job's stdout and stderr files with their object keys.
fn log_files(job: &Job, dir: &JobDir) -> [(PathBuf, String); 2] {
    [
        (dir.stdout(), artifact_keys::stdout(&job.id)),
        (dir.stderr(), artifact_keys::stderr(&job.id)),
    ]
}

/// Why a run stopped before its command ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// Cancelled by its owner or its lease lost: the store no longer lets this worker finish it.
    LeaseLost,
    /// The worker is shutting down and hands the job back for another attempt.
    HandBack,
}

/// Runs claimed jobs for one worker.
pub struct JobRunner {
    pub worker_id: String,
    ports: Ports,
    settings: WorkerSettings,
    scheduling: SchedulingSettings,
    work_root: PathBuf,
    cache: RepoCache,
    sandbox: Sandbox,
    /// Job events on their way to the bus ([`JobRunner::announce`]).
    announcements: TaskTracker,
    /// Ended jobs' folders being removed ([`JobRunner::cleaned_up`]).
    cleanups: TaskTracker,
    /// Job shims started ahead, one per slot, each in a cgroup of its own and waiting for a
    /// job ([`executor::Launch`]): a job's shim joins its cgroup before the job arrives.
    standby: std::sync::Mutex<Vec<executor::Launch>>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

/// A job event for a transition made by this worker; `job` is as the store returned it.
pub fn event(
    job: &Job,
    from: JobStatus,
    to: JobStatus,
    worker: &str,
    now: OffsetDateTime,
) -> JobEvent {
    debug_assert_eq!(job.status, to, "the event of the job's current state");
    JobEvent::after(job, Some(from), Some(worker.to_string()), now)
}

impl JobRunner {
    /// A runner keeping its checkouts and repository cache under `work_root` (outside every
    /// job's sandbox). Fails when jobs cannot be sandboxed and `worker.sandbox` is not `off`.
    pub async fn new(
        worker_id: String,
        ports: Ports,
        settings: WorkerSettings,
        work_root: PathBuf,
    ) -> Result<Self, SandboxError> {
        let cache = RepoCache::new(
            work_root.join("repo-cache"),
            Duration::from_millis(settings.repo_fetch_slack_ms),
        );
        // With the sandbox off, jobs run as the same user: without this they could read the
        // worker's environment (its secrets) from /proc/<pid>/environ.
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(error = %e, "cannot hide the worker's /proc entries from its jobs");
        }
        if !crate::shim::confinement_available() {
            tracing::warn!("this kernel has no Landlock: no second layer confines job writes");
        }
        let sandbox = Sandbox::from_settings(&settings)?;
        crate::probe::check(&sandbox, &work_root).await?;
        if sandbox.enabled() {
            tracing::info!(sandbox = %sandbox.describe(), "jobs run sandboxed");
        } else {
            tracing::warn!(sandbox = %sandbox.describe(), "worker.sandbox = off: jobs run unsandboxed and can read what the worker can");
        }
        Ok(Self {
            worker_id,
            ports,
            settings,
            scheduling: SchedulingSettings::default(),
            work_root,
            cache,
            sandbox,
            announcements: TaskTracker::new(),
            cleanups: TaskTracker::new(),
            standby: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A launch for a job: a standby one still waiting, else one started now (its cgroup
    /// join then costs the job); the standby set is refilled after the job's command starts.
    fn launch(&self, name: &str) -> std::io::Result<executor::Launch> {
        loop {
            let Some(mut launch) = self.standby.lock().expect("standby").pop() else {
                break;
            };
            if launch.waiting() {
                return Ok(launch);
            }
        }
        executor::Launch::start(&self.sandbox, name)
    }

    /// Starts standby launches until there is one per slot.
    fn refill_standby(&self) {
        let slots = self.settings.slots.max(1);
        while self.standby.lock().expect("standby").len() < slots {
            let name = format!(
                "{}-standby-{}",
                self.worker_id,
                uuid::Uuid::new_v4().simple()
            );
            match executor::Launch::start(&self.sandbox, &name) {
                Ok(launch) => self.standby.lock().expect("standby").push(launch),
                Err(e) => {
                    tracing::warn!(error = %e, "no standby job shim started");
                    return;
                }
            }
        }
    }

    /// The scheduling rules this worker claims and retries by (`scheduling.*`; the defaults
    /// until set).
    pub fn with_scheduling(mut self, scheduling: SchedulingSettings) -> Self {
        self.scheduling = scheduling;
        self
    }

    /// What a free slot may take: running limits apply when `scheduling` sets any.
    pub fn pick(&self, created_before: Option<OffsetDateTime>) -> Pick {
        Pick {
            created_before,
            quotas: self.scheduling.quotas(),
        }
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.settings.lease_secs)
    }

    /// Publishes an event in the background; the bus is for observation, so a failure is
    /// logged, not fatal. Nothing waits for it: with the broker away a delivery may take the
    /// producer's whole `message.timeout.ms` (30 s), and a job's start or its slot must not
    /// wait that long (a claimed job's lease is renewed only once it runs; a slot held by an
    /// undelivered event is a slot that runs nothing while Kafka restarts). The event is
    /// handed to the bus at the task's first poll, right after this call and long before the
    /// next transition of the same job, so a job's events keep their order.
    /// [`JobRunner::announced`] waits for the ones still on their way.
    pub fn announce(&self, event: JobEvent) {
        self.announce_timed(event, None);
    }

    /// [`JobRunner::announce`], recording the `publish` stage from `since` to the delivery.
    fn announce_timed(&self, event: JobEvent, since: Option<Instant>) {
        let events = self.ports.events.clone();
        self.announcements.spawn(
            async move {
                if let Err(e) = events.publish(&event).await {
                    tracing::warn!(job_id = %event.job_id, error = %e, "job event not published");
                }
                if let Some(since) = since {
                    stage_done("publish", since);
                }
            }
            .in_current_span(),
        );
    }

    /// Waits until every event announced so far is published or given up by the bus, for at
    /// most `within`; returns how many were still on their way then (they are dropped when
    /// the process exits: with the broker away, a worker's exit does not wait for the
    /// producer's whole timeout).
    pub async fn announced(&self, within: Duration) -> usize {
        self.announcements.close();
        let _ = tokio::time::timeout(within, self.announcements.wait()).await;
        self.announcements.reopen();
        self.announcements.len()
    }

    /// Runs a job this worker has claimed. `hand_back` fires when the worker shuts down and
    /// wants to give the job to another worker.
    pub async fn run_claimed(self: Arc<Self>, job: Job, hand_back: CancellationToken) {
        let span = tracing::info_span!("job", job_id = %job.id, attempt = job.attempt);
        self.run_inner(job, hand_back).instrument(span).await
    }

    async fn run_inner(self: Arc<Self>, job: Job, hand_back: CancellationToken) {
        let started = Instant::now();
        metrics::counter!("jobq_worker_jobs_started_total").increment(1);
        metrics::gauge!("jobq_worker_busy_slots").increment(1.0);
        let dir = JobDir {
            root: self
                .work_root
                .join("jobs")
                .join(format!("{}-{}", job.id, job.attempt)),
        };
        executor::remove_job_dir(&dir.root).await;
        let stop = CancellationToken::new();
        let reason: Arc<std::sync::Mutex<Option<StopReason>>> = Arc::default();
        let renewer = {
            let (me, job, dir, stop, reason) = (
                self.clone(),
                job.clone(),
                dir.clone(),
                stop.clone(),
                reason.clone(),
            );
            tokio::spawn(
                async move { me.keep_lease(job, dir, stop, reason).await }.in_current_span(),
            )
        };
        let watcher = {
            let (stop, reason) = (stop.clone(), reason.clone());
            tokio::spawn(async move {
                hand_back.cancelled().await;
                reason
                    .lock()
                    .expect("reason lock")
                    .get_or_insert(StopReason::HandBack);
                stop.cancel();
            })
        };
        // The run itself is never dropped half-way: a stop reaches it through `stop`, and it
        // kills its process group before returning.
        let result = self.execute(&job, &dir, &stop, started).await;
        watcher.abort();
        let stopped_by = *reason.lock().expect("reason lock");
        match stopped_by {
            Some(StopReason::LeaseLost) => {
                renewer.abort();
                tracing::info!("job stopped: cancelled or lease lost");
                // The logs are the job's, not the attempt's: only while this attempt is
                // still the job's last (cancelled) may they be stored, never over those of
                // an attempt that took over after the lease expired.
                match self.ports.store.get(&job.id).await {
                    Ok(Some(now)) if now.attempt == job.attempt => {
                        self.upload_logs(&job, &dir).await
                    }
                    Ok(_) => tracing::info!("logs of a superseded attempt not stored"),
                    Err(e) => {
                        tracing::warn!(error = %e, "logs not stored: the store is unreachable")
                    }
                }
            }
            Some(StopReason::HandBack) => {
                renewer.abort();
                self.upload_logs(&job, &dir).await;
                self.hand_back(&job, "the worker is shutting down").await;
            }
            None => {
                // The lease is still renewed while the files are stored: uploads may wait
                // for the artifact store for up to `upload_retry_secs`.
                let finished = self.finish(&job, &dir, result, started).await;
                renewer.abort();
                match finished {
                    Finished::Stored(outcome) => self.complete(&job, outcome).await,
                    Finished::StoreUnavailable(why) => self.hand_back(&job, &why).await,
                }
            }
        }
        metrics::gauge!("jobq_worker_busy_slots").decrement(1.0);
        metrics::histogram!("jobq_worker_job_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        // The folder goes beside the next job: its removal (tens of ms for a checkout on a
        // busy disk) would otherwise keep the slot. Each attempt has a folder of its own, so
        // no later run uses this one; the worker waits for these before it exits.
        let at = Instant::now();
        self.cleanups.spawn(
            async move {
                executor::remove_job_dir(&dir.root).await;
                stage_done("cleanup", at);
            }
            .in_current_span(),
        );
    }

    /// Waits until the folder of every job ended so far is removed, and stops the standby
    /// job shims (their cgroups removed).
    pub async fn cleaned_up(&self) {
        let standby = std::mem::take(&mut *self.standby.lock().expect("standby"));
        let _ = tokio::task::spawn_blocking(move || drop(standby)).await;
        self.cleanups.close();
        self.cleanups.wait().await;
        self.cleanups.reopen();
    }

    /// Clone, prepare and run; `Ok(end)` when the command ran, `Err(reason)` when it could not.
    async fn execute(
        self: &Arc<Self>,
        job: &Job,
        dir: &JobDir,
        stop: &CancellationToken,
        started: Instant,
    ) -> Result<RunEnd, FailureReason> {
        tokio::fs::create_dir_all(&dir.root)
            .await
            .map_err(|e| FailureReason::Internal {
                detail: format!("cannot create the job folder: {e}"),
            })?;
        // A shim that joined its cgroup ahead of the job (see `Launch`).
        let name = format!("{}-{}-{}", self.worker_id, job.id, job.attempt);
        let launch = self.launch(&name).map_err(|e| FailureReason::Internal {
            detail: format!("cannot start the job shim: {e}"),
        })?;
        // The next job's shim joins its cgroup while this one runs.
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.refill_standby());
        let at = stage_done("setup", started);
        let timeout = Duration::from_secs(self.settings.job_timeout_secs);
        let abort = Arc::new(AtomicBool::new(false));
        let abort_on_stop = {
            let (abort, stop) = (abort.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(timeout) => {}
                }
                abort.store(true, Ordering::Relaxed);
            })
        };
        // Parsed again at the worker's edge: the URL comes from the store, not from the
        // frontend's check, and the same policy (`worker.allow_local_repos`) applies.
        let url =
            RepoUrl::parse(&job.spec.url, self.settings.allow_local_repos).map_err(|why| {
                FailureReason::CloneFailed {
                    detail: format!("url refused: {why}"),
                }
            })?;
        let cloned = self
            .cache
            .checkout(
                &url,
                &dir.repo(),
                job.created_at,
                self.sandbox.checkout_may_link_objects(),
                abort.clone(),
            )
            .await;
        abort_on_stop.abort();
        let checkout = match cloned {
            Ok(checkout) => checkout,
            Err(e) => {
                if abort.load(Ordering::Relaxed) && !stop.is_cancelled() {
                    return Err(FailureReason::Timeout {
                        limit_secs: timeout.as_secs(),
                    });
                }
                return Err(FailureReason::CloneFailed {
                    detail: e.to_string(),
                });
            }
        };
        stage_took("fetch", checkout.fetch);
        metrics::counter!("jobq_worker_repo_fetches_total", "fetched" => if checkout.fetched { "yes" } else { "skipped" })
            .increment(1);
        metrics::counter!(
            "jobq_worker_checkouts_total",
            "tree" => if checkout.prepared { "prepared" } else { "reused" },
            "spare" => if checkout.spare { "yes" } else { "no" }
        )
        .increment(1);
        tracing::debug!(target: "jobq_worker::stages", fetched = checkout.fetched, prepared = checkout.prepared, spare = checkout.spare, "checkout");
        let at = stage_done("clone", at + checkout.fetch);
        let argv = executor::prepare(dir, &job.spec.config, &job.spec.args).await?;
        stage_done("config", at);
        let limits = Limits {
            name: &name,
            timeout,
            max_log_bytes: self.settings.max_log_bytes,
            max_output_mb: self.settings.max_output_mb,
            max_job_dir_mb: self.settings.max_job_dir_mb,
            memory_limit_mb: self.settings.memory_limit_mb,
            max_processes: self.settings.max_processes,
        };
        if !self.sandbox.enabled() {
            tracing::warn!("worker.sandbox = off: this job runs unsandboxed");
        }
        executor::run(dir, launch, &argv, limits, stop, &self.sandbox)
            .await
            .map_err(|e| FailureReason::Internal {
                detail: format!("cannot start npm: {e}"),
            })
    }

    /// Renews the lease until the job ends; on a lost lease it stops the run, and on a store
    /// that does not answer it stops the run *before* the lease can expire (so the reaper never
    /// re-queues a job whose process may still run). After each renewal it uploads the logs so
    /// far when they grew, so `GET …/logs` shows a running job's output.
    async fn keep_lease(
        &self,
        job: Job,
        dir: JobDir,
        stop: CancellationToken,
        reason: Arc<std::sync::Mutex<Option<StopReason>>>,
    ) {
        let every = Duration::from_millis(self.settings.renew_interval_ms);
        let mut last_ok = Instant::now();
        let mut uploaded_sizes = (0u64, 0u64);
        // Logs go up at most every 2 s, however often the lease is renewed.
        let mut uploaded_at = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            // A renewal that hangs counts as failed after one interval, so the next check
            // comes at most two intervals after this one.
            let renewed = tokio::time::timeout(
                every,
                self.ports.store.renew(
                    &job.id,
                    job.attempt,
                    &self.worker_id,
                    self.lease(),
                    OffsetDateTime::now_utc(),
                ),
            )
            .await
            .unwrap_or_else(|_| {
                Err(jobq_common::PortError::unavailable(
                    "lease renewal timed out",
                ))
            });
            match renewed {
                Ok(true) => {
                    last_ok = Instant::now();
                    let size =
                        |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                    let sizes = (size(dir.stdout()), size(dir.stderr()));
                    if sizes != uploaded_sizes && uploaded_at.elapsed() >= LOG_UPLOAD_EVERY {
                        self.upload_logs(&job, &dir).await;
                        uploaded_sizes = sizes;
                        uploaded_at = Instant::now();
                    }
                    continue;
                }
                Ok(false) => {
                    tracing::info!("lease lost: the job was cancelled or given to another worker")
                }
                // The lease runs out `lease` after the last renewal at the latest; the next
                // check is at most two intervals away, so stop while it still holds.
                Err(e) if last_ok.elapsed() + 2 * every < self.lease() => {
                    tracing::warn!(error = %e, "lease renewal failed, retrying");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store unreachable for most of the lease: stopping the job before the lease runs out")
                }
            }
            reason
                .lock()
                .expect("reason lock")
                .get_or_insert(StopReason::LeaseLost);
            stop.cancel();
            return;
        }
    }

    /// The logs so far, once each (while the job runs, or when it was stopped): a failure
    /// is logged, the next upload or the final one will carry the text.
    async fn upload_logs(&self, job: &Job, dir: &JobDir) {
        let uploads = log_files(job, dir)
            .into_iter()
            .map(|(path, key)| async move {
                if path.exists()
                    && let Err(e) = self.ports.artifacts.put_file(&key, &path).await
                {
                    tracing::warn!(error = %e, key, "log upload failed");
                }
            });
        futures::future::join_all(uploads).await;
    }

    /// Stores one file, retrying while the artifact store is unavailable, with a pause that
    /// doubles from 200 ms up to 5 s, until `deadline`. Other errors are not retried.
    async fn store_file(&self, key: &str, path: &Path, deadline: Instant) -> PortResult<()> {
        let mut pause = Duration::from_millis(200);
        let mut tries = 1u32;
        loop {
            match self.ports.artifacts.put_file(key, path).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind == ErrorKind::Unavailable && Instant::now() + pause < deadline => {
                    if tries == 1 {
                        tracing::warn!(error = %e, key, "upload failed; retrying until the store answers");
                    }
                    metrics::counter!("jobq_worker_upload_retries_total").increment(1);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores logs and outputs and decides the outcome. The outcome is returned only once
    /// every file is stored (or refused for good, which fails the job); an artifact store
    /// still unavailable after `upload_retry_secs` gives `StoreUnavailable`, and the job is
    /// handed back for another attempt instead of ending without its files.
    async fn finish(
        &self,
        job: &Job,
        dir: &JobDir,
        result: Result<RunEnd, FailureReason>,
        started: Instant,
    ) -> Finished {
        let upload_started = Instant::now();
        let timeout = Duration::from_secs(self.settings.job_timeout_secs);
        let (exit_code, mut failure) = match result {
            Ok(end) => (
                match end {
                    RunEnd::Exited(code) => Some(code),
                    _ => None,
                },
                executor::failure_for(end, timeout),
            ),
            Err(reason) => (None, Some(reason)),
        };
        let deadline = Instant::now() + Duration::from_secs(self.settings.upload_retry_secs);
        // Output over its limit is never stored, not even in part.
        let keep_output = !matches!(
            failure,
            Some(FailureReason::OutputLimit { .. } | FailureReason::JobDirLimit { .. })
        );
        let output = dir.output();
        let files = match keep_output {
            true => tokio::task::spawn_blocking(move || executor::output_files(&output))
                .await
                .unwrap_or_default(),
            false => Vec::new(),
        };
        let outputs = files.into_iter().filter_map(|file| {
            let key = artifact_keys::output(&job.id, &file)?;
            Some((dir.output().join(&file), key, Some(file)))
        });
        let logs = log_files(job, dir)
            .into_iter()
            .filter(|(path, _)| path.exists())
            .map(|(path, key)| (path, key, None));
        // Up to `upload_concurrency` files at once, each with its own retries until the one
        // deadline; the results come back in the files' order.
        let files = logs.chain(outputs).collect::<Vec<_>>();
        let mut uploads =
            futures::stream::iter(files.into_iter().map(|(path, key, file)| async move {
                let stored = self.store_file(&key, &path, deadline).await;
                (stored, key, file)
            }))
            .buffered(self.settings.upload_concurrency.max(1));
        let mut uploaded = Vec::new();
        while let Some((stored, key, file)) = uploads.next().await {
            match stored {
                Ok(()) => uploaded.extend(file),
                Err(e) if e.kind == ErrorKind::Unavailable => {
                    tracing::warn!(error = %e, key, retry_secs = self.settings.upload_retry_secs,
                        "the artifact store stayed unavailable: handing the job back");
                    return Finished::StoreUnavailable(format!(
                        "the artifact store stayed unavailable for {} s: {e}",
                        self.settings.upload_retry_secs
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, key, "upload refused");
                    failure.get_or_insert(FailureReason::UploadFailed {
                        detail: format!("{}: {e}", file.as_deref().unwrap_or(&key)),
                    });
                }
            }
        }
        stage_done("upload", upload_started);
        Finished::Stored(Outcome {
            status: if failure.is_some() {
                JobStatus::Failed
            } else {
                JobStatus::Finished
            },
            exit_code,
            elapsed_ms: executor::elapsed_ms(started),
            output_files: uploaded,
            failure,
        })
    }

    async fn complete(&self, job: &Job, outcome: Outcome) {
        let now = OffsetDateTime::now_utc();
        let at = Instant::now();
        let completed = self
            .ports
            .store
            .complete(&self.held(job), &outcome, now)
            .await;
        let at = stage_done("transition", at);
        match completed {
            Ok(Some(done)) if done.status == JobStatus::Queued => {
                // A failed run with retries left: queued for its next attempt at `retry_at`;
                // the message wakes a worker, whose claim takes it once that time has come.
                metrics::counter!("jobq_worker_retries_total").increment(1);
                tracing::info!(
                    attempt = done.attempt,
                    retry_at = ?done.retry_at,
                    failure = ?outcome.failure,
                    "job failed; it is retried"
                );
                let message = Dispatch {
                    id: done.id.clone(),
                    attempt: done.attempt,
                };
                // Beside the slot, like the job's events: the queue may be away.
                let dispatch = self.ports.dispatch.clone();
                self.announcements.spawn(async move {
                    if let Err(e) = dispatch.dispatch(&message).await {
                        tracing::warn!(error = %e, "retry not dispatched; a free slot's look takes it");
                    }
                });
                self.announce(event(
                    &done,
                    JobStatus::Running,
                    JobStatus::Queued,
                    &self.worker_id,
                    now,
                ));
            }
            Ok(Some(done)) => {
                metrics::counter!("jobq_worker_jobs_ended_total", "status" => done.status.as_str())
                    .increment(1);
                tracing::info!(status = %done.status, elapsed_ms = outcome.elapsed_ms, "job ended");
                self.announce_timed(
                    event(&done, JobStatus::Running, done.status, &self.worker_id, now),
                    Some(at),
                );
            }
            Ok(None) => {
                tracing::info!("job ended but the lease was gone; the result is dropped");
                // Cancelled while it ran: its processes are gone now, so the slot of its
                // owner's running limit it held is free again.
                if let Err(e) = self.ports.store.free_slot(&self.held(job)).await {
                    tracing::warn!(error = %e, "running slot not freed; recovery frees it when the lease runs out");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record the job's end; its lease will expire")
            }
        }
    }

    /// The attempt of `job` this worker holds, and the retry a failed run gets while the
    /// job has retries left.
    fn held<'a>(&'a self, job: &'a Job) -> Held<'a> {
        let retried = job.retried();
        let retry = (job.schedule.retries > retried).then(|| {
            let number = retried + 1;
            Retry {
                number,
                delay: self
                    .scheduling
                    .backoff()
                    .delay(number, crate::rand_fraction()),
                not_before: job.schedule.not_before,
            }
        });
        Held {
            id: &job.id,
            attempt: job.attempt,
            worker: &self.worker_id,
            started_at: job.started_at,
            retry,
        }
    }

    /// Hands `job` back for another attempt; `reason` goes into its attempt history.
    async fn hand_back(&self, job: &Job, reason: &str) {
        match self.ports.store.release(&self.held(job), reason).await {
            Ok(Some(released)) => {
                let message = Dispatch {
                    id: released.id.clone(),
                    attempt: released.attempt,
                };
                if let Err(e) = self.ports.dispatch.dispatch(&message).await {
                    tracing::error!(error = %e, "handed-back job not re-dispatched; the lease reaper will not see it");
                }
                let now = OffsetDateTime::now_utc();
                self.announce(event(
                    &released,
                    JobStatus::Running,
                    JobStatus::Queued,
                    &self.worker_id,
                    now,
                ));
                tracing::info!("job handed back for attempt {}", released.attempt);
            }
            Ok(None) => tracing::info!("job not handed back: lease already gone"),
            Err(e) => tracing::warn!(error = %e, "hand-back failed; the lease will expire instead"),
        }
    }
}
