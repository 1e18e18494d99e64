//! jobq-observer: turns job events into observations, decides the worker fleet's size,
//! and re-queues jobs whose worker was lost.
//!
//! Each period the [`Controller`] closes an [`Observation`] from the events it was fed
//! ([`observation`]), asks the configured [`policy::ScalingPolicy`] for a worker count and
//! bounds it with the [`policy::Governor`]; [`run`] then grows the jobs topic if needed,
//! drives the [`scaler::Scaler`], stores and publishes the observation and exports it as
//! Prometheus gauges. The controller knows nothing about Kafka: the standalone mode and the
//! simulator ([`sim`]) feed it the same way.

pub mod metrics;
pub mod observation;
pub mod policy;
pub mod reaper;
pub mod scaler;
pub mod sim;

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jobq_common::domain::{JobEvent, JobId, Observation};
use jobq_common::kafka::{
    GroupConsumerOptions, KafkaAdmin, KafkaDispatch, KafkaEventBus, KafkaProducer, group_consumer,
};
use jobq_common::mongo::MongoJobStore;
use jobq_common::ports::{EventBus, ObservationStore};
use jobq_common::settings::Settings;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, DefaultConsumerContext, StreamConsumer};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

pub use observation::Tracker;
pub use policy::{Governor, PolicyInput, ScalingPolicy};
pub use reaper::LeaseReaper;
pub use scaler::Scaler;

/// Observations and decisions, period after period.
pub struct Controller<J: Hash + Eq + Ord + Clone, W: Hash + Eq + Clone> {
    pub tracker: Tracker<J, W>,
    pub policy: Box<dyn ScalingPolicy>,
    pub governor: Governor,
    pub slots_per_worker: u32,
}

impl<J: Hash + Eq + Ord + Clone, W: Hash + Eq + Clone> std::fmt::Debug for Controller<J, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("policy", &self.policy.name())
            .field("governor", &self.governor)
            .finish_non_exhaustive()
    }
}

/// What the world looks like at the end of a period, beside the events.
#[derive(Debug, Clone, Copy)]
pub struct FleetState {
    pub now_ms: i64,
    pub period_secs: f64,
    /// The worker group's consumer lag, or `None` to use the queued jobs the events show.
    pub queue_depth: Option<u64>,
    /// Live workers (for the observation).
    pub workers: u32,
    /// Workers the scaler runs and has not told to stop (for the policy).
    pub current: u32,
    pub partitions: u32,
}

impl<J: Hash + Eq + Ord + Clone, W: Hash + Eq + Clone> Controller<J, W> {
    pub fn new(policy: Box<dyn ScalingPolicy>, governor: Governor, slots_per_worker: u32) -> Self {
        Self {
            tracker: Tracker::new(),
            policy,
            governor,
            slots_per_worker: slots_per_worker.max(1),
        }
    }

    /// Closes the period: the observation with `desiredWorkers` and `policy` filled in.
    pub fn step(&mut self, fleet: FleetState) -> Observation {
        let (mut observation, mean_service_secs) = self.tracker.close(
            fleet.now_ms,
            fleet.period_secs,
            fleet.queue_depth,
            fleet.workers,
        );
        let raw = self.policy.desired(&PolicyInput {
            observation: &observation,
            mean_service_secs,
            current_workers: fleet.current,
            slots_per_worker: self.slots_per_worker,
            partitions: fleet.partitions,
            period_secs: fleet.period_secs,
        });
        observation.desired_workers =
            self.governor
                .decide(fleet.now_ms as f64 / 1000.0, raw, fleet.current);
        observation.policy = self.policy.name().to_string();
        observation
    }
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The partitions the jobs topic needs for `workers`: grow before the fleet's slots exceed
/// half of them (the original partition factor of 2). `None` when it has enough.
pub fn partitions_needed(workers: u32, slots_per_worker: u32, partitions: u32) -> Option<u32> {
    let slots = workers.saturating_mul(slots_per_worker);
    (slots.saturating_mul(2) > partitions).then(|| slots.saturating_mul(2))
}

/// Runs the observer against Kafka and MongoDB until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let producer = KafkaProducer::new(&settings.kafka.brokers).context("kafka")?;
    let admin = KafkaAdmin::new(&settings.kafka.brokers)?;
    admin
        .ensure_topics(&settings.kafka)
        .await
        .context("topics")?;
    let store = Arc::new(
        MongoJobStore::connect(&settings.mongo)
            .await
            .context("mongodb")?,
    );
    let events: Arc<dyn EventBus> = Arc::new(KafkaEventBus::new(
        producer.clone(),
        &settings.kafka.events_topic,
        &settings.kafka.observations_topic,
    ));
    let reaper = LeaseReaper {
        store: store.clone(),
        dispatch: Arc::new(KafkaDispatch::new(producer, &settings.kafka.jobs_topic)),
        events: events.clone(),
        max_attempts: settings.worker.max_attempts,
        redispatch_after: Duration::from_secs(settings.worker.redispatch_after_secs),
        undelivered: Default::default(),
    };
    // Sweep several times per lease so a lost worker's job waits at most about one lease.
    let every = jobq_common::settings::sweep_interval(&settings.worker);
    let reaping = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { reaper.run(every, shutdown).await }
    });
    let serving = jobq_common::metrics::spawn_server(settings.metrics.listen, shutdown.clone());
    let policy = policy::from_settings(&settings.observer);
    let scaler = scaler::from_settings(&settings)?;
    tracing::info!(
        every_ms = every.as_millis() as u64,
        policy = policy.name(),
        scaler = scaler.name(),
        "observer started"
    );
    let controller = Controller::new(
        policy,
        Governor::from_settings(&settings.observer),
        settings.observer_slots_per_worker(),
    );
    let result = observe(
        &settings,
        controller,
        scaler.as_ref(),
        &admin,
        store.as_ref(),
        events.as_ref(),
        shutdown.clone(),
    )
    .await;
    scaler.shutdown().await;
    let _ = reaping.await;
    if let Some(s) = serving {
        let _ = s.await;
    }
    tracing::info!("observer stopped");
    result
}

/// The observation loop: events in, one observation and decision per period.
async fn observe(
    settings: &Settings,
    mut controller: Controller<JobId, String>,
    scaler: &dyn Scaler,
    admin: &KafkaAdmin,
    store: &dyn ObservationStore,
    bus: &dyn EventBus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let kafka = &settings.kafka;
    // From the beginning for a new group, so the queued and running jobs are rebuilt;
    // only events from about one period before the start count in the rates.
    let consumer: StreamConsumer = group_consumer(
        &GroupConsumerOptions {
            brokers: &kafka.brokers,
            group: &kafka.observer_group,
            protocol: kafka.group_protocol,
            instance_id: None,
            from_beginning: true,
        },
        DefaultConsumerContext,
    )?;
    consumer
        .subscribe(&[&kafka.events_topic])
        .context("subscribe to job events")?;
    let period = Duration::from_secs_f64(settings.observer.refresh_rate_secs);
    let started_ms = now_ms() - period.as_millis() as i64;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_close = tokio::time::Instant::now();
    let slots = controller.slots_per_worker;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            received = consumer.recv() => match received {
                Ok(message) => {
                    match message.payload().map(serde_json::from_slice::<JobEvent>) {
                        Some(Ok(event)) => {
                            let at_ms = (event.at.unix_timestamp_nanos() / 1_000_000) as i64;
                            controller.tracker.record(&event, at_ms >= started_ms);
                        }
                        _ => tracing::debug!(offset = message.offset(), "unreadable job event skipped"),
                    }
                    let _ = consumer.store_offset_from_message(&message);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = ticker.tick() => {
                let period_secs = last_close.elapsed().as_secs_f64();
                last_close = tokio::time::Instant::now();
                let queue_depth = match admin.consumer_lag(&kafka.worker_group, &kafka.jobs_topic).await {
                    Ok(lag) => Some(lag),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the worker group's lag");
                        None
                    }
                };
                let scaled = match scaler.current().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, scaler = scaler.name(), "cannot read the fleet's size");
                        None
                    }
                };
                let members = admin.group_members(&kafka.worker_group).await.ok();
                let partitions = admin.partition_count(&kafka.jobs_topic).await.unwrap_or(kafka.partitions) as u32;
                let observation = controller.step(FleetState {
                    now_ms: now_ms(),
                    period_secs,
                    queue_depth,
                    workers: members.or(scaled).unwrap_or(0),
                    current: scaled.or(members).unwrap_or(0),
                    partitions,
                });
                let desired = observation.desired_workers;
                if settings.observer.grow_partitions
                    && let Some(total) = partitions_needed(desired, slots, partitions)
                {
                    match admin.grow_partitions(&kafka.jobs_topic, total as i32).await {
                        Ok(now) => tracing::info!(partitions = now, "jobs topic grown"),
                        Err(e) => tracing::warn!(error = %e, "cannot grow the jobs topic"),
                    }
                }
                let busy = controller.tracker.busy_by_worker();
                if let Err(e) = scaler.scale(desired, &busy).await {
                    tracing::warn!(error = %e, desired, scaler = scaler.name(), "scaling failed");
                }
                tracing::debug!(?observation, "observation");
                if let Err(e) = store.record(&observation).await {
                    tracing::warn!(error = %e, "observation not stored");
                }
                if let Err(e) = bus.publish_observation(&observation).await {
                    tracing::warn!(error = %e, "observation not published");
                }
                metrics::export(&observation);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_grow_before_slots_pass_half_of_them() {
        assert_eq!(partitions_needed(4, 2, 16), None);
        assert_eq!(partitions_needed(5, 2, 16), Some(20));
        assert_eq!(partitions_needed(0, 2, 1), None);
    }

    #[test]
    fn the_controller_fills_in_the_decision() {
        let mut c: Controller<u32, u32> = Controller::new(
            Box::new(policy::LagPolicy { lag_threshold: 2 }),
            Governor::new(1, 5, 0.0, 10.0),
            1,
        );
        let o = c.step(FleetState {
            now_ms: 1000,
            period_secs: 1.0,
            queue_depth: Some(7),
            workers: 1,
            current: 1,
            partitions: 16,
        });
        assert_eq!(o.desired_workers, 4);
        assert_eq!(o.policy, "lag");
        assert_eq!(o.queue_depth, 7);
    }
}
