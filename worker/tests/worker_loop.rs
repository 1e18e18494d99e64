//! The worker loop's choice between the offers and the store: whichever offer wakes a slot
//! (and a slot freed while an offer waits in hand), the slot claims the next waiting job by
//! the scheduling rules — here the oldest, a lost worker's job queued again, whose message is
//! behind another partition's backlog — and the offered jobs after. Real job runs (git, npm)
//! on the embedded store, through an intake that offers two jobs and then nothing.
//!
//! Its own `main` (no libtest harness): the worker runs each job under its own executable as
//! the job shim, so this test executable must be able to act as one.

use std::collections::VecDeque;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jobq_common::domain::{Dispatch, Job, JobSpec, JobStatus};
use jobq_common::embedded::{InProcessBus, LocalArtifactStore, SqliteStore};
use jobq_common::ports::{Intake, JobCatalog, JobLookup, Offer};
use jobq_common::settings::WorkerSettings;
use jobq_worker::{JobRunner, Ports};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Offers its dispatch messages one after another, then nothing more.
struct Scripted {
    offers: VecDeque<Dispatch>,
}

#[async_trait]
impl Intake for Scripted {
    type Ticket = ();

    async fn next(&mut self) -> Offer<()> {
        match self.offers.pop_front() {
            Some(dispatch) => Offer::Job(dispatch, ()),
            None => std::future::pending().await,
        }
    }
    fn settle(&mut self, _: &()) {}
    fn again(&mut self, _: &()) {}
    fn hold(&mut self, _: bool) {}
    fn claim_waiting_after(&self) -> Duration {
        Duration::from_millis(100)
    }
    fn look_max(&self) -> Duration {
        Duration::from_millis(500)
    }
    fn close(&mut self) {}
}

async fn a_freed_slot_takes_the_oldest_waiting_job_from_the_store_before_the_offer_it_holds() {
    let dir = std::env::temp_dir().join(format!("jobq-loop-{}", uuid::Uuid::new_v4().simple()));
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("package.json"),
        r#"{"name": "t", "version": "1.0.0", "scripts": {"start": "node index.js"}}"#,
    )
    .unwrap();
    std::fs::write(
        repo.join("index.js"),
        "setTimeout(() => console.log('ran'), 300);\n",
    )
    .unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-qm", "job"],
    ] {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }
    let store = SqliteStore::in_memory().unwrap();
    let bus = Arc::new(InProcessBus::new());
    let ports = Ports {
        store: Arc::new(store.clone()),
        events: bus.clone(),
        artifacts: Arc::new(LocalArtifactStore::new(dir.join("artifacts")).unwrap()),
        dispatch: bus,
    };
    let settings = WorkerSettings {
        allow_local_repos: true,
        job_timeout_secs: 60,
        ..WorkerSettings::default()
    };
    let runner = Arc::new(
        JobRunner::new("w1".into(), ports, settings, dir.join("work"))
            .await
            .expect("a runner (the job sandbox must work here)"),
    );
    let now = OffsetDateTime::now_utc();
    let job = |age_secs: i64| {
        let spec = JobSpec {
            url: format!("file://{}", repo.display()),
            args: String::new(),
            config: String::new(),
        };
        Job::new("alice", spec, now - time::Duration::seconds(age_secs))
    };
    // `first`'s message wakes the only slot, which takes the oldest waiting job, `older` (no
    // message this worker will see names it); `newer`'s message arrives while it runs and is
    // held; then `first` and `newer` run, oldest first.
    let (older, first, newer) = (job(20), job(10), job(0));
    for j in [&older, &first, &newer] {
        store.insert(j).await.unwrap();
    }
    let intake = Scripted {
        offers: [&first, &newer]
            .map(|j| Dispatch {
                id: j.id.clone(),
                attempt: 1,
            })
            .into(),
    };
    let stop = CancellationToken::new();
    let working = tokio::spawn({
        let (runner, stop) = (runner.clone(), stop.clone());
        async move { jobq_worker::work(intake, runner, "w1", 1, stop, CancellationToken::new()).await }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut ended = Vec::new();
    for j in [&older, &first, &newer] {
        let done = loop {
            let now = store.get(&j.id).await.unwrap().unwrap();
            if now.status.is_terminal() {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "job still {} after 90 s",
                now.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(done.status, JobStatus::Finished, "{:?}", done.failure);
        ended.push(done);
    }
    stop.cancel();
    working.await.unwrap();
    let started = |j: &Job| j.started_at.expect("started");
    assert!(
        started(&ended[0]) < started(&ended[1]) && started(&ended[1]) < started(&ended[2]),
        "started oldest first (older from the store, then first, then newer): {:?}",
        ended.iter().map(started).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    jobq_worker::shim::run_if_requested();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let mut ran = 0;
    let name = "a_freed_slot_takes_the_oldest_waiting_job_from_the_store_before_the_offer_it_holds";
    if chosen(name) {
        runtime.block_on(
            a_freed_slot_takes_the_oldest_waiting_job_from_the_store_before_the_offer_it_holds(),
        );
        println!("test {name} ... ok");
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed; 0 failed");
}
