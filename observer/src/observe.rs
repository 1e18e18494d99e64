//! The one observe loop, for `jobq observer` (job events from Kafka, the fleet through a
//! [`Scaler`] and the Kafka admin API) and for `jobq standalone` (events from the in-process
//! bus, its in-process worker pool): events in, and once per period one observation, one
//! decision, acted on, stored, published and exported.

use std::time::Duration;

use async_trait::async_trait;
use jobq_common::domain::{JobEvent, JobId};
use jobq_common::embedded::BusMessage;
use jobq_common::kafka::KafkaAdmin;
use jobq_common::ports::{EventBus, JobPlanning, ObservationStore};
use jobq_common::settings::KafkaSettings;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::planner::Planner;
use crate::scaler::{BusyWorkers, Scaler};
use crate::{Controller, FleetState, partitions_needed};

/// What the loop reads of the fleet each period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sensed {
    /// The queue's depth as the dispatch sees it, or `None` to use the queued jobs the
    /// events show.
    pub queue_depth: Option<u64>,
    /// Live workers (for the observation).
    pub workers: u32,
    /// Workers the scaler runs and has not told to stop (for the policy).
    pub current: u32,
    /// Partitions of the jobs topic (`u32::MAX` where there are none).
    pub partitions: u32,
}

/// The fleet the loop observes and sizes.
#[async_trait]
pub trait Fleet: Send {
    async fn sense(&mut self) -> Sensed;

    /// Acts on the period's decision.
    async fn scale(&mut self, desired: u32, slots_per_worker: u32, busy: &BusyWorkers);
}

/// Where job events come from.
#[async_trait]
pub trait EventFeed: Send {
    /// The next job event, and whether it counts in the rates (events replayed from before
    /// the start rebuild the queue but not the rates); `None` once the feed has ended.
    async fn next(&mut self) -> Option<(JobEvent, bool)>;
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The jobs a period's plan is made from. How many are queued in all is the observation's
/// queue depth when the read is full (not a count of the store's: see
/// [`JobPlanning::waiting_head`]).
struct Read {
    waiting: Vec<jobq_common::domain::Job>,
    running: Vec<jobq_common::domain::Job>,
    /// Whether `waiting` stopped at the plan's limit.
    full: bool,
}

impl Read {
    /// How many jobs wait: those read, or the queue depth the observer sensed if more.
    fn queued(&self, observation: &jobq_common::domain::Observation) -> u64 {
        let read = self.waiting.len() as u64;
        match self.full {
            true => read.max(observation.queue_depth),
            false => read,
        }
    }
}

/// How many running jobs a plan reads at most.
const RUNNING_READ: u64 = 100_000;

async fn read_jobs(jobs: &dyn JobPlanning, limit: u64) -> Option<Read> {
    let read = async {
        let waiting = jobs.waiting_head(limit).await?;
        let running = jobs.running(RUNNING_READ).await?;
        jobq_common::PortResult::Ok(Read {
            full: waiting.len() as u64 >= limit,
            waiting,
            running,
        })
    };
    match read.await {
        Ok(read) => Some(read),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the jobs to plan: no plan this period");
            None
        }
    }
}

/// The loop's planning side: the store's jobs and the planner.
pub struct Planning<'a> {
    pub jobs: &'a dyn JobPlanning,
    pub planner: Planner,
}

impl Planning<'_> {
    /// After the decision: the plan for `observation.desiredWorkers`, stored; the deadline
    /// counts in the observation; jobs newly at risk (or in time again) flagged in the
    /// store, announced on the bus and logged.
    async fn publish(
        &mut self,
        read: &Read,
        backlog: &jobq_common::plan::Backlog,
        observation: &mut jobq_common::domain::Observation,
        store: &dyn ObservationStore,
        bus: &dyn EventBus,
    ) {
        let plan = self.planner.plan(
            backlog,
            &read.waiting,
            &read.running,
            observation.desired_workers.max(backlog.fleet.workers),
            read.queued(observation),
        );
        observation.deadline_jobs = read
            .waiting
            .iter()
            .chain(&read.running)
            .filter(|j| j.schedule.deadline.is_some())
            .count() as u32;
        observation.deadlines_at_risk = plan.entries.iter().filter(|e| e.at_risk).count() as u32;
        if let Err(e) = store.put_plan(&plan).await {
            tracing::warn!(error = %e, "plan not stored");
        }
        let (raised, cleared) = self.planner.risk_changes(&plan);
        let now = OffsetDateTime::now_utc();
        for (ids, at_risk) in [(raised, true), (cleared, false)] {
            for id in ids {
                match self.jobs.flag_deadline(&id, at_risk).await {
                    Ok(Some(job)) => {
                        if at_risk {
                            tracing::warn!(job_id = %id, deadline = ?job.schedule.deadline, "deadline at risk");
                            metrics::counter!("jobq_deadlines_at_risk_total").increment(1);
                        }
                        let notice = JobEvent::deadline_notice(&job, at_risk, now);
                        if let Err(e) = bus.publish(&notice).await {
                            tracing::warn!(error = %e, job_id = %id, "deadline notice not published");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, job_id = %id, "deadline flag not stored"),
                }
            }
        }
    }
}

/// Runs until `shutdown` (or the feed ends): every event goes to the controller's tracker
/// and the planner; every `period` the planner reads the waiting and running jobs, the
/// controller closes an observation, the fleet acts on its decision, the plan for it is
/// stored, and the observation is stored, published and exported as gauges.
#[allow(clippy::too_many_arguments)] // the loop's parts, each from its own caller
pub async fn observe(
    controller: &mut Controller<JobId, String>,
    period: Duration,
    fleet: &mut impl Fleet,
    feed: &mut impl EventFeed,
    planning: &mut Planning<'_>,
    store: &dyn ObservationStore,
    bus: &dyn EventBus,
    shutdown: &CancellationToken,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_close = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = feed.next() => match event {
                Some((event, counts)) => {
                    planning.planner.record(&event);
                    controller.tracker.record(&event, counts)
                }
                None => return,
            },
            _ = ticker.tick() => {
                let period_secs = last_close.elapsed().as_secs_f64();
                last_close = tokio::time::Instant::now();
                let sensed = fleet.sense().await;
                let now = now_ms();
                let read = read_jobs(planning.jobs, planning.planner.limit).await;
                let backlog = read.as_ref().map(|r| {
                    planning.planner.backlog(
                        now,
                        &r.waiting,
                        &r.running,
                        sensed.workers,
                        controller.slots_per_worker,
                    )
                });
                let mut observation = controller.step(
                    FleetState {
                        now_ms: now,
                        period_secs,
                        queue_depth: sensed.queue_depth,
                        workers: sensed.workers,
                        current: sensed.current,
                        partitions: sensed.partitions,
                    },
                    backlog.as_ref(),
                );
                let busy = controller.tracker.busy_by_worker();
                fleet
                    .scale(observation.desired_workers, controller.slots_per_worker, &busy)
                    .await;
                if let (Some(read), Some(backlog)) = (&read, &backlog) {
                    planning
                        .publish(read, backlog, &mut observation, store, bus)
                        .await;
                }
                tracing::debug!(?observation, "observation");
                if let Err(e) = store.record(&observation).await {
                    tracing::warn!(error = %e, "observation not stored");
                }
                if let Err(e) = bus.publish_observation(&observation).await {
                    tracing::warn!(error = %e, "observation not published");
                }
                crate::metrics::export(&observation);
            }
        }
    }
}

/// Job events from the `job-events` topic, read by the observer's own consumer group.
pub struct KafkaEvents {
    consumer: StreamConsumer,
    /// Events from before this instant (about one period before the start) rebuild the
    /// queue and the running jobs but do not count in the rates.
    counts_from_ms: i64,
}

impl KafkaEvents {
    pub fn new(consumer: StreamConsumer, period: Duration) -> Self {
        Self {
            consumer,
            counts_from_ms: now_ms() - period.as_millis() as i64,
        }
    }
}

#[async_trait]
impl EventFeed for KafkaEvents {
    async fn next(&mut self) -> Option<(JobEvent, bool)> {
        loop {
            match self.consumer.recv().await {
                Ok(message) => {
                    let event = message.payload().map(serde_json::from_slice::<JobEvent>);
                    let _ = self.consumer.store_offset_from_message(&message);
                    match event {
                        Some(Ok(event)) => {
                            let at_ms = (event.at.unix_timestamp_nanos() / 1_000_000) as i64;
                            return Some((event, at_ms >= self.counts_from_ms));
                        }
                        _ => {
                            tracing::debug!(
                                offset = message.offset(),
                                "unreadable job event skipped"
                            )
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Job events from the in-process bus (`jobq standalone`); all of them count.
pub struct BusEvents(pub broadcast::Receiver<BusMessage>);

#[async_trait]
impl EventFeed for BusEvents {
    async fn next(&mut self) -> Option<(JobEvent, bool)> {
        loop {
            match self.0.recv().await {
                Ok(BusMessage::Job(event)) => return Some((event, true)),
                Ok(BusMessage::Observation(_)) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "observer fell behind the event bus");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The Kafka-mode fleet: the worker group's lag and members from the admin API, the
/// workers the scaler runs; decisions go to the scaler, after the jobs topic is grown when
/// the fleet's slots would pass half its partitions (`observer.grow_partitions`).
pub struct KafkaFleet<'a> {
    kafka: &'a KafkaSettings,
    admin: &'a KafkaAdmin,
    scaler: &'a dyn Scaler,
    grow_partitions: bool,
    /// The jobs topic's partitions as last read, for the growth check after the decision.
    partitions: u32,
}

impl<'a> KafkaFleet<'a> {
    pub fn new(
        kafka: &'a KafkaSettings,
        admin: &'a KafkaAdmin,
        scaler: &'a dyn Scaler,
        grow_partitions: bool,
    ) -> Self {
        Self {
            kafka,
            admin,
            scaler,
            grow_partitions,
            partitions: kafka.partitions.max(1) as u32,
        }
    }
}

#[async_trait]
impl Fleet for KafkaFleet<'_> {
    async fn sense(&mut self) -> Sensed {
        let kafka = self.kafka;
        let queue_depth = match self
            .admin
            .consumer_lag(&kafka.worker_group, &kafka.jobs_topic)
            .await
        {
            Ok(lag) => Some(lag),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the worker group's lag");
                None
            }
        };
        let scaled = match self.scaler.current().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, scaler = self.scaler.name(), "cannot read the fleet's size");
                None
            }
        };
        let members = self.admin.group_members(&kafka.worker_group).await.ok();
        self.partitions = self
            .admin
            .partition_count(&kafka.jobs_topic)
            .await
            .unwrap_or(kafka.partitions) as u32;
        Sensed {
            queue_depth,
            workers: members.or(scaled).unwrap_or(0),
            current: scaled.or(members).unwrap_or(0),
            partitions: self.partitions,
        }
    }

    async fn scale(&mut self, desired: u32, slots_per_worker: u32, busy: &BusyWorkers) {
        if self.grow_partitions
            && let Some(total) = partitions_needed(desired, slots_per_worker, self.partitions)
        {
            match self
                .admin
                .grow_partitions(&self.kafka.jobs_topic, total as i32)
                .await
            {
                Ok(now) => tracing::info!(partitions = now, "jobs topic grown"),
                Err(e) => tracing::warn!(error = %e, "cannot grow the jobs topic"),
            }
        }
        if let Err(e) = self.scaler.scale(desired, busy).await {
            tracing::warn!(error = %e, desired, scaler = self.scaler.name(), "scaling failed");
        }
    }
}
