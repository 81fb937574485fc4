//! Test servers for the HTTP plumbing's unit tests (and those of its
//! users): a loopback application whose answers carry a body of any length,
//! streamed with or without `Content-Length`, that counts what it produced
//! and notices when a client stopped reading.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A running answering server; see the module documentation.
#[derive(Clone)]
pub struct Answering {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Body bytes handed to the connection (at most what fits in the socket
    /// buffers past what the client read).
    pub produced: Arc<AtomicU64>,
    /// Answer bodies not yet finished or dropped.
    pub open_bodies: Arc<AtomicUsize>,
}

impl Answering {
    /// Answers every request with status 200 and a `len`-byte body, with
    /// `Content-Length` when `exact`, chunked otherwise.
    pub async fn start(len: u64, exact: bool) -> Answering {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = Answering {
            addr: listener.local_addr().expect("addr"),
            connections: Arc::default(),
            produced: Arc::default(),
            open_bodies: Arc::default(),
        };
        let state = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        state.open_bodies.fetch_add(1, Ordering::SeqCst);
                        let body = Stream {
                            left: len,
                            exact,
                            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                            produced: state.produced.clone(),
                            open: state.open_bodies.clone(),
                        };
                        async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn produced(&self) -> u64 {
        self.produced.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until no answer body is being sent any more: each
    /// was either read to its end or dropped with its connection.
    pub async fn wait_bodies_done(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.open_bodies.load(Ordering::SeqCst) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "an answer body is still being sent: the client neither read it nor closed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// A body of `left` more bytes, produced on demand.
struct Stream {
    left: u64,
    exact: bool,
    chunk: Bytes,
    produced: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
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
        let data = self.chunk.slice(..n as usize);
        Poll::Ready(Some(Ok(Frame::data(data))))
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

impl Drop for Stream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}
