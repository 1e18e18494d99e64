//! A job's lifecycle: every transition written once, as a [`Change`] — the [`Guard`] it
//! expects (state, attempt, lease owner, lease end) and the [`Effects`] it makes (state,
//! attempt + 1, lease, timestamps, outcome) — together with the [`JobEvent`] it causes and
//! the max-attempts rule. No I/O: a store adapter only translates a guard into a condition
//! (a BSON filter, an SQL `WHERE`) and the effects into an update, applied atomically, so of
//! two racing writers exactly one matches. Adapters decide nothing.
//!
//! The transitions: submit (a new queued job), claim (`queued → running` at an attempt, or
//! the oldest waiting job), renew (extend the lease), finish (`running → finished | failed |
//! cancelled` by the lease holder), cancel (`queued | running → cancelled`), hand back
//! (`running → queued`, attempt + 1, by the lease holder), re-queue after a lost lease
//! (`running → queued`, attempt + 1) and give up after the last attempt (`running → failed`,
//! worker lost).
//!
//! Every transition that ends an attempt (finish, cancel of a running job, hand back,
//! re-queue, give up) appends its [`AttemptRecord`] to the job's history in the same
//! conditional write ([`Effects::attempt_ended`]).

use std::time::Duration;

use time::OffsetDateTime;

use crate::domain::{
    AttemptOutcome, AttemptRecord, FailureReason, Job, JobEvent, JobId, JobStatus, Outcome,
};

/// Which transition a [`Change`] is; its name appears in store errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Claim,
    ClaimNext,
    Renew,
    Finish,
    /// `running → queued` after a failed run with retries left.
    Retry,
    HandBack,
    /// `queued → cancelled`: waited past its expiry.
    Expire,
    /// Not a state change: a cancelled job's running slot is free again.
    FreeSlot,
    Cancel,
    Requeue,
    GiveUp,
    /// Not a state change: the current attempt was handed to the dispatch queue again.
    Redispatch,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Claim => "claim",
            Transition::ClaimNext => "claim the next waiting job",
            Transition::Renew => "renew lease",
            Transition::Finish => "finish",
            Transition::Retry => "queue a failed run's retry",
            Transition::Expire => "expire a waiting job",
            Transition::FreeSlot => "free a cancelled job's running slot",
            Transition::HandBack => "hand back",
            Transition::Cancel => "cancel",
            Transition::Requeue => "re-queue after a lost lease",
            Transition::GiveUp => "give up after the last attempt",
            Transition::Redispatch => "mark dispatched",
        }
    }
}

/// What a job must look like for a change to apply. Every condition that is set must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// The job; `None` picks the oldest matching job (creation time, then id).
    pub id: Option<JobId>,
    pub state: JobStatus,
    pub attempt: Option<u32>,
    pub lease_owner: Option<String>,
    /// The lease ended before this time.
    pub lease_ended_before: Option<OffsetDateTime>,
    /// The job was created at or before this time.
    pub created_before: Option<OffsetDateTime>,
    /// The current attempt was last handed to the dispatch queue before this time. A store
    /// that is its own dispatch queue (no message can be lost) matches no job.
    pub dispatched_before: Option<OffsetDateTime>,
    /// The job may start by this time: past its `not_before` and its next retry.
    pub ready_by: Option<OffsetDateTime>,
    /// The job has not expired at this time (no expiry, or a later one).
    pub live_at: Option<OffsetDateTime>,
    /// The job expired at or before this time.
    pub expired_by: Option<OffsetDateTime>,
    /// The job's owner is none of these.
    pub owners_except: Vec<String>,
    /// The job holds one of its owner's running slots.
    pub holds_slot: bool,
}

impl Guard {
    /// Jobs in `state`, no other condition.
    pub fn in_state(state: JobStatus) -> Self {
        Guard {
            id: None,
            state,
            attempt: None,
            lease_owner: None,
            lease_ended_before: None,
            created_before: None,
            dispatched_before: None,
            ready_by: None,
            live_at: None,
            expired_by: None,
            owners_except: Vec::new(),
            holds_slot: false,
        }
    }

    fn job(id: &JobId, state: JobStatus) -> Self {
        Guard {
            id: Some(id.clone()),
            ..Guard::in_state(state)
        }
    }

    fn held(id: &JobId, attempt: u32, worker: &str) -> Self {
        Guard {
            attempt: Some(attempt),
            lease_owner: Some(worker.to_string()),
            ..Guard::job(id, JobStatus::Running)
        }
    }

    /// Whether `job` meets the guard, as a store's condition decides it. `dispatched_before`
    /// is not part of [`Job`] and is left to the store.
    pub fn admits(&self, job: &Job) -> bool {
        self.id.as_ref().is_none_or(|id| *id == job.id)
            && job.status == self.state
            && self.attempt.is_none_or(|a| a == job.attempt)
            && self
                .lease_owner
                .as_ref()
                .is_none_or(|o| job.lease_owner.as_ref() == Some(o))
            && self
                .lease_ended_before
                .is_none_or(|t| job.lease_expires_at.is_some_and(|e| e < t))
            && self.created_before.is_none_or(|t| job.created_at <= t)
            && self
                .ready_by
                .is_none_or(|t| job.held_until().is_none_or(|h| h <= t))
            && self
                .live_at
                .is_none_or(|t| job.schedule.expires_at.is_none_or(|e| e > t))
            && self
                .expired_by
                .is_none_or(|t| job.schedule.expires_at.is_some_and(|e| e <= t))
            && !self.owners_except.contains(&job.owner)
            && (!self.holds_slot || job.quota_slot.is_some())
    }
}

/// What happens to the lease.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseEffect {
    Keep,
    /// `owner` holds it until `until`.
    Take {
        owner: String,
        until: OffsetDateTime,
    },
    /// The holder keeps it until `until`.
    Extend {
        until: OffsetDateTime,
    },
    /// No one holds it.
    Drop,
}

/// What happens to the owner's running slot a job holds.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotEffect {
    Keep,
    /// The job takes slot `slot` of `owner`'s: the store refuses it (`AlreadyExists`) while
    /// another job holds that slot.
    Take {
        owner: String,
        slot: u32,
    },
    /// The job leaves running: the slot is free again.
    Free,
}

/// What happens to a timestamp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stamp {
    Keep,
    Set(OffsetDateTime),
    Clear,
}

/// The writes of a change; fields left at `None` / `Keep` are not written.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    pub status: Option<JobStatus>,
    pub attempt: Option<u32>,
    pub lease: LeaseEffect,
    pub started_at: Stamp,
    pub finished_at: Option<OffsetDateTime>,
    /// Exit code, elapsed time, output files and failure of a run that ended (its status
    /// is in `status`).
    pub outcome: Option<Outcome>,
    /// The current attempt is handed to the dispatch queue now (a store that is its own
    /// queue keeps no such record).
    pub dispatched_at: Option<OffsetDateTime>,
    /// The attempt that this change ends, appended to the job's history.
    pub attempt_ended: Option<AttemptRecord>,
    pub slot: SlotEffect,
    pub retry_at: Stamp,
    /// Until when the job is held back ([`Job::held_until`]), written with `retry_at`.
    pub held_until: Option<OffsetDateTime>,
}

impl Effects {
    fn none() -> Self {
        Effects {
            status: None,
            attempt: None,
            lease: LeaseEffect::Keep,
            started_at: Stamp::Keep,
            finished_at: None,
            outcome: None,
            dispatched_at: None,
            attempt_ended: None,
            slot: SlotEffect::Keep,
            retry_at: Stamp::Keep,
            held_until: None,
        }
    }

    /// The job as it is after these effects: what a store returns after applying them.
    pub fn apply(&self, job: &mut Job) {
        if let Some(status) = self.status {
            job.status = status;
        }
        if let Some(attempt) = self.attempt {
            job.attempt = attempt;
        }
        match &self.lease {
            LeaseEffect::Keep => {}
            LeaseEffect::Take { owner, until } => {
                job.lease_owner = Some(owner.clone());
                job.lease_expires_at = Some(*until);
            }
            LeaseEffect::Extend { until } => job.lease_expires_at = Some(*until),
            LeaseEffect::Drop => {
                job.lease_owner = None;
                job.lease_expires_at = None;
            }
        }
        match self.started_at {
            Stamp::Keep => {}
            Stamp::Set(t) => job.started_at = Some(t),
            Stamp::Clear => job.started_at = None,
        }
        if let Some(t) = self.finished_at {
            job.finished_at = Some(t);
        }
        if let Some(o) = &self.outcome {
            job.exit_code = o.exit_code;
            job.elapsed_ms = Some(o.elapsed_ms);
            job.output_files = o.output_files.clone();
            job.failure = o.failure.clone();
        }
        if let Some(record) = &self.attempt_ended {
            job.attempts.push(record.clone());
        }
        match &self.slot {
            SlotEffect::Keep => {}
            SlotEffect::Take { slot, .. } => job.quota_slot = Some(*slot),
            SlotEffect::Free => job.quota_slot = None,
        }
        match self.retry_at {
            Stamp::Keep => {}
            Stamp::Set(t) => job.retry_at = Some(t),
            Stamp::Clear => job.retry_at = None,
        }
    }
}

/// One transition: applied atomically if and only if its guard holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub transition: Transition,
    pub guard: Guard,
    pub effects: Effects,
    /// The worker making the change, when a worker makes it.
    pub actor: Option<String>,
}

impl Change {
    /// The event this change causes, given the job as the store returned it after the change.
    pub fn event(&self, after: &Job, at: OffsetDateTime) -> JobEvent {
        JobEvent::after(after, Some(self.guard.state), self.actor.clone(), at)
    }
}

/// A transition that was applied: the job after it and the event it caused.
#[derive(Debug, Clone, PartialEq)]
pub struct Transitioned {
    pub job: Job,
    pub event: JobEvent,
}

/// The event of a newly submitted (queued) job.
pub fn submitted(job: &Job, at: OffsetDateTime) -> JobEvent {
    JobEvent::after(job, None, None, at)
}

fn take_lease(worker: &str, lease: Duration, now: OffsetDateTime) -> Effects {
    Effects {
        status: Some(JobStatus::Running),
        lease: LeaseEffect::Take {
            owner: worker.to_string(),
            until: now + lease,
        },
        started_at: Stamp::Set(now),
        // A retry that starts is no longer awaited.
        retry_at: Stamp::Clear,
        ..Effects::none()
    }
}

/// `queued → running` at `attempt`, with a lease for `worker` until `now + lease`, taking
/// `slot` (owner, slot number) of its owner's running limit when it has one. Only a job that
/// may start now (ready, not expired) matches; a message for an older attempt (stale) or a
/// job already taken or cancelled does not.
pub fn claim(
    id: &JobId,
    attempt: u32,
    slot: Option<(&str, u32)>,
    worker: &str,
    lease: Duration,
    now: OffsetDateTime,
) -> Change {
    let mut effects = take_lease(worker, lease, now);
    if let Some((owner, slot)) = slot {
        effects.slot = SlotEffect::Take {
            owner: owner.to_string(),
            slot,
        };
    }
    Change {
        transition: Transition::Claim,
        guard: Guard {
            attempt: Some(attempt),
            ready_by: Some(now),
            live_at: Some(now),
            ..Guard::job(id, JobStatus::Queued)
        },
        effects,
        actor: Some(worker.to_string()),
    }
}

/// `queued → running` for the first job in scheduling order that meets `waiting` (a guard
/// from [`crate::scheduling::waiting`]), whatever its attempt; for jobs without a running
/// limit (a limited job is claimed by id, with its slot).
pub fn claim_next(worker: &str, lease: Duration, waiting: Guard, now: OffsetDateTime) -> Change {
    Change {
        transition: Transition::ClaimNext,
        guard: waiting,
        effects: take_lease(worker, lease, now),
        actor: Some(worker.to_string()),
    }
}

/// The lease holder extends its lease to `now + lease`; causes no event.
pub fn renew(
    id: &JobId,
    attempt: u32,
    worker: &str,
    lease: Duration,
    now: OffsetDateTime,
) -> Change {
    Change {
        transition: Transition::Renew,
        guard: Guard::held(id, attempt, worker),
        effects: Effects {
            lease: LeaseEffect::Extend { until: now + lease },
            ..Effects::none()
        },
        actor: Some(worker.to_string()),
    }
}

/// A run may only end in a terminal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a worker cannot end a job as {0}")]
pub struct NotTerminal(pub JobStatus);

fn ended(outcome: &Outcome, attempt: AttemptRecord, now: OffsetDateTime) -> Effects {
    Effects {
        status: Some(outcome.status),
        lease: LeaseEffect::Drop,
        finished_at: Some(now),
        outcome: Some(outcome.clone()),
        attempt_ended: Some(attempt),
        slot: SlotEffect::Free,
        ..Effects::none()
    }
}

/// What a failed run of a held attempt may do: come back after `delay` for retry `number`
/// (from 1). Present only while the job has retries left.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub number: u32,
    pub delay: Duration,
    /// The job's `not_before`, which a retry never precedes.
    pub not_before: Option<OffsetDateTime>,
}

/// The attempt a worker holds, as its history will keep it when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Held<'a> {
    pub id: &'a JobId,
    pub attempt: u32,
    pub worker: &'a str,
    /// When the attempt started (the claimed job's `started_at`).
    pub started_at: Option<OffsetDateTime>,
    /// Whether a failed run is retried, and when.
    pub retry: Option<Retry>,
}

impl Held<'_> {
    fn record(
        &self,
        outcome: AttemptOutcome,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> AttemptRecord {
        AttemptRecord {
            attempt: self.attempt,
            worker: Some(self.worker.to_string()),
            started_at: self.started_at,
            ended_at: now,
            outcome,
            reason,
        }
    }
}

/// The record of `job`'s current attempt, ended at `now`.
fn current_attempt(
    job: &Job,
    outcome: AttemptOutcome,
    reason: Option<String>,
    now: OffsetDateTime,
) -> AttemptRecord {
    AttemptRecord {
        attempt: job.attempt,
        worker: job.lease_owner.clone(),
        started_at: job.started_at,
        ended_at: now,
        outcome,
        reason,
    }
}

/// `running → finished | failed | cancelled` by the worker holding the lease at its attempt;
/// the attempt ends with the run's status and failure. A failed run with retries left
/// ([`Held::retry`]) that [`crate::scheduling::retryable`] admits goes back to the queue
/// instead (`running → queued`, attempt + 1) with its `retry_at`; a cancel or time limit
/// never does.
pub fn finish(
    held: &Held<'_>,
    outcome: &Outcome,
    now: OffsetDateTime,
) -> Result<Change, NotTerminal> {
    let ends = match outcome.status {
        JobStatus::Finished => AttemptOutcome::Finished,
        JobStatus::Failed => AttemptOutcome::Failed,
        JobStatus::Cancelled => AttemptOutcome::Cancelled,
        other => return Err(NotTerminal(other)),
    };
    let record = held.record(ends, outcome.failure.as_ref().map(ToString::to_string), now);
    if let Some(retry) = &held.retry
        && ends == AttemptOutcome::Failed
        && crate::scheduling::retryable(outcome.failure.as_ref())
    {
        let at = now + retry.delay;
        let mut effects = requeued(record, now);
        effects.retry_at = Stamp::Set(at);
        effects.held_until = retry.not_before.max(Some(at));
        return Ok(Change {
            transition: Transition::Retry,
            guard: Guard::held(held.id, held.attempt, held.worker),
            effects,
            actor: Some(held.worker.to_string()),
        });
    }
    Ok(Change {
        transition: Transition::Finish,
        guard: Guard::held(held.id, held.attempt, held.worker),
        effects: ended(outcome, record, now),
        actor: Some(held.worker.to_string()),
    })
}

/// Back to the queue for attempt + 1, lease dropped, the ended attempt recorded; the caller
/// dispatches it now.
fn requeued(ended: AttemptRecord, now: OffsetDateTime) -> Effects {
    Effects {
        status: Some(JobStatus::Queued),
        attempt: Some(ended.attempt + 1),
        lease: LeaseEffect::Drop,
        started_at: Stamp::Clear,
        dispatched_at: Some(now),
        attempt_ended: Some(ended),
        slot: SlotEffect::Free,
        ..Effects::none()
    }
}

/// `running → queued` with attempt + 1: the worker holding the lease hands the job back
/// (it is shutting down, or cannot store the job's files); `reason` says which, in words.
pub fn hand_back(held: &Held<'_>, reason: &str, now: OffsetDateTime) -> Change {
    let record = held.record(AttemptOutcome::HandedBack, Some(reason.to_string()), now);
    Change {
        transition: Transition::HandBack,
        guard: Guard::held(held.id, held.attempt, held.worker),
        effects: requeued(record, now),
        actor: Some(held.worker.to_string()),
    }
}

/// The states a job can be cancelled from: a queued job never starts; a running one keeps
/// its lease owner, whose next renewal fails, so its worker kills the run.
pub const CANCELLABLE: [JobStatus; 2] = [JobStatus::Queued, JobStatus::Running];

/// `queued | running → cancelled` for `job` as it was read, only while it is still in that
/// state at that attempt; a running job's attempt ends `cancelled`. `None` for a job that
/// cannot be cancelled (it ended).
pub fn cancel(job: &Job, now: OffsetDateTime) -> Option<Change> {
    if !CANCELLABLE.contains(&job.status) {
        return None;
    }
    let ends = (job.status == JobStatus::Running)
        .then(|| current_attempt(job, AttemptOutcome::Cancelled, None, now));
    Some(Change {
        transition: Transition::Cancel,
        guard: Guard {
            attempt: Some(job.attempt),
            ..Guard::job(&job.id, job.status)
        },
        effects: Effects {
            status: Some(JobStatus::Cancelled),
            finished_at: Some(now),
            attempt_ended: ends,
            // A running job keeps its slot until its processes are gone: its worker frees it
            // after the kill (`free_slot`), or recovery does once the lease ran out.
            ..Effects::none()
        },
        actor: None,
    })
}

/// A cancelled job's worker, its run killed, frees the slot of its owner's running limit the
/// job held (no change when it held none).
pub fn free_slot(held: &Held<'_>) -> Change {
    Change {
        transition: Transition::FreeSlot,
        guard: Guard {
            attempt: Some(held.attempt),
            lease_owner: Some(held.worker.to_string()),
            holds_slot: true,
            ..Guard::job(held.id, JobStatus::Cancelled)
        },
        effects: Effects {
            slot: SlotEffect::Free,
            ..Effects::none()
        },
        actor: Some(held.worker.to_string()),
    }
}

/// Cancelled jobs still holding a slot whose lease ran out before `now`: their worker was
/// lost before it freed the slot.
pub fn stale_slots(now: OffsetDateTime) -> Guard {
    Guard {
        holds_slot: true,
        lease_ended_before: Some(now),
        ..Guard::in_state(JobStatus::Cancelled)
    }
}

/// Frees the slot of `job`, found by [`stale_slots`] at `now`, only if that still holds.
pub fn free_stale_slot(job: &Job, now: OffsetDateTime) -> Change {
    Change {
        transition: Transition::FreeSlot,
        guard: Guard {
            id: Some(job.id.clone()),
            attempt: Some(job.attempt),
            ..stale_slots(now)
        },
        effects: Effects {
            slot: SlotEffect::Free,
            ..Effects::none()
        },
        actor: None,
    }
}

/// Queued jobs whose expiry is at or before `now`.
pub fn expiring(now: OffsetDateTime) -> Guard {
    Guard {
        expired_by: Some(now),
        ..Guard::in_state(JobStatus::Queued)
    }
}

/// `queued → cancelled` (expired) for `job`, still queued at its attempt and past its expiry
/// at `now`: it never starts.
pub fn expire(job: &Job, now: OffsetDateTime) -> Change {
    let after_secs = job
        .schedule
        .expires_at
        .map(|e| (e - job.created_at).whole_seconds().max(0) as u64)
        .unwrap_or(0);
    Change {
        transition: Transition::Expire,
        guard: Guard {
            attempt: Some(job.attempt),
            expired_by: Some(now),
            ..Guard::job(&job.id, JobStatus::Queued)
        },
        effects: Effects {
            status: Some(JobStatus::Cancelled),
            finished_at: Some(now),
            outcome: Some(Outcome {
                status: JobStatus::Cancelled,
                exit_code: None,
                elapsed_ms: 0,
                output_files: Vec::new(),
                failure: Some(FailureReason::Expired { after_secs }),
            }),
            ..Effects::none()
        },
        actor: None,
    }
}

/// Running jobs whose lease ended before `now`: their worker was lost.
pub fn expired(now: OffsetDateTime) -> Guard {
    Guard {
        lease_ended_before: Some(now),
        ..Guard::in_state(JobStatus::Running)
    }
}

/// How a lost lease is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LeaseLost {
    /// It expired: the change applies only while it is still expired at `now` (a renewal
    /// that came in time wins).
    Expired,
    /// Every lease is void (the single process that held them all restarted).
    Void,
}

impl LeaseLost {
    /// Why the attempt was lost, in words, as its history keeps it.
    pub fn reason(self) -> &'static str {
        match self {
            LeaseLost::Expired => "lease expired: the worker stopped renewing it",
            LeaseLost::Void => "the process that ran it restarted",
        }
    }
}

/// The max-attempts rule: a job whose worker was lost goes back to the queue for the next
/// attempt while `attempt < max_attempts`, and fails (worker lost) after the last one. Either
/// way the attempt ends `lost`. Attempts that failed and were retried (the job's `retries`)
/// do not count here: each rule keeps its own budget.
pub fn lease_lost(job: &Job, max_attempts: u32, how: LeaseLost, now: OffsetDateTime) -> Change {
    let guard = Guard {
        attempt: Some(job.attempt),
        lease_ended_before: (how == LeaseLost::Expired).then_some(now),
        ..Guard::job(&job.id, JobStatus::Running)
    };
    let record = current_attempt(job, AttemptOutcome::Lost, Some(how.reason().into()), now);
    if job.attempt.saturating_sub(job.retried()) < max_attempts {
        return Change {
            transition: Transition::Requeue,
            guard,
            effects: requeued(record, now),
            actor: None,
        };
    }
    let outcome = Outcome {
        status: JobStatus::Failed,
        exit_code: None,
        elapsed_ms: job
            .started_at
            .map(|s| (now - s).whole_milliseconds().max(0) as u64)
            .unwrap_or(0),
        output_files: Vec::new(),
        failure: Some(FailureReason::WorkerLost {
            attempts: job.attempt,
        }),
    };
    Change {
        transition: Transition::GiveUp,
        guard,
        effects: ended(&outcome, record, now),
        actor: None,
    }
}

/// Queued jobs whose current attempt was handed to the dispatch queue before `before` and
/// never claimed: their message may have been lost.
pub fn stale_dispatch(before: OffsetDateTime) -> Guard {
    Guard {
        dispatched_before: Some(before),
        ..Guard::in_state(JobStatus::Queued)
    }
}

/// Marks `job`'s current attempt as dispatched again at `now`, only if it is still queued at
/// that attempt and was not re-dispatched since `before`: of several observers, one wins.
pub fn redispatch(job: &Job, before: OffsetDateTime, now: OffsetDateTime) -> Change {
    Change {
        transition: Transition::Redispatch,
        guard: Guard {
            attempt: Some(job.attempt),
            ..Guard::job(&job.id, JobStatus::Queued)
        }
        .with_dispatched_before(before),
        effects: Effects {
            dispatched_at: Some(now),
            ..Effects::none()
        },
        actor: None,
    }
}

impl Guard {
    fn with_dispatched_before(mut self, before: OffsetDateTime) -> Self {
        self.dispatched_before = Some(before);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobSpec;

    fn job() -> Job {
        let spec = JobSpec {
            url: "https://example.com/r.git".into(),
            args: String::new(),
            config: String::new(),
        };
        Job::new("alice", spec, OffsetDateTime::now_utc())
    }

    fn applied(change: &Change, job: &Job) -> Option<Job> {
        change.guard.admits(job).then(|| {
            let mut after = job.clone();
            change.effects.apply(&mut after);
            after
        })
    }

    const LEASE: Duration = Duration::from_secs(30);

    fn held<'a>(id: &'a JobId, attempt: u32, worker: &'a str) -> Held<'a> {
        Held {
            id,
            attempt,
            worker,
            started_at: None,
            retry: None,
        }
    }

    fn outcomes(job: &Job) -> Vec<(u32, AttemptOutcome, Option<&str>)> {
        job.attempts
            .iter()
            .map(|a| (a.attempt, a.outcome, a.reason.as_deref()))
            .collect()
    }

    #[test]
    fn every_end_of_an_attempt_records_it_and_nothing_else_does() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        let start = now - Duration::from_secs(7);
        let claim1 = claim(&j.id, 1, None, "w", LEASE, start);
        let running = applied(&claim1, &j).unwrap();
        assert!(running.attempts.is_empty(), "a claim ends no attempt");
        let renewed = applied(&renew(&j.id, 1, "w", LEASE, now), &running).unwrap();
        assert!(renewed.attempts.is_empty(), "nor does a renewal");
        let w = Held {
            started_at: running.started_at,
            ..held(&j.id, 1, "w")
        };
        let back = applied(&hand_back(&w, "shutting down", now), &running).unwrap();
        assert_eq!(
            back.attempts,
            [AttemptRecord {
                attempt: 1,
                worker: Some("w".into()),
                started_at: Some(start),
                ended_at: now,
                outcome: AttemptOutcome::HandedBack,
                reason: Some("shutting down".into()),
            }]
        );
        let failed = Outcome {
            status: JobStatus::Failed,
            exit_code: Some(2),
            elapsed_ms: 5,
            output_files: vec![],
            failure: Some(FailureReason::ExitCode { code: 2 }),
        };
        let running2 = applied(&claim(&j.id, 2, None, "v", LEASE, now), &back).unwrap();
        let end = finish(&held(&j.id, 2, "v"), &failed, now).unwrap();
        let done = applied(&end, &running2).unwrap();
        assert_eq!(
            outcomes(&done),
            [
                (1, AttemptOutcome::HandedBack, Some("shutting down")),
                (2, AttemptOutcome::Failed, Some("exit code 2")),
            ]
        );
        assert_eq!(done.attempts[1].worker.as_deref(), Some("v"));
        let cancelled = applied(&cancel(&running, now).unwrap(), &running).unwrap();
        assert_eq!(outcomes(&cancelled), [(1, AttemptOutcome::Cancelled, None)]);
        assert_eq!(cancelled.attempts[0].started_at, Some(start));
        assert!(
            applied(&cancel(&j, now).unwrap(), &j)
                .unwrap()
                .attempts
                .is_empty(),
            "a queued job's cancel ends no attempt"
        );
    }

    #[test]
    fn a_lost_attempt_is_recorded_with_why_on_requeue_and_on_give_up() {
        let now = OffsetDateTime::now_utc();
        let mut j = job();
        j.status = JobStatus::Running;
        j.lease_owner = Some("w".into());
        j.lease_expires_at = Some(now - Duration::from_secs(1));
        j.started_at = Some(now - Duration::from_secs(10));
        let requeued = applied(&lease_lost(&j, 2, LeaseLost::Expired, now), &j).unwrap();
        assert_eq!(
            requeued.attempts,
            [AttemptRecord {
                attempt: 1,
                worker: Some("w".into()),
                started_at: j.started_at,
                ended_at: now,
                outcome: AttemptOutcome::Lost,
                reason: Some(LeaseLost::Expired.reason().into()),
            }]
        );
        j.attempt = 2;
        let gave_up = applied(&lease_lost(&j, 2, LeaseLost::Void, now), &j).unwrap();
        assert_eq!(gave_up.status, JobStatus::Failed);
        assert_eq!(
            outcomes(&gave_up),
            [(2, AttemptOutcome::Lost, Some(LeaseLost::Void.reason()))]
        );
    }

    #[test]
    fn every_transition_leaves_only_an_allowed_state() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        let running = applied(&claim(&j.id, 1, None, "w", LEASE, now), &j).unwrap();
        let done = Outcome {
            status: JobStatus::Finished,
            exit_code: Some(0),
            elapsed_ms: 5,
            output_files: vec![],
            failure: None,
        };
        let changes = [
            (claim(&j.id, 1, None, "w", LEASE, now), &j),
            (
                claim_next("w", LEASE, Guard::in_state(JobStatus::Queued), now),
                &j,
            ),
            (cancel(&j, now).unwrap(), &j),
            (finish(&held(&j.id, 1, "w"), &done, now).unwrap(), &running),
            (hand_back(&held(&j.id, 1, "w"), "test", now), &running),
            (cancel(&running, now).unwrap(), &running),
        ];
        for (change, before) in changes {
            let after = applied(&change, before).expect("guard holds");
            assert!(
                before.status.can_become(after.status),
                "{:?}: {} -> {}",
                change.transition,
                before.status,
                after.status
            );
            assert_eq!(change.event(&after, now).from, Some(before.status));
        }
    }

    #[test]
    fn a_claim_takes_the_lease_and_only_at_its_attempt() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        assert!(applied(&claim(&j.id, 2, None, "w", LEASE, now), &j).is_none());
        let after = applied(&claim(&j.id, 1, None, "w", LEASE, now), &j).unwrap();
        assert_eq!(after.status, JobStatus::Running);
        assert_eq!(after.lease_owner.as_deref(), Some("w"));
        assert_eq!(after.lease_expires_at, Some(now + LEASE));
        assert_eq!(after.started_at, Some(now));
        assert!(applied(&claim(&j.id, 1, None, "v", LEASE, now), &after).is_none());
        let event = claim(&j.id, 1, None, "w", LEASE, now).event(&after, now);
        assert_eq!(event.waited_ms, Some(0));
        assert_eq!(event.worker.as_deref(), Some("w"));
    }

    #[test]
    fn only_the_lease_holder_at_its_attempt_renews_finishes_or_hands_back() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        let running = applied(&claim(&j.id, 1, None, "w", LEASE, now), &j).unwrap();
        let failed = Outcome {
            status: JobStatus::Failed,
            exit_code: Some(1),
            elapsed_ms: 5,
            output_files: vec![],
            failure: Some(FailureReason::ExitCode { code: 1 }),
        };
        for (worker, attempt) in [("v", 1), ("w", 2)] {
            assert!(applied(&renew(&j.id, attempt, worker, LEASE, now), &running).is_none());
            let end = finish(&held(&j.id, attempt, worker), &failed, now).unwrap();
            assert!(applied(&end, &running).is_none());
            let back = hand_back(&held(&j.id, attempt, worker), "test", now);
            assert!(applied(&back, &running).is_none());
        }
        let back = applied(&hand_back(&held(&j.id, 1, "w"), "test", now), &running).unwrap();
        assert_eq!((back.status, back.attempt), (JobStatus::Queued, 2));
        assert_eq!((back.lease_owner, back.started_at), (None, None));
        let queued_end = Outcome {
            status: JobStatus::Queued,
            ..failed
        };
        assert_eq!(
            finish(&held(&j.id, 1, "w"), &queued_end, now),
            Err(NotTerminal(JobStatus::Queued))
        );
    }

    #[test]
    fn a_lost_lease_requeues_until_the_last_attempt_then_fails() {
        let now = OffsetDateTime::now_utc();
        let mut j = job();
        j.status = JobStatus::Running;
        j.lease_owner = Some("w".into());
        j.lease_expires_at = Some(now - Duration::from_secs(1));
        j.started_at = Some(now - Duration::from_secs(10));
        for attempt in 1..3 {
            j.attempt = attempt;
            let change = lease_lost(&j, 3, LeaseLost::Expired, now);
            let after = applied(&change, &j).unwrap();
            assert_eq!(
                (after.status, after.attempt),
                (JobStatus::Queued, attempt + 1)
            );
            assert_eq!(change.effects.dispatched_at, Some(now));
        }
        j.attempt = 3;
        let change = lease_lost(&j, 3, LeaseLost::Expired, now);
        let after = applied(&change, &j).unwrap();
        assert_eq!(after.status, JobStatus::Failed);
        assert_eq!(
            after.failure,
            Some(FailureReason::WorkerLost { attempts: 3 })
        );
        assert_eq!(after.elapsed_ms, Some(10_000));
        let event = change.event(&after, now);
        assert_eq!(
            (event.from, event.to),
            (Some(JobStatus::Running), JobStatus::Failed)
        );
        assert!(event.elapsed_ms.is_some());
        // A renewal that came in time wins over the expiry; a void lease does not need one.
        j.lease_expires_at = Some(now + LEASE);
        assert!(applied(&lease_lost(&j, 3, LeaseLost::Expired, now), &j).is_none());
        assert!(applied(&lease_lost(&j, 3, LeaseLost::Void, now), &j).is_some());
    }

    #[test]
    fn cancel_is_tried_from_queued_then_running_and_carries_elapsed_time() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        assert_eq!(CANCELLABLE, [JobStatus::Queued, JobStatus::Running]);
        let mut moved_on = j.clone();
        moved_on.status = JobStatus::Running;
        let stale = cancel(&moved_on, now).unwrap();
        assert!(applied(&stale, &j).is_none(), "the job as read, or nothing");
        let change = cancel(&j, now).unwrap();
        let after = applied(&change, &j).unwrap();
        assert_eq!(
            (after.status, after.finished_at),
            (JobStatus::Cancelled, Some(now))
        );
        assert!(change.event(&after, now).elapsed_ms.is_some());
        for terminal in [JobStatus::Finished, JobStatus::Failed, JobStatus::Cancelled] {
            let mut ended = j.clone();
            ended.status = terminal;
            assert_eq!(cancel(&ended, now), None);
            for from in CANCELLABLE {
                let mut read = j.clone();
                read.status = from;
                assert!(applied(&cancel(&read, now).unwrap(), &ended).is_none());
            }
        }
    }

    #[test]
    fn claim_next_takes_only_jobs_created_at_or_before_the_threshold() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        let earlier = j.created_at - Duration::from_millis(1);
        assert!(
            applied(
                &claim_next(
                    "w",
                    LEASE,
                    crate::scheduling::waiting(
                        &crate::scheduling::Pick {
                            created_before: Some(earlier),
                            quotas: false
                        },
                        &[],
                        now
                    ),
                    now
                ),
                &j
            )
            .is_none()
        );
        assert!(
            applied(
                &claim_next(
                    "w",
                    LEASE,
                    crate::scheduling::waiting(
                        &crate::scheduling::Pick {
                            created_before: Some(j.created_at),
                            quotas: false
                        },
                        &[],
                        now
                    ),
                    now
                ),
                &j
            )
            .is_some()
        );
        let later = j.created_at + Duration::from_millis(1);
        assert!(
            applied(
                &claim_next(
                    "w",
                    LEASE,
                    crate::scheduling::waiting(
                        &crate::scheduling::Pick {
                            created_before: Some(later),
                            quotas: false
                        },
                        &[],
                        now
                    ),
                    now
                ),
                &j
            )
            .is_some()
        );
    }
}
