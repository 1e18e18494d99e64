//! Trying the sandbox before trusting it: at start a worker runs `node --version` through
//! the whole chain (shim, cgroup, bubblewrap, init) and refuses to start if that fails; the
//! same machinery measures what the sandbox costs a job (`jobq sandbox bench`).

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
        first_output(sandbox, work_root, "probe", &command),
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

/// Runs `command` confined by `sandbox` in a fresh scratch folder; returns the time from
/// spawn to its first byte of stdout, everything it printed (stdout then stderr) and its exit
/// code.
pub async fn first_output(
    sandbox: &Sandbox,
    work_root: &Path,
    name: &str,
    command: &[OsString],
) -> std::io::Result<(Duration, String, i32)> {
    let dir = JobDir {
        root: work_root.join(format!("sandbox-{name}-{}", std::process::id())),
    };
    let _ = tokio::fs::remove_dir_all(&dir.root).await;
    for d in [dir.repo(), dir.home(), dir.tmp()] {
        tokio::fs::create_dir_all(&d).await?;
    }
    let result = async {
        let job = sandbox.prepare(&format!("{name}-{}", uuid::Uuid::new_v4().simple()))?;
        let started = Instant::now();
        let mut child = executor::spawn(&dir, command, sandbox, &job).await?;
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
    let _ = tokio::fs::remove_dir_all(&dir.root).await;
    result
}
