//! The MongoDB job store against a real MongoDB-wire server, each test on its own database:
//! the store conformance suite (`jobq_common::conformance`, the same tests the SQLite store
//! passes in the unit tests), then what only this adapter has: observations and the
//! re-dispatch of queued jobs whose message may have been lost.

use std::time::Duration;

use jobq_common::conformance::job;
use jobq_common::mongo::MongoJobStore;
use jobq_common::ports::{JobCatalog, JobLeases, JobRecovery};
use jobq_tests::{infra_settings, unique_name};
use time::OffsetDateTime;

const LEASE: Duration = Duration::from_secs(30);

/// A store on a database of its own; `None` when the servers are not set up.
async fn store() -> Option<MongoJobStore> {
    let mut settings = infra_settings("mongo adapter");
    settings.mongo.database = unique_name("jobq-test");
    Some(
        MongoJobStore::connect(&settings.mongo)
            .await
            .expect("connect to mongo"),
    )
}

// The store conformance suite, on the MongoDB-wire server (and on SQLite in the unit tests).
jobq_common::store_conformance!(store, #[ignore = "needs the real servers: scripts/infra.sh up"]);

// The idempotency key records' conformance suite, likewise on both stores.
jobq_common::idempotency_conformance!(store, #[ignore = "needs the real servers: scripts/infra.sh up"]);

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
