//! The job shim: the process between a worker and its job's command. It leads the job's
//! process group and asks the kernel for SIGTERM when its parent (the worker) dies; on that
//! signal it kills the whole group. So a worker killed with SIGKILL takes its jobs with it,
//! and a job never keeps running beside the attempt that replaces it.
//!
//! It also confines the job's file-system writes with Landlock (where the kernel has it):
//! the job may write only below its own folder and the configured extra folders; reading
//! is not restricted.
//!
//! It is the worker's own executable started as
//! `<exe> __jobq-job-shim <worker-pid> <writable-dirs> -- <command...>`, the folders joined
//! with `:`; every binary that runs jobs calls [`run_if_requested`] first thing in `main`.

use std::ffi::OsString;

use nix::sys::signal::{Signal, killpg, raise};
use nix::unistd::{getpgrp, getppid};

/// The first argument that turns an executable into the shim.
pub const SHIM_ARG: &str = "__jobq-job-shim";

/// Runs the shim and exits if this process was started as one; returns otherwise.
pub fn run_if_requested() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == SHIM_ARG) {
        std::process::exit(shim(&args[2..]));
    }
}

/// Whether this kernel can confine writes (Landlock), for the worker to report at start.
pub fn confinement_available() -> bool {
    use landlock::{ABI, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr};
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_write(ABI::V1))
        .and_then(|r| r.create())
        .is_ok()
}

/// Restricts every write of this process and its children to below `dirs` (and `/dev`, for
/// `/dev/null` and terminals). Where the kernel lacks Landlock this does nothing.
fn confine_writes(dirs: &[&std::path::Path]) -> Result<(), landlock::RulesetError> {
    use landlock::{ABI, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr};
    // Best effort: on an older kernel the newest rights it knows are enforced.
    let abi = ABI::V5;
    let writes = AccessFs::from_write(abi);
    let allowed = dirs.iter().copied().chain([std::path::Path::new("/dev")]);
    Ruleset::default()
        .handle_access(writes)?
        .create()?
        .add_rules(landlock::path_beneath_rules(allowed, writes))?
        .restrict_self()?;
    Ok(())
}

fn shim(args: &[OsString]) -> i32 {
    let (Some(parent), Some(writable), Some(sep), Some(program)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        eprintln!("jobq job shim: usage: {SHIM_ARG} <worker-pid> <writable-dirs> -- <command...>");
        return 125;
    };
    if sep != "--" {
        eprintln!("jobq job shim: expected -- before the command");
        return 125;
    }
    if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err() {
        eprintln!("jobq job shim: cannot ask for the parent-death signal");
        return 125;
    }
    // The worker may have died before the request above took effect.
    if parent.to_str().and_then(|p| p.parse::<i32>().ok()) != Some(getppid().as_raw()) {
        return 125;
    }
    let dirs: Vec<&std::path::Path> = std::env::split_paths(writable)
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .map(|p| p.as_path())
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    if let Err(e) = confine_writes(&dirs) {
        eprintln!("jobq job shim: cannot confine the job's writes: {e}");
        return 125;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jobq job shim: {e}");
            return 125;
        }
    };
    runtime.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("jobq job shim: {e}");
                    return 125;
                }
            };
        let mut child = match tokio::process::Command::new(program)
            .args(&args[4..])
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "jobq job shim: cannot start {}: {e}",
                    program.to_string_lossy()
                );
                return 127;
            }
        };
        tokio::select! {
            status = child.wait() => match status {
                Ok(s) => exit_like(s),
                Err(_) => 125,
            },
            _ = term.recv() => {
                // The worker died or asked us to stop: nothing of the job may outlive it.
                let _ = killpg(getpgrp(), Signal::SIGKILL);
                128 + Signal::SIGTERM as i32
            }
        }
    })
}

/// The shim's own exit mirrors the command's: the same code, or death by the same signal.
fn exit_like(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return code;
    }
    let signal = status.signal().unwrap_or(Signal::SIGKILL as i32);
    if let Ok(sig) = Signal::try_from(signal)
        && sig != Signal::SIGTERM
    {
        let _ = raise(sig);
    }
    128 + signal
}
