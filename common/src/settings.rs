//! Configuration: defaults, then an optional TOML file (`JOBQ_CONFIG_FILE`, else
//! `jobq.toml` if present), then `JOBQ_` environment variables with `__` for nesting
//! (`JOBQ_KAFKA__BROKERS`). Secrets are wrapped so they never print; a bad value stops
//! startup with a message naming the key.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// Everything a jobq process can be told.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct Settings {
    pub log_format: LogFormat,
    pub kafka: KafkaSettings,
    pub mongo: MongoSettings,
    pub s3: S3Settings,
    pub oidc: OidcSettings,
    pub frontend: FrontendSettings,
    pub worker: WorkerSettings,
    pub metrics: MetricsSettings,
    pub observer: ObserverSettings,
    pub standalone: StandaloneSettings,
    pub scheduling: SchedulingSettings,
}

/// The scheduling rules' limits (docs/scheduling.md); every service reads the same ones.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SchedulingSettings {
    /// Most jobs of one user running at once; none: no limit. A token's `quota_claim`
    /// overrides it for its user.
    pub max_running_per_user: Option<u32>,
    /// Most jobs of one user waiting; none: no limit. A submit over it answers 429.
    pub max_queued_per_user: Option<u64>,
    /// A numeric claim of the access token holding its user's own running limit.
    pub quota_claim: Option<String>,
    /// Share slots between users (start-time fair queueing); off: oldest first.
    pub fair_share: bool,
    /// The first retry's back-off, seconds; it doubles for each further one.
    pub retry_backoff_secs: f64,
    /// The longest back-off between two retries, seconds.
    pub retry_backoff_max_secs: f64,
    /// The most `retries` a submit may ask for.
    pub max_retries: u32,
}

impl Default for SchedulingSettings {
    fn default() -> Self {
        Self {
            max_running_per_user: None,
            max_queued_per_user: None,
            quota_claim: None,
            fair_share: true,
            retry_backoff_secs: 5.0,
            retry_backoff_max_secs: 300.0,
            max_retries: 10,
        }
    }
}

impl SchedulingSettings {
    /// Whether running limits can apply: a claim must then read which slots are held.
    pub fn quotas(&self) -> bool {
        self.max_running_per_user.is_some() || self.quota_claim.is_some()
    }

    pub fn backoff(&self) -> crate::scheduling::Backoff {
        crate::scheduling::Backoff {
            base: std::time::Duration::from_secs_f64(self.retry_backoff_secs),
            max: std::time::Duration::from_secs_f64(self.retry_backoff_max_secs),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub jobs_topic: String,
    pub events_topic: String,
    pub observations_topic: String,
    /// Partitions of the jobs topic when jobq creates it.
    pub partitions: i32,
    pub replication_factor: i32,
    pub worker_group: String,
    pub observer_group: String,
    /// Consumer-group rebalance protocol: `consumer` (KIP-848, Kafka 4.0+) or `classic`.
    pub group_protocol: GroupProtocol,
}

/// Kafka's consumer-group rebalance protocols.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// KIP-848: the broker assigns partitions member by member, no group-wide barrier.
    #[default]
    Consumer,
    /// JoinGroup/SyncGroup with cooperative-sticky assignment (brokers before 4.0).
    Classic,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            jobs_topic: "jobs".into(),
            events_topic: "job-events".into(),
            observations_topic: "observations".into(),
            partitions: 16,
            replication_factor: 1,
            worker_group: "jobq-workers".into(),
            observer_group: "jobq-observer".into(),
            group_protocol: GroupProtocol::Consumer,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct MongoSettings {
    /// May carry a password.
    #[serde(serialize_with = "redacted")]
    pub uri: SecretString,
    pub database: String,
}

impl Default for MongoSettings {
    fn default() -> Self {
        Self {
            uri: SecretString::from("mongodb://127.0.0.1:27017"),
            database: "jobq".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    #[serde(serialize_with = "redacted")]
    pub access_key: SecretString,
    #[serde(serialize_with = "redacted")]
    pub secret_key: SecretString,
    /// Files larger than this are uploaded in parts.
    pub multipart_threshold_bytes: u64,
    pub part_size_bytes: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            bucket: "jobq".into(),
            access_key: SecretString::from(""),
            secret_key: SecretString::from(""),
            multipart_threshold_bytes: 16 * 1024 * 1024,
            part_size_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct OidcSettings {
    /// The realm's issuer URL, e.g. `http://127.0.0.1:8180/realms/jobq`.
    pub issuer: String,
    pub client_id: String,
    #[serde(serialize_with = "redacted")]
    pub client_secret: SecretString,
    /// The audience tokens must carry (or name as `azp`).
    pub audience: String,
    /// Realm role that sees every user's jobs.
    pub admin_role: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The realm's public client the web dashboard signs in with (authorization code + PKCE).
    pub dashboard_client_id: String,
    /// Least time between two JWKS refreshes caused by unknown key ids.
    pub jwks_refresh_cooldown_secs: u64,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8180/realms/jobq".into(),
            client_id: "jobq-frontend".into(),
            client_secret: SecretString::from(""),
            audience: "jobq-frontend".into(),
            admin_role: "admin".into(),
            leeway_secs: 30,
            dashboard_client_id: "jobq-dashboard".into(),
            jwks_refresh_cooldown_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct FrontendSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_config_bytes: usize,
    pub max_args_bytes: usize,
    /// How long a submission retries a job-store write that failed (a store restarting)
    /// before it answers 503.
    pub store_retry_ms: u64,
}

impl Default for FrontendSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            max_config_bytes: 512 * 1024,
            max_args_bytes: 8 * 1024,
            store_retry_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct WorkerSettings {
    /// Jobs run at once; 0 means the number of cores.
    pub slots: usize,
    /// Where jobs and the repository cache live; empty means a folder under the temp dir.
    pub work_dir: PathBuf,
    pub job_timeout_secs: u64,
    pub lease_secs: u64,
    /// How often a running job's lease is renewed (and cancellation noticed).
    pub renew_interval_ms: u64,
    pub max_attempts: u32,
    /// Allow `file://` URLs and loopback/private hosts (tests, standalone).
    pub allow_local_repos: bool,
    /// Cap on each of stdout and stderr as stored.
    pub max_log_bytes: u64,
    /// On SIGTERM, how long running jobs may finish before they are handed back.
    pub shutdown_grace_secs: u64,
    /// Static consumer-group member id (`group.instance.id`), e.g. a pod name.
    pub instance_id: Option<String>,
    /// A queued job whose dispatch message has not been claimed for this long is dispatched
    /// again (the message may have been lost in a crash); duplicates are harmless.
    pub redispatch_after_secs: u64,
    /// A worker with a free slot and no message in hand claims from the store the oldest
    /// queued job that has waited this long, wherever its message is (Kafka mode).
    pub claim_waiting_after_ms: u64,
    /// The fleet's idle workers together look in the store about this many times a second
    /// at most: an idle worker backs off to `members / budget` seconds between looks (never
    /// less than 0.5 s), `members` being the group size it infers from its share of partitions.
    pub claim_waiting_budget_per_sec: f64,
    /// Folders jobs may write besides their own (e.g. a shared scratch volume): bound
    /// read-write into every sandbox at the same path. A list; in one string (an environment
    /// variable) joined with `:`.
    #[serde(with = "path_list")]
    pub extra_writable_dirs: Vec<PathBuf>,
    /// `bubblewrap`: every job in its own sandbox (the worker refuses to start if it cannot
    /// build one); `off`: jobs run as the worker's user, seeing its files (a warning at start
    /// and on every job).
    pub sandbox: SandboxMode,
    /// `host`: jobs reach the network (start scripts run `npm install`); `none`: an empty
    /// network namespace (only its own loopback).
    pub job_network: JobNetwork,
    /// Memory of all a job's processes together, MiB.
    pub memory_limit_mb: u64,
    /// Processes (and threads) a job may have at once.
    pub max_processes: u64,
    /// Bytes a job may leave under `output/`, in total, MiB; over it the job fails and
    /// nothing of its output is uploaded.
    pub max_output_mb: u64,
    /// Size of a job's whole folder (checkout, dependencies, outputs), MiB.
    pub max_job_dir_mb: u64,
    /// Size of each of a job's private `/tmp`, `/var/tmp` and `/dev/shm`, MiB.
    pub tmpfs_size_mb: u64,
    /// First of the user ids jobs run as when the worker is root (one per running job);
    /// for a non-root worker the id jobs see inside their user namespace.
    pub job_uid: u32,
    /// Read-only paths bound into every sandbox beside the toolchain (e.g. a Node.js installed
    /// outside `/usr`). A list; in one string (an environment variable) joined with `:`.
    #[serde(with = "path_list")]
    pub sandbox_ro_paths: Vec<PathBuf>,
    /// The bubblewrap executable.
    pub bwrap: PathBuf,
    /// How long a finished run's logs and outputs are retried while the artifact store is
    /// unavailable; after that the job is handed back for another attempt.
    pub upload_retry_secs: u64,
    /// Files of a run stored at once when it ends (its logs and outputs), at least 1.
    pub upload_concurrency: usize,
    /// A job's repository is fetched again unless the worker's mirror of it was last fetched
    /// by a fetch that started after the job's submission, or at most this long before it, ms.
    /// 0 (the default) keeps the rule exact: a job never runs an older repository than the
    /// one at its submission; above 0, a push made that long before a submit may be missed.
    pub repo_fetch_slack_ms: u64,
}

/// Whether jobs run in a sandbox.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    #[default]
    Bubblewrap,
    Off,
}

/// The network a job sees.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobNetwork {
    #[default]
    Host,
    None,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            slots: 0,
            work_dir: PathBuf::new(),
            job_timeout_secs: 30 * 60,
            lease_secs: 8,
            renew_interval_ms: 1000,
            max_attempts: 3,
            allow_local_repos: false,
            max_log_bytes: 16 * 1024 * 1024,
            shutdown_grace_secs: 30,
            instance_id: None,
            redispatch_after_secs: 600,
            claim_waiting_after_ms: 100,
            claim_waiting_budget_per_sec: 100.0,
            extra_writable_dirs: Vec::new(),
            sandbox: SandboxMode::Bubblewrap,
            job_network: JobNetwork::Host,
            memory_limit_mb: 2048,
            max_processes: 256,
            max_output_mb: 1024,
            max_job_dir_mb: 4096,
            tmpfs_size_mb: 256,
            job_uid: 10001,
            sandbox_ro_paths: Vec::new(),
            bwrap: PathBuf::from("bwrap"),
            upload_retry_secs: 60,
            upload_concurrency: 4,
            repo_fetch_slack_ms: 0,
        }
    }
}

/// How often the lease reaper sweeps: a fifth of the lease, between 0.5 s and 2 s. A lost
/// worker's job is then queued again at most lease + 2 s after its last renewal; the sweep is
/// one indexed query per observer, whatever the number of running jobs.
pub fn sweep_interval(worker: &WorkerSettings) -> std::time::Duration {
    let ms = (worker.lease_secs * 1000 / 5).clamp(500, 2000);
    std::time::Duration::from_millis(ms)
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default)]
pub struct MetricsSettings {
    /// Address of the metrics/health endpoint of workers and observers; none when unset.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ObserverSettings {
    pub refresh_rate_secs: f64,
    pub policy: PolicyKind,
    pub scaler: ScalerKind,
    pub min_workers: u32,
    pub max_workers: u32,
    pub target_wait_secs: f64,
    pub docker_host: String,
    pub docker_project: String,
    pub docker_service: String,
    pub k8s_namespace: String,
    pub k8s_deployment: String,
    pub kumori_command: String,
    /// `lag` policy: queued messages one worker is expected to absorb (KEDA's `lagThreshold`).
    pub lag_threshold: u64,
    /// `queueing` policy: the share of jobs allowed to wait longer than `target_wait_secs`.
    pub wait_fraction: f64,
    /// Scale down only to the highest count wanted during this many seconds (scale up is immediate).
    pub stabilisation_secs: f64,
    /// Cap on the fleet's average size: worker-seconds per hour (0 = no budget).
    pub budget_worker_seconds_per_hour: f64,
    /// Job slots of each worker the observer plans for and starts (0 = `worker.slots`, else cores).
    pub slots_per_worker: u32,
    /// `local` scaler: the worker command, split into words (no shell); empty = this executable's
    /// `worker` subcommand (or the sibling `jobq-worker` binary for `jobq-observer`).
    pub worker_command: String,
    /// `kubernetes` scaler: API server URL; empty = in-cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub k8s_api_url: String,
    /// `kubernetes` scaler: the service-account token file.
    pub k8s_token_file: PathBuf,
    /// `kubernetes` scaler: CA bundle of the API server (ignored for `http://` URLs).
    pub k8s_ca_file: PathBuf,
    /// `docker` scaler: seconds Docker waits after SIGTERM before SIGKILL when it stops a worker.
    pub docker_stop_timeout_secs: u64,
    /// Grow the jobs topic before the fleet's slots would exceed half its partitions.
    pub grow_partitions: bool,
    /// Seconds from asking for a worker to its first job, as the plan assumes.
    pub worker_startup_secs: f64,
    /// How many waiting jobs (in scheduling order) each period's plan covers.
    pub plan_jobs: u64,
}

impl Default for ObserverSettings {
    fn default() -> Self {
        Self {
            refresh_rate_secs: 2.0,
            policy: PolicyKind::Queueing,
            scaler: ScalerKind::Log,
            min_workers: 1,
            max_workers: 10,
            target_wait_secs: 10.0,
            docker_host: "unix:///var/run/docker.sock".into(),
            docker_project: "jobq".into(),
            docker_service: "worker".into(),
            k8s_namespace: "jobq".into(),
            k8s_deployment: "jobq-worker".into(),
            kumori_command: String::new(),
            lag_threshold: 5,
            wait_fraction: 0.05,
            stabilisation_secs: 30.0,
            budget_worker_seconds_per_hour: 0.0,
            slots_per_worker: 0,
            worker_command: String::new(),
            k8s_api_url: String::new(),
            k8s_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            k8s_ca_file: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into(),
            docker_stop_timeout_secs: 60,
            grow_partitions: true,
            worker_startup_secs: 5.0,
            plan_jobs: 2000,
        }
    }
}

/// `observer.policy`: how the observer decides the number of workers.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum PolicyKind {
    /// The seed design's rule: queued jobs over slots, within min and max.
    Seed,
    /// KEDA's: queued messages over `observer.lag_threshold`.
    Lag,
    /// An M/M/c model: enough slots that at most `wait_fraction` of jobs wait longer than
    /// `target_wait_secs`.
    #[default]
    Queueing,
    /// `queueing`, and at least the fewest workers for which every waiting job with a
    /// deadline is predicted to finish by it (docs/deadlines.md).
    Deadline,
}

impl PolicyKind {
    /// The name as written in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Seed => "seed",
            PolicyKind::Lag => "lag",
            PolicyKind::Queueing => "queueing",
            PolicyKind::Deadline => "deadline",
        }
    }
}

impl TryFrom<String> for PolicyKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Ok(match name.as_str() {
            "seed" => PolicyKind::Seed,
            "lag" => PolicyKind::Lag,
            "queueing" => PolicyKind::Queueing,
            "deadline" => PolicyKind::Deadline,
            other => {
                return Err(format!(
                    "unknown policy {other:?} (seed, lag, queueing or deadline)"
                ));
            }
        })
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `observer.scaler`: what changes the number of workers.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ScalerKind {
    /// Only logs the decision.
    #[default]
    Log,
    /// Starts and stops worker processes on this host.
    Local,
    /// Scales a Docker Compose service through the Docker API.
    Docker,
    /// Scales a Deployment through its scale subresource (`k8s` is accepted too).
    Kubernetes,
    /// Runs `observer.kumori_command` with the desired count.
    Kumori,
}

impl ScalerKind {
    /// The name as written in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            ScalerKind::Log => "log",
            ScalerKind::Local => "local",
            ScalerKind::Docker => "docker",
            ScalerKind::Kubernetes => "kubernetes",
            ScalerKind::Kumori => "kumori",
        }
    }
}

impl TryFrom<String> for ScalerKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Ok(match name.as_str() {
            "log" => ScalerKind::Log,
            "local" => ScalerKind::Local,
            "docker" => ScalerKind::Docker,
            "kubernetes" | "k8s" => ScalerKind::Kubernetes,
            "kumori" => ScalerKind::Kumori,
            other => {
                return Err(format!(
                    "unknown scaler {other:?} (log, local, docker, kubernetes or kumori)"
                ));
            }
        })
    }
}

impl std::fmt::Display for ScalerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `jobq standalone`: everything in one process on embedded backends.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct StandaloneSettings {
    /// State (SQLite), artifacts and the token signing key live here.
    pub data_dir: PathBuf,
    /// Users of the built-in issuer, each `name:password[:role,role]`; a password may be an
    /// Argon2 PHC string instead of plain text. A list; in one string (an environment
    /// variable) separated by spaces.
    #[serde(with = "word_list")]
    pub users: Vec<String>,
    /// Lifetime of issued tokens.
    pub token_lifetime_secs: u64,
    /// Accept `file://` URLs, paths and local git servers (the point of a local install).
    pub allow_local_repos: bool,
}

impl Default for StandaloneSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("jobq-data"),
            users: ["myuser:1234", "otheruser:abcd", "admin:admin:admin"]
                .map(String::from)
                .to_vec(),
            token_lifetime_secs: 3600,
            allow_local_repos: true,
        }
    }
}

/// A list setting, read from a TOML array or from one string (what an environment variable
/// holds) split at a separator; empty items are dropped. It is written back as that one
/// string, so [`Settings::env_defaults`] shows each default as its variable would hold it.
#[derive(Deserialize)]
#[serde(untagged)]
enum ListForm {
    Joined(String),
    Items(Vec<String>),
}

impl ListForm {
    fn items(self, split: fn(&str) -> Vec<String>) -> Vec<String> {
        match self {
            ListForm::Joined(text) => split(&text),
            ListForm::Items(items) => items.into_iter().filter(|i| !i.is_empty()).collect(),
        }
    }
}

/// Paths: a TOML array, or one string joined with `:` as in `PATH`.
mod path_list {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::ListForm;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        let items = ListForm::deserialize(d)?.items(|text| {
            text.split(':')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        });
        Ok(items.into_iter().map(PathBuf::from).collect())
    }

    pub fn serialize<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let joined: Vec<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        s.serialize_str(&joined.join(":"))
    }
}

/// Words: a TOML array, or one string separated by whitespace.
mod word_list {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ListForm;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(ListForm::deserialize(d)?
            .items(|text| text.split_whitespace().map(String::from).collect()))
    }

    pub fn serialize<S: Serializer>(words: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&words.join(" "))
    }
}

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(String);

/// What a secret serializes as, so that a serialized [`Settings`] never carries one.
pub const REDACTED: &str = "[redacted]";

fn redacted<S: Serializer>(_: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(REDACTED)
}

impl Settings {
    /// Loads from the process environment (and the optional file).
    pub fn load() -> Result<Self, SettingsError> {
        Self::load_from(std::env::vars())
    }

    /// Loads from the given environment variables (and the optional file they name). An
    /// empty variable of a key that is unset by default (`JOBQ_SCHEDULING__QUOTA_CLAIM=`)
    /// leaves it unset, as the compose file's `${VAR:-}` passes a variable `.env` leaves out.
    pub fn load_from(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let optional: std::collections::HashSet<String> = Self::env_defaults()
            .into_iter()
            .filter(|(_, default)| default.is_null())
            .map(|(name, _)| name)
            .collect();
        let vars: std::collections::HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("JOBQ_"))
            .filter(|(k, v)| !(v.is_empty() && optional.contains(k)))
            .collect();
        let mut builder = config::Config::builder();
        match vars.get("JOBQ_CONFIG_FILE") {
            Some(path) => {
                builder = builder.add_source(config::File::with_name(path).required(true))
            }
            None => {
                builder = builder.add_source(config::File::with_name("jobq.toml").required(false))
            }
        }
        let env_source = config::Environment::with_prefix("JOBQ")
            .prefix_separator("_")
            .separator("__")
            .source(Some(
                vars.into_iter()
                    .filter(|(k, _)| k != "JOBQ_CONFIG_FILE")
                    .collect(),
            ));
        let built = builder
            .add_source(env_source)
            .build()
            .map_err(|e| SettingsError(e.to_string()))?;
        let settings: Settings = built
            .try_deserialize()
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    /// Every configuration key as its environment variable (`JOBQ_WORKER__SLOTS`) with its
    /// default (`null` when unset, [`REDACTED`] for secrets). Derived from the structure by
    /// serializing the defaults, so a new field is listed without anyone adding it here.
    pub fn env_defaults() -> Vec<(String, serde_json::Value)> {
        fn walk(
            prefix: &str,
            value: serde_json::Value,
            out: &mut Vec<(String, serde_json::Value)>,
        ) {
            let serde_json::Value::Object(fields) = value else {
                unreachable!("only structs nest")
            };
            for (field, value) in fields {
                let name = format!("{prefix}{}", field.to_uppercase());
                match value {
                    serde_json::Value::Object(_) => walk(&format!("{name}__"), value, out),
                    leaf => out.push((name, leaf)),
                }
            }
        }
        let mut out = Vec::new();
        let defaults = serde_json::to_value(Settings::default()).expect("settings serialize");
        walk("JOBQ_", defaults, &mut out);
        out
    }

    /// Rules serde cannot express.
    fn check(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: &str| Err(SettingsError(format!("{why} for key `{key}`")));
        if self.kafka.partitions < 1 {
            return bad("kafka.partitions", "must be at least 1");
        }
        if self.worker.lease_secs == 0 {
            return bad("worker.lease_secs", "must be at least 1");
        }
        let budget = self.worker.claim_waiting_budget_per_sec;
        if budget.is_nan() || budget <= 0.0 {
            return bad(
                "worker.claim_waiting_budget_per_sec",
                "must be a number above 0",
            );
        }
        // A worker that cannot renew stops its job two intervals before the lease runs out,
        // so the lease must hold more than two of them.
        if self.worker.renew_interval_ms == 0
            || 2 * self.worker.renew_interval_ms >= self.worker.lease_secs * 1000
        {
            return bad(
                "worker.renew_interval_ms",
                "must be above 0 and below half the lease",
            );
        }
        if self.worker.max_attempts == 0 {
            return bad("worker.max_attempts", "must be at least 1");
        }
        let (base, max) = (
            self.scheduling.retry_backoff_secs,
            self.scheduling.retry_backoff_max_secs,
        );
        if !(0.0..=86_400.0).contains(&base) {
            return bad(
                "scheduling.retry_backoff_secs",
                "must be between 0 and 86400",
            );
        }
        if !(base..=86_400.0).contains(&max) {
            return bad(
                "scheduling.retry_backoff_max_secs",
                "must be between retry_backoff_secs and 86400",
            );
        }
        if self.scheduling.max_running_per_user == Some(0) {
            return bad("scheduling.max_running_per_user", "must be at least 1");
        }
        if self.scheduling.quota_claim.as_deref() == Some("") {
            return bad("scheduling.quota_claim", "must name a claim");
        }
        for (key, value) in [
            ("worker.memory_limit_mb", self.worker.memory_limit_mb),
            ("worker.max_processes", self.worker.max_processes),
            ("worker.max_output_mb", self.worker.max_output_mb),
            ("worker.max_job_dir_mb", self.worker.max_job_dir_mb),
            ("worker.tmpfs_size_mb", self.worker.tmpfs_size_mb),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if self.worker.job_uid == 0 {
            return bad("worker.job_uid", "must not be 0 (root)");
        }
        if self.observer.min_workers > self.observer.max_workers {
            return bad(
                "observer.min_workers",
                "must not exceed observer.max_workers",
            );
        }
        if !self.observer.refresh_rate_secs.is_finite() || self.observer.refresh_rate_secs <= 0.0 {
            return bad("observer.refresh_rate_secs", "must be above 0");
        }
        if !(self.observer.wait_fraction > 0.0 && self.observer.wait_fraction < 1.0) {
            return bad(
                "observer.wait_fraction",
                "must be between 0 and 1 (exclusive)",
            );
        }
        if self.observer.lag_threshold == 0 {
            return bad("observer.lag_threshold", "must be at least 1");
        }
        if !self.observer.stabilisation_secs.is_finite() || self.observer.stabilisation_secs < 0.0 {
            return bad("observer.stabilisation_secs", "must be 0 or more");
        }
        if !self.observer.budget_worker_seconds_per_hour.is_finite()
            || self.observer.budget_worker_seconds_per_hour < 0.0
        {
            return bad(
                "observer.budget_worker_seconds_per_hour",
                "must be 0 (no budget) or more",
            );
        }
        if !self.observer.worker_startup_secs.is_finite() || self.observer.worker_startup_secs < 0.0
        {
            return bad("observer.worker_startup_secs", "must be 0 or more");
        }
        if self.observer.plan_jobs == 0 || self.observer.plan_jobs > 100_000 {
            return bad("observer.plan_jobs", "must be between 1 and 100000");
        }
        if self.s3.part_size_bytes < 5 * 1024 * 1024 {
            return bad("s3.part_size_bytes", "must be at least 5 MiB (an S3 rule)");
        }
        Ok(())
    }

    /// Slots of each worker the observer plans for: `observer.slots_per_worker`, else
    /// [`Settings::worker_slots`].
    pub fn observer_slots_per_worker(&self) -> u32 {
        if self.observer.slots_per_worker > 0 {
            self.observer.slots_per_worker
        } else {
            self.worker_slots() as u32
        }
    }

    /// Slots to use: the configured number, or the number of cores.
    pub fn worker_slots(&self) -> usize {
        if self.worker.slots > 0 {
            self.worker.slots
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_variable_leaves_an_optional_key_unset() {
        let s = Settings::load_from([
            (
                "JOBQ_SCHEDULING__MAX_RUNNING_PER_USER".to_string(),
                String::new(),
            ),
            ("JOBQ_SCHEDULING__QUOTA_CLAIM".to_string(), String::new()),
            (
                "JOBQ_SCHEDULING__MAX_QUEUED_PER_USER".to_string(),
                "5".to_string(),
            ),
        ])
        .unwrap();
        assert_eq!(s.scheduling.max_running_per_user, None);
        assert_eq!(s.scheduling.quota_claim, None);
        assert_eq!(s.scheduling.max_queued_per_user, Some(5));
        let bad =
            Settings::load_from([("JOBQ_SCHEDULING__MAX_RETRIES".to_string(), String::new())]);
        assert!(
            bad.is_err(),
            "an empty value of a key with a default is still refused"
        );
    }

    #[test]
    fn defaults_apply_without_any_variable() {
        let s = Settings::load_from(env(&[])).unwrap();
        assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(s.kafka.jobs_topic, "jobs");
        assert_eq!(s.frontend.listen.port(), 8080);
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = Settings::load_from(env(&[
            ("JOBQ_KAFKA__BROKERS", "k1:9092,k2:9092"),
            ("JOBQ_WORKER__SLOTS", "3"),
            ("JOBQ_WORKER__ALLOW_LOCAL_REPOS", "true"),
            ("JOBQ_LOG_FORMAT", "json"),
            ("JOBQ_S3__SECRET_KEY", "hunter2"),
            ("JOBQ_KAFKA__JOBS_TOPIC", "jobs-42"),
        ]))
        .unwrap();
        assert_eq!(s.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(s.kafka.jobs_topic, "jobs-42");
        assert_eq!(s.worker.slots, 3);
        assert!(s.worker.allow_local_repos);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.s3.secret_key.expose_secret(), "hunter2");
    }

    #[test]
    fn the_sweep_runs_every_fifth_of_the_lease_within_bounds() {
        let lease = |secs| WorkerSettings {
            lease_secs: secs,
            ..WorkerSettings::default()
        };
        assert_eq!(sweep_interval(&lease(8)).as_millis(), 1600);
        assert_eq!(sweep_interval(&lease(5)).as_millis(), 1000);
        assert_eq!(sweep_interval(&lease(1)).as_millis(), 500);
        assert_eq!(sweep_interval(&lease(600)).as_millis(), 2000);
    }

    #[test]
    fn the_renewal_interval_must_fit_twice_in_the_lease() {
        let err = Settings::load_from(env(&[
            ("JOBQ_WORKER__LEASE_SECS", "4"),
            ("JOBQ_WORKER__RENEW_INTERVAL_MS", "2000"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("worker.renew_interval_ms"),
            "{err}"
        );
        Settings::load_from(env(&[
            ("JOBQ_WORKER__LEASE_SECS", "5"),
            ("JOBQ_WORKER__RENEW_INTERVAL_MS", "2000"),
        ]))
        .unwrap();
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::load_from(env(&[
            ("JOBQ_S3__SECRET_KEY", "hunter2"),
            ("JOBQ_MONGO__URI", "mongodb://u:pw-secret@h"),
            ("JOBQ_OIDC__CLIENT_SECRET", "cs-secret"),
        ]))
        .unwrap();
        let printed = format!("{s:?}");
        for secret in ["hunter2", "pw-secret", "cs-secret"] {
            assert!(!printed.contains(secret), "{secret} leaked in {printed}");
        }
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = Settings::load_from(env(&[("JOBQ_WORKER__SLOTS", "many")])).unwrap_err();
        assert!(err.to_string().contains("worker.slots"), "{err}");
        let err = Settings::load_from(env(&[("JOBQ_FRONTEND__LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("frontend.listen"), "{err}");
        let err = Settings::load_from(env(&[("JOBQ_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("log_format"), "{err}");
        let err = Settings::load_from(env(&[
            ("JOBQ_OBSERVER__MIN_WORKERS", "5"),
            ("JOBQ_OBSERVER__MAX_WORKERS", "2"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("observer.min_workers"), "{err}");
    }

    #[test]
    fn the_policy_and_the_scaler_are_parsed_at_start_up_and_a_bad_one_names_its_key() {
        let s = Settings::load_from(env(&[
            ("JOBQ_OBSERVER__POLICY", "lag"),
            ("JOBQ_OBSERVER__SCALER", "k8s"),
        ]))
        .unwrap();
        assert_eq!(s.observer.policy, PolicyKind::Lag);
        assert_eq!(s.observer.scaler, ScalerKind::Kubernetes);
        let defaults = Settings::load_from(env(&[])).unwrap();
        assert_eq!(defaults.observer.policy, PolicyKind::Queueing);
        assert_eq!(defaults.observer.scaler, ScalerKind::Log);
        let err = Settings::load_from(env(&[("JOBQ_OBSERVER__POLICY", "magic")])).unwrap_err();
        assert!(err.to_string().contains("observer.policy"), "{err}");
        assert!(
            err.to_string().contains("queueing"),
            "the choices are listed: {err}"
        );
        let err = Settings::load_from(env(&[("JOBQ_OBSERVER__SCALER", "nomad")])).unwrap_err();
        assert!(err.to_string().contains("observer.scaler"), "{err}");
        assert!(
            err.to_string().contains("kubernetes"),
            "the choices are listed: {err}"
        );
    }

    #[test]
    fn lists_are_lists_from_a_variable_or_a_file() {
        let s = Settings::load_from(env(&[
            ("JOBQ_WORKER__EXTRA_WRITABLE_DIRS", "/scratch:/shared/x:"),
            ("JOBQ_STANDALONE__USERS", " a:1  b:2:admin "),
        ]))
        .unwrap();
        assert_eq!(
            s.worker.extra_writable_dirs,
            [PathBuf::from("/scratch"), PathBuf::from("/shared/x")]
        );
        assert!(s.worker.sandbox_ro_paths.is_empty());
        assert_eq!(s.standalone.users, ["a:1", "b:2:admin"]);
        let dir = std::env::temp_dir().join(format!("jobq-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jobq.toml");
        std::fs::write(
            &file,
            "[worker]\nsandbox_ro_paths = [\"/opt/node\", \"/opt/a:b\"]\n\
             [standalone]\nusers = [\"c:3\"]\n",
        )
        .unwrap();
        let s = Settings::load_from(env(&[("JOBQ_CONFIG_FILE", file.to_str().unwrap())])).unwrap();
        assert_eq!(
            s.worker.sandbox_ro_paths,
            [PathBuf::from("/opt/node"), PathBuf::from("/opt/a:b")]
        );
        assert_eq!(s.standalone.users, ["c:3"]);
        std::fs::remove_dir_all(dir).unwrap();
        let defaults: std::collections::HashMap<_, _> =
            Settings::env_defaults().into_iter().collect();
        assert_eq!(
            defaults["JOBQ_STANDALONE__USERS"],
            "myuser:1234 otheruser:abcd admin:admin:admin"
        );
        assert_eq!(defaults["JOBQ_WORKER__EXTRA_WRITABLE_DIRS"], "");
    }

    #[test]
    fn a_config_file_is_read_and_the_environment_wins() {
        let dir = std::env::temp_dir().join(format!("jobq-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jobq.toml");
        std::fs::write(
            &file,
            "[kafka]\nbrokers = \"file:9092\"\njobs_topic = \"from-file\"\n",
        )
        .unwrap();
        let s = Settings::load_from(env(&[
            ("JOBQ_CONFIG_FILE", file.to_str().unwrap()),
            ("JOBQ_KAFKA__BROKERS", "env:9092"),
        ]))
        .unwrap();
        assert_eq!(s.kafka.brokers, "env:9092");
        assert_eq!(s.kafka.jobs_topic, "from-file");
        let missing = Settings::load_from(env(&[("JOBQ_CONFIG_FILE", "/nonexistent/jobq.toml")]));
        assert!(missing.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
