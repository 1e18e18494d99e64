//! The Docker, Kubernetes and Kumori scalers against doubles that record exactly the calls
//! made: an axum Docker Engine on a unix socket, an axum API server on a loopback port, and
//! a shell script standing in for the Kumori CLI. No real engine, cluster or platform.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jobq_observer::scaler::docker::DockerApi;
use jobq_observer::scaler::{BusyWorkers, DockerScaler, KubernetesScaler, KumoriScaler, Scaler};
use serde_json::{Value, json};

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("jobq-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every call a double saw: method, path with query, body.
type Calls = Arc<Mutex<Vec<(String, String, Value)>>>;

#[derive(Clone, Default)]
struct Engine {
    calls: Calls,
    /// (id, state, container number)
    containers: Arc<Mutex<Vec<(String, String, u32)>>>,
}

async fn docker(State(engine): State<Engine>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    engine
        .calls
        .lock()
        .unwrap()
        .push((method.clone(), path.clone(), body));
    let mut containers = engine.containers.lock().unwrap();
    match (method.as_str(), path.as_str()) {
        ("GET", p) if p.starts_with("/containers/json") => {
            let list: Vec<Value> = containers
                .iter()
                .map(|(id, state, n)| {
                    json!({"Id": id, "State": state, "Labels": {
                        "com.docker.compose.project": "jobq",
                        "com.docker.compose.service": "worker",
                        "com.docker.compose.container-number": n.to_string()}})
                })
                .collect();
            axum::Json(list).into_response()
        }
        ("GET", p) if p.ends_with("/json") => axum::Json(json!({
            "Config": {"Image": "jobq/worker:latest", "Cmd": ["jobq", "worker"], "Env": ["A=1"],
                       "Labels": {"com.docker.compose.project": "jobq",
                                  "com.docker.compose.service": "worker",
                                  "com.docker.compose.container-number": "1"}},
            "HostConfig": {"NetworkMode": "jobq_default", "Init": true},
            "NetworkSettings": {"Networks": {"jobq_default": {}}}
        }))
        .into_response(),
        ("POST", p) if p.starts_with("/containers/create") => {
            let id = container_id(containers.len() + 1);
            let n = containers.iter().map(|c| c.2).max().unwrap_or(0) + 1;
            containers.push((id.clone(), "created".into(), n));
            (StatusCode::CREATED, axum::Json(json!({"Id": id}))).into_response()
        }
        ("POST", p) if p.ends_with("/start") => {
            let id = p.split('/').nth(2).unwrap();
            for c in containers.iter_mut().filter(|c| c.0 == id) {
                c.1 = "running".into();
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", p) if p.contains("/stop") => {
            let id = p.split('/').nth(2).unwrap();
            for c in containers.iter_mut().filter(|c| c.0 == id) {
                c.1 = "exited".into();
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("DELETE", p) => {
            let id = p.split('/').nth(2).unwrap().to_string();
            containers.retain(|c| c.0 != id);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test]
async fn docker_clones_the_service_container_and_removes_idle_ones() {
    let dir = temp_dir("docker");
    let socket = dir.join("docker.sock");
    let engine = Engine::default();
    engine
        .containers
        .lock()
        .unwrap()
        .push(("a".repeat(64), "running".into(), 1));
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let app = Router::new().fallback(docker).with_state(engine.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let scaler = DockerScaler::new(DockerApi::new(&socket), "jobq", "worker", 45);
    assert_eq!(scaler.current().await.unwrap(), Some(1));
    engine.calls.lock().unwrap().clear();

    scaler.scale(3, &BusyWorkers::new()).await.unwrap();
    let calls = std::mem::take(&mut *engine.calls.lock().unwrap());
    let shape: Vec<(String, String)> = calls
        .iter()
        .map(|(m, p, _)| (m.clone(), p.split('?').next().unwrap().to_string()))
        .collect();
    let aaa = "a".repeat(64);
    let c1 = container_id(2);
    let c2 = container_id(3);
    let expected: Vec<(String, String)> = [
        ("GET", "/containers/json".to_string()),
        ("GET", format!("/containers/{aaa}/json")),
        ("POST", "/containers/create".to_string()),
        ("POST", format!("/containers/{c1}/start")),
        ("GET", format!("/containers/{aaa}/json")),
        ("POST", "/containers/create".to_string()),
        ("POST", format!("/containers/{c2}/start")),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p))
    .collect();
    assert_eq!(shape, expected);
    // The list is filtered by the compose labels.
    let list = &calls[0].1;
    assert!(list.contains("all=1"), "{list}");
    let filters = url_decode(list.split("filters=").nth(1).unwrap());
    let filters: Value = serde_json::from_str(&filters).unwrap();
    assert_eq!(
        filters,
        json!({"label": ["com.docker.compose.project=jobq", "com.docker.compose.service=worker"]})
    );
    // A clone of the template, numbered, on the service's networks with its alias.
    assert!(
        calls[2].1.ends_with("?name=jobq-worker-2"),
        "{}",
        calls[2].1
    );
    let body = &calls[2].2;
    assert_eq!(body["Image"], "jobq/worker:latest");
    assert_eq!(body["Cmd"], json!(["jobq", "worker"]));
    assert_eq!(body["Env"], json!(["A=1"]));
    assert_eq!(body["HostConfig"]["Init"], true);
    assert_eq!(body["Labels"]["com.docker.compose.container-number"], "2");
    assert_eq!(body["Labels"]["com.docker.compose.service"], "worker");
    assert_eq!(
        body["NetworkingConfig"]["EndpointsConfig"]["jobq_default"]["Aliases"],
        json!(["worker"])
    );
    assert_eq!(scaler.current().await.unwrap(), Some(3));
    engine.calls.lock().unwrap().clear();

    // Down to one: the newest container is busy (its worker id starts with its short id), so
    // the two idle ones go, and the busy one stays.
    let busy: BusyWorkers = [(format!("{}-77-abcdef", &c2[..12]), 1)].into();
    scaler.scale_and_wait(1, &busy).await.unwrap();
    let calls = std::mem::take(&mut *engine.calls.lock().unwrap());
    let shape: Vec<(String, String)> = calls
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .filter(|(m, _)| m != "GET")
        .collect();
    let mut expected: Vec<(String, String)> = [
        ("POST", format!("/containers/{c1}/stop?t=45")),
        ("DELETE", format!("/containers/{c1}")),
        ("POST", format!("/containers/{aaa}/stop?t=45")),
        ("DELETE", format!("/containers/{aaa}")),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p))
    .collect();
    let mut shape_sorted = shape.clone();
    shape_sorted.sort();
    expected.sort();
    assert_eq!(shape_sorted, expected, "{shape:?}");
    assert_eq!(scaler.current().await.unwrap(), Some(1));
    let left = engine.containers.lock().unwrap().clone();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, c2, "the busy container stays");
    let _ = std::fs::remove_dir_all(dir);
}

/// Docker ids are 64 hex digits; the first 12 are the container's host name.
fn container_id(n: usize) -> String {
    format!("{n:012x}{}", "e".repeat(52))
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

#[derive(Clone, Default)]
struct ApiServer {
    calls: Calls,
    headers: Arc<Mutex<Vec<(String, String)>>>,
    replicas: Arc<Mutex<u64>>,
}

async fn kube(State(api): State<ApiServer>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    api.calls
        .lock()
        .unwrap()
        .push((method.clone(), path.clone(), body.clone()));
    api.headers
        .lock()
        .unwrap()
        .push((auth.clone(), content_type));
    if auth != "Bearer sa-token" {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if path != "/apis/apps/v1/namespaces/jobq/deployments/jobq-worker/scale" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut replicas = api.replicas.lock().unwrap();
    if method == "PATCH" {
        *replicas = body["spec"]["replicas"].as_u64().unwrap();
    }
    axum::Json(json!({"kind": "Scale", "spec": {"replicas": *replicas}, "status": {"replicas": *replicas}}))
        .into_response()
}

#[tokio::test]
async fn kubernetes_patches_the_deployment_scale_subresource() {
    let api = ApiServer::default();
    *api.replicas.lock().unwrap() = 2;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(kube).with_state(api.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = temp_dir("k8s");
    let token = dir.join("token");
    std::fs::write(&token, "sa-token\n").unwrap();

    let scaler = KubernetesScaler::new(
        reqwest::Client::new(),
        &format!("http://{addr}"),
        "jobq",
        "jobq-worker",
        token,
    );
    assert_eq!(scaler.current().await.unwrap(), Some(2));
    scaler.scale(5, &BusyWorkers::new()).await.unwrap();
    // Already 5: only a read.
    scaler.scale(5, &BusyWorkers::new()).await.unwrap();
    let calls = api.calls.lock().unwrap().clone();
    let scale = "/apis/apps/v1/namespaces/jobq/deployments/jobq-worker/scale";
    let shape: Vec<(&str, &str, Value)> = calls
        .iter()
        .map(|(m, p, b)| (m.as_str(), p.as_str(), b.clone()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("GET", scale, Value::Null),
            ("GET", scale, Value::Null),
            ("PATCH", scale, json!({"spec": {"replicas": 5}})),
            ("GET", scale, Value::Null),
        ]
    );
    let headers = api.headers.lock().unwrap().clone();
    assert!(headers.iter().all(|(auth, _)| auth == "Bearer sa-token"));
    assert_eq!(headers[2].1, "application/merge-patch+json");
    assert_eq!(*api.replicas.lock().unwrap(), 5);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn kumori_runs_its_command_with_the_count_last_and_no_shell() {
    let dir = temp_dir("kumori");
    let log = dir.join("argv");
    let script = dir.join("kam");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s|' \"$a\" >> '{}'; done\necho >> '{}'\n",
            log.display(),
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let command = format!(
        "{} ctl scale-role 'jobq deployment' worker; $(touch {}/pwned)",
        script.display(),
        dir.display()
    );
    let scaler = KumoriScaler::new(&command).unwrap();
    assert_eq!(scaler.current().await.unwrap(), None);
    scaler.scale(4, &BusyWorkers::new()).await.unwrap();
    scaler.scale(4, &BusyWorkers::new()).await.unwrap(); // unchanged: not run again
    scaler.scale(2, &BusyWorkers::new()).await.unwrap();
    assert_eq!(scaler.current().await.unwrap(), Some(2));
    let argv = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        argv,
        "ctl|scale-role|jobq deployment|worker;|$(touch|".to_string()
            + &format!("{}/pwned)|4|\n", dir.display())
            + "ctl|scale-role|jobq deployment|worker;|$(touch|"
            + &format!("{}/pwned)|2|\n", dir.display())
    );
    assert!(!dir.join("pwned").exists(), "a shell ran the command");

    let failing = KumoriScaler::new("false").unwrap();
    assert!(failing.scale(1, &BusyWorkers::new()).await.is_err());
    assert_eq!(failing.current().await.unwrap(), None);
    let _ = std::fs::remove_dir_all(dir);
}
