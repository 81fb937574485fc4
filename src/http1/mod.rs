//! The HTTP/1.1 plumbing both sides of sqsd share, over hyper's connection
//! API directly:
//!
//! - [`client`]: a small pool of keep-alive connections to one host, used
//!   by both hot paths (POSTs to a `http://` application, and the receive
//!   and settle calls to a `http://` SQS endpoint). Answers are bounded:
//!   sqsd never holds more of a body than it needs.
//! - [`server`]: the accept loop and connection handling of sqsd's own
//!   listeners (the admin endpoints and the embedded SQS endpoint), bounded
//!   against clients that say nothing, send half a request, or open
//!   connections until the process runs out of file descriptors.
//!
//! Uses nothing else of the crate.

pub mod client;
pub mod server;
#[cfg(test)]
pub mod testing;

pub use client::Pool;
pub use server::{serve, Limits, HEAD_TIMEOUT};

/// Why no answer came.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made.
    Connect(String),
    /// No complete answer in time.
    TimedOut,
    /// The exchange broke off.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) | Failure::Other(e) => f.write_str(e),
            Failure::TimedOut => f.write_str("no complete answer in time"),
        }
    }
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
