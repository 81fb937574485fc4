//! The receive loop. A poller takes room for the messages it asks for (see
//! [`super::room`]), long-polls SQS, hands every message it gets to the
//! settler (which keeps it invisible from this moment until it is settled),
//! and starts its delivery. Messages of one FIFO group go to a single task
//! that delivers them in order. Several pollers run when `http_connections`
//! exceeds one batch. A poller receives nothing while the application is
//! unavailable (the [`Gate`]), and under a rate limit no more than can
//! start within about a second (the [`Pacer`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deliver::{Dispatcher, Held};
use super::gate::Gate;
use super::message::Incoming;
use super::pace::{Pacer, HORIZON};
use super::room::Room;
use crate::admin::health::Health;
use crate::aws::sqs_json::Received;
use crate::aws::{Queue, MAX_BATCH};
use crate::time::Backoff;

/// How long a poller holding some room waits for more before polling, so a
/// busy daemon asks for full batches instead of one message at a time.
const GATHER_WINDOW: Duration = Duration::from_millis(20);

/// How many pollers `http_connections` needs.
pub fn poller_count(http_connections: usize) -> usize {
    http_connections.div_ceil(MAX_BATCH).max(1)
}

/// How the messages of a receive are asked for and held.
#[derive(Clone, Copy, Debug)]
pub struct Visibility {
    /// `VisibilityTimeout` of each receive; `None` leaves the queue's own.
    pub receive_s: Option<u32>,
    /// The visibility a received message gets, in seconds: the lease.
    pub lease_s: u32,
    /// The visibility timeout in effect (`visibility_timeout`, or the
    /// queue's own): how long a message may be held in all before it is
    /// given back unsettled.
    pub timeout_s: u32,
}

impl Visibility {
    /// When a message received by an answer that came at `answered` becomes
    /// visible again, erring early: SQS started its timer a little before
    /// it answered.
    pub fn deadline(&self, answered: Instant) -> Instant {
        let lease = Duration::from_secs(u64::from(self.lease_s));
        answered + lease.saturating_sub(Duration::from_secs(1)).max(lease / 2)
    }
}

/// One receive loop.
pub struct Poller {
    pub queue: Queue,
    pub dispatcher: Arc<Dispatcher>,
    pub room: Arc<Room>,
    pub visibility: Visibility,
    pub health: Arc<Health>,
    /// Open while the application is available.
    pub gate: Arc<Gate>,
    /// The rate limit, when `max_rate` is set.
    pub pacer: Option<Arc<Pacer>>,
    pub deliveries: TaskTracker,
    /// Stop receiving, and give back what has not started.
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
            let room = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                n = async {
                    self.gate.opened().await;
                    self.room.take(MAX_BATCH, GATHER_WINDOW).await
                } => n,
            };
            // Counted before the gate is looked at again: a receive that
            // starts as the application goes down is waited for before
            // messages are given back (see `Gate::receives_idle`).
            let receiving = self.gate.receiving();
            if !self.gate.is_open() {
                self.room.give_back(room);
                continue;
            }
            let Some(room) = self.claim_starts(room).await else {
                return;
            };
            // The application went down while this poller waited for its
            // turn: receive nothing.
            if room == 0 || !self.gate.is_open() {
                self.room.give_back(room);
                self.book_starts(room, 0);
                continue;
            }
            tracing::debug!(max = room, long, "receiving");
            let received = tokio::select! {
                biased;
                // A receive in flight is not cut on shutdown: SQS may already
                // have picked messages for it, which would then stay hidden
                // for their lease. It finishes, and what it brings is given
                // back at once; only the drain deadline cuts it.
                _ = self.cut_receive.cancelled() => {
                    self.room.give_back(room);
                    self.book_starts(room, 0);
                    return;
                }
                r = self.queue.receive(room, self.visibility.receive_s, long) => r,
            };
            let answered = Instant::now();
            drop(receiving);
            match received {
                Ok(received) => {
                    if backoff.failures() > 0 {
                        tracing::info!("SQS is answering again");
                    }
                    backoff.reset();
                    long = true;
                    self.health.receive_ok();
                    let messages = incoming(received);
                    // SQS never sends more than asked; if it did, the extra
                    // messages have no room and go straight back.
                    let unused = room.saturating_sub(messages.len());
                    self.room.give_back(unused);
                    let starts = self.book_starts(room, messages.len().min(room));
                    self.dispatch(messages, room, answered, starts);
                }
                Err(e) => {
                    self.room.give_back(room);
                    self.book_starts(room, 0);
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

    /// Under a rate limit, narrows `room` to the starts that fall within
    /// the horizon, waiting until there is at least one, and gives back the
    /// rest of the room. `None` when the daemon stops meanwhile.
    async fn claim_starts(&self, room: usize) -> Option<usize> {
        let Some(pacer) = &self.pacer else {
            return Some(room);
        };
        loop {
            match pacer.claim(room, HORIZON, Instant::now()) {
                Ok(claimed) => {
                    self.room.give_back(room - claimed);
                    return Some(claimed);
                }
                Err(wait) => {
                    tokio::select! {
                        _ = self.stop.cancelled() => {
                            self.room.give_back(room);
                            return None;
                        }
                        _ = self.gate.closed() => {
                            self.room.give_back(room);
                            return Some(0);
                        }
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Ends the claim of `claimed` starts: books one for each of the `got`
    /// messages received (their turns, in order) and frees the rest.
    fn book_starts(&self, claimed: usize, got: usize) -> Vec<Instant> {
        match &self.pacer {
            Some(pacer) => pacer.book(claimed, got, Instant::now()),
            None => Vec::new(),
        }
    }

    /// Hands every message to the settler, then starts deliveries: one task
    /// per message, or per FIFO group (in the order received), each at its
    /// turn in `starts` when there is a rate limit.
    fn dispatch(
        &self,
        messages: Vec<Incoming>,
        room: usize,
        answered: Instant,
        starts: Vec<Instant>,
    ) {
        let dispatcher = &self.dispatcher;
        dispatcher.metrics.received.inc_by(messages.len() as u64);
        let deadline = self.visibility.deadline(answered);
        let mut groups: Vec<(Option<String>, Vec<Held>)> = Vec::new();
        for (i, mut msg) in messages.into_iter().enumerate() {
            let handle = std::mem::take(&mut msg.receipt_handle);
            msg.key = dispatcher.settler.hold(&msg.id, handle, answered, deadline);
            msg.received = Some(answered);
            if i >= room {
                dispatcher.give_back(&msg, "more messages than asked for");
                continue;
            }
            let held = Held {
                place: self.room.place(),
                msg,
                start_at: starts.get(i).copied(),
            };
            if self.stop.is_cancelled() {
                dispatcher.give_back(&held.msg, "shutting down");
                continue;
            }
            match &held.msg.group_id {
                Some(g) => match groups.iter_mut().find(|(name, _)| name.as_ref() == Some(g)) {
                    Some((_, list)) => list.push(held),
                    None => groups.push((Some(g.clone()), vec![held])),
                },
                None => groups.push((None, vec![held])),
            }
        }
        for (_, list) in groups {
            let dispatcher = self.dispatcher.clone();
            let stop = self.stop.clone();
            let abort = self.abort.clone();
            self.deliveries.spawn(async move {
                dispatcher.deliver_in_order(list, &stop, &abort).await;
            });
        }
    }
}

/// The messages of one receive, each stamped with the time SQS answered on
/// SQS's clock, on which their retention is judged.
fn incoming(received: Received) -> Vec<Incoming> {
    let sqs_date_ms = received.sqs_date_ms;
    received
        .messages
        .into_iter()
        .map(|m| Incoming {
            sqs_received_ms: sqs_date_ms,
            ..Incoming::from(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::sqs_json::WireMessage;

    #[test]
    fn received_messages_carry_the_time_sqs_answered() {
        let received = Received {
            messages: vec![WireMessage::default(), WireMessage::default()],
            sqs_date_ms: Some(1_795_000_000_000),
        };
        let messages = incoming(received);
        assert_eq!(messages.len(), 2);
        for m in &messages {
            assert_eq!(m.sqs_received_ms, Some(1_795_000_000_000));
        }
        let undated = incoming(Received {
            messages: vec![WireMessage::default()],
            sqs_date_ms: None,
        });
        assert_eq!(undated[0].sqs_received_ms, None);
    }

    #[test]
    fn enough_pollers_to_fill_every_connection() {
        assert_eq!(poller_count(1), 1);
        assert_eq!(poller_count(10), 1);
        assert_eq!(poller_count(11), 2);
        assert_eq!(poller_count(50), 5);
        assert_eq!(poller_count(1000), 100);
    }

    #[test]
    fn a_message_is_taken_as_visible_again_a_little_before_its_lease_ends() {
        let v = Visibility {
            receive_s: Some(30),
            lease_s: 30,
            timeout_s: 300,
        };
        let t = Instant::now();
        assert_eq!(v.deadline(t), t + Duration::from_secs(29));
        let short = Visibility {
            receive_s: Some(1),
            lease_s: 1,
            timeout_s: 1,
        };
        assert_eq!(short.deadline(t), t + Duration::from_millis(500));
    }
}
