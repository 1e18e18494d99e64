//! The two small programs between a worker and its job's command, both the worker's own
//! executable started with a marker argument; every binary that runs jobs calls
//! [`run_if_requested`] first thing in `main`.
//!
//! - **The job shim** (`<exe> __jobq-job-shim <worker-pid> <cgroup-files> -- <command...>`,
//!   outside the sandbox) leads the job's process group, joins the job's cgroup (the
//!   `cgroup.procs` files joined with `:`) before anything of the job exists, and asks the
//!   kernel for SIGTERM when its parent (the worker) dies; on that signal it kills the whole
//!   group, and with it the sandbox. So a worker killed with SIGKILL takes its jobs with it,
//!   and a job never keeps running beside the attempt that replaces it.
//! - **The job init** (`<exe> __jobq-job-init <spec-json> -- <command...>`, inside the
//!   sandbox, see [`crate::sandbox`]) sets the resource limits, becomes the job's user
//!   (a root worker), confines writes with Landlock as a second layer, and executes the
//!   command in its own place.

use std::ffi::OsString;

use nix::sys::signal::{Signal, killpg, raise};
use nix::unistd::{getpgrp, getppid};

/// The first argument that turns an executable into the shim.
pub const SHIM_ARG: &str = "__jobq-job-shim";
/// The first argument that turns an executable into the job init.
pub const INIT_ARG: &str = "__jobq-job-init";

/// Runs the shim or the init and exits if this process was started as one; returns otherwise.
pub fn run_if_requested() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == SHIM_ARG) {
        std::process::exit(shim(&args[2..]));
    }
    if args.get(1).is_some_and(|a| a == INIT_ARG) {
        std::process::exit(init(&args[2..]));
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
    let (Some(parent), Some(cgroups), Some(sep), Some(program)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        eprintln!("jobq job shim: usage: {SHIM_ARG} <worker-pid> <cgroup-files> -- <command...>");
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
    // The usual umask, whatever the worker's: folders bwrap makes in the sandbox's root (its
    // `/etc`, the parents of bound folders) must be traversable by the job's user.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // Join the job's cgroup while this is the job's only process: all it starts inherits it.
    for file in std::env::split_paths(cgroups).filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = std::fs::write(&file, std::process::id().to_string()) {
            eprintln!("jobq job shim: cannot join {}: {e}", file.display());
            return 125;
        }
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

/// The job init: limits, user, Landlock, then `exec` of the command (it keeps this PID).
fn init(args: &[OsString]) -> i32 {
    use std::os::unix::process::CommandExt;

    let (Some(spec), Some(sep), Some(program)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("jobq job init: usage: {INIT_ARG} <spec-json> -- <command...>");
        return 125;
    };
    if sep != "--" {
        eprintln!("jobq job init: expected -- before the command");
        return 125;
    }
    let spec: crate::sandbox::InitSpec = match spec.to_str().map(serde_json::from_str) {
        Some(Ok(spec)) => spec,
        _ => {
            eprintln!("jobq job init: unreadable spec");
            return 125;
        }
    };
    if let Err(e) = apply(&spec) {
        eprintln!("jobq job init: {e}");
        return 125;
    }
    let e = std::process::Command::new(program).args(&args[3..]).exec();
    eprintln!(
        "jobq job init: cannot start {}: {e}",
        program.to_string_lossy()
    );
    127
}

/// Everything the init does to itself before the job's command replaces it.
fn apply(spec: &crate::sandbox::InitSpec) -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

    let limit = |resource: Resource, value: u64, what: &str| {
        setrlimit(resource, value, value).map_err(|e| format!("cannot limit {what}: {e}"))
    };
    limit(Resource::RLIMIT_CORE, 0, "core dumps")?;
    if let Some(bytes) = spec.max_file_bytes {
        limit(Resource::RLIMIT_FSIZE, bytes, "file size")?;
    }
    if let Some(bytes) = spec.max_address_space {
        limit(Resource::RLIMIT_AS, bytes, "memory")?;
    }
    if let Some(count) = spec.max_processes {
        limit(Resource::RLIMIT_NPROC, count, "processes")?;
    }
    if let (Some(uid), Some(gid)) = (spec.uid, spec.gid) {
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        setgroups(&[]).map_err(|e| format!("cannot drop groups: {e}"))?;
        setresgid(gid, gid, gid).map_err(|e| format!("cannot become group {gid}: {e}"))?;
        setresuid(uid, uid, uid).map_err(|e| format!("cannot become user {uid}: {e}"))?;
        // Leaving root clears every capability; make sure there is no way back.
        if nix::unistd::getuid() != uid
            || nix::unistd::geteuid() != uid
            || setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok()
        {
            return Err("the job's user could become root again".into());
        }
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    let dirs: Vec<&std::path::Path> = spec.writable.iter().map(|p| p.as_path()).collect();
    confine_writes(&dirs).map_err(|e| format!("cannot confine the job's writes: {e}"))?;
    Ok(())
}
