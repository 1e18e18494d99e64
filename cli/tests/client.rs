//! The client commands as a user runs them: the real `jobq` binary against an
//! unreachable address and against a small stand-in server that answers like the jobq
//! API (the lead's end-to-end suite drives them against `jobq standalone`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

const JOBQ: &str = env!("CARGO_BIN_EXE_jobq");
const TOKEN: &str = "good-token";

/// Runs `jobq` with a clean environment: its own config folder, no JOBQ_ variables but
/// the given ones, and a services setting that does not parse (client commands must not
/// read it).
async fn jobq(config_home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(JOBQ);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", config_home)
        .env("XDG_CONFIG_HOME", config_home)
        .env("JOBQ_FRONTEND__LISTEN", "not an address")
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().await.expect("run jobq")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn job(id: &str, status: &str, files: &[&str], failure: Option<&str>) -> Value {
    json!({
        "id": id, "owner": "myuser", "status": status, "attempt": 1,
        "createdAt": "2025-03-01T10:20:30Z", "startedAt": null, "finishedAt": null,
        "exitCode": null, "elapsedMs": if status == "running" { Value::Null } else { json!(1200) },
        "outputFiles": files, "failure": failure, "url": "https://example.com/r.git", "args": ""
    })
}

/// How often each job was asked for: a job is `running` the first time, then ends with
/// the status its id names (`finished`, `failed`, `cancelled`).
#[derive(Clone, Default)]
struct Fake {
    polls: Arc<Mutex<HashMap<String, u32>>>,
}

fn authorized(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let expected = format!("Bearer {TOKEN}");
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(value) if value == expected => Ok(()),
        _ => Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "missing or invalid token"})),
            )
                .into_response(),
        )),
    }
}

fn files_of(id: &str) -> Vec<&'static str> {
    match id {
        "finished" => vec!["summary.json", "greetings/Ada.txt"],
        "hostile" => vec!["ok.txt", "../escaped.txt"],
        _ => vec![],
    }
}

fn view(fake: &Fake, id: &str) -> Option<Value> {
    let status = match id {
        "finished" | "failed" | "cancelled" | "hostile" => id,
        _ => return None,
    };
    let mut polls = fake.polls.lock().unwrap();
    let count = polls.entry(id.to_owned()).or_default();
    *count += 1;
    let status = if *count == 1 && id != "hostile" {
        "running"
    } else if id == "hostile" {
        "finished"
    } else {
        status
    };
    let failure = (status == "failed").then_some("exit code 3");
    Some(job(id, status, &files_of(id), failure))
}

async fn fake_server() -> SocketAddr {
    let app = Router::new()
        .route(
            "/auth/token",
            post(|Form(form): Form<HashMap<String, String>>| async move {
                if form.get("username").map(String::as_str) == Some("myuser")
                    && form.get("password").map(String::as_str) == Some("1234")
                {
                    Json(json!({"token": TOKEN, "access_token": TOKEN, "token_type": "Bearer"}))
                        .into_response()
                } else {
                    (StatusCode::UNAUTHORIZED, Json(json!({"error": "wrong user name or password"})))
                        .into_response()
                }
            }),
        )
        .route(
            "/api/v1/jobs",
            post(|headers: HeaderMap, Json(body): Json<Value>| async move {
                if let Err(e) = authorized(&headers) {
                    return *e;
                }
                // The job's id is the last segment of its URL, so a test picks the outcome.
                let url = body["url"].as_str().unwrap_or_default();
                let id = url.rsplit('/').next().unwrap_or_default();
                (StatusCode::CREATED, Json(job(id, "queued", &[], None))).into_response()
            })
            .get(|headers: HeaderMap| async move {
                if let Err(e) = authorized(&headers) {
                    return *e;
                }
                Json(json!({"jobs": [job("finished", "finished", &files_of("finished"), None)],
                            "total": 3, "offset": 0, "limit": 20}))
                .into_response()
            }),
        )
        .route(
            "/api/v1/jobs/{id}",
            get(
                |State(fake): State<Fake>, headers: HeaderMap, UrlPath(id): UrlPath<String>| async move {
                    if let Err(e) = authorized(&headers) {
                        return *e;
                    }
                    match view(&fake, &id) {
                        Some(v) => Json(v).into_response(),
                        None => (StatusCode::NOT_FOUND, Json(json!({"error": "job not found"})))
                            .into_response(),
                    }
                },
            ),
        )
        .route(
            "/api/v1/jobs/{id}/results/{*file}",
            get(
                |headers: HeaderMap, UrlPath((id, file)): UrlPath<(String, String)>| async move {
                    if let Err(e) = authorized(&headers) {
                        return *e;
                    }
                    format!("{id}:{file}").into_response()
                },
            ),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "no such route"}))) })
        .with_state(Fake::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A port nothing listens on: bound, then closed.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_server_gives_a_helpful_error_and_exit_code_3() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", closed_port());
    for args in [
        vec!["status"],
        vec!["status", "some-id"],
        vec!["submit", "https://example.com/r.git"],
        vec!["cancel", "some-id"],
    ] {
        let out = jobq(home.path(), &[("JOBQ_URL", &url)], &args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot reach jobq at {url}")),
            "{stderr}"
        );
        assert!(stderr.contains("jobq standalone"), "{stderr}");
        assert!(stderr.contains("JOBQ_URL"), "{stderr}");
    }
    // The flag wins over the environment.
    let out = jobq(
        home.path(),
        &[("JOBQ_URL", "http://192.0.2.1:1")],
        &["status", "--url", &url],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&url));
}

#[tokio::test]
async fn every_client_command_has_help() {
    let home = tempfile::tempdir().unwrap();
    for command in ["login", "submit", "status", "logs", "results", "cancel"] {
        let out = jobq(home.path(), &[], &[command, "--help"]).await;
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command}: {}",
            text(&out.stderr)
        );
        assert!(stdout.contains("Usage: jobq"), "{command}: {stdout}");
        assert!(stdout.contains("--url"), "{command}: {stdout}");
        assert!(stdout.contains("Exit codes"), "{command}: {stdout}");
    }
    let out = jobq(home.path(), &[], &["submit", "--help"]).await;
    assert!(text(&out.stdout).contains("130"));
}

#[tokio::test]
async fn bad_usage_exits_with_2() {
    let home = tempfile::tempdir().unwrap();
    let out = jobq(home.path(), &[], &["status", "--url", "ftp://x"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = jobq(home.path(), &[], &["login", "--url", "http://127.0.0.1:1"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--user"));
    let out = jobq(home.path(), &[], &["submit"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn login_saves_a_private_token_that_later_commands_use() {
    let addr = fake_server().await;
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}");

    let out = jobq(home.path(), &[], &["status", "--url", &url]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("jobq login"));

    let out = jobq(
        home.path(),
        &[],
        &[
            "login",
            "--url",
            &url,
            "--user",
            "myuser",
            "--password",
            "nope",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("wrong user name or password"));

    let out = jobq(
        home.path(),
        &[],
        &[
            "login",
            "--url",
            &url,
            "--user",
            "myuser",
            "--password",
            "1234",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("logged in as myuser at {url}")
    );
    let saved = home.path().join("jobq/login.json");
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // No flag, no variable: the saved login names the server and the token.
    let out = jobq(home.path(), &[], &["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ID") && stdout.contains("finished"),
        "{stdout}"
    );

    let out = jobq(home.path(), &[], &["status", "--json"]).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["total"], 3);

    let out = jobq(home.path(), &[], &["status", "unknown-job"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no job unknown-job (or it is not yours)"));
}

#[tokio::test]
async fn submit_wait_exits_with_the_jobs_outcome() {
    let addr = fake_server().await;
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("JOBQ_URL", &*format!("http://{addr}")),
        ("JOBQ_TOKEN", TOKEN),
    ];
    for (outcome, code) in [("finished", 0), ("failed", 1), ("cancelled", 130)] {
        let repo = format!("https://example.com/{outcome}");
        let out = jobq(
            home.path(),
            &env,
            &["submit", &repo, "--args", "a b", "--wait"],
        )
        .await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{outcome}: {stderr}");
        assert_eq!(text(&out.stdout).trim(), outcome, "the job id is printed");
        if outcome == "failed" {
            assert!(stderr.contains("exit code 3"), "{stderr}");
            assert!(stderr.contains("jobq logs failed"), "{stderr}");
        }
    }
    let out = jobq(
        home.path(),
        &env,
        &["submit", "https://example.com/queued-only"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "queued-only");
}

#[tokio::test]
async fn results_lists_and_downloads_files_into_the_folder() {
    let addr = fake_server().await;
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("JOBQ_URL", &*format!("http://{addr}")),
        ("JOBQ_TOKEN", TOKEN),
    ];

    let out = jobq(home.path(), &env, &["results", "finished"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "summary.json\ngreetings/Ada.txt\n");

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap();
    let out = jobq(
        home.path(),
        &env,
        &["results", "finished", "greetings/Ada.txt", "-o", target],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let saved = std::fs::read_to_string(dir.path().join("greetings/Ada.txt")).unwrap();
    assert_eq!(saved, "finished:greetings/Ada.txt");
    assert!(!dir.path().join("summary.json").exists());

    let out = jobq(home.path(), &env, &["results", "finished", "-o", target]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("summary.json").exists());

    let out = jobq(
        home.path(),
        &env,
        &["results", "finished", "nope.txt", "-o", target],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

#[tokio::test]
async fn results_never_writes_outside_the_folder() {
    let addr = fake_server().await;
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("JOBQ_URL", &*format!("http://{addr}")),
        ("JOBQ_TOKEN", TOKEN),
    ];
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let out = jobq(
        home.path(),
        &env,
        &["results", "hostile", "--all", "-o", dir.to_str().unwrap()],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to save `../escaped.txt`"),
        "{stderr}"
    );
    assert!(dir.join("ok.txt").exists());
    assert!(!parent.path().join("escaped.txt").exists());

    // A folder inside the target that is a symlink to elsewhere is refused too.
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.join("greetings")).unwrap();
    let out = jobq(
        home.path(),
        &env,
        &["results", "finished", "--all", "-o", dir.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("leads outside"),
        "{}",
        text(&out.stderr)
    );
    assert!(!elsewhere.path().join("Ada.txt").exists());
}
