//! A small pool of plain-HTTP/1.1 keep-alive connections to one host, over
//! hyper's connection API directly. Both hot paths use it: POSTs to a
//! `http://` application and the receive and settle calls to a `http://`
//! SQS endpoint (LocalStack, the embedded server). It does far less work per
//! request than a general-purpose client: no proxy lookup, no redirects, no
//! per-request pool bookkeeping beyond a locked stack of idle senders.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why no answer came.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made.
    Connect(String),
    /// No complete answer in time.
    TimedOut,
    /// The exchange broke off.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) | Failure::Other(e) => f.write_str(e),
            Failure::TimedOut => f.write_str("no complete answer in time"),
        }
    }
}

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
    /// answer's head with its whole body. Callers bound the time it takes.
    pub async fn send(
        &self,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), Failure> {
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
        let (head, body) = response.into_parts();
        // Reading the whole answer completes the exchange and frees the
        // connection for the next request.
        let body = body
            .collect()
            .await
            .map_err(|e| Failure::Other(error_chain(&e)))?
            .to_bytes();
        self.check_in(sender);
        Ok((head, body))
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

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
