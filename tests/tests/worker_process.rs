//! A `jobq worker` process on its own: its health and metrics endpoint, a clean exit on
//! SIGTERM, and a start while a server is away.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobq_tests::stack::{binary, free_port};
use jobq_tests::{require_servers, unique_name};

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
