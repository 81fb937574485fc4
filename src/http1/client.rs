//! A small pool of plain-HTTP/1.1 keep-alive connections to one host, over
//! hyper's connection API directly. Both hot paths use it: POSTs to a
//! `http://` application and the receive and settle calls to a `http://`
//! SQS endpoint (LocalStack, the embedded server). It does far less work per
//! request than a general-purpose client: no proxy lookup, no redirects, no
//! per-request pool bookkeeping beyond a locked stack of idle senders.
//!
//! Every answer's body is bounded before it costs memory: [`Pool::send`]
//! keeps a body up to a limit and fails past it (SQS answers);
//! [`Pool::send_for_head`] keeps only the head and reads a little of the body
//! so the connection can carry the next request, closing it instead when the
//! body is longer (the application's answers, of which sqsd needs only the
//! status and `Retry-After`).

use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, HOST};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{error_chain, Failure};

type Sender = http1::SendRequest<Full<Bytes>>;

/// Keep-alive connections to one `host:port`; see the module documentation.
pub struct Pool {
    /// `host:port` to connect to.
    connect_to: String,
    /// `Host` header of every request.
    host: HeaderValue,
    idle: Mutex<Vec<Sender>>,
    max_idle: usize,
    connect_timeout: Duration,
    /// Send header names as `Content-Type` rather than `content-type`.
    title_case: bool,
}

impl Pool {
    /// A pool for a `http://` URL's host, or `None` for any other URL.
    pub fn for_url(
        url: &str,
        max_idle: usize,
        connect_timeout: Duration,
        title_case: bool,
    ) -> Option<Pool> {
        let u = reqwest::Url::parse(url)
            .ok()
            .filter(|u| u.scheme() == "http")?;
        let host = u.host_str()?;
        let port = u.port_or_known_default()?;
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Some(Pool {
            // `host_str` keeps an IPv6 address in brackets, as connect wants.
            connect_to: format!("{host}:{port}"),
            host: HeaderValue::from_str(&authority).ok()?,
            idle: Mutex::new(Vec::new()),
            max_idle,
            connect_timeout,
            title_case,
        })
    }

    /// Sends `request` (its URI holding only path and query) and returns the
    /// answer's head with its body, which may hold at most `max` bytes: a
    /// longer one fails the call, unread, and its connection is closed.
    /// Callers bound the time it takes.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        max: usize,
    ) -> Result<(http::response::Parts, Bytes), Failure> {
        let (sender, response) = self.exchange(request).await?;
        let (head, mut body) = response.into_parts();
        match read_body(&mut body, max, true).await? {
            Some(bytes) => {
                self.check_in(sender);
                Ok((head, bytes))
            }
            None => Err(Failure::Other(format!("answer larger than {max} bytes"))),
        }
    }

    /// Sends `request` and returns only the answer's head. Up to `drain`
    /// bytes of the body are read and thrown away, which completes the
    /// exchange and frees the connection for the next request; a longer body
    /// is left unread and its connection closed. Callers bound the time it
    /// takes.
    pub async fn send_for_head(
        &self,
        request: http::Request<Full<Bytes>>,
        drain: usize,
    ) -> Result<http::response::Parts, Failure> {
        let (sender, response) = self.exchange(request).await?;
        let (head, mut body) = response.into_parts();
        if read_body(&mut body, drain, false).await?.is_some() {
            self.check_in(sender);
        }
        Ok(head)
    }

    /// Sends `request` over a pooled or new connection; the connection and
    /// the answer, whose body is still to be read.
    async fn exchange(
        &self,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<(Sender, http::Response<Incoming>), Failure> {
        request.headers_mut().insert(HOST, self.host.clone());
        // A pooled connection the server closed while idle fails before the
        // request is written; hyper hands the request back and it goes out
        // once more on a fresh connection.
        let (mut sender, reused) = match self.checkout().await {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let response = match sender.try_send_request(request).await {
            Ok(r) => r,
            Err(mut e) => match (reused, e.take_message()) {
                (true, Some(unsent)) => {
                    sender = self.connect().await?;
                    sender
                        .send_request(unsent)
                        .await
                        .map_err(|e| Failure::Other(error_chain(&e)))?
                }
                _ => return Err(Failure::Other(error_chain(&e.into_error()))),
            },
        };
        Ok((sender, response))
    }

    /// An idle connection that is still open and ready, if any.
    async fn checkout(&self) -> Option<Sender> {
        loop {
            let mut candidate = self.idle.lock().ok()?.pop()?;
            if candidate.is_closed() {
                continue;
            }
            if candidate.ready().await.is_ok() {
                return Some(candidate);
            }
        }
    }

    fn check_in(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(sender);
            }
        }
    }

    async fn connect(&self) -> Result<Sender, Failure> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.connect_to))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(Failure::Connect(format!(
                        "cannot connect to {}: {e}",
                        self.connect_to
                    )))
                }
                Err(_) => {
                    return Err(Failure::Connect(format!(
                        "cannot connect to {}: no answer within {:?}",
                        self.connect_to, self.connect_timeout
                    )))
                }
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .title_case_headers(self.title_case)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(error_chain(&e)))?;
        let peer = self.connect_to.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, peer, "connection ended");
            }
        });
        Ok(sender)
    }
}

/// Reads `body` to its end, keeping its bytes when `keep`; `None`, with the
/// rest left unread, as soon as it proves longer than `max` bytes (by its
/// `Content-Length`, or by what arrived).
async fn read_body(body: &mut Incoming, max: usize, keep: bool) -> Result<Option<Bytes>, Failure> {
    if body.size_hint().lower() > max as u64 {
        return Ok(None);
    }
    let mut kept = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Other(error_chain(&e)))?;
        if let Some(data) = frame.data_ref() {
            seen = seen.saturating_add(data.len());
            if seen > max {
                return Ok(None);
            }
            if keep {
                kept.extend_from_slice(data);
            }
        }
    }
    Ok(Some(kept.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::testing::Answering;

    const MIB: u64 = 1024 * 1024;

    fn post() -> http::Request<Full<Bytes>> {
        let mut r = http::Request::new(Full::new(Bytes::from_static(b"{}")));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = http::Uri::from_static("/");
        r
    }

    fn pool(server: &Answering) -> Pool {
        Pool::for_url(&server.url(), 4, Duration::from_secs(5), false).expect("http URL")
    }

    #[tokio::test]
    async fn a_long_answer_is_left_unread_and_its_connection_closed() {
        for exact in [true, false] {
            let server = Answering::start(256 * MIB, exact).await;
            let pool = pool(&server);
            let head = pool.send_for_head(post(), 64 * 1024).await.unwrap();
            assert_eq!(head.status, 200);
            // The connection is closed, not kept: the server stops sending.
            server.wait_bodies_done().await;
            assert!(
                server.produced() < 32 * MIB,
                "exact={exact}: {} bytes sent before the client hung up",
                server.produced()
            );
            // The next request still goes through, on a new connection.
            let head = pool.send_for_head(post(), 64 * 1024).await.unwrap();
            assert_eq!(head.status, 200);
            assert_eq!(server.connections(), 2, "exact={exact}");
        }
    }

    #[tokio::test]
    async fn a_short_answer_is_drained_and_its_connection_reused() {
        for exact in [true, false] {
            let server = Answering::start(10_000, exact).await;
            let pool = pool(&server);
            for _ in 0..3 {
                let head = pool.send_for_head(post(), 64 * 1024).await.unwrap();
                assert_eq!(head.status, 200);
            }
            assert_eq!(server.connections(), 1, "exact={exact}");
            assert_eq!(server.produced(), 30_000);
        }
    }

    #[tokio::test]
    async fn a_kept_body_fails_past_its_limit() {
        for exact in [true, false] {
            let server = Answering::start(2 * MIB, exact).await;
            let pool = pool(&server);
            let e = pool.send(post(), MIB as usize).await.unwrap_err();
            assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
            server.wait_bodies_done().await;

            let server = Answering::start(100_000, exact).await;
            let pool = Pool::for_url(&server.url(), 4, Duration::from_secs(5), false).unwrap();
            let (head, body) = pool.send(post(), MIB as usize).await.unwrap();
            assert_eq!((head.status.as_u16(), body.len()), (200, 100_000));
            pool.send(post(), MIB as usize).await.unwrap();
            assert_eq!(server.connections(), 1, "exact={exact}: kept alive");
        }
    }
}
