//! The job store on MongoDB (any server speaking its wire protocol). It translates each
//! [`crate::lifecycle::Change`] into a single conditional `findOneAndUpdate`: the guard becomes the
//! filter (state, attempt, lease owner, lease end), the effects the `$set`, so of two racing
//! writers exactly one matches. The rules themselves live in [`crate::lifecycle`].

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, Collection, IndexModel};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::domain::Observation;
use crate::domain::{AttemptRecord, FailureReason, Job, JobId, JobSpec, JobStatus, Schedule};
use crate::error::{ErrorKind, PortError, PortResult};
use crate::lifecycle::{Change, Guard, LeaseEffect, SlotEffect, Stamp};
use crate::plan::Plan;
use crate::ports::{JobPage, JobRecords, ObservationStore, Page};
use crate::settings::MongoSettings;
use crate::store::OwnerCount;
use time::OffsetDateTime;

mod idempotency;

/// The stored form of a job. Times are milliseconds since the Unix epoch so that every
/// MongoDB-compatible server compares them the same way.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobDoc {
    #[serde(rename = "_id")]
    id: String,
    owner: String,
    url: String,
    // Left out of the planner's read (`JobRecords::ordered`).
    #[serde(default)]
    args: String,
    #[serde(default)]
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
    /// [`crate::store::JobRecovery::redispatch_stale`].
    #[serde(default)]
    dispatched_ms: Option<i64>,
    /// The ended attempts, oldest first; missing in a job stored before they were kept.
    #[serde(default, deserialize_with = "stored_attempts")]
    attempts: Vec<AttemptRecord>,
    // The schedule; each missing in a job stored before it was kept (the defaults).
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    not_before_ms: Option<i64>,
    #[serde(default)]
    retries: i64,
    #[serde(default)]
    expires_ms: Option<i64>,
    /// The expiry, or [`NEVER`] without one: what claims and the expiry sweep compare, with
    /// no `$or` (nx-27017, the MongoDB-wire server of the tests, mishandles `$or` beside
    /// other conditions: docs/infra.md).
    #[serde(default = "never")]
    live_until_ms: i64,
    #[serde(default)]
    max_running: Option<i64>,
    #[serde(default)]
    fair_tag: f64,
    #[serde(default)]
    retry_at_ms: Option<i64>,
    /// Until when the job is held back (`not_before`, the next retry; 0: not at all): what
    /// claims compare.
    #[serde(default)]
    ready_ms: Option<i64>,
    #[serde(default)]
    quota_slot: Option<i64>,
    /// `owner/slot` while the job holds a slot of its owner's running limit, absent otherwise:
    /// a sparse unique index keeps each slot to one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quota_key: Option<String>,
    /// The deadline, or [`NEVER`] without one, so the order sorts it after every deadline.
    #[serde(default = "never")]
    deadline_ms: i64,
    #[serde(default)]
    expected_secs: Option<f64>,
    #[serde(default)]
    deadline_at_risk: bool,
}

/// `live_until_ms` of a job that never expires (and `deadline_ms` of one without a deadline): the year 9999, well inside the integers every
/// server compares exactly.
const NEVER: i64 = 253_402_300_799_999;

fn never() -> i64 {
    NEVER
}

/// The unique key of `owner`'s running slot `slot`.
fn quota_key(owner: &str, slot: u32) -> String {
    format!("{owner}/{slot}")
}

/// The scheduling order of waiting jobs (`JobRecords::first`).
fn scheduling_order() -> Document {
    doc! {"priority": -1, "deadline_ms": 1, "fair_tag": 1, "created_ms": 1, "_id": 1}
}

/// An attempt as stored: a subdocument, or that subdocument as JSON text — nx-27017, the
/// MongoDB-wire server of the tests, stores a document appended with `$push` as its JSON
/// (docs/infra.md); MongoDB keeps the subdocument.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredAttempt {
    Document(AttemptRecord),
    Json(String),
}

fn stored_attempts<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<AttemptRecord>, D::Error> {
    Vec::<StoredAttempt>::deserialize(deserializer)?
        .into_iter()
        .map(|stored| match stored {
            StoredAttempt::Document(record) => Ok(record),
            StoredAttempt::Json(text) => {
                serde_json::from_str(&text).map_err(serde::de::Error::custom)
            }
        })
        .collect()
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
            attempts: job.attempts.clone(),
            priority: job.schedule.priority,
            not_before_ms: job.schedule.not_before.map(to_ms),
            retries: job.schedule.retries as i64,
            expires_ms: job.schedule.expires_at.map(to_ms),
            live_until_ms: job.schedule.expires_at.map_or(NEVER, to_ms),
            max_running: job.schedule.max_running.map(i64::from),
            fair_tag: job.schedule.fair_tag,
            retry_at_ms: job.retry_at.map(to_ms),
            ready_ms: Some(job.held_until().map_or(0, to_ms)),
            quota_slot: job.quota_slot.map(i64::from),
            quota_key: job.quota_slot.map(|k| quota_key(&job.owner, k)),
            deadline_ms: job.schedule.deadline.map_or(NEVER, to_ms),
            expected_secs: job.schedule.expected_secs,
            deadline_at_risk: job.deadline_at_risk,
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
            attempts: d.attempts,
            schedule: Schedule {
                priority: d.priority,
                not_before: d.not_before_ms.map(from_ms),
                retries: d.retries.clamp(0, u32::MAX as i64) as u32,
                expires_at: d.expires_ms.map(from_ms),
                max_running: d.max_running.map(|v| v.clamp(0, u32::MAX as i64) as u32),
                fair_tag: d.fair_tag,
                deadline: (d.deadline_ms != NEVER).then(|| from_ms(d.deadline_ms)),
                expected_secs: d.expected_secs,
            },
            retry_at: d.retry_at_ms.map(from_ms),
            quota_slot: d.quota_slot.map(|v| v.clamp(0, u32::MAX as i64) as u32),
            deadline_at_risk: d.deadline_at_risk,
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

/// The guard as a filter.
fn filter(guard: &Guard) -> Document {
    let mut f = Document::new();
    if let Some(id) = &guard.id {
        f.insert("_id", id.as_str());
    }
    f.insert("status", guard.state.as_str());
    if let Some(attempt) = guard.attempt {
        f.insert("attempt", attempt as i64);
    }
    if let Some(owner) = &guard.lease_owner {
        f.insert("lease_owner", owner.as_str());
    }
    if let Some(t) = guard.lease_ended_before {
        f.insert("lease_expires_ms", doc! {"$lt": to_ms(t)});
    }
    if let Some(t) = guard.created_before {
        f.insert("created_ms", doc! {"$lte": to_ms(t)});
    }
    if let Some(t) = guard.dispatched_before {
        f.insert("dispatched_ms", doc! {"$lt": to_ms(t)});
    }
    if let Some(t) = guard.ready_by {
        f.insert("ready_ms", doc! {"$lte": to_ms(t)});
    }
    let mut live = Document::new();
    if let Some(t) = guard.live_at {
        live.insert("$gt", to_ms(t));
    }
    if let Some(t) = guard.expired_by {
        live.insert("$lte", to_ms(t));
    }
    if !live.is_empty() {
        f.insert("live_until_ms", live);
    }
    if !guard.owners_except.is_empty() {
        f.insert("owner", doc! {"$nin": guard.owners_except.clone()});
    }
    if guard.holds_slot {
        f.insert("quota_key", doc! {"$exists": true});
    }
    f
}

/// The effects as a `$set` update, and a `$push` of the attempt that ended, in the same
/// update.
fn update(change: &Change) -> PortResult<Document> {
    let e = &change.effects;
    let mut set = Document::new();
    if let Some(status) = e.status {
        set.insert("status", status.as_str());
    }
    if let Some(attempt) = e.attempt {
        set.insert("attempt", attempt as i64);
    }
    match &e.lease {
        LeaseEffect::Keep => {}
        LeaseEffect::Take { owner, until } => {
            set.insert("lease_owner", owner.as_str());
            set.insert("lease_expires_ms", to_ms(*until));
        }
        LeaseEffect::Extend { until } => {
            set.insert("lease_expires_ms", to_ms(*until));
        }
        LeaseEffect::Drop => {
            set.insert("lease_owner", Bson::Null);
            set.insert("lease_expires_ms", Bson::Null);
        }
    }
    match e.started_at {
        Stamp::Keep => {}
        Stamp::Set(t) => {
            set.insert("started_ms", to_ms(t));
        }
        Stamp::Clear => {
            set.insert("started_ms", Bson::Null);
        }
    }
    if let Some(t) = e.finished_at {
        set.insert("finished_ms", to_ms(t));
    }
    if let Some(o) = &e.outcome {
        let failure = match &o.failure {
            Some(f) => mongodb::bson::to_bson(f)
                .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?,
            None => Bson::Null,
        };
        set.insert(
            "exit_code",
            o.exit_code.map(Bson::Int32).unwrap_or(Bson::Null),
        );
        set.insert("elapsed_ms", o.elapsed_ms as i64);
        set.insert("output_files", o.output_files.clone());
        set.insert("failure", failure);
    }
    if let Some(t) = e.dispatched_at {
        set.insert("dispatched_ms", to_ms(t));
    }
    let mut unset = Document::new();
    match &e.slot {
        SlotEffect::Keep => {}
        SlotEffect::Take { owner, slot } => {
            set.insert("quota_slot", *slot as i64);
            set.insert("quota_key", quota_key(owner, *slot));
        }
        SlotEffect::Free => {
            set.insert("quota_slot", Bson::Null);
            // Absent, not null: the sparse unique index would count every null as one value.
            unset.insert("quota_key", "");
        }
    }
    match e.retry_at {
        Stamp::Keep => {}
        Stamp::Set(t) => {
            set.insert("retry_at_ms", to_ms(t));
        }
        Stamp::Clear => {
            set.insert("retry_at_ms", Bson::Null);
        }
    }
    if let Some(t) = e.held_until {
        set.insert("ready_ms", to_ms(t));
    }
    let mut update = doc! {"$set": set};
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    if let Some(record) = &e.attempt_ended {
        let record = mongodb::bson::to_bson(record)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        update.insert("$push", doc! {"attempts": record});
    }
    Ok(update)
}

/// The job store ([`JobRecords`], so every role) on a MongoDB collection `jobs`.
#[derive(Debug, Clone)]
pub struct MongoJobStore {
    jobs: Collection<JobDoc>,
    observations: Collection<Observation>,
    /// The observer's newest plan, one document.
    plans: Collection<Document>,
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
            plans: db.collection("plans"),
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
            // The claim's search for the next waiting job, in scheduling order.
            IndexModel::builder()
                .keys(doc! {"status": 1, "priority": -1, "deadline_ms": 1, "fair_tag": 1, "created_ms": 1})
                .build(),
            // A submit's fair-share tag: the lowest among the queued jobs, and the owner's
            // highest among their active ones.
            IndexModel::builder()
                .keys(doc! {"status": 1, "fair_tag": 1})
                .build(),
            IndexModel::builder()
                .keys(doc! {"owner": 1, "status": 1, "fair_tag": -1})
                .build(),
            // One job per slot of an owner's running limit.
            IndexModel::builder()
                .keys(doc! {"quota_key": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .sparse(true)
                        .build(),
                )
                .build(),
        ];
        self.jobs
            .create_indexes(indexes)
            .await
            .map_err(|e| db_error("create indexes", e))?;
        // Jobs stored before the schedule was kept get its defaults (priority 0, no tag, held
        // back by nothing), so claims, which filter and sort on them, see them.
        self.jobs
            .update_many(
                doc! {"ready_ms": {"$exists": false}},
                doc! {"$set": {"ready_ms": 0_i64, "priority": 0_i32, "fair_tag": 0.0_f64, "live_until_ms": NEVER}},
            )
            .await
            .map_err(|e| db_error("add the schedule to older jobs", e))?;
        self.jobs
            .update_many(
                doc! {"deadline_ms": {"$exists": false}},
                doc! {"$set": {"deadline_ms": NEVER}},
            )
            .await
            .map_err(|e| db_error("add the deadline to older jobs", e))?;
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
}

#[async_trait]
impl JobRecords for MongoJobStore {
    async fn insert_job(&self, job: &Job) -> PortResult<()> {
        self.jobs
            .insert_one(JobDoc::from(job))
            .await
            .map_err(|e| db_error("insert job", e))?;
        Ok(())
    }

    async fn find_job(&self, id: &JobId) -> PortResult<Option<Job>> {
        let found = self
            .jobs
            .find_one(doc! {"_id": id.as_str()})
            .await
            .map_err(|e| db_error("get job", e))?;
        found.map(Job::try_from).transpose()
    }

    async fn page_jobs(
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

    async fn apply(&self, change: &Change) -> PortResult<Option<Job>> {
        let mut action = self
            .jobs
            .find_one_and_update(filter(&change.guard), update(change)?)
            .return_document(ReturnDocument::After);
        if change.guard.id.is_none() {
            action = action.sort(scheduling_order());
        }
        let found = action
            .await
            .map_err(|e| db_error(change.transition.as_str(), e))?;
        found.map(Job::try_from).transpose()
    }

    async fn select(&self, guard: &Guard, limit: u64) -> PortResult<Vec<Job>> {
        let docs: Vec<JobDoc> = self
            .jobs
            .find(filter(guard))
            .limit(limit.min(i64::MAX as u64) as i64)
            .await
            .map_err(|e| db_error("find jobs", e))?
            .try_collect()
            .await
            .map_err(|e| db_error("find jobs", e))?;
        docs.into_iter().map(Job::try_from).collect()
    }

    async fn first(&self, guard: &Guard) -> PortResult<Option<Job>> {
        let found = self
            .jobs
            .find_one(filter(guard))
            .sort(scheduling_order())
            .await
            .map_err(|e| db_error("first waiting job", e))?;
        found.map(Job::try_from).transpose()
    }

    async fn ordered(&self, guard: &Guard, limit: u64) -> PortResult<Vec<Job>> {
        let docs: Vec<JobDoc> = self
            .jobs
            .find(filter(guard))
            .sort(scheduling_order())
            .projection(doc! {"args": 0, "config": 0, "attempts": 0})
            .limit(limit.min(i64::MAX as u64) as i64)
            .await
            .map_err(|e| db_error("jobs in order", e))?
            .try_collect()
            .await
            .map_err(|e| db_error("jobs in order", e))?;
        docs.into_iter().map(Job::try_from).collect()
    }

    async fn set_deadline_flag(&self, id: &JobId, at_risk: bool) -> PortResult<Option<Job>> {
        let active = [JobStatus::Queued.as_str(), JobStatus::Running.as_str()];
        let found = self
            .jobs
            .find_one_and_update(
                doc! {"_id": id.as_str(), "status": {"$in": active.to_vec()}, "deadline_at_risk": {"$ne": at_risk}},
                doc! {"$set": {"deadline_at_risk": at_risk}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| db_error("flag deadline", e))?;
        found.map(Job::try_from).transpose()
    }

    async fn fair_bounds(
        &self,
        owner: &str,
        now: OffsetDateTime,
    ) -> PortResult<(Option<f64>, Option<f64>)> {
        let tag = |d: Option<Document>| d.and_then(|d| d.get_f64("fair_tag").ok());
        let lowest = self
            .jobs
            .clone_with_type::<Document>()
            .find_one(doc! {"status": JobStatus::Queued.as_str(), "ready_ms": {"$lte": to_ms(now)}})
            .sort(doc! {"fair_tag": 1})
            .projection(doc! {"fair_tag": 1})
            .await
            .map_err(|e| db_error("fair-share bounds", e))?;
        let active = [JobStatus::Queued.as_str(), JobStatus::Running.as_str()];
        let highest = self
            .jobs
            .clone_with_type::<Document>()
            .find_one(doc! {"owner": owner, "status": {"$in": active.to_vec()}})
            .sort(doc! {"fair_tag": -1})
            .projection(doc! {"fair_tag": 1})
            .await
            .map_err(|e| db_error("fair-share bounds", e))?;
        Ok((tag(lowest), tag(highest)))
    }

    async fn count_by_owner(&self) -> PortResult<Vec<OwnerCount>> {
        // Read and counted here rather than with `$group`, which the MongoDB-wire test server
        // does not compute for a compound key (docs/infra.md): one owner and status per job.
        let (queued, running) = (JobStatus::Queued.as_str(), JobStatus::Running.as_str());
        let mut cursor = self
            .jobs
            .clone_with_type::<Document>()
            .find(doc! {"status": {"$in": [queued, running]}})
            .projection(doc! {"owner": 1, "status": 1})
            .await
            .map_err(|e| db_error("count jobs by owner", e))?;
        let mut counts: std::collections::BTreeMap<String, OwnerCount> = Default::default();
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(|e| db_error("count jobs by owner", e))?
        {
            let (Ok(owner), Ok(status)) = (d.get_str("owner"), d.get_str("status")) else {
                continue;
            };
            let count = counts.entry(owner.to_string()).or_insert(OwnerCount {
                owner: owner.to_string(),
                queued: 0,
                running: 0,
            });
            match status {
                s if s == queued => count.queued += 1,
                _ => count.running += 1,
            }
        }
        Ok(counts.into_values().collect())
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

    async fn put_plan(&self, plan: &Plan) -> PortResult<()> {
        // Kept as JSON text: one document, read whole, the same on every wire server.
        let body = serde_json::to_string(plan)
            .map_err(|e| PortError::with_source(ErrorKind::Internal, "encode", e))?;
        self.plans
            .replace_one(
                doc! {"_id": "current"},
                doc! {"_id": "current", "body": body},
            )
            .upsert(true)
            .await
            .map_err(|e| db_error("store plan", e))?;
        Ok(())
    }

    async fn plan(&self) -> PortResult<Option<Plan>> {
        let found = self
            .plans
            .find_one(doc! {"_id": "current"})
            .await
            .map_err(|e| db_error("read plan", e))?;
        found
            .as_ref()
            .and_then(|d| d.get_str("body").ok())
            .map(|b| {
                serde_json::from_str(b)
                    .map_err(|e| PortError::with_source(ErrorKind::Internal, "decode", e))
            })
            .transpose()
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
