//! The Kafka intake: one consumer of the worker group on the partitioned `jobs` topic.
//! Offsets are stored only once an offer is settled (after the claim), committed in the
//! background and once more at close; while every slot is busy the partitions are paused.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;

use super::{pause_assigned, resume_assigned};
use crate::domain::Dispatch;
use crate::ports::{Intake, Offer};

/// [`Intake`] over a subscribed group consumer.
pub struct KafkaIntake {
    consumer: StreamConsumer,
    partitions: usize,
    claim_waiting_after: Duration,
    budget_per_sec: f64,
    paused: bool,
}

impl KafkaIntake {
    /// `partitions` is the `jobs` topic's partition count (`kafka.partitions`); with the
    /// `budget_per_sec` (`worker.claim_waiting_budget_per_sec`) it bounds the idle looks.
    pub fn new(
        consumer: StreamConsumer,
        partitions: usize,
        claim_waiting_after: Duration,
        budget_per_sec: f64,
    ) -> Self {
        Self {
            consumer,
            partitions: partitions.max(1),
            claim_waiting_after,
            budget_per_sec,
            paused: false,
        }
    }
}

/// The longest an idle worker waits between two looks: `members / budget` seconds, so that
/// the whole fleet's idle workers look about `budget` times a second together, and never
/// less than 0.5 s nor more than 30 s. `members` is inferred from this worker's share of the
/// topic's partitions (the group spreads them evenly), which costs no call to Kafka; with
/// none assigned the group has at least as many members as partitions.
pub fn look_max(partitions: usize, assigned: usize, budget_per_sec: f64) -> Duration {
    let members = match assigned {
        0 => partitions,
        n => partitions.max(n).div_ceil(n),
    };
    Duration::from_secs_f64((members as f64 / budget_per_sec).clamp(0.5, 30.0))
}

#[async_trait]
impl Intake for KafkaIntake {
    type Ticket = OwnedMessage;

    async fn next(&mut self) -> Offer<OwnedMessage> {
        loop {
            match self.consumer.recv().await {
                Ok(m) => {
                    let message = m.detach();
                    return match message.payload().map(serde_json::from_slice::<Dispatch>) {
                        Some(Ok(dispatch)) => Offer::Job(dispatch, message),
                        _ => Offer::Unreadable(message),
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn settle(&mut self, message: &OwnedMessage) {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
            // A partition revoked meanwhile: its new owner gets the message again and finds
            // the job claimed or done.
            tracing::debug!(error = %e, partition, offset, "offset not stored");
        }
    }

    /// Makes the consumer fetch `message` again (asynchronously: a seek that waits for the
    /// fetcher would stall the loop while the partition is paused).
    fn again(&mut self, message: &OwnedMessage) {
        let offset = rdkafka::Offset::Offset(message.offset());
        if let Err(e) =
            self.consumer
                .seek(message.topic(), message.partition(), offset, Duration::ZERO)
        {
            tracing::warn!(error = %e, partition = message.partition(), offset = message.offset(), "cannot rewind a message");
        }
    }

    /// Re-applied every round while full: a rebalance may hand over new, unpaused
    /// partitions. Until full the consumer keeps fetching, so a freed slot starts the next
    /// job at once instead of waiting for a resumed partition's first fetch.
    fn hold(&mut self, full: bool) {
        if full {
            if let Err(e) = pause_assigned(&self.consumer) {
                tracing::warn!(error = %e, "pause failed");
            }
            self.paused = true;
        } else if self.paused {
            if let Err(e) = resume_assigned(&self.consumer) {
                tracing::warn!(error = %e, "resume failed");
            }
            self.paused = false;
        }
    }

    fn claim_waiting_after(&self) -> Duration {
        self.claim_waiting_after
    }

    fn look_max(&self) -> Duration {
        let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
        look_max(self.partitions, assigned, self.budget_per_sec)
    }

    fn close(&mut self) {
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is the usual reason.
            tracing::debug!(error = %e, "final commit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_looks_stay_within_the_fleet_budget() {
        // A small fleet looks twice a second at most.
        assert_eq!(look_max(16, 8, 100.0), Duration::from_millis(500));
        assert_eq!(look_max(16, 2, 100.0), Duration::from_millis(500));
        // 100 members: one look a second each.
        assert_eq!(look_max(200, 2, 100.0), Duration::from_secs(1));
        // 1,000 members on 2,000 partitions (2 each): 10 s apart, 100 looks/s together.
        assert_eq!(look_max(2000, 2, 100.0), Duration::from_secs(10));
        // None assigned: at least as many members as partitions.
        assert_eq!(look_max(16, 0, 1.0), Duration::from_secs(16));
        // Never longer than 30 s.
        assert_eq!(look_max(100_000, 1, 100.0), Duration::from_secs(30));
    }
}
