//! The job store's ports, by role, and the one trait its adapters implement.
//!
//! An adapter implements [`JobRecords`]: it stores and reads jobs and translates a
//! [`lifecycle::Change`] (guard and effects) into one conditional update, and a
//! [`lifecycle::Guard`] into a query. It decides nothing. Every role below is implemented
//! once, here, for any `JobRecords`, from the transitions written in [`crate::lifecycle`]:
//!
//! - [`JobCatalog`] — what the frontend needs: insert, get, list, cancel;
//! - [`JobLeases`] — what a worker needs: claim (by message or the oldest waiting job),
//!   renew, finish, hand back, and get;
//! - [`JobRecovery`] — what recovery needs: expired leases, re-queue or give up, stale
//!   queued jobs whose message may have been lost.
//!
//! Each service holds `Arc<dyn Role>` of the role it uses; one adapter type serves all three.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{Dispatch, Job, JobEvent, JobId, JobStatus, Outcome};
use crate::error::{PortError, PortResult};
pub use crate::lifecycle::Held;
use crate::lifecycle::{self, Change, Guard, LeaseLost, Transitioned};
use crate::ports::{CancelResult, JobPage, Page};

/// How many jobs one recovery step reads at a time.
const BATCH: u64 = 500;

/// How often a cancel reads the job again after another transition got there first.
const CANCEL_TRIES: usize = 8;

/// What a store adapter implements: records and the atomic application of a change.
#[async_trait]
pub trait JobRecords: Send + Sync {
    /// Stores a new job; `AlreadyExists` if its id is taken.
    async fn insert_job(&self, job: &Job) -> PortResult<()>;

    async fn find_job(&self, id: &JobId) -> PortResult<Option<Job>>;

    /// Jobs newest first (creation time, then id), with the total; `owner` and `status`
    /// filter when set.
    async fn page_jobs(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        page: Page,
    ) -> PortResult<JobPage>;

    /// Applies `change` in one conditional update: its effects are written if and only if
    /// its guard holds (for a guard without an id, on the oldest job that matches). Returns
    /// the job after the change, or `None` when the guard did not hold.
    async fn apply(&self, change: &Change) -> PortResult<Option<Job>>;

    /// Up to `limit` jobs that meet `guard`, in no particular order.
    async fn select(&self, guard: &Guard, limit: u64) -> PortResult<Vec<Job>>;
}

/// Reads one job: every role needs it.
#[async_trait]
pub trait JobLookup: Send + Sync {
    async fn get(&self, id: &JobId) -> PortResult<Option<Job>>;
}

/// What the frontend needs.
#[async_trait]
pub trait JobCatalog: JobLookup {
    /// Stores a new queued job.
    async fn insert(&self, job: &Job) -> PortResult<()>;

    /// Jobs newest first; `owner = None` lists every owner's.
    async fn list(&self, owner: Option<&str>, page: Page) -> PortResult<JobPage> {
        self.list_in_status(owner, None, page).await
    }

    /// Like [`list`](Self::list), only jobs in `status` (all when `None`).
    async fn list_in_status(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        page: Page,
    ) -> PortResult<JobPage>;

    /// `queued | running → cancelled`; `None` for an unknown job.
    async fn cancel(&self, id: &JobId, now: OffsetDateTime) -> PortResult<Option<CancelResult>>;
}

/// What a worker needs. Every call names the attempt and lease it holds, so a worker that
/// lost its lease (expired, re-queued, cancelled) can change nothing.
#[async_trait]
pub trait JobLeases: JobLookup {
    /// `queued → running` for `attempt`, taking a lease for `worker` until `now + lease`.
    /// `None` if the job is not queued at that attempt (taken, cancelled, stale message).
    async fn claim(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;

    /// `queued → running` for the oldest queued job created at or before `created_before`, whatever
    /// its attempt: how a free slot takes a job whose dispatch message waits behind a busy
    /// worker's partition. The message's owner later finds the job taken (its `claim` of that
    /// attempt fails) and skips it. `None` when no job has waited that long.
    async fn claim_waiting(
        &self,
        worker: &str,
        lease: Duration,
        created_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;

    /// Extends the lease; `false` means the lease is lost (expired and re-queued, or cancelled).
    async fn renew(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<bool>;

    /// `running → finished | failed | cancelled`, only while the worker holds the lease at
    /// its attempt, which is appended to the job's history; `Invalid` for an outcome that is
    /// not terminal.
    async fn complete(
        &self,
        held: &Held<'_>,
        outcome: &Outcome,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;

    /// `running → queued` with `attempt + 1`: the worker holding the lease hands the job back
    /// (it is shutting down, or cannot store the job's files), `reason` in its history.
    /// `None` if it no longer holds the lease.
    async fn release(&self, held: &Held<'_>, reason: &str) -> PortResult<Option<Job>>;
}

/// What recovery (the lease reaper) needs.
#[async_trait]
pub trait JobRecovery: Send + Sync {
    /// Running jobs whose lease ended before `now`.
    async fn expired(&self, now: OffsetDateTime, limit: u64) -> PortResult<Vec<Job>>;

    /// Applies the max-attempts rule to `job`, whose lease expired: `running → queued` with
    /// the next attempt, or `running → failed` (worker lost) after `max_attempts`; only if the
    /// lease at that attempt is still expired at `now`. `None` when it is not (renewed,
    /// finished, or another observer got there first).
    async fn recover_expired(
        &self,
        job: &Job,
        max_attempts: u32,
        now: OffsetDateTime,
    ) -> PortResult<Option<Transitioned>>;

    /// Queued jobs whose current attempt was handed to the dispatch queue before `before`
    /// and never claimed: their message may have been lost (a crash between a transition
    /// and its dispatch). Marks each as dispatched at `now` (conditionally, so of several
    /// observers one takes it) and returns the messages to send again. A duplicate message
    /// is harmless: only one claim of an attempt can win. A store that is its own dispatch
    /// queue returns none.
    async fn redispatch_stale(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u64,
    ) -> PortResult<Vec<Dispatch>>;
}

async fn apply<S: JobRecords + ?Sized>(store: &S, change: &Change) -> PortResult<Option<Job>> {
    store.apply(change).await
}

#[async_trait]
impl<S: JobRecords + ?Sized> JobLookup for S {
    async fn get(&self, id: &JobId) -> PortResult<Option<Job>> {
        self.find_job(id).await
    }
}

#[async_trait]
impl<S: JobRecords + ?Sized> JobCatalog for S {
    async fn insert(&self, job: &Job) -> PortResult<()> {
        self.insert_job(job).await
    }

    async fn list_in_status(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        page: Page,
    ) -> PortResult<JobPage> {
        self.page_jobs(owner, status, page).await
    }

    async fn cancel(&self, id: &JobId, now: OffsetDateTime) -> PortResult<Option<CancelResult>> {
        // The job is read first: cancelling a running job ends its current attempt, which
        // the change records; the guard holds it to that attempt.
        for _ in 0..CANCEL_TRIES {
            let Some(job) = self.find_job(id).await? else {
                return Ok(None);
            };
            let Some(change) = lifecycle::cancel(&job, now) else {
                return Ok(Some(CancelResult::AlreadyTerminal(job)));
            };
            if let Some(after) = apply(self, &change).await? {
                return Ok(Some(match change.guard.state {
                    JobStatus::Running => CancelResult::CancelledWhileRunning(after),
                    _ => CancelResult::Cancelled(after),
                }));
            }
        }
        Err(PortError::unavailable(
            "cancel: the job kept changing under it",
        ))
    }
}

#[async_trait]
impl<S: JobRecords + ?Sized> JobLeases for S {
    async fn claim(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        apply(self, &lifecycle::claim(id, attempt, worker, lease, now)).await
    }

    async fn claim_waiting(
        &self,
        worker: &str,
        lease: Duration,
        created_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        let change = lifecycle::claim_waiting(worker, lease, Some(created_before), now);
        apply(self, &change).await
    }

    async fn renew(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<bool> {
        let change = lifecycle::renew(id, attempt, worker, lease, now);
        Ok(apply(self, &change).await?.is_some())
    }

    async fn complete(
        &self,
        held: &Held<'_>,
        outcome: &Outcome,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        let change =
            lifecycle::finish(held, outcome, now).map_err(|e| PortError::invalid(e.to_string()))?;
        apply(self, &change).await
    }

    async fn release(&self, held: &Held<'_>, reason: &str) -> PortResult<Option<Job>> {
        let change = lifecycle::hand_back(held, reason, OffsetDateTime::now_utc());
        apply(self, &change).await
    }
}

#[async_trait]
impl<S: JobRecords + ?Sized> JobRecovery for S {
    async fn expired(&self, now: OffsetDateTime, limit: u64) -> PortResult<Vec<Job>> {
        self.select(&lifecycle::expired(now), limit).await
    }

    async fn recover_expired(
        &self,
        job: &Job,
        max_attempts: u32,
        now: OffsetDateTime,
    ) -> PortResult<Option<Transitioned>> {
        let change = lifecycle::lease_lost(job, max_attempts, LeaseLost::Expired, now);
        Ok(apply(self, &change).await?.map(|after| Transitioned {
            event: change.event(&after, now),
            job: after,
        }))
    }

    async fn redispatch_stale(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u64,
    ) -> PortResult<Vec<Dispatch>> {
        let mut taken = Vec::new();
        for job in self
            .select(&lifecycle::stale_dispatch(before), limit)
            .await?
        {
            if let Some(job) = apply(self, &lifecycle::redispatch(&job, before, now)).await? {
                taken.push(Dispatch {
                    id: job.id,
                    attempt: job.attempt,
                });
            }
        }
        Ok(taken)
    }
}

/// At start-up of a single-process deployment every running job lost its worker with the
/// previous process: each goes back to the queue with the next attempt, or fails (worker
/// lost) after `max_attempts`, by the same rule as an expired lease. Returns the events of
/// the transitions made.
pub async fn recover_running<S: JobRecords + ?Sized>(
    store: &S,
    max_attempts: u32,
    now: OffsetDateTime,
) -> PortResult<Vec<JobEvent>> {
    let mut events = Vec::new();
    loop {
        let running = store
            .select(&Guard::in_state(JobStatus::Running), BATCH)
            .await?;
        let last_batch = (running.len() as u64) < BATCH;
        let mut changed = false;
        for job in running {
            let change = lifecycle::lease_lost(&job, max_attempts, LeaseLost::Void, now);
            if let Some(after) = apply(store, &change).await? {
                events.push(change.event(&after, now));
                changed = true;
            }
        }
        if last_batch || !changed {
            return Ok(events);
        }
    }
}
