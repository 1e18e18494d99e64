//! The ports: small traits for each outside system. Domain logic depends on these,
//! never on a concrete adapter; adapters hold no business rules.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::io::AsyncRead;

use crate::domain::{Dispatch, Job, JobEvent, JobId, JobStatus, Observation, Outcome};
use crate::error::PortResult;

/// One page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: u64,
    pub limit: u64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            offset: 0,
            limit: 100,
        }
    }
}

/// A page of jobs and how many there are in all.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub total: u64,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelResult {
    /// The job was queued and is now cancelled; it will never start.
    Cancelled(Job),
    /// The job was running and is now cancelled; its worker kills it when it next renews.
    CancelledWhileRunning(Job),
    /// The job had already ended.
    AlreadyTerminal(Job),
}

/// The rule every [`JobStore::complete`] enforces: a run ends in a terminal state.
pub fn require_terminal(outcome: &Outcome) -> PortResult<()> {
    if outcome.status.is_terminal() {
        Ok(())
    } else {
        Err(crate::error::PortError::invalid(format!(
            "a worker cannot end a job as {}",
            outcome.status
        )))
    }
}

/// Job state and its conditional transitions. Every transition names the state (and for a
/// worker, its lease and attempt) it expects to leave, so two writers never both win.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new queued job.
    async fn insert(&self, job: &Job) -> PortResult<()>;

    async fn get(&self, id: &JobId) -> PortResult<Option<Job>>;

    /// Jobs newest first; `owner = None` lists every owner's.
    async fn list(&self, owner: Option<&str>, page: Page) -> PortResult<JobPage>;

    /// Like [`list`](Self::list), only jobs in `status` (all when `None`). Adapters answer
    /// it with one query; this default, for doubles, reads every job.
    async fn list_in_status(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        page: Page,
    ) -> PortResult<JobPage> {
        let Some(status) = status else {
            return self.list(owner, page).await;
        };
        let everything = Page {
            offset: 0,
            limit: u64::MAX,
        };
        let mut found = self.list(owner, everything).await?.jobs;
        found.retain(|j| j.status == status);
        let total = found.len() as u64;
        let jobs = found
            .into_iter()
            .skip(page.offset.min(usize::MAX as u64) as usize)
            .take(page.limit.min(usize::MAX as u64) as usize)
            .collect();
        Ok(JobPage { jobs, total })
    }

    /// `queued → running` for `attempt`, taking a lease for `worker` until `now + lease`.
    /// `None` if the job is not queued at that attempt (taken, cancelled, stale message).
    async fn claim(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;

    /// `queued → running` for the oldest queued job created at or before `created_before`, whatever
    /// its attempt: how a free slot takes a job whose dispatch message waits behind a busy
    /// worker's partition. The message's owner later finds the job taken (its `claim` of that
    /// attempt fails) and skips it. `None` when no job has waited that long.
    async fn claim_waiting(
        &self,
        worker: &str,
        lease: Duration,
        created_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;

    /// Extends the lease; `false` means the lease is lost (expired and re-queued, or cancelled).
    async fn renew(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> PortResult<bool>;

    /// `running → finished | failed | cancelled`, only while `worker` holds the lease at `attempt`.
    async fn complete(
        &self,
        id: &JobId,
        attempt: u32,
        worker: &str,
        outcome: &Outcome,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;

    /// `running → queued` with `attempt + 1`: the worker holding the lease hands the job back
    /// (it is shutting down). `None` if it no longer holds the lease.
    async fn release(&self, id: &JobId, attempt: u32, worker: &str) -> PortResult<Option<Job>>;

    /// `queued | running → cancelled`.
    async fn cancel(&self, id: &JobId, now: OffsetDateTime) -> PortResult<Option<CancelResult>>;

    /// Queued jobs whose current attempt was handed to the dispatch queue before `before`
    /// and never claimed: their message may have been lost (a crash between a transition
    /// and its dispatch). Marks each as dispatched at `now` (conditionally, so of several
    /// observers one takes it) and returns the messages to send again. A duplicate message
    /// is harmless: only one claim of an attempt can win.
    async fn redispatch_stale(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u64,
    ) -> PortResult<Vec<Dispatch>>;

    /// Running jobs whose lease ended before `now`.
    async fn expired(&self, now: OffsetDateTime, limit: u64) -> PortResult<Vec<Job>>;

    /// `running → queued` with `attempt + 1`, only if the lease at `attempt` has expired.
    async fn requeue_expired(
        &self,
        id: &JobId,
        attempt: u32,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;

    /// `running → failed` (worker lost) when the lease at `attempt` expired and no attempt is left.
    async fn fail_expired(
        &self,
        id: &JobId,
        attempt: u32,
        outcome: &Outcome,
        now: OffsetDateTime,
    ) -> PortResult<Option<Job>>;
}

/// Keeps observations for `/health/load` and charts.
#[async_trait]
pub trait ObservationStore: Send + Sync {
    async fn record(&self, observation: &Observation) -> PortResult<()>;

    /// The newest `limit` observations, newest first.
    async fn latest(&self, limit: u64) -> PortResult<Vec<Observation>>;

    /// Observations for charts, oldest first: with `since` (milliseconds since the Unix
    /// epoch) the first `limit` after it, so a chart can ask for what is new; without it
    /// the newest `limit`. Adapters answer it with one query; this default serves doubles.
    async fn history(&self, since: Option<i64>, limit: u64) -> PortResult<Vec<Observation>> {
        let mut found = self
            .latest(if since.is_some() { u64::MAX } else { limit })
            .await?;
        found.retain(|o| since.is_none_or(|t| o.timestamp > t));
        found.reverse();
        found.truncate(limit as usize);
        Ok(found)
    }
}

/// Hands jobs to workers.
#[async_trait]
pub trait DispatchQueue: Send + Sync {
    /// Returns once the queue has durably accepted the message.
    async fn dispatch(&self, message: &Dispatch) -> PortResult<()>;
}

/// Carries every state transition and every observation.
#[async_trait]
pub trait EventBus: Send + Sync {
    async fn publish(&self, event: &JobEvent) -> PortResult<()>;
    async fn publish_observation(&self, observation: &Observation) -> PortResult<()>;
}

/// A readable object from the artifact store.
pub struct Artifact {
    pub len: u64,
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Logs and output files. Keys are built by jobq from job ids, never from user input alone.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Uploads a file, streaming it (in parts when large). Returns its size.
    async fn put_file(&self, key: &str, path: &Path) -> PortResult<u64>;

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> PortResult<()>;

    /// Opens an object for streaming; `NotFound` if it does not exist.
    async fn get(&self, key: &str) -> PortResult<Artifact>;

    /// Keys under a prefix, in key order.
    async fn list(&self, prefix: &str) -> PortResult<Vec<String>>;

    async fn delete(&self, key: &str) -> PortResult<()>;
}

/// Who a validated token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name jobs are owned by.
    pub username: String,
    pub subject: String,
    pub roles: Vec<String>,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Validates bearer tokens.
#[async_trait]
pub trait TokenValidator: Send + Sync {
    /// `Unauthorized` for any token that is not valid now.
    async fn validate(&self, token: &str) -> PortResult<Principal>;
}

/// Exchanges a user name and password for an access token.
#[async_trait]
pub trait PasswordLogin: Send + Sync {
    /// `Unauthorized` for wrong credentials.
    async fn login(&self, username: &str, password: &str) -> PortResult<String>;
}

/// What an [`Intake`] offers a worker.
#[derive(Debug)]
pub enum Offer<T> {
    /// A dispatch message naming one attempt of one job; `T` is the intake's handle on it.
    Job(Dispatch, T),
    /// A message that names no job (unreadable): settle it and move on.
    Unreadable(T),
    /// Work may be waiting in the store: a free slot should look now.
    Wake,
}

/// The consumer side of dispatch: where a worker hears of jobs to claim. The store's
/// conditional claim stays the fence; an intake only says which job to try and remembers
/// which offers are done with.
#[async_trait]
pub trait Intake: Send {
    /// The intake's handle on one offer (a Kafka message's partition and offset).
    type Ticket: Send + Sync;

    /// The next offer. Transport errors are the intake's to log and retry; it never ends.
    /// Cancel-safe: dropping the future loses no offer.
    async fn next(&mut self) -> Offer<Self::Ticket>;

    /// Done with this offer: its job was claimed here, or needs nobody (cancelled, taken
    /// by another worker, a stale attempt). Kafka stores the offset only now.
    fn settle(&mut self, ticket: &Self::Ticket);

    /// The offer could not be decided (the store did not answer) or comes after one held
    /// back: offer it again later.
    fn again(&mut self, ticket: &Self::Ticket);

    /// `true` while every slot is busy and the next offer is already in hand: fetch no
    /// more (called every round, so it may be re-applied); `false`: fetch again.
    fn hold(&mut self, full: bool);

    /// How long a queued job waits for its own offer before any free slot claims it from
    /// the store (zero: at once).
    fn claim_waiting_after(&self) -> Duration;

    /// The longest an idle slot waits between two looks in the store.
    fn look_max(&self) -> Duration;

    /// Stopping: make what was settled durable.
    fn close(&mut self);
}
