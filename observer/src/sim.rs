//! A discrete-event simulator of the queue and its fleet, driving the same [`Controller`]
//! (tracker, policies, governor) as the real observer, so policies can be compared on one
//! load trace at any scale, thousands of times faster than real time.
//!
//! Model: jobs arrive as a Poisson process whose rate follows the trace; one FIFO queue
//! (the `jobs` topic, partitions ignored); each worker has `slots` slots; a job takes a
//! uniformly random time in `[0.25, 1.75] × mean`. Arrival times and durations are drawn
//! before the run ([`jobs`], two seeded streams), so every policy sees exactly the same jobs
//! and the real bench (`scripts/bench-elasticity-real`) can replay them. A started worker takes `startup_secs`
//! before it takes jobs (process start, consumer-group join) and costs worker-seconds from
//! the moment it is asked for; scale-down stops idle workers only (as the local-process
//! scaler does), a busy worker is picked again next period.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use jobq_common::domain::{JobStatus, Observation};

use crate::policy::{Governor, LagPolicy, PolicyInput, QueueingPolicy, ScalingPolicy, SeedPolicy};
use crate::{Controller, FleetState};

/// SplitMix64: a small, seeded generator of our own, so a run is reproducible from its seed
/// and as fast in a debug build as in a release one.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A stretch of the trace: the arrival rate goes linearly from `from` to `to` times the
/// base rate over `secs` (equal for a constant stretch).
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub name: &'static str,
    pub secs: f64,
    pub from: f64,
    pub to: f64,
}

/// Quiet, a step to 5×, a burst of 10×, a slow decline back to 1×, quiet again (46 minutes).
pub fn standard_trace() -> Vec<Phase> {
    vec![
        Phase {
            name: "quiet",
            secs: 600.0,
            from: 1.0,
            to: 1.0,
        },
        Phase {
            name: "step",
            secs: 600.0,
            from: 5.0,
            to: 5.0,
        },
        Phase {
            name: "burst",
            secs: 60.0,
            from: 10.0,
            to: 10.0,
        },
        Phase {
            name: "decline",
            secs: 1200.0,
            from: 5.0,
            to: 1.0,
        },
        Phase {
            name: "quiet",
            secs: 300.0,
            from: 1.0,
            to: 1.0,
        },
    ]
}

/// Everything a run depends on.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub trace: Vec<Phase>,
    /// Jobs per second at 1×.
    pub base_rate: f64,
    pub mean_service_secs: f64,
    pub slots_per_worker: u32,
    pub period_secs: f64,
    pub startup_secs: f64,
    pub target_wait_secs: f64,
    pub wait_fraction: f64,
    pub min_workers: u32,
    pub max_workers: u32,
    pub stabilisation_secs: f64,
    pub lag_threshold: u64,
    pub seed: u64,
}

impl SimConfig {
    /// The small scale of the real bench: ≤ 10 workers of 2 slots, 0.8 jobs/s at 1×.
    pub fn small() -> Self {
        Self {
            trace: standard_trace(),
            base_rate: 0.8,
            mean_service_secs: 2.0,
            slots_per_worker: 2,
            period_secs: 2.0,
            startup_secs: 3.0,
            target_wait_secs: 5.0,
            wait_fraction: 0.05,
            min_workers: 1,
            max_workers: 10,
            stabilisation_secs: 30.0,
            lag_threshold: 5,
            seed: 42,
        }
    }

    /// ≤ 1,000 single-slot workers; the step is 1,000,000 jobs per hour.
    pub fn large() -> Self {
        Self {
            base_rate: 1_000_000.0 / 3600.0 / 5.0,
            slots_per_worker: 1,
            startup_secs: 10.0,
            min_workers: 10,
            max_workers: 1000,
            ..Self::small()
        }
    }

    pub fn duration(&self) -> f64 {
        self.trace.iter().map(|p| p.secs).sum()
    }

    /// The same trace played `factor` times faster: every phase lasts `secs / factor`
    /// (rates, job durations and everything else unchanged).
    pub fn compressed(mut self, factor: f64) -> Self {
        for p in &mut self.trace {
            p.secs /= factor;
        }
        self
    }

    /// Start of the first phase named `step`.
    pub fn step_at(&self) -> f64 {
        let mut t = 0.0;
        for p in &self.trace {
            if p.name == "step" {
                return t;
            }
            t += p.secs;
        }
        0.0
    }

    fn rate_at(&self, t: f64) -> f64 {
        let mut start = 0.0;
        for p in &self.trace {
            if t < start + p.secs {
                let f = p.from + (p.to - p.from) * (t - start) / p.secs;
                return f * self.base_rate;
            }
            start += p.secs;
        }
        0.0
    }

    fn peak_rate(&self) -> f64 {
        self.trace
            .iter()
            .map(|p| p.from.max(p.to))
            .fold(0.0, f64::max)
            * self.base_rate
    }

    /// The policy under test by name, including `static-min` and `static-max`.
    pub fn policy(&self, name: &str) -> Option<(Box<dyn ScalingPolicy>, Governor)> {
        let governor = Governor::new(
            self.min_workers,
            self.max_workers,
            0.0,
            self.stabilisation_secs,
        );
        Some(match name {
            "seed" => (Box::new(SeedPolicy), governor),
            "lag" => (
                Box::new(LagPolicy {
                    lag_threshold: self.lag_threshold,
                }),
                governor,
            ),
            "queueing" => (
                Box::new(QueueingPolicy::new(
                    self.target_wait_secs,
                    self.wait_fraction,
                )),
                governor,
            ),
            "static-min" => (Box::new(Static("static-min", self.min_workers)), governor),
            "static-max" => (Box::new(Static("static-max", self.max_workers)), governor),
            _ => return None,
        })
    }
}

/// A fixed fleet, for comparison.
#[derive(Debug)]
struct Static(&'static str, u32);

impl ScalingPolicy for Static {
    fn name(&self) -> &'static str {
        self.0
    }

    fn desired(&mut self, _input: &PolicyInput<'_>) -> u32 {
        self.1
    }
}

/// What one policy did on the trace.
#[derive(Debug, Clone)]
pub struct SimResult {
    pub policy: String,
    pub periods: u64,
    pub periods_met: u64,
    pub worker_seconds: f64,
    pub scaling_actions: u64,
    /// Seconds from the start of the step to the first period that asked for more workers.
    pub step_to_scale_up_secs: Option<f64>,
    pub jobs: u64,
    pub mean_wait_secs: f64,
    pub max_workers_seen: u32,
    pub wall_secs: f64,
}

impl SimResult {
    pub fn met_share(&self) -> f64 {
        self.periods_met as f64 / self.periods.max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A worker finished starting.
    Ready(u32),
    /// A job ended on a worker.
    Done(u32, u64),
    Arrival,
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Active,
    Gone,
}

#[derive(Debug)]
struct Worker {
    state: State,
    busy: u32,
    since: f64,
}

const US: f64 = 1_000_000.0;

/// The jobs of the trace: arrival time (seconds from the start) and duration, in arrival
/// order. Arrivals come from a Poisson process of the peak rate thinned to the trace's rate
/// (generator seeded with `seed`); durations are uniform in `[0.25, 1.75] × mean` from a
/// second generator, so they do not depend on the arrivals.
pub fn jobs(config: &SimConfig) -> Vec<(f64, f64)> {
    let end = config.duration();
    let peak = config.peak_rate();
    let mut arrivals = SplitMix64::new(config.seed);
    let mut durations = SplitMix64::new(config.seed ^ 0xD1B5_4A32_D192_ED03);
    let mut out = Vec::new();
    if peak <= 0.0 {
        return out;
    }
    let mut t = 0.0;
    loop {
        t += -(1.0 - arrivals.unit()).ln() / peak;
        if t >= end {
            return out;
        }
        if arrivals.unit() * peak <= config.rate_at(t) {
            out.push((
                t,
                config.mean_service_secs * (0.25 + 1.5 * durations.unit()),
            ));
        }
    }
}

/// Replays the trace under one policy.
pub fn run(config: &SimConfig, policy_name: &str) -> Option<SimResult> {
    let wall = Instant::now();
    let (policy, governor) = config.policy(policy_name)?;
    let mut ctl: Controller<u64, u32> = Controller::new(policy, governor, config.slots_per_worker);
    let mut heap: BinaryHeap<Reverse<(u64, Kind)>> = BinaryHeap::new();
    let at = |t: f64| (t * US) as u64;
    let end = config.duration();
    let slots = config.slots_per_worker;

    let mut workers: Vec<Worker> = Vec::new();
    let mut alive: Vec<u32> = Vec::new(); // workers not gone, oldest first
    let mut free: Vec<u32> = Vec::new(); // workers with a free slot (may hold stale entries)
    let mut queue: VecDeque<(u64, f64)> = VecDeque::new();
    let mut next_job = 0u64;
    let mut worker_seconds = 0.0;
    let mut result = SimResult {
        policy: policy_name.to_string(),
        periods: 0,
        periods_met: 0,
        worker_seconds: 0.0,
        scaling_actions: 0,
        step_to_scale_up_secs: None,
        jobs: 0,
        mean_wait_secs: 0.0,
        max_workers_seen: 0,
        wall_secs: 0.0,
    };
    let mut wait_sum = 0.0;
    let step_at = config.step_at();

    let trace = jobs(config);
    if let Some((first, _)) = trace.first() {
        heap.push(Reverse((at(*first), Kind::Arrival)));
    }
    heap.push(Reverse((at(0.0), Kind::Tick)));

    while let Some(Reverse((t_us, kind))) = heap.pop() {
        let t = t_us as f64 / US;
        if t > end {
            break;
        }
        let t_ms = (t * 1000.0) as i64;
        match kind {
            Kind::Arrival => {
                let job = next_job;
                next_job += 1;
                ctl.tracker
                    .transition(job, None, JobStatus::Queued, t_ms, None, None, None, true);
                queue.push_back((job, t));
                if let Some((n, _)) = trace.get(next_job as usize) {
                    heap.push(Reverse((at(*n), Kind::Arrival)));
                }
            }
            Kind::Done(w, job) => {
                ctl.tracker.transition(
                    job,
                    Some(JobStatus::Running),
                    JobStatus::Finished,
                    t_ms,
                    Some(w),
                    None,
                    None,
                    true,
                );
                let worker = &mut workers[w as usize];
                worker.busy -= 1;
                if worker.state == State::Active {
                    free.push(w);
                }
            }
            Kind::Ready(w) => {
                let worker = &mut workers[w as usize];
                if worker.state == State::Starting {
                    worker.state = State::Active;
                    for _ in 0..slots {
                        free.push(w);
                    }
                }
            }
            Kind::Tick => {
                alive.retain(|w| workers[*w as usize].state != State::Gone);
                let live = alive.len() as u32;
                let active = alive
                    .iter()
                    .filter(|w| workers[**w as usize].state == State::Active)
                    .count() as u32;
                let observation = ctl.step(FleetState {
                    now_ms: t_ms,
                    period_secs: config.period_secs,
                    queue_depth: Some(queue.len() as u64),
                    workers: active,
                    current: live,
                    partitions: u32::MAX,
                });
                if t > 0.0 {
                    result.periods += 1;
                    if observation.queue_wait_p95 <= config.target_wait_secs {
                        result.periods_met += 1;
                    }
                }
                let desired = observation.desired_workers;
                if desired != live {
                    result.scaling_actions += 1;
                }
                if desired > live {
                    if t >= step_at && result.step_to_scale_up_secs.is_none() {
                        result.step_to_scale_up_secs = Some(t - step_at);
                    }
                    for _ in live..desired {
                        let w = workers.len() as u32;
                        alive.push(w);
                        workers.push(Worker {
                            state: State::Starting,
                            busy: 0,
                            since: t,
                        });
                        heap.push(Reverse((at(t + config.startup_secs), Kind::Ready(w))));
                    }
                } else if desired < live {
                    let mut excess = live - desired;
                    // Starting workers first (they run nothing), then idle ones, newest first.
                    for state in [State::Starting, State::Active] {
                        for w in alive.iter().rev() {
                            if excess == 0 {
                                break;
                            }
                            let worker = &mut workers[*w as usize];
                            if worker.state == state && worker.busy == 0 {
                                worker.state = State::Gone;
                                worker_seconds += t - worker.since;
                                excess -= 1;
                            }
                        }
                    }
                }
                result.max_workers_seen = result.max_workers_seen.max(desired);
                heap.push(Reverse((at(t + config.period_secs), Kind::Tick)));
            }
        }
        // Hand queued jobs to free slots.
        while !queue.is_empty() {
            let Some(w) = free.pop() else { break };
            let worker = &mut workers[w as usize];
            if worker.state != State::Active || worker.busy >= slots {
                continue;
            }
            let (job, arrived) = queue.pop_front().expect("queue not empty");
            worker.busy += 1;
            let waited = t - arrived;
            wait_sum += waited;
            result.jobs += 1;
            ctl.tracker.transition(
                job,
                Some(JobStatus::Queued),
                JobStatus::Running,
                t_ms,
                Some(w),
                Some((waited * 1000.0) as u64),
                None,
                true,
            );
            let service = trace[job as usize].1;
            heap.push(Reverse((at(t + service), Kind::Done(w, job))));
        }
    }
    for worker in &workers {
        if worker.state != State::Gone {
            worker_seconds += end - worker.since;
        }
    }
    result.worker_seconds = worker_seconds;
    result.mean_wait_secs = wait_sum / result.jobs.max(1) as f64;
    result.wall_secs = wall.elapsed().as_secs_f64();
    Some(result)
}

/// Scores a real run the way [`run`] scores a simulated one, from the observations the
/// real observer stored (any order) and the queue waits (seconds) of the jobs that started.
/// `start_ms` is when the replay of the trace began; the periods that ended within the
/// trace count. Worker-seconds are each period's `workers` times its length; a scaling
/// action is a period whose decision differs from its `workers`.
pub fn score(
    config: &SimConfig,
    policy: &str,
    observations: &[Observation],
    start_ms: i64,
    waits: &[f64],
) -> SimResult {
    let end_ms = start_ms + (config.duration() * 1000.0) as i64;
    let step_ms = start_ms + (config.step_at() * 1000.0) as i64;
    let mut observations: Vec<&Observation> = observations
        .iter()
        .filter(|o| o.timestamp > start_ms && o.timestamp <= end_ms)
        .collect();
    observations.sort_by_key(|o| o.timestamp);
    let mut result = SimResult {
        policy: policy.to_string(),
        periods: observations.len() as u64,
        periods_met: 0,
        worker_seconds: 0.0,
        scaling_actions: 0,
        step_to_scale_up_secs: None,
        jobs: waits.len() as u64,
        mean_wait_secs: waits.iter().sum::<f64>() / waits.len().max(1) as f64,
        max_workers_seen: 0,
        wall_secs: config.duration(),
    };
    let mut previous_ms = start_ms;
    for o in observations {
        if o.queue_wait_p95 <= config.target_wait_secs {
            result.periods_met += 1;
        }
        result.worker_seconds += o.workers as f64 * (o.timestamp - previous_ms) as f64 / 1000.0;
        previous_ms = o.timestamp;
        if o.desired_workers != o.workers {
            result.scaling_actions += 1;
        }
        if o.desired_workers > o.workers
            && o.timestamp >= step_ms
            && result.step_to_scale_up_secs.is_none()
        {
            result.step_to_scale_up_secs = Some((o.timestamp - step_ms) as f64 / 1000.0);
        }
        result.max_workers_seen = result.max_workers_seen.max(o.desired_workers);
    }
    result
}

/// The policies compared, in table order.
pub const POLICIES: [&str; 5] = ["static-min", "static-max", "seed", "lag", "queueing"];

/// A Markdown table of the results.
pub fn table(config: &SimConfig, results: &[SimResult]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "trace {:.0} s, base {:.2} jobs/s (step {:.0} jobs/h), mean job {:.1} s, {} slot(s)/worker, \
         {}–{} workers, target p95 wait ≤ {:.0} s per {:.0} s period, seed {}\n\n",
        config.duration(),
        config.base_rate,
        config.base_rate * 5.0 * 3600.0,
        config.mean_service_secs,
        config.slots_per_worker,
        config.min_workers,
        config.max_workers,
        config.target_wait_secs,
        config.period_secs,
        config.seed,
    ));
    out.push_str("| policy | periods meeting target | worker-seconds | scaling actions | step → first scale-up | jobs | mean wait | speed-up |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {:.1} % | {:.0} | {} | {} | {} | {:.2} s | {:.0}× |\n",
            r.policy,
            100.0 * r.met_share(),
            r.worker_seconds,
            r.scaling_actions,
            r.step_to_scale_up_secs
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "—".into()),
            r.jobs,
            r.mean_wait_secs,
            config.duration() / r.wall_secs.max(1e-9),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> SimConfig {
        SimConfig {
            trace: vec![
                Phase {
                    name: "quiet",
                    secs: 120.0,
                    from: 1.0,
                    to: 1.0,
                },
                Phase {
                    name: "step",
                    secs: 240.0,
                    from: 5.0,
                    to: 5.0,
                },
                Phase {
                    name: "decline",
                    secs: 120.0,
                    from: 5.0,
                    to: 1.0,
                },
            ],
            ..SimConfig::small()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let a = run(&short(), "queueing").unwrap();
        let b = run(&short(), "queueing").unwrap();
        assert_eq!(a.jobs, b.jobs);
        assert_eq!(a.worker_seconds, b.worker_seconds);
        assert_eq!(a.scaling_actions, b.scaling_actions);
    }

    #[test]
    fn static_fleets_bracket_the_queueing_policy() {
        let c = short();
        let min = run(&c, "static-min").unwrap();
        let max = run(&c, "static-max").unwrap();
        let q = run(&c, "queueing").unwrap();
        assert!(max.met_share() >= 0.99, "{max:?}");
        assert!(min.met_share() < 0.9, "{min:?}");
        assert!(q.worker_seconds < max.worker_seconds, "{q:?} {max:?}");
        assert!(q.met_share() > min.met_share(), "{q:?}");
        assert!(
            q.step_to_scale_up_secs
                .is_some_and(|s| s <= 5.0 * c.period_secs),
            "{q:?}"
        );
        assert_eq!(max.scaling_actions, 1);
    }

    #[test]
    fn arrivals_follow_the_trace() {
        let c = short();
        let r = run(&c, "static-max").unwrap();
        let expected = c.base_rate * (120.0 + 5.0 * 240.0 + 3.0 * 120.0);
        let jobs = r.jobs as f64;
        assert!(
            (jobs - expected).abs() < 0.1 * expected,
            "{jobs} vs {expected}"
        );
    }

    #[test]
    fn real_runs_are_scored_like_simulated_ones() {
        let c = short(); // the step starts at 120 s
        let start = 1_000_000;
        let o = |t: i64, workers, desired, p95| Observation {
            timestamp: start + t * 1000,
            workers,
            desired_workers: desired,
            queue_wait_p95: p95,
            ..Observation::default()
        };
        let observations = [
            o(-2, 9, 9, 99.0), // before the trace: ignored
            o(2, 1, 1, 0.0),
            o(122, 1, 3, 7.0),
            o(124, 3, 3, 1.0),
            o(999, 3, 3, 1.0), // after it: ignored
        ];
        let r = score(&c, "x", &observations, start, &[1.0, 3.0]);
        assert_eq!((r.periods, r.periods_met), (3, 2));
        assert_eq!(r.worker_seconds, 2.0 + 120.0 + 6.0);
        assert_eq!(r.scaling_actions, 1);
        assert_eq!(r.step_to_scale_up_secs, Some(2.0));
        assert_eq!((r.jobs, r.mean_wait_secs), (2, 2.0));
    }

    #[test]
    fn every_policy_gets_the_same_jobs() {
        let c = short();
        assert_eq!(jobs(&c), jobs(&c));
        let a = run(&c, "static-max").unwrap();
        let b = run(&c.clone().compressed(1.0), "seed").unwrap();
        assert_eq!(a.jobs, jobs(&c).len() as u64);
        assert!(b.jobs <= a.jobs);
    }

    #[test]
    fn unknown_policies_are_refused() {
        assert!(run(&short(), "magic").is_none());
    }
}
