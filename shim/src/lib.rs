//! The two small programs between a jobq worker and its job's command. The worker starts
//! them from the small `jobq-job-shim` executable beside its own (or, when that is not
//! installed, from its own executable, which calls [`run`] first thing in `main`); the first
//! argument names the role:
//!
//! - **The job shim** (`__jobq-job-shim <worker-pid> <cgroup-files> -- <command...>`, outside
//!   the sandbox) leads the job's process group, joins the job's cgroup (the `cgroup.procs`
//!   files joined with `:`) before anything of the job exists, and asks the kernel for
//!   SIGTERM when its parent (the worker) dies; on that signal it kills the whole group, and
//!   with it the sandbox. So a worker killed with SIGKILL takes its jobs with it, and a job
//!   never keeps running beside the attempt that replaces it. With [`COMMAND_ON_STDIN`] in
//!   place of `-- <command...>` it joins the cgroup first and then waits for its folder and
//!   command on stdin: a worker starts it so while the job's checkout is still being made.
//! - **The job init** (`__jobq-job-init <spec...> -- <command...>`, inside the sandbox) sets
//!   the resource limits, becomes the job's user (a root worker), confines writes with
//!   Landlock as a second layer, and executes the command in its own place. Its spec is the
//!   flags of [`InitSpec::to_args`].
//!
//! Both are started for every job, so this crate has no async runtime and no serialisation
//! library: an exec of it costs a fraction of one of the worker's own executable.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, Signal, killpg, raise};
use nix::unistd::{getpgrp, getppid};

/// The first argument that starts the shim.
pub const SHIM_ARG: &str = "__jobq-job-shim";
/// The first argument that starts the job init.
pub const INIT_ARG: &str = "__jobq-job-init";
/// The file name of this crate's executable, which a worker looks for beside its own.
pub const EXECUTABLE: &str = "jobq-job-shim";
/// In place of `-- <command...>`: the shim joins the job's cgroups first, then reads its
/// folder, command and environment from stdin ([`encode_command`]) and starts it with stdin
/// from `/dev/null`. A worker starts the shim so before it has a job for it: joining a
/// cgroup v1 waits for an RCU grace period (5–20 ms here), which then passes while the
/// worker waits for or prepares the job instead of before the job's command.
pub const COMMAND_ON_STDIN: &str = "--command-on-stdin";

/// The message a worker writes to a shim started with [`COMMAND_ON_STDIN`]: the number of
/// the command's arguments and of its environment's variables, the folder to start it in,
/// the program and its arguments, then each variable as `NAME=value`, every field ended by a
/// NUL byte. The command starts with exactly that environment. A field holding a NUL byte
/// cannot be sent (nor passed to `exec`), nor a name holding `=`.
pub fn encode_command(
    dir: &Path,
    command: &[OsString],
    env: &[(OsString, OsString)],
) -> Result<Vec<u8>, String> {
    if command.is_empty() {
        return Err("no command".into());
    }
    let mut variables = Vec::with_capacity(env.len());
    for (name, value) in env {
        if name.is_empty() || name.as_bytes().contains(&b'=') {
            return Err(format!(
                "no variable can be named {:?}",
                name.to_string_lossy()
            ));
        }
        let mut variable = name.clone();
        variable.push("=");
        variable.push(value);
        variables.push(variable);
    }
    let counts = [command.len().to_string(), env.len().to_string()];
    let fields = counts
        .iter()
        .map(OsStr::new)
        .chain([dir.as_os_str()])
        .chain(command.iter().map(OsString::as_os_str))
        .chain(variables.iter().map(OsString::as_os_str));
    let mut message = Vec::new();
    for field in fields {
        if field.as_bytes().contains(&0) {
            return Err(format!("a NUL byte in {:?}", field.to_string_lossy()));
        }
        message.extend_from_slice(field.as_bytes());
        message.push(0);
    }
    Ok(message)
}

/// A command as [`encode_command`] sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    pub dir: PathBuf,
    pub command: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

/// Reads [`encode_command`]'s message; anything short of a whole one (a worker that died
/// while writing it) is an error, never a shorter command.
pub fn decode_command(message: &[u8]) -> Result<SentCommand, String> {
    let Some(body) = message.strip_suffix(&[0]) else {
        return Err("the command message is cut short".into());
    };
    let mut fields = body.split(|b| *b == 0);
    let mut count = || -> Result<usize, String> {
        fields
            .next()
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "the command message has no counts".to_string())
    };
    let (arguments, variables) = (count()?, count()?);
    let dir = PathBuf::from(OsStr::from_bytes(fields.next().ok_or("no folder")?));
    let rest: Vec<&[u8]> = fields.collect();
    if arguments == 0 || rest.len() != arguments + variables {
        return Err(format!(
            "the command message has {} of {arguments} + {variables} fields",
            rest.len()
        ));
    }
    let command = rest[..arguments]
        .iter()
        .map(|f| OsStr::from_bytes(f).into())
        .collect();
    let env = rest[arguments..]
        .iter()
        .map(|f| {
            let at = f
                .iter()
                .position(|b| *b == b'=')
                .filter(|at| *at > 0)
                .ok_or("a variable without a name")?;
            Ok((
                OsStr::from_bytes(&f[..at]).into(),
                OsStr::from_bytes(&f[at + 1..]).into(),
            ))
        })
        .collect::<Result<_, String>>()?;
    Ok(SentCommand { dir, command, env })
}

/// Runs the role `args[0]` names (the program name not included) and returns its exit code;
/// `None` when `args[0]` names no role. The init returns only when it could not start the
/// command.
pub fn run(args: &[OsString]) -> Option<i32> {
    let role = args.first()?;
    if role == SHIM_ARG {
        Some(shim(&args[1..]))
    } else if role == INIT_ARG {
        Some(init(&args[1..]))
    } else {
        None
    }
}

/// What the job init applies inside the sandbox before it runs the command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitSpec {
    /// Switch to this user and group (a root worker); `None` keeps the mapped user.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `RLIMIT_FSIZE`: the largest file the job may write, bytes.
    pub max_file_bytes: Option<u64>,
    /// `RLIMIT_AS` per process when no cgroup caps the job's memory, bytes.
    pub max_address_space: Option<u64>,
    /// `RLIMIT_NPROC` when no cgroup caps the job's processes.
    pub max_processes: Option<u64>,
    /// Landlock: the only folders the job may write below (plus `/dev`).
    pub writable: Vec<PathBuf>,
}

impl InitSpec {
    /// The spec as the init's arguments (before its `--`): `--uid N`, `--gid N`, `--fsize N`,
    /// `--as N`, `--nproc N` when set, and `--write PATH` per writable folder.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let numbers = [
            ("--uid", self.uid.map(u64::from)),
            ("--gid", self.gid.map(u64::from)),
            ("--fsize", self.max_file_bytes),
            ("--as", self.max_address_space),
            ("--nproc", self.max_processes),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value.to_string().into());
            }
        }
        for dir in &self.writable {
            args.push("--write".into());
            args.push(dir.into());
        }
        args
    }

    /// Reads the flags of [`InitSpec::to_args`]; any other argument is an error.
    pub fn parse(args: &[OsString]) -> Result<InitSpec, String> {
        let mut spec = InitSpec::default();
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest
                .next()
                .ok_or_else(|| format!("{} without a value", flag.to_string_lossy()))?;
            let number = || -> Result<u64, String> {
                value
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("{}: not a number", flag.to_string_lossy()))
            };
            let id = || -> Result<u32, String> {
                u32::try_from(number()?)
                    .map_err(|_| format!("{}: too large", flag.to_string_lossy()))
            };
            match flag.as_bytes() {
                b"--uid" => spec.uid = Some(id()?),
                b"--gid" => spec.gid = Some(id()?),
                b"--fsize" => spec.max_file_bytes = Some(number()?),
                b"--as" => spec.max_address_space = Some(number()?),
                b"--nproc" => spec.max_processes = Some(number()?),
                b"--write" => spec.writable.push(PathBuf::from(value)),
                _ => return Err(format!("unknown flag {}", flag.to_string_lossy())),
            }
        }
        Ok(spec)
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
fn confine_writes(dirs: &[&Path]) -> Result<(), landlock::RulesetError> {
    use landlock::{ABI, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr};
    // Best effort: on an older kernel the newest rights it knows are enforced.
    let abi = ABI::V5;
    let writes = AccessFs::from_write(abi);
    let allowed = dirs.iter().copied().chain([Path::new("/dev")]);
    Ruleset::default()
        .handle_access(writes)?
        .create()?
        .add_rules(landlock::path_beneath_rules(allowed, writes))?
        .restrict_self()?;
    Ok(())
}

/// The init's spec flags and the command after the `--` that ends them. The spec is flags
/// with a value each, so a `--` in a value (a folder's name) is never taken for the end.
fn split_spec(args: &[OsString]) -> Option<(&[OsString], &[OsString])> {
    let mut at = 0;
    while at < args.len() {
        if args[at] == OsStr::new("--") {
            return Some((&args[..at], &args[at + 1..]));
        }
        at += 2;
    }
    None
}

fn shim(args: &[OsString]) -> i32 {
    let (Some(parent), Some(cgroups), Some(mode)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!(
            "jobq job shim: usage: {SHIM_ARG} <worker-pid> <cgroup-files> (-- <command...> | {COMMAND_ON_STDIN})"
        );
        return 125;
    };
    let on_stdin = mode == COMMAND_ON_STDIN && args.len() == 3;
    if !on_stdin && (mode != "--" || args.len() < 4) {
        eprintln!("jobq job shim: expected -- and a command, or {COMMAND_ON_STDIN}");
        return 125;
    }
    let worker = parent.to_str().and_then(|p| p.parse::<i32>().ok());
    // SIGTERM (the parent-death signal, or the worker's stop) and SIGCHLD (the command
    // ended) are taken with sigwait from here on: blocked, they wait until asked for, so none
    // is missed between the spawn and the wait. The command starts with an empty mask
    // (`std::process::Command` resets it in the child).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGCHLD);
    if signals.thread_block().is_err() {
        eprintln!("jobq job shim: cannot block signals");
        return 125;
    }
    if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err() {
        eprintln!("jobq job shim: cannot ask for the parent-death signal");
        return 125;
    }
    // The worker may have died before the request above took effect.
    if worker != Some(getppid().as_raw()) {
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
    let mut command = match on_stdin {
        false => {
            let mut command = std::process::Command::new(&args[3]);
            command.args(&args[4..]);
            command
        }
        true => {
            let mut message = Vec::new();
            let read = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut message);
            // A worker that died while this waited closed the pipe: nothing of the job may
            // start then (its parent-death signal waits, blocked, for the wait below).
            if worker != Some(getppid().as_raw()) {
                return 125;
            }
            let sent = match read
                .map_err(|e| e.to_string())
                .and_then(|_| decode_command(&message))
            {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("jobq job shim: no command: {e}");
                    return 125;
                }
            };
            let mut command = std::process::Command::new(&sent.command[0]);
            command
                .args(&sent.command[1..])
                .current_dir(sent.dir)
                .env_clear()
                .envs(sent.env)
                .stdin(std::process::Stdio::null());
            command
        }
    };
    let program = command.get_program().to_os_string();
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "jobq job shim: cannot start {}: {e}",
                program.to_string_lossy()
            );
            return 127;
        }
    };
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => match child.try_wait() {
                Ok(Some(status)) => return exit_like(status),
                Ok(None) => continue,
                Err(_) => return 125,
            },
            Ok(_) => {
                // The worker died or asked us to stop: nothing of the job may outlive it.
                let _ = killpg(getpgrp(), Signal::SIGKILL);
                return 128 + Signal::SIGTERM as i32;
            }
            Err(_) => return 125,
        }
    }
}

/// The shim's own exit mirrors the command's: the same code, or death by the same signal.
fn exit_like(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return code;
    }
    let signal = status.signal().unwrap_or(Signal::SIGKILL as i32);
    // SIGTERM is blocked here (raising it would not end the shim): that one is an exit code.
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

    let Some((spec, command)) = split_spec(args) else {
        eprintln!("jobq job init: usage: {INIT_ARG} <spec...> -- <command...>");
        return 125;
    };
    let Some(program) = command.first() else {
        eprintln!("jobq job init: no command after --");
        return 125;
    };
    let spec = match InitSpec::parse(spec) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("jobq job init: unreadable spec: {e}");
            return 125;
        }
    };
    if let Err(e) = apply(&spec) {
        eprintln!("jobq job init: {e}");
        return 125;
    }
    let e = std::process::Command::new(program)
        .args(&command[1..])
        .exec();
    eprintln!(
        "jobq job init: cannot start {}: {e}",
        program.to_string_lossy()
    );
    127
}

/// Everything the init does to itself before the job's command replaces it.
fn apply(spec: &InitSpec) -> Result<(), String> {
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
    match (spec.uid, spec.gid) {
        (Some(uid), Some(gid)) => {
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
        (None, None) => {}
        _ => return Err("a user without a group, or a group without a user".into()),
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    let dirs: Vec<&Path> = spec.writable.iter().map(|p| p.as_path()).collect();
    confine_writes(&dirs).map_err(|e| format!("cannot confine the job's writes: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_spec_round_trips_through_its_arguments() {
        let spec = InitSpec {
            uid: Some(10001),
            gid: Some(10001),
            max_file_bytes: Some(5),
            max_address_space: None,
            max_processes: Some(3),
            writable: vec!["/job".into(), "/a dir/with -- in it".into()],
        };
        assert_eq!(InitSpec::parse(&spec.to_args()), Ok(spec.clone()));
        assert_eq!(InitSpec::parse(&[]), Ok(InitSpec::default()));
        let mut args = InitSpec {
            writable: vec!["--".into()],
            ..spec
        }
        .to_args();
        args.extend(["--".into(), "npm".into()]);
        let (flags, command) = split_spec(&args).unwrap();
        assert_eq!(
            InitSpec::parse(flags).unwrap().writable,
            [PathBuf::from("--")]
        );
        assert_eq!(command, [OsString::from("npm")]);
    }

    #[test]
    fn an_init_spec_with_an_unknown_or_bad_flag_is_refused() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(InitSpec::parse(&args(&["--root", "1"])).is_err());
        assert!(InitSpec::parse(&args(&["--uid"])).is_err());
        assert!(InitSpec::parse(&args(&["--uid", "-1"])).is_err());
        assert!(InitSpec::parse(&args(&["--uid", "4294967296"])).is_err());
        assert!(InitSpec::parse(&args(&["--fsize", "1e3"])).is_err());
    }

    #[test]
    fn a_command_message_round_trips_and_a_cut_one_is_refused() {
        let command: Vec<OsString> = ["bwrap", "--bind", "/a b", "/job", "--", "npm", ""]
            .map(OsString::from)
            .to_vec();
        let env: Vec<(OsString, OsString)> = [("HOME", "/job"), ("EMPTY", ""), ("EQ", "a=b")]
            .map(|(k, v)| (k.into(), v.into()))
            .to_vec();
        let message = encode_command(Path::new("/work/job 1"), &command, &env).unwrap();
        assert_eq!(
            decode_command(&message),
            Ok(SentCommand {
                dir: PathBuf::from("/work/job 1"),
                command: command.clone(),
                env: env.clone(),
            })
        );
        // Every shorter message — a worker that died while writing — is refused, never read
        // as a shorter command.
        for cut in 0..message.len() {
            assert!(decode_command(&message[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = message.clone();
        longer.extend_from_slice(b"rm\0");
        assert!(decode_command(&longer).is_err());
        let cmd = ["a".into()];
        assert!(encode_command(Path::new("/"), &[], &[]).is_err());
        assert!(encode_command(Path::new("/"), &["a\0b".into()], &[]).is_err());
        assert!(encode_command(Path::new("/a\0"), &cmd, &[]).is_err());
        for name in ["", "A=B", "A\0"] {
            assert!(encode_command(Path::new("/"), &cmd, &[(name.into(), "v".into())]).is_err());
        }
        assert!(encode_command(Path::new("/"), &cmd, &[("A".into(), "\0".into())]).is_err());
    }

    #[test]
    fn no_role_is_no_run() {
        assert_eq!(run(&[]), None);
        assert_eq!(run(&["standalone".into()]), None);
    }
}
