//! Scaling policies: an observation in, a desired worker count out. Every policy is wrapped
//! in a [`Governor`] that applies what they share: minimum, maximum, budget, immediate
//! scale-up and scale-down only after a stabilisation window.

use std::collections::VecDeque;

use jobq_common::domain::Observation;
use jobq_common::plan::{self, Backlog};
use jobq_common::settings::{ObserverSettings, PolicyKind};

/// What a policy sees each period.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub observation: &'a Observation,
    /// Mean start → end time (seconds) of jobs that ended in the period, if any did.
    pub mean_service_secs: Option<f64>,
    /// Workers the scaler runs now (asked for and not stopping).
    pub current_workers: u32,
    pub slots_per_worker: u32,
    /// Partitions of the jobs topic (parallelism bound of the consumer group).
    pub partitions: u32,
    pub period_secs: f64,
    /// The waiting jobs in scheduling order and the fleet's slots, when the observer read
    /// them (the `deadline` policy plans with them; the others ignore them).
    pub backlog: Option<&'a Backlog>,
    /// The most workers the governor allows (maximum and budget).
    pub ceiling: u32,
}

/// Turns observations into a desired worker count, before min/max/budget/stabilisation.
pub trait ScalingPolicy: Send {
    fn name(&self) -> &'static str;
    fn desired(&mut self, input: &PolicyInput<'_>) -> u32;
}

/// The original rule: pending = arrivals − services in the period; if pending exceeds the
/// workers, add pending; if the workers exceed pending (and there is more than one), remove
/// the difference.
#[derive(Debug, Default)]
pub struct SeedPolicy;

impl ScalingPolicy for SeedPolicy {
    fn name(&self) -> &'static str {
        "seed"
    }

    fn desired(&mut self, input: &PolicyInput<'_>) -> u32 {
        let o = input.observation;
        // The original counted jobs per period; our rates are per second.
        let pending =
            ((o.avg_rate_of_arrival - o.avg_rate_of_service) * input.period_secs).round() as i64;
        let workers = input.current_workers as i64;
        let desired = if pending > workers {
            workers + pending
        } else if workers > pending && workers > 1 {
            workers - (workers - pending)
        } else {
            workers
        };
        desired.max(0) as u32
    }
}

/// desired = ceil(queueDepth / lag_threshold), at most one worker per partition: the rule
/// event-driven Kubernetes autoscalers (KEDA) apply to Kafka consumer lag.
#[derive(Debug)]
pub struct LagPolicy {
    pub lag_threshold: u64,
}

impl ScalingPolicy for LagPolicy {
    fn name(&self) -> &'static str {
        "lag"
    }

    fn desired(&mut self, input: &PolicyInput<'_>) -> u32 {
        let wanted = input
            .observation
            .queue_depth
            .div_ceil(self.lag_threshold.max(1));
        wanted.min(input.partitions.max(1) as u64) as u32
    }
}

/// Erlang C: the probability that an arrival waits in an M/M/c queue with `c` servers and
/// offered load `a = λ/μ` (erlangs); 1 when the queue is unstable (`a ≥ c`).
pub fn erlang_c(c: u32, a: f64) -> f64 {
    if c == 0 || a >= c as f64 {
        return 1.0;
    }
    if a <= 0.0 {
        return 0.0;
    }
    // Erlang B by its stable recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let c = c as f64;
    c * b / (c - a * (1.0 - b))
}

/// P(wait > t) in M/M/c: ErlangC · e^{−(cμ − λ)t}.
pub fn wait_exceeds(c: u32, lambda: f64, mu: f64, t: f64) -> f64 {
    let a = lambda / mu;
    if a >= c as f64 {
        return 1.0;
    }
    erlang_c(c, a) * (-(c as f64 * mu - lambda) * t).exp()
}

/// Fewest servers `c` for which P(wait > t) ≤ `fraction`.
pub fn servers_for(lambda: f64, mu: f64, t: f64, fraction: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let mut c = ((lambda / mu).floor() as u32).max(1);
    while wait_exceeds(c, lambda, mu, t) > fraction {
        c += 1;
    }
    c
}

/// Ours: slots are the servers of an M/M/c queue. From the smoothed arrival rate λ and mean
/// service time 1/μ, the fewest slots for which the Erlang C probability of waiting longer
/// than the target stays within the allowed fraction, plus enough slots to drain the present
/// backlog within the target; then rounded up to whole workers.
#[derive(Debug)]
pub struct QueueingPolicy {
    pub target_wait_secs: f64,
    pub wait_fraction: f64,
    /// Weight of the newest period in the smoothed rates.
    pub alpha: f64,
    lambda: Option<f64>,
    service_secs: Option<f64>,
}

impl QueueingPolicy {
    pub fn new(target_wait_secs: f64, wait_fraction: f64) -> Self {
        Self {
            target_wait_secs,
            wait_fraction,
            alpha: 0.3,
            lambda: None,
            service_secs: None,
        }
    }
}

impl ScalingPolicy for QueueingPolicy {
    fn name(&self) -> &'static str {
        "queueing"
    }

    fn desired(&mut self, input: &PolicyInput<'_>) -> u32 {
        let o = input.observation;
        let smooth = |old: Option<f64>, new: f64, alpha: f64| match old {
            Some(old) => old + alpha * (new - old),
            None => new,
        };
        let lambda_now = o.avg_rate_of_arrival;
        // A smoothed λ, except that a rise too large to be Poisson noise (more than three
        // standard deviations of the expected count) is taken at once: a step is followed in
        // one period, noise is not.
        let expected = self.lambda.unwrap_or(0.0) * input.period_secs;
        let seen = lambda_now * input.period_secs;
        let lambda = if seen > expected + 3.0 * expected.sqrt() + 2.0 {
            lambda_now
        } else {
            smooth(self.lambda, lambda_now, self.alpha)
        };
        // Fewer than one job per 100 s is no load: let an idle fleet reach its minimum.
        let lambda = if lambda < 0.01 { 0.0 } else { lambda };
        self.lambda = Some(lambda);
        if let Some(s) = input.mean_service_secs.filter(|s| *s > 0.0) {
            self.service_secs = Some(smooth(self.service_secs, s, self.alpha));
        }
        // Before any job ended, assume jobs take the target wait (errs on the side of more).
        let service = self
            .service_secs
            .unwrap_or(self.target_wait_secs)
            .max(0.001);
        let mu = 1.0 / service;
        let t = self.target_wait_secs;
        let for_wait = servers_for(lambda, mu, t, self.wait_fraction);
        // The backlog must drain within the target while new work keeps arriving.
        let for_backlog = ((lambda + o.queue_depth as f64 / t.max(0.001)) / mu).ceil() as u32;
        let slots = for_wait.max(for_backlog).max(o.busy_slots);
        slots.div_ceil(input.slots_per_worker.max(1))
    }
}

/// Ours, for deadlines. Jobs with a deadline are planned for by their deadlines, the rest by
/// the wait target: the `queueing` rule applied to the jobs without a deadline only (their
/// share of the arrivals and of the waiting jobs), raised to the fewest workers for which
/// the plan ([`plan::fewest_workers`]) predicts every waiting job with a deadline to finish
/// by it, less one period (the observer acts once a period). New workers join after their
/// start-up time. Deadlines that even the ceiling cannot meet buy no workers: the plan
/// flags them at risk instead. Without a backlog (the store could not be read) it is the
/// `queueing` rule over every job.
#[derive(Debug)]
pub struct DeadlinePolicy {
    pub queueing: QueueingPolicy,
}

impl DeadlinePolicy {
    pub fn new(target_wait_secs: f64, wait_fraction: f64) -> Self {
        Self {
            queueing: QueueingPolicy::new(target_wait_secs, wait_fraction),
        }
    }
}

impl ScalingPolicy for DeadlinePolicy {
    fn name(&self) -> &'static str {
        "deadline"
    }

    fn desired(&mut self, input: &PolicyInput<'_>) -> u32 {
        let Some(backlog) = input.backlog else {
            return self.queueing.desired(input);
        };
        let o = input.observation;
        let rest_waiting = backlog
            .waiting
            .iter()
            .filter(|w| w.deadline.is_none())
            .count();
        let deadline_waiting = backlog.waiting.len() - rest_waiting;
        let rest = Observation {
            avg_rate_of_arrival: o.avg_rate_of_arrival * (1.0 - backlog.deadline_share),
            queue_depth: o.queue_depth.saturating_sub(deadline_waiting as u64),
            ..o.clone()
        };
        let base = self.queueing.desired(&PolicyInput {
            observation: &rest,
            ..*input
        });
        let lo = base.min(input.ceiling);
        let (need, _) = plan::fewest_workers(
            &backlog.fleet,
            &backlog.waiting,
            lo,
            input.ceiling,
            input.period_secs,
        );
        need.max(base)
    }
}

/// Builds the policy named by `observer.policy` (parsed, and so checked, with the settings).
pub fn from_settings(s: &ObserverSettings) -> Box<dyn ScalingPolicy> {
    match s.policy {
        PolicyKind::Seed => Box::new(SeedPolicy),
        PolicyKind::Lag => Box::new(LagPolicy {
            lag_threshold: s.lag_threshold,
        }),
        PolicyKind::Queueing => Box::new(QueueingPolicy::new(s.target_wait_secs, s.wait_fraction)),
        PolicyKind::Deadline => Box::new(DeadlinePolicy::new(s.target_wait_secs, s.wait_fraction)),
    }
}

/// What every policy shares: min, max, budget, immediate scale-up, and scale-down only to
/// the highest count wanted during the stabilisation window (as Kubernetes' HPA does).
#[derive(Debug, Clone)]
pub struct Governor {
    pub min: u32,
    pub max: u32,
    /// Worker-seconds per hour; the fleet's size is capped at `budget / 3600` (0 = none).
    pub budget_worker_seconds_per_hour: f64,
    pub stabilisation_secs: f64,
    wanted: VecDeque<(f64, u32)>,
}

impl Governor {
    pub fn new(min: u32, max: u32, budget: f64, stabilisation_secs: f64) -> Self {
        Self {
            min,
            max: max.max(min),
            budget_worker_seconds_per_hour: budget,
            stabilisation_secs,
            wanted: VecDeque::new(),
        }
    }

    pub fn from_settings(s: &ObserverSettings) -> Self {
        Self::new(
            s.min_workers,
            s.max_workers,
            s.budget_worker_seconds_per_hour,
            s.stabilisation_secs,
        )
    }

    /// The most workers the budget allows at any time.
    pub fn ceiling(&self) -> u32 {
        let mut ceiling = self.max;
        if self.budget_worker_seconds_per_hour > 0.0 {
            ceiling = ceiling.min((self.budget_worker_seconds_per_hour / 3600.0).floor() as u32);
        }
        ceiling.max(self.min)
    }

    /// The count to run, given what the policy wants now (`raw`) at `now_secs` and what runs.
    pub fn decide(&mut self, now_secs: f64, raw: u32, current: u32) -> u32 {
        let bounded = raw.clamp(self.min, self.ceiling());
        self.wanted.push_back((now_secs, bounded));
        while self
            .wanted
            .front()
            .is_some_and(|(t, _)| *t < now_secs - self.stabilisation_secs)
        {
            self.wanted.pop_front();
        }
        if bounded >= current {
            return bounded;
        }
        let highest = self.wanted.iter().map(|(_, w)| *w).max().unwrap_or(bounded);
        highest.min(current).max(bounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(arrival: f64, service: f64, depth: u64) -> Observation {
        Observation {
            avg_rate_of_arrival: arrival,
            avg_rate_of_service: service,
            queue_depth: depth,
            ..Default::default()
        }
    }

    fn input(o: &Observation, current: u32) -> PolicyInput<'_> {
        PolicyInput {
            observation: o,
            mean_service_secs: Some(2.0),
            current_workers: current,
            slots_per_worker: 1,
            partitions: 16,
            period_secs: 2.0,
            backlog: None,
            ceiling: 100,
        }
    }

    #[test]
    fn erlang_c_matches_known_values() {
        // Closed forms: c=1 → ρ; c=2, a=1 → 1/3; c=3, a=2 → 4/9.
        assert!((erlang_c(1, 0.7) - 0.7).abs() < 1e-12);
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((erlang_c(3, 2.0) - 4.0 / 9.0).abs() < 1e-12);
        // Textbook call-centre case: 10 agents, 8 erlangs → 0.4092.
        assert!(
            (erlang_c(10, 8.0) - 0.4092).abs() < 1e-4,
            "{}",
            erlang_c(10, 8.0)
        );
        assert_eq!(erlang_c(4, 4.0), 1.0);
        assert_eq!(erlang_c(4, 0.0), 0.0);
        // Stays finite and in range at the scale of 1,000 workers.
        let big = erlang_c(1000, 950.0);
        assert!(big > 0.0 && big < 1.0, "{big}");
    }

    #[test]
    fn erlang_c_agrees_with_the_direct_formula() {
        let direct = |c: u32, a: f64| {
            let fact = |n: u32| (1..=n).map(|k| k as f64).product::<f64>();
            let top = a.powi(c as i32) / fact(c) * (c as f64 / (c as f64 - a));
            let sum: f64 = (0..c).map(|k| a.powi(k as i32) / fact(k)).sum();
            top / (sum + top)
        };
        for (c, a) in [(5, 3.3), (12, 9.0), (20, 17.5)] {
            assert!((erlang_c(c, a) - direct(c, a)).abs() < 1e-9, "c={c} a={a}");
        }
    }

    #[test]
    fn servers_for_is_the_fewest_meeting_the_target() {
        // λ = 5/s, mean service 2 s → 10 erlangs; wait ≤ 1 s for 95 %.
        let c = servers_for(5.0, 0.5, 1.0, 0.05);
        assert!(wait_exceeds(c, 5.0, 0.5, 1.0) <= 0.05);
        assert!(wait_exceeds(c - 1, 5.0, 0.5, 1.0) > 0.05);
        assert!(c > 10);
        assert_eq!(servers_for(0.0, 0.5, 1.0, 0.05), 0);
    }

    #[test]
    fn queueing_adds_slots_for_the_backlog_and_rounds_to_workers() {
        let mut p = QueueingPolicy::new(10.0, 0.05);
        let o = obs(2.0, 2.0, 0);
        let mut i = input(&o, 1);
        i.slots_per_worker = 2;
        let steady = p.desired(&i);
        let slots = servers_for(2.0, 0.5, 10.0, 0.05);
        assert_eq!(steady, slots.div_ceil(2));
        let backlog = obs(2.0, 2.0, 100);
        let mut i = input(&backlog, steady);
        i.slots_per_worker = 2;
        // (λ + Q/T)/μ = (2 + 10) × 2 = 24 slots = 12 workers.
        assert_eq!(p.desired(&i), 12);
    }

    #[test]
    fn queueing_reacts_to_a_step_at_once_and_to_a_drop_slowly() {
        let mut p = QueueingPolicy::new(10.0, 0.05);
        let quiet = obs(1.0, 1.0, 0);
        let low = p.desired(&input(&quiet, 1));
        // Noise (3 jobs instead of 2 in a 2 s period) is smoothed away.
        let noise = obs(1.5, 1.0, 0);
        assert_eq!(p.desired(&input(&noise, low)), low);
        let step = obs(5.0, 1.0, 0);
        let high = p.desired(&input(&step, low));
        assert_eq!(high, servers_for(5.0, 0.5, 10.0, 0.05));
        let after = p.desired(&input(&quiet, high));
        assert!(after < high && after > low, "{low} {high} {after}");
    }

    #[test]
    fn lag_divides_the_backlog_and_respects_partitions() {
        let mut p = LagPolicy { lag_threshold: 5 };
        assert_eq!(p.desired(&input(&obs(0.0, 0.0, 0), 3)), 0);
        assert_eq!(p.desired(&input(&obs(0.0, 0.0, 11), 3)), 3);
        assert_eq!(p.desired(&input(&obs(0.0, 0.0, 1000), 3)), 16);
    }

    #[test]
    fn seed_follows_the_original_rule() {
        let mut p = SeedPolicy;
        // 2 s periods: 10 arrivals, 2 services → pending 8 > 3 workers → 11.
        assert_eq!(p.desired(&input(&obs(5.0, 1.0, 0), 3)), 11);
        // pending 2 < 5 workers → remove the difference → 2.
        assert_eq!(p.desired(&input(&obs(2.0, 1.0, 0), 5)), 2);
        // one worker stays.
        assert_eq!(p.desired(&input(&obs(0.0, 0.0, 0), 1)), 1);
    }

    #[test]
    fn deadline_adds_workers_for_deadlines_and_none_for_hopeless_ones() {
        use jobq_common::plan::{Fleet, Waiting};
        let fleet = Fleet {
            now: 0.0,
            busy_ends: vec![],
            workers: 1,
            slots_per_worker: 1,
            startup_secs: 3.0,
        };
        // Ten 10 s jobs due at 30 s: the one worker runs one now, new ones start at 3 s and
        // finish at 13, 23: five workers in all (1 + 4 new, two rounds each) meet them.
        let waiting = (0..10)
            .map(|_| Waiting {
                ready: 0.0,
                secs: 10.0,
                deadline: Some(30.0),
            })
            .collect();
        let backlog = Backlog {
            fleet,
            waiting,
            deadline_share: 1.0,
        };
        let quiet = obs(0.0, 0.0, 10);
        let mut i = input(&quiet, 1);
        i.mean_service_secs = Some(10.0);
        let mut q = QueueingPolicy::new(1000.0, 0.05);
        let base = q.desired(&i);
        i.backlog = Some(&backlog);
        let mut p = DeadlinePolicy::new(1000.0, 0.05);
        let with = p.desired(&i);
        assert!(base < with, "{base} {with}");
        assert_eq!(with, 5);
        // A ceiling below what the deadlines need: the ceiling, no more.
        i.ceiling = 3;
        assert_eq!(DeadlinePolicy::new(1000.0, 0.05).desired(&i), 3);
        // Hopeless deadlines (due before any could finish) buy nothing.
        let hopeless = Backlog {
            waiting: backlog
                .waiting
                .iter()
                .map(|w| Waiting {
                    deadline: Some(1.0),
                    ..*w
                })
                .collect(),
            ..backlog.clone()
        };
        i.ceiling = 100;
        i.backlog = Some(&hopeless);
        // Every arrival had a deadline, so the wait target asks nothing for the rest either.
        assert_eq!(DeadlinePolicy::new(1000.0, 0.05).desired(&i), 0);
    }

    #[test]
    fn governor_scales_up_at_once_and_down_after_the_window() {
        let mut g = Governor::new(1, 10, 0.0, 30.0);
        assert_eq!(g.decide(0.0, 8, 1), 8);
        assert_eq!(g.decide(2.0, 2, 8), 8);
        assert_eq!(g.decide(20.0, 2, 8), 8);
        assert_eq!(g.decide(33.0, 2, 8), 2);
        assert_eq!(g.decide(34.0, 50, 2), 10);
        assert_eq!(g.decide(35.0, 0, 10), 10);
        let mut g = Governor::new(2, 10, 0.0, 0.0);
        assert_eq!(g.decide(0.0, 0, 5), 2);
    }

    #[test]
    fn governor_caps_the_fleet_at_the_budget() {
        let mut g = Governor::new(1, 100, 4.0 * 3600.0, 0.0);
        assert_eq!(g.ceiling(), 4);
        assert_eq!(g.decide(0.0, 50, 1), 4);
        let g = Governor::new(3, 100, 3600.0, 0.0);
        assert_eq!(g.ceiling(), 3);
    }

    #[test]
    fn policies_are_chosen_by_name() {
        let mut s = ObserverSettings::default();
        for kind in [
            PolicyKind::Seed,
            PolicyKind::Lag,
            PolicyKind::Queueing,
            PolicyKind::Deadline,
        ] {
            s.policy = kind;
            assert_eq!(from_settings(&s).name(), kind.as_str());
        }
    }
}
