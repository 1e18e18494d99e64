//! A control group per job: the kernel caps the memory and the number of processes of
//! everything the job starts, counts when it hit a cap, and lets the worker kill whatever is
//! left. Cgroup v2 is used where this worker's own cgroup has the `memory` and `pids`
//! controllers delegated to it; otherwise the v1 `memory` and `pids` hierarchies, where
//! they are mounted and writable (a root worker on a v1 or hybrid host). With neither,
//! [`JobCgroups::detect`] returns `None` and the sandbox falls back to per-process
//! resource limits (`RLIMIT_AS`, `RLIMIT_NPROC`).
//!
//! The interface is the kernel's documented files (`Documentation/admin-guide/cgroup-v2.rst`,
//! `cgroup-v1/memory.rst`, `cgroup-v1/pids.rst`); nothing here decides a job's outcome.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const V1_ROOT: &str = "/sys/fs/cgroup";
const V2_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup interface the worker drives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// One directory per job under the worker's delegated v2 cgroup.
    V2 { parent: PathBuf },
    /// Two directories per job: one in the `memory` hierarchy, one in the `pids` hierarchy.
    V1 { memory: PathBuf, pids: PathBuf },
}

/// How long an empty job cgroup must have existed before a starting worker removes it as a
/// stopped worker's ([`JobCgroups::sweep_stale`]).
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Where this worker creates its jobs' cgroups.
#[derive(Debug, Clone)]
pub struct JobCgroups {
    layout: Layout,
}

/// The cgroup (or pair of v1 cgroups) of one running job.
#[derive(Debug)]
pub struct JobCgroup {
    layout: Layout,
    dirs: Vec<PathBuf>,
}

impl JobCgroups {
    /// Finds a usable cgroup interface, prepared for job cgroups, or `None`.
    pub fn detect() -> Option<JobCgroups> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        if let Some(parent) = prepare_v2(&own) {
            return Some(JobCgroups {
                layout: Layout::V2 { parent },
            });
        }
        let memory = v1_dir(&own, "memory")?;
        let pids = v1_dir(&own, "pids")?;
        let layout = Layout::V1 {
            memory: memory.join("jobq"),
            pids: pids.join("jobq"),
        };
        let cgroups = JobCgroups { layout };
        // Prove it works: create, limit and remove a probe group.
        let probe = cgroups
            .create(&format!("probe-{}", std::process::id()), 64 << 20, 8)
            .ok()?;
        probe.remove();
        let swept = cgroups.sweep_stale(STALE_AFTER);
        if swept > 0 {
            tracing::info!(swept, "empty job cgroups of stopped workers removed");
        }
        Some(cgroups)
    }

    /// Removes the cgroups below the v1 `jobq` folders that hold no process and were made
    /// more than `older_than` ago: those of workers killed before they could remove them (a
    /// worker's standby job shims each hold one). A live worker's cgroup holds its shim within
    /// milliseconds of being made and is removed within milliseconds of being emptied, and
    /// the kernel refuses to remove one with a process in it, so none in use goes. Returns
    /// how many folders went. Nothing is swept on cgroup v2, whose parent folder may hold
    /// groups that are not jobs'.
    pub fn sweep_stale(&self, older_than: Duration) -> usize {
        let Layout::V1 { memory, pids } = &self.layout else {
            return 0;
        };
        let mut swept = 0;
        for root in [memory, pids] {
            for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
                let dir = entry.path();
                let old = entry
                    .metadata()
                    .ok()
                    .filter(|m| m.is_dir())
                    .and_then(|m| m.modified().ok())
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|age| age > older_than);
                let empty = std::fs::read_to_string(dir.join("cgroup.procs"))
                    .is_ok_and(|procs| procs.trim().is_empty());
                if old && empty && std::fs::remove_dir(&dir).is_ok() {
                    swept += 1;
                }
            }
        }
        swept
    }

    /// Which interface, for the worker's start-up line and the docs.
    pub fn describe(&self) -> &'static str {
        match self.layout {
            Layout::V2 { .. } => "cgroup v2",
            Layout::V1 { .. } => "cgroup v1 (memory, pids)",
        }
    }

    /// A new cgroup `name` with its memory (bytes, swap included) and process caps.
    pub fn create(
        &self,
        name: &str,
        memory_bytes: u64,
        max_processes: u64,
    ) -> std::io::Result<JobCgroup> {
        let dirs = match &self.layout {
            Layout::V2 { parent } => vec![parent.join(name)],
            Layout::V1 { memory, pids } => vec![memory.join(name), pids.join(name)],
        };
        for dir in &dirs {
            std::fs::create_dir_all(dir)?;
        }
        let group = JobCgroup {
            layout: self.layout.clone(),
            dirs,
        };
        if let Err(e) = group.set_limits(memory_bytes, max_processes) {
            group.remove();
            return Err(e);
        }
        Ok(group)
    }
}

impl JobCgroup {
    fn set_limits(&self, memory_bytes: u64, max_processes: u64) -> std::io::Result<()> {
        let memory = memory_bytes.to_string();
        let pids = max_processes.to_string();
        match &self.layout {
            Layout::V2 { .. } => {
                let dir = &self.dirs[0];
                std::fs::write(dir.join("memory.max"), &memory)?;
                // No swap: the limit is the job's memory, not memory plus disk.
                write_if_present(&dir.join("memory.swap.max"), "0")?;
                // Out of memory ends the whole job, not one process the kernel picks.
                write_if_present(&dir.join("memory.oom.group"), "1")?;
                std::fs::write(dir.join("pids.max"), &pids)?;
            }
            Layout::V1 { .. } => {
                let (mem, pid) = (&self.dirs[0], &self.dirs[1]);
                std::fs::write(mem.join("memory.limit_in_bytes"), &memory)?;
                // memsw (memory + swap) must not be below the memory limit: set it second.
                write_if_present(&mem.join("memory.memsw.limit_in_bytes"), &memory)?;
                std::fs::write(pid.join("pids.max"), &pids)?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its pid into to join (all of them).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether the kernel killed a process of the job for want of memory.
    pub fn memory_exceeded(&self) -> bool {
        let (file, key) = match self.layout {
            Layout::V2 { .. } => (self.dirs[0].join("memory.events"), "oom_kill"),
            Layout::V1 { .. } => (self.dirs[0].join("memory.oom_control"), "oom_kill"),
        };
        counter(&file, key) > 0
    }

    /// Whether a fork of the job was refused because of the process cap.
    pub fn processes_exceeded(&self) -> bool {
        let dir = match self.layout {
            Layout::V2 { .. } => &self.dirs[0],
            Layout::V1 { .. } => &self.dirs[1],
        };
        counter(&dir.join("pids.events"), "max") > 0
    }

    fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process still in the cgroup until it is empty (or `within` passed);
    /// returns whether it is empty.
    pub fn kill_all(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        // The sandbox's last processes are usually gone within a millisecond of the job's
        // end: look again soon, then less often (a fixed 20 ms was most of a reap's p90).
        let mut pause = Duration::from_millis(1);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(left = pids.len(), "job processes survived SIGKILL");
                return false;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Removes the cgroup (it must be empty); failures are logged, the directory is reused
    /// by nothing.
    pub fn remove(&self) {
        for dir in &self.dirs {
            // About half a second in all, the first looks 1 ms apart.
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut pause = Duration::from_millis(1);
            while let Err(e) = std::fs::remove_dir(dir) {
                if e.kind() == std::io::ErrorKind::NotFound {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(dir = %dir.display(), error = %e, "job cgroup not removed");
                    break;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    }
}

fn write_if_present(file: &Path, value: &str) -> std::io::Result<()> {
    match std::fs::write(file, value) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The value of `key` in a flat keyed file such as `memory.events` (`oom_kill 3`).
fn counter(file: &Path, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

/// This process's path in the v1 hierarchy of `controller`, from `/proc/self/cgroup`.
fn v1_path<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

/// The v1 hierarchy directory of this process for `controller`, if mounted at the usual
/// place.
fn v1_dir(own: &str, controller: &str) -> Option<PathBuf> {
    let dir = Path::new(V1_ROOT)
        .join(controller)
        .join(v1_path(own, controller)?.trim_start_matches('/'));
    dir.join("cgroup.procs").exists().then_some(dir)
}

/// With a delegated v2 cgroup (`memory` and `pids` available to this process's cgroup),
/// moves this process into a leaf `worker` child (a cgroup with controllers enabled for its
/// children may hold no process itself) and enables the controllers for job cgroups beside
/// it. Returns the parent of the job cgroups.
fn prepare_v2(own: &str) -> Option<PathBuf> {
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = Path::new(V2_ROOT);
    if !root.join("cgroup.controllers").exists() {
        return None; // v2 is not the main hierarchy here (a v1 or hybrid host)
    }
    let base = root.join(path.trim_start_matches('/'));
    let available = std::fs::read_to_string(base.join("cgroup.controllers")).ok()?;
    let has = |c: &str| available.split_whitespace().any(|x| x == c);
    if !has("memory") || !has("pids") {
        return None;
    }
    let enabled = std::fs::read_to_string(base.join("cgroup.subtree_control")).ok()?;
    let on = |c: &str| enabled.split_whitespace().any(|x| x == c);
    if !(on("memory") && on("pids")) {
        let leaf = base.join("jobq-worker");
        std::fs::create_dir_all(&leaf).ok()?;
        std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()).ok()?;
        std::fs::write(base.join("cgroup.subtree_control"), "+memory +pids").ok()?;
    }
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starting_worker_removes_only_old_empty_job_cgroups() {
        let Some(cgroups) = JobCgroups::detect() else {
            eprintln!("skipped: no writable cgroup here");
            return;
        };
        if !matches!(cgroups.layout, Layout::V1 { .. }) {
            eprintln!("skipped: nothing is swept on cgroup v2");
            return;
        }
        let name = |what: &str| format!("sweep-test-{what}-{}", uuid::Uuid::new_v4().simple());
        let aged = |group: &JobCgroup| {
            let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
            for dir in &group.dirs {
                std::fs::File::open(dir)
                    .and_then(|d| d.set_modified(two_hours_ago))
                    .unwrap();
            }
        };
        // A stopped worker's: empty and old. A live job's: old, with a process in it. A new
        // one, empty (a shim about to join).
        let stale = cgroups.create(&name("stale"), 64 << 20, 8).unwrap();
        let busy = cgroups.create(&name("busy"), 64 << 20, 8).unwrap();
        let new = cgroups.create(&name("new"), 64 << 20, 8).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        for file in busy.procs_files() {
            std::fs::write(file, sleeper.id().to_string()).unwrap();
        }
        aged(&stale);
        aged(&busy);
        assert!(cgroups.sweep_stale(STALE_AFTER) >= 2);
        assert!(
            stale.dirs.iter().all(|d| !d.exists()),
            "the stale group stayed"
        );
        assert!(busy.dirs.iter().all(|d| d.exists()), "a group in use went");
        assert!(new.dirs.iter().all(|d| d.exists()), "a new group went");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(busy.kill_all(Duration::from_secs(5)));
        busy.remove();
        new.remove();
        assert!(busy.dirs.iter().chain(&new.dirs).all(|d| !d.exists()));
    }

    #[test]
    fn keyed_counters_are_read_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        std::fs::write(&file, "low 0\nhigh 0\nmax 7\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(counter(&file, "oom_kill"), 2);
        assert_eq!(counter(&file, "max"), 7);
        assert_eq!(counter(&file, "absent"), 0);
        assert_eq!(counter(&dir.path().join("missing"), "max"), 0);
    }

    #[test]
    fn v1_controller_paths_come_from_proc_self_cgroup() {
        let own = "9:name=systemd:/\n8:pids:/a/b\n4:cpu,memory:/process_api/x\n0::/\n";
        assert_eq!(v1_path(own, "pids"), Some("/a/b"));
        assert_eq!(v1_path(own, "memory"), Some("/process_api/x"));
        assert_eq!(v1_path(own, "blkio"), None);
    }
}
