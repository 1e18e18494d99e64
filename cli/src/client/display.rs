//! Human output: durations, times, the job table and one job's details (its scheduling
//! fields and attempt history included).

use std::time::Duration;

use jobq_common::domain::JobStatus;
use jobq_frontend::dto::{AttemptView, JobView};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `850ms`, `4.2s`, `3m05s`, `2h07m`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3_600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3_600, (secs % 3_600) / 60)
    }
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` UTC; the text unchanged if it does not parse.
pub fn timestamp(rfc3339: &str) -> String {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| {
            t.to_offset(time::UtcOffset::UTC)
                .format(format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second]"
                ))
                .ok()
        })
        .unwrap_or_else(|| rfc3339.to_owned())
}

/// An RFC 3339 time as [`timestamp`] with how far it is from `now`:
/// `2026-12-01 10:05:00 UTC (in 4m10s)`, `… (12.0s ago)`.
pub fn moment(rfc3339: &str, now: OffsetDateTime) -> String {
    let shown = timestamp(rfc3339);
    let Ok(at) = OffsetDateTime::parse(rfc3339, &Rfc3339) else {
        return shown;
    };
    let gap = at - now;
    let abs: Duration = gap.unsigned_abs();
    if abs < Duration::from_secs(1) {
        format!("{shown} UTC (now)")
    } else if gap.is_positive() {
        format!("{shown} UTC (in {})", duration(abs))
    } else {
        format!("{shown} UTC ({} ago)", duration(abs))
    }
}

/// How long the job took, or for a job that has not ended, how long since it was queued.
pub fn elapsed(job: &JobView) -> Option<Duration> {
    if let Some(ms) = job.elapsed_ms {
        return Some(Duration::from_millis(ms));
    }
    if job.status.is_terminal() {
        return None;
    }
    let created = OffsetDateTime::parse(&job.created_at, &Rfc3339).ok()?;
    let since = OffsetDateTime::now_utc() - created;
    since.try_into().ok()
}

/// The job list as an aligned table.
pub fn job_table(jobs: &[JobView]) -> String {
    let header = [
        "ID",
        "STATUS",
        "ATTEMPT",
        "CREATED (UTC)",
        "ELAPSED",
        "FILES",
    ];
    let rows: Vec<[String; 6]> = jobs
        .iter()
        .map(|job| {
            [
                job.id.clone(),
                job.status.as_str().to_owned(),
                job.attempt.to_string(),
                timestamp(&job.created_at),
                elapsed(job).map(duration).unwrap_or_else(|| "-".into()),
                job.output_files.len().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// One job in full, a field per line.
pub fn job_details(job: &JobView) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        out.push_str(&format!("{name:<10} {value}\n"));
    };
    field("id", &job.id);
    field("status", job.status.as_str());
    field("owner", &job.owner);
    field("attempt", &job.attempt.to_string());
    field("url", &job.url);
    if !job.args.is_empty() {
        field("args", &job.args);
    }
    field("created", &timestamp(&job.created_at));
    if let Some(at) = &job.started_at {
        field("started", &timestamp(at));
    }
    if let Some(at) = &job.finished_at {
        field("ended", &timestamp(at));
    }
    if let Some(d) = elapsed(job) {
        field("elapsed", &duration(d));
    }
    if let Some(code) = job.exit_code {
        field("exit code", &code.to_string());
    }
    if let Some(failure) = &job.failure {
        field("failure", failure);
    }
    if job.priority != 0 {
        field("priority", &job.priority.to_string());
    }
    if job.retries != 0 {
        field("retries", &job.retries.to_string());
    }
    if let Some(at) = &job.not_before {
        field("not before", &timestamp(at));
    }
    // Only while the retry waits: the view keeps the last retry's time after it ran.
    if let Some(at) = job.retry_at.as_ref().filter(|_| !job.status.is_terminal()) {
        field("retry at", &timestamp(at));
    }
    if let Some(at) = &job.expires_at {
        field("expires", &timestamp(at));
    }
    let now = OffsetDateTime::now_utc();
    if let Some(at) = &job.deadline {
        if job.status.is_terminal() {
            field(
                "deadline",
                &format!("{} UTC{}", timestamp(at), verdict(job, at)),
            );
        } else {
            field("deadline", &moment(at, now));
            field(
                "at risk",
                if job.deadline_at_risk {
                    "yes: the observer's plan predicts it to finish after its deadline"
                } else {
                    "no"
                },
            );
        }
    }
    if let Some(secs) = job.expected_duration_secs {
        let shown = Duration::try_from_secs_f64(secs)
            .map(duration)
            .unwrap_or_else(|_| format!("{secs} s"));
        field("expected", &shown);
    }
    if !job.status.is_terminal() {
        // A running job's start is its actual one, shown above.
        if job.status == JobStatus::Queued {
            field(
                "est. start",
                &job.estimated_start_at
                    .as_deref()
                    .map(|at| moment(at, now))
                    .unwrap_or_else(|| NO_PLAN.into()),
            );
        }
        field(
            "est. end",
            &job.estimated_finish_at
                .as_deref()
                .map(|at| moment(at, now))
                .unwrap_or_else(|| NO_PLAN.into()),
        );
    }
    if job.output_files.is_empty() {
        field("files", "-");
    } else {
        field("files", &job.output_files.join(CONTINUED));
    }
    if !job.attempts.is_empty() {
        let lines: Vec<String> = job.attempts.iter().map(attempt_line).collect();
        field("attempts", &lines.join(CONTINUED));
    }
    out
}

/// Whether an ended job finished by its deadline: ` (met)`, ` (missed by 4.2s)`, or nothing
/// for a job that did not finish.
fn verdict(job: &JobView, deadline: &str) -> String {
    let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
    let (Some(deadline), Some(ended)) =
        (parse(deadline), job.finished_at.as_deref().and_then(parse))
    else {
        return String::new();
    };
    if job.status != JobStatus::Finished {
        return String::new();
    }
    if ended <= deadline {
        " (met)".into()
    } else {
        format!(
            " (missed by {})",
            duration((ended - deadline).unsigned_abs())
        )
    }
}

/// In place of an estimate when the answer has none.
const NO_PLAN: &str = "- (no recent plan from the observer yet)";

/// A value's next line, under the first one.
const CONTINUED: &str = "\n           ";

/// `#1 failed  2026-12-01 10:00:00 - 2026-12-01 10:00:02  worker w-1: exit code 1`.
fn attempt_line(a: &AttemptView) -> String {
    let started = a.started_at.as_deref().map(timestamp);
    let mut line = format!(
        "#{} {:<11} {} - {}",
        a.attempt,
        a.outcome.as_str(),
        started.as_deref().unwrap_or("-"),
        timestamp(&a.ended_at)
    );
    if let Some(worker) = &a.worker {
        line.push_str(&format!("  worker {worker}"));
    }
    if let Some(reason) = &a.reason {
        line.push_str(&format!(": {reason}"));
    }
    line
}

/// A queued job's view as the API answers it, with `extra` fields set (unit tests).
#[cfg(test)]
pub(crate) fn view_for_tests(extra: serde_json::Value) -> JobView {
    let mut job = serde_json::json!({
        "id": "j1", "owner": "alice", "status": "queued", "attempt": 1,
        "createdAt": "2026-12-01T10:00:00Z", "startedAt": null, "finishedAt": null,
        "exitCode": null, "elapsedMs": null, "outputFiles": [], "failure": null,
        "url": "https://example.com/x.git", "args": ""
    });
    job.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(job).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(4_240)), "4.2s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(7_620)), "2h07m");
    }

    use super::view_for_tests as view;

    #[test]
    fn details_leave_out_scheduling_fields_that_were_not_asked_for() {
        let text = job_details(&view(serde_json::json!({})));
        for name in [
            "priority",
            "retries",
            "not before",
            "retry at",
            "expires",
            "attempts",
        ] {
            assert!(!text.contains(name), "{name} in {text}");
        }
    }

    #[test]
    fn details_show_the_scheduling_fields_and_every_ended_attempt() {
        let text = job_details(&view(serde_json::json!({
            "attempt": 3, "priority": 10, "retries": 3,
            "notBefore": "2026-12-02T02:00:00Z",
            "retryAt": "2026-12-02T02:05:10+01:00",
            "expiresAt": "2026-12-02T03:00:00Z",
            "attempts": [
                {"attempt": 1, "worker": "w-a", "startedAt": "2026-12-02T02:00:01Z",
                 "endedAt": "2026-12-02T02:00:03Z", "outcome": "failed", "reason": "exit code 1"},
                {"attempt": 2, "worker": null, "startedAt": null,
                 "endedAt": "2026-12-02T02:01:00Z", "outcome": "lost", "reason": null}
            ]
        })));
        assert!(text.contains("priority   10\n"), "{text}");
        assert!(text.contains("retries    3\n"), "{text}");
        assert!(text.contains("not before 2026-12-02 02:00:00\n"), "{text}");
        assert!(text.contains("retry at   2026-12-02 01:05:10\n"), "{text}");
        assert!(text.contains("expires    2026-12-02 03:00:00\n"), "{text}");
        assert!(
            text.contains(
                "attempts   #1 failed      2026-12-02 02:00:01 - 2026-12-02 02:00:03  worker w-a: exit code 1\n           #2 lost        - - 2026-12-02 02:01:00\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn details_show_the_deadline_its_risk_and_the_estimates_of_a_waiting_job() {
        let text = job_details(&view(serde_json::json!({
            "deadline": "2099-12-02T03:00:00Z", "expectedDurationSecs": 90.0,
            "deadlineAtRisk": true,
            "estimatedStartAt": "2099-12-02T02:00:00Z",
            "estimatedFinishAt": "2099-12-02T03:01:30Z"
        })));
        assert!(
            text.contains("deadline   2099-12-02 03:00:00 UTC (in "),
            "{text}"
        );
        assert!(
            text.contains(
                "at risk    yes: the observer's plan predicts it to finish after its deadline\n"
            ),
            "{text}"
        );
        assert!(text.contains("expected   1m30s\n"), "{text}");
        assert!(
            text.contains("est. start 2099-12-02 02:00:00 UTC (in "),
            "{text}"
        );
        assert!(
            text.contains("est. end   2099-12-02 03:01:30 UTC (in "),
            "{text}"
        );
    }

    #[test]
    fn details_say_when_there_is_no_estimate_and_none_once_the_job_ended() {
        let waiting = job_details(&view(serde_json::json!({})));
        assert!(
            waiting.contains("est. start - (no recent plan from the observer yet)\n"),
            "{waiting}"
        );
        assert!(!waiting.contains("deadline"), "{waiting}");
        assert!(!waiting.contains("at risk"), "{waiting}");
        let ended = job_details(&view(serde_json::json!({
            "status": "finished", "deadline": "2026-12-01T10:01:00Z",
            "finishedAt": "2026-12-01T10:00:30Z"
        })));
        assert!(!ended.contains("est."), "{ended}");
        assert!(!ended.contains("at risk"), "{ended}");
        assert!(
            ended.contains("deadline   2026-12-01 10:01:00 UTC (met)\n"),
            "{ended}"
        );
        let late = job_details(&view(serde_json::json!({
            "status": "finished", "deadline": "2026-12-01T10:01:00Z",
            "finishedAt": "2026-12-01T10:01:04.2Z"
        })));
        assert!(
            late.contains("deadline   2026-12-01 10:01:00 UTC (missed by 4.2s)\n"),
            "{late}"
        );
        let cancelled = job_details(&view(serde_json::json!({
            "status": "cancelled", "deadline": "2026-12-01T10:01:00Z",
            "finishedAt": "2026-12-01T10:00:30Z"
        })));
        assert!(
            cancelled.contains("deadline   2026-12-01 10:01:00 UTC\n"),
            "{cancelled}"
        );
    }

    #[test]
    fn moments_say_how_far_they_are_from_now() {
        let now = OffsetDateTime::parse("2026-12-01T10:00:00Z", &Rfc3339).unwrap();
        assert_eq!(
            moment("2026-12-01T10:04:10Z", now),
            "2026-12-01 10:04:10 UTC (in 4m10s)"
        );
        assert_eq!(
            moment("2026-12-01T09:59:48Z", now),
            "2026-12-01 09:59:48 UTC (12.0s ago)"
        );
        assert_eq!(
            moment("2026-12-01T10:00:00.4Z", now),
            "2026-12-01 10:00:00 UTC (now)"
        );
        assert_eq!(moment("soon", now), "soon");
    }

    #[test]
    fn timestamps_are_shown_in_utc() {
        assert_eq!(
            timestamp("2025-03-01T10:20:30.123+01:00"),
            "2025-03-01 09:20:30"
        );
        assert_eq!(timestamp("garbage"), "garbage");
    }
}
