//! A whole jobq deployment for one test: the real `jobq frontend`, `jobq worker` and
//! `jobq observer` (or `jobq standalone`) as child processes against the real servers, on topics, a
//! database and a bucket of its own, with job repositories served by a local `git daemon`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::unique_name;

/// A built binary of the workspace, next to the test executable's `deps` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Which deployment a stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `jobq frontend`, `jobq worker` and `jobq observer` on Kafka, MongoDB, S3 and Keycloak.
    Services,
    /// `jobq standalone`: one process on the embedded backends (no servers needed).
    Standalone,
}

/// Options of a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub backend: Backend,
    /// Worker processes (services) or in-process workers (standalone, times `slots`).
    pub workers: usize,
    pub slots: usize,
    pub job_timeout_secs: u64,
    pub lease_secs: u64,
    pub observer: bool,
    /// Standalone: let the observer size the in-process pool instead of a fixed `--workers`.
    pub autoscale: bool,
    /// More `JOBQ_` variables for every process (e.g. the observer's scaler and policy).
    pub extra_env: Vec<(String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Services,
            workers: 1,
            slots: 2,
            job_timeout_secs: 120,
            lease_secs: 4,
            observer: true,
            autoscale: false,
            extra_env: Vec::new(),
        }
    }
}

/// A running deployment; everything it started is killed when it is dropped.
pub struct Stack {
    pub url: String,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    /// The one folder outside their own that test jobs may write (to record pids and runs).
    pub shared: PathBuf,
    pub http: reqwest::Client,
    /// `jobq frontend`, or the `jobq standalone` process.
    frontend: Child,
    pub port: u16,
    pub workers: Vec<Child>,
    observer: Option<Child>,
    options: StackOptions,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file"))
}

impl Stack {
    /// A file in the shared folder that every job may append to: jobs run as users of their
    /// own, so one job's file would be read-only to the next.
    pub fn shared_file(&self, name: &str) -> PathBuf {
        let path = self.shared.join(name);
        std::fs::write(&path, "").expect("shared file");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("shared file mode");
        path
    }

    /// Starts a stack; a [`Backend::Services`] stack fails the test when the real servers are
    /// not set up (see [`crate::require_servers`]). Always `Some`: the `Option` only keeps the
    /// suites' `let Some(stack) = … else` lines valid.
    pub async fn start(options: StackOptions) -> Option<Stack> {
        if options.backend == Backend::Services {
            crate::require_servers("end-to-end");
        }
        let id = unique_name("e2e");
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(dir.join("shared")).expect("stack dir");
        // Sandboxed jobs run as users of their own: the shared folder is theirs too.
        std::fs::set_permissions(
            dir.join("shared"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .expect("shared folder mode");
        let port = free_port();
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("JOBQ_"))
            .collect();
        env.extend(
            [
                ("JOBQ_KAFKA__JOBS_TOPIC", format!("{id}-jobs")),
                ("JOBQ_KAFKA__EVENTS_TOPIC", format!("{id}-events")),
                (
                    "JOBQ_KAFKA__OBSERVATIONS_TOPIC",
                    format!("{id}-observations"),
                ),
                ("JOBQ_KAFKA__WORKER_GROUP", format!("{id}-workers")),
                ("JOBQ_KAFKA__OBSERVER_GROUP", format!("{id}-observer")),
                ("JOBQ_KAFKA__PARTITIONS", "8".into()),
                ("JOBQ_MONGO__DATABASE", id.clone()),
                ("JOBQ_S3__BUCKET", id.clone()),
                ("JOBQ_WORKER__ALLOW_LOCAL_REPOS", "true".into()),
                (
                    "JOBQ_WORKER__WORK_DIR",
                    dir.join("work").to_string_lossy().into_owned(),
                ),
                (
                    "JOBQ_WORKER__JOB_TIMEOUT_SECS",
                    options.job_timeout_secs.to_string(),
                ),
                ("JOBQ_WORKER__LEASE_SECS", options.lease_secs.to_string()),
                ("JOBQ_WORKER__RENEW_INTERVAL_MS", "1000".into()),
                ("JOBQ_WORKER__SHUTDOWN_GRACE_SECS", "5".into()),
                ("JOBQ_FRONTEND__LISTEN", format!("127.0.0.1:{port}")),
                ("JOBQ_OBSERVER__REFRESH_RATE_SECS", "1".into()),
                // The observer plans for the workers' slots (they take `--slots`).
                ("JOBQ_OBSERVER__SLOTS_PER_WORKER", options.slots.to_string()),
                // Test jobs record what they did (pids, runs) in the stack's folder, outside
                // their own: it is bound into their sandboxes.
                (
                    "JOBQ_WORKER__EXTRA_WRITABLE_DIRS",
                    dir.join("shared").to_string_lossy().into_owned(),
                ),
                // Expiry is tested with one-second tokens: no clock-skew allowance.
                ("JOBQ_OIDC__LEEWAY_SECS", "0".into()),
                ("RUST_LOG", "info,rdkafka=warn".into()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        env.extend(options.extra_env.iter().cloned());
        env.push((
            "JOBQ_STANDALONE__DATA_DIR".into(),
            dir.join("data").to_string_lossy().into_owned(),
        ));
        let frontend = Self::spawn_frontend(&options, &env, &dir, port);
        let mut stack = Stack {
            url: format!("http://127.0.0.1:{port}"),
            env,
            shared: dir.join("shared"),
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            frontend,
            port,
            workers: Vec::new(),
            observer: None,
            options: options.clone(),
        };
        stack.wait_ready().await;
        if options.backend == Backend::Standalone {
            return Some(stack);
        }
        if options.observer {
            stack.observer = Some(stack.spawn(&["observer"], "observer"));
        }
        for _ in 0..options.workers {
            stack.spawn_worker();
        }
        Some(stack)
    }

    /// The frontend (services) or the whole standalone process (with `workers × slots`
    /// in-process workers).
    fn spawn_frontend(
        options: &StackOptions,
        env: &[(String, String)],
        dir: &Path,
        port: u16,
    ) -> Child {
        let listen = format!("127.0.0.1:{port}");
        let workers = (options.workers * options.slots).to_string();
        let args: Vec<&str> = match options.backend {
            Backend::Services => vec!["frontend", "--listen", &listen],
            Backend::Standalone if options.autoscale => vec!["standalone", "--listen", &listen],
            Backend::Standalone => vec!["standalone", "--listen", &listen, "--workers", &workers],
        };
        Command::new(binary("jobq"))
            .args(args)
            .envs(env.iter().cloned())
            .stdout(log_file(dir, "frontend.out"))
            .stderr(log_file(dir, "frontend"))
            .spawn()
            .expect("start jobq")
    }

    /// The observer process's id, while it runs.
    pub fn observer_pid(&self) -> Option<u32> {
        self.observer.as_ref().map(Child::id)
    }

    pub fn backend(&self) -> Backend {
        self.options.backend
    }

    fn spawn(&self, args: &[&str], log: &str) -> Child {
        Command::new(binary("jobq"))
            .args(args)
            .envs(self.env.iter().cloned())
            .stdout(log_file(&self.dir, &format!("{log}.out")))
            .stderr(log_file(&self.dir, log))
            .spawn()
            .unwrap_or_else(|e| panic!("start jobq {args:?}: {e}"))
    }

    /// Starts one more worker process; for standalone, starts the process again (after
    /// [`Stack::kill_worker`], or stopping it first) with one more worker.
    pub async fn add_worker(&mut self) {
        if self.options.backend == Backend::Standalone {
            self.options.workers += 1;
            stop_child(&mut self.frontend);
            self.frontend = Self::spawn_frontend(&self.options, &self.env, &self.dir, self.port);
            self.wait_ready().await;
            return;
        }
        self.spawn_worker();
    }

    fn spawn_worker(&mut self) {
        let n = self.workers.len();
        let slots = self.options.slots.to_string();
        let child = self.spawn(&["worker", "--slots", &slots], &format!("worker-{n}"));
        self.workers.push(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(format!("{}/health/", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.frontend.try_wait() {
                panic!("jobq exited with {status}: {}", self.log("frontend"));
            }
            assert!(
                Instant::now() < deadline,
                "frontend not ready in 60 s: {}",
                self.log("frontend")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A process's log so far, for assertion messages.
    pub fn log(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// A token from the original route `GET /auth/{user}/{password}`.
    pub async fn token(&self, user: &str, password: &str) -> String {
        let r = self
            .http
            .get(format!("{}/auth/{user}/{password}", self.url))
            .send()
            .await
            .expect("auth");
        assert!(
            r.status().is_success(),
            "login of {user} answered {}",
            r.status()
        );
        r.json::<Value>().await.expect("json")["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    /// `POST /api/addJob`; returns the job id.
    pub async fn submit(&self, token: &str, body: Value) -> String {
        let r = self
            .http
            .post(format!("{}/api/addJob", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("addJob");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "addJob answered {status}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        v["jobId"].as_str().expect("jobId").to_string()
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn job(&self, token: &str, id: &str) -> Value {
        let r = self.get(token, &format!("/api/v1/jobs/{id}")).await;
        assert!(r.status().is_success(), "job {id}: {}", r.status());
        r.json().await.expect("json")
    }

    /// Waits until the job is in `status` (or any terminal state when `status` is `None`).
    pub async fn wait_for(
        &self,
        token: &str,
        id: &str,
        status: Option<&str>,
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(token, id).await;
            let now = job["status"].as_str().unwrap_or_default().to_string();
            let done = match status {
                Some(s) => now == s,
                None => matches!(now.as_str(), "finished" | "failed" | "cancelled"),
            };
            if done {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} is {now}, not {status:?}, after {within:?}\nworker-0:\n{}\nfrontend:\n{}",
                self.log("worker-0"),
                self.log("frontend")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL for worker `n` (standalone: for the whole process).
    pub fn kill_worker(&mut self, n: usize) {
        let child = match self.options.backend {
            Backend::Services => &mut self.workers[n],
            Backend::Standalone => &mut self.frontend,
        };
        let _ = child.kill();
        let _ = child.wait();
        if self.options.backend == Backend::Standalone {
            self.options.workers = self.options.workers.saturating_sub(1);
        }
    }

    /// SIGTERM for worker `n` (standalone: for the whole process), waiting until it exits.
    pub fn stop_worker(&mut self, n: usize) {
        let child = match self.options.backend {
            Backend::Services => &mut self.workers[n],
            Backend::Standalone => &mut self.frontend,
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
        if self.options.backend == Backend::Standalone {
            self.options.workers = self.options.workers.saturating_sub(1);
        }
    }

    /// A token with a valid signature but another issuer, and one that has expired.
    pub async fn foreign_tokens(&self) -> (String, String) {
        match self.options.backend {
            Backend::Services => self.keycloak_foreign_tokens().await,
            Backend::Standalone => {
                let key = std::fs::read(self.dir.join("data").join("token-key.p8"))
                    .expect("standalone signing key");
                let key = jsonwebtoken::EncodingKey::from_ec_der(&key);
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let sign = |iss: &str, iat: i64, exp: i64| {
                    let claims = serde_json::json!({
                        "iss": iss, "aud": "jobq", "sub": "myuser", "preferred_username": "myuser",
                        "realm_access": {"roles": []}, "iat": iat, "nbf": iat, "exp": exp,
                    });
                    jsonwebtoken::encode(
                        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
                        &claims,
                        &key,
                    )
                    .expect("sign")
                };
                (
                    sign("https://evil.example", now, now + 600),
                    sign("jobq-standalone", now - 600, now - 300),
                )
            }
        }
    }

    /// From Keycloak's token endpoints: the master realm (another issuer), and the realm's
    /// expiring test client (the frontend's audience, one-second lifetime; waited out).
    async fn keycloak_foreign_tokens(&self) -> (String, String) {
        let issuer = self
            .env
            .iter()
            .find(|(k, _)| k == "JOBQ_OIDC__ISSUER")
            .expect("issuer")
            .1
            .clone();
        let grant = async |realm_url: &str, form: &[(&str, &str)]| {
            let r = self
                .http
                .post(format!("{realm_url}/protocol/openid-connect/token"))
                .form(form)
                .send()
                .await
                .expect("token endpoint");
            assert!(
                r.status().is_success(),
                "grant at {realm_url}: {}",
                r.status()
            );
            r.json::<Value>().await.expect("json")["access_token"]
                .as_str()
                .expect("token")
                .to_string()
        };
        let master = issuer.replace("/realms/jobq", "/realms/master");
        let password = [
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", "admin"),
        ];
        let wrong_issuer = grant(
            &master,
            &[&password[..], &[("client_id", "admin-cli")]].concat(),
        )
        .await;
        let expiring = grant(
            &issuer,
            &[
                ("grant_type", "password"),
                ("client_id", "jobq-test-expiring"),
                ("client_secret", "jobq-test-expiring-secret"),
                ("username", "myuser"),
                ("password", "1234"),
            ],
        )
        .await;
        assert_eq!(
            self.get(&expiring, "/api/status").await.status(),
            200,
            "valid while fresh"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        (wrong_issuer, expiring)
    }

    /// Stops every process: SIGTERM, then SIGKILL for what did not exit.
    fn stop_all(&mut self) {
        let mut children: Vec<&mut Child> = self.workers.iter_mut().collect();
        children.push(&mut self.frontend);
        if let Some(o) = self.observer.as_mut() {
            children.push(o);
        }
        for child in children {
            if let Ok(None) = child.try_wait() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(8);
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_all();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("stack logs kept in {}", self.dir.display());
        }
    }
}

/// SIGTERM, up to 8 s to exit, then SIGKILL.
pub fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Git repositories made for the tests and served by `git daemon` on a free port.
pub struct GitServer {
    root: PathBuf,
    port: u16,
    daemon: Child,
}

impl std::fmt::Debug for GitServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl GitServer {
    pub fn start() -> GitServer {
        let root = std::env::temp_dir().join(unique_name("jobq-git"));
        std::fs::create_dir_all(&root).expect("git root");
        let port = free_port();
        // Its own process group: `git daemon` runs `git-daemon` as a child, which forks one
        // more per connection; all of them go with the group when the server is dropped.
        let daemon = Command::new("git")
            .process_group(0)
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        GitServer { root, port, daemon }
    }

    /// Creates repository `name` with `files` (path, content) committed; returns its `git://` URL.
    pub fn repo(&self, name: &str, files: &[(&str, &str)]) -> String {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).expect("repo dir");
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
            std::fs::write(p, content).expect("write");
        }
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@example.com",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .status()
                .expect("git")
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&["add", "-A"]);
        git(&["commit", "-qm", "job"]);
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
