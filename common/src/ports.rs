//! The ports: small traits for each outside system. Domain logic depends on these,
//! never on a concrete adapter; adapters hold no business rules.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use crate::domain::{Dispatch, Job, JobEvent, Observation};
use crate::error::PortResult;
use crate::plan::Plan;

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

pub use crate::store::{JobCatalog, JobLeases, JobLookup, JobPlanning, JobRecords, JobRecovery};

/// Keeps observations for `/health/load` and charts.
#[async_trait]
pub trait ObservationStore: Send + Sync {
    async fn record(&self, observation: &Observation) -> PortResult<()>;

    /// The newest `limit` observations, newest first.
    async fn latest(&self, limit: u64) -> PortResult<Vec<Observation>>;

    /// Keeps the observer's newest plan (docs/deadlines.md), replacing the one before.
    async fn put_plan(&self, plan: &Plan) -> PortResult<()>;

    /// The newest plan, if an observer made one.
    async fn plan(&self) -> PortResult<Option<Plan>>;

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
    /// The token's other claims that hold a whole number (or its digits as text), by name:
    /// where a user's own limits come from (`scheduling.quota_claim`).
    pub numeric_claims: std::collections::BTreeMap<String, u64>,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The whole-number claims among a token's `others`.
    pub fn numeric(
        others: &std::collections::HashMap<String, serde_json::Value>,
    ) -> std::collections::BTreeMap<String, u64> {
        others
            .iter()
            .filter_map(|(name, value)| {
                let n = match value {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                }?;
                Some((name.clone(), n))
            })
            .collect()
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
