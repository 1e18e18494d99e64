//! Running one job's command: `config.json` and `output/` prepared, `npm run start -- <args>`
//! with the args split like a shell would but never run by one, a cleared environment, its
//! own process group, a time limit, stdout and stderr captured to files with a size cap.

use std::ffi::OsString;
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
use walkdir::WalkDir;

use crate::sandbox::{JOB_DIR, JobSandbox, Sandbox};

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
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// Writes `config.json`, creates `output/`, checks `package.json` has a start script, and
/// splits the args. Returns the argv to pass after `--`. The file work is one blocking task
/// (a few small files: one hand-off to the blocking pool instead of one per call).
pub async fn prepare(dir: &JobDir, config: &str, args: &str) -> Result<Vec<String>, FailureReason> {
    let (dir, config, args) = (dir.clone(), config.to_string(), args.to_string());
    tokio::task::spawn_blocking(move || prepare_blocking(&dir, &config, &args))
        .await
        .map_err(|e| FailureReason::Internal {
            detail: format!("job preparation failed: {e}"),
        })?
}

fn prepare_blocking(dir: &JobDir, config: &str, args: &str) -> Result<Vec<String>, FailureReason> {
    let repo = dir.repo();
    let internal = |what: &str, e: std::io::Error| FailureReason::Internal {
        detail: format!("{what}: {e}"),
    };
    let package = match std::fs::read(repo.join("package.json")) {
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
    std::fs::write(repo.join("config.json"), config)
        .map_err(|e| internal("cannot write config.json", e))?;
    for d in [dir.output(), dir.home(), dir.tmp(), dir.root.join("logs")] {
        std::fs::create_dir_all(&d).map_err(|e| internal("cannot create job folders", e))?;
    }
    Ok(argv)
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    /// Stopped from outside: cancelled, or the lease was lost.
    Stopped,
    /// Ended (or found after its end) over one of its limits: memory, processes, output,
    /// folder size.
    OverLimit(FailureReason),
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Unique among the host's running jobs (names the job's cgroup).
    pub name: &'a str,
    pub timeout: Duration,
    pub max_log_bytes: u64,
    pub max_output_mb: u64,
    pub max_job_dir_mb: u64,
    pub memory_limit_mb: u64,
    pub max_processes: u64,
}

/// The only variables the job sees: nothing of the worker's configuration or secrets.
/// In the sandbox the job's folder is its `HOME` and `/tmp` its own; without one they are
/// folders of the job's.
fn job_environment(dir: &JobDir, sandboxed: bool) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let (home, tmp) = match sandboxed {
        true => (PathBuf::from(JOB_DIR), PathBuf::from("/tmp")),
        false => (dir.home(), dir.tmp()),
    };
    let home = home.to_string_lossy().into_owned();
    let tmp = tmp.to_string_lossy().into_owned();
    vec![
        ("PATH".into(), path),
        ("HOME".into(), home.clone()),
        ("TMPDIR".into(), tmp),
        ("LANG".into(), "C.UTF-8".into()),
        ("TERM".into(), "dumb".into()),
        ("USER".into(), "job".into()),
        ("npm_config_cache".into(), format!("{home}/.npm")),
        ("npm_config_update_notifier".into(), "false".into()),
        ("npm_config_fund".into(), "false".into()),
        ("npm_config_audit".into(), "false".into()),
    ]
}

/// The environment of a job started without the shim (the floor `jobq sandbox bench`
/// compares with): the same variables an unsandboxed job gets.
pub fn bare_environment(dir: &JobDir) -> Vec<(String, String)> {
    job_environment(dir, false)
}

/// How often the worker looks at a running job's cgroup counters, and every how many of
/// those looks it measures the job's folder.
const WATCH_EVERY: Duration = Duration::from_millis(250);
const MEASURE_EVERY_NTH: u32 = 4;

/// A job's confinement and its job shim, started before the worker has the job: the shim
/// joins the cgroup — which on cgroup v1 waits for an RCU grace period, 5–20 ms on these
/// machines — while the worker waits for a job or prepares it, then waits for its folder,
/// command and environment on stdin ([`jobq_job_shim::COMMAND_ON_STDIN`]). Dropped unsent
/// (the job failed before it ran, the worker stops), the shim is killed and the cgroup
/// removed.
pub struct Launch {
    child: Option<tokio::process::Child>,
    job: Option<JobSandbox>,
}

impl Launch {
    /// Prepares the confinement `name` (unique among the host's running confinements) and
    /// starts the shim, with nothing of a job yet: no environment, `/` for its folder, its
    /// stdout and stderr piped (they become the job's), as the leader of a new process group.
    pub fn start(sandbox: &Sandbox, name: &str) -> std::io::Result<Launch> {
        let job = sandbox.prepare(name)?;
        let cgroup_files = job
            .cgroup
            .as_ref()
            .map(|c| std::env::join_paths(c.procs_files()))
            .transpose()
            .map_err(std::io::Error::other)?
            .unwrap_or_default();
        let child = Command::new(&sandbox.shim().path)
            .arg(crate::shim::SHIM_ARG)
            .arg(std::process::id().to_string())
            .arg(cgroup_files)
            .arg(crate::shim::COMMAND_ON_STDIN)
            .current_dir("/")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Launch {
            child: Some(child),
            job: Some(job),
        })
    }

    /// Whether the shim still waits for its command (a standby one may have been killed).
    pub fn waiting(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Hands the checkout to the job's user (a root worker) and sends the shim `command`,
    /// confined by `sandbox`, to run in the checkout with the job's environment.
    pub async fn send(
        mut self,
        dir: &JobDir,
        command: &[OsString],
        sandbox: &Sandbox,
    ) -> std::io::Result<(tokio::process::Child, JobSandbox)> {
        let (mut child, job) = (
            self.child.take().expect("an unsent launch"),
            self.job.take().expect("an unsent launch"),
        );
        if let Some(uid) = sandbox.owner(&job) {
            let repo = dir.repo();
            tokio::task::spawn_blocking(move || chown_tree(&repo, uid))
                .await
                .map_err(std::io::Error::other)??;
        }
        let confined = sandbox.command(&job, dir, command)?;
        let env: Vec<(OsString, OsString)> = job_environment(dir, sandbox.enabled())
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let message = jobq_job_shim::encode_command(&dir.repo(), &confined, &env)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // Closed after the message: the shim reads to the end.
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(&message).await?;
        drop(stdin);
        Ok((child, job))
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        // Emptying and removing the cgroup is blocking file-system work.
        if let Some(job) = self.job.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(job))),
                Err(_) => drop(job),
            }
        }
    }
}

/// Runs `npm run start -- <argv>` in the checkout, in the job's sandbox, under the job shim
/// `launch` started (see [`crate::shim`] and [`crate::sandbox`]), until it exits, the time
/// limit passes, a limit is hit, or `stop` fires; every process of the job is killed on the
/// way out.
pub async fn run(
    dir: &JobDir,
    launch: Launch,
    argv: &[String],
    limits: Limits<'_>,
    stop: &CancellationToken,
    sandbox: &Sandbox,
) -> std::io::Result<RunEnd> {
    let at = std::time::Instant::now();
    let command: Vec<OsString> = ["npm", "run", "start", "--"]
        .iter()
        .map(OsString::from)
        .chain(argv.iter().map(OsString::from))
        .collect();
    let (mut child, job) = launch.send(dir, &command, sandbox).await?;
    let at = crate::runner::stage_done("spawn", at);
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
    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    let mut watch = tokio::time::interval(WATCH_EVERY);
    let mut ticks = 0u32;
    let end = loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                break match (status.code(), status.signal()) {
                    (Some(code), _) => RunEnd::Exited(code),
                    (None, Some(sig)) => RunEnd::Signalled(sig),
                    _ => RunEnd::Exited(-1),
                };
            }
            _ = &mut deadline => {
                signal_group(group, Signal::SIGTERM);
                if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                    signal_group(group, Signal::SIGKILL);
                }
                break RunEnd::TimedOut;
            }
            _ = stop.cancelled() => {
                signal_group(group, Signal::SIGKILL);
                break RunEnd::Stopped;
            }
            _ = watch.tick() => {
                ticks += 1;
                let measure = ticks.is_multiple_of(MEASURE_EVERY_NTH);
                if let Some(reason) = over_limit(&job, dir, &limits, measure).await {
                    signal_group(group, Signal::SIGKILL);
                    break RunEnd::OverLimit(reason);
                }
            }
        }
    };
    let at = crate::runner::stage_done("run", at);
    // Whatever the command left running goes too: its process group, and through the
    // sandbox's PID namespace (or the cgroup) everything else it started.
    signal_group(group, Signal::SIGKILL);
    let _ = child.wait().await;
    let end = match end {
        RunEnd::Exited(_) | RunEnd::Signalled(_) => {
            match over_limit(&job, dir, &limits, true).await {
                Some(reason) => RunEnd::OverLimit(reason),
                None => end,
            }
        }
        other => other,
    };
    // Empties and removes the cgroup (blocking file-system work).
    let _ = tokio::task::spawn_blocking(move || drop(job)).await;
    let _ = out.await;
    let _ = err.await;
    crate::runner::stage_done("reap", at);
    Ok(end)
}

/// Starts `command` in the checkout, confined by `sandbox` as the job `name`, with stdout and
/// stderr piped, as the leader of a new process group: [`Launch::start`], then
/// [`Launch::send`] at once.
pub async fn spawn(
    dir: &JobDir,
    command: &[OsString],
    sandbox: &Sandbox,
    name: &str,
) -> std::io::Result<(tokio::process::Child, JobSandbox)> {
    Launch::start(sandbox, name)?
        .send(dir, command, sandbox)
        .await
}

/// The first limit the job is over, if any: the cgroup's counters always, the folder sizes
/// when `measure`.
async fn over_limit(
    job: &JobSandbox,
    dir: &JobDir,
    limits: &Limits<'_>,
    measure: bool,
) -> Option<FailureReason> {
    if let Some(cgroup) = &job.cgroup {
        if cgroup.memory_exceeded() {
            return Some(FailureReason::MemoryLimit {
                limit_mb: limits.memory_limit_mb,
            });
        }
        if cgroup.processes_exceeded() {
            return Some(FailureReason::ProcessLimit {
                limit: limits.max_processes,
            });
        }
    }
    if !measure {
        return None;
    }
    let (output, root) = (dir.output(), dir.repo());
    let (output_bytes, dir_bytes) =
        tokio::task::spawn_blocking(move || (tree_size(&output), tree_size(&root)))
            .await
            .unwrap_or((0, 0));
    if output_bytes > limits.max_output_mb << 20 {
        return Some(FailureReason::OutputLimit {
            limit_mb: limits.max_output_mb,
        });
    }
    if dir_bytes > limits.max_job_dir_mb << 20 {
        return Some(FailureReason::JobDirLimit {
            limit_mb: limits.max_job_dir_mb,
        });
    }
    None
}

/// Bytes of the regular files below `root` (links are not followed).
pub fn tree_size(root: &Path) -> u64 {
    WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Removes a job's folder, even where the job made folders of its own unreadable or
/// unwritable (a non-root worker owns them, so it may open them up again).
pub async fn remove_job_dir(root: &Path) {
    let root = root.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || {
        if std::fs::remove_dir_all(&root).is_ok() || !root.exists() {
            return;
        }
        open_up(&root);
        if let Err(e) = std::fs::remove_dir_all(&root) {
            tracing::warn!(dir = %root.display(), error = %e, "job folder not removed");
        }
    })
    .await;
}

/// Opens `dir` up before reading it, then each folder below it the same way.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&entry.path());
        }
    }
}

/// Gives `root` and everything below it to the job's user (links themselves, not their
/// targets), except files with more than one hard link: those are the worker's mirror's
/// objects (`repo::RepoCache::checkout`), which stay the worker's, read-only to the job.
fn chown_tree(root: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for entry in WalkDir::new(root) {
        let entry = entry.map_err(std::io::Error::other)?;
        let shared = entry.file_type().is_file()
            && entry.metadata().map_err(std::io::Error::other)?.nlink() > 1;
        if !shared {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(uid))?;
        }
    }
    Ok(())
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
        RunEnd::OverLimit(reason) => Some(reason),
    }
}

/// Regular files under `output/`, as relative `/`-separated paths in sorted order. Symbolic
/// links are never followed (a link to a worker file must not be uploaded); names that are
/// not UTF-8 or not safe relative paths are skipped with a warning.
pub fn output_files(output: &Path) -> Vec<String> {
    let mut found: Vec<String> = WalkDir::new(output)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let relative = e.path().strip_prefix(output).ok()?.to_str().map(str::to_string);
            match relative {
                Some(r) if safe_relative_path(&r).is_some() => Some(r),
                _ => {
                    tracing::warn!(path = %e.path().display(), "output file skipped: unusable name");
                    None
                }
            }
        })
        .collect();
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

    #[test]
    fn a_checkout_is_handed_over_without_its_hard_linked_files() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can hand files to another user");
            return;
        }
        let dir = job_dir();
        let mirror = dir.root.join("mirror.pack");
        std::fs::write(&mirror, "objects").unwrap();
        std::fs::create_dir_all(dir.repo().join(".git")).unwrap();
        std::fs::hard_link(&mirror, dir.repo().join(".git/linked.pack")).unwrap();
        std::fs::write(dir.repo().join("index.js"), "1").unwrap();
        chown_tree(&dir.repo(), 54321).unwrap();
        let uid = |p: &str| std::fs::metadata(dir.repo().join(p)).unwrap().uid();
        assert_eq!(uid("index.js"), 54321);
        assert_eq!(uid(".git"), 54321);
        assert_eq!(
            uid(".git/linked.pack"),
            0,
            "the mirror's file stays the worker's"
        );
        assert_eq!(std::fs::metadata(&mirror).unwrap().uid(), 0);
        std::fs::remove_dir_all(&dir.root).unwrap();
    }

    fn job_dir() -> JobDir {
        let root = std::env::temp_dir().join(format!("jobq-exec-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("repo")).unwrap();
        JobDir { root }
    }

    /// A job that fails before its command (a clone that fails, a cancel) drops its launch:
    /// the shim that waited for the command is killed and its cgroup removed.
    #[tokio::test]
    async fn a_launch_dropped_unsent_leaves_no_process_and_no_cgroup() {
        let settings = jobq_common::settings::WorkerSettings {
            sandbox: jobq_common::settings::SandboxMode::Off,
            work_dir: std::env::temp_dir().join(format!("jobq-launch-{}", uuid::Uuid::new_v4())),
            ..Default::default()
        };
        let sandbox = Sandbox::from_settings(&settings).unwrap();
        let dir = job_dir();
        let name = format!("launch-test-{}", uuid::Uuid::new_v4().simple());
        let mut launch = Launch::start(&sandbox, &name).unwrap();
        let pid = launch.child.as_ref().unwrap().id().unwrap();
        let procs = launch
            .job
            .as_ref()
            .unwrap()
            .cgroup
            .as_ref()
            .map(|c| c.procs_files());
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let within = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        // It joins its cgroup (where there is one) and waits for its command.
        if let Some(files) = &procs {
            within("the shim never joined its cgroup", &|| {
                files.iter().all(|f| {
                    std::fs::read_to_string(f)
                        .is_ok_and(|t| t.split_whitespace().any(|p| p == pid.to_string()))
                })
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(alive(pid), "the shim did not wait for its command");
        assert!(launch.waiting());
        drop(launch);
        within("the unsent shim outlived its launch", &|| !alive(pid));
        if let Some(files) = &procs {
            within("the unsent job's cgroup was not removed", &|| {
                files.iter().all(|f| !f.parent().unwrap().exists())
            });
        }
        std::fs::remove_dir_all(&dir.root).unwrap();
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

    #[tokio::test]
    async fn job_folders_a_job_locked_are_removed_all_the_same() {
        use std::os::unix::fs::PermissionsExt;
        let dir = job_dir();
        let locked = dir.repo().join("a/b");
        std::fs::create_dir_all(&locked).unwrap();
        std::fs::write(locked.join("f"), "x").unwrap();
        for d in [dir.repo().join("a"), locked] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        remove_job_dir(&dir.root).await;
        assert!(!dir.root.exists());
    }
}
