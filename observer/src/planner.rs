//! The observer's plan (docs/deadlines.md): each period it reads the waiting jobs in
//! scheduling order and the running ones, turns them into a [`Backlog`] for the policy with
//! the service times it learned per repository from the job events, and, once the fleet's
//! size is decided, a [`Plan`]: every planned job's predicted start and finish, stored for
//! the frontend's estimates, and the jobs predicted to miss their deadline.

use std::collections::{HashMap, HashSet};

use jobq_common::domain::{Job, JobEvent, JobId, JobStatus, unix_ms};
use jobq_common::plan::{
    ArrivalMix, Backlog, Fleet, OrderKey, Plan, PlanEntry, ServiceTimes, Waiting, extend_tail,
    list_schedule,
};
use jobq_common::settings::ObserverSettings;

/// How many repositories a plan lists the service times of.
const PLAN_REPOS: usize = 256;

/// At most this many running jobs are remembered from their start events.
const STARTED: usize = 100_000;

/// Learned service times, and what the last plan flagged.
#[derive(Debug)]
pub struct Planner {
    pub service: ServiceTimes,
    /// Running jobs seen starting: their repository and start (ms).
    started: HashMap<JobId, (String, i64)>,
    at_risk: HashSet<JobId>,
    /// The share of submits with a deadline.
    pub arrivals: ArrivalMix,
    /// A job's expected time before anything was learned.
    pub default_secs: f64,
    pub startup_secs: f64,
    /// Waiting jobs a plan covers.
    pub limit: u64,
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn ms(secs: f64) -> Option<i64> {
    secs.is_finite().then(|| (secs * 1000.0).round() as i64)
}

impl Planner {
    pub fn new(default_secs: f64, startup_secs: f64, limit: u64) -> Self {
        Self {
            service: ServiceTimes::default(),
            started: HashMap::new(),
            at_risk: HashSet::new(),
            arrivals: ArrivalMix::default(),
            default_secs,
            startup_secs,
            limit,
        }
    }

    pub fn from_settings(s: &ObserverSettings) -> Self {
        Self::new(s.target_wait_secs, s.worker_startup_secs, s.plan_jobs)
    }

    /// Learns from one job event: a run that ended finished or failed took its start → end
    /// time (a cancelled or lost run says nothing of how long the job takes).
    pub fn record(&mut self, event: &JobEvent) {
        if event.is_notice() {
            return;
        }
        let at = unix_ms(event.at);
        if event.from.is_none() {
            self.arrivals.record(event.has_deadline);
        }
        match event.to {
            JobStatus::Running => {
                if let Some(repo) = &event.repo {
                    if self.started.len() >= STARTED {
                        self.started.clear();
                    }
                    self.started
                        .insert(event.job_id.clone(), (repo.clone(), at));
                }
            }
            to => {
                if let Some((repo, start)) = self.started.remove(&event.job_id)
                    && matches!(to, JobStatus::Finished | JobStatus::Failed)
                {
                    self.service.record(&repo, secs((at - start).max(0)));
                }
            }
        }
    }

    /// What `job` is expected to take: its own `expectedDurationSecs`, else its
    /// repository's mean, else all jobs', else the default.
    pub fn expected_secs(&self, job: &Job) -> f64 {
        job.schedule
            .expected_secs
            .or_else(|| {
                self.service
                    .of(&job.spec.redacted_url())
                    .map(|s| s.mean_secs)
            })
            .or_else(|| self.service.overall().map(|s| s.mean_secs))
            .unwrap_or(self.default_secs)
    }

    fn running_end(&self, job: &Job, now_ms: i64) -> f64 {
        let start = job.started_at.map_or(now_ms, unix_ms);
        secs(start).max(0.0) + self.expected_secs(job)
    }

    /// The backlog the policy plans with at `now_ms`: `waiting` in scheduling order,
    /// `running`, on today's `workers` of `slots_per_worker`.
    pub fn backlog(
        &self,
        now_ms: i64,
        waiting: &[Job],
        running: &[Job],
        workers: u32,
        slots_per_worker: u32,
    ) -> Backlog {
        let now = secs(now_ms);
        Backlog {
            fleet: Fleet {
                now,
                busy_ends: running
                    .iter()
                    .map(|j| self.running_end(j, now_ms).max(now))
                    .collect(),
                workers,
                slots_per_worker,
                startup_secs: self.startup_secs,
            },
            waiting: waiting
                .iter()
                .map(|j| Waiting {
                    ready: secs(unix_ms(j.ready_at())),
                    secs: self.expected_secs(j),
                    deadline: j.schedule.deadline.map(|d| secs(unix_ms(d))),
                })
                .collect(),
            deadline_share: self.arrivals.share(),
        }
    }

    /// The plan for a fleet of `workers` (the period's decision): `waiting` and `running`
    /// are the jobs `backlog` was made from; `queued` counts every waiting job.
    pub fn plan(
        &self,
        backlog: &Backlog,
        waiting: &[Job],
        running: &[Job],
        workers: u32,
        queued: u64,
    ) -> Plan {
        let now_ms = (backlog.fleet.now * 1000.0).round() as i64;
        let slots = backlog.fleet.slots(workers);
        let timeline = list_schedule(&slots, &backlog.waiting);
        let (forecasts, tail) = (&timeline.forecasts, timeline.tail);
        let mut entries: Vec<PlanEntry> = waiting
            .iter()
            .zip(&backlog.waiting)
            .zip(forecasts)
            .map(|((job, w), f)| PlanEntry {
                key: OrderKey::of(job),
                running: false,
                start_ms: ms(f.start),
                finish_ms: ms(f.finish),
                at_risk: w.deadline.is_some_and(|d| f.finish > d),
            })
            .collect();
        entries.extend(running.iter().map(|job| {
            let finish = ms(self.running_end(job, now_ms)).map(|f| f.max(now_ms));
            PlanEntry {
                key: OrderKey::of(job),
                running: true,
                start_ms: job.started_at.map(unix_ms),
                finish_ms: finish,
                at_risk: job
                    .schedule
                    .deadline
                    .zip(finish)
                    .is_some_and(|(d, f)| f > unix_ms(d)),
            }
        }));
        // Jobs past the planned ones share the slots after the last planned start.
        let unplanned = queued.saturating_sub(waiting.len() as u64);
        let tail = extend_tail(
            tail,
            unplanned,
            &backlog.waiting,
            slots.len(),
            self.default_secs,
        );
        Plan {
            at_ms: now_ms,
            workers,
            slots: slots.len() as u32,
            entries,
            unplanned,
            tail_ms: ms(tail),
            idle_ms: timeline
                .idle
                .iter()
                .filter_map(|&(from, until)| Some((ms(from)?, ms(until)?)))
                .collect(),
            service: self.service.repos(PLAN_REPOS),
            overall: self.service.overall(),
            default_secs: self.default_secs,
        }
    }

    /// The jobs `plan` flags at risk that the last plan did not, and those it flagged that
    /// this one does not; remembers this plan's.
    pub fn risk_changes(&mut self, plan: &Plan) -> (Vec<JobId>, Vec<JobId>) {
        let now: HashSet<JobId> = plan
            .entries
            .iter()
            .filter(|e| e.at_risk)
            .map(|e| e.key.id.clone())
            .collect();
        let planned: HashSet<&JobId> = plan.entries.iter().map(|e| &e.key.id).collect();
        let raised = now.difference(&self.at_risk).cloned().collect();
        // A job no longer planned (it ended) keeps the flag it ended with.
        let cleared = self
            .at_risk
            .iter()
            .filter(|id| planned.contains(id) && !now.contains(*id))
            .cloned()
            .collect();
        self.at_risk = now;
        (raised, cleared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobq_common::domain::{JobSpec, Schedule, from_unix_ms};

    fn job(at_ms: i64, deadline_ms: Option<i64>, expected: Option<f64>) -> Job {
        let mut j = Job::new(
            "alice",
            JobSpec {
                url: "https://user:token@example.com/r.git".into(),
                args: String::new(),
                config: String::new(),
            },
            from_unix_ms(at_ms),
        );
        j.schedule = Schedule {
            deadline: deadline_ms.map(from_unix_ms),
            expected_secs: expected,
            ..Schedule::default()
        };
        j
    }

    fn event(j: &Job, to: JobStatus, at_ms: i64) -> JobEvent {
        let mut j = j.clone();
        j.status = to;
        JobEvent::after(&j, None, None, from_unix_ms(at_ms))
    }

    #[test]
    fn service_times_are_learned_from_finished_and_failed_runs_only() {
        let mut p = Planner::new(10.0, 3.0, 100);
        let j = job(0, None, None);
        assert_eq!(p.expected_secs(&j), 10.0);
        p.record(&event(&j, JobStatus::Running, 1_000));
        p.record(&event(&j, JobStatus::Finished, 5_000));
        let k = job(0, None, None);
        p.record(&event(&k, JobStatus::Running, 1_000));
        p.record(&event(&k, JobStatus::Cancelled, 1_500));
        // Learned under the redacted URL: the credential is not part of the key.
        let stats = p
            .service
            .of("https://***@example.com/r.git")
            .expect("learned");
        assert_eq!((stats.mean_secs, stats.samples), (4.0, 1));
        assert_eq!(p.expected_secs(&job(0, None, None)), 4.0);
        assert_eq!(p.expected_secs(&job(0, None, Some(2.5))), 2.5);
        let notice = JobEvent::deadline_notice(&j, true, from_unix_ms(9_000));
        p.record(&notice);
        assert_eq!(p.service.overall().unwrap().samples, 1);
    }

    #[test]
    fn the_plan_predicts_starts_in_order_and_flags_late_deadlines() {
        let mut p = Planner::new(10.0, 3.0, 100);
        let now = 100_000;
        // One slot, busy until 104 s; three 5 s jobs waiting, the last due at 113 s.
        let mut busy = job(90_000, None, Some(10.0));
        busy.status = JobStatus::Running;
        busy.started_at = Some(from_unix_ms(94_000));
        let waiting = vec![
            job(95_000, None, Some(5.0)),
            job(96_000, None, Some(5.0)),
            job(97_000, Some(113_000), Some(5.0)),
        ];
        let running = vec![busy];
        let b = p.backlog(now, &waiting, &running, 1, 1);
        let plan = p.plan(&b, &waiting, &running, 1, 5);
        let starts: Vec<_> = plan.entries.iter().map(|e| e.start_ms).collect();
        assert_eq!(
            starts,
            vec![Some(104_000), Some(109_000), Some(114_000), Some(94_000)]
        );
        assert!(plan.entries[2].at_risk && !plan.entries[0].at_risk);
        // Two jobs beyond the plan share the one slot after the last start.
        assert_eq!((plan.unplanned, plan.tail_ms), (2, Some(129_000)));
        let (raised, cleared) = p.risk_changes(&plan);
        assert_eq!((raised, cleared.len()), (vec![waiting[2].id.clone()], 0));
        // With a second worker (after 3 s of start-up) the deadline holds again.
        let plan = p.plan(&b, &waiting, &running, 2, 3);
        assert!(!plan.entries[2].at_risk);
        assert_eq!(plan.entries[1].start_ms, Some(104_000));
        let (raised, cleared) = p.risk_changes(&plan);
        assert_eq!((raised.len(), cleared), (0, vec![waiting[2].id.clone()]));
    }

    #[test]
    fn the_frontend_estimates_a_new_job_from_its_place_in_the_plan() {
        let p = Planner::new(10.0, 3.0, 100);
        let waiting = vec![job(1_000, None, Some(4.0)), job(2_000, None, Some(4.0))];
        let b = p.backlog(10_000, &waiting, &[], 1, 1);
        let plan = p.plan(&b, &waiting, &[], 1, 2);
        // A new job with a deadline goes before both: it takes the first one's start.
        let urgent = job(11_000, Some(60_000), Some(1.0));
        let e = plan.estimate(&urgent, 11_000).expect("estimated");
        assert_eq!(
            (e.start_ms, e.finish_ms, e.at_risk),
            (11_000, 12_000, false)
        );
        // One without goes last: after both (10 + 4 + 4 s).
        let last = job(12_000, None, None);
        let e = plan.estimate(&last, 12_000).expect("estimated");
        assert_eq!((e.start_ms, e.finish_ms), (18_000, 28_000));
        // A planned job answers its own entry.
        let e = plan.estimate(&waiting[1], 12_000).expect("planned");
        assert_eq!(e.start_ms, 14_000);
    }
}

#[cfg(test)]
mod delayed {
    use super::*;
    use jobq_common::domain::{JobSpec, from_unix_ms};

    #[test]
    fn a_job_ready_now_is_not_predicted_behind_a_delayed_one() {
        // One free slot, one waiting job held back for an hour: a job submitted after the
        // plan, ready in two minutes, takes the idle slot then, not the slot after the hour.
        let p = Planner::new(10.0, 3.0, 100);
        let now = 1_000_000;
        let spec = JobSpec {
            url: "https://example.com/r.git".into(),
            args: String::new(),
            config: String::new(),
        };
        let mut delayed = Job::new("a", spec.clone(), from_unix_ms(now));
        delayed.schedule.not_before = Some(from_unix_ms(now + 3_600_000));
        let waiting = vec![delayed];
        let b = p.backlog(now, &waiting, &[], 1, 1);
        let plan = p.plan(&b, &waiting, &[], 1, 1);
        assert_eq!(plan.entries[0].start_ms, Some(now + 3_600_000));
        assert_eq!(plan.idle_ms, vec![(now, now + 3_600_000)]);
        let mut soon = Job::new("a", spec, from_unix_ms(now + 1_000));
        soon.schedule.not_before = Some(from_unix_ms(now + 120_000));
        let e = plan.estimate(&soon, now + 1_000).expect("estimated");
        assert_eq!(e.start_ms, now + 120_000);
        // One ready at once starts at once.
        soon.schedule.not_before = None;
        assert_eq!(
            plan.estimate(&soon, now + 1_000).unwrap().start_ms,
            now + 1_000
        );
    }
}
