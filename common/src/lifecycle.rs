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

use std::time::Duration;

use time::OffsetDateTime;

use crate::domain::{FailureReason, Job, JobEvent, JobId, JobStatus, Outcome};

/// Which transition a [`Change`] is; its name appears in store errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Claim,
    ClaimWaiting,
    Renew,
    Finish,
    HandBack,
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
            Transition::ClaimWaiting => "claim a waiting job",
            Transition::Renew => "renew lease",
            Transition::Finish => "finish",
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
        ..Effects::none()
    }
}

/// `queued → running` at `attempt`, with a lease for `worker` until `now + lease`. A
/// message for an older attempt (stale) or a job already taken or cancelled does not match.
pub fn claim(
    id: &JobId,
    attempt: u32,
    worker: &str,
    lease: Duration,
    now: OffsetDateTime,
) -> Change {
    Change {
        transition: Transition::Claim,
        guard: Guard {
            attempt: Some(attempt),
            ..Guard::job(id, JobStatus::Queued)
        },
        effects: take_lease(worker, lease, now),
        actor: Some(worker.to_string()),
    }
}

/// `queued → running` for the oldest queued job created at or before `created_before` (any job
/// when `None`), whatever its attempt.
pub fn claim_waiting(
    worker: &str,
    lease: Duration,
    created_before: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Change {
    Change {
        transition: Transition::ClaimWaiting,
        guard: Guard {
            created_before,
            ..Guard::in_state(JobStatus::Queued)
        },
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

fn ended(outcome: &Outcome, now: OffsetDateTime) -> Effects {
    Effects {
        status: Some(outcome.status),
        lease: LeaseEffect::Drop,
        finished_at: Some(now),
        outcome: Some(outcome.clone()),
        ..Effects::none()
    }
}

/// `running → finished | failed | cancelled` by the worker holding the lease at `attempt`.
pub fn finish(
    id: &JobId,
    attempt: u32,
    worker: &str,
    outcome: &Outcome,
    now: OffsetDateTime,
) -> Result<Change, NotTerminal> {
    if !outcome.status.is_terminal() {
        return Err(NotTerminal(outcome.status));
    }
    Ok(Change {
        transition: Transition::Finish,
        guard: Guard::held(id, attempt, worker),
        effects: ended(outcome, now),
        actor: Some(worker.to_string()),
    })
}

/// Back to the queue for attempt + 1, lease dropped; the caller dispatches it now.
fn requeued(attempt: u32, now: OffsetDateTime) -> Effects {
    Effects {
        status: Some(JobStatus::Queued),
        attempt: Some(attempt + 1),
        lease: LeaseEffect::Drop,
        started_at: Stamp::Clear,
        dispatched_at: Some(now),
        ..Effects::none()
    }
}

/// `running → queued` with attempt + 1: the worker holding the lease hands the job back
/// (it is shutting down, or cannot store the job's files).
pub fn hand_back(id: &JobId, attempt: u32, worker: &str, now: OffsetDateTime) -> Change {
    Change {
        transition: Transition::HandBack,
        guard: Guard::held(id, attempt, worker),
        effects: requeued(attempt, now),
        actor: Some(worker.to_string()),
    }
}

/// The states a job can be cancelled from, in the order a cancel tries them: a queued job
/// never starts; a running one keeps its lease owner, whose next renewal fails, so its
/// worker kills the run.
pub const CANCELLABLE: [JobStatus; 2] = [JobStatus::Queued, JobStatus::Running];

/// `from → cancelled` (`from` one of [`CANCELLABLE`]).
pub fn cancel(id: &JobId, from: JobStatus, now: OffsetDateTime) -> Change {
    Change {
        transition: Transition::Cancel,
        guard: Guard::job(id, from),
        effects: Effects {
            status: Some(JobStatus::Cancelled),
            finished_at: Some(now),
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

/// The max-attempts rule: a job whose worker was lost goes back to the queue for the next
/// attempt while `attempt < max_attempts`, and fails (worker lost) after the last one.
pub fn lease_lost(job: &Job, max_attempts: u32, how: LeaseLost, now: OffsetDateTime) -> Change {
    let guard = Guard {
        attempt: Some(job.attempt),
        lease_ended_before: (how == LeaseLost::Expired).then_some(now),
        ..Guard::job(&job.id, JobStatus::Running)
    };
    if job.attempt < max_attempts {
        return Change {
            transition: Transition::Requeue,
            guard,
            effects: requeued(job.attempt, now),
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
        effects: ended(&outcome, now),
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

    #[test]
    fn every_transition_leaves_only_an_allowed_state() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        let running = applied(&claim(&j.id, 1, "w", LEASE, now), &j).unwrap();
        let done = Outcome {
            status: JobStatus::Finished,
            exit_code: Some(0),
            elapsed_ms: 5,
            output_files: vec![],
            failure: None,
        };
        let changes = [
            (claim(&j.id, 1, "w", LEASE, now), &j),
            (claim_waiting("w", LEASE, None, now), &j),
            (cancel(&j.id, JobStatus::Queued, now), &j),
            (finish(&j.id, 1, "w", &done, now).unwrap(), &running),
            (hand_back(&j.id, 1, "w", now), &running),
            (cancel(&j.id, JobStatus::Running, now), &running),
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
        assert!(applied(&claim(&j.id, 2, "w", LEASE, now), &j).is_none());
        let after = applied(&claim(&j.id, 1, "w", LEASE, now), &j).unwrap();
        assert_eq!(after.status, JobStatus::Running);
        assert_eq!(after.lease_owner.as_deref(), Some("w"));
        assert_eq!(after.lease_expires_at, Some(now + LEASE));
        assert_eq!(after.started_at, Some(now));
        assert!(applied(&claim(&j.id, 1, "v", LEASE, now), &after).is_none());
        let event = claim(&j.id, 1, "w", LEASE, now).event(&after, now);
        assert_eq!(event.waited_ms, Some(0));
        assert_eq!(event.worker.as_deref(), Some("w"));
    }

    #[test]
    fn only_the_lease_holder_at_its_attempt_renews_finishes_or_hands_back() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        let running = applied(&claim(&j.id, 1, "w", LEASE, now), &j).unwrap();
        let failed = Outcome {
            status: JobStatus::Failed,
            exit_code: Some(1),
            elapsed_ms: 5,
            output_files: vec![],
            failure: Some(FailureReason::ExitCode { code: 1 }),
        };
        for (worker, attempt) in [("v", 1), ("w", 2)] {
            assert!(applied(&renew(&j.id, attempt, worker, LEASE, now), &running).is_none());
            let end = finish(&j.id, attempt, worker, &failed, now).unwrap();
            assert!(applied(&end, &running).is_none());
            assert!(applied(&hand_back(&j.id, attempt, worker, now), &running).is_none());
        }
        let back = applied(&hand_back(&j.id, 1, "w", now), &running).unwrap();
        assert_eq!((back.status, back.attempt), (JobStatus::Queued, 2));
        assert_eq!((back.lease_owner, back.started_at), (None, None));
        let queued_end = Outcome {
            status: JobStatus::Queued,
            ..failed
        };
        assert_eq!(
            finish(&j.id, 1, "w", &queued_end, now),
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
        assert!(applied(&cancel(&j.id, JobStatus::Running, now), &j).is_none());
        let change = cancel(&j.id, JobStatus::Queued, now);
        let after = applied(&change, &j).unwrap();
        assert_eq!(
            (after.status, after.finished_at),
            (JobStatus::Cancelled, Some(now))
        );
        assert!(change.event(&after, now).elapsed_ms.is_some());
        for terminal in [JobStatus::Finished, JobStatus::Failed, JobStatus::Cancelled] {
            let mut ended = j.clone();
            ended.status = terminal;
            for from in CANCELLABLE {
                assert!(applied(&cancel(&j.id, from, now), &ended).is_none());
            }
        }
    }

    #[test]
    fn claim_waiting_takes_only_jobs_created_at_or_before_the_threshold() {
        let now = OffsetDateTime::now_utc();
        let j = job();
        let earlier = j.created_at - Duration::from_millis(1);
        assert!(applied(&claim_waiting("w", LEASE, Some(earlier), now), &j).is_none());
        assert!(applied(&claim_waiting("w", LEASE, Some(j.created_at), now), &j).is_some());
        let later = j.created_at + Duration::from_millis(1);
        assert!(applied(&claim_waiting("w", LEASE, Some(later), now), &j).is_some());
    }
}
