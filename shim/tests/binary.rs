//! The `jobq-job-shim` executable as a worker starts it: the shim mirrors its command's exit,
//! starts it with no blocked signal, and on SIGTERM kills its whole process group; the init
//! sets its limits, `no_new_privs`, the job's user and Landlock before the command runs.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jobq_job_shim::{INIT_ARG, InitSpec, SHIM_ARG};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

const EXE: &str = env!("CARGO_BIN_EXE_jobq-job-shim");

fn shim(command: &[&str]) -> Command {
    let mut c = Command::new(EXE);
    c.arg(SHIM_ARG)
        .arg(std::process::id().to_string())
        .arg("")
        .arg("--")
        .args(command)
        .process_group(0);
    c
}

fn init(spec: &InitSpec, script: &str) -> Output {
    Command::new(EXE)
        .arg(INIT_ARG)
        .args(spec.to_args())
        .args(["--", "/bin/sh", "-c", script])
        .output()
        .expect("run the init")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_shim_exits_like_its_command() {
    let status = shim(&["/bin/sh", "-c", "exit 7"]).status().unwrap();
    assert_eq!(status.code(), Some(7));
    let out = shim(&["/nonexistent/program"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
}

/// The shim as a worker starts it before the job's checkout exists.
fn shim_on_stdin() -> Command {
    let mut c = Command::new(EXE);
    c.arg(SHIM_ARG)
        .arg(std::process::id().to_string())
        .arg("")
        .arg(jobq_job_shim::COMMAND_ON_STDIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    c
}

#[test]
fn a_shim_waiting_for_its_command_runs_it_in_the_folder_it_is_sent() {
    use std::io::Write;
    let dir = std::env::temp_dir().join(format!("jobq-shim-stdin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = shim_on_stdin().spawn().unwrap();
    let command = [
        "/bin/sh",
        "-c",
        "pwd; cat; echo \"[$1]\"; env | sort; exit 3",
        "sh",
        "a b",
    ]
    .map(Into::into);
    let env = [("JOB_VAR".into(), "x y".into())];
    let message = jobq_job_shim::encode_command(&dir, &command, &env).unwrap();
    child.stdin.take().unwrap().write_all(&message).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // Its folder, an empty stdin (/dev/null, not the worker's pipe), its arguments verbatim
    // and only the environment sent (the shell adds PWD, SHLVL and _ of its own).
    let canonical = std::fs::canonicalize(std::env::temp_dir()).unwrap();
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected = format!(
        "{}\n[a b]\n",
        canonical.join(dir.file_name().unwrap()).display()
    );
    assert!(seen.starts_with(&expected), "{seen}");
    let vars: Vec<&str> = seen[expected.len()..]
        .lines()
        .filter(|l| !["PWD=", "SHLVL=", "_="].iter().any(|p| l.starts_with(p)))
        .collect();
    assert_eq!(vars, ["JOB_VAR=x y"], "{seen}");
}

#[test]
fn a_shim_whose_worker_goes_away_before_the_whole_command_runs_nothing() {
    use std::io::Write;
    let marker = std::env::temp_dir().join(format!("jobq-shim-cut-{}", std::process::id()));
    let command = ["/bin/sh", "-c", &format!("touch {}", marker.display())].map(Into::into);
    let message = jobq_job_shim::encode_command(Path::new("/"), &command, &[]).unwrap();
    // Closed at once, half-written, or written whole but for the last byte.
    for cut in [0, message.len() / 2, message.len() - 1] {
        let mut child = shim_on_stdin().spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&message[..cut])
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(125), "cut at {cut}: {}", text(&out));
        assert!(!marker.exists(), "a cut command ran (cut at {cut})");
    }
}

#[test]
fn the_shim_refuses_a_parent_that_is_not_its_own() {
    let out = Command::new(EXE)
        .args([SHIM_ARG, "1", "", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
}

#[test]
fn the_shim_starts_its_command_with_no_signal_blocked() {
    let out = shim(&["/bin/sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
}

#[test]
fn a_terminated_shim_kills_its_whole_process_group() {
    let marker = format!("jobq-shim-test-{}", std::process::id());
    let script = format!("sleep 300 & exec -a {marker} sleep 300");
    let mut child = shim(&["/bin/bash", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let group = Pid::from_raw(child.id() as i32);
    let started = Instant::now();
    while !ps_has(&marker) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(group, Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    while killpg(group, None).is_ok() || ps_has(&marker) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the shim's group outlived it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ps_has(marker: &str) -> bool {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with(marker))
}

#[test]
fn the_init_sets_its_limits_and_no_new_privs_before_the_command() {
    let spec = InitSpec {
        max_file_bytes: Some(4096),
        max_address_space: Some(1 << 32),
        max_processes: Some(4000),
        ..InitSpec::default()
    };
    let out = init(
        &spec,
        "cat /proc/self/limits; grep NoNewPrivs /proc/self/status",
    );
    let seen = text(&out);
    assert!(out.status.success(), "{seen}");
    let limit = |name: &str| {
        seen.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {seen}"))
            .split_whitespace()
            .rev()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(limit("Max file size"), "4096");
    assert_eq!(limit("Max core file size"), "0");
    assert_eq!(limit("Max processes"), "4000");
    assert_eq!(limit("Max address space"), "4294967296");
    assert!(seen.contains("NoNewPrivs:\t1"), "{seen}");
}

#[test]
fn the_init_refuses_a_spec_it_cannot_read() {
    let out = Command::new(EXE)
        .args([INIT_ARG, "--root", "yes", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let out = Command::new(EXE)
        .args([INIT_ARG, "--uid", "1", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(125),
        "no -- before the command: {}",
        text(&out)
    );
}

#[test]
fn the_init_becomes_the_jobs_user_with_no_way_back() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root can become another user");
        return;
    }
    let spec = InitSpec {
        uid: Some(54321),
        gid: Some(54321),
        ..InitSpec::default()
    };
    let out = init(
        &spec,
        "id -u; id -G; grep -E '^Cap(Eff|Prm)' /proc/self/status",
    );
    let seen = text(&out);
    assert!(out.status.success(), "{seen}");
    let mut lines = seen.lines();
    assert_eq!(lines.next(), Some("54321"), "{seen}");
    assert_eq!(
        lines.next(),
        Some("54321"),
        "no supplementary groups: {seen}"
    );
    assert!(seen.contains("CapEff:\t0000000000000000"), "{seen}");
    assert!(seen.contains("CapPrm:\t0000000000000000"), "{seen}");
}

#[test]
fn the_init_confines_writes_to_its_folders() {
    if !jobq_job_shim::confinement_available() {
        eprintln!("skipped: this kernel has no Landlock");
        return;
    }
    let base = std::env::temp_dir().join(format!("jobq-shim-landlock-{}", std::process::id()));
    let (allowed, other) = (base.join("allowed"), base.join("other"));
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let spec = InitSpec {
        writable: vec![allowed.clone()],
        ..InitSpec::default()
    };
    let script = format!(
        "echo a > {}/f && echo ok; echo b > {}/f || echo refused",
        allowed.display(),
        other.display()
    );
    let out = init(&spec, &script);
    let seen = text(&out);
    let _ = std::fs::remove_dir_all(&base);
    assert!(seen.contains("ok"), "{seen}");
    assert!(seen.contains("refused"), "{seen}");
    assert!(!other.join("f").exists());
}
