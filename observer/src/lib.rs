//! jobq-observer: turns job events into observations, decides the worker fleet's size,
//! and re-queues jobs whose worker was lost.

pub mod reaper;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jobq_common::kafka::{KafkaAdmin, KafkaDispatch, KafkaEventBus, KafkaProducer};
use jobq_common::mongo::MongoJobStore;
use jobq_common::settings::Settings;
use tokio_util::sync::CancellationToken;

pub use reaper::LeaseReaper;

/// Runs the observer against Kafka and MongoDB until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let producer = KafkaProducer::new(&settings.kafka.brokers).context("kafka")?;
    let admin = KafkaAdmin::new(&settings.kafka.brokers)?;
    for topic in [
        &settings.kafka.jobs_topic,
        &settings.kafka.events_topic,
        &settings.kafka.observations_topic,
    ] {
        let partitions = if *topic == settings.kafka.jobs_topic {
            settings.kafka.partitions
        } else {
            1
        };
        admin
            .ensure_topic(topic, partitions, settings.kafka.replication_factor)
            .await
            .context("topics")?;
    }
    let store = Arc::new(
        MongoJobStore::connect(&settings.mongo)
            .await
            .context("mongodb")?,
    );
    let reaper = LeaseReaper {
        store,
        dispatch: Arc::new(KafkaDispatch::new(
            producer.clone(),
            &settings.kafka.jobs_topic,
        )),
        events: Arc::new(KafkaEventBus::new(
            producer,
            &settings.kafka.events_topic,
            &settings.kafka.observations_topic,
        )),
        max_attempts: settings.worker.max_attempts,
    };
    // Sweep several times per lease so a lost worker's job waits at most about one lease.
    let every = Duration::from_millis((settings.worker.lease_secs * 1000 / 3).max(500));
    tracing::info!(every_ms = every.as_millis() as u64, "observer started");
    reaper.run(every, shutdown).await;
    tracing::info!("observer stopped");
    Ok(())
}
