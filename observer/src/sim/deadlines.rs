//! Deadlines in the simulator (docs/deadlines.md, "The benchmark"): the trace's deadlines,
//! the oracle (the least capacity, found in hindsight, that meets every feasible deadline),
//! and how a run is scored against it.
//!
//! **Deadlines** come from a third seeded stream, so the arrivals and durations (and every
//! earlier result) do not move: each job is *tight* (finish by arrival + duration ×
//! U[1.5, 3] + a few seconds), *loose* (arrival + duration × U[10, 30]) or has none.
//!
//! **Feasible** deadlines are those the *reference* meets: the maximum fleet from the first
//! instant, every worker ready at once (no start-up), exact durations, jobs taken in the
//! stores' order (earliest deadline first, jobs without one after, then the oldest). A
//! deadline the reference misses no fleet within the maximum could meet in time (more slots
//! sooner never start a job later); it is reported apart as infeasible.
//!
//! **The oracle** is a fleet whose size may change once a period (at the periods' starts),
//! with no start-up delay and exact durations, jobs taken in the same order onto any free
//! slot (the slots of a period are pooled), that may not shrink below the workers its
//! running jobs occupy. Its requirements: every feasible deadline met, and every job
//! without a deadline that the reference starts within the wait target
//! (`target_wait_secs`) started within it too (the policies' wait target, held per job).
//! It is found by a forward lazy greedy: each period, the fewest workers such that the rest
//! of the trace, run at the maximum from the next period on, still meets every
//! requirement. Its worker-seconds are Σ workers × period length. Being greedy it is an
//! upper bound on the true least capacity under these rules, never below it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Instant;

use super::{SimConfig, SimResult, SplitMix64};

/// A job's outcome: no deadline within the trace.
pub const UNSCORED: u8 = 0;
/// It finished by its deadline.
pub const MET: u8 = 1;
/// It finished after its deadline, or had not finished when the deadline fell.
pub const MISSED: u8 = 2;

/// The share of tight, loose and no deadlines, and their shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeadlineMix {
    pub tight_share: f64,
    /// A tight deadline is arrival + duration × U[lo, hi] + `tight_slack_secs`.
    pub tight_factor: (f64, f64),
    pub tight_slack_secs: f64,
    pub loose_share: f64,
    /// A loose deadline is arrival + duration × U[lo, hi].
    pub loose_factor: (f64, f64),
}

impl DeadlineMix {
    /// A third tight (× U[1.5, 3] + 3 s), a third loose (× U[10, 30]), a third with none.
    pub fn standard() -> Self {
        Self {
            tight_share: 1.0 / 3.0,
            tight_factor: (1.5, 3.0),
            tight_slack_secs: 3.0,
            loose_share: 1.0 / 3.0,
            loose_factor: (10.0, 30.0),
        }
    }
}

/// Each job's deadline (seconds from the start of the trace), from its own seeded stream:
/// two draws per job whatever it gets, so a job's deadline depends only on its place.
pub fn deadlines(config: &SimConfig, mix: &DeadlineMix, jobs: &[(f64, f64)]) -> Vec<Option<f64>> {
    let mut draws = SplitMix64::new(config.seed ^ 0x3C6E_F372_FE94_F82B);
    let between = |(lo, hi): (f64, f64), u: f64| lo + (hi - lo) * u;
    jobs.iter()
        .map(|&(at, secs)| {
            let (kind, factor) = (draws.unit(), draws.unit());
            if kind < mix.tight_share {
                Some(at + secs * between(mix.tight_factor, factor) + mix.tight_slack_secs)
            } else if kind < mix.tight_share + mix.loose_share {
                Some(at + secs * between(mix.loose_factor, factor))
            } else {
                None
            }
        })
        .collect()
}

/// |predicted − actual start| over the jobs that started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub p50_secs: f64,
    pub p90_secs: f64,
    pub samples: usize,
}

impl Prediction {
    /// Nearest-rank percentiles of `errors` (sorted in place); `None` when empty.
    pub fn of(errors: &mut [f64]) -> Option<Self> {
        if errors.is_empty() {
            return None;
        }
        errors.sort_by(f64::total_cmp);
        let at =
            |q: f64| errors[((q * errors.len() as f64).ceil() as usize).clamp(1, errors.len()) - 1];
        Some(Self {
            p50_secs: at(0.5),
            p90_secs: at(0.9),
            samples: errors.len(),
        })
    }
}

/// A run's deadlines against the feasible ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeadlineScore {
    /// Deadlines within the trace.
    pub scored: u64,
    pub feasible: u64,
    pub feasible_met: u64,
    pub infeasible_met: u64,
}

impl DeadlineScore {
    pub fn of(outcomes: &[u8], feasible: &[bool]) -> Self {
        let mut s = Self::default();
        for (o, f) in outcomes.iter().zip(feasible) {
            if *o == UNSCORED {
                continue;
            }
            s.scored += 1;
            match (*f, *o == MET) {
                (true, met) => {
                    s.feasible += 1;
                    s.feasible_met += met as u64;
                }
                (false, met) => s.infeasible_met += met as u64,
            }
        }
        s
    }

    pub fn feasible_missed(&self) -> u64 {
        self.feasible - self.feasible_met
    }

    pub fn infeasible(&self) -> u64 {
        self.scored - self.feasible
    }

    pub fn met_share(&self) -> f64 {
        if self.feasible == 0 {
            return 1.0;
        }
        self.feasible_met as f64 / self.feasible as f64
    }
}

/// What the oracle found.
#[derive(Debug, Clone)]
pub struct Oracle {
    /// Per job: whether its deadline is within the trace and the reference meets it.
    pub feasible: Vec<bool>,
    /// The oracle's own outcomes (as a run's).
    pub outcomes: Vec<u8>,
    /// Workers per period.
    pub fleet: Vec<u32>,
    pub worker_seconds: f64,
    /// Requirements the oracle broke (0 unless the reference's order is not monotone).
    pub violations: u64,
    /// The reference's worker-seconds (the maximum all the time).
    pub reference_worker_seconds: f64,
    pub wall_secs: f64,
    /// For comparison: the worker-seconds of the stricter oracle of [`oracle_with`].
    pub every_job_waits_worker_seconds: Option<f64>,
}

/// Microseconds, as the simulator's event clock.
fn us(secs: f64) -> u64 {
    (secs * 1_000_000.0).round().max(0.0) as u64
}

/// The trace as the oracle replays it.
struct Model {
    arrive: Vec<u64>,
    dur: Vec<u64>,
    /// The order key's first part: the deadline, `u64::MAX` without one.
    key: Vec<u64>,
    /// Finish by: the deadline, or for a job without one arrival + wait target + duration;
    /// `u64::MAX` when past the trace's end.
    due: Vec<u64>,
    end: u64,
    period: u64,
    slots: u64,
}

impl Model {
    fn periods(&self) -> usize {
        self.end.div_ceil(self.period.max(1)) as usize
    }

    fn bounds(&self, k: usize) -> (u64, u64) {
        let from = k as u64 * self.period;
        (from, (from + self.period).min(self.end))
    }
}

/// The oracle's replay state at a period's start.
#[derive(Debug, Clone, Default)]
struct Replay {
    next: usize,
    queue: BTreeSet<(u64, usize)>,
    ends: BinaryHeap<Reverse<u64>>,
}

impl Replay {
    /// Runs `[from, to)` with `capacity` slots; `started(job, finish)` for each job started,
    /// which stops the run when it answers false.
    fn advance(
        &mut self,
        m: &Model,
        from: u64,
        to: u64,
        capacity: u64,
        started: &mut dyn FnMut(usize, u64) -> bool,
    ) -> bool {
        let mut t = from;
        loop {
            while self.ends.peek().is_some_and(|Reverse(e)| *e <= t) {
                self.ends.pop();
            }
            while self.next < m.arrive.len() && m.arrive[self.next] <= t {
                self.queue.insert((m.key[self.next], self.next));
                self.next += 1;
            }
            while (self.ends.len() as u64) < capacity {
                let Some((_, job)) = self.queue.pop_first() else {
                    break;
                };
                let finish = t + m.dur[job];
                if !started(job, finish) {
                    return false;
                }
                self.ends.push(Reverse(finish));
            }
            let arrival = m.arrive.get(self.next).copied().unwrap_or(u64::MAX);
            let end = self.ends.peek().map_or(u64::MAX, |Reverse(e)| *e);
            let next = arrival.min(end);
            if next >= to {
                return true;
            }
            t = next;
        }
    }

    /// Whether this state, with an empty queue, frees each slot no later than `reference`
    /// (its running jobs' ends, latest first) does: from here on, at the same capacity, no
    /// job can start later than in the reference.
    fn dominated_by(&self, reference: &[u64]) -> bool {
        if !self.queue.is_empty() || self.ends.len() > reference.len() {
            return false;
        }
        let mut ends: Vec<u64> = self.ends.iter().map(|Reverse(e)| *e).collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        ends.iter().zip(reference).all(|(s, r)| s <= r)
    }
}

/// The reference run and the oracle of `config`'s trace (which must have deadlines).
pub fn oracle(config: &SimConfig) -> Oracle {
    oracle_with(config, false)
}

/// The oracle, or with `every_job_waits` a stricter one for comparison only (its
/// `feasible` and outcomes then count the stricter due times): every job, with a deadline
/// or not, also held to start within the wait target, as the `queueing` policy aims at.
pub fn oracle_with(config: &SimConfig, every_job_waits: bool) -> Oracle {
    let wall = Instant::now();
    let jobs = super::jobs(config);
    let mix = config.deadlines.unwrap_or_else(DeadlineMix::standard);
    let deadline = deadlines(config, &mix, &jobs);
    let end = us(config.duration());
    let model = Model {
        arrive: jobs.iter().map(|(a, _)| us(*a)).collect(),
        dur: jobs.iter().map(|(_, d)| us(*d)).collect(),
        key: deadline.iter().map(|d| d.map_or(u64::MAX, us)).collect(),
        due: jobs
            .iter()
            .zip(&deadline)
            .map(|(&(a, d), dl)| {
                let wait = a + config.target_wait_secs + d;
                let due = match dl {
                    Some(dl) if every_job_waits => dl.min(wait),
                    Some(dl) => *dl,
                    None => wait,
                };
                if due <= config.duration() {
                    us(due)
                } else {
                    u64::MAX
                }
            })
            .collect(),
        end,
        period: us(config.period_secs),
        slots: config.slots_per_worker.max(1) as u64,
    };
    let n = jobs.len();
    let max = config.max_workers.max(config.min_workers);
    let periods = model.periods();

    // The reference: the maximum from the start; its running jobs at every period's start.
    let mut must = vec![false; n];
    let mut reference_ends: Vec<Vec<u64>> = Vec::with_capacity(periods + 1);
    let mut replay = Replay::default();
    let mut reference_worker_seconds = 0.0;
    for k in 0..periods {
        let mut ends: Vec<u64> = replay.ends.iter().map(|Reverse(e)| *e).collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        reference_ends.push(ends);
        let (from, to) = model.bounds(k);
        reference_worker_seconds += max as f64 * (to - from) as f64 / 1e6;
        replay.advance(
            &model,
            from,
            to,
            max as u64 * model.slots,
            &mut |job, finish| {
                must[job] = model.due[job] != u64::MAX && finish <= model.due[job];
                true
            },
        );
    }
    let feasible: Vec<bool> = (0..n).map(|j| deadline[j].is_some() && must[j]).collect();

    // The rest of the trace from `state` at period k with `workers` in it and the maximum
    // after: does it meet every requirement?
    let meets = |state: &Replay, k: usize, workers: u32| {
        let mut s = state.clone();
        let mut check = |job: usize, finish: u64| !must[job] || finish <= model.due[job];
        let (from, to) = model.bounds(k);
        if !s.advance(&model, from, to, workers as u64 * model.slots, &mut check) {
            return false;
        }
        for (k, reference) in reference_ends.iter().enumerate().skip(k + 1) {
            if s.dominated_by(reference) {
                return true;
            }
            let (from, to) = model.bounds(k);
            if !s.advance(&model, from, to, max as u64 * model.slots, &mut check) {
                return false;
            }
        }
        // Jobs still waiting at the end start after it: past any due time within it.
        let mut rest = s.queue.iter().map(|(_, j)| *j).chain(s.next..n);
        rest.all(|j| !must[j])
    };

    let mut outcomes = vec![UNSCORED; n];
    let mut fleet = Vec::with_capacity(periods);
    let mut worker_seconds = 0.0;
    let mut violations = 0;
    let mut state = Replay::default();
    for k in 0..periods {
        let busy = (state.ends.len() as u64).div_ceil(model.slots) as u32;
        let lo = config.min_workers.max(busy).min(max);
        let workers = if meets(&state, k, lo) {
            lo
        } else {
            // More workers never start a job later: the fewest that meets is bisected.
            let (mut bad, mut good) = (lo, max);
            while good - bad > 1 {
                let mid = bad + (good - bad) / 2;
                if meets(&state, k, mid) {
                    good = mid;
                } else {
                    bad = mid;
                }
            }
            good
        };
        fleet.push(workers);
        let (from, to) = model.bounds(k);
        worker_seconds += workers as f64 * (to - from) as f64 / 1e6;
        state.advance(
            &model,
            from,
            to,
            workers as u64 * model.slots,
            &mut |job, finish| {
                if must[job] && finish > model.due[job] {
                    violations += 1;
                }
                if deadline[job].is_some() && model.due[job] != u64::MAX {
                    outcomes[job] = if finish <= model.due[job] {
                        MET
                    } else {
                        MISSED
                    };
                }
                true
            },
        );
    }
    for j in state.queue.iter().map(|(_, j)| *j).chain(state.next..n) {
        if must[j] {
            violations += 1;
        }
        if deadline[j].is_some() && model.due[j] != u64::MAX {
            outcomes[j] = MISSED;
        }
    }
    Oracle {
        feasible,
        outcomes,
        fleet,
        worker_seconds,
        violations,
        reference_worker_seconds,
        wall_secs: wall.elapsed().as_secs_f64(),
        every_job_waits_worker_seconds: None,
    }
}

/// The policies of the deadline bench, in table order.
pub const POLICIES: [&str; 5] = ["static-max", "seed", "lag", "queueing", "deadline"];

/// Every policy and the oracle on `config`'s trace (which must have deadlines).
pub fn bench(config: &SimConfig, policies: &[&str]) -> Option<(Vec<SimResult>, Oracle)> {
    let mut oracle = oracle(config);
    oracle.every_job_waits_worker_seconds = Some(oracle_with(config, true).worker_seconds);
    let results = policies
        .iter()
        .map(|p| super::run(config, p))
        .collect::<Option<Vec<_>>>()?;
    Some((results, oracle))
}

/// A Markdown table of a deadline bench.
pub fn table(config: &SimConfig, results: &[SimResult], oracle: &Oracle) -> String {
    let mix = config.deadlines.unwrap_or_else(DeadlineMix::standard);
    let first = DeadlineScore::of(&oracle.outcomes, &oracle.feasible);
    let static_max = results
        .iter()
        .find(|r| r.policy == "static-max")
        .map(|r| r.worker_seconds);
    let mut out = format!(
        "trace {:.0} s, base {:.2} jobs/s, mean job {:.1} s, {} slot(s)/worker, {}–{} workers, \
         start-up {:.0} s, target p95 wait ≤ {:.0} s per {:.0} s period, seed {}; deadlines: \
         {:.0} % tight (duration × U[{}, {}] + {:.0} s), {:.0} % loose (duration × U[{}, {}]), \
         the rest none; {} deadlines within the trace, {} feasible, {} infeasible; \
         oracle computed in {:.1} s\n\n",
        config.duration(),
        config.base_rate,
        config.mean_service_secs,
        config.slots_per_worker,
        config.min_workers,
        config.max_workers,
        config.startup_secs,
        config.target_wait_secs,
        config.period_secs,
        config.seed,
        100.0 * mix.tight_share,
        mix.tight_factor.0,
        mix.tight_factor.1,
        mix.tight_slack_secs,
        100.0 * mix.loose_share,
        mix.loose_factor.0,
        mix.loose_factor.1,
        first.scored,
        first.feasible,
        first.infeasible(),
        oracle.wall_secs,
    );
    out.push_str("| policy | feasible deadlines met | feasible missed | infeasible met | worker-seconds | ÷ static-max | ÷ oracle | periods meeting wait target | prediction error p50 / p90 | wall |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let ratio = |ws: f64, of: Option<f64>| match of {
        Some(of) if of > 0.0 => format!("{:.2}", ws / of),
        _ => "—".into(),
    };
    let row = |name: &str,
               s: DeadlineScore,
               ws: f64,
               met: String,
               prediction: Option<Prediction>,
               wall: f64| {
        format!(
            "| {name} | {:.2} % | {} | {} | {:.0} | {} | {} | {met} | {} | {:.2} s |\n",
            100.0 * s.met_share(),
            s.feasible_missed(),
            s.infeasible_met,
            ws,
            ratio(ws, static_max),
            ratio(ws, Some(oracle.worker_seconds)),
            prediction
                .map(|p| format!("{:.2} / {:.2} s", p.p50_secs, p.p90_secs))
                .unwrap_or_else(|| "—".into()),
            wall,
        )
    };
    for r in results {
        let s = DeadlineScore::of(&r.deadline_outcomes, &oracle.feasible);
        out.push_str(&row(
            &r.policy,
            s,
            r.worker_seconds,
            format!("{:.1} %", 100.0 * r.met_share()),
            r.prediction,
            r.wall_secs,
        ));
    }
    out.push_str(&row(
        "oracle",
        first,
        oracle.worker_seconds,
        "—".into(),
        None,
        oracle.wall_secs,
    ));
    if let Some(ws) = oracle.every_job_waits_worker_seconds {
        out.push_str(&format!(
            "\nFor comparison, the oracle with every job (deadline or not) also started within \
             the wait target: {ws:.0} worker-seconds ({} × static-max, {} × the oracle).\n",
            ratio(ws, static_max),
            ratio(ws, Some(oracle.worker_seconds)),
        ));
    }
    out
}
