//! Re-queues jobs whose worker was lost (its lease expired): `running → queued` with the
//! next attempt and a new dispatch message, or `failed` (worker lost) after the last attempt
//! (the rule is [`jobq_common::lifecycle::lease_lost`]). Every step is a conditional update,
//! so several observers can sweep at once safely. The same sweep ends waiting jobs past
//! their `expireAfterSecs` (`cancelled`, expired) and sets the per-user gauges
//! `jobq_user_jobs{user, status}` (queued and running), counted again every
//! [`USER_COUNT_EVERY`].

use std::sync::Arc;
use std::time::Duration;

use jobq_common::PortResult;
use jobq_common::domain::{Dispatch, JobEvent, JobStatus};
use jobq_common::ports::{DispatchQueue, EventBus, JobRecovery};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// The longest one sweep may take before it is abandoned (and the next one starts).
const SWEEP_LIMIT: Duration = Duration::from_secs(60);

/// The lease reaper.
#[derive(Clone)]
pub struct LeaseReaper {
    pub store: Arc<dyn JobRecovery>,
    pub dispatch: Arc<dyn DispatchQueue>,
    pub events: Arc<dyn EventBus>,
    pub max_attempts: u32,
    /// Queued jobs not claimed this long after their dispatch are dispatched again.
    pub redispatch_after: Duration,
    /// Messages of jobs this reaper queued again that the dispatch queue refused (Kafka
    /// restarting): sent again at the next sweeps, so a re-queued job never waits for
    /// `redispatch_after`.
    pub undelivered: Arc<std::sync::Mutex<Vec<Dispatch>>>,
    /// Users the last count's gauges counted, and when it was made.
    pub counted_users: Arc<std::sync::Mutex<UserCounts>>,
}

/// The users [`LeaseReaper`]'s last per-user count saw, and when it was made.
#[derive(Debug, Default)]
pub struct UserCounts {
    users: std::collections::BTreeSet<String>,
    at: Option<std::time::Instant>,
}

/// How often the per-user gauges are counted again. The count reads every queued and
/// running job, which grows with the queue (a MongoDB-wire server without a covering index
/// loads each one: ≈ 0.4 s for 7,000 queued jobs on nx-27017, on its single thread): once a
/// sweep, that was the store's largest load while submissions queued up. A Prometheus scrape
/// every 15 s sees each count once.
pub const USER_COUNT_EVERY: Duration = Duration::from_secs(15);

impl std::fmt::Debug for LeaseReaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseReaper")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub requeued: usize,
    pub failed: usize,
    pub redispatched: usize,
    pub expired: usize,
}

/// How long a sweep waits for the messages and events it sent before it returns. Kafka
/// answers in milliseconds when it is up; while it restarts a send is held by the producer
/// for up to its `message.timeout.ms` (30 s), and waiting for it would leave every other
/// expired lease of the sweep, and the next sweeps, alone until the broker is back.
const SEND_WAIT: Duration = Duration::from_secs(1);

/// What one send of a sweep was.
enum Sent {
    /// The message of a job queued again in this sweep or an earlier one; whether it was
    /// delivered.
    Redispatch(bool),
    /// The message of a job queued again in this sweep, or its job event.
    Requeue,
}

impl LeaseReaper {
    /// Handles every lease expired at `now`: each job is queued again (or failed) in the
    /// store first, so a free worker slot can claim it from the store at once; its message
    /// and event go out beside the sweep, which waits for them at most [`SEND_WAIT`]. A
    /// message the queue refuses is kept and sent again at the next sweep.
    pub async fn sweep(&self, now: OffsetDateTime) -> PortResult<Sweep> {
        let mut done = Sweep::default();
        let mut sends = tokio::task::JoinSet::new();
        let waiting = std::mem::take(&mut *self.undelivered.lock().expect("undelivered lock"));
        for message in waiting {
            let me = self.clone();
            sends.spawn(async move { Sent::Redispatch(me.send(message).await) });
        }
        let swept = self.requeue_expired(now, &mut done, &mut sends).await;
        let stale = match swept {
            Ok(()) => {
                self.store
                    .redispatch_stale(now - self.redispatch_after, now, 500)
                    .await
            }
            Err(e) => Err(e),
        };
        for message in stale.as_ref().map(Vec::as_slice).unwrap_or_default() {
            tracing::warn!(job_id = %message.id, attempt = message.attempt, "queued job not claimed for long: dispatched again");
            let (me, message) = (self.clone(), message.clone());
            sends.spawn(async move { Sent::Redispatch(me.send(message).await) });
        }
        let waited = tokio::time::timeout(SEND_WAIT, async {
            while let Some(sent) = sends.join_next().await {
                if let Ok(Sent::Redispatch(true)) = sent {
                    done.redispatched += 1;
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::info!(
                in_flight = sends.len(),
                "dispatch queue slow to answer: the sweep goes on, its messages stay in flight"
            );
            // Still in flight, not abandoned: one that fails is kept for the next sweep.
            sends.detach_all();
        }
        stale.map(|_| done)
    }

    /// Queues again (or fails) every job whose lease expired at `now`, spawning its message
    /// and event into `sends`.
    async fn requeue_expired(
        &self,
        now: OffsetDateTime,
        done: &mut Sweep,
        sends: &mut tokio::task::JoinSet<Sent>,
    ) -> PortResult<()> {
        for job in self.store.expired(now, 500).await? {
            let Some(recovered) = self
                .store
                .recover_expired(&job, self.max_attempts, now)
                .await?
            else {
                continue; // renewed, finished, or another observer got there first
            };
            if recovered.job.status == JobStatus::Queued {
                tracing::warn!(job_id = %job.id, attempt = recovered.job.attempt, "worker lost: job queued again");
                // The job is queued now; its message must follow even if the queue is away.
                let me = self.clone();
                let message = Dispatch {
                    id: recovered.job.id.clone(),
                    attempt: recovered.job.attempt,
                };
                sends.spawn(async move {
                    me.send(message).await;
                    Sent::Requeue
                });
                done.requeued += 1;
            } else {
                tracing::warn!(job_id = %job.id, attempts = job.attempt, "worker lost after the last attempt");
                done.failed += 1;
            }
            let me = self.clone();
            sends.spawn(async move {
                me.publish(recovered.event).await;
                Sent::Requeue
            });
        }
        // Waiting jobs past their expiry end cancelled (expired), their events beside the
        // sweep like the others.
        for ended in self.store.expire_waiting(now, 500).await? {
            tracing::info!(job_id = %ended.job.id, "job expired before it started");
            done.expired += 1;
            let me = self.clone();
            sends.spawn(async move {
                me.publish(ended.event).await;
                Sent::Requeue
            });
        }
        let freed = self.store.free_stale_slots(now, 500).await?;
        if freed > 0 {
            tracing::info!(
                freed,
                "running slots of cancelled jobs whose worker was lost freed"
            );
        }
        self.count_users().await;
        Ok(())
    }

    /// Dispatches `message`; one the queue refuses is kept and sent again at the next sweep.
    async fn send(&self, message: Dispatch) -> bool {
        match self.dispatch.dispatch(&message).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(job_id = %message.id, attempt = message.attempt, error = %e, "dispatch failed; sent again at the next sweep");
                self.undelivered
                    .lock()
                    .expect("undelivered lock")
                    .push(message);
                false
            }
        }
    }

    /// Sets `jobq_user_jobs{user, status}` for every user with queued or running jobs, and
    /// back to 0 for those who had some at the last count and have none now; at most every
    /// [`USER_COUNT_EVERY`].
    async fn count_users(&self) {
        let due = {
            let last = self.counted_users.lock().expect("counted users lock");
            last.at.is_none_or(|at| at.elapsed() >= USER_COUNT_EVERY)
        };
        if !due {
            return;
        }
        let counts = match self.store.owner_counts().await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::debug!(error = %e, "per-user counts not read");
                return;
            }
        };
        let mut seen = self.counted_users.lock().expect("counted users lock");
        seen.at = Some(std::time::Instant::now());
        let now: std::collections::BTreeSet<String> =
            counts.iter().map(|c| c.owner.clone()).collect();
        for gone in seen.users.difference(&now) {
            for status in ["queued", "running"] {
                metrics::gauge!("jobq_user_jobs", "user" => gone.clone(), "status" => status)
                    .set(0.0);
            }
        }
        for c in &counts {
            let user = c.owner.clone();
            metrics::gauge!("jobq_user_jobs", "user" => user.clone(), "status" => "queued")
                .set(c.queued as f64);
            metrics::gauge!("jobq_user_jobs", "user" => user, "status" => "running")
                .set(c.running as f64);
        }
        seen.users = now;
    }

    async fn publish(&self, event: JobEvent) {
        if let Err(e) = self.events.publish(&event).await {
            tracing::warn!(job_id = %event.job_id, error = %e, "job event not published");
        }
    }

    /// Sweeps every `every` until `shutdown`.
    pub async fn run(&self, every: Duration, shutdown: CancellationToken) {
        loop {
            // A sweep that hangs (a store or queue that accepts a request and never answers)
            // must not stop the reaper for good.
            let sweep = tokio::time::timeout(SWEEP_LIMIT, self.sweep(OffsetDateTime::now_utc()));
            match sweep.await.unwrap_or_else(|_| {
                Err(jobq_common::PortError::unavailable(
                    "lease sweep took longer than a minute",
                ))
            }) {
                Ok(s) if s != Sweep::default() => {
                    tracing::info!(
                        requeued = s.requeued,
                        failed = s.failed,
                        redispatched = s.redispatched,
                        expired = s.expired,
                        "lease sweep"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use jobq_common::domain::{Job, JobSpec};
    use jobq_common::embedded::{InProcessBus, SqliteStore};
    use jobq_common::ports::{JobCatalog, JobLeases, JobLookup};

    use super::*;

    /// A dispatch queue that refuses the first `refusals` messages (Kafka restarting), or,
    /// while `away`, holds every message without an answer (a producer waiting for a broker
    /// that is away, up to its `message.timeout.ms`).
    #[derive(Default)]
    struct Queue {
        refusals: AtomicU32,
        away: std::sync::atomic::AtomicBool,
        sent: Mutex<Vec<Dispatch>>,
    }

    #[async_trait]
    impl DispatchQueue for Queue {
        async fn dispatch(&self, message: &Dispatch) -> PortResult<()> {
            if self.away.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self
                .refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(jobq_common::PortError::unavailable("kafka restarting"));
            }
            self.sent.lock().unwrap().push(message.clone());
            Ok(())
        }
    }

    fn reaper(
        store: &Arc<SqliteStore>,
        queue: &Arc<Queue>,
        events: Arc<InProcessBus>,
        max_attempts: u32,
    ) -> LeaseReaper {
        LeaseReaper {
            store: store.clone(),
            dispatch: queue.clone(),
            events,
            max_attempts,
            redispatch_after: Duration::from_secs(600),
            undelivered: Default::default(),
            counted_users: Default::default(),
        }
    }

    /// A job of alice's, claimed by `worker` at `now` with a 1 s lease.
    async fn claimed_job(store: &SqliteStore, worker: &str, now: OffsetDateTime) -> Job {
        let spec = JobSpec {
            url: "https://example.com/x.git".into(),
            args: String::new(),
            config: String::new(),
        };
        let job = Job::new("alice", spec, now);
        store.insert(&job).await.unwrap();
        store
            .claim(&job.id, 1, worker, Duration::from_secs(1), now)
            .await
            .unwrap()
            .unwrap();
        job
    }

    #[tokio::test]
    async fn a_requeued_job_whose_message_the_queue_refused_is_dispatched_at_the_next_sweep() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let queue = Arc::new(Queue::default());
        let reaper = reaper(&store, &queue, Arc::new(InProcessBus::new()), 3);
        let now = OffsetDateTime::now_utc();
        let job = claimed_job(&store, "lost-worker", now).await;
        queue.refusals.store(1, Ordering::SeqCst);
        let later = now + Duration::from_secs(2);
        let first = reaper.sweep(later).await.unwrap();
        assert_eq!(first.requeued, 1);
        assert!(queue.sent.lock().unwrap().is_empty());
        let queued = store.get(&job.id).await.unwrap().unwrap();
        assert_eq!((queued.status, queued.attempt), (JobStatus::Queued, 2));
        let second = reaper.sweep(later).await.unwrap();
        assert_eq!(second.redispatched, 1);
        let sent = queue.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].id.clone(), sent[0].attempt), (job.id.clone(), 2));
    }

    #[tokio::test]
    async fn a_job_lost_at_its_last_attempt_fails_and_the_failure_is_announced() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let queue = Arc::new(Queue::default());
        let bus = Arc::new(InProcessBus::new());
        let mut events = bus.subscribe();
        let reaper = reaper(&store, &queue, bus.clone(), 1);
        let now = OffsetDateTime::now_utc();
        let job = claimed_job(&store, "w", now).await;
        let swept = reaper.sweep(now + Duration::from_secs(2)).await.unwrap();
        assert_eq!((swept.requeued, swept.failed), (0, 1));
        assert!(queue.sent.lock().unwrap().is_empty(), "no attempt is left");
        let failed = store.get(&job.id).await.unwrap().unwrap();
        assert_eq!(failed.status, JobStatus::Failed);
        let Ok(jobq_common::embedded::BusMessage::Job(event)) = events.try_recv() else {
            panic!("the failure is published");
        };
        assert_eq!(
            (event.from, event.to),
            (Some(JobStatus::Running), JobStatus::Failed)
        );
        assert!(event.elapsed_ms.is_some());
    }

    #[tokio::test]
    async fn expired_leases_are_requeued_while_the_dispatch_queue_does_not_answer() {
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let queue = Arc::new(Queue::default());
        let reaper = reaper(&store, &queue, Arc::new(InProcessBus::new()), 3);
        let now = OffsetDateTime::now_utc();
        let first = claimed_job(&store, "lost-worker", now).await;
        let second = claimed_job(&store, "lost-worker", now).await;
        queue.away.store(true, Ordering::SeqCst);
        let later = now + Duration::from_secs(2);
        // Both jobs are queued again in the store (where free slots claim them) in one sweep
        // that does not wait for the queue's answers.
        let swept = tokio::time::timeout(Duration::from_secs(5), reaper.sweep(later))
            .await
            .expect("the sweep returns although the queue does not answer")
            .unwrap();
        assert_eq!(swept.requeued, 2);
        for job in [&first, &second] {
            let queued = store.get(&job.id).await.unwrap().unwrap();
            assert_eq!((queued.status, queued.attempt), (JobStatus::Queued, 2));
        }
        // A lease that expires while the queue is still away is handled by the next sweep.
        let third = claimed_job(&store, "lost-worker", later).await;
        let swept = tokio::time::timeout(
            Duration::from_secs(5),
            reaper.sweep(later + Duration::from_secs(2)),
        )
        .await
        .expect("the next sweep returns too")
        .unwrap();
        assert_eq!(swept.requeued, 1);
        let queued = store.get(&third.id).await.unwrap().unwrap();
        assert_eq!((queued.status, queued.attempt), (JobStatus::Queued, 2));
    }
}
