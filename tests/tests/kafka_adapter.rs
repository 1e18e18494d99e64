//! The Kafka adapter against a real broker: each test on its own topics and groups.

use std::time::Duration;

use jobq_common::kafka::{
    GroupConsumerOptions, GroupProtocol, KafkaAdmin, KafkaProducer, group_consumer, pause_assigned,
    resume_assigned,
};
use jobq_tests::{infra_settings, unique_name};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, DefaultConsumerContext, StreamConsumer};

async fn setup(partitions: i32) -> Option<(String, KafkaAdmin, KafkaProducer, String)> {
    let settings = infra_settings("kafka adapter");
    let brokers = settings.kafka.brokers.clone();
    let admin = KafkaAdmin::new(&brokers).unwrap();
    let topic = unique_name("t");
    admin.ensure_topic(&topic, partitions, 1).await.unwrap();
    let producer = KafkaProducer::new(&brokers).unwrap();
    Some((brokers, admin, producer, topic))
}

/// The protocol the services use (`JOBQ_KAFKA__GROUP_PROTOCOL`, KIP-848 by default).
fn settings_protocol() -> GroupProtocol {
    jobq_common::settings::Settings::load()
        .map(|s| s.kafka.group_protocol)
        .unwrap_or_default()
}

fn consumer(brokers: &str, group: &str, topic: &str) -> StreamConsumer {
    consumer_with(brokers, group, topic, settings_protocol())
}

fn consumer_with(
    brokers: &str,
    group: &str,
    topic: &str,
    protocol: GroupProtocol,
) -> StreamConsumer {
    let c = group_consumer(
        &GroupConsumerOptions {
            brokers,
            group,
            protocol,
            instance_id: None,
            from_beginning: true,
        },
        DefaultConsumerContext,
    )
    .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// Receives one message within `wait`, returning (payload, partition, offset).
async fn recv_within(c: &StreamConsumer, wait: Duration) -> Option<(String, i32, i64)> {
    match tokio::time::timeout(wait, c.recv()).await {
        Ok(Ok(m)) => Some((
            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            m.partition(),
            m.offset(),
        )),
        Ok(Err(e)) => panic!("consumer error: {e}"),
        Err(_) => None,
    }
}

async fn wait_for_assignment(c: &StreamConsumer) {
    for _ in 0..200 {
        // Polling drives the group protocol; nothing is produced yet, so nothing arrives.
        let _ = recv_within(c, Duration::from_millis(50)).await;
        if c.assignment().unwrap().count() > 0 {
            return;
        }
    }
    panic!("no partitions assigned within 10 s");
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn produced_messages_reach_a_consumer_group() {
    let Some((brokers, admin, producer, topic)) = setup(3).await else {
        return;
    };
    for i in 0..6 {
        producer
            .send(&topic, &format!("k{i}"), format!("m{i}").as_bytes())
            .await
            .unwrap();
    }
    let c = consumer(&brokers, &unique_name("g"), &topic);
    let mut got = Vec::new();
    while got.len() < 6 {
        let (payload, ..) = recv_within(&c, Duration::from_secs(20))
            .await
            .expect("message within 20 s");
        got.push(payload);
    }
    got.sort();
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4", "m5"]);
    admin.delete_topics(&[&topic]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn a_paused_partition_delivers_nothing_until_resumed() {
    let Some((brokers, admin, producer, topic)) = setup(1).await else {
        return;
    };
    let c = consumer(&brokers, &unique_name("g"), &topic);
    wait_for_assignment(&c).await;
    pause_assigned(&c).unwrap();
    producer.send(&topic, "k", b"while-paused").await.unwrap();
    assert_eq!(
        recv_within(&c, Duration::from_secs(3)).await,
        None,
        "a paused partition delivered"
    );
    resume_assigned(&c).unwrap();
    let (payload, ..) = recv_within(&c, Duration::from_secs(20))
        .await
        .expect("delivered after resume");
    assert_eq!(payload, "while-paused");
    admin.delete_topics(&[&topic]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn only_stored_offsets_are_committed() {
    let Some((brokers, admin, producer, topic)) = setup(1).await else {
        return;
    };
    for i in 0..3 {
        producer
            .send(&topic, "k", format!("m{i}").as_bytes())
            .await
            .unwrap();
    }
    let group = unique_name("g");
    {
        let first = consumer(&brokers, &group, &topic);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(
                recv_within(&first, Duration::from_secs(20))
                    .await
                    .expect("message"),
            );
        }
        // Store only the first message's offset, as a worker does after claiming that job.
        let (_, partition, offset) = &seen[0];
        first.store_offset(&topic, *partition, *offset).unwrap();
        first.commit_consumer_state(CommitMode::Sync).unwrap();
    }
    assert_eq!(admin.consumer_lag(&group, &topic).await.unwrap(), 2);
    let second = consumer(&brokers, &group, &topic);
    let (payload, ..) = recv_within(&second, Duration::from_secs(30))
        .await
        .expect("redelivered");
    assert_eq!(payload, "m1", "the unstored messages come again");
    admin.delete_topics(&[&topic]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn every_service_creates_the_topics_with_the_partitions_of_the_settings() {
    let mut kafka = infra_settings("kafka adapter").kafka;
    let admin = KafkaAdmin::new(&kafka.brokers).unwrap();
    let id = unique_name("layout");
    kafka.jobs_topic = format!("{id}-jobs");
    kafka.events_topic = format!("{id}-events");
    kafka.observations_topic = format!("{id}-observations");
    kafka.partitions = 5;
    admin.ensure_topics(&kafka).await.unwrap();
    let topics = [
        kafka.jobs_topic.clone(),
        kafka.events_topic.clone(),
        kafka.observations_topic.clone(),
    ];
    let mut counts = Vec::new();
    for topic in &topics {
        counts.push(admin.partition_count(topic).await.unwrap());
    }
    assert_eq!(counts, [5, 5, 1]);
    // The frontend, a worker and the observer all run it; the first one's topics stay.
    kafka.partitions = 7;
    admin.ensure_topics(&kafka).await.unwrap();
    for (topic, expected) in topics.iter().zip([5, 5, 1]) {
        assert_eq!(
            admin.partition_count(topic).await.unwrap(),
            expected,
            "{topic}: an existing topic is left alone"
        );
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    admin.delete_topics(&names).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn topics_are_created_once_and_grow() {
    let Some((_, admin, _, topic)) = setup(2).await else {
        return;
    };
    admin.ensure_topic(&topic, 8, 1).await.unwrap();
    assert_eq!(
        admin.partition_count(&topic).await.unwrap(),
        2,
        "an existing topic is left alone"
    );
    assert_eq!(admin.grow_partitions(&topic, 6).await.unwrap(), 6);
    assert_eq!(
        admin.grow_partitions(&topic, 4).await.unwrap(),
        6,
        "never shrinks"
    );
    assert!(
        admin
            .partition_count(&unique_name("missing"))
            .await
            .is_err()
    );
    admin.delete_topics(&[&topic]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn lag_counts_uncommitted_messages_of_a_group() {
    let Some((_, admin, producer, topic)) = setup(2).await else {
        return;
    };
    for i in 0..5 {
        producer.send(&topic, &format!("k{i}"), b"x").await.unwrap();
    }
    assert_eq!(
        admin
            .consumer_lag(&unique_name("idle"), &topic)
            .await
            .unwrap(),
        5
    );
    admin.delete_topics(&[&topic]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn the_live_follower_sees_events_from_now_on_and_on_partitions_added_later() {
    use jobq_common::domain::{JobEvent, JobId, JobStatus};
    use jobq_common::kafka::follow_job_events;
    let Some((brokers, admin, producer, topic)) = setup(2).await else {
        return;
    };
    let event = |to: JobStatus| JobEvent {
        job_id: JobId::new(),
        attempt: 1,
        from: None,
        to,
        at: time::OffsetDateTime::now_utc(),
        worker: None,
        elapsed_ms: None,
        waited_ms: None,
        repo: None,
        has_deadline: false,
        deadline_at_risk: None,
    };
    let send = |e: &JobEvent| {
        let payload = serde_json::to_vec(e).unwrap();
        let (producer, topic, key) = (producer.clone(), topic.clone(), e.job_id.to_string());
        async move { producer.send(&topic, &key, &payload).await.unwrap() }
    };
    let before = event(JobStatus::Queued);
    send(&before).await;
    let mut feed = follow_job_events(&brokers, &topic, Duration::from_millis(500)).unwrap();
    // The follower starts at the end: wait until it has assigned itself the partitions.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sent = Vec::new();
    for _ in 0..6 {
        let e = event(JobStatus::Running);
        send(&e).await;
        sent.push(e.job_id);
    }
    let mut seen = Vec::new();
    while seen.len() < sent.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("the follower delivers events within 10 s")
            .expect("the follower is running");
        assert_ne!(e.job_id, before.job_id, "an event from before it started");
        seen.push(e.job_id);
    }
    seen.sort();
    sent.sort();
    assert_eq!(seen, sent);
    // A partition added later is followed from its beginning.
    admin.grow_partitions(&topic, 4).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A new producer sees the four partitions at once (the first refreshes its metadata late).
    let producer = KafkaProducer::new(&brokers).unwrap();
    let mut later = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let e = event(JobStatus::Finished);
        let (partition, _) = producer
            .send(&topic, e.job_id.as_str(), &serde_json::to_vec(&e).unwrap())
            .await
            .unwrap();
        later.insert((partition, e.job_id));
    }
    assert!(
        later.iter().any(|(p, _)| *p >= 2),
        "no event went to a new partition"
    );
    let mut got = 0;
    while got < later.len() {
        tokio::time::timeout(Duration::from_secs(15), feed.recv())
            .await
            .expect("events on every partition arrive")
            .unwrap();
        got += 1;
    }
    admin.delete_topics(&[&topic]).await.unwrap();
}

/// The group's member count; a broker that has just started may answer "coordinator not
/// available" for a few seconds (an `Unavailable` error the observer retries), so retry too.
async fn members(admin: &KafkaAdmin, group: &str) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match admin.group_members(group).await {
            Ok(n) => return n,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("describe group {group}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("describe group {group}: {e}"),
        }
    }
}

#[tokio::test]
#[ignore = "needs the real servers: scripts/infra.sh up"]
async fn group_members_counts_the_members_of_either_protocol() {
    let Some((brokers, admin, _producer, topic)) = setup(4).await else {
        return;
    };
    for protocol in [GroupProtocol::Consumer, GroupProtocol::Classic] {
        let group = unique_name("g");
        assert_eq!(members(&admin, &group).await, 0, "unknown group");
        let a = consumer_with(&brokers, &group, &topic, protocol);
        let b = consumer_with(&brokers, &group, &topic, protocol);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Polling drives the group protocol.
            let _ = recv_within(&a, Duration::from_millis(50)).await;
            let _ = recv_within(&b, Duration::from_millis(50)).await;
            let n = members(&admin, &group).await;
            if n == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{protocol:?}: {n} members after 30 s"
            );
        }
        // The observer counts them in a child process of its executable (librdkafka can
        // abort in this call): the same answer, from the `jobq` binary.
        let isolated = KafkaAdmin::new(&brokers)
            .unwrap()
            .isolate_group_describe(jobq_tests::stack::binary("jobq"));
        assert_eq!(
            members(&isolated, &group).await,
            2,
            "{protocol:?}, in a child"
        );
        assert_eq!(
            members(&isolated, &unique_name("g")).await,
            0,
            "unknown group, in a child"
        );
    }
    // A child that cannot answer is a temporary failure, never a count.
    let broken = KafkaAdmin::new(&brokers)
        .unwrap()
        .isolate_group_describe("/nonexistent/jobq".into());
    assert!(broken.group_members("g").await.is_err());
    admin.delete_topics(&[&topic]).await.unwrap();
}
