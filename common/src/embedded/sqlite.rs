//! The job and observation store on one SQLite file, for `jobq standalone`. The store is
//! also the dispatch queue there: a free in-process worker claims the oldest queued job
//! (`claim_next` with no threshold, woken by the in-process bus).
//! One connection behind a mutex serialises every statement. It translates each
//! [`crate::lifecycle::Change`] into one conditional `UPDATE … WHERE <guard> RETURNING`; the
//! rules themselves live in [`crate::lifecycle`], as for the MongoDB adapter.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::domain::{FailureReason, Job, JobId, JobSpec, JobStatus, Observation, Schedule};
use crate::error::{ErrorKind, PortError, PortResult};
use crate::lifecycle::{Change, Guard, LeaseEffect, SlotEffect, Stamp};
use crate::plan::Plan;
use crate::ports::{JobPage, JobRecords, ObservationStore, Page};
use crate::store::OwnerCount;
use rusqlite::types::Value;
use time::OffsetDateTime;

mod idempotency;

const COLUMNS: &str = "id, owner, url, args, config, status, attempt, lease_owner, lease_expires_ms, \
    created_ms, started_ms, finished_ms, exit_code, elapsed_ms, output_files, failure, attempts, \
    priority, not_before_ms, retries, expires_ms, max_running, fair_tag, retry_at_ms, quota_slot, \
    deadline_ms, expected_secs, deadline_at_risk";

/// [`COLUMNS`] without the args, config and attempt history (`JobRecords::ordered`).
fn planning_columns() -> String {
    COLUMNS
        .replace("args, config,", "'' AS args, '' AS config,")
        .replace("attempts,", "'[]' AS attempts,")
}

/// The scheduling order of waiting jobs (`JobRecords::first`).
const SCHEDULING_ORDER: &str = "priority DESC, deadline_ms, fair_tag, created_ms, id";

/// The deadline of a job without one: sorts after every real one.
const NEVER: i64 = 253_402_300_799_999;

/// The scheduling columns a file made before them lacks, with their definitions.
const SCHEDULING_COLUMNS: [(&str, &str); 13] = [
    ("priority", "INTEGER NOT NULL DEFAULT 0"),
    ("not_before_ms", "INTEGER"),
    ("retries", "INTEGER NOT NULL DEFAULT 0"),
    ("expires_ms", "INTEGER"),
    ("max_running", "INTEGER"),
    ("fair_tag", "REAL NOT NULL DEFAULT 0"),
    ("retry_at_ms", "INTEGER"),
    // Until when the job is held back (`not_before`, the next retry; 0: not at all): what
    // claims compare.
    ("ready_ms", "INTEGER"),
    ("quota_slot", "INTEGER"),
    // `owner/slot` while the job holds a slot of its owner's running limit; unique.
    ("quota_key", "TEXT"),
    // The deadline, or NEVER without one (so the order's index sorts it last).
    ("deadline_ms", "INTEGER NOT NULL DEFAULT 253402300799999"),
    ("expected_secs", "REAL"),
    ("deadline_at_risk", "INTEGER NOT NULL DEFAULT 0"),
];

use crate::domain::{from_unix_ms as from_ms, unix_ms as to_ms};

fn db_error(what: &str, e: rusqlite::Error) -> PortError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return PortError::with_source(ErrorKind::AlreadyExists, what, e);
    }
    PortError::with_source(ErrorKind::Unavailable, what, e)
}

fn row_to_job(row: &Row<'_>) -> rusqlite::Result<Job> {
    let text = |i: usize| -> rusqlite::Result<String> { row.get(i) };
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let status: JobStatus = text(5)?.parse().map_err(|e: String| bad(5, e))?;
    let files: String = text(14)?;
    let failure: Option<String> = row.get(15)?;
    let attempts: Option<String> = row.get(16)?;
    Ok(Job {
        id: text(0)?
            .parse()
            .map_err(|e: crate::domain::InvalidJobId| bad(0, e.to_string()))?,
        owner: text(1)?,
        spec: JobSpec {
            url: text(2)?,
            args: text(3)?,
            config: text(4)?,
        },
        status,
        attempt: row.get::<_, i64>(6)?.max(0) as u32,
        lease_owner: row.get(7)?,
        lease_expires_at: row.get::<_, Option<i64>>(8)?.map(from_ms),
        created_at: from_ms(row.get(9)?),
        started_at: row.get::<_, Option<i64>>(10)?.map(from_ms),
        finished_at: row.get::<_, Option<i64>>(11)?.map(from_ms),
        exit_code: row.get(12)?,
        elapsed_ms: row.get::<_, Option<i64>>(13)?.map(|v| v.max(0) as u64),
        output_files: serde_json::from_str(&files).map_err(|e| bad(14, e.to_string()))?,
        failure: failure
            .map(|f| serde_json::from_str::<FailureReason>(&f))
            .transpose()
            .map_err(|e| bad(15, e.to_string()))?,
        attempts: attempts
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(|e| bad(16, e.to_string()))?
            .unwrap_or_default(),
        schedule: Schedule {
            priority: row.get(17)?,
            not_before: row.get::<_, Option<i64>>(18)?.map(from_ms),
            retries: row.get::<_, i64>(19)?.clamp(0, u32::MAX as i64) as u32,
            expires_at: row.get::<_, Option<i64>>(20)?.map(from_ms),
            max_running: row
                .get::<_, Option<i64>>(21)?
                .map(|v| v.clamp(0, u32::MAX as i64) as u32),
            fair_tag: row.get(22)?,
            deadline: row
                .get::<_, i64>(25)
                .map(|ms| (ms != NEVER).then(|| from_ms(ms)))?,
            expected_secs: row.get(26)?,
        },
        retry_at: row.get::<_, Option<i64>>(23)?.map(from_ms),
        quota_slot: row
            .get::<_, Option<i64>>(24)?
            .map(|v| v.clamp(0, u32::MAX as i64) as u32),
        deadline_at_risk: row.get(27)?,
    })
}

/// The unique key of `owner`'s running slot `slot`.
fn quota_key(owner: &str, slot: u32) -> String {
    format!("{owner}/{slot}")
}

/// The job store ([`JobRecords`], so every role) and [`ObservationStore`] on a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Up to `limit` jobs that meet `guard`, `order` (an `ORDER BY` clause, or empty) applied,
    /// reading `columns` ([`COLUMNS`] or a variant in its order).
    async fn jobs_where(
        &self,
        columns: &str,
        guard: &Guard,
        order: &str,
        limit: u64,
        what: &'static str,
    ) -> PortResult<Vec<Job>> {
        let mut args = Vec::new();
        let condition = condition(guard, &mut args);
        args.push((limit.min(i64::MAX as u64) as i64).into());
        let sql = format!(
            "SELECT {columns} FROM jobs WHERE {condition} {order} LIMIT ?{}",
            args.len()
        );
        self.with(
            move |c| {
                let mut stmt = c.prepare(&sql)?;
                stmt.query_map(rusqlite::params_from_iter(args), row_to_job)?
                    .collect()
            },
            what,
        )
        .await
    }

    /// Opens (creating if needed) the database file and its schema.
    pub fn open(path: &Path) -> PortResult<Self> {
        let conn = Connection::open(path)
            .map_err(|e| db_error(&format!("cannot open {}", path.display()), e))?;
        Self::init(conn)
    }

    /// A store in memory (tests).
    pub fn in_memory() -> PortResult<Self> {
        Self::init(Connection::open_in_memory().map_err(|e| db_error("open", e))?)
    }

    fn init(conn: Connection) -> PortResult<Self> {
        // WAL with synchronous=NORMAL survives a killed process (not a power cut) and lets
        // readers run beside the writer.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS jobs (
                 id TEXT PRIMARY KEY,
                 owner TEXT NOT NULL,
                 url TEXT NOT NULL,
                 args TEXT NOT NULL,
                 config TEXT NOT NULL,
                 status TEXT NOT NULL,
                 attempt INTEGER NOT NULL,
                 lease_owner TEXT,
                 lease_expires_ms INTEGER,
                 created_ms INTEGER NOT NULL,
                 started_ms INTEGER,
                 finished_ms INTEGER,
                 exit_code INTEGER,
                 elapsed_ms INTEGER,
                 output_files TEXT NOT NULL,
                 failure TEXT,
                 attempts TEXT NOT NULL DEFAULT '[]'
             );
             CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_ms DESC);
             CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, created_ms);
             CREATE TABLE IF NOT EXISTS observations (timestamp INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS observations_time ON observations (timestamp DESC);
             CREATE TABLE IF NOT EXISTS plans (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);",
        )
        .map_err(|e| db_error("create schema", e))?;
        migrate(&conn).map_err(|e| db_error("migrate schema", e))?;
        idempotency::create_schema(&conn).map_err(|e| db_error("create schema", e))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
        what: &'static str,
    ) -> PortResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| PortError::internal("sqlite connection poisoned"))?;
            f(&mut guard).map_err(|e| db_error(what, e))
        })
        .await
        .map_err(|e| PortError::with_source(ErrorKind::Internal, "sqlite task failed", e))?
    }

    /// Number of queued jobs (the standalone queue depth).
    pub async fn queued(&self) -> PortResult<u64> {
        let none = Page {
            offset: 0,
            limit: 0,
        };
        Ok(self
            .page_jobs(None, Some(JobStatus::Queued), none)
            .await?
            .total)
    }
}

/// Brings a file made by an older version up to the current schema: the attempt history
/// column (its jobs read as having none) and the scheduling columns (its jobs have the
/// defaults: priority 0, no limits, ready since they were created); then the indexes over
/// them.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has = |column: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('jobs') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )
    };
    if !has("attempts")? {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]'")?;
    }
    for (column, definition) in SCHEDULING_COLUMNS {
        if !has(column)? {
            conn.execute_batch(&format!(
                "ALTER TABLE jobs ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    conn.execute_batch(
        "UPDATE jobs SET ready_ms = 0 WHERE ready_ms IS NULL;
         DROP INDEX IF EXISTS jobs_schedule;
         CREATE INDEX IF NOT EXISTS jobs_order ON jobs (status, priority DESC, deadline_ms, fair_tag, created_ms);
         CREATE INDEX IF NOT EXISTS jobs_owner_active ON jobs (owner, status, fair_tag);
         CREATE INDEX IF NOT EXISTS jobs_fair ON jobs (status, fair_tag);
         CREATE UNIQUE INDEX IF NOT EXISTS jobs_quota ON jobs (quota_key);",
    )
}

/// A guard as an SQL condition, its values appended to `args` (numbered from `?1` on).
fn condition(guard: &Guard, args: &mut Vec<Value>) -> String {
    let push = |args: &mut Vec<Value>, column: &str, op: &str, value: Value| {
        args.push(value);
        format!("{column} {op} ?{}", args.len())
    };
    let mut terms = Vec::new();
    if let Some(id) = &guard.id {
        terms.push(push(args, "id", "=", id.to_string().into()));
    }
    terms.push(push(
        args,
        "status",
        "=",
        guard.state.as_str().to_string().into(),
    ));
    if let Some(attempt) = guard.attempt {
        terms.push(push(args, "attempt", "=", (attempt as i64).into()));
    }
    if let Some(owner) = &guard.lease_owner {
        terms.push(push(args, "lease_owner", "=", owner.clone().into()));
    }
    if let Some(t) = guard.lease_ended_before {
        terms.push(push(args, "lease_expires_ms", "<", to_ms(t).into()));
    }
    if let Some(t) = guard.created_before {
        terms.push(push(args, "created_ms", "<=", to_ms(t).into()));
    }
    if guard.dispatched_before.is_some() {
        // The store is the queue here: there is no message that could have been lost.
        terms.push("FALSE".into());
    }
    if let Some(t) = guard.ready_by {
        terms.push(push(args, "ready_ms", "<=", to_ms(t).into()));
    }
    if let Some(t) = guard.live_at {
        let later = push(args, "expires_ms", ">", to_ms(t).into());
        terms.push(format!("(expires_ms IS NULL OR {later})"));
    }
    if let Some(t) = guard.expired_by {
        terms.push(push(args, "expires_ms", "<=", to_ms(t).into()));
    }
    if !guard.owners_except.is_empty() {
        let list: Vec<String> = guard
            .owners_except
            .iter()
            .map(|o| {
                args.push(o.clone().into());
                format!("?{}", args.len())
            })
            .collect();
        terms.push(format!("owner NOT IN ({})", list.join(", ")));
    }
    if guard.holds_slot {
        terms.push("quota_key IS NOT NULL".into());
    }
    terms.join(" AND ")
}

fn encode<T: serde::Serialize>(value: &T) -> PortResult<String> {
    serde_json::to_string(value)
        .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))
}

/// The effects as SQL assignments, their values appended to `args`.
fn assignments(change: &Change, args: &mut Vec<Value>) -> PortResult<String> {
    let e = &change.effects;
    let mut sets: Vec<(&str, Value)> = Vec::new();
    if let Some(status) = e.status {
        sets.push(("status", status.as_str().to_string().into()));
    }
    if let Some(attempt) = e.attempt {
        sets.push(("attempt", (attempt as i64).into()));
    }
    match &e.lease {
        LeaseEffect::Keep => {}
        LeaseEffect::Take { owner, until } => {
            sets.push(("lease_owner", owner.clone().into()));
            sets.push(("lease_expires_ms", to_ms(*until).into()));
        }
        LeaseEffect::Extend { until } => sets.push(("lease_expires_ms", to_ms(*until).into())),
        LeaseEffect::Drop => {
            sets.push(("lease_owner", Value::Null));
            sets.push(("lease_expires_ms", Value::Null));
        }
    }
    match e.started_at {
        Stamp::Keep => {}
        Stamp::Set(t) => sets.push(("started_ms", to_ms(t).into())),
        Stamp::Clear => sets.push(("started_ms", Value::Null)),
    }
    if let Some(t) = e.finished_at {
        sets.push(("finished_ms", to_ms(t).into()));
    }
    if let Some(o) = &e.outcome {
        sets.push(("exit_code", o.exit_code.map(i64::from).into()));
        sets.push(("elapsed_ms", (o.elapsed_ms as i64).into()));
        sets.push(("output_files", encode(&o.output_files)?.into()));
        let failure = o.failure.as_ref().map(encode).transpose()?;
        sets.push(("failure", failure.into()));
    }
    match &e.slot {
        SlotEffect::Keep => {}
        SlotEffect::Take { owner, slot } => {
            sets.push(("quota_slot", (*slot as i64).into()));
            sets.push(("quota_key", quota_key(owner, *slot).into()));
        }
        SlotEffect::Free => {
            sets.push(("quota_slot", Value::Null));
            sets.push(("quota_key", Value::Null));
        }
    }
    match e.retry_at {
        Stamp::Keep => {}
        Stamp::Set(t) => sets.push(("retry_at_ms", to_ms(t).into())),
        Stamp::Clear => sets.push(("retry_at_ms", Value::Null)),
    }
    if let Some(t) = e.held_until {
        sets.push(("ready_ms", to_ms(t).into()));
    }
    // `dispatched_at` has no column: the store is the queue, so no dispatch is recorded.
    let mut appends = Vec::new();
    if let Some(record) = &e.attempt_ended {
        // Appended to the JSON array in the same UPDATE as the transition.
        args.push(encode(record)?.into());
        appends.push(format!(
            "attempts = json_insert(COALESCE(attempts, '[]'), '$[#]', json(?{}))",
            args.len()
        ));
    }
    if sets.is_empty() && appends.is_empty() {
        // A change that writes nothing still reports whether its guard held.
        return Ok("id = id".into());
    }
    Ok(sets
        .into_iter()
        .map(|(column, value)| {
            args.push(value);
            format!("{column} = ?{}", args.len())
        })
        .chain(appends)
        .collect::<Vec<_>>()
        .join(", "))
}

#[async_trait]
impl JobRecords for SqliteStore {
    async fn insert_job(&self, job: &Job) -> PortResult<()> {
        let j = job.clone();
        let files = encode(&j.output_files)?;
        let failure = j.failure.as_ref().map(encode).transpose()?;
        let attempts = encode(&j.attempts)?;
        self.with(
            move |c| {
                c.execute(
                    &format!("INSERT INTO jobs ({COLUMNS}, ready_ms, quota_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"),
                    params![
                        j.id.as_str(),
                        j.owner,
                        j.spec.url,
                        j.spec.args,
                        j.spec.config,
                        j.status.as_str(),
                        j.attempt as i64,
                        j.lease_owner,
                        j.lease_expires_at.map(to_ms),
                        to_ms(j.created_at),
                        j.started_at.map(to_ms),
                        j.finished_at.map(to_ms),
                        j.exit_code,
                        j.elapsed_ms.map(|v| v as i64),
                        files,
                        failure,
                        attempts,
                        j.schedule.priority,
                        j.schedule.not_before.map(to_ms),
                        j.schedule.retries as i64,
                        j.schedule.expires_at.map(to_ms),
                        j.schedule.max_running.map(i64::from),
                        j.schedule.fair_tag,
                        j.retry_at.map(to_ms),
                        j.quota_slot.map(i64::from),
                        j.schedule.deadline.map_or(NEVER, to_ms),
                        j.schedule.expected_secs,
                        j.deadline_at_risk,
                        j.held_until().map_or(0, to_ms),
                        j.quota_slot.map(|k| quota_key(&j.owner, k)),
                    ],
                )
                .map(|_| ())
            },
            "insert job",
        )
        .await
    }

    async fn find_job(&self, id: &JobId) -> PortResult<Option<Job>> {
        let id = id.to_string();
        self.with(
            move |c| {
                c.query_row(
                    &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                    [id],
                    row_to_job,
                )
                .optional()
            },
            "get job",
        )
        .await
    }

    async fn page_jobs(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        page: Page,
    ) -> PortResult<JobPage> {
        let owner = owner.map(str::to_string);
        self.with(
            move |c| {
                let mut conditions = Vec::new();
                let mut args: Vec<Value> = Vec::new();
                if let Some(o) = &owner {
                    args.push(o.clone().into());
                    conditions.push(format!("owner = ?{}", args.len()));
                }
                if let Some(status) = status {
                    args.push(status.as_str().to_string().into());
                    conditions.push(format!("status = ?{}", args.len()));
                }
                let filter = if conditions.is_empty() {
                    String::new()
                } else {
                    format!("WHERE {}", conditions.join(" AND "))
                };
                let total: i64 = c.query_row(
                    &format!("SELECT COUNT(*) FROM jobs {filter}"),
                    rusqlite::params_from_iter(args.clone()),
                    |r| r.get(0),
                )?;
                let mut all = args;
                all.push((page.limit.min(i64::MAX as u64) as i64).into());
                all.push((page.offset.min(i64::MAX as u64) as i64).into());
                let n = all.len();
                let mut stmt = c.prepare(&format!(
                    "SELECT {COLUMNS} FROM jobs {filter} ORDER BY created_ms DESC, id DESC LIMIT ?{} OFFSET ?{n}",
                    n - 1
                ))?;
                let jobs = stmt.query_map(rusqlite::params_from_iter(all), row_to_job)?.collect::<Result<Vec<_>, _>>()?;
                Ok(JobPage { jobs, total: total.max(0) as u64 })
            },
            "list jobs",
        )
        .await
    }

    async fn apply(&self, change: &Change) -> PortResult<Option<Job>> {
        let mut args = Vec::new();
        let set = assignments(change, &mut args)?;
        let guard = condition(&change.guard, &mut args);
        let target = match change.guard.id {
            Some(_) => guard,
            // The oldest job that meets the guard, and the guard again on the row itself.
            None => {
                let again = condition(&change.guard, &mut args);
                format!(
                    "id = (SELECT id FROM jobs WHERE {guard} ORDER BY {SCHEDULING_ORDER} LIMIT 1) AND {again}"
                )
            }
        };
        let sql = format!("UPDATE jobs SET {set} WHERE {target} RETURNING {COLUMNS}");
        self.with(
            move |c| {
                c.query_row(&sql, rusqlite::params_from_iter(args), row_to_job)
                    .optional()
            },
            change.transition.as_str(),
        )
        .await
    }

    async fn select(&self, guard: &Guard, limit: u64) -> PortResult<Vec<Job>> {
        self.jobs_where(COLUMNS, guard, "", limit, "find jobs")
            .await
    }

    async fn first(&self, guard: &Guard) -> PortResult<Option<Job>> {
        let mut args = Vec::new();
        let condition = condition(guard, &mut args);
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE {condition} ORDER BY {SCHEDULING_ORDER} LIMIT 1"
        );
        self.with(
            move |c| {
                c.query_row(&sql, rusqlite::params_from_iter(args), row_to_job)
                    .optional()
            },
            "first waiting job",
        )
        .await
    }

    async fn ordered(&self, guard: &Guard, limit: u64) -> PortResult<Vec<Job>> {
        let order = format!("ORDER BY {SCHEDULING_ORDER}");
        self.jobs_where(&planning_columns(), guard, &order, limit, "jobs in order")
            .await
    }

    async fn set_deadline_flag(&self, id: &JobId, at_risk: bool) -> PortResult<Option<Job>> {
        let id = id.to_string();
        let (queued, running) = (JobStatus::Queued.as_str(), JobStatus::Running.as_str());
        self.with(
            move |c| {
                c.query_row(
                    &format!(
                        "UPDATE jobs SET deadline_at_risk = ?2 WHERE id = ?1 AND status IN (?3, ?4)
                         AND deadline_at_risk != ?2 RETURNING {COLUMNS}"
                    ),
                    params![id, at_risk, queued, running],
                    row_to_job,
                )
                .optional()
            },
            "flag deadline",
        )
        .await
    }

    async fn fair_bounds(
        &self,
        owner: &str,
        now: OffsetDateTime,
    ) -> PortResult<(Option<f64>, Option<f64>)> {
        let owner = owner.to_string();
        let (queued, running) = (JobStatus::Queued.as_str(), JobStatus::Running.as_str());
        self.with(
            move |c| {
                // Both walk an index in tag order and stop at the first row that fits, so a
                // submit's cost does not grow with the queue.
                let virtual_time: Option<f64> = c
                    .query_row(
                        "SELECT fair_tag FROM jobs WHERE status = ?1 AND ready_ms <= ?2
                         ORDER BY fair_tag LIMIT 1",
                        params![queued, to_ms(now)],
                        |r| r.get(0),
                    )
                    .optional()?;
                let owner_last: Option<f64> = c.query_row(
                    "SELECT MAX(t) FROM (
                         SELECT MAX(fair_tag) AS t FROM jobs WHERE owner = ?1 AND status = ?2
                         UNION ALL
                         SELECT MAX(fair_tag) FROM jobs WHERE owner = ?1 AND status = ?3)",
                    params![owner, queued, running],
                    |r| r.get(0),
                )?;
                Ok((virtual_time, owner_last))
            },
            "fair-share bounds",
        )
        .await
    }

    async fn count_by_owner(&self) -> PortResult<Vec<OwnerCount>> {
        let (queued, running) = (JobStatus::Queued.as_str(), JobStatus::Running.as_str());
        self.with(
            move |c| {
                let mut stmt = c.prepare(
                    "SELECT owner, SUM(status = ?1), SUM(status = ?2) FROM jobs
                     WHERE status IN (?1, ?2) GROUP BY owner ORDER BY owner",
                )?;
                stmt.query_map(params![queued, running], |r| {
                    Ok(OwnerCount {
                        owner: r.get(0)?,
                        queued: r.get::<_, i64>(1)?.max(0) as u64,
                        running: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })?
                .collect()
            },
            "count jobs by owner",
        )
        .await
    }
}

#[async_trait]
impl ObservationStore for SqliteStore {
    async fn record(&self, observation: &Observation) -> PortResult<()> {
        let body = serde_json::to_string(observation)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        let ts = observation.timestamp;
        self.with(
            move |c| {
                c.execute(
                    "INSERT INTO observations (timestamp, body) VALUES (?1, ?2)",
                    params![ts, body],
                )?;
                // Keep a day's worth at one per second; charts need no more.
                c.execute(
                    "DELETE FROM observations WHERE timestamp < (SELECT MIN(timestamp) FROM
                        (SELECT timestamp FROM observations ORDER BY timestamp DESC LIMIT 86400))",
                    [],
                )
                .map(|_| ())
            },
            "record observation",
        )
        .await
    }

    async fn put_plan(&self, plan: &Plan) -> PortResult<()> {
        let body = serde_json::to_string(plan)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        self.with(
            move |c| {
                c.execute(
                    "INSERT INTO plans (id, body) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    [body],
                )
                .map(|_| ())
            },
            "store plan",
        )
        .await
    }

    async fn plan(&self) -> PortResult<Option<Plan>> {
        let body: Option<String> = self
            .with(
                |c| {
                    c.query_row("SELECT body FROM plans WHERE id = 1", [], |r| r.get(0))
                        .optional()
                },
                "read plan",
            )
            .await?;
        body.map(|b| {
            serde_json::from_str(&b)
                .map_err(|e| PortError::with_source(ErrorKind::Internal, "decode", e))
        })
        .transpose()
    }

    async fn latest(&self, limit: u64) -> PortResult<Vec<Observation>> {
        let limit = limit.min(i64::MAX as u64) as i64;
        let bodies: Vec<String> = self
            .with(
                move |c| {
                    let mut stmt = c.prepare(
                        "SELECT body FROM observations ORDER BY timestamp DESC LIMIT ?1",
                    )?;
                    stmt.query_map([limit], |r| r.get(0))?.collect()
                },
                "read observations",
            )
            .await?;
        bodies
            .iter()
            .map(|b| {
                serde_json::from_str(b)
                    .map_err(|e| PortError::with_source(ErrorKind::Internal, "decode", e))
            })
            .collect()
    }

    async fn history(&self, since: Option<i64>, limit: u64) -> PortResult<Vec<Observation>> {
        let Some(since) = since else {
            let mut newest = self.latest(limit).await?;
            newest.reverse();
            return Ok(newest);
        };
        let limit = limit.min(i64::MAX as u64) as i64;
        let bodies: Vec<String> = self
            .with(
                move |c| {
                    let mut stmt = c.prepare(
                        "SELECT body FROM observations WHERE timestamp > ?1 ORDER BY timestamp ASC LIMIT ?2",
                    )?;
                    stmt.query_map(params![since, limit], |r| r.get(0))?.collect()
                },
                "read observations",
            )
            .await?;
        bodies
            .iter()
            .map(|b| {
                serde_json::from_str(b)
                    .map_err(|e| PortError::with_source(ErrorKind::Internal, "decode", e))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use time::OffsetDateTime;

    use crate::ports::{JobLeases, JobLookup, JobRecovery};

    /// A fresh store in a file of its own (WAL and all, as `jobq standalone` opens it).
    async fn fresh() -> Option<SqliteStore> {
        let dir = std::env::temp_dir().join(format!("jobq-sqlite-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("db.sqlite3")).unwrap();
        // Open files stay readable after the unlink; nothing is left behind.
        std::fs::remove_dir_all(&dir).unwrap();
        Some(store)
    }

    crate::store_conformance!(fresh);

    #[tokio::test]
    async fn no_dispatch_goes_stale_where_the_store_is_the_queue() {
        let store = SqliteStore::in_memory().unwrap();
        let now = OffsetDateTime::now_utc();
        let mut old = Job::new(
            "alice",
            JobSpec {
                url: "https://example.com/r.git".into(),
                args: String::new(),
                config: String::new(),
            },
            now - Duration::from_secs(3600),
        );
        old.created_at = now - Duration::from_secs(3600);
        store.insert_job(&old).await.unwrap();
        let stale = store.redispatch_stale(now, now, 10).await.unwrap();
        assert!(stale.is_empty());
        assert_eq!(store.queued().await.unwrap(), 1);
        let claimed = store
            .claim_next(
                "w",
                Duration::from_secs(30),
                &crate::scheduling::Pick::default(),
                now,
            )
            .await;
        assert_eq!(claimed.unwrap().map(|j| j.id), Some(old.id));
        assert_eq!(store.queued().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_file_from_before_the_attempt_history_gains_it_and_its_jobs_read_as_having_none() {
        let dir = std::env::temp_dir().join(format!("jobq-sqlite-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite3");
        let id = JobId::new();
        {
            // The schema as it was before the `attempts` column, with one running job.
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, url TEXT NOT NULL,
                 args TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL,
                 attempt INTEGER NOT NULL, lease_owner TEXT, lease_expires_ms INTEGER,
                 created_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER,
                 exit_code INTEGER, elapsed_ms INTEGER, output_files TEXT NOT NULL, failure TEXT);",
            )
            .unwrap();
            old.execute(
                "INSERT INTO jobs VALUES (?1, 'alice', 'https://example.com/r.git', '', '{}',
                 'running', 1, 'w', 0, 1000, 1000, NULL, NULL, NULL, '[]', NULL)",
                [id.as_str()],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let job = store.get(&id).await.unwrap().expect("kept");
        assert!(job.attempts.is_empty());
        let now = OffsetDateTime::now_utc();
        let lost = store.recover_expired(&job, 3, now).await.unwrap().unwrap();
        assert_eq!(lost.job.attempts.len(), 1, "the history is appended to");
        assert_eq!(lost.job.attempts[0].worker.as_deref(), Some("w"));
        drop(store);
        // Opening it again migrates nothing twice.
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.get(&id).await.unwrap().unwrap().attempts.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn observation_history_is_oldest_first_after_since_and_limited() {
        let store = fresh().await.unwrap();
        for ts in [4000, 1000, 3000, 2000] {
            let o = Observation {
                timestamp: ts,
                ..Default::default()
            };
            store.record(&o).await.unwrap();
        }
        let times = |found: Vec<Observation>| found.iter().map(|o| o.timestamp).collect::<Vec<_>>();
        assert_eq!(
            times(store.history(None, 3).await.unwrap()),
            [2000, 3000, 4000]
        );
        assert_eq!(
            times(store.history(Some(1000), 2).await.unwrap()),
            [2000, 3000]
        );
        assert!(store.history(Some(4000), 9).await.unwrap().is_empty());
    }
}
