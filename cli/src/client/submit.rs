//! `jobq submit`: sends a job (`POST /api/v1/jobs`) and prints its id; with `--wait`,
//! follows it with a spinner until it ends and exits with its outcome.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use jobq_common::domain::JobStatus;
use jobq_common::idempotency::IdempotencyKey;
use jobq_frontend::dto::JobView;
use reqwest::Method;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::api::{Api, Missing};
use super::display::{duration, moment};
use super::{ClientError, ClientResult, FailureKind};

pub const SUBMIT_EXIT_CODES: &str = "\
Exit codes: 0 submitted (with --wait: the job finished), 1 the job failed (with --wait) or \
another error, 2 usage or configuration, 3 server unreachable, 4 not logged in or token \
expired, 130 the job was cancelled (with --wait) or the wait was interrupted";

/// How often `--wait` asks for the job's state.
const POLL: Duration = Duration::from_millis(500);
/// How long `--wait` keeps trying while the server does not answer.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(60);

/// The body of `POST /api/v1/jobs`.
#[derive(Debug, Serialize, PartialEq)]
pub struct SubmitRequest {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(rename = "notBefore", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(rename = "expireAfterSecs", skip_serializing_if = "Option::is_none")]
    pub expire_after_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(
        rename = "expectedDurationSecs",
        skip_serializing_if = "Option::is_none"
    )]
    pub expected_duration_secs: Option<f64>,
}

/// How the job competes for a slot (docs/scheduling.md); the server checks the ranges.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScheduleFlags {
    /// Higher first while jobs wait, -100 to 100 (default 0)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Extra attempts after a failed run, with exponential back-off (default 0)
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Do not start before this RFC 3339 time (e.g. 2026-12-02T02:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub not_before: Option<String>,
    /// Cancel the job (expired) if it has not started this long after the submit: seconds,
    /// or a number with s, m, h or d
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_secs)]
    pub expire_after: Option<u64>,
    /// Finish by: an RFC 3339 time (e.g. 2026-12-02T02:00:00Z) or `+` and a duration from
    /// now (+90s, +15m, +2h, +1d); waiting jobs with a deadline go earliest deadline first
    /// within their priority
    #[arg(long, value_name = "TIME", value_parser = parse_deadline)]
    pub deadline: Option<String>,
    /// What a run is expected to take: seconds, or a number with s, m, h or d (default:
    /// the time the observer has learned for the repository)
    #[arg(long, value_name = "DURATION", value_parser = parse_expected_duration)]
    pub expected_duration: Option<f64>,
}

/// `90`, `90s`, `15m`, `2h`, `1d` as seconds.
fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90, 90s, 15m, 2h or 1d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `--deadline`: an RFC 3339 time is sent as written (the server checks that it is in the
/// future and within 366 days); `+15m` is that long from now, sent as an RFC 3339 UTC time.
fn parse_deadline(text: &str) -> Result<String, String> {
    deadline_from(text, OffsetDateTime::now_utc())
}

fn deadline_from(text: &str, now: OffsetDateTime) -> Result<String, String> {
    let text = text.trim();
    if let Some(relative) = text.strip_prefix('+') {
        let secs = parse_duration_secs(relative)?;
        let secs = i64::try_from(secs).map_err(|_| format!("{text:?} is too far ahead"))?;
        let at = now
            .checked_add(time::Duration::seconds(secs))
            .ok_or_else(|| format!("{text:?} is too far ahead"))?;
        return at
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .map_err(|e| e.to_string())?
            .format(&Rfc3339)
            .map_err(|e| e.to_string());
    }
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-12-02T02:00:00Z) nor +DURATION (+15m)")
    })?;
    Ok(text.to_owned())
}

/// `--expected-duration`: `90`, `2.5`, `90s`, `15m`, `2h`, `1d` as seconds.
fn parse_expected_duration(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90, 2.5, 90s, 15m or 2h"))?;
    let unit = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    let secs = n * unit;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{text:?} must be more than 0"));
    }
    Ok(secs)
}

impl SubmitRequest {
    /// Reads the config file (`-` is standard input) and makes a local directory an
    /// absolute path, so a server on this machine finds it whatever its working folder.
    pub fn build(
        repo: String,
        args: Option<String>,
        config: Option<PathBuf>,
        config_text: Option<String>,
    ) -> ClientResult<Self> {
        let config = match (config, config_text) {
            (Some(path), _) if path == Path::new("-") => {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).map_err(|e| {
                    ClientError::usage(format!("cannot read the config from standard input: {e}"))
                })?;
                Some(text)
            }
            (Some(path), _) => Some(std::fs::read_to_string(&path).map_err(|e| {
                ClientError::usage(format!(
                    "cannot read the config file {}: {e}",
                    path.display()
                ))
            })?),
            (None, text) => text,
        };
        Ok(SubmitRequest {
            url: local_directory(&repo).unwrap_or(repo),
            args,
            config,
            priority: None,
            retries: None,
            not_before: None,
            expire_after_secs: None,
            deadline: None,
            expected_duration_secs: None,
        })
    }

    /// The request with the scheduling the flags ask for.
    pub fn with_schedule(self, flags: ScheduleFlags) -> Self {
        SubmitRequest {
            priority: flags.priority,
            retries: flags.retries,
            not_before: flags.not_before,
            expire_after_secs: flags.expire_after,
            deadline: flags.deadline,
            expected_duration_secs: flags.expected_duration,
            ..self
        }
    }
}

/// The absolute path of `repo` when it names an existing local directory and not a URL.
fn local_directory(repo: &str) -> Option<String> {
    if repo.contains("://") {
        return None;
    }
    let path = Path::new(repo);
    if !path.is_dir() {
        return None;
    }
    let absolute = std::fs::canonicalize(path).ok()?;
    absolute.to_str().map(str::to_owned)
}

/// Sends the job (with `Idempotency-Key: key` when given: a repeat within 24 h answers the
/// job the first submit made) and prints its id; with `wait`, follows it to its end.
pub async fn submit(
    api: &Api,
    request: SubmitRequest,
    key: Option<IdempotencyKey>,
    wait: bool,
    json: bool,
) -> ClientResult<ExitCode> {
    let mut http = api
        .request(Method::POST, api.url(["api", "v1", "jobs"]))
        .json(&request);
    if let Some(key) = &key {
        http = http.header("Idempotency-Key", key.as_str());
    }
    let (job, raw): (JobView, _) = api.json(http, Missing::Route).await?;
    if !wait {
        if json {
            println!("{raw:#}");
        } else {
            println!("{}", job.id);
            eprintln!("{}", estimate_line(&job, OffsetDateTime::now_utc()));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        println!("{}", job.id);
        eprintln!("{}", estimate_line(&job, OffsetDateTime::now_utc()));
    }
    let (job, raw) = wait_for(api, job, json).await?;
    if json {
        println!("{raw:#}");
    }
    Ok(outcome(&job, json))
}

/// What the answer predicts for the job, for stderr (stdout keeps only the id, for scripts).
fn estimate_line(job: &JobView, now: OffsetDateTime) -> String {
    let id = &job.id;
    let mut line = match (&job.estimated_start_at, &job.estimated_finish_at) {
        (Some(start), finish) => {
            let mut text = format!("estimated start {}", moment(start, now));
            if let Some(finish) = finish {
                text.push_str(&format!(", finish {}", moment(finish, now)));
            }
            text
        }
        (None, _) => format!(
            "no estimate yet (the observer plans every period): `jobq status {id}` shows it later"
        ),
    };
    if let Some(deadline) = &job.deadline {
        line.push_str(&format!("; deadline {}", moment(deadline, now)));
        if job.deadline_at_risk {
            line.push_str(" (at risk: predicted to finish after it)");
        }
    }
    line
}

/// Polls the job until it ends, showing a spinner on a terminal and status changes as
/// lines otherwise. Ctrl-C stops waiting (the job goes on) and exits with 130.
async fn wait_for(
    api: &Api,
    job: JobView,
    quiet: bool,
) -> ClientResult<(JobView, serde_json::Value)> {
    let id = job.id.clone();
    let interactive = std::io::stderr().is_terminal() && !quiet;
    let spinner = if interactive {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} job {prefix} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(id.clone());
        bar.set_message(format!("{} (attempt {})", job.status.as_str(), job.attempt));
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    } else {
        None
    };
    let show = |job: &JobView, note: &str| {
        let text = format!("{} (attempt {}){note}", job.status.as_str(), job.attempt);
        match &spinner {
            Some(bar) => bar.set_message(text),
            None if !quiet => eprintln!("job {id}: {text}"),
            None => {}
        }
    };
    show(&job, "");
    let mut last = (job.status, job.attempt);
    let mut unreachable_since: Option<Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result = loop {
        tokio::select! {
            _ = &mut ctrl_c => {
                if let Some(bar) = &spinner { bar.finish_and_clear(); }
                eprintln!("jobq: stopped waiting; job {id} goes on: `jobq status {id}`, `jobq cancel {id}`");
                std::process::exit(130);
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        let request = api.request(Method::GET, api.url(["api", "v1", "jobs", &id]));
        match api.json::<JobView>(request, Missing::Job(&id)).await {
            Ok((job, raw)) => {
                unreachable_since = None;
                if job.status.is_terminal() {
                    break Ok((job, raw));
                }
                if (job.status, job.attempt) != last || spinner.is_some() {
                    last = (job.status, job.attempt);
                    show(&job, "");
                }
            }
            // A restarting server is not the job's end: keep trying for a while.
            Err(e) if e.kind == FailureKind::Unreachable => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_GRACE {
                    break Err(e);
                }
                if let Some(bar) = &spinner {
                    bar.set_message(format!(
                        "(server not answering for {})",
                        duration(since.elapsed())
                    ));
                }
            }
            Err(e) => break Err(e),
        }
    };
    if let Some(bar) = &spinner {
        bar.finish_and_clear();
    }
    result
}

/// The exit code and summary for a job that ended.
fn outcome(job: &JobView, quiet: bool) -> ExitCode {
    let took = job
        .elapsed_ms
        .map(|ms| format!(" in {}", duration(Duration::from_millis(ms))))
        .unwrap_or_default();
    let id = &job.id;
    match job.status {
        JobStatus::Finished => {
            if !quiet {
                let files = job.output_files.len();
                eprintln!("job {id} finished{took}; {files} output file(s): `jobq results {id}`");
            }
            ExitCode::SUCCESS
        }
        JobStatus::Failed => {
            if !quiet {
                let why = job.failure.as_deref().unwrap_or("no reason given");
                eprintln!("job {id} failed{took}: {why}");
                eprintln!("see its output: `jobq logs {id} --stderr`");
            }
            ExitCode::FAILURE
        }
        JobStatus::Cancelled => {
            if !quiet {
                eprintln!("job {id} was cancelled{took}");
            }
            ExitCode::from(130)
        }
        JobStatus::Queued | JobStatus::Running => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_sent_unchanged() {
        let r =
            SubmitRequest::build("https://github.com/x/y.git".into(), None, None, None).unwrap();
        assert_eq!(r.url, "https://github.com/x/y.git");
        assert_eq!(r.args, None);
        assert_eq!(r.config, None);
    }

    #[test]
    fn a_local_directory_becomes_its_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let r =
            SubmitRequest::build(dir.path().to_str().unwrap().into(), None, None, None).unwrap();
        assert_eq!(
            r.url,
            std::fs::canonicalize(dir.path()).unwrap().to_str().unwrap()
        );
    }

    #[test]
    fn config_comes_from_a_file_or_text() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, "{\"n\": 3}").unwrap();
        let r = SubmitRequest::build(
            "https://h/r.git".into(),
            Some("a b".into()),
            Some(file),
            None,
        )
        .unwrap();
        assert_eq!(r.config.as_deref(), Some("{\"n\": 3}"));
        assert_eq!(r.args.as_deref(), Some("a b"));
        let r =
            SubmitRequest::build("https://h/r.git".into(), None, None, Some("x".into())).unwrap();
        assert_eq!(r.config.as_deref(), Some("x"));
    }

    #[test]
    fn a_relative_deadline_is_that_long_from_now_in_utc() {
        let now = OffsetDateTime::parse("2026-12-01T10:00:00.750+01:00", &Rfc3339).unwrap();
        assert_eq!(deadline_from("+15m", now).unwrap(), "2026-12-01T09:15:00Z");
        assert_eq!(deadline_from("+90", now).unwrap(), "2026-12-01T09:01:30Z");
        assert_eq!(deadline_from(" +1d ", now).unwrap(), "2026-12-02T09:00:00Z");
        assert_eq!(
            deadline_from("2026-12-02T02:00:00+01:00", now).unwrap(),
            "2026-12-02T02:00:00+01:00",
            "an absolute time is sent as written"
        );
        for bad in [
            "+",
            "+15x",
            "tomorrow",
            "2026-12-02 02:00",
            "+99999999999999999d",
        ] {
            assert!(deadline_from(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_expected_duration_is_seconds_or_a_number_with_a_unit() {
        assert_eq!(parse_expected_duration("30").unwrap(), 30.0);
        assert_eq!(parse_expected_duration("2.5").unwrap(), 2.5);
        assert_eq!(parse_expected_duration("15m").unwrap(), 900.0);
        assert_eq!(parse_expected_duration("1.5h").unwrap(), 5400.0);
        for bad in ["0", "-3", "abc", "3x", "", "1.2.3"] {
            assert!(parse_expected_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_deadline_flags_are_sent_under_the_apis_names() {
        let flags = ScheduleFlags {
            deadline: Some("2026-12-02T02:00:00Z".into()),
            expected_duration: Some(30.0),
            ..ScheduleFlags::default()
        };
        let r = SubmitRequest::build("https://h/r.git".into(), None, None, None)
            .unwrap()
            .with_schedule(flags);
        let body = serde_json::to_value(&r).unwrap();
        assert_eq!(body["deadline"], "2026-12-02T02:00:00Z");
        assert_eq!(body["expectedDurationSecs"], 30.0);
        let plain = SubmitRequest::build("https://h/r.git".into(), None, None, None).unwrap();
        let body = serde_json::to_value(&plain).unwrap();
        assert!(body.get("deadline").is_none() && body.get("expectedDurationSecs").is_none());
    }

    use crate::client::display::view_for_tests as answer;

    #[test]
    fn the_submit_line_gives_the_estimates_or_says_there_are_none() {
        let now = OffsetDateTime::parse("2026-12-01T10:00:00Z", &Rfc3339).unwrap();
        assert_eq!(
            estimate_line(&answer(serde_json::json!({})), now),
            "no estimate yet (the observer plans every period): `jobq status j1` shows it later"
        );
        assert_eq!(
            estimate_line(
                &answer(serde_json::json!({
                    "estimatedStartAt": "2026-12-01T10:00:05Z",
                    "estimatedFinishAt": "2026-12-01T10:01:05Z",
                    "deadline": "2026-12-01T10:01:00Z", "deadlineAtRisk": true
                })),
                now
            ),
            "estimated start 2026-12-01 10:00:05 UTC (in 5.0s), finish 2026-12-01 10:01:05 UTC (in 1m05s); \
             deadline 2026-12-01 10:01:00 UTC (in 1m00s) (at risk: predicted to finish after it)"
        );
    }

    #[test]
    fn a_missing_config_file_is_a_usage_error() {
        let e = SubmitRequest::build(
            "https://h/r.git".into(),
            None,
            Some("/nonexistent/config.json".into()),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, FailureKind::Usage);
        assert!(e.message.contains("/nonexistent/config.json"));
    }
}
