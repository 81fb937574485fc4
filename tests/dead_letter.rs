//! Dead-lettering by the application's answer (`dead_letter_codes`): a
//! listed status copies the message, body and attributes unchanged plus the
//! `sqsd-dead-letter` record, to the worker queue's dead-letter queue and
//! then deletes it; a copy the dead-letter queue refuses leaves the message
//! to the ordinary retry; a queue without a usable dead-letter queue stops
//! startup with exit 64. Standard and FIFO queues.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use common::app::{App, Reply};
use common::{base_args, eventually, sqsd_command, Daemon, TestQueue};

const WAIT: Duration = Duration::from_secs(60);
/// `error_visibility_timeout` of these tests, in seconds.
const ERROR_VISIBILITY_S: u64 = 2;
/// Bytes of binary attribute value, with every byte SQS must keep as is.
const BINARY: &[u8] = &[0, 1, 2, 0x7f, 0x80, 0xfe, 0xff];

/// A worker queue whose redrive policy names a fresh dead-letter queue
/// (FIFO when `fifo`), with extra attributes `dlq_attributes` on the
/// dead-letter queue. maxReceiveCount is high, so SQS's own redrive never
/// moves a message during a test.
async fn queues(
    prefix: &str,
    fifo: bool,
    dlq_attributes: HashMap<QueueAttributeName, String>,
) -> (TestQueue, TestQueue) {
    let suffix = if fifo { ".fifo" } else { "" };
    let fifo_attr = |mut a: HashMap<QueueAttributeName, String>| {
        if fifo {
            a.insert(QueueAttributeName::FifoQueue, "true".into());
        }
        a
    };
    let dlq = TestQueue::named(
        &format!("{prefix}-dlq-{:08x}{suffix}", fastrand::u32(..)),
        fifo_attr(dlq_attributes),
    )
    .await;
    let arn = dlq.attribute(QueueAttributeName::QueueArn).await;
    let policy = format!("{{\"deadLetterTargetArn\":\"{arn}\",\"maxReceiveCount\":\"100\"}}");
    let worker = TestQueue::named(
        &format!("{prefix}-{:08x}{suffix}", fastrand::u32(..)),
        fifo_attr(HashMap::from([(QueueAttributeName::RedrivePolicy, policy)])),
    )
    .await;
    (worker, dlq)
}

/// Sends `body` with a String, a Number, a custom Number and a Binary
/// attribute (and a group and deduplication id on FIFO queues).
async fn send_with_attributes(queue: &TestQueue, body: &str, fifo: bool) -> String {
    let string = |t: &str, v: &str| {
        MessageAttributeValue::builder()
            .data_type(t)
            .string_value(v)
            .build()
            .expect("attribute")
    };
    let mut call = queue
        .client
        .send_message()
        .queue_url(&queue.url)
        .message_body(body)
        .message_attributes("colour", string("String", "blue"))
        .message_attributes("count", string("Number", "42"))
        .message_attributes("size", string("Number.int", "-7"))
        .message_attributes(
            "blob",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(Blob::new(BINARY))
                .build()
                .expect("attribute"),
        );
    if fifo {
        call = call
            .message_group_id("group-a")
            .message_deduplication_id(format!("dedup-{:08x}", fastrand::u32(..)));
    }
    call.send()
        .await
        .expect("send")
        .message_id
        .expect("message id")
}

/// Messages now visible in `queue`, with every attribute (wait 1 s).
async fn receive_all(queue: &TestQueue) -> Vec<aws_sdk_sqs::types::Message> {
    let out = queue
        .client
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .visibility_timeout(30)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive");
    out.messages.unwrap_or_default()
}

fn daemon_args(queue: &TestQueue, app: &App, codes: &str) -> Vec<String> {
    let mut a = base_args(queue, &app.url());
    a.extend([
        "--dead-letter-codes".into(),
        codes.into(),
        "--error-visibility-timeout".into(),
        ERROR_VISIBILITY_S.to_string(),
        "--visibility-timeout".into(),
        "30".into(),
    ]);
    a
}

/// A 410 puts the message in the dead-letter queue, body and attributes
/// unchanged plus the record, deletes it, and never POSTs it again.
async fn a_listed_answer_dead_letters(fifo: bool) {
    let (worker, dlq) = queues("dl410", fifo, HashMap::new()).await;
    let app = App::start(|_| Reply::status(410)).await;
    let id = send_with_attributes(&worker, "cannot ever work", fifo).await;
    let started = chrono::Utc::now();
    let d = Daemon::start(daemon_args(&worker, &app, "400,410")).await;

    let copy = eventually(WAIT, "the copy in the dead-letter queue", || async {
        receive_all(&dlq).await.into_iter().next()
    })
    .await;
    worker.wait_empty(WAIT).await;

    assert_eq!(copy.body(), Some("cannot ever work"));
    let attrs = copy.message_attributes().cloned().unwrap_or_default();
    assert_eq!(attrs.len(), 5, "{attrs:?}");
    let string = |name: &str| {
        let a = &attrs[name];
        (
            a.data_type().to_string(),
            a.string_value().map(String::from),
        )
    };
    assert_eq!(string("colour"), ("String".into(), Some("blue".into())));
    assert_eq!(string("count"), ("Number".into(), Some("42".into())));
    assert_eq!(string("size"), ("Number.int".into(), Some("-7".into())));
    assert_eq!(attrs["blob"].data_type(), "Binary");
    assert_eq!(
        attrs["blob"].binary_value().map(|b| b.as_ref().to_vec()),
        Some(BINARY.to_vec())
    );
    let record = &attrs["sqsd-dead-letter"];
    assert_eq!(record.data_type(), "String");
    let record: serde_json::Value =
        serde_json::from_str(record.string_value().expect("record text")).expect("record JSON");
    assert_eq!(record["status"], 410, "{record}");
    assert_eq!(record["queue"], worker.name.as_str(), "{record}");
    assert_eq!(record["message_id"], id.as_str(), "{record}");
    assert_eq!(record["receive_count"], 1, "{record}");
    let at = chrono::DateTime::parse_from_rfc3339(record["at"].as_str().expect("at"))
        .expect("at is ISO 8601");
    assert_eq!(at.offset().local_minus_utc(), 0, "at is in UTC: {record}");
    let at = at.with_timezone(&chrono::Utc);
    let now = chrono::Utc::now();
    assert!(
        at >= started - chrono::Duration::seconds(2) && at <= now,
        "at {at} not between {started} and {now}"
    );
    if fifo {
        let system = copy.attributes().cloned().unwrap_or_default();
        let group = system.get(&MessageSystemAttributeName::MessageGroupId);
        assert_eq!(group.map(String::as_str), Some("group-a"), "{system:?}");
        // The copy's deduplication id is the original message id.
        let dedup = system.get(&MessageSystemAttributeName::MessageDeduplicationId);
        assert_eq!(dedup, Some(&id), "{system:?}");
    }

    // Deleted: nothing comes back after error_visibility_timeout has passed
    // several times over.
    tokio::time::sleep(Duration::from_secs(3 * ERROR_VISIBILITY_S + 2)).await;
    assert_eq!(app.for_message(&id).len(), 1, "POSTed again after the copy");
    assert_eq!(worker.depth().await, 0);
    assert!(receive_all(&dlq).await.is_empty(), "a second copy");
    let dead = d
        .metric("sqsd_messages_dead_lettered_total{status=\"410\"}")
        .await;
    assert_eq!(dead, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_410_is_copied_to_the_dead_letter_queue_and_deleted() {
    a_listed_answer_dead_letters(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_410_on_a_fifo_queue_is_copied_with_its_group_and_deleted() {
    a_listed_answer_dead_letters(true).await;
}

/// A dead-letter queue that refuses the copy (its largest message is
/// smaller than this one): the message stays in the worker queue and is
/// POSTed again after error_visibility_timeout.
async fn a_refused_copy_leaves_the_message(fifo: bool) {
    let small = HashMap::from([(QueueAttributeName::MaximumMessageSize, "1024".to_string())]);
    let (worker, dlq) = queues("dlrefuse", fifo, small).await;
    let app = App::start(|_| Reply::status(410)).await;
    let body = "x".repeat(2000);
    let id = send_with_attributes(&worker, &body, fifo).await;
    let d = Daemon::start(daemon_args(&worker, &app, "410")).await;

    let posts = eventually(WAIT, "a second POST of the message", || {
        let posts = app.for_message(&id);
        async move { (posts.len() >= 2).then_some(posts) }
    })
    .await;
    let gap = posts[1].at.duration_since(posts[0].at);
    assert!(
        gap >= Duration::from_secs(ERROR_VISIBILITY_S) - Duration::from_millis(300),
        "retried after {gap:?}, before error_visibility_timeout"
    );
    assert!(posts[1].receive_count() >= 2);
    assert!(d
        .find_log("could not copy the message to the dead-letter queue")
        .is_some());
    let failures = d.metric("sqsd_dead_letter_failures_total").await;
    assert!(failures >= 1.0, "{failures}");
    assert_eq!(
        d.metric("sqsd_messages_dead_lettered_total").await,
        0.0,
        "counted as dead-lettered"
    );
    assert!(receive_all(&dlq).await.is_empty(), "a copy got through");
    assert!(
        worker.depth().await >= 1,
        "the message left the worker queue"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_the_dead_letter_queue_refuses_leaves_the_message_to_be_retried() {
    a_refused_copy_leaves_the_message(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_copy_on_a_fifo_queue_leaves_the_message_to_be_retried() {
    a_refused_copy_leaves_the_message(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_status_not_listed_follows_the_ordinary_path() {
    let (worker, dlq) = queues("dl500", false, HashMap::new()).await;
    let app = App::start(|r| match r.receive_count() {
        1 => Reply::status(500),
        _ => Reply::status(200),
    })
    .await;
    let id = worker.send("flaky").await;
    let d = Daemon::start(daemon_args(&worker, &app, "410")).await;
    worker.wait_empty(WAIT).await;
    let posts = app.for_message(&id);
    assert_eq!(posts.len(), 2, "a 500, then a 200");
    let gap = posts[1].at.duration_since(posts[0].at);
    assert!(
        gap >= Duration::from_secs(ERROR_VISIBILITY_S) - Duration::from_millis(300),
        "retried after {gap:?}"
    );
    assert!(
        receive_all(&dlq).await.is_empty(),
        "a 500 was dead-lettered"
    );
    assert_eq!(d.metric("sqsd_messages_dead_lettered_total").await, 0.0);
}

/// Runs the daemon until it exits by itself (within 30 s): exit code and log.
async fn run_until_exit(args: Vec<String>) -> (Option<i32>, String) {
    let mut child = sqsd_command(&args).spawn().expect("spawn sqsd");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sqsd did not exit within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut log);
    }
    (status.code(), log)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_without_redrive_policy_exits_64_naming_the_setting() {
    let worker = TestQueue::new("dlnone").await;
    let app = App::ok().await;
    let (code, log) = run_until_exit(daemon_args(&worker, &app, "410")).await;
    assert_eq!(code, Some(64), "{log}");
    log.lines()
        .find(|l| l.contains("no redrive policy") && l.contains("dead_letter_codes"))
        .unwrap_or_else(|| panic!("no line on the missing redrive policy:\n{log}"));
    assert!(app.requests().is_empty());

    // Without dead_letter_codes the same queue is fine.
    let d = Daemon::start(base_args(&worker, &app.url())).await;
    d.wait_ready(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_queue_that_is_gone_exits_64_naming_the_setting() {
    let (worker, dlq) = queues("dlgone", false, HashMap::new()).await;
    dlq.client
        .delete_queue()
        .queue_url(&dlq.url)
        .send()
        .await
        .expect("delete the dead-letter queue");
    let app = App::ok().await;
    let (code, log) = run_until_exit(daemon_args(&worker, &app, "410")).await;
    assert_eq!(code, Some(64), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("dead-letter queue") && l.contains("cannot be read"))
        .unwrap_or_else(|| panic!("no line on the unreadable dead-letter queue:\n{log}"));
    assert!(line.contains("dead_letter_codes"), "{line}");
}
