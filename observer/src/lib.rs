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
pub mod observe;
pub mod planner;
pub mod policy;
pub mod reaper;
pub mod scaler;
pub mod sim;

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jobq_common::domain::{JobId, Observation};
use jobq_common::kafka::{
    GroupConsumerOptions, KafkaAdmin, KafkaDispatch, KafkaEventBus, KafkaProducer, group_consumer,
};
use jobq_common::mongo::MongoJobStore;
use jobq_common::ports::EventBus;
use jobq_common::settings::Settings;
use rdkafka::consumer::{Consumer, DefaultConsumerContext, StreamConsumer};
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
    /// `backlog` is what the planner read of the waiting jobs, if it did.
    pub fn step(
        &mut self,
        fleet: FleetState,
        backlog: Option<&jobq_common::plan::Backlog>,
    ) -> Observation {
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
            backlog,
            ceiling: self.governor.ceiling(),
        });
        observation.desired_workers =
            self.governor
                .decide(fleet.now_ms as f64 / 1000.0, raw, fleet.current);
        observation.policy = self.policy.name().to_string();
        observation
    }
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
    let mut admin = KafkaAdmin::new(&settings.kafka.brokers)?;
    // librdkafka can abort the process in DescribeConsumerGroups while a broker connection
    // drops (confluentinc/librdkafka#4605): count the members in a child process.
    match std::env::current_exe() {
        Ok(exe) => admin = admin.isolate_group_describe(exe),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this executable: the group's members are counted in-process")
        }
    }
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
        counted_users: Default::default(),
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
    let result = observe_kafka(
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

/// The observer's event feed and fleet on Kafka, run by the shared [`observe::observe`] loop.
async fn observe_kafka(
    settings: &Settings,
    mut controller: Controller<JobId, String>,
    scaler: &dyn Scaler,
    admin: &KafkaAdmin,
    store: &MongoJobStore,
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
    let mut feed = observe::KafkaEvents::new(consumer, period);
    let mut fleet =
        observe::KafkaFleet::new(kafka, admin, scaler, settings.observer.grow_partitions);
    let mut planning = observe::Planning {
        jobs: store,
        planner: planner::Planner::from_settings(&settings.observer),
    };
    observe::observe(
        &mut controller,
        period,
        &mut fleet,
        &mut feed,
        &mut planning,
        store,
        bus,
        &shutdown,
    )
    .await;
    Ok(())
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
        let o = c.step(
            FleetState {
                now_ms: 1000,
                period_secs: 1.0,
                queue_depth: Some(7),
                workers: 1,
                current: 1,
                partitions: 16,
            },
            None,
        );
        assert_eq!(o.desired_workers, 4);
        assert_eq!(o.policy, "lag");
        assert_eq!(o.queue_depth, 7);
    }
}
