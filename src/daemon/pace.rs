//! The rate limit (`max_rate`): when each delivery may start, and how many
//! messages a poller may receive so that none waits long for its turn.
//!
//! Starts are spaced `1 / max_rate` apart on average (a "generic cell rate"
//! schedule): each message gets the next free start time, and an idle
//! daemon may start a small burst at once. A poller first claims the starts
//! that fall within [`HORIZON`], receives at most that many messages, and
//! then books one start per message it got; claims of concurrent pollers
//! count against each other, so together they never receive more than can
//! start soon. Messages therefore wait their turn for about a second, never
//! for their lease.
//!
//! Time is passed in, so the arithmetic is tested without a clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How far ahead a poller receives for: messages it gets start within
/// about this long.
pub const HORIZON: Duration = Duration::from_secs(1);

/// The start schedule; see the module documentation.
#[derive(Debug)]
pub struct Pacer {
    /// Time between starts.
    interval: Duration,
    /// How far ahead of the schedule a start may come: the burst, less one.
    tolerance: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the next start falls due on the schedule (the "theoretical
    /// arrival time"); in the past when the daemon has been idle.
    next: Instant,
    /// Starts claimed by pollers whose receives are under way.
    claimed: usize,
}

impl Pacer {
    /// A schedule of `rate` starts per second (> 0) with bursts of at most
    /// `burst` (≥ 1) starts at once.
    pub fn new(rate: f64, burst: usize, now: Instant) -> Pacer {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
        let tolerance = interval.saturating_mul(burst.max(1).saturating_sub(1) as u32);
        Pacer {
            interval,
            tolerance,
            state: Mutex::new(State {
                next: now,
                claimed: 0,
            }),
        }
    }

    /// The burst for `rate` and `http_connections`: a tenth of a second's
    /// worth of starts, at least one and at most `http_connections`, so the
    /// rate holds over any second while a busy application is never kept
    /// waiting between single starts.
    pub fn burst_for(rate: f64, http_connections: usize) -> usize {
        let tenth = (rate / 10.0).ceil();
        let tenth = if tenth.is_finite() && tenth >= 1.0 {
            tenth.min(1e6) as usize
        } else {
            1
        };
        tenth.clamp(1, http_connections.max(1))
    }

    /// Claims up to `want` starts that fall within `horizon` of `now` and
    /// are not already booked or claimed. `Err(wait)` when there is none:
    /// ask again after `wait`.
    pub fn claim(&self, want: usize, horizon: Duration, now: Instant) -> Result<usize, Duration> {
        let mut state = self.lock();
        // The first start still open, and the last moment within reach.
        let first = state
            .next
            .max(now)
            .checked_sub(self.tolerance)
            .unwrap_or(now);
        let reach = now + horizon;
        if first > reach {
            return Err(first - reach);
        }
        let open = 1 + ((reach - first).as_nanos() / self.interval.as_nanos().max(1)) as usize;
        let free = open.saturating_sub(state.claimed);
        if free == 0 {
            // The claims under way end with their receives; look again soon.
            return Err(self.interval.min(horizon).max(Duration::from_millis(10)));
        }
        let got = free.min(want);
        state.claimed += got;
        Ok(got)
    }

    /// Ends a claim of `claimed` starts whose receive brought `got`
    /// messages: books one start per message, in order, and frees the
    /// rest. Returns each message's start time.
    pub fn book(&self, claimed: usize, got: usize, now: Instant) -> Vec<Instant> {
        let mut state = self.lock();
        state.claimed = state.claimed.saturating_sub(claimed);
        (0..got)
            .map(|_| {
                let due = state.next.max(now);
                let start = due.checked_sub(self.tolerance).unwrap_or(now).max(now);
                state.next = due + self.interval;
                start
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two numbers, valid whatever a panicking holder did.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs a daemon that receives greedily for `seconds`, starting every
    /// message at its booked time; the start times.
    fn simulate(rate: f64, burst: usize, seconds: u64) -> Vec<Duration> {
        let t0 = Instant::now();
        let pacer = Pacer::new(rate, burst, t0);
        let mut now = t0;
        let mut starts = Vec::new();
        while now < t0 + Duration::from_secs(seconds) {
            match pacer.claim(10, HORIZON, now) {
                Ok(n) => {
                    let booked = pacer.book(n, n, now);
                    assert_eq!(booked.len(), n);
                    starts.extend(booked.into_iter().map(|s| s - t0));
                    now += MS;
                }
                Err(wait) => {
                    assert!(wait > Duration::ZERO);
                    now += wait;
                }
            }
        }
        starts
    }

    #[test]
    fn starts_are_spaced_by_the_rate() {
        let starts = simulate(20.0, 2, 10);
        let in_10s = starts
            .iter()
            .filter(|s| **s < Duration::from_secs(10))
            .count();
        // 20/s for 10 s, plus the burst of 2 at the start.
        assert!((200..=202).contains(&in_10s), "{in_10s}");
        // No second holds more than the rate plus the burst.
        for second in 0..10 {
            let lo = Duration::from_secs(second);
            let n = starts
                .iter()
                .filter(|s| **s >= lo && **s < lo + Duration::from_secs(1))
                .count();
            assert!(n <= 22, "second {second}: {n}");
        }
    }

    #[test]
    fn a_poller_receives_only_what_starts_within_the_horizon() {
        let t0 = Instant::now();
        let pacer = Pacer::new(2.0, 1, t0);
        // 2/s: starts at 0, 0.5 and 1.0 s fall within one second.
        assert_eq!(pacer.claim(10, HORIZON, t0), Ok(3));
        // A second poller finds them claimed.
        assert!(pacer.claim(10, HORIZON, t0).is_err());
        // The first receive brought one message: the other two are free.
        assert_eq!(pacer.book(3, 1, t0), vec![t0]);
        assert_eq!(pacer.claim(10, HORIZON, t0), Ok(2));
        let booked = pacer.book(2, 2, t0);
        assert_eq!(booked, vec![t0 + 500 * MS, t0 + 1000 * MS]);
        // Now the next start is 1.5 s away: wait until it is within reach.
        assert_eq!(pacer.claim(10, HORIZON, t0), Err(500 * MS));
        assert_eq!(pacer.claim(10, HORIZON, t0 + 500 * MS), Ok(1));
    }

    #[test]
    fn an_idle_daemon_may_burst_but_no_more() {
        let t0 = Instant::now();
        let pacer = Pacer::new(100.0, 5, t0);
        let later = t0 + Duration::from_secs(60);
        let n = pacer.claim(1000, Duration::ZERO, later).unwrap();
        assert_eq!(n, 5);
        let booked = pacer.book(n, n, later);
        assert!(booked.iter().all(|s| *s == later), "{booked:?}");
        // The sixth waits its interval.
        assert_eq!(pacer.book(0, 1, later), vec![later + 10 * MS]);
    }

    #[test]
    fn the_burst_is_a_tenth_of_a_second_within_the_connections() {
        assert_eq!(Pacer::burst_for(20.0, 50), 2);
        assert_eq!(Pacer::burst_for(0.5, 50), 1);
        assert_eq!(Pacer::burst_for(1000.0, 50), 50);
        assert_eq!(Pacer::burst_for(1000.0, 10), 10);
        assert_eq!(Pacer::burst_for(f64::INFINITY, 4), 1);
    }
}
