//! The Docker scaler: sets how many containers of the compose `worker` service run, through
//! the Docker Engine API on its unix socket (a minimal HTTP/1.1 client on hyper).
//!
//! Containers are found by the compose labels `com.docker.compose.project` and
//! `com.docker.compose.service`. To add one it clones an existing container of the service
//! (image, command, environment, labels, host config, networks with the service alias); to
//! remove one it stops an idle container (SIGTERM, the worker drains; Docker kills only
//! after `docker_stop_timeout_secs`) and deletes it. Tested only against an HTTP double.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use jobq_common::settings::ObserverSettings;
use serde_json::{Value, json};
use tokio::net::UnixStream;

use super::{BusyWorkers, Scaler};

const PROJECT: &str = "com.docker.compose.project";
const SERVICE: &str = "com.docker.compose.service";
const NUMBER: &str = "com.docker.compose.container-number";

/// A client of the Docker Engine API on a unix socket.
#[derive(Debug, Clone)]
pub struct DockerApi {
    socket: PathBuf,
}

impl DockerApi {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// One request; answers the status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("cannot connect to {}", self.socket.display()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", "docker")
            .header("content-type", "application/json")
            .body(Full::new(bytes))?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("docker {method} {path}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        Ok((status, value))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        // 304: already started/stopped.
        if !(200..300).contains(&status) && status != 304 {
            bail!("docker {method} {path} answered {status}: {value}");
        }
        Ok(value)
    }
}

/// A container of the service as the list call shows it.
#[derive(Debug, Clone)]
struct Container {
    id: String,
    running: bool,
    number: u32,
}

/// Containers of one compose service.
#[derive(Debug)]
pub struct DockerScaler {
    api: DockerApi,
    project: String,
    service: String,
    stop_timeout_secs: u64,
    /// Containers being stopped (the stop call waits for the drain).
    stopping: Arc<Mutex<HashSet<String>>>,
}

impl DockerScaler {
    pub fn new(api: DockerApi, project: &str, service: &str, stop_timeout_secs: u64) -> Self {
        Self {
            api,
            project: project.into(),
            service: service.into(),
            stop_timeout_secs,
            stopping: Arc::default(),
        }
    }

    pub fn from_settings(o: &ObserverSettings) -> anyhow::Result<Self> {
        let Some(socket) = o.docker_host.strip_prefix("unix://") else {
            bail!(
                "observer.docker_host must be a unix:// socket, not {:?}",
                o.docker_host
            );
        };
        Ok(Self::new(
            DockerApi::new(socket),
            &o.docker_project,
            &o.docker_service,
            o.docker_stop_timeout_secs,
        ))
    }

    async fn containers(&self) -> anyhow::Result<Vec<Container>> {
        let filters = json!({"label": [
            format!("{PROJECT}={}", self.project),
            format!("{SERVICE}={}", self.service),
        ]})
        .to_string();
        let query: String = url::form_urlencoded::byte_serialize(filters.as_bytes()).collect();
        let list = self
            .api
            .ok(
                Method::GET,
                &format!("/containers/json?all=1&filters={query}"),
                None,
            )
            .await?;
        let stopping = self.stopping.lock().expect("stopping lock").clone();
        Ok(list
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| {
                let id = c["Id"].as_str()?.to_string();
                Some(Container {
                    running: c["State"] == "running" && !stopping.contains(&id),
                    number: c["Labels"][NUMBER]
                        .as_str()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                    id,
                })
            })
            .collect())
    }

    /// The body that creates a copy of `template` (an inspect answer) numbered `number`.
    fn clone_body(&self, template: &Value, number: u32) -> Value {
        let config = &template["Config"];
        let mut labels = config["Labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels[NUMBER] = json!(number.to_string());
        labels["jobq.scaled-by"] = json!("observer");
        let networks: serde_json::Map<String, Value> = template["NetworkSettings"]["Networks"]
            .as_object()
            .map(|nets| {
                nets.keys()
                    .map(|name| (name.clone(), json!({"Aliases": [self.service]})))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "Image": config["Image"],
            "Cmd": config["Cmd"],
            "Entrypoint": config["Entrypoint"],
            "Env": config["Env"],
            "WorkingDir": config["WorkingDir"],
            "User": config["User"],
            "Labels": labels,
            "HostConfig": template["HostConfig"],
            "NetworkingConfig": {"EndpointsConfig": networks},
        })
    }

    async fn add(&self, template: &str, number: u32) -> anyhow::Result<()> {
        let inspect = self
            .api
            .ok(Method::GET, &format!("/containers/{template}/json"), None)
            .await?;
        let name = format!("{}-{}-{number}", self.project, self.service);
        let created = self
            .api
            .ok(
                Method::POST,
                &format!("/containers/create?name={name}"),
                Some(&self.clone_body(&inspect, number)),
            )
            .await?;
        let id = created["Id"]
            .as_str()
            .context("docker create answered no Id")?;
        self.api
            .ok(Method::POST, &format!("/containers/{id}/start"), None)
            .await?;
        tracing::info!(container = %name, "worker container started");
        Ok(())
    }

    /// Stops (SIGTERM, drain) and deletes a container in the background.
    fn remove(&self, id: String) -> tokio::task::JoinHandle<()> {
        self.stopping
            .lock()
            .expect("stopping lock")
            .insert(id.clone());
        let (api, stopping, timeout) = (
            self.api.clone(),
            self.stopping.clone(),
            self.stop_timeout_secs,
        );
        tokio::spawn(async move {
            let stop = format!("/containers/{id}/stop?t={timeout}");
            let result = async {
                api.ok(Method::POST, &stop, None).await?;
                api.ok(Method::DELETE, &format!("/containers/{id}"), None)
                    .await
            }
            .await;
            match result {
                Ok(_) => tracing::info!(container = %id, "worker container stopped and removed"),
                Err(e) => tracing::warn!(container = %id, error = %e, "cannot remove worker"),
            }
            stopping.lock().expect("stopping lock").remove(&id);
        })
    }

    /// Scales and, for tests, waits until the containers being removed are gone.
    pub async fn scale_and_wait(&self, desired: u32, busy: &BusyWorkers) -> anyhow::Result<()> {
        for handle in self.scale_inner(desired, busy).await? {
            let _ = handle.await;
        }
        Ok(())
    }

    async fn scale_inner(
        &self,
        desired: u32,
        busy: &BusyWorkers,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let all = self.containers().await?;
        let running: Vec<&Container> = all.iter().filter(|c| c.running).collect();
        let desired = desired as usize;
        let mut removals = Vec::new();
        if running.len() < desired {
            let Some(template) = running.first().copied().or(all.first()) else {
                bail!(
                    "no container of compose service {} in project {} to clone",
                    self.service,
                    self.project
                );
            };
            let mut next = all.iter().map(|c| c.number).max().unwrap_or(0);
            for _ in running.len()..desired {
                next += 1;
                self.add(&template.id, next).await?;
            }
        } else if running.len() > desired {
            // A worker's id starts with its host name, which is the container's short id.
            let is_busy = |c: &Container| {
                busy.iter().any(|(w, jobs)| {
                    *jobs > 0 && w.get(..12).is_some_and(|host| c.id.starts_with(host))
                })
            };
            let mut idle: Vec<&Container> = running.into_iter().filter(|c| !is_busy(c)).collect();
            // Highest numbers first: compose's own containers (low numbers) stay.
            idle.sort_by_key(|c| std::cmp::Reverse(c.number));
            let excess = all.iter().filter(|c| c.running).count() - desired;
            for c in idle.into_iter().take(excess) {
                removals.push(self.remove(c.id.clone()));
            }
        }
        Ok(removals)
    }
}

#[async_trait]
impl Scaler for DockerScaler {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn current(&self) -> anyhow::Result<Option<u32>> {
        Ok(Some(
            self.containers()
                .await?
                .iter()
                .filter(|c| c.running)
                .count() as u32,
        ))
    }

    async fn scale(&self, desired: u32, busy: &BusyWorkers) -> anyhow::Result<()> {
        self.scale_inner(desired, busy).await.map(drop)
    }
}
