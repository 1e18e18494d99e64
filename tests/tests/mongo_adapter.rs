//! The MongoDB job store against a real MongoDB-wire server: each test on its own database.

use std::sync::Arc;
use std::time::Duration;

use jobq_common::ErrorKind;
use jobq_common::domain::{FailureReason, Job, JobSpec, JobStatus, Outcome};
use jobq_common::mongo::MongoJobStore;
use jobq_common::ports::{CancelResult, JobStore, Page};
use jobq_tests::{infra_settings, unique_name};
use time::OffsetDateTime;

const LEASE: Duration = Duration::from_secs(30);

async fn store() -> Option<MongoJobStore> {
    let mut settings = infra_settings("mongo adapter");
    settings.mongo.database = unique_name("jobq-test");
    Some(
        MongoJobStore::connect(&settings.mongo)
            .await
            .expect("connect to mongo"),
    )
}

fn job(owner: &str) -> Job {
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

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_job_round_trips_with_every_field() {
    let Some(store) = store().await else { return };
    let j = job("alice");
    store.insert(&j).await.unwrap();
    let got = store.get(&j.id).await.unwrap().expect("stored");
    assert_eq!(got.spec, j.spec);
    assert_eq!(got.status, JobStatus::Queued);
    assert_eq!(got.attempt, 1);
    assert_eq!(
        got.created_at.unix_timestamp(),
        j.created_at.unix_timestamp()
    );
    assert!(
        store
            .get(&jobq_common::domain::JobId::new())
            .await
            .unwrap()
            .is_none()
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn the_id_is_unique() {
    let Some(store) = store().await else { return };
    let j = job("alice");
    store.insert(&j).await.unwrap();
    let err = store.insert(&j).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists, "{err}");
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn of_two_concurrent_claims_exactly_one_wins() {
    let Some(store) = store().await else { return };
    let store = Arc::new(store);
    for _ in 0..20 {
        let j = job("alice");
        store.insert(&j).await.unwrap();
        let now = OffsetDateTime::now_utc();
        let (a, b) = tokio::join!(
            store.claim(&j.id, 1, "w1", LEASE, now),
            store.claim(&j.id, 1, "w2", LEASE, now)
        );
        let winners = [a.unwrap(), b.unwrap()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        assert_eq!(winners.len(), 1, "exactly one claim wins");
        assert_eq!(winners[0].status, JobStatus::Running);
        assert!(winners[0].lease_owner.is_some());
    }
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_stale_attempt_cannot_be_claimed() {
    let Some(store) = store().await else { return };
    let j = job("alice");
    store.insert(&j).await.unwrap();
    let now = OffsetDateTime::now_utc();
    assert!(
        store
            .claim(&j.id, 2, "w1", LEASE, now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .claim(&j.id, 1, "w1", LEASE, now)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .claim(&j.id, 1, "w2", LEASE, now)
            .await
            .unwrap()
            .is_none(),
        "already running"
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn an_expired_lease_is_found_and_requeued_with_the_next_attempt() {
    let Some(store) = store().await else { return };
    let j = job("alice");
    store.insert(&j).await.unwrap();
    let t0 = OffsetDateTime::now_utc();
    store
        .claim(&j.id, 1, "w1", Duration::from_secs(5), t0)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .expired(t0 + Duration::from_secs(1), 10)
            .await
            .unwrap()
            .is_empty(),
        "lease still valid"
    );
    let later = t0 + Duration::from_secs(6);
    let expired = store.expired(later, 10).await.unwrap();
    assert_eq!(expired.iter().map(|e| &e.id).collect::<Vec<_>>(), [&j.id]);
    assert!(
        store.requeue_expired(&j.id, 1, t0).await.unwrap().is_none(),
        "not expired at t0"
    );
    let requeued = store
        .requeue_expired(&j.id, 1, later)
        .await
        .unwrap()
        .expect("requeued");
    assert_eq!((requeued.status, requeued.attempt), (JobStatus::Queued, 2));
    assert!(requeued.lease_owner.is_none());
    assert!(
        store
            .requeue_expired(&j.id, 1, later)
            .await
            .unwrap()
            .is_none(),
        "only once"
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_stale_lease_owner_cannot_finish_the_job() {
    let Some(store) = store().await else { return };
    let j = job("alice");
    store.insert(&j).await.unwrap();
    let t0 = OffsetDateTime::now_utc();
    store
        .claim(&j.id, 1, "w1", Duration::from_secs(1), t0)
        .await
        .unwrap()
        .unwrap();
    let later = t0 + Duration::from_secs(2);
    store
        .requeue_expired(&j.id, 1, later)
        .await
        .unwrap()
        .unwrap();
    store
        .claim(&j.id, 2, "w2", LEASE, later)
        .await
        .unwrap()
        .expect("second attempt claimed");
    // The first worker comes back from a long pause: everything it tries is refused.
    assert!(!store.renew(&j.id, 1, "w1", LEASE, later).await.unwrap());
    assert!(
        store
            .complete(&j.id, 1, "w1", &finished(10), later)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .complete(&j.id, 2, "w1", &finished(10), later)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.renew(&j.id, 2, "w2", LEASE, later).await.unwrap());
    let done = store
        .complete(&j.id, 2, "w2", &finished(1234), later)
        .await
        .unwrap()
        .expect("owner finishes");
    assert_eq!(done.status, JobStatus::Finished);
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.elapsed_ms, Some(1234));
    assert_eq!(done.output_files, ["a/b.txt", "é.txt"]);
    assert!(
        store
            .complete(&j.id, 2, "w2", &finished(1), later)
            .await
            .unwrap()
            .is_none(),
        "terminal stays"
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_worker_lost_after_the_last_attempt_fails_the_job() {
    let Some(store) = store().await else { return };
    let j = job("alice");
    store.insert(&j).await.unwrap();
    let t0 = OffsetDateTime::now_utc();
    store
        .claim(&j.id, 1, "w1", Duration::from_secs(1), t0)
        .await
        .unwrap()
        .unwrap();
    let lost = Outcome {
        status: JobStatus::Failed,
        exit_code: None,
        elapsed_ms: 0,
        output_files: vec![],
        failure: Some(FailureReason::WorkerLost { attempts: 1 }),
    };
    let failed = store
        .fail_expired(&j.id, 1, &lost, t0 + Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(
        failed.failure,
        Some(FailureReason::WorkerLost { attempts: 1 })
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn cancel_stops_queued_and_running_jobs_and_leaves_ended_ones() {
    let Some(store) = store().await else { return };
    let now = OffsetDateTime::now_utc();
    let queued = job("alice");
    store.insert(&queued).await.unwrap();
    assert!(matches!(
        store.cancel(&queued.id, now).await.unwrap(),
        Some(CancelResult::Cancelled(_))
    ));
    assert!(
        store
            .claim(&queued.id, 1, "w1", LEASE, now)
            .await
            .unwrap()
            .is_none(),
        "a cancelled job never starts"
    );

    let running = job("alice");
    store.insert(&running).await.unwrap();
    store
        .claim(&running.id, 1, "w1", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.cancel(&running.id, now).await.unwrap(),
        Some(CancelResult::CancelledWhileRunning(_))
    ));
    assert!(
        !store.renew(&running.id, 1, "w1", LEASE, now).await.unwrap(),
        "the worker learns at its next renew"
    );
    assert!(matches!(
        store.cancel(&running.id, now).await.unwrap(),
        Some(CancelResult::AlreadyTerminal(_))
    ));
    assert!(
        store
            .cancel(&jobq_common::domain::JobId::new(), now)
            .await
            .unwrap()
            .is_none()
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn listing_is_per_owner_newest_first_and_paged() {
    let Some(store) = store().await else { return };
    let base = OffsetDateTime::now_utc();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut j = job("alice");
        j.created_at = base + Duration::from_millis(i * 10);
        store.insert(&j).await.unwrap();
        ids.push(j.id);
    }
    store.insert(&job("bob")).await.unwrap();
    let page = store
        .list(
            Some("alice"),
            Page {
                offset: 0,
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 7);
    let newest: Vec<_> = ids.iter().rev().take(3).collect();
    assert_eq!(page.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(), newest);
    let last = store
        .list(
            Some("alice"),
            Page {
                offset: 6,
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        last.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&ids[0]]
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
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn listing_in_one_status_counts_and_pages_only_those() {
    let Some(store) = store().await else { return };
    let now = OffsetDateTime::now_utc();
    let mut running = Vec::new();
    for i in 0..3 {
        let j = job("alice");
        store.insert(&j).await.unwrap();
        if i < 2 {
            store
                .claim(&j.id, 1, "w", LEASE, now)
                .await
                .unwrap()
                .unwrap();
            running.push(j.id);
        }
    }
    store.insert(&job("bob")).await.unwrap();
    let page = Page {
        offset: 0,
        limit: 10,
    };
    let found = store
        .list_in_status(Some("alice"), Some(JobStatus::Running), page)
        .await
        .unwrap();
    assert_eq!(found.total, 2);
    assert!(found.jobs.iter().all(|j| j.status == JobStatus::Running));
    let queued = store
        .list_in_status(None, Some(JobStatus::Queued), page)
        .await
        .unwrap();
    assert_eq!(queued.total, 2, "alice's third job and bob's");
    let all = store
        .list_in_status(Some("alice"), None, page)
        .await
        .unwrap();
    assert_eq!(all.total, 3);
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn observation_history_is_oldest_first_after_since_and_limited() {
    use jobq_common::domain::Observation;
    use jobq_common::ports::ObservationStore;
    let Some(store) = store().await else { return };
    for ts in [4000, 1000, 3000, 2000] {
        store
            .record(&Observation {
                timestamp: ts,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let times = |found: Vec<Observation>| found.iter().map(|o| o.timestamp).collect::<Vec<_>>();
    assert_eq!(
        times(store.history(None, 3).await.unwrap()),
        [2000, 3000, 4000]
    );
    assert_eq!(
        times(store.history(Some(1000), 2).await.unwrap()),
        [2000, 3000]
    );
    assert_eq!(
        times(store.history(Some(4000), 10).await.unwrap()),
        Vec::<i64>::new()
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_queued_job_whose_dispatch_went_stale_is_redispatched_once() {
    let Some(store) = store().await else { return };
    let now = OffsetDateTime::now_utc();
    let mut old = job("alice");
    old.created_at = now - Duration::from_secs(3600);
    store.insert(&old).await.unwrap();
    let mut claimed = job("alice");
    claimed.created_at = now - Duration::from_secs(3600);
    store.insert(&claimed).await.unwrap();
    store
        .claim(&claimed.id, 1, "w1", LEASE, now)
        .await
        .unwrap()
        .unwrap();
    store.insert(&job("alice")).await.unwrap(); // dispatched just now

    let before = now - Duration::from_secs(600);
    let again = store.redispatch_stale(before, now, 10).await.unwrap();
    assert_eq!(
        again.iter().map(|d| (&d.id, d.attempt)).collect::<Vec<_>>(),
        [(&old.id, 1)]
    );
    assert!(
        store
            .redispatch_stale(before, now, 10)
            .await
            .unwrap()
            .is_empty(),
        "once per period"
    );
    // A period later both the re-dispatched job and the one dispatched at the start are due.
    let later = now + Duration::from_secs(601);
    assert_eq!(
        store
            .redispatch_stale(later - Duration::from_secs(600), later, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_free_slot_claims_the_oldest_job_that_waited_long_enough_and_only_once() {
    let Some(store) = store().await else { return };
    let store = Arc::new(store);
    let now = OffsetDateTime::now_utc();
    let mut ids = Vec::new();
    for age_secs in [30, 20, 10] {
        let mut j = job("alice");
        j.created_at = now - time::Duration::seconds(age_secs);
        store.insert(&j).await.unwrap();
        ids.push(j.id);
    }
    let fresh = job("alice");
    store.insert(&fresh).await.unwrap();
    // Oldest first, and only jobs older than the threshold.
    let before = now - time::Duration::seconds(5);
    let first = store
        .claim_waiting("w1", LEASE, before, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, ids[0]);
    assert_eq!(first.status, JobStatus::Running);
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
        async move {
            store
                .claim_waiting(&format!("c{i}"), LEASE, before, now)
                .await
                .unwrap()
        }
    }))
    .await;
    let mut won: Vec<_> = claims.into_iter().flatten().map(|j| j.id).collect();
    won.sort();
    let mut expected = vec![ids[1].clone(), ids[2].clone()];
    expected.sort();
    assert_eq!(won, expected);
    assert_eq!(
        store.get(&fresh.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
}
