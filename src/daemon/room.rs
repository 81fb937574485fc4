//! How many messages the daemon may hold between asking SQS for them and
//! the end of their POST: the room. A poller takes room before it receives
//! (one place per message asked for), and each received message keeps its
//! place until its delivery ends; places a receive did not fill go back at
//! once. With the room as large as `http_connections`, the daemon never
//! holds a message it has no free connection for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The room; see the module documentation.
#[derive(Debug)]
pub struct Room {
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Debug)]
struct State {
    used: usize,
    size: usize,
}

/// One message's place in the room; given back when dropped.
#[derive(Debug)]
pub struct Place {
    room: Arc<Room>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.room.give_back(1);
    }
}

impl Room {
    pub fn new(size: usize) -> Arc<Room> {
        Arc::new(Room {
            state: Mutex::new(State { used: 0, size }),
            freed: Notify::new(),
        })
    }

    /// Places taken now.
    pub fn used(&self) -> usize {
        self.state.lock().map(|s| s.used).unwrap_or(0)
    }

    /// Takes at most `max` places: waits for one, then gathers more for up
    /// to `gather`, so a busy daemon asks SQS for full batches.
    pub async fn take(&self, max: usize, gather: Duration) -> usize {
        let mut taken = self.wait_for_some(max).await;
        let deadline = Instant::now() + gather;
        while taken < max {
            let notified = self.freed.notified();
            taken += self.try_take(max - taken);
            if taken >= max {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                taken += self.try_take(max - taken);
                break;
            }
        }
        taken
    }

    async fn wait_for_some(&self, max: usize) -> usize {
        loop {
            let notified = self.freed.notified();
            let n = self.try_take(max);
            if n > 0 {
                return n;
            }
            notified.await;
        }
    }

    fn try_take(&self, max: usize) -> usize {
        let Ok(mut s) = self.state.lock() else {
            return 0;
        };
        let n = s.size.saturating_sub(s.used).min(max);
        s.used += n;
        n
    }

    /// Gives back `n` places taken with [`Room::take`].
    pub fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.used = s.used.saturating_sub(n);
        }
        self.freed.notify_waiters();
    }

    /// Turns one place taken with [`Room::take`] into a [`Place`].
    pub fn place(self: &Arc<Room>) -> Place {
        Place { room: self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn takes_what_is_free_and_gathers_what_frees_up() {
        let room = Room::new(10);
        assert_eq!(room.take(4, Duration::ZERO).await, 4);
        assert_eq!(room.take(10, Duration::ZERO).await, 6);
        assert_eq!(room.used(), 10);
        let r = room.clone();
        let waiter = tokio::spawn(async move { r.take(5, Duration::from_millis(20)).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished(), "took a place from a full room");
        room.give_back(2);
        tokio::time::sleep(Duration::from_millis(5)).await;
        room.give_back(1);
        assert_eq!(waiter.await.unwrap(), 3);
        assert_eq!(room.used(), 10);
    }

    #[tokio::test]
    async fn a_place_is_given_back_when_dropped() {
        let room = Room::new(2);
        assert_eq!(room.take(2, Duration::ZERO).await, 2);
        let places = [room.place(), room.place()];
        drop(places);
        assert_eq!(room.used(), 0);
    }
}
