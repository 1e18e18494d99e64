//! The scheduling rules (docs/scheduling.md), with no I/O: which waiting job a free slot
//! takes next, a user's running limit, fair share between users, and the back-off between
//! retries. The store roles in [`crate::store`] apply them; adapters only translate.
//!
//! The order of the waiting jobs a slot may take (queued, ready — past `notBefore` and
//! `retryAt` — and not expired): quotas before all (an owner at the running limit is
//! skipped), then the highest priority, then the lowest fair-share tag, then the oldest.
//!
//! **Fair share** is start-time fair queueing over users: a job is tagged at submit with
//! `max(V, T_owner) + 1/w`, where `V` (the system's virtual time) is the lowest tag among
//! the waiting jobs that may start, `T_owner` the highest tag among the owner's own queued or
//! running jobs and `w` the owner's weight. A user with 200 jobs waiting holds tags
//! `V..V+200`; another who submits 10 then gets `V+1..V+10`, so the two alternate instead of
//! the second waiting behind all 200. Once a user's jobs are all done, their tags no longer
//! count: past use is forgiven, never banked.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::domain::{Job, JobStatus};
use crate::lifecycle::Guard;

/// What a free slot may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pick {
    /// Only jobs created at or before this time (an idle look leaves the newest to the
    /// message that announces them).
    pub created_before: Option<OffsetDateTime>,
    /// Whether running limits apply (`scheduling.max_running_per_user` or
    /// `scheduling.quota_claim` is set): a claim then reads which slots each limited owner
    /// holds before it takes one (two reads and a write instead of one write).
    pub quotas: bool,
}

/// The waiting jobs a slot may take at `now`, skipping the owners in `full`.
pub fn waiting(pick: &Pick, full: &[String], now: OffsetDateTime) -> Guard {
    Guard {
        created_before: pick.created_before,
        ready_by: Some(now),
        live_at: Some(now),
        owners_except: full.to_vec(),
        ..Guard::in_state(JobStatus::Queued)
    }
}

/// Running jobs that hold one of their owner's slots.
pub fn holding_slots() -> Guard {
    Guard {
        holds_slot: true,
        ..Guard::in_state(JobStatus::Running)
    }
}

/// The slots each limited owner holds, from their running jobs that hold one.
#[derive(Debug, Default)]
pub struct Slots {
    held: HashMap<String, Vec<u32>>,
}

impl Slots {
    pub fn from_running(running: &[Job]) -> Self {
        let mut held: HashMap<String, Vec<u32>> = HashMap::new();
        for job in running {
            if let Some(slot) = job.quota_slot {
                held.entry(job.owner.clone()).or_default().push(slot);
            }
        }
        Slots { held }
    }

    /// The lowest free slot of `job`'s owner under the job's limit; `None` when the owner is
    /// at it. `Some(None)` for a job with no limit.
    pub fn free_for(&self, job: &Job) -> Option<Option<u32>> {
        let Some(limit) = job.schedule.max_running else {
            return Some(None);
        };
        let held = self.held.get(&job.owner).map(Vec::as_slice).unwrap_or(&[]);
        (0..limit).find(|k| !held.contains(k)).map(Some)
    }
}

/// A waiting job's fair-share tag: `max(virtual_time, owner_last) + 1 / weight`, where
/// `virtual_time` is the lowest tag among the jobs waiting to start and `owner_last` the
/// highest among the owner's queued or running jobs (`None` when there are none).
pub fn fair_tag(virtual_time: Option<f64>, owner_last: Option<f64>, weight: f64) -> f64 {
    let start = match (virtual_time, owner_last) {
        (Some(v), Some(o)) => v.max(o),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => 0.0,
    };
    start + 1.0 / weight.max(0.001)
}

/// Exponential back-off between retries: the `n`-th retry (from 1) waits
/// `d = min(max, base · 2^(n-1))`, jittered to `d/2 + jitter · d/2` (`jitter` in [0, 1)), so
/// retries of many jobs do not come back in step and, below the maximum, no gap is shorter
/// than the longest the previous one could be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, n: u32, jitter: f64) -> Duration {
        let doubled = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(30));
        let d = doubled.min(self.max);
        d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Whether a failed run is tried again while retries are left: not a time limit (the
/// issue's rule: the same run would hit it again), not a repository without `package.json`
/// or a start script (no attempt can succeed), not a lost worker (its own rule).
pub fn retryable(failure: Option<&crate::domain::FailureReason>) -> bool {
    use crate::domain::FailureReason::*;
    !matches!(
        failure,
        Some(Timeout { .. } | NoPackageJson | NoStartScript | WorkerLost { .. } | Expired { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobSpec, Schedule};

    fn job(owner: &str, max_running: Option<u32>, slot: Option<u32>) -> Job {
        let spec = JobSpec {
            url: "https://example.com/r.git".into(),
            args: String::new(),
            config: String::new(),
        };
        let mut job = Job::new(owner, spec, OffsetDateTime::now_utc());
        job.schedule = Schedule {
            max_running,
            ..Schedule::default()
        };
        job.quota_slot = slot;
        job
    }

    #[test]
    fn a_limited_owner_takes_the_lowest_free_slot_and_none_at_the_limit() {
        let running = [job("a", Some(3), Some(0)), job("a", Some(3), Some(2))];
        let slots = Slots::from_running(&running);
        assert_eq!(slots.free_for(&job("a", Some(3), None)), Some(Some(1)));
        assert_eq!(slots.free_for(&job("a", Some(2), None)), Some(Some(1)));
        assert_eq!(slots.free_for(&job("a", Some(1), None)), None);
        assert_eq!(slots.free_for(&job("b", Some(1), None)), Some(Some(0)));
        assert_eq!(slots.free_for(&job("a", None, None)), Some(None));
    }

    #[test]
    fn a_late_user_interleaves_with_a_backlog_instead_of_waiting_behind_it() {
        // A's backlog holds tags 5..=200 (1..=4 started); B's first job starts at V.
        let b1 = fair_tag(Some(5.0), None, 1.0);
        let b2 = fair_tag(Some(5.0), Some(b1), 1.0);
        assert_eq!((b1, b2), (6.0, 7.0));
        let a_next = fair_tag(Some(5.0), Some(200.0), 1.0);
        assert_eq!(a_next, 201.0);
        // Weight 2 advances half as fast: twice the share.
        assert_eq!(fair_tag(None, Some(3.0), 2.0), 3.5);
        assert_eq!(fair_tag(None, None, 1.0), 1.0);
    }

    #[test]
    fn retry_gaps_grow_and_stop_at_the_maximum() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 0.99).as_secs(), 7);
        assert_eq!(b.delay(9, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(200, 1.0), Duration::from_secs(10));
        for n in 1..3 {
            assert!(b.delay(n + 1, 0.0) >= b.delay(n, 0.999), "retry {n}");
        }
    }

    #[test]
    fn time_limits_and_hopeless_repositories_are_not_retried() {
        use crate::domain::FailureReason::*;
        assert!(retryable(Some(&ExitCode { code: 1 })));
        assert!(retryable(Some(&CloneFailed { detail: "x".into() })));
        assert!(!retryable(Some(&Timeout { limit_secs: 1 })));
        assert!(!retryable(Some(&NoStartScript)));
        assert!(!retryable(Some(&WorkerLost { attempts: 3 })));
    }
}
