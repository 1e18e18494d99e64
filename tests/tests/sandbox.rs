//! The job sandbox as an operator meets it: a worker that cannot build one refuses to start,
//! a non-root worker sandboxes its jobs in a user namespace, and `worker.job_network = none`
//! leaves a job no network. The attacks themselves are in `pipeline.rs` (the hostile job).

use std::process::{Command, Stdio};
use std::time::Duration;

use jobq_tests::stack::{Backend, GitServer, Stack, StackOptions, binary, free_port};
use jobq_tests::unique_name;
use serde_json::{Value, json};

#[test]
fn a_process_that_cannot_build_a_sandbox_refuses_to_start() {
    let dir = std::env::temp_dir().join(unique_name("nobwrap"));
    let out = Command::new(binary("jobq"))
        .args(["standalone", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&dir)
        .env("JOBQ_WORKER__BWRAP", "/nonexistent/bwrap")
        .env("JOBQ_WORKER__WORK_DIR", dir.join("work"))
        .stdin(Stdio::null())
        .output()
        .expect("run jobq standalone");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "it started without a sandbox: {stderr}"
    );
    assert!(stderr.contains("bubblewrap not found"), "{stderr}");
    assert!(stderr.contains("worker.sandbox = off"), "{stderr}");
}

#[test]
fn a_non_root_worker_sandboxes_jobs_in_a_user_namespace() {
    // As root, become an unprivileged user for the check (a copy of the binary it can read).
    let dir = tempfile_dir("nonroot");
    let exe = dir.join("jobq");
    std::fs::copy(binary("jobq"), &exe).unwrap();
    for (p, mode) in [(&dir, 0o1777), (&exe, 0o755)] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let root = nix::unistd::geteuid().is_root();
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = command
        .args(["sandbox", "check"])
        .env("HOME", &dir)
        .env("TMPDIR", &dir)
        .output()
        .expect("run jobq sandbox check");
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("bubblewrap in a user namespace"), "{text}");
}

fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A job that tries to reach the frontend that gave it out, over loopback and the host's
/// address, and reports what happened.
const NETWORK_JS: &str = r#"
const net = require('net');
const fs = require('fs');
const config = JSON.parse(fs.readFileSync('config.json', 'utf8'));
const socket = net.connect({ host: '127.0.0.1', port: config.port });
const done = (what) => { fs.writeFileSync('output/net.txt', what); process.exit(0); };
socket.on('connect', () => done('connected'));
socket.on('error', (e) => done('ERR ' + e.code));
setTimeout(() => done('timeout'), 5000);
"#;

/// A `jobq standalone` with these `JOBQ_` variables, a git server and a token of `myuser`.
async fn standalone_with(env: &[(&str, &str)]) -> (Stack, GitServer, String) {
    let options = StackOptions {
        backend: Backend::Standalone,
        extra_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..StackOptions::default()
    };
    let stack = Stack::start(options)
        .await
        .expect("standalone needs no servers");
    let git = GitServer::start();
    let token = stack.token("myuser", "1234").await;
    (stack, git, token)
}

async fn network_seen(network: &str) -> String {
    let (stack, git, token) = standalone_with(&[("JOBQ_WORKER__JOB_NETWORK", network)]).await;
    let package = json!({"name": "n", "version": "1.0.0", "scripts": {"start": "node index.js"}});
    let url = git.repo(
        "net",
        &[
            ("package.json", &package.to_string()),
            ("index.js", NETWORK_JS),
        ],
    );
    let config = json!({"port": stack.port}).to_string();
    let id = stack
        .submit(&token, json!({"url": url, "config": config}))
        .await;
    let job: Value = stack
        .wait_for(&token, &id, None, Duration::from_secs(90))
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    stack
        .get(&token, &format!("/api/results/{id}/net.txt"))
        .await
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn job_network_none_leaves_a_job_no_network_and_host_keeps_it() {
    // The repository is cloned by the worker, outside the sandbox: it works either way.
    assert_eq!(network_seen("host").await, "connected");
    assert_eq!(network_seen("none").await, "ERR ECONNREFUSED");
}

#[tokio::test]
async fn with_the_sandbox_off_jobs_run_and_every_one_is_warned_about() {
    let (stack, git, token) = standalone_with(&[
        ("JOBQ_WORKER__SANDBOX", "off"),
        ("JOBQ_WORKER__BWRAP", "/nonexistent/bwrap"),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let package = json!({"name": "o", "version": "1.0.0", "scripts": {"start": "node -e 1"}});
    let url = git.repo("off", &[("package.json", &package.to_string())]);
    for _ in 0..2 {
        let id = stack.submit(&token, json!({"url": url})).await;
        let job: Value = stack
            .wait_for(&token, &id, None, Duration::from_secs(90))
            .await;
        assert_eq!(job["status"], "finished", "{job}");
    }
    let log = std::fs::read_to_string(stack.dir.join("frontend.log")).unwrap();
    assert_eq!(log.matches("jobs run unsandboxed").count(), 1, "{log}");
    assert_eq!(log.matches("this job runs unsandboxed").count(), 2, "{log}");
}
