//! The event bus and dispatch queue inside one process, for `jobq standalone`: events go to
//! a broadcast channel (the observer and live views subscribe); a dispatch only wakes idle
//! workers, because the store itself is the queue there.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};

use crate::domain::{Dispatch, JobEvent, Observation};
use crate::error::PortResult;
use crate::ports::{DispatchQueue, EventBus, Intake, Offer};

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

/// The in-process intake: a wake-up whenever a job is dispatched (and every second, in
/// case one was missed); the worker then takes the oldest queued job from the store.
pub struct BusIntake {
    bus: Arc<InProcessBus>,
}

impl BusIntake {
    pub fn new(bus: Arc<InProcessBus>) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl Intake for BusIntake {
    type Ticket = ();

    async fn next(&mut self) -> Offer<()> {
        tokio::select! {
            _ = self.bus.work_available() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        Offer::Wake
    }

    fn settle(&mut self, _: &()) {}

    fn again(&mut self, _: &()) {}

    fn hold(&mut self, _: bool) {}

    fn claim_waiting_after(&self) -> Duration {
        Duration::ZERO
    }

    fn look_max(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn close(&mut self) {}
}
