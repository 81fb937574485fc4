//! When another daemon's hold on a tick counts as abandoned, judged on this
//! daemon's own monotonic clock.
//!
//! The holder raises the record's version with every write (at least every
//! [`RENEW_AT_LEAST_EVERY`] while it is working on the tick). A watcher
//! notes, on its own `Instant` clock, when it first saw a record exactly as
//! it is (holder, version, phase); a record seen unchanged for [`LEASE`] is
//! stale. No wall-clock times of two hosts are ever compared, so clock skew
//! between daemons cannot end a lease early. A stale record only allows an
//! attempt to take it over: the takeover is a conditional write on exactly
//! what was seen, so a holder that renewed meanwhile keeps its tick.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::claims::Record;
use super::tick::Phase;

/// How long a record must stay unchanged, as seen by another daemon, before
/// that daemon may take the tick over.
pub const LEASE: Duration = Duration::from_secs(45);
/// The holder's longest pause between two writes while it works on a tick
/// (its retry backoff is capped below this), a third of the lease.
pub const RENEW_AT_LEAST_EVERY: Duration = Duration::from_secs(15);
const _: () = assert!(RENEW_AT_LEAST_EVERY.as_secs() * 3 <= LEASE.as_secs());

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    claimed_by: String,
    version: i64,
    phase: Phase,
    since: Instant,
}

/// The tick records of other daemons this daemon is watching.
#[derive(Debug, Default)]
pub struct LeaseWatch {
    seen: HashMap<(String, i64), Seen>,
}

impl LeaseWatch {
    /// Whether `record` of `task` has stayed exactly as it is for at least
    /// [`LEASE`] of this daemon's time. The first sighting starts the count.
    pub fn stale(&mut self, task: &str, record: &Record, now: Instant) -> bool {
        if record.phase == Phase::Sent {
            self.seen.remove(&(task.to_string(), record.tick));
            return false;
        }
        let key = (task.to_string(), record.tick);
        let current = Seen {
            claimed_by: record.claimed_by.clone(),
            version: record.version,
            phase: record.phase,
            since: now,
        };
        match self.seen.get(&key) {
            Some(s)
                if s.claimed_by == current.claimed_by
                    && s.version == current.version
                    && s.phase == current.phase =>
            {
                now.saturating_duration_since(s.since) >= LEASE
            }
            _ => {
                self.seen.insert(key, current);
                false
            }
        }
    }

    /// Stops watching ticks of `task` before `tick` (out of every window).
    pub fn forget_before(&mut self, task: &str, tick: i64) {
        self.seen.retain(|(t, at), _| t != task || *at >= tick);
    }

    /// How many records are watched.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(by: &str, version: i64, phase: Phase) -> Record {
        Record {
            tick: 1_700_000_000,
            claimed_by: by.into(),
            phase,
            version,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_is_stale_after_a_lease_unchanged_on_the_watchers_clock() {
        let mut watch = LeaseWatch::default();
        let r = rec("a", 1, Phase::Claimed);
        assert!(!watch.stale("t", &r, Instant::now()), "first sighting");
        tokio::time::advance(LEASE - Duration::from_millis(1)).await;
        assert!(!watch.stale("t", &r, Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(watch.stale("t", &r, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn every_renewal_restarts_the_count() {
        let mut watch = LeaseWatch::default();
        let mut version = 1;
        assert!(!watch.stale("t", &rec("a", version, Phase::Claimed), Instant::now()));
        // The holder writes every RENEW_AT_LEAST_EVERY; ten leases pass.
        for _ in 0..30 {
            tokio::time::advance(RENEW_AT_LEAST_EVERY).await;
            version += 1;
            let r = rec("a", version, Phase::Claimed);
            assert!(
                !watch.stale("t", &r, Instant::now()),
                "renewed at v{version}"
            );
        }
        // A phase change or another holder is a change too.
        tokio::time::advance(LEASE).await;
        assert!(!watch.stale("t", &rec("a", version, Phase::Sending), Instant::now()));
        tokio::time::advance(LEASE).await;
        assert!(!watch.stale("t", &rec("b", version, Phase::Sending), Instant::now()));
        tokio::time::advance(LEASE).await;
        assert!(watch.stale("t", &rec("b", version, Phase::Sending), Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn sent_ticks_are_never_stale_and_old_ones_are_forgotten() {
        let mut watch = LeaseWatch::default();
        let sent = rec("a", 2, Phase::Sent);
        assert!(!watch.stale("t", &sent, Instant::now()));
        tokio::time::advance(LEASE * 10).await;
        assert!(!watch.stale("t", &sent, Instant::now()));
        assert!(watch.is_empty());

        let claimed = rec("a", 1, Phase::Claimed);
        watch.stale("t", &claimed, Instant::now());
        watch.stale("other", &claimed, Instant::now());
        assert_eq!(watch.len(), 2);
        watch.forget_before("t", claimed.tick + 1);
        assert_eq!(watch.len(), 1, "only task t's old tick is forgotten");
    }
}
