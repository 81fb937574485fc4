//! The admin side: the HTTP listener that serves `/healthz`, `/readyz` and
//! `/metrics`, the health state those endpoints report, and the metrics
//! every other concern moves.
//!
//! May use: `config`, and the listener plumbing of `http1`. Used by the
//! daemon, the AWS clients and the scheduler to report what they do; it
//! never reaches back into them.

pub mod health;
pub mod metrics;
pub mod server;

pub use server::{bind, probe, serve, Admin};
