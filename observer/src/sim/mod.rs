//! A discrete-event simulator of the queue and its fleet, driving the same [`Controller`]
//! (tracker, policies, governor) as the real observer, so policies can be compared on one
//! load trace at any scale, thousands of times faster than real time.
//!
//! Model: jobs arrive as a Poisson process whose rate follows the trace; each worker has
//! `slots` slots; a job takes a uniformly random time in `[0.25, 1.75] × mean`. Arrival times
//! and durations are drawn before the run ([`jobs`], two seeded streams), so every policy sees
//! exactly the same jobs and the real bench (`scripts/bench-elasticity-real`) can replay them.
//! A started worker takes `startup_secs` before it joins (process start, connections) and
//! costs worker-seconds from the moment it is asked for; scale-down stops idle workers only
//! (as the local-process scaler does), a busy worker is picked again next period.
//!
//! Jobs may have deadlines ([`deadlines`], from a third stream, so the jobs stay the same);
//! then each period the simulator builds the backlog the observer's planner would read and
//! passes it to the controller (the `deadline` policy plans with it), makes the plan for
//! the decided fleet, and answers each arrival's predicted start from it as the frontend
//! does; the oracle and the scoring against it are in [`deadlines`] (docs/deadlines.md).
//!
//! How a job reaches a slot is the [`Dispatch`]. `AnyFree` is one queue (standalone) in the
//! stores' order: earliest deadline first, jobs without one after, then the oldest (FIFO
//! without deadlines).
//! The Kafka modes model the `jobs` topic: a job's message goes to the partition its key
//! hashes to among the partitions the producer knows of (it learns of added ones at its
//! metadata refresh); the consumer group's uniform assignor spreads the partitions evenly
//! over the members and moves them at the heartbeats (the old owner gives a partition up at
//! its next heartbeat, the new one gets it at its next one after that); a worker receives
//! only its partitions' messages, taking its partitions in turn, and with every slot busy
//! holds one message and pauses. `StoreClaim` adds the worker's look-ups of waiting jobs
//! (`claim_waiting`) with its back-off; the owner of a claimed job's message skips it later.
//! The lag the policies see is the messages not yet received plus those held in hand.

pub mod deadlines;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Instant;

use jobq_common::domain::{JobStatus, Observation};
use jobq_common::plan::{
    ArrivalMix, Backlog, Fleet, ServiceTimes, Waiting, earliest_start, extend_tail, list_schedule,
};

use crate::policy::{
    DeadlinePolicy, Governor, LagPolicy, PolicyInput, QueueingPolicy, ScalingPolicy, SeedPolicy,
};
use crate::{Controller, FleetState, partitions_needed};

pub use deadlines::{DeadlineMix, DeadlineScore, Oracle, Prediction, oracle};

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

/// How a queued job reaches a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Any free slot takes the next waiting job by the scheduling rules at once (earliest
    /// deadline first, then the oldest): `jobq standalone` (one store, no partitions), and
    /// what the simulator modelled before it knew partitions.
    AnyFree,
    /// Kafka mode before issue 10: a job reaches only the worker that owns its partition of
    /// the `jobs` topic; a worker whose slots are all busy holds at most one message.
    PartitionBound,
    /// Kafka mode now: partition-bound, and besides a worker with a free slot and nothing in
    /// hand claims from the store the oldest job that has waited past a threshold.
    StoreClaim,
}

impl Dispatch {
    pub const ALL: [Dispatch; 3] = [
        Dispatch::AnyFree,
        Dispatch::PartitionBound,
        Dispatch::StoreClaim,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dispatch::AnyFree => "any-free",
            Dispatch::PartitionBound => "partition-bound",
            Dispatch::StoreClaim => "store-claim",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    fn partitioned(self) -> bool {
        self != Dispatch::AnyFree
    }
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
    /// From the scaler's request to the worker's first consumer-group heartbeat (process
    /// start, connections); the partition assignment comes after it (see `heartbeat_secs`).
    pub startup_secs: f64,
    pub target_wait_secs: f64,
    pub wait_fraction: f64,
    pub min_workers: u32,
    pub max_workers: u32,
    pub stabilisation_secs: f64,
    pub lag_threshold: u64,
    pub seed: u64,
    pub dispatch: Dispatch,
    /// Partitions of the `jobs` topic at the start (`kafka.partitions`).
    pub partitions: u32,
    /// The observer grows the topic as it does (`observer.grow_partitions`).
    pub grow_partitions: bool,
    /// The consumer-group heartbeat interval (`group.consumer.heartbeat.interval.ms`).
    pub heartbeat_secs: f64,
    /// How often the frontend's producer refreshes the topic's metadata, so how late it
    /// sends to partitions added since (librdkafka's `topic.metadata.refresh.interval.ms`).
    pub producer_refresh_secs: f64,
    /// `worker.claim_waiting_after_ms`, in seconds.
    pub claim_after_secs: f64,
    /// `worker.claim_waiting_budget_per_sec`: the fleet-wide rate of store look-ups the idle
    /// back-off aims at.
    pub claim_budget_per_sec: f64,
    /// Each look-up interval is multiplied by a uniform factor in `[1 − j, 1 + j]`.
    pub claim_jitter: f64,
    /// Seeds the jobs' keys (their ids), so their partitions, apart from the trace (`None`:
    /// `seed`): the same jobs, hashed to other partitions.
    pub key_seed: Option<u64>,
    /// The consumer's auto-commit interval (`auto.commit.interval.ms`, 1 s in jobq), which
    /// delays a stored offset's reaching the lag the observer reads; 0 counts an offset as
    /// committed once stored (the default, as before this was modelled).
    pub commit_secs: f64,
    /// The jobs' deadlines (a third seeded stream, [`deadlines::deadlines`]); `None`: none.
    pub deadlines: Option<DeadlineMix>,
    /// Waiting jobs a period's plan covers (`observer.plan_jobs`).
    pub plan_jobs: usize,
}

/// The store look-up interval of a free worker after activity (the worker's `LOOK_MIN`).
pub const LOOK_MIN_SECS: f64 = 0.25;
/// Bounds of the idle back-off's ceiling: `LOOK_MAX = clamp(members / B, 1 s, 30 s)`.
pub const LOOK_MAX_FLOOR_SECS: f64 = 0.5;
pub const LOOK_MAX_CEILING_SECS: f64 = 30.0;

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
            dispatch: Dispatch::AnyFree,
            partitions: 16,
            grow_partitions: true,
            heartbeat_secs: 1.0,
            producer_refresh_secs: 300.0,
            claim_after_secs: 0.1,
            claim_budget_per_sec: 100.0,
            claim_jitter: 0.1,
            key_seed: None,
            commit_secs: 0.0,
            deadlines: None,
            plan_jobs: 2000,
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

    /// The idle back-off's ceiling of a worker that owns `own` of `partitions` partitions:
    /// it estimates the group's size as `partitions / own` (as `partitions` when it owns
    /// none: the group has at least that many members then) and spreads the fleet's budget.
    pub fn look_max_secs(&self, partitions: u32, own: usize) -> f64 {
        let members = partitions as f64 / own.max(1) as f64;
        (members / self.claim_budget_per_sec.max(1e-9))
            .clamp(LOOK_MAX_FLOOR_SECS, LOOK_MAX_CEILING_SECS)
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
            "deadline" => (
                Box::new(DeadlinePolicy::new(
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
    /// The longest queue wait of a job that started.
    pub max_wait_secs: f64,
    pub max_workers_seen: u32,
    pub wall_secs: f64,
    /// The store look-ups of waiting jobs (`claim_waiting`), found or not; `None` when the
    /// dispatch makes none (or for a real run, which does not count them).
    pub claim_queries: Option<ClaimQueries>,
    /// Partitions of the `jobs` topic at the end (0 when the dispatch ignores them).
    pub partitions: u32,
    /// The simulated dispatch; `None` for a real run.
    pub dispatch: Option<Dispatch>,
    /// Periods that ended with no partition move pending (Kafka modes).
    pub settled_periods: u64,
    /// Settled periods with the partitions not spread evenly over the members (some member
    /// with two more than another, or one unowned).
    pub uneven_periods: u64,
    /// Per job of the trace, whether it met its deadline ([`deadlines::MET`],
    /// [`deadlines::MISSED`], [`deadlines::UNSCORED`]); empty when the trace has none.
    pub deadline_outcomes: Vec<u8>,
    /// How far the start predicted at each arrival was from the actual start; `None` when
    /// nothing was planned.
    pub prediction: Option<Prediction>,
}

/// The store look-ups of a store-claim run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClaimQueries {
    pub total: u64,
    /// Look-ups that found a job and claimed it.
    pub found: u64,
    /// The largest count in one second of the trace.
    pub peak_per_sec: u64,
    /// Seconds workers spent ready with a free slot and no message in hand, summed.
    pub idle_worker_secs: f64,
}

impl ClaimQueries {
    /// Look-ups per second of idle worker: what one idle worker costs the store.
    pub fn per_idle_worker_sec(&self) -> f64 {
        self.total as f64 / self.idle_worker_secs.max(1e-9)
    }

    /// The same counting only the look-ups that found nothing: the cost of idling (a
    /// look-up that finds a job does the claim the job needed anyway).
    pub fn empty_per_idle_worker_sec(&self) -> f64 {
        (self.total - self.found) as f64 / self.idle_worker_secs.max(1e-9)
    }
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
    /// A partition's owner gives it up at its heartbeat (the partition, its generation).
    Revoke(u32, u32),
    /// A partition's new owner gets it at its heartbeat.
    Assign(u32, u32),
    /// A worker's next store look-up (the worker, its look generation).
    Look(u32, u32),
    /// The producer learns the topic's partition count.
    ProducerRefresh,
    /// A worker's consumer commits the offsets it stored.
    Commit(u32),
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
    /// When it joined the consumer group; it heartbeats every `heartbeat_secs` from then.
    joined: f64,
    /// Partitions it owns now, and where its round-robin over them stands.
    parts: Vec<u32>,
    cursor: usize,
    /// The message received while every slot was busy (job, partition).
    held: Option<(u64, u32)>,
    look_every: f64,
    look_gen: u32,
    /// Offsets stored since its last commit, and whether a commit is scheduled.
    uncommitted: u64,
    commit_due: bool,
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

const QUEUED: u8 = 1;
const STARTED: u8 = 2;

/// A period's plan as the frontend reads it: the planned waiting jobs' order keys and
/// predicted starts, in order, and when a job after them would start.
type LastPlan = (Vec<((u64, u64), f64)>, f64, Vec<(f64, f64)>);

/// The state of one run.
struct Sim<'a> {
    config: &'a SimConfig,
    trace: Vec<(f64, f64)>,
    ctl: Controller<u64, u32>,
    heap: BinaryHeap<Reverse<(u64, Kind)>>,
    result: SimResult,
    wait_sum: f64,
    worker_seconds: f64,
    workers: Vec<Worker>,
    alive: Vec<u32>, // workers not gone, oldest first
    // Any-free: the queue in the order a free slot takes it ([`Sim::order_key`]) and the
    // workers with a free slot (may hold stale entries).
    free: Vec<u32>,
    queue: BTreeSet<(u64, u64)>,
    /// Each job's deadline (seconds from the start), if it has one.
    deadline: Vec<Option<f64>>,
    /// Whether the period plans (any-free with deadlines, or the `deadline` policy).
    planning: bool,
    /// Running jobs and their starts, when planning.
    running: BTreeMap<u64, f64>,
    /// Learned service times of the jobs that ended (one repository).
    service: ServiceTimes,
    /// The share of arrivals with a deadline, as the observer's planner learns it.
    arrivals: ArrivalMix,
    /// The last period's plan: the planned waiting jobs' order keys and predicted starts,
    /// in order, and when a job after them would start.
    last_plan: Option<LastPlan>,
    /// The start predicted at each job's arrival (NaN: none), and |predicted − actual|.
    predicted: Vec<f64>,
    errors: Vec<f64>,
    outcomes: Vec<u8>,
    // Partitioned: each job's key hash (its id), its state, the messages not yet received
    // per partition, and who owns / is to own each partition.
    status: Vec<u8>,
    key_hash: Vec<u64>,
    oldest: VecDeque<u64>, // queued jobs in arrival order (may hold started ones)
    part_q: Vec<VecDeque<u64>>,
    owner: Vec<Option<u32>>,
    target: Vec<Option<u32>>,
    part_gen: Vec<u32>,
    revoking: Vec<bool>,
    producer_partitions: u32,
    unreceived: u64,
    held: u64,
    uncommitted: u64,
    /// The group's membership or the topic changed: the assignor runs once every event of
    /// this instant is handled.
    rebalance_due: bool,
    // Store look-ups.
    looking: u64,
    idle_worker_secs: f64,
    last_t: f64,
    queries: u64,
    found: u64,
    per_sec: Vec<u64>,
    jitter: SplitMix64,
}

impl<'a> Sim<'a> {
    fn at(t: f64) -> u64 {
        (t * US) as u64
    }

    fn push(&mut self, t: f64, kind: Kind) {
        self.heap.push(Reverse((Self::at(t), kind)));
    }

    fn partitioned(&self) -> bool {
        self.config.dispatch.partitioned()
    }

    fn claims(&self) -> bool {
        self.config.dispatch == Dispatch::StoreClaim
    }

    /// A worker that would look in the store: ready, a free slot, nothing in hand.
    fn is_looking(&self, w: u32) -> bool {
        let worker = &self.workers[w as usize];
        worker.state == State::Active
            && worker.held.is_none()
            && worker.busy < self.config.slots_per_worker
    }

    /// Changes a worker and keeps the count of looking workers right.
    fn update(&mut self, w: u32, change: impl FnOnce(&mut Worker)) {
        let before = self.is_looking(w);
        change(&mut self.workers[w as usize]);
        let after = self.is_looking(w);
        match (before, after) {
            (false, true) => self.looking += 1,
            (true, false) => self.looking -= 1,
            _ => {}
        }
    }

    /// The first heartbeat of `w` after `t` (at `t` itself when it joins then).
    fn next_heartbeat(&self, w: u32, t: f64) -> f64 {
        let joined = self.workers[w as usize].joined;
        let hb = self.config.heartbeat_secs.max(1e-6);
        if t - joined < 1e-9 {
            return t;
        }
        joined + ((t - joined) / hb).floor() * hb + hb
    }

    fn start(&mut self, w: u32, job: u64, t: f64) {
        let arrived = self.trace[job as usize].0;
        if self.partitioned() {
            self.status[job as usize] = STARTED;
        }
        self.update(w, |worker| worker.busy += 1);
        // The event clock counts whole microseconds: a job started on arrival waited 0.
        let waited = (t - arrived).max(0.0);
        self.wait_sum += waited;
        self.result.max_wait_secs = self.result.max_wait_secs.max(waited);
        self.result.jobs += 1;
        self.ctl.tracker.transition(
            job,
            Some(JobStatus::Queued),
            JobStatus::Running,
            (t * 1000.0) as i64,
            Some(w),
            Some((waited * 1000.0) as u64),
            None,
            true,
        );
        let service = self.trace[job as usize].1;
        self.push(t + service, Kind::Done(w, job));
        if self.planning {
            self.running.insert(job, t);
        }
        let predicted = self
            .predicted
            .get(job as usize)
            .copied()
            .unwrap_or(f64::NAN);
        if predicted.is_finite() {
            self.errors.push((predicted - t).abs());
        }
        if let Some(d) = self.deadline.get(job as usize).copied().flatten()
            && d <= self.config.duration()
        {
            // The event clock counts whole microseconds.
            self.outcomes[job as usize] = if t + service <= d + 1e-6 {
                deadlines::MET
            } else {
                deadlines::MISSED
            };
        }
    }

    /// The order a free slot takes waiting jobs in, as the stores sort them within one
    /// priority and user: earliest deadline first, jobs without one after, then the oldest.
    fn order_key(&self, job: u64) -> (u64, u64) {
        let deadline = self.deadline.get(job as usize).copied().flatten();
        (deadline.map_or(u64::MAX, Self::at), job)
    }

    /// The start the frontend would answer for `job` arriving at `t`, from the last plan
    /// ([`jobq_common::plan::Plan::estimate`], through the same [`earliest_start`]): the
    /// earliest slot among those of the planned jobs it goes before, the plan's idle ones
    /// and its tail; never before now or its arrival.
    fn estimate(&self, job: u64, t: f64) -> f64 {
        let Some((entries, tail, idle)) = &self.last_plan else {
            return f64::NAN;
        };
        let key = self.order_key(job);
        let at = entries.partition_point(|(k, _)| *k <= key);
        let arrival = self.trace[job as usize].0;
        let behind = entries[at..].iter().map(|(_, s)| *s);
        let start = earliest_start(behind, idle.iter().copied(), Some(*tail), arrival, t)
            .unwrap_or(f64::INFINITY);
        start.max(t).max(arrival)
    }

    /// The backlog the observer's planner would read now ([`crate::planner::Planner`]):
    /// running jobs end at their start plus the learned mean (never before now), waiting
    /// jobs are expected to take the learned mean, on the live workers' slots. Returns it
    /// with the planned jobs' keys and how many waiting jobs were left out.
    fn backlog(&self, t: f64, workers: u32) -> (Backlog, Vec<(u64, u64)>, u64) {
        let expected = self
            .service
            .overall()
            .map_or(self.config.target_wait_secs, |s| s.mean_secs);
        let keys: Vec<(u64, u64)> = self
            .queue
            .iter()
            .take(self.config.plan_jobs)
            .copied()
            .collect();
        let waiting = keys
            .iter()
            .map(|&(_, job)| Waiting {
                ready: self.trace[job as usize].0,
                secs: expected,
                deadline: self.deadline[job as usize],
            })
            .collect();
        let backlog = Backlog {
            fleet: Fleet {
                now: t,
                busy_ends: self
                    .running
                    .values()
                    .map(|start| (start + expected).max(t))
                    .collect(),
                workers,
                slots_per_worker: self.config.slots_per_worker,
                startup_secs: self.config.startup_secs,
            },
            waiting,
            deadline_share: self.arrivals.share(),
        };
        let unplanned = (self.queue.len() - keys.len()) as u64;
        (backlog, keys, unplanned)
    }

    /// The plan for a fleet of `workers`, as the observer makes it after its decision.
    fn plan(&mut self, backlog: &Backlog, keys: Vec<(u64, u64)>, unplanned: u64, workers: u32) {
        let slots = backlog.fleet.slots(workers);
        let timeline = list_schedule(&slots, &backlog.waiting);
        let tail = extend_tail(
            timeline.tail,
            unplanned,
            &backlog.waiting,
            slots.len(),
            self.config.target_wait_secs,
        );
        let entries = keys
            .into_iter()
            .zip(timeline.forecasts)
            .map(|(k, f)| (k, f.start))
            .collect();
        self.last_plan = Some((entries, tail, timeline.idle));
    }

    /// `w` stored a message's offset (its job claimed or skipped); it reaches the lag at the
    /// consumer's next auto-commit.
    fn stored(&mut self, w: u32, t: f64) {
        let every = self.config.commit_secs;
        if every <= 0.0 {
            return;
        }
        self.uncommitted += 1;
        let worker = &mut self.workers[w as usize];
        worker.uncommitted += 1;
        if !worker.commit_due {
            worker.commit_due = true;
            let at = worker.joined + ((t - worker.joined) / every).floor() * every + every;
            self.push(at, Kind::Commit(w));
        }
    }

    fn commit(&mut self, w: u32) {
        let worker = &mut self.workers[w as usize];
        self.uncommitted -= worker.uncommitted;
        worker.uncommitted = 0;
        worker.commit_due = false;
    }

    /// The next message of `w`'s partitions, taking them in turn.
    fn next_message(&mut self, w: u32) -> Option<(u64, u32)> {
        let worker = &mut self.workers[w as usize];
        let n = worker.parts.len();
        for i in 0..n {
            let index = (worker.cursor + i) % n;
            let p = worker.parts[index] as usize;
            if let Some(job) = self.part_q[p].pop_front() {
                worker.cursor = index + 1;
                self.unreceived -= 1;
                return Some((job, p as u32));
            }
        }
        None
    }

    /// `w` receives messages of its partitions while it has nothing in hand: it starts each
    /// in a free slot, skips one whose job another worker took (its claim fails), and holds
    /// the first that finds every slot busy (its partitions then pause).
    fn deliver(&mut self, w: u32, t: f64) {
        loop {
            let worker = &self.workers[w as usize];
            if worker.state != State::Active || worker.held.is_some() || worker.parts.is_empty() {
                return;
            }
            let Some((job, p)) = self.next_message(w) else {
                return;
            };
            if self.status[job as usize] != QUEUED {
                self.stored(w, t);
                continue;
            }
            if self.workers[w as usize].busy < self.config.slots_per_worker {
                self.stored(w, t);
                self.start(w, job, t);
            } else {
                self.update(w, |worker| worker.held = Some((job, p)));
                self.held += 1;
                return;
            }
        }
    }

    /// A store look-up by `w`: the oldest queued job created before `t − threshold`.
    fn look(&mut self, w: u32, t: f64) -> bool {
        self.queries += 1;
        if let Some(slot) = self.per_sec.get_mut(t as usize) {
            *slot += 1;
        }
        while let Some(&job) = self.oldest.front() {
            if self.status[job as usize] == QUEUED {
                break;
            }
            self.oldest.pop_front();
        }
        let waiting = self
            .oldest
            .front()
            .copied()
            .filter(|job| self.trace[*job as usize].0 <= t - self.config.claim_after_secs);
        let every = match waiting {
            Some(job) => {
                self.oldest.pop_front();
                self.found += 1;
                self.start(w, job, t);
                // More may wait: look again at once while a slot is free, then back off
                // afresh from `LOOK_MIN`.
                let worker = &mut self.workers[w as usize];
                worker.look_every = LOOK_MIN_SECS;
                worker.look_gen = worker.look_gen.wrapping_add(1);
                let generation = worker.look_gen;
                self.push(t, Kind::Look(w, generation));
                return true;
            }
            None => {
                let worker = &self.workers[w as usize];
                let max = self
                    .config
                    .look_max_secs(self.owner.len() as u32, worker.parts.len());
                (worker.look_every * 2.0).min(max)
            }
        };
        let j = self.config.claim_jitter;
        let factor = 1.0 - j + 2.0 * j * self.jitter.unit();
        let worker = &mut self.workers[w as usize];
        worker.look_every = every;
        worker.look_gen = worker.look_gen.wrapping_add(1);
        let generation = worker.look_gen;
        self.push(t + every * factor, Kind::Look(w, generation));
        false
    }

    /// The uniform assignor of KIP-848: every member gets ⌊P/N⌋ or ⌈P/N⌉ partitions and
    /// keeps as many of those it is to own as the balance allows. Moves are then made at the
    /// heartbeats: the old owner gives a partition up at its next one, the new owner gets it
    /// at its next one after that (at once when nobody owns it).
    fn rebalance(&mut self, t: f64) {
        let members: Vec<u32> = self
            .alive
            .iter()
            .copied()
            .filter(|w| self.workers[*w as usize].state == State::Active)
            .collect();
        let new_target = uniform_assignment(&members, &self.target);
        for (p, to) in new_target.into_iter().enumerate() {
            if self.target[p] == to {
                continue;
            }
            self.target[p] = to;
            match self.owner[p] {
                Some(from) if Some(from) == to => {
                    if self.revoking[p] {
                        self.revoking[p] = false;
                        self.part_gen[p] += 1;
                    }
                }
                Some(from) => {
                    if !self.revoking[p] {
                        self.revoking[p] = true;
                        self.part_gen[p] += 1;
                        let at = self.next_heartbeat(from, t);
                        self.push(at, Kind::Revoke(p as u32, self.part_gen[p]));
                    }
                }
                None => {
                    self.part_gen[p] += 1;
                    if let Some(to) = to {
                        let at = self.next_heartbeat(to, t);
                        self.push(at, Kind::Assign(p as u32, self.part_gen[p]));
                    }
                }
            }
        }
    }

    /// `None` while partitions move; once every partition is owned by its target, whether
    /// the members' counts are within one of each other and cover every partition.
    fn settled_and_even(&self) -> Option<bool> {
        if self.owner.iter().zip(&self.target).any(|(o, t)| o != t) || self.rebalance_due {
            return None;
        }
        let counts = self
            .alive
            .iter()
            .map(|w| &self.workers[*w as usize])
            .filter(|w| w.state == State::Active)
            .map(|w| w.parts.len());
        let (mut min, mut max, mut sum, mut n) = (usize::MAX, 0, 0, 0);
        for c in counts {
            min = min.min(c);
            max = max.max(c);
            sum += c;
            n += 1;
        }
        Some(n == 0 || (max - min <= 1 && sum == self.owner.len()))
    }

    fn revoke(&mut self, p: u32, generation: u32, t: f64) {
        let pi = p as usize;
        if self.part_gen[pi] != generation || !self.revoking[pi] {
            return;
        }
        self.revoking[pi] = false;
        let Some(from) = self.owner[pi].take() else {
            return;
        };
        let held = self.workers[from as usize].held;
        self.update(from, |worker| {
            worker.parts.retain(|q| *q != p);
            worker.cursor = 0;
            // Its message in hand is not committed: the partition's next owner gets it again.
            if matches!(worker.held, Some((_, q)) if q == p) {
                worker.held = None;
            }
        });
        if let Some((job, q)) = held
            && q == p
        {
            self.held -= 1;
            self.part_q[pi].push_front(job);
            self.unreceived += 1;
        }
        self.deliver(from, t);
        if let Some(to) = self.target[pi] {
            self.part_gen[pi] += 1;
            let at = self.next_heartbeat(to, t + 1e-6);
            self.push(at, Kind::Assign(p, self.part_gen[pi]));
        }
    }

    fn assign(&mut self, p: u32, generation: u32, t: f64) {
        let pi = p as usize;
        if self.part_gen[pi] != generation || self.owner[pi].is_some() {
            return;
        }
        let Some(to) = self.target[pi] else { return };
        if self.workers[to as usize].state != State::Active {
            return;
        }
        self.owner[pi] = Some(to);
        self.workers[to as usize].parts.push(p);
        self.deliver(to, t);
    }

    fn grow(&mut self, total: u32) {
        let now = self.owner.len() as u32;
        if total <= now {
            return;
        }
        for _ in now..total {
            self.part_q.push(VecDeque::new());
            self.owner.push(None);
            self.target.push(None);
            self.part_gen.push(0);
            self.revoking.push(false);
        }
        self.rebalance_due = true;
    }

    fn arrival(&mut self, job: u64, t: f64) {
        self.arrivals
            .record(self.deadline.get(job as usize).copied().flatten().is_some());
        self.ctl.tracker.transition(
            job,
            None,
            JobStatus::Queued,
            (t * 1000.0) as i64,
            None,
            None,
            None,
            true,
        );
        if !self.partitioned() {
            if self.planning {
                self.predicted[job as usize] = self.estimate(job, t);
            }
            self.queue.insert(self.order_key(job));
            return;
        }
        self.status[job as usize] = QUEUED;
        if self.claims() {
            self.oldest.push_back(job);
        }
        // The producer hashes the key (the job id) over the partitions it knows of.
        let p = (self.key_hash[job as usize] % self.producer_partitions as u64) as usize;
        self.part_q[p].push_back(job);
        self.unreceived += 1;
        if let Some(w) = self.owner[p] {
            self.deliver(w, t);
        }
    }

    fn done(&mut self, w: u32, job: u64, t: f64) {
        self.ctl.tracker.transition(
            job,
            Some(JobStatus::Running),
            JobStatus::Finished,
            (t * 1000.0) as i64,
            Some(w),
            None,
            None,
            true,
        );
        self.update(w, |worker| worker.busy -= 1);
        if self.planning
            && let Some(start) = self.running.remove(&job)
        {
            self.service.record("sim", t - start);
        }
        if self.workers[w as usize].state != State::Active {
            return;
        }
        if !self.partitioned() {
            self.free.push(w);
            return;
        }
        // A freed slot looks once at once, before it takes the offer it holds (the oldest
        // waiting job goes first, as in the worker loop); the back-off itself goes on (a busy
        // fleet's job ends cost one look each, not a fresh run of 250 ms looks).
        if let Some((held, _)) = self.workers[w as usize].held {
            if self.claims() && self.look(w, t) {
                self.deliver(w, t);
                return;
            }
            self.update(w, |worker| worker.held = None);
            self.held -= 1;
            self.stored(w, t);
            if self.status[held as usize] == QUEUED {
                self.start(w, held, t);
            }
        }
        if self.claims() && self.is_looking(w) {
            self.look(w, t);
        }
        self.deliver(w, t);
    }

    fn ready(&mut self, w: u32, t: f64) {
        if self.workers[w as usize].state != State::Starting {
            return;
        }
        self.update(w, |worker| {
            worker.state = State::Active;
            worker.joined = t;
        });
        if !self.partitioned() {
            for _ in 0..self.config.slots_per_worker {
                self.free.push(w);
            }
            return;
        }
        self.rebalance_due = true;
        if self.claims() {
            let worker = &mut self.workers[w as usize];
            worker.look_gen += 1;
            let generation = worker.look_gen;
            self.push(t + LOOK_MIN_SECS, Kind::Look(w, generation));
        }
    }

    fn stop(&mut self, w: u32, t: f64) {
        self.update(w, |worker| worker.state = State::Gone);
        self.worker_seconds += t - self.workers[w as usize].since;
        // It commits on its way out.
        self.commit(w);
        // It leaves the group on its way out: its partitions are free at once.
        let parts = std::mem::take(&mut self.workers[w as usize].parts);
        for p in parts {
            let pi = p as usize;
            self.owner[pi] = None;
            if self.revoking[pi] {
                self.revoking[pi] = false;
                self.part_gen[pi] += 1;
            }
        }
    }

    fn tick(&mut self, t: f64) {
        let config = self.config;
        let workers = &self.workers;
        self.alive
            .retain(|w| workers[*w as usize].state != State::Gone);
        let live = self.alive.len() as u32;
        let active = self
            .alive
            .iter()
            .filter(|w| self.workers[**w as usize].state == State::Active)
            .count() as u32;
        if self.partitioned()
            && let Some(even) = self.settled_and_even()
        {
            self.result.settled_periods += 1;
            if !even {
                self.result.uneven_periods += 1;
            }
        }
        let (queue_depth, partitions) = if self.partitioned() {
            // The worker group's lag: messages not yet received, those held in hand, and
            // those whose offsets are stored but not yet committed.
            (
                self.unreceived + self.held + self.uncommitted,
                self.owner.len() as u32,
            )
        } else {
            (self.queue.len() as u64, u32::MAX)
        };
        let planned = self.planning.then(|| self.backlog(t, active));
        let observation = self.ctl.step(
            FleetState {
                now_ms: (t * 1000.0) as i64,
                period_secs: config.period_secs,
                queue_depth: Some(queue_depth),
                workers: active,
                current: live,
                partitions,
            },
            planned.as_ref().map(|(b, _, _)| b),
        );
        if let Some((backlog, keys, unplanned)) = planned {
            let workers = observation.desired_workers.max(active);
            self.plan(&backlog, keys, unplanned, workers);
        }
        if t > 0.0 {
            self.result.periods += 1;
            if observation.queue_wait_p95 <= config.target_wait_secs {
                self.result.periods_met += 1;
            }
        }
        let desired = observation.desired_workers;
        if desired != live {
            self.result.scaling_actions += 1;
        }
        if self.partitioned()
            && config.grow_partitions
            && let Some(total) =
                partitions_needed(desired, config.slots_per_worker, self.owner.len() as u32)
        {
            self.grow(total);
        }
        if desired > live {
            if t >= config.step_at() && self.result.step_to_scale_up_secs.is_none() {
                self.result.step_to_scale_up_secs = Some(t - config.step_at());
            }
            for _ in live..desired {
                let w = self.workers.len() as u32;
                self.alive.push(w);
                self.workers.push(Worker {
                    state: State::Starting,
                    busy: 0,
                    since: t,
                    joined: t,
                    parts: Vec::new(),
                    cursor: 0,
                    held: None,
                    look_every: LOOK_MIN_SECS,
                    look_gen: 0,
                    uncommitted: 0,
                    commit_due: false,
                });
                self.push(t + config.startup_secs, Kind::Ready(w));
            }
        } else if desired < live {
            let mut excess = live - desired;
            let mut left = false;
            // Starting workers first (they run nothing), then idle ones, newest first.
            for state in [State::Starting, State::Active] {
                for i in (0..self.alive.len()).rev() {
                    if excess == 0 {
                        break;
                    }
                    let w = self.alive[i];
                    let worker = &self.workers[w as usize];
                    if worker.state == state && worker.busy == 0 && worker.held.is_none() {
                        left |= state == State::Active;
                        self.stop(w, t);
                        excess -= 1;
                    }
                }
            }
            if left && self.partitioned() {
                self.rebalance_due = true;
            }
        }
        self.result.max_workers_seen = self.result.max_workers_seen.max(desired);
        self.push(t + config.period_secs, Kind::Tick);
    }

    /// Any-free: hand queued jobs to free slots.
    fn hand_out(&mut self, t: f64) {
        while !self.queue.is_empty() {
            let Some(w) = self.free.pop() else { break };
            let worker = &self.workers[w as usize];
            if worker.state != State::Active || worker.busy >= self.config.slots_per_worker {
                continue;
            }
            let (_, job) = self.queue.pop_first().expect("queue not empty");
            self.start(w, job, t);
        }
    }
}

/// The uniform assignor of KIP-848 (sticky): every member gets ⌊P/N⌋ or ⌈P/N⌉ of the P
/// partitions (the ⌈⌉ ones to those that hold most now), keeps as many of its current ones
/// as that allows, and the rest go to the members below their share, lowest partition first.
fn uniform_assignment(members: &[u32], current: &[Option<u32>]) -> Vec<Option<u32>> {
    let total = current.len();
    let mut assignment: Vec<Option<u32>> = vec![None; total];
    if members.is_empty() {
        return assignment;
    }
    let size = members.iter().map(|w| *w as usize + 1).max().unwrap_or(0);
    let mut index = vec![usize::MAX; size];
    for (i, w) in members.iter().enumerate() {
        index[*w as usize] = i;
    }
    let n = members.len();
    let mut mine: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut pool = Vec::new();
    for (p, owner) in current.iter().enumerate() {
        match owner.and_then(|w| index.get(w as usize).copied()) {
            Some(i) if i != usize::MAX => mine[i].push(p as u32),
            _ => pool.push(p as u32),
        }
    }
    let (base, extra) = (total / n, total % n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| Reverse(mine[*i].len()));
    let mut quota = vec![base; n];
    for i in order.iter().take(extra) {
        quota[*i] += 1;
    }
    for i in 0..n {
        let keep = mine[i].len().min(quota[i]);
        pool.extend(mine[i].drain(keep..));
    }
    pool.sort_unstable_by(|a, b| b.cmp(a));
    for i in 0..n {
        while mine[i].len() < quota[i] {
            let Some(p) = pool.pop() else { break };
            mine[i].push(p);
        }
        for p in &mine[i] {
            assignment[*p as usize] = Some(members[i]);
        }
    }
    assignment
}

/// Replays the trace under one policy.
pub fn run(config: &SimConfig, policy_name: &str) -> Option<SimResult> {
    let trace = jobs(config);
    // A job's key is its id (a UUIDv7, random bits): its hash is uniform.
    let mut keys = SplitMix64::new(config.key_seed.unwrap_or(config.seed) ^ 0x6A09_E667_F3BC_C908);
    let key_hash = trace.iter().map(|_| keys.next_u64()).collect();
    let deadline_of = match &config.deadlines {
        Some(mix) => deadlines::deadlines(config, mix, &trace),
        None => vec![None; trace.len()],
    };
    run_jobs(config, policy_name, trace, key_hash, deadline_of)
}

/// Replays the given jobs (arrival, duration) with the given key hashes under one policy.
fn run_jobs(
    config: &SimConfig,
    policy_name: &str,
    trace: Vec<(f64, f64)>,
    key_hash: Vec<u64>,
    deadline_of: Vec<Option<f64>>,
) -> Option<SimResult> {
    let wall = Instant::now();
    let (policy, governor) = config.policy(policy_name)?;
    let with_deadlines = deadline_of.iter().any(Option::is_some);
    let end = config.duration();
    let partitioned = config.dispatch.partitioned();
    let partitions = if partitioned {
        config.partitions.max(1)
    } else {
        0
    };
    let mut sim = Sim {
        config,
        ctl: Controller::new(policy, governor, config.slots_per_worker),
        heap: BinaryHeap::new(),
        result: SimResult {
            policy: policy_name.to_string(),
            periods: 0,
            periods_met: 0,
            worker_seconds: 0.0,
            scaling_actions: 0,
            step_to_scale_up_secs: None,
            jobs: 0,
            mean_wait_secs: 0.0,
            max_wait_secs: 0.0,
            max_workers_seen: 0,
            wall_secs: 0.0,
            claim_queries: None,
            partitions,
            dispatch: Some(config.dispatch),
            settled_periods: 0,
            uneven_periods: 0,
            deadline_outcomes: Vec::new(),
            prediction: None,
        },
        wait_sum: 0.0,
        worker_seconds: 0.0,
        workers: Vec::new(),
        alive: Vec::new(),
        free: Vec::new(),
        queue: BTreeSet::new(),
        planning: !partitioned && (with_deadlines || policy_name == "deadline"),
        running: BTreeMap::new(),
        service: ServiceTimes::default(),
        arrivals: ArrivalMix::default(),
        last_plan: None,
        predicted: vec![f64::NAN; trace.len()],
        errors: Vec::new(),
        outcomes: vec![deadlines::UNSCORED; trace.len()],
        deadline: deadline_of,
        status: if partitioned {
            vec![0; trace.len()]
        } else {
            Vec::new()
        },
        key_hash,
        oldest: VecDeque::new(),
        part_q: (0..partitions).map(|_| VecDeque::new()).collect(),
        owner: vec![None; partitions as usize],
        target: vec![None; partitions as usize],
        part_gen: vec![0; partitions as usize],
        revoking: vec![false; partitions as usize],
        producer_partitions: partitions,
        unreceived: 0,
        held: 0,
        uncommitted: 0,
        rebalance_due: false,
        looking: 0,
        idle_worker_secs: 0.0,
        last_t: 0.0,
        queries: 0,
        found: 0,
        per_sec: vec![0; end.ceil() as usize + 1],
        jitter: SplitMix64::new(config.seed ^ 0xBB67_AE85_84CA_A73B),
        trace,
    };
    if let Some((first, _)) = sim.trace.first() {
        let first = *first;
        sim.push(first, Kind::Arrival);
    }
    sim.push(0.0, Kind::Tick);
    if partitioned {
        // The producer's metadata refreshes at a phase of its own.
        let phase = sim.jitter.unit() * config.producer_refresh_secs;
        sim.push(phase, Kind::ProducerRefresh);
    }
    let mut next_job = 0u64;
    while let Some(Reverse((t_us, kind))) = sim.heap.pop() {
        let t = t_us as f64 / US;
        if t > end {
            break;
        }
        sim.idle_worker_secs += sim.looking as f64 * (t - sim.last_t);
        sim.last_t = t;
        match kind {
            Kind::Arrival => {
                let job = next_job;
                next_job += 1;
                sim.arrival(job, t);
                if let Some((n, _)) = sim.trace.get(next_job as usize) {
                    let n = *n;
                    sim.push(n, Kind::Arrival);
                }
            }
            Kind::Done(w, job) => sim.done(w, job, t),
            Kind::Ready(w) => sim.ready(w, t),
            Kind::Tick => sim.tick(t),
            Kind::Revoke(p, generation) => sim.revoke(p, generation, t),
            Kind::Assign(p, generation) => sim.assign(p, generation, t),
            Kind::Look(w, generation) => {
                if sim.workers[w as usize].look_gen == generation && sim.is_looking(w) {
                    sim.look(w, t);
                }
            }
            Kind::Commit(w) => sim.commit(w),
            Kind::ProducerRefresh => {
                sim.producer_partitions = sim.owner.len() as u32;
                sim.push(
                    t + config.producer_refresh_secs.max(1.0),
                    Kind::ProducerRefresh,
                );
            }
        }
        if !partitioned {
            sim.hand_out(t);
        } else if sim.rebalance_due
            && sim
                .heap
                .peek()
                .is_none_or(|Reverse((next, _))| *next > t_us)
        {
            sim.rebalance_due = false;
            sim.rebalance(t);
        }
    }
    sim.idle_worker_secs += sim.looking as f64 * (end - sim.last_t).max(0.0);
    for worker in &sim.workers {
        if worker.state != State::Gone {
            sim.worker_seconds += end - worker.since;
        }
    }
    let mut result = sim.result;
    result.worker_seconds = sim.worker_seconds;
    result.mean_wait_secs = sim.wait_sum / result.jobs.max(1) as f64;
    result.partitions = sim.owner.len() as u32;
    if config.dispatch == Dispatch::StoreClaim {
        result.claim_queries = Some(ClaimQueries {
            total: sim.queries,
            found: sim.found,
            peak_per_sec: sim.per_sec.iter().copied().max().unwrap_or(0),
            idle_worker_secs: sim.idle_worker_secs,
        });
    }
    if with_deadlines {
        // A job that did not start within the trace missed a deadline that fell within it.
        let end = config.duration();
        for (outcome, d) in sim.outcomes.iter_mut().zip(&sim.deadline) {
            if *outcome == deadlines::UNSCORED && d.is_some_and(|d| d <= end) {
                *outcome = deadlines::MISSED;
            }
        }
        result.deadline_outcomes = std::mem::take(&mut sim.outcomes);
    }
    result.prediction = Prediction::of(&mut sim.errors);
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
        max_wait_secs: waits.iter().copied().fold(0.0, f64::max),
        max_workers_seen: 0,
        wall_secs: config.duration(),
        claim_queries: None,
        partitions: 0,
        dispatch: None,
        settled_periods: 0,
        uneven_periods: 0,
        deadline_outcomes: Vec::new(),
        prediction: None,
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
    let dispatch = match results.first().and_then(|r| r.dispatch) {
        None => String::new(),
        Some(Dispatch::AnyFree) => "any-free (any free slot takes the oldest job)".to_string(),
        Some(d) => {
            let grown = results.iter().map(|r| r.partitions).max().unwrap_or(0);
            let mut text = format!(
                "{}, {} partitions at the start{}, heartbeat {:.1} s",
                d.name(),
                config.partitions,
                if !config.grow_partitions {
                    " (not grown)".to_string()
                } else if grown > config.partitions {
                    format!(" (grown to {grown} at most)")
                } else {
                    String::new()
                },
                config.heartbeat_secs,
            );
            if d == Dispatch::StoreClaim {
                text.push_str(&format!(
                    ", claim after {:.0} ms, B = {:.0} look-ups/s",
                    config.claim_after_secs * 1000.0,
                    config.claim_budget_per_sec
                ));
            }
            text
        }
    };
    out.push_str(&format!(
        "trace {:.0} s, base {:.2} jobs/s (step {:.0} jobs/h), mean job {:.1} s, {} slot(s)/worker, \
         {}–{} workers, target p95 wait ≤ {:.0} s per {:.0} s period, seed {}{}\n\n",
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
        if dispatch.is_empty() {
            String::new()
        } else {
            format!("; dispatch: {dispatch}")
        },
    ));
    out.push_str("| policy | periods meeting target | worker-seconds | scaling actions | step → first scale-up | jobs | mean wait | store look-ups (found) | look-ups/s mean / peak | per idle worker-s: all / empty | speed-up |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let (queries, rate, idle) = match &r.claim_queries {
            Some(q) => (
                format!("{} ({})", q.total, q.found),
                format!(
                    "{:.1} / {}",
                    q.total as f64 / config.duration().max(1e-9),
                    q.peak_per_sec
                ),
                format!(
                    "{:.3} / {:.3}",
                    q.per_idle_worker_sec(),
                    q.empty_per_idle_worker_sec()
                ),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        out.push_str(&format!(
            "| {} | {:.1} % | {:.0} | {} | {} | {} | {:.2} s | {} | {} | {} | {:.0}× |\n",
            r.policy,
            100.0 * r.met_share(),
            r.worker_seconds,
            r.scaling_actions,
            r.step_to_scale_up_secs
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "—".into()),
            r.jobs,
            r.mean_wait_secs,
            queries,
            rate,
            idle,
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

    /// Two single-slot workers, one partition each: a 25 s job on partition 0 at 10 s, then
    /// a 1 s job every 2 s, alternately on partition 0 and 1 (the long-job scenario).
    fn long_job(dispatch: Dispatch) -> SimResult {
        let config = SimConfig {
            trace: vec![Phase {
                name: "quiet",
                secs: 60.0,
                from: 0.0,
                to: 0.0,
            }],
            min_workers: 2,
            max_workers: 2,
            slots_per_worker: 1,
            partitions: 2,
            grow_partitions: false,
            dispatch,
            ..SimConfig::small()
        };
        let mut trace = vec![(10.0, 25.0)];
        let mut keys = vec![0];
        for i in 0..10u64 {
            trace.push((11.0 + 2.0 * i as f64, 1.0));
            keys.push(i % 2);
        }
        let none = vec![None; trace.len()];
        run_jobs(&config, "static-max", trace, keys, none).unwrap()
    }

    #[test]
    fn a_job_behind_a_busy_workers_partition_waits_under_partition_bound_only() {
        let bound = long_job(Dispatch::PartitionBound);
        let claimed = long_job(Dispatch::StoreClaim);
        let free = long_job(Dispatch::AnyFree);
        assert_eq!((bound.jobs, claimed.jobs, free.jobs), (11, 11, 11));
        // The short jobs of partition 0 wait for the long job to end (at 35 s).
        assert!(bound.max_wait_secs > 20.0, "{bound:?}");
        // Every short job starts within 2 s: after the 0.5 s threshold, at the next look-up.
        assert!(claimed.max_wait_secs <= 2.0, "{claimed:?}");
        assert!(claimed.max_wait_secs >= 0.5, "{claimed:?}");
        assert!(free.max_wait_secs < 0.01, "{free:?}");
        let q = claimed.claim_queries.unwrap();
        assert_eq!(q.found, 5, "{q:?}");
        assert!(bound.claim_queries.is_none() && free.claim_queries.is_none());
    }

    #[test]
    fn the_uniform_assignor_stays_even_and_sticky_as_the_fleet_grows_and_shrinks() {
        let partitions = 16;
        let mut current: Vec<Option<u32>> = vec![None; partitions];
        let mut members: Vec<u32> = Vec::new();
        let sizes = [1, 2, 3, 5, 8, 13, 20, 7, 4, 1, 6];
        let mut next = 0u32;
        for size in sizes {
            while members.len() < size {
                members.push(next);
                next += 1;
            }
            // The newest leave first, as the scaler stops them.
            members.truncate(size);
            let assignment = uniform_assignment(&members, &current);
            assert!(
                assignment
                    .iter()
                    .all(|o| o.is_some_and(|w| members.contains(&w)))
            );
            let counts: Vec<usize> = members
                .iter()
                .map(|m| assignment.iter().filter(|o| **o == Some(*m)).count())
                .collect();
            let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
            assert!(max - min <= 1, "{size} members: {counts:?}");
            assert_eq!(counts.iter().sum::<usize>(), partitions);
            // Sticky: a partition moves only if its owner left or holds more than its share.
            let moved = assignment
                .iter()
                .zip(&current)
                .filter(|(a, c)| c.is_some() && a != c)
                .count();
            let must = current
                .iter()
                .filter(|c| c.is_some_and(|w| !members.contains(&w)))
                .count();
            let share = partitions.div_ceil(members.len());
            let surplus: usize = members
                .iter()
                .map(|m| {
                    let held = current.iter().filter(|c| **c == Some(*m)).count();
                    held.saturating_sub(share.saturating_sub(1))
                })
                .sum();
            assert!(moved <= must + surplus, "{size}: moved {moved}");
            current = assignment;
        }
    }

    #[test]
    fn partitions_stay_even_over_a_run_that_grows_and_shrinks() {
        let c = SimConfig {
            slots_per_worker: 1,
            max_workers: 8,
            dispatch: Dispatch::PartitionBound,
            ..short()
        };
        let r = run(&c, "queueing").unwrap();
        assert!(r.max_workers_seen > 1, "{r:?}");
        assert!(r.scaling_actions > 4, "{r:?}");
        // Settled within the 0–2 s of the heartbeats in most periods, and then even.
        assert!(r.settled_periods as f64 > 0.8 * r.periods as f64, "{r:?}");
        assert_eq!(r.uneven_periods, 0, "{r:?}");
        // Nothing is lost when partitions move: every job of the trace started or waits.
        assert!(r.jobs as f64 >= 0.95 * jobs(&c).len() as f64, "{r:?}");
    }

    #[test]
    fn store_look_ups_stay_within_the_budget_at_a_thousand_idle_workers() {
        let quiet = |secs: f64| Phase {
            name: "quiet",
            secs,
            from: 1.0,
            to: 1.0,
        };
        let c = SimConfig {
            trace: vec![quiet(600.0)],
            base_rate: 0.01,
            dispatch: Dispatch::StoreClaim,
            ..SimConfig::large()
        };
        let r = run(&c, "static-max").unwrap();
        let q = r.claim_queries.unwrap();
        assert_eq!(r.partitions, 2000);
        // Each idle worker owns 2 of 2,000 partitions: it estimates 1,000 members and backs
        // off to 1,000 / B = 10 s, so the fleet makes about B = 100 look-ups per second.
        assert_eq!(c.look_max_secs(2000, 2), 10.0);
        let per_worker = q.per_idle_worker_sec();
        assert!(per_worker < 0.13, "{q:?}");
        assert!(per_worker > 0.08, "{q:?}");
        // The fleet's rate: the budget, plus the first back-off steps of 1,000 workers.
        let per_sec = q.total as f64 / c.duration();
        assert!(per_sec < 1.3 * c.claim_budget_per_sec, "{per_sec}");

        let small = SimConfig {
            min_workers: 10,
            max_workers: 10,
            ..c
        };
        let q = run(&small, "static-max").unwrap().claim_queries.unwrap();
        // Ten workers: 10 / B is under the 0.5 s floor, so two look-ups per second each.
        assert!(q.per_idle_worker_sec() <= 2.2, "{q:?}");
        assert!(q.per_idle_worker_sec() >= 1.8, "{q:?}");
    }

    #[test]
    fn store_claim_runs_are_reproducible() {
        let c = SimConfig {
            dispatch: Dispatch::StoreClaim,
            ..short()
        };
        let a = run(&c, "queueing").unwrap();
        let b = run(&c, "queueing").unwrap();
        assert_eq!(a.claim_queries, b.claim_queries);
        assert_eq!(a.worker_seconds, b.worker_seconds);
    }

    fn with_deadlines(mut c: SimConfig) -> SimConfig {
        c.deadlines = Some(DeadlineMix::standard());
        c
    }

    #[test]
    fn the_same_seed_gives_the_same_deadline_run() {
        let c = with_deadlines(short());
        let a = run(&c, "deadline").unwrap();
        let b = run(&c, "deadline").unwrap();
        assert_eq!(a.deadline_outcomes, b.deadline_outcomes);
        assert_eq!(a.worker_seconds, b.worker_seconds);
        assert_eq!(a.prediction, b.prediction);
        assert!(a.prediction.is_some_and(|p| p.samples as u64 == a.jobs));
        // Deadlines come from a stream of their own: the jobs, and a run without
        // deadlines, are what they were.
        assert_eq!(jobs(&c), jobs(&short()));
        let scored = a.deadline_outcomes.iter().filter(|o| **o != 0).count();
        assert!(
            scored as f64 > 0.6 * a.jobs as f64,
            "{scored} of {}",
            a.jobs
        );
    }

    #[test]
    fn deadlines_change_the_order_not_the_jobs() {
        let c = with_deadlines(short());
        let plain = run(&short(), "static-max").unwrap();
        let r = run(&c, "static-max").unwrap();
        assert_eq!(
            (plain.jobs, plain.worker_seconds),
            (r.jobs, r.worker_seconds)
        );
        assert!(plain.deadline_outcomes.is_empty() && plain.prediction.is_none());
    }

    /// A steady load of 4.8 erlangs for 600 s, every job due 4 s after it could finish,
    /// under a lax wait target (300 s) with no stabilisation and workers ready at once: the
    /// queueing policy runs about five slots at 96 %, whose queue now and then holds a job
    /// past its deadline; the plan sees it coming and adds a worker.
    fn steady_tight() -> SimConfig {
        SimConfig {
            trace: vec![Phase {
                name: "quiet",
                secs: 600.0,
                from: 1.0,
                to: 1.0,
            }],
            base_rate: 2.4,
            slots_per_worker: 1,
            target_wait_secs: 300.0,
            stabilisation_secs: 0.0,
            startup_secs: 0.0,
            deadlines: Some(DeadlineMix {
                tight_share: 1.0,
                tight_factor: (1.0, 1.0),
                tight_slack_secs: 4.0,
                ..DeadlineMix::standard()
            }),
            ..SimConfig::small()
        }
    }

    #[test]
    fn the_deadline_policy_meets_more_deadlines_than_queueing() {
        let c = steady_tight();
        let (results, oracle) = deadlines::bench(&c, &["queueing", "deadline"]).unwrap();
        let score = |r: &SimResult| DeadlineScore::of(&r.deadline_outcomes, &oracle.feasible);
        let (q, d) = (score(&results[0]), score(&results[1]));
        assert!(q.feasible > 1000, "{q:?}");
        assert!(
            d.feasible_met > q.feasible_met,
            "queueing {q:?}, deadline {d:?}"
        );
        assert!(d.met_share() >= 0.99, "{d:?}");
    }

    fn tight() -> SimConfig {
        SimConfig {
            deadlines: Some(DeadlineMix {
                tight_share: 1.0,
                tight_slack_secs: 1.0,
                ..DeadlineMix::standard()
            }),
            ..short()
        }
    }

    #[test]
    fn the_oracle_meets_every_feasible_deadline_with_no_more_than_static_max() {
        for c in [with_deadlines(short()), tight(), steady_tight()] {
            let (results, oracle) = deadlines::bench(&c, &["static-max"]).unwrap();
            let s = DeadlineScore::of(&oracle.outcomes, &oracle.feasible);
            assert_eq!(oracle.violations, 0);
            assert_eq!(s.feasible_missed(), 0, "{s:?}");
            assert!(s.feasible > 0);
            assert!(oracle.worker_seconds <= results[0].worker_seconds);
            assert!(oracle.worker_seconds < oracle.reference_worker_seconds);
            assert!(
                oracle
                    .fleet
                    .iter()
                    .all(|w| *w >= c.min_workers && *w <= c.max_workers)
            );
        }
    }

    #[test]
    fn a_full_fleet_predicts_starts_on_arrival() {
        // With idle slots to spare every job starts when it arrives, as predicted.
        let r = run(&with_deadlines(short()), "static-max").unwrap();
        let p = r.prediction.unwrap();
        assert!(p.p90_secs < 0.01, "{p:?}");
    }

    #[test]
    fn unknown_policies_are_refused() {
        assert!(run(&short(), "magic").is_none());
    }
}
