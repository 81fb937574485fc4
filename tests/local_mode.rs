//! `sqsd local` end to end: the binary serves its own SQS endpoint, creates
//! the worker queue and its dead-letter queue, and delivers what an SDK
//! sends to it. Needs no external SQS.

mod common;

use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use common::app::{App, Reply};
use common::{sqsd_command, Daemon};

fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("any", "any", None, None, "tests"))
            .endpoint_url(endpoint)
            .build(),
    )
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    let out = sqs.get_queue_url().queue_name(name).send().await;
    out.unwrap_or_else(|e| panic!("queue {name}: {e:?}"))
        .queue_url
        .expect("url")
}

async fn start_local(app: &App, extra: &[&str]) -> (Daemon, String) {
    let mut args: Vec<String> = [
        "local",
        "--sqs-listen",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--worker-url".into(), app.url()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = sqsd_command(&args);
    // Local mode needs no AWS settings at all.
    cmd.env_remove("AWS_ENDPOINT_URL_SQS")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_REGION");
    let d = Daemon::start_with(cmd).await;
    let line = d
        .wait_log("SQS endpoint http", Duration::from_secs(10))
        .await;
    let endpoint = line.split_whitespace().last().unwrap_or("").to_string();
    (d, endpoint)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_mode_delivers_what_an_sdk_sends() {
    let app = App::ok().await;
    let (d, endpoint) = start_local(&app, &["--http-path", "/work"]).await;
    assert!(
        d.find_log("aws --region us-east-1 --endpoint-url")
            .is_some(),
        "{}",
        d.log_text()
    );
    let sqs = client(&endpoint);
    let url = queue_url(&sqs, "worker-queue").await;
    let sent = sqs
        .send_message()
        .queue_url(&url)
        .message_body("{\"hello\":1}")
        .send()
        .await
        .unwrap();

    let r = app
        .wait_requests(1, Duration::from_secs(20))
        .await
        .remove(0);
    assert_eq!(r.target, "/work");
    assert_eq!(&r.body[..], b"{\"hello\":1}");
    assert_eq!(r.header("x-aws-sqsd-msgid"), sent.message_id);
    assert_eq!(
        r.header("x-aws-sqsd-queue").as_deref(),
        Some("worker-queue")
    );
    d.wait_ready(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_mode_dead_letters_after_max_retries() {
    let app = App::start(|_| Reply::status(500)).await;
    let (_d, endpoint) = start_local(
        &app,
        &["--max-retries", "2", "--error-visibility-timeout", "0"],
    )
    .await;
    let sqs = client(&endpoint);
    let url = queue_url(&sqs, "worker-queue").await;
    let dlq = queue_url(&sqs, "worker-queue-dlq").await;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let policy = attrs
        .get(&QueueAttributeName::RedrivePolicy)
        .cloned()
        .unwrap_or_default();
    assert!(
        policy.contains("worker-queue-dlq") && policy.contains("\"2\""),
        "{policy}"
    );

    let id = sqs
        .send_message()
        .queue_url(&url)
        .message_body("x")
        .send()
        .await
        .unwrap()
        .message_id;
    common::eventually(
        Duration::from_secs(20),
        "message in the dead-letter queue",
        || async {
            let got = sqs
                .receive_message()
                .queue_url(&dlq)
                .wait_time_seconds(1)
                .send()
                .await
                .ok()?
                .messages
                .unwrap_or_default();
            got.into_iter().find(|m| m.message_id == id).map(|_| ())
        },
    )
    .await;
    assert_eq!(
        app.requests().len(),
        2,
        "delivered exactly max_retries times"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_server_creates_the_queues_declared_in_the_file() {
    use std::io::{BufRead, BufReader};
    let file = std::env::temp_dir().join(format!("sqsd-queues-{:x}.yaml", fastrand::u64(..)));
    std::fs::write(
        &file,
        "queues:\n  - name: orders\n    attributes: {VisibilityTimeout: 7, DelaySeconds: 1}\n    \
         dead_letter: {queue: orders-dlq, max_receive_count: 3}\n    tags: {team: core}\n",
    )
    .unwrap();
    let args: Vec<String> = [
        "sqs-server",
        "--sqs-listen",
        "127.0.0.1:0",
        "--config",
        file.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = sqsd_command(&args).spawn().expect("spawn");
    let stderr = child.stderr.take().unwrap();
    let endpoint = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("endpoint at ")
                    .nth(1)
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            })
    })
    .await
    .unwrap()
    .expect("endpoint line");
    let sqs = client(&endpoint);
    let url = queue_url(&sqs, "orders").await;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    assert_eq!(attrs[&QueueAttributeName::VisibilityTimeout], "7");
    assert_eq!(attrs[&QueueAttributeName::DelaySeconds], "1");
    assert!(attrs[&QueueAttributeName::RedrivePolicy].contains("orders-dlq"));
    let tags = sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default();
    assert_eq!(tags.get("team").map(String::as_str), Some("core"));
    assert!(sqs
        .get_queue_url()
        .queue_name("orders-dlq")
        .send()
        .await
        .is_ok());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(file);
}
