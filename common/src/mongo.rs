//! The job store on MongoDB (any server speaking its wire protocol). Every transition is a
//! single conditional `findOneAndUpdate`: the filter names the state (and for a worker, its
//! lease and attempt) being left, so of two racing writers exactly one matches.

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, Collection, IndexModel};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::Observation;
use crate::domain::{Dispatch, FailureReason, Job, JobId, JobSpec, JobStatus, Outcome};
use crate::error::{ErrorKind, PortError, PortResult};
use crate::ports::{CancelResult, JobPage, JobStore, ObservationStore, Page};
use crate::settings::MongoSettings;

/// The stored form of a job. Times are milliseconds since the Unix epoch so that every
/// MongoDB-compatible server compares them the same way.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobDoc {
    #[serde(rename = "_id")]
    id: String,
    owner: String,
    url: String,
    args: String,
    config: String,
    status: JobStatus,
    attempt: i64,
    lease_owner: Option<String>,
    lease_expires_ms: Option<i64>,
    created_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    exit_code: Option<i32>,
    elapsed_ms: Option<i64>,
    output_files: Vec<String>,
    failure: Option<FailureReason>,
    /// When the current attempt was last handed to the dispatch queue; see
    /// [`JobStore::redispatch_stale`].
    #[serde(default)]
    dispatched_ms: Option<i64>,
}

use crate::domain::{from_unix_ms as from_ms, unix_ms as to_ms};

impl From<&Job> for JobDoc {
    fn from(job: &Job) -> Self {
        JobDoc {
            id: job.id.to_string(),
            owner: job.owner.clone(),
            url: job.spec.url.clone(),
            args: job.spec.args.clone(),
            config: job.spec.config.clone(),
            status: job.status,
            attempt: job.attempt as i64,
            lease_owner: job.lease_owner.clone(),
            lease_expires_ms: job.lease_expires_at.map(to_ms),
            created_ms: to_ms(job.created_at),
            started_ms: job.started_at.map(to_ms),
            finished_ms: job.finished_at.map(to_ms),
            exit_code: job.exit_code,
            elapsed_ms: job.elapsed_ms.map(|v| v as i64),
            output_files: job.output_files.clone(),
            failure: job.failure.clone(),
            dispatched_ms: Some(to_ms(job.created_at)),
        }
    }
}

impl TryFrom<JobDoc> for Job {
    type Error = PortError;

    fn try_from(d: JobDoc) -> Result<Self, Self::Error> {
        Ok(Job {
            id: d
                .id
                .parse()
                .map_err(|e| PortError::with_source(ErrorKind::Internal, "stored job id", e))?,
            owner: d.owner,
            spec: JobSpec {
                url: d.url,
                args: d.args,
                config: d.config,
            },
            status: d.status,
            attempt: d.attempt.max(0) as u32,
            lease_owner: d.lease_owner,
            lease_expires_at: d.lease_expires_ms.map(from_ms),
            created_at: from_ms(d.created_ms),
            started_at: d.started_ms.map(from_ms),
            finished_at: d.finished_ms.map(from_ms),
            exit_code: d.exit_code,
            elapsed_ms: d.elapsed_ms.map(|v| v.max(0) as u64),
            output_files: d.output_files,
            failure: d.failure,
        })
    }
}

fn db_error(what: &str, e: mongodb::error::Error) -> PortError {
    if let mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) =
        e.kind.as_ref()
        && w.code == 11000
    {
        return PortError::with_source(ErrorKind::AlreadyExists, what, e);
    }
    PortError::with_source(ErrorKind::Unavailable, what, e)
}

fn outcome_set(outcome: &Outcome, now: OffsetDateTime) -> PortResult<Document> {
    let failure = match &outcome.failure {
        Some(f) => mongodb::bson::to_bson(f)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?,
        None => Bson::Null,
    };
    Ok(doc! {
        "status": outcome.status.as_str(),
        "finished_ms": to_ms(now),
        "exit_code": outcome.exit_code.map(Bson::Int32).unwrap_or(Bson::Null),
        "elapsed_ms": outcome.elapsed_ms as i64,
        "output_files": outcome.output_files.clone(),
        "failure": failure,
        "lease_owner": Bson::Null,
        "lease_expires_ms": Bson::Null,
    })
}

/// Back to the queue for the next attempt, lease dropped; the caller dispatches it now.
fn requeue_update(attempt: u32, now: OffsetDateTime) -> Document {
    doc! {"$set": {
        "status": "queued",
        "attempt": attempt as i64 + 1,
        "lease_owner": Bson::Null,
        "lease_expires_ms": Bson::Null,
        "started_ms": Bson::Null,
        "dispatched_ms": to_ms(now),
    }}
}

/// [`JobStore`] on a MongoDB collection `jobs`.
#[derive(Debug, Clone)]
pub struct MongoJobStore {
    jobs: Collection<JobDoc>,
    observations: Collection<Observation>,
    client: Client,
}

impl MongoJobStore {
    /// Connects, checks the server answers, and creates the indexes.
    pub async fn connect(settings: &MongoSettings) -> PortResult<Self> {
        let mut options = ClientOptions::parse(settings.uri.expose_secret())
            .await
            .map_err(|e| PortError::with_source(ErrorKind::Invalid, "bad mongo uri", e))?;
        options.app_name = Some("jobq".into());
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.connect_timeout = Some(Duration::from_secs(5));
        let client = Client::with_options(options).map_err(|e| db_error("mongo client", e))?;
        let db = client.database(&settings.database);
        db.run_command(doc! {"ping": 1})
            .await
            .map_err(|e| db_error("mongo ping", e))?;
        let store = Self {
            jobs: db.collection("jobs"),
            observations: db.collection("observations"),
            client,
        };
        store.create_indexes().await?;
        Ok(store)
    }

    async fn create_indexes(&self) -> PortResult<()> {
        let indexes = [
            IndexModel::builder()
                .keys(doc! {"owner": 1, "created_ms": -1})
                .build(),
            IndexModel::builder().keys(doc! {"created_ms": -1}).build(),
            // A free slot's search for the oldest waiting job.
            IndexModel::builder()
                .keys(doc! {"status": 1, "created_ms": 1})
                .build(),
            IndexModel::builder()
                .keys(doc! {"status": 1, "lease_expires_ms": 1})
                .build(),
        ];
        self.jobs
            .create_indexes(indexes)
            .await
            .map_err(|e| db_error("create indexes", e))?;
        Ok(())
    }

    /// Drops the whole database (tests clean up with it).
    pub async fn drop_database(&self) -> PortResult<()> {
        let name = self.jobs.namespace().db;
        self.client
            .database(&name)
            .drop()
            .await
            .map_err(|e| db_error("drop database", e))
    }

    async fn transition(&self, filter: Document, update: Document) -> PortResult<Option<Job>> {
        let found = self
            .jobs
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| db_error("update job", e))?;
        found.map(Job::try_from).transpose()
    }
}

#[async_trait]
impl JobStore for MongoJobStore {
    async fn insert(&self, job: &Job) -> PortResult<()> {
        self.jobs
            .insert_one(JobDoc::from(job))
            .await
            .map_err(|e| db_error("insert job", e))?;
        Ok(())
    }

    async fn get(&self, id: &JobId) -> PortResult<Option<Job>> {
        let found = self
            .jobs
            .find_one(doc! {"_id": id.as_str()})
            .await
            .map_err(|e| db_error("get job", e))?;
        found.map(Job::try_from).transpose()
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
        let mut filter = match owner {
            Some(o) => doc! {"owner": o},
            None => doc! {},
        };
        if let Some(status) = status {
            filter.insert("status", status.as_str());
        }
        let total = self
            .jobs
            .count_documents(filter.clone())
            .await
            .map_err(|e| db_error("count jobs", e))?;
        let docs: Vec<JobDoc> = self
            .jobs
            .find(filter)
            .sort(doc! {"created_ms": -1, "_id": -1})
            .skip(page.offset)
            .limit(page.limit.min(i64::MAX as u64) as i64)
            .await
            .map_err(|e| db_error("list jobs", e))?
            .try_collect()
            .await
            .map_err(|e| db_error("list jobs", e))?;
        let jobs = docs
            .into_iter()
            .map(Job::try_from)
            .collect::<PortResult<Vec<_>>>()?;
        Ok(JobPage { jobs, total })
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
            doc! {"_id": id.as_str(), "status": "queued", "attempt": attempt as i64},
            doc! {"$set": {
                "status": "running",
                "lease_owner": worker,
                "lease_expires_ms": to_ms(now + lease),
                "started_ms": to_ms(now),
            }},
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
        let found = self
            .jobs
            .find_one_and_update(
                doc! {"status": "queued", "created_ms": {"$lte": to_ms(created_before)}},
                doc! {"$set": {
                    "status": "running",
                    "lease_owner": worker,
                    "lease_expires_ms": to_ms(now + lease),
                    "started_ms": to_ms(now),
                }},
            )
            .sort(doc! {"created_ms": 1, "_id": 1})
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| db_error("claim a waiting job", e))?;
        found.map(Job::try_from).transpose()
    }

    async fn renew(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<bool> {
        let result = self
            .jobs
            .update_one(
                doc! {"_id": id.as_str(), "status": "running", "attempt": attempt as i64, "lease_owner": worker},
                doc! {"$set": {"lease_expires_ms": to_ms(now + lease)}},
            )
            .await
            .map_err(|e| db_error("renew lease", e))?;
        Ok(result.matched_count == 1)
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
        self.transition(
            doc! {"_id": id.as_str(), "status": "running", "attempt": attempt as i64, "lease_owner": worker},
            doc! {"$set": outcome_set(outcome, now)?},
        )
        .await
    }

    async fn release(&self, id: &JobId, attempt: u32, worker: &str) -> PortResult<Option<Job>> {
        self.transition(
            doc! {"_id": id.as_str(), "status": "running", "attempt": attempt as i64, "lease_owner": worker},
            requeue_update(attempt, OffsetDateTime::now_utc()),
        )
        .await
    }

    async fn cancel(&self, id: &JobId, now: OffsetDateTime) -> PortResult<Option<CancelResult>> {
        let cancelled = doc! {"$set": {"status": "cancelled", "finished_ms": to_ms(now)}};
        if let Some(job) = self
            .transition(
                doc! {"_id": id.as_str(), "status": "queued"},
                cancelled.clone(),
            )
            .await?
        {
            return Ok(Some(CancelResult::Cancelled(job)));
        }
        // The lease owner is kept so its worker's next renew fails and it kills the process.
        if let Some(job) = self
            .transition(doc! {"_id": id.as_str(), "status": "running"}, cancelled)
            .await?
        {
            return Ok(Some(CancelResult::CancelledWhileRunning(job)));
        }
        Ok(self.get(id).await?.map(CancelResult::AlreadyTerminal))
    }

    async fn redispatch_stale(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u64,
    ) -> PortResult<Vec<Dispatch>> {
        let stale: Vec<JobDoc> = self
            .jobs
            .find(doc! {"status": "queued", "dispatched_ms": {"$lt": to_ms(before)}})
            .limit(limit.min(i64::MAX as u64) as i64)
            .await
            .map_err(|e| db_error("find stale queued jobs", e))?
            .try_collect()
            .await
            .map_err(|e| db_error("find stale queued jobs", e))?;
        let mut taken = Vec::new();
        for d in stale {
            // Conditional on the value just read: of several observers, one re-dispatches.
            let won = self
                .transition(
                    doc! {"_id": &d.id, "status": "queued", "attempt": d.attempt,
                    "dispatched_ms": d.dispatched_ms.unwrap_or(0)},
                    doc! {"$set": {"dispatched_ms": to_ms(now)}},
                )
                .await?;
            if let Some(job) = won {
                taken.push(Dispatch {
                    id: job.id,
                    attempt: job.attempt,
                });
            }
        }
        Ok(taken)
    }

    async fn expired(&self, now: OffsetDateTime, limit: u64) -> PortResult<Vec<Job>> {
        let docs: Vec<JobDoc> = self
            .jobs
            .find(doc! {"status": "running", "lease_expires_ms": {"$lt": to_ms(now)}})
            .limit(limit.min(i64::MAX as u64) as i64)
            .await
            .map_err(|e| db_error("find expired leases", e))?
            .try_collect()
            .await
            .map_err(|e| db_error("find expired leases", e))?;
        docs.into_iter().map(Job::try_from).collect()
    }

    async fn requeue_expired(
        &self,
        id: &JobId,
        attempt: u32,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>> {
        self.transition(
            doc! {"_id": id.as_str(), "status": "running", "attempt": attempt as i64,
            "lease_expires_ms": {"$lt": to_ms(now)}},
            requeue_update(attempt, now),
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
        self.transition(
            doc! {"_id": id.as_str(), "status": "running", "attempt": attempt as i64,
            "lease_expires_ms": {"$lt": to_ms(now)}},
            doc! {"$set": outcome_set(outcome, now)?},
        )
        .await
    }
}

/// Observations in the collection `observations` of the same database.
#[async_trait]
impl ObservationStore for MongoJobStore {
    async fn record(&self, observation: &Observation) -> PortResult<()> {
        self.observations
            .insert_one(observation)
            .await
            .map_err(|e| db_error("record observation", e))?;
        Ok(())
    }

    async fn latest(&self, limit: u64) -> PortResult<Vec<Observation>> {
        self.observations
            .find(doc! {})
            .sort(doc! {"timestamp": -1})
            .limit(limit.min(i64::MAX as u64) as i64)
            .await
            .map_err(|e| db_error("read observations", e))?
            .try_collect()
            .await
            .map_err(|e| db_error("read observations", e))
    }

    async fn history(&self, since: Option<i64>, limit: u64) -> PortResult<Vec<Observation>> {
        let limit = limit.min(i64::MAX as u64) as i64;
        let Some(since) = since else {
            let mut newest = self.latest(limit as u64).await?;
            newest.reverse();
            return Ok(newest);
        };
        self.observations
            .find(doc! {"timestamp": {"$gt": since}})
            .sort(doc! {"timestamp": 1})
            .limit(limit)
            .await
            .map_err(|e| db_error("read observations", e))?
            .try_collect()
            .await
            .map_err(|e| db_error("read observations", e))
    }
}
