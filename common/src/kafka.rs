//! Kafka adapters (rdkafka): the idempotent producer behind the dispatch queue and the
//! event bus, consumer-group helpers for workers and observers, and topic administration.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::domain::{Dispatch, JobEvent, Observation};
use crate::error::{ErrorKind, PortError, PortResult};
use crate::ports::{DispatchQueue, EventBus};
pub use crate::settings::GroupProtocol;
use crate::settings::KafkaSettings;

mod intake;
pub use intake::KafkaIntake;

/// How long a metadata or admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

fn kafka_error(what: &str, e: KafkaError) -> PortError {
    PortError::with_source(ErrorKind::Unavailable, what, e)
}

/// The settings every client shares.
pub fn base_config(brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        // Loopback and containers: resolve once, fail fast on a wrong address.
        .set("socket.keepalive.enable", "true")
        // After a broker restart, reconnect within a second (the default backs off to 10 s).
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "4");
    cfg
}

/// Producer with `enable.idempotence=true`, `acks=all` and no linger: a send returns only
/// after every in-sync replica has the message, without duplicates on retry.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer,
    timeout: Duration,
}

impl KafkaProducer {
    pub fn new(brokers: &str) -> PortResult<Self> {
        let producer: FutureProducer = base_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Every send is awaited (a submission waits for two: dispatch, then the event),
            // so a linger is latency paid on each; messages queued while a request is in
            // flight are still batched (scripts/bench-pipeline, docs/performance.md).
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| kafka_error("cannot create kafka producer", e))?;
        Ok(Self {
            producer,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends one message and waits for the broker's acknowledgement; returns (partition, offset).
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> PortResult<(i32, i64)> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        match self.producer.send(record, self.timeout).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((e, _)) => Err(kafka_error(
                &format!("kafka did not accept the message for {topic}"),
                e,
            )),
        }
    }
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer").finish_non_exhaustive()
    }
}

/// The dispatch queue as a Kafka topic, keyed by job id.
#[derive(Debug, Clone)]
pub struct KafkaDispatch {
    producer: KafkaProducer,
    topic: String,
}

impl KafkaDispatch {
    pub fn new(producer: KafkaProducer, topic: impl Into<String>) -> Self {
        Self {
            producer,
            topic: topic.into(),
        }
    }
}

#[async_trait]
impl DispatchQueue for KafkaDispatch {
    async fn dispatch(&self, message: &Dispatch) -> PortResult<()> {
        let payload = serde_json::to_vec(message)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        self.producer
            .send(&self.topic, message.id.as_str(), &payload)
            .await?;
        Ok(())
    }
}

/// The event bus as two Kafka topics: job events keyed by job id, observations unkeyed.
#[derive(Debug, Clone)]
pub struct KafkaEventBus {
    producer: KafkaProducer,
    events_topic: String,
    observations_topic: String,
}

impl KafkaEventBus {
    pub fn new(
        producer: KafkaProducer,
        events_topic: impl Into<String>,
        observations_topic: impl Into<String>,
    ) -> Self {
        Self {
            producer,
            events_topic: events_topic.into(),
            observations_topic: observations_topic.into(),
        }
    }
}

#[async_trait]
impl EventBus for KafkaEventBus {
    async fn publish(&self, event: &JobEvent) -> PortResult<()> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        self.producer
            .send(&self.events_topic, event.job_id.as_str(), &payload)
            .await?;
        Ok(())
    }

    async fn publish_observation(&self, observation: &Observation) -> PortResult<()> {
        let payload = serde_json::to_vec(observation)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        self.producer
            .send(&self.observations_topic, "observation", &payload)
            .await?;
        Ok(())
    }
}

/// Follows a topic of job events from its end, for live views: the partitions are
/// assigned directly (no consumer group, so no rebalance delay and nothing committed), new
/// partitions are picked up within `refresh`, and each event is sent to the returned
/// channel. The task ends when the receiver is dropped. One follower per process feeds
/// every live client.
pub fn follow_job_events(
    brokers: &str,
    topic: &str,
    refresh: Duration,
) -> PortResult<tokio::sync::mpsc::Receiver<JobEvent>> {
    let mut cfg = base_config(brokers);
    // librdkafka wants a group id for a consumer; with assign() it never joins the group.
    cfg.set("group.id", format!("jobq-live-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100");
    let consumer: Arc<StreamConsumer> = Arc::new(
        cfg.create()
            .map_err(|e| kafka_error("cannot create kafka consumer", e))?,
    );
    let (sender, receiver) = tokio::sync::mpsc::channel(1024);
    let topic = topic.to_string();
    tokio::spawn(async move {
        let mut assigned = 0usize;
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sender.closed() => return,
                _ = tick.tick() => {
                    match assign_new_partitions(&consumer, &topic, assigned).await {
                        Ok(n) => assigned = n,
                        Err(e) => tracing::warn!(error = %e, %topic, "cannot follow the job events"),
                    }
                }
                received = consumer.recv(), if assigned > 0 => match received {
                    Ok(message) => {
                        use rdkafka::Message;
                        let Some(payload) = message.payload() else { continue };
                        match serde_json::from_slice::<JobEvent>(payload) {
                            Ok(event) => {
                                if sender.send(event).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, %topic, "skipping a job event that does not decode"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %topic, "reading job events failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        }
    });
    Ok(receiver)
}

/// Assigns every partition of `topic`: at the end the first time (live views want what
/// happens from now on), and from the beginning for partitions added since. Returns the
/// number of partitions now assigned.
async fn assign_new_partitions(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    assigned: usize,
) -> PortResult<usize> {
    let client = consumer.clone();
    let name = topic.to_string();
    let partitions = blocking(move || {
        let md = client
            .fetch_metadata(Some(&name), ADMIN_TIMEOUT)
            .map_err(|e| kafka_error("metadata", e))?;
        Ok(md.topics().first().map_or(0, |t| t.partitions().len()))
    })
    .await?;
    if partitions <= assigned {
        return Ok(assigned);
    }
    let position = consumer
        .position()
        .map_err(|e| kafka_error("consumer position", e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let offset = match position.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Offset::Offset(o),
            _ if assigned == 0 => Offset::End,
            _ if (p as usize) < assigned => Offset::End,
            _ => Offset::Beginning,
        };
        tpl.add_partition_offset(topic, p, offset)
            .map_err(|e| kafka_error("partition list", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_error("assign partitions", e))?;
    Ok(partitions)
}

/// Options of a group consumer.
#[derive(Debug, Clone)]
pub struct GroupConsumerOptions<'a> {
    pub brokers: &'a str,
    pub group: &'a str,
    /// The rebalance protocol (`kafka.group_protocol`).
    pub protocol: GroupProtocol,
    /// A static member id (`group.instance.id`) keeps rebalances short when a member restarts.
    pub instance_id: Option<&'a str>,
    /// Where a group with no committed offset starts.
    pub from_beginning: bool,
}

/// A group consumer for long jobs: offsets are stored only when the caller says
/// (`enable.auto.offset.store=false`) and committed in the background; only the partitions
/// that must move are moved.
///
/// With [`GroupProtocol::Consumer`] (KIP-848) the broker assigns partitions member by member
/// and keeps the session: after a broker restart a live member heartbeats again and keeps
/// consuming, while the classic protocol made every member time its session out on the
/// client side (`SESSTMOUT`), rejoin under a new member id and wait in a group-wide rebalance
/// for the members it left behind. The session and heartbeat times are then the broker's
/// (`group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`; see
/// docs/reliability.md for the values jobq expects).
pub fn group_consumer<C: ConsumerContext + 'static>(
    options: &GroupConsumerOptions<'_>,
    context: C,
) -> PortResult<StreamConsumer<C>> {
    let mut cfg = base_config(options.brokers);
    cfg.set("group.id", options.group)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set(
            "auto.offset.reset",
            if options.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        // Jobs are few and latency matters: a resumed partition's next message should not
        // wait for the default 500 ms fetch round.
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "5000");
    match options.protocol {
        GroupProtocol::Consumer => {
            cfg.set("group.protocol", "consumer");
        }
        GroupProtocol::Classic => {
            cfg.set("group.protocol", "classic")
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000");
        }
    }
    if let Some(id) = options.instance_id {
        cfg.set("group.instance.id", id);
    }
    cfg.create_with_context(context)
        .map_err(|e| kafka_error("cannot create kafka consumer", e))
}

/// Pauses every partition the consumer holds now.
pub fn pause_assigned<C: ConsumerContext>(consumer: &StreamConsumer<C>) -> PortResult<()> {
    let assigned = consumer
        .assignment()
        .map_err(|e| kafka_error("cannot read assignment", e))?;
    if assigned.count() > 0 {
        consumer
            .pause(&assigned)
            .map_err(|e| kafka_error("cannot pause partitions", e))?;
    }
    Ok(())
}

/// Resumes every partition the consumer holds now.
pub fn resume_assigned<C: ConsumerContext>(consumer: &StreamConsumer<C>) -> PortResult<()> {
    let assigned = consumer
        .assignment()
        .map_err(|e| kafka_error("cannot read assignment", e))?;
    if assigned.count() > 0 {
        consumer
            .resume(&assigned)
            .map_err(|e| kafka_error("cannot resume partitions", e))?;
    }
    Ok(())
}

/// The topics jobq uses, each with the partitions it is created with: `jobs` and
/// `job-events` with `kafka.partitions` (the jobs topic bounds the workers' parallelism; events
/// are keyed by job, so each job's transitions stay in order), `observations` with one (one
/// observer writes it, and readers want the latest in order). The docker-compose `kafka-init`
/// service creates the same layout.
pub fn topic_layout(kafka: &KafkaSettings) -> [(&str, i32); 3] {
    [
        (kafka.jobs_topic.as_str(), kafka.partitions),
        (kafka.events_topic.as_str(), kafka.partitions),
        (kafka.observations_topic.as_str(), 1),
    ]
}

/// Topic administration and lag reading.
#[derive(Clone)]
pub struct KafkaAdmin {
    brokers: String,
    admin: Arc<AdminClient<DefaultClientContext>>,
    metadata: Arc<BaseConsumer>,
    /// Run `DescribeConsumerGroups` in a child process of this executable (see
    /// [`KafkaAdmin::isolate_group_describe`]).
    describe_exe: Option<std::path::PathBuf>,
}

/// The hidden first argument under which a jobq executable counts one group's members,
/// prints the count and exits ([`group_members_if_requested`]).
pub const GROUP_MEMBERS_ARG: &str = "__jobq-group-members";

/// Called first thing in `main` of every executable that may be asked to count a group's
/// members in a child process: `<exe> __jobq-group-members <brokers> <group>` prints the
/// count on stdout and exits 0, or the reason on stderr and exits 1.
pub fn group_members_if_requested() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(GROUP_MEMBERS_ARG) || args.len() != 4 {
        return;
    }
    let counted = base_config(&args[2])
        .create::<BaseConsumer>()
        .map_err(|e| e.to_string())
        .and_then(|client| describe::member_count(client.client(), &args[3], ADMIN_TIMEOUT));
    match counted {
        Ok(n) => {
            println!("{n}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

impl std::fmt::Debug for KafkaAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAdmin")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaAdmin {
    pub fn new(brokers: &str) -> PortResult<Self> {
        let admin = base_config(brokers)
            .create()
            .map_err(|e| kafka_error("cannot create kafka admin client", e))?;
        let metadata = base_config(brokers)
            .create()
            .map_err(|e| kafka_error("cannot create kafka client", e))?;
        Ok(Self {
            brokers: brokers.to_string(),
            admin: Arc::new(admin),
            metadata: Arc::new(metadata),
            describe_exe: None,
        })
    }

    /// Counts group members ([`KafkaAdmin::group_members`]) in a short-lived child process
    /// of `exe`, which must call [`group_members_if_requested`] first thing in `main`.
    /// librdkafka (up to 2.12 at least, issue confluentinc/librdkafka#4605, fix in pull
    /// request #5397 not released) can abort the whole process with `rd_kafka_enq_once_del_
    /// source_return: Assertion 'eonce->refcnt > 0' failed` when a coordinator-bound admin
    /// request such as `DescribeConsumerGroups` fails to be sent while a broker connection
    /// drops; the observer met it during Kafka and MongoDB restarts. In a child process the
    /// abort costs one period's member count, not the observer.
    pub fn isolate_group_describe(mut self, exe: std::path::PathBuf) -> Self {
        self.describe_exe = Some(exe);
        self
    }

    /// Creates the topic with `partitions` partitions if it does not exist; an existing
    /// topic is left as it is.
    pub async fn ensure_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
    ) -> PortResult<()> {
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .admin
            .create_topics(&[topic], &opts)
            .await
            .map_err(|e| kafka_error("create topic", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(PortError::unavailable(format!(
                        "cannot create topic {topic}: {code}"
                    )));
                }
            }
        }
        // Creation is asynchronous on the broker: wait until the metadata shows it.
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            if self.partition_count(name).await.is_ok_and(|n| n > 0) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PortError::unavailable(format!(
                    "topic {name} did not appear"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates every topic of [`topic_layout`] that is missing, with its partition count from
    /// the settings. Every service runs this at start-up, so whichever starts first creates the
    /// topics the same way; existing topics are left as they are.
    pub async fn ensure_topics(&self, kafka: &KafkaSettings) -> PortResult<()> {
        for (topic, partitions) in topic_layout(kafka) {
            self.ensure_topic(topic, partitions, kafka.replication_factor)
                .await?;
        }
        Ok(())
    }

    /// Number of partitions of a topic; `NotFound` if it does not exist.
    pub async fn partition_count(&self, name: &str) -> PortResult<i32> {
        let client = self.metadata.clone();
        let topic = name.to_string();
        blocking(move || {
            let md = client
                .fetch_metadata(Some(&topic), ADMIN_TIMEOUT)
                .map_err(|e| kafka_error("metadata", e))?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len() as i32)
                }
                _ => Err(PortError::not_found(format!("no topic {topic}"))),
            }
        })
        .await
    }

    /// Grows the topic to `total` partitions; a topic that already has as many is left alone.
    pub async fn grow_partitions(&self, name: &str, total: i32) -> PortResult<i32> {
        let current = self.partition_count(name).await?;
        if current >= total {
            return Ok(current);
        }
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .admin
            .create_partitions(&[NewPartitions::new(name, total as usize)], &opts)
            .await
            .map_err(|e| kafka_error("create partitions", e))?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(PortError::unavailable(format!(
                    "cannot grow {topic} to {total} partitions: {code}"
                )));
            }
        }
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            let now = self.partition_count(name).await?;
            if now >= total || tokio::time::Instant::now() > deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Messages of `topic` the group has not committed yet, summed over partitions.
    /// A partition the group never committed counts from its low watermark.
    pub async fn consumer_lag(&self, group: &str, topic: &str) -> PortResult<u64> {
        let partitions = self.partition_count(topic).await?;
        let mut cfg = base_config(&self.brokers);
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false");
        let reader: BaseConsumer = cfg
            .create()
            .map_err(|e| kafka_error("cannot create kafka client", e))?;
        let topic = topic.to_string();
        blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition(&topic, p);
            }
            let committed = reader
                .committed_offsets(tpl, ADMIN_TIMEOUT)
                .map_err(|e| kafka_error("committed offsets", e))?;
            let mut lag = 0u64;
            for p in 0..partitions {
                let (low, high) = reader
                    .fetch_watermarks(&topic, p, ADMIN_TIMEOUT)
                    .map_err(|e| kafka_error("watermarks", e))?;
                let position = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => low,
                };
                lag += (high - position.max(low)).max(0) as u64;
            }
            Ok(lag)
        })
        .await
    }

    /// Members of a consumer group now (0 for an unknown or empty group): for the worker
    /// group, the number of live worker processes as the broker sees them. Works for both
    /// protocols (`DescribeConsumerGroups`; the classic `DescribeGroups` sees no member of a
    /// KIP-848 group).
    pub async fn group_members(&self, group: &str) -> PortResult<u32> {
        if let Some(exe) = &self.describe_exe {
            return group_members_in_child(exe, &self.brokers, group).await;
        }
        let client = self.metadata.clone();
        let group = group.to_string();
        blocking(move || {
            describe::member_count(client.client(), &group, ADMIN_TIMEOUT).map_err(|e| {
                PortError::unavailable(format!("cannot describe consumer group {group}: {e}"))
            })
        })
        .await
    }

    /// Deletes topics (tests clean up after themselves with it).
    pub async fn delete_topics(&self, names: &[&str]) -> PortResult<()> {
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        self.admin
            .delete_topics(names, &opts)
            .await
            .map_err(|e| kafka_error("delete topics", e))?;
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> PortResult<T> + Send + 'static,
) -> PortResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        PortError::with_source(ErrorKind::Internal, "blocking kafka call panicked", e)
    })?
}

/// [`KafkaAdmin::group_members`] in a child process: its answer, or why there is none (a
/// child killed by a signal is librdkafka's abort, reported as a temporary failure).
async fn group_members_in_child(
    exe: &std::path::Path,
    brokers: &str,
    group: &str,
) -> PortResult<u32> {
    let child = tokio::process::Command::new(exe)
        .args([GROUP_MEMBERS_ARG, brokers, group])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let unavailable = |why: String| {
        PortError::unavailable(format!("cannot describe consumer group {group}: {why}"))
    };
    let output = tokio::time::timeout(ADMIN_TIMEOUT + Duration::from_secs(5), child)
        .await
        .map_err(|_| unavailable("no answer in time".into()))?
        .map_err(|e| unavailable(format!("cannot start {}: {e}", exe.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").trim().to_string();
        return Err(unavailable(match output.status.code() {
            Some(_) => last,
            None => format!("the describing process died ({}): {last}", output.status),
        }));
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|e| unavailable(format!("unreadable member count: {e}")))
}

/// `DescribeConsumerGroups` through librdkafka's C API, which rust-rdkafka 0.39 does not wrap.
#[allow(unsafe_code)]
mod describe {
    use std::ffi::{CStr, CString, c_char};
    use std::time::Duration;

    use rdkafka::bindings as rd;
    use rdkafka::client::{Client, ClientContext};

    /// Members of `group` (0 for a group that does not exist or is empty), or why not.
    pub fn member_count<C: ClientContext>(
        client: &Client<C>,
        group: &str,
        timeout: Duration,
    ) -> Result<u32, String> {
        let name = CString::new(group).map_err(|e| e.to_string())?;
        let ms = timeout.as_millis().min(i32::MAX as u128 - 1000) as i32;
        let rk = client.native_ptr();
        // SAFETY: `rk` is the live client borrowed for this call; the queue, options and event
        // are created and destroyed here, and the result is read before its event is destroyed
        // (the description pointers belong to the event).
        unsafe {
            let queue = rd::rd_kafka_queue_new(rk);
            let options = rd::rd_kafka_AdminOptions_new(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
            );
            let mut errstr = [0 as c_char; 256];
            rd::rd_kafka_AdminOptions_set_request_timeout(
                options,
                ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            let mut names = [name.as_ptr()];
            rd::rd_kafka_DescribeConsumerGroups(rk, names.as_mut_ptr(), 1, options, queue);
            let event = rd::rd_kafka_queue_poll(queue, ms + 1000);
            let answer = if event.is_null() {
                Err("no answer in time".to_string())
            } else {
                let answer = read(event);
                rd::rd_kafka_event_destroy(event);
                answer
            };
            rd::rd_kafka_AdminOptions_destroy(options);
            rd::rd_kafka_queue_destroy(queue);
            answer
        }
    }

    /// # Safety
    /// `event` must be a live event from `rd_kafka_DescribeConsumerGroups`.
    unsafe fn read(event: *mut rd::rd_kafka_event_t) -> Result<u32, String> {
        let text = |p: *const c_char| {
            if p.is_null() {
                "unknown error".to_string()
            } else {
                // SAFETY: librdkafka's error strings are NUL-terminated and live as long as
                // the event.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        // SAFETY: see the function's contract; every pointer read comes from this event.
        unsafe {
            if rd::rd_kafka_event_error(event)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                return Err(text(rd::rd_kafka_event_error_string(event)));
            }
            let result = rd::rd_kafka_event_DescribeConsumerGroups_result(event);
            if result.is_null() {
                return Err("not a DescribeConsumerGroups result".into());
            }
            let mut count = 0usize;
            let groups = rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
            if count == 0 || groups.is_null() {
                return Ok(0);
            }
            let group = *groups;
            let error = rd::rd_kafka_ConsumerGroupDescription_error(group);
            if !error.is_null() {
                if rd::rd_kafka_error_code(error)
                    == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND
                {
                    return Ok(0);
                }
                return Err(text(rd::rd_kafka_error_string(error)));
            }
            Ok(rd::rd_kafka_ConsumerGroupDescription_member_count(group) as u32)
        }
    }
}
