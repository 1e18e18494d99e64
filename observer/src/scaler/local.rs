//! The local-process scaler: starts and stops `jobq worker` processes on this machine, the
//! single-host scaler when there are no containers. It keeps its children's PIDs and ends
//! only its own children: SIGTERM, never SIGKILL; an idle worker is stopped first and a busy
//! one is never stopped (it is picked again once it is idle).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use jobq_common::settings::Settings;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{BusyWorkers, Scaler};

#[derive(Debug, Default)]
struct Children {
    running: Vec<Child>,
    stopping: Vec<Child>,
}

/// Worker processes started by this observer.
#[derive(Debug)]
pub struct LocalProcessScaler {
    program: PathBuf,
    args: Vec<String>,
    slots: u32,
    /// How long `shutdown` waits for draining workers.
    drain_wait: Duration,
    children: Mutex<Children>,
}

/// Is `pid` the process of this worker id (`{host}-{pid}-{nonce}`, see `jobq_worker::worker_id`)?
fn id_has_pid(worker_id: &str, pid: u32) -> bool {
    let mut parts = worker_id.rsplitn(3, '-');
    let _nonce = parts.next();
    parts.next() == Some(pid.to_string().as_str())
}

fn alive(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

impl LocalProcessScaler {
    /// `program args… --slots N` starts one worker.
    pub fn new(program: PathBuf, args: Vec<String>, slots: u32, drain_wait: Duration) -> Self {
        Self {
            program,
            args,
            slots,
            drain_wait,
            children: Mutex::new(Children::default()),
        }
    }

    /// `observer.worker_command` split into words, or this executable: `jobq worker`, or the
    /// sibling `jobq-worker` binary when this is `jobq-observer`.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let (program, args) = if settings.observer.worker_command.trim().is_empty() {
            let exe = std::env::current_exe().context("cannot find this executable")?;
            let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("jobq-observer") {
                (exe.with_file_name("jobq-worker"), Vec::new())
            } else {
                (exe, vec!["worker".to_string()])
            }
        } else {
            let mut words = shell_words::split(&settings.observer.worker_command)
                .context("observer.worker_command is not a valid command line")?;
            if words.is_empty() {
                anyhow::bail!("observer.worker_command is empty");
            }
            let program = PathBuf::from(words.remove(0));
            (program, words)
        };
        Ok(Self::new(
            program,
            args,
            settings.observer_slots_per_worker(),
            Duration::from_secs(settings.worker.shutdown_grace_secs + 10),
        ))
    }

    /// PIDs of the workers running (not stopping).
    pub async fn pids(&self) -> Vec<u32> {
        let mut c = self.children.lock().await;
        c.running.retain_mut(alive);
        c.running.iter().filter_map(Child::id).collect()
    }

    fn start_one(&self) -> anyhow::Result<Child> {
        Command::new(&self.program)
            .args(&self.args)
            .arg("--slots")
            .arg(self.slots.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))
    }
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id()
        && let Err(e) = kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
    {
        tracing::warn!(pid, error = %e, "cannot signal worker");
    }
}

#[async_trait]
impl Scaler for LocalProcessScaler {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn current(&self) -> anyhow::Result<Option<u32>> {
        Ok(Some(self.pids().await.len() as u32))
    }

    async fn scale(&self, desired: u32, busy: &BusyWorkers) -> anyhow::Result<()> {
        let mut c = self.children.lock().await;
        // A worker that exited on its own (crash, kill) is replaced on this round.
        c.running.retain_mut(alive);
        c.stopping.retain_mut(alive);
        let desired = desired as usize;
        while c.running.len() < desired {
            let child = self.start_one()?;
            tracing::info!(pid = child.id(), "worker process started");
            c.running.push(child);
        }
        if c.running.len() > desired {
            let excess = c.running.len() - desired;
            let is_busy = |child: &Child| {
                child.id().is_some_and(|pid| {
                    busy.iter()
                        .any(|(id, jobs)| *jobs > 0 && id_has_pid(id, pid))
                })
            };
            // Newest first: the oldest workers keep their warm repository caches.
            let mut stopped = 0;
            let mut i = c.running.len();
            while i > 0 && stopped < excess {
                i -= 1;
                if !is_busy(&c.running[i]) {
                    let child = c.running.remove(i);
                    terminate(&child);
                    tracing::info!(pid = child.id(), "worker process told to stop (SIGTERM)");
                    c.stopping.push(child);
                    stopped += 1;
                }
            }
            if stopped < excess {
                tracing::debug!(
                    waiting = excess - stopped,
                    "busy workers are not stopped; trying again next period"
                );
            }
        }
        Ok(())
    }

    async fn shutdown(&self) {
        let mut c = self.children.lock().await;
        let mut all: Vec<Child> = c.running.drain(..).collect();
        all.append(&mut c.stopping);
        for child in &all {
            terminate(child);
        }
        for mut child in all {
            if tokio::time::timeout(self.drain_wait, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    pid = child.id(),
                    "worker did not stop in time; left running"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_name_their_pid() {
        assert!(id_has_pid("host-a-b-1234-abc123", 1234));
        assert!(id_has_pid("h-1234-abc123", 1234));
        assert!(!id_has_pid("h-12345-abc123", 1234));
        assert!(!id_has_pid("h-1234", 1234));
    }

    #[tokio::test]
    async fn starts_and_stops_its_own_children_and_spares_busy_ones() {
        // A stand-in worker: `sh -c` takes the appended `--slots 1` as $0 and $1.
        let scaler = LocalProcessScaler::new(
            "sh".into(),
            vec![
                "-c".into(),
                "trap 'exit 0' TERM; while :; do sleep 0.05; done".into(),
            ],
            1,
            Duration::from_secs(5),
        );
        scaler.scale(3, &BusyWorkers::new()).await.unwrap();
        let pids = scaler.pids().await;
        assert_eq!(pids.len(), 3);
        // The newest is busy: the two others stop instead.
        let busy: BusyWorkers = [(format!("host-{}-abcdef", pids[2]), 1)].into();
        scaler.scale(1, &busy).await.unwrap();
        assert_eq!(scaler.pids().await, vec![pids[2]]);
        // Busy and alone above the target: it is not stopped.
        scaler.scale(0, &busy).await.unwrap();
        assert_eq!(scaler.current().await.unwrap(), Some(1));
        scaler.scale(0, &BusyWorkers::new()).await.unwrap();
        assert_eq!(scaler.current().await.unwrap(), Some(0));
        scaler.shutdown().await;
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .unwrap_or_default()
                        .contains(") Z"),
                "{pid} still runs"
            );
        }
    }
}
