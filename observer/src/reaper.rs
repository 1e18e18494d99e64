//! Re-queues jobs whose worker was lost (its lease expired): `running → queued` with the
//! next attempt and a new dispatch message, or `failed` (worker lost) after the last attempt.
//! Every step is a conditional update, so several observers can sweep at once safely.

use std::sync::Arc;
use std::time::Duration;

use jobq_common::PortResult;
use jobq_common::domain::{Dispatch, FailureReason, Job, JobEvent, JobStatus, Outcome};
use jobq_common::ports::{DispatchQueue, EventBus, JobStore};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// The lease reaper.
#[derive(Clone)]
pub struct LeaseReaper {
    pub store: Arc<dyn JobStore>,
    pub dispatch: Arc<dyn DispatchQueue>,
    pub events: Arc<dyn EventBus>,
    pub max_attempts: u32,
    /// Queued jobs not claimed this long after their dispatch are dispatched again.
    pub redispatch_after: Duration,
}

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
}

fn reaper_event(job: &Job, to: JobStatus, now: OffsetDateTime) -> JobEvent {
    JobEvent {
        job_id: job.id.clone(),
        attempt: job.attempt,
        from: Some(JobStatus::Running),
        to,
        at: now,
        worker: None,
        elapsed_ms: to
            .is_terminal()
            .then(|| (now - job.created_at).whole_milliseconds().max(0) as u64),
        waited_ms: None,
    }
}

impl LeaseReaper {
    /// Handles every lease expired at `now`.
    pub async fn sweep(&self, now: OffsetDateTime) -> PortResult<Sweep> {
        let mut done = Sweep::default();
        for job in self.store.expired(now, 500).await? {
            if job.attempt < self.max_attempts {
                let Some(requeued) = self
                    .store
                    .requeue_expired(&job.id, job.attempt, now)
                    .await?
                else {
                    continue; // renewed, finished, or another observer got there first
                };
                tracing::warn!(job_id = %job.id, attempt = requeued.attempt, "worker lost: job queued again");
                self.dispatch
                    .dispatch(&Dispatch {
                        id: requeued.id.clone(),
                        attempt: requeued.attempt,
                    })
                    .await?;
                self.publish(reaper_event(&requeued, JobStatus::Queued, now))
                    .await;
                done.requeued += 1;
            } else {
                let outcome = Outcome {
                    status: JobStatus::Failed,
                    exit_code: None,
                    elapsed_ms: job
                        .started_at
                        .map(|s| (now - s).whole_milliseconds().max(0) as u64)
                        .unwrap_or(0),
                    output_files: Vec::new(),
                    failure: Some(FailureReason::WorkerLost {
                        attempts: job.attempt,
                    }),
                };
                if let Some(failed) = self
                    .store
                    .fail_expired(&job.id, job.attempt, &outcome, now)
                    .await?
                {
                    tracing::warn!(job_id = %job.id, attempts = job.attempt, "worker lost after the last attempt");
                    self.publish(reaper_event(&failed, JobStatus::Failed, now))
                        .await;
                    done.failed += 1;
                }
            }
        }
        let stale_since = now - self.redispatch_after;
        for message in self.store.redispatch_stale(stale_since, now, 500).await? {
            tracing::warn!(job_id = %message.id, attempt = message.attempt, "queued job not claimed for long: dispatched again");
            self.dispatch.dispatch(&message).await?;
            done.redispatched += 1;
        }
        Ok(done)
    }

    async fn publish(&self, event: JobEvent) {
        if let Err(e) = self.events.publish(&event).await {
            tracing::warn!(job_id = %event.job_id, error = %e, "job event not published");
        }
    }

    /// Sweeps every `every` until `shutdown`.
    pub async fn run(&self, every: Duration, shutdown: CancellationToken) {
        loop {
            match self.sweep(OffsetDateTime::now_utc()).await {
                Ok(s) if s != Sweep::default() => {
                    tracing::info!(
                        requeued = s.requeued,
                        failed = s.failed,
                        redispatched = s.redispatched,
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
