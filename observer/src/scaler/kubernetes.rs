//! The Kubernetes scaler: reads and patches the `scale` subresource of the worker
//! Deployment with the pod's service-account token (plain HTTPS; the `kube` crate is more
//! than two calls need). Kubernetes picks which pods go; each gets SIGTERM and drains within
//! its termination grace period. Tested only against an HTTP double.

use std::path::PathBuf;

use anyhow::{Context, bail};
use async_trait::async_trait;
use jobq_common::settings::ObserverSettings;
use serde_json::{Value, json};

use super::{BusyWorkers, Scaler};

/// The worker Deployment's scale subresource.
#[derive(Debug)]
pub struct KubernetesScaler {
    http: reqwest::Client,
    scale_url: String,
    token_file: PathBuf,
}

impl KubernetesScaler {
    /// `api` is the API server's base URL.
    pub fn new(
        http: reqwest::Client,
        api: &str,
        namespace: &str,
        deployment: &str,
        token_file: PathBuf,
    ) -> Self {
        Self {
            http,
            scale_url: format!(
                "{}/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}/scale",
                api.trim_end_matches('/')
            ),
            token_file,
        }
    }

    /// In-cluster by default: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
    /// trusting the service account's CA.
    pub fn from_settings(o: &ObserverSettings) -> anyhow::Result<Self> {
        let api = if o.k8s_api_url.is_empty() {
            let host = std::env::var("KUBERNETES_SERVICE_HOST")
                .context("observer.k8s_api_url is empty and KUBERNETES_SERVICE_HOST is unset")?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            format!("https://{host}:{port}")
        } else {
            o.k8s_api_url.clone()
        };
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(15));
        if api.starts_with("https://") {
            let pem = std::fs::read(&o.k8s_ca_file).with_context(|| {
                format!(
                    "cannot read observer.k8s_ca_file {}",
                    o.k8s_ca_file.display()
                )
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .context("observer.k8s_ca_file holds no PEM certificate")?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self::new(
            builder.build()?,
            &api,
            &o.k8s_namespace,
            &o.k8s_deployment,
            o.k8s_token_file.clone(),
        ))
    }

    /// Read each time: projected service-account tokens are rotated by the kubelet.
    fn token(&self) -> anyhow::Result<String> {
        let token = std::fs::read_to_string(&self.token_file).with_context(|| {
            format!(
                "cannot read the service-account token {}",
                self.token_file.display()
            )
        })?;
        Ok(token.trim().to_string())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.bearer_auth(self.token()?).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("kubernetes answered {status}: {body}");
        }
        Ok(body)
    }
}

#[async_trait]
impl Scaler for KubernetesScaler {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn current(&self) -> anyhow::Result<Option<u32>> {
        let scale = self.send(self.http.get(&self.scale_url)).await?;
        Ok(scale["spec"]["replicas"].as_u64().map(|n| n as u32))
    }

    async fn scale(&self, desired: u32, _busy: &BusyWorkers) -> anyhow::Result<()> {
        if self.current().await? == Some(desired) {
            return Ok(());
        }
        self.send(
            self.http
                .patch(&self.scale_url)
                .header("content-type", "application/merge-patch+json")
                .body(json!({"spec": {"replicas": desired}}).to_string()),
        )
        .await?;
        tracing::info!(desired, "worker deployment scaled");
        Ok(())
    }
}
