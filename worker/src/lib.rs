//! jobq-worker: takes jobs from the Kafka topic `jobs` as one consumer group, fences each in
//! the store (a conditional `queued → running` claim with a lease and the attempt number),
//! runs it, uploads its logs and outputs, and records how it ended.
//!
//! Kafka rules for long jobs (see ../shared/DESIGN.md): the consumer keeps polling all the
//! time; while every slot is busy its partitions are paused; an offset is stored only after
//! the claim, so a worker that dies before it leaves the message to another worker, and one
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
use jobq_common::domain::{Dispatch, JobStatus};
use jobq_common::kafka::{
    GroupConsumerOptions, KafkaAdmin, KafkaDispatch, KafkaEventBus, KafkaProducer, group_consumer,
    pause_assigned, resume_assigned,
};
use jobq_common::mongo::MongoJobStore;
use jobq_common::s3::S3ArtifactStore;
use jobq_common::settings::Settings;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::message::OwnedMessage;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
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

/// Makes the consumer fetch `message` again (asynchronously: a seek that waits for the
/// fetcher would stall the loop while the partition is paused).
fn rewind(consumer: &StreamConsumer, message: &OwnedMessage) {
    let offset = rdkafka::Offset::Offset(message.offset());
    if let Err(e) = consumer.seek(message.topic(), message.partition(), offset, Duration::ZERO) {
        tracing::warn!(error = %e, partition = message.partition(), offset = message.offset(), "cannot rewind a message");
    }
}

/// Announces a job this worker claimed and runs it in a slot of its own.
async fn start_claimed(
    runner: &Arc<JobRunner>,
    worker: &str,
    job: jobq_common::domain::Job,
    now: OffsetDateTime,
    permit: tokio::sync::OwnedSemaphorePermit,
    hand_back: &CancellationToken,
    running: &mut JoinSet<()>,
) {
    runner
        .publish(runner::event(
            &job,
            JobStatus::Queued,
            JobStatus::Running,
            worker,
            now,
        ))
        .await;
    let (runner, hand_back) = (runner.clone(), hand_back.clone());
    running.spawn(async move {
        runner.run_claimed(job, hand_back).await;
        drop(permit);
    });
}

/// A free slot with no message in hand looks in the store for a job that has waited longer
/// than `worker.claim_waiting_after_ms` (its message is behind a busy worker's partition, or
/// was re-dispatched there), at first every `LOOK_MIN`, backing off to `LOOK_MAX` while none
/// is found, and again at once after any sign of work (a message, a job ending, a find).
const LOOK_MIN: Duration = Duration::from_millis(250);
const LOOK_MAX: Duration = Duration::from_secs(1);

/// Claims the job a dispatch message names and, if this worker won it, stores the offset
/// (only now: from here on the store, not Kafka, tracks the job) and starts it.
async fn take_job(
    consumer: &StreamConsumer,
    runner: &Arc<JobRunner>,
    worker: &str,
    message: &OwnedMessage,
    permit: tokio::sync::OwnedSemaphorePermit,
    hand_back: &CancellationToken,
    running: &mut JoinSet<()>,
) {
    let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
    let dispatch: Dispatch = match message.payload().map(serde_json::from_slice) {
        Some(Ok(d)) => d,
        _ => {
            tracing::warn!(partition, offset, "unreadable dispatch message skipped");
            let _ = consumer.store_offset(topic, partition, offset);
            return;
        }
    };
    let now = OffsetDateTime::now_utc();
    match runner
        .ports()
        .store
        .claim(&dispatch.id, dispatch.attempt, worker, runner.lease(), now)
        .await
    {
        Ok(Some(job)) => {
            let _ = consumer.store_offset(topic, partition, offset);
            tracing::info!(job_id = %job.id, attempt = job.attempt, partition, offset, "job claimed");
            start_claimed(runner, worker, job, now, permit, hand_back, running).await;
        }
        Ok(None) => {
            // Cancelled, already taken, or a stale attempt: nothing to run.
            let _ = consumer.store_offset(topic, partition, offset);
        }
        Err(e) => {
            tracing::warn!(error = %e, job_id = %dispatch.id, "claim failed; the message will come again");
            rewind(consumer, message);
            tokio::time::sleep(Duration::from_secs(1)).await;
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
    // A worker started while a server restarts (a replacement for a lost one, say) waits for
    // it instead of exiting; only a configuration the server refuses stops it.
    let mut pause = Duration::from_millis(500);
    let ports = loop {
        let connected = async {
            let ports = connect_ports(&settings).await?;
            KafkaAdmin::new(&settings.kafka.brokers)?
                .ensure_topics(&settings.kafka)
                .await
                .context("topics")?;
            anyhow::Ok(ports)
        };
        match connected.await {
            Ok(ports) => break ports,
            Err(e) if !retryable(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = pause.as_millis() as u64,
                    "cannot reach the servers yet"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    };
    let root = work_root(&settings, &id);
    tokio::fs::create_dir_all(&root)
        .await
        .with_context(|| format!("cannot create {}", root.display()))?;
    let runner = Arc::new(
        JobRunner::new(id.clone(), ports, settings.worker.clone(), root.clone())
            .await
            .context("job sandbox")?,
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

    let slots_sem = Arc::new(Semaphore::new(slots.max(1)));
    let hand_back = CancellationToken::new();
    let mut running = JoinSet::new();
    let mut paused = false;
    // The next message, received while every slot was busy and held until one frees. Holding
    // it costs other workers nothing: only this worker consumes its partitions.
    let mut held: Option<OwnedMessage> = None;
    let waited = Duration::from_millis(settings.worker.claim_waiting_after_ms);
    let mut look_every = LOOK_MIN;
    let mut next_look = tokio::time::Instant::now() + look_every;
    loop {
        let free = held.is_none() && slots_sem.available_permits() > 0;
        if free
            && tokio::time::Instant::now() >= next_look
            && let Ok(permit) = slots_sem.clone().try_acquire_owned()
        {
            let now = OffsetDateTime::now_utc();
            match runner
                .ports()
                .store
                .claim_waiting(&id, runner.lease(), now - waited, now)
                .await
            {
                Ok(Some(job)) => {
                    tracing::info!(job_id = %job.id, attempt = job.attempt, "waiting job claimed from the store");
                    metrics::counter!("jobq_worker_waiting_claims_total").increment(1);
                    start_claimed(&runner, &id, job, now, permit, &hand_back, &mut running).await;
                    look_every = LOOK_MIN;
                }
                Ok(None) => look_every = (look_every * 2).min(LOOK_MAX),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for waiting jobs");
                    look_every = LOOK_MAX;
                }
            }
            next_look = tokio::time::Instant::now() + look_every;
            continue;
        }
        if held.is_some()
            && let Ok(permit) = slots_sem.clone().try_acquire_owned()
            && let Some(message) = held.take()
        {
            take_job(
                &consumer,
                &runner,
                &id,
                &message,
                permit,
                &hand_back,
                &mut running,
            )
            .await;
        }
        // While every slot is busy and the next job is already in hand, keep the partitions
        // paused (re-applied every round: a rebalance may hand us new, unpaused partitions).
        // Until then keep fetching, so that a freed slot starts the next job at once instead
        // of waiting for a resumed partition's first fetch.
        let full = slots_sem.available_permits() == 0 && held.is_some();
        if full {
            if let Err(e) = pause_assigned(&consumer) {
                tracing::warn!(error = %e, "pause failed");
            }
            paused = true;
        } else if paused {
            if let Err(e) = resume_assigned(&consumer) {
                tracing::warn!(error = %e, "resume failed");
            }
            paused = false;
        }
        let idle = match free {
            true => next_look.saturating_duration_since(tokio::time::Instant::now()),
            false => Duration::from_millis(500),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = running.join_next(), if !running.is_empty() => {
                look_every = LOOK_MIN;
                next_look = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep(idle) => {}
            received = consumer.recv() => {
                look_every = LOOK_MIN;
                let message = match received {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka receive failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if held.is_some() {
                    // Taken after the held one, in order: their offsets are stored in order.
                    rewind(&consumer, &message);
                } else {
                    match slots_sem.clone().try_acquire_owned() {
                        Ok(permit) => take_job(&consumer, &runner, &id, &message, permit, &hand_back, &mut running).await,
                        Err(_) => held = Some(message),
                    }
                }
            }
        }
    }
    if let Some(message) = held.take() {
        rewind(&consumer, &message);
    }

    tracing::info!(running = running.len(), "worker stopping: no new jobs");
    let _ = pause_assigned(&consumer);
    let grace = tokio::time::sleep(Duration::from_secs(settings.worker.shutdown_grace_secs));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            joined = running.join_next() => if joined.is_none() { break },
            _ = &mut grace, if !hand_back.is_cancelled() => {
                tracing::info!(running = running.len(), "grace period over: handing jobs back");
                hand_back.cancel();
            }
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit is the usual reason.
        tracing::debug!(error = %e, "final commit");
    }
    drop(consumer);
    let _ = tokio::fs::remove_dir_all(&root).await;
    if let Some(server) = serving {
        let _ = server.await;
    }
    tracing::info!("worker stopped");
    Ok(())
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
