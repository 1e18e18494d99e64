//! The job pipeline end to end, once per backend: the real frontend, workers and observer
//! against real Kafka, MongoDB-wire, S3 and Keycloak servers, and `jobq standalone` on its
//! embedded backends — the same scenarios, routes and assertions. Job repositories are
//! served by `git daemon`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jobq_tests::package;
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

/// A job that, asked to, rewrites every file of its checkout it can (the git objects
/// included), and otherwise reports what its checkout holds.
const TAMPER_JS: &str = r#"
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
fs.mkdirSync('output', { recursive: true });
if (process.argv[2] === 'tamper') {
  const changed = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) { walk(p); continue; }
      if (!e.isFile()) continue;
      try { fs.chmodSync(p, 0o666); } catch (_) {}
      try { fs.appendFileSync(p, 'tampered'); changed.push(p); } catch (_) {}
    }
  };
  walk('.');
  fs.writeFileSync('output/changed.txt', changed.join('\n'));
} else {
  const run = (args) => { try { return execFileSync('git', args, { encoding: 'utf8' }); } catch (e) { return 'FAILED ' + e.message; } };
  fs.writeFileSync('output/seen.json', JSON.stringify({
    index: fs.readFileSync('index.js', 'utf8').endsWith('tampered'),
    status: run(['status', '--porcelain', '--untracked-files=no']),
    fsck: run(['fsck', '--strict']),
  }));
}
"#;

async fn a_job_that_rewrites_its_checkout_changes_nothing_the_next_job_of_its_repository_gets(
    backend: Backend,
) {
    let Some((stack, git, token)) = start(backend).await else {
        return;
    };
    let url = git.repo(
        "tamper",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", TAMPER_JS),
        ],
    );
    let tamper = stack
        .submit(&token, json!({"url": url, "args": "tamper"}))
        .await;
    let job = stack
        .wait_for(&token, &tamper, None, Duration::from_secs(90))
        .await;
    let logs = stack
        .get(&token, &format!("/api/v1/jobs/{tamper}/logs"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(job["status"], "finished", "{job} {logs}");
    let changed = download(&stack, &token, &tamper, "changed.txt")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        changed.contains("index.js"),
        "the job could not even write its own files: {changed}"
    );
    // The same repository at the same commit, after the first job changed what it could.
    let next = stack.submit(&token, json!({"url": url})).await;
    let job = stack
        .wait_for(&token, &next, None, Duration::from_secs(90))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let seen: Value = download(&stack, &token, &next, "seen.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["index"], false, "{seen}");
    assert_eq!(seen["status"], "", "{seen}");
    assert!(!seen["fsck"].as_str().unwrap().contains("FAILED"), "{seen}");
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

/// A job that starts a child and a detached grandchild, both holding the job's first
/// argument (a marker) in their command lines so the test can find them from outside the
/// job's PID namespace, and writes `started` to the config's `pidfile` once they run.
fn sleeper_repo(git: &GitServer, name: &str) -> String {
    let js = r#"
const fs = require('fs');
const { spawn } = require('child_process');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8') || '{}');
const hold = ['-e', 'setTimeout(() => {}, 300000)', process.argv[2] || 'no-marker'];
const child = spawn(process.execPath, hold, { stdio: 'ignore' });
const detached = spawn(process.execPath, hold, { stdio: 'ignore', detached: true });
detached.unref();
if (config.log) fs.appendFileSync(config.log, `start ${Date.now()}\n`);
setTimeout(() => {
  if (config.pidfile) fs.writeFileSync(config.pidfile, 'started\n');
}, 300);
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

/// A unique word for a job's command lines.
fn marker() -> String {
    format!("jobq-marker-{}", uuid::Uuid::new_v4().simple())
}

/// Host pids of the live processes whose command line holds `marker`: a job's processes
/// (its shim, sandbox and command), seen from outside its namespaces.
fn processes_with(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|line| line.windows(marker.len()).any(|w| w == marker.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Waits until no process holds `marker`, failing after `within`.
async fn all_gone(marker: &str, within: Duration, what: &str) {
    let since = Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            since.elapsed() < within,
            "{what}: {left:?} alive after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let mark = marker();
    let id = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "sleeper"), "config": config, "args": mark}),
        )
        .await;
    wait_file(&pidfile, Duration::from_secs(60)).await;
    // npm, its shell, node, the child and the detached grandchild (and the sandbox).
    assert!(
        processes_with(&mark).len() >= 5,
        "{:?}",
        processes_with(&mark)
    );
    let r = stack.get(&token, &format!("/api/deleteJob/{id}")).await;
    assert_eq!(r.status(), 200);
    all_gone(&mark, Duration::from_secs(5), "after cancel").await;
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
    // A worker arrives and drains the queue: a later job runs, the cancelled one never does,
    // neither through its dispatch message nor through a free slot's look in the store (the
    // cancelled job is older than the threshold by then, the later one is too).
    let later = stack.submit(&token, json!({"url": hello_repo(&git)})).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
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
    let mark = marker();
    let id = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "sleeper"), "config": config, "args": mark}),
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
    assert!(pidfile.exists(), "the job never started its children");
    all_gone(
        &mark,
        Duration::from_secs(1),
        "processes outlived the time limit",
    )
    .await;
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
    let log = stack.shared_file("runs.log");
    let pidfile = stack.shared.join("pids");
    let config = json!({"log": log, "pidfile": pidfile, "seconds": 4}).to_string();
    let mark = marker();
    let id = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "slow"), "config": config, "args": mark}),
        )
        .await;
    wait_file(&pidfile, Duration::from_secs(60)).await;
    assert!(!processes_with(&mark).is_empty());
    stack.kill_worker(0);
    // The first attempt's processes die with their worker, the detached one included.
    all_gone(
        &mark,
        Duration::from_secs(5),
        "the job outlived its SIGKILLed worker",
    )
    .await;
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
    let log = stack.shared_file("runs.log");
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

/// A job that tries, as an attacker would, to read, write, signal and exhaust what is not
/// its own; `config.mode` picks the attack.
const HOSTILE_JS: &str = r#"
const fs = require('fs');
const path = require('path');
const cp = require('child_process');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8'));
const tryIt = (f) => { try { return f(); } catch (e) { return 'ERR ' + (e.code || e.message); } };
const write = (p) => tryIt(() => { fs.writeFileSync(p, 'planted'); return 'written'; });
const hold = (extra) => cp.spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300000)', config.marker],
  Object.assign({ stdio: 'ignore' }, extra));
if (config.mode === 'probe') {
  const r = { uid: process.getuid(), gid: process.getgid(), environ: {}, platform: {}, found: [] };
  for (const pid of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    r.environ[pid] = tryIt(() => fs.readFileSync(`/proc/${pid}/environ`, 'utf8'));
  }
  r.rootOnly = tryIt(() => fs.readFileSync(config.rootOnly, 'utf8'));
  r.shadow = tryIt(() => fs.readFileSync('/etc/shadow', 'utf8'));
  r.localtime = tryIt(() => fs.readlinkSync('/etc/localtime'));
  r.timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (const [name, p] of Object.entries(config.platform)) r.platform[name] = tryIt(() => fs.readdirSync(p));
  // Everything visible but the toolchain, the kernel's files and its own folder (its config
  // names the credential to look for): any platform file, or the other user's credential.
  const walk = (dir) => {
    for (const name of tryIt(() => fs.readdirSync(dir)) || []) {
      const p = path.join(dir, name);
      if (['/proc', '/sys', '/usr', '/dev'].includes(p)) continue;
      const st = tryIt(() => fs.lstatSync(p));
      if (typeof st === 'string') continue;
      if (/token-key|\.sqlite|\.p8$|repo-cache|artifacts|jobq-data|shadow/.test(name) && !p.startsWith('/job/')) r.found.push(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size < (1 << 20) && !p.startsWith('/job/')) {
        const text = tryIt(() => fs.readFileSync(p, 'latin1'));
        if (text.includes(config.credential)) r.found.push(p + ' (credential)');
      }
    }
  };
  walk('/');
  r.writes = {
    tmp: write('/tmp/' + config.marker),
    varTmp: write('/var/tmp/' + config.marker),
    shm: write('/dev/shm/' + config.marker),
    otherJob: write(path.join(config.otherJob, 'planted')),
    usr: write('/usr/planted-' + config.marker),
    etc: write('/etc/planted-' + config.marker),
  };
  r.signalled = tryIt(() => { process.kill(1, 'SIGKILL'); return 'sent'; });
  hold({ detached: true }).unref();
  tryIt(() => cp.spawn('setsid', [process.execPath, '-e', 'setTimeout(() => {}, 300000)', config.marker], { stdio: 'ignore', detached: true }).unref());
  fs.writeFileSync('output/probe.json', JSON.stringify(r));
  setTimeout(() => process.exit(0), 500);
} else if (config.mode === 'fork') {
  const kids = [];
  for (let i = 0; i < 1000; i++) {
    const kid = cp.spawn('sleep', ['60'], { stdio: 'ignore' });
    kid.on('error', () => {});
    kids.push(kid);
  }
  setTimeout(() => {}, 60000);
} else if (config.mode === 'memory') {
  const kept = [];
  for (let i = 0; i < 96; i++) kept.push(Buffer.alloc(64 << 20, 1));
  console.log('allocated 6 GiB');
  setTimeout(() => {}, 60000);
} else if (config.mode === 'output') {
  const chunk = Buffer.alloc(8 << 20, 120);
  for (let f = 0; f < 48; f++) {
    const fd = fs.openSync(`output/big-${f}.bin`, 'w');
    for (let i = 0; i < 8; i++) tryIt(() => fs.writeSync(fd, chunk));
    fs.closeSync(fd);
  }
  console.log('wrote 3 GiB');
  setTimeout(() => {}, 60000);
}
"#;

/// Every item of the sandbox promise, tried by a hostile job: it sees none of the platform
/// (other processes' environments, host files, the data and work folders, another user's
/// credential, other jobs' folders), writes nothing outside, leaves no process behind, and
/// each of memory, processes and output ends it with the limit named; ordinary jobs and
/// every route carry on.
async fn a_hostile_job_sees_nothing_of_the_platform_and_hits_every_limit(backend: Backend) {
    let options = StackOptions {
        backend,
        slots: 2,
        extra_env: [
            ("JOBQ_WORKER__MEMORY_LIMIT_MB", "256"),
            ("JOBQ_WORKER__MAX_PROCESSES", "64"),
            ("JOBQ_WORKER__MAX_OUTPUT_MB", "64"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
        ..StackOptions::default()
    };
    let Some((stack, git, token)) = start_with(options).await else {
        return;
    };
    let hostile = git.repo(
        "hostile",
        &[
            ("package.json", &package("node index.js")),
            ("index.js", HOSTILE_JS),
        ],
    );
    // Another user's job, cloned with a credential in its URL, running while the probe does.
    let other = stack.token("otheruser", "abcd").await;
    let credential = format!("tok{}", uuid::Uuid::new_v4().simple());
    let sleeper = sleeper_repo(&git, "other");
    let with_credential = sleeper.replacen("git://", &format!("git://otheruser:{credential}@"), 1);
    let other_pidfile = stack.shared.join("other-started");
    let other_id = stack
        .submit(
            &other,
            json!({"url": with_credential, "config": json!({"pidfile": other_pidfile}).to_string()}),
        )
        .await;
    wait_file(&other_pidfile, Duration::from_secs(60)).await;
    let work = stack.dir.join("work");
    let other_folder = find_dir(&work, &format!("{other_id}-1")).expect("the other job's folder");
    // A root-only host file and the platform's folders, named to the job.
    let root_only = stack.dir.join("root-only.txt");
    std::fs::write(&root_only, "host secret").unwrap();
    std::fs::set_permissions(
        &root_only,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mark = marker();
    let config = json!({
        "mode": "probe",
        "marker": mark,
        "credential": credential,
        "rootOnly": root_only,
        "otherJob": other_folder.join("repo"),
        "platform": {"work": work, "data": stack.dir.join("data"), "otherJob": other_folder},
    });
    let id = stack
        .submit(
            &token,
            json!({"url": hostile, "config": config.to_string()}),
        )
        .await;
    let job = stack
        .wait_for(&token, &id, None, Duration::from_secs(90))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    let probe: Value = download(&stack, &token, &id, "probe.json")
        .await
        .json()
        .await
        .unwrap();

    assert_ne!(probe["uid"], 0, "the job ran as root: {probe}");
    let secrets: Vec<&String> = stack
        .env
        .iter()
        .filter(|(k, v)| {
            v.len() >= 6 && (k.contains("SECRET") || k.contains("KEY") || k.contains("URI"))
        })
        .map(|(_, v)| v)
        .collect();
    for (pid, environ) in probe["environ"].as_object().unwrap() {
        let environ = environ.as_str().unwrap();
        assert!(
            !environ.contains("JOBQ_"),
            "the job read the environment of {pid}: {environ}"
        );
        for secret in &secrets {
            assert!(
                !environ.contains(secret.as_str()),
                "the job read a secret from {pid}"
            );
        }
    }
    assert!(
        probe["rootOnly"].as_str().unwrap().starts_with("ERR"),
        "{probe}"
    );
    assert!(
        probe["shadow"].as_str().unwrap().starts_with("ERR"),
        "{probe}"
    );
    // The host's time zone, named as on the host: /etc/localtime stays a link into /usr
    // (a copy of the zone file made every Node.js process search /usr/share/zoneinfo).
    let host_zone = std::process::Command::new("node")
        .args([
            "-e",
            "console.log(Intl.DateTimeFormat().resolvedOptions().timeZone)",
        ])
        .output()
        .expect("node on the host");
    assert_eq!(
        probe["timeZone"].as_str(),
        Some(String::from_utf8_lossy(&host_zone.stdout).trim()),
        "{probe}"
    );
    if let Ok(target) = std::fs::read_link("/etc/localtime")
        && let Ok(real) = std::fs::canonicalize(&target)
        && real.starts_with("/usr/")
    {
        assert_eq!(probe["localtime"].as_str(), real.to_str(), "{probe}");
    }
    for (name, seen) in probe["platform"].as_object().unwrap() {
        assert!(
            seen.as_str().is_some_and(|s| s.starts_with("ERR")),
            "the job saw {name}: {seen}"
        );
    }
    assert_eq!(
        probe["found"],
        json!([]),
        "platform files or the credential were visible"
    );
    let writes = &probe["writes"];
    for private in ["tmp", "varTmp", "shm"] {
        assert_eq!(
            writes[private], "written",
            "its own {private} must work: {writes}"
        );
    }
    for outside in ["otherJob", "usr", "etc"] {
        assert!(
            writes[outside].as_str().unwrap().starts_with("ERR"),
            "{outside}: {writes}"
        );
    }
    // Its private folders were its own; nothing arrived on the host or in the other job.
    assert!(!std::path::Path::new("/tmp").join(&mark).exists());
    assert!(!std::path::Path::new("/var/tmp").join(&mark).exists());
    assert!(!std::path::Path::new("/dev/shm").join(&mark).exists());
    assert!(!other_folder.join("repo/planted").exists());
    // Its detached and setsid children died with it.
    all_gone(
        &mark,
        Duration::from_secs(5),
        "processes outlived their job",
    )
    .await;
    // The credential rests nowhere on the worker's disk either (but in the probe's own
    // config, which names it, until its folder is removed).
    let found: Vec<String> = files_containing(&work, credential.as_bytes())
        .into_iter()
        .filter(|f| !f.contains(id.as_str()))
        .collect();
    assert_eq!(found, Vec::<String>::new());
    stack
        .get(&other, &format!("/api/deleteJob/{other_id}"))
        .await;

    for (mode, reason) in [
        ("fork", "process limit of 64 exceeded"),
        ("memory", "memory limit of 256 MiB exceeded"),
        ("output", "output limit of 64 MiB exceeded"),
    ] {
        let config = json!({"mode": mode, "marker": mark}).to_string();
        let id = stack
            .submit(&token, json!({"url": hostile, "config": config}))
            .await;
        let job = stack
            .wait_for(&token, &id, None, Duration::from_secs(120))
            .await;
        assert_eq!(job["status"], "failed", "{mode}: {job}");
        assert_eq!(job["failure"], reason, "{mode}: {job}");
        assert_eq!(
            job["outputFiles"],
            json!([]),
            "over-limit output was kept: {job}"
        );
        all_gone(&mark, Duration::from_secs(5), mode).await;
        if mode == "output" {
            assert_eq!(
                download(&stack, &token, &id, "big-0.bin").await.status(),
                404
            );
        }
    }

    // The worker and the service carry on.
    let id = stack.submit(&token, json!({"url": hello_repo(&git)})).await;
    let job = stack
        .wait_for(&token, &id, None, Duration::from_secs(90))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    for route in ["/api/status", "/api/v1/jobs", "/health/", "/health/load"] {
        assert_eq!(stack.get(&token, route).await.status(), 200, "{route}");
    }
}

/// The first folder named `name` below `root`.
fn find_dir(root: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_dir() && e.file_name() == name)
        .map(|e| e.into_path())
}

/// Files below `root` whose bytes contain `needle`.
fn files_containing(root: &std::path::Path, needle: &[u8]) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        })
        .map(|e| e.path().display().to_string())
        .collect()
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
    let log = stack.shared_file("runs.log");
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

/// Milliseconds from a job's creation to its start, from its view.
fn wait_ms(job: &Value) -> i64 {
    let at = |k: &str| {
        time::OffsetDateTime::parse(
            job[k].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    (at("startedAt") - at("createdAt")).whole_milliseconds() as i64
}

async fn short_jobs_never_wait_behind_a_long_one_while_a_slot_is_free(backend: Backend) {
    // Two single-slot workers: one long job occupies one of them; short jobs then arrive
    // one at a time. In Kafka mode about half of their messages land on the busy worker's
    // partitions, yet the free worker must start every one of them.
    let options = StackOptions {
        backend,
        workers: 2,
        slots: 1,
        ..StackOptions::default()
    };
    let Some((stack, git, token)) = start_with(options).await else {
        return;
    };
    let pidfile = stack.shared.join("long-started");
    let long = stack
        .submit(
            &token,
            json!({"url": sleeper_repo(&git, "long"), "config": json!({"pidfile": pidfile, "seconds": 25}).to_string()}),
        )
        .await;
    wait_file(&pidfile, Duration::from_secs(60)).await;
    let url = git.repo(
        "short",
        &[(
            "package.json",
            &package("node -e \"setTimeout(() => {}, 300)\""),
        )],
    );
    for _ in 0..8 {
        let id = stack.submit(&token, json!({"url": url})).await;
        let job = stack
            .wait_for(&token, &id, Some("finished"), Duration::from_secs(60))
            .await;
        assert!(
            wait_ms(&job) < 2000,
            "a short job waited {} ms beside a free slot: {job}",
            wait_ms(&job)
        );
    }
    assert_eq!(stack.job(&token, &long).await["status"], "running");
    stack.get(&token, &format!("/api/deleteJob/{long}")).await;
}

jobq_tests::on_both_backends!(
    a_job_that_rewrites_its_checkout_changes_nothing_the_next_job_of_its_repository_gets,
    short_jobs_never_wait_behind_a_long_one_while_a_slot_is_free,
    a_worker_stopped_with_sigterm_hands_its_job_back,
    a_hostile_job_sees_nothing_of_the_platform_and_hits_every_limit,
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
