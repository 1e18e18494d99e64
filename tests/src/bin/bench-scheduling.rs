//! The scheduling bench (`scripts/bench-scheduling`): the scheduling rules on the real stores
//! — the SQLite store of `jobq standalone` and, when `JOBQ_MONGO__URI` names one, the
//! MongoDB-wire server — measured two ways, each beside its peer in the same run:
//!
//! 1. **Fair share.** User A submits `--backlog` jobs, `--slots` of them start, then user B
//!    submits `--late`. Every job runs one second of a virtual clock, and each freed slot
//!    claims the next job through the store's own `claim_next`. Printed for fair share on
//!    and off (oldest first): the positions of B's starts among the starts after B's submit,
//!    the A jobs started before B's last, and B's waits.
//! 2. **Cost.** Microseconds per claim (median, p99) over `--claims` jobs of ten users: the
//!    claim by id that a job's own message made before (one conditional write), the next
//!    waiting job by the rules without running limits (one conditional write, sorted), with
//!    limits (two reads and a write), and a submit's fair-share tag (two reads); 20 jobs
//!    run at once while claims are timed.
//!
//! Options: --backlog N (200), --late N (10), --slots N (4), --claims N (1000),
//! --store sqlite|mongo|both (both when JOBQ_MONGO__URI is set). Its MongoDB database is its
//! own and dropped at the end.

use std::time::{Duration, Instant};

use anyhow::Context;
use jobq_common::domain::{Job, JobSpec, Outcome, Schedule};
use jobq_common::embedded::SqliteStore;
use jobq_common::lifecycle;
use jobq_common::mongo::MongoJobStore;
use jobq_common::ports::{JobCatalog, JobLeases, JobRecords};
use jobq_common::settings::MongoSettings;
use jobq_common::store::{Held, Pick};
use time::OffsetDateTime;

const LEASE: Duration = Duration::from_secs(3600);

/// Jobs running at once while claims are timed (a fleet's busy slots).
const RUNNING: usize = 20;

struct Options {
    backlog: usize,
    late: usize,
    slots: usize,
    claims: usize,
    stores: Vec<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        backlog: 200,
        late: 10,
        slots: 4,
        claims: 1000,
        stores: match std::env::var("JOBQ_MONGO__URI") {
            Ok(_) => vec!["sqlite".into(), "mongo".into()],
            Err(_) => vec!["sqlite".into()],
        },
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backlog" => o.backlog = value()?.parse()?,
            "--late" => o.late = value()?.parse()?,
            "--slots" => o.slots = value()?.parse()?,
            "--claims" => o.claims = value()?.parse()?,
            "--store" => {
                o.stores = match value()?.as_str() {
                    "both" => vec!["sqlite".into(), "mongo".into()],
                    one @ ("sqlite" | "mongo") => vec![one.into()],
                    other => anyhow::bail!("--store {other}: sqlite, mongo or both"),
                }
            }
            "-h" | "--help" => {
                println!("see the comment at the top of tests/src/bin/bench-scheduling.rs");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

/// A fresh store of `kind`, and what to do to drop it.
async fn fresh(kind: &str) -> anyhow::Result<Box<dyn Bench>> {
    match kind {
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("jobq-bench-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir)?;
            let store = SqliteStore::open(&dir.join("jobq.sqlite3"))?;
            Ok(Box::new(Sqlite { store, dir }))
        }
        _ => {
            let uri = std::env::var("JOBQ_MONGO__URI").context("JOBQ_MONGO__URI")?;
            let settings = MongoSettings {
                uri: uri.into(),
                database: format!("jobq_bench_{}", uuid::Uuid::new_v4().simple()),
            };
            Ok(Box::new(Mongo(MongoJobStore::connect(&settings).await?)))
        }
    }
}

#[async_trait::async_trait]
trait Bench: Send + Sync {
    fn store(&self) -> &dyn JobRecordsAll;
    async fn drop_store(&self);
}

/// Every role of one store, as the bench uses them.
trait JobRecordsAll: JobRecords + JobCatalog + JobLeases {}
impl<T: JobRecords + JobCatalog + JobLeases> JobRecordsAll for T {}

struct Sqlite {
    store: SqliteStore,
    dir: std::path::PathBuf,
}

#[async_trait::async_trait]
impl Bench for Sqlite {
    fn store(&self) -> &dyn JobRecordsAll {
        &self.store
    }
    async fn drop_store(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Mongo(MongoJobStore);

#[async_trait::async_trait]
impl Bench for Mongo {
    fn store(&self) -> &dyn JobRecordsAll {
        &self.0
    }
    async fn drop_store(&self) {
        let _ = self.0.drop_database().await;
    }
}

fn spec() -> JobSpec {
    JobSpec {
        url: "https://example.com/job.git".into(),
        args: String::new(),
        config: String::new(),
    }
}

async fn submit(
    store: &dyn JobRecordsAll,
    owner: &str,
    fair: bool,
    max_running: Option<u32>,
    at: OffsetDateTime,
) -> anyhow::Result<Job> {
    let mut job = Job::new(owner, spec(), at);
    job.schedule = Schedule {
        fair_tag: match fair {
            true => store.fair_tag(owner, 1.0, at).await?,
            false => 0.0,
        },
        max_running,
        ..Schedule::default()
    };
    store.insert(&job).await?;
    Ok(job)
}

fn finished() -> Outcome {
    Outcome {
        status: jobq_common::domain::JobStatus::Finished,
        exit_code: Some(0),
        elapsed_ms: 1000,
        output_files: Vec::new(),
        failure: None,
    }
}

async fn complete(store: &dyn JobRecordsAll, job: &Job, at: OffsetDateTime) -> anyhow::Result<()> {
    let held = Held {
        id: &job.id,
        attempt: job.attempt,
        worker: "bench",
        started_at: job.started_at,
        retry: None,
    };
    store.complete(&held, &finished(), at).await?;
    Ok(())
}

/// What one fair-share run measured.
struct FairRun {
    /// For each of B's jobs, how many of A's started after B's submit and before it.
    positions: Vec<usize>,
    /// B's waits, virtual seconds.
    waits: Vec<f64>,
}

async fn fair_share(kind: &str, o: &Options, fair: bool) -> anyhow::Result<FairRun> {
    let bench = fresh(kind).await?;
    let store = bench.store();
    let t0 = OffsetDateTime::now_utc();
    for _ in 0..o.backlog {
        submit(store, "a", fair, None, t0).await?;
    }
    let pick = Pick::default();
    // (ends at, job) of every running job.
    let mut running = Vec::new();
    for _ in 0..o.slots {
        let job = store
            .claim_next("bench", LEASE, &pick, t0)
            .await?
            .context("a job")?;
        running.push((t0 + Duration::from_secs(1), job));
    }
    let late_at = t0 + Duration::from_millis(1);
    for _ in 0..o.late {
        submit(store, "b", fair, None, late_at).await?;
    }
    let (mut a_since, mut positions, mut waits) = (0, Vec::new(), Vec::new());
    while positions.len() < o.late {
        running.sort_by_key(|(end, _)| *end);
        let (now, done) = running.remove(0);
        complete(store, &done, now).await?;
        let Some(job) = store.claim_next("bench", LEASE, &pick, now).await? else {
            anyhow::bail!("the queue ran dry before B's jobs started");
        };
        match job.owner.as_str() {
            "b" => {
                positions.push(a_since);
                waits.push((now - late_at).as_seconds_f64());
            }
            _ => a_since += 1,
        }
        running.push((now + Duration::from_secs(1), job));
    }
    bench.drop_store().await;
    Ok(FairRun { positions, waits })
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Median and p99 of `samples`, microseconds.
fn micros(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (quantile(&samples, 0.5), quantile(&samples, 0.99))
}

async fn timed<F, Fut>(n: usize, mut op: F) -> anyhow::Result<Vec<f64>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let at = Instant::now();
        op(i).await?;
        took.push(at.elapsed().as_secs_f64() * 1e6);
    }
    Ok(took)
}

/// Per-claim costs on a store of `kind`: (name, median µs, p99 µs, store operations).
async fn costs(
    kind: &str,
    o: &Options,
) -> anyhow::Result<Vec<(&'static str, f64, f64, &'static str)>> {
    let mut rows = Vec::new();
    let users: Vec<String> = (0..10).map(|u| format!("user{u}")).collect();
    let now = OffsetDateTime::now_utc();

    // The claim by id of a job's own message (how a worker claimed before the rules).
    let bench = fresh(kind).await?;
    let store = bench.store();
    let mut jobs = Vec::new();
    for i in 0..o.claims {
        jobs.push(submit(store, &users[i % users.len()], false, None, now).await?);
    }
    let by_id = timed(o.claims, |i| {
        let change = lifecycle::claim(&jobs[i].id, 1, None, "bench", LEASE, now);
        async move {
            store.apply(&change).await?.context("claimed")?;
            Ok(())
        }
    })
    .await?;
    let (p50, p99) = micros(by_id);
    rows.push((
        "claim by id, as a job's own message did",
        p50,
        p99,
        "1 write",
    ));
    bench.drop_store().await;

    for (name, quotas, limit, ops) in [
        (
            "next by the rules, no running limits",
            false,
            None,
            "1 write",
        ),
        (
            "next by the rules, limits on (none set on the jobs)",
            true,
            None,
            "1 read + 1 read + 1 write",
        ),
        (
            "next by the rules, every user limited to 5",
            true,
            Some(5),
            "1 read + 1 read + 1 write",
        ),
    ] {
        let bench = fresh(kind).await?;
        let store = bench.store();
        let submits = timed(o.claims, |i| {
            let user = &users[i % users.len()];
            async move {
                submit(store, user, true, limit, now).await?;
                Ok(())
            }
        })
        .await?;
        let pick = Pick {
            created_before: None,
            quotas,
        };
        // A fleet of RUNNING slots: the oldest running job ends (untimed) before each claim
        // once they are all busy, so the slots read stay what a fleet holds.
        let mut took = Vec::with_capacity(o.claims);
        let mut running = std::collections::VecDeque::new();
        for _ in 0..o.claims {
            if running.len() >= RUNNING {
                let done: Job = running.pop_front().expect("running");
                complete(store, &done, now).await?;
            }
            let at = Instant::now();
            let job = store
                .claim_next("bench", LEASE, &pick, now)
                .await?
                .context("claimed")?;
            took.push(at.elapsed().as_secs_f64() * 1e6);
            running.push_back(job);
        }
        let claims = took;
        let (p50, p99) = micros(claims);
        rows.push((name, p50, p99, ops));
        if !quotas {
            let (p50, p99) = micros(submits);
            rows.push((
                "a submit's fair-share tag and insert",
                p50,
                p99,
                "2 reads + 1 insert",
            ));
        }
        bench.drop_store().await;
    }
    Ok(rows)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    println!(
        "# jobq scheduling bench — {} — load {}\n",
        OffsetDateTime::now_utc().date(),
        load()
    );
    println!(
        "## Fair share: A submits {}, {} slots start A's first, then B submits {} (jobs of 1 s, virtual clock)\n",
        o.backlog, o.slots, o.late
    );
    println!(
        "| store | rule | A started before B's last | B's positions (A's starts before each) | B's wait p50 / max |"
    );
    println!("|---|---|---:|---|---:|");
    for kind in &o.stores {
        for fair in [true, false] {
            let run = fair_share(kind, &o, fair).await?;
            let mut waits = run.waits.clone();
            waits.sort_by(f64::total_cmp);
            println!(
                "| {kind} | {} | {} | {:?} | {:.0} s / {:.0} s |",
                if fair { "fair share" } else { "oldest first" },
                run.positions.last().copied().unwrap_or(0),
                run.positions,
                quantile(&waits, 0.5),
                quantile(&waits, 1.0),
            );
        }
    }
    println!(
        "\n## Cost per claim over {} jobs of 10 users (µs)\n",
        o.claims
    );
    println!("| store | operation | median | p99 | store operations |");
    println!("|---|---|---:|---:|---|");
    for kind in &o.stores {
        for (name, p50, p99, ops) in costs(kind, &o).await? {
            println!("| {kind} | {name} | {p50:.0} | {p99:.0} | {ops} |");
        }
    }
    println!("\nload after: {}", load());
    Ok(())
}
