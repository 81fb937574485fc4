//! The table of every scalar option: one row gives its file key, environment
//! variable, flag, default and help text, so `--help`, the layering in
//! [`super::load`] and the documentation can never disagree.

/// One configurable setting.
#[derive(Debug)]
pub struct OptionSpec {
    /// Key in the YAML file; also the clap argument id.
    pub key: &'static str,
    /// Environment variable (`SQSD_` + upper-case key).
    pub env: &'static str,
    /// Long flag without the leading dashes (kebab-case key).
    pub flag: &'static str,
    /// Default value in the same text form a user would write, if any.
    pub default: Option<&'static str>,
    /// Placeholder shown in `--help`.
    pub value_name: &'static str,
    /// One-line description, including what is allowed.
    pub help: &'static str,
}

/// Path of the YAML file; given by flag or environment only.
pub const CONFIG_ENV: &str = "SQSD_CONFIG";

pub const QUEUE_URL: &str = "queue_url";
pub const HTTP_PATH: &str = "http_path";
pub const WORKER_URL: &str = "worker_url";
pub const MIME_TYPE: &str = "mime_type";
pub const HTTP_CONNECTIONS: &str = "http_connections";
pub const CONNECT_TIMEOUT: &str = "connect_timeout";
pub const INACTIVITY_TIMEOUT: &str = "inactivity_timeout";
pub const VISIBILITY_TIMEOUT: &str = "visibility_timeout";
pub const ERROR_VISIBILITY_TIMEOUT: &str = "error_visibility_timeout";
pub const VISIBILITY_LEASE: &str = "visibility_lease";
pub const RETENTION_PERIOD: &str = "retention_period";
pub const MAX_RETRIES: &str = "max_retries";
pub const ENDPOINT_URL: &str = "endpoint_url";
pub const REGION: &str = "region";
pub const ADMIN_ADDR: &str = "admin_addr";
pub const SUCCESS_CODES: &str = "success_codes";
pub const DRAIN_TIMEOUT: &str = "drain_timeout";
pub const LOG_FORMAT: &str = "log_format";
pub const LOG_LEVEL: &str = "log_level";
pub const CRON_FILE: &str = "cron_file";
pub const CRON_TABLE: &str = "cron_table";
pub const CRON_CREATE_TABLE: &str = "cron_create_table";
pub const BATCH_LINGER: &str = "batch_linger";
pub const SQS_LISTEN: &str = "sqs_listen";
pub const RETRY_BACKOFF: &str = "retry_backoff";
pub const MAX_ERROR_VISIBILITY: &str = "max_error_visibility";
pub const HEALTH_URL: &str = "health_url";
pub const HEALTH_INTERVAL: &str = "health_interval";
pub const DEAD_LETTER_CODES: &str = "dead_letter_codes";
pub const MAX_RATE: &str = "max_rate";
pub const SIGNING_KEY_FILE: &str = "signing_key_file";
pub const APP_TOKEN_FILE: &str = "app_token_file";
pub const SNS_UNWRAP: &str = "sns_unwrap";
pub const ECS_TASK_PROTECTION: &str = "ecs_task_protection";
pub const ECS_TASK_PROTECTION_MINUTES: &str = "ecs_task_protection_minutes";
pub const QUEUE_METRICS_INTERVAL: &str = "queue_metrics_interval";
pub const EB_CONFIG: &str = "eb_config";
pub const CRON_TABLE_MODE: &str = "cron_table_mode";

/// Extra signing keys, comma-separated; environment only, so that a key
/// never sits in a file that is also shown or in a process's arguments.
pub const SIGNING_KEY_ENV: &str = "SQSD_SIGNING_KEY";

/// File keys whose value may also be written as a YAML list of scalars.
pub const LIST_KEYS: &[&str] = &[DEAD_LETTER_CODES];

macro_rules! option {
    ($key:expr, $env:literal, $flag:literal, $default:expr, $value:literal, $help:literal) => {
        OptionSpec {
            key: $key,
            env: $env,
            flag: $flag,
            default: $default,
            value_name: $value,
            help: $help,
        }
    };
}

/// Every scalar option, in the order `--help` and `check-config` show them.
pub const OPTIONS: &[OptionSpec] =
    &[
        option!(
            QUEUE_URL,
            "SQSD_QUEUE_URL",
            "queue-url",
            None,
            "URL",
            "SQS queue to consume (EB WorkerQueueURL); required"
        ),
        option!(
            HTTP_PATH,
            "SQSD_HTTP_PATH",
            "http-path",
            Some("/"),
            "PATH",
            "Path messages are POSTed to (EB HttpPath); must start with /"
        ),
        option!(
            WORKER_URL,
            "SQSD_WORKER_URL",
            "worker-url",
            Some("http://localhost:80"),
            "URL",
            "Base URL of the application, http or https"
        ),
        option!(
            MIME_TYPE,
            "SQSD_MIME_TYPE",
            "mime-type",
            Some("application/json"),
            "TYPE",
            "Content-Type of every POST (EB MimeType)"
        ),
        option!(
            HTTP_CONNECTIONS,
            "SQSD_HTTP_CONNECTIONS",
            "http-connections",
            Some("50"),
            "N",
            "Most POSTs in flight at once, 1-1000 (EB HttpConnections)"
        ),
        option!(
            CONNECT_TIMEOUT,
            "SQSD_CONNECT_TIMEOUT",
            "connect-timeout",
            Some("5s"),
            "DURATION",
            "Time to connect to the application, 1s-60s (EB ConnectTimeout)"
        ),
        option!(
            INACTIVITY_TIMEOUT,
            "SQSD_INACTIVITY_TIMEOUT",
            "inactivity-timeout",
            Some("299s"),
            "DURATION",
            "Time for the application to answer a POST, 1s-36000s (EB InactivityTimeout)"
        ),
        option!(
            VISIBILITY_TIMEOUT,
            "SQSD_VISIBILITY_TIMEOUT",
            "visibility-timeout",
            Some("300s"),
            "DURATION",
            "Visibility timeout of received messages, 0-43200s; 0 means the queue's own VisibilityTimeout (EB VisibilityTimeout)"
        ),
        option!(
            VISIBILITY_LEASE,
            "SQSD_VISIBILITY_LEASE",
            "visibility-lease",
            Some("30s"),
            "DURATION",
            "Receive with min(visibility_timeout, this) and renew it while a message is held, so a message held by a dead daemon is visible again within the lease; 0-43200s, whole seconds, 0 = off (EB's behaviour)"
        ),
        option!(
            ERROR_VISIBILITY_TIMEOUT,
            "SQSD_ERROR_VISIBILITY_TIMEOUT",
            "error-visibility-timeout",
            Some("2s"),
            "DURATION",
            "Delay before a failed message is visible again, 0-43200s (EB ErrorVisibilityTimeout)"
        ),
        option!(RETENTION_PERIOD, "SQSD_RETENTION_PERIOD", "retention-period", Some("345600s"),
        "DURATION",
        "Messages first received longer ago are deleted unsent, 60s-1209600s (EB RetentionPeriod)"),
        option!(
            MAX_RETRIES,
            "SQSD_MAX_RETRIES",
            "max-retries",
            Some("10"),
            "N",
            "Expected maxReceiveCount of the queue's redrive policy, 1-100 (EB MaxRetries)"
        ),
        option!(ENDPOINT_URL, "SQSD_ENDPOINT_URL", "endpoint-url", None, "URL",
        "SQS endpoint; AWS_ENDPOINT_URL_SQS and AWS_ENDPOINT_URL also work [default: the SDK's]"),
        option!(
            REGION,
            "SQSD_REGION",
            "region",
            None,
            "REGION",
            "AWS region [default: the SDK's chain, else taken from the queue URL]"
        ),
        option!(
            ADMIN_ADDR,
            "SQSD_ADMIN_ADDR",
            "admin-addr",
            Some("127.0.0.1:9191"),
            "ADDR",
            "Listen address of /healthz, /readyz and /metrics"
        ),
        option!(
            SUCCESS_CODES,
            "SQSD_SUCCESS_CODES",
            "success-codes",
            Some("200"),
            "200|2xx",
            "Statuses that delete the message: exactly 200 (as EB) or any 2xx"
        ),
        option!(
            DRAIN_TIMEOUT,
            "SQSD_DRAIN_TIMEOUT",
            "drain-timeout",
            Some("30s"),
            "DURATION",
            "How long shutdown waits for in-flight POSTs"
        ),
        option!(
            LOG_FORMAT,
            "SQSD_LOG_FORMAT",
            "log-format",
            Some("text"),
            "text|json",
            "Log lines on standard error as human text or JSON"
        ),
        option!(
            LOG_LEVEL,
            "SQSD_LOG_LEVEL",
            "log-level",
            Some("info"),
            "LEVEL",
            "error, warn, info, debug or trace (or a tracing filter such as sqsd=debug)"
        ),
        option!(
            CRON_FILE,
            "SQSD_CRON_FILE",
            "cron-file",
            None,
            "PATH",
            "Path of cron.yaml [default: ./cron.yaml, then /var/app/current/cron.yaml]"
        ),
        option!(
            CRON_TABLE,
            "SQSD_CRON_TABLE",
            "cron-table",
            None,
            "TABLE",
            "DynamoDB table that makes a fleet enqueue each periodic-task tick once; without it this daemon schedules alone"
        ),
        option!(
            CRON_CREATE_TABLE,
            "SQSD_CRON_CREATE_TABLE",
            "cron-create-table",
            Some("true"),
            "BOOL",
            "Create cron_table at start when it does not exist (true or false)"
        ),
        option!(
            BATCH_LINGER,
            "SQSD_BATCH_LINGER",
            "batch-linger",
            Some("20ms"),
            "DURATION",
            "How long a delete or visibility change waits to fill a batch of 10, 0-1s"
        ),
        option!(
            SQS_LISTEN,
            "SQSD_SQS_LISTEN",
            "sqs-listen",
            Some("127.0.0.1:9324"),
            "ADDR",
            "Listen address of the embedded SQS endpoint (`local` and `sqs-server` only)"
        ),
        option!(
            RETRY_BACKOFF,
            "SQSD_RETRY_BACKOFF",
            "retry-backoff",
            Some("fixed"),
            "fixed|exponential",
            "After a failure wait error_visibility_timeout (fixed, as EB), or error_visibility_timeout x 2^(receives-1) up to max_error_visibility (exponential)"
        ),
        option!(
            MAX_ERROR_VISIBILITY,
            "SQSD_MAX_ERROR_VISIBILITY",
            "max-error-visibility",
            Some("10m"),
            "DURATION",
            "Cap of the exponential backoff, 1s-12h, whole seconds"
        ),
        option!(
            HEALTH_URL,
            "SQSD_HEALTH_URL",
            "health-url",
            None,
            "PATH|URL",
            "Path on worker_url or absolute http(s) URL; 3 failed GETs in a row pause receiving until it answers 2xx [default: none]"
        ),
        option!(
            HEALTH_INTERVAL,
            "SQSD_HEALTH_INTERVAL",
            "health-interval",
            Some("5s"),
            "DURATION",
            "How often health_url is asked, 100ms-1h"
        ),
        option!(
            DEAD_LETTER_CODES,
            "SQSD_DEAD_LETTER_CODES",
            "dead-letter-codes",
            None,
            "CODES",
            "Statuses that never succeed, such as 400,410,422: the message is copied to the dead-letter queue and deleted; 100-599, not 2xx or 429 [default: none]"
        ),
        option!(
            MAX_RATE,
            "SQSD_MAX_RATE",
            "max-rate",
            Some("0"),
            "PER_SECOND",
            "Deliveries started per second on average, 0-100000, decimals allowed; 0 = unlimited"
        ),
        option!(
            SIGNING_KEY_FILE,
            "SQSD_SIGNING_KEY_FILE",
            "signing-key-file",
            None,
            "PATH",
            "File of HMAC keys, one per line, each at least 32 bytes (at most 16 keys, 64 KiB), that sign every POST in X-Sqsd-Signature; SQSD_SIGNING_KEY adds comma-separated keys [default: none]"
        ),
        option!(
            APP_TOKEN_FILE,
            "SQSD_APP_TOKEN_FILE",
            "app-token-file",
            None,
            "PATH",
            "File holding a token (visible ASCII, at most 8 KiB) sent as Authorization: Bearer on every POST [default: none]"
        ),
        option!(
            SNS_UNWRAP,
            "SQSD_SNS_UNWRAP",
            "sns-unwrap",
            Some("false"),
            "BOOL",
            "POST the Message of an SNS notification envelope, with the envelope's fields as X-Aws-Sqsd-Sns-* headers"
        ),
        option!(
            ECS_TASK_PROTECTION,
            "SQSD_ECS_TASK_PROTECTION",
            "ecs-task-protection",
            Some("false"),
            "BOOL",
            "Hold ECS task scale-in protection while messages are held"
        ),
        option!(
            ECS_TASK_PROTECTION_MINUTES,
            "SQSD_ECS_TASK_PROTECTION_MINUTES",
            "ecs-task-protection-minutes",
            Some("60"),
            "MINUTES",
            "ExpiresInMinutes of each ECS task protection request, 1-2880"
        ),
        option!(
            QUEUE_METRICS_INTERVAL,
            "SQSD_QUEUE_METRICS_INTERVAL",
            "queue-metrics-interval",
            Some("30s"),
            "DURATION",
            "How often the queue's backlog is read into sqsd_queue_messages gauges; 0 = never, else 1s-1h"
        ),
        option!(
            EB_CONFIG,
            "SQSD_EB_CONFIG",
            "eb-config",
            None,
            "PATH",
            "Elastic Beanstalk's daemon configuration to start from, such as /etc/aws-sqsd.d/default.yaml (YAML or JSON); every other source overrides it [default: none, never looked for]"
        ),
        option!(
            CRON_TABLE_MODE,
            "SQSD_CRON_TABLE_MODE",
            "cron-table-mode",
            Some("standard"),
            "standard|eb",
            "How cron_table is used: sqsd's own records (standard) or EB's leader registry (eb); eb when cron_table comes from eb_config"
        ),
    ];

/// Looks an option up by its file key.
pub fn spec(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_follow_the_key() {
        for o in OPTIONS {
            assert_eq!(o.env, format!("SQSD_{}", o.key.to_uppercase()), "{}", o.key);
            assert_eq!(o.flag, o.key.replace('_', "-"), "{}", o.key);
        }
    }

    #[test]
    fn keys_are_unique() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert!(OPTIONS[i + 1..].iter().all(|p| p.key != o.key), "{}", o.key);
        }
    }
}
