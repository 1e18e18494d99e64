//! `jobq-observer`: the observer service for container images (`jobq observer` does the same),
//! `jobq-observer simulate`, the elasticity simulator, and `jobq-observer score`, which
//! scores real runs of the same trace (`scripts/bench-elasticity-real`) the same way.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use jobq_common::domain::Observation;
use jobq_common::settings::Settings;
use jobq_common::telemetry;
use jobq_observer::sim;

#[derive(Debug, Parser)]
#[command(
    name = "jobq-observer",
    version,
    about = "jobq observer: observations, scaling, lease reaper"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay the standard load trace under every policy in the discrete-event simulator
    /// and print a Markdown table per scale and dispatch.
    Simulate {
        #[command(flatten)]
        model: Model,
        /// Policies to compare (default: static-min, static-max, seed, lag, queueing).
        #[arg(long, value_delimiter = ',')]
        policies: Vec<String>,
        /// Write the trace's jobs to this file instead ("arrival_secs duration_secs" per
        /// line, in arrival order, and with `--deadlines` a third column: the deadline in
        /// seconds from the start, or `-`) and exit; the real bench replays them.
        #[arg(long)]
        jobs_out: Option<PathBuf>,
    },
    /// Score real runs of the trace like simulated ones and print the same table. Each run
    /// is POLICY=START_MS,OBSERVATIONS[,WAITS]: when the replay began (ms since the Unix
    /// epoch), the observations the observer stored (JSON, one per line) and the queue
    /// waits in seconds of the jobs that started within the trace (one per line). With
    /// `--deadlines` the third file holds the jobs' outcomes instead, one per line: the
    /// job's place in the trace, its start, its end and the start its submit answer
    /// estimated (ms since the Unix epoch, `-` when absent); the deadline table is printed.
    Score {
        #[command(flatten)]
        model: Model,
        #[arg(required = true)]
        runs: Vec<String>,
    },
}

/// The simulated model: a preset scale and what to change in it.
#[derive(Debug, clap::Args)]
struct Model {
    /// `small` (≤ 10 workers, as the real bench), `large` (≤ 1,000 workers, 1,000,000
    /// jobs/hour at the step) or `both`.
    #[arg(long, default_value = "both")]
    scale: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Target p95 queue wait, seconds.
    #[arg(long)]
    target_wait_secs: Option<f64>,
    /// Play the trace this many times faster (phases shorter; jobs and rates unchanged).
    #[arg(long)]
    compress: Option<f64>,
    /// Jobs per second at 1×.
    #[arg(long)]
    base_rate: Option<f64>,
    #[arg(long)]
    mean_service_secs: Option<f64>,
    #[arg(long)]
    slots_per_worker: Option<u32>,
    #[arg(long)]
    min_workers: Option<u32>,
    #[arg(long)]
    max_workers: Option<u32>,
    /// Seconds a started worker takes before it takes jobs.
    #[arg(long)]
    startup_secs: Option<f64>,
    #[arg(long)]
    stabilisation_secs: Option<f64>,
    /// How a queued job reaches a slot, one table per value: `any-free` (standalone: any
    /// free slot takes the oldest job), `partition-bound` (Kafka mode before issue 10: only
    /// the owner of the job's partition takes it), `store-claim` (Kafka mode now: the owner,
    /// or any free worker once the job has waited `--claim-waiting-after-ms`).
    #[arg(long, value_delimiter = ',', default_value = "any-free")]
    dispatch: Vec<String>,
    /// Partitions of the `jobs` topic at the start (`kafka.partitions`).
    #[arg(long)]
    partitions: Option<u32>,
    /// Do not grow the topic as the observer does (`observer.grow_partitions = false`).
    #[arg(long)]
    no_grow_partitions: bool,
    /// Consumer-group heartbeat interval, seconds (`group.consumer.heartbeat.interval.ms`).
    #[arg(long)]
    heartbeat_secs: Option<f64>,
    /// How often the producer learns the topic's partition count, seconds (librdkafka's
    /// `topic.metadata.refresh.interval.ms`, 300 s by default).
    #[arg(long)]
    producer_refresh_secs: Option<f64>,
    /// `worker.claim_waiting_after_ms`.
    #[arg(long)]
    claim_waiting_after_ms: Option<f64>,
    /// `worker.claim_waiting_budget_per_sec` (B): an idle worker's back-off ceiling is
    /// clamp(members / B, 1 s, 30 s).
    #[arg(long)]
    claim_waiting_budget_per_sec: Option<f64>,
    /// Each store look-up interval is multiplied by a uniform factor in [1 − j, 1 + j].
    #[arg(long)]
    claim_jitter: Option<f64>,
    /// Seed of the jobs' keys (ids), hence their partitions, apart from the trace's `--seed`.
    #[arg(long)]
    key_seed: Option<u64>,
    /// Model the lag's auto-commit delay: the consumer commits stored offsets every this
    /// many seconds (jobq: 1); 0 (default) counts an offset as committed once stored.
    #[arg(long)]
    commit_secs: Option<f64>,
    /// Give the trace's jobs deadlines (a third tight, a third loose, a third none; see
    /// docs/deadlines.md) and print the deadline table: feasible deadlines met, worker-seconds
    /// against static-max and the oracle, prediction error (default policies: static-max,
    /// seed, lag, queueing, deadline).
    #[arg(long)]
    deadlines: bool,
}

impl Model {
    fn configs(&self) -> anyhow::Result<Vec<(&'static str, sim::SimConfig)>> {
        let scales: Vec<(&str, sim::SimConfig)> = match self.scale.as_str() {
            "small" => vec![("small", sim::SimConfig::small())],
            "large" => vec![("large", sim::SimConfig::large())],
            "both" => vec![
                ("small", sim::SimConfig::small()),
                ("large", sim::SimConfig::large()),
            ],
            other => anyhow::bail!("unknown scale {other:?} (small, large or both)"),
        };
        let dispatches = self
            .dispatch
            .iter()
            .map(|d| {
                sim::Dispatch::parse(d).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown dispatch {d:?} (any-free, partition-bound or store-claim)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut out = Vec::new();
        for (label, base) in scales {
            for dispatch in &dispatches {
                let mut c = base.clone();
                c.seed = self.seed;
                if let Some(f) = self.compress {
                    c = c.compressed(f);
                }
                let set = |field: &mut f64, v: Option<f64>| *field = v.unwrap_or(*field);
                set(&mut c.target_wait_secs, self.target_wait_secs);
                set(&mut c.base_rate, self.base_rate);
                set(&mut c.mean_service_secs, self.mean_service_secs);
                set(&mut c.startup_secs, self.startup_secs);
                set(&mut c.stabilisation_secs, self.stabilisation_secs);
                set(&mut c.heartbeat_secs, self.heartbeat_secs);
                set(&mut c.producer_refresh_secs, self.producer_refresh_secs);
                set(
                    &mut c.claim_after_secs,
                    self.claim_waiting_after_ms.map(|ms| ms / 1000.0),
                );
                set(
                    &mut c.claim_budget_per_sec,
                    self.claim_waiting_budget_per_sec,
                );
                set(&mut c.claim_jitter, self.claim_jitter);
                set(&mut c.commit_secs, self.commit_secs);
                c.slots_per_worker = self.slots_per_worker.unwrap_or(c.slots_per_worker);
                c.min_workers = self.min_workers.unwrap_or(c.min_workers);
                c.max_workers = self.max_workers.unwrap_or(c.max_workers);
                c.partitions = self.partitions.unwrap_or(c.partitions);
                c.grow_partitions = !self.no_grow_partitions;
                c.dispatch = *dispatch;
                c.key_seed = self.key_seed;
                if self.deadlines {
                    c.deadlines = Some(sim::DeadlineMix::standard());
                }
                out.push((label, c));
            }
        }
        Ok(out)
    }

    /// The one configuration a single-scale command needs.
    fn config(&self) -> anyhow::Result<sim::SimConfig> {
        let mut configs = self.configs()?;
        anyhow::ensure!(
            configs.len() == 1,
            "choose one --scale (small or large) and one --dispatch"
        );
        Ok(configs.remove(0).1)
    }
}

fn simulate(model: &Model, policies: &[String], jobs_out: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = jobs_out {
        let config = model.config()?;
        let mut text = String::new();
        let jobs = sim::jobs(&config);
        let deadlines = match &config.deadlines {
            Some(mix) => sim::deadlines::deadlines(&config, mix, &jobs),
            None => Vec::new(),
        };
        for (i, (at, secs)) in jobs.into_iter().enumerate() {
            match deadlines.get(i) {
                None => text.push_str(&format!("{at:.3} {secs:.3}\n")),
                Some(Some(d)) => text.push_str(&format!("{at:.3} {secs:.3} {d:.3}\n")),
                Some(None) => text.push_str(&format!("{at:.3} {secs:.3} -\n")),
            }
        }
        std::fs::write(path, text)?;
        return Ok(());
    }
    let names: Vec<String> = if !policies.is_empty() {
        policies.to_vec()
    } else if model.deadlines {
        sim::deadlines::POLICIES
            .iter()
            .map(|p| p.to_string())
            .collect()
    } else {
        sim::POLICIES.iter().map(|p| p.to_string()).collect()
    };
    for (label, config) in model.configs()? {
        if model.deadlines {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let (results, oracle) = sim::deadlines::bench(&config, &names)
                .ok_or_else(|| anyhow::anyhow!("unknown policy in {names:?}"))?;
            println!("### {label} scale, {} dispatch\n", config.dispatch.name());
            println!("{}", sim::deadlines::table(&config, &results, &oracle));
            continue;
        }
        let mut results = Vec::new();
        for name in &names {
            results.push(
                sim::run(&config, name)
                    .ok_or_else(|| anyhow::anyhow!("unknown policy {name:?}"))?,
            );
        }
        match model.dispatch.len() {
            1 => println!("### {label} scale\n"),
            _ => println!("### {label} scale, {} dispatch\n", config.dispatch.name()),
        }
        println!("{}", sim::table(&config, &results));
    }
    Ok(())
}

/// One real job's times: its start, end and estimated start (ms since the Unix epoch).
type RealJob = (Option<i64>, Option<i64>, Option<i64>);

/// Reads the outcomes file of a real deadline run (see `Score`).
fn real_jobs(text: &str, n: usize) -> anyhow::Result<Vec<RealJob>> {
    let mut jobs = vec![(None, None, None); n];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        anyhow::ensure!(
            fields.len() == 4,
            "{line:?} is not INDEX START END ESTIMATE"
        );
        let index: usize = fields[0].parse().context("index")?;
        anyhow::ensure!(index < n, "job {index} is not in the trace of {n} jobs");
        let time = |f: &str| -> anyhow::Result<Option<i64>> {
            Ok(match f {
                "-" | "" => None,
                f => Some(f.parse::<f64>().context("time")?.round() as i64),
            })
        };
        jobs[index] = (time(fields[1])?, time(fields[2])?, time(fields[3])?);
    }
    Ok(jobs)
}

/// The deadline outcomes and prediction error of a real run that began at `start_ms`.
fn score_deadlines(
    config: &sim::SimConfig,
    result: &mut sim::SimResult,
    start_ms: i64,
    jobs: &[RealJob],
) {
    let trace = sim::jobs(config);
    let mix = config.deadlines.unwrap_or_else(sim::DeadlineMix::standard);
    let due = sim::deadlines::deadlines(config, &mix, &trace);
    let mut errors = Vec::new();
    result.deadline_outcomes = due
        .iter()
        .zip(jobs)
        .map(|(d, &(started, finished, estimated))| {
            if let (Some(s), Some(e)) = (started, estimated) {
                errors.push((e - s).abs() as f64 / 1000.0);
            }
            match d {
                Some(d) if *d <= config.duration() => {
                    let by = start_ms + (d * 1000.0).round() as i64;
                    if finished.is_some_and(|f| f <= by) {
                        sim::deadlines::MET
                    } else {
                        sim::deadlines::MISSED
                    }
                }
                _ => sim::deadlines::UNSCORED,
            }
        })
        .collect();
    result.prediction = sim::Prediction::of(&mut errors);
}

fn score(model: &Model, runs: &[String]) -> anyhow::Result<()> {
    let config = model.config()?;
    let n = sim::jobs(&config).len();
    let mut results = Vec::new();
    for run in runs {
        let bad = || anyhow::anyhow!("{run:?} is not POLICY=START_MS,OBSERVATIONS[,WAITS]");
        let (policy, rest) = run.split_once('=').ok_or_else(bad)?;
        let mut parts = rest.split(',');
        let start_ms: i64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let observations = parts.next().ok_or_else(bad)?;
        let waits = parts.next();
        let read = |p: &str| std::fs::read_to_string(p).with_context(|| format!("cannot read {p}"));
        let observations = read(observations)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str::<Observation>)
            .collect::<Result<Vec<_>, _>>()
            .context("observations")?;
        if model.deadlines {
            let file = waits.ok_or_else(bad)?;
            let jobs = real_jobs(&read(file)?, n).with_context(|| format!("in {file}"))?;
            let mut result = sim::score(&config, policy, &observations, start_ms, &[]);
            result.jobs = jobs.iter().filter(|j| j.0.is_some()).count() as u64;
            score_deadlines(&config, &mut result, start_ms, &jobs);
            results.push(result);
            continue;
        }
        let waits = match waits {
            Some(w) => read(w)?
                .split_whitespace()
                .map(str::parse::<f64>)
                .collect::<Result<Vec<_>, _>>()
                .context("waits")?,
            None => Vec::new(),
        };
        results.push(sim::score(&config, policy, &observations, start_ms, &waits));
    }
    if model.deadlines {
        let mut oracle = sim::oracle(&config);
        oracle.every_job_waits_worker_seconds =
            Some(sim::deadlines::oracle_with(&config, true).worker_seconds);
        println!("{}", sim::deadlines::table(&config, &results, &oracle));
        return Ok(());
    }
    println!("{}", sim::table(&config, &results));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The observer counts the worker group's members in a child of its own executable.
    jobq_common::kafka::group_members_if_requested();
    let args = Args::parse();
    match args.command {
        Some(Command::Simulate {
            model,
            policies,
            jobs_out,
        }) => return simulate(&model, &policies, jobs_out.as_deref()),
        Some(Command::Score { model, runs }) => return score(&model, &runs),
        None => {}
    }
    let settings = Settings::load()?;
    telemetry::init(settings.log_format);
    jobq_observer::run(settings, jobq_common::shutdown::on_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_deadline_run_is_scored_from_the_jobs_times() {
        let mut config = sim::SimConfig::small().compressed(30.0);
        config.deadlines = Some(sim::DeadlineMix::standard());
        let trace = sim::jobs(&config);
        let due = sim::deadlines::deadlines(&config, &config.deadlines.unwrap(), &trace);
        let start_ms = 1_000_000;
        let ms = |s: f64| start_ms + (s * 1000.0).round() as i64;
        // Every job starts on arrival and runs its duration, estimated 0.5 s late; job 0
        // and the first job with a deadline never started.
        let first = due.iter().position(Option::is_some).unwrap();
        let mut text = String::new();
        for (i, (at, secs)) in trace.iter().enumerate() {
            if i == 0 || i == first {
                text.push_str(&format!("{i} - - {}\n", ms(at + 0.5)));
            } else {
                text.push_str(&format!(
                    "{i} {} {} {}\n",
                    ms(*at),
                    ms(at + secs),
                    ms(at + 0.5)
                ));
            }
        }
        let jobs = real_jobs(&text, trace.len()).unwrap();
        let mut result = sim::score(&config, "x", &[], start_ms, &[]);
        score_deadlines(&config, &mut result, start_ms, &jobs);
        let scored = due
            .iter()
            .filter(|d| d.is_some_and(|d| d <= config.duration()))
            .count();
        let missed = result
            .deadline_outcomes
            .iter()
            .filter(|o| **o == sim::deadlines::MISSED)
            .count();
        let met = result
            .deadline_outcomes
            .iter()
            .filter(|o| **o == sim::deadlines::MET)
            .count();
        assert_eq!((met + missed, missed), (scored, 1));
        let p = result.prediction.unwrap();
        assert_eq!(
            (p.samples, p.p50_secs, p.p90_secs),
            (trace.len() - 2, 0.5, 0.5)
        );
        assert!(real_jobs("99999 - - -", trace.len()).is_err());
        assert!(real_jobs("1 2 3", trace.len()).is_err());
    }
}
