//! Live views over Server-Sent Events, and the observation history for charts:
//! `GET /api/v1/events`, `GET /api/v1/jobs/{id}/logs?follow=true`, `GET /api/v1/observations`.
//!
//! Like every `/api` route they need `Authorization: Bearer <token>` (never a token in the
//! URL, where logs and proxies would keep it), and follow the ownership rule: a user's
//! stream carries only their own jobs (an admin's everyone's), another user's job is 404.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use jobq_common::ErrorKind;
use jobq_common::domain::{Job, JobStatus, artifact_keys};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::dto::{JobStatusDoc, ObservationView};
use crate::error::{ApiError, ErrorBody, PortResultExt};
use crate::extract::{ApiQuery, Caller};
use crate::live::{LiveEvent, Resume};

/// How often an idle stream sends a comment, so proxies keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often a followed log is read again while its job runs.
const LOG_POLL: Duration = Duration::from_millis(500);
/// Observations answered when no `limit` is given, and the most answered at once.
const DEFAULT_OBSERVATIONS: u64 = 300;
const MAX_OBSERVATIONS: u64 = 5000;
/// What a browser waits before it reconnects a dropped stream.
const RETRY: Duration = Duration::from_secs(2);

/// One state transition of a job, as `/api/v1/events` sends it (`event: job`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTransition {
    pub job_id: String,
    pub attempt: u32,
    /// `null` when the job was just submitted.
    #[schema(value_type = Option<JobStatusDoc>)]
    pub from: Option<JobStatus>,
    #[schema(value_type = JobStatusDoc)]
    pub to: JobStatus,
    /// RFC 3339.
    pub at: String,
    /// The job's owner (`null` if the store could not tell; only admins see those).
    pub owner: Option<String>,
    /// Only on a notice (`from` is `to`, no transition): the observer's plan now predicts
    /// the job to finish after its deadline (`true`), or in time again (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at_risk: Option<bool>,
}

impl From<&LiveEvent> for JobTransition {
    fn from(live: &LiveEvent) -> Self {
        let e = &live.event;
        JobTransition {
            job_id: e.job_id.to_string(),
            attempt: e.attempt,
            from: e.from,
            to: e.to,
            at: e
                .at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            owner: live.owner.clone(),
            deadline_at_risk: e.deadline_at_risk,
        }
    }
}

/// The first event of `/api/v1/events` (`event: ready`, or `event: reset` when the
/// `Last-Event-ID` could not be resumed and the client should reload what it shows).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStart {
    /// `fresh`, `resumed` or `gap`.
    pub resume: String,
}

/// A piece of a followed log (`event: stdout` or `event: stderr`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    pub text: String,
}

/// The last event of a followed log (`event: end`): the job ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEnd {
    #[schema(value_type = JobStatusDoc)]
    pub status: JobStatus,
    pub exit_code: Option<i32>,
}

/// Which observations to answer.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObservationQuery {
    /// Only observations after this time (milliseconds since the Unix epoch), oldest
    /// first; without it the newest ones.
    pub since: Option<i64>,
    /// At most this many (default 300, at most 5000).
    pub limit: Option<u64>,
}

fn sse_event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

/// Server-Sent Events of the caller's job transitions (an admin's: every user's).
///
/// The stream starts with `event: ready` (or `reset`, see below), then one `event: job`
/// per transition (`id` is the event's id), and a comment every 15 s while idle. A client
/// that reconnects with `Last-Event-ID` gets the transitions it missed, if this process
/// still keeps them (the newest 4096); otherwise it gets `event: reset` and should reload
/// the jobs it shows. A client too slow to keep up gets `reset` as well.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "live",
    params(("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received, to resume")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`text/event-stream`: `ready` or `reset` (data `StreamStart`), then `job` events (data `JobTransition`)", content_type = "text/event-stream", body = JobTransition),
        (status = 401, body = ErrorBody),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let live = state.live.clone();
    let subscription = live.subscribe(last);
    let admin = caller.has_role(&state.admin_role);
    let user: Arc<str> = caller.username.into();
    let visible = move |e: &LiveEvent| admin || e.owner.as_deref() == Some(&*user);
    let to_sse = {
        let live = live.clone();
        move |e: &LiveEvent| sse_event("job", &JobTransition::from(e)).id(live.event_id(e))
    };

    let (name, resume) = match subscription.resume {
        Resume::Fresh => ("ready", "fresh"),
        Resume::Resumed => ("ready", "resumed"),
        Resume::Gap => ("reset", "gap"),
    };
    let head = sse_event(
        name,
        &StreamStart {
            resume: resume.into(),
        },
    )
    .retry(RETRY);
    let replay: Vec<Event> = subscription
        .replay
        .iter()
        .filter(|e| visible(e))
        .map(|e| to_sse(e))
        .collect();
    let rest = futures::stream::unfold(subscription.receiver, move |mut receiver| {
        let (visible, to_sse) = (visible.clone(), to_sse.clone());
        async move {
            loop {
                match receiver.recv().await {
                    Ok(e) if visible(&e) => return Some((to_sse(&e), receiver)),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        let reset = sse_event(
                            "reset",
                            &StreamStart {
                                resume: "gap".into(),
                            },
                        );
                        return Some((reset, receiver));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    let stream = futures::stream::iter(std::iter::once(head).chain(replay))
        .chain(rest)
        .take_until(async move { live.closed().await })
        .map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
}

/// A followed log: `stdout` and `stderr` events with what each log grew by, then `end`
/// when the job has ended and both logs were sent in full.
pub fn follow_logs(state: AppState, job: Job) -> Response {
    let (mut sender, receiver) = futures::channel::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let mut events = state.live.subscribe(None).receiver;
        let mut sent = [0usize; 2];
        let mut job = job;
        loop {
            let ended = job.status.is_terminal();
            for (i, name) in ["stdout", "stderr"].into_iter().enumerate() {
                let key = if i == 0 {
                    artifact_keys::stdout(&job.id)
                } else {
                    artifact_keys::stderr(&job.id)
                };
                let Some(bytes) = read_if_grown(&state, &key, sent[i]).await else {
                    continue;
                };
                let (text, used) = complete_text(&bytes[sent[i].min(bytes.len())..], ended);
                sent[i] += used;
                if !text.is_empty()
                    && sender
                        .send(sse_event(name, &LogChunk { text }))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            if ended {
                let end = LogEnd {
                    status: job.status,
                    exit_code: job.exit_code,
                };
                let _ = sender.send(sse_event("end", &end)).await;
                return;
            }
            let wait = tokio::time::sleep(LOG_POLL);
            tokio::select! {
                _ = wait => {}
                _ = state.live.closed() => return,
                _ = ended_event(&mut events, &job) => {}
            }
            if sender.is_closed() {
                return;
            }
            match state.jobs.get(&job.id).await {
                Ok(Some(now)) => job = now,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "following a log: job store unavailable")
                }
            }
        }
    });
    Sse::new(receiver.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}

/// Completes when the bus announces that `job` ended (a shortcut; the poll finds it too).
async fn ended_event(events: &mut tokio::sync::broadcast::Receiver<Arc<LiveEvent>>, job: &Job) {
    loop {
        match events.recv().await {
            Ok(e) if e.event.job_id == job.id && e.event.to.is_terminal() => return,
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// The whole object if it is longer than `sent` bytes; `None` if it is not (or missing).
async fn read_if_grown(state: &AppState, key: &str, sent: usize) -> Option<Vec<u8>> {
    let mut artifact = match state.artifacts.get(key).await {
        Ok(artifact) => artifact,
        Err(e) if e.kind == ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(key, error = %e, "following a log: artifact store unavailable");
            return None;
        }
    };
    if artifact.len as usize <= sent {
        return None;
    }
    let mut bytes = Vec::with_capacity(artifact.len as usize);
    match artifact.body.read_to_end(&mut bytes).await {
        Ok(_) => Some(bytes),
        Err(e) => {
            tracing::warn!(key, error = %e, "following a log: reading failed");
            None
        }
    }
}

/// The text of `bytes` and how many bytes it used: while the log may still grow, an
/// incomplete UTF-8 sequence at the end waits for the rest; invalid bytes become U+FFFD.
pub fn complete_text(bytes: &[u8], last: bool) -> (String, usize) {
    let mut cut = bytes.len();
    if !last {
        for back in 1..=bytes.len().min(3) {
            let b = bytes[bytes.len() - back];
            if b & 0xC0 == 0x80 {
                continue; // a continuation byte: look further back for the sequence's start
            }
            let needs = match b {
                0xF8.. => 1, // never valid: let the lossy conversion mark it
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            if back < needs {
                cut = bytes.len() - back;
            }
            break;
        }
    }
    (String::from_utf8_lossy(&bytes[..cut]).into_owned(), cut)
}

/// The observation history for charts: oldest first, either the newest `limit` or the
/// first `limit` after `since`.
#[utoipa::path(
    get,
    path = "/api/v1/observations",
    tag = "live",
    params(ObservationQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<ObservationView>),
        (status = 400, description = "malformed query", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, description = "the observation store is unavailable", body = ErrorBody),
    )
)]
pub async fn observations(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    ApiQuery(query): ApiQuery<ObservationQuery>,
) -> Result<Json<Vec<ObservationView>>, ApiError> {
    let limit = query
        .limit
        .unwrap_or(DEFAULT_OBSERVATIONS)
        .clamp(1, MAX_OBSERVATIONS);
    let found = state
        .observations
        .history(query.since, limit)
        .await
        .or_api("the observation store")?;
    Ok(Json(found.into_iter().map(Into::into).collect()))
}

#[cfg(test)]
mod tests {
    use super::complete_text;

    #[test]
    fn an_incomplete_character_waits_for_the_rest_of_the_log() {
        let text = "añ€😀".as_bytes();
        for cut in 0..=text.len() {
            let (first, used) = complete_text(&text[..cut], false);
            let (rest, _) = complete_text(&text[used..], true);
            assert_eq!(format!("{first}{rest}"), "añ€😀", "cut at {cut}");
            assert!(!first.contains('\u{FFFD}'), "cut at {cut}");
        }
        assert_eq!(complete_text(b"ok\xff", false), ("ok\u{FFFD}".into(), 3));
        assert_eq!(complete_text("é".as_bytes(), true).1, 2);
    }
}
