//! The two small programs between a worker and its job's command, the job shim (outside the
//! sandbox) and the job init (inside), are the `jobq-job-shim` crate: see [`jobq_job_shim`].
//! This module finds the executable that runs them. Every binary that runs jobs calls
//! [`run_if_requested`] first thing in `main`, so it can serve as that executable itself
//! where the small one is not installed beside it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use jobq_job_shim::{COMMAND_ON_STDIN, INIT_ARG, InitSpec, SHIM_ARG, confinement_available};

/// Runs the shim or the init and exits if this process was started as one; returns otherwise.
pub fn run_if_requested() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = jobq_job_shim::run(&args) {
        std::process::exit(code);
    }
}

/// The executable a worker starts as each job's shim and init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimProgram {
    pub path: PathBuf,
    /// Whether it is the small `jobq-job-shim` (else the worker's own executable).
    pub dedicated: bool,
}

impl ShimProgram {
    /// `jobq-job-shim` beside this process's executable (or, for a test executable in a
    /// target folder's `deps/`, one folder up, where cargo puts the workspace's binaries);
    /// else this executable itself, which is larger and slower to start.
    pub fn find() -> std::io::Result<ShimProgram> {
        let exe = std::env::current_exe()?;
        Ok(Self::beside(&exe).unwrap_or(ShimProgram {
            path: exe,
            dedicated: false,
        }))
    }

    fn beside(exe: &Path) -> Option<ShimProgram> {
        let dir = exe.parent()?;
        let mut candidates = vec![dir.join(jobq_job_shim::EXECUTABLE)];
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            candidates.push(up.join(jobq_job_shim::EXECUTABLE));
        }
        candidates
            .into_iter()
            .find(|c| c.is_file())
            .map(|path| ShimProgram {
                path,
                dedicated: true,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_executable_is_found_beside_the_workers_or_above_a_deps_folder() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let deps = bin.join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        assert_eq!(ShimProgram::beside(&bin.join("jobq")), None);
        std::fs::write(bin.join(jobq_job_shim::EXECUTABLE), "").unwrap();
        let found = ShimProgram {
            path: bin.join(jobq_job_shim::EXECUTABLE),
            dedicated: true,
        };
        assert_eq!(ShimProgram::beside(&bin.join("jobq")), Some(found.clone()));
        assert_eq!(ShimProgram::beside(&deps.join("uploads-1234")), Some(found));
        let other = dir.path().join("other");
        std::fs::create_dir_all(other.join("x")).unwrap();
        std::fs::write(other.join(jobq_job_shim::EXECUTABLE), "").unwrap();
        assert_eq!(
            ShimProgram::beside(&other.join("x").join("jobq")),
            None,
            "only a deps folder looks one up"
        );
    }
}
