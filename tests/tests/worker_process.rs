//! A `jobq worker` process on its own: its health and metrics endpoint, a clean exit on
//! SIGTERM, a start while a server is away, and jobs run from store claims while Kafka is
//! away.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobq_common::domain::{Job, JobSpec, JobStatus, artifact_keys};
use jobq_common::mongo::MongoJobStore;
use jobq_common::ports::{ArtifactStore, JobCatalog, JobLookup};
use jobq_common::s3::S3ArtifactStore;
use jobq_tests::stack::{GitServer, binary, free_port};
use jobq_tests::{infra_settings, require_servers, unique_name};
use tokio::io::AsyncReadExt;

/// Kills the worker if the test fails half-way.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_worker_serves_health_and_metrics_and_exits_cleanly_on_sigterm() {
    require_servers("worker process");
    let id = unique_name("wp");
    let port = free_port();
    let work = std::env::temp_dir().join(&id);
    let worker = Command::new(binary("jobq"))
        .args(["worker", "--slots", "3"])
        .env("JOBQ_KAFKA__JOBS_TOPIC", format!("{id}-jobs"))
        .env("JOBQ_KAFKA__WORKER_GROUP", format!("{id}-workers"))
        .env("JOBQ_KAFKA__PARTITIONS", "2")
        .env("JOBQ_MONGO__DATABASE", &id)
        .env("JOBQ_S3__BUCKET", &id)
        .env("JOBQ_WORKER__WORK_DIR", &work)
        .env("JOBQ_METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start jobq worker");
    let mut worker = Reap(worker);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "no /health within 30 s");
        assert!(worker.0.try_wait().unwrap().is_none(), "the worker exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("jobq_worker_slots 3"), "{metrics}");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(worker.0.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not exit within 15 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_worker_started_while_the_store_is_away_waits_for_it_and_still_stops_on_sigterm() {
    require_servers("worker process");
    let id = unique_name("wp");
    let work = std::env::temp_dir().join(&id);
    // Nothing listens on this port: the store is away (a MongoDB restarting).
    let away = free_port();
    let log = work.join("worker.log");
    std::fs::create_dir_all(&work).unwrap();
    let worker = Command::new(binary("jobq"))
        .args(["worker", "--slots", "1"])
        .env("JOBQ_KAFKA__JOBS_TOPIC", format!("{id}-jobs"))
        .env("JOBQ_KAFKA__WORKER_GROUP", format!("{id}-workers"))
        .env("JOBQ_MONGO__URI", format!("mongodb://127.0.0.1:{away}"))
        .env("JOBQ_WORKER__WORK_DIR", &work)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("start jobq worker");
    let mut worker = Reap(worker);
    // The driver gives up on a server after 5 s; the worker must outlive a few such tries.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the worker exited: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("cannot reach the servers yet"), "{text}");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(worker.0.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_worker_started_while_kafka_is_away_runs_queued_jobs_it_claims_from_the_store_one_after_another()
 {
    let mut settings = infra_settings("worker process");
    let id = unique_name("wp");
    settings.mongo.database = id.clone();
    settings.s3.bucket = id.clone();
    let store = MongoJobStore::connect(&settings.mongo)
        .await
        .expect("connect to mongo");
    let artifacts = S3ArtifactStore::connect(&settings.s3)
        .await
        .expect("connect to s3");
    let git = GitServer::start();
    let url = git.repo(
        "hello",
        &[
            (
                "package.json",
                r#"{"name":"job","version":"1.0.0","private":true,"scripts":{"start":"node index.js"}}"#,
            ),
            (
                "index.js",
                "require('fs').mkdirSync('output', { recursive: true });\n\
                 require('fs').writeFileSync('output/done.txt', 'done');\n\
                 console.log('ran without kafka');\n",
            ),
        ],
    );
    // Queued in the store, as the frontend leaves a job whose message Kafka has not taken.
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let spec = JobSpec {
            url: url.clone(),
            args: String::new(),
            config: String::new(),
        };
        let job = Job::new("alice", spec, time::OffsetDateTime::now_utc());
        store.insert(&job).await.unwrap();
        jobs.push(job);
    }

    let work = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&work).unwrap();
    let log = work.join("worker.log");
    // Nothing listens on this port: the broker is away (a Kafka restarting).
    let away = free_port();
    let worker = Command::new(binary("jobq"))
        .args(["worker", "--slots", "1"])
        .env("JOBQ_KAFKA__BROKERS", format!("127.0.0.1:{away}"))
        .env("JOBQ_KAFKA__JOBS_TOPIC", format!("{id}-jobs"))
        .env("JOBQ_KAFKA__WORKER_GROUP", format!("{id}-workers"))
        .env("JOBQ_MONGO__DATABASE", &id)
        .env("JOBQ_S3__BUCKET", &id)
        .env("JOBQ_WORKER__ALLOW_LOCAL_REPOS", "true")
        .env("JOBQ_WORKER__WORK_DIR", &work)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("start jobq worker");
    let mut worker = Reap(worker);
    let started = Instant::now();
    // One slot: the second job runs once the first one's end is recorded, without waiting
    // for its events, which Kafka cannot take (the producer would hold them for 30 s).
    let deadline = started + Duration::from_secs(25);
    for job in &jobs {
        let done = loop {
            let now = store.get(&job.id).await.unwrap().expect("the job");
            if matches!(now.status, JobStatus::Finished | JobStatus::Failed) {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "a job is still {} 25 s after the worker started: {}",
                now.status,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                worker.0.try_wait().unwrap().is_none(),
                "the worker exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            done.status,
            JobStatus::Finished,
            "{:?}: {}",
            done.failure,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert_eq!(done.attempt, 1);
        assert_eq!(done.output_files, ["done.txt"]);
        let mut stdout = String::new();
        artifacts
            .get(&artifact_keys::stdout(&job.id))
            .await
            .expect("stdout stored")
            .body
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        assert!(stdout.contains("ran without kafka"), "{stdout}");
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(worker.0.id().to_string())
        .status();
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        // Its jobs have ended: it waits a few seconds for the events Kafka did not take, not
        // for the producer's 30 s timeout.
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "no exit within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
    drop(worker);
    let _ = std::fs::remove_dir_all(&work);
    let _ = artifacts.delete_bucket().await;
    let _ = store.drop_database().await;
}
