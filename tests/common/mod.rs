//! Test harness: a real SQS-compatible endpoint (LocalStack, or any server
//! named by `SQSD_TEST_SQS_ENDPOINT`), a recording application on loopback,
//! the real `sqsd` binary as a child process, and a TCP proxy that can cut
//! the daemon off from SQS.
#![allow(dead_code)]

pub mod app;
pub mod proxy;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

/// The endpoint the suite talks to; set by `scripts/test.sh`.
pub fn endpoint() -> String {
    std::env::var("SQSD_TEST_SQS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SQSD_TEST_SQS_ENDPOINT is not set: run the suite with scripts/test.sh, \
             which installs and starts LocalStack"
        )
    })
}

/// moto's DynamoDB endpoint for the periodic-task table; set by `scripts/test.sh`.
pub fn dynamodb_endpoint() -> String {
    std::env::var("SQSD_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SQSD_TEST_DYNAMODB_ENDPOINT is not set: run the suite with scripts/test.sh, \
             which installs and starts moto's server"
        )
    })
}

/// A DynamoDB client on moto's endpoint.
pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(dynamodb_endpoint())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// Writes `text` to a file of its own under the test scratch directory.
pub fn scratch_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sqsd-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write scratch file");
    path
}

/// Whether the endpoint under test is LocalStack (`SQSD_TEST_SQS_KIND`), for
/// the few places where LocalStack is known to differ from AWS's documentation.
pub fn is_localstack() -> bool {
    std::env::var("SQSD_TEST_SQS_KIND").is_ok_and(|k| k == "localstack")
}

pub fn client() -> Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint())
        .build();
    Client::from_conf(conf)
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A queue of the test's own, deleted when the test ends.
pub struct TestQueue {
    pub client: Client,
    pub url: String,
    pub name: String,
}

impl TestQueue {
    pub async fn new(prefix: &str) -> TestQueue {
        Self::with_attributes(prefix, HashMap::new()).await
    }

    pub async fn with_attributes(
        prefix: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> TestQueue {
        Self::named(&format!("{prefix}-{:08x}", fastrand::u32(..)), attributes).await
    }

    /// A queue named exactly `name` (the caller makes it unique).
    pub async fn named(name: &str, attributes: HashMap<QueueAttributeName, String>) -> TestQueue {
        let client = client();
        let out = client
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .expect("create queue");
        TestQueue {
            client,
            url: out.queue_url.expect("queue url"),
            name: name.to_string(),
        }
    }

    /// A FIFO queue (deduplication ids required: no content-based dedup).
    pub async fn fifo(prefix: &str) -> TestQueue {
        let client = client();
        let name = format!("{prefix}-{:08x}.fifo", fastrand::u32(..));
        let out = client
            .create_queue()
            .queue_name(&name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .expect("create FIFO queue");
        TestQueue {
            client,
            url: out.queue_url.expect("queue url"),
            name,
        }
    }

    /// A queue and its dead-letter queue, with maxReceiveCount `max`.
    pub async fn with_redrive(prefix: &str, max: u32) -> (TestQueue, TestQueue) {
        let dlq = TestQueue::new(&format!("{prefix}-dlq")).await;
        let arn = dlq.attribute(QueueAttributeName::QueueArn).await;
        let policy = format!("{{\"deadLetterTargetArn\":\"{arn}\",\"maxReceiveCount\":\"{max}\"}}");
        let redrive = HashMap::from([(QueueAttributeName::RedrivePolicy, policy)]);
        (Self::with_attributes(prefix, redrive).await, dlq)
    }

    pub async fn attribute(&self, name: QueueAttributeName) -> String {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(name.clone())
            .send()
            .await
            .expect("get attributes");
        out.attributes
            .unwrap_or_default()
            .remove(&name)
            .unwrap_or_default()
    }

    pub async fn send(&self, body: &str) -> String {
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .expect("send");
        out.message_id.expect("message id")
    }

    pub async fn send_with(&self, body: &str, attrs: &[(&str, &str, &str)]) -> String {
        let mut call = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        for (name, data_type, value) in attrs {
            let mut v = aws_sdk_sqs::types::MessageAttributeValue::builder().data_type(*data_type);
            v = if data_type.starts_with("Binary") {
                v.binary_value(aws_sdk_sqs::primitives::Blob::new(value.as_bytes()))
            } else {
                v.string_value(*value)
            };
            call = call.message_attributes(*name, v.build().expect("attribute"));
        }
        call.send()
            .await
            .expect("send")
            .message_id
            .expect("message id")
    }

    /// Sends `n` messages in batches of ten; returns their ids.
    pub async fn send_many(&self, n: usize, body: impl Fn(usize) -> String) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for start in (0..n).step_by(10) {
            let mut call = self.client.send_message_batch().queue_url(&self.url);
            for i in start..(start + 10).min(n) {
                call = call.entries(
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .message_body(body(i))
                        .build()
                        .expect("entry"),
                );
            }
            let out = call.send().await.expect("send batch");
            assert!(out.failed.is_empty(), "batch send failed: {:?}", out.failed);
            ids.extend(out.successful.into_iter().map(|s| s.message_id));
        }
        ids
    }

    /// Visible plus in-flight messages, as SQS counts them.
    pub async fn depth(&self) -> u64 {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("get attributes");
        out.attributes
            .unwrap_or_default()
            .values()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .sum()
    }

    /// Waits until the queue holds no message at all.
    pub async fn wait_empty(&self, within: Duration) {
        eventually(within, "queue to be empty", || async {
            (self.depth().await == 0).then_some(())
        })
        .await
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let client = self.client.clone();
        let url = self.url.clone();
        // Best effort; LocalStack is torn down after the suite anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = client.delete_queue().queue_url(url).send().await;
            });
        }
    }
}

/// The real `sqsd` binary running as a child process.
pub struct Daemon {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub admin: Option<String>,
}

/// Arguments every test daemon gets unless it overrides them.
pub fn base_args(queue: &TestQueue, worker: &str) -> Vec<String> {
    vec![
        "--queue-url".into(),
        queue.url.clone(),
        "--worker-url".into(),
        worker.into(),
        "--admin-addr".into(),
        "127.0.0.1:0".into(),
        "--log-level".into(),
        "debug".into(),
    ]
}

pub fn sqsd_command(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sqsd"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL_SQS", endpoint());
    if let Ok(dynamodb) = std::env::var("SQSD_TEST_DYNAMODB_ENDPOINT") {
        cmd.env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

impl Daemon {
    /// Starts the daemon and waits until its admin listener is up.
    pub async fn start(args: Vec<String>) -> Daemon {
        Self::start_with(sqsd_command(&args)).await
    }

    pub async fn start_with(mut cmd: Command) -> Daemon {
        let mut child = cmd.spawn().expect("spawn sqsd");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("SQSD_TEST_ECHO").is_some() {
                    eprintln!("[sqsd] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut d = Daemon {
            child,
            logs,
            admin: None,
        };
        let addr = eventually(Duration::from_secs(20), "admin address in the log", || {
            let found = d
                .find_log("admin endpoints listening")
                .map(|l| admin_addr_in(&l));
            let exited = d.child.try_wait().ok().flatten();
            if let Some(status) = exited {
                panic!("sqsd exited early ({status}); log:\n{}", d.log_text());
            }
            async move { found }
        })
        .await;
        d.admin = Some(addr);
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    pub fn find_log(&self, needle: &str) -> Option<String> {
        self.logs().into_iter().find(|l| l.contains(needle))
    }

    pub async fn wait_log(&self, needle: &str, within: Duration) -> String {
        eventually(within, &format!("log line containing {needle:?}"), || {
            let found = self.find_log(needle);
            async move { found }
        })
        .await
    }

    /// GET on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let url = format!(
            "http://{}{path}",
            self.admin.as_deref().expect("admin address")
        );
        match reqwest::get(&url).await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    /// Sum of every sample of a metric whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn wait_ready(&self, within: Duration) {
        eventually(within, "/readyz to answer 200", || async {
            (self.admin_get("/readyz").await.0 == 200).then_some(())
        })
        .await
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "sqsd did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `addr` field of a log line, text (`addr=A`) or JSON (`"addr":"A"`).
fn admin_addr_in(line: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v["addr"].as_str().unwrap_or_default().to_string();
    }
    let at = line.find("addr=").map_or(line.len(), |i| i + 5);
    line[at..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Runs `sqsd` to completion with `args`; returns exit code and stderr.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut cmd = sqsd_command(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sqsd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
