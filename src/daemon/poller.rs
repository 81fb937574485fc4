//! The receive loop. Each poller first takes connection slots (semaphore
//! permits), then long-polls for at most that many messages, and hands one
//! slot to each message's delivery task: the daemon never holds a message it
//! has no free connection for, and never runs more than `http_connections`
//! POSTs. Several pollers run when `http_connections` exceeds one batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deliver::Dispatcher;
use super::message::Incoming;
use crate::admin::health::Health;
use crate::aws::{Queue, MAX_BATCH};
use crate::time::Backoff;

/// How long a poller holding some free slots waits for more before polling,
/// so a busy daemon asks for full batches instead of one message at a time.
const GATHER_WINDOW: Duration = Duration::from_millis(20);

/// How many pollers `http_connections` needs.
pub fn poller_count(http_connections: usize) -> usize {
    http_connections.div_ceil(MAX_BATCH).max(1)
}

/// One receive loop.
pub struct Poller {
    pub queue: Queue,
    pub dispatcher: Arc<Dispatcher>,
    pub slots: Arc<Semaphore>,
    pub per_poll: usize,
    pub visibility_s: u32,
    pub health: Arc<Health>,
    pub deliveries: TaskTracker,
    /// Stop receiving.
    pub stop: CancellationToken,
    /// Abandon deliveries (drain timeout passed).
    pub abort: CancellationToken,
    /// Cut a receive in flight: the drain deadline, or shutdown itself when
    /// open polls need not be waited for.
    pub cut_receive: CancellationToken,
}

impl Poller {
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        // The first poll, and the first after an error, return at once, so
        // readiness reflects SQS without waiting out a 20 s long poll.
        let mut long = false;
        loop {
            let slots = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                slots = self.take_slots() => slots,
            };
            let Some(slots) = slots else { return };
            tracing::debug!(max = slots.num_permits(), long, "receiving");
            let received = tokio::select! {
                biased;
                // A receive in flight is not cut on shutdown: SQS may already
                // have picked messages for it, which would then stay hidden
                // for the visibility timeout. It finishes, and what it brings
                // is given back at once; only the drain deadline cuts it.
                _ = self.cut_receive.cancelled() => return,
                r = self.queue.receive(slots.num_permits(), self.visibility_s, long) => r,
            };
            match received {
                Ok(received) => {
                    if backoff.failures() > 0 {
                        tracing::info!("SQS is answering again");
                    }
                    backoff.reset();
                    long = true;
                    self.health.receive_ok();
                    let messages = received.messages.into_iter().map(Incoming::from);
                    self.dispatch(messages.collect(), slots);
                }
                Err(e) => {
                    drop(slots);
                    long = false;
                    self.health.receive_failed(&e.message);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                        failures = backoff.failures(), "receive from SQS failed");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Waits for one free slot, then gathers up to `per_poll` of them.
    async fn take_slots(&self) -> Option<OwnedSemaphorePermit> {
        let mut slots = self.slots.clone().acquire_owned().await.ok()?;
        let deadline = Instant::now() + GATHER_WINDOW;
        while slots.num_permits() < self.per_poll {
            if let Ok(more) = self.slots.clone().try_acquire_owned() {
                slots.merge(more);
                continue;
            }
            match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
                Ok(Ok(more)) => slots.merge(more),
                _ => break,
            }
        }
        Some(slots)
    }

    /// Starts a delivery per message, each with one slot. Messages of one
    /// FIFO group go to a single task that delivers them in order; after a
    /// failure it gives the rest of the group back undelivered, so SQS
    /// keeps the group's order.
    fn dispatch(&self, messages: Vec<Incoming>, mut slots: OwnedSemaphorePermit) {
        self.dispatcher
            .metrics
            .received
            .inc_by(messages.len() as u64);
        let mut groups: Vec<(String, Vec<(Incoming, OwnedSemaphorePermit)>)> = Vec::new();
        for msg in messages {
            let slot = if self.stop.is_cancelled() {
                None
            } else {
                slots.split(1)
            };
            let Some(slot) = slot else {
                // Shutting down (or SQS sent more than asked): give it back now.
                self.dispatcher.give_back(&msg, "not started");
                continue;
            };
            match msg.group_id.clone() {
                Some(g) => match groups.iter_mut().find(|(name, _)| *name == g) {
                    Some((_, list)) => list.push((msg, slot)),
                    None => groups.push((g, vec![(msg, slot)])),
                },
                None => groups.push((String::new(), vec![(msg, slot)])),
            }
        }
        for (_, list) in groups {
            let dispatcher = self.dispatcher.clone();
            let abort = self.abort.clone();
            self.deliveries.spawn(async move {
                let mut failed = false;
                for (msg, slot) in list {
                    if failed {
                        dispatcher.give_back(&msg, "an earlier message of its group failed");
                    } else {
                        failed = !dispatcher.handle(msg, &abort).await;
                    }
                    drop(slot);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_pollers_to_fill_every_connection() {
        assert_eq!(poller_count(1), 1);
        assert_eq!(poller_count(10), 1);
        assert_eq!(poller_count(11), 2);
        assert_eq!(poller_count(50), 5);
        assert_eq!(poller_count(1000), 100);
    }
}
