//! Trying the sandbox before trusting it: at start a worker runs `node --version` through
//! the whole chain (shim, cgroup, bubblewrap, init) and refuses to start if that fails; the
//! same machinery measures what the sandbox costs a job (`jobq sandbox bench`).

use jobq_common::settings::{SandboxMode, WorkerSettings};

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::executor::{self, JobDir};
use crate::sandbox::{Sandbox, SandboxError};

/// Runs `node --version` confined by `sandbox` in a scratch job folder below `work_root`.
pub async fn check(sandbox: &Sandbox, work_root: &Path) -> Result<(), SandboxError> {
    let command: Vec<OsString> = vec!["node".into(), "--version".into()];
    let ran = tokio::time::timeout(
        Duration::from_secs(30),
        first_output(sandbox, work_root, "probe", &command, None),
    )
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("no answer in 30 s")));
    match ran {
        Ok((_, out, 0)) if !out.trim().is_empty() => Ok(()),
        Ok((_, out, code)) => Err(SandboxError(format!(
            "a job cannot run in the sandbox ({}): `node --version` exited {code}: {}",
            sandbox.describe(),
            out.trim()
        ))),
        Err(e) => Err(SandboxError(format!(
            "a job cannot run in the sandbox ({}): {e}",
            sandbox.describe()
        ))),
    }
}

/// Runs `command` confined by `sandbox` (or, with `None`, started directly: the bare floor)
/// in a fresh scratch folder holding `package_json` if given; returns the time from spawn to
/// its first byte of stdout, everything it printed (stdout then stderr) and its exit code.
pub async fn first_output(
    sandbox: impl Into<Option<&Sandbox>>,
    work_root: &Path,
    name: &str,
    command: &[OsString],
    package_json: Option<&str>,
) -> std::io::Result<(Duration, String, i32)> {
    let sandbox = sandbox.into();
    let dir = JobDir {
        root: work_root.join(format!("sandbox-{name}-{}", std::process::id())),
    };
    executor::remove_job_dir(&dir.root).await;
    for d in [dir.repo(), dir.home(), dir.tmp()] {
        tokio::fs::create_dir_all(&d).await?;
    }
    if let Some(package) = package_json {
        tokio::fs::write(dir.repo().join("package.json"), package).await?;
    }
    let result = async {
        let started;
        let (mut child, job) = match sandbox {
            Some(sandbox) => {
                let name = format!("{name}-{}", uuid::Uuid::new_v4().simple());
                started = Instant::now();
                let (child, job) = executor::spawn(&dir, command, sandbox, &name).await?;
                (child, Some(job))
            }
            None => {
                let environment = executor::bare_environment(&dir);
                started = Instant::now();
                let child = tokio::process::Command::new(&command[0])
                    .args(&command[1..])
                    .current_dir(dir.repo())
                    .env_clear()
                    .envs(environment)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()?;
                (child, None)
            }
        };
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let mut first = [0u8; 1];
        let n = stdout.read(&mut first).await?;
        let latency = started.elapsed();
        let mut text = String::from_utf8_lossy(&first[..n]).into_owned();
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).await?;
        stderr.read_to_string(&mut rest).await?;
        text.push_str(&rest);
        let status = child.wait().await?;
        let _ = tokio::task::spawn_blocking(move || drop(job)).await;
        Ok((latency, text, status.code().unwrap_or(-1)))
    }
    .await;
    executor::remove_job_dir(&dir.root).await;
    result
}

/// What `jobq sandbox bench` measured for one way of starting a job.
#[derive(Debug)]
pub struct BenchRow {
    pub label: &'static str,
    /// Spawn to first line of stdout, one per run.
    pub first_line: Vec<Duration>,
}

/// Runs `command` `runs` times each way, interleaved so that the machine's load falls on all
/// alike: started directly (the floor), through the job shim without a sandbox
/// (`worker.sandbox = off`), and in the sandbox `settings` describe.
pub async fn bench(
    settings: &WorkerSettings,
    work_root: &Path,
    runs: usize,
    command: &[OsString],
    package_json: Option<&str>,
) -> Result<Vec<BenchRow>, SandboxError> {
    let off = Sandbox::from_settings(&WorkerSettings {
        sandbox: SandboxMode::Off,
        ..settings.clone()
    })?;
    let on = Sandbox::from_settings(settings)?;
    check(&on, work_root).await?;
    let ways: [(&'static str, Option<&Sandbox>); 3] = [
        ("bare (no shim, no sandbox)", None),
        ("job shim, sandbox off", Some(&off)),
        ("job shim + bubblewrap sandbox", Some(&on)),
    ];
    let mut rows: Vec<BenchRow> = ways
        .iter()
        .map(|(label, _)| BenchRow {
            label,
            first_line: Vec::with_capacity(runs),
        })
        .collect();
    for _ in 0..runs {
        for (row, (_, sandbox)) in rows.iter_mut().zip(ways.iter()) {
            let (latency, out, code) =
                first_output(*sandbox, work_root, "bench", command, package_json)
                    .await
                    .map_err(|e| SandboxError(format!("{}: {e}", row.label)))?;
            if code != 0 {
                return Err(SandboxError(format!(
                    "{}: the command exited {code}: {}",
                    row.label,
                    out.trim()
                )));
            }
            row.first_line.push(latency);
        }
    }
    Ok(rows)
}
