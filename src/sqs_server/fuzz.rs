//! Property tests of both protocols' request handling: whatever bytes a
//! caller sends (random, deeply nested, huge, well-formed with values of
//! every type), the answer is a success or an AWS-shaped error, never a
//! panic, a stack overflow or a 5xx.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

use super::api::Api;
use super::store::Store;
use crate::time::SystemClock;

const URL: &str = "http://sqs.test/000000000000/q";
const FIFO_URL: &str = "http://sqs.test/000000000000/f.fifo";

const ACTIONS: &[&str] = &[
    "CreateQueue",
    "GetQueueUrl",
    "ListQueues",
    "GetQueueAttributes",
    "SetQueueAttributes",
    "PurgeQueue",
    "TagQueue",
    "UntagQueue",
    "ListQueueTags",
    "SendMessage",
    "SendMessageBatch",
    "ReceiveMessage",
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "NoSuchAction",
];

/// Parts of real Query parameter names, so that random names often reach
/// the translation's deeper paths.
const NAME_PARTS: &[&str] = &[
    "QueueUrl",
    "QueueName",
    "MessageBody",
    "Attribute",
    "AttributeName",
    "MessageAttribute",
    "MessageAttributeName",
    "MessageSystemAttribute",
    "SendMessageBatchRequestEntry",
    "DeleteMessageBatchRequestEntry",
    "Tag",
    "TagKey",
    "Name",
    "Value",
    "Key",
    "DataType",
    "StringValue",
    "BinaryValue",
    "Id",
    "ReceiptHandle",
    "VisibilityTimeout",
    "WaitTimeSeconds",
    "MaxNumberOfMessages",
    "DelaySeconds",
    "MaxResults",
    "1",
    "2",
    "10",
    "18446744073709551616",
    "",
];

fn api() -> Api {
    let api = Api {
        store: Store::new("http://sqs.test"),
        clock: Arc::new(SystemClock),
    };
    for (name, fifo) in [("q", false), ("f.fifo", true)] {
        let settings = super::store::Settings {
            fifo,
            content_based_dedup: fifo,
            ..Default::default()
        };
        let created = api
            .store
            .create(name, settings, Default::default(), SystemClock.now_ms());
        assert!(created.is_ok());
    }
    api
}

use crate::time::Clock;

/// Time paused, so that long polls in random requests end at once.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// A success, or a 4xx in the protocol's error shape.
async fn check(response: Response<Full<Bytes>>, json: bool) -> Result<(), TestCaseError> {
    let status = response.status().as_u16();
    let body = match response.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => match e {},
    };
    let text = String::from_utf8_lossy(&body);
    prop_assert!(
        status == 200 || status == 400 || status == 403,
        "status {status}: {text}"
    );
    if status != 200 {
        if json {
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| TestCaseError::fail(format!("error body not JSON: {e}")))?;
            prop_assert!(v["__type"].is_string(), "{text}");
        } else {
            prop_assert!(text.contains("<ErrorResponse"), "{text}");
            prop_assert!(text.contains("<Code>"), "{text}");
        }
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~é\u{1}]{0,12}".prop_map(Value::from),
        Just(json!(URL)),
        Just(json!("All")),
        Just(json!("String")),
        Just(json!("Number")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(NAME_PARTS).prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[test]
fn json_requests_of_any_shape_get_a_success_or_an_aws_error() {
    let rt = runtime();
    let api = api();
    let strategy = (
        prop::sample::select(ACTIONS),
        prop::collection::btree_map(
            prop::sample::select(NAME_PARTS).prop_map(String::from),
            any_json(),
            0..6,
        ),
        prop::sample::select(&[URL, FIFO_URL][..]),
    );
    runner(400)
        .run(&strategy, |(action, members, url)| {
            let mut doc: Map<String, Value> = members.into_iter().collect();
            doc.entry("QueueUrl").or_insert(json!(url));
            let body = Value::Object(doc).to_string();
            let target = format!("AmazonSQS.{action}");
            rt.block_on(async {
                check(
                    super::answer(&api, Some(&target), "", body.as_bytes()).await,
                    true,
                )
                .await
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn random_bytes_get_a_success_or_an_aws_error_in_both_protocols() {
    let rt = runtime();
    let api = api();
    let strategy = (
        prop::sample::select(ACTIONS),
        prop::collection::vec(any::<u8>(), 0..2048),
        any::<bool>(),
    );
    runner(400)
        .run(&strategy, |(action, bytes, json)| {
            rt.block_on(async {
                if json {
                    let target = format!("AmazonSQS.{action}");
                    check(super::answer(&api, Some(&target), "", &bytes).await, true).await
                } else {
                    let mut body = format!("Action={action}&").into_bytes();
                    body.extend_from_slice(&bytes);
                    check(super::answer(&api, None, "", &body).await, false).await
                }
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn query_requests_with_any_names_get_a_success_or_an_aws_error() {
    let rt = runtime();
    let api = api();
    let name = prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(NAME_PARTS).prop_map(String::from),
            1 => "[a-zA-Z0-9]{0,6}",
        ],
        1..12,
    )
    .prop_map(|parts| parts.join("."));
    let value = prop_oneof![
        Just(URL.to_string()),
        Just(FIFO_URL.to_string()),
        "[ -~é]{0,16}",
        any::<u32>().prop_map(|n| n.to_string()),
    ];
    let strategy = (
        prop::sample::select(ACTIONS),
        prop::collection::vec((name, value), 0..40),
    );
    runner(400)
        .run(&strategy, |(action, pairs)| {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action);
            form.append_pair("QueueUrl", URL);
            for (k, v) in &pairs {
                form.append_pair(k, v);
            }
            let body = form.finish();
            rt.block_on(async {
                check(super::answer(&api, None, "", body.as_bytes()).await, false).await
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn deep_and_huge_requests_get_an_aws_error() {
    let rt = runtime();
    let api = api();
    let strategy = (0usize..40_000, 0u8..4);
    runner(48)
        .run(&strategy, |(n, kind)| {
            rt.block_on(async {
                match kind {
                    0 => {
                        let body = format!("{}{}", "[".repeat(n), "]".repeat(n));
                        let r =
                            super::answer(&api, Some("AmazonSQS.ListQueues"), "", body.as_bytes());
                        check(r.await, true).await
                    }
                    1 => {
                        let body = format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
                        let r =
                            super::answer(&api, Some("AmazonSQS.SendMessage"), "", body.as_bytes());
                        check(r.await, true).await
                    }
                    2 => {
                        let body = format!("Action=ListQueues&{}a=1", "a.".repeat(n));
                        check(super::answer(&api, None, "", body.as_bytes()).await, false).await
                    }
                    _ => {
                        // Many parameters, in the query string and the body.
                        let pairs = "x=1&".repeat(n);
                        let query = format!("Action=ListQueues&{pairs}");
                        check(
                            super::answer(&api, None, &query, pairs.as_bytes()).await,
                            false,
                        )
                        .await
                    }
                }
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // The request that used to abort the server, exactly.
    let body = format!("Action=ListQueues&{}a=1", "a.".repeat(8000));
    let r = rt.block_on(super::answer(&api, None, "", body.as_bytes()));
    assert_eq!(r.status().as_u16(), 400);
    // A huge body of one value, within the server's body bound.
    let body = format!(
        "{{\"QueueUrl\":\"{URL}\",\"MessageBody\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    let r = rt.block_on(super::answer(
        &api,
        Some("AmazonSQS.SendMessage"),
        "",
        body.as_bytes(),
    ));
    assert_eq!(r.status().as_u16(), 400, "larger than the queue's maximum");
}
