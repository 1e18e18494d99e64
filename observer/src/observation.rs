//! Events of a period → one [`Observation`]. Pure: it knows nothing about Kafka or time
//! sources; the Kafka observer, the standalone mode and the simulator all feed it.
//!
//! Definitions (documented in docs/elasticity.md):
//!
//! - **Rates are per second**, averaged over the period: `avgRateOfArrival` counts every
//!   entry into the queue — new jobs (`None → queued`) *and* re-queues (`running → queued`,
//!   a lost or stopping worker's job), because both need a slot again; `avgRateOfService`
//!   counts `queued → running`; `avgRateOfFinished` counts every transition into a terminal
//!   state (including a queued job cancelled).
//! - `avgResponseTime`: mean `elapsed_ms` (created → end) of the jobs that ended in the
//!   period, in seconds; 0 when none ended.
//! - `queueWaitP50/P95`: percentiles of `waited_ms` of the jobs that started in the period,
//!   raised to the age of the oldest job still waiting when that is larger (so a queue that
//!   starts nothing still shows its wait), in seconds.
//! - `busySlots`: jobs running at the end of the period, tracked from the events seen since
//!   the observer started (jobs already running before it started are not counted until
//!   their next event).
//! - The mean *service* time (start → end) is measured from the start and end events of the
//!   same job and handed to the policies beside the observation.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use jobq_common::domain::{JobEvent, JobId, JobStatus, Observation};

/// The state that survives periods (what is queued and running) and the counts of the
/// current period. `J` identifies a job, `W` a worker.
#[derive(Debug)]
pub struct Tracker<J: Hash + Eq + Ord + Clone, W: Hash + Eq + Clone> {
    queued: HashMap<J, i64>,
    /// Queued jobs per arrival millisecond: the oldest is the first key.
    queued_by_age: BTreeMap<i64, u32>,
    running: HashMap<J, (i64, Option<W>)>,
    arrivals: u64,
    services: u64,
    finished: u64,
    response_ms_sum: u64,
    responses: u64,
    service_ms_sum: i64,
    service_samples: u64,
    waits_ms: Vec<u64>,
}

impl<J: Hash + Eq + Ord + Clone, W: Hash + Eq + Clone> Default for Tracker<J, W> {
    fn default() -> Self {
        Self {
            queued: HashMap::new(),
            queued_by_age: BTreeMap::new(),
            running: HashMap::new(),
            arrivals: 0,
            services: 0,
            finished: 0,
            response_ms_sum: 0,
            responses: 0,
            service_ms_sum: 0,
            service_samples: 0,
            waits_ms: Vec::new(),
        }
    }
}

impl<J: Hash + Eq + Ord + Clone, W: Hash + Eq + Clone> Tracker<J, W> {
    pub fn new() -> Self {
        Self::default()
    }

    /// One transition of `job` at `at_ms`. `counted = false` rebuilds the state (queued, running) from an old event without
    /// counting it in the period, e.g. events from before the observer started.
    #[allow(clippy::too_many_arguments)] // one argument per JobEvent field, kept flat for the simulator
    pub fn transition(
        &mut self,
        job: J,
        from: Option<JobStatus>,
        to: JobStatus,
        at_ms: i64,
        worker: Option<W>,
        waited_ms: Option<u64>,
        elapsed_ms: Option<u64>,
        counted: bool,
    ) {
        let started = if from == Some(JobStatus::Running) {
            self.running.remove(&job).map(|(s, _)| s)
        } else {
            None
        };
        match to {
            JobStatus::Queued => {
                if let Some(old) = self.queued.insert(job, at_ms) {
                    self.forget_age(old);
                }
                *self.queued_by_age.entry(at_ms).or_insert(0) += 1;
                if counted {
                    self.arrivals += 1;
                }
            }
            JobStatus::Running => {
                if let Some(since) = self.queued.remove(&job) {
                    self.forget_age(since);
                }
                self.running.insert(job, (at_ms, worker));
                if counted {
                    self.services += 1;
                    if let Some(w) = waited_ms {
                        self.waits_ms.push(w);
                    }
                }
            }
            _ => {
                if let Some(since) = self.queued.remove(&job) {
                    self.forget_age(since);
                }
                self.running.remove(&job);
                if counted {
                    self.finished += 1;
                    if let Some(e) = elapsed_ms {
                        self.response_ms_sum += e;
                        self.responses += 1;
                    }
                    if let Some(s) = started {
                        self.service_ms_sum += (at_ms - s).max(0);
                        self.service_samples += 1;
                    }
                }
            }
        }
    }

    fn forget_age(&mut self, at_ms: i64) {
        if let Some(n) = self.queued_by_age.get_mut(&at_ms) {
            *n -= 1;
            if *n == 0 {
                self.queued_by_age.remove(&at_ms);
            }
        }
    }

    /// Jobs running now.
    pub fn busy_slots(&self) -> u32 {
        self.running.len() as u32
    }

    /// Jobs waiting now.
    pub fn queued(&self) -> u64 {
        self.queued.len() as u64
    }

    /// Running jobs per worker.
    pub fn busy_by_worker(&self) -> HashMap<W, u32> {
        let mut by = HashMap::new();
        for (_, w) in self.running.values() {
            if let Some(w) = w {
                *by.entry(w.clone()).or_insert(0) += 1;
            }
        }
        by
    }

    /// Closes the period that ended at `now_ms` and lasted `period_secs`, starts the next,
    /// and returns what it measured. `queue_depth` and `workers` come from outside (the
    /// broker's lag and group membership, or the simulator); `None` uses what the events say.
    pub fn close(
        &mut self,
        now_ms: i64,
        period_secs: f64,
        queue_depth: Option<u64>,
        workers: u32,
    ) -> (Observation, Option<f64>) {
        let per_sec = |n: u64| n as f64 / period_secs.max(1e-9);
        let oldest_wait_ms = self
            .queued_by_age
            .keys()
            .next()
            .map(|at| (now_ms - at).max(0) as u64)
            .unwrap_or(0);
        let mut waits = std::mem::take(&mut self.waits_ms);
        let p50 = percentile(&mut waits, 0.50).max(oldest_wait_ms);
        let p95 = percentile(&mut waits, 0.95).max(oldest_wait_ms);
        let observation = Observation {
            avg_rate_of_arrival: per_sec(self.arrivals),
            avg_rate_of_service: per_sec(self.services),
            avg_rate_of_finished: per_sec(self.finished),
            avg_response_time: if self.responses > 0 {
                self.response_ms_sum as f64 / self.responses as f64 / 1000.0
            } else {
                0.0
            },
            timestamp: now_ms,
            queue_depth: queue_depth.unwrap_or(self.queued.len() as u64),
            workers,
            busy_slots: self.running.len() as u32,
            queue_wait_p50: p50 as f64 / 1000.0,
            queue_wait_p95: p95 as f64 / 1000.0,
            desired_workers: 0,
            policy: String::new(),
            deadline_jobs: 0,
            deadlines_at_risk: 0,
        };
        let service = (self.service_samples > 0)
            .then(|| self.service_ms_sum as f64 / self.service_samples as f64 / 1000.0);
        self.arrivals = 0;
        self.services = 0;
        self.finished = 0;
        self.response_ms_sum = 0;
        self.responses = 0;
        self.service_ms_sum = 0;
        self.service_samples = 0;
        waits.clear();
        self.waits_ms = waits;
        (observation, service)
    }
}

impl Tracker<JobId, String> {
    /// Feeds one job event from the bus.
    pub fn record(&mut self, event: &JobEvent, counted: bool) {
        // A notice (the deadline flag) is no transition.
        if event.is_notice() {
            return;
        }
        let at_ms = (event.at.unix_timestamp_nanos() / 1_000_000) as i64;
        self.transition(
            event.job_id.clone(),
            event.from,
            event.to,
            at_ms,
            event.worker.clone(),
            event.waited_ms,
            event.elapsed_ms,
            counted,
        );
    }
}

/// The `q` quantile (nearest rank) of `values`, 0 when empty. Reorders `values`.
pub fn percentile(values: &mut [u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
    *values.select_nth_unstable(rank).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    type T = Tracker<u32, &'static str>;

    #[test]
    fn rates_are_per_second_and_requeues_count_as_arrivals() {
        let mut t = T::new();
        for j in 0..4 {
            t.transition(j, None, Queued, 0, None, None, None, true);
        }
        t.transition(
            0,
            Some(Queued),
            Running,
            100,
            Some("w1"),
            Some(100),
            None,
            true,
        );
        t.transition(
            1,
            Some(Queued),
            Running,
            200,
            Some("w2"),
            Some(200),
            None,
            true,
        );
        t.transition(
            0,
            Some(Running),
            Finished,
            1100,
            Some("w1"),
            None,
            Some(1100),
            true,
        );
        t.transition(1, Some(Running), Queued, 1200, None, None, None, true);
        let (o, service) = t.close(2000, 2.0, None, 2);
        assert_eq!(o.avg_rate_of_arrival, 2.5); // 4 new + 1 re-queue in 2 s
        assert_eq!(o.avg_rate_of_service, 1.0);
        assert_eq!(o.avg_rate_of_finished, 0.5);
        assert_eq!(o.avg_response_time, 1.1);
        assert_eq!(service, Some(1.0));
        assert_eq!(o.busy_slots, 0);
        assert_eq!(o.queue_depth, 3); // jobs 1 (again), 2, 3
        assert_eq!(o.workers, 2);
        // Jobs 2 and 3 have waited 2 s, longer than any started job.
        assert_eq!(o.queue_wait_p95, 2.0);
        assert_eq!(o.timestamp, 2000);
    }

    #[test]
    fn a_new_period_starts_empty_but_keeps_running_jobs() {
        let mut t = T::new();
        t.transition(7, None, Queued, 0, None, None, None, true);
        t.transition(
            7,
            Some(Queued),
            Running,
            10,
            Some("w"),
            Some(10),
            None,
            true,
        );
        t.close(1000, 1.0, Some(0), 1);
        let (o, service) = t.close(2000, 1.0, Some(0), 1);
        assert_eq!(o.avg_rate_of_arrival, 0.0);
        assert_eq!(o.avg_rate_of_service, 0.0);
        assert_eq!(o.busy_slots, 1);
        assert_eq!(o.queue_wait_p95, 0.0);
        assert_eq!(service, None);
        assert_eq!(t.busy_by_worker().get("w"), Some(&1));
    }

    #[test]
    fn wait_percentiles_come_from_started_jobs() {
        let mut t = T::new();
        for j in 0..20u32 {
            t.transition(j, None, Queued, 0, None, None, None, true);
            let waited = (j as u64 + 1) * 100;
            t.transition(
                j,
                Some(Queued),
                Running,
                waited as i64,
                Some("w"),
                Some(waited),
                None,
                true,
            );
        }
        let (o, _) = t.close(3000, 1.0, Some(0), 1);
        assert_eq!(o.queue_wait_p50, 1.0);
        assert_eq!(o.queue_wait_p95, 1.9);
    }

    #[test]
    fn uncounted_events_rebuild_state_only() {
        let mut t = T::new();
        t.transition(1, None, Queued, 0, None, None, None, false);
        t.transition(1, Some(Queued), Running, 5, Some("w"), Some(5), None, false);
        let (o, _) = t.close(1000, 1.0, Some(0), 1);
        assert_eq!(o.avg_rate_of_arrival, 0.0);
        assert_eq!(o.busy_slots, 1);
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        assert_eq!(percentile(&mut [], 0.95), 0);
        assert_eq!(percentile(&mut [5], 0.95), 5);
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut v, 0.95), 95);
        assert_eq!(percentile(&mut v, 0.50), 50);
    }

    #[test]
    fn job_events_feed_the_tracker() {
        let mut t: Tracker<JobId, String> = Tracker::new();
        let id = JobId::new();
        let at = time::OffsetDateTime::from_unix_timestamp(10).unwrap();
        t.record(
            &JobEvent {
                job_id: id.clone(),
                attempt: 1,
                from: None,
                to: Queued,
                at,
                worker: None,
                elapsed_ms: None,
                waited_ms: None,
                repo: None,
                has_deadline: false,
                deadline_at_risk: None,
            },
            true,
        );
        let (o, _) = t.close(12_000, 2.0, None, 0);
        assert_eq!(o.avg_rate_of_arrival, 0.5);
        assert_eq!(o.queue_depth, 1);
        assert_eq!(o.queue_wait_p95, 2.0);
    }
}
