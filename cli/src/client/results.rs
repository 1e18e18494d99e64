//! `jobq results`: lists a job's output files or downloads them, streamed, under a
//! folder. File names come from the server, so each is checked to be a safe relative
//! path, and its folder is checked to be inside the target folder after symlinks are
//! resolved: nothing is ever written outside it.

use std::path::{Path, PathBuf};

use jobq_common::domain::safe_relative_path;
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::api::{Api, Missing};
use super::jobs;
use super::{ClientError, ClientResult, FailureKind};

pub const RESULTS_HELP: &str = "\
Without FILE, lists the job's output files; with FILE, downloads it to DIR/FILE (creating \
folders); with FILE `--all`, or with -o and no FILE, downloads every file.

Exit codes: 0 success, 1 other error, 2 usage or configuration, 3 server unreachable, \
4 not logged in or token expired, 5 no such job or file";

/// The argument that asks for every file.
const ALL: &str = "--all";

pub async fn results(
    api: &Api,
    id: &str,
    file: Option<String>,
    output: Option<PathBuf>,
    json: bool,
) -> ClientResult<()> {
    let (job, raw) = jobs::get(api, id).await?;
    let wanted: Vec<String> = match (file.as_deref(), &output) {
        (None, None) => {
            if json {
                println!("{:#}", raw.get("outputFiles").cloned().unwrap_or_default());
            } else if job.output_files.is_empty() {
                eprintln!(
                    "job {id} has no output files (status: {})",
                    job.status.as_str()
                );
            } else {
                for name in &job.output_files {
                    println!("{name}");
                }
            }
            return Ok(());
        }
        (Some(ALL), _) | (None, Some(_)) => job.output_files.clone(),
        (Some(name), _) => {
            if !job.output_files.iter().any(|f| f == name) {
                return Err(ClientError::new(
                    FailureKind::NotFound,
                    format!(
                        "job {id} has no output file `{name}`; `jobq results {id}` lists its files"
                    ),
                ));
            }
            vec![name.to_owned()]
        }
    };
    let dir = output.unwrap_or_else(|| PathBuf::from("."));
    if wanted.is_empty() {
        eprintln!(
            "job {id} has no output files (status: {})",
            job.status.as_str()
        );
    }
    let mut saved = Vec::new();
    for name in &wanted {
        let (path, bytes) = download(api, id, name, &dir).await?;
        if !json {
            println!("{}", path.display());
        }
        saved.push(serde_json::json!({"file": name, "path": path, "bytes": bytes}));
    }
    if json {
        println!("{:#}", serde_json::Value::Array(saved));
    }
    Ok(())
}

/// Where a server-given file name lands under `dir`; `None` when the name could escape it.
pub fn target_path(dir: &Path, name: &str) -> Option<PathBuf> {
    safe_relative_path(name).map(|relative| dir.join(relative))
}

async fn download(api: &Api, id: &str, name: &str, dir: &Path) -> ClientResult<(PathBuf, u64)> {
    let target = target_path(dir, name).ok_or_else(|| {
        ClientError::other(format!(
            "refusing to save `{name}`: not a plain relative path, it could land outside {}",
            dir.display()
        ))
    })?;
    let local = |e: std::io::Error, what: &Path| {
        ClientError::other(format!("cannot write {}: {e}", what.display()))
    };
    let parent = target.parent().unwrap_or(dir).to_path_buf();
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|e| local(e, &parent))?;
    // A folder inside `dir` may be a symlink that leads elsewhere.
    let root = tokio::fs::canonicalize(dir)
        .await
        .map_err(|e| local(e, dir))?;
    let real_parent = tokio::fs::canonicalize(&parent)
        .await
        .map_err(|e| local(e, &parent))?;
    if !real_parent.starts_with(&root) {
        return Err(ClientError::other(format!(
            "refusing to save `{name}`: {} leads outside {}",
            parent.display(),
            dir.display()
        )));
    }
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let final_path = real_parent.join(&file_name);
    let partial = real_parent.join(format!(".{file_name}.jobq-partial"));

    let mut segments = vec!["api", "v1", "jobs", id, "results"];
    segments.extend(name.split('/'));
    let request = api.request(Method::GET, api.url(segments));
    let mut response = api.send(request, Missing::File { id, file: name }).await?;
    let mut out = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| local(e, &partial))?;
    let mut bytes = 0u64;
    let copied: ClientResult<()> = async {
        while let Some(chunk) = response.chunk().await.map_err(|e| api.transport_error(e))? {
            out.write_all(&chunk)
                .await
                .map_err(|e| local(e, &partial))?;
            bytes += chunk.len() as u64;
        }
        out.flush().await.map_err(|e| local(e, &partial))?;
        out.sync_all().await.map_err(|e| local(e, &partial))
    }
    .await;
    drop(out);
    if let Err(e) = copied {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, &final_path)
        .await
        .map_err(|e| local(e, &final_path))?;
    Ok((target, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_names_land_under_the_folder() {
        let dir = Path::new("/tmp/out");
        assert_eq!(
            target_path(dir, "greetings/Ada.txt"),
            Some(PathBuf::from("/tmp/out/greetings/Ada.txt"))
        );
        assert_eq!(
            target_path(dir, "summary.json"),
            Some(PathBuf::from("/tmp/out/summary.json"))
        );
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        let dir = Path::new("/tmp/out");
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\..\\b",
            "",
            "a/\nb",
            "..",
        ] {
            assert_eq!(target_path(dir, bad), None, "{bad:?}");
        }
    }
}
