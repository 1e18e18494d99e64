//! The event bus and dispatch queue inside one process, for `jobq standalone`: events go to
//! a broadcast channel (the observer and live views subscribe); a dispatch only wakes idle
//! workers, because the store itself is the queue there.

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};

use crate::domain::{Dispatch, JobEvent, Observation};
use crate::error::PortResult;
use crate::ports::{DispatchQueue, EventBus};

/// What travels on the in-process bus.
#[derive(Debug, Clone)]
pub enum BusMessage {
    Job(JobEvent),
    Observation(Observation),
}

/// [`EventBus`] and [`DispatchQueue`] in one process.
#[derive(Debug)]
pub struct InProcessBus {
    events: broadcast::Sender<BusMessage>,
    work: Notify,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(16 * 1024);
        Self {
            events,
            work: Notify::new(),
        }
    }

    /// A receiver of every message published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.events.subscribe()
    }

    /// Completes when a job was dispatched since the last call (or one is pending).
    pub async fn work_available(&self) {
        self.work.notified().await;
    }

    /// Wakes every idle worker (at start-up, after recovery).
    pub fn wake_all(&self) {
        self.work.notify_waiters();
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &JobEvent) -> PortResult<()> {
        // No subscriber is fine: nobody is watching.
        let _ = self.events.send(BusMessage::Job(event.clone()));
        Ok(())
    }

    async fn publish_observation(&self, observation: &Observation) -> PortResult<()> {
        let _ = self
            .events
            .send(BusMessage::Observation(observation.clone()));
        Ok(())
    }
}

#[async_trait]
impl DispatchQueue for InProcessBus {
    async fn dispatch(&self, _message: &Dispatch) -> PortResult<()> {
        self.work.notify_one();
        Ok(())
    }
}
