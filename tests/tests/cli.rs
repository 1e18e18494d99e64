//! The `jobq` client commands against a running `jobq standalone`, as a user types them.

use std::process::{Command, Output};
use std::time::Duration;

use jobq_tests::stack::{Backend, GitServer, Stack, StackOptions, binary};
use serde_json::{Value, json};

fn jobq(stack: &Stack, home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary("jobq"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("XDG_CONFIG_HOME", home)
        .env("JOBQ_URL", &stack.url)
        .output()
        .expect("run jobq")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn login_submit_wait_status_logs_results_and_cancel() {
    let options = StackOptions {
        backend: Backend::Standalone,
        ..StackOptions::default()
    };
    let Some(stack) = Stack::start(options).await else {
        return;
    };
    let git = GitServer::start();
    let home = stack.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // Read at run time (cargo sets it then too): the checkout under test, even when a shared
    // target directory holds a binary built from another checkout.
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let example = std::path::Path::new(&crate_dir).join("../examples/hello-job");
    let hello = std::fs::read_to_string(example.join("index.js")).unwrap();
    let package = std::fs::read_to_string(example.join("package.json")).unwrap();
    let url = git.repo(
        "hello-job",
        &[("package.json", &package), ("index.js", &hello)],
    );

    let out = jobq(&stack, &home, &["status"]);
    assert_eq!(out.status.code(), Some(4), "not logged in: {}", text(&out));
    let out = jobq(
        &stack,
        &home,
        &["login", "--user", "myuser", "--password", "wrong"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let out = jobq(
        &stack,
        &home,
        &["login", "--user", "myuser", "--password", "1234"],
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = jobq(
        &stack,
        &home,
        &[
            "submit",
            &url,
            "--args",
            "Ada Linus",
            "--config-text",
            r#"{"greeting": "Hi"}"#,
            "--wait",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(id.len(), 36, "the first line is the job id: {}", text(&out));

    let out = jobq(&stack, &home, &["status", &id, "--json"]);
    let job: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(job["status"], "finished");
    let out = jobq(&stack, &home, &["logs", &id]);
    assert!(
        text(&out).contains("Hi to 2 name(s): Ada, Linus"),
        "{}",
        text(&out)
    );
    let dir = stack.dir.join("results");
    let out = jobq(
        &stack,
        &home,
        &["results", &id, "-o", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("greetings/Ada.txt")).unwrap(),
        "Hi, Ada!\n"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["names"], json!(["Ada", "Linus"]));

    // A job that exits 3 makes `submit --wait` exit 1 and say why.
    let failing = git.repo(
        "exit3",
        &[
            ("package.json", &package),
            ("index.js", "console.error('no'); process.exit(3);"),
        ],
    );
    let out = jobq(&stack, &home, &["submit", &failing, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("exit code 3"), "{}", text(&out));

    // Cancel a long job.
    let sleeper = git.repo(
        "sleeper",
        &[
            ("package.json", &package),
            ("index.js", "setTimeout(() => {}, 300000);"),
        ],
    );
    let out = jobq(&stack, &home, &["submit", &sleeper]);
    let long = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let token = stack.token("myuser", "1234").await;
    stack
        .wait_for(&token, &long, Some("running"), Duration::from_secs(60))
        .await;
    let out = jobq(&stack, &home, &["cancel", &long]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stack.job(&token, &long).await["status"], "cancelled");
    let out = jobq(
        &stack,
        &home,
        &["status", "01a2092f-0000-7000-8000-000000000000"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
}
