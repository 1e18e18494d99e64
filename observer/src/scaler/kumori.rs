//! The Kumori scaler: runs `observer.kumori_command` (split into words, never through a
//! shell) with the desired count appended as the last argument, e.g.
//! `kam ctl scale-role jobq worker 5`. Kumori cannot be asked which instances run, so the
//! count is the last one set. Tested only against a command double.

use anyhow::{Context, bail};
use async_trait::async_trait;
use jobq_common::settings::ObserverSettings;
use tokio::sync::Mutex;

use super::{BusyWorkers, Scaler};

#[derive(Debug)]
pub struct KumoriScaler {
    program: String,
    args: Vec<String>,
    last: Mutex<Option<u32>>,
}

impl KumoriScaler {
    pub fn new(command: &str) -> anyhow::Result<Self> {
        let mut words =
            shell_words::split(command).context("observer.kumori_command is not a command line")?;
        if words.is_empty() {
            bail!("observer.kumori_command is empty: the kumori scaler needs it");
        }
        let program = words.remove(0);
        Ok(Self {
            program,
            args: words,
            last: Mutex::new(None),
        })
    }

    pub fn from_settings(o: &ObserverSettings) -> anyhow::Result<Self> {
        Self::new(&o.kumori_command)
    }
}

#[async_trait]
impl Scaler for KumoriScaler {
    fn name(&self) -> &'static str {
        "kumori"
    }

    async fn current(&self) -> anyhow::Result<Option<u32>> {
        Ok(*self.last.lock().await)
    }

    async fn scale(&self, desired: u32, _busy: &BusyWorkers) -> anyhow::Result<()> {
        let mut last = self.last.lock().await;
        if *last == Some(desired) {
            return Ok(());
        }
        let output = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .arg(desired.to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.program))?;
        if !output.status.success() {
            bail!(
                "{} exited with {}: {}",
                self.program,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        tracing::info!(desired, "kumori worker role scaled");
        *last = Some(desired);
        Ok(())
    }
}
