//! `jobq standalone`: the frontend, the workers and the observer in one process, on the
//! embedded backends (SQLite state, artifacts in a directory, an in-process bus, the
//! built-in token issuer). Nothing else to install but git and Node.js.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jobq_common::domain::JobStatus;
use jobq_common::embedded::{InProcessBus, LocalArtifactStore, LocalIdentity, SqliteStore};
use jobq_common::settings::Settings;
use jobq_frontend::AppState;
use jobq_observer::LeaseReaper;
use jobq_worker::{JobRunner, Ports};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What `jobq standalone` is told on its command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub workers: usize,
}

/// In-process workers, each running one job at a time, taking the oldest queued job
/// from the store.
struct WorkerPool {
    runner: Arc<JobRunner>,
    store: SqliteStore,
    bus: Arc<InProcessBus>,
    hand_back: CancellationToken,
    members: Vec<CancellationToken>,
    tasks: JoinSet<()>,
    next_id: usize,
}

impl WorkerPool {
    /// Grows or shrinks the pool to `n` workers; a stopped worker first finishes its job.
    fn resize(&mut self, n: usize) {
        while self.members.len() < n {
            let stop = CancellationToken::new();
            self.members.push(stop.clone());
            let name = format!("{}-{}", self.runner.worker_id, self.next_id);
            self.next_id += 1;
            let (runner, store, bus, hand_back) = (
                self.runner.clone(),
                self.store.clone(),
                self.bus.clone(),
                self.hand_back.clone(),
            );
            self.tasks
                .spawn(work_loop(name, runner, store, bus, stop, hand_back));
        }
        while self.members.len() > n {
            if let Some(stop) = self.members.pop() {
                stop.cancel();
            }
        }
    }

    /// Stops taking jobs, lets running ones finish for `grace`, then hands the rest back.
    async fn shutdown(mut self, grace: Duration) {
        self.resize(0);
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => if joined.is_none() { return },
                _ = &mut deadline, if !self.hand_back.is_cancelled() => self.hand_back.cancel(),
            }
        }
    }
}

async fn work_loop(
    name: String,
    runner: Arc<JobRunner>,
    store: SqliteStore,
    bus: Arc<InProcessBus>,
    stop: CancellationToken,
    hand_back: CancellationToken,
) {
    while !stop.is_cancelled() {
        let now = OffsetDateTime::now_utc();
        match store
            .claim_next(&runner.worker_id, runner.lease(), now)
            .await
        {
            Ok(Some(job)) => {
                tracing::info!(worker = %name, job_id = %job.id, attempt = job.attempt, "job claimed");
                let event = jobq_worker::runner::event(
                    &job,
                    JobStatus::Queued,
                    JobStatus::Running,
                    &name,
                    now,
                );
                runner.publish(event).await;
                runner.clone().run_claimed(job, hand_back.clone()).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = bus.work_available() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs everything until SIGINT or SIGTERM.
pub async fn run(mut settings: Settings, options: Options) -> anyhow::Result<()> {
    let data = options.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let data = data.canonicalize().unwrap_or(data);
    settings.worker.allow_local_repos |= settings.standalone.allow_local_repos;
    if settings.worker.work_dir.as_os_str().is_empty() {
        settings.worker.work_dir = data.join("work");
    }

    let store = SqliteStore::open(&data.join("jobq.sqlite3")).context("state")?;
    let artifacts = Arc::new(LocalArtifactStore::new(data.join("artifacts")).context("artifacts")?);
    let bus = Arc::new(InProcessBus::new());
    let identity = Arc::new(
        LocalIdentity::new(
            &settings.standalone.users,
            &data.join("token-key.p8"),
            Duration::from_secs(settings.standalone.token_lifetime_secs),
            settings.oidc.leeway_secs,
        )
        .context("users")?,
    );

    let (requeued, failed) = store
        .recover_running(settings.worker.max_attempts, OffsetDateTime::now_utc())
        .await?;
    if requeued + failed > 0 {
        tracing::warn!(
            requeued,
            failed,
            "jobs that were running when jobq last stopped"
        );
    }

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        jobs: Arc::new(store.clone()),
        dispatch: bus.clone(),
        events: bus.clone(),
        artifacts: artifacts.clone(),
        observations: Arc::new(store.clone()),
        tokens: identity.clone(),
        login: identity,
        limits: settings.frontend.clone(),
        admin_role: settings.oidc.admin_role.as_str().into(),
        allow_local_repos: settings.worker.allow_local_repos,
        metrics: jobq_frontend::metrics_handle(),
    };

    let ports = Ports {
        store: Arc::new(store.clone()),
        events: bus.clone(),
        artifacts,
        dispatch: bus.clone(),
    };
    let worker_id = format!("standalone-{}", std::process::id());
    let work_root = settings.worker.work_dir.join(&worker_id);
    let runner = Arc::new(JobRunner::new(
        worker_id,
        ports.clone(),
        settings.worker.clone(),
        work_root.clone(),
    ));
    let mut pool = WorkerPool {
        runner,
        store: store.clone(),
        bus: bus.clone(),
        hand_back: CancellationToken::new(),
        members: Vec::new(),
        tasks: JoinSet::new(),
        next_id: 0,
    };
    pool.resize(options.workers);

    let shutdown = jobq_common::shutdown::on_signal();
    let reaper = LeaseReaper {
        store: ports.store.clone(),
        dispatch: bus.clone(),
        events: bus.clone(),
        max_attempts: settings.worker.max_attempts,
        redispatch_after: Duration::from_secs(settings.worker.redispatch_after_secs),
    };
    let reaper_task = {
        let shutdown = shutdown.clone();
        let every = Duration::from_millis((settings.worker.lease_secs * 1000 / 3).max(500));
        tokio::spawn(async move { reaper.run(every, shutdown).await })
    };

    print_banner(addr, &data, options.workers);
    let http = {
        let shutdown = shutdown.clone();
        axum::serve(listener, jobq_frontend::router(state))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
    };
    let served = http.await.context("serving http");
    tracing::info!("stopping workers");
    pool.shutdown(Duration::from_secs(settings.worker.shutdown_grace_secs))
        .await;
    let _ = reaper_task.await;
    let _ = tokio::fs::remove_dir_all(&work_root).await;
    served
}

fn print_banner(addr: SocketAddr, data: &std::path::Path, workers: usize) {
    let url = format!("http://{addr}");
    println!(
        "jobq standalone listening on {url}
  data directory: {}
  workers: {workers} (in-process)
  users: myuser/1234, otheruser/abcd, admin/admin (unless standalone.users says otherwise)

Try it:
  TOKEN=$(curl -s {url}/auth/myuser/1234 | python3 -c 'import sys,json; print(json.load(sys.stdin)[\"token\"])')
  curl -s -X POST {url}/api/addJob -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\
       -d \"{{\\\"url\\\": \\\"$(scripts/example-repo.sh)\\\", \\\"args\\\": \\\"Ada\\\"}}\"
  curl -s {url}/api/status -H \"Authorization: Bearer $TOKEN\"",
        data.display()
    );
}
