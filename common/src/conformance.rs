//! The job store's conformance suite: the same test functions for every adapter of
//! [`JobRecords`], so each proves the fencing rules the services rely on. The SQLite store
//! runs it in this crate's unit tests, the MongoDB store in `tests/tests/mongo_adapter.rs`
//! against the MongoDB-wire server. [`store_conformance!`](crate::store_conformance) turns
//! every function into a `#[tokio::test]` given a function that makes a fresh store.
//!
//! Not part of the API: public only so the suite in `tests/` can call it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{
    AttemptOutcome, AttemptRecord, FailureReason, Job, JobId, JobSpec, JobStatus, Outcome,
    Schedule, from_unix_ms, unix_ms,
};
use crate::error::ErrorKind;
use crate::ports::{CancelResult, Page};
use crate::store::{Held, JobCatalog, JobLeases, JobLookup, JobRecords, JobRecovery, Pick};

/// A store under test, discarded (its database dropped) when a test is done.
#[async_trait]
pub trait TestStore: JobRecords + crate::ports::ObservationStore + 'static {
    async fn discard(&self);
}

#[async_trait]
impl TestStore for crate::embedded::SqliteStore {
    async fn discard(&self) {}
}

#[async_trait]
impl TestStore for crate::mongo::MongoJobStore {
    async fn discard(&self) {
        self.drop_database().await.expect("drop the test database");
    }
}

/// Every test of the suite as `#[tokio::test]` functions of the calling module. `$fresh`
/// is an async function returning `Option<S>` (`None`: the store's server is not set up,
/// the test returns); attributes after it (`#[ignore = "…"]` for a real server) go on each test.
#[macro_export]
macro_rules! store_conformance {
    ($fresh:path $(, #[$attr:meta])* $(,)?) => {
        $crate::store_conformance!(@each $fresh; [$(#[$attr])*];
            a_job_round_trips_with_every_field,
            the_id_is_unique,
            of_eight_concurrent_claimers_exactly_one_wins_each_of_200_jobs,
            a_stale_attempt_cannot_be_claimed,
            an_expired_lease_is_found_and_requeued_with_the_next_attempt,
            a_stale_lease_owner_can_change_nothing,
            a_lost_job_is_requeued_up_to_the_maximum_then_failed,
            cancel_in_every_state,
            a_handed_back_job_is_queued_for_the_next_attempt_by_its_holder_only,
            a_run_cannot_end_in_a_state_that_is_not_terminal,
            listing_is_per_owner_newest_first_and_paged,
            listing_in_one_status_counts_and_pages_only_those,
            a_free_slot_claims_the_oldest_job_that_waited_long_enough_and_only_once,
            restart_recovery_requeues_running_jobs_or_fails_them_after_the_last_attempt,
            a_job_handed_back_then_lost_then_finished_lists_its_three_attempts_in_order,
            cancelling_a_running_job_ends_its_attempt_as_cancelled,
            a_free_slot_takes_the_highest_priority_first_then_the_oldest,
            a_late_user_is_served_beside_a_backlog_not_behind_it,
            a_running_limit_holds_under_eight_concurrent_claimers,
            a_held_back_job_is_claimed_only_once_its_time_has_come,
            a_failed_run_with_retries_left_waits_then_runs_again_and_the_last_failure_ends_it,
            an_expired_job_is_never_claimed_and_ends_cancelled_as_expired,
            owners_are_counted_by_queued_and_running,
            a_cancelled_job_holds_its_slot_until_its_worker_frees_it_or_its_lease_runs_out,
            within_a_priority_the_earliest_deadline_goes_first_and_jobs_without_one_after,
            the_planner_reads_waiting_jobs_in_the_order_slots_take_them,
            the_deadline_flag_changes_once_and_never_on_an_ended_job,
            the_newest_plan_replaces_the_one_before
        );
    };
    (@each $fresh:path; $attrs:tt; $($name:ident),* $(,)?) => {
        $( $crate::store_conformance!(@one $fresh; $name; $attrs); )*
    };
    (@one $fresh:path; $name:ident; [$($attr:tt)*]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $($attr)*
        async fn $name() {
            let Some(store) = $fresh().await else { return };
            let store = ::std::sync::Arc::new(store);
            $crate::conformance::$name(store.clone()).await;
            $crate::conformance::TestStore::discard(store.as_ref()).await;
        }
    };
}

const LEASE: Duration = Duration::from_secs(30);

/// A queued job of `owner` with a credential in its URL, args that need quoting and a config.
pub fn job(owner: &str) -> Job {
    Job::new(
        owner,
        JobSpec {
            url: "https://u:secret@example.com/r.git".into(),
            args: "a 'b c'".into(),
            config: "{}".into(),
        },
        OffsetDateTime::now_utc(),
    )
}

fn finished(elapsed_ms: u64) -> Outcome {
    Outcome {
        status: JobStatus::Finished,
        exit_code: Some(0),
        elapsed_ms,
        output_files: vec!["a/b.txt".into(), "é.txt".into()],
        failure: None,
    }
}

/// A worker's hold on an attempt, its start unknown.
fn held<'a>(id: &'a JobId, attempt: u32, worker: &'a str) -> Held<'a> {
    Held {
        id,
        attempt,
        worker,
        started_at: None,
        retry: None,
    }
}

async fn stored<S: TestStore>(store: &S, owner: &str) -> Job {
    let j = job(owner);
    JobCatalog::insert(store, &j).await.unwrap();
    j
}

async fn status<S: TestStore>(store: &S, id: &JobId) -> (JobStatus, u32) {
    let j = JobLookup::get(store, id).await.unwrap().expect("stored");
    (j.status, j.attempt)
}

pub async fn a_job_round_trips_with_every_field<S: TestStore>(store: Arc<S>) {
    let j = stored(store.as_ref(), "alice").await;
    let got = store.get(&j.id).await.unwrap().expect("stored");
    assert_eq!(got.spec, j.spec);
    assert_eq!(got.owner, "alice");
    assert_eq!((got.status, got.attempt), (JobStatus::Queued, 1));
    assert_eq!(
        (got.lease_owner, got.started_at, got.finished_at),
        (None, None, None)
    );
    assert_eq!(
        got.created_at.unix_timestamp(),
        j.created_at.unix_timestamp()
    );
    assert!(store.get(&JobId::new()).await.unwrap().is_none());
    // Every field, times at whole milliseconds (the stores' precision).
    let ms = |t: OffsetDateTime| from_unix_ms(unix_ms(t));
    let now = ms(OffsetDateTime::now_utc());
    let mut full = job("bob");
    full.created_at = now - Duration::from_secs(9);
    full.status = JobStatus::Failed;
    full.attempt = 2;
    full.lease_owner = Some("w7".into());
    full.lease_expires_at = Some(now + LEASE);
    full.started_at = Some(now - Duration::from_secs(5));
    full.finished_at = Some(now);
    full.exit_code = Some(3);
    full.elapsed_ms = Some(5000);
    full.output_files = vec!["a/b.txt".into(), "é ü.csv".into()];
    full.failure = Some(FailureReason::ExitCode { code: 3 });
    full.attempts = vec![AttemptRecord {
        attempt: 1,
        worker: Some("w6".into()),
        started_at: Some(now - Duration::from_secs(8)),
        ended_at: now - Duration::from_secs(6),
        outcome: AttemptOutcome::HandedBack,
        reason: Some("shutting down".into()),
    }];
    store.insert(&full).await.unwrap();
    assert_eq!(store.get(&full.id).await.unwrap(), Some(full));
}

pub async fn the_id_is_unique<S: TestStore>(store: Arc<S>) {
    let j = stored(store.as_ref(), "alice").await;
    let err = store.insert(&j).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists, "{err}");
    let ids: std::collections::HashSet<_> = (0..1000).map(|_| JobId::new()).collect();
    assert_eq!(ids.len(), 1000);
}

/// Eight workers race over the same 200 jobs, each trying to claim every one of them.
pub async fn of_eight_concurrent_claimers_exactly_one_wins_each_of_200_jobs<S: TestStore>(
    store: Arc<S>,
) {
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(stored(store.as_ref(), "alice").await.id);
    }
    let ids = Arc::new(ids);
    let now = OffsetDateTime::now_utc();
    let claimers = (0..8).map(|w| {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut won = Vec::new();
            // Each claimer walks the jobs from another starting point, so they meet.
            for k in 0..ids.len() {
                let id = &ids[(k + w * 25) % ids.len()];
                if let Some(j) = store.claim(id, 1, &worker, LEASE, now).await.unwrap() {
                    assert_eq!(j.lease_owner.as_deref(), Some(worker.as_str()));
                    won.push(j.id);
                }
            }
            won
        })
    });
    let mut wins: HashMap<JobId, usize> = HashMap::new();
    for claimer in futures::future::join_all(claimers).await {
        for id in claimer.unwrap() {
            *wins.entry(id).or_default() += 1;
        }
    }
    assert_eq!(wins.len(), 200, "every job claimed");
    assert!(wins.values().all(|&n| n == 1), "exactly one claim per job");
    for id in ids.iter() {
        assert_eq!(status(store.as_ref(), id).await, (JobStatus::Running, 1));
    }
}

pub async fn a_stale_attempt_cannot_be_claimed<S: TestStore>(store: Arc<S>) {
    let j = stored(store.as_ref(), "alice").await;
    let now = OffsetDateTime::now_utc();
    assert!(
        store
            .claim(&j.id, 2, "w1", LEASE, now)
            .await
            .unwrap()
            .is_none()
    );
    let claimed = store.claim(&j.id, 1, "w1", LEASE, now).await.unwrap();
    let claimed = claimed.expect("the current attempt is claimed");
    assert_eq!(
        claimed.started_at.map(|t| t.unix_timestamp()),
        Some(now.unix_timestamp())
    );
    assert!(
        store
            .claim(&j.id, 1, "w2", LEASE, now)
            .await
            .unwrap()
            .is_none(),
        "already running"
    );
}

pub async fn an_expired_lease_is_found_and_requeued_with_the_next_attempt<S: TestStore>(
    store: Arc<S>,
) {
    let j = stored(store.as_ref(), "alice").await;
    let t0 = OffsetDateTime::now_utc();
    let short = Duration::from_secs(5);
    store
        .claim(&j.id, 1, "w1", short, t0)
        .await
        .unwrap()
        .unwrap();
    let soon = t0 + Duration::from_secs(1);
    assert!(
        store.expired(soon, 10).await.unwrap().is_empty(),
        "lease still valid"
    );
    let later = t0 + Duration::from_secs(6);
    let expired = store.expired(later, 10).await.unwrap();
    assert_eq!(expired.iter().map(|e| &e.id).collect::<Vec<_>>(), [&j.id]);
    let lost = &expired[0];
    assert!(
        store
            .recover_expired(lost, 3, soon)
            .await
            .unwrap()
            .is_none(),
        "not expired yet"
    );
    let requeued = store
        .recover_expired(lost, 3, later)
        .await
        .unwrap()
        .expect("requeued");
    assert_eq!(
        (requeued.job.status, requeued.job.attempt),
        (JobStatus::Queued, 2)
    );
    assert_eq!(
        (requeued.job.lease_owner, requeued.job.started_at),
        (None, None)
    );
    let event = requeued.event;
    assert_eq!(
        (event.from, event.to, event.attempt),
        (Some(JobStatus::Running), JobStatus::Queued, 2)
    );
    assert!(
        store
            .recover_expired(lost, 3, later)
            .await
            .unwrap()
            .is_none(),
        "only once"
    );
    assert!(store.expired(later, 10).await.unwrap().is_empty());
}

/// A worker back from a long pause, its lease expired and the job claimed again: it can
/// renew, finish and hand back nothing; the new holder can.
pub async fn a_stale_lease_owner_can_change_nothing<S: TestStore>(store: Arc<S>) {
    let j = stored(store.as_ref(), "alice").await;
    let t0 = OffsetDateTime::now_utc();
    let first = store
        .claim(&j.id, 1, "w1", Duration::from_secs(1), t0)
        .await
        .unwrap()
        .unwrap();
    let later = t0 + Duration::from_secs(2);
    store
        .recover_expired(&first, 3, later)
        .await
        .unwrap()
        .unwrap();
    store
        .claim(&j.id, 2, "w2", LEASE, later)
        .await
        .unwrap()
        .expect("second attempt claimed");
    for (worker, attempt) in [("w1", 1), ("w1", 2), ("w2", 1)] {
        assert!(
            !store
                .renew(&j.id, attempt, worker, LEASE, later)
                .await
                .unwrap()
        );
        let outcome = finished(10);
        let hold = held(&j.id, attempt, worker);
        let done = store.complete(&hold, &outcome, later);
        assert!(done.await.unwrap().is_none());
        assert!(
            store
                .release(&held(&j.id, attempt, worker), "test")
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(store.renew(&j.id, 2, "w2", LEASE, later).await.unwrap());
    let done = store
        .complete(&held(&j.id, 2, "w2"), &finished(1234), later)
        .await
        .unwrap()
        .expect("owner finishes");
    assert_eq!(done.status, JobStatus::Finished);
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.elapsed_ms, Some(1234));
    assert_eq!(done.output_files, ["a/b.txt", "é.txt"]);
    assert_eq!(done.lease_owner, None);
    assert_eq!(
        done.finished_at.map(|t| t.unix_timestamp()),
        Some(later.unix_timestamp())
    );
    assert!(
        store
            .complete(&held(&j.id, 2, "w2"), &finished(1), later)
            .await
            .unwrap()
            .is_none(),
        "terminal stays"
    );
    assert!(!store.renew(&j.id, 2, "w2", LEASE, later).await.unwrap());
}

pub async fn a_lost_job_is_requeued_up_to_the_maximum_then_failed<S: TestStore>(store: Arc<S>) {
    let j = stored(store.as_ref(), "alice").await;
    let mut now = OffsetDateTime::now_utc();
    let short = Duration::from_secs(1);
    for attempt in 1..=3 {
        let held = store
            .claim(&j.id, attempt, "w", short, now)
            .await
            .unwrap()
            .unwrap();
        now += Duration::from_secs(2);
        let lost = store.expired(now, 10).await.unwrap();
        assert_eq!(lost.iter().map(|l| &l.id).collect::<Vec<_>>(), [&held.id]);
        let done = store
            .recover_expired(&lost[0], 3, now)
            .await
            .unwrap()
            .unwrap();
        if attempt < 3 {
            assert_eq!(
                (done.job.status, done.job.attempt),
                (JobStatus::Queued, attempt + 1)
            );
        } else {
            assert_eq!((done.job.status, done.job.attempt), (JobStatus::Failed, 3));
            assert_eq!(
                done.job.failure,
                Some(FailureReason::WorkerLost { attempts: 3 })
            );
            assert_eq!(done.job.elapsed_ms, Some(2000));
            let lost: Vec<_> = done
                .job
                .attempts
                .iter()
                .map(|a| (a.attempt, a.outcome))
                .collect();
            assert_eq!(
                lost,
                [1, 2, 3].map(|a| (a, AttemptOutcome::Lost)),
                "the give-up records the last attempt too"
            );
            assert_eq!(done.job.lease_owner, None);
            assert_eq!(done.event.to, JobStatus::Failed);
            assert!(
                done.event.elapsed_ms.is_some(),
                "terminal events carry elapsed_ms"
            );
        }
    }
    assert!(
        store
            .claim(&j.id, 4, "w", short, now)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn cancel_in_every_state<S: TestStore>(store: Arc<S>) {
    let now = OffsetDateTime::now_utc();
    let queued = stored(store.as_ref(), "alice").await;
    let Some(CancelResult::Cancelled(c)) = store.cancel(&queued.id, now).await.unwrap() else {
        panic!("a queued job is cancelled");
    };
    assert_eq!(c.status, JobStatus::Cancelled);
    assert_eq!(
        c.finished_at.map(|t| t.unix_timestamp()),
        Some(now.unix_timestamp())
    );
    assert!(
        store
            .claim(&queued.id, 1, "w1", LEASE, now)
            .await
            .unwrap()
            .is_none(),
        "a cancelled job never starts"
    );
    assert!(
        store
            .claim_next(
                "w1",
                LEASE,
                &Pick {
                    created_before: Some(now + LEASE),
                    quotas: false
                },
                now
            )
            .await
            .unwrap()
            .is_none()
    );

    let running = stored(store.as_ref(), "alice").await;
    store
        .claim(&running.id, 1, "w1", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    let result = store.cancel(&running.id, now).await.unwrap();
    assert!(matches!(
        result,
        Some(CancelResult::CancelledWhileRunning(_))
    ));
    assert!(
        !store.renew(&running.id, 1, "w1", LEASE, now).await.unwrap(),
        "the worker learns at its next renew"
    );
    assert!(
        store
            .release(&held(&running.id, 1, "w1"), "test")
            .await
            .unwrap()
            .is_none()
    );
    let late = store
        .complete(&held(&running.id, 1, "w1"), &finished(1), now)
        .await
        .unwrap();
    assert!(late.is_none(), "a cancelled run's result is dropped");
    assert_eq!(
        status(store.as_ref(), &running.id).await,
        (JobStatus::Cancelled, 1)
    );

    let done = stored(store.as_ref(), "alice").await;
    store
        .claim(&done.id, 1, "w1", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    store
        .complete(&held(&done.id, 1, "w1"), &finished(1), now)
        .await
        .unwrap()
        .unwrap();
    let failed = stored(store.as_ref(), "alice").await;
    store
        .claim(&failed.id, 1, "w1", Duration::ZERO, now)
        .await
        .unwrap()
        .unwrap();
    let lost = store.get(&failed.id).await.unwrap().unwrap();
    let later = now + Duration::from_secs(1);
    store
        .recover_expired(&lost, 1, later)
        .await
        .unwrap()
        .unwrap();
    for (ended, state) in [
        (&done, JobStatus::Finished),
        (&failed, JobStatus::Failed),
        (&queued, JobStatus::Cancelled),
        (&running, JobStatus::Cancelled),
    ] {
        let Some(CancelResult::AlreadyTerminal(j)) = store.cancel(&ended.id, later).await.unwrap()
        else {
            panic!("an ended job stays as it is");
        };
        assert_eq!(j.status, state);
    }
    assert!(store.cancel(&JobId::new(), now).await.unwrap().is_none());
}

pub async fn a_handed_back_job_is_queued_for_the_next_attempt_by_its_holder_only<S: TestStore>(
    store: Arc<S>,
) {
    let j = stored(store.as_ref(), "alice").await;
    let now = OffsetDateTime::now_utc();
    store
        .claim(&j.id, 1, "w1", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .release(&held(&j.id, 1, "w2"), "test")
            .await
            .unwrap()
            .is_none()
    );
    let back = store
        .release(&held(&j.id, 1, "w1"), "test")
        .await
        .unwrap()
        .expect("handed back");
    assert_eq!((back.status, back.attempt), (JobStatus::Queued, 2));
    assert_eq!((back.lease_owner, back.started_at), (None, None));
    assert!(
        store
            .release(&held(&j.id, 1, "w1"), "test")
            .await
            .unwrap()
            .is_none(),
        "only once"
    );
    assert!(
        store
            .claim(&j.id, 1, "w2", LEASE, now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .claim(&j.id, 2, "w2", LEASE, now)
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn a_run_cannot_end_in_a_state_that_is_not_terminal<S: TestStore>(store: Arc<S>) {
    let j = stored(store.as_ref(), "alice").await;
    let now = OffsetDateTime::now_utc();
    store
        .claim(&j.id, 1, "w1", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    for state in [JobStatus::Queued, JobStatus::Running] {
        let outcome = Outcome {
            status: state,
            ..finished(1)
        };
        let err = store
            .complete(&held(&j.id, 1, "w1"), &outcome, now)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    }
    assert_eq!(status(store.as_ref(), &j.id).await, (JobStatus::Running, 1));
}

pub async fn listing_is_per_owner_newest_first_and_paged<S: TestStore>(store: Arc<S>) {
    let base = OffsetDateTime::now_utc();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut j = job("alice");
        j.created_at = base + Duration::from_millis(i * 10);
        store.insert(&j).await.unwrap();
        ids.push(j.id);
    }
    stored(store.as_ref(), "bob").await;
    let page = |offset, limit| Page { offset, limit };
    let first = store.list(Some("alice"), page(0, 3)).await.unwrap();
    assert_eq!(first.total, 7);
    let newest: Vec<_> = ids.iter().rev().take(3).collect();
    assert_eq!(first.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(), newest);
    let next = store.list(Some("alice"), page(3, 3)).await.unwrap();
    let middle: Vec<_> = ids.iter().rev().skip(3).take(3).collect();
    assert_eq!(next.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(), middle);
    let last = store.list(Some("alice"), page(6, 3)).await.unwrap();
    assert_eq!(
        last.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&ids[0]]
    );
    assert!(
        store
            .list(Some("alice"), page(7, 3))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert_eq!(store.list(None, Page::default()).await.unwrap().total, 8);
    assert_eq!(
        store
            .list(Some("carol"), Page::default())
            .await
            .unwrap()
            .total,
        0
    );
}

pub async fn listing_in_one_status_counts_and_pages_only_those<S: TestStore>(store: Arc<S>) {
    let now = OffsetDateTime::now_utc();
    for i in 0..3 {
        let j = stored(store.as_ref(), "alice").await;
        if i < 2 {
            store
                .claim(&j.id, 1, "w", LEASE, now)
                .await
                .unwrap()
                .unwrap();
        }
    }
    stored(store.as_ref(), "bob").await;
    let one = Page {
        offset: 0,
        limit: 1,
    };
    let running = store
        .list_in_status(Some("alice"), Some(JobStatus::Running), one)
        .await
        .unwrap();
    assert_eq!((running.total, running.jobs.len()), (2, 1));
    assert_eq!(running.jobs[0].status, JobStatus::Running);
    let queued = store
        .list_in_status(None, Some(JobStatus::Queued), Page::default())
        .await
        .unwrap();
    assert_eq!(queued.total, 2, "alice's third job and bob's");
    assert!(queued.jobs.iter().all(|j| j.status == JobStatus::Queued));
    let all = store
        .list_in_status(Some("alice"), None, Page::default())
        .await;
    assert_eq!(all.unwrap().total, 3);
}

pub async fn a_free_slot_claims_the_oldest_job_that_waited_long_enough_and_only_once<
    S: TestStore,
>(
    store: Arc<S>,
) {
    let now = OffsetDateTime::now_utc();
    let mut ids = Vec::new();
    for age_secs in [30, 20, 10] {
        let mut j = job("alice");
        j.created_at = now - time::Duration::seconds(age_secs);
        store.insert(&j).await.unwrap();
        ids.push(j.id);
    }
    let fresh = stored(store.as_ref(), "alice").await;
    // Oldest first, and only jobs older than the threshold.
    let before = now - time::Duration::seconds(5);
    let first = store
        .claim_next(
            "w1",
            LEASE,
            &Pick {
                created_before: Some(before),
                quotas: false,
            },
            now,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&first.id, first.status), (&ids[0], JobStatus::Running));
    assert_eq!(first.lease_owner.as_deref(), Some("w1"));
    // Its message's owner comes later and finds it taken.
    assert!(
        store
            .claim(&first.id, 1, "w2", LEASE, now)
            .await
            .unwrap()
            .is_none()
    );
    // Eight claimers, two old jobs left: each is claimed exactly once, the fresh one not at all.
    let claims = futures::future::join_all((0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let worker = format!("c{i}");
            store
                .claim_next(
                    &worker,
                    LEASE,
                    &Pick {
                        created_before: Some(before),
                        quotas: false,
                    },
                    now,
                )
                .await
                .unwrap()
        })
    }))
    .await;
    let mut won: Vec<_> = claims
        .into_iter()
        .filter_map(|c| c.unwrap())
        .map(|j| j.id)
        .collect();
    won.sort();
    let mut expected = vec![ids[1].clone(), ids[2].clone()];
    expected.sort();
    assert_eq!(won, expected);
    assert_eq!(
        status(store.as_ref(), &fresh.id).await,
        (JobStatus::Queued, 1)
    );
}

pub async fn restart_recovery_requeues_running_jobs_or_fails_them_after_the_last_attempt<
    S: TestStore,
>(
    store: Arc<S>,
) {
    let now = OffsetDateTime::now_utc();
    let (first, last, queued) = (
        stored(store.as_ref(), "alice").await,
        stored(store.as_ref(), "alice").await,
        stored(store.as_ref(), "alice").await,
    );
    store
        .claim(&first.id, 1, "w", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    store.claim(&last.id, 1, "w", LEASE, now).await.unwrap();
    let last_back = store
        .release(&held(&last.id, 1, "w"), "test")
        .await
        .unwrap()
        .unwrap();
    store
        .claim(&last.id, last_back.attempt, "w", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    // Leases still valid: the process that held them is gone all the same.
    let events = crate::store::recover_running(store.as_ref(), 2, now)
        .await
        .unwrap();
    let mut seen: Vec<_> = events.iter().map(|e| (e.job_id.clone(), e.to)).collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (first.id.clone(), JobStatus::Queued),
        (last.id.clone(), JobStatus::Failed),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, expected);
    assert_eq!(
        status(store.as_ref(), &first.id).await,
        (JobStatus::Queued, 2)
    );
    let failed = store.get(&last.id).await.unwrap().unwrap();
    assert_eq!(
        failed.failure,
        Some(FailureReason::WorkerLost { attempts: 2 })
    );
    let outcomes: Vec<_> = failed.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::HandedBack, AttemptOutcome::Lost]);
    assert!(
        failed.attempts[1]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("restarted"))
    );
    assert_eq!(
        status(store.as_ref(), &queued.id).await,
        (JobStatus::Queued, 1)
    );
}

/// Hand back (attempt 1), lost lease (attempt 2), finished (attempt 3): the history has one
/// record per attempt, oldest first, each with its worker, times, outcome and reason.
pub async fn a_job_handed_back_then_lost_then_finished_lists_its_three_attempts_in_order<
    S: TestStore,
>(
    store: Arc<S>,
) {
    let j = stored(store.as_ref(), "alice").await;
    assert!(j.attempts.is_empty());
    let ms = |t: OffsetDateTime| from_unix_ms(unix_ms(t));
    let t0 = ms(OffsetDateTime::now_utc());
    let first = store
        .claim(&j.id, 1, "w1", LEASE, t0)
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.attempts.is_empty(),
        "a running attempt is not in the history"
    );
    let held1 = Held {
        started_at: first.started_at,
        ..held(&j.id, 1, "w1")
    };
    let back = store
        .release(&held1, "the artifact store stayed unavailable")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.attempts.len(), 1);
    let t1 = t0 + Duration::from_secs(1);
    let second = store
        .claim(&j.id, 2, "w2", Duration::from_secs(1), t1)
        .await
        .unwrap()
        .unwrap();
    let t2 = t1 + Duration::from_secs(2);
    let lost = store
        .recover_expired(&second, 3, t2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lost.job.attempts.len(), 2);
    let third = store
        .claim(&j.id, 3, "w3", LEASE, t2)
        .await
        .unwrap()
        .unwrap();
    let t3 = t2 + Duration::from_secs(3);
    let held3 = Held {
        started_at: third.started_at,
        ..held(&j.id, 3, "w3")
    };
    let done = store
        .complete(&held3, &finished(3000), t3)
        .await
        .unwrap()
        .unwrap();
    let stored = store.get(&j.id).await.unwrap().unwrap();
    assert_eq!(
        stored.attempts, done.attempts,
        "the store returns what it keeps"
    );
    let summary: Vec<_> = stored
        .attempts
        .iter()
        .map(|a| (a.attempt, a.worker.as_deref(), a.outcome))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Some("w1"), AttemptOutcome::HandedBack),
            (2, Some("w2"), AttemptOutcome::Lost),
            (3, Some("w3"), AttemptOutcome::Finished),
        ]
    );
    let [handed, lost, finished] = &stored.attempts[..] else {
        panic!("three attempts");
    };
    assert_eq!(
        handed.reason.as_deref(),
        Some("the artifact store stayed unavailable")
    );
    assert_eq!(handed.started_at, Some(t0));
    assert_eq!((lost.started_at, lost.ended_at), (Some(t1), t2));
    assert!(
        lost.reason
            .as_deref()
            .is_some_and(|r| r.contains("lease expired"))
    );
    assert_eq!((finished.started_at, finished.ended_at), (Some(t2), t3));
    assert_eq!(finished.reason, None);
}

pub async fn cancelling_a_running_job_ends_its_attempt_as_cancelled<S: TestStore>(store: Arc<S>) {
    let now = from_unix_ms(unix_ms(OffsetDateTime::now_utc()));
    let queued = stored(store.as_ref(), "alice").await;
    let Some(CancelResult::Cancelled(c)) = store.cancel(&queued.id, now).await.unwrap() else {
        panic!("a queued job is cancelled");
    };
    assert!(c.attempts.is_empty(), "no attempt ran");
    let running = stored(store.as_ref(), "alice").await;
    store
        .claim(&running.id, 1, "w1", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    let later = now + Duration::from_secs(4);
    let Some(CancelResult::CancelledWhileRunning(c)) =
        store.cancel(&running.id, later).await.unwrap()
    else {
        panic!("a running job is cancelled");
    };
    let expected = AttemptRecord {
        attempt: 1,
        worker: Some("w1".into()),
        started_at: Some(now),
        ended_at: later,
        outcome: AttemptOutcome::Cancelled,
        reason: None,
    };
    assert_eq!(c.attempts, std::slice::from_ref(&expected));
    // The worker's late result is dropped and adds no second record.
    let hold = held(&running.id, 1, "w1");
    let late = store.complete(&hold, &finished(1), later).await;
    assert!(late.unwrap().is_none());
    let stored = store.get(&running.id).await.unwrap().unwrap();
    assert_eq!(stored.attempts, [expected]);
}

/// `owner`'s job with `schedule`, its fair-share tag taken as a submit takes it.
async fn scheduled<S: TestStore>(store: &S, owner: &str, schedule: Schedule) -> Job {
    let mut j = job(owner);
    j.schedule = Schedule {
        fair_tag: JobCatalog::fair_tag(store, owner, 1.0, OffsetDateTime::now_utc())
            .await
            .unwrap(),
        ..schedule
    };
    JobCatalog::insert(store, &j).await.unwrap();
    j
}

async fn next<S: TestStore>(store: &S, worker: &str, quotas: bool) -> Option<Job> {
    let pick = Pick {
        created_before: None,
        quotas,
    };
    JobLeases::claim_next(store, worker, LEASE, &pick, OffsetDateTime::now_utc())
        .await
        .unwrap()
}

fn priority(priority: i32) -> Schedule {
    Schedule {
        priority,
        ..Schedule::default()
    }
}

pub async fn a_free_slot_takes_the_highest_priority_first_then_the_oldest<S: TestStore>(
    store: Arc<S>,
) {
    let s = store.as_ref();
    let low = scheduled(s, "alice", priority(-5)).await;
    let old = scheduled(s, "alice", priority(0)).await;
    let high = scheduled(s, "bob", priority(7)).await;
    let young = scheduled(s, "alice", priority(0)).await;
    let mut order = Vec::new();
    while let Some(j) = next(s, "w", false).await {
        order.push(j.id);
    }
    assert_eq!(order, vec![high.id, old.id, young.id, low.id]);
    // The same order when the rules also read running limits.
    let (a, b) = (
        scheduled(s, "carol", priority(1)).await,
        scheduled(s, "carol", priority(2)).await,
    );
    assert_eq!(next(s, "w", true).await.map(|j| j.id), Some(b.id));
    assert_eq!(next(s, "w", true).await.map(|j| j.id), Some(a.id));
}

pub async fn a_late_user_is_served_beside_a_backlog_not_behind_it<S: TestStore>(store: Arc<S>) {
    let s = store.as_ref();
    for _ in 0..200 {
        scheduled(s, "a", Schedule::default()).await;
    }
    // Four slots busy with a's first jobs; then b submits 10.
    for _ in 0..4 {
        assert_eq!(next(s, "w", false).await.unwrap().owner, "a");
    }
    for _ in 0..10 {
        scheduled(s, "b", Schedule::default()).await;
    }
    let mut a_started = 0;
    let mut b_started = 0;
    while b_started < 10 {
        let j = next(s, "w", false).await.expect("a job waits");
        match j.owner.as_str() {
            "b" => b_started += 1,
            _ => a_started += 1,
        }
        assert!(a_started < 20, "a started {a_started} before b's 10th");
    }
    // Round robin: b's ten start within a's next ten or eleven (ties go to the older job).
    assert!(a_started <= 11, "a started {a_started} while b's 10 did");
}

pub async fn a_running_limit_holds_under_eight_concurrent_claimers<S: TestStore>(store: Arc<S>) {
    const LIMIT: u32 = 2;
    let limited = Schedule {
        max_running: Some(LIMIT),
        ..Schedule::default()
    };
    for _ in 0..16 {
        scheduled(store.as_ref(), "alice", limited.clone()).await;
    }
    for _ in 0..4 {
        scheduled(store.as_ref(), "bob", Schedule::default()).await;
    }
    // Counted after each claim and before each end: never more than the real number running.
    let running = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let most = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let claimers = (0..8).map(|i| {
        let (store, running, most) = (store.clone(), running.clone(), most.clone());
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            let worker = format!("c{i}");
            let mut ran = Vec::new();
            let mut idle = 0;
            while idle < 20 {
                let Some(j) = next(store.as_ref(), &worker, true).await else {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                idle = 0;
                if j.owner == "alice" {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    let slots = store
                        .select(&crate::scheduling::holding_slots(), 100)
                        .await
                        .unwrap();
                    assert!(slots.len() as u32 <= LIMIT, "{} hold slots", slots.len());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    running.fetch_sub(1, SeqCst);
                }
                let done = store
                    .complete(
                        &held(&j.id, j.attempt, &worker),
                        &finished(1),
                        OffsetDateTime::now_utc(),
                    )
                    .await
                    .unwrap()
                    .expect("its holder ends it");
                assert_eq!(done.quota_slot, None);
                ran.push(j.id);
            }
            ran
        })
    });
    let mut ran: Vec<JobId> = Vec::new();
    for c in futures::future::join_all(claimers).await {
        ran.extend(c.unwrap());
    }
    let total = ran.len();
    ran.sort();
    ran.dedup();
    assert_eq!((total, ran.len()), (20, 20), "every job once");
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=LIMIT).contains(&most), "{most} of alice's ran at once");
}

pub async fn a_held_back_job_is_claimed_only_once_its_time_has_come<S: TestStore>(store: Arc<S>) {
    let now = OffsetDateTime::now_utc();
    let later = now + Duration::from_secs(3600);
    let j = scheduled(
        store.as_ref(),
        "alice",
        Schedule {
            not_before: Some(later),
            priority: 50,
            ..Schedule::default()
        },
    )
    .await;
    let other = scheduled(store.as_ref(), "alice", Schedule::default()).await;
    let got = store.get(&j.id).await.unwrap().unwrap();
    assert_eq!(got.schedule.not_before.map(unix_ms), Some(unix_ms(later)));
    for quotas in [false, true] {
        let pick = Pick {
            created_before: None,
            quotas,
        };
        assert!(
            store
                .claim(&j.id, 1, "w", LEASE, now)
                .await
                .unwrap()
                .is_none()
        );
        let first = store.claim_next("w", LEASE, &pick, now).await.unwrap();
        assert_eq!(
            first.map(|f| f.id),
            Some(other.id.clone()).filter(|_| !quotas)
        );
    }
    let at = later + Duration::from_secs(1);
    let pick = Pick::default();
    let claimed = store.claim_next("w", LEASE, &pick, at).await.unwrap();
    assert_eq!(claimed.map(|c| c.id), Some(j.id));
}

pub async fn a_failed_run_with_retries_left_waits_then_runs_again_and_the_last_failure_ends_it<
    S: TestStore,
>(
    store: Arc<S>,
) {
    let j = scheduled(
        store.as_ref(),
        "alice",
        Schedule {
            retries: 1,
            ..Schedule::default()
        },
    )
    .await;
    let failed = Outcome {
        status: JobStatus::Failed,
        exit_code: Some(3),
        elapsed_ms: 5,
        output_files: Vec::new(),
        failure: Some(FailureReason::ExitCode { code: 3 }),
    };
    let t0 = OffsetDateTime::now_utc();
    let first = store
        .claim(&j.id, 1, "w", LEASE, t0)
        .await
        .unwrap()
        .unwrap();
    let retry = crate::lifecycle::Retry {
        number: 1,
        delay: Duration::from_secs(60),
        not_before: None,
    };
    let h = Held {
        started_at: first.started_at,
        retry: Some(retry),
        ..held(&j.id, 1, "w")
    };
    let back = store.complete(&h, &failed, t0).await.unwrap().unwrap();
    assert_eq!((back.status, back.attempt), (JobStatus::Queued, 2));
    assert_eq!(
        back.retry_at.map(unix_ms),
        Some(unix_ms(t0 + Duration::from_secs(60)))
    );
    assert_eq!(back.attempts.len(), 1);
    assert_eq!(back.attempts[0].outcome, AttemptOutcome::Failed);
    assert_eq!(back.attempts[0].reason.as_deref(), Some("exit code 3"));
    assert_eq!(
        back.exit_code, None,
        "a job waiting for its retry has not ended"
    );
    // Not before its retry time, then at once.
    let pick = Pick::default();
    let early = t0 + Duration::from_secs(59);
    assert!(
        store
            .claim_next("w", LEASE, &pick, early)
            .await
            .unwrap()
            .is_none()
    );
    let t1 = t0 + Duration::from_secs(61);
    let second = store
        .claim_next("w2", LEASE, &pick, t1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.retried(), 1);
    assert_eq!(
        second.retry_at, None,
        "a retry that started is no longer awaited"
    );
    // No retries left: the failure ends it.
    let h2 = Held {
        started_at: second.started_at,
        ..held(&j.id, 2, "w2")
    };
    let end = store.complete(&h2, &failed, t1).await.unwrap().unwrap();
    assert_eq!((end.status, end.exit_code), (JobStatus::Failed, Some(3)));
    assert_eq!(end.attempts.len(), 2);
    // A lost worker's rule does not count the retried failure.
    let r = scheduled(
        store.as_ref(),
        "alice",
        Schedule {
            retries: 1,
            ..Schedule::default()
        },
    )
    .await;
    let c = store
        .claim(&r.id, 1, "w", LEASE, t0)
        .await
        .unwrap()
        .unwrap();
    let h = Held {
        started_at: c.started_at,
        retry: Some(crate::lifecycle::Retry {
            number: 1,
            delay: Duration::ZERO,
            not_before: None,
        }),
        ..held(&r.id, 1, "w")
    };
    store.complete(&h, &failed, t0).await.unwrap().unwrap();
    let again = store
        .claim(&r.id, 2, "w", LEASE, t1)
        .await
        .unwrap()
        .unwrap();
    let lost = store
        .recover_expired(&again, 2, t1 + LEASE + Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((lost.job.status, lost.job.attempt), (JobStatus::Queued, 3));
}

pub async fn an_expired_job_is_never_claimed_and_ends_cancelled_as_expired<S: TestStore>(
    store: Arc<S>,
) {
    let now = OffsetDateTime::now_utc();
    let j = scheduled(
        store.as_ref(),
        "alice",
        Schedule {
            expires_at: Some(now + Duration::from_secs(10)),
            ..Schedule::default()
        },
    )
    .await;
    let keeps = scheduled(store.as_ref(), "alice", Schedule::default()).await;
    let late = now + Duration::from_secs(11);
    assert!(
        store
            .claim(&j.id, 1, "w", LEASE, late)
            .await
            .unwrap()
            .is_none()
    );
    let pick = Pick::default();
    let first = store.claim_next("w", LEASE, &pick, late).await.unwrap();
    assert_eq!(first.map(|f| f.id), Some(keeps.id));
    assert!(store.expire_waiting(now, 10).await.unwrap().is_empty());
    let expired = store.expire_waiting(late, 10).await.unwrap();
    assert_eq!(expired.len(), 1);
    let ended = &expired[0].job;
    assert_eq!((&ended.id, ended.status), (&j.id, JobStatus::Cancelled));
    assert_eq!(
        ended.failure,
        Some(FailureReason::Expired { after_secs: 10 })
    );
    assert_eq!(expired[0].event.to, JobStatus::Cancelled);
    assert!(store.expire_waiting(late, 10).await.unwrap().is_empty());
}

pub async fn owners_are_counted_by_queued_and_running<S: TestStore>(store: Arc<S>) {
    let s = store.as_ref();
    for owner in ["bob", "alice", "alice", "alice"] {
        scheduled(s, owner, Schedule::default()).await;
    }
    let done = scheduled(s, "carol", Schedule::default()).await;
    JobCatalog::cancel(s, &done.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    next(s, "w", false).await.unwrap();
    let counts = store.owner_counts().await.unwrap();
    let as_tuples: Vec<_> = counts
        .iter()
        .map(|c| (c.owner.as_str(), c.queued, c.running))
        .collect();
    // Bob's job came first (fair share keeps arrival order between users here).
    assert_eq!(as_tuples, vec![("alice", 3, 0), ("bob", 0, 1)]);
}

pub async fn a_cancelled_job_holds_its_slot_until_its_worker_frees_it_or_its_lease_runs_out<
    S: TestStore,
>(
    store: Arc<S>,
) {
    let s = store.as_ref();
    let one = Schedule {
        max_running: Some(1),
        ..Schedule::default()
    };
    let (first, second, third) = (
        scheduled(s, "alice", one.clone()).await,
        scheduled(s, "alice", one.clone()).await,
        scheduled(s, "alice", one).await,
    );
    let running = next(s, "w", true).await.unwrap();
    assert_eq!((&running.id, running.quota_slot), (&first.id, Some(0)));
    assert!(next(s, "w", true).await.is_none(), "the limit is 1");
    // Cancelled while it runs: its processes may still be alive, so the slot stays held.
    JobCatalog::cancel(s, &first.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(next(s, "w", true).await.is_none(), "its slot is still held");
    // Another worker's attempt frees nothing; its own worker, after the kill, does.
    store.free_slot(&held(&first.id, 1, "other")).await.unwrap();
    assert!(next(s, "w", true).await.is_none());
    store.free_slot(&held(&first.id, 1, "w")).await.unwrap();
    let two = next(s, "w", true).await.unwrap();
    assert_eq!(two.id, second.id);
    // Its worker lost: recovery frees the slot once the lease ran out, not before.
    JobCatalog::cancel(s, &second.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    assert_eq!(store.free_stale_slots(now, 10).await.unwrap(), 0);
    assert!(next(s, "w", true).await.is_none());
    let later = now + LEASE + Duration::from_secs(1);
    assert_eq!(store.free_stale_slots(later, 10).await.unwrap(), 1);
    let pick = Pick {
        created_before: None,
        quotas: true,
    };
    let three = store
        .claim_next("w", LEASE, &pick, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(three.id, third.id);
}

fn due(priority: i32, deadline: Option<OffsetDateTime>) -> Schedule {
    Schedule {
        priority,
        deadline: deadline.map(|d| from_unix_ms(unix_ms(d))),
        expected_secs: Some(2.5),
        ..Schedule::default()
    }
}

pub async fn within_a_priority_the_earliest_deadline_goes_first_and_jobs_without_one_after<
    S: TestStore,
>(
    store: Arc<S>,
) {
    let s = store.as_ref();
    let now = OffsetDateTime::now_utc();
    let none = scheduled(s, "alice", due(0, None)).await;
    let late = scheduled(s, "bob", due(0, Some(now + Duration::from_secs(3600)))).await;
    let soon = scheduled(s, "carol", due(0, Some(now + Duration::from_secs(60)))).await;
    let urgent_low = scheduled(s, "dave", due(-1, Some(now + Duration::from_secs(1)))).await;
    let high = scheduled(s, "erin", due(5, None)).await;
    let got = s.get(&soon.id).await.unwrap().unwrap();
    assert_eq!(
        got.schedule, soon.schedule,
        "deadline and expected time kept"
    );
    let mut order = Vec::new();
    while let Some(j) = next(s, "w", false).await {
        order.push(j.id);
    }
    assert_eq!(
        order,
        vec![high.id, soon.id, late.id, none.id, urgent_low.id]
    );
    // The same order when the rules also read running limits.
    let a = scheduled(s, "f", due(0, None)).await;
    let b = scheduled(s, "f", due(0, Some(now + Duration::from_secs(9)))).await;
    assert_eq!(next(s, "w", true).await.map(|j| j.id), Some(b.id));
    assert_eq!(next(s, "w", true).await.map(|j| j.id), Some(a.id));
}

pub async fn the_planner_reads_waiting_jobs_in_the_order_slots_take_them<S: TestStore>(
    store: Arc<S>,
) {
    use crate::store::JobPlanning;
    let s = store.as_ref();
    let now = OffsetDateTime::now_utc();
    let mut made = Vec::new();
    for i in 0..12u64 {
        let deadline = (i % 3 == 0).then(|| now + Duration::from_secs(600 - i * 10));
        made.push(
            scheduled(
                s,
                ["a", "b"][i as usize % 2],
                due((i % 4 == 1) as i32, deadline),
            )
            .await,
        );
    }
    let running = next(s, "w", false).await.expect("one starts");
    let first_ten = JobPlanning::waiting_head(s, 10).await.unwrap();
    assert_eq!(first_ten.len(), 10);
    let all = JobPlanning::waiting_head(s, 100).await.unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(
        all[..10].iter().map(|j| &j.id).collect::<Vec<_>>(),
        first_ten.iter().map(|j| &j.id).collect::<Vec<_>>()
    );
    // Read light: no args, config or history (a config may be 512 KB), the rest intact.
    assert!(
        all.iter()
            .all(|j| j.spec.args.is_empty() && j.spec.config.is_empty())
    );
    let stored = s.get(&all[0].id).await.unwrap().unwrap();
    assert!(
        !stored.spec.config.is_empty(),
        "the stored job keeps its config"
    );
    assert_eq!(all[0].schedule, stored.schedule);
    assert_eq!(all[0].spec.url, stored.spec.url);
    // Exactly the keys' order, which is the order claims take them in.
    let mut keys: Vec<_> = all.iter().map(crate::plan::OrderKey::of).collect();
    let listed = keys.clone();
    keys.sort();
    assert_eq!(listed, keys);
    let mut claimed = Vec::new();
    while let Some(j) = next(s, "w", false).await {
        claimed.push(j.id);
    }
    assert_eq!(
        claimed,
        all.iter().map(|j| j.id.clone()).collect::<Vec<_>>()
    );
    let running_now = JobPlanning::running(s, 100).await.unwrap();
    assert_eq!(running_now.len(), 12);
    assert!(running_now.iter().any(|j| j.id == running.id));
}

pub async fn the_deadline_flag_changes_once_and_never_on_an_ended_job<S: TestStore>(store: Arc<S>) {
    use crate::store::JobPlanning;
    let s = store.as_ref();
    let now = OffsetDateTime::now_utc();
    let j = scheduled(s, "alice", due(0, Some(now + Duration::from_secs(5)))).await;
    let flagged = JobPlanning::flag_deadline(s, &j.id, true).await.unwrap();
    assert!(flagged.expect("changed").deadline_at_risk);
    assert!(
        JobPlanning::flag_deadline(s, &j.id, true)
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get(&j.id).await.unwrap().unwrap().deadline_at_risk);
    let claimed = next(s, "w", false).await.expect("claimed");
    assert!(claimed.deadline_at_risk, "the flag survives the claim");
    let cleared = JobPlanning::flag_deadline(s, &j.id, false).await.unwrap();
    assert!(!cleared.expect("changed").deadline_at_risk);
    JobLeases::complete(s, &held(&j.id, 1, "w"), &finished(5), now)
        .await
        .unwrap()
        .expect("finished");
    assert!(
        JobPlanning::flag_deadline(s, &j.id, true)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.get(&j.id).await.unwrap().unwrap().deadline_at_risk);
    assert!(
        JobPlanning::flag_deadline(s, &JobId::new(), true)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn the_newest_plan_replaces_the_one_before<S: TestStore>(store: Arc<S>) {
    use crate::plan::{OrderKey, Plan, PlanEntry};
    let s = store.as_ref();
    assert_eq!(s.plan().await.unwrap(), None);
    let job = job("alice");
    let mut plan = Plan {
        at_ms: 1_000,
        workers: 2,
        slots: 4,
        entries: vec![PlanEntry {
            key: OrderKey::of(&job),
            running: false,
            start_ms: Some(2_000),
            finish_ms: Some(4_500),
            at_risk: true,
        }],
        unplanned: 3,
        tail_ms: None,
        idle_ms: vec![(5_000, 6_000)],
        service: vec![],
        overall: None,
        default_secs: 5.0,
    };
    s.put_plan(&plan).await.unwrap();
    assert_eq!(s.plan().await.unwrap().as_ref(), Some(&plan));
    plan.at_ms = 3_000;
    plan.entries.clear();
    s.put_plan(&plan).await.unwrap();
    assert_eq!(s.plan().await.unwrap(), Some(plan));
}
