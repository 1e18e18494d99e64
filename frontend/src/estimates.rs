//! A job's `estimatedStartAt`, `estimatedFinishAt` and `deadlineAtRisk` from the observer's
//! newest plan (docs/deadlines.md). The plan is read from the store at most once a second
//! per frontend; a plan older than [`STALE`] (no observer is planning) gives no estimates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobq_common::domain::{Job, unix_ms};
use jobq_common::plan::{Estimate, Plan};
use jobq_common::ports::ObservationStore;
use time::OffsetDateTime;

/// How long a plan read serves the next requests.
const FRESH: Duration = Duration::from_secs(1);

/// A plan made longer ago than this gives no estimates.
pub const STALE: Duration = Duration::from_secs(60);

/// The newest plan this frontend read, and when.
#[derive(Debug, Default)]
pub struct PlanCache {
    last: Mutex<Option<(Option<Arc<Plan>>, Instant)>>,
}

impl PlanCache {
    /// The newest plan: the one read within the last second, else the store's. A store
    /// that cannot be read gives none (the estimates are left out, the request goes on).
    pub async fn plan(&self, store: &dyn ObservationStore) -> Option<Arc<Plan>> {
        if let Some((plan, read)) = self.last.lock().expect("plan cache lock").as_ref()
            && read.elapsed() < FRESH
        {
            return plan.clone();
        }
        let plan = match store.plan().await {
            Ok(plan) => plan.map(Arc::new),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the plan: no estimates");
                None
            }
        };
        *self.last.lock().expect("plan cache lock") = Some((plan.clone(), Instant::now()));
        plan
    }

    /// The estimates of `job` now, if a recent plan has them.
    pub async fn estimate(&self, store: &dyn ObservationStore, job: &Job) -> Option<Estimate> {
        if job.status.is_terminal() {
            return None;
        }
        let plan = self.plan(store).await?;
        let now = unix_ms(OffsetDateTime::now_utc());
        if now - plan.at_ms > STALE.as_millis() as i64 {
            return None;
        }
        plan.estimate(job, now)
    }
}
