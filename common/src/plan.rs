//! The planning model (docs/deadlines.md), with no I/O: when each waiting job is predicted
//! to start and finish, from when the fleet's slots free, the jobs ahead of it under the
//! scheduling rules and their service times. The observer plans with it every period (and
//! its `deadline` policy asks it how few workers meet every deadline), the frontend answers
//! a job's `estimatedStartAt` / `estimatedFinishAt` from the last [`Plan`], and the
//! simulator drives the same functions.
//!
//! **List scheduling.** The waiting jobs are taken in the order a free slot takes them
//! ([`crate::scheduling`]): each time a slot frees, it takes the first job in that order
//! that may start by then (past its `notBefore` or retry); a job that may not start yet
//! leaves the slot to the next one in order. Times are seconds on the caller's clock (Unix
//! time in the observer, the simulated clock in the simulator). Running limits (quotas) are
//! not modelled: a limited user's jobs are predicted as if slots were free for them, so
//! their estimates err early; the order itself is the store's.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::domain::{Job, JobId, JobStatus, unix_ms};

/// A waiting job as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waiting {
    /// When it may start (its creation, `notBefore` or next retry).
    pub ready: f64,
    /// Its expected service time (start → end), seconds.
    pub secs: f64,
    /// Finish by, when it has a deadline.
    pub deadline: Option<f64>,
}

/// A job's predicted start and finish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    pub start: f64,
    pub finish: f64,
}

/// A time, ordered for a min-heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct At(f64);

impl Eq for At {}

impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for At {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest time must come out first.
        other.0.total_cmp(&self.0)
    }
}

/// A list schedule: each job's forecast, when a job placed after all of them would start,
/// and the stretches a slot stays idle because the next jobs in order may not start yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub forecasts: Vec<Forecast>,
    /// `f64::INFINITY` with no slot.
    pub tail: f64,
    /// `(from, until)`: a slot free from `from` that nothing may take before `until`.
    pub idle: Vec<(f64, f64)>,
}

/// List-schedules `waiting` (in the order the rules take them) onto slots that free at
/// `slots` (one time per slot; `now` for an idle one). Returns each job's forecast, and
/// when a job placed after all of them would start (`f64::INFINITY` with no slot).
pub fn forecast(slots: &[f64], waiting: &[Waiting]) -> (Vec<Forecast>, f64) {
    let timeline = list_schedule(slots, waiting);
    (timeline.forecasts, timeline.tail)
}

/// [`forecast`], with the idle stretches.
pub fn list_schedule(slots: &[f64], waiting: &[Waiting]) -> Timeline {
    let mut idle = Vec::new();
    let mut out = vec![
        Forecast {
            start: f64::INFINITY,
            finish: f64::INFINITY,
        };
        waiting.len()
    ];
    if slots.is_empty() {
        return Timeline {
            forecasts: out,
            tail: f64::INFINITY,
            idle,
        };
    }
    let mut free: BinaryHeap<At> = slots.iter().map(|&t| At(t)).collect();
    // Jobs not yet ready, earliest ready first (ties in rule order); ready ones by position.
    let mut held: BinaryHeap<(At, std::cmp::Reverse<usize>)> = waiting
        .iter()
        .enumerate()
        .map(|(i, w)| (At(w.ready), std::cmp::Reverse(i)))
        .collect();
    let mut ready: BTreeSet<usize> = BTreeSet::new();
    let mut placed = 0;
    while placed < waiting.len() {
        let At(t) = free.pop().expect("a slot");
        while let Some((At(r), std::cmp::Reverse(i))) = held.peek().copied() {
            if r > t {
                break;
            }
            held.pop();
            ready.insert(i);
        }
        match ready.pop_first() {
            Some(i) => {
                let finish = t + waiting[i].secs.max(0.0);
                out[i] = Forecast { start: t, finish };
                free.push(At(finish));
                placed += 1;
            }
            None => {
                // Nothing may start yet: the slot stays idle until the next job is ready.
                let (At(r), _) = *held.peek().expect("an unplaced job is held");
                if idle.len() < IDLE_KEPT {
                    idle.push((t, r));
                }
                free.push(At(r));
            }
        }
    }
    let tail = free.pop().map_or(f64::INFINITY, |At(t)| t);
    Timeline {
        forecasts: out,
        tail,
        idle,
    }
}

/// How many idle stretches a timeline keeps (the earliest).
const IDLE_KEPT: usize = 1000;

/// The fleet as the model sees it at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub now: f64,
    /// When each running job is predicted to end (never before `now`).
    pub busy_ends: Vec<f64>,
    /// Workers running now (asked for and not stopping).
    pub workers: u32,
    pub slots_per_worker: u32,
    /// From asking for a worker to its first job.
    pub startup_secs: f64,
}

impl Fleet {
    /// When each slot of a fleet of `workers` frees: the running jobs' slots at their ends,
    /// the other slots of today's workers now, a new worker's after its start-up. Fewer
    /// workers than today only stop idle slots (a busy worker drains first).
    pub fn slots(&self, workers: u32) -> Vec<f64> {
        let per = self.slots_per_worker.max(1) as usize;
        let today = self.workers as usize * per;
        let wanted = workers as usize * per;
        let mut slots: Vec<f64> = self.busy_ends.iter().map(|&e| e.max(self.now)).collect();
        let idle_today = today.saturating_sub(slots.len());
        let idle = idle_today.min(wanted.saturating_sub(slots.len()));
        slots.extend(std::iter::repeat_n(self.now, idle));
        let new = wanted.saturating_sub(today.max(slots.len()));
        slots.extend(std::iter::repeat_n(
            self.now + self.startup_secs.max(0.0),
            new,
        ));
        slots
    }
}

/// What the planner knows at the end of a period: the fleet and the waiting jobs, in the
/// order a free slot takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Backlog {
    pub fleet: Fleet,
    pub waiting: Vec<Waiting>,
    /// The share of recent arrivals that had a deadline ([`ArrivalMix`]).
    pub deadline_share: f64,
}

/// The share of recent arrivals with a deadline: an exponentially weighted mean over about
/// the last [`ArrivalMix::WINDOW`] submits (0 before any).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArrivalMix {
    share: f64,
    seen: u64,
}

impl ArrivalMix {
    pub const WINDOW: f64 = 50.0;

    pub fn record(&mut self, has_deadline: bool) {
        self.seen += 1;
        // The plain mean until the window is full, then the weighted one.
        let alpha = 1.0 / (self.seen as f64).min(Self::WINDOW);
        self.share += alpha * (f64::from(u8::from(has_deadline)) - self.share);
    }

    pub fn share(&self) -> f64 {
        self.share
    }
}

/// The jobs (by position in `waiting`) whose forecast finishes later than their deadline
/// less `margin` seconds.
pub fn late(waiting: &[Waiting], forecasts: &[Forecast], margin: f64) -> Vec<usize> {
    waiting
        .iter()
        .zip(forecasts)
        .enumerate()
        .filter(|(_, (w, f))| w.deadline.is_some_and(|d| f.finish > d - margin))
        .map(|(i, _)| i)
        .collect()
}

/// The fewest workers in `lo..=hi` for which no job with a deadline is predicted to finish
/// later than its deadline less `margin`, except those that even `hi` workers cannot meet
/// (adding workers for them would buy nothing). Returns that count and the jobs `hi` misses.
pub fn fewest_workers(
    fleet: &Fleet,
    waiting: &[Waiting],
    lo: u32,
    hi: u32,
    margin: f64,
) -> (u32, Vec<usize>) {
    let hi = hi.max(lo);
    let misses = |w: u32| {
        let (f, _) = forecast(&fleet.slots(w), waiting);
        late(waiting, &f, margin)
    };
    let hopeless = misses(hi);
    let meets = |w: u32| misses(w).len() <= hopeless.len();
    if !waiting.iter().any(|w| w.deadline.is_some()) || meets(lo) {
        return (lo, hopeless);
    }
    // More slots never start a job later under list scheduling of independent jobs, so the
    // misses shrink as the fleet grows: the fewest that meets is found by bisection.
    let (mut bad, mut good) = (lo, hi);
    while good - bad > 1 {
        let mid = bad + (good - bad) / 2;
        if meets(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    (good, hopeless)
}

/// Learned service times per repository (redacted URL): the recent start → end times of
/// its jobs that ended, and of all jobs together.
#[derive(Debug, Clone, Default)]
pub struct ServiceTimes {
    by_repo: HashMap<String, Samples>,
    all: Samples,
}

/// How many recent samples one repository keeps.
const SAMPLES: usize = 64;
/// How many repositories are remembered (the least recently seen are forgotten).
const REPOS: usize = 4096;

#[derive(Debug, Clone, Default)]
struct Samples {
    recent: std::collections::VecDeque<f64>,
    /// Samples recorded in total, for recency.
    seen: u64,
}

impl Samples {
    fn push(&mut self, secs: f64, seen: u64) {
        if self.recent.len() == SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back(secs);
        self.seen = seen;
    }

    fn stats(&self) -> Option<ServiceStats> {
        if self.recent.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.recent.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(ServiceStats {
            mean_secs: v.iter().sum::<f64>() / v.len() as f64,
            p50_secs: at(0.5),
            p90_secs: at(0.9),
            samples: v.len() as u32,
        })
    }
}

impl ServiceTimes {
    /// One job of `repo` that ran `secs` from start to end.
    pub fn record(&mut self, repo: &str, secs: f64) {
        let seen = self.all.seen + 1;
        self.all.push(secs, seen);
        if !self.by_repo.contains_key(repo) && self.by_repo.len() >= REPOS {
            let oldest = self
                .by_repo
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.by_repo.remove(&k);
            }
        }
        self.by_repo
            .entry(repo.to_string())
            .or_default()
            .push(secs, seen);
    }

    /// The distribution of `repo`'s recent service times.
    pub fn of(&self, repo: &str) -> Option<ServiceStats> {
        self.by_repo.get(repo).and_then(Samples::stats)
    }

    /// The distribution over all repositories.
    pub fn overall(&self) -> Option<ServiceStats> {
        self.all.stats()
    }

    /// Every repository's distribution, most recently seen first, at most `limit`.
    pub fn repos(&self, limit: usize) -> Vec<RepoService> {
        let mut all: Vec<(&String, &Samples)> = self.by_repo.iter().collect();
        all.sort_by_key(|(_, s)| std::cmp::Reverse(s.seen));
        all.into_iter()
            .take(limit)
            .filter_map(|(repo, s)| {
                s.stats().map(|stats| RepoService {
                    repo: repo.clone(),
                    stats,
                })
            })
            .collect()
    }
}

/// A service-time distribution, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStats {
    pub mean_secs: f64,
    pub p50_secs: f64,
    pub p90_secs: f64,
    pub samples: u32,
}

/// One repository's learned service times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoService {
    /// The repository URL, credentials removed.
    pub repo: String,
    #[serde(flatten)]
    pub stats: ServiceStats,
}

/// A job's place in the order a free slot takes waiting jobs: the scheduling rules' sort
/// key (quotas aside), as both stores sort: highest priority, then the earliest deadline
/// (none last), then the lowest fair-share tag, then the oldest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderKey {
    pub priority: i32,
    /// Milliseconds since the Unix epoch; `None` sorts after every deadline.
    pub deadline_ms: Option<i64>,
    pub fair_tag: f64,
    pub created_ms: i64,
    pub id: JobId,
}

impl OrderKey {
    pub fn of(job: &Job) -> Self {
        OrderKey {
            priority: job.schedule.priority,
            deadline_ms: job.schedule.deadline.map(unix_ms),
            fair_tag: job.schedule.fair_tag,
            created_ms: unix_ms(job.created_at),
            id: job.id.clone(),
        }
    }
}

impl Eq for OrderKey {}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| {
                let d = |k: &OrderKey| k.deadline_ms.unwrap_or(i64::MAX);
                d(self).cmp(&d(other))
            })
            .then_with(|| self.fair_tag.total_cmp(&other.fair_tag))
            .then_with(|| self.created_ms.cmp(&other.created_ms))
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// One job in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEntry {
    pub key: OrderKey,
    /// Whether it was running when planned (its start is then the actual one).
    pub running: bool,
    /// Predicted start and finish, milliseconds since the Unix epoch (`None`: no slot).
    pub start_ms: Option<i64>,
    pub finish_ms: Option<i64>,
    /// It has a deadline and is predicted to finish after it.
    pub at_risk: bool,
}

/// What the observer planned in one period: every planned job's forecast (waiting jobs in
/// the order the rules take them, then the running ones), when a job after them would
/// start, and the learned service times. Stored beside the observations; the frontend
/// answers estimates from the newest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// When it was made, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The fleet it was made for.
    pub workers: u32,
    pub slots: u32,
    pub entries: Vec<PlanEntry>,
    /// Waiting jobs past the planned ones (the observer plans a bounded number).
    pub unplanned: u64,
    /// When a job placed after every planned one would start (`None`: no slot).
    pub tail_ms: Option<i64>,
    /// `[from, until)` in ms: slots left idle because the planned jobs may not start yet
    /// (`notBefore`, a retry); a job that may start then takes such a slot.
    #[serde(default)]
    pub idle_ms: Vec<(i64, i64)>,
    /// Learned service times, most recently seen repositories first.
    pub service: Vec<RepoService>,
    /// Over all repositories; `None` before any job ended.
    pub overall: Option<ServiceStats>,
    /// What a job is assumed to take before anything was learned, seconds.
    pub default_secs: f64,
}

impl Plan {
    /// When a waiting job that this plan did not place, with `key` and ready at `ready_ms`
    /// (not before `now_ms`), would start ([`earliest_start`]).
    fn start_of_new(&self, key: &OrderKey, ready_ms: i64, now_ms: i64) -> Option<i64> {
        let behind = self
            .entries
            .iter()
            .filter(|e| !e.running && e.key > *key)
            .filter_map(|e| e.start_ms)
            .map(|s| s as f64);
        let idle = self.idle_ms.iter().map(|&(f, u)| (f as f64, u as f64));
        let tail = self.tail_ms.map(|t| t as f64);
        earliest_start(behind, idle, tail, ready_ms as f64, now_ms as f64).map(|t| t as i64)
    }
}

/// When a waiting job that a plan did not place would start, ready at `ready` (not before
/// `now`): the earliest of the starts of the planned jobs it goes before (`behind`: it takes
/// the first such slot it is ready for; a slot due by now is one it takes now if it is ready
/// now), a slot the plan leaves idle (`idle`, `(from, until)`) while it is ready, and the
/// plan's `tail`. `None` when there is none of these (the plan has no slot).
pub fn earliest_start(
    behind: impl IntoIterator<Item = f64>,
    idle: impl IntoIterator<Item = (f64, f64)>,
    tail: Option<f64>,
    ready: f64,
    now: f64,
) -> Option<f64> {
    let behind = behind.into_iter().filter_map(|s| match s >= ready {
        true => Some(s),
        false => (ready <= now).then_some(ready),
    });
    let idle = idle
        .into_iter()
        .filter(|&(_, until)| until > ready)
        .map(|(from, _)| from.max(ready));
    behind.chain(idle).chain(tail).reduce(f64::min)
}

/// A timeline's `tail` pushed back by `unplanned` more waiting jobs, each of the planned
/// ones' mean expected time (`default_secs` when none was planned), sharing `slots` slots.
pub fn extend_tail(
    tail: f64,
    unplanned: u64,
    waiting: &[Waiting],
    slots: usize,
    default_secs: f64,
) -> f64 {
    let mean = match waiting.len() {
        0 => default_secs,
        n => waiting.iter().map(|w| w.secs).sum::<f64>() / n as f64,
    };
    tail + unplanned as f64 * mean / slots.max(1) as f64
}

/// A job's estimates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub start_ms: i64,
    pub finish_ms: i64,
    pub at_risk: bool,
}

impl Plan {
    /// The expected service time of `job`: its own `expectedDurationSecs`, else what its
    /// repository's jobs took, else all jobs, else the default.
    pub fn expected_secs(&self, job: &Job) -> f64 {
        if let Some(s) = job.schedule.expected_secs {
            return s;
        }
        let repo = job.spec.redacted_url();
        self.service
            .iter()
            .find(|r| r.repo == repo)
            .map(|r| r.stats.mean_secs)
            .or(self.overall.map(|s| s.mean_secs))
            .unwrap_or(self.default_secs)
    }

    /// The estimates of `job` at `now_ms`: from its entry when it was planned; for a
    /// waiting job planned after this plan was made, from its place in the order (it takes
    /// the start of the planned job it goes before); for a running one, its actual start.
    /// `None` for an ended job, or when no slot is planned.
    pub fn estimate(&self, job: &Job, now_ms: i64) -> Option<Estimate> {
        let expected_ms = (self.expected_secs(job) * 1000.0).round() as i64;
        let at_risk = |finish: i64| job.schedule.deadline.is_some_and(|d| finish > unix_ms(d));
        match job.status {
            JobStatus::Running => {
                let start = job.started_at.map(unix_ms)?;
                let finish = (start + expected_ms).max(now_ms);
                Some(Estimate {
                    start_ms: start,
                    finish_ms: finish,
                    at_risk: at_risk(finish),
                })
            }
            JobStatus::Queued => {
                let key = OrderKey::of(job);
                let ready = unix_ms(job.ready_at());
                let start = match self
                    .entries
                    .iter()
                    .find(|e| !e.running && e.key.id == key.id)
                {
                    Some(e) => e.start_ms?,
                    None => self.start_of_new(&key, ready.max(now_ms), now_ms)?,
                };
                let start = start.max(now_ms).max(ready);
                let finish = start + expected_ms;
                Some(Estimate {
                    start_ms: start,
                    finish_ms: finish,
                    at_risk: at_risk(finish),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ready: f64, secs: f64, deadline: Option<f64>) -> Waiting {
        Waiting {
            ready,
            secs,
            deadline,
        }
    }

    #[test]
    fn jobs_take_the_first_free_slot_in_order() {
        // Two slots: one free now, one at 5; jobs of 10, 2, 2 s.
        let jobs = [w(0.0, 10.0, None), w(0.0, 2.0, None), w(0.0, 2.0, None)];
        let (f, tail) = forecast(&[0.0, 5.0], &jobs);
        assert_eq!(
            f.iter().map(|f| (f.start, f.finish)).collect::<Vec<_>>(),
            vec![(0.0, 10.0), (5.0, 7.0), (7.0, 9.0)]
        );
        assert_eq!(tail, 9.0);
    }

    #[test]
    fn a_job_not_ready_leaves_the_slot_to_the_next() {
        // The first job may start at 4 only: the second takes the slot at 0.
        let jobs = [w(4.0, 1.0, None), w(0.0, 3.0, None)];
        let (f, _) = forecast(&[0.0], &jobs);
        assert_eq!((f[1].start, f[0].start), (0.0, 4.0));
        // Nobody ready: the slot waits for the earliest.
        let (f, tail) = forecast(&[0.0], &[w(2.0, 1.0, None)]);
        assert_eq!((f[0].start, tail), (2.0, 3.0));
    }

    #[test]
    fn with_no_slot_nothing_starts() {
        let (f, tail) = forecast(&[], &[w(0.0, 1.0, None)]);
        assert!(f[0].start.is_infinite() && tail.is_infinite());
    }

    #[test]
    fn a_fleet_keeps_its_busy_slots_and_adds_new_workers_after_startup() {
        let fleet = Fleet {
            now: 100.0,
            busy_ends: vec![103.0, 99.0],
            workers: 2,
            slots_per_worker: 2,
            startup_secs: 5.0,
        };
        assert_eq!(fleet.slots(2), vec![103.0, 100.0, 100.0, 100.0]);
        assert_eq!(
            fleet.slots(3),
            vec![103.0, 100.0, 100.0, 100.0, 105.0, 105.0]
        );
        // Down to one worker: the busy slots stay, no idle one is left.
        assert_eq!(fleet.slots(1), vec![103.0, 100.0]);
        assert_eq!(fleet.slots(0), vec![103.0, 100.0]);
    }

    fn fleet(workers: u32) -> Fleet {
        Fleet {
            now: 0.0,
            busy_ends: vec![],
            workers,
            slots_per_worker: 1,
            startup_secs: 3.0,
        }
    }

    #[test]
    fn the_fewest_workers_meet_every_deadline() {
        // Ten 10 s jobs due by 25 s: two waves of started workers (at 3 s) finish at 13
        // and 23, so five workers, not ten, are enough; four would finish the last at 33.
        let jobs: Vec<_> = (0..10).map(|_| w(0.0, 10.0, Some(25.0))).collect();
        let (n, hopeless) = fewest_workers(&fleet(0), &jobs, 0, 20, 0.0);
        assert_eq!((n, hopeless.len()), (5, 0));
        // Without deadlines the lower bound stands.
        let loose: Vec<_> = (0..10).map(|_| w(0.0, 10.0, None)).collect();
        assert_eq!(fewest_workers(&fleet(0), &loose, 1, 20, 0.0).0, 1);
    }

    #[test]
    fn deadlines_the_maximum_cannot_meet_do_not_buy_workers() {
        // One job due before it could finish on a new worker: hopeless at any size.
        let mut jobs = vec![w(0.0, 10.0, Some(5.0))];
        jobs.extend((0..4).map(|_| w(0.0, 1.0, None)));
        let (n, hopeless) = fewest_workers(&fleet(0), &jobs, 1, 50, 0.0);
        assert_eq!((n, hopeless), (1, vec![0]));
    }

    #[test]
    fn the_arrival_mix_follows_recent_submits() {
        let mut m = ArrivalMix::default();
        assert_eq!(m.share(), 0.0);
        m.record(true);
        m.record(false);
        assert_eq!(m.share(), 0.5);
        for _ in 0..500 {
            m.record(true);
        }
        assert!(m.share() > 0.99, "{}", m.share());
    }

    #[test]
    fn service_times_are_learned_per_repository() {
        let mut s = ServiceTimes::default();
        for secs in [1.0, 2.0, 3.0, 10.0] {
            s.record("https://h/a.git", secs);
        }
        s.record("https://h/b.git", 7.0);
        let a = s.of("https://h/a.git").unwrap();
        assert_eq!((a.mean_secs, a.p50_secs, a.p90_secs), (4.0, 2.0, 10.0));
        assert_eq!(s.overall().unwrap().samples, 5);
        assert_eq!(s.repos(1)[0].repo, "https://h/b.git");
        for i in 0..100 {
            s.record("https://h/a.git", i as f64);
        }
        assert_eq!(s.of("https://h/a.git").unwrap().samples, SAMPLES as u32);
    }

    #[test]
    fn the_order_key_sorts_as_the_stores_do() {
        let key = |priority, deadline_ms, fair_tag, created_ms| OrderKey {
            priority,
            deadline_ms,
            fair_tag,
            created_ms,
            id: JobId::new(),
        };
        let mut keys = [
            key(0, None, 1.0, 1),
            key(0, Some(50), 9.0, 9),
            key(1, None, 5.0, 5),
            key(0, Some(20), 9.0, 9),
            key(0, None, 0.5, 7),
        ];
        keys.sort();
        let seen: Vec<_> = keys
            .iter()
            .map(|k| (k.priority, k.deadline_ms, k.fair_tag))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, None, 5.0),
                (0, Some(20), 9.0),
                (0, Some(50), 9.0),
                (0, None, 0.5),
                (0, None, 1.0)
            ]
        );
    }
}
