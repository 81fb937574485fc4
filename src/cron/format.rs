//! The periodic-task message in Elastic Beanstalk's format: what the
//! scheduler enqueues and what the daemon recognizes when it delivers one.
//! Messages in this format are interchangeable with EB's daemon's.

/// Attribute that overrides `http_path` for one message.
pub const PATH_ATTR: &str = "beanstalk.sqsd.path";
/// Attribute naming the periodic task a message stands for.
pub const TASK_NAME_ATTR: &str = "beanstalk.sqsd.task_name";
/// Attribute holding a periodic task's tick, as `YYYY-MM-DD HH:MM:SS UTC`.
pub const SCHEDULED_TIME_ATTR: &str = "beanstalk.sqsd.scheduled_time";
/// Body of a periodic-task message.
pub const TASK_BODY: &str = "elasticbeanstalk scheduled job";
