//! A run's logs and outputs when the artifact store is away: the worker retries for
//! `worker.upload_retry_secs`, records `finished` only once every file is stored, and hands
//! the job back for another attempt when the store stays away. Real job runs (git, npm) on
//! the embedded store and artifact folder, behind an artifact store that refuses writes for
//! as long as the test says (what a restarting S3 server answers). With the same runner: jobs
//! take the job shims started ahead of them, and the worker's exit stops those.
//!
//! Its own `main` (no libtest harness): the worker runs each job under its own executable as
//! the job shim, so this test executable must be able to act as one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jobq_common::domain::{AttemptOutcome, Job, JobSpec, JobStatus, artifact_keys};
use jobq_common::embedded::{InProcessBus, LocalArtifactStore, SqliteStore};
use jobq_common::ports::{Artifact, ArtifactStore, JobCatalog, JobLeases, JobLookup};
use jobq_common::settings::WorkerSettings;
use jobq_common::{PortError, PortResult};
use jobq_worker::{JobRunner, Ports};
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// The artifact folder, with writes refused as unavailable while `refusals` is above 0, each
/// write taking at least `put_delay_ms` (a store across a network), and the most writes
/// seen in flight at once.
struct Restarting {
    inner: LocalArtifactStore,
    refusals: AtomicU32,
    refused: AtomicU32,
    put_delay_ms: AtomicU64,
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
}

impl Restarting {
    async fn put(&self, key: &str, path: &Path) -> PortResult<u64> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = self.put_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let put = match self.refuse() {
            Ok(()) => self.inner.put_file(key, path).await,
            Err(e) => Err(e),
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        put
    }

    fn refuse(&self) -> PortResult<()> {
        let refusing = self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refusing {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(PortError::unavailable("connection refused (s3 restarting)"));
        }
        Ok(())
    }
}

#[async_trait]
impl ArtifactStore for Restarting {
    async fn put_file(&self, key: &str, path: &Path) -> PortResult<u64> {
        self.put(key, path).await
    }
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> PortResult<()> {
        self.refuse()?;
        self.inner.put_bytes(key, bytes).await
    }
    async fn get(&self, key: &str) -> PortResult<Artifact> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> PortResult<()> {
        self.inner.delete(key).await
    }
}

struct Setup {
    dir: PathBuf,
    store: SqliteStore,
    artifacts: Arc<Restarting>,
    runner: Arc<JobRunner>,
    url: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A job repository that prints to stdout and writes `output/result.txt`, and a runner.
async fn setup(refusals: u32, upload_retry_secs: u64) -> Setup {
    setup_with(refusals, upload_retry_secs, 0, 4).await
}

/// As [`setup`], the job also writing `output/part-<n>.txt` for n below `parts`, and the
/// worker storing up to `upload_concurrency` files at once.
async fn setup_with(
    refusals: u32,
    upload_retry_secs: u64,
    parts: usize,
    upload_concurrency: usize,
) -> Setup {
    let dir = std::env::temp_dir().join(format!("jobq-uploads-{}", uuid::Uuid::new_v4().simple()));
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("package.json"),
        r#"{"name": "t", "version": "1.0.0", "scripts": {"start": "node index.js"}}"#,
    )
    .unwrap();
    std::fs::write(
        repo.join("index.js"),
        "require('fs').mkdirSync('output', {recursive: true});\n\
         require('fs').writeFileSync('output/result.txt', 'done\\n');\n\
         for (let n = 0; n < Number(process.env.PARTS || 0); n++)\n\
           require('fs').writeFileSync(`output/part-${n}.txt`, `part ${n}\\n`);\n\
         console.log('the job ran');\n"
            .replace("process.env.PARTS", &parts.to_string()),
    )
    .unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-qm", "job"],
    ] {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }
    let store = SqliteStore::in_memory().unwrap();
    let artifacts = Arc::new(Restarting {
        inner: LocalArtifactStore::new(dir.join("artifacts")).unwrap(),
        refusals: AtomicU32::new(refusals),
        refused: AtomicU32::new(0),
        put_delay_ms: AtomicU64::new(0),
        in_flight: AtomicU32::new(0),
        most_in_flight: AtomicU32::new(0),
    });
    let bus = Arc::new(InProcessBus::new());
    let ports = Ports {
        store: Arc::new(store.clone()),
        events: bus.clone(),
        artifacts: artifacts.clone(),
        dispatch: bus,
    };
    let settings = WorkerSettings {
        allow_local_repos: true,
        upload_retry_secs,
        upload_concurrency,
        job_timeout_secs: 60,
        ..WorkerSettings::default()
    };
    let runner = Arc::new(
        JobRunner::new("w1".into(), ports, settings, dir.join("work"))
            .await
            .expect("a runner (the job sandbox must work here)"),
    );
    Setup {
        url: format!("file://{}", repo.display()),
        dir,
        store,
        artifacts,
        runner,
    }
}

/// Submits, claims and runs one job to its end; returns it as stored afterwards.
async fn run_one(s: &Setup) -> Job {
    let spec = JobSpec {
        url: s.url.clone(),
        args: String::new(),
        config: String::new(),
    };
    let now = OffsetDateTime::now_utc();
    let job = Job::new("alice", spec, now);
    s.store.insert(&job).await.unwrap();
    let claimed = s
        .store
        .claim(&job.id, 1, "w1", Duration::from_secs(8), now)
        .await
        .unwrap()
        .expect("claimed");
    s.runner
        .clone()
        .run_claimed(claimed, CancellationToken::new())
        .await;
    s.store.get(&job.id).await.unwrap().unwrap()
}

async fn text(s: &Setup, key: &str) -> String {
    let mut artifact = s.artifacts.get(key).await.expect(key);
    let mut out = String::new();
    artifact.body.read_to_string(&mut out).await.unwrap();
    out
}

async fn uploads_refused_for_a_while_are_retried_and_the_job_finishes_with_every_file() {
    let s = setup(4, 30).await;
    let job = run_one(&s).await;
    assert_eq!(job.status, JobStatus::Finished, "{:?}", job.failure);
    assert!(s.artifacts.refused.load(Ordering::SeqCst) >= 4);
    let stdout = text(&s, &artifact_keys::stdout(&job.id)).await;
    assert_eq!(job.output_files, ["result.txt"], "stdout: {stdout}");
    assert_eq!(
        text(&s, &artifact_keys::output(&job.id, "result.txt").unwrap()).await,
        "done\n"
    );
    assert!(
        text(&s, &artifact_keys::stdout(&job.id))
            .await
            .contains("the job ran")
    );
    // The job's folder goes once the job has ended, beside the next one.
    s.runner.cleaned_up().await;
    let folder = s
        .dir
        .join("work/jobs")
        .join(format!("{}-{}", job.id, job.attempt));
    assert!(
        s.dir.join("work/jobs").is_dir(),
        "the jobs' folders are there"
    );
    assert!(!folder.exists(), "{} left", folder.display());
}

async fn a_store_away_past_the_retry_time_hands_the_job_back_instead_of_ending_it() {
    let s = setup(u32::MAX, 1).await;
    let job = run_one(&s).await;
    assert_eq!(job.status, JobStatus::Queued, "handed back, not failed");
    assert_eq!(job.attempt, 2, "the next attempt");
    assert!(job.lease_owner.is_none());
    assert!(job.output_files.is_empty());
    assert!(job.failure.is_none());
    // The hand-back is in the job's attempt history, with why.
    let [back] = &job.attempts[..] else {
        panic!("one ended attempt: {:?}", job.attempts);
    };
    assert_eq!(
        (back.attempt, back.outcome),
        (1, AttemptOutcome::HandedBack)
    );
    assert_eq!(back.worker.as_deref(), Some("w1"));
    let reason = back.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("artifact store stayed unavailable"),
        "{reason}"
    );
    // Then the store comes back and the next attempt finishes with its files.
    s.artifacts.refusals.store(0, Ordering::SeqCst);
    let now = OffsetDateTime::now_utc();
    let claimed = s
        .store
        .claim(&job.id, 2, "w1", Duration::from_secs(8), now)
        .await
        .unwrap()
        .expect("attempt 2 claimed");
    s.runner
        .clone()
        .run_claimed(claimed, CancellationToken::new())
        .await;
    let done = s.store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Finished, "{:?}", done.failure);
    assert_eq!(done.attempt, 2);
    assert_eq!(done.output_files, ["result.txt"]);
    let outcomes: Vec<_> = done
        .attempts
        .iter()
        .map(|a| (a.attempt, a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::HandedBack),
            (2, AttemptOutcome::Finished)
        ]
    );
}

async fn a_run_s_files_are_stored_several_at_once_and_every_one_is_listed() {
    let s = setup_with(0, 30, 10, 3).await;
    s.artifacts.put_delay_ms.store(50, Ordering::SeqCst);
    let job = run_one(&s).await;
    assert_eq!(job.status, JobStatus::Finished, "{:?}", job.failure);
    let mut expected: Vec<String> = (0..10).map(|n| format!("part-{n}.txt")).collect();
    expected.push("result.txt".into());
    expected.sort();
    assert_eq!(job.output_files, expected);
    for n in 0..10 {
        let key = artifact_keys::output(&job.id, &format!("part-{n}.txt")).unwrap();
        assert_eq!(text(&s, &key).await, format!("part {n}\n"));
    }
    assert!(
        text(&s, &artifact_keys::stdout(&job.id))
            .await
            .contains("the job ran")
    );
    let stored = s
        .artifacts
        .list(&format!("jobs/{}/", job.id))
        .await
        .unwrap();
    assert_eq!(stored.len(), 13, "two logs and 11 outputs: {stored:?}");
    // 13 files of 50 ms each, at most 3 at a time.
    assert_eq!(s.artifacts.most_in_flight.load(Ordering::SeqCst), 3);
}

async fn a_store_away_with_files_in_flight_still_hands_the_job_back() {
    let s = setup_with(u32::MAX, 1, 10, 4).await;
    let job = run_one(&s).await;
    assert_eq!(job.status, JobStatus::Queued, "handed back, not failed");
    assert_eq!(job.attempt, 2, "the next attempt");
    assert!(job.output_files.is_empty());
    assert!(s.artifacts.most_in_flight.load(Ordering::SeqCst) > 1);
    // Nothing of the first attempt is stored: every write was refused.
    assert!(
        s.artifacts
            .list(&format!("jobs/{}/", job.id))
            .await
            .unwrap()
            .is_empty()
    );
}

/// This process's job shims waiting for a job: (pid, their cgroup folders).
fn standby_shims() -> Vec<(u32, Vec<PathBuf>)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let (state, parent) = (fields.first().copied(), fields.get(1).copied());
        if args
            .iter()
            .any(|a| a == jobq_worker::shim::COMMAND_ON_STDIN)
            && args.get(2).map(String::as_str) == Some(me.as_str())
            && parent == Some(me.as_str())
            && state != Some("Z")
        {
            let cgroups = args[3]
                .split(':')
                .filter(|f| !f.is_empty())
                .map(|f| Path::new(f).parent().unwrap().to_path_buf())
                .collect();
            found.push((pid, cgroups));
        }
    }
    found
}

/// A job takes a shim started ahead of it (its cgroup joined before the job came), the
/// runner starts the next one while the job runs, and the worker's exit stops every standby
/// shim and removes its cgroup.
async fn jobs_take_standby_shims_and_the_worker_s_exit_stops_them() {
    let s = setup(0, 30).await;
    assert!(standby_shims().is_empty(), "standby shims before any job");
    let first = run_one(&s).await;
    assert_eq!(first.status, JobStatus::Finished, "{:?}", first.failure);
    let standby = standby_shims();
    assert_eq!(standby.len(), 1, "one standby shim per slot: {standby:?}");
    let (pid, cgroups) = standby[0].clone();
    for dir in &cgroups {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.split_whitespace().any(|p| p == pid.to_string()),
            "the standby shim joined {}: {procs}",
            dir.display()
        );
    }
    // The next job runs in that shim's cgroup; a new standby shim takes its place.
    let second = run_one(&s).await;
    assert_eq!(second.status, JobStatus::Finished, "{:?}", second.failure);
    assert!(
        text(&s, &artifact_keys::stdout(&second.id))
            .await
            .contains("the job ran")
    );
    let after = standby_shims();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].0, pid, "the second job took the standby shim");
    for dir in &cgroups {
        assert!(
            !dir.exists(),
            "the used cgroup {} was not removed",
            dir.display()
        );
    }
    s.runner.cleaned_up().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !standby_shims().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "standby shims outlived the worker's exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for dir in &after[0].1 {
        assert!(
            !dir.exists(),
            "the standby cgroup {} was not removed",
            dir.display()
        );
    }
}

fn main() {
    jobq_worker::shim::run_if_requested();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let mut ran = 0;
    let name = "uploads_refused_for_a_while_are_retried_and_the_job_finishes_with_every_file";
    if chosen(name) {
        runtime.block_on(
            uploads_refused_for_a_while_are_retried_and_the_job_finishes_with_every_file(),
        );
        println!("test {name} ... ok");
        ran += 1;
    }
    let name = "a_store_away_past_the_retry_time_hands_the_job_back_instead_of_ending_it";
    if chosen(name) {
        runtime
            .block_on(a_store_away_past_the_retry_time_hands_the_job_back_instead_of_ending_it());
        println!("test {name} ... ok");
        ran += 1;
    }
    let name = "a_run_s_files_are_stored_several_at_once_and_every_one_is_listed";
    if chosen(name) {
        runtime.block_on(a_run_s_files_are_stored_several_at_once_and_every_one_is_listed());
        println!("test {name} ... ok");
        ran += 1;
    }
    let name = "a_store_away_with_files_in_flight_still_hands_the_job_back";
    if chosen(name) {
        runtime.block_on(a_store_away_with_files_in_flight_still_hands_the_job_back());
        println!("test {name} ... ok");
        ran += 1;
    }
    let name = "jobs_take_standby_shims_and_the_worker_s_exit_stops_them";
    if chosen(name) {
        runtime.block_on(jobs_take_standby_shims_and_the_worker_s_exit_stops_them());
        println!("test {name} ... ok");
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed; 0 failed");
}
