//! Scalers: set how many workers run, read how many do. One trait, chosen by
//! `observer.scaler`: `log`, `local`, `docker`, `kubernetes`, `kumori`.
//!
//! Scale-down drains everywhere: a worker is stopped with SIGTERM (directly, or by Docker or
//! Kubernetes), takes no new job and exits when its jobs are done. Where the scaler can pick
//! which worker stops (`local`, `docker`) it stops idle ones only and waits for busy ones.

pub mod docker;
pub mod kubernetes;
pub mod kumori;
pub mod local;

use std::collections::HashMap;

use async_trait::async_trait;
use jobq_common::settings::{ScalerKind, Settings};

pub use docker::DockerScaler;
pub use kubernetes::KubernetesScaler;
pub use kumori::KumoriScaler;
pub use local::LocalProcessScaler;

/// Running jobs per worker id (the `worker` of job events).
pub type BusyWorkers = HashMap<String, u32>;

/// Sets the size of the worker fleet.
#[async_trait]
pub trait Scaler: Send + Sync {
    fn name(&self) -> &'static str;

    /// Workers running now and not stopping; `None` when this scaler cannot tell.
    async fn current(&self) -> anyhow::Result<Option<u32>>;

    /// Asks for `desired` workers. `busy` says which workers run jobs now.
    async fn scale(&self, desired: u32, busy: &BusyWorkers) -> anyhow::Result<()>;

    /// Called once when the observer stops: a scaler that started processes itself stops
    /// them (draining); the others leave the fleet as it is.
    async fn shutdown(&self) {}
}

/// Prints the decision, as the original observer did; the fleet is managed by someone else.
#[derive(Debug, Default)]
pub struct LogScaler {
    last: std::sync::Mutex<Option<u32>>,
}

#[async_trait]
impl Scaler for LogScaler {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn current(&self) -> anyhow::Result<Option<u32>> {
        Ok(None)
    }

    async fn scale(&self, desired: u32, _busy: &BusyWorkers) -> anyhow::Result<()> {
        let mut last = self.last.lock().expect("log scaler lock");
        if *last != Some(desired) {
            tracing::info!(desired, "scale the workers to {desired}");
            *last = Some(desired);
        }
        Ok(())
    }
}

/// Builds the scaler named by `observer.scaler`.
pub fn from_settings(settings: &Settings) -> anyhow::Result<Box<dyn Scaler>> {
    let o = &settings.observer;
    Ok(match o.scaler {
        ScalerKind::Log => Box::new(LogScaler::default()),
        ScalerKind::Local => Box::new(LocalProcessScaler::from_settings(settings)?),
        ScalerKind::Docker => Box::new(DockerScaler::from_settings(o)?),
        ScalerKind::Kubernetes => Box::new(KubernetesScaler::from_settings(o)?),
        ScalerKind::Kumori => Box::new(KumoriScaler::from_settings(o)?),
    })
}
