//! The message pipeline and its wiring. One message flows
//! receive ([`poller`], within the [`room`]) → deliver ([`deliver`],
//! building the POST with [`message`], which unwraps SNS envelopes with
//! [`sns`] and signs with `app::signing`) → settle ([`settle`], by the rules of
//! [`policy`]); the settler holds every message, renewing its lease, from
//! the moment it is received until SQS has its settlement. The [`gate`]
//! pauses receiving while the application is unavailable, and the [`pace`]
//! spaces deliveries under a rate limit; [`backlog`] publishes the queue's
//! backlog for autoscaling, and [`protection`] holds ECS task scale-in
//! protection while messages are held. [`run`] wires it together and
//! takes it down cleanly.
//!
//! May use: `aws` (receiving and settling), `app` (the POST), `admin`
//! (health and metrics), `cron` (the periodic-task scheduler and its message
//! format) and `config`. None of those uses `daemon`.

pub mod backlog;
pub mod deliver;
pub mod gate;
pub mod message;
pub mod pace;
pub mod policy;
pub mod poller;
pub mod protection;
pub mod room;
pub mod run;
pub mod settle;
pub mod sns;
#[cfg(test)]
mod testing;

pub use run::{run, RunError};
