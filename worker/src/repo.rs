//! Fetching a job's repository with git2: a bare mirror per URL in a local cache (fetched
//! again on reuse, so a repeated repository is not cloned from scratch), then a local
//! clone of the mirror into the job's directory.
//!
//! Credentials in a URL (`https://user:token@host/…`) never rest on disk: the mirror's
//! remote is the URL without them, and they are handed to git by the credential callback
//! for each fetch. The cache lives outside every job's sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use git2::build::RepoBuilder;
use git2::{Cred, CredentialType};
use git2::{FetchOptions, RemoteCallbacks, Repository};
use jobq_common::repo_url::{RepoUrl, UrlCredentials};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// Why a repository could not be fetched; the text never contains credentials.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CloneError(String);

/// The mirror cache of one worker.
#[derive(Debug)]
pub struct RepoCache {
    dir: PathBuf,
    /// One lock per mirror: two jobs of the same repository never fetch into it at once.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl RepoCache {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Clones `url` into `dest` (which must not exist), through the cache. `stop` aborts a
    /// transfer in progress (cancel, time limit).
    pub async fn checkout(
        &self,
        url: &RepoUrl,
        dest: &Path,
        stop: Arc<AtomicBool>,
    ) -> Result<(), CloneError> {
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
        let _guard = lock.lock().await;
        let mirror = self.dir.join(format!("{key}.git"));
        let url = url.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || {
            refresh_mirror(&url, &mirror, &stop)?;
            RepoBuilder::new()
                .clone(&mirror.to_string_lossy(), &dest)
                .map_err(|e| CloneError(clean(&e, &url)))?;
            Ok(())
        })
        .await
        .map_err(|e| CloneError(format!("clone task failed: {e}")))?
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
