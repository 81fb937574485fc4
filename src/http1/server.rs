//! The accept loop and connection handling of sqsd's own listeners (the
//! admin endpoints and the embedded SQS endpoint), bounded so that clients
//! that say nothing, send half a request, or just keep opening connections
//! cannot exhaust the process's file descriptors:
//!
//! - A request head must arrive within [`Limits::head_timeout`], counted
//!   from when the connection starts waiting for one: when it opens, and
//!   again after each answer (hyper restarts its header-read timer whenever
//!   a keep-alive connection goes idle). The one bound closes a connection
//!   that sends nothing, half a head, or nothing more after an answer.
//! - Once its head is in, a request has [`Limits::request_timeout`] to be
//!   answered: its body and the work. This is not the head timeout, so an
//!   SQS long poll (up to 20 s) is answered in full.
//! - At most [`Limits::max_connections`] at once. At the cap, idle
//!   connections are asked to close to make room; new clients wait in the
//!   listen backlog meanwhile, which beats being accepted and starved.
//! - An accept that fails for want of resources (file descriptors, memory)
//!   is retried after a growing delay, and logged once per burst.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Head (and keep-alive idle) timeout of sqsd's listeners: any real client
/// sends a head in one go; 20 s leaves room for a slow network and keeps
/// idle keep-alive connections well past what clients' pools expect.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(20);

/// The bounds of one listener; see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub head_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

/// First delay after a failed accept; it doubles while failures go on.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);
/// A burst of accept failures that lasts is logged again this often.
const ACCEPT_RELOG: Duration = Duration::from_secs(60);

/// Serves connections from `listener` with `handler` until `stop` is
/// cancelled; `name` names the listener in logs. Connections still open at
/// `stop` finish the request they are on, then close.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    stop: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let room = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Asks every idle connection to close.
    let crowded = Arc::new(Notify::new());
    let mut failures = AcceptFailures::default();
    loop {
        let permit = match room.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::debug!(
                    listener = name,
                    max = limits.max_connections,
                    "connection limit reached; closing idle connections"
                );
                crowded.notify_waiters();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    p = room.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if let Some(n) = failures.succeeded() {
                    tracing::info!(listener = name, failures = n, "accepting connections again");
                }
                stream
            }
            // The client gave up before it was accepted: nothing to wait for.
            Err(e) if is_about_one_connection(&e) => {
                tracing::debug!(listener = name, error = %e, "a connection failed while accepted");
                continue;
            }
            Err(e) => {
                let (delay, log) = failures.failed(Instant::now());
                if log {
                    tracing::warn!(listener = name, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "accept failed; backing off, and closing idle connections (logged once per burst)");
                }
                // Idle connections hold descriptors a new client needs.
                crowded.notify_waiters();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        tokio::spawn(connection(
            stream,
            permit,
            handler.clone(),
            limits,
            crowded.clone(),
            stop.clone(),
        ));
    }
}

/// One connection, holding its share of the cap until it closes.
async fn connection<H, F>(
    stream: TcpStream,
    _room: OwnedSemaphorePermit,
    handler: H,
    limits: Limits,
    crowded: Arc<Notify>,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let in_service = Arc::new(AtomicUsize::new(0));
    let service = {
        let in_service = in_service.clone();
        service_fn(move |request| {
            let handler = handler.clone();
            let busy = Busy::enter(&in_service);
            async move {
                let _busy = busy;
                let answer = tokio::time::timeout(limits.request_timeout, handler(request))
                    .await
                    .unwrap_or_else(|_| too_slow(limits.request_timeout));
                Ok::<_, Infallible>(answer)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            // At the cap, a connection with no request in service (idle, or
            // still sending its head) is dropped at once: a graceful close
            // would wait for a half-sent head, which is how a slow client
            // would hold its place. One in service finishes its answer.
            _ = crowded.notified(), if !closing => {
                if in_service.load(Ordering::SeqCst) == 0 {
                    return;
                }
            }
            _ = stop.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Counts a request in service until dropped (answered, or abandoned with
/// its connection).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer to a request whose body or work outlasted `after`; the
/// connection closes after it.
fn too_slow(after: Duration) -> Response<Full<Bytes>> {
    let text = format!("the request was not complete within {after:?}\n");
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Accept errors that concern only the connection being accepted, not the
/// listener or the process.
fn is_about_one_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Accept failures in a row: each waits longer than the one before, and a
/// burst is logged once (again each [`ACCEPT_RELOG`] while it lasts).
#[derive(Debug, Default)]
struct AcceptFailures {
    in_a_row: u32,
    logged_at: Option<Instant>,
}

impl AcceptFailures {
    /// One more failure at `now`: the delay before the next accept, and
    /// whether to log it.
    fn failed(&mut self, now: Instant) -> (Duration, bool) {
        let delay = ACCEPT_RETRY_FIRST
            .saturating_mul(1 << self.in_a_row.min(16))
            .min(ACCEPT_RETRY_MAX);
        self.in_a_row = self.in_a_row.saturating_add(1);
        let log = self
            .logged_at
            .map_or(true, |at| now.duration_since(at) >= ACCEPT_RELOG);
        if log {
            self.logged_at = Some(now);
        }
        (delay, log)
    }

    /// An accept went through: how many failed before it, if any.
    fn succeeded(&mut self) -> Option<u32> {
        let n = std::mem::take(&mut self.in_a_row);
        self.logged_at = None;
        (n > 0).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const MARGIN: Duration = Duration::from_secs(5);

    /// A listener whose handler answers `ok <body length>` after reading the
    /// whole body, and first waits `<ms>` on `/sleep/<ms>`.
    async fn start(limits: Limits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let handler = |request: Request<Incoming>| async move {
            if let Some(ms) = request.uri().path().strip_prefix("/sleep/") {
                let ms = ms.parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let body = request.into_body().collect().await;
            let length = body.map(|b| b.to_bytes().len()).unwrap_or(0);
            Response::new(Full::new(Bytes::from(format!("ok {length}"))))
        };
        tokio::spawn(serve("test", listener, limits, stop.clone(), handler));
        (addr, stop)
    }

    fn limits(head_ms: u64, request_ms: u64, max_connections: usize) -> Limits {
        Limits {
            head_timeout: Duration::from_millis(head_ms),
            request_timeout: Duration::from_millis(request_ms),
            max_connections,
        }
    }

    /// Reads until the server closes the connection; what it sent, and when
    /// it closed. Fails if it is still open after `within`.
    async fn until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(started + within, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("the server kept the connection open for {within:?}"),
            }
        }
        (
            String::from_utf8_lossy(&got).into_owned(),
            started.elapsed(),
        )
    }

    async fn request(addr: SocketAddr, text: &str, within: Duration) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(text.as_bytes()).await.unwrap();
        until_closed(&mut stream, within).await.0
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_after_the_head_timeout() {
        let (addr, _stop) = start(limits(300, 5_000, 16)).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let (_, after) = until_closed(&mut silent, Duration::from_millis(300) + MARGIN).await;
        assert!(
            after >= Duration::from_millis(250),
            "closed after {after:?}"
        );
    }

    #[tokio::test]
    async fn half_a_head_is_closed_after_the_head_timeout() {
        let (addr, _stop) = start(limits(300, 5_000, 16)).await;
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Le")
            .await
            .unwrap();
        let (_, after) = until_closed(&mut half, Duration::from_millis(300) + MARGIN).await;
        assert!(
            after >= Duration::from_millis(250),
            "closed after {after:?}"
        );
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_head_timeout() {
        let (addr, _stop) = start(limits(300, 5_000, 16)).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (answer, after) = until_closed(&mut stream, Duration::from_millis(300) + MARGIN).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok 0"), "{answer}");
        assert!(
            after >= Duration::from_millis(250),
            "closed after {after:?}"
        );
    }

    #[tokio::test]
    async fn a_request_may_take_longer_than_the_head_timeout() {
        let (addr, _stop) = start(limits(200, 5_000, 16)).await;
        let text = "GET /sleep/1000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let answer = request(addr, text, MARGIN).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok 0"), "{answer}");
    }

    #[tokio::test]
    async fn a_stalled_body_is_answered_408_at_the_request_timeout() {
        let (addr, _stop) = start(limits(5_000, 400, 16)).await;
        let started = Instant::now();
        let text = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789";
        let answer = request(addr, text, MARGIN).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(350));
        // A whole body is read and answered.
        let text = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789";
        let answer = request(addr, text, MARGIN).await;
        assert!(answer.ends_with("ok 10"), "{answer}");
    }

    #[tokio::test]
    async fn idle_connections_make_room_for_a_new_client_at_the_cap() {
        // The head timeout is far away: room is made by closing idle
        // connections, not by waiting them out.
        let (addr, _stop) = start(limits(60_000, 5_000, 8)).await;
        let mut idle = Vec::new();
        for _ in 0..40 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let started = Instant::now();
        let text = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let answer = request(addr, text, MARGIN).await;
        assert!(answer.ends_with("ok 0"), "{answer}");
        assert!(started.elapsed() < MARGIN);
    }

    #[tokio::test]
    async fn half_sent_heads_make_room_for_a_new_client_at_the_cap() {
        let (addr, _stop) = start(limits(60_000, 5_000, 8)).await;
        let mut half = Vec::new();
        for _ in 0..40 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await;
            half.push(s);
        }
        let started = Instant::now();
        let text = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let answer = request(addr, text, MARGIN).await;
        assert!(answer.ends_with("ok 0"), "{answer}");
        assert!(started.elapsed() < MARGIN);
    }

    #[tokio::test]
    async fn a_busy_connection_is_not_closed_to_make_room() {
        let (addr, _stop) = start(limits(60_000, 5_000, 2)).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /sleep/1000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut others = Vec::new();
        for _ in 0..6 {
            others.push(TcpStream::connect(addr).await.unwrap());
        }
        let (answer, _) = until_closed(&mut slow, MARGIN).await;
        assert!(answer.ends_with("ok 0"), "{answer}");
    }

    #[tokio::test]
    async fn stop_closes_the_listener() {
        let (addr, stop) = start(limits(5_000, 5_000, 4)).await;
        stop.cancel();
        let deadline = Instant::now() + MARGIN;
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn accept_failures_back_off_and_are_logged_once_per_burst() {
        let mut f = AcceptFailures::default();
        let t0 = Instant::now();
        let mut delays = Vec::new();
        let mut logged = 0;
        for i in 0..12 {
            let (delay, log) = f.failed(t0 + Duration::from_millis(i * 100));
            delays.push(delay.as_millis());
            logged += usize::from(log);
        }
        assert_eq!(
            delays,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000]
        );
        assert_eq!(logged, 1, "one line for the burst");
        // A burst that lasts is logged again each minute.
        assert!(f.failed(t0 + Duration::from_secs(61)).1);
        assert!(!f.failed(t0 + Duration::from_secs(62)).1);
        assert_eq!(f.succeeded(), Some(14));
        assert_eq!(f.succeeded(), None);
        // The next burst starts over.
        assert_eq!(
            f.failed(t0 + Duration::from_secs(63)),
            (Duration::from_millis(10), true)
        );
    }
}
