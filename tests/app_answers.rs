//! The application's answer body is never held: sqsd needs only the status
//! (and `Retry-After`). An application answering with a huge body, streamed
//! chunked or with a `Content-Length`, has its message settled from the
//! status alone, the daemon's memory stays small, and the next POST works.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use common::{base_args, eventually, Daemon, TestQueue};

const WAIT: Duration = Duration::from_secs(60);
const HUGE: u64 = 200 * 1024 * 1024;
/// The daemon's peak resident memory must stay under this (debug build):
/// one huge answer held would be 200 MB, six at once over 1 GB.
const MAX_PEAK_KB: u64 = 60 * 1024;

/// An application that answers 200 to every POST; the body of its answer
/// is `HUGE` bytes when the message says `huge-chunked` or `huge-length`,
/// else two bytes. It records each message body it was sent.
struct HugeApp {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    /// Answer bytes handed to its connections.
    produced: Arc<AtomicU64>,
}

impl HugeApp {
    async fn start() -> HugeApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let app = HugeApp {
            addr: listener.local_addr().expect("addr"),
            seen: Arc::default(),
            produced: Arc::default(),
        };
        let (seen, produced) = (app.seen.clone(), app.produced.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, produced) = (seen.clone(), produced.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, produced) = (seen.clone(), produced.clone());
                        async move {
                            let body = req.into_body().collect().await;
                            let text = body
                                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                                .unwrap_or_default();
                            let (left, exact) = match text.as_str() {
                                "huge-chunked" => (HUGE, false),
                                "huge-length" => (HUGE, true),
                                _ => (2, true),
                            };
                            seen.lock().unwrap().push(text);
                            let body = Stream {
                                left,
                                exact,
                                chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                                produced,
                            };
                            Ok::<_, Infallible>(hyper::Response::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        app
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A body of `left` more bytes, made on demand.
struct Stream {
    left: u64,
    exact: bool,
    chunk: Bytes,
    produced: Arc<AtomicU64>,
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        self.produced.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.left)
        } else {
            SizeHint::default()
        }
    }
}

/// Peak resident memory of process `pid`, in kB (`VmHWM`).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_answers_are_settled_from_their_status_without_being_held() {
    let queue = TestQueue::new("huge").await;
    let app = HugeApp::start().await;
    let mut args = base_args(&queue, &app.url());
    // A failed delivery would come back only after a minute: every message
    // must be settled by its first answer.
    args.extend(["--visibility-timeout".into(), "60".into()]);
    let daemon = Daemon::start(args).await;

    queue
        .send_many(6, |i| {
            if i % 2 == 0 {
                "huge-chunked".into()
            } else {
                "huge-length".into()
            }
        })
        .await;
    queue.wait_empty(WAIT).await;
    assert_eq!(app.seen().len(), 6, "each delivered once: {:?}", app.seen());
    eventually(WAIT, "six deletes counted", || async {
        (daemon.metric("sqsd_messages_deleted_total").await == 6.0).then_some(())
    })
    .await;
    let peak = peak_rss_kb(daemon.pid());
    eprintln!("sqsd peak RSS after six {HUGE}-byte answers: {peak} kB");
    assert!(
        peak < MAX_PEAK_KB,
        "sqsd's peak RSS was {peak} kB answering six {HUGE}-byte bodies"
    );
    assert!(
        app.produced.load(Ordering::SeqCst) < 6 * HUGE / 4,
        "the daemon read most of the huge bodies"
    );

    // The next POST still goes through, and is deleted.
    queue.send("small").await;
    eventually(WAIT, "the small message delivered", || {
        let seen = app.seen();
        async move { seen.iter().any(|b| b == "small").then_some(()) }
    })
    .await;
    queue.wait_empty(WAIT).await;
}
