//! The job store's ports, by role, and the one trait its adapters implement.
//!
//! An adapter implements [`JobRecords`]: it stores and reads jobs and translates a
//! [`lifecycle::Change`] (guard and effects) into one conditional update, and a
//! [`lifecycle::Guard`] into a query. It decides nothing. Every role below is implemented
//! once, here, for any `JobRecords`, from the transitions written in [`crate::lifecycle`]:
//!
//! - [`JobCatalog`] — what the frontend needs: insert, get, list, cancel;
//! - [`JobLeases`] — what a worker needs: claim (by id, or the next waiting job by the
//!   scheduling rules),
//!   renew, finish, hand back, and get;
//! - [`JobRecovery`] — what recovery needs: expired leases, re-queue or give up, stale
//!   queued jobs whose message may have been lost.
//!
//! Each service holds `Arc<dyn Role>` of the role it uses; one adapter type serves all three.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{Dispatch, Job, JobEvent, JobId, JobStatus, Outcome};
use crate::error::{ErrorKind, PortError, PortResult};
pub use crate::lifecycle::Held;
use crate::lifecycle::{self, Change, Guard, LeaseLost, Transitioned};
use crate::ports::{CancelResult, JobPage, Page};
pub use crate::scheduling::Pick;
use crate::scheduling::{Slots, holding_slots, waiting};

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

    /// The first job that meets `guard` in scheduling order: highest priority, then lowest
    /// fair-share tag, then oldest (creation time, then id). The order [`apply`] uses for
    /// a guard without an id.
    ///
    /// [`apply`]: JobRecords::apply
    async fn first(&self, guard: &Guard) -> PortResult<Option<Job>>;

    /// Up to `limit` jobs that meet `guard`, in the scheduling order of [`first`], read
    /// without their args, config and attempt history (left empty): the planner reads
    /// thousands each period and needs none of them, and a config may be 512 KB.
    ///
    /// [`first`]: JobRecords::first
    async fn ordered(&self, guard: &Guard, limit: u64) -> PortResult<Vec<Job>>;

    /// Sets the job's `deadline_at_risk` to `at_risk` if it has not ended and the flag
    /// differs; returns the job after the change, `None` when nothing changed.
    async fn set_deadline_flag(&self, id: &JobId, at_risk: bool) -> PortResult<Option<Job>>;

    /// The fair-share bounds for a new job of `owner` ([`crate::scheduling::fair_tag`]): the
    /// lowest tag among queued jobs that may start at `now`, and the highest among `owner`'s
    /// queued or running jobs.
    async fn fair_bounds(
        &self,
        owner: &str,
        now: OffsetDateTime,
    ) -> PortResult<(Option<f64>, Option<f64>)>;

    /// How many jobs each owner has queued and running (owners with neither are left out).
    async fn count_by_owner(&self) -> PortResult<Vec<OwnerCount>>;
}

/// One owner's queued and running jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerCount {
    pub owner: String,
    pub queued: u64,
    pub running: u64,
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

    /// The fair-share tag of a job `owner` submits now, with `weight`
    /// ([`crate::scheduling::fair_tag`]).
    async fn fair_tag(&self, owner: &str, weight: f64, now: OffsetDateTime) -> PortResult<f64>;

    /// How many of `owner`'s jobs are queued.
    async fn queued_of(&self, owner: &str) -> PortResult<u64>;
}

/// What a worker needs. Every call names the attempt and lease it holds, so a worker that
/// lost its lease (expired, re-queued, cancelled) can change nothing.
#[async_trait]
pub trait JobLeases: JobLookup {
    /// `queued → running` for `attempt`, taking a lease for `worker` until `now + lease`, and a
    /// slot of its owner's running limit when it has one. `None` if the job is not queued at
    /// that attempt (taken, cancelled, stale message), may not start yet (`notBefore`, a
    /// retry's wait), expired, or its owner is at the limit.
    async fn claim(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;

    /// `queued → running` for the next waiting job by the scheduling rules
    /// ([`crate::scheduling`]): how a free slot takes work, whichever message woke it. With
    /// `pick.quotas`, an owner at their running limit is skipped and a limited job takes a
    /// free slot of its owner's in the same conditional write, which the store keeps unique:
    /// the limit holds under concurrent claims. `None` when nothing may start now.
    async fn claim_next(
        &self,
        worker: &str,
        lease: Duration,
        pick: &Pick,
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

    /// After a cancelled run was killed: frees the slot of its owner's running limit the job
    /// held (nothing when it held none, or another worker's attempt is named).
    async fn free_slot(&self, held: &Held<'_>) -> PortResult<()>;

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

    /// Ends `cancelled` (expired) every queued job, up to `limit`, whose expiry is at or
    /// before `now`; returns the transitions made. The claim never takes such a job, so one
    /// never starts however late this runs.
    async fn expire_waiting(
        &self,
        now: OffsetDateTime,
        limit: u64,
    ) -> PortResult<Vec<Transitioned>>;

    /// Frees the running slots, up to `limit`, of cancelled jobs whose worker was lost before
    /// it freed them (their lease ran out before `now`); returns how many.
    async fn free_stale_slots(&self, now: OffsetDateTime, limit: u64) -> PortResult<usize>;

    /// Each owner's queued and running jobs, for the observer's per-user gauges.
    async fn owner_counts(&self) -> PortResult<Vec<OwnerCount>>;
}

/// What the observer's planner needs (docs/deadlines.md): the waiting jobs in the order a
/// free slot takes them, the running ones, and the deadline flag.
#[async_trait]
pub trait JobPlanning: Send + Sync {
    /// Up to `limit` queued jobs in scheduling order (ready or not), without their args,
    /// config and attempt history. Not how many are queued in all: the observer's plan reads
    /// these each period, and a count grows with the queue where a store scans for it
    /// (nx-27017: ≈ 0.35 s for 7,000 queued jobs, on its one thread).
    async fn waiting_head(&self, limit: u64) -> PortResult<Vec<Job>>;

    /// Up to `limit` running jobs.
    async fn running(&self, limit: u64) -> PortResult<Vec<Job>>;

    /// Marks a job that has not ended as predicted to miss its deadline, or not; the job
    /// when the flag changed.
    async fn flag_deadline(&self, id: &JobId, at_risk: bool) -> PortResult<Option<Job>>;
}

#[async_trait]
impl<S: JobRecords + ?Sized> JobPlanning for S {
    async fn waiting_head(&self, limit: u64) -> PortResult<Vec<Job>> {
        self.ordered(&Guard::in_state(JobStatus::Queued), limit)
            .await
    }

    async fn running(&self, limit: u64) -> PortResult<Vec<Job>> {
        self.select(&Guard::in_state(JobStatus::Running), limit)
            .await
    }

    async fn flag_deadline(&self, id: &JobId, at_risk: bool) -> PortResult<Option<Job>> {
        self.set_deadline_flag(id, at_risk).await
    }
}

async fn apply<S: JobRecords + ?Sized>(store: &S, change: &Change) -> PortResult<Option<Job>> {
    store.apply(change).await
}

/// How many running jobs holding a slot one claim reads at most (every limited owner's
/// running jobs: bounded by the fleet's slots).
const SLOTS_READ: u64 = 100_000;

/// How often a claim reads the slots again after another claim took the job or the slot.
const CLAIM_TRIES: usize = 8;

/// Claims `job` at `attempt` with `slot` of its owner's (none for a job without a limit);
/// `None` when another claim took the job or the slot first.
async fn claim_with_slot<S: JobRecords + ?Sized>(
    store: &S,
    job: &Job,
    attempt: u32,
    slot: Option<u32>,
    worker: &str,
    lease: Duration,
    now: OffsetDateTime,
) -> PortResult<Option<Job>> {
    let slot = slot.map(|k| (job.owner.as_str(), k));
    let change = lifecycle::claim(&job.id, attempt, slot, worker, lease, now);
    match store.apply(&change).await {
        Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(None),
        other => other,
    }
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

    async fn fair_tag(&self, owner: &str, weight: f64, now: OffsetDateTime) -> PortResult<f64> {
        let (virtual_time, owner_last) = self.fair_bounds(owner, now).await?;
        Ok(crate::scheduling::fair_tag(
            virtual_time,
            owner_last,
            weight,
        ))
    }

    async fn queued_of(&self, owner: &str) -> PortResult<u64> {
        let none = Page {
            offset: 0,
            limit: 0,
        };
        Ok(self
            .page_jobs(Some(owner), Some(JobStatus::Queued), none)
            .await?
            .total)
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
        let Some(job) = self.find_job(id).await? else {
            return Ok(None);
        };
        if job.schedule.max_running.is_none() {
            return apply(
                self,
                &lifecycle::claim(id, attempt, None, worker, lease, now),
            )
            .await;
        }
        let slots = Slots::from_running(&self.select(&holding_slots(), SLOTS_READ).await?);
        match slots.free_for(&job) {
            Some(slot) => claim_with_slot(self, &job, attempt, slot, worker, lease, now).await,
            None => Ok(None),
        }
    }

    async fn claim_next(
        &self,
        worker: &str,
        lease: Duration,
        pick: &Pick,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        if !pick.quotas {
            let change = lifecycle::claim_next(worker, lease, waiting(pick, &[], now), now);
            return apply(self, &change).await;
        }
        // Read which slots the limited owners hold, then take the first waiting job whose
        // owner has one free, by id, with that slot: the store refuses a slot another claim
        // took meanwhile, and the next try reads again.
        for _ in 0..CLAIM_TRIES {
            let slots = Slots::from_running(&self.select(&holding_slots(), SLOTS_READ).await?);
            let mut full = Vec::new();
            let claimed = loop {
                let Some(job) = self.first(&waiting(pick, &full, now)).await? else {
                    return Ok(None);
                };
                match slots.free_for(&job) {
                    Some(slot) => {
                        break claim_with_slot(self, &job, job.attempt, slot, worker, lease, now)
                            .await?;
                    }
                    None => full.push(job.owner.clone()),
                }
            };
            if claimed.is_some() {
                return Ok(claimed);
            }
        }
        Ok(None)
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

    async fn free_slot(&self, held: &Held<'_>) -> PortResult<()> {
        apply(self, &lifecycle::free_slot(held)).await.map(|_| ())
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

    async fn free_stale_slots(&self, now: OffsetDateTime, limit: u64) -> PortResult<usize> {
        let mut freed = 0;
        for job in self.select(&lifecycle::stale_slots(now), limit).await? {
            if apply(self, &lifecycle::free_stale_slot(&job, now))
                .await?
                .is_some()
            {
                freed += 1;
            }
        }
        Ok(freed)
    }

    async fn expire_waiting(
        &self,
        now: OffsetDateTime,
        limit: u64,
    ) -> PortResult<Vec<Transitioned>> {
        let mut done = Vec::new();
        for job in self.select(&lifecycle::expiring(now), limit).await? {
            let change = lifecycle::expire(&job, now);
            if let Some(after) = apply(self, &change).await? {
                done.push(Transitioned {
                    event: change.event(&after, now),
                    job: after,
                });
            }
        }
        Ok(done)
    }

    async fn owner_counts(&self) -> PortResult<Vec<OwnerCount>> {
        self.count_by_owner().await
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
