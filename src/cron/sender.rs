//! The task message on the wire: one SendMessage to the worker queue, and
//! telling an attempt that certainly failed from one whose outcome is
//! unknown (which [`super::enqueue`] never repeats on a standard queue).
//!
//! Certainly not sent: the request could not be built; no connection was
//! made (DNS, refused, connect timeout, TLS handshake); SQS answered with a
//! client error (4xx: the request was refused, throttling included).
//! Unknown: anything after a connection was made that is not such an answer
//! (no answer within [`SEND_TIMEOUT`], the connection broke, an answer that
//! could not be read, or a server error: a 5xx may come after SQS, or a load
//! balancer in front of it, took the message). The SDK's own retries are off (see
//! `crate::aws::setup`), so every repeat is decided here.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::send_message::SendMessageError;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::enqueue::{SendOutcome, TaskSender};
use super::file::Task;
use super::format::{PATH_ATTR, SCHEDULED_TIME_ATTR, TASK_BODY, TASK_NAME_ATTR};
use super::schedule::eb_time;
use crate::admin::metrics::Metrics;
use crate::aws::error::SqsError;

/// One SendMessage may take this long before its outcome counts as unknown.
/// Generous: a slow answer is worth waiting for, since a send without one is
/// not repeated on a standard queue.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// The worker queue as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskQueue {
    /// The URL this daemon was given, for its requests.
    pub url: String,
    /// The queue's identity in the coordination table: its ARN, the same
    /// whichever of the queue's URLs a daemon was given.
    pub scope: String,
    pub fifo: bool,
}

impl TaskQueue {
    /// From the queue's attributes as read at startup. Without `QueueArn`
    /// (a server that does not report it) the scope is the account and
    /// name from the URL's path.
    pub fn from_attributes(url: &str, attributes: &HashMap<QueueAttributeName, String>) -> Self {
        let arn = attributes
            .get(&QueueAttributeName::QueueArn)
            .filter(|a| !a.is_empty());
        let scope = match arn {
            Some(arn) => arn.clone(),
            None => {
                let mut segments = url.trim_end_matches('/').rsplit('/');
                let name = segments.next().unwrap_or_default();
                let account = segments.next().unwrap_or_default();
                tracing::warn!(queue = %url,
                    "the queue's attributes have no QueueArn; periodic-task records are keyed by account and name");
                format!("{account}/{name}")
            }
        };
        let fifo = attributes
            .get(&QueueAttributeName::FifoQueue)
            .is_some_and(|v| v == "true")
            || scope.ends_with(".fifo");
        TaskQueue {
            url: url.to_string(),
            scope,
            fifo,
        }
    }
}

/// Message group and deduplication ids of a task message on a FIFO queue:
/// one group per task (its ticks run in order), one id per task and tick.
pub fn fifo_ids(task: &str, tick: DateTime<Utc>) -> (String, String) {
    let usable =
        !task.is_empty() && task.len() <= 128 && task.chars().all(|c| c.is_ascii_graphic());
    let group = if usable {
        task.to_string()
    } else {
        format!(
            "sqsd-task-{}",
            &hex::encode(Sha256::digest(task.as_bytes()))[..32]
        )
    };
    let dedup = hex::encode(Sha256::digest(
        format!("{task}\n{}", tick.timestamp()).as_bytes(),
    ));
    (group, dedup)
}

/// Sends task messages through the SDK.
pub struct SqsSender {
    pub client: aws_sdk_sqs::Client,
    pub queue: TaskQueue,
    pub metrics: Arc<Metrics>,
}

impl TaskSender for SqsSender {
    async fn send(&self, task: &Task, tick: DateTime<Utc>) -> SendOutcome {
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
        };
        let attrs = (attr(&task.url), attr(&task.name), attr(&eb_time(tick)));
        let (Ok(path), Ok(name), Ok(scheduled)) = attrs else {
            return SendOutcome::NotSent {
                error: "cannot build the message attributes".into(),
                permanent: true,
            };
        };
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue.url)
            .message_body(TASK_BODY)
            .message_attributes(PATH_ATTR, path)
            .message_attributes(TASK_NAME_ATTR, name)
            .message_attributes(SCHEDULED_TIME_ATTR, scheduled);
        if self.queue.fifo {
            let (group, dedup) = fifo_ids(&task.name, tick);
            request = request
                .message_group_id(group)
                .message_deduplication_id(dedup);
        }
        let outcome = match tokio::time::timeout(SEND_TIMEOUT, request.send()).await {
            Ok(Ok(out)) => SendOutcome::Sent(out.message_id.unwrap_or_default()),
            Ok(Err(e)) => outcome_of(e),
            Err(_) => SendOutcome::Unknown(format!("no answer within {SEND_TIMEOUT:?}")),
        };
        self.metrics
            .sqs_request("SendMessage", matches!(outcome, SendOutcome::Sent(_)));
        outcome
    }

    fn deduplicates(&self) -> bool {
        self.queue.fifo
    }
}

/// Classifies a failed SendMessage (see the module documentation).
pub fn outcome_of(e: SdkError<SendMessageError, HttpResponse>) -> SendOutcome {
    let certain = match &e {
        SdkError::ConstructionFailure(_) => true,
        SdkError::ServiceError(s) => !s.raw().status().is_server_error(),
        SdkError::DispatchFailure(d) => d.as_connector_error().is_some_and(|c| never_connected(c)),
        _ => false,
    };
    let error = SqsError::from(e);
    if certain {
        SendOutcome::NotSent {
            permanent: error.permanent,
            error: error.message,
        }
    } else {
        SendOutcome::Unknown(error.message)
    }
}

/// Whether a dispatch failure happened while connecting, before any byte of
/// the request could be written: the HTTP client says so for DNS, refused
/// and timed-out connections and TLS handshakes.
fn never_connected(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(client) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            return client.is_connect();
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, m, s).unwrap()
    }

    #[test]
    fn fifo_ids_are_stable_per_task_and_tick() {
        let (g1, d1) = fifo_ids("backup-job", at(12, 0, 0));
        let (g2, d2) = fifo_ids("backup-job", at(12, 0, 0));
        let (g3, d3) = fifo_ids("backup-job", at(12, 0, 1));
        assert_eq!((g1.as_str(), d1.as_str()), (g2.as_str(), d2.as_str()));
        assert_eq!(g1, "backup-job");
        assert_eq!(g3, g1);
        assert_ne!(d3, d1);
        assert_eq!(d1.len(), 64);
        assert_ne!(fifo_ids("other", at(12, 0, 0)).1, d1);
        // Names SQS would refuse as a group id are hashed.
        let (g, _) = fifo_ids("nightly report", at(12, 0, 0));
        assert!(
            g.starts_with("sqsd-task-") && g.chars().all(|c| c.is_ascii_graphic()),
            "{g}"
        );
        let long = "x".repeat(200);
        assert!(fifo_ids(&long, at(12, 0, 0)).0.len() <= 128);
    }

    #[test]
    fn the_queue_is_known_by_its_arn_whatever_its_url() {
        let arn = "arn:aws:sqs:us-east-1:123456789012:jobs";
        let attrs = HashMap::from([(QueueAttributeName::QueueArn, arn.to_string())]);
        let urls = [
            "https://sqs.us-east-1.amazonaws.com/123456789012/jobs",
            "https://sqs.us-east-1.amazonaws.com/123456789012/jobs/",
            "https://queue.amazonaws.com/123456789012/jobs",
        ];
        for url in urls {
            let q = TaskQueue::from_attributes(url, &attrs);
            assert_eq!(q.scope, arn);
            assert_eq!(q.url, url);
            assert!(!q.fifo);
        }
        // Without an ARN: account and name, trailing slash or not.
        let none = HashMap::new();
        for url in urls {
            assert_eq!(
                TaskQueue::from_attributes(url, &none).scope,
                "123456789012/jobs"
            );
        }
        let fifo = HashMap::from([
            (
                QueueAttributeName::QueueArn,
                "arn:aws:sqs:us-east-1:1:jobs.fifo".to_string(),
            ),
            (QueueAttributeName::FifoQueue, "true".to_string()),
        ]);
        // A trailing slash does not hide that the queue is FIFO.
        assert!(TaskQueue::from_attributes("http://h/1/jobs.fifo/", &fifo).fifo);
    }

    /// A client for `endpoint`, configured as the daemon's (no SDK retries).
    fn client(endpoint: &str, attempt_timeout: Duration) -> aws_sdk_sqs::Client {
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "k", "s", None, None, "test",
            ))
            .endpoint_url(endpoint)
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    async fn send_to(endpoint: &str, attempt_timeout: Duration) -> SendOutcome {
        let result = client(endpoint, attempt_timeout)
            .send_message()
            .queue_url(format!("{endpoint}/000000000000/q"))
            .message_body("x")
            .send()
            .await;
        match result {
            Ok(_) => SendOutcome::Sent(String::new()),
            Err(e) => outcome_of(e),
        }
    }

    /// A loopback server that reads a request and then does `then`.
    async fn server(then: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = conn.read(&mut buf).await;
                    match then {
                        "refuse" => {
                            let body = r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"no such queue"}"#;
                            let answer = format!(
                                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue;Sender\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = conn.write_all(answer.as_bytes()).await;
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        "throttle" => {
                            let body = r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}"#;
                            let answer = format!(
                                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = conn.write_all(answer.as_bytes()).await;
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        "internal" => {
                            let body = r#"{"__type":"com.amazonaws.sqs#InternalError","message":"try again"}"#;
                            let answer = format!(
                                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = conn.write_all(answer.as_bytes()).await;
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        "hang" => tokio::time::sleep(Duration::from_secs(30)).await,
                        _ => drop(conn),
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn no_connection_means_certainly_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let outcome = send_to(&format!("http://{addr}"), Duration::from_secs(5)).await;
        assert!(
            matches!(
                outcome,
                SendOutcome::NotSent {
                    permanent: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn an_error_answer_means_certainly_not_sent() {
        let outcome = send_to(&server("refuse").await, Duration::from_secs(5)).await;
        assert!(
            matches!(&outcome, SendOutcome::NotSent { permanent: true, error } if error.contains("QueueDoesNotExist") || error.contains("NonExistentQueue")),
            "{outcome:?}"
        );
        let outcome = send_to(&server("throttle").await, Duration::from_secs(5)).await;
        assert!(
            matches!(
                outcome,
                SendOutcome::NotSent {
                    permanent: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_request_without_an_answer_has_an_unknown_outcome() {
        // The server read the request and closed the connection.
        let outcome = send_to(&server("close").await, Duration::from_secs(5)).await;
        assert!(matches!(outcome, SendOutcome::Unknown(_)), "{outcome:?}");
        // The server read the request and never answered.
        let outcome = send_to(&server("hang").await, Duration::from_millis(500)).await;
        assert!(matches!(outcome, SendOutcome::Unknown(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_server_error_answer_has_an_unknown_outcome() {
        // A 5xx may come after the message was taken: not a certain failure.
        let outcome = send_to(&server("internal").await, Duration::from_secs(5)).await;
        assert!(
            matches!(&outcome, SendOutcome::Unknown(e) if e.contains("InternalError") || e.contains("try again")),
            "{outcome:?}"
        );
    }
}
