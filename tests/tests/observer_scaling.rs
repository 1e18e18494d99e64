//! The observer end to end: the real frontend and observer (local-process scaler, no worker
//! at the start) against real Kafka, MongoDB-wire, S3 and Keycloak. Under load the observer
//! starts `jobq worker` processes, `/health/load` shows what it measured, and once the queue
//! is idle it stops them again.

use std::time::{Duration, Instant};

use jobq_tests::stack::{GitServer, Stack, StackOptions};
use serde_json::{Value, json};

/// A job that sleeps `config.seconds` seconds.
fn sleep_repo(git: &GitServer) -> String {
    let package = json!({"name": "job", "version": "1.0.0", "private": true,
        "scripts": {"start": "node index.js"}})
    .to_string();
    let js = r#"
const fs = require('fs');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8') || '{}');
setTimeout(() => process.exit(0), (config.seconds || 1) * 1000);
"#;
    git.repo("sleep", &[("package.json", &package), ("index.js", js)])
}

/// The observer's child processes that are `jobq worker`s.
fn worker_children(observer: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, …
        let mut rest = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = rest.next().unwrap_or("");
        let ppid: u32 = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_worker = cmdline.split(|b| *b == 0).any(|arg| arg == b"worker");
        if ppid == observer && state != "Z" && is_worker {
            pids.push(pid);
        }
    }
    pids
}

async fn load(stack: &Stack, token: &str) -> Vec<Value> {
    let r = stack.get(token, "/health/load").await;
    assert!(r.status().is_success(), "/health/load: {}", r.status());
    r.json::<Vec<Value>>().await.expect("json")
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn the_local_scaler_starts_workers_under_load_and_stops_them_when_idle() {
    let env = [
        ("JOBQ_OBSERVER__SCALER", "local"),
        ("JOBQ_OBSERVER__POLICY", "queueing"),
        ("JOBQ_OBSERVER__MIN_WORKERS", "0"),
        ("JOBQ_OBSERVER__MAX_WORKERS", "3"),
        ("JOBQ_OBSERVER__SLOTS_PER_WORKER", "1"),
        ("JOBQ_OBSERVER__TARGET_WAIT_SECS", "2"),
        ("JOBQ_OBSERVER__STABILISATION_SECS", "3"),
    ];
    let Some(stack) = Stack::start(StackOptions {
        workers: 0,
        slots: 1,
        extra_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..StackOptions::default()
    })
    .await
    else {
        return;
    };
    let observer = stack.observer_pid().expect("observer runs");
    let git = GitServer::start();
    let url = sleep_repo(&git);
    let token = stack.token("myuser", "1234").await;

    // Idle: the observer runs no worker and still reports observations.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        worker_children(observer).is_empty(),
        "workers before any load: {}",
        stack.log("observer")
    );

    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(
            stack
                .submit(&token, json!({"url": url, "config": "{\"seconds\": 3}"}))
                .await,
        );
    }

    // Under load it starts more than one worker process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    let mut busy_seen = None;
    while Instant::now() < deadline && (most < 2 || busy_seen.is_none()) {
        most = most.max(worker_children(observer).len());
        if busy_seen.is_none() {
            busy_seen = load(&stack, &token)
                .await
                .into_iter()
                .find(|o| o["busySlots"].as_u64() > Some(0));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        most >= 2,
        "at most {most} workers under load\n{}",
        stack.log("observer")
    );
    // /health/load shows real observations while jobs run.
    let busy = busy_seen.unwrap_or_else(|| panic!("no observation with busy slots"));
    assert_eq!(busy["policy"], "queueing", "{busy}");
    assert!(busy["workers"].as_u64() > Some(0), "{busy}");
    assert!(busy["desiredWorkers"].as_u64() > Some(0), "{busy}");
    assert!(busy["timestamp"].as_i64() > Some(0), "{busy}");

    for id in &ids {
        let job = stack
            .wait_for(&token, id, None, Duration::from_secs(120))
            .await;
        assert_eq!(job["status"], "finished", "{job}");
    }
    let observations = load(&stack, &token).await;
    assert_eq!(observations.len(), 10, "{observations:?}");
    let stamps: Vec<i64> = observations
        .iter()
        .map(|o| o["timestamp"].as_i64().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {stamps:?}"
    );

    // Idle again: every worker process it started stops (drained, not killed).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = worker_children(observer);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers {left:?} still run when idle\n{}",
            stack.log("observer")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let newest = &load(&stack, &token).await[0];
    assert_eq!(newest["desiredWorkers"], 0, "{newest}");
    assert_eq!(newest["busySlots"], 0, "{newest}");
}
