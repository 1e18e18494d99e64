//! A user's own running limit from the identity provider, end to end on the real servers:
//! the realm (`deploy/keycloak/realm-jobq.json`) gives `quotauser` the user attribute
//! `max_running` = 1 and maps it into the access token as the claim `max_running`; with
//! `JOBQ_SCHEDULING__QUOTA_CLAIM=max_running` the frontend reads it at submit, so two of that
//! user's jobs never run at the same time, even with free slots, while another user's do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use jobq_tests::stack::{Backend, GitServer, Stack, StackOptions};
use serde_json::{Value, json};

/// A job that records when it started and ended (ms since the epoch) in `config.log`, and
/// sleeps `config.seconds` in between.
const RECORDER_JS: &str = r#"
const fs = require('fs');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8') || '{}');
fs.appendFileSync(config.log, `start ${Date.now()}\n`);
setTimeout(() => {
  fs.appendFileSync(config.log, `end ${Date.now()}\n`);
  process.exit(0);
}, config.seconds * 1000);
"#;

fn recorder_repo(git: &GitServer) -> String {
    let package = json!({"name": "recorder", "version": "1.0.0", "private": true,
        "scripts": {"start": "node index.js"}})
    .to_string();
    git.repo(
        "recorder",
        &[("package.json", &package), ("index.js", RECORDER_JS)],
    )
}

/// The claims of a JWT, unverified (the frontend verifies it; this only reads it).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The (start, end) a recorder job wrote to `log`.
fn interval(log: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(log).expect("recorder log");
    let at = |word: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(word)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {word} in {}: {text:?}", log.display()))
    };
    (at("start "), at("end "))
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_token_quota_of_one_runs_its_users_jobs_one_at_a_time_while_another_user_runs_two_at_once()
 {
    let Some(stack) = Stack::start(StackOptions {
        backend: Backend::Services,
        workers: 1,
        slots: 4,
        extra_env: vec![("JOBQ_SCHEDULING__QUOTA_CLAIM".into(), "max_running".into())],
        ..StackOptions::default()
    })
    .await
    else {
        return;
    };
    let git = GitServer::start();
    let repo = recorder_repo(&git);

    let quota = stack.token("quotauser", "quota").await;
    assert_eq!(
        claims(&quota)["max_running"],
        json!(1),
        "quotauser's access token lacks max_running = 1: {}",
        claims(&quota)
    );
    let other = stack.token("myuser", "1234").await;
    assert!(
        claims(&other).get("max_running").is_none(),
        "myuser has no quota: {}",
        claims(&other)
    );

    let mut jobs: Vec<(&str, String, PathBuf)> = Vec::new();
    for (user, token) in [("quotauser", &quota), ("myuser", &other)] {
        for n in 0..2 {
            let log = stack.shared_file(&format!("{user}-{n}.log"));
            let id = stack
                .submit(
                    token,
                    json!({"url": repo, "config": json!({"log": log, "seconds": 3}).to_string()}),
                )
                .await;
            jobs.push((user, id, log));
        }
    }
    for (user, id, _) in &jobs {
        let token = if *user == "quotauser" { &quota } else { &other };
        let job = stack
            .wait_for(token, id, None, Duration::from_secs(90))
            .await;
        assert_eq!(job["status"], "finished", "{user}'s job {id}: {job}");
    }

    let runs: Vec<(u64, u64)> = jobs.iter().map(|(_, _, log)| interval(log)).collect();
    assert!(
        !overlap(runs[0], runs[1]),
        "quotauser (max_running 1) ran two jobs at once: {:?} and {:?}",
        runs[0],
        runs[1]
    );
    assert!(
        overlap(runs[2], runs[3]),
        "myuser's two jobs did not run at once on free slots: {:?} and {:?}",
        runs[2],
        runs[3]
    );
}
