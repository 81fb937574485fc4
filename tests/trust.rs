//! Trust: signed POSTs, the bearer token and SNS envelopes, through the real
//! binary against a real SQS endpoint.
//!
//! Signatures are checked by an implementation independent of ours: the
//! Python verifier printed in the README (Python's `hmac`), run as printed,
//! and the Node one when `node` is installed. SNS tests with a real topic
//! need LocalStack started with SNS (`scripts/test-env.sh`); the embedded
//! endpoint has no SNS, so there hand-built envelopes are sent straight to
//! the queue (those tests run on both).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use base64::Engine;
use common::app::{App, Recorded, Reply};
use common::{
    base_args, endpoint, eventually, run_to_end, scratch_file, sqsd_command, Daemon, TestQueue,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const KEY_A: &str = "sqsd-test-key-A-0123456789abcdef0123456789";
const KEY_B: &str = "sqsd-test-key-B-fedcba9876543210fedcba9876";
const KEY_C: &str = "sqsd-test-key-C-not-configured-anywhere-000";
const TOKEN: &str = "tok_3f9a-7c1e.b2d4~x";

/// One question for a verifier: does `header` sign this POST with one of
/// `keys`, at `now` (unix seconds; `None`: the verifier's own clock)?
struct Case<'a> {
    header: &'a str,
    msgid: &'a str,
    body: &'a [u8],
    keys: &'a [&'a str],
    now: Option<f64>,
}

impl<'a> Case<'a> {
    fn of(r: &'a Recorded, header: &'a str, keys: &'a [&'a str]) -> Case<'a> {
        Case {
            header,
            msgid: header_of(r, "x-aws-sqsd-msgid"),
            body: &r.body,
            keys,
            now: None,
        }
    }

    fn json(&self) -> Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        json!({
            "header": self.header,
            "msgid": self.msgid,
            "body": b64(self.body),
            "keys": self.keys.iter().map(|k| b64(k.as_bytes())).collect::<Vec<_>>(),
            "now": self.now,
        })
    }
}

fn header_of<'a>(r: &'a Recorded, name: &str) -> &'a str {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .unwrap_or("")
}

/// The fenced code block of the README whose first line is `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let start = readme
        .find(&format!("\n{first_line}\n"))
        .unwrap_or_else(|| panic!("README has no code block starting with {first_line:?}"));
    let code = &readme[start + 1..];
    let end = code.find("\n```").expect("end of the code block");
    code[..end + 1].to_string()
}

fn python() -> String {
    std::env::var("SQSD_TEST_PYTHON_JSON").unwrap_or_else(|_| "python3".into())
}

fn node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
}

/// Runs `program script` with the cases as JSON on stdin; the answers.
fn run_verifier(program: &str, script: &Path, cases: &[Case]) -> Vec<bool> {
    let input = Value::Array(cases.iter().map(Case::json).collect()).to_string();
    let mut child = Command::new(program)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write cases");
    }
    let out = child.wait_with_output().expect("verifier output");
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verifier answered {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The README's Python verifier, as printed, on each case.
fn python_verify(cases: &[Case]) -> Vec<bool> {
    let module = scratch_file("sqsd_verify.py", &readme_block("# sqsd_verify.py"));
    let harness = module.with_file_name("harness.py");
    std::fs::write(
        &harness,
        "import base64, json, sys\n\
         from sqsd_verify import verify\n\
         d = base64.b64decode\n\
         print(json.dumps([verify(c['header'], c['msgid'], d(c['body']),\n\
             [d(k) for k in c['keys']], c['now']) for c in json.load(sys.stdin)]))\n",
    )
    .expect("write harness");
    run_verifier(&python(), &harness, cases)
}

/// The README's Node verifier, as printed, on each case; `None` without
/// `node` on this machine.
fn node_verify(cases: &[Case]) -> Option<Vec<bool>> {
    let Some(node) = node() else {
        eprintln!("node is not installed: the README's Node verifier is not run");
        return None;
    };
    let module = scratch_file("sqsd_verify.js", &readme_block("// sqsd_verify.js"));
    let harness = module.with_file_name("harness.js");
    std::fs::write(
        &harness,
        "const { verify } = require('./sqsd_verify.js');\n\
         const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n\
         const d = (s) => Buffer.from(s, 'base64');\n\
         console.log(JSON.stringify(cases.map((c) => c.now === null\n\
           ? verify(c.header, c.msgid, d(c.body), c.keys.map(d))\n\
           : verify(c.header, c.msgid, d(c.body), c.keys.map(d), c.now))));\n",
    )
    .expect("write harness");
    Some(run_verifier(&node.to_string_lossy(), &harness, cases))
}

/// Both verifiers agree with `expected` on every case.
fn assert_verdicts(cases: &[Case], expected: &[bool]) {
    assert_eq!(python_verify(cases), expected, "Python verifier");
    if let Some(verdicts) = node_verify(cases) {
        assert_eq!(verdicts, expected, "Node verifier");
    }
}

/// `t` and the `v1` values of a signature header, checking its shape.
fn parse_signature(header: &str) -> (i64, Vec<String>) {
    let mut parts = header.split(',');
    let t = parts
        .next()
        .and_then(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("{header:?} does not start with t=<seconds>"));
    let v1: Vec<String> = parts
        .map(|p| {
            let v = p
                .strip_prefix("v1=")
                .unwrap_or_else(|| panic!("{header:?}: {p:?} is not v1=<hex>"));
            assert!(
                v.len() == 64
                    && v.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{header:?}: {v:?} is not 64 lower-case hex digits"
            );
            v.to_string()
        })
        .collect();
    (t, v1)
}

fn key_file(keys: &[&str]) -> PathBuf {
    scratch_file("keys", &format!("{}\n", keys.join("\n")))
}

fn args(queue: &TestQueue, app: &App, extra: &[&str]) -> Vec<String> {
    let mut args = base_args(queue, &app.url());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn one_post(app: &App, id: &str) -> Recorded {
    eventually(WAIT, &format!("the POST of {id}"), || {
        let found = app.for_message(id).into_iter().next();
        async move { found }
    })
    .await
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_signed_verifiably_and_carry_the_bearer_token() {
    let queue = TestQueue::new("trust-sign").await;
    let app = App::ok().await;
    let keys = key_file(&[KEY_A]);
    let token = scratch_file("token", &format!("{TOKEN}\n"));
    let _d = Daemon::start(args(
        &queue,
        &app,
        &[
            "--signing-key-file",
            keys.to_str().unwrap(),
            "--app-token-file",
            token.to_str().unwrap(),
        ],
    ))
    .await;
    let body = "h\u{e9}llo \u{1f600}\n{\"x\": [1, 2]}\t";
    let id = queue.send(body).await;
    let before = now_s();
    let r = one_post(&app, &id).await;
    assert_eq!(&r.body[..], body.as_bytes());
    assert_eq!(
        r.header("authorization").as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    let signature = r.header("x-sqsd-signature").expect("X-Sqsd-Signature");
    let (t, v1) = parse_signature(&signature);
    assert_eq!(v1.len(), 1, "{signature}");
    assert!(
        (t - before).abs() <= 60,
        "t={t} is not about now ({before})"
    );

    let tampered = [body.as_bytes(), b" "].concat();
    let cases = [
        // As received, on the verifier's own clock.
        Case::of(&r, &signature, &[KEY_A]),
        // Another body, another message id, another key.
        Case {
            body: &tampered,
            ..Case::of(&r, &signature, &[KEY_A])
        },
        Case {
            body: b"",
            ..Case::of(&r, &signature, &[KEY_A])
        },
        Case {
            msgid: "another-message",
            ..Case::of(&r, &signature, &[KEY_A])
        },
        Case {
            keys: &[KEY_C],
            ..Case::of(&r, &signature, &[KEY_A])
        },
        // Any listed key will do.
        Case {
            keys: &[KEY_C, KEY_A],
            ..Case::of(&r, &signature, &[KEY_A])
        },
        // Within 5 minutes either way, and not beyond.
        Case {
            now: Some((t + 299) as f64),
            ..Case::of(&r, &signature, &[KEY_A])
        },
        Case {
            now: Some((t - 299) as f64),
            ..Case::of(&r, &signature, &[KEY_A])
        },
        Case {
            now: Some((t + 301) as f64),
            ..Case::of(&r, &signature, &[KEY_A])
        },
        Case {
            now: Some((t - 301) as f64),
            ..Case::of(&r, &signature, &[KEY_A])
        },
    ];
    assert_verdicts(
        &cases,
        &[
            true, false, false, false, false, true, true, true, false, false,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_give_two_signatures_each_by_its_own_key() {
    let queue = TestQueue::new("trust-two").await;
    let app = App::ok().await;
    let keys = key_file(&[KEY_A]);
    let mut cmd = sqsd_command(&args(
        &queue,
        &app,
        &["--signing-key-file", keys.to_str().unwrap()],
    ));
    // The file's key first, then the environment's.
    cmd.env("SQSD_SIGNING_KEY", format!(" {KEY_B} ,"));
    let _d = Daemon::start_with(cmd).await;
    let id = queue.send("two keys").await;
    let r = one_post(&app, &id).await;
    let signature = r.header("x-sqsd-signature").expect("X-Sqsd-Signature");
    let (t, v1) = parse_signature(&signature);
    assert_eq!(v1.len(), 2, "{signature}");
    assert_ne!(v1[0], v1[1]);
    let first = format!("t={t},v1={}", v1[0]);
    let second = format!("t={t},v1={}", v1[1]);
    let cases = [
        Case::of(&r, &signature, &[KEY_A]),
        Case::of(&r, &signature, &[KEY_B]),
        Case::of(&r, &signature, &[KEY_C]),
        Case::of(&r, &first, &[KEY_A]),
        Case::of(&r, &first, &[KEY_B]),
        Case::of(&r, &second, &[KEY_B]),
        Case::of(&r, &second, &[KEY_A]),
    ];
    assert_verdicts(&cases, &[true, true, false, true, false, true, false]);
}

#[test]
fn a_signing_key_shorter_than_32_bytes_exits_64_without_showing_it() {
    const Q: &str = "http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/q";
    let short = "k".repeat(31);
    let exact = "k".repeat(32);
    let file = key_file(&[KEY_A, &short]);
    // The daemon itself stops before it calls SQS.
    let (code, _, err) = run_to_end(
        &[
            "--queue-url",
            Q,
            "--signing-key-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 64, "{err}");
    assert!(!err.contains(&short), "a key is shown: {err}");
    let (code, _, err) = run_to_end(
        &[
            "check-config",
            "--queue-url",
            Q,
            "--signing-key-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("signing_key_file") && err.contains("line 2"),
        "{err}"
    );
    assert!(
        !err.contains(&short) && !err.contains(KEY_A),
        "a key is shown: {err}"
    );

    let (code, _, err) = run_to_end(
        &["check-config", "--queue-url", Q],
        &[("SQSD_SIGNING_KEY", &format!("{KEY_A},{short}"))],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("SQSD_SIGNING_KEY"), "{err}");
    assert!(
        !err.contains(&short) && !err.contains(KEY_A),
        "a key is shown: {err}"
    );

    // 32 bytes is enough; the configuration shows a count, not the key.
    let file = key_file(&[&exact]);
    let (code, out, err) = run_to_end(
        &[
            "check-config",
            "--queue-url",
            Q,
            "--signing-key-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signing_keys: 1"), "{out}");
    assert!(!out.contains(&exact), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_picks_up_a_new_key_and_a_bad_file_keeps_the_keys_in_use() {
    let queue = TestQueue::new("trust-hup").await;
    let app = App::ok().await;
    let keys = key_file(&[KEY_A]);
    let d = Daemon::start(args(
        &queue,
        &app,
        &["--signing-key-file", keys.to_str().unwrap()],
    ))
    .await;
    let verdicts = |r: &Recorded| {
        let signature = r.header("x-sqsd-signature").expect("X-Sqsd-Signature");
        let v1 = parse_signature(&signature).1.len();
        let cases = [
            Case::of(r, &signature, &[KEY_A]),
            Case::of(r, &signature, &[KEY_B]),
        ];
        (v1, python_verify(&cases))
    };

    let id = queue.send("before the reload").await;
    assert_eq!(verdicts(&one_post(&app, &id).await), (1, vec![true, false]));

    std::fs::write(&keys, format!("{KEY_B}\n")).expect("rewrite keys");
    d.signal("HUP");
    d.wait_log("signing keys reloaded", WAIT).await;
    let id = queue.send("after the reload").await;
    assert_eq!(verdicts(&one_post(&app, &id).await), (1, vec![false, true]));

    let short = "short-key-never-to-be-logged";
    std::fs::write(&keys, format!("{short}\n")).expect("rewrite keys");
    d.signal("HUP");
    let line = d.wait_log("signing keys not reloaded", WAIT).await;
    assert!(line.contains("32 bytes"), "{line}");
    assert!(!d.log_text().contains(short), "the key was logged");
    let id = queue.send("after a failed reload").await;
    assert_eq!(verdicts(&one_post(&app, &id).await), (1, vec![false, true]));
    assert_eq!(d.admin_get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_task_is_signed_over_the_empty_body() {
    let queue = TestQueue::new("trust-cron").await;
    let app = App::ok().await;
    let keys = key_file(&[KEY_A]);
    let cron = scratch_file(
        "cron.yaml",
        "version: 1\ncron:\n  - name: \"signed-task\"\n    url: \"/tasks/signed\"\n    schedule: \"* * * * * *\"\n",
    );
    let _d = Daemon::start(args(
        &queue,
        &app,
        &[
            "--signing-key-file",
            keys.to_str().unwrap(),
            "--cron-file",
            cron.to_str().unwrap(),
        ],
    ))
    .await;
    let r = eventually(WAIT, "a task POST", || {
        let found = app
            .requests()
            .into_iter()
            .find(|r| r.header("x-aws-sqsd-taskname").as_deref() == Some("signed-task"));
        async move { found }
    })
    .await;
    assert!(r.body.is_empty());
    let signature = r.header("x-sqsd-signature").expect("X-Sqsd-Signature");
    let cases = [
        Case::of(&r, &signature, &[KEY_A]),
        Case {
            body: b"elasticbeanstalk scheduled job",
            ..Case::of(&r, &signature, &[KEY_A])
        },
    ];
    assert_verdicts(&cases, &[true, false]);
}

fn envelope(message: &str, extra: &str) -> String {
    json!({
        "Type": "Notification",
        "MessageId": "sns-hand-built-1",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:hand-built",
        "Message": message,
        "Timestamp": "2024-05-06T07:08:09.123Z",
        "SignatureVersion": "1",
        "Signature": "AAAA",
    })
    .to_string()
    .replacen('{', &format!("{{{extra}"), 1)
}

/// A daemon with `sns_unwrap` and a key, whose application fails the first
/// POST of bodies for which `fail_first` is true.
async fn unwrapping_daemon(
    queue: &TestQueue,
    fail_first: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
) -> (Daemon, App) {
    let failed = Arc::new(AtomicBool::new(false));
    let app = App::start(move |r| {
        if fail_first(&r.body) && !failed.swap(true, Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let keys = key_file(&[KEY_A]);
    let d = Daemon::start(args(
        queue,
        &app,
        &[
            "--sns-unwrap",
            "true",
            "--signing-key-file",
            keys.to_str().unwrap(),
            "--error-visibility-timeout",
            "0",
        ],
    ))
    .await;
    (d, app)
}

const MALFORMED: &str =
    r#"{"Type":"Notification","MessageId":"no-topic","Message":"half an envelope"}"#;

/// The malformed envelope was delivered twice and warned about once.
async fn assert_malformed_logged_once(d: &Daemon, app: &App, id: &str) {
    let posts = eventually(WAIT, "the malformed envelope delivered twice", || {
        let posts = app.for_message(id);
        async move { (posts.len() >= 2).then_some(posts) }
    })
    .await;
    for p in &posts {
        assert_eq!(&p.body[..], MALFORMED.as_bytes(), "passed unchanged");
        assert_eq!(p.header("x-aws-sqsd-sns-message-id"), None);
    }
    let lines: Vec<String> = d
        .logs()
        .into_iter()
        .filter(|l| l.contains("not a usable one") && l.contains(id))
        .collect();
    let warned = lines.iter().filter(|l| l.contains("WARN")).count();
    assert_eq!(warned, 1, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.contains("TopicArn is missing")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_envelopes_are_unwrapped_and_other_bodies_pass_unchanged() {
    let queue = TestQueue::new("trust-sns-hand").await;
    let (d, app) = unwrapping_daemon(&queue, |b| b == MALFORMED.as_bytes()).await;
    let attributes = r#""MessageAttributes":{
        "color":{"Type":"String","Value":"green"},
        "count":{"Type":"Number","Value":"12.5"},
        "blob":{"Type":"Binary","Value":"AAEC"},
        "bad name":{"Type":"String","Value":"x"},
        "evil":{"Type":"String","Value":"a\r\nX-Injected: 1"}},"Subject":"Hello there","#;
    let wrapped = queue
        .send_with(
            &envelope("the inner message \u{e9}", attributes),
            &[("origin", "String", "sqs")],
        )
        .await;
    let plain = queue.send(r#"{"Type":"Order","id":7}"#).await;
    let malformed = queue.send(MALFORMED).await;

    let r = one_post(&app, &wrapped).await;
    assert_eq!(&r.body[..], "the inner message \u{e9}".as_bytes());
    assert_eq!(
        r.header("x-aws-sqsd-sns-topic-arn").as_deref(),
        Some("arn:aws:sns:us-east-1:000000000000:hand-built")
    );
    assert_eq!(
        r.header("x-aws-sqsd-sns-message-id").as_deref(),
        Some("sns-hand-built-1")
    );
    assert_eq!(
        r.header("x-aws-sqsd-sns-timestamp").as_deref(),
        Some("2024-05-06T07:08:09.123Z")
    );
    assert_eq!(
        r.header("x-aws-sqsd-sns-subject").as_deref(),
        Some("Hello there")
    );
    assert_eq!(r.header("x-aws-sqsd-attr-color").as_deref(), Some("green"));
    assert_eq!(r.header("x-aws-sqsd-attr-count").as_deref(), Some("12.5"));
    assert_eq!(r.header("x-aws-sqsd-attr-origin").as_deref(), Some("sqs"));
    assert_eq!(r.header("x-aws-sqsd-attr-blob"), None);
    assert_eq!(r.header("x-injected"), None);
    assert_eq!(r.msgid(), wrapped);
    // Signed over the body sent: the unwrapped message.
    let signature = r.header("x-sqsd-signature").expect("X-Sqsd-Signature");
    let original = envelope("the inner message \u{e9}", attributes);
    let cases = [
        Case::of(&r, &signature, &[KEY_A]),
        Case {
            body: original.as_bytes(),
            ..Case::of(&r, &signature, &[KEY_A])
        },
    ];
    assert_eq!(python_verify(&cases), [true, false]);

    let r = one_post(&app, &plain).await;
    assert_eq!(&r.body[..], br#"{"Type":"Order","id":7}"#);
    assert_eq!(r.header("x-aws-sqsd-sns-topic-arn"), None);

    assert_malformed_logged_once(&d, &app, &malformed).await;
    let dropped = eventually(WAIT, "dropped attributes counted", || async {
        let n = d.metric("sqsd_attributes_dropped_total").await;
        (n >= 2.0).then_some(n)
    })
    .await;
    assert_eq!(dropped, 2.0, "bad name and evil");
}

/// An SNS Query API call on LocalStack; the answer's XML.
async fn sns_call(params: &[(&str, &str)]) -> String {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().copied())
        .append_pair("Version", "2010-03-31")
        .finish();
    // LocalStack routes by the credential scope; it checks no signature.
    let response = reqwest::Client::new()
        .post(endpoint())
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(body)
        .send()
        .await
        .expect("SNS call");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "SNS {params:?}: {status} {text}");
    text
}

fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find('<').expect("closing tag") + start;
    xml[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_sns_topic_is_unwrapped() {
    if !common::is_localstack() {
        eprintln!(
            "the endpoint is not LocalStack: no SNS here; hand-built envelopes are tested instead"
        );
        return;
    }
    let (_, health) = {
        let r = reqwest::get(format!("{}/_localstack/health", endpoint()))
            .await
            .expect("LocalStack health");
        ((), r.text().await.unwrap_or_default())
    };
    let health: Value = serde_json::from_str(&health).unwrap_or_default();
    let sns = health["services"]["sns"].as_str().unwrap_or("absent");
    assert!(
        matches!(sns, "available" | "running"),
        "LocalStack runs without SNS ({sns}): restart it with scripts/test-env.sh, which starts SERVICES=sqs,sns"
    );

    let queue = TestQueue::new("trust-sns-real").await;
    let (d, app) = unwrapping_daemon(&queue, |b| b == MALFORMED.as_bytes()).await;
    let queue_arn = queue.attribute(QueueAttributeName::QueueArn).await;
    let topic = format!("trust-topic-{:08x}", fastrand::u32(..));
    let topic_arn = xml_field(
        &sns_call(&[("Action", "CreateTopic"), ("Name", &topic)]).await,
        "TopicArn",
    );
    sns_call(&[
        ("Action", "Subscribe"),
        ("TopicArn", &topic_arn),
        ("Protocol", "sqs"),
        ("Endpoint", &queue_arn),
    ])
    .await;

    let with_subject = xml_field(
        &sns_call(&[
            ("Action", "Publish"),
            ("TopicArn", &topic_arn),
            ("Message", "first: with a subject"),
            ("Subject", "Greetings"),
            ("MessageAttributes.entry.1.Name", "color"),
            ("MessageAttributes.entry.1.Value.DataType", "String"),
            ("MessageAttributes.entry.1.Value.StringValue", "teal"),
            ("MessageAttributes.entry.2.Name", "size"),
            ("MessageAttributes.entry.2.Value.DataType", "Number"),
            ("MessageAttributes.entry.2.Value.StringValue", "42"),
            ("MessageAttributes.entry.3.Name", "blob"),
            ("MessageAttributes.entry.3.Value.DataType", "Binary"),
            ("MessageAttributes.entry.3.Value.BinaryValue", "AAECAw=="),
        ])
        .await,
        "MessageId",
    );
    let without_subject = xml_field(
        &sns_call(&[
            ("Action", "Publish"),
            ("TopicArn", &topic_arn),
            ("Message", "{\"second\": \"no subject\"}"),
        ])
        .await,
        "MessageId",
    );
    let plain = queue.send("straight to the queue").await;
    let malformed = queue.send(MALFORMED).await;

    let by_sns_id = |sns_id: &str| {
        let sns_id = sns_id.to_string();
        let app = app.clone();
        async move {
            eventually(WAIT, &format!("the POST of SNS message {sns_id}"), || {
                let found = app
                    .requests()
                    .into_iter()
                    .find(|r| r.header("x-aws-sqsd-sns-message-id").as_deref() == Some(&sns_id));
                async move { found }
            })
            .await
        }
    };
    let r = by_sns_id(&with_subject).await;
    assert_eq!(&r.body[..], b"first: with a subject");
    assert_eq!(
        r.header("x-aws-sqsd-sns-topic-arn").as_deref(),
        Some(topic_arn.as_str())
    );
    assert_eq!(
        r.header("x-aws-sqsd-sns-subject").as_deref(),
        Some("Greetings")
    );
    let timestamp = r.header("x-aws-sqsd-sns-timestamp").expect("timestamp");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&timestamp).is_ok(),
        "{timestamp:?}"
    );
    assert_eq!(r.header("x-aws-sqsd-attr-color").as_deref(), Some("teal"));
    assert_eq!(r.header("x-aws-sqsd-attr-size").as_deref(), Some("42"));
    assert_eq!(r.header("x-aws-sqsd-attr-blob"), None);
    let signature = r.header("x-sqsd-signature").expect("X-Sqsd-Signature");
    assert_eq!(python_verify(&[Case::of(&r, &signature, &[KEY_A])]), [true]);

    let r = by_sns_id(&without_subject).await;
    assert_eq!(&r.body[..], b"{\"second\": \"no subject\"}");
    assert_eq!(r.header("x-aws-sqsd-sns-subject"), None);
    assert!(r
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with("x-aws-sqsd-attr-")));

    let r = one_post(&app, &plain).await;
    assert_eq!(&r.body[..], b"straight to the queue");
    assert_eq!(r.header("x-aws-sqsd-sns-topic-arn"), None);
    assert_malformed_logged_once(&d, &app, &malformed).await;
}
