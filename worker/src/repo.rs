//! Fetching a job's repository with git2: a bare mirror per URL in a local cache (fetched
//! again on reuse, so a repeated repository is not cloned from scratch), then a copy of the
//! checkout prepared for the mirror's commit into the job's directory.
//!
//! **Freshness.** A job runs its repository as it is at its submission or later. A fetch
//! that *started* after the job was submitted saw the remote at that time or later, so when
//! the mirror's last fetch started after the job's `createdAt` the fetch is skipped: jobs of
//! one repository submitted together (or queued while another fetched) share one fetch.
//! `worker.repo_fetch_slack_ms` (0 by default) widens that to fetches started up to that long
//! *before* the submission — a push made in that window before a submit may then be missed.
//! The comparison is of the worker's clock with the frontend's, as leases and `notBefore` are.
//!
//! **The checkout** is a private copy of a tree prepared once per commit: the first job of
//! the mirror's HEAD commit makes a local clone of the mirror beside it (`<key>.trees/<commit>`,
//! outside every sandbox, one per mirror), and every job of that commit gets a copy of it —
//! a walk of a few folders and file copies instead of a clone per job. Every file is copied
//! except the objects below `.git/objects` (which git writes once and never changes): those
//! are hard links to the tree's own where the job cannot write them — a root worker runs the
//! job as a user of its own and hands it the checkout without the linked files (they stay
//! the worker's, read-only); where the job runs as the worker's own user (a non-root worker's
//! user namespace) they are copied too, since that user could rewrite a linked file and alter
//! what later jobs run. So nothing a job does to its checkout reaches the tree or the mirror.
//! After each checkout the worker makes one *spare* copy of the tree the same way, beside the
//! tree and under the mirror's lock, while that job runs; the next job of the same commit
//! takes it with a rename (a new commit's tree replaces the folder, spare included), so the
//! copy — most of the clone stage on a busy disk — is not on that job's way to its command.
//!
//! Credentials in a URL (`https://user:token@host/…`) never rest on disk: the mirror's
//! remote is the URL without them, and they are handed to git by the credential callback
//! for each fetch. The cache lives outside every job's sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use git2::build::{CloneLocal, RepoBuilder};
use git2::{Cred, CredentialType};
use git2::{FetchOptions, RemoteCallbacks, Repository};
use jobq_common::repo_url::{RepoUrl, UrlCredentials};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::Mutex;

/// Why a repository could not be fetched; the text never contains credentials.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CloneError(String);

/// The mirror cache of one worker.
#[derive(Debug)]
pub struct RepoCache {
    dir: PathBuf,
    /// How long before a job's submission its mirror's last fetch may have started for the
    /// fetch to be skipped (`worker.repo_fetch_slack_ms`).
    slack: time::Duration,
    /// One lock per mirror: two jobs of the same repository never fetch into it at once. It
    /// guards when the mirror's last successful fetch (or clone) started, by this worker.
    locks: Mutex<HashMap<String, Arc<Mutex<Option<OffsetDateTime>>>>>,
}

/// What a checkout did: whether the mirror was fetched, whether a tree was prepared for its
/// commit, whether the job got the spare copy made after the last checkout, and how long the
/// fetch (with the wait for the mirror's lock) and the clone (the tree's preparation, if any,
/// and its copy) took.
#[derive(Debug, Clone, Copy)]
pub struct Checkout {
    pub fetched: bool,
    pub prepared: bool,
    pub spare: bool,
    pub fetch: std::time::Duration,
    pub clone: std::time::Duration,
}

/// Whether a mirror whose last fetch started at `last_fetch` holds the repository as it was
/// when a job was submitted at `submitted` (or later). Stores keep `createdAt` to the
/// millisecond, truncated: the submission may have been up to 1 ms after it.
pub fn fresh_enough(
    last_fetch: Option<OffsetDateTime>,
    submitted: OffsetDateTime,
    slack: time::Duration,
) -> bool {
    last_fetch.is_some_and(|at| at >= submitted + time::Duration::milliseconds(1) - slack)
}

impl RepoCache {
    /// A cache in `dir`; `slack` is `worker.repo_fetch_slack_ms`.
    pub fn new(dir: PathBuf, slack: std::time::Duration) -> Self {
        Self {
            dir,
            slack: time::Duration::try_from(slack).unwrap_or(time::Duration::ZERO),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Clones `url`, as it is at `submitted` or later, into `dest` (which must not exist),
    /// through the cache; `link_objects`: hard-link the mirror's objects instead of copying
    /// them. `stop` aborts a transfer in progress (cancel, time limit).
    pub async fn checkout(
        &self,
        url: &RepoUrl,
        dest: &Path,
        submitted: OffsetDateTime,
        link_objects: bool,
        stop: Arc<AtomicBool>,
    ) -> Result<Checkout, CloneError> {
        let started = std::time::Instant::now();
        // The key covers the whole URL, credentials included: a user never gets a mirror
        // fetched with somebody else's credentials.
        let key = hex::encode(Sha256::digest(url.as_str().as_bytes()));
        let lock = self
            .locks
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .clone();
        // Owned: the spare copy made after this checkout keeps the mirror locked.
        let mut last_fetch = lock.lock_owned().await;
        let mirror = self.dir.join(format!("{key}.git"));
        let fetch = !(mirror.exists() && fresh_enough(*last_fetch, submitted, self.slack));
        if fetch {
            let fetch_started = OffsetDateTime::now_utc();
            *last_fetch = None;
            let (url, mirror, stop) = (url.clone(), mirror.clone(), stop.clone());
            tokio::task::spawn_blocking(move || refresh_mirror(&url, &mirror, &stop))
                .await
                .map_err(|e| CloneError(format!("fetch task failed: {e}")))??;
            *last_fetch = Some(fetch_started);
        }
        // The copy reads the mirror's prepared tree: no fetch may change either meanwhile.
        let fetched_at = std::time::Instant::now();
        let trees = self.dir.join(format!("{key}.trees"));
        let (url, dest) = (url.clone(), dest.to_path_buf());
        let copied = tokio::task::spawn_blocking(move || {
            checkout_from_tree(&url, &mirror, &trees, &dest, link_objects)
        })
        .await
        .map_err(|e| CloneError(format!("clone task failed: {e}")))??;
        let clone = fetched_at.elapsed();
        // The next job of this commit gets a copy made now, beside this job, instead of one
        // made on its own way to its command (on a busy disk that copy is most of the clone
        // stage). Made under the mirror's lock: no fetch or new tree meanwhile.
        if let Some(tree) = copied.tree {
            tokio::spawn(async move {
                let spare = spare_of(&tree, link_objects);
                let made =
                    tokio::task::spawn_blocking(move || make_spare(&tree, &spare, link_objects))
                        .await;
                if let Ok(Err(e)) = made {
                    tracing::debug!(error = %e, "no spare checkout made");
                }
                drop(last_fetch);
            });
        }
        Ok(Checkout {
            fetched: fetch,
            prepared: copied.prepared,
            spare: copied.spare,
            fetch: fetched_at - started,
            clone,
        })
    }
}

/// How a checkout was made: a tree prepared for its commit first, the spare copy taken, and
/// the tree it is a copy of (`None`: an empty repository, cloned).
struct Copied {
    prepared: bool,
    spare: bool,
    tree: Option<PathBuf>,
}

/// Where the spare copy of `tree` is kept: beside it, so it goes when the tree does.
fn spare_of(tree: &Path, link_objects: bool) -> PathBuf {
    let mode = match link_objects {
        true => "linked",
        false => "copied",
    };
    let mut name = tree.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".spare-{mode}"));
    tree.with_file_name(name)
}

/// Makes the spare copy of `tree` unless there is one: copied to a folder of its own, then
/// renamed, so a spare is always whole (a worker stopped half-way leaves only the partial one,
/// removed by the next try).
fn make_spare(tree: &Path, spare: &Path, link_objects: bool) -> std::io::Result<()> {
    if spare.exists() {
        return Ok(());
    }
    let mut partial = spare.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    copy_checkout(tree, &partial, link_objects)?;
    std::fs::rename(&partial, spare)
}

/// Makes `dest` a checkout of the mirror's HEAD: a private copy of the tree prepared for that
/// commit (prepared first if this is the commit's first job) — the spare one made after the
/// last checkout when there is one. A mirror whose HEAD names no commit (an empty
/// repository) is cloned as before.
fn checkout_from_tree(
    url: &RepoUrl,
    mirror: &Path,
    trees: &Path,
    dest: &Path,
    link_objects: bool,
) -> Result<Copied, CloneError> {
    let started = std::time::Instant::now();
    // The ref alone names the commit: no object of the mirror is read.
    let head = Repository::open_bare(mirror)
        .and_then(|repo| repo.refname_to_id("HEAD"))
        .ok();
    let resolved = started.elapsed();
    let Some(head) = head else {
        clone_mirror(url, mirror, dest, link_objects)?;
        return Ok(Copied {
            prepared: false,
            spare: false,
            tree: None,
        });
    };
    let tree = trees.join(head.to_string());
    let prepared = !tree.is_dir();
    if prepared {
        // One tree per mirror: the mirror's HEAD moved on, and no later job gets an older one.
        let _ = std::fs::remove_dir_all(trees);
        std::fs::create_dir_all(trees)
            .map_err(|e| CloneError(format!("cannot create the prepared checkouts: {e}")))?;
        let partial = trees.join(format!("{head}.partial"));
        clone_mirror(url, mirror, &partial, true)?;
        std::fs::rename(&partial, &tree)
            .map_err(|e| CloneError(format!("cannot store the prepared checkout: {e}")))?;
    }
    let copied = std::time::Instant::now();
    // The spare is of this commit (a new one removed the folder it was in) and made the way
    // this checkout must be; a rename takes it whole or not at all.
    let spare = !prepared
        && dest
            .parent()
            .is_some_and(|p| std::fs::create_dir_all(p).is_ok())
        && std::fs::rename(spare_of(&tree, link_objects), dest).is_ok();
    if !spare {
        copy_checkout(&tree, dest, link_objects)
            .map_err(|e| CloneError(format!("cannot copy the prepared checkout: {e}")))?;
    }
    tracing::debug!(
        target: "jobq_worker::stages",
        resolve_us = resolved.as_micros() as u64,
        prepare_us = (copied - started - resolved).as_micros() as u64,
        copy_us = copied.elapsed().as_micros() as u64,
        prepared,
        spare,
        "checkout copied"
    );
    Ok(Copied {
        prepared,
        spare,
        tree: Some(tree),
    })
}

/// A local clone of the mirror into `dest`; `link_objects`: hard-link its objects.
fn clone_mirror(
    url: &RepoUrl,
    mirror: &Path,
    dest: &Path,
    link_objects: bool,
) -> Result<(), CloneError> {
    RepoBuilder::new()
        .clone_local(match link_objects {
            true => CloneLocal::Local,
            false => CloneLocal::NoLinks,
        })
        .clone(&mirror.to_string_lossy(), dest)
        .map(drop)
        .map_err(|e| CloneError(clean(&e, url)))
}

/// Copies the prepared checkout `tree` into `dest` (which must not exist): folders made with
/// the tree's modes, links copied as links, every file copied — except, with `link_objects`,
/// the files below `.git/objects`, which git never changes in place: those are hard links to
/// the tree's (and so the mirror's) own, which the job is never given (see
/// `executor::chown_tree`). Whatever the job does to its copy, the tree stays as prepared.
fn copy_checkout(tree: &Path, dest: &Path, link_objects: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // The tree's objects as copied: compared component by component (`Path::starts_with`).
    let objects = dest.join(".git").join("objects");
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.map_err(std::io::Error::other)?;
        let to = crate::sandbox::copy_destination(&entry, tree, dest)?;
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&to)?;
            let mode = entry
                .metadata()
                .map_err(std::io::Error::other)?
                .permissions()
                .mode();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode & 0o7777))?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else if kind.is_file() {
            if link_objects && to.starts_with(&objects) {
                std::fs::hard_link(entry.path(), &to)?;
            } else {
                std::fs::copy(entry.path(), &to)?;
            }
        }
    }
    Ok(())
}

fn fetch_options(
    stop: &Arc<AtomicBool>,
    credentials: Option<UrlCredentials>,
) -> FetchOptions<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let stop = stop.clone();
    callbacks.transfer_progress(move |_| !stop.load(Ordering::Relaxed));
    if let Some(credentials) = credentials {
        let mut offered = false;
        callbacks.credentials(move |_url, _user, allowed| {
            // Offered once: a refused credential must fail the fetch, not loop.
            if offered || !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return Err(git2::Error::from_str("authentication failed"));
            }
            offered = true;
            Cred::userpass_plaintext(&credentials.user, &credentials.password)
        });
    }
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks);
    options
}

fn refresh_mirror(url: &RepoUrl, mirror: &Path, stop: &Arc<AtomicBool>) -> Result<(), CloneError> {
    let (address, credentials) = url.split_credentials();
    let fetch_options = || fetch_options(stop, credentials.clone());
    if mirror.exists() {
        let fetched = Repository::open_bare(mirror).and_then(|repo| {
            // A mirror made before credentials were kept off disk: forget them.
            if repo.find_remote("origin")?.url().ok() != Some(address.as_str()) {
                repo.remote_set_url("origin", &address)?;
            }
            let mut remote = repo.find_remote("origin")?;
            remote.fetch(
                &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                Some(&mut fetch_options()),
                None,
            )?;
            // Follow the remote's default branch if it changed.
            if let Ok(head) = remote.default_branch()
                && let Ok(name) = head.as_str()
            {
                repo.set_head(name)?;
            }
            Ok(())
        });
        match fetched {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %clean(&e, url), "mirror unusable, cloning again");
                let _ = std::fs::remove_dir_all(mirror);
            }
        }
    }
    if let Some(parent) = mirror.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CloneError(format!("cannot create the repository cache: {e}")))?;
    }
    let partial = mirror.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    RepoBuilder::new()
        .bare(true)
        .fetch_options(fetch_options())
        .clone(&address, &partial)
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&partial);
            CloneError(clean(&e, url))
        })?;
    std::fs::rename(&partial, mirror)
        .map_err(|e| CloneError(format!("cannot store the mirror: {e}")))?;
    Ok(())
}

/// git2's message with any form of the URL replaced by its redacted form.
fn clean(e: &git2::Error, url: &RepoUrl) -> String {
    let mut text = e.message().replace(url.as_str(), &url.redacted());
    if let Some(userinfo) = url.userinfo() {
        text = text.replace(userinfo, "***");
    }
    if text.is_empty() {
        format!("git error {:?}", e.code())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn commit(repo: &Path, text: &str) -> String {
        std::fs::write(repo.join("file.txt"), text).unwrap();
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-qm", text]);
        git(repo, &["rev-parse", "HEAD"])
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        repo: PathBuf,
        url: RepoUrl,
        cache: RepoCache,
        jobs: PathBuf,
    }

    fn fixture(slack: std::time::Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        let url = RepoUrl::parse(&format!("file://{}", repo.display()), true).unwrap();
        let cache = RepoCache::new(dir.path().join("cache"), slack);
        let jobs = dir.path().join("jobs");
        Fixture {
            repo,
            url,
            cache,
            jobs,
            _dir: dir,
        }
    }

    impl Fixture {
        /// Checks out for a job submitted at `submitted`: whether it fetched, and its HEAD.
        async fn job(&self, name: &str, submitted: OffsetDateTime) -> (bool, String) {
            self.job_linked(name, submitted, true).await
        }

        async fn job_linked(
            &self,
            name: &str,
            submitted: OffsetDateTime,
            link: bool,
        ) -> (bool, String) {
            let (done, head) = self.checkout(name, submitted, link).await;
            (done.fetched, head)
        }

        async fn checkout(
            &self,
            name: &str,
            submitted: OffsetDateTime,
            link: bool,
        ) -> (Checkout, String) {
            let dest = self.jobs.join(name);
            let done = self
                .cache
                .checkout(
                    &self.url,
                    &dest,
                    submitted,
                    link,
                    Arc::new(AtomicBool::new(false)),
                )
                .await
                .unwrap();
            (done, git(&dest, &["rev-parse", "HEAD"]))
        }

        /// The prepared trees the cache holds.
        fn trees(&self) -> Vec<String> {
            let mut names: Vec<String> = walkdir::WalkDir::new(&self.cache.dir)
                .min_depth(2)
                .max_depth(2)
                .into_iter()
                .flatten()
                .filter(|e| {
                    e.path()
                        .parent()
                        .is_some_and(|p| p.to_string_lossy().ends_with(".trees"))
                        && !e.file_name().to_string_lossy().contains('.')
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn only_a_fetch_started_after_the_submission_is_fresh_enough_without_slack() {
        let t = OffsetDateTime::now_utc();
        let ms = time::Duration::milliseconds;
        let none = time::Duration::ZERO;
        assert!(!fresh_enough(None, t, ms(5000)), "never fetched");
        assert!(fresh_enough(Some(t + ms(1)), t, none));
        assert!(fresh_enough(Some(t + ms(500)), t, none));
        // createdAt is truncated to the millisecond: a fetch in the same millisecond may
        // have started before the submission.
        assert!(!fresh_enough(Some(t), t, none));
        assert!(!fresh_enough(Some(t - ms(1)), t, none));
        assert!(fresh_enough(Some(t - ms(999)), t, ms(1000)));
        assert!(!fresh_enough(Some(t - ms(1001)), t, ms(1000)));
    }

    #[tokio::test]
    async fn a_job_submitted_before_the_last_fetch_started_skips_the_fetch() {
        let f = fixture(std::time::Duration::ZERO);
        let first = commit(&f.repo, "one");
        let submitted = OffsetDateTime::now_utc() - time::Duration::milliseconds(10);
        assert_eq!(
            f.job("a", submitted).await,
            (true, first.clone()),
            "no mirror yet"
        );
        // Jobs submitted before that fetch started (queued beside it) need none of their own.
        commit(&f.repo, "two");
        assert_eq!(f.job("b", submitted).await, (false, first.clone()));
    }

    #[tokio::test]
    async fn a_job_submitted_after_the_last_fetch_started_fetches_and_runs_the_newer_commit() {
        let f = fixture(std::time::Duration::ZERO);
        let first = commit(&f.repo, "one");
        assert_eq!(f.job("a", OffsetDateTime::now_utc()).await, (true, first));
        let second = commit(&f.repo, "two");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(f.job("b", OffsetDateTime::now_utc()).await, (true, second));
    }

    #[tokio::test]
    async fn with_slack_a_fetch_started_shortly_before_the_submission_is_reused() {
        let f = fixture(std::time::Duration::from_secs(2));
        let first = commit(&f.repo, "one");
        assert_eq!(
            f.job("a", OffsetDateTime::now_utc()).await,
            (true, first.clone())
        );
        assert_eq!(f.job("b", OffsetDateTime::now_utc()).await, (false, first));
        let later = OffsetDateTime::now_utc() + time::Duration::seconds(3);
        let second = commit(&f.repo, "two");
        assert_eq!(f.job("c", later).await, (true, second));
    }

    #[tokio::test]
    async fn a_checkout_that_must_not_link_shares_no_file_with_the_mirror() {
        let f = fixture(std::time::Duration::ZERO);
        commit(&f.repo, "one");
        f.job_linked("a", OffsetDateTime::now_utc(), false).await;
        // Writable by the job's user, a hard-linked object would be the mirror's own file.
        for entry in walkdir::WalkDir::new(f.jobs.join("a")) {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_file() {
                assert_eq!(meta.nlink(), 1, "{} is linked", entry.path().display());
            }
        }
    }

    #[tokio::test]
    async fn a_commit_s_tree_is_prepared_once_and_a_new_commit_gets_its_own() {
        let f = fixture(std::time::Duration::ZERO);
        let first = commit(&f.repo, "one");
        let submitted = OffsetDateTime::now_utc() - time::Duration::milliseconds(10);
        let (a, head) = f.checkout("a", submitted, true).await;
        assert!(a.prepared && head == first);
        let (b, head) = f.checkout("b", submitted, true).await;
        assert!(
            !b.prepared && head == first,
            "the same commit reuses its tree"
        );
        assert_eq!(f.trees(), std::slice::from_ref(&first));
        let second = commit(&f.repo, "two");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (c, head) = f.checkout("c", OffsetDateTime::now_utc(), true).await;
        assert!(c.fetched && c.prepared && head == second);
        assert_eq!(f.trees(), [second], "the older commit's tree is gone");
        assert_eq!(
            std::fs::read_to_string(f.jobs.join("c/file.txt")).unwrap(),
            "two"
        );
        assert_eq!(git(&f.jobs.join("c"), &["status", "--porcelain"]), "");
    }

    /// The inodes of a checkout's files: (path below it, inode, links).
    fn inodes(checkout: &Path) -> Vec<(PathBuf, u64, u64)> {
        walkdir::WalkDir::new(checkout)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let meta = e.metadata().unwrap();
                let path = e.path().strip_prefix(checkout).unwrap().to_path_buf();
                (path, meta.ino(), meta.nlink())
            })
            .collect()
    }

    #[tokio::test]
    async fn the_next_job_of_a_commit_takes_a_spare_copy_as_private_as_a_fresh_one() {
        for link in [false, true] {
            let f = fixture(std::time::Duration::ZERO);
            let first = commit(&f.repo, "one");
            let submitted = OffsetDateTime::now_utc() - time::Duration::milliseconds(10);
            let (a, _) = f.checkout("a", submitted, link).await;
            assert!(a.prepared && !a.spare);
            // a's job rewrites its copy while the spare is made: the spare is the tree's.
            tamper(&f.jobs.join("a"), link);
            let (b, head) = f.checkout("b", submitted, link).await;
            assert!(b.spare && !b.prepared, "link {link}: {b:?}");
            assert_eq!(head, first);
            let later = f.jobs.join("b");
            assert_eq!(git(&later, &["status", "--porcelain"]), "", "link {link}");
            git(&later, &["fsck", "--full", "--strict"]);
            // Private: no file shared with a's checkout or with the next spare, but the
            // read-only objects when linking.
            let (c, _) = f.checkout("c", submitted, link).await;
            assert!(c.spare);
            let theirs: Vec<u64> = [f.jobs.join("a"), f.jobs.join("c")]
                .iter()
                .flat_map(|d| inodes(d))
                .map(|(_, ino, _)| ino)
                .collect();
            for (path, ino, _) in inodes(&later) {
                if theirs.contains(&ino) {
                    assert!(
                        link && path.starts_with(".git/objects"),
                        "link {link}: {} is shared",
                        path.display()
                    );
                }
            }
            // A new commit: its own tree, the older commit's spare gone with its tree.
            let second = commit(&f.repo, "two");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let (d, head) = f.checkout("d", OffsetDateTime::now_utc(), link).await;
            assert!(d.prepared && !d.spare && head == second);
            let (e, head) = f.checkout("e", OffsetDateTime::now_utc(), link).await;
            assert!(e.fetched && e.spare && head == second, "{e:?}");
            assert_eq!(
                std::fs::read_to_string(f.jobs.join("e/file.txt")).unwrap(),
                "two"
            );
        }
    }

    /// Rewrites, removes and adds files in a job's checkout as a job could: every file when
    /// the job is the worker's own user (`!linked`: it may chmod and rewrite any of them),
    /// else all but the linked objects a root worker keeps from it.
    fn tamper(checkout: &Path, linked: bool) {
        use std::os::unix::fs::PermissionsExt;
        let files: Vec<PathBuf> = walkdir::WalkDir::new(checkout)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter(|e| !linked || e.metadata().unwrap().nlink() == 1)
            .map(|e| e.into_path())
            .collect();
        assert!(files.len() > 3, "{files:?}");
        for file in files {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&file, "tampered").unwrap();
        }
        std::fs::write(checkout.join("added.txt"), "tampered").unwrap();
        std::fs::remove_dir_all(checkout.join(".git/refs")).unwrap();
    }

    #[tokio::test]
    async fn nothing_a_job_does_to_its_checkout_reaches_a_later_job_of_the_same_commit() {
        for link in [false, true] {
            let f = fixture(std::time::Duration::ZERO);
            let first = commit(&f.repo, "one");
            let submitted = OffsetDateTime::now_utc() - time::Duration::milliseconds(10);
            f.checkout("a", submitted, link).await;
            tamper(&f.jobs.join("a"), link);
            let (b, head) = f.checkout("b", submitted, link).await;
            assert!(!b.prepared, "the same tree");
            assert_eq!(head, first);
            let later = f.jobs.join("b");
            assert_eq!(
                std::fs::read_to_string(later.join("file.txt")).unwrap(),
                "one"
            );
            assert!(!later.join("added.txt").exists());
            assert_eq!(git(&later, &["status", "--porcelain"]), "", "link {link}");
            git(&later, &["fsck", "--full", "--strict"]);
        }
    }

    #[tokio::test]
    async fn a_checkout_links_only_objects_that_are_read_only_to_everyone() {
        let f = fixture(std::time::Duration::ZERO);
        commit(&f.repo, "one");
        f.job_linked("a", OffsetDateTime::now_utc(), true).await;
        let checkout = f.jobs.join("a");
        let mut linked = 0;
        for entry in walkdir::WalkDir::new(&checkout) {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_file() && meta.nlink() > 1 {
                linked += 1;
                let path = entry.path().strip_prefix(&checkout).unwrap();
                assert!(
                    path.starts_with(".git/objects"),
                    "{} is linked",
                    path.display()
                );
                assert_eq!(meta.mode() & 0o222, 0, "{} is writable", path.display());
            }
        }
        assert!(linked > 0, "the objects are linked, not copied");
    }

    #[test]
    fn credentials_never_reach_clone_errors() {
        let url = RepoUrl::parse("https://user:s3cret@example.invalid/r.git", false).unwrap();
        let e = git2::Error::from_str(&format!(
            "failed to fetch {}; user:s3cret rejected",
            url.as_str()
        ));
        let text = clean(&e, &url);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("example.invalid"));
    }
}
