//! What the application receives, and how each answer settles the message.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::app::{App, Reply};
use common::{base_args, eventually, Daemon, TestQueue};

const WAIT: Duration = Duration::from_secs(30);

fn args(queue: &TestQueue, app: &App, extra: &[&str]) -> Vec<String> {
    let mut a = base_args(queue, &app.url());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn parse_iso(v: &str) -> DateTime<Utc> {
    assert_eq!(v.len(), 20, "{v:?} is not YYYY-MM-DDTHH:MM:SSZ");
    DateTime::parse_from_rfc3339(v)
        .unwrap_or_else(|e| panic!("{v:?}: {e}"))
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_header_has_its_documented_value() {
    let queue = TestQueue::new("headers").await;
    let app = App::ok().await;
    let before = Utc::now() - chrono::Duration::seconds(2);
    let body = "{\"order\": 42, \"note\": \"caf\u{e9} \u{2603} <&>\"}\n\ttail";
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";
    let sent = queue
        .client
        .send_message()
        .queue_url(&queue.url)
        .message_body(body)
        .message_attributes(
            "color",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("deep blue")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "amount",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("12.50")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "blob",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![0u8, 1, 2, 255]))
                .build()
                .unwrap(),
        )
        .message_system_attributes(
            aws_sdk_sqs::types::MessageSystemAttributeNameForSends::AwsTraceHeader,
            aws_sdk_sqs::types::MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value(trace)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let id = sent.message_id.unwrap();
    let _d = Daemon::start(args(&queue, &app, &["--http-path", "/jobs"])).await;

    let r = app.wait_requests(1, WAIT).await.remove(0);
    let after = Utc::now() + chrono::Duration::seconds(2);
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/jobs");
    assert_eq!(&r.body[..], body.as_bytes(), "body must be byte for byte");
    assert!(r.header("user-agent").unwrap().starts_with("aws-sqsd/"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("x-aws-sqsd-msgid"), Some(id));
    assert_eq!(r.header("x-aws-sqsd-queue"), Some(queue.name.clone()));
    for h in ["x-aws-sqsd-first-received-at", "x-aws-sqsd-sent-at"] {
        let t = parse_iso(&r.header(h).unwrap_or_else(|| panic!("{h} missing")));
        assert!(t >= before && t <= after, "{h} = {t} not near now");
    }
    assert_eq!(r.header("x-aws-sqsd-receive-count").as_deref(), Some("1"));
    assert!(!r
        .header("x-aws-sqsd-sender-id")
        .unwrap_or_default()
        .is_empty());
    assert_eq!(r.header("x-aws-sqsd-path").as_deref(), Some(""));
    assert_eq!(
        r.header("x-aws-sqsd-attr-color").as_deref(),
        Some("deep blue")
    );
    assert_eq!(r.header("x-aws-sqsd-attr-amount").as_deref(), Some("12.50"));
    assert_eq!(
        r.header("x-aws-sqsd-attr-blob"),
        None,
        "Binary attributes are not sent"
    );
    assert_eq!(r.header("x-amzn-trace-id").as_deref(), Some(trace));
    assert_eq!(r.header("x-aws-sqsd-taskname"), None);
    queue.wait_empty(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_200_deletes_and_metrics_count_it() {
    let queue = TestQueue::new("ok200").await;
    let app = App::ok().await;
    let id = queue.send("hello").await;
    let d = Daemon::start(args(&queue, &app, &[])).await;
    app.wait_requests(1, WAIT).await;
    queue.wait_empty(WAIT).await;
    eventually(WAIT, "deleted metric", || async {
        (d.metric("sqsd_messages_deleted_total").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        d.metric("sqsd_messages_delivered_total{outcome=\"success\"}")
            .await,
        1.0
    );
    assert_eq!(app.for_message(&id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_204_is_retried_by_default() {
    let queue = TestQueue::new("no204").await;
    let app = App::start(|r| Reply::status(if r.receive_count() < 2 { 204 } else { 200 })).await;
    let id = queue.send("x").await;
    let _d = Daemon::start(args(&queue, &app, &["--error-visibility-timeout", "1"])).await;
    let seen = app.wait_requests(2, WAIT).await;
    assert!(seen.iter().all(|r| r.msgid() == id));
    assert_eq!(seen[1].receive_count(), 2, "204 must not delete by default");
    queue.wait_empty(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_204_deletes_with_2xx() {
    let queue = TestQueue::new("ok2xx").await;
    let app = App::start(|_| Reply::status(204)).await;
    let id = queue.send("x").await;
    let d = Daemon::start(args(
        &queue,
        &app,
        &["--success-codes", "2xx", "--error-visibility-timeout", "1"],
    ))
    .await;
    app.wait_requests(1, WAIT).await;
    queue.wait_empty(WAIT).await;
    assert_eq!(app.for_message(&id).len(), 1);
    assert_eq!(d.metric("sqsd_messages_deleted_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_500_comes_back_after_error_visibility_timeout() {
    let queue = TestQueue::new("err500").await;
    let app = App::start(|r| Reply::status(if r.receive_count() < 2 { 500 } else { 200 })).await;
    let id = queue.send("x").await;
    let d = Daemon::start(args(
        &queue,
        &app,
        &["--error-visibility-timeout", "3", "--log-format", "json"],
    ))
    .await;
    let seen = app.wait_requests(2, WAIT).await;
    assert_eq!(seen[0].msgid(), id);
    assert_eq!(seen[1].msgid(), id);
    assert_eq!(seen[1].receive_count(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(2500),
        "came back after {gap:?}, expected ~3s"
    );
    assert!(
        gap < Duration::from_secs(15),
        "came back after {gap:?}, expected ~3s"
    );
    queue.wait_empty(WAIT).await;

    // One JSON log line for the failure, with id, receive count, status and duration.
    let line = d.wait_log("delivery failed", WAIT).await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(v["message_id"], serde_json::json!(id));
    assert_eq!(v["receive_count"], serde_json::json!(1));
    assert_eq!(v["status"], serde_json::json!(500));
    assert!(v["duration_ms"].is_u64(), "{line}");
    assert_eq!(v["level"], "WARN");
}

#[tokio::test(flavor = "multi_thread")]
async fn response_slower_than_inactivity_timeout_comes_back() {
    let queue = TestQueue::new("slow").await;
    let app = App::start(|r| {
        let reply = Reply::status(200);
        if r.receive_count() < 2 {
            reply.after(Duration::from_secs(4))
        } else {
            reply
        }
    })
    .await;
    let id = queue.send("x").await;
    let d = Daemon::start(args(
        &queue,
        &app,
        &[
            "--inactivity-timeout",
            "1",
            "--error-visibility-timeout",
            "1",
        ],
    ))
    .await;
    let seen = app.wait_requests(2, WAIT).await;
    assert!(seen.iter().all(|r| r.msgid() == id));
    assert_eq!(seen[1].receive_count(), 2);
    queue.wait_empty(WAIT).await;
    assert_eq!(
        d.metric("sqsd_messages_delivered_total{outcome=\"timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_429_waits_for_retry_after() {
    let queue = TestQueue::new("r429").await;
    let app = App::start(|r| {
        if r.receive_count() < 2 {
            Reply::status(429).header("retry-after", "4")
        } else {
            Reply::status(200)
        }
    })
    .await;
    let id = queue.send("x").await;
    // Without Retry-After the message would come back at once.
    let d = Daemon::start(args(&queue, &app, &["--error-visibility-timeout", "0"])).await;
    let seen = app.wait_requests(2, WAIT).await;
    assert!(seen.iter().all(|r| r.msgid() == id));
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(3500),
        "came back after {gap:?}, expected ~4s"
    );
    queue.wait_empty(WAIT).await;
    assert_eq!(
        d.metric("sqsd_messages_delivered_total{outcome=\"retry_after\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_message_path_is_followed_only_when_it_is_a_path() {
    let queue = TestQueue::new("paths").await;
    let app = App::ok().await;
    let good = queue
        .send_with(
            "g",
            &[("beanstalk.sqsd.path", "String", "/custom/route?x=1")],
        )
        .await;
    let mut bad = Vec::new();
    for p in [
        "//evil.example/x",
        "http://evil.example/x",
        "https://evil.example",
        "/\\evil.example",
    ] {
        bad.push(
            queue
                .send_with("b", &[("beanstalk.sqsd.path", "String", p)])
                .await,
        );
    }
    let d = Daemon::start(args(
        &queue,
        &app,
        &[
            "--error-visibility-timeout",
            "30",
            "--mime-type",
            "text/plain; charset=utf-8",
        ],
    ))
    .await;
    let seen = app.wait_requests(1, WAIT).await;
    assert_eq!(seen[0].msgid(), good);
    assert_eq!(seen[0].target, "/custom/route?x=1");
    assert_eq!(
        seen[0].header("x-aws-sqsd-path").as_deref(),
        Some("/custom/route?x=1")
    );
    assert_eq!(
        seen[0].header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    eventually(WAIT, "four refused paths counted", || async {
        (d.metric("sqsd_messages_delivered_total{outcome=\"refused_path\"}")
            .await
            == 4.0)
            .then_some(())
    })
    .await;
    for id in &bad {
        assert!(
            app.for_message(id).is_empty(),
            "a refused path reached the application"
        );
    }
    assert_eq!(app.count(), 1);
    // The good one is deleted; the refused ones are failed, not deleted.
    eventually(WAIT, "only the four refused messages left", || async {
        (queue.depth().await == 4).then_some(())
    })
    .await;
    assert_eq!(app.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn message_paths_never_leave_the_worker_urls_base_path() {
    let queue = TestQueue::new("dots").await;
    let app = App::ok().await;
    let mut bad = Vec::new();
    for p in [
        "/../admin/delete-all",
        "/%2e%2e/internal",
        "/a/..%2f..%2fx",
        "/..;/x",
    ] {
        bad.push(
            queue
                .send_with("b", &[("beanstalk.sqsd.path", "String", p)])
                .await,
        );
    }
    let good = queue
        .send_with("g", &[("beanstalk.sqsd.path", "String", "/jobs/run")])
        .await;
    let worker = format!("{}/api", app.url());
    let mut a = base_args(&queue, &worker);
    a.extend(["--error-visibility-timeout".into(), "30".into()]);
    let d = Daemon::start(a).await;
    eventually(WAIT, "the dotted paths refused", || async {
        (d.metric("sqsd_messages_delivered_total{outcome=\"refused_path\"}")
            .await
            == 4.0)
            .then_some(())
    })
    .await;
    let seen = app.wait_requests(1, WAIT).await;
    assert_eq!(
        seen.len(),
        1,
        "{:?}",
        seen.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert_eq!(seen[0].msgid(), good);
    assert_eq!(seen[0].target, "/api/jobs/run");
    for id in &bad {
        assert!(app.for_message(id).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn header_injection_is_dropped_and_message_still_delivered() {
    let queue = TestQueue::new("inject").await;
    let app = App::ok().await;
    let id = queue
        .send_with(
            "payload",
            &[
                ("evil", "String", "a\r\nX-Injected: yes"),
                ("lf", "String", "line1\nline2"),
                ("fine", "String", "kept"),
            ],
        )
        .await;
    let d = Daemon::start(args(&queue, &app, &[])).await;
    let r = app.wait_requests(1, WAIT).await.remove(0);
    assert_eq!(r.msgid(), id);
    assert_eq!(&r.body[..], b"payload");
    assert_eq!(r.header("x-injected"), None);
    assert_eq!(r.header("x-aws-sqsd-attr-evil"), None);
    assert_eq!(r.header("x-aws-sqsd-attr-lf"), None);
    assert_eq!(r.header("x-aws-sqsd-attr-fine").as_deref(), Some("kept"));
    queue.wait_empty(WAIT).await;
    assert_eq!(
        d.metric("sqsd_attributes_dropped_total{reason=\"bad_value\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn periodic_task_message_in_eb_format_is_delivered_to_its_path() {
    let queue = TestQueue::new("task").await;
    let app = App::ok().await;
    let id = queue
        .send_with(
            "elasticbeanstalk scheduled job",
            &[
                ("beanstalk.sqsd.path", "String", "/backup"),
                ("beanstalk.sqsd.task_name", "String", "backup-job"),
                (
                    "beanstalk.sqsd.scheduled_time",
                    "String",
                    "2019-11-14 00:47:00 UTC",
                ),
            ],
        )
        .await;
    let _d = Daemon::start(args(&queue, &app, &[])).await;
    let r = app.wait_requests(1, WAIT).await.remove(0);
    assert_eq!(r.msgid(), id);
    assert_eq!(r.target, "/backup");
    assert!(r.body.is_empty(), "task POST must have an empty body");
    assert_eq!(
        r.header("x-aws-sqsd-taskname").as_deref(),
        Some("backup-job")
    );
    assert_eq!(
        r.header("x-aws-sqsd-scheduled-at").as_deref(),
        Some("2019-11-14T00:47:00Z")
    );
    assert_eq!(r.header("x-aws-sqsd-path").as_deref(), Some("/backup"));
    assert!(r
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with("x-aws-sqsd-attr-beanstalk")));
    queue.wait_empty(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_are_batched() {
    let queue = TestQueue::new("batch").await;
    let app = App::ok().await;
    let ids = queue.send_many(100, |i| format!("m{i}")).await;
    // A linger long enough that every delete finds nine others to go with,
    // except the few left over when a batch goes out at the linger.
    let d = Daemon::start(args(&queue, &app, &["--batch-linger", "1s"])).await;
    queue.wait_empty(Duration::from_secs(60)).await;
    let delivered: std::collections::HashSet<String> =
        app.requests().iter().map(|r| r.msgid()).collect();
    assert!(ids.iter().all(|id| delivered.contains(id)));
    let deletes = d
        .metric("sqsd_sqs_requests_total{action=\"DeleteMessageBatch\"")
        .await;
    let seconds = app
        .requests()
        .last()
        .zip(app.requests().first())
        .map(|(l, f)| (l.at - f.at).as_secs_f64())
        .unwrap_or(0.0);
    // Ten full batches, plus at most one partial batch per linger period
    // the deliveries spanned (and one for the tail).
    let allowed = 10.0 + (seconds / 1.0).ceil() + 1.0;
    assert!(
        deletes >= 10.0 && deletes <= allowed,
        "{deletes} delete calls for 100 messages delivered over {seconds:.1} s (allowed {allowed})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_worker_queue_keeps_group_order_through_a_failure() {
    let client = common::client();
    let name = format!("worker-{:08x}.fifo", fastrand::u32(..));
    let url = client
        .create_queue()
        .queue_name(&name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::ContentBasedDeduplication,
            "true",
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = TestQueue {
        client: client.clone(),
        url: url.clone(),
        name,
    };
    for i in 1..=5 {
        client
            .send_message()
            .queue_url(&url)
            .message_body(format!("{i}"))
            .message_group_id("orders")
            .send()
            .await
            .unwrap();
    }
    // Message 2 fails on its first delivery.
    let app = App::start(|r| {
        let fail = &r.body[..] == b"2" && r.receive_count() < 2;
        Reply::status(if fail { 500 } else { 200 })
    })
    .await;
    let _d = Daemon::start(args(&queue, &app, &["--error-visibility-timeout", "1"])).await;
    queue.wait_empty(WAIT).await;
    let order: Vec<u32> = app
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).parse().unwrap())
        .collect();
    assert!((1..=5).all(|k| order.contains(&k)), "{order:?}");
    if common::is_localstack() {
        // LocalStack 4.4 hands out later messages of a group while an
        // earlier one waits out its visibility timeout (AWS documents that
        // the group stays locked), so order cannot hold there.
        return;
    }
    for k in 1..5u32 {
        let last_k = order.iter().rposition(|&x| x == k).expect("delivered");
        let first_next = order.iter().position(|&x| x == k + 1).expect("delivered");
        assert!(
            last_k < first_next,
            "{} before {k} was done: {order:?}",
            k + 1
        );
    }
    assert_eq!(order.iter().filter(|&&x| x == 2).count(), 2, "{order:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_entry_sqs_refuses_is_logged_and_counted() {
    let queue = TestQueue::new("refused").await;
    // The application fails the message, but only after the queue has been
    // purged: the visibility change then names a message that is gone, and
    // SQS refuses that entry of the batch.
    let app = App::start(|_| Reply::status(500).after(Duration::from_secs(2))).await;
    let id = queue.send("purged while in flight").await;
    let d = Daemon::start(args(&queue, &app, &["--log-format", "json"])).await;
    app.wait_requests(1, WAIT).await;
    queue
        .client
        .purge_queue()
        .queue_url(&queue.url)
        .send()
        .await
        .expect("purge");
    let line = d.wait_log("could not change visibility", WAIT).await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(v["message_id"], serde_json::json!(id), "{line}");
    assert!(
        v["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{line}"
    );
    let counted = d
        .metric("sqsd_settle_failures_total{action=\"ChangeMessageVisibilityBatch\"}")
        .await;
    assert_eq!(counted, 1.0);
    assert_eq!(app.count(), 1, "a purged message is not delivered again");
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_names_differing_in_case_give_one_header_and_tabs_pass() {
    let queue = TestQueue::new("attrcase").await;
    let app = App::ok().await;
    let id = queue
        .send_with(
            "payload",
            &[
                ("foo", "String", "lower"),
                ("FOO", "String", "upper"),
                ("Foo", "String", "title"),
                ("tabbed", "String", "a\tb"),
            ],
        )
        .await;
    let d = Daemon::start(args(&queue, &app, &[])).await;
    let r = app.wait_requests(1, WAIT).await.remove(0);
    assert_eq!(r.msgid(), id);
    let foo: Vec<String> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "x-aws-sqsd-attr-foo")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    // One header, from the first name in byte order ("FOO" < "Foo" < "foo").
    assert_eq!(foo, vec!["upper".to_string()]);
    assert_eq!(r.header("x-aws-sqsd-attr-tabbed").as_deref(), Some("a\tb"));
    queue.wait_empty(WAIT).await;
    assert_eq!(
        d.metric("sqsd_attributes_dropped_total{reason=\"duplicate_name\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn task_attributes_on_an_ordinary_body_keep_the_body() {
    let queue = TestQueue::new("notask").await;
    let app = App::ok().await;
    queue
        .send_with(
            "a real body",
            &[
                ("beanstalk.sqsd.path", "String", "/jobs"),
                ("beanstalk.sqsd.task_name", "String", "looks-like-a-task"),
                (
                    "beanstalk.sqsd.scheduled_time",
                    "String",
                    "2026-01-01 00:00:00 UTC",
                ),
            ],
        )
        .await;
    let _d = Daemon::start(args(&queue, &app, &[])).await;
    let r = app.wait_requests(1, WAIT).await.remove(0);
    assert_eq!(r.target, "/jobs");
    assert_eq!(&r.body[..], b"a real body");
    queue.wait_empty(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_retry_after_is_clamped_to_twelve_hours() {
    let queue = TestQueue::new("hugeretry").await;
    let app =
        App::start(|_| Reply::status(429).header("retry-after", "99999999999999999999999")).await;
    queue.send("x").await;
    let d = Daemon::start(args(&queue, &app, &["--error-visibility-timeout", "1"])).await;
    app.wait_requests(1, WAIT).await;
    let line = d
        .wait_log("delivery failed; message will be visible again", WAIT)
        .await;
    assert!(line.contains("retry_in_s=43200"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_kb_path_is_refused_as_too_long() {
    let queue = TestQueue::new("longpath").await;
    let app = App::ok().await;
    let path = format!("/{}", "a".repeat(100 * 1024));
    queue
        .send_with("x", &[("beanstalk.sqsd.path", "String", &path)])
        .await;
    let d = Daemon::start(args(&queue, &app, &["--error-visibility-timeout", "600"])).await;
    let line = d
        .wait_log("refusing the message's beanstalk.sqsd.path", WAIT)
        .await;
    assert!(line.contains("longer than"), "{line}");
    assert_eq!(app.count(), 0);
}
