//! The job pipeline end to end, once per backend: the real frontend, workers and observer
//! against real Kafka, MongoDB-wire, S3 and Keycloak servers, and `jobq standalone` on its
//! embedded backends — the same scenarios, routes and assertions. Job repositories are
//! served by `git daemon`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jobq_tests::stack::{Backend, GitServer, Stack, StackOptions};
use serde_json::{Value, json};

const HELLO_JS: &str = r#"
const fs = require('fs');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8') || 'null');
fs.mkdirSync('output/nested/a/b', { recursive: true });
fs.writeFileSync('output/result.json', JSON.stringify({ argv: process.argv.slice(2), config }));
fs.writeFileSync('output/nested/a/b/c.txt', 'deep');
fs.writeFileSync('output/ünïcödé.txt', 'unicode');
fs.writeFileSync('output/env.json', JSON.stringify(process.env));
console.log('hello stdout');
console.error('hello stderr');
"#;

fn package(start: &str) -> String {
    json!({"name": "job", "version": "1.0.0", "private": true, "scripts": {"start": start}})
        .to_string()
}

fn hello_repo(git: &GitServer) -> String {
    git.repo(
        "hello",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", HELLO_JS),
        ],
    )
}

/// A default stack on `backend`, a git server for the job repositories, and a token of
/// `myuser`; `None` when the stack is skipped (no servers).
async fn start(backend: Backend) -> Option<(Stack, GitServer, String)> {
    start_with(StackOptions {
        backend,
        ..StackOptions::default()
    })
    .await
}

/// [`start`] with other options.
async fn start_with(options: StackOptions) -> Option<(Stack, GitServer, String)> {
    let stack = Stack::start(options).await?;
    let git = GitServer::start();
    let token = stack.token("myuser", "1234").await;
    Some((stack, git, token))
}

async fn download(stack: &Stack, token: &str, id: &str, file: &str) -> reqwest::Response {
    stack.get(token, &format!("/api/results/{id}/{file}")).await
}

async fn a_job_runs_with_args_and_config_and_its_outputs_download(backend: Backend) {
    let Some((stack, git, token)) = start(backend).await else {
        return;
    };
    let id = stack
        .submit(&token, json!({"url": hello_repo(&git), "args": "first 'second word'", "config": "{\"k\": 42}"}))
        .await;
    let job = stack
        .wait_for(&token, &id, None, Duration::from_secs(90))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["exitCode"], 0);
    assert_eq!(job["attempt"], 1);
    let mut files: Vec<String> = job["outputFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["env.json", "nested/a/b/c.txt", "result.json", "ünïcödé.txt"]
    );

    // The original status route has the original shape.
    let original: Value = stack
        .get(&token, &format!("/api/status/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(original["id"], id.as_str());
    assert_eq!(original["status"], "finished");
    assert!(original["outputFiles"].is_array());

    let result: Value = download(&stack, &token, &id, "result.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(result["argv"], json!(["first", "second word"]));
    assert_eq!(result["config"], json!({"k": 42}));
    let nested = download(&stack, &token, &id, "nested/a/b/c.txt").await;
    assert_eq!(nested.status(), 200);
    assert!(
        nested.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("c.txt")
    );
    assert_eq!(nested.text().await.unwrap(), "deep");
    let unicode = download(&stack, &token, &id, "%C3%BCn%C3%AFc%C3%B6d%C3%A9.txt").await;
    assert_eq!(unicode.text().await.unwrap(), "unicode");
    let logs: Value = stack
        .get(&token, &format!("/api/v1/jobs/{id}/logs"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        logs["stdout"].as_str().unwrap().contains("hello stdout"),
        "{logs}"
    );
    assert!(
        logs["stderr"].as_str().unwrap().contains("hello stderr"),
        "{logs}"
    );

    // The job saw none of the worker's settings or secrets.
    let env: HashMap<String, String> = download(&stack, &token, &id, "env.json")
        .await
        .json()
        .await
        .unwrap();
    for (key, value) in &env {
        assert!(!key.starts_with("JOBQ_"), "job saw {key}");
        assert!(!key.starts_with("AWS_"), "job saw {key}");
        for (worker_key, worker_value) in &stack.env {
            if worker_value.len() >= 6
                && (worker_key.contains("SECRET") || worker_key.contains("KEY"))
            {
                assert!(
                    !value.contains(worker_value.as_str()),
                    "job saw the value of {worker_key} in {key}"
                );
            }
        }
    }
}

async fn hostile_args_arrive_verbatim_and_nothing_is_executed(backend: Backend) {
    let Some((stack, git, token)) = start(backend).await else {
        return;
    };
    let marker = std::env::temp_dir().join(format!("jobq-pwned-{}", uuid::Uuid::new_v4()));
    let m = marker.display();
    let args = format!(
        r#"'$(touch {m})' "; touch {m};" '`touch {m}`' '&& touch {m}' '| tee {m}' "it's" $HOME"#
    );
    let id = stack
        .submit(&token, json!({"url": hello_repo(&git), "args": args}))
        .await;
    let job = stack
        .wait_for(&token, &id, None, Duration::from_secs(90))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let result: Value = download(&stack, &token, &id, "result.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        result["argv"],
        json!([
            format!("$(touch {m})"),
            format!("; touch {m};"),
            format!("`touch {m}`"),
            format!("&& touch {m}"),
            format!("| tee {m}"),
            "it's",
            "$HOME"
        ])
    );
    assert!(!marker.exists(), "a shell ran the args");
}

async fn failing_jobs_say_why(backend: Backend) {
    let Some((stack, git, token)) = start(backend).await else {
        return;
    };
    let exit3 = git.repo(
        "exit3",
        &[
            ("package.json", &package("node index.js")),
            (
                "index.js",
                "console.error('boom on stderr'); process.exit(3);",
            ),
        ],
    );
    let no_package = git.repo("nopkg", &[("README.md", "no package.json here")]);
    let no_start = git.repo(
        "nostart",
        &[("package.json", r#"{"name":"x","scripts":{"test":"true"}}"#)],
    );
    let unreachable = "git://127.0.0.1:1/nothing".to_string();

    let ids = [
        stack.submit(&token, json!({"url": exit3})).await,
        stack.submit(&token, json!({"url": no_package})).await,
        stack.submit(&token, json!({"url": no_start})).await,
        stack.submit(&token, json!({"url": unreachable})).await,
    ];
    let mut reasons = Vec::new();
    for id in &ids {
        let job = stack
            .wait_for(&token, id, None, Duration::from_secs(90))
            .await;
        assert_eq!(job["status"], "failed", "{job}");
        reasons.push(job["failure"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(reasons[0], "exit code 3");
    assert_eq!(reasons[1], "no package.json");
    assert_eq!(reasons[2], "no start script in package.json");
    assert!(reasons[3].starts_with("clone failed"), "{}", reasons[3]);
    let job = stack.job(&token, &ids[0]).await;
    assert_eq!(job["exitCode"], 3);
    let logs: Value = stack
        .get(&token, &format!("/api/v1/jobs/{}/logs", ids[0]))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        logs["stderr"].as_str().unwrap().contains("boom on stderr"),
        "{logs}"
    );
}

async fn a_20_mb_output_file_round_trips_intact(backend: Backend) {
    let Some((stack, git, token)) = start(backend).await else {
        return;
    };
    let js = r#"
const fs = require('fs');
const b = Buffer.alloc(20 * 1024 * 1024);
for (let i = 0; i < b.length; i++) b[i] = (i * 7 + (i >> 11)) & 255;
fs.writeFileSync('output/big.bin', b);
"#;
    let url = git.repo(
        "big",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", js),
        ],
    );
    let id = stack.submit(&token, json!({"url": url})).await;
    let job = stack
        .wait_for(&token, &id, None, Duration::from_secs(120))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let r = download(&stack, &token, &id, "big.bin").await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 20 * 1024 * 1024);
    let expected: Vec<u8> = (0..body.len())
        .map(|i| ((i * 7 + (i >> 11)) & 255) as u8)
        .collect();
    assert!(body[..] == expected[..], "20 MB output changed on the way");
}

/// A job that starts a grandchild (`sleep`) and reports both pids in `output/pids` and,
/// when the config names one, in a file outside (so the test can see it while it runs).
fn sleeper_repo(git: &GitServer, name: &str) -> String {
    let js = r#"
const fs = require('fs');
const { spawn } = require('child_process');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8') || '{}');
const child = spawn('sleep', ['300'], { stdio: 'ignore' });
const line = `${process.pid} ${child.pid}\n`;
if (config.pidfile) fs.writeFileSync(config.pidfile, line);
if (config.log) fs.appendFileSync(config.log, `start ${Date.now()}\n`);
setTimeout(() => {
  if (config.log) fs.appendFileSync(config.log, `end ${Date.now()}\n`);
  child.kill();
  process.exit(0);
}, (config.seconds || 300) * 1000);
"#;
    git.repo(
        name,
        &[
            ("package.json", &package("node index.js")),
            ("index.js", js),
        ],
    )
}

fn alive(pid: u32) -> bool {
    // A zombie is as good as gone: it runs nothing and holds nothing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

async fn wait_file(path: &std::path::Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} not written in {within:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cancel_stops_a_running_job_and_its_whole_process_group_within_5_seconds(backend: Backend) {
    let Some((stack, git, token)) = start(backend).await else {
        return;
    };
    let pidfile = stack.shared.join("pids");
    let config = json!({"pidfile": pidfile}).to_string();
    let id = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "sleeper"), "config": config}),
        )
        .await;
    let pids: Vec<u32> = wait_file(&pidfile, Duration::from_secs(60))
        .await
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.iter().all(|p| alive(*p)));
    let cancelled_at = Instant::now();
    let r = stack.get(&token, &format!("/api/deleteJob/{id}")).await;
    assert_eq!(r.status(), 200);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(5),
            "job processes alive 5 s after cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.job(&token, &id).await["status"], "cancelled");
}

async fn a_cancelled_queued_job_never_starts(backend: Backend) {
    let options = StackOptions {
        backend,
        workers: 0,
        ..StackOptions::default()
    };
    let Some((mut stack, git, token)) = start_with(options).await else {
        return;
    };
    let pidfile = stack.shared.join("never");
    let config = json!({"pidfile": pidfile}).to_string();
    let cancelled = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "sleeper"), "config": config}),
        )
        .await;
    let r = stack
        .get(&token, &format!("/api/deleteJob/{cancelled}"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(stack.job(&token, &cancelled).await["status"], "cancelled");
    // A worker arrives and drains the queue: a later job runs, the cancelled one never does.
    let later = stack.submit(&token, json!({"url": hello_repo(&git)})).await;
    stack.add_worker().await;
    let job = stack
        .wait_for(&token, &later, None, Duration::from_secs(90))
        .await;
    assert_eq!(job["status"], "finished");
    assert!(!pidfile.exists(), "the cancelled job started");
    assert_eq!(stack.job(&token, &cancelled).await["status"], "cancelled");
}

async fn a_job_over_its_time_limit_fails_with_timeout(backend: Backend) {
    let options = StackOptions {
        backend,
        job_timeout_secs: 3,
        ..StackOptions::default()
    };
    let Some((stack, git, token)) = start_with(options).await else {
        return;
    };
    let pidfile = stack.shared.join("pids");
    let config = json!({"pidfile": pidfile}).to_string();
    let id = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "sleeper"), "config": config}),
        )
        .await;
    let job = stack
        .wait_for(&token, &id, None, Duration::from_secs(60))
        .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["failure"].as_str().unwrap().contains("timeout"),
        "{job}"
    );
    let pids = std::fs::read_to_string(&pidfile).unwrap();
    for pid in pids.split_whitespace() {
        assert!(
            !alive(pid.parse().unwrap()),
            "process {pid} outlived the time limit"
        );
    }
}

async fn users_see_only_their_own_jobs_and_admins_see_all(backend: Backend) {
    let Some(stack) = Stack::start(StackOptions {
        backend,
        ..StackOptions::default()
    })
    .await
    else {
        return;
    };
    let git = GitServer::start();
    let mine = stack.token("myuser", "1234").await;
    let other = stack.token("otheruser", "abcd").await;
    let admin = stack.token("admin", "admin").await;
    let id = stack.submit(&mine, json!({"url": hello_repo(&git)})).await;
    stack
        .wait_for(&mine, &id, None, Duration::from_secs(90))
        .await;
    for path in [
        format!("/api/status/{id}"),
        format!("/api/v1/jobs/{id}"),
        format!("/api/results/{id}/result.json"),
        format!("/api/v1/jobs/{id}/logs"),
        format!("/api/deleteJob/{id}"),
    ] {
        let r = stack.get(&other, &path).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let listed: Value = stack.get(&other, "/api/status").await.json().await.unwrap();
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    let listed: Value = stack.get(&mine, "/api/status").await.json().await.unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    assert_eq!(
        stack
            .get(&admin, &format!("/api/status/{id}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        download(&stack, &admin, &id, "result.json").await.status(),
        200
    );
}

async fn bad_tokens_get_401(backend: Backend) {
    let Some(stack) = Stack::start(StackOptions {
        backend,
        ..StackOptions::default()
    })
    .await
    else {
        return;
    };
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let real = stack.token("myuser", "1234").await;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(real.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );

    let (wrong_issuer, expired) = stack.foreign_tokens().await;

    for (name, token) in [
        ("alg=none", none.as_str()),
        ("wrong issuer", wrong_issuer.as_str()),
        ("expired", expired.as_str()),
        ("garbage", "not-a-token"),
    ] {
        let r = stack.get(token, "/api/status").await;
        assert_eq!(r.status(), 401, "{name}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{name}: {body}");
    }
    let r = stack
        .http
        .get(format!("{}/api/status", stack.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no token");
    let r = stack
        .http
        .get(format!("{}/auth/myuser/wrong", stack.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "wrong password");
}

async fn a_job_whose_worker_is_killed_runs_again_and_never_twice_at_once(backend: Backend) {
    let options = StackOptions {
        backend,
        workers: 1,
        slots: 1,
        lease_secs: 3,
        ..StackOptions::default()
    };
    let Some((mut stack, git, token)) = start_with(options).await else {
        return;
    };
    let log = stack.shared.join("runs.log");
    let pidfile = stack.shared.join("pids");
    let config = json!({"log": log, "pidfile": pidfile, "seconds": 4}).to_string();
    let id = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "slow"), "config": config}),
        )
        .await;
    let first: Vec<u32> = wait_file(&pidfile, Duration::from_secs(60))
        .await
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    stack.kill_worker(0);
    // The first attempt's processes die with their worker.
    let killed_at = Instant::now();
    while first.iter().any(|p| alive(*p)) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "the job outlived its SIGKILLed worker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.add_worker().await;
    let job = stack
        .wait_for(&token, &id, Some("finished"), Duration::from_secs(90))
        .await;
    assert_eq!(job["attempt"], 2, "{job}");
    let runs = std::fs::read_to_string(&log).unwrap();
    let starts: Vec<u64> = runs
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .map(|t| t.parse().unwrap())
        .collect();
    let ends: Vec<u64> = runs
        .lines()
        .filter_map(|l| l.strip_prefix("end "))
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 2, "{runs}");
    assert_eq!(ends.len(), 1, "only the second attempt ends: {runs}");
    assert!(starts[1] > starts[0] && ends[0] > starts[1], "{runs}");
}

async fn two_workers_finish_40_jobs_exactly_once_each(backend: Backend) {
    let options = StackOptions {
        backend,
        workers: 2,
        slots: 2,
        ..StackOptions::default()
    };
    let Some((stack, git, token)) = start_with(options).await else {
        return;
    };
    let log = stack.shared.join("runs.log");
    let js = r#"
const fs = require('fs');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8'));
fs.appendFileSync(config.log, `${config.n}\n`);
fs.writeFileSync('output/n.txt', String(config.n));
"#;
    let url = git.repo(
        "count",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", js),
        ],
    );
    let mut ids = Vec::new();
    for n in 0..40 {
        let config = json!({"log": log, "n": n}).to_string();
        ids.push(
            stack
                .submit(&token, json!({"url": url, "config": config}))
                .await,
        );
    }
    for id in &ids {
        let job = stack
            .wait_for(&token, id, None, Duration::from_secs(240))
            .await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["attempt"], 1);
    }
    let mut runs: Vec<u32> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    runs.sort();
    assert_eq!(
        runs,
        (0..40).collect::<Vec<_>>(),
        "every job ran exactly once"
    );
}

async fn a_running_job_shows_its_logs_so_far(backend: Backend) {
    let Some((stack, git, token)) = start(backend).await else {
        return;
    };
    let js = "console.log('first line of a long job'); setTimeout(() => {}, 300000);";
    let url = git.repo(
        "talker",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", js),
        ],
    );
    let id = stack.submit(&token, json!({"url": url})).await;
    stack
        .wait_for(&token, &id, Some("running"), Duration::from_secs(60))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let logs: Value = stack
            .get(&token, &format!("/api/v1/jobs/{id}/logs"))
            .await
            .json()
            .await
            .unwrap();
        if logs["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("first line of a long job")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a running job's output did not show within 15 s: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(stack.job(&token, &id).await["status"], "running");
    assert_eq!(
        stack
            .get(&token, &format!("/api/deleteJob/{id}"))
            .await
            .status(),
        200
    );
}

async fn a_job_writes_only_inside_its_own_folder(backend: Backend) {
    let Some((stack, git, token)) = start(backend).await else {
        return;
    };
    let outside = std::env::temp_dir().join(format!("jobq-escape-{}", uuid::Uuid::new_v4()));
    let js = r#"
const fs = require('fs');
const path = require('path');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8'));
const attempt = (p) => { try { fs.writeFileSync(p, 'x'); return 'written'; } catch (e) { return e.code; } };
const result = {
  outside: attempt(config.outside),
  cache: attempt(path.join('..', '..', '..', 'repo-cache', 'planted')),
  home: attempt(path.join(process.env.HOME, 'note')),
  tmp: attempt(path.join(process.env.TMPDIR, 'note')),
};
fs.writeFileSync('output/result.json', JSON.stringify(result));
"#;
    let url = git.repo(
        "escape",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", js),
        ],
    );
    let config = json!({"outside": outside}).to_string();
    let id = stack
        .submit(&token, json!({"url": url, "config": config}))
        .await;
    let job = stack
        .wait_for(&token, &id, None, Duration::from_secs(90))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let result: Value = download(&stack, &token, &id, "result.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(result["outside"], "EACCES", "{result}");
    assert_ne!(result["cache"], "written", "{result}");
    assert_eq!(result["home"], "written", "{result}");
    assert_eq!(result["tmp"], "written", "{result}");
    assert!(!outside.exists(), "the job wrote outside its folder");
}

async fn a_worker_stopped_with_sigterm_hands_its_job_back(backend: Backend) {
    // The stack's grace period is 5 s; the job needs 12.
    let options = StackOptions {
        backend,
        workers: 1,
        slots: 1,
        ..StackOptions::default()
    };
    let Some((mut stack, git, token)) = start_with(options).await else {
        return;
    };
    let log = stack.shared.join("runs.log");
    let config = json!({"log": log, "seconds": 12}).to_string();
    let id = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "long"), "config": config}),
        )
        .await;
    stack
        .wait_for(&token, &id, Some("running"), Duration::from_secs(60))
        .await;
    let stopped_at = Instant::now();
    stack.stop_worker(0);
    assert!(
        stopped_at.elapsed() < Duration::from_secs(12),
        "the worker waited for the job instead of handing it back"
    );
    stack.add_worker().await;
    let job = stack
        .wait_for(&token, &id, Some("finished"), Duration::from_secs(90))
        .await;
    assert_eq!(job["attempt"], 2, "{job}");
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        runs.lines().filter(|l| l.starts_with("start")).count(),
        2,
        "{runs}"
    );
    assert_eq!(
        runs.lines().filter(|l| l.starts_with("end")).count(),
        1,
        "{runs}"
    );
}

/// Runs a scenario against both backends, as `<scenario>::services` and `<scenario>::standalone`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test]
            async fn services() {
                super::$scenario(Backend::Services).await
            }

            #[tokio::test]
            async fn standalone() {
                super::$scenario(Backend::Standalone).await
            }
        }
    )*};
}

on_both_backends!(
    a_worker_stopped_with_sigterm_hands_its_job_back,
    a_job_writes_only_inside_its_own_folder,
    a_running_job_shows_its_logs_so_far,
    a_job_runs_with_args_and_config_and_its_outputs_download,
    hostile_args_arrive_verbatim_and_nothing_is_executed,
    failing_jobs_say_why,
    a_20_mb_output_file_round_trips_intact,
    cancel_stops_a_running_job_and_its_whole_process_group_within_5_seconds,
    a_cancelled_queued_job_never_starts,
    a_job_over_its_time_limit_fails_with_timeout,
    users_see_only_their_own_jobs_and_admins_see_all,
    bad_tokens_get_401,
    a_job_whose_worker_is_killed_runs_again_and_never_twice_at_once,
    two_workers_finish_40_jobs_exactly_once_each,
);
