//! `jobq standalone` keeps its promises across a crash: 200 jobs submitted at once all
//! finish although the process is killed with SIGKILL in the middle of the run.

use std::time::{Duration, Instant};

use jobq_tests::stack::{Backend, GitServer, Stack, StackOptions};
use serde_json::{Value, json};

#[tokio::test]
async fn two_hundred_jobs_survive_a_sigkill_of_the_whole_process() {
    let options = StackOptions {
        backend: Backend::Standalone,
        workers: 2,
        slots: 2,
        ..StackOptions::default()
    };
    let Some(mut stack) = Stack::start(options).await else {
        return;
    };
    let git = GitServer::start();
    let token = stack.token("myuser", "1234").await;
    let log = stack.shared_file("runs.log");
    let js = r#"
const fs = require('fs');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8'));
fs.appendFileSync(config.log, `${config.n}\n`);
fs.writeFileSync('output/n.txt', String(config.n));
"#;
    let package =
        json!({"name": "t", "version": "1.0.0", "scripts": {"start": "node index.js"}}).to_string();
    let url = git.repo("trivial", &[("package.json", &package), ("index.js", js)]);
    let mut ids = Vec::new();
    for n in 0..200 {
        let config = json!({"log": log, "n": n}).to_string();
        ids.push(
            stack
                .submit(&token, json!({"url": url, "config": config}))
                .await,
        );
    }

    // Let a part of them finish, then kill everything at once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        if runs >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "fewer than 20 jobs ran in 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.kill_worker(0);
    stack.add_worker().await;
    stack.add_worker().await;

    let mut again = 0;
    for id in &ids {
        let job = stack
            .wait_for(&token, id, None, Duration::from_secs(300))
            .await;
        assert_eq!(job["status"], "finished", "{job}");
        if job["attempt"].as_u64() != Some(1) {
            again += 1;
        }
    }
    let mut ran: Vec<u32> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    ran.sort();
    ran.dedup();
    assert_eq!(ran, (0..200).collect::<Vec<_>>(), "every job ran");
    let listed: Value = stack
        .get(&token, "/api/v1/jobs?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 200, "none lost, none duplicated");
    eprintln!("jobs re-run after the crash: {again}");
}

/// The newest observation of `GET /health/load`.
async fn newest_observation(stack: &Stack) -> Value {
    let load: Value = stack
        .http
        .get(format!("{}/health/load", stack.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    load.as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_observer_grows_and_shrinks_the_in_process_pool_and_health_load_shows_it() {
    let options = StackOptions {
        backend: Backend::Standalone,
        autoscale: true,
        extra_env: [
            ("JOBQ_OBSERVER__MIN_WORKERS", "1"),
            ("JOBQ_OBSERVER__MAX_WORKERS", "4"),
            ("JOBQ_OBSERVER__POLICY", "queueing"),
            ("JOBQ_OBSERVER__TARGET_WAIT_SECS", "2"),
            ("JOBQ_OBSERVER__STABILISATION_SECS", "3"),
            ("JOBQ_OBSERVER__REFRESH_RATE_SECS", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
        ..StackOptions::default()
    };
    let Some(stack) = Stack::start(options).await else {
        return;
    };
    let git = GitServer::start();
    let token = stack.token("myuser", "1234").await;
    let package =
        json!({"name": "t", "version": "1.0.0", "scripts": {"start": "node index.js"}}).to_string();
    let url = git.repo(
        "sleep3",
        &[
            ("package.json", &package),
            ("index.js", "setTimeout(() => {}, 3000);"),
        ],
    );
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(stack.submit(&token, json!({"url": url})).await);
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut peak = 0;
    let mut saw_arrivals = false;
    while peak < 3 {
        let o = newest_observation(&stack).await;
        peak = peak.max(o["workers"].as_u64().unwrap_or(0));
        saw_arrivals |= o["avgRateOfArrival"].as_f64().unwrap_or(0.0) > 0.0;
        assert!(
            Instant::now() < deadline,
            "the pool did not grow past 2 workers in 30 s; last: {o}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for id in &ids {
        let job = stack
            .wait_for(&token, id, None, Duration::from_secs(120))
            .await;
        assert_eq!(job["status"], "finished", "{job}");
    }
    let o = newest_observation(&stack).await;
    for key in [
        "avgRateOfArrival",
        "avgRateOfService",
        "avgRateOfFinished",
        "avgResponseTime",
        "timestamp",
    ] {
        assert!(o.get(key).is_some(), "{key} missing in {o}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = newest_observation(&stack).await;
        if o["workers"].as_u64() == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool did not shrink back to 1 in 30 s; last: {o}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("peak workers {peak}, arrivals seen {saw_arrivals}");
}
