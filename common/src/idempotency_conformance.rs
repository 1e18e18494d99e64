//! The conformance suite of [`IdempotencyKeys`]: the same test functions for every store
//! adapter, through the rule in [`crate::idempotency::claim`]. The SQLite store runs it in
//! this crate's unit tests, the MongoDB store in `tests/tests/mongo_adapter.rs` against the
//! MongoDB-wire server; [`idempotency_conformance!`](crate::idempotency_conformance) turns
//! every function into a `#[tokio::test]`, as `store_conformance!` does for the job store.
//!
//! Not part of the API: public only so the suite in `tests/` can call it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{JobId, from_unix_ms, unix_ms};
use crate::idempotency::{
    Claim, IdempotencyKey, IdempotencyKeys, KEY_LIFETIME, KeyRecord, claim, record_id, release,
};

/// Key records under test, discarded (their database dropped) when a test is done.
#[async_trait]
pub trait TestKeys: IdempotencyKeys + 'static {
    async fn discard(&self);
}

#[async_trait]
impl TestKeys for crate::embedded::SqliteStore {
    async fn discard(&self) {}
}

#[async_trait]
impl TestKeys for crate::mongo::MongoJobStore {
    async fn discard(&self) {
        self.drop_database().await.expect("drop the test database");
    }
}

/// Every test of the suite as `#[tokio::test]` functions of the calling module; `$fresh` is
/// an async function returning `Option<S>`, attributes after it go on each test.
#[macro_export]
macro_rules! idempotency_conformance {
    ($fresh:path $(, #[$attr:meta])* $(,)?) => {
        $crate::idempotency_conformance!(@each $fresh; [$(#[$attr])*];
            a_key_record_is_stored_once_and_read_back_whole,
            key_records_are_independent_per_id,
            a_record_is_replaced_only_while_it_is_still_the_old_one,
            a_record_is_forgotten_only_while_it_names_the_job,
            of_eight_concurrent_submits_with_one_key_exactly_one_wins_and_all_name_its_job,
            the_same_key_with_another_body_conflicts_and_another_owners_key_is_its_own,
            a_key_older_than_its_lifetime_makes_a_new_job_once_under_eight_concurrent_submits,
            a_retried_claim_whose_answer_was_lost_is_still_won,
            a_released_key_makes_a_new_job
        );
    };
    (@each $fresh:path; $attrs:tt; $($name:ident),* $(,)?) => {
        $( $crate::idempotency_conformance!(@one $fresh; $name; $attrs); )*
    };
    (@one $fresh:path; $name:ident; [$($attr:tt)*]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $($attr)*
        async fn $name() {
            let Some(store) = $fresh().await else { return };
            let store = ::std::sync::Arc::new(store);
            $crate::idempotency_conformance::$name(store.clone()).await;
            $crate::idempotency_conformance::TestKeys::discard(store.as_ref()).await;
        }
    };
}

/// Now, to the millisecond stores keep.
fn now() -> OffsetDateTime {
    from_unix_ms(unix_ms(OffsetDateTime::now_utc()))
}

fn record(body_hash: &str, created_at: OffsetDateTime) -> KeyRecord {
    KeyRecord {
        job_id: JobId::new(),
        body_hash: body_hash.into(),
        created_at,
    }
}

fn key(text: &str) -> IdempotencyKey {
    text.parse().expect("a valid key")
}

pub async fn a_key_record_is_stored_once_and_read_back_whole<S: TestKeys>(store: Arc<S>) {
    let id = record_id("alice", &key("k"));
    let first = record("h1", now());
    assert_eq!(store.remember(&id, &first).await.unwrap(), None);
    let second = record("h2", now());
    assert_eq!(
        store.remember(&id, &second).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.remember(&id, &second).await.unwrap(),
        Some(first),
        "the first record stays"
    );
}

pub async fn key_records_are_independent_per_id<S: TestKeys>(store: Arc<S>) {
    let a = record("h", now());
    let b = record("h", now());
    let k = key("same");
    assert_eq!(
        store.remember(&record_id("alice", &k), &a).await.unwrap(),
        None
    );
    assert_eq!(
        store.remember(&record_id("bob", &k), &b).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .remember(&record_id("bob", &k), &record("h", now()))
            .await
            .unwrap(),
        Some(b)
    );
}

pub async fn a_record_is_replaced_only_while_it_is_still_the_old_one<S: TestKeys>(store: Arc<S>) {
    let id = record_id("alice", &key("k"));
    let old = record("h1", now() - KEY_LIFETIME - Duration::from_secs(1));
    store.remember(&id, &old).await.unwrap();
    let new = record("h2", now());
    assert!(store.replace(&id, &old, &new).await.unwrap());
    let late = record("h3", now());
    assert!(
        !store.replace(&id, &old, &late).await.unwrap(),
        "the old record is gone: a second replace of it must fail"
    );
    let same_job_other_time = KeyRecord {
        created_at: new.created_at - Duration::from_millis(1),
        ..new.clone()
    };
    assert!(
        !store
            .replace(&id, &same_job_other_time, &late)
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace(&record_id("bob", &key("k")), &new, &late)
            .await
            .unwrap(),
        "no record under that id"
    );
    assert_eq!(store.remember(&id, &late).await.unwrap(), Some(new));
}

pub async fn a_record_is_forgotten_only_while_it_names_the_job<S: TestKeys>(store: Arc<S>) {
    let id = record_id("alice", &key("k"));
    let first = record("h", now());
    store.remember(&id, &first).await.unwrap();
    assert!(!store.forget(&id, &JobId::new()).await.unwrap());
    assert_eq!(
        store.remember(&id, &record("h", now())).await.unwrap(),
        Some(first.clone())
    );
    assert!(store.forget(&id, &first.job_id).await.unwrap());
    assert!(!store.forget(&id, &first.job_id).await.unwrap());
    let next = record("h", now());
    assert_eq!(store.remember(&id, &next).await.unwrap(), None);
}

/// Eight submits of `owner`'s `key` with records of `body_hash` created at `at`, run at once
/// at `now`: their claims and the records they tried.
async fn eight_at_once<S: TestKeys>(
    store: &Arc<S>,
    owner: &str,
    key_text: &str,
    at: OffsetDateTime,
    now: OffsetDateTime,
) -> Vec<(KeyRecord, Claim)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let owner = owner.to_string();
        let k = key(key_text);
        tasks.spawn(async move {
            let mine = record("same body", at);
            let claimed = claim(store.as_ref(), &owner, &k, &mine, now)
                .await
                .expect("claim");
            (mine, claimed)
        });
    }
    tasks.join_all().await
}

/// Exactly one of `results` won, and every other names the winner's job.
fn one_winner(results: &[(KeyRecord, Claim)]) -> JobId {
    let winners: Vec<&KeyRecord> = results
        .iter()
        .filter(|(_, c)| *c == Claim::Won)
        .map(|(r, _)| r)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0].job_id.clone();
    for (_, c) in results {
        if *c != Claim::Won {
            assert_eq!(*c, Claim::Replay(winner.clone()), "{results:?}");
        }
    }
    winner
}

pub async fn of_eight_concurrent_submits_with_one_key_exactly_one_wins_and_all_name_its_job<
    S: TestKeys,
>(
    store: Arc<S>,
) {
    for round in 0..5 {
        let k = format!("order-{round}");
        let results = eight_at_once(&store, "alice", &k, now(), now()).await;
        one_winner(&results);
    }
}

pub async fn the_same_key_with_another_body_conflicts_and_another_owners_key_is_its_own<
    S: TestKeys,
>(
    store: Arc<S>,
) {
    let k = key("k");
    let first = record("body a", now());
    assert_eq!(
        claim(store.as_ref(), "alice", &k, &first, now())
            .await
            .unwrap(),
        Claim::Won
    );
    let same = record("body a", now());
    assert_eq!(
        claim(store.as_ref(), "alice", &k, &same, now())
            .await
            .unwrap(),
        Claim::Replay(first.job_id.clone())
    );
    let other_body = record("body b", now());
    assert_eq!(
        claim(store.as_ref(), "alice", &k, &other_body, now())
            .await
            .unwrap(),
        Claim::Conflict
    );
    let bobs = record("body a", now());
    assert_eq!(
        claim(store.as_ref(), "bob", &k, &bobs, now())
            .await
            .unwrap(),
        Claim::Won,
        "bob's key is not alice's"
    );
    assert_eq!(
        claim(store.as_ref(), "bob", &k, &record("body a", now()), now())
            .await
            .unwrap(),
        Claim::Replay(bobs.job_id)
    );
}

pub async fn a_key_older_than_its_lifetime_makes_a_new_job_once_under_eight_concurrent_submits<
    S: TestKeys,
>(
    store: Arc<S>,
) {
    let k = key("daily");
    let start = now();
    let old = record("same body", start);
    assert_eq!(
        claim(store.as_ref(), "alice", &k, &old, start)
            .await
            .unwrap(),
        Claim::Won
    );
    // Just inside the lifetime the key still answers the first job, whatever the body.
    let inside = start + KEY_LIFETIME - Duration::from_millis(1);
    assert_eq!(
        claim(
            store.as_ref(),
            "alice",
            &k,
            &record("same body", inside),
            inside
        )
        .await
        .unwrap(),
        Claim::Replay(old.job_id.clone())
    );
    assert_eq!(
        claim(
            store.as_ref(),
            "alice",
            &k,
            &record("other body", inside),
            inside
        )
        .await
        .unwrap(),
        Claim::Conflict
    );
    // At the lifetime the key is free again: one of eight submits gets it.
    let after = start + KEY_LIFETIME;
    let results = eight_at_once(&store, "alice", "daily", after, after).await;
    let winner = one_winner(&results);
    assert_ne!(winner, old.job_id, "a new job, not the old one");
}

pub async fn a_retried_claim_whose_answer_was_lost_is_still_won<S: TestKeys>(store: Arc<S>) {
    let k = key("k");
    let mine = record("h", now());
    for _ in 0..2 {
        assert_eq!(
            claim(store.as_ref(), "alice", &k, &mine, now())
                .await
                .unwrap(),
            Claim::Won
        );
    }
}

pub async fn a_released_key_makes_a_new_job<S: TestKeys>(store: Arc<S>) {
    let k = key("k");
    let first = record("h", now());
    claim(store.as_ref(), "alice", &k, &first, now())
        .await
        .unwrap();
    assert!(
        !release(store.as_ref(), "bob", &k, &first.job_id)
            .await
            .unwrap(),
        "another owner's release frees nothing"
    );
    assert!(
        release(store.as_ref(), "alice", &k, &first.job_id)
            .await
            .unwrap()
    );
    let next = record("h", now());
    assert_eq!(
        claim(store.as_ref(), "alice", &k, &next, now())
            .await
            .unwrap(),
        Claim::Won
    );
}
