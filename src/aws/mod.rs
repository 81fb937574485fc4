//! Everything that speaks to AWS for the daemon: the SDK setup from the
//! standard AWS chain ([`setup`]), the worker queue's startup check and its
//! receive call ([`queue`]), its dead-letter queue for `dead_letter_codes`
//! ([`dead_letter`]), the direct JSON-protocol client of the hot path
//! ([`sqs_json`]) and the credentials it signs with ([`credentials`]), and
//! the classification of failed calls ([`error`]), and the ECS agent's
//! task scale-in protection endpoint ([`ecs_agent`]).
//!
//! May use: `config`, `admin` (to count calls), `time` and the shared
//! `http1` pool. Knows nothing of the application or of settling rules.

pub mod credentials;
pub mod dead_letter;
pub mod ecs_agent;
pub mod error;
pub mod queue;
pub mod setup;
pub mod sqs_json;

pub use error::{DbError, SqsError};
pub use queue::{Queue, QueueError, MAX_BATCH, WAIT_TIME_S};
pub use setup::{aws_setup, AwsSetup};
