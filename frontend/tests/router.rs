//! Router tests: the whole application driven with `oneshot`, on the SQLite job store (in
//! memory, behind the faults a test sets) and the in-memory doubles below for the other
//! ports. These doubles exist for these tests only; the suites against the real servers live
//! in the workspace's `tests/` crate.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use jobq_common::domain::{
    Dispatch, FailureReason, Job, JobEvent, JobId, JobSpec, JobStatus, Observation, Outcome,
    artifact_keys,
};
use jobq_common::embedded::SqliteStore;
use jobq_common::ports::{
    Artifact, ArtifactStore, CancelResult, DispatchQueue, EventBus, JobCatalog, JobLeases,
    JobLookup, JobPage, ObservationStore, Page, PasswordLogin, Principal, TokenValidator,
};
use jobq_common::settings::FrontendSettings;
use jobq_common::store::Held;
use jobq_common::{PortError, PortResult};
use jobq_frontend::openapi::ApiDoc;
use jobq_frontend::{AppState, metrics_handle, router};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tower::ServiceExt;
use utoipa::OpenApi;

// ---- doubles -------------------------------------------------------------------------

/// The SQLite job store behind the faults a test sets: a store that is down, restarting,
/// or that loses the answer to a write it made.
struct FaultyStore {
    inner: SqliteStore,
    unavailable: AtomicBool,
    /// Inserts that fail as unavailable before the store answers again (a restart).
    inserts_failing: AtomicU32,
    /// Inserts that are stored but whose answer is lost (unavailable after the write).
    inserts_answer_lost: AtomicU32,
    inserts_tried: AtomicU32,
}

impl FaultyStore {
    fn new() -> Self {
        FaultyStore {
            inner: SqliteStore::in_memory().unwrap(),
            unavailable: AtomicBool::new(false),
            inserts_failing: AtomicU32::new(0),
            inserts_answer_lost: AtomicU32::new(0),
            inserts_tried: AtomicU32::new(0),
        }
    }

    fn check(&self) -> PortResult<()> {
        if self.unavailable.load(Ordering::SeqCst) {
            Err(PortError::unavailable("mongo down"))
        } else {
            Ok(())
        }
    }

    async fn job(&self, id: &str) -> Job {
        let id: JobId = id.parse().unwrap();
        self.inner.get(&id).await.unwrap().expect("stored")
    }

    /// Every stored job, newest first.
    async fn all(&self) -> Vec<Job> {
        let everything = Page {
            offset: 0,
            limit: u64::MAX >> 1,
        };
        self.inner.list(None, everything).await.unwrap().jobs
    }

    async fn count(&self) -> usize {
        self.all().await.len()
    }
}

#[async_trait]
impl JobLookup for FaultyStore {
    async fn get(&self, id: &JobId) -> PortResult<Option<Job>> {
        self.check()?;
        self.inner.get(id).await
    }
}

#[async_trait]
impl JobCatalog for FaultyStore {
    async fn insert(&self, job: &Job) -> PortResult<()> {
        self.inserts_tried.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        let take = |n: &AtomicU32| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                .is_ok()
        };
        if take(&self.inserts_failing) {
            return Err(PortError::unavailable("mongo restarting"));
        }
        self.inner.insert(job).await?;
        if take(&self.inserts_answer_lost) {
            return Err(PortError::unavailable("connection reset after the write"));
        }
        Ok(())
    }

    async fn list_in_status(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        page: Page,
    ) -> PortResult<JobPage> {
        self.check()?;
        self.inner.list_in_status(owner, status, page).await
    }

    async fn cancel(&self, id: &JobId, now: OffsetDateTime) -> PortResult<Option<CancelResult>> {
        self.check()?;
        self.inner.cancel(id, now).await
    }

    async fn fair_tag(&self, owner: &str, weight: f64, now: OffsetDateTime) -> PortResult<f64> {
        self.check()?;
        self.inner.fair_tag(owner, weight, now).await
    }

    async fn queued_of(&self, owner: &str) -> PortResult<u64> {
        self.check()?;
        self.inner.queued_of(owner).await
    }
}

#[async_trait]
impl ObservationStore for FaultyStore {
    async fn record(&self, observation: &Observation) -> PortResult<()> {
        self.inner.record(observation).await
    }

    async fn latest(&self, limit: u64) -> PortResult<Vec<Observation>> {
        self.check()?;
        self.inner.latest(limit).await
    }

    async fn history(&self, since: Option<i64>, limit: u64) -> PortResult<Vec<Observation>> {
        self.check()?;
        self.inner.history(since, limit).await
    }

    async fn put_plan(&self, plan: &jobq_common::plan::Plan) -> PortResult<()> {
        self.inner.put_plan(plan).await
    }

    async fn plan(&self) -> PortResult<Option<jobq_common::plan::Plan>> {
        self.check()?;
        self.inner.plan().await
    }
}

#[derive(Default)]
struct FakeQueue {
    sent: Mutex<Vec<Dispatch>>,
    down: AtomicBool,
}

#[async_trait]
impl DispatchQueue for FakeQueue {
    async fn dispatch(&self, message: &Dispatch) -> PortResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::unavailable("kafka down"));
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(())
    }
}

#[derive(Default)]
struct FakeBus {
    events: Mutex<Vec<JobEvent>>,
}

#[async_trait]
impl EventBus for FakeBus {
    async fn publish(&self, event: &JobEvent) -> PortResult<()> {
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }

    async fn publish_observation(&self, _: &Observation) -> PortResult<()> {
        Ok(())
    }
}

fn unused<T>() -> PortResult<T> {
    Err(PortError::internal("not used by the frontend"))
}

#[derive(Default)]
struct MemoryArtifacts {
    objects: Mutex<HashMap<String, Vec<u8>>>,
}

#[async_trait]
impl ArtifactStore for MemoryArtifacts {
    async fn put_file(&self, _: &str, _: &Path) -> PortResult<u64> {
        unused()
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> PortResult<()> {
        self.objects.lock().unwrap().insert(key.into(), bytes);
        Ok(())
    }

    async fn get(&self, key: &str) -> PortResult<Artifact> {
        let bytes = self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| PortError::not_found(key))?;
        Ok(Artifact {
            len: bytes.len() as u64,
            body: Box::pin(std::io::Cursor::new(bytes)),
        })
    }

    async fn list(&self, prefix: &str) -> PortResult<Vec<String>> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn delete(&self, key: &str) -> PortResult<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
}

/// Tokens are `token-<user>`; `token-admin` carries the admin role.
struct FakeIdentity;

#[async_trait]
impl TokenValidator for FakeIdentity {
    async fn validate(&self, token: &str) -> PortResult<Principal> {
        let user = token
            .strip_prefix("token-")
            .ok_or_else(|| PortError::new(jobq_common::ErrorKind::Unauthorized, "bad token"))?;
        Ok(Principal {
            numeric_claims: Default::default(),
            username: user.into(),
            subject: format!("sub-{user}"),
            roles: if user == "admin" {
                vec!["admin".into()]
            } else {
                vec![]
            },
        })
    }
}

#[async_trait]
impl PasswordLogin for FakeIdentity {
    async fn login(&self, username: &str, password: &str) -> PortResult<String> {
        match (username, password) {
            ("alice", "pw") | ("bob", "pw") | ("admin", "admin") | ("ü ser", "p/w") => {
                Ok(format!("token-{username}"))
            }
            _ => Err(PortError::new(
                jobq_common::ErrorKind::Unauthorized,
                "wrong user name or password",
            )),
        }
    }
}

// ---- harness -------------------------------------------------------------------------

const ALICE: &str = "token-alice";
const BOB: &str = "token-bob";
const ADMIN: &str = "token-admin";

struct Harness {
    app: Router,
    store: Arc<FaultyStore>,
    queue: Arc<FakeQueue>,
    bus: Arc<FakeBus>,
    artifacts: Arc<MemoryArtifacts>,
    live: jobq_frontend::LiveEvents,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    /// A JSON error answer with this status.
    fn assert_error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {body}"))
            .to_string()
    }
}

fn limits() -> FrontendSettings {
    FrontendSettings {
        max_body_bytes: 1024 * 1024,
        max_config_bytes: 64 * 1024,
        max_args_bytes: 1024,
        store_retry_ms: 1500,
        ..FrontendSettings::default()
    }
}

fn harness() -> Harness {
    let store = Arc::new(FaultyStore::new());
    let queue = Arc::new(FakeQueue::default());
    let bus = Arc::new(FakeBus::default());
    let artifacts = Arc::new(MemoryArtifacts::default());
    let identity = Arc::new(FakeIdentity);
    let state = AppState {
        jobs: store.clone(),
        idempotency: Arc::new(store.inner.clone()),
        dispatch: queue.clone(),
        events: bus.clone(),
        artifacts: artifacts.clone(),
        observations: store.clone(),
        tokens: identity.clone(),
        login: identity,
        limits: limits(),
        admin_role: "admin".into(),
        allow_local_repos: false,
        scheduling: Default::default(),
        fair_clock: Default::default(),
        plans: Default::default(),
        metrics: metrics_handle(),
        live: jobq_frontend::LiveEvents::new(),
        dashboard: jobq_frontend::Dashboard::form(&Default::default()),
    };
    Harness {
        live: state.live.clone(),
        app: router(state),
        store,
        queue,
        bus,
        artifacts,
    }
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Body) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(req.body(body).unwrap()).await
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, uri, token, Body::empty()).await
    }

    async fn post_json(&self, uri: &str, token: &str, body: impl Into<Body>) -> Answer {
        let req = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        self.send(req).await
    }

    async fn add_job(&self, token: &str, body: Value) -> Answer {
        self.post_json("/api/addJob", token, body.to_string()).await
    }

    /// Puts a job straight into the store; a running one is held by worker `w` at attempt 1.
    async fn seed(&self, owner: &str, status: JobStatus, files: &[&str]) -> Job {
        self.seed_with(owner, status, files, |_| {}).await
    }

    /// Like [`seed`](Self::seed), with `adjust` applied to the job before it is stored.
    async fn seed_with(
        &self,
        owner: &str,
        status: JobStatus,
        files: &[&str],
        adjust: impl FnOnce(&mut Job),
    ) -> Job {
        let spec = JobSpec {
            url: "https://user:s3cret@github.com/x/y.git".into(),
            args: "--n 3".into(),
            config: "{}".into(),
        };
        let mut job = Job::new(owner, spec, OffsetDateTime::now_utc());
        job.status = status;
        job.output_files = files.iter().map(|f| f.to_string()).collect();
        if status == JobStatus::Running {
            job.lease_owner = Some("w".into());
            job.lease_expires_at = Some(job.created_at + Duration::from_secs(3600));
            job.started_at = Some(job.created_at);
        }
        adjust(&mut job);
        self.store.inner.insert(&job).await.unwrap();
        job
    }

    fn put_output(&self, job: &Job, file: &str, bytes: &[u8]) {
        let key = artifact_keys::output(&job.id, file).unwrap();
        self.artifacts
            .objects
            .lock()
            .unwrap()
            .insert(key, bytes.to_vec());
    }
}

fn submit_body() -> Value {
    json!({"url": "https://github.com/x/y.git", "args": "--size 10 \"a b\"", "config": "{\"n\": 1}"})
}

// ---- health, login -------------------------------------------------------------------

#[tokio::test]
async fn health_answers_ok_with_and_without_the_trailing_slash() {
    let h = harness();
    for path in ["/health/", "/health"] {
        let a = h.get(path, None).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json(), json!({"status": "ok"}));
    }
}

#[tokio::test]
async fn load_is_empty_without_observations_and_newest_first_with_them() {
    let h = harness();
    let a = h.get("/health/load", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!([]));
    for t in 0..12 {
        h.store
            .inner
            .record(&Observation {
                timestamp: t,
                avg_rate_of_arrival: t as f64,
                ..Observation::default()
            })
            .await
            .unwrap();
    }
    let list = h.get("/health/load", None).await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 10);
    assert_eq!(list[0]["timestamp"], 11);
    assert_eq!(list[9]["timestamp"], 2);
    for key in [
        "avgRateOfArrival",
        "avgRateOfService",
        "avgRateOfFinished",
        "avgResponseTime",
        "timestamp",
    ] {
        assert!(list[0].get(key).is_some(), "{key}");
    }
}

#[tokio::test]
async fn observations_carry_the_deadline_counts_of_their_plan() {
    let h = harness();
    h.store
        .inner
        .record(&Observation {
            timestamp: 1,
            deadline_jobs: 5,
            deadlines_at_risk: 2,
            ..Observation::default()
        })
        .await
        .unwrap();
    for uri in ["/health/load", "/api/v1/observations"] {
        let list = h.get(uri, Some(ALICE)).await.json();
        assert_eq!(list[0]["deadlineJobs"], 5, "{uri}: {list}");
        assert_eq!(list[0]["deadlinesAtRisk"], 2, "{uri}: {list}");
    }
}

#[tokio::test]
async fn load_answers_503_when_the_store_is_down() {
    let h = harness();
    h.store.unavailable.store(true, Ordering::SeqCst);
    let err = h
        .get("/health/load", None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.contains("unavailable, try again"), "{err}");
}

#[tokio::test]
async fn login_by_path_answers_a_token() {
    let h = harness();
    let a = h.get("/auth/alice/pw", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"token": "token-alice"}));
    // Encoded characters in the path arrive decoded.
    let a = h.get("/auth/%C3%BC%20ser/p%2Fw", None).await;
    assert_eq!(a.json(), json!({"token": "token-ü ser"}));
}

#[tokio::test]
async fn login_with_wrong_credentials_is_401_json() {
    let h = harness();
    let err = h
        .get("/auth/alice/wrong", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert_eq!(err, "wrong user name or password");
}

#[tokio::test]
async fn token_route_takes_a_form() {
    let h = harness();
    let req = Request::post("/auth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=alice&password=pw"))
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json(),
        json!({"token": "token-alice", "access_token": "token-alice", "token_type": "Bearer"})
    );
    let req = Request::post("/auth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=alice&password=nope"))
        .unwrap();
    h.send(req).await.assert_error(StatusCode::UNAUTHORIZED);
    let req = Request::post("/auth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=alice"))
        .unwrap();
    h.send(req)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
}

// ---- authentication ------------------------------------------------------------------

/// Every `/api` route of the OpenAPI document, with its parameters filled in.
fn api_routes(job: &str) -> Vec<(Method, String)> {
    documented_routes()
        .into_iter()
        .filter(|(_, path)| path.starts_with("/api"))
        .map(|(method, path)| {
            let path = path.replace("{id}", job).replace("{file}", "a/b/c.txt");
            (method.parse().unwrap(), path)
        })
        .collect()
}

#[tokio::test]
async fn every_api_route_without_a_token_is_401_with_a_bearer_challenge() {
    let h = harness();
    let job = h.seed("alice", JobStatus::Queued, &["a/b/c.txt"]).await;
    let routes = api_routes(job.id.as_str());
    assert!(routes.len() >= 11, "{routes:?}");
    for (method, path) in routes {
        let a = h.call(method.clone(), &path, None, Body::empty()).await;
        a.assert_error(StatusCode::UNAUTHORIZED);
        assert!(
            a.header(header::WWW_AUTHENTICATE).starts_with("Bearer"),
            "{method} {path}"
        );
    }
    // Nothing happened to the job.
    assert_eq!(h.store.job(job.id.as_str()).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn refused_or_malformed_tokens_are_401() {
    let h = harness();
    for auth in [
        "Bearer forged",
        "Bearer ",
        "Basic YWxpY2U6cHc=",
        "token-alice",
        "Bearer\ttoken-alice",
    ] {
        let req = Request::get("/api/status")
            .header(header::AUTHORIZATION, auth)
            .body(Body::empty())
            .unwrap();
        let a = h.send(req).await;
        a.assert_error(StatusCode::UNAUTHORIZED);
        assert!(a.headers.contains_key(header::WWW_AUTHENTICATE), "{auth}");
    }
    let req = Request::get("/api/status")
        .header(header::AUTHORIZATION, "bearer token-alice")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
}

// ---- submit --------------------------------------------------------------------------

#[tokio::test]
async fn add_job_stores_dispatches_and_announces_the_job() {
    let h = harness();
    let a = h.add_job(ALICE, submit_body()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let id = a.json()["jobId"].as_str().unwrap().to_string();
    let job = h.store.job(&id).await;
    assert_eq!(job.owner, "alice");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.spec.args, "--size 10 \"a b\"");
    assert_eq!(job.spec.config, "{\"n\": 1}");
    assert_eq!(
        h.queue.sent.lock().unwrap().as_slice(),
        &[Dispatch {
            id: job.id.clone(),
            attempt: 1
        }]
    );
    let events = h.bus.events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].job_id, job.id);
    assert_eq!(events[0].from, None);
    assert_eq!(events[0].to, JobStatus::Queued);
}

#[tokio::test]
async fn add_job_accepts_a_body_without_content_type_and_json_config_and_list_args() {
    let h = harness();
    let req = Request::post("/api/addJob")
        .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
        .body(Body::from(
            json!({"url": "https://github.com/x/y.git", "args": ["a b", "c"], "config": {"n": 2}})
                .to_string(),
        ))
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let job = h.store.job(a.json()["jobId"].as_str().unwrap()).await;
    assert_eq!(job.spec.args, "'a b' c");
    assert_eq!(job.spec.config, "{\"n\":2}");
}

#[tokio::test]
async fn v1_create_answers_201_with_location_and_view() {
    let h = harness();
    let a = h
        .post_json(
            "/api/v1/jobs",
            ALICE,
            json!({"url": "https://tok:s3cret@github.com/x/y.git"}).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let view = a.json();
    let id = view["id"].as_str().unwrap();
    assert_eq!(a.header(header::LOCATION), format!("/api/v1/jobs/{id}"));
    assert_eq!(view["status"], "queued");
    assert_eq!(view["attempt"], 1);
    assert_eq!(view["url"], "https://***@github.com/x/y.git");
    assert!(!a.text().contains("s3cret"));
}

#[tokio::test]
async fn malformed_json_is_400() {
    let h = harness();
    for body in [
        "{",
        "{\"url\": }",
        "",
        "not json",
        "{\"url\": \"https://github.com/x/y.git\"} x",
    ] {
        h.post_json("/api/addJob", ALICE, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
    }
    assert!(h.store.count().await == 0);
}

#[tokio::test]
async fn missing_or_non_string_url_is_422() {
    let h = harness();
    for (body, expected) in [
        (json!({}), "url is required"),
        (json!({"args": "x"}), "url is required"),
        (json!({"url": null}), "url is required"),
        (json!({"url": 42}), "url must be a string"),
        (
            json!({"url": ["https://github.com/x/y.git"]}),
            "url must be a string",
        ),
        (json!({"url": {"href": "x"}}), "url must be a string"),
    ] {
        let err = h
            .add_job(ALICE, body.clone())
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err, expected, "{body}");
    }
    for body in [json!([]), json!("https://github.com/x/y.git"), json!(3)] {
        h.add_job(ALICE, body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    }
    for body in [
        json!({"url": "https://github.com/x/y.git", "args": 3}),
        json!({"url": "https://github.com/x/y.git", "args": ["a", 3]}),
    ] {
        h.add_job(ALICE, body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert!(h.store.count().await == 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_json() {
    let h = harness();
    let big = format!(
        "{{\"url\": \"https://github.com/x/y.git\", \"config\": \"{}\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let err = h
        .post_json("/api/addJob", ALICE, big.clone())
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(err.contains("1048576"), "{err}");
    h.post_json("/api/v1/jobs", ALICE, big)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length header (chunked) too.
    let chunks =
        futures::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 32 * 1024])));
    let req = Request::post("/api/addJob")
        .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
        .body(Body::from_stream(chunks))
        .unwrap();
    h.send(req)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(h.store.count().await == 0);
}

#[tokio::test]
async fn config_or_args_over_their_limits_are_413() {
    let h = harness();
    let err = h
        .add_job(
            ALICE,
            json!({"url": "https://github.com/x/y.git", "config": "c".repeat(64 * 1024 + 1)}),
        )
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(err.starts_with("config"), "{err}");
    let err = h
        .add_job(
            ALICE,
            json!({"url": "https://github.com/x/y.git", "args": "a".repeat(1025)}),
        )
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(err.starts_with("args"), "{err}");
    assert!(h.store.count().await == 0);
}

#[tokio::test]
async fn hostile_urls_are_422_and_never_echo_credentials() {
    let h = harness();
    for url in [
        "ext::sh -c touch% /tmp/pwned",
        "fd::3",
        "file:///etc/passwd",
        "/etc",
        "ftp://example.com/x.git",
        "http://127.0.0.1/x.git",
        "http://localhost/x.git",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x.git",
        "https://u:s3cret@10.0.0.1/x.git",
        "https://github.com/x y.git",
        "-oProxyCommand=touch /tmp/x",
        "",
    ] {
        let err = h
            .add_job(ALICE, json!({ "url": url }))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.starts_with("url refused"), "{url}: {err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
    let long = format!("https://github.com/{}", "a".repeat(3000));
    h.add_job(ALICE, json!({ "url": long }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(h.store.count().await == 0);
    assert!(h.queue.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn nul_bytes_in_args_or_config_are_422_and_nothing_is_stored() {
    let h = harness();
    for (field, body) in [
        (
            "args",
            json!({"url": "https://github.com/x/y.git", "args": "a\0b"}),
        ),
        (
            "args",
            json!({"url": "https://github.com/x/y.git", "args": ["ok", "a\0"]}),
        ),
        (
            "config",
            json!({"url": "https://github.com/x/y.git", "config": "{\"a\": \"\0\"}"}),
        ),
    ] {
        let err = h
            .add_job(ALICE, body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.contains(field) && err.contains("NUL"), "{err}");
    }
    assert!(h.queue.sent.lock().unwrap().is_empty());
}

#[tokio::test]
async fn args_with_unbalanced_quotes_are_422() {
    let h = harness();
    for args in ["\"open", "it's", "a 'b", "x=\"y"] {
        let err = h
            .add_job(
                ALICE,
                json!({"url": "https://github.com/x/y.git", "args": args}),
            )
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.contains("args"), "{err}");
    }
    // Shell syntax is just text: accepted, to arrive verbatim in argv.
    let a = h
        .add_job(
            ALICE,
            json!({"url": "https://github.com/x/y.git", "args": "$(id) ; `id` | x"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn a_queue_that_refuses_the_job_gives_503_and_the_job_never_runs() {
    let h = harness();
    h.queue.down.store(true, Ordering::SeqCst);
    let err = h
        .add_job(ALICE, submit_body())
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err, "the queue is unavailable; the job was not accepted");
    let jobs = h.store.all().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Cancelled);
    assert!(h.bus.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_store_that_is_down_gives_503() {
    let h = harness();
    h.store.unavailable.store(true, Ordering::SeqCst);
    let err = h
        .add_job(ALICE, submit_body())
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err, "the job store is unavailable, try again");
    h.get("/api/status", Some(ALICE))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_store_restarting_during_a_submission_costs_latency_not_the_job() {
    let h = harness();
    h.store.inserts_failing.store(3, Ordering::SeqCst);
    let a = h.add_job(ALICE, submit_body()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let id = a.json()["jobId"].as_str().unwrap().to_string();
    assert_eq!(h.store.inserts_tried.load(Ordering::SeqCst), 4);
    assert_eq!(h.store.job(&id).await.status, JobStatus::Queued);
    let sent = h.queue.sent.lock().unwrap();
    assert_eq!(sent.len(), 1, "dispatched once");
    assert_eq!(sent[0].id.as_str(), id);
}

#[tokio::test]
async fn an_insert_whose_answer_was_lost_is_stored_and_dispatched_once() {
    let h = harness();
    h.store.inserts_answer_lost.store(1, Ordering::SeqCst);
    let a = h.add_job(ALICE, submit_body()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(h.store.count().await, 1);
    assert_eq!(h.queue.sent.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_store_down_past_the_retry_time_gives_503_with_retry_after_and_nothing_accepted() {
    let h = harness();
    h.store.inserts_failing.store(u32::MAX, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let a = h.add_job(ALICE, submit_body()).await;
    let waited = started.elapsed();
    assert_eq!(a.header(header::RETRY_AFTER), "2");
    let err = a.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err, "the job store is unavailable, try again");
    // Retried for about `store_retry_ms` (1.5 s here), then refused.
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(h.store.inserts_tried.load(Ordering::SeqCst) > 2);
    assert!(h.store.count().await == 0);
    assert!(h.queue.sent.lock().unwrap().is_empty());
    assert!(h.bus.events.lock().unwrap().is_empty());
}

// ---- status --------------------------------------------------------------------------

#[tokio::test]
async fn status_routes_have_the_original_shapes() {
    let h = harness();
    let id = h.add_job(ALICE, submit_body()).await.json()["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    let one = h.get(&format!("/api/status/{id}"), Some(ALICE)).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(
        one.json(),
        json!({"id": id, "status": "queued", "outputFiles": []})
    );
    let all = h.get("/api/status", Some(ALICE)).await;
    assert_eq!(
        all.json(),
        json!([{"id": id, "status": "queued", "outputFiles": []}])
    );
    assert_eq!(h.get("/api/status", Some(BOB)).await.json(), json!([]));
}

#[tokio::test]
async fn v1_view_shows_every_field_with_the_url_redacted() {
    let h = harness();
    let job = h
        .seed_with("alice", JobStatus::Failed, &["out.txt"], |stored| {
            stored.exit_code = Some(3);
            stored.elapsed_ms = Some(1234);
            stored.attempt = 2;
            stored.started_at = Some(stored.created_at);
            stored.finished_at = Some(stored.created_at);
            stored.failure = Some(FailureReason::ExitCode { code: 3 });
        })
        .await;
    let a = h
        .get(&format!("/api/v1/jobs/{}", job.id), Some(ALICE))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let view = a.json();
    assert_eq!(view["id"], job.id.as_str());
    assert_eq!(view["owner"], "alice");
    assert_eq!(view["status"], "failed");
    assert_eq!(view["attempt"], 2);
    assert_eq!(view["exitCode"], 3);
    assert_eq!(view["elapsedMs"], 1234);
    assert_eq!(view["failure"], "exit code 3");
    assert_eq!(view["outputFiles"], json!(["out.txt"]));
    assert_eq!(view["url"], "https://***@github.com/x/y.git");
    assert_eq!(view["args"], "--n 3");
    for key in ["createdAt", "startedAt", "finishedAt"] {
        let text = view[key].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{key}: {text}"
        );
    }
    assert!(!a.text().contains("s3cret"));
    assert!(view.get("config").is_none());
}

#[tokio::test]
async fn v1_view_lists_every_ended_attempt_with_its_outcome_and_reason() {
    let h = harness();
    let job = h.seed("alice", JobStatus::Running, &[]).await;
    let fresh = h
        .get(&format!("/api/v1/jobs/{}", job.id), Some(ALICE))
        .await;
    assert_eq!(fresh.json()["attempts"], json!([]));
    let first = Held {
        id: &job.id,
        attempt: 1,
        worker: "w",
        started_at: job.started_at,
        retry: None,
    };
    let reason = "the artifact store stayed unavailable for 60 s";
    h.store
        .inner
        .release(&first, reason)
        .await
        .unwrap()
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let lease = Duration::from_secs(30);
    let second = h
        .store
        .inner
        .claim(&job.id, 2, "v", lease, now)
        .await
        .unwrap();
    let second = second.expect("the next attempt is claimed");
    let failed = Outcome {
        status: JobStatus::Failed,
        exit_code: Some(3),
        elapsed_ms: 10,
        output_files: vec![],
        failure: Some(FailureReason::ExitCode { code: 3 }),
    };
    let held = Held {
        id: &job.id,
        attempt: 2,
        worker: "v",
        started_at: second.started_at,
        retry: None,
    };
    h.store
        .inner
        .complete(&held, &failed, now)
        .await
        .unwrap()
        .unwrap();
    let view = h
        .get(&format!("/api/v1/jobs/{}", job.id), Some(ALICE))
        .await
        .json();
    let attempts = view["attempts"].as_array().expect("an array").clone();
    assert_eq!(attempts.len(), 2, "{view}");
    let keys = |a: &Value| {
        a.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let expected: BTreeSet<String> = [
        "attempt",
        "worker",
        "startedAt",
        "endedAt",
        "outcome",
        "reason",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys(&attempts[0]), expected);
    assert_eq!(
        (
            &attempts[0]["attempt"],
            &attempts[0]["worker"],
            &attempts[0]["outcome"],
            &attempts[0]["reason"]
        ),
        (
            &json!(1),
            &json!("w"),
            &json!("handed_back"),
            &json!(reason)
        )
    );
    assert_eq!(
        (
            &attempts[1]["attempt"],
            &attempts[1]["worker"],
            &attempts[1]["outcome"],
            &attempts[1]["reason"]
        ),
        (
            &json!(2),
            &json!("v"),
            &json!("failed"),
            &json!("exit code 3")
        )
    );
    for a in &attempts {
        for key in ["startedAt", "endedAt"] {
            let text = a[key].as_str().unwrap();
            assert!(
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok(),
                "{key}: {text}"
            );
        }
    }
    let listed = h.get("/api/v1/jobs", Some(ALICE)).await.json();
    assert_eq!(listed["jobs"][0]["attempts"], json!(attempts));
}

#[tokio::test]
async fn v1_list_pages_newest_first() {
    let h = harness();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(h.seed("alice", JobStatus::Queued, &[]).await.id.to_string());
    }
    h.seed("bob", JobStatus::Queued, &[]).await;
    let page = h
        .get("/api/v1/jobs?offset=1&limit=2", Some(ALICE))
        .await
        .json();
    assert_eq!(page["total"], 5);
    assert_eq!(page["offset"], 1);
    assert_eq!(page["limit"], 2);
    let got: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[3].as_str(), ids[2].as_str()]);
    let page = h.get("/api/v1/jobs?limit=1000", Some(ALICE)).await.json();
    assert_eq!(page["limit"], 100);
    h.get("/api/v1/jobs?limit=many", Some(ALICE))
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    // `all` is for the admin role; others keep seeing their own.
    let page = h.get("/api/v1/jobs?all=true", Some(ALICE)).await.json();
    assert_eq!(page["total"], 5);
    let page = h.get("/api/v1/jobs?all=true", Some(ADMIN)).await.json();
    assert_eq!(page["total"], 6);
    assert_eq!(h.get("/api/v1/jobs", Some(ADMIN)).await.json()["total"], 0);
}

// ---- isolation -----------------------------------------------------------------------

#[tokio::test]
async fn another_users_job_is_404_everywhere_and_the_admin_sees_it() {
    let h = harness();
    let job = h.seed("alice", JobStatus::Finished, &["out.txt"]).await;
    h.put_output(&job, "out.txt", b"hello");
    let id = job.id.as_str();
    let routes = [
        (Method::GET, format!("/api/status/{id}")),
        (Method::GET, format!("/api/results/{id}/out.txt")),
        (Method::GET, format!("/api/v1/jobs/{id}")),
        (Method::GET, format!("/api/v1/jobs/{id}/logs")),
        (Method::GET, format!("/api/v1/jobs/{id}/results/out.txt")),
        (Method::GET, format!("/api/deleteJob/{id}")),
        (Method::DELETE, format!("/api/v1/jobs/{id}")),
    ];
    let unknown = JobId::new();
    for (method, path) in &routes {
        let theirs = h.call(method.clone(), path, Some(BOB), Body::empty()).await;
        let err = theirs.assert_error(StatusCode::NOT_FOUND);
        let missing = h
            .call(
                method.clone(),
                &path.replace(id, unknown.as_str()),
                Some(BOB),
                Body::empty(),
            )
            .await;
        // Indistinguishable from a job that does not exist.
        assert_eq!(missing.assert_error(StatusCode::NOT_FOUND), err, "{path}");
    }
    for (method, path) in &routes {
        let a = h
            .call(method.clone(), path, Some(ADMIN), Body::empty())
            .await;
        assert_eq!(a.status, StatusCode::OK, "{method} {path}: {}", a.text());
    }
    assert!(
        h.bus.events.lock().unwrap().is_empty(),
        "finished jobs stay finished"
    );
}

#[tokio::test]
async fn malformed_job_ids_are_404() {
    let h = harness();
    for id in [
        "nope",
        "..",
        "%2e%2e",
        "123",
        "00000000-0000-0000-0000-00000000000g",
    ] {
        h.get(&format!("/api/status/{id}"), Some(ALICE))
            .await
            .assert_error(StatusCode::NOT_FOUND);
        h.get(&format!("/api/v1/jobs/{id}"), Some(ALICE))
            .await
            .assert_error(StatusCode::NOT_FOUND);
        h.get(&format!("/api/deleteJob/{id}"), Some(ALICE))
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
}

// ---- cancel --------------------------------------------------------------------------

#[tokio::test]
async fn delete_job_cancels_a_queued_job_and_announces_it() {
    let h = harness();
    let id = h.add_job(ALICE, submit_body()).await.json()["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    let a = h.get(&format!("/api/deleteJob/{id}"), Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"id": id, "status": "cancelled"}));
    assert_eq!(h.store.job(&id).await.status, JobStatus::Cancelled);
    let events = h.bus.events.lock().unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(JobStatus::Queued), JobStatus::Cancelled)
    );
    assert!(
        last.elapsed_ms.is_some(),
        "a terminal event carries elapsed_ms"
    );
    let submitted = &events[0];
    assert_eq!((submitted.from, submitted.to), (None, JobStatus::Queued));
    assert_eq!(submitted.elapsed_ms, None);
}

#[tokio::test]
async fn v1_delete_cancels_a_running_job_and_leaves_ended_ones_alone() {
    let h = harness();
    let running = h.seed("alice", JobStatus::Running, &[]).await;
    let a = h
        .call(
            Method::DELETE,
            &format!("/api/v1/jobs/{}", running.id),
            Some(ALICE),
            Body::empty(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "cancelled");
    let event = h.bus.events.lock().unwrap().last().cloned().unwrap();
    assert_eq!(event.from, Some(JobStatus::Running));
    assert!(
        event.elapsed_ms.is_some(),
        "a terminal event carries elapsed_ms"
    );
    let done = h.seed("alice", JobStatus::Finished, &[]).await;
    let a = h
        .get(&format!("/api/deleteJob/{}", done.id), Some(ALICE))
        .await;
    assert_eq!(a.json()["status"], "finished");
    assert_eq!(h.bus.events.lock().unwrap().len(), 1);
}

// ---- results and logs ----------------------------------------------------------------

#[tokio::test]
async fn results_stream_nested_and_non_ascii_files_with_headers() {
    let h = harness();
    let job = h
        .seed(
            "alice",
            JobStatus::Finished,
            &["a/b/c.txt", "é ü.csv", "report.json"],
        )
        .await;
    h.put_output(&job, "a/b/c.txt", b"nested");
    h.put_output(&job, "é ü.csv", b"x,y\n");
    h.put_output(&job, "report.json", b"{}");
    for prefix in ["/api/results", "/api/v1/jobs"] {
        let base = if prefix == "/api/results" {
            format!("/api/results/{}", job.id)
        } else {
            format!("/api/v1/jobs/{}/results", job.id)
        };
        let a = h.get(&format!("{base}/a/b/c.txt"), Some(ALICE)).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, b"nested");
        assert_eq!(a.header(header::CONTENT_LENGTH), "6");
        assert!(a.header(header::CONTENT_TYPE).starts_with("text/plain"));
        assert_eq!(
            a.header(header::CONTENT_DISPOSITION),
            "attachment; filename=\"c.txt\"; filename*=UTF-8''c.txt"
        );
        let a = h
            .get(&format!("{base}/%C3%A9%20%C3%BC.csv"), Some(ALICE))
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, b"x,y\n");
        assert_eq!(a.header(header::CONTENT_TYPE), "text/csv");
        assert_eq!(
            a.header(header::CONTENT_DISPOSITION),
            "attachment; filename=\"_ _.csv\"; filename*=UTF-8''%C3%A9%20%C3%BC.csv"
        );
        let a = h.get(&format!("{base}/report.json"), Some(ALICE)).await;
        assert_eq!(a.header(header::CONTENT_TYPE), "application/json");
    }
}

#[tokio::test]
async fn results_refuse_files_not_listed_and_path_traversal() {
    let h = harness();
    let job = h.seed("alice", JobStatus::Finished, &["out.txt"]).await;
    h.put_output(&job, "out.txt", b"ok");
    // An object of the job that is not an output file, and another job's file.
    h.artifacts
        .objects
        .lock()
        .unwrap()
        .insert(artifact_keys::stdout(&job.id), b"secret log".to_vec());
    let other = h.seed("bob", JobStatus::Finished, &["out.txt"]).await;
    h.put_output(&other, "out.txt", b"bob's");
    let id = job.id.as_str();
    for file in ["missing.txt", "OUT.txt", "out.txt/x"] {
        h.get(&format!("/api/results/{id}/{file}"), Some(ALICE))
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
    for file in [
        "..%2F..%2Flogs%2Fstdout",
        "../logs/stdout",
        "a/../../logs/stdout",
        "%2E%2E/%2E%2E/{other}/output/out.txt",
        "%2Fetc%2Fpasswd",
        "./out.txt",
        "a%5Cb",
        "a%00b",
    ] {
        let file = file.replace("{other}", other.id.as_str());
        for base in [
            format!("/api/results/{id}"),
            format!("/api/v1/jobs/{id}/results"),
        ] {
            let a = h.get(&format!("{base}/{file}"), Some(ALICE)).await;
            assert!(
                matches!(a.status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND),
                "{file}: {}",
                a.status
            );
            a.json();
            assert!(!a.text().contains("secret log") && !a.text().contains("bob's"));
        }
    }
    // Listed, but the object is gone: 404, not 5xx.
    let gone = h.seed("alice", JobStatus::Finished, &["gone.txt"]).await;
    h.get(&format!("/api/results/{}/gone.txt", gone.id), Some(ALICE))
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn logs_answer_what_exists_so_far() {
    let h = harness();
    let job = h.seed("alice", JobStatus::Running, &[]).await;
    let uri = format!("/api/v1/jobs/{}/logs", job.id);
    let a = h.get(&uri, Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"stdout": "", "stderr": ""}));
    h.artifacts
        .objects
        .lock()
        .unwrap()
        .insert(artifact_keys::stdout(&job.id), b"line 1\n".to_vec());
    let a = h.get(&uri, Some(ALICE)).await;
    assert_eq!(a.json(), json!({"stdout": "line 1\n", "stderr": ""}));
    let raw = h.get(&format!("{uri}?stream=stdout"), Some(ALICE)).await;
    assert_eq!(raw.status, StatusCode::OK);
    assert!(raw.header(header::CONTENT_TYPE).starts_with("text/plain"));
    assert_eq!(raw.text(), "line 1\n");
    let raw = h.get(&format!("{uri}?stream=stderr"), Some(ALICE)).await;
    assert_eq!(raw.text(), "");
    h.get(&format!("{uri}?stream=env"), Some(ALICE))
        .await
        .assert_error(StatusCode::BAD_REQUEST);
}

// ---- live views ----------------------------------------------------------------------

/// Reads Server-Sent Events from `uri` until `count` events (comments aside) arrived or
/// `within` passed; answers the status and the events as (event, id, data).
async fn read_events(
    h: &Harness,
    uri: &str,
    token: &str,
    last_event_id: Option<&str>,
    count: usize,
    within: Duration,
) -> (StatusCode, Vec<(String, Option<String>, Value)>) {
    use futures::StreamExt;
    let mut req = Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let response = h
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    if !status.is_success() {
        return (status, Vec::new());
    }
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while events.len() < count {
        let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await else {
            break;
        };
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut name, mut id, mut data) = ("message".to_string(), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                events.push((name, id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    (status, events)
}

fn transition(job: &Job, from: Option<JobStatus>, to: JobStatus) -> JobEvent {
    JobEvent {
        job_id: job.id.clone(),
        attempt: 1,
        from,
        to,
        at: OffsetDateTime::now_utc(),
        worker: None,
        elapsed_ms: None,
        waited_ms: None,
        repo: None,
        has_deadline: false,
        deadline_at_risk: None,
    }
}

#[tokio::test]
async fn the_event_stream_carries_the_callers_transitions_and_an_admin_sees_all() {
    let h = harness();
    let mine = h.seed("alice", JobStatus::Queued, &[]).await;
    let theirs = h.seed("bob", JobStatus::Queued, &[]).await;
    let live = h.live.clone();
    let (m, t) = (mine.clone(), theirs.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        live.publish(Some("bob".into()), transition(&t, None, JobStatus::Queued));
        live.publish(
            Some("alice".into()),
            transition(&m, None, JobStatus::Queued),
        );
        live.publish(
            Some("alice".into()),
            transition(&m, Some(JobStatus::Queued), JobStatus::Running),
        );
    });
    let within = Duration::from_secs(3);
    let (alice, admin) = tokio::join!(
        read_events(&h, "/api/v1/events", ALICE, None, 3, within),
        read_events(&h, "/api/v1/events", ADMIN, None, 4, within),
    );
    assert_eq!(alice.0, StatusCode::OK);
    let names: Vec<_> = alice.1.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["ready", "job", "job"]);
    assert_eq!(alice.1[1].2["jobId"], mine.id.as_str());
    assert_eq!(alice.1[1].2["from"], Value::Null);
    assert_eq!(alice.1[1].2["to"], "queued");
    assert_eq!(alice.1[2].2["from"], "queued");
    assert_eq!(alice.1[2].2["to"], "running");
    assert_eq!(alice.1[2].2["attempt"], 1);
    assert!(alice.1[2].2["at"].as_str().unwrap().contains('T'));
    assert!(alice.1.iter().all(|e| e.2["jobId"] != theirs.id.as_str()));
    let admin_jobs: Vec<_> = admin.1.iter().filter(|e| e.0 == "job").collect();
    assert_eq!(admin_jobs.len(), 3);
    assert_eq!(admin_jobs[0].2["owner"], "bob");
}

#[tokio::test]
async fn the_event_stream_carries_a_deadline_notice_with_its_flag_and_transitions_without_it() {
    let h = harness();
    let job = h.seed("alice", JobStatus::Queued, &[]).await;
    let live = h.live.clone();
    let j = job.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut seeded = j.clone();
        seeded.status = JobStatus::Queued;
        live.publish(
            Some("alice".into()),
            JobEvent::deadline_notice(&seeded, true, OffsetDateTime::now_utc()),
        );
        live.publish(
            Some("alice".into()),
            transition(&j, Some(JobStatus::Queued), JobStatus::Running),
        );
    });
    let (_, events) =
        read_events(&h, "/api/v1/events", ALICE, None, 3, Duration::from_secs(3)).await;
    let notice = &events[1].2;
    assert_eq!(notice["from"], "queued");
    assert_eq!(notice["to"], "queued");
    assert_eq!(notice["deadlineAtRisk"], true);
    assert!(
        events[2].2.get("deadlineAtRisk").is_none(),
        "a transition has no flag: {}",
        events[2].2
    );
}

#[tokio::test]
async fn the_event_stream_resumes_after_the_last_event_id_or_says_reset() {
    let h = harness();
    let job = h.seed("alice", JobStatus::Queued, &[]).await;
    let live = h.live.clone();
    let j = job.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        live.publish(
            Some("alice".into()),
            transition(&j, None, JobStatus::Queued),
        );
    });
    let (_, first) =
        read_events(&h, "/api/v1/events", ALICE, None, 2, Duration::from_secs(3)).await;
    let id = first[1].1.clone().expect("job events carry an id");
    // Missed while disconnected:
    h.live.publish(
        Some("alice".into()),
        transition(&job, Some(JobStatus::Queued), JobStatus::Running),
    );
    h.live.publish(
        Some("alice".into()),
        transition(&job, Some(JobStatus::Running), JobStatus::Finished),
    );
    let (_, resumed) = read_events(
        &h,
        "/api/v1/events",
        ALICE,
        Some(&id),
        3,
        Duration::from_secs(3),
    )
    .await;
    let tos: Vec<_> = resumed
        .iter()
        .map(|e| (e.0.clone(), e.2["to"].clone()))
        .collect();
    assert_eq!(resumed[0].2["resume"], "resumed");
    assert_eq!(
        tos[1..],
        [
            ("job".to_string(), json!("running")),
            ("job".to_string(), json!("finished"))
        ]
    );
    let (_, stale) = read_events(
        &h,
        "/api/v1/events",
        ALICE,
        Some("another-process-7"),
        1,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(stale[0].0, "reset");
}

#[tokio::test]
async fn a_followed_log_sends_stdout_and_stderr_then_ends_with_the_job() {
    let h = harness();
    let job = h.seed("alice", JobStatus::Running, &[]).await;
    let uri = format!("/api/v1/jobs/{}/logs?follow=true", job.id);
    h.artifacts
        .objects
        .lock()
        .unwrap()
        .insert(artifact_keys::stdout(&job.id), b"tick 1\n".to_vec());
    let (store, artifacts, id) = (h.store.clone(), h.artifacts.clone(), job.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        {
            let mut objects = artifacts.objects.lock().unwrap();
            objects.insert(artifact_keys::stdout(&id), b"tick 1\ntick 2\n".to_vec());
            objects.insert(artifact_keys::stderr(&id), "warn é\n".as_bytes().to_vec());
        }
        let done = Outcome {
            status: JobStatus::Finished,
            exit_code: Some(0),
            elapsed_ms: 700,
            output_files: vec![],
            failure: None,
        };
        let now = OffsetDateTime::now_utc();
        let held = Held {
            id: &id,
            attempt: 1,
            worker: "w",
            started_at: None,
            retry: None,
        };
        let ended = store.inner.complete(&held, &done, now).await.unwrap();
        assert!(ended.is_some(), "the seeded holder finishes the job");
    });
    let (status, events) = read_events(&h, &uri, ALICE, None, 10, Duration::from_secs(5)).await;
    assert_eq!(status, StatusCode::OK);
    let stdout: String = events
        .iter()
        .filter(|e| e.0 == "stdout")
        .map(|e| e.2["text"].as_str().unwrap())
        .collect();
    let stderr: String = events
        .iter()
        .filter(|e| e.0 == "stderr")
        .map(|e| e.2["text"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, "tick 1\ntick 2\n");
    assert_eq!(stderr, "warn é\n");
    let end = events.last().unwrap();
    assert_eq!(end.0, "end");
    assert_eq!(end.2, json!({"status": "finished", "exitCode": 0}));
}

#[tokio::test]
async fn another_users_followed_log_is_404() {
    let h = harness();
    let job = h.seed("bob", JobStatus::Running, &[]).await;
    let uri = format!("/api/v1/jobs/{}/logs?follow=true", job.id);
    h.get(&uri, Some(ALICE))
        .await
        .assert_error(StatusCode::NOT_FOUND);
    let (status, _) = read_events(
        &h,
        "/api/v1/events",
        "forged",
        None,
        1,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn observations_answer_oldest_first_since_a_time_and_limited() {
    let h = harness();
    for ts in [1000, 2000, 3000, 4000] {
        h.store
            .inner
            .record(&Observation {
                timestamp: ts,
                queue_depth: ts as u64 / 1000,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let times = |a: Answer| -> Vec<i64> {
        a.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["timestamp"].as_i64().unwrap())
            .collect()
    };
    let a = h.get("/api/v1/observations", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(times(a), [1000, 2000, 3000, 4000]);
    let a = h.get("/api/v1/observations?limit=2", Some(ALICE)).await;
    assert_eq!(times(a), [3000, 4000]);
    let a = h
        .get("/api/v1/observations?since=1000&limit=2", Some(ALICE))
        .await;
    assert_eq!(times(a), [2000, 3000]);
    h.get("/api/v1/observations?since=soon", Some(ALICE))
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    h.get("/api/v1/observations", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn jobs_can_be_listed_by_status() {
    let h = harness();
    h.seed("alice", JobStatus::Finished, &[]).await;
    let running = h.seed("alice", JobStatus::Running, &[]).await;
    h.seed("bob", JobStatus::Running, &[]).await;
    let a = h.get("/api/v1/jobs?status=running", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::OK);
    let body = a.json();
    assert_eq!(body["total"], 1);
    assert_eq!(body["jobs"][0]["id"], running.id.as_str());
    h.get("/api/v1/jobs?status=done", Some(ALICE))
        .await
        .assert_error(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_dashboard_is_served_at_the_root_with_its_assets() {
    let h = harness();
    let page = h.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header(header::CONTENT_TYPE).starts_with("text/html"));
    assert!(page.text().contains("/assets/app.js"));
    assert!(
        page.header(header::CONTENT_SECURITY_POLICY)
            .contains("default-src 'self'")
    );
    let js = h.get("/assets/app.js", None).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(
        js.header(header::CONTENT_TYPE)
            .starts_with("text/javascript")
    );
    let etag = js.header(header::ETAG).to_string();
    let req = Request::get("/assets/app.js")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::NOT_MODIFIED);
    h.get("/assets/../Cargo.toml", None)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    h.get("/assets/secret.js", None)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    let config = h.get("/auth/config", None).await;
    assert_eq!(config.json()["method"], "form");
    let me = h.get("/api/v1/me", Some(ADMIN)).await;
    assert_eq!(me.json()["admin"], true);
}

// ---- operations ----------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let h = harness();
    h.get("/nope", None)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    h.get("/api/nope", Some(ALICE))
        .await
        .assert_error(StatusCode::NOT_FOUND);
    h.call(Method::PUT, "/api/addJob", Some(ALICE), Body::empty())
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn request_ids_are_made_or_propagated() {
    let h = harness();
    let a = h.get("/health/", None).await;
    assert!(
        !a.header(header::HeaderName::from_static("x-request-id"))
            .is_empty()
    );
    let req = Request::get("/health/")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let a = h.send(req).await;
    assert_eq!(
        a.header(header::HeaderName::from_static("x-request-id")),
        "abc-123"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_matched_path_and_submitted_jobs() {
    let h = harness();
    h.get("/health/", None).await;
    h.add_job(ALICE, submit_body()).await;
    h.get(&format!("/api/status/{}", JobId::new()), Some(ALICE))
        .await;
    let a = h.get("/metrics", None).await;
    assert_eq!(a.status, StatusCode::OK);
    let text = a.text();
    assert!(text.contains("jobq_http_requests_total"), "{text}");
    assert!(text.contains("path=\"/health/\""), "{text}");
    assert!(text.contains("path=\"/api/status/{id}\""), "{text}");
    assert!(
        text.contains("jobq_http_request_duration_seconds"),
        "{text}"
    );
    assert!(text.contains("jobq_jobs_submitted_total"), "{text}");
}

/// Every (method, path) of the OpenAPI document.
fn documented_routes() -> BTreeSet<(String, String)> {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn openapi_lists_every_route() {
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/auth/{user}/{password}"),
        ("POST", "/auth/token"),
        ("GET", "/health"),
        ("GET", "/health/"),
        ("GET", "/health/load"),
        ("POST", "/api/addJob"),
        ("GET", "/api/status"),
        ("GET", "/api/status/{id}"),
        ("GET", "/api/results/{id}/{file}"),
        ("GET", "/api/deleteJob/{id}"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/{id}"),
        ("DELETE", "/api/v1/jobs/{id}"),
        ("GET", "/api/v1/jobs/{id}/logs"),
        ("GET", "/api/v1/jobs/{id}/results/{file}"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/observations"),
        ("GET", "/api/v1/fleet/policy"),
        ("GET", "/api/v1/me"),
        ("GET", "/auth/config"),
        ("GET", "/metrics"),
        ("GET", "/api/openapi.json"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented_routes(), expected);
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let h = harness();
    // Live streams end at once when closed, so their answers can be read whole.
    h.live.close();
    let job = h.seed("alice", JobStatus::Finished, &["a/b/c.txt"]).await;
    h.put_output(&job, "a/b/c.txt", b"x");
    for (method, path) in documented_routes() {
        let uri = path
            .replace("{id}", job.id.as_str())
            .replace("{file}", "a/b/c.txt")
            .replace("{user}", "alice")
            .replace("{password}", "pw");
        let method: Method = method.parse().unwrap();
        let req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {ALICE}"));
        let req = match (method.as_str(), uri.as_str()) {
            ("POST", "/auth/token") => req
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("username=alice&password=pw")),
            ("POST", _) => req.body(Body::from(submit_body().to_string())),
            _ => req.body(Body::empty()),
        }
        .unwrap();
        let a = h.send(req).await;
        assert!(
            a.status.is_success(),
            "{method} {uri}: {} {}",
            a.status,
            a.text()
        );
    }
}

#[tokio::test]
async fn openapi_document_is_served_to_callers_with_a_token() {
    let h = harness();
    let a = h.get("/api/openapi.json", Some(ALICE)).await;
    assert_eq!(a.status, StatusCode::OK);
    let doc = a.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["JobView"].is_object());
    let attempts = &doc["components"]["schemas"]["JobView"]["properties"]["attempts"];
    assert_eq!(attempts["type"], "array", "{attempts}");
    let outcomes = &doc["components"]["schemas"]["AttemptOutcome"]["enum"];
    assert_eq!(
        outcomes,
        &json!(["finished", "failed", "cancelled", "handed_back", "lost"])
    );
}

// ---- idempotent submit ---------------------------------------------------------------

impl Harness {
    /// `POST uri` with `Idempotency-Key: key` (raw bytes, so tests can send bad ones).
    async fn post_keyed(&self, uri: &str, token: &str, key: &[u8], body: &Value) -> Answer {
        let req = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                "idempotency-key",
                header::HeaderValue::from_bytes(key).unwrap(),
            )
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(req).await
    }

    fn dispatched(&self) -> usize {
        self.queue.sent.lock().unwrap().len()
    }
}

#[tokio::test]
async fn a_repeated_submit_with_one_key_answers_the_same_job_on_both_routes() {
    let h = harness();
    let first = h
        .post_keyed("/api/v1/jobs", ALICE, b"order-1", &submit_body())
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert!(first.headers.get("idempotent-replayed").is_none());
    let id = first.json()["id"].as_str().unwrap().to_string();

    let again = h
        .post_keyed("/api/v1/jobs", ALICE, b"order-1", &submit_body())
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(again.header(header::LOCATION), format!("/api/v1/jobs/{id}"));
    assert_eq!(
        again.header(header::HeaderName::from_static("idempotent-replayed")),
        "true"
    );

    let original = h
        .post_keyed("/api/addJob", ALICE, b"order-1", &submit_body())
        .await;
    assert_eq!(original.status, StatusCode::OK, "{}", original.text());
    assert_eq!(original.json(), json!({"jobId": id}));
    assert_eq!(
        original.header(header::HeaderName::from_static("idempotent-replayed")),
        "true"
    );
    assert_eq!(h.store.count().await, 1);
    assert_eq!(h.dispatched(), 1);

    // The original route's first submit keeps its 200, without the replay header.
    let fresh = h
        .post_keyed("/api/addJob", ALICE, b"order-2", &submit_body())
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert!(fresh.headers.get("idempotent-replayed").is_none());
    assert_ne!(fresh.json()["jobId"], id.as_str());
    assert_eq!(h.store.count().await, 2);
}

#[tokio::test]
async fn eight_concurrent_submits_with_one_key_make_one_job_and_all_answer_its_id() {
    let h = Arc::new(harness());
    let mut answers = tokio::task::JoinSet::new();
    for n in 0..8 {
        let h = h.clone();
        answers.spawn(async move {
            let route = if n % 2 == 0 {
                "/api/v1/jobs"
            } else {
                "/api/addJob"
            };
            let a = h.post_keyed(route, ALICE, b"burst", &submit_body()).await;
            assert!(a.status.is_success(), "{} {}", a.status, a.text());
            let body = a.json();
            body["id"]
                .as_str()
                .or(body["jobId"].as_str())
                .unwrap()
                .to_string()
        });
    }
    let ids: BTreeSet<String> = answers.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(h.store.count().await, 1);
    assert_eq!(h.dispatched(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_makes_no_job() {
    let h = harness();
    let first = h
        .post_keyed("/api/v1/jobs", ALICE, b"k", &submit_body())
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    for (route, body) in [
        (
            "/api/v1/jobs",
            json!({"url": "https://github.com/x/other.git"}),
        ),
        (
            "/api/addJob",
            json!({"url": "https://github.com/x/y.git", "args": "--size 11", "config": "{\"n\": 1}"}),
        ),
        (
            "/api/v1/jobs",
            json!({"url": "https://github.com/x/y.git", "args": "--size 10 \"a b\"", "config": "{\"n\": 2}"}),
        ),
    ] {
        let a = h.post_keyed(route, ALICE, b"k", &body).await;
        let error = a.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(error.contains("Idempotency-Key"), "{error}");
    }
    // A request that parses to the same job asks for the same thing: args as a string or
    // as the list of its words.
    let text = json!({"url": "https://github.com/x/y.git", "args": "--n 3"});
    let words = json!({"url": "https://github.com/x/y.git", "args": ["--n", "3"], "config": null});
    let a = h.post_keyed("/api/v1/jobs", ALICE, b"words", &text).await;
    let b = h.post_keyed("/api/v1/jobs", ALICE, b"words", &words).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.text());
    assert_eq!(b.json()["id"], a.json()["id"]);
    assert_eq!(h.store.count().await, 2);
}

#[tokio::test]
async fn another_users_same_key_makes_their_own_job_and_never_answers_alices() {
    let h = harness();
    let alice = h
        .post_keyed("/api/v1/jobs", ALICE, b"shared-key", &submit_body())
        .await
        .json();
    let bob = h
        .post_keyed("/api/v1/jobs", BOB, b"shared-key", &submit_body())
        .await;
    assert_eq!(bob.status, StatusCode::CREATED);
    let bob = bob.json();
    assert_ne!(alice["id"], bob["id"]);
    assert_eq!(bob["owner"], "bob");
    let other_body = h
        .post_keyed(
            "/api/v1/jobs",
            BOB,
            b"shared-key",
            &json!({"url": "https://github.com/x/z.git"}),
        )
        .await;
    other_body.assert_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.store.count().await, 2);
}

#[tokio::test]
async fn a_bad_key_is_400_and_makes_no_job() {
    let h = harness();
    let long = vec![b'k'; 256];
    for key in [
        &b""[..],
        &long,
        "ключ".as_bytes(),
        b"tab\tin",
        &[0xff, 0x41],
    ] {
        for route in ["/api/v1/jobs", "/api/addJob"] {
            let a = h.post_keyed(route, ALICE, key, &submit_body()).await;
            let error = a.assert_error(StatusCode::BAD_REQUEST);
            assert!(error.contains("idempotency key"), "{key:?}: {error}");
        }
    }
    let twice = Request::post("/api/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body(Body::from(submit_body().to_string()))
        .unwrap();
    h.send(twice).await.assert_error(StatusCode::BAD_REQUEST);
    assert_eq!(h.store.count().await, 0);
    // 255 characters is the longest key.
    let longest = vec![b'k'; 255];
    let a = h
        .post_keyed("/api/v1/jobs", ALICE, &longest, &submit_body())
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    // Without a key every submit makes a job.
    h.add_job(ALICE, submit_body()).await;
    h.add_job(ALICE, submit_body()).await;
    assert_eq!(h.store.count().await, 3);
}

#[tokio::test]
async fn a_job_the_store_could_not_take_is_stored_by_the_retry_with_the_same_key() {
    let h = harness();
    h.store.inserts_failing.store(1000, Ordering::SeqCst);
    let refused = h
        .post_keyed("/api/v1/jobs", ALICE, b"k", &submit_body())
        .await;
    refused.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.store.count().await, 0);
    h.store.inserts_failing.store(0, Ordering::SeqCst);
    let retried = h
        .post_keyed("/api/v1/jobs", ALICE, b"k", &submit_body())
        .await;
    assert!(retried.status.is_success(), "{}", retried.text());
    let id = retried.json()["id"].as_str().unwrap().to_string();
    assert_eq!(h.store.all().await.len(), 1);
    assert_eq!(h.store.job(&id).await.status, JobStatus::Queued);
    assert_eq!(h.dispatched(), 1);
    let again = h
        .post_keyed("/api/addJob", ALICE, b"k", &submit_body())
        .await;
    assert_eq!(again.json(), json!({"jobId": id}));
    assert_eq!(h.dispatched(), 1);
}

#[tokio::test]
async fn a_job_the_queue_refused_releases_its_key_so_the_retry_makes_a_new_one() {
    let h = harness();
    h.queue.down.store(true, Ordering::SeqCst);
    let refused = h
        .post_keyed("/api/v1/jobs", ALICE, b"k", &submit_body())
        .await;
    refused.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    let cancelled = h.store.all().await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].status, JobStatus::Cancelled);
    h.queue.down.store(false, Ordering::SeqCst);
    let retried = h
        .post_keyed("/api/v1/jobs", ALICE, b"k", &submit_body())
        .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text());
    let id = retried.json()["id"].as_str().unwrap().to_string();
    assert_ne!(id, cancelled[0].id.as_str());
    assert_eq!(h.store.job(&id).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn replayed_submits_are_counted_in_the_metrics() {
    let h = harness();
    for _ in 0..2 {
        h.post_keyed("/api/addJob", ALICE, b"counted", &submit_body())
            .await;
    }
    let text = h.get("/metrics", None).await.text();
    assert!(text.contains("jobq_submits_replayed_total"), "{text}");
}

#[test]
fn openapi_documents_the_idempotency_key_and_its_answers_on_both_submit_routes() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    for (path, codes) in [
        ("/api/v1/jobs", ["200", "201", "400", "422"].as_slice()),
        ("/api/addJob", ["200", "400", "422"].as_slice()),
    ] {
        let post = &doc["paths"][path]["post"];
        let params = post["parameters"].as_array().expect("parameters");
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
            "{path}: {params:?}"
        );
        for code in codes {
            let answer = &post["responses"][code];
            assert!(answer.is_object(), "{path} {code}");
        }
        let text = post["responses"]["422"]["description"].as_str().unwrap();
        assert!(text.contains("Idempotency-Key"), "{path}: {text}");
    }
}

#[test]
fn openapi_documents_the_scheduling_fields_and_the_429_of_both_submit_routes() {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let submit = schemas["SubmitJob"]["properties"].as_object().unwrap();
    for field in [
        "priority",
        "retries",
        "notBefore",
        "expireAfterSecs",
        "deadline",
        "expectedDurationSecs",
    ] {
        assert!(submit.contains_key(field), "SubmitJob lacks {field}");
    }
    let submitted = schemas["Submitted"]["properties"].as_object().unwrap();
    for field in ["jobId", "estimatedStartAt", "estimatedFinishAt"] {
        assert!(submitted.contains_key(field), "Submitted lacks {field}");
    }
    let view = schemas["JobView"]["properties"].as_object().unwrap();
    for field in [
        "priority",
        "retries",
        "notBefore",
        "retryAt",
        "expiresAt",
        "attempts",
        "deadline",
        "expectedDurationSecs",
        "deadlineAtRisk",
        "estimatedStartAt",
        "estimatedFinishAt",
    ] {
        assert!(view.contains_key(field), "JobView lacks {field}");
    }
    let attempt = schemas["AttemptView"]["properties"].as_object().unwrap();
    for field in [
        "attempt",
        "worker",
        "startedAt",
        "endedAt",
        "outcome",
        "reason",
    ] {
        assert!(attempt.contains_key(field), "AttemptView lacks {field}");
    }
    for path in ["/api/v1/jobs", "/api/addJob"] {
        let post = &doc["paths"][path]["post"];
        let too_many = &post["responses"]["429"];
        assert!(
            too_many["headers"]["Retry-After"].is_object(),
            "{path}: {too_many}"
        );
        assert!(
            too_many["content"]["application/json"].is_object(),
            "{path}: {too_many}"
        );
        let text = post["responses"]["422"]["description"].as_str().unwrap();
        for field in [
            "priority",
            "retries",
            "notBefore",
            "expireAfterSecs",
            "deadline",
            "expectedDurationSecs",
        ] {
            assert!(text.contains(field), "{path}: {text}");
        }
    }
}

// ---- deadlines and estimates ----------------------------------------------------------

fn in_secs(secs: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn deadline_fields_out_of_range_are_422_naming_the_field_and_nothing_is_stored() {
    let h = harness();
    let cases = [
        (
            json!({"deadline": in_secs(-5)}),
            "deadline must be in the future",
        ),
        (
            json!({"deadline": in_secs(400 * 86_400)}),
            "within 366 days",
        ),
        (
            json!({"deadline": "tomorrow"}),
            "deadline must be an RFC 3339 time",
        ),
        (json!({"deadline": 17}), "deadline must be an RFC 3339 time"),
        (
            json!({"deadline": in_secs(60), "notBefore": in_secs(120)}),
            "deadline must be after notBefore",
        ),
        (
            json!({"expectedDurationSecs": 0}),
            "expectedDurationSecs must be above 0",
        ),
        (
            json!({"expectedDurationSecs": -3.5}),
            "expectedDurationSecs must be above 0",
        ),
        (
            json!({"expectedDurationSecs": 1e12}),
            "expectedDurationSecs must be above 0",
        ),
        (
            json!({"expectedDurationSecs": "10"}),
            "expectedDurationSecs must be a number",
        ),
    ];
    for (fields, message) in cases {
        let mut body = submit_body();
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        for path in ["/api/v1/jobs", "/api/addJob"] {
            let a = h.post_json(path, ALICE, body.to_string()).await;
            assert_eq!(
                a.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{fields} {}",
                a.text()
            );
            assert!(
                a.json()["error"].as_str().unwrap().contains(message),
                "{fields}: {}",
                a.text()
            );
        }
    }
    assert!(
        h.queue.sent.lock().unwrap().is_empty(),
        "nothing dispatched"
    );
}

#[tokio::test]
async fn a_deadline_and_expected_duration_are_kept_and_shown() {
    let h = harness();
    let deadline = in_secs(3600);
    let mut body = submit_body();
    body["deadline"] = json!(deadline);
    body["expectedDurationSecs"] = json!(12.5);
    let a = h.post_json("/api/v1/jobs", ALICE, body.to_string()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let view = a.json();
    let at = |v: &Value| {
        OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        jobq_common::domain::unix_ms(at(&view["deadline"])),
        jobq_common::domain::unix_ms(at(&json!(deadline)))
    );
    assert_eq!(view["expectedDurationSecs"], 12.5);
    assert_eq!(view["deadlineAtRisk"], false);
    // No observer has planned: no estimates, and the answer says so with nulls.
    assert!(view["estimatedStartAt"].is_null() && view["estimatedFinishAt"].is_null());
}

#[tokio::test]
async fn estimates_come_from_the_newest_plan_by_the_jobs_place_in_the_order() {
    use jobq_common::plan::{OrderKey, Plan, PlanEntry};
    let h = harness();
    let ms = |t: OffsetDateTime| jobq_common::domain::unix_ms(t);
    let now = OffsetDateTime::now_utc();
    // A plan with one waiting job (no deadline) predicted to start in 60 s, and a tail 90 s
    // out: a new job with a deadline goes before the planned one and takes its start; one
    // without goes after it, at the tail.
    let planned = h
        .post_json("/api/v1/jobs", ALICE, submit_body().to_string())
        .await
        .json();
    let planned_job = h
        .store
        .inner
        .get(&planned["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let start = ms(now) + 60_000;
    let plan = Plan {
        at_ms: ms(now),
        workers: 1,
        slots: 1,
        entries: vec![PlanEntry {
            key: OrderKey::of(&planned_job),
            running: false,
            start_ms: Some(start),
            finish_ms: Some(start + 30_000),
            at_risk: false,
        }],
        unplanned: 0,
        tail_ms: Some(start + 30_000),
        idle_ms: vec![],
        service: vec![],
        overall: None,
        default_secs: 7.0,
    };
    jobq_common::ports::ObservationStore::put_plan(&h.store.inner, &plan)
        .await
        .unwrap();
    // A frontend reads the plan at most once a second (the first submit read none).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let view = h
        .get(
            &format!("/api/v1/jobs/{}", planned["id"].as_str().unwrap()),
            Some(ALICE),
        )
        .await
        .json();
    let at = |v: &Value| {
        ms(OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap())
    };
    assert_eq!(at(&view["estimatedStartAt"]), start);
    // Its own expected time: the default, as nothing was learned (7 s).
    assert_eq!(at(&view["estimatedFinishAt"]), start + 7_000);
    let mut urgent = submit_body();
    urgent["deadline"] = json!(in_secs(65));
    urgent["expectedDurationSecs"] = json!(10);
    let a = h.post_json("/api/addJob", ALICE, urgent.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let answer = a.json();
    assert_eq!(at(&answer["estimatedStartAt"]), start);
    assert_eq!(at(&answer["estimatedFinishAt"]), start + 10_000);
    // Predicted after its deadline: the view says it is at risk.
    let urgent_view = h
        .get(
            &format!("/api/v1/jobs/{}", answer["jobId"].as_str().unwrap()),
            Some(ALICE),
        )
        .await
        .json();
    assert_eq!(urgent_view["deadlineAtRisk"], true, "{urgent_view}");
    let later = h
        .post_json("/api/v1/jobs", ALICE, submit_body().to_string())
        .await
        .json();
    assert_eq!(at(&later["estimatedStartAt"]), start + 30_000);
}
