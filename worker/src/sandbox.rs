//! The job sandbox. A job is code from anybody's repository, so each one runs under
//! bubblewrap (the sandbox Flatpak runs on) in namespaces of its own:
//!
//! - **mounts**: a new root holding a read-only toolchain (`/usr`, the `/bin` and `/lib*`
//!   links, a few files of `/etc`: CA certificates, `resolv.conf`, `hosts`, a `passwd` and
//!   `group` naming the job's user), the job's checkout read-write at `/job` (its working
//!   directory and `HOME`), private size-bounded tmpfs at `/tmp`, `/var/tmp` and `/dev/shm`,
//!   a minimal `/dev` and the `/proc` of its own PID namespace. Nothing of the worker's data
//!   directory, repository cache, keys, databases, artifacts or other jobs exists there.
//! - **PID**: bubblewrap's init is PID 1; when the job's command ends (or the worker kills
//!   the sandbox) the kernel kills every process left in the namespace, `setsid` and
//!   detached children included.
//! - **user**: a root worker runs each job as a user id of its own (`worker.job_uid` and up,
//!   one per running job) with every capability dropped; a non-root worker maps the job into
//!   a user namespace of its own. `no_new_privs` either way.
//! - **IPC, UTS, cgroup** namespaces, and the network namespace with `worker.job_network = none`.
//!
//! Memory and processes are capped per job by a cgroup where the kernel offers one
//! ([`crate::cgroup`]), else by `RLIMIT_AS` and `RLIMIT_NPROC` per process. Landlock stays as a
//! second layer inside (writes only below `/job`, the tmpfs and the configured extra folders).
//! The process chain is `worker → job shim → bwrap → job init → npm`; the shim and the init are
//! the small `jobq-job-shim` executable (see [`crate::shim`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jobq_common::settings::{JobNetwork, SandboxMode, WorkerSettings};

use crate::cgroup::JobCgroups;
use crate::executor::JobDir;
use crate::shim::ShimProgram;

/// Where the job's checkout is inside the sandbox.
pub const JOB_DIR: &str = "/job";
/// Where the job init's executable is inside the sandbox.
const INIT_PATH: &str = "/run/jobq/jobq-job-shim";

/// Why no sandbox can be built here.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SandboxError(pub String);

pub use crate::shim::InitSpec;

/// How a job is confined, decided once at worker start.
#[derive(Debug)]
pub struct Sandbox {
    kind: Kind,
    settings: WorkerSettings,
    /// The executable started as each job's shim and init.
    shim: ShimProgram,
    cgroups: Option<JobCgroups>,
    /// User-id offsets of running jobs (root worker): each job runs as a user of its own.
    uids: Arc<Mutex<BTreeSet<u32>>>,
}

#[derive(Debug)]
enum Kind {
    Bubblewrap {
        bwrap: PathBuf,
        /// The worker is root: bwrap runs privileged and the init drops to the job's user.
        root: bool,
        /// Read-only mounts of the toolchain: (host path, sandbox path) or a symlink.
        toolchain: Vec<Mount>,
        /// The sandbox's `/etc`, made once (see [`etc_view`]).
        etc: tempfile::TempDir,
    },
    Off,
}

#[derive(Debug, Clone)]
enum Mount {
    ReadOnly(PathBuf),
    ReadOnlyTry(PathBuf),
    Symlink { target: PathBuf, at: PathBuf },
}

/// One job's confinement, held while it runs.
#[derive(Debug)]
pub struct JobSandbox {
    pub cgroup: Option<crate::cgroup::JobCgroup>,
    uid: Option<UidLease>,
    /// The user id the job's processes have inside the sandbox.
    pub inner_uid: u32,
}

#[derive(Debug)]
struct UidLease {
    offset: u32,
    uids: Arc<Mutex<BTreeSet<u32>>>,
}

impl Drop for UidLease {
    fn drop(&mut self) {
        self.uids.lock().expect("uid set").remove(&self.offset);
    }
}

impl Drop for JobSandbox {
    fn drop(&mut self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all(std::time::Duration::from_secs(5));
            cgroup.remove();
        }
    }
}

impl Sandbox {
    /// Decides how jobs are confined on this host: bubblewrap, and a cgroup interface if
    /// there is one. With `worker.sandbox = bubblewrap` a missing or unusable bwrap is an
    /// error: the worker must not start.
    pub fn from_settings(settings: &WorkerSettings) -> Result<Sandbox, SandboxError> {
        let cgroups = JobCgroups::detect();
        let kind = match settings.sandbox {
            SandboxMode::Off => Kind::Off,
            SandboxMode::Bubblewrap => {
                let bwrap = find_program(&settings.bwrap).ok_or_else(|| {
                    SandboxError(format!(
                        "bubblewrap not found (`worker.bwrap` = {}): install it (Debian: apt-get install bubblewrap) or set worker.sandbox = off",
                        settings.bwrap.display()
                    ))
                })?;
                let root = nix::unistd::geteuid().is_root();
                let etc = etc_view(&settings.work_dir, settings.job_uid, root)
                    .map_err(|e| SandboxError(format!("cannot prepare the sandbox's /etc: {e}")))?;
                Kind::Bubblewrap {
                    bwrap,
                    root,
                    toolchain: toolchain(settings),
                    etc,
                }
            }
        };
        let shim = ShimProgram::find()
            .map_err(|e| SandboxError(format!("cannot find the job shim's executable: {e}")))?;
        Ok(Sandbox {
            kind,
            settings: settings.clone(),
            shim,
            cgroups,
            uids: Arc::default(),
        })
    }

    /// The executable started as each job's shim and init.
    pub fn shim(&self) -> &ShimProgram {
        &self.shim
    }

    /// Whether jobs run sandboxed.
    pub fn enabled(&self) -> bool {
        matches!(self.kind, Kind::Bubblewrap { .. })
    }

    /// One line for the worker's start-up log.
    pub fn describe(&self) -> String {
        let limits = match &self.cgroups {
            Some(c) => c.describe().to_string(),
            None => "per-process rlimits (no writable cgroup)".to_string(),
        };
        let shim = match self.shim.dedicated {
            true => format!("job shim {}", self.shim.path.display()),
            false => format!(
                "job shim: this executable ({} is not beside it)",
                jobq_job_shim::EXECUTABLE
            ),
        };
        match &self.kind {
            Kind::Bubblewrap { root: true, .. } => {
                format!(
                    "bubblewrap, a user id per job from {}, limits by {limits}; {shim}",
                    self.settings.job_uid
                )
            }
            Kind::Bubblewrap { root: false, .. } => {
                format!("bubblewrap in a user namespace, limits by {limits}; {shim}")
            }
            Kind::Off => {
                format!("off (jobs run as the worker's user), limits by {limits}; {shim}")
            }
        }
    }

    /// Prepares one job's confinement: a user id (root worker) and a cgroup. `name` must be
    /// unique among running jobs of the host.
    pub fn prepare(&self, name: &str) -> std::io::Result<JobSandbox> {
        let cgroup = match &self.cgroups {
            Some(c) => Some(c.create(
                &sanitize(name),
                self.settings.memory_limit_mb << 20,
                self.settings.max_processes,
            )?),
            None => None,
        };
        let uid = match self.kind {
            Kind::Bubblewrap { root: true, .. } => {
                let mut used = self.uids.lock().expect("uid set");
                let offset = (0..).find(|o| !used.contains(o)).expect("a free uid");
                used.insert(offset);
                Some(UidLease {
                    offset,
                    uids: self.uids.clone(),
                })
            }
            _ => None,
        };
        let inner_uid = match &uid {
            Some(lease) => self.settings.job_uid + lease.offset,
            None => self.settings.job_uid,
        };
        Ok(JobSandbox {
            cgroup,
            uid,
            inner_uid,
        })
    }

    /// Whether a checkout may hard-link the worker's mirror objects: yes when jobs run as a
    /// user of their own (a root worker; the checkout's linked files are then not handed to
    /// it, see `executor::spawn`) or unsandboxed (the job reaches the cache anyway); no when
    /// jobs run as the worker's own user in a user namespace, who could rewrite a linked file.
    pub fn checkout_may_link_objects(&self) -> bool {
        !matches!(self.kind, Kind::Bubblewrap { root: false, .. })
    }

    /// The user that must own the job's checkout so the job can write it (root worker only).
    pub fn owner(&self, job: &JobSandbox) -> Option<u32> {
        job.uid.as_ref().map(|_| job.inner_uid)
    }

    /// The program and arguments that run `command` confined: for bubblewrap,
    /// `bwrap <mounts…> -- <init> <spec> -- command…`; without it, `<exe> <init> <spec> --
    /// command…`. The checkout is `dir.repo()`.
    pub fn command(
        &self,
        job: &JobSandbox,
        dir: &JobDir,
        command: &[OsString],
    ) -> std::io::Result<Vec<OsString>> {
        let exe = self.shim.path.as_path();
        let checkout = dir.repo();
        let checkout = checkout.as_path();
        let extra: Vec<PathBuf> = self.settings.extra_writable_dirs.clone();
        let no_cgroup = job.cgroup.is_none();
        let mut spec = InitSpec {
            uid: self.owner(job),
            gid: self.owner(job),
            // One byte over the output limit: a file that reaches it is over the limit.
            max_file_bytes: Some((self.settings.max_output_mb << 20) + 1),
            max_address_space: no_cgroup.then_some(self.settings.memory_limit_mb << 20),
            max_processes: None,
            writable: Vec::new(),
        };
        let mut argv: Vec<OsString> = Vec::new();
        match &self.kind {
            Kind::Off => {
                spec.writable = std::iter::once(dir.root.clone()).chain(extra).collect();
                argv.push(exe.into());
            }
            Kind::Bubblewrap {
                bwrap,
                root,
                toolchain,
                etc,
            } => {
                // A user of its own per job (root) or a user namespace of its own: a per-user
                // process count is then the job's own.
                spec.max_processes = no_cgroup.then_some(self.settings.max_processes);
                spec.writable = [JOB_DIR, "/tmp", "/var/tmp", "/dev/shm"]
                    .iter()
                    .map(PathBuf::from)
                    .chain(extra.iter().cloned())
                    .collect();
                argv.push(bwrap.into());
                let mut arg = |a: &str| argv.push(a.into());
                for flag in [
                    "--die-with-parent",
                    "--new-session",
                    "--unshare-ipc",
                    "--unshare-pid",
                    "--unshare-uts",
                    "--unshare-cgroup-try",
                    "--hostname",
                    "jobq-job",
                ] {
                    arg(flag);
                }
                if self.settings.job_network == JobNetwork::None {
                    arg("--unshare-net");
                }
                if *root {
                    // Privileged bwrap keeps no capability but the two the init needs to
                    // become the job's user; it gives them up with the switch.
                    for a in [
                        "--cap-drop",
                        "ALL",
                        "--cap-add",
                        "CAP_SETUID",
                        "--cap-add",
                        "CAP_SETGID",
                    ] {
                        arg(a);
                    }
                } else {
                    let uid = job.inner_uid.to_string();
                    for a in [
                        "--unshare-user",
                        "--disable-userns",
                        "--uid",
                        &uid,
                        "--gid",
                        &uid,
                    ] {
                        arg(a);
                    }
                }
                // Folders bwrap would create on its own for a mount may come out 0700 and
                // root's: make every one the job must pass through explicitly, 0755.
                let mut made = BTreeSet::new();
                for mount in toolchain {
                    match mount {
                        Mount::ReadOnly(p) => {
                            parents(&mut argv, &mut made, p);
                            push_all(&mut argv, ["--ro-bind".into(), p.into(), p.into()])
                        }
                        Mount::ReadOnlyTry(p) => {
                            parents(&mut argv, &mut made, p);
                            push_all(&mut argv, ["--ro-bind-try".into(), p.into(), p.into()])
                        }
                        Mount::Symlink { target, at } => {
                            parents(&mut argv, &mut made, at);
                            push_all(&mut argv, ["--symlink".into(), target.into(), at.into()])
                        }
                    }
                }
                parents(&mut argv, &mut made, Path::new("/var/tmp"));
                push_all(
                    &mut argv,
                    [
                        "--ro-bind".into(),
                        etc.path().into(),
                        "/etc".into(),
                        "--proc".into(),
                        "/proc".into(),
                        "--dev".into(),
                        "/dev".into(),
                    ],
                );
                let size = (self.settings.tmpfs_size_mb << 20).to_string();
                for tmp in ["/tmp", "/var/tmp", "/dev/shm"] {
                    push_all(
                        &mut argv,
                        [
                            "--perms".into(),
                            "1777".into(),
                            "--size".into(),
                            size.clone().into(),
                            "--tmpfs".into(),
                            tmp.into(),
                        ],
                    );
                }
                // Mounted now: never re-made (that would change their modes).
                made.extend(["/tmp", "/var/tmp", "/dev", "/dev/shm", JOB_DIR].map(PathBuf::from));
                push_all(
                    &mut argv,
                    [
                        "--bind".into(),
                        checkout.into(),
                        JOB_DIR.into(),
                        "--chdir".into(),
                        JOB_DIR.into(),
                    ],
                );
                for dir in &extra {
                    parents(&mut argv, &mut made, dir);
                    push_all(&mut argv, ["--bind".into(), dir.into(), dir.into()]);
                }
                parents(&mut argv, &mut made, Path::new(INIT_PATH));
                push_all(
                    &mut argv,
                    [
                        "--ro-bind".into(),
                        exe.into(),
                        INIT_PATH.into(),
                        "--".into(),
                        INIT_PATH.into(),
                    ],
                );
            }
        }
        argv.push(crate::shim::INIT_ARG.into());
        argv.extend(spec.to_args());
        argv.push("--".into());
        argv.extend(command.iter().cloned());
        Ok(argv)
    }
}

/// `--perms 0755 --dir` for each ancestor of `path` not made yet (the root excluded).
fn parents(argv: &mut Vec<OsString>, made: &mut BTreeSet<PathBuf>, path: &Path) {
    let mut ancestors: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .collect();
    ancestors.reverse();
    for dir in ancestors {
        if made.insert(dir.to_path_buf()) {
            push_all(
                argv,
                ["--perms".into(), "0755".into(), "--dir".into(), dir.into()],
            );
        }
    }
}

fn push_all<const N: usize>(argv: &mut Vec<OsString>, items: [OsString; N]) {
    argv.extend(items);
}

/// How many user ids in a row a root worker's jobs may have (`passwd` names each).
const JOB_UIDS: u32 = 256;

/// Files of the host's `/etc` a job needs: the dynamic linker's cache, name resolution, TLS
/// roots, time zone, MIME types, Debian's alternatives links.
const ETC_FILES: [&str; 14] = [
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "pki",
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "localtime",
    "mime.types",
];

/// The sandbox's `/etc`, made once when the worker starts: copies of [`ETC_FILES`] (links
/// inside them kept as links, which point into `/usr`) and a `passwd` and `group` naming
/// the job's user ids. Bound read-only as one mount, it costs a job one mount instead of one
/// per file. The host's files are copied at start: a `resolv.conf` changed later reaches
/// jobs when the worker restarts.
///
/// A host entry that is a link into `/usr` (which every sandbox binds read-only at the same
/// path) stays a link, to the same file: `/etc/localtime -> /usr/share/zoneinfo/Etc/UTC`
/// names the time zone by its link, and a copy of the zone file made ICU (Node.js) look
/// for the zone by comparing the copy with every file below `/usr/share/zoneinfo` — about
/// 3,000 file opens and 20–30 ms at the start of every Node.js process of a job.
fn etc_view(work_dir: &Path, job_uid: u32, root: bool) -> std::io::Result<tempfile::TempDir> {
    etc_view_of(Path::new("/etc"), work_dir, job_uid, root)
}

/// [`etc_view`] of the host folder `host_etc` (a test's own).
fn etc_view_of(
    host_etc: &Path,
    work_dir: &Path,
    job_uid: u32,
    root: bool,
) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    // Beside the jobs' folders (never inside a sandbox), else in the temp folder.
    let base = match work_dir.as_os_str().is_empty() {
        true => std::env::temp_dir(),
        false => work_dir.to_path_buf(),
    };
    std::fs::create_dir_all(&base)?;
    let view = tempfile::Builder::new()
        .prefix("jobq-sandbox-etc-")
        .tempdir_in(base)?;
    std::fs::set_permissions(view.path(), std::fs::Permissions::from_mode(0o755))?;
    for name in ETC_FILES {
        let host = host_etc.join(name);
        // resolv.conf is often a link into /run, outside the sandbox: copy what it points at.
        let Ok(source) = std::fs::canonicalize(&host) else {
            continue;
        };
        let at = view.path().join(name);
        let linked = std::fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink());
        let made = match linked && source.starts_with("/usr/") {
            true => std::os::unix::fs::symlink(&source, &at),
            false => copy_tree(&source, &at),
        };
        made.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", host.display())))?;
    }
    let uids = if root {
        job_uid..job_uid + JOB_UIDS
    } else {
        job_uid..job_uid + 1
    };
    let mut passwd = String::from("root:x:0:0:root:/:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    for uid in uids {
        passwd.push_str(&format!("job:x:{uid}:{uid}:jobq job:{JOB_DIR}:/bin/sh\n"));
        group.push_str(&format!("job:x:{uid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    std::fs::write(view.path().join("passwd"), passwd)?;
    std::fs::write(view.path().join("group"), group)?;
    Ok(view)
}

/// Where a tree walk's `entry` below `source` goes below `dest`: the root itself is `dest`,
/// not `dest/` (a file would be taken for a folder).
pub(crate) fn copy_destination(
    entry: &walkdir::DirEntry,
    source: &Path,
    dest: &Path,
) -> std::io::Result<PathBuf> {
    let relative = entry
        .path()
        .strip_prefix(source)
        .map_err(std::io::Error::other)?;
    Ok(match relative.as_os_str().is_empty() {
        true => dest.to_path_buf(),
        false => dest.join(relative),
    })
}

/// Copies a file or a folder tree; links are copied as links, never followed. Only what
/// anybody on the host may read is copied (`/etc/ssl/private` is not).
fn copy_tree(source: &Path, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let public = |e: &walkdir::DirEntry| {
        e.path_is_symlink()
            || e.metadata().is_ok_and(|m| {
                let mode = m.permissions().mode();
                match m.is_dir() {
                    true => mode & 0o005 == 0o005,
                    false => mode & 0o004 != 0,
                }
            })
    };
    for entry in walkdir::WalkDir::new(source)
        .into_iter()
        .filter_entry(public)
    {
        let entry = entry.map_err(std::io::Error::other)?;
        let to = copy_destination(&entry, source, dest)?;
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// The read-only view of the host a job needs to run `npm` (beside [`etc_view`]): `/usr`,
/// the top-level links or folders of binaries and libraries, a Node.js installed outside
/// `/usr`, and `worker.sandbox_ro_paths`.
fn toolchain(settings: &WorkerSettings) -> Vec<Mount> {
    let mut mounts = vec![Mount::ReadOnly("/usr".into())];
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let path = Path::new(top);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    mounts.push(Mount::Symlink {
                        target,
                        at: path.into(),
                    });
                }
            }
            Ok(m) if m.is_dir() => mounts.push(Mount::ReadOnly(path.into())),
            _ => {}
        }
    }
    for program in ["node", "npm"] {
        if let Some(found) = find_program(Path::new(program))
            && let Ok(real) = std::fs::canonicalize(&found)
            && !real.starts_with("/usr")
            && let Some(prefix) = real.parent().and_then(Path::parent)
        {
            // e.g. ~/.nvm/versions/node/v20/bin/node: the whole install, read-only.
            mounts.push(Mount::ReadOnly(prefix.to_path_buf()));
            if found != real
                && let Some(dir) = found.parent()
                && !dir.starts_with("/usr")
            {
                mounts.push(Mount::ReadOnlyTry(dir.to_path_buf()));
            }
        }
    }
    for extra in &settings.sandbox_ro_paths {
        mounts.push(Mount::ReadOnly(extra.clone()));
    }
    mounts
}

/// `program` if it is a path, else the first match on `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A cgroup name from a job's name: letters, digits, `-`, `_`, `.` only.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_names_keep_only_safe_characters() {
        assert_eq!(sanitize("w-1/../x y.z"), "w-1_.._x_y.z");
    }

    #[test]
    fn the_toolchain_is_read_only_and_holds_no_worker_state() {
        let mounts = toolchain(&WorkerSettings::default());
        let work = std::env::temp_dir();
        for mount in &mounts {
            if let Mount::ReadOnly(p) | Mount::ReadOnlyTry(p) = mount {
                for never in ["/", "/etc", "/var", "/run", "/home", "/root"] {
                    assert_ne!(p, Path::new(never), "{never} is never bound whole");
                }
                for below in ["/proc", "/sys", "/dev"] {
                    assert!(!p.starts_with(below), "{p:?}");
                }
                assert!(!p.starts_with(&work), "{p:?} holds job folders");
            }
        }
        assert!(matches!(&mounts[0], Mount::ReadOnly(p) if p == Path::new("/usr")));
    }

    #[test]
    fn the_sandboxs_etc_holds_only_what_jobs_need_and_names_their_users() {
        let view = etc_view(Path::new(""), 10001, true).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(view.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in &names {
            assert!(
                ETC_FILES.contains(&name.as_str()) || name == "passwd" || name == "group",
                "{name} is not for jobs"
            );
        }
        assert!(!names.iter().any(|n| n == "shadow" || n == "gshadow"));
        if Path::new("/etc/ssl/private").exists() {
            assert!(
                !view.path().join("ssl/private").exists(),
                "private keys copied"
            );
        }
        let passwd = std::fs::read_to_string(view.path().join("passwd")).unwrap();
        assert!(passwd.contains("job:x:10001:10001:"), "{passwd}");
        assert!(passwd.contains(&format!("job:x:{}:", 10001 + JOB_UIDS - 1)));
        let single = etc_view(Path::new(""), 10001, false).unwrap();
        let passwd = std::fs::read_to_string(single.path().join("passwd")).unwrap();
        assert_eq!(passwd.matches("job:x:").count(), 1);
    }

    #[test]
    fn a_host_link_into_usr_stays_a_link_and_any_other_is_copied() {
        use std::os::unix::fs::symlink;
        // A host /etc of the test's own: localtime a link into /usr (as Debian's is), hosts a
        // link outside /usr (as resolv.conf often is, into /run), mime.types a plain file.
        let usr_file = std::fs::canonicalize("/usr/bin/env").expect("/usr/bin/env");
        let host = tempfile::tempdir().unwrap();
        let outside = host.path().join("run-hosts");
        std::fs::write(&outside, "127.0.0.1 localhost\n").unwrap();
        symlink(&usr_file, host.path().join("localtime")).unwrap();
        symlink(&outside, host.path().join("hosts")).unwrap();
        std::fs::write(host.path().join("mime.types"), "text/plain txt\n").unwrap();
        let view = etc_view_of(host.path(), Path::new(""), 10001, true).unwrap();
        // The link names the same file (ICU reads the zone's name from it).
        assert_eq!(
            std::fs::read_link(view.path().join("localtime")).unwrap(),
            usr_file
        );
        // A link the sandbox could not follow is a copy of what it points at.
        let hosts = view.path().join("hosts");
        assert!(!hosts.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(
            std::fs::read_to_string(hosts).unwrap(),
            "127.0.0.1 localhost\n"
        );
        assert_eq!(
            std::fs::read_to_string(view.path().join("mime.types")).unwrap(),
            "text/plain txt\n"
        );
        // What the host does not have, the view does not have.
        assert!(!view.path().join("resolv.conf").exists());
    }
}
