//! The life of one tick's record in the coordination table, and the writes
//! the daemon holding a tick makes to it (implemented by
//! [`super::claims::Claims`] on DynamoDB, by fakes in unit tests).
//!
//! A record moves through three phases, each write conditional on who holds
//! it:
//!
//! - `sending`: the holder may have sent the tick's message, or is about to.
//!   A claim is written in this phase, and the holder writes it again before
//!   every retry. On a standard queue nobody else ever sends a tick in this
//!   phase: the message may be in the queue already.
//! - `claimed`: the holder has not sent the message, and no earlier send of
//!   it can have reached SQS (every attempt so far failed without
//!   connecting, or SQS refused it). The holder moves the record here after
//!   such a failure; if it stops renewing the record, another daemon may
//!   take the tick over and send it.
//! - `sent`: SQS accepted the message. Final.
//!
//! Every write by the holder also raises the record's version: that is its
//! renewal, which the other daemons watch on their own monotonic clocks
//! (see [`super::lease`]). No one compares two hosts' clocks to decide that
//! a holder is gone.

use std::future::Future;

use chrono::{DateTime, Utc};

pub use crate::aws::error::DbError;

/// Where a tick's record stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Claimed,
    Sending,
    Sent,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Claimed => "claimed",
            Phase::Sending => "sending",
            Phase::Sent => "sent",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        match text {
            "claimed" => Some(Phase::Claimed),
            "sending" => Some(Phase::Sending),
            "sent" => Some(Phase::Sent),
            _ => None,
        }
    }
}

/// The writes of the daemon that holds a tick. Each is conditional on this
/// daemon still holding it, and each can be repeated safely after an error
/// whose outcome is unknown.
pub trait TickStore: Send + Sync {
    /// Moves the record to `phase` (`Claimed` or `Sending`) and renews it;
    /// `Ok(false)` when another daemon holds the tick now (or it is sent).
    fn hold(
        &self,
        task: &str,
        tick: DateTime<Utc>,
        phase: Phase,
    ) -> impl Future<Output = Result<bool, DbError>> + Send;

    /// Records that SQS accepted the tick's message; `Ok(false)` when
    /// another daemon holds the tick now.
    fn mark_sent(
        &self,
        task: &str,
        tick: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, DbError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_read_back_as_written() {
        for p in [Phase::Claimed, Phase::Sending, Phase::Sent] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::parse("lease"), None);
    }
}
