//! Request signing, checked by an independent implementation: a proxy in
//! front of the SQS endpoint recomputes every request's SigV4 signature with
//! botocore's signer and refuses any that does not match, as AWS would.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::app::{App, Reply};
use common::{base_args, endpoint, eventually, run_to_end, sqsd_command, Daemon, TestQueue};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "AKIASQSDTESTKEY00001";
const SECRET: &str = "sqsd/test+secret=key/0123456789abcdef";
const TOKEN: &str = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+test/token==";

/// The checking proxy (`tests/sdk/sigv4_check_proxy.py`), killed on drop.
struct CheckProxy {
    child: Child,
    port: u16,
}

impl CheckProxy {
    /// `skew_s`: how far the proxy's clock runs ahead of this machine's.
    fn start(skew_s: i64) -> CheckProxy {
        let dir = std::env::var("SQSD_TEST_TOOLS")
            .expect("SQSD_TEST_TOOLS is not set: run the suite with scripts/test.sh");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sdk/sigv4_check_proxy.py"
        );
        let mut child = Command::new(format!("{dir}/python"))
            .args([script, &endpoint(), KEY, SECRET, TOKEN, "us-east-1"])
            .arg(skew_s.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the checking proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("proxy's first line");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the proxy: {line:?}"));
        CheckProxy { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn report(&self) -> Value {
        reqwest::get(format!("{}/__report", self.url()))
            .await
            .expect("report")
            .text()
            .await
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .expect("report JSON")
    }
}

impl Drop for CheckProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signed_command(args: &[String], secret: &str) -> Command {
    let mut cmd = sqsd_command(args);
    cmd.env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", TOKEN);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_the_daemon_signs_verifies_independently() {
    let proxy = CheckProxy::start(0);
    let queue = TestQueue::new("sig").await;
    // The first delivery of "retry me" fails, so a visibility batch goes out.
    let app = App::start(|r| {
        let first_try = r.receive_count() <= 1;
        Reply::status(if first_try && &r.body[..] == b"retry me" {
            500
        } else {
            200
        })
    })
    .await;
    queue.send_many(12, |i| format!("m{i}")).await;
    queue.send("retry me").await;
    let mut args = base_args(&queue, &app.url());
    args.extend([
        "--endpoint-url".into(),
        proxy.url(),
        "--error-visibility-timeout".into(),
        "0".into(),
    ]);
    let _daemon = Daemon::start_with(signed_command(&args, SECRET)).await;
    queue.wait_empty(WAIT).await;

    let report = eventually(WAIT, "a visibility batch through the proxy", || async {
        let r = proxy.report().await;
        r["verified"]["AmazonSQS.ChangeMessageVisibilityBatch"]
            .as_u64()
            .is_some()
            .then_some(r)
    })
    .await;
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
    for target in [
        "AmazonSQS.GetQueueAttributes",
        "AmazonSQS.ReceiveMessage",
        "AmazonSQS.DeleteMessageBatch",
        "AmazonSQS.ChangeMessageVisibilityBatch",
    ] {
        assert!(
            report["verified"][target].as_u64().unwrap_or(0) >= 1,
            "{target} was not seen signed: {report}"
        );
    }
    assert!(app.count() >= 14, "13 messages, one delivered twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_caught_by_the_checker() {
    // The control: a signature made with another secret must fail the check,
    // and the daemon must stop on the refusal as it would on AWS's.
    let proxy = CheckProxy::start(0);
    let queue = TestQueue::new("sigbad").await;
    let args = [
        "--queue-url",
        &queue.url,
        "--worker-url",
        "http://127.0.0.1:9",
        "--endpoint-url",
        &proxy.url(),
    ];
    let (code, _, stderr) = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_to_end(
                &args,
                &[
                    ("AWS_ACCESS_KEY_ID", KEY),
                    ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
                    ("AWS_SESSION_TOKEN", TOKEN),
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("SignatureDoesNotMatch"), "{stderr}");
    let report = proxy.report().await;
    assert!(
        report["failures"][0]
            .as_str()
            .is_some_and(|f| f.contains("signature mismatch")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clock_far_off_from_sqs_is_corrected_from_its_answers() {
    // SQS's clock 15 minutes ahead: every request signed with this machine's
    // time is refused as expired until the daemon signs with SQS's time.
    let proxy = CheckProxy::start(15 * 60);
    let queue = TestQueue::new("skew").await;
    let app = App::ok().await;
    queue.send_many(10, |i| format!("m{i}")).await;
    let mut args = base_args(&queue, &app.url());
    args.extend(["--endpoint-url".into(), proxy.url()]);
    let daemon = Daemon::start_with(signed_command(&args, SECRET)).await;
    queue.wait_empty(WAIT).await;
    assert_eq!(app.count(), 10);

    let report = proxy.report().await;
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
    // The direct calls were refused at first, then learned SQS's clock.
    assert!(
        report["expired"]["AmazonSQS.ReceiveMessage"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{report}"
    );
    for target in ["AmazonSQS.ReceiveMessage", "AmazonSQS.DeleteMessageBatch"] {
        assert!(
            report["verified"][target].as_u64().is_some_and(|n| n >= 1),
            "{target}: {report}"
        );
    }
    daemon
        .wait_log("clock is off from SQS", Duration::from_secs(5))
        .await;
}
