//! Live views: every job event this frontend process sees, numbered and fanned out to the
//! Server-Sent-Events clients of `/api/v1/events` and `/api/v1/jobs/{id}/logs?follow=true`.
//!
//! One source feeds it per process — the in-process bus in `jobq standalone`, one Kafka
//! follower of `job-events` in `jobq frontend` — so a thousand browsers cost one consumer,
//! not a thousand. Each event is stored with its owner (looked up once per job and cached),
//! so a stream filters by the ownership rule without asking the store. The newest
//! [`REPLAY`] events are kept for `Last-Event-ID`: a client that reconnects to the same
//! process gets what it missed; one whose id is older, or from another process, is told to
//! reload (`reset`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use jobq_common::domain::{JobEvent, JobId};
use jobq_common::embedded::bus::{BusMessage, InProcessBus};
use jobq_common::ports::JobLookup;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Events kept for clients that resume with `Last-Event-ID`.
pub const REPLAY: usize = 4096;
/// Job owners remembered before the cache starts afresh.
const OWNER_CACHE: usize = 100_000;

/// A job event with its place in this process's sequence and its owner.
#[derive(Debug)]
pub struct LiveEvent {
    pub seq: u64,
    /// `None` when the store could not tell (only admins see such an event).
    pub owner: Option<String>,
    pub event: JobEvent,
}

/// How a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// No `Last-Event-ID`: from now on.
    Fresh,
    /// Every event after the client's last one follows.
    Resumed,
    /// The client's last event is no longer kept (or came from another process): it has
    /// missed events and should reload what it shows.
    Gap,
}

/// A client's view of the live events.
#[derive(Debug)]
pub struct Subscription {
    pub resume: Resume,
    /// Kept events after the client's last one, oldest first.
    pub replay: Vec<Arc<LiveEvent>>,
    pub receiver: broadcast::Receiver<Arc<LiveEvent>>,
}

#[derive(Debug)]
struct Recent {
    next: u64,
    events: VecDeque<Arc<LiveEvent>>,
}

#[derive(Debug)]
struct Inner {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    recent: Mutex<Recent>,
    /// Distinguishes this process's event ids from another's (or an earlier run's).
    epoch: String,
    owners: Mutex<HashMap<JobId, String>>,
    closing: CancellationToken,
}

/// The fan-out of live job events. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct LiveEvents {
    inner: Arc<Inner>,
}

impl Default for LiveEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveEvents {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(1024);
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        Self {
            inner: Arc::new(Inner {
                sender,
                recent: Mutex::new(Recent {
                    next: 1,
                    events: VecDeque::with_capacity(REPLAY),
                }),
                epoch,
                owners: Mutex::new(HashMap::new()),
                closing: CancellationToken::new(),
            }),
        }
    }

    /// The SSE id of an event: `<epoch>-<seq>`.
    pub fn event_id(&self, event: &LiveEvent) -> String {
        format!("{}-{}", self.inner.epoch, event.seq)
    }

    /// Subscribes; with the client's `Last-Event-ID`, the kept events after it come first.
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Subscription {
        let recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Subscribing under the lock that publishing holds: every event is either in the
        // replay or on the receiver, never both, never neither.
        let receiver = self.inner.sender.subscribe();
        let Some(last) = last_event_id else {
            return Subscription {
                resume: Resume::Fresh,
                replay: Vec::new(),
                receiver,
            };
        };
        let seq = last
            .rsplit_once('-')
            .filter(|(epoch, _)| *epoch == self.inner.epoch)
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .filter(|seq| *seq < recent.next);
        let oldest = recent.events.front().map_or(recent.next, |e| e.seq);
        match seq {
            Some(seq) if seq + 1 >= oldest => Subscription {
                resume: Resume::Resumed,
                replay: recent
                    .events
                    .iter()
                    .filter(|e| e.seq > seq)
                    .cloned()
                    .collect(),
                receiver,
            },
            _ => Subscription {
                resume: Resume::Gap,
                replay: Vec::new(),
                receiver,
            },
        }
    }

    /// Numbers an event, keeps it for resuming clients and sends it to every subscriber.
    pub fn publish(&self, owner: Option<String>, event: JobEvent) {
        let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        let live = Arc::new(LiveEvent {
            seq: recent.next,
            owner,
            event,
        });
        recent.next += 1;
        if recent.events.len() == REPLAY {
            recent.events.pop_front();
        }
        recent.events.push_back(live.clone());
        // No subscriber is fine: nobody is watching.
        let _ = self.inner.sender.send(live);
    }

    /// Remembers who owns a job, so its events need no store lookup (the frontend that
    /// accepted the job knows).
    pub fn remember_owner(&self, id: &JobId, owner: &str) {
        let mut owners = self.inner.owners.lock().unwrap_or_else(|e| e.into_inner());
        if owners.len() >= OWNER_CACHE {
            owners.clear();
        }
        owners.insert(id.clone(), owner.to_string());
    }

    async fn owner_of(&self, jobs: &dyn JobLookup, id: &JobId) -> Option<String> {
        if let Some(owner) = self
            .inner
            .owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Some(owner.clone());
        }
        match jobs.get(id).await {
            Ok(Some(job)) => {
                self.remember_owner(id, &job.owner);
                Some(job.owner)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "cannot look up a job's owner for live views");
                None
            }
        }
    }

    /// Publishes every event of `source` with its owner until the source ends or
    /// [`close`](Self::close) is called.
    pub fn spawn_feed(
        &self,
        jobs: Arc<dyn JobLookup>,
        mut source: mpsc::Receiver<JobEvent>,
    ) -> tokio::task::JoinHandle<()> {
        let live = self.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = live.inner.closing.cancelled() => return,
                    event = source.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                let owner = live.owner_of(jobs.as_ref(), &event.job_id).await;
                live.publish(owner, event);
            }
        })
    }

    /// Ends every live stream (the server is shutting down and waits for open requests).
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// Completes when [`close`](Self::close) was called.
    pub async fn closed(&self) {
        self.inner.closing.cancelled().await;
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closing.is_cancelled()
    }
}

/// The job events of the in-process bus, as a feed for [`LiveEvents::spawn_feed`].
pub fn bus_feed(bus: &InProcessBus) -> mpsc::Receiver<JobEvent> {
    let mut events = bus.subscribe();
    let (sender, receiver) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(BusMessage::Job(event)) => {
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                Ok(BusMessage::Observation(_)) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "live views fell behind the event bus");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobq_common::domain::JobStatus;
    use time::OffsetDateTime;

    fn event(to: JobStatus) -> JobEvent {
        JobEvent {
            job_id: JobId::new(),
            attempt: 1,
            from: None,
            to,
            at: OffsetDateTime::now_utc(),
            worker: None,
            elapsed_ms: None,
            waited_ms: None,
            repo: None,
            has_deadline: false,
            deadline_at_risk: None,
        }
    }

    #[test]
    fn a_client_that_reconnects_gets_the_events_it_missed() {
        let live = LiveEvents::new();
        live.publish(Some("a".into()), event(JobStatus::Queued));
        let first = live.subscribe(None);
        assert_eq!(first.resume, Resume::Fresh);
        live.publish(Some("a".into()), event(JobStatus::Running));
        let seen = live.inner.recent.lock().unwrap().events[1].clone();
        live.publish(Some("a".into()), event(JobStatus::Finished));
        live.publish(Some("b".into()), event(JobStatus::Queued));
        let again = live.subscribe(Some(&live.event_id(&seen)));
        assert_eq!(again.resume, Resume::Resumed);
        let tos: Vec<_> = again.replay.iter().map(|e| e.event.to).collect();
        assert_eq!(tos, [JobStatus::Finished, JobStatus::Queued]);
    }

    #[test]
    fn an_unknown_or_foreign_last_event_id_is_a_gap() {
        let live = LiveEvents::new();
        live.publish(None, event(JobStatus::Queued));
        for id in [
            "0000-1",
            "nonsense",
            "",
            &format!("{}-99", live.inner.epoch),
        ] {
            assert_eq!(live.subscribe(Some(id)).resume, Resume::Gap, "{id:?}");
        }
    }

    #[test]
    fn events_older_than_the_replay_window_are_a_gap() {
        let live = LiveEvents::new();
        for _ in 0..REPLAY + 10 {
            live.publish(None, event(JobStatus::Queued));
        }
        let old = format!("{}-3", live.inner.epoch);
        assert_eq!(live.subscribe(Some(&old)).resume, Resume::Gap);
        let recent = format!("{}-{}", live.inner.epoch, REPLAY + 5);
        let sub = live.subscribe(Some(&recent));
        assert_eq!(sub.resume, Resume::Resumed);
        assert_eq!(sub.replay.len(), 5);
    }
}
