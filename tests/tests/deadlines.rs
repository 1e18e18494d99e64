//! Deadlines and predicted start times end to end, once per backend (docs/deadlines.md):
//! earliest deadline first within a priority, estimates from the observer's plan, a deadline
//! the fleet cannot meet flagged at risk (on the job, in the observation), and the `deadline`
//! policy asking for the workers that meet the deadlines — through the real frontend,
//! workers and observer on the real servers, and through `jobq standalone`.

use std::time::{Duration, Instant};

use jobq_tests::package;
use jobq_tests::stack::{Backend, GitServer, Stack, StackOptions};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A job that appends `start <tag>` to the file named by its config (`log`), then sleeps
/// `ms`.
fn recorder_repo(git: &GitServer) -> String {
    let js = r#"
const fs = require('fs');
const c = JSON.parse(fs.readFileSync('config.json', 'utf8') || '{}');
if (c.log) fs.appendFileSync(c.log, `start ${c.tag}\n`);
setTimeout(() => process.exit(0), c.ms || 0);
"#;
    git.repo(
        "recorder",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", js),
        ],
    )
}

/// A stack, its git server (kept for the test's length), myuser's token and the recorder
/// repository's URL.
async fn start(options: StackOptions) -> Option<(Stack, GitServer, String, String)> {
    let stack = Stack::start(options).await?;
    let git = GitServer::start();
    let token = stack.token("myuser", "1234").await;
    let url = recorder_repo(&git);
    Some((stack, git, token, url))
}

fn start_order(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start ").map(str::to_string))
        .collect()
}

fn in_secs(secs: f64) -> String {
    (OffsetDateTime::now_utc() + Duration::from_secs_f64(secs))
        .format(&Rfc3339)
        .unwrap()
}

fn ms_of(job: &Value, field: &str) -> i64 {
    let text = job[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field}: {job}"));
    (OffsetDateTime::parse(text, &Rfc3339)
        .unwrap()
        .unix_timestamp_nanos()
        / 1_000_000) as i64
}

/// Planning every half second, so a test waits little for a plan.
fn planning_often(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.push(("JOBQ_OBSERVER__REFRESH_RATE_SECS".into(), "0.5".into()));
    env
}

async fn post(stack: &Stack, token: &str, body: Value) -> Value {
    let r = stack
        .http
        .post(format!("{}/api/v1/jobs", stack.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST /api/v1/jobs");
    let status = r.status().as_u16();
    let job: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{job}");
    job
}

fn id(job: &Value) -> String {
    job["id"].as_str().expect("id").to_string()
}

/// Polls the job view until `ready` holds for it, for at most `within`.
async fn view_until(
    stack: &Stack,
    token: &str,
    id: &str,
    within: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + within;
    loop {
        let job = stack.job(token, id).await;
        if ready(&job) {
            return job;
        }
        assert!(
            Instant::now() < until,
            "job {id} never became ready within {within:?}: {job}\nobserver:\n{}",
            stack.log("observer")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/health/load` until an observation satisfies `ready`.
async fn observation_until(
    stack: &Stack,
    token: &str,
    within: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + within;
    loop {
        let r = stack.get(token, "/health/load").await;
        let load: Value = r.json().await.unwrap_or(Value::Null);
        if let Some(found) = load
            .as_array()
            .and_then(|all| all.iter().find(|o| ready(o)).cloned())
        {
            return found;
        }
        assert!(
            Instant::now() < until,
            "no observation became ready within {within:?}: {load}\nobserver:\n{}",
            stack.log("observer")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stack of one worker with one slot (and at most one: the tests' observer only logs its
/// decisions, no scaler acts, and a plan counts on the workers it decided to have), planning
/// often, with a job of `secs` seconds (and saying so) running on the slot.
async fn one_busy_slot(
    backend: Backend,
    secs: u64,
) -> Option<(Stack, GitServer, String, String, Value)> {
    let options = StackOptions {
        backend,
        workers: 1,
        slots: 1,
        extra_env: planning_often(vec![("JOBQ_OBSERVER__MAX_WORKERS".into(), "1".into())]),
        ..StackOptions::default()
    };
    let (stack, git, token, url) = start(options).await?;
    let config = json!({"ms": secs * 1000}).to_string();
    let long = post(
        &stack,
        &token,
        json!({"url": url, "expectedDurationSecs": secs, "config": config}),
    )
    .await;
    stack
        .wait_for(&token, &id(&long), Some("running"), Duration::from_secs(60))
        .await;
    Some((stack, git, token, url, long))
}

async fn within_a_priority_the_earliest_deadline_starts_first(backend: Backend) {
    let options = StackOptions {
        backend,
        workers: 0,
        slots: 1,
        ..StackOptions::default()
    };
    let Some((mut stack, _git, token, url)) = start(options).await else {
        return;
    };
    let log = stack.shared_file("order.log");
    let mut ids = Vec::new();
    for (tag, priority, deadline) in [
        ("none", 0, None),
        ("late", 0, Some(3600.0)),
        ("soon", 0, Some(600.0)),
        ("high", 5, None),
        ("low-urgent", -1, Some(30.0)),
    ] {
        let mut body = json!({"url": url, "priority": priority,
            "config": json!({"log": log, "tag": tag}).to_string()});
        if let Some(secs) = deadline {
            body["deadline"] = json!(in_secs(secs));
        }
        let job = post(&stack, &token, body).await;
        assert_eq!(job["deadline"].is_string(), deadline.is_some(), "{job}");
        ids.push(id(&job));
    }
    stack.add_worker().await;
    for id in &ids {
        let job = stack
            .wait_for(&token, id, None, Duration::from_secs(120))
            .await;
        assert_eq!(job["status"], "finished", "{job}");
    }
    assert_eq!(
        start_order(&log),
        ["high", "soon", "late", "none", "low-urgent"]
    );
}

async fn waiting_jobs_are_given_estimates_in_the_order_they_will_start(backend: Backend) {
    // One slot, busy with an 8 s job; three more wait. The plan predicts them one after the
    // other, each for its expected duration; the running one keeps its actual start.
    let Some((stack, _git, token, url, long)) = one_busy_slot(backend, 8).await else {
        return;
    };
    let running = stack
        .wait_for(&token, &id(&long), Some("running"), Duration::from_secs(60))
        .await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(id(&post(
            &stack,
            &token,
            json!({"url": url, "expectedDurationSecs": 2, "config": json!({"ms": 100}).to_string()}),
        )
        .await));
    }
    // A plan made before the three were submitted answers them all with its tail; the next
    // plan places them one after the other on the one slot, each for its 2 s.
    let until = Instant::now() + Duration::from_secs(20);
    let starts = loop {
        let mut views = Vec::new();
        for id in &waiting {
            views.push(stack.job(&token, id).await);
        }
        let starts: Vec<Option<i64>> = views
            .iter()
            .map(|v| {
                v["estimatedStartAt"]
                    .is_string()
                    .then(|| ms_of(v, "estimatedStartAt"))
            })
            .collect();
        for (view, start) in views.iter().zip(&starts) {
            if let (Some(start), true) = (start, view["status"] == "queued") {
                assert_eq!(ms_of(view, "estimatedFinishAt") - start, 2000, "{view}");
            }
        }
        if let [Some(a), Some(b), Some(c)] = starts[..]
            && b - a == 2000
            && c - b == 2000
        {
            break vec![a, b, c];
        }
        assert!(
            views.iter().all(|v| v["status"] == "queued") && Instant::now() < until,
            "the three waiting jobs were never predicted one after the other: {starts:?}\n{views:?}\nobserver:\n{}",
            stack.log("observer")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let long_view = stack.job(&token, &id(&long)).await;
    if long_view["status"] == "running" {
        assert_eq!(
            ms_of(&long_view, "estimatedStartAt"),
            ms_of(&running, "startedAt")
        );
    }
    // A submit once a plan exists is answered with its estimates, after those before it.
    let next = post(
        &stack,
        &token,
        json!({"url": url, "expectedDurationSecs": 2}),
    )
    .await;
    let start = ms_of(&next, "estimatedStartAt");
    assert_eq!(ms_of(&next, "estimatedFinishAt") - start, 2000, "{next}");
    assert!(start >= starts[0], "{next} {starts:?}");
    for id in waiting.iter().chain([&id(&next)]) {
        let job = stack
            .wait_for(&token, id, None, Duration::from_secs(120))
            .await;
        assert_eq!(job["status"], "finished", "{job}");
        assert!(
            job["estimatedStartAt"].is_null(),
            "an ended job has no estimate"
        );
    }
}

async fn a_deadline_the_fleet_cannot_meet_is_flagged_at_risk(backend: Backend) {
    // One slot, busy for 5 s: a job due in 3 s cannot make it and is flagged; one due in an
    // hour is not.
    let Some((stack, _git, token, url, long)) = one_busy_slot(backend, 5).await else {
        return;
    };
    let doomed = post(
        &stack,
        &token,
        json!({"url": url, "deadline": in_secs(3.0), "expectedDurationSecs": 1}),
    )
    .await;
    let relaxed = post(
        &stack,
        &token,
        json!({"url": url, "deadline": in_secs(3600.0), "expectedDurationSecs": 1}),
    )
    .await;
    let flagged = view_until(&stack, &token, &id(&doomed), Duration::from_secs(20), |j| {
        j["deadlineAtRisk"] == true
    })
    .await;
    if flagged["estimatedFinishAt"].is_string() {
        assert!(
            ms_of(&flagged, "estimatedFinishAt") > ms_of(&flagged, "deadline"),
            "{flagged}"
        );
    }
    let seen = observation_until(&stack, &token, Duration::from_secs(20), |o| {
        o["deadlinesAtRisk"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(seen["deadlineJobs"].as_u64().unwrap() >= 2, "{seen}");
    for job in [&doomed, &relaxed, &long] {
        stack
            .wait_for(&token, &id(job), Some("finished"), Duration::from_secs(120))
            .await;
    }
    // The flag stays on the job it was raised for, after it ended; the other never had it.
    assert_eq!(
        stack.job(&token, &id(&doomed)).await["deadlineAtRisk"],
        true
    );
    assert_eq!(
        stack.job(&token, &id(&relaxed)).await["deadlineAtRisk"],
        false
    );
    let metrics = stack
        .get(&token, "/metrics")
        .await
        .text()
        .await
        .unwrap_or_default();
    if backend == Backend::Standalone {
        assert!(
            metrics.contains("jobq_deadlines_at_risk_total"),
            "the standalone process exports the at-risk counter"
        );
    }
}

async fn the_deadline_policy_asks_for_the_workers_that_meet_the_deadlines(backend: Backend) {
    // One worker. A first short job teaches the observer that jobs are quick, so the queueing
    // rule alone (wait target 1000 s) wants one worker. Then six 10 s jobs arrive, due 28 s
    // from the first: with new workers ready after 1 s, two rounds of 10 s fit before the
    // deadline only on three workers or more (all six at once on six).
    let options = StackOptions {
        backend,
        workers: 1,
        slots: 1,
        autoscale: true,
        extra_env: planning_often(vec![
            ("JOBQ_OBSERVER__POLICY".into(), "deadline".into()),
            ("JOBQ_OBSERVER__TARGET_WAIT_SECS".into(), "1000".into()),
            ("JOBQ_OBSERVER__WORKER_STARTUP_SECS".into(), "1".into()),
            ("JOBQ_OBSERVER__MIN_WORKERS".into(), "1".into()),
            ("JOBQ_OBSERVER__MAX_WORKERS".into(), "8".into()),
            ("JOBQ_OBSERVER__STABILISATION_SECS".into(), "0".into()),
        ]),
        ..StackOptions::default()
    };
    let Some((stack, _git, token, url)) = start(options).await else {
        return;
    };
    let first = post(&stack, &token, json!({"url": url})).await;
    stack
        .wait_for(
            &token,
            &id(&first),
            Some("finished"),
            Duration::from_secs(60),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = observation_until(&stack, &token, Duration::from_secs(5), |_| true).await;
    assert_eq!(
        before["desiredWorkers"], 1,
        "quick jobs and no deadline: {before}"
    );
    let deadline = in_secs(28.0);
    for _ in 0..6 {
        post(
            &stack,
            &token,
            json!({"url": url, "deadline": deadline, "expectedDurationSecs": 10,
                "config": json!({"ms": 10_000}).to_string()}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen = observation_until(&stack, &token, Duration::from_secs(15), |o| {
        o["deadlineJobs"].as_u64() == Some(6)
    })
    .await;
    assert_eq!(seen["policy"], "deadline", "{seen}");
    let desired = seen["desiredWorkers"].as_u64().unwrap();
    assert!(
        (3..=6).contains(&desired),
        "the deadlines need 3 to 6 workers (by how late the period came), it asked for {desired}: {seen}"
    );
    assert_eq!(seen["deadlinesAtRisk"], 0, "{seen}");
}

jobq_tests::on_both_backends!(
    within_a_priority_the_earliest_deadline_starts_first,
    waiting_jobs_are_given_estimates_in_the_order_they_will_start,
    a_deadline_the_fleet_cannot_meet_is_flagged_at_risk,
    the_deadline_policy_asks_for_the_workers_that_meet_the_deadlines,
);
