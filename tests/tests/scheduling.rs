//! The scheduling rules end to end, once per backend (docs/scheduling.md): priority order,
//! fair share between users, the running and waiting limits, retries with growing gaps,
//! `notBefore` and expiry — through the real frontend, workers and observer on the real
//! servers, and through `jobq standalone`.

use std::time::Duration;

use jobq_tests::package;
use jobq_tests::stack::{Backend, GitServer, Stack, StackOptions};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A job that appends `start <ms> <tag>` and `end <ms> <tag>` to the file named by its config
/// (`log`), sleeping `ms` in between; exits with `code`.
fn recorder_repo(git: &GitServer) -> String {
    let js = r#"
const fs = require('fs');
const c = JSON.parse(fs.readFileSync('config.json', 'utf8') || '{}');
fs.appendFileSync(c.log, `start ${Date.now()} ${c.tag}\n`);
setTimeout(() => {
  fs.appendFileSync(c.log, `end ${Date.now()} ${c.tag}\n`);
  process.exit(c.code || 0);
}, c.ms || 0);
"#;
    git.repo(
        "recorder",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", js),
        ],
    )
}

/// The `(event, ms, tag)` lines of a recorder log, in file order.
fn records(path: &std::path::Path) -> Vec<(String, i64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((
                words.next()?.to_string(),
                words.next()?.parse().ok()?,
                words.next()?.to_string(),
            ))
        })
        .collect()
}

/// The tags in the order their jobs started.
fn start_order(path: &std::path::Path) -> Vec<String> {
    records(path)
        .into_iter()
        .filter(|(event, _, _)| event == "start")
        .map(|(_, _, tag)| tag)
        .collect()
}

async fn start_with(options: StackOptions) -> Option<(Stack, GitServer, String)> {
    let stack = Stack::start(options).await?;
    let git = GitServer::start();
    let token = stack.token("myuser", "1234").await;
    Some((stack, git, token))
}

/// `POST /api/v1/jobs`, answering the status and body whatever they are.
async fn post(stack: &Stack, token: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = stack
        .http
        .post(format!("{}/api/v1/jobs", stack.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST /api/v1/jobs");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

fn at(job: &Value, field: &str) -> OffsetDateTime {
    OffsetDateTime::parse(
        job[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {job}")),
        &Rfc3339,
    )
    .unwrap()
}

async fn wait_all(stack: &Stack, token: &str, ids: &[String]) -> Vec<Value> {
    let mut done = Vec::new();
    for id in ids {
        done.push(
            stack
                .wait_for(token, id, None, Duration::from_secs(120))
                .await,
        );
    }
    done
}

async fn a_freed_slot_takes_the_highest_priority_job_first(backend: Backend) {
    let options = StackOptions {
        backend,
        workers: 0,
        slots: 1,
        ..StackOptions::default()
    };
    let Some((mut stack, git, token)) = start_with(options).await else {
        return;
    };
    let log = stack.shared_file("order.log");
    let url = recorder_repo(&git);
    let mut ids = Vec::new();
    for (tag, priority) in [
        ("low", -5),
        ("old", 0),
        ("young", 0),
        ("high", 9),
        ("mid", 3),
    ] {
        let body = json!({"url": url, "priority": priority,
            "config": json!({"log": log, "tag": tag}).to_string()});
        let (status, job, _) = post(&stack, &token, body).await;
        assert_eq!(status, 201, "{job}");
        assert_eq!(job["priority"], priority);
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    stack.add_worker().await;
    for job in wait_all(&stack, &token, &ids).await {
        assert_eq!(job["status"], "finished", "{job}");
    }
    assert_eq!(start_order(&log), ["high", "mid", "old", "young", "low"]);
}

async fn a_late_user_is_served_beside_a_backlog_not_behind_it(backend: Backend) {
    // One slot; a's 40 jobs wait, then b submits 10: with fair share b's jobs alternate with
    // a's instead of waiting behind all 40.
    let options = StackOptions {
        backend,
        workers: 0,
        slots: 1,
        ..StackOptions::default()
    };
    let Some((mut stack, git, a)) = start_with(options).await else {
        return;
    };
    let b = stack.token("otheruser", "abcd").await;
    let log = stack.shared_file("fair.log");
    let url = recorder_repo(&git);
    let mut ids = Vec::new();
    for (token, user, n) in [(&a, "a", 40), (&b, "b", 10)] {
        for i in 0..n {
            let config = json!({"log": log, "tag": format!("{user}{i}")}).to_string();
            let (status, job, _) = post(&stack, token, json!({"url": url, "config": config})).await;
            assert_eq!(status, 201, "{job}");
            ids.push((token.clone(), job["id"].as_str().unwrap().to_string()));
        }
    }
    stack.add_worker().await;
    for (token, id) in &ids {
        stack
            .wait_for(token, id, Some("finished"), Duration::from_secs(180))
            .await;
    }
    let order = start_order(&log);
    let last_b = order.iter().rposition(|t| t.starts_with('b')).unwrap();
    let a_before = order[..last_b]
        .iter()
        .filter(|t| t.starts_with('a'))
        .count();
    // Round robin: b's 10 start within a's next 10 or 11 (ties go to the older job).
    assert!(
        a_before <= 11,
        "{a_before} of a's jobs started before b's last: {order:?}"
    );
}

async fn a_user_never_runs_more_than_the_running_limit_while_others_run(backend: Backend) {
    let options = StackOptions {
        backend,
        workers: 2,
        slots: 2,
        extra_env: vec![("JOBQ_SCHEDULING__MAX_RUNNING_PER_USER".into(), "2".into())],
        ..StackOptions::default()
    };
    let Some((stack, git, a)) = start_with(options).await else {
        return;
    };
    let b = stack.token("otheruser", "abcd").await;
    let (log_a, log_b) = (stack.shared_file("a.log"), stack.shared_file("b.log"));
    let url = recorder_repo(&git);
    let mut ids = Vec::new();
    for (token, log, n) in [(&a, &log_a, 6), (&b, &log_b, 2)] {
        for i in 0..n {
            let config = json!({"log": log, "tag": i, "ms": 1500}).to_string();
            let (status, job, _) = post(&stack, token, json!({"url": url, "config": config})).await;
            assert_eq!(status, 201, "{job}");
            ids.push((token.clone(), job["id"].as_str().unwrap().to_string()));
        }
    }
    for (token, id) in &ids {
        let job = stack
            .wait_for(token, id, Some("finished"), Duration::from_secs(180))
            .await;
        assert_eq!(job["status"], "finished");
    }
    let most_at_once = |path: &std::path::Path| {
        let (mut now, mut most) = (0i32, 0i32);
        let mut events = records(path);
        events.sort_by_key(|(event, ms, _)| (*ms, event == "start"));
        for (event, _, _) in events {
            now += if event == "start" { 1 } else { -1 };
            most = most.max(now);
        }
        most
    };
    assert_eq!(
        most_at_once(&log_a),
        2,
        "the limit is 2: {:?}",
        records(&log_a)
    );
    // The limit holds a back, not the fleet: b's jobs ran beside a's.
    assert_eq!(most_at_once(&log_b), 2, "{:?}", records(&log_b));
}

async fn a_user_over_the_waiting_limit_gets_429_and_others_do_not(backend: Backend) {
    let options = StackOptions {
        backend,
        workers: 0,
        extra_env: vec![("JOBQ_SCHEDULING__MAX_QUEUED_PER_USER".into(), "2".into())],
        ..StackOptions::default()
    };
    let Some((stack, git, a)) = start_with(options).await else {
        return;
    };
    let url = recorder_repo(&git);
    for _ in 0..2 {
        assert_eq!(post(&stack, &a, json!({"url": url})).await.0, 201);
    }
    let (status, body, headers) = post(&stack, &a, json!({"url": url})).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("most allowed is 2"),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));
    let listed = stack
        .get(&a, "/api/v1/jobs")
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(listed["total"], 2, "nothing half-accepted: {listed}");
    // The original route answers the same.
    let r = stack
        .http
        .post(format!("{}/api/addJob", stack.url))
        .bearer_auth(&a)
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let b = stack.token("otheruser", "abcd").await;
    assert_eq!(post(&stack, &b, json!({"url": url})).await.0, 201);
}

async fn a_failed_job_is_retried_with_growing_gaps_then_fails(backend: Backend) {
    let options = StackOptions {
        backend,
        extra_env: vec![("JOBQ_SCHEDULING__RETRY_BACKOFF_SECS".into(), "2".into())],
        ..StackOptions::default()
    };
    let Some((stack, git, token)) = start_with(options).await else {
        return;
    };
    let log = stack.shared_file("retries.log");
    let config = json!({"log": log, "tag": "r", "code": 3}).to_string();
    let body = json!({"url": recorder_repo(&git), "config": config, "retries": 2});
    let (status, job, _) = post(&stack, &token, body).await;
    assert_eq!((status, &job["retries"]), (201, &json!(2)), "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // While it waits for a retry it is queued with its retryAt.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let waiting = loop {
        let j = stack.job(&token, &id).await;
        if j["status"] == "queued" && j["retryAt"].is_string() {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never waited for a retry: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(waiting["attempt"], 2);
    let job = stack
        .wait_for(&token, &id, None, Duration::from_secs(90))
        .await;
    assert_eq!(
        (&job["status"], &job["exitCode"]),
        (&json!("failed"), &json!(3)),
        "{job}"
    );
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{job}");
    assert!(
        attempts
            .iter()
            .all(|a| a["outcome"] == "failed" && a["reason"] == "exit code 3")
    );
    let runs: Vec<i64> = records(&log)
        .into_iter()
        .filter(|(e, _, _)| e == "start")
        .map(|(_, ms, _)| ms)
        .collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let ends: Vec<i64> = records(&log)
        .into_iter()
        .filter(|(e, _, _)| e == "end")
        .map(|(_, ms, _)| ms)
        .collect();
    // Back-off 2 s, doubled, jittered to between half and all of it: the first gap at least
    // 1 s, the second at least 2 s (plus the run's own start each time).
    let gaps: Vec<i64> = (0..2).map(|i| runs[i + 1] - ends[i]).collect();
    assert!(gaps[0] >= 1000 && gaps[0] < 8000, "{gaps:?}");
    assert!(gaps[1] >= 2000 && gaps[1] < 10_000, "{gaps:?}");
}

async fn a_delayed_job_waits_for_its_time_and_an_expired_one_never_starts(backend: Backend) {
    let Some((stack, git, token)) = start_with(StackOptions {
        backend,
        ..StackOptions::default()
    })
    .await
    else {
        return;
    };
    let log = stack.shared_file("delayed.log");
    let url = recorder_repo(&git);
    let not_before = OffsetDateTime::now_utc() + Duration::from_secs(4);
    let text = not_before.format(&Rfc3339).unwrap();
    let config = json!({"log": log, "tag": "delayed"}).to_string();
    let (status, job, _) = post(
        &stack,
        &token,
        json!({"url": url, "config": config, "notBefore": text}),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let delayed = job["id"].as_str().unwrap().to_string();
    // A job that may start now runs first.
    let config = json!({"log": log, "tag": "now"}).to_string();
    let (_, job, _) = post(&stack, &token, json!({"url": url, "config": config})).await;
    let now = job["id"].as_str().unwrap().to_string();
    stack
        .wait_for(&token, &now, Some("finished"), Duration::from_secs(60))
        .await;
    let waiting = stack.job(&token, &delayed).await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    // Stores keep milliseconds.
    let ms = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
    assert_eq!(ms(at(&waiting, "notBefore")), ms(not_before));
    let done = stack
        .wait_for(&token, &delayed, Some("finished"), Duration::from_secs(60))
        .await;
    assert!(at(&done, "startedAt") >= not_before, "{done}");
    assert_eq!(start_order(&log), ["now", "delayed"]);

    // Expiry: held back for an hour, expiring after 2 s, it ends cancelled and never runs.
    let later = (OffsetDateTime::now_utc() + Duration::from_secs(3600))
        .format(&Rfc3339)
        .unwrap();
    let config = json!({"log": log, "tag": "expired"}).to_string();
    let body = json!({"url": url, "config": config, "notBefore": later, "expireAfterSecs": 2});
    let (status, job, _) = post(&stack, &token, body).await;
    assert_eq!(status, 201, "{job}");
    assert!(job["expiresAt"].is_string(), "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let ended = stack
        .wait_for(&token, &id, None, Duration::from_secs(30))
        .await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(
        ended["failure"], "expired: still waiting after 2 s",
        "{ended}"
    );
    assert!(ended["startedAt"].is_null());
    assert!(!start_order(&log).contains(&"expired".to_string()));
}

async fn bad_scheduling_fields_are_refused_with_their_names(backend: Backend) {
    let Some((stack, git, token)) = start_with(StackOptions {
        backend,
        workers: 0,
        ..StackOptions::default()
    })
    .await
    else {
        return;
    };
    let url = recorder_repo(&git);
    for (field, value) in [
        ("priority", json!(101)),
        ("priority", json!("high")),
        ("retries", json!(-1)),
        ("notBefore", json!("tomorrow")),
        ("expireAfterSecs", json!(0)),
    ] {
        let mut body = json!({"url": url});
        body[field] = value.clone();
        let (status, answer, _) = post(&stack, &token, body).await;
        assert_eq!(status, 422, "{field}={value}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let listed = stack
        .get(&token, "/api/v1/jobs")
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(listed["total"], 0, "{listed}");
}

jobq_tests::on_both_backends!(
    a_freed_slot_takes_the_highest_priority_job_first,
    a_late_user_is_served_beside_a_backlog_not_behind_it,
    a_user_never_runs_more_than_the_running_limit_while_others_run,
    a_user_over_the_waiting_limit_gets_429_and_others_do_not,
    a_failed_job_is_retried_with_growing_gaps_then_fails,
    a_delayed_job_waits_for_its_time_and_an_expired_one_never_starts,
    bad_scheduling_fields_are_refused_with_their_names,
);
