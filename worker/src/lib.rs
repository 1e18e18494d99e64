//! jobq-worker: takes jobs from an [`Intake`] (the Kafka topic `jobs` as one consumer group,
//! or the in-process bus of `jobq standalone`), fences each in the store (a conditional
//! `queued → running` claim with a lease and the attempt number), runs it, uploads its logs
//! and outputs, and records how it ended. A free slot with nothing in hand also claims from
//! the store a job that has waited past a short threshold, wherever its message is.
//!
//! Kafka rules for long jobs (docs/dispatch.md): the consumer keeps polling all the time;
//! while every slot is busy its partitions are paused; an offset is stored only after the
//! claim, so a worker that dies before it leaves the message to another worker, and one
//! that dies after it is covered by the lease.

pub mod cgroup;
pub mod executor;
pub mod probe;
pub mod repo;
pub mod runner;
pub mod sandbox;
pub mod shim;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jobq_common::domain::{Dispatch, Job, JobStatus};
use jobq_common::kafka::{
    GroupConsumerOptions, KafkaAdmin, KafkaDispatch, KafkaEventBus, KafkaIntake, KafkaProducer,
    group_consumer,
};
use jobq_common::mongo::MongoJobStore;
use jobq_common::ports::{Intake, Offer};
use jobq_common::s3::S3ArtifactStore;
use jobq_common::settings::{KafkaSettings, Settings};
use rdkafka::consumer::{Consumer, DefaultConsumerContext, StreamConsumer};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use runner::{JobRunner, Ports};

/// A name for this worker process, unique across hosts and restarts.
pub fn worker_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".into());
    let nonce = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{}-{nonce}", std::process::id())
}

/// Where this worker keeps its files: `worker.work_dir` (or the temp dir) / worker id.
pub fn work_root(settings: &Settings, worker_id: &str) -> PathBuf {
    let base = if settings.worker.work_dir.as_os_str().is_empty() {
        std::env::temp_dir().join("jobq-worker")
    } else {
        settings.worker.work_dir.clone()
    };
    base.join(worker_id)
}

/// Connects the production adapters a worker needs.
pub async fn connect_ports(settings: &Settings) -> anyhow::Result<Ports> {
    let producer = KafkaProducer::new(&settings.kafka.brokers).context("kafka")?;
    let store = MongoJobStore::connect(&settings.mongo)
        .await
        .context("mongodb")?;
    let artifacts = S3ArtifactStore::connect(&settings.s3).await.context("s3")?;
    Ok(Ports {
        store: Arc::new(store),
        events: Arc::new(KafkaEventBus::new(
            producer.clone(),
            &settings.kafka.events_topic,
            &settings.kafka.observations_topic,
        )),
        artifacts: Arc::new(artifacts),
        dispatch: Arc::new(KafkaDispatch::new(producer, &settings.kafka.jobs_topic)),
    })
}

/// Whether a start-up error may go away by itself (a server not answering yet), as opposed
/// to a configuration it refuses (a bad URI, wrong credentials).
fn retryable(e: &anyhow::Error) -> bool {
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<jobq_common::PortError>())
    {
        Some(port) => port.kind == jobq_common::ErrorKind::Unavailable,
        None => false,
    }
}

/// Announces a job this worker claimed and runs it in a slot of its own.
fn start_claimed(
    runner: &Arc<JobRunner>,
    name: &str,
    job: Job,
    now: OffsetDateTime,
    permit: OwnedSemaphorePermit,
    hand_back: &CancellationToken,
    running: &mut JoinSet<()>,
) {
    // The running event goes out beside the run, not before it: with the broker away (a
    // store look can claim a job then) its delivery may take the producer's whole timeout,
    // and the job's lease is renewed only once the job runs; waiting would let the lease
    // expire and the job be lost, attempt after attempt. The slot is free again as soon as
    // the job's end is recorded, whether or not its events were delivered yet.
    runner.announce(runner::event(
        &job,
        JobStatus::Queued,
        JobStatus::Running,
        name,
        now,
    ));
    let (runner, hand_back) = (runner.clone(), hand_back.clone());
    running.spawn(async move {
        runner.run_claimed(job, hand_back).await;
        drop(permit);
    });
}

/// A free slot with no offer in hand looks in the store for a job that has waited longer
/// than the intake's [`Intake::claim_waiting_after`] (in Kafka mode its message is behind a
/// busy worker's partition, or was re-dispatched there), at first every `LOOK_MIN`, backing
/// off to [`Intake::look_max`] while none is found; once more at once when one of its jobs
/// ends (before it takes an offer it holds) or a wake-up comes, and again and again while
/// looks find jobs.
const LOOK_MIN: Duration = Duration::from_millis(250);

/// When the next look in the store is due.
struct Looks {
    every: Duration,
    next: Instant,
}

impl Looks {
    fn new() -> Self {
        Self {
            every: LOOK_MIN,
            next: Instant::now() + LOOK_MIN,
        }
    }

    fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    fn until_due(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    /// Look once now (a slot freed, a wake-up); the back-off goes on from where it was, so
    /// a busy fleet's job ends cost one look each, not a fresh run of quick ones.
    fn now(&mut self) {
        self.next = Instant::now();
    }

    /// After a look: at once again if it found a job (more may wait; the back-off starts
    /// afresh from `LOOK_MIN`), else after `every` doubled up to `max`, with a little jitter
    /// so idle workers do not look in step.
    fn after(&mut self, found: bool, max: Duration) {
        if found {
            self.every = LOOK_MIN;
            self.next = Instant::now();
            return;
        }
        self.every = (self.every * 2).min(max);
        self.next = Instant::now() + self.every.mul_f64(0.9 + 0.2 * rand_fraction());
    }
}

/// An offer means work may wait: claims the next waiting job by the scheduling rules
/// (whichever job the offer named: its own message wakes some slot, and the claim follows
/// priority, fair share and quotas, not message order) and, if one was claimed, starts it.
/// The offer is settled either way (only after the claim: from here on the store, not the
/// intake, tracks the job; a job left waiting is the next look's to take).
#[allow(clippy::too_many_arguments)]
async fn take<I: Intake>(
    intake: &mut I,
    runner: &Arc<JobRunner>,
    name: &str,
    dispatch: Dispatch,
    ticket: I::Ticket,
    permit: OwnedSemaphorePermit,
    hand_back: &CancellationToken,
    running: &mut JoinSet<()>,
) {
    let now = OffsetDateTime::now_utc();
    match runner
        .ports()
        .store
        .claim_next(&runner.worker_id, runner.lease(), &runner.pick(None), now)
        .await
    {
        Ok(Some(job)) => {
            intake.settle(&ticket);
            tracing::info!(worker = %name, job_id = %job.id, attempt = job.attempt, offered = %dispatch.id, "job claimed");
            start_claimed(runner, name, job, now, permit, hand_back, running);
        }
        // Nothing may start now: the offered job was taken, cancelled, is a stale attempt,
        // waits for its time, or its owner is at the running limit.
        Ok(None) => intake.settle(&ticket),
        Err(e) => {
            tracing::warn!(error = %e, job_id = %dispatch.id, "claim failed; the offer will come again");
            intake.again(&ticket);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Looks in the store for the next waiting job (by the scheduling rules) among those that
/// have waited past the intake's threshold and, if found, starts it. Returns whether one was
/// found.
async fn claim_waiting<I: Intake>(
    intake: &I,
    runner: &Arc<JobRunner>,
    name: &str,
    permit: OwnedSemaphorePermit,
    hand_back: &CancellationToken,
    running: &mut JoinSet<()>,
) -> bool {
    let now = OffsetDateTime::now_utc();
    metrics::counter!("jobq_worker_waiting_looks_total").increment(1);
    let pick = runner.pick(Some(now - intake.claim_waiting_after()));
    match runner
        .ports()
        .store
        .claim_next(&runner.worker_id, runner.lease(), &pick, now)
        .await
    {
        Ok(Some(job)) => {
            tracing::info!(worker = %name, job_id = %job.id, attempt = job.attempt, "waiting job claimed from the store");
            metrics::counter!("jobq_worker_waiting_claims_total").increment(1);
            start_claimed(runner, name, job, now, permit, hand_back, running);
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for waiting jobs");
            false
        }
    }
}

/// How long a stopping worker waits for the job events still on their way to the bus.
const EVENTS_WAIT_AT_EXIT: Duration = Duration::from_secs(5);

/// The worker loop, the same for `jobq worker` (Kafka intake, several slots) and for the
/// in-process workers of `jobq standalone` (bus intake, one slot each): takes offers while
/// a slot is free, holds the next one while every slot is busy, lets any free slot claim
/// from the store a job that has waited past the intake's threshold (a slot freed while an
/// offer is held looks first). After `stop` it takes
/// nothing more and returns once its running jobs have ended (`hand_back` makes them end
/// early, handed back to the queue).
pub async fn work<I: Intake>(
    mut intake: I,
    runner: Arc<JobRunner>,
    name: &str,
    slots: usize,
    stop: CancellationToken,
    hand_back: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(slots.max(1)));
    let mut running = JoinSet::new();
    // The next offer, received while every slot was busy and held until one frees. Holding
    // it costs other workers nothing: they claim its job from the store if it waits long.
    let mut held: Option<(Dispatch, I::Ticket)> = None;
    let mut looks = Looks::new();
    loop {
        // A freed slot looks in the store before it takes the offer it holds: with every slot
        // busy, the jobs that have waited longest (a lost worker's job queued again, say) are
        // behind other partitions' backlogs, and the store gives the oldest first.
        if slots.available_permits() > 0
            && looks.due()
            && let Ok(permit) = slots.clone().try_acquire_owned()
        {
            let found =
                claim_waiting(&intake, &runner, name, permit, &hand_back, &mut running).await;
            looks.after(found, intake.look_max());
            continue;
        }
        if held.is_some()
            && let Ok(permit) = slots.clone().try_acquire_owned()
            && let Some((dispatch, ticket)) = held.take()
        {
            take(
                &mut intake,
                &runner,
                name,
                dispatch,
                ticket,
                permit,
                &hand_back,
                &mut running,
            )
            .await;
        }
        intake.hold(slots.available_permits() == 0 && held.is_some());
        let idle = match held.is_none() && slots.available_permits() > 0 {
            true => looks.until_due(),
            false => Duration::from_millis(500),
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = running.join_next(), if !running.is_empty() => looks.now(),
            _ = tokio::time::sleep(idle) => {}
            offer = intake.next() => {
                match offer {
                    Offer::Wake => looks.now(),
                    Offer::Unreadable(ticket) => {
                        tracing::warn!(worker = %name, "unreadable dispatch message skipped");
                        intake.settle(&ticket);
                    }
                    // Taken after the held one, in order: their offsets are stored in order.
                    Offer::Job(_, ticket) if held.is_some() => intake.again(&ticket),
                    Offer::Job(dispatch, ticket) => match slots.clone().try_acquire_owned() {
                        Ok(permit) => take(&mut intake, &runner, name, dispatch, ticket, permit, &hand_back, &mut running).await,
                        Err(_) => held = Some((dispatch, ticket)),
                    },
                }
            }
        }
    }
    if let Some((_, ticket)) = held.take() {
        intake.again(&ticket);
    }
    intake.hold(true);
    tracing::info!(worker = %name, running = running.len(), "worker stopping: no new jobs");
    while running.join_next().await.is_some() {}
    runner.cleaned_up().await;
    let undelivered = runner.announced(EVENTS_WAIT_AT_EXIT).await;
    if undelivered > 0 {
        tracing::warn!(worker = %name, undelivered, "job events not delivered before the exit");
    }
    intake.close();
}

/// Connects the ports, waiting with backoff for a store or artifact store that does not
/// answer yet (a worker started as a replacement while a server restarts); only a
/// configuration a server refuses stops it. Kafka is not waited for: the producer and the
/// consumer connect by themselves once the broker answers, and until then a free slot
/// claims queued jobs from the store. `None` when `shutdown` fired first.
async fn connect_until_up(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Ports>> {
    let mut pause = Duration::from_millis(500);
    loop {
        match connect_ports(settings).await {
            Ok(ports) => return Ok(Some(ports)),
            Err(e) if !retryable(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = pause.as_millis() as u64,
                    "cannot reach the servers yet"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(pause) => {}
                }
                // A refused connection costs nothing: try often, so a replacement worker
                // serves within 2 s of the server being back.
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Creates the missing topics of [`jobq_common::kafka::topic_layout`], trying again with
/// backoff (up to 5 s apart) until the broker has them or `shutdown` fires.
async fn ensure_topics_until_done(kafka: KafkaSettings, shutdown: CancellationToken) {
    let mut pause = Duration::from_millis(500);
    loop {
        let ensured = async { KafkaAdmin::new(&kafka.brokers)?.ensure_topics(&kafka).await };
        match ensured.await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "topics not ensured yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs a Kafka worker with `slots` job slots until `shutdown` fires; then it stops taking
/// jobs, lets running ones finish for `worker.shutdown_grace_secs`, hands back the rest,
/// commits its offsets and returns.
pub async fn run(
    settings: Settings,
    slots: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let id = worker_id();
    let Some(ports) = connect_until_up(&settings, &shutdown).await? else {
        return Ok(());
    };
    // The topics are created by whichever service reaches the broker first; this worker does
    // its part in the background and serves store claims meanwhile.
    let topics = tokio::spawn(ensure_topics_until_done(
        settings.kafka.clone(),
        shutdown.clone(),
    ));
    let root = work_root(&settings, &id);
    tokio::fs::create_dir_all(&root)
        .await
        .with_context(|| format!("cannot create {}", root.display()))?;
    let runner = Arc::new(
        JobRunner::new(id.clone(), ports, settings.worker.clone(), root.clone())
            .await
            .context("job sandbox")?
            .with_scheduling(settings.scheduling.clone()),
    );
    let consumer: StreamConsumer = group_consumer(
        &GroupConsumerOptions {
            brokers: &settings.kafka.brokers,
            group: &settings.kafka.worker_group,
            protocol: settings.kafka.group_protocol,
            instance_id: settings.worker.instance_id.as_deref(),
            from_beginning: true,
        },
        DefaultConsumerContext,
    )?;
    consumer
        .subscribe(&[&settings.kafka.jobs_topic])
        .context("subscribe")?;
    let serving = jobq_common::metrics::spawn_server(settings.metrics.listen, shutdown.clone());
    metrics::gauge!("jobq_worker_slots").set(slots as f64);
    tracing::info!(worker = %id, slots, topic = %settings.kafka.jobs_topic, "worker started");

    let intake = KafkaIntake::new(
        consumer,
        settings.kafka.partitions.max(1) as usize,
        Duration::from_millis(settings.worker.claim_waiting_after_ms),
        settings.worker.claim_waiting_budget_per_sec,
    );
    let hand_back = CancellationToken::new();
    let working = work(
        intake,
        runner,
        &id,
        slots,
        shutdown.clone(),
        hand_back.clone(),
    );
    tokio::pin!(working);
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(Duration::from_secs(settings.worker.shutdown_grace_secs)).await;
        tracing::info!("grace period over: handing jobs back");
        hand_back.cancel();
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = &mut working => {}
        _ = grace => {}
    }
    topics.abort();
    let _ = tokio::fs::remove_dir_all(&root).await;
    if let Some(server) = serving {
        let _ = server.await;
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// A random fraction in [0, 1) for jitter (a v4 uuid's random bits: no generator to keep).
pub(crate) fn rand_fraction() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn worker_gauges_reach_the_shared_recorder() {
        let handle = jobq_common::metrics::recorder();
        metrics::gauge!("jobq_worker_slots").set(3.0);
        let text = handle.render();
        assert!(text.contains("jobq_worker_slots 3"), "{text}");
    }
}
