//! SQS refusing whole batch calls for their credentials or their signature
//! (expired session tokens, a clock off from AWS's): the daemon retries
//! them, with fresh credentials or corrected time, instead of dropping every
//! entry of the batch. A proxy in front of the real endpoint refuses the
//! calls a test names, as AWS would, and passes everything else on.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use common::app::App;
use common::{base_args, endpoint, eventually, Daemon, TestQueue};

const WAIT: Duration = Duration::from_secs(30);

/// The proxy; see the module documentation.
struct Refuser {
    url: String,
    /// `(X-Amz-Target, error code, refusals left)`.
    plan: Arc<Mutex<Vec<(String, String, usize)>>>,
    /// `(X-Amz-Target, status answered)` of every call, in order.
    calls: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Refuser {
    async fn start() -> Refuser {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let refuser = Refuser {
            url: format!("http://{}", listener.local_addr().expect("addr")),
            plan: Arc::default(),
            calls: Arc::default(),
        };
        let (plan, calls) = (refuser.plan.clone(), refuser.calls.clone());
        let upstream = endpoint();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (plan, calls) = (plan.clone(), calls.clone());
                let (upstream, http) = (upstream.clone(), http.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (plan, calls) = (plan.clone(), calls.clone());
                        let (upstream, http) = (upstream.clone(), http.clone());
                        async move {
                            let answer = pass_or_refuse(req, &plan, &upstream, &http).await;
                            let target = answer.1;
                            calls
                                .lock()
                                .unwrap()
                                .push((target, answer.0.status().as_u16()));
                            Ok::<_, Infallible>(answer.0)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        refuser
    }

    /// Refuses the next `times` calls to `target` with error `code`.
    fn refuse(&self, target: &str, code: &str, times: usize) {
        self.plan
            .lock()
            .unwrap()
            .push((target.into(), code.into(), times));
    }

    /// The statuses answered to calls to `target`, in order.
    fn answered(&self, target: &str) -> Vec<u16> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, s)| *s)
            .collect()
    }
}

/// The answer to one call, and its `X-Amz-Target`.
async fn pass_or_refuse(
    req: hyper::Request<hyper::body::Incoming>,
    plan: &Mutex<Vec<(String, String, usize)>>,
    upstream: &str,
    http: &reqwest::Client,
) -> (hyper::Response<Full<Bytes>>, String) {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let refusal = {
        let mut plan = plan.lock().unwrap();
        plan.iter_mut()
            .find(|(t, _, left)| *t == target && *left > 0)
            .map(|(_, code, left)| {
                *left -= 1;
                code.clone()
            })
    };
    if let Some(code) = refusal {
        let body =
            format!(r#"{{"__type":"com.amazonaws.sqs#{code}","message":"refused by the test"}}"#);
        let mut answer = hyper::Response::new(Full::new(Bytes::from(body)));
        *answer.status_mut() = hyper::StatusCode::FORBIDDEN;
        let h = answer.headers_mut();
        h.insert(
            "content-type",
            "application/x-amz-json-1.0".parse().unwrap(),
        );
        h.insert(
            "x-amzn-query-error",
            format!("{code};Sender").parse().unwrap(),
        );
        return (answer, target);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = parts.headers.clone();
    headers.remove("host");
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", upstream.trim_end_matches('/'));
    let forwarded = http.post(url).headers(headers).body(body).send().await;
    let mut answer = hyper::Response::new(Full::new(Bytes::new()));
    match forwarded {
        Ok(r) => {
            *answer.status_mut() = r.status();
            if let Some(t) = r.headers().get("content-type") {
                answer.headers_mut().insert("content-type", t.clone());
            }
            if let Some(q) = r.headers().get("x-amzn-query-error") {
                answer.headers_mut().insert("x-amzn-query-error", q.clone());
            }
            *answer.body_mut() = Full::new(r.bytes().await.unwrap_or_default());
        }
        Err(_) => *answer.status_mut() = hyper::StatusCode::BAD_GATEWAY,
    }
    (answer, target)
}

/// Ten messages delivered once each and deleted, although the first delete
/// batches were refused with `code`: well before their visibility timeout
/// (a minute) could bring them back.
async fn deletes_survive_refusals(code: &str, times: usize) {
    let refuser = Refuser::start().await;
    refuser.refuse("AmazonSQS.DeleteMessageBatch", code, times);
    let queue = TestQueue::new("refused").await;
    let app = App::ok().await;
    let mut args = base_args(&queue, &app.url());
    args.extend([
        "--endpoint-url".into(),
        refuser.url.clone(),
        "--visibility-timeout".into(),
        "60".into(),
    ]);
    let daemon = Daemon::start(args).await;
    queue.send_many(10, |i| format!("m{i}")).await;
    queue.wait_empty(WAIT).await;
    assert_eq!(app.count(), 10, "each message delivered once");
    let answered = refuser.answered("AmazonSQS.DeleteMessageBatch");
    let refused = answered.iter().filter(|s| **s == 403).count();
    assert_eq!(refused, times, "{code}: {answered:?}");
    assert!(answered.contains(&200), "{answered:?}");
    eventually(WAIT, "ten deletes counted", || async {
        (daemon.metric("sqsd_messages_deleted_total").await == 10.0).then_some(())
    })
    .await;
    assert!(
        daemon.find_log("could not delete").is_none(),
        "{code}: a delete was given up:\n{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_refused_for_expired_credentials_is_retried_with_fresh_ones() {
    deletes_survive_refusals("ExpiredToken", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_refused_for_their_signature_are_retried() {
    deletes_survive_refusals("SignatureDoesNotMatch", 2).await;
}
