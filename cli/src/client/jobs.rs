//! `jobq status`, `jobq logs` and `jobq cancel`.

use std::io::Write;
use std::time::Duration;

use jobq_frontend::dto::{JobList, JobView};
use reqwest::Method;

use super::api::{Api, Missing};
use super::display;
use super::{ClientError, ClientResult};

/// How often `logs --follow` asks for new output.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

pub async fn list(api: &Api, all: bool, limit: u64, json: bool) -> ClientResult<()> {
    let mut url = api.url(["api", "v1", "jobs"]);
    url.query_pairs_mut()
        .append_pair("limit", &limit.to_string())
        .append_pair("all", if all { "true" } else { "false" });
    let request = api.request(Method::GET, url);
    let (list, raw): (JobList, _) = api.json(request, Missing::Route).await?;
    if json {
        println!("{raw:#}");
        return Ok(());
    }
    if list.jobs.is_empty() {
        eprintln!("no jobs yet: `jobq submit REPO_URL` sends one");
        return Ok(());
    }
    print!("{}", display::job_table(&list.jobs));
    let shown = list.offset + list.jobs.len() as u64;
    if list.total > shown {
        eprintln!(
            "({} of {} jobs shown, newest first; --limit N shows up to 100)",
            list.jobs.len(),
            list.total
        );
    }
    Ok(())
}

pub async fn get(api: &Api, id: &str) -> ClientResult<(JobView, serde_json::Value)> {
    let request = api.request(Method::GET, api.url(["api", "v1", "jobs", id]));
    api.json(request, Missing::Job(id)).await
}

pub async fn show(api: &Api, id: &str, json: bool) -> ClientResult<()> {
    let (job, raw) = get(api, id).await?;
    if json {
        println!("{raw:#}");
    } else {
        print!("{}", display::job_details(&job));
    }
    Ok(())
}

pub async fn cancel(api: &Api, id: &str, json: bool) -> ClientResult<()> {
    let request = api.request(Method::DELETE, api.url(["api", "v1", "jobs", id]));
    let (job, raw): (JobView, _) = api.json(request, Missing::Job(id)).await?;
    if json {
        println!("{raw:#}");
    } else if job.status == jobq_common::domain::JobStatus::Cancelled {
        println!("job {id} cancelled");
    } else {
        println!("job {id} had already ended: {}", job.status.as_str());
    }
    Ok(())
}

/// Prints the chosen log; with `follow`, prints what is added to it until the job ends.
pub async fn logs(api: &Api, id: &str, follow: bool, stderr: bool, json: bool) -> ClientResult<()> {
    if json {
        if follow {
            return Err(ClientError::usage(
                "--follow cannot be combined with --json",
            ));
        }
        let request = api.request(Method::GET, api.url(["api", "v1", "jobs", id, "logs"]));
        let (_, raw): (serde_json::Value, _) = api.json(request, Missing::Job(id)).await?;
        println!("{raw:#}");
        return Ok(());
    }
    let stream = if stderr { "stderr" } else { "stdout" };
    let mut printed = 0usize;
    loop {
        // Read the state before the log: once the job is seen ended, the log read after
        // it is complete.
        let ended = if follow {
            get(api, id).await?.0.status.is_terminal()
        } else {
            true
        };
        let text = read_log(api, id, stream).await?;
        if text.len() < printed {
            // The log was replaced (a new attempt started): print it from the start.
            printed = 0;
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&text[printed..])
            .and_then(|()| out.flush())
            .map_err(|e| ClientError::other(format!("cannot write the log: {e}")))?;
        printed = text.len();
        if ended {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

async fn read_log(api: &Api, id: &str, stream: &str) -> ClientResult<Vec<u8>> {
    let mut url = api.url(["api", "v1", "jobs", id, "logs"]);
    url.query_pairs_mut().append_pair("stream", stream);
    let request = api
        .request(Method::GET, url)
        .timeout(super::api::REQUEST_TIMEOUT);
    let response = api.send(request, Missing::Job(id)).await?;
    let bytes = response.bytes().await.map_err(|e| api.transport_error(e))?;
    Ok(bytes.to_vec())
}
