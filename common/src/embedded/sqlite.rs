//! The job and observation store on one SQLite file, for `jobq standalone`. The store is
//! also the dispatch queue there: [`SqliteStore::claim_next`] takes the oldest queued job.
//! One connection behind a mutex serialises every statement, and every transition is a
//! conditional `UPDATE … RETURNING`, with the same rules as the MongoDB adapter.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use crate::domain::{FailureReason, Job, JobId, JobSpec, JobStatus, Observation, Outcome};
use crate::error::{ErrorKind, PortError, PortResult};
use crate::ports::{CancelResult, JobPage, JobStore, ObservationStore, Page};

const COLUMNS: &str = "id, owner, url, args, config, status, attempt, lease_owner, lease_expires_ms, \
    created_ms, started_ms, finished_ms, exit_code, elapsed_ms, output_files, failure";

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
    })
}

/// [`JobStore`] and [`ObservationStore`] on a SQLite file.
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
                 failure TEXT
             );
             CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_ms DESC);
             CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, created_ms);
             CREATE TABLE IF NOT EXISTS observations (timestamp INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS observations_time ON observations (timestamp DESC);",
        )
        .map_err(|e| db_error("create schema", e))?;
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

    /// Runs one conditional update and returns the row it changed, if any.
    async fn transition(
        &self,
        sql: String,
        args: Vec<rusqlite::types::Value>,
    ) -> PortResult<Option<Job>> {
        self.with(
            move |c| {
                c.query_row(
                    &format!("{sql} RETURNING {COLUMNS}"),
                    rusqlite::params_from_iter(args),
                    row_to_job,
                )
                .optional()
            },
            "update job",
        )
        .await
    }

    /// `queued → running` for the oldest queued job: the embedded dispatch queue.
    pub async fn claim_next(
        &self,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        self.transition(
            "UPDATE jobs SET status = 'running', lease_owner = ?1, lease_expires_ms = ?2, started_ms = ?3
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_ms, id LIMIT 1)
               AND status = 'queued'"
                .into(),
            vec![worker.to_string().into(), to_ms(now + lease).into(), to_ms(now).into()],
        )
        .await
    }

    /// At start-up of a single-process deployment every running job lost its worker with
    /// the previous process: each goes back to the queue with the next attempt, or fails
    /// (worker lost) after `max_attempts`. Returns (re-queued, failed).
    pub async fn recover_running(
        &self,
        max_attempts: u32,
        now: OffsetDateTime,
    ) -> PortResult<(usize, usize)> {
        let failure = serde_json::to_string(&FailureReason::WorkerLost {
            attempts: max_attempts,
        })
        .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        let now_ms = to_ms(now);
        self.with(
            move |c| {
                let tx = c.transaction()?;
                let failed = tx.execute(
                    "UPDATE jobs SET status = 'failed', finished_ms = ?1, lease_owner = NULL, lease_expires_ms = NULL,
                         failure = ?2, elapsed_ms = ?1 - COALESCE(started_ms, ?1)
                     WHERE status = 'running' AND attempt >= ?3",
                    params![now_ms, failure, max_attempts as i64],
                )?;
                let requeued = tx.execute(
                    "UPDATE jobs SET status = 'queued', attempt = attempt + 1, lease_owner = NULL,
                         lease_expires_ms = NULL, started_ms = NULL
                     WHERE status = 'running'",
                    [],
                )?;
                tx.commit()?;
                Ok((requeued, failed))
            },
            "recover running jobs",
        )
        .await
    }

    /// Number of queued jobs (the standalone queue depth).
    pub async fn queued(&self) -> PortResult<u64> {
        self.with(
            |c| {
                c.query_row(
                    "SELECT COUNT(*) FROM jobs WHERE status = 'queued'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            },
            "count queued",
        )
        .await
        .map(|n| n.max(0) as u64)
    }
}

fn outcome_values(
    outcome: &Outcome,
    now: OffsetDateTime,
) -> PortResult<Vec<rusqlite::types::Value>> {
    let files = serde_json::to_string(&outcome.output_files)
        .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
    let failure = outcome
        .failure
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
    Ok(vec![
        outcome.status.as_str().to_string().into(),
        to_ms(now).into(),
        outcome.exit_code.map(i64::from).into(),
        (outcome.elapsed_ms as i64).into(),
        files.into(),
        failure.into(),
    ])
}

const SET_OUTCOME: &str = "status = ?1, finished_ms = ?2, exit_code = ?3, elapsed_ms = ?4, output_files = ?5, \
    failure = ?6, lease_owner = NULL, lease_expires_ms = NULL";

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert(&self, job: &Job) -> PortResult<()> {
        let j = job.clone();
        let files = serde_json::to_string(&j.output_files)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        self.with(
            move |c| {
                c.execute(
                    &format!("INSERT INTO jobs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, NULL)"),
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
                    ],
                )
                .map(|_| ())
            },
            "insert job",
        )
        .await
    }

    async fn get(&self, id: &JobId) -> PortResult<Option<Job>> {
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

    async fn list(&self, owner: Option<&str>, page: Page) -> PortResult<JobPage> {
        self.list_in_status(owner, None, page).await
    }

    async fn list_in_status(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        page: Page,
    ) -> PortResult<JobPage> {
        let owner = owner.map(str::to_string);
        self.with(
            move |c| {
                let mut conditions = Vec::new();
                let mut args: Vec<rusqlite::types::Value> = Vec::new();
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

    async fn claim_waiting(
        &self,
        worker: &str,
        lease: Duration,
        created_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        self.transition(
            "UPDATE jobs SET status = 'running', lease_owner = ?1, lease_expires_ms = ?2, started_ms = ?3
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND created_ms <= ?4
                         ORDER BY created_ms, id LIMIT 1)
               AND status = 'queued'"
                .into(),
            vec![
                worker.to_string().into(),
                to_ms(now + lease).into(),
                to_ms(now).into(),
                to_ms(created_before).into(),
            ],
        )
        .await
    }

    async fn claim(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        self.transition(
            "UPDATE jobs SET status = 'running', lease_owner = ?1, lease_expires_ms = ?2, started_ms = ?3
             WHERE id = ?4 AND status = 'queued' AND attempt = ?5"
                .into(),
            vec![
                worker.to_string().into(),
                to_ms(now + lease).into(),
                to_ms(now).into(),
                id.to_string().into(),
                (attempt as i64).into(),
            ],
        )
        .await
    }

    async fn renew(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<bool> {
        let (id, worker, until) = (id.to_string(), worker.to_string(), to_ms(now + lease));
        self.with(
            move |c| {
                c.execute(
                    "UPDATE jobs SET lease_expires_ms = ?1
                     WHERE id = ?2 AND status = 'running' AND attempt = ?3 AND lease_owner = ?4",
                    params![until, id, attempt as i64, worker],
                )
            },
            "renew lease",
        )
        .await
        .map(|n| n == 1)
    }

    async fn complete(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        outcome: &Outcome,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        crate::ports::require_terminal(outcome)?;
        let mut args = outcome_values(outcome, now)?;
        args.extend([
            id.to_string().into(),
            (attempt as i64).into(),
            worker.to_string().into(),
        ]);
        self.transition(
            format!("UPDATE jobs SET {SET_OUTCOME} WHERE id = ?7 AND status = 'running' AND attempt = ?8 AND lease_owner = ?9"),
            args,
        )
        .await
    }

    async fn release(&self, id: &JobId, attempt: u32, worker: &str) -> PortResult<Option<Job>> {
        self.transition(
            "UPDATE jobs SET status = 'queued', attempt = attempt + 1, lease_owner = NULL, lease_expires_ms = NULL,
                 started_ms = NULL
             WHERE id = ?1 AND status = 'running' AND attempt = ?2 AND lease_owner = ?3"
                .into(),
            vec![id.to_string().into(), (attempt as i64).into(), worker.to_string().into()],
        )
        .await
    }

    async fn cancel(&self, id: &JobId, now: OffsetDateTime) -> PortResult<Option<CancelResult>> {
        let cancel = |from: &str| {
            format!(
                "UPDATE jobs SET status = 'cancelled', finished_ms = ?1 WHERE id = ?2 AND status = '{from}'"
            )
        };
        let args = || vec![to_ms(now).into(), id.to_string().into()];
        if let Some(job) = self.transition(cancel("queued"), args()).await? {
            return Ok(Some(CancelResult::Cancelled(job)));
        }
        // The lease owner is kept so its worker's next renew fails and it kills the process.
        if let Some(job) = self.transition(cancel("running"), args()).await? {
            return Ok(Some(CancelResult::CancelledWhileRunning(job)));
        }
        Ok(self.get(id).await?.map(CancelResult::AlreadyTerminal))
    }

    /// Nothing to do: here the store itself is the queue, so no message can be lost.
    async fn redispatch_stale(
        &self,
        _before: OffsetDateTime,
        _now: OffsetDateTime,
        _limit: u64,
    ) -> PortResult<Vec<crate::domain::Dispatch>> {
        Ok(Vec::new())
    }

    async fn expired(&self, now: OffsetDateTime, limit: u64) -> PortResult<Vec<Job>> {
        let (now, limit) = (to_ms(now), limit.min(i64::MAX as u64) as i64);
        self.with(
            move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {COLUMNS} FROM jobs WHERE status = 'running' AND lease_expires_ms < ?1 LIMIT ?2"
                ))?;
                stmt.query_map(params![now, limit], row_to_job)?.collect()
            },
            "find expired leases",
        )
        .await
    }

    async fn requeue_expired(
        &self,
        id: &JobId,
        attempt: u32,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        self.transition(
            "UPDATE jobs SET status = 'queued', attempt = attempt + 1, lease_owner = NULL, lease_expires_ms = NULL,
                 started_ms = NULL
             WHERE id = ?1 AND status = 'running' AND attempt = ?2 AND lease_expires_ms < ?3"
                .into(),
            vec![id.to_string().into(), (attempt as i64).into(), to_ms(now).into()],
        )
        .await
    }

    async fn fail_expired(
        &self,
        id: &JobId,
        attempt: u32,
        outcome: &Outcome,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        let mut args = outcome_values(outcome, now)?;
        args.extend([
            id.to_string().into(),
            (attempt as i64).into(),
            to_ms(now).into(),
        ]);
        self.transition(
            format!(
                "UPDATE jobs SET {SET_OUTCOME} WHERE id = ?7 AND status = 'running' AND attempt = ?8 AND lease_expires_ms < ?9"
            ),
            args,
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
    use crate::domain::JobSpec;

    fn store() -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("jobq-sqlite-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (SqliteStore::open(&dir.join("db.sqlite3")).unwrap(), dir)
    }

    fn job(owner: &str) -> Job {
        let spec = JobSpec {
            url: "https://example.com/r.git".into(),
            args: String::new(),
            config: String::new(),
        };
        Job::new(owner, spec, OffsetDateTime::now_utc())
    }

    #[tokio::test]
    async fn a_free_slot_claims_the_oldest_job_that_waited_long_enough_and_only_once() {
        let (store, dir) = store();
        let store = std::sync::Arc::new(store);
        let now = OffsetDateTime::now_utc();
        let lease = Duration::from_secs(30);
        let mut ids = Vec::new();
        for age_secs in [30, 20, 10] {
            let mut j = job("alice");
            j.created_at = now - time::Duration::seconds(age_secs);
            store.insert(&j).await.unwrap();
            ids.push(j.id);
        }
        let fresh = job("alice");
        store.insert(&fresh).await.unwrap();
        let before = now - time::Duration::seconds(5);
        let first = store
            .claim_waiting("w1", lease, before, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.id.clone(), first.status),
            (ids[0].clone(), JobStatus::Running)
        );
        assert!(
            store
                .claim(&first.id, 1, "w2", lease, now)
                .await
                .unwrap()
                .is_none()
        );
        let claims = futures::future::join_all((0..8).map(|i| {
            let store = store.clone();
            async move {
                store
                    .claim_waiting(&format!("c{i}"), lease, before, now)
                    .await
                    .unwrap()
            }
        }))
        .await;
        let mut won: Vec<_> = claims.into_iter().flatten().map(|j| j.id).collect();
        won.sort();
        let mut expected = vec![ids[1].clone(), ids[2].clone()];
        expected.sort();
        assert_eq!(won, expected);
        assert_eq!(
            store.get(&fresh.id).await.unwrap().unwrap().status,
            JobStatus::Queued
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn listing_in_one_status_counts_and_pages_only_those() {
        let (store, dir) = store();
        let now = OffsetDateTime::now_utc();
        for i in 0..3 {
            let j = job("alice");
            store.insert(&j).await.unwrap();
            if i < 2 {
                let lease = Duration::from_secs(30);
                store
                    .claim(&j.id, 1, "w", lease, now)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        store.insert(&job("bob")).await.unwrap();
        let page = Page {
            offset: 0,
            limit: 1,
        };
        let running = store
            .list_in_status(Some("alice"), Some(JobStatus::Running), page)
            .await
            .unwrap();
        assert_eq!((running.total, running.jobs.len()), (2, 1));
        assert_eq!(running.jobs[0].status, JobStatus::Running);
        let queued = store
            .list_in_status(None, Some(JobStatus::Queued), Page::default())
            .await
            .unwrap();
        assert_eq!(queued.total, 2);
        let all = store
            .list_in_status(Some("alice"), None, Page::default())
            .await;
        assert_eq!(all.unwrap().total, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn observation_history_is_oldest_first_after_since_and_limited() {
        let (store, dir) = store();
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
        std::fs::remove_dir_all(dir).unwrap();
    }
}
