//! SQS behaviours a worker environment relies on, checked against the
//! endpoint under test. The suite runs against LocalStack and against the
//! embedded endpoint, which must give the same answers.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName as Sys,
    QueueAttributeName as Q, SendMessageBatchRequestEntry,
};
use common::{eventually, TestQueue};

async fn receive(
    q: &TestQueue,
    max: i32,
    wait: i32,
    visibility: Option<i32>,
) -> Vec<aws_sdk_sqs::types::Message> {
    q.client
        .receive_message()
        .queue_url(&q.url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait)
        .set_visibility_timeout(visibility)
        .message_system_attribute_names(Sys::All)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

fn sys(m: &aws_sdk_sqs::types::Message, name: Sys) -> String {
    m.attributes
        .as_ref()
        .and_then(|a| a.get(&name))
        .cloned()
        .unwrap_or_default()
}

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn visibility_timeout_per_queue_and_per_receive() {
    let q = TestQueue::with_attributes("vis", HashMap::from([(Q::VisibilityTimeout, "2".into())]))
        .await;
    q.send("a").await;
    let first = receive(&q, 1, 0, None).await;
    assert_eq!(first.len(), 1);
    assert!(
        receive(&q, 1, 0, None).await.is_empty(),
        "hidden right after receive"
    );
    let started = Instant::now();
    let again = receive(&q, 1, 5, Some(1)).await;
    assert_eq!(again.len(), 1, "visible again after the queue's 2 s");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(
        first[0].receipt_handle, again[0].receipt_handle,
        "a new handle per receive"
    );
    assert_eq!(sys(&again[0], Sys::ApproximateReceiveCount), "2");
    assert_eq!(
        sys(&first[0], Sys::ApproximateFirstReceiveTimestamp),
        sys(&again[0], Sys::ApproximateFirstReceiveTimestamp)
    );
    // The per-receive timeout of 1 s applied to the second receive.
    let third = receive(&q, 1, 5, None).await;
    assert_eq!(third.len(), 1);
    assert_eq!(sys(&third[0], Sys::ApproximateReceiveCount), "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_returns_as_soon_as_a_message_arrives() {
    let q = TestQueue::new("longpoll").await;
    let client = q.client.clone();
    let url = q.url.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        client
            .send_message()
            .queue_url(url)
            .message_body("late")
            .send()
            .await
            .unwrap();
        Instant::now()
    });
    let got = receive(&q, 10, 10, None).await;
    let returned = Instant::now();
    let sent = sender.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        returned.duration_since(sent) < Duration::from_millis(800),
        "{:?}",
        returned - sent
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delay_per_queue_and_per_message() {
    let q =
        TestQueue::with_attributes("delay", HashMap::from([(Q::DelaySeconds, "2".into())])).await;
    let sent = Instant::now();
    q.send("queue delay").await;
    q.client
        .send_message()
        .queue_url(&q.url)
        .message_body("no delay")
        .delay_seconds(0)
        .send()
        .await
        .unwrap();
    let first = receive(&q, 10, 1, None).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].body.as_deref(), Some("no delay"));
    let delayed = receive(&q, 10, 5, None).await;
    assert_eq!(delayed.len(), 1);
    assert!(
        sent.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn system_and_message_attributes_round_trip() {
    let q = TestQueue::new("attrs").await;
    let before = chrono::Utc::now().timestamp_millis() - 2000;
    q.client
        .send_message()
        .queue_url(&q.url)
        .message_body("body")
        .message_attributes(
            "s",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("v")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "n",
            MessageAttributeValue::builder()
                .data_type("Number.int")
                .string_value("7")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "b",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![0, 255]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let m = receive(&q, 1, 1, None).await.remove(0);
    let sent: i64 = sys(&m, Sys::SentTimestamp).parse().unwrap();
    assert!(sent >= before && sent <= chrono::Utc::now().timestamp_millis() + 2000);
    assert!(!sys(&m, Sys::SenderId).is_empty());
    assert_eq!(sys(&m, Sys::ApproximateReceiveCount), "1");
    let attrs = m.message_attributes.unwrap_or_default();
    assert_eq!(attrs["s"].string_value.as_deref(), Some("v"));
    assert_eq!(attrs["n"].data_type, "Number.int");
    assert_eq!(
        attrs["b"]
            .binary_value
            .as_ref()
            .map(|b| b.as_ref().to_vec()),
        Some(vec![0, 255])
    );
    assert_eq!(
        m.md5_of_body.as_deref(),
        Some("841a2d689ad86bd1611447453c22c6fc")
    );
    assert!(m.md5_of_message_attributes.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_purge_and_delete() {
    let q = TestQueue::new("counts").await;
    q.send_many(5, |i| format!("m{i}")).await;
    eventually(Duration::from_secs(10), "5 visible", || async {
        (q.attribute(Q::ApproximateNumberOfMessages).await == "5").then_some(())
    })
    .await;
    let got = receive(&q, 2, 0, Some(30)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        q.attribute(Q::ApproximateNumberOfMessagesNotVisible).await,
        "2"
    );
    let entries: Vec<_> = got
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("d{i}"))
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .build()
                .unwrap()
        })
        .collect();
    let out = q
        .client
        .delete_message_batch()
        .queue_url(&q.url)
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.successful.len(), 2);
    assert_eq!(
        q.attribute(Q::ApproximateNumberOfMessagesNotVisible).await,
        "0"
    );
    q.client
        .purge_queue()
        .queue_url(&q.url)
        .send()
        .await
        .unwrap();
    q.wait_empty(Duration::from_secs(70)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redrive_moves_a_message_to_the_dead_letter_queue() {
    let (q, dlq) = TestQueue::with_redrive("redrive", 2).await;
    let id = q.send("poison").await;
    for _ in 0..2 {
        let got = receive(&q, 1, 5, Some(0)).await;
        assert_eq!(got.len(), 1);
    }
    // The third receive finds it past maxReceiveCount: moved, not returned.
    let third = receive(&q, 1, 1, None).await;
    assert!(
        third.is_empty(),
        "a message past maxReceiveCount must not be delivered"
    );
    let moved = receive(&dlq, 1, 5, None).await;
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].message_id.as_deref(), Some(id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_have_aws_codes() {
    let q = TestQueue::new("errors").await;
    let missing = format!("{}-missing", q.url);
    let e = q
        .client
        .send_message()
        .queue_url(&missing)
        .message_body("x")
        .send()
        .await
        .unwrap_err();
    assert!(
        code(&e).contains("NonExistentQueue") || code(&e) == "QueueDoesNotExist",
        "{}",
        code(&e)
    );

    let e = q
        .client
        .delete_message()
        .queue_url(&q.url)
        .receipt_handle("garbage")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ReceiptHandleIsInvalid");

    let entry = |id: &str| {
        SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body("x")
            .build()
            .unwrap()
    };
    let eleven: Vec<_> = (0..11).map(|i| entry(&format!("e{i}"))).collect();
    let bad_batches = [
        (eleven, "TooManyEntriesInBatchRequest"),
        (
            vec![entry("same"), entry("same")],
            "BatchEntryIdsNotDistinct",
        ),
        (vec![entry("bad id!")], "InvalidBatchEntryId"),
    ];
    for (entries, expected) in bad_batches {
        let e = q
            .client
            .send_message_batch()
            .queue_url(&q.url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap_err();
        assert!(code(&e).contains(expected), "{expected}: got {}", code(&e));
    }

    let huge = "x".repeat(262_145);
    let e = q
        .client
        .send_message()
        .queue_url(&q.url)
        .message_body(huge)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterValue");

    let e = q
        .client
        .receive_message()
        .queue_url(&q.url)
        .max_number_of_messages(11)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterValue");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_an_error_and_the_server_keeps_serving() {
    let endpoint = common::endpoint();
    let http = reqwest::Client::new();
    let post = |target: &str, body: &'static str| {
        http.post(&endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", target.to_string())
            .body(body)
            .send()
    };
    // AWS answers both with 400 and an error shape; LocalStack 4.4 answers 500.
    for (target, body, code) in [
        ("AmazonSQS.NoSuchAction", "{}", "UnknownOperation"),
        ("AmazonSQS.ListQueues", "{not json", ""),
    ] {
        let r = post(target, body).await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(text.contains("__type"), "{target}: {text}");
        if common::is_localstack() {
            assert!(status.is_server_error(), "{target}: {status}");
        } else {
            assert_eq!(status.as_u16(), 400, "{target}: {text}");
            assert!(text.contains(code), "{target}: {text}");
        }
    }
    // Still serving.
    let q = TestQueue::new("stillok").await;
    q.send("fine").await;
    assert_eq!(receive(&q, 1, 1, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_orders_groups_locks_them_and_deduplicates() {
    let name = format!("fifo-{:08x}.fifo", fastrand::u32(..));
    let client = common::client();
    let url = client
        .create_queue()
        .queue_name(&name)
        .attributes(Q::FifoQueue, "true")
        .attributes(Q::ContentBasedDeduplication, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let q = TestQueue {
        client: client.clone(),
        url: url.clone(),
        name,
    };
    let send = |body: &'static str, dedup: Option<&'static str>| {
        q.client
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .message_group_id("g")
            .set_message_deduplication_id(dedup.map(String::from))
            .send()
    };
    let mut numbers = Vec::new();
    for body in ["1", "2", "3"] {
        let out = send(body, None).await.unwrap();
        numbers.push(
            out.sequence_number
                .expect("sequence number")
                .parse::<u128>()
                .unwrap(),
        );
    }
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let first = send("dup", Some("same-id")).await.unwrap();
    let again = send("dup, other body", Some("same-id")).await.unwrap();
    assert_eq!(
        first.message_id, again.message_id,
        "deduplicated within 5 minutes"
    );
    let e = q
        .client
        .send_message()
        .queue_url(&url)
        .message_body("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MissingParameter");

    let one = receive(&q, 1, 0, Some(30)).await;
    assert_eq!(one[0].body.as_deref(), Some("1"));
    assert!(
        receive(&q, 1, 0, None).await.is_empty(),
        "group locked while 1 is in flight"
    );
    q.client
        .delete_message()
        .queue_url(&url)
        .receipt_handle(one[0].receipt_handle.clone().unwrap())
        .send()
        .await
        .unwrap();
    let two = receive(&q, 1, 1, Some(30)).await;
    assert_eq!(two[0].body.as_deref(), Some("2"));
    assert_eq!(sys(&two[0], Sys::MessageGroupId), "g");
    q.client
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(two[0].receipt_handle.clone().unwrap())
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let two_again = receive(&q, 1, 1, Some(30)).await;
    assert_eq!(
        two_again[0].body.as_deref(),
        Some("2"),
        "order kept after a retry"
    );
    assert_eq!(sys(&two_again[0], Sys::ApproximateReceiveCount), "2");
    // 2 (in flight), 3 and dup remain: exactly one "dup".
    assert_eq!(q.attribute(Q::ApproximateNumberOfMessages).await, "2");

    // While 2 waits out a visibility timeout, the group stays locked, as
    // AWS documents. LocalStack 4.4 does not always keep it locked (it hands
    // out later messages of the group after some visibility changes), so
    // this is only checked elsewhere.
    q.client
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(two_again[0].receipt_handle.clone().unwrap())
        .visibility_timeout(2)
        .send()
        .await
        .unwrap();
    let during = receive(&q, 10, 0, None).await;
    if !common::is_localstack() {
        assert!(during.is_empty(), "group must stay locked: {during:?}");
    }
}
