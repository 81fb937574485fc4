//! The actions' semantics on a fixed clock: FIFO group locks, redrive
//! policies and moves, retention, purge, pagination and input checks, as
//! AWS documents them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::api::Api;
use super::error::ApiError;
use super::store::Store;
use crate::time::Clock;

/// A clock the test moves by hand.
#[derive(Default)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Fixture {
    api: Api,
    clock: Arc<ManualClock>,
}

impl Fixture {
    fn new() -> Fixture {
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        Fixture {
            api: Api {
                store: Store::new("http://sqs.test"),
                clock: clock.clone(),
            },
            clock,
        }
    }

    fn advance_s(&self, s: i64) {
        self.clock.0.fetch_add(s * 1000, Ordering::SeqCst);
    }

    async fn call(&self, action: &str, doc: Value) -> Result<Value, ApiError> {
        let Value::Object(doc) = doc else {
            panic!("a document must be an object")
        };
        self.api.call(action, &doc).await
    }

    async fn ok(&self, action: &str, doc: Value) -> Value {
        match self.call(action, doc).await {
            Ok(v) => v,
            Err(e) => panic!("{action}: {} {}", e.code, e.message),
        }
    }

    async fn refused(&self, action: &str, doc: Value) -> ApiError {
        match self.call(action, doc).await {
            Ok(v) => panic!("{action} must be refused, got {v}"),
            Err(e) => e,
        }
    }

    async fn create(&self, name: &str, attributes: Value) -> (String, String) {
        let out = self
            .ok(
                "CreateQueue",
                json!({"QueueName": name, "Attributes": attributes}),
            )
            .await;
        let url = out["QueueUrl"].as_str().unwrap_or_default().to_string();
        let attrs = self
            .ok(
                "GetQueueAttributes",
                json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]}),
            )
            .await;
        let arn = attrs["Attributes"]["QueueArn"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (url, arn)
    }

    async fn send(&self, url: &str, body: &str) -> String {
        let out = self
            .ok("SendMessage", json!({"QueueUrl": url, "MessageBody": body}))
            .await;
        out["MessageId"].as_str().unwrap_or_default().to_string()
    }

    /// Received messages (wait 0).
    async fn receive(&self, url: &str, visibility: u32) -> Vec<Value> {
        let out = self
            .ok(
                "ReceiveMessage",
                json!({"QueueUrl": url, "MaxNumberOfMessages": 10,
                       "VisibilityTimeout": visibility, "WaitTimeSeconds": 0}),
            )
            .await;
        out["Messages"].as_array().cloned().unwrap_or_default()
    }

    async fn count(&self, url: &str, name: &str) -> String {
        let out = self
            .ok(
                "GetQueueAttributes",
                json!({"QueueUrl": url, "AttributeNames": [name]}),
            )
            .await;
        out["Attributes"][name]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn redrive(arn: &str, max: u32) -> Value {
    json!({"RedrivePolicy": json!({"deadLetterTargetArn": arn, "maxReceiveCount": max}).to_string()})
}

#[tokio::test]
async fn fifo_group_unlocks_when_deleted_after_its_visibility_ran_out() {
    let f = Fixture::new();
    let (url, _) = f
        .create(
            "g.fifo",
            json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"}),
        )
        .await;
    for body in ["1", "2"] {
        f.ok(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": body, "MessageGroupId": "g"}),
        )
        .await;
    }
    let out = f
        .ok(
            "ReceiveMessage",
            json!({"QueueUrl": url, "MaxNumberOfMessages": 1, "VisibilityTimeout": 5}),
        )
        .await;
    let first = out["Messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["Body"], "1");
    // Locked while "1" is in flight.
    assert!(f.receive(&url, 5).await.is_empty());
    // The visibility runs out; nothing looks at the queue before the delete.
    f.advance_s(6);
    let handle = first[0]["ReceiptHandle"].as_str().unwrap_or_default();
    f.ok(
        "DeleteMessage",
        json!({"QueueUrl": url, "ReceiptHandle": handle}),
    )
    .await;
    let next = f.receive(&url, 5).await;
    assert_eq!(next.len(), 1, "the group must not stay locked");
    assert_eq!(next[0]["Body"], "2");
}

#[tokio::test]
async fn self_and_cyclic_redrive_policies_are_refused() {
    let f = Fixture::new();
    let (a, a_arn) = f.create("a", json!({})).await;
    let (b, b_arn) = f.create("b", json!({})).await;
    let e = f
        .refused(
            "SetQueueAttributes",
            json!({"QueueUrl": a, "Attributes": redrive(&a_arn, 1)}),
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue", "{}", e.message);
    f.ok(
        "SetQueueAttributes",
        json!({"QueueUrl": a, "Attributes": redrive(&b_arn, 1)}),
    )
    .await;
    let e = f
        .refused(
            "SetQueueAttributes",
            json!({"QueueUrl": b, "Attributes": redrive(&a_arn, 1)}),
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue", "{}", e.message);
    // A longer cycle: a -> b -> c -> a.
    let (c, c_arn) = f.create("c", json!({})).await;
    f.ok(
        "SetQueueAttributes",
        json!({"QueueUrl": b, "Attributes": redrive(&c_arn, 1)}),
    )
    .await;
    let e = f
        .refused(
            "SetQueueAttributes",
            json!({"QueueUrl": c, "Attributes": redrive(&a_arn, 1)}),
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue", "{}", e.message);
    // CreateQueue checks the same way.
    let e = f
        .refused(
            "CreateQueue",
            json!({"QueueName": "fifo-dlq-of-standard.fifo",
                   "Attributes": {"FifoQueue": "true", "RedrivePolicy":
                       json!({"deadLetterTargetArn": a_arn, "maxReceiveCount": 1}).to_string()}}),
        )
        .await;
    assert_eq!(e.code, "InvalidParameterValue", "{}", e.message);
}

/// A loop that got in anyway (set below the checks) still never moves a
/// message without a delivery: a queue never dead-letters to itself, and a
/// message moved in must be received there before it moves on.
#[tokio::test]
async fn a_message_never_moves_in_a_loop() {
    let f = Fixture::new();
    let (a, a_arn) = f.create("a", json!({})).await;
    let (b, b_arn) = f.create("b", json!({})).await;
    let force = |name: &str, arn: &str| {
        let q = f.api.store.get(name).expect("queue");
        let mut s = q.settings();
        s.redrive = Some(("{}".into(), arn.to_string(), 1));
        q.set_settings(s, 0);
    };
    force("a", &a_arn);
    f.send(&a, "self").await;
    assert_eq!(f.receive(&a, 0).await.len(), 1);
    let again = f.receive(&a, 0).await;
    assert_eq!(again.len(), 1, "a queue is not its own dead-letter queue");
    assert_eq!(again[0]["Body"], "self");
    f.ok("PurgeQueue", json!({"QueueUrl": a})).await;

    force("a", &b_arn);
    force("b", &a_arn);
    f.send(&a, "bounce").await;
    assert_eq!(f.receive(&a, 0).await.len(), 1);
    assert!(f.receive(&a, 0).await.is_empty(), "moved to b");
    let in_b = f.receive(&b, 0).await;
    assert_eq!(in_b.len(), 1, "delivered from b before moving on");
    assert_eq!(in_b[0]["Body"], "bounce");
}

#[tokio::test]
async fn a_message_stays_when_its_dead_letter_queue_is_gone() {
    let f = Fixture::new();
    let (dlq, dlq_arn) = f.create("gone-dlq", json!({})).await;
    let (q, _) = f.create("src", redrive(&dlq_arn, 1)).await;
    f.send(&q, "keep me").await;
    assert_eq!(f.receive(&q, 0).await.len(), 1);
    f.ok("DeleteQueue", json!({"QueueUrl": dlq})).await;
    let again = f.receive(&q, 0).await;
    assert_eq!(again.len(), 1, "kept in the source queue, as AWS does");
    assert_eq!(again[0]["Body"], "keep me");
}

#[tokio::test]
async fn unread_messages_expire_after_the_retention_period() {
    let f = Fixture::new();
    let (unread, _) = f
        .create("unread", json!({"MessageRetentionPeriod": "60"}))
        .await;
    let (busy, _) = f.create("busy", json!({})).await;
    f.send(&unread, "old").await;
    f.advance_s(30);
    f.send(&unread, "newer").await;
    assert!(f.api.store.stored_bytes() > 0);
    f.advance_s(31);
    // Traffic on another queue sweeps this one.
    f.send(&busy, "x").await;
    let busy_bytes = f.api.store.stored_bytes();
    assert_eq!(f.count(&unread, "ApproximateNumberOfMessages").await, "1");
    f.advance_s(30);
    f.receive(&busy, 30).await;
    assert!(
        f.api.store.stored_bytes() < busy_bytes,
        "the last unread message is dropped by the sweep"
    );
    assert_eq!(f.count(&unread, "ApproximateNumberOfMessages").await, "0");
}

#[tokio::test]
async fn stored_messages_are_bounded() {
    let f = Fixture {
        api: Api {
            store: Store::new("http://sqs.test").with_memory_limit(64 * 1024),
            clock: Arc::new(ManualClock::default()),
        },
        clock: Arc::new(ManualClock::default()),
    };
    let (q, _) = f.create("full", json!({})).await;
    let body = "x".repeat(10_000);
    let mut sent = 0;
    let e = loop {
        match f
            .call("SendMessage", json!({"QueueUrl": q, "MessageBody": body}))
            .await
        {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100, "never refused");
    };
    assert_eq!((e.code, e.status), ("OverLimit", 403), "{}", e.message);
    assert!((5..=6).contains(&sent), "{sent}");
    // Room comes back with deletes.
    f.ok("PurgeQueue", json!({"QueueUrl": q})).await;
    f.send(&q, "fits again").await;
}

#[tokio::test]
async fn purge_twice_within_a_minute_is_refused() {
    let f = Fixture::new();
    let (q, _) = f.create("purge", json!({})).await;
    f.ok("PurgeQueue", json!({"QueueUrl": q})).await;
    f.advance_s(59);
    let e = f.refused("PurgeQueue", json!({"QueueUrl": q})).await;
    assert_eq!(e.shape, "PurgeQueueInProgress");
    assert_eq!(e.code, "AWS.SimpleQueueService.PurgeQueueInProgress");
    f.advance_s(1);
    f.ok("PurgeQueue", json!({"QueueUrl": q})).await;
}

#[tokio::test]
async fn list_queues_pages_with_next_token() {
    let f = Fixture::new();
    for i in 0..5 {
        f.create(&format!("page-{i}"), json!({})).await;
    }
    f.create("other", json!({})).await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut doc = json!({"QueueNamePrefix": "page-", "MaxResults": 2});
        if let Some(t) = &token {
            doc["NextToken"] = json!(t);
        }
        let out = f.ok("ListQueues", doc).await;
        let urls = out["QueueUrls"].as_array().cloned().unwrap_or_default();
        assert!(urls.len() <= 2);
        seen.extend(urls.iter().filter_map(|u| u.as_str().map(String::from)));
        token = out
            .get("NextToken")
            .and_then(Value::as_str)
            .map(String::from);
        if token.is_none() {
            break;
        }
    }
    let names: Vec<&str> = seen
        .iter()
        .map(|u| u.rsplit('/').next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["page-0", "page-1", "page-2", "page-3", "page-4"]);
    // Without MaxResults there is no NextToken, as AWS documents.
    let all = f.ok("ListQueues", json!({})).await;
    assert_eq!(all["QueueUrls"].as_array().map(Vec::len), Some(6));
    assert!(all.get("NextToken").is_none());
    for bad in [json!({"MaxResults": 0}), json!({"MaxResults": 1001})] {
        f.refused("ListQueues", bad).await;
    }
}

async fn send_attr(
    f: &Fixture,
    url: &str,
    name: &str,
    data_type: &str,
    value: &str,
) -> Result<Value, ApiError> {
    f.call(
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "b",
               "MessageAttributes": {name: {"DataType": data_type, "StringValue": value}}}),
    )
    .await
}

#[tokio::test]
async fn message_attribute_names_follow_aws_rules() {
    let f = Fixture::new();
    let (q, _) = f.create("names", json!({})).await;
    let long = "a".repeat(257);
    for bad in [
        "",
        " a",
        "a b",
        "AWS.x",
        "aws.x",
        "Amazon.y",
        "AMAZON.z",
        ".a",
        "a.",
        "a..b",
        "é",
        long.as_str(),
    ] {
        let e = send_attr(&f, &q, bad, "String", "v").await.err();
        assert_eq!(
            e.map(|e| e.code),
            Some("InvalidParameterValue"),
            "name {bad:?}"
        );
    }
    let max = "a".repeat(256);
    for good in ["a", "a-b_c.d", "AWSx", "Amazonian", max.as_str()] {
        assert!(
            send_attr(&f, &q, good, "String", "v").await.is_ok(),
            "{good:?}"
        );
    }
    // Empty values and over-long data types are refused too.
    assert!(send_attr(&f, &q, "n", "String", "").await.is_err());
    let long_type = format!("String.{}", "t".repeat(250));
    assert!(send_attr(&f, &q, "n", &long_type, "v").await.is_err());
}

#[tokio::test]
async fn number_attributes_must_be_numbers_in_range() {
    let f = Fixture::new();
    let (q, _) = f.create("numbers", json!({})).await;
    let digits38 = "9".repeat(38);
    let digits39 = "9".repeat(39);
    for good in [
        "0",
        "-1.5",
        "+5",
        "1e126",
        "1E-128",
        "0.000",
        "007",
        "1.",
        ".5",
        &digits38,
        "12345678901234567890123456789012345678000000",
    ] {
        let r = send_attr(&f, &q, "n", "Number", good).await;
        assert!(r.is_ok(), "{good:?}: {:?}", r.err());
    }
    for bad in [
        "abc",
        "",
        " 5",
        "5 ",
        "0x10",
        "NaN",
        "Infinity",
        "1e127",
        "2e126",
        "1e-129",
        "1e",
        "--1",
        "1.2.3",
        "1e99999999999999999999",
        &digits39,
    ] {
        let r = send_attr(&f, &q, "n", "Number.custom", bad).await;
        assert_eq!(
            r.err().map(|e| e.code),
            Some("InvalidParameterValue"),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn batch_of_more_than_256_kib_in_total_is_refused() {
    let f = Fixture::new();
    let (q, _) = f.create("big-batch", json!({})).await;
    let body = "x".repeat(30_000);
    let entries: Vec<Value> = (0..9)
        .map(|i| json!({"Id": format!("e{i}"), "MessageBody": body}))
        .collect();
    let e = f
        .refused(
            "SendMessageBatch",
            json!({"QueueUrl": q, "Entries": entries}),
        )
        .await;
    assert_eq!(e.shape, "BatchRequestTooLong");
    assert_eq!(e.code, "AWS.SimpleQueueService.BatchRequestTooLong");
    assert_eq!(f.count(&q, "ApproximateNumberOfMessages").await, "0");
    let entries: Vec<Value> = (0..8)
        .map(|i| json!({"Id": format!("e{i}"), "MessageBody": body}))
        .collect();
    f.ok(
        "SendMessageBatch",
        json!({"QueueUrl": q, "Entries": entries}),
    )
    .await;
}

#[tokio::test]
async fn fifo_ids_are_at_most_128_allowed_characters() {
    let f = Fixture::new();
    let (q, _) = f.create("ids.fifo", json!({"FifoQueue": "true"})).await;
    let send = |group: String, dedup: String| {
        f.call(
            "SendMessage",
            json!({"QueueUrl": q, "MessageBody": "b",
                   "MessageGroupId": group, "MessageDeduplicationId": dedup}),
        )
    };
    let ok = "a".repeat(128);
    let long = "a".repeat(129);
    assert!(send(ok.clone(), ok.clone()).await.is_ok());
    assert!(
        send("g".into(), "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".into())
            .await
            .is_ok()
    );
    for (group, dedup) in [
        (long.clone(), "d".to_string()),
        ("g".to_string(), long.clone()),
        ("g".to_string(), "with space".to_string()),
        ("grüppe".to_string(), "d".to_string()),
    ] {
        let e = send(group.clone(), dedup.clone()).await.err();
        assert_eq!(
            e.as_ref().map(|e| e.code),
            Some("InvalidParameterValue"),
            "{group:?} {dedup:?}"
        );
        assert!(e.is_some_and(|e| e.message.len() < 400), "value echoed cut");
    }
}

#[tokio::test]
async fn boolean_queue_attributes_must_be_true_or_false() {
    let f = Fixture::new();
    for (name, attrs) in [
        (
            "cbd.fifo",
            json!({"FifoQueue": "true", "ContentBasedDeduplication": "maybe"}),
        ),
        ("fifo-maybe.fifo", json!({"FifoQueue": "maybe"})),
        ("sse", json!({"SqsManagedSseEnabled": "yes"})),
    ] {
        let e = f
            .refused(
                "CreateQueue",
                json!({"QueueName": name, "Attributes": attrs}),
            )
            .await;
        assert_eq!(e.code, "InvalidAttributeValue", "{name}: {}", e.message);
    }
    let (q, _) = f
        .create(
            "cbd2.fifo",
            json!({"FifoQueue": "TRUE", "ContentBasedDeduplication": "False"}),
        )
        .await;
    let e = f
        .refused(
            "SetQueueAttributes",
            json!({"QueueUrl": q, "Attributes": {"ContentBasedDeduplication": "1"}}),
        )
        .await;
    assert_eq!(e.code, "InvalidAttributeValue");
}

#[tokio::test]
async fn wrong_json_types_are_refused() {
    let f = Fixture::new();
    let (q, _) = f.create("types", json!({})).await;
    for (action, doc) in [
        (
            "ReceiveMessage",
            json!({"QueueUrl": q, "MaxNumberOfMessages": "5"}),
        ),
        (
            "ReceiveMessage",
            json!({"QueueUrl": q, "AttributeNames": "All"}),
        ),
        (
            "ReceiveMessage",
            json!({"QueueUrl": q, "AttributeNames": [5]}),
        ),
        (
            "SendMessage",
            json!({"QueueUrl": q, "MessageBody": "x", "DelaySeconds": "5"}),
        ),
        (
            "SendMessage",
            json!({"QueueUrl": q, "MessageBody": "x", "MessageAttributes": []}),
        ),
        ("SendMessage", json!({"QueueUrl": q, "MessageBody": 5})),
        ("SendMessageBatch", json!({"QueueUrl": q, "Entries": {}})),
        ("SendMessageBatch", json!({"QueueUrl": q, "Entries": [5]})),
        ("GetQueueAttributes", json!({"QueueUrl": 5})),
        (
            "CreateQueue",
            json!({"QueueName": "t", "Attributes": {"DelaySeconds": 5}}),
        ),
        ("TagQueue", json!({"QueueUrl": q, "Tags": ["a"]})),
        ("ListQueues", json!({"MaxResults": 1.5})),
    ] {
        let e = f.refused(action, doc.clone()).await;
        assert_eq!(e.status, 400, "{action} {doc}");
        assert_eq!(
            e.shape, "SerializationException",
            "{action} {doc}: {}",
            e.message
        );
    }
}

#[tokio::test]
async fn queue_url_by_name_is_found_only_for_this_account() {
    let f = Fixture::new();
    let (url, _) = f.create("dlq", json!({})).await;
    let found = f
        .ok(
            "GetQueueUrl",
            json!({"QueueName": "dlq", "QueueOwnerAWSAccountId": "000000000000"}),
        )
        .await;
    assert_eq!(found["QueueUrl"], json!(url));
    let found = f.ok("GetQueueUrl", json!({"QueueName": "dlq"})).await;
    assert_eq!(found["QueueUrl"], json!(url));
    let e = f
        .refused(
            "GetQueueUrl",
            json!({"QueueName": "dlq", "QueueOwnerAWSAccountId": "123456789012"}),
        )
        .await;
    assert_eq!(e.code, ApiError::no_queue().code);
}
