//! Fetching a job's repository with git2: a bare mirror per URL in a local cache (fetched
//! again on reuse, so a repeated repository is not cloned from scratch), then a local
//! clone of the mirror into the job's directory.
//!
//! **Freshness.** A job runs its repository as it is at its submission or later. A fetch
//! that *started* after the job was submitted saw the remote at that time or later, so when
//! the mirror's last fetch started after the job's `createdAt` the fetch is skipped: jobs of
//! one repository submitted together (or queued while another fetched) share one fetch.
//! `worker.repo_fetch_slack_ms` (0 by default) widens that to fetches started up to that long
//! *before* the submission — a push made in that window before a submit may then be missed.
//! The comparison is of the worker's clock with the frontend's, as leases and `notBefore` are.
//!
//! **The checkout** is a local clone of the mirror. Its objects are hard links to the
//! mirror's where the job cannot write them: a root worker runs the job as a user of its own
//! and hands it the checkout without the linked files (they stay the worker's, read-only);
//! where the job runs as the worker's own user (a non-root worker's user namespace) they are
//! copied, since that user could rewrite a linked file and alter what later jobs run.
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

/// What a checkout did: whether the mirror was fetched, and how long the fetch (with the
/// wait for the mirror's lock) and the local clone took.
#[derive(Debug, Clone, Copy)]
pub struct Checkout {
    pub fetched: bool,
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
        let mut last_fetch = lock.lock().await;
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
        // The clone reads the mirror: no fetch may write into it meanwhile.
        let fetched_at = std::time::Instant::now();
        let (url, dest) = (url.clone(), dest.to_path_buf());
        tokio::task::spawn_blocking(move || {
            RepoBuilder::new()
                .clone_local(match link_objects {
                    true => CloneLocal::Local,
                    false => CloneLocal::NoLinks,
                })
                .clone(&mirror.to_string_lossy(), &dest)
                .map_err(|e| CloneError(clean(&e, &url)))
        })
        .await
        .map_err(|e| CloneError(format!("clone task failed: {e}")))??;
        drop(last_fetch);
        Ok(Checkout {
            fetched: fetch,
            fetch: fetched_at - started,
            clone: fetched_at.elapsed(),
        })
    }
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
            (done.fetched, git(&dest, &["rev-parse", "HEAD"]))
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
