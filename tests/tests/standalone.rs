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
    let log = stack.shared.join("runs.log");
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
