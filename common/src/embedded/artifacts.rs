//! The artifact store as a local directory, for `jobq standalone`: an object's key is its
//! path below the root. Writes go to a temporary file first and are renamed into place, so
//! a reader never sees half an object.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::domain::safe_relative_path;
use crate::error::{ErrorKind, PortError, PortResult};
use crate::ports::{Artifact, ArtifactStore};

/// [`ArtifactStore`] on a directory.
#[derive(Debug, Clone)]
pub struct LocalArtifactStore {
    root: PathBuf,
}

fn io_error(what: String, e: std::io::Error) -> PortError {
    let kind = if e.kind() == std::io::ErrorKind::NotFound {
        ErrorKind::NotFound
    } else {
        ErrorKind::Unavailable
    };
    PortError::with_source(kind, what, e)
}

impl LocalArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> PortResult<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| io_error(format!("cannot create {}", root.display()), e))?;
        Ok(Self { root })
    }

    /// The file of a key; keys must be safe relative paths.
    fn path(&self, key: &str) -> PortResult<PathBuf> {
        safe_relative_path(key)
            .map(|k| self.root.join(k))
            .ok_or_else(|| PortError::invalid(format!("unusable key {key:?}")))
    }

    async fn write_atomically(
        &self,
        key: &str,
        write: impl AsyncFnOnce(&Path) -> std::io::Result<u64>,
    ) -> PortResult<u64> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error(format!("cannot create {}", dir.display()), e))?;
        let tmp = dir.join(format!(".{}.partial", uuid::Uuid::new_v4().simple()));
        let written = match write(&tmp).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(io_error(format!("cannot store {key}"), e));
            }
        };
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_error(format!("cannot store {key}"), e))?;
        Ok(written)
    }
}

#[async_trait]
impl ArtifactStore for LocalArtifactStore {
    async fn put_file(&self, key: &str, path: &Path) -> PortResult<u64> {
        if let Err(e) = tokio::fs::metadata(path).await {
            return Err(PortError::with_source(
                ErrorKind::Invalid,
                format!("cannot read {}", path.display()),
                e,
            ));
        }
        let source = path.to_path_buf();
        self.write_atomically(key, async move |tmp: &Path| {
            tokio::fs::copy(&source, tmp).await
        })
        .await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> PortResult<()> {
        self.write_atomically(key, async move |tmp: &Path| {
            tokio::fs::write(tmp, &bytes)
                .await
                .map(|_| bytes.len() as u64)
        })
        .await
        .map(|_| ())
    }

    async fn get(&self, key: &str) -> PortResult<Artifact> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(format!("no object {key}"), e))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| io_error(format!("no object {key}"), e))?
            .len();
        Ok(Artifact {
            len,
            body: Box::pin(file),
        })
    }

    async fn list(&self, prefix: &str) -> PortResult<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    if kind.is_dir() {
                        stack.push(path);
                    } else if kind.is_file()
                        && let Some(key) = path.strip_prefix(&root).ok().and_then(|p| p.to_str())
                        && key.starts_with(&prefix)
                        && !key.rsplit('/').next().unwrap_or("").ends_with(".partial")
                    {
                        keys.push(key.to_string());
                    }
                }
            }
            keys.sort();
            Ok(keys)
        })
        .await
        .map_err(|e| PortError::with_source(ErrorKind::Internal, "list task failed", e))?
    }

    async fn delete(&self, key: &str) -> PortResult<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(format!("cannot delete {key}"), e)),
        }
    }
}
