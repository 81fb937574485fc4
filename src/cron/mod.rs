//! Periodic tasks from `cron.yaml` (contract §7): the file, the schedules,
//! the scheduler that enqueues task messages, and the DynamoDB table that
//! makes a fleet enqueue each tick once.

pub mod claims;
pub mod enqueue;
pub mod file;
pub mod format;
pub mod lease;
pub mod schedule;
pub mod scheduler;
pub mod sender;
pub mod tick;

pub use file::{CronFileError, Task};
pub use schedule::{eb_time, Schedule};
pub use scheduler::{CronSource, Scheduler};
pub use sender::TaskQueue;
