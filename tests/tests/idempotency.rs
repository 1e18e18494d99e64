//! Idempotent submits end to end, once per backend: the `Idempotency-Key` header on
//! `POST /api/v1/jobs` and `POST /api/addJob` of the real frontend on MongoDB-wire, Kafka
//! and Keycloak, and of `jobq standalone` on SQLite; and `jobq submit --idempotency-key`.

use std::collections::BTreeSet;
use std::process::Command;

use jobq_tests::stack::{Backend, Stack, StackOptions, binary};
use jobq_tests::unique_name;
use serde_json::{Value, json};

/// A stack on `backend` with no workers taking jobs away (the jobs stay listed as queued),
/// and a token of `myuser`.
async fn start(backend: Backend) -> Option<(Stack, String)> {
    let stack = Stack::start(StackOptions {
        backend,
        workers: 0,
        observer: false,
        ..StackOptions::default()
    })
    .await?;
    let token = stack.token("myuser", "1234").await;
    Some((stack, token))
}

/// A job body that no other test submits.
fn body() -> Value {
    json!({"url": format!("https://example.com/{}.git", unique_name("repo")), "args": "a 'b c'", "config": "{}"})
}

/// `POST route` with `Idempotency-Key: key` (none when `None`): the status and the JSON body.
async fn post(
    stack: &Stack,
    token: &str,
    route: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = stack
        .http
        .post(format!("{}{route}", stack.url))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json, headers)
}

/// The id in a submit's answer: `id` (resource route) or `jobId` (original route).
fn id_of(answer: &Value) -> String {
    answer["id"]
        .as_str()
        .or(answer["jobId"].as_str())
        .unwrap_or_else(|| panic!("no id in {answer}"))
        .to_string()
}

/// The ids of the caller's jobs whose URL is `url`.
async fn listed(stack: &Stack, token: &str, url: &str) -> Vec<String> {
    let all: Value = stack
        .get(token, "/api/v1/jobs?limit=100")
        .await
        .json()
        .await
        .unwrap();
    let host_path = url.trim_start_matches("https://");
    all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["url"].as_str().unwrap_or_default().contains(host_path))
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

async fn the_same_key_twice_answers_the_same_job_and_lists_one(backend: Backend) {
    let Some((stack, token)) = start(backend).await else {
        return;
    };
    let job = body();
    let key = unique_name("order");
    let (first, answer, headers) = post(&stack, &token, "/api/v1/jobs", Some(&key), &job).await;
    assert_eq!(first, 201, "{answer}");
    assert!(headers.get("idempotent-replayed").is_none());
    let id = id_of(&answer);
    let (again, answer, headers) = post(&stack, &token, "/api/v1/jobs", Some(&key), &job).await;
    assert_eq!(again, 200, "{answer}");
    assert_eq!(id_of(&answer), id);
    assert_eq!(headers["idempotent-replayed"], "true");
    let (original, answer, _) = post(&stack, &token, "/api/addJob", Some(&key), &job).await;
    assert_eq!(original, 200, "{answer}");
    // The original route's shape: the job id, with the plan's estimates beside it once an
    // observer has planned.
    assert_eq!(answer["jobId"], json!(id), "{answer}");
    let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    assert!(
        keys.iter()
            .all(|k| ["jobId", "estimatedStartAt", "estimatedFinishAt"].contains(&k.as_str())),
        "{answer}"
    );
    assert_eq!(
        listed(&stack, &token, job["url"].as_str().unwrap()).await,
        [id]
    );
}

async fn eight_concurrent_submits_with_one_key_make_exactly_one_job(backend: Backend) {
    let Some((stack, token)) = start(backend).await else {
        return;
    };
    let job = body();
    let key = unique_name("burst");
    let answers = futures::future::join_all((0..8).map(|n| {
        let route = if n % 2 == 0 {
            "/api/v1/jobs"
        } else {
            "/api/addJob"
        };
        post(&stack, &token, route, Some(&key), &job)
    }))
    .await;
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for (status, answer, _) in &answers {
        assert!(*status == 200 || *status == 201, "{status}: {answer}");
        created += usize::from(*status == 201);
        ids.insert(id_of(answer));
    }
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert!(
        created <= 1,
        "at most the first submit is a 201: {answers:?}"
    );
    let listed = listed(&stack, &token, job["url"].as_str().unwrap()).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(ids.contains(&listed[0]));
}

async fn the_same_key_with_another_body_is_422(backend: Backend) {
    let Some((stack, token)) = start(backend).await else {
        return;
    };
    let job = body();
    let key = unique_name("k");
    let (first, answer, _) = post(&stack, &token, "/api/addJob", Some(&key), &job).await;
    assert_eq!(first, 200, "{answer}");
    let mut other = job.clone();
    other["args"] = json!("something else");
    for route in ["/api/addJob", "/api/v1/jobs"] {
        let (status, answer, _) = post(&stack, &token, route, Some(&key), &other).await;
        assert_eq!(status, 422, "{route}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert!(
        listed(&stack, &token, job["url"].as_str().unwrap())
            .await
            .len()
            == 1
    );
}

async fn different_users_with_the_same_key_get_a_job_each(backend: Backend) {
    let Some((stack, mine)) = start(backend).await else {
        return;
    };
    let other = stack.token("otheruser", "abcd").await;
    let job = body();
    let key = unique_name("shared");
    let (a, answer_a, _) = post(&stack, &mine, "/api/v1/jobs", Some(&key), &job).await;
    let (b, answer_b, _) = post(&stack, &other, "/api/v1/jobs", Some(&key), &job).await;
    assert_eq!((a, b), (201, 201), "{answer_a} {answer_b}");
    assert_ne!(id_of(&answer_a), id_of(&answer_b));
    assert_eq!(answer_b["owner"], "otheruser");
    let url = job["url"].as_str().unwrap();
    assert_eq!(listed(&stack, &mine, url).await, [id_of(&answer_a)]);
    assert_eq!(listed(&stack, &other, url).await, [id_of(&answer_b)]);
}

async fn a_missing_key_makes_a_job_each_time_and_a_bad_one_is_400(backend: Backend) {
    let Some((stack, token)) = start(backend).await else {
        return;
    };
    let job = body();
    let (a, first, _) = post(&stack, &token, "/api/addJob", None, &job).await;
    let (b, second, _) = post(&stack, &token, "/api/addJob", None, &job).await;
    assert_eq!((a, b), (200, 200));
    assert_ne!(id_of(&first), id_of(&second));
    let long = "k".repeat(256);
    for key in ["", long.as_str()] {
        for route in ["/api/addJob", "/api/v1/jobs"] {
            let (status, answer, _) = post(&stack, &token, route, Some(key), &job).await;
            assert_eq!(status, 400, "{route} key of {}: {answer}", key.len());
            assert!(answer["error"].is_string(), "{answer}");
        }
    }
    assert_eq!(
        listed(&stack, &token, job["url"].as_str().unwrap())
            .await
            .len(),
        2
    );
}

async fn jobq_submit_with_an_idempotency_key_prints_the_same_id_twice(backend: Backend) {
    let Some((stack, token)) = start(backend).await else {
        return;
    };
    let url = body()["url"].as_str().unwrap().to_string();
    let key = unique_name("cli");
    let submit = |args: &[&str]| {
        Command::new(binary("jobq"))
            .arg("submit")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("XDG_CONFIG_HOME", stack.dir.join("home"))
            .env("JOBQ_URL", &stack.url)
            .env("JOBQ_TOKEN", &token)
            .output()
            .expect("run jobq")
    };
    let first = submit(&[&url, "--idempotency-key", &key]);
    assert!(first.status.success(), "{first:?}");
    let second = submit(&[&url, "--idempotency-key", &key]);
    assert!(second.status.success(), "{second:?}");
    let id = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), id);
    let changed = submit(&[&url, "--args", "x", "--idempotency-key", &key]);
    assert_eq!(changed.status.code(), Some(1), "{changed:?}");
    assert!(
        String::from_utf8_lossy(&changed.stderr).contains("Idempotency-Key"),
        "{changed:?}"
    );
    let bad = submit(&[&url, "--idempotency-key", ""]);
    assert_eq!(bad.status.code(), Some(2), "a usage error: {bad:?}");
    assert_eq!(listed(&stack, &token, &url).await, [id]);
}

jobq_tests::on_both_backends!(
    the_same_key_twice_answers_the_same_job_and_lists_one,
    eight_concurrent_submits_with_one_key_make_exactly_one_job,
    the_same_key_with_another_body_is_422,
    different_users_with_the_same_key_get_a_job_each,
    a_missing_key_makes_a_job_each_time_and_a_bad_one_is_400,
    jobq_submit_with_an_idempotency_key_prints_the_same_id_twice,
);
