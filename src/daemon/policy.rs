//! Decisions that depend only on numbers and time: how to settle a POST's
//! outcome, how long a failed message waits (fixed or exponential backoff),
//! and whether a message has outlived the retention period. The current
//! time and the random jitter are passed in, so tests can fix them.

use std::time::Duration;

use crate::config::{RetryBackoff, SuccessCodes};

/// Longest visibility timeout SQS accepts, in seconds.
pub const MAX_VISIBILITY_S: u32 = 43_200;

/// What happened to one POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The application answered with this status.
    Status {
        status: u16,
        /// `Retry-After` in seconds, when the answer carried a usable one.
        retry_after_s: Option<u32>,
    },
    /// No connection within `connect_timeout`, refused or reset.
    ConnectFailed(String),
    /// No complete answer within `inactivity_timeout`.
    TimedOut,
    /// Any other transport failure.
    Failed(String),
    /// The message's path was refused; nothing was sent.
    Refused(String),
}

impl Outcome {
    /// Short label for metrics.
    pub fn label(&self, codes: SuccessCodes) -> &'static str {
        match self {
            Outcome::Status { status, .. } if codes.is_success(*status) => "success",
            Outcome::Status {
                status: 429,
                retry_after_s: Some(_),
            } => "retry_after",
            Outcome::Status { .. } => "http_error",
            Outcome::ConnectFailed(_) => "connect_error",
            Outcome::TimedOut => "timeout",
            Outcome::Failed(_) => "transport_error",
            Outcome::Refused(_) => "refused_path",
        }
    }
}

/// What to do with the message afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    Delete,
    /// Make it visible again after this many seconds.
    Retry(u32),
    /// The application answered with this status of `dead_letter_codes`:
    /// copy the message to the dead-letter queue, then delete it.
    DeadLetter(u16),
}

/// [`settle`], with `dead_letter_codes` (`dead_letters`) first: an answer
/// in the list means the message can never succeed. Success codes and 429
/// never dead-letter, whatever the list says (the configuration refuses
/// them too).
pub fn settle_or_dead_letter(
    outcome: &Outcome,
    codes: SuccessCodes,
    retry: Retry,
    receive_count: u32,
    unit: f64,
    dead_letters: &[u16],
) -> Settlement {
    match outcome {
        Outcome::Status { status, .. }
            if dead_letters.contains(status) && *status != 429 && !codes.is_success(*status) =>
        {
            Settlement::DeadLetter(*status)
        }
        _ => settle(outcome, codes, retry, receive_count, unit),
    }
}

/// How long a failed message waits before SQS hands it out again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// `error_visibility_timeout`: the wait of every failure (fixed), or of
    /// the first (exponential).
    pub error_visibility_s: u32,
    pub backoff: RetryBackoff,
    /// Cap of the exponential backoff (`max_error_visibility`).
    pub max_error_visibility_s: u32,
}

impl Retry {
    /// EB's rule: every failure waits `error_visibility_s`.
    pub fn fixed(error_visibility_s: u32) -> Retry {
        Retry {
            error_visibility_s,
            backoff: RetryBackoff::Fixed,
            max_error_visibility_s: MAX_VISIBILITY_S,
        }
    }

    /// Seconds a message that failed on its `receive_count`-th receive
    /// waits. Exponential: `error_visibility × 2^(n−1)`, capped at
    /// `max_error_visibility`, then spread by ±10% (`unit`, a random number
    /// in [0, 1), picks where) so that messages that failed together do not
    /// come back together; the spread never passes the cap.
    pub fn wait_s(&self, receive_count: u32, unit: f64) -> u32 {
        match self.backoff {
            RetryBackoff::Fixed => self.error_visibility_s,
            RetryBackoff::Exponential => {
                let doublings = receive_count.max(1) - 1;
                let cap = f64::from(self.max_error_visibility_s.min(MAX_VISIBILITY_S));
                // 2^64 seconds is past any cap; stop doubling long before.
                let grown =
                    f64::from(self.error_visibility_s) * 2f64.powi(doublings.min(64) as i32);
                let spread = 0.9 + 0.2 * unit.clamp(0.0, 1.0);
                (grown.min(cap) * spread).round().min(cap) as u32
            }
        }
    }
}

/// Settling rules of the contract: success deletes; 429 with `Retry-After`
/// waits as asked (capped); everything else waits as `retry` says for a
/// message on its `receive_count`-th receive (`unit`: the jitter).
pub fn settle(
    outcome: &Outcome,
    codes: SuccessCodes,
    retry: Retry,
    receive_count: u32,
    unit: f64,
) -> Settlement {
    match outcome {
        Outcome::Status { status, .. } if codes.is_success(*status) => Settlement::Delete,
        Outcome::Status {
            status: 429,
            retry_after_s: Some(s),
        } => Settlement::Retry((*s).min(MAX_VISIBILITY_S)),
        _ => Settlement::Retry(retry.wait_s(receive_count, unit)),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, relative to `now_ms`.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<u32> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Delay-seconds too large for any integer type still mean "later
        // than SQS can wait": the cap.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(secs.min(u64::from(MAX_VISIBILITY_S)) as u32);
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta_ms = when.timestamp_millis() - now_ms;
    let secs = (delta_ms.max(0) + 999) / 1000;
    Some(secs.min(i64::from(MAX_VISIBILITY_S)) as u32)
}

/// Whether a message is past the retention period, measured on SQS's clock
/// alone: its age is the time from its first receive
/// (`ApproximateFirstReceiveTimestamp`) to the `Date` of the answer that
/// brought it this time (`sqs_received_ms`), plus how long it has been held
/// since (`held_for`, on this machine's monotonic clock). This machine's
/// wall clock plays no part, so a clock that is off cannot make fresh
/// messages look expired. `Date` counts whole seconds, so the age computed
/// is never more than the true one. Without either timestamp the age is
/// unknown and the message is never deleted for its age.
pub fn is_expired(
    first_received_ms: Option<i64>,
    sqs_received_ms: Option<i64>,
    held_for: Duration,
    retention: Duration,
) -> bool {
    let (Some(first), Some(received)) = (first_received_ms, sqs_received_ms) else {
        return false;
    };
    let age_ms = received
        .saturating_sub(first)
        .saturating_add(held_for.as_millis() as i64);
    age_ms > retention.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> Outcome {
        Outcome::Status {
            status: s,
            retry_after_s: None,
        }
    }

    #[test]
    fn only_200_deletes_by_default() {
        let c = SuccessCodes::Only200;
        assert_eq!(
            settle(&status(200), c, Retry::fixed(2), 1, 0.5),
            Settlement::Delete
        );
        assert_eq!(
            settle(&status(204), c, Retry::fixed(2), 1, 0.5),
            Settlement::Retry(2)
        );
        assert_eq!(
            settle(&status(500), c, Retry::fixed(2), 1, 0.5),
            Settlement::Retry(2)
        );
        assert_eq!(
            settle(&status(301), c, Retry::fixed(7), 1, 0.5),
            Settlement::Retry(7)
        );
        let any = SuccessCodes::Any2xx;
        assert_eq!(
            settle(&status(204), any, Retry::fixed(2), 1, 0.5),
            Settlement::Delete
        );
        assert_eq!(
            settle(&status(299), any, Retry::fixed(2), 1, 0.5),
            Settlement::Delete
        );
        assert_eq!(
            settle(&status(300), any, Retry::fixed(2), 1, 0.5),
            Settlement::Retry(2)
        );
    }

    #[test]
    fn transport_failures_retry_after_error_visibility() {
        let c = SuccessCodes::Only200;
        for o in [
            Outcome::TimedOut,
            Outcome::ConnectFailed("refused".into()),
            Outcome::Failed("reset".into()),
            Outcome::Refused("//x".into()),
        ] {
            assert_eq!(
                settle(&o, c, Retry::fixed(5), 1, 0.5),
                Settlement::Retry(5),
                "{o:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let c = SuccessCodes::Only200;
        let o = Outcome::Status {
            status: 429,
            retry_after_s: Some(17),
        };
        assert_eq!(
            settle(&o, c, Retry::fixed(2), 1, 0.5),
            Settlement::Retry(17)
        );
        assert_eq!(o.label(c), "retry_after");
        let huge = Outcome::Status {
            status: 429,
            retry_after_s: Some(999_999),
        };
        assert_eq!(
            settle(&huge, c, Retry::fixed(2), 1, 0.5),
            Settlement::Retry(MAX_VISIBILITY_S)
        );
        assert_eq!(
            settle(&status(429), c, Retry::fixed(2), 1, 0.5),
            Settlement::Retry(2)
        );
    }

    fn exponential(error_s: u32, max_s: u32) -> Retry {
        Retry {
            error_visibility_s: error_s,
            backoff: RetryBackoff::Exponential,
            max_error_visibility_s: max_s,
        }
    }

    #[test]
    fn fixed_backoff_waits_the_same_on_every_receive() {
        let r = Retry::fixed(7);
        for n in [0, 1, 2, 10, u32::MAX] {
            assert_eq!(r.wait_s(n, 0.0), 7);
            assert_eq!(r.wait_s(n, 0.999), 7);
        }
    }

    #[test]
    fn exponential_backoff_doubles_per_receive_up_to_the_cap() {
        let r = exponential(2, 600);
        // The middle of the jitter is the exact figure.
        let middle: Vec<u32> = (1..=10).map(|n| r.wait_s(n, 0.5)).collect();
        assert_eq!(middle, [2, 4, 8, 16, 32, 64, 128, 256, 512, 600]);
        // An unknown count (0) counts as the first receive.
        assert_eq!(r.wait_s(0, 0.5), 2);
        // Past the cap, however large the count, it stays at the cap.
        assert_eq!(r.wait_s(40, 0.5), 600);
        assert_eq!(r.wait_s(u32::MAX, 0.5), 600);
    }

    #[test]
    fn exponential_jitter_is_ten_percent_either_way_and_never_past_the_cap() {
        let r = exponential(10, 43_200);
        // Receive 5: 10 × 2^4 = 160 s, so 144..=176.
        assert_eq!(r.wait_s(5, 0.0), 144);
        assert_eq!(r.wait_s(5, 0.999_999), 176);
        let samples: Vec<u32> = (0..1000)
            .map(|i| r.wait_s(5, f64::from(i) / 1000.0))
            .collect();
        assert!(samples.iter().all(|s| (144..=176).contains(s)));
        assert!(samples.iter().any(|s| *s < 150) && samples.iter().any(|s| *s > 170));
        let capped = exponential(10, 100);
        assert_eq!(capped.wait_s(10, 0.0), 90);
        assert_eq!(capped.wait_s(10, 0.999), 100);
        // The cap can never exceed what SQS takes.
        let wide = exponential(43_200, 43_200);
        assert_eq!(wide.wait_s(3, 0.999), MAX_VISIBILITY_S);
    }

    #[test]
    fn the_backoff_applies_to_failures_but_retry_after_still_wins() {
        let c = SuccessCodes::Only200;
        let r = exponential(2, 600);
        assert_eq!(settle(&status(500), c, r, 4, 0.5), Settlement::Retry(16));
        assert_eq!(
            settle(&Outcome::TimedOut, c, r, 3, 0.5),
            Settlement::Retry(8)
        );
        let asked = Outcome::Status {
            status: 429,
            retry_after_s: Some(5),
        };
        assert_eq!(settle(&asked, c, r, 9, 0.5), Settlement::Retry(5));
        assert_eq!(settle(&status(200), c, r, 9, 0.5), Settlement::Delete);
    }

    #[test]
    fn only_listed_failure_statuses_dead_letter() {
        let c = SuccessCodes::Only200;
        let list = [400, 410, 422];
        let s = |o: &Outcome| settle_or_dead_letter(o, c, Retry::fixed(7), 1, 0.5, &list);
        assert_eq!(s(&status(410)), Settlement::DeadLetter(410));
        assert_eq!(s(&status(400)), Settlement::DeadLetter(400));
        assert_eq!(s(&status(500)), Settlement::Retry(7));
        assert_eq!(s(&status(200)), Settlement::Delete);
        assert_eq!(
            s(&Outcome::ConnectFailed("refused".into())),
            Settlement::Retry(7)
        );
        assert_eq!(s(&Outcome::TimedOut), Settlement::Retry(7));
        // An empty list is the ordinary rules.
        assert_eq!(
            settle_or_dead_letter(&status(410), c, Retry::fixed(7), 1, 0.5, &[]),
            Settlement::Retry(7)
        );
        // Success and 429 never dead-letter, even if listed.
        let odd = [204, 429];
        let any = SuccessCodes::Any2xx;
        assert_eq!(
            settle_or_dead_letter(&status(204), any, Retry::fixed(7), 1, 0.5, &odd),
            Settlement::Delete
        );
        let busy = Outcome::Status {
            status: 429,
            retry_after_s: Some(3),
        };
        assert_eq!(
            settle_or_dead_letter(&busy, c, Retry::fixed(7), 1, 0.5, &odd),
            Settlement::Retry(3)
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(parse_retry_after(" 5 ", now), Some(5));
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_VISIBILITY_S));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_VISIBILITY_S)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(30)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retention_counts_from_first_receive_on_sqs_clock() {
        let retention = Duration::from_secs(60);
        let first = 1_000_000_000;
        let held = Duration::ZERO;
        assert!(!is_expired(
            Some(first),
            Some(first + 60_000),
            held,
            retention
        ));
        assert!(is_expired(
            Some(first),
            Some(first + 60_001),
            held,
            retention
        ));
        // Held for a while after the receive counts too.
        assert!(is_expired(
            Some(first),
            Some(first + 50_000),
            Duration::from_secs(11),
            retention
        ));
        // An unknown age never expires a message.
        assert!(!is_expired(None, Some(first + 999_999), held, retention));
        assert!(!is_expired(Some(first), None, held, retention));
        // A first receive "in the future" (another SQS host's clock) is age 0.
        assert!(!is_expired(
            Some(first + 5_000),
            Some(first),
            held,
            retention
        ));
    }
}
