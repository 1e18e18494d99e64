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

/// A standalone stack, a git server holding the example job (kept for the test's length),
/// an empty home for the client's settings, and the job's URL.
async fn with_hello_job(
    options: StackOptions,
) -> Option<(Stack, GitServer, std::path::PathBuf, String)> {
    let stack = Stack::start(options).await?;
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
    Some((stack, git, home, url))
}

#[tokio::test]
async fn login_submit_wait_status_logs_results_and_cancel() {
    let options = StackOptions {
        backend: Backend::Standalone,
        ..StackOptions::default()
    };
    let Some((stack, git, home, url)) = with_hello_job(options).await else {
        return;
    };

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
    let package = jobq_tests::package("node index.js");
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

/// `jobq status ID --json` until the observer's plan gave the job `estimatedStartAt`.
async fn wait_for_estimate(stack: &Stack, home: &std::path::Path, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = jobq(stack, home, &["status", id, "--json"]);
        let job: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
        if job["estimatedStartAt"].is_string() {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no estimate for {id} in 30 s (the observer plans every second here): {job}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn first_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test]
async fn submit_with_a_deadline_prints_the_estimates_and_status_shows_them_and_the_risk() {
    // One slot, so the plan's order shows in the estimates.
    let options = StackOptions {
        backend: Backend::Standalone,
        workers: 1,
        slots: 1,
        ..StackOptions::default()
    };
    let Some((stack, _git, home, url)) = with_hello_job(options).await else {
        return;
    };
    let out = jobq(
        &stack,
        &home,
        &["login", "--user", "myuser", "--password", "1234"],
    );
    assert!(out.status.success(), "{}", text(&out));

    // The job waits for its notBefore, so its estimates are known: it starts then and
    // ends the expected 30 s later, well before its deadline.
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let not_before = now + time::Duration::minutes(30);
    let submit = [
        "submit",
        &url,
        "--not-before",
        &rfc3339(not_before),
        "--deadline",
        "+1h",
        "--expected-duration",
        "30",
    ];
    let out = jobq(&stack, &home, &submit);
    assert!(out.status.success(), "{}", text(&out));
    let id = first_line(&out);
    assert_eq!(id.len(), 36, "stdout is the job id alone: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("estimated start") || stderr.contains("no estimate yet"),
        "{stderr}"
    );

    let job = wait_for_estimate(&stack, &home, &id).await;
    assert_eq!(job["expectedDurationSecs"], 30.0, "{job}");
    assert_eq!(job["deadlineAtRisk"], false, "{job}");
    let deadline = time::OffsetDateTime::parse(
        job["deadline"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let ahead = deadline - now;
    assert!(
        ahead >= time::Duration::minutes(59) && ahead <= time::Duration::minutes(61),
        "--deadline +1h sent {deadline}"
    );
    let shown = |t: time::OffsetDateTime| {
        t.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap()
    };
    let out = jobq(&stack, &home, &["status", &id]);
    let details = text(&out);
    assert!(out.status.success(), "{details}");
    for line in [
        format!("not before {}\n", shown(not_before)),
        format!("deadline   {} UTC (in ", shown(deadline)),
        "at risk    no\n".to_string(),
        "expected   30.0s\n".to_string(),
        format!("est. start {} UTC (in ", shown(not_before)),
        format!(
            "est. end   {} UTC (in ",
            shown(not_before + time::Duration::seconds(30))
        ),
    ] {
        assert!(details.contains(&line), "no {line:?} in\n{details}");
    }

    // Now that a plan exists, the submit's answer has the estimates and prints them: the
    // same notBefore and a later deadline, so it starts when the first one ends. The first
    // estimate may have come from a plan made just before the first job (which ranks it
    // among the jobs planned then); two periods later the newest plan has it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = jobq(&stack, &home, &submit);
    assert!(out.status.success(), "{}", text(&out));
    let second = first_line(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "estimated start {} UTC",
            shown(not_before + time::Duration::seconds(30))
        )),
        "{stderr}"
    );
    assert!(stderr.contains("; deadline "), "{stderr}");

    // Expected to run an hour but due in twenty minutes: flagged at risk.
    let out = jobq(
        &stack,
        &home,
        &[
            "submit",
            &url,
            "--not-before",
            &rfc3339(now + time::Duration::minutes(10)),
            "--deadline",
            "+20m",
            "--expected-duration",
            "1h",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let late = first_line(&out);
    let job = wait_for_estimate(&stack, &home, &late).await;
    assert_eq!(job["deadlineAtRisk"], true, "{job}");
    let out = jobq(&stack, &home, &["status", &late]);
    assert!(
        text(&out).contains(
            "at risk    yes: the observer's plan predicts it to finish after its deadline\n"
        ),
        "{}",
        text(&out)
    );

    // A deadline that cannot be parsed is a usage error; one the server refuses exits 1
    // with its reason.
    let out = jobq(&stack, &home, &["submit", &url, "--deadline", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = jobq(
        &stack,
        &home,
        &["submit", &url, "--deadline", "2020-01-01T00:00:00Z"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("deadline must be in the future"),
        "{}",
        text(&out)
    );
    let out = jobq(
        &stack,
        &home,
        &["submit", &url, "--expected-duration", "31d"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("expectedDurationSecs"),
        "{}",
        text(&out)
    );

    for id in [&id, &second, &late] {
        let out = jobq(&stack, &home, &["cancel", id]);
        assert!(out.status.success(), "{}", text(&out));
    }
}
