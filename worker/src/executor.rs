//! Running one job's command: `config.json` and `output/` prepared, `npm run start -- <args>`
//! with the args split like a shell would but never run by one, a cleared environment, its
//! own process group, a time limit, stdout and stderr captured to files with a size cap.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use jobq_common::domain::{FailureReason, safe_relative_path};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Where a job's files live: `<job>/repo` (the checkout, the command's working directory),
/// `<job>/home` (its `HOME`), `<job>/tmp`, and `<job>/logs/{stdout,stderr}`.
#[derive(Debug, Clone)]
pub struct JobDir {
    pub root: PathBuf,
}

impl JobDir {
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }
    pub fn output(&self) -> PathBuf {
        self.repo().join("output")
    }
    pub fn stdout(&self) -> PathBuf {
        self.root.join("logs").join("stdout")
    }
    pub fn stderr(&self) -> PathBuf {
        self.root.join("logs").join("stderr")
    }
    fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// Writes `config.json`, creates `output/`, checks `package.json` has a start script, and
/// splits the args. Returns the argv to pass after `--`.
pub async fn prepare(dir: &JobDir, config: &str, args: &str) -> Result<Vec<String>, FailureReason> {
    let repo = dir.repo();
    let internal = |what: &str, e: std::io::Error| FailureReason::Internal {
        detail: format!("{what}: {e}"),
    };
    let package = match tokio::fs::read(repo.join("package.json")).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FailureReason::NoPackageJson);
        }
        Err(e) => return Err(internal("cannot read package.json", e)),
    };
    let has_start = serde_json::from_slice::<serde_json::Value>(&package)
        .ok()
        .and_then(|v| {
            v.get("scripts")?
                .get("start")?
                .as_str()
                .map(|s| !s.trim().is_empty())
        })
        .unwrap_or(false);
    if !has_start {
        return Err(FailureReason::NoStartScript);
    }
    let argv = shell_words::split(args).map_err(|e| FailureReason::Internal {
        detail: format!("bad args: {e}"),
    })?;
    tokio::fs::write(repo.join("config.json"), config)
        .await
        .map_err(|e| internal("cannot write config.json", e))?;
    for d in [dir.output(), dir.home(), dir.tmp(), dir.root.join("logs")] {
        tokio::fs::create_dir_all(&d)
            .await
            .map_err(|e| internal("cannot create job folders", e))?;
    }
    Ok(argv)
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    /// Stopped from outside: cancelled, or the lease was lost.
    Stopped,
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub timeout: Duration,
    pub max_log_bytes: u64,
    /// Folders the job may write besides its own (joined with `:`; may be empty).
    pub extra_writable_dirs: &'a str,
}

/// The only variables the job sees: nothing of the worker's configuration or secrets.
fn job_environment(dir: &JobDir) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let home = dir.home().to_string_lossy().into_owned();
    vec![
        ("PATH".into(), path),
        ("HOME".into(), home.clone()),
        ("TMPDIR".into(), dir.tmp().to_string_lossy().into_owned()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TERM".into(), "dumb".into()),
        ("npm_config_cache".into(), format!("{home}/.npm")),
        ("npm_config_update_notifier".into(), "false".into()),
        ("npm_config_fund".into(), "false".into()),
        ("npm_config_audit".into(), "false".into()),
    ]
}

/// Runs `npm run start -- <argv>` in the checkout, under the job shim (see [`crate::shim`]),
/// until it exits, the time limit passes, or `stop` fires; the whole process group is killed
/// on the way out.
pub async fn run(
    dir: &JobDir,
    argv: &[String],
    limits: Limits<'_>,
    stop: &CancellationToken,
) -> std::io::Result<RunEnd> {
    let shim = std::env::current_exe()?;
    let mut writable = dir.root.as_os_str().to_os_string();
    if !limits.extra_writable_dirs.is_empty() {
        writable.push(":");
        writable.push(limits.extra_writable_dirs);
    }
    let mut child = Command::new(shim)
        .arg(crate::shim::SHIM_ARG)
        .arg(std::process::id().to_string())
        .arg(writable)
        .args(["--", "npm", "run", "start", "--"])
        .args(argv)
        .current_dir(dir.repo())
        .env_clear()
        .envs(job_environment(dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    let out = tokio::spawn(capture(
        child.stdout.take(),
        dir.stdout(),
        limits.max_log_bytes,
    ));
    let err = tokio::spawn(capture(
        child.stderr.take(),
        dir.stderr(),
        limits.max_log_bytes,
    ));
    let end = tokio::select! {
        status = child.wait() => {
            let status = status?;
            match (status.code(), status.signal()) {
                (Some(code), _) => RunEnd::Exited(code),
                (None, Some(sig)) => RunEnd::Signalled(sig),
                _ => RunEnd::Exited(-1),
            }
        }
        _ = tokio::time::sleep(limits.timeout) => {
            signal_group(group, Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                signal_group(group, Signal::SIGKILL);
            }
            RunEnd::TimedOut
        }
        _ = stop.cancelled() => {
            signal_group(group, Signal::SIGKILL);
            RunEnd::Stopped
        }
    };
    // Whatever the command left running in its group goes too.
    signal_group(group, Signal::SIGKILL);
    let _ = child.wait().await;
    let _ = out.await;
    let _ = err.await;
    Ok(end)
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(pgid) = group {
        // ESRCH (the group is gone already) is the expected case after a normal exit.
        let _ = killpg(pgid, signal);
    }
}

/// Copies a stream into a file, keeping at most `cap` bytes; the rest is read and dropped
/// so the command never blocks on a full pipe.
async fn capture(
    stream: Option<impl AsyncRead + Unpin>,
    path: PathBuf,
    cap: u64,
) -> std::io::Result<()> {
    let Some(mut stream) = stream else {
        return Ok(());
    };
    let mut file = tokio::fs::File::create(&path).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    let mut truncated = false;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(written) as usize;
        let take = room.min(n);
        if take > 0 {
            file.write_all(&buf[..take]).await?;
            written += take as u64;
        }
        if take < n && !truncated {
            truncated = true;
            file.write_all(format!("\n[jobq: output truncated at {cap} bytes]\n").as_bytes())
                .await?;
        }
    }
    file.flush().await
}

/// The job's outcome from how its command ended.
pub fn failure_for(end: RunEnd, timeout: Duration) -> Option<FailureReason> {
    match end {
        RunEnd::Exited(0) => None,
        RunEnd::Exited(code) => Some(FailureReason::ExitCode { code }),
        RunEnd::Signalled(signal) => Some(FailureReason::Killed { signal }),
        RunEnd::TimedOut => Some(FailureReason::Timeout {
            limit_secs: timeout.as_secs(),
        }),
        RunEnd::Stopped => None,
    }
}

/// Regular files under `output/`, as relative `/`-separated paths in sorted order. Symbolic
/// links are never followed (a link to a worker file must not be uploaded); names that are
/// not UTF-8 or not safe relative paths are skipped with a warning.
pub fn output_files(output: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![output.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(output)
                    .ok()
                    .and_then(|p| p.to_str())
                    .map(str::to_string);
                match relative {
                    Some(r) if safe_relative_path(&r).is_some() => found.push(r),
                    _ => {
                        tracing::warn!(path = %path.display(), "output file skipped: unusable name")
                    }
                }
            }
        }
    }
    found.sort();
    found
}

/// Time since `start` in whole milliseconds.
pub fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_dir() -> JobDir {
        let root = std::env::temp_dir().join(format!("jobq-exec-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("repo")).unwrap();
        JobDir { root }
    }

    fn write_package(dir: &JobDir, start: &str) {
        let pkg = serde_json::json!({"name": "t", "version": "1.0.0", "scripts": {"start": start}});
        std::fs::write(dir.repo().join("package.json"), pkg.to_string()).unwrap();
    }

    #[tokio::test]
    async fn a_missing_package_json_or_start_script_is_reported() {
        let dir = job_dir();
        assert_eq!(
            prepare(&dir, "{}", "").await,
            Err(FailureReason::NoPackageJson)
        );
        std::fs::write(
            dir.repo().join("package.json"),
            r#"{"scripts":{"test":"x"}}"#,
        )
        .unwrap();
        assert_eq!(
            prepare(&dir, "{}", "").await,
            Err(FailureReason::NoStartScript)
        );
        std::fs::write(dir.repo().join("package.json"), "not json").unwrap();
        assert_eq!(
            prepare(&dir, "{}", "").await,
            Err(FailureReason::NoStartScript)
        );
        std::fs::remove_dir_all(&dir.root).unwrap();
    }

    #[tokio::test]
    async fn args_are_split_like_a_shell_without_running_one() {
        let dir = job_dir();
        write_package(&dir, "node -e 'x'");
        let argv = prepare(&dir, "{\"a\":1}", r#"one "two words" '$(rm -rf /)' ; `id`"#)
            .await
            .unwrap();
        assert_eq!(argv, ["one", "two words", "$(rm -rf /)", ";", "`id`"]);
        assert_eq!(
            std::fs::read_to_string(dir.repo().join("config.json")).unwrap(),
            "{\"a\":1}"
        );
        assert!(dir.output().is_dir());
        std::fs::remove_dir_all(&dir.root).unwrap();
    }

    #[tokio::test]
    async fn output_files_are_listed_recursively_without_following_links() {
        let dir = job_dir();
        let out = dir.output();
        std::fs::create_dir_all(out.join("a/b")).unwrap();
        std::fs::write(out.join("a/b/c.txt"), "x").unwrap();
        std::fs::write(out.join("é ü.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("leak")).unwrap();
        assert_eq!(output_files(&out), ["a/b/c.txt", "é ü.txt"]);
        std::fs::remove_dir_all(&dir.root).unwrap();
    }

    #[tokio::test]
    async fn captured_output_is_capped() {
        let dir = job_dir();
        std::fs::create_dir_all(dir.root.join("logs")).unwrap();
        let data = vec![b'x'; 300_000];
        capture(Some(&data[..]), dir.stdout(), 1000).await.unwrap();
        let kept = std::fs::read_to_string(dir.stdout()).unwrap();
        assert!(kept.starts_with(&"x".repeat(1000)));
        assert!(kept.contains("truncated at 1000 bytes"));
        assert!(kept.len() < 1100);
        std::fs::remove_dir_all(&dir.root).unwrap();
    }
}
