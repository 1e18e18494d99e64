//! `jobq standalone`: the frontend, the workers and the observer in one process, on the
//! embedded backends (SQLite state, artifacts in a directory, an in-process bus, the
//! built-in token issuer). Nothing else to install but git and Node.js.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jobq_common::domain::JobId;
use jobq_common::embedded::bus::BusIntake;
use jobq_common::embedded::{InProcessBus, LocalArtifactStore, LocalIdentity, SqliteStore};
use jobq_common::settings::Settings;
use jobq_frontend::AppState;
use jobq_observer::observe::{BusEvents, Fleet, Sensed};
use jobq_observer::scaler::BusyWorkers;
use jobq_observer::{Controller, Governor, LeaseReaper, policy};
use jobq_worker::{JobRunner, Ports};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What `jobq standalone` is told on its command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A fixed number of in-process workers; `None` lets the observer choose between
    /// `observer.min_workers` and `observer.max_workers`.
    pub workers: Option<usize>,
}

/// In-process workers, each running one job at a time through the same worker loop as
/// `jobq worker`, on the in-process intake (they take the oldest queued job from the store).
struct WorkerPool {
    runner: Arc<JobRunner>,
    bus: Arc<InProcessBus>,
    hand_back: CancellationToken,
    members: Vec<CancellationToken>,
    tasks: JoinSet<()>,
    next_id: usize,
}

impl WorkerPool {
    fn len(&self) -> usize {
        self.members.len()
    }

    /// Grows or shrinks the pool to `n` workers; a stopped worker first finishes its job.
    fn resize(&mut self, n: usize) {
        while self.members.len() < n {
            let stop = CancellationToken::new();
            self.members.push(stop.clone());
            let name = format!("{}-{}", self.runner.worker_id, self.next_id);
            self.next_id += 1;
            let (runner, intake, hand_back) = (
                self.runner.clone(),
                BusIntake::new(self.bus.clone()),
                self.hand_back.clone(),
            );
            self.tasks.spawn(async move {
                jobq_worker::work(intake, runner, &name, 1, stop, hand_back).await
            });
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

    let recovered = jobq_common::store::recover_running(
        &store,
        settings.worker.max_attempts,
        OffsetDateTime::now_utc(),
    )
    .await?;
    if !recovered.is_empty() {
        let failed = recovered
            .iter()
            .filter(|e| e.to == jobq_common::domain::JobStatus::Failed)
            .count();
        let requeued = recovered.len() - failed;
        tracing::warn!(
            requeued,
            failed,
            "jobs that were running when jobq last stopped"
        );
    }
    for event in &recovered {
        if let Err(e) = jobq_common::ports::EventBus::publish(bus.as_ref(), event).await {
            tracing::warn!(job_id = %event.job_id, error = %e, "job event not published");
        }
    }

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let mut state = AppState {
        jobs: Arc::new(store.clone()),
        idempotency: Arc::new(store.clone()),
        dispatch: bus.clone(),
        events: bus.clone(),
        artifacts: artifacts.clone(),
        observations: Arc::new(store.clone()),
        tokens: identity.clone(),
        login: identity,
        limits: settings.frontend.clone(),
        admin_role: settings.oidc.admin_role.as_str().into(),
        allow_local_repos: settings.worker.allow_local_repos,
        scheduling: settings.scheduling.clone(),
        fair_clock: Default::default(),
        plans: Default::default(),
        metrics: jobq_frontend::metrics_handle(),
        live: jobq_frontend::LiveEvents::new(),
        dashboard: jobq_frontend::Dashboard::form(&settings.observer),
    };
    state
        .live
        .spawn_feed(state.jobs.clone(), jobq_frontend::live::bus_feed(&bus));

    let ports = Ports {
        store: Arc::new(store.clone()),
        events: bus.clone(),
        artifacts,
        dispatch: bus.clone(),
    };
    let worker_id = format!("standalone-{}", std::process::id());
    let work_root = settings.worker.work_dir.join(&worker_id);
    let runner = Arc::new(
        JobRunner::new(
            worker_id,
            ports.clone(),
            settings.worker.clone(),
            work_root.clone(),
        )
        .await
        .context("job sandbox")?
        .with_scheduling(settings.scheduling.clone()),
    );
    let mut pool = WorkerPool {
        runner,
        bus: bus.clone(),
        hand_back: CancellationToken::new(),
        members: Vec::new(),
        tasks: JoinSet::new(),
        next_id: 0,
    };
    let (min, max) = match options.workers {
        Some(n) => (n as u32, n as u32),
        None => (settings.observer.min_workers, settings.observer.max_workers),
    };
    settings.observer.min_workers = min;
    settings.observer.max_workers = max;
    state.dashboard.policy = (&settings.observer).into();
    state.dashboard.policy.scaler = "in-process".into();
    pool.resize(min as usize);

    let shutdown = jobq_common::shutdown::on_signal();
    let reaper = LeaseReaper {
        store: Arc::new(store.clone()),
        dispatch: bus.clone(),
        events: bus.clone(),
        max_attempts: settings.worker.max_attempts,
        redispatch_after: Duration::from_secs(settings.worker.redispatch_after_secs),
        undelivered: Default::default(),
        counted_users: Default::default(),
    };
    let reaper_task = {
        let shutdown = shutdown.clone();
        let every = jobq_common::settings::sweep_interval(&settings.worker);
        tokio::spawn(async move { reaper.run(every, shutdown).await })
    };

    let observing = {
        let (shutdown, store, bus) = (shutdown.clone(), store.clone(), bus.clone());
        let controller = Controller::new(
            policy::from_settings(&settings.observer),
            Governor::from_settings(&settings.observer),
            1,
        );
        let period = Duration::from_secs_f64(settings.observer.refresh_rate_secs);
        let observer = settings.observer.clone();
        tokio::spawn(async move {
            observe(controller, period, pool, store, bus, observer, shutdown).await
        })
    };

    print_banner(addr, &data, options.workers, (min, max));
    let http = {
        let (shutdown, live) = (shutdown.clone(), state.live.clone());
        axum::serve(
            jobq_frontend::wire::JsonErrorListener(listener),
            jobq_frontend::router(state),
        )
        .with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            // Live streams never end by themselves; the graceful shutdown waits for them.
            live.close();
        })
    };
    let served = http.await.context("serving http");
    tracing::info!("stopping workers");
    match observing.await {
        Ok(pool) => {
            pool.shutdown(Duration::from_secs(settings.worker.shutdown_grace_secs))
                .await
        }
        Err(e) => {
            tracing::error!(error = %e, "the observer task failed; running jobs will be re-queued at the next start")
        }
    }
    let _ = reaper_task.await;
    let _ = tokio::fs::remove_dir_all(&work_root).await;
    served
}

/// The standalone fleet: the in-process pool, its queue the store's queued jobs.
struct PoolFleet {
    pool: WorkerPool,
    store: SqliteStore,
}

#[async_trait::async_trait]
impl Fleet for PoolFleet {
    async fn sense(&mut self) -> Sensed {
        let workers = self.pool.len() as u32;
        Sensed {
            queue_depth: self.store.queued().await.ok(),
            workers,
            current: workers,
            partitions: u32::MAX,
        }
    }

    async fn scale(&mut self, desired: u32, _slots_per_worker: u32, _busy: &BusyWorkers) {
        let workers = self.pool.len() as u32;
        if desired != workers {
            tracing::info!(from = workers, to = desired, "scaling in-process workers");
            self.pool.resize(desired as usize);
        }
    }
}

/// The observer of the standalone process: the shared observe loop on the in-process bus
/// and pool (observations stored for `/health/load`, published, exported as gauges).
/// Returns the pool at shutdown.
async fn observe(
    mut controller: Controller<JobId, String>,
    period: Duration,
    pool: WorkerPool,
    store: SqliteStore,
    bus: Arc<InProcessBus>,
    settings: jobq_common::settings::ObserverSettings,
    shutdown: CancellationToken,
) -> WorkerPool {
    let mut feed = BusEvents(bus.subscribe());
    let mut fleet = PoolFleet {
        pool,
        store: store.clone(),
    };
    let mut planning = jobq_observer::observe::Planning {
        jobs: &store,
        planner: jobq_observer::planner::Planner::from_settings(&settings),
    };
    jobq_observer::observe::observe(
        &mut controller,
        period,
        &mut fleet,
        &mut feed,
        &mut planning,
        &store,
        bus.as_ref(),
        &shutdown,
    )
    .await;
    fleet.pool
}

fn print_banner(
    addr: SocketAddr,
    data: &std::path::Path,
    workers: Option<usize>,
    (min, max): (u32, u32),
) {
    let workers = match workers {
        Some(n) => format!("{n} (fixed)"),
        None => format!("{min} to {max}, sized by the observer"),
    };
    let url = format!("http://{addr}");
    println!(
        "jobq standalone listening on {url}
  data directory: {}
  workers: {workers} (in-process)
  users: myuser/1234, otheruser/abcd, admin/admin (unless standalone.users says otherwise)

Open {url}/ in a browser for the dashboard, or try it with curl:
  TOKEN=$(curl -s {url}/auth/myuser/1234 | python3 -c 'import sys,json; print(json.load(sys.stdin)[\"token\"])')
  curl -s -X POST {url}/api/addJob -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\
       -d \"{{\\\"url\\\": \\\"$(scripts/example-repo.sh)\\\", \\\"args\\\": \\\"Ada\\\"}}\"
  curl -s {url}/api/status -H \"Authorization: Bearer $TOKEN\"",
        data.display()
    );
}
