//! The HTTP client that POSTs to the application.
//!
//! For a plain-HTTP application (the usual `http://localhost`), requests go
//! over hyper's HTTP/1.1 connections directly: a small pool of keep-alive
//! connections, no proxy, no redirects, header names in Title-Case as
//! Elastic Beanstalk's daemon sends them. This path costs far less CPU per
//! request than a general-purpose client. An `https://` application is
//! reached through reqwest with the same rules.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST, RETRY_AFTER};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::Config;
use crate::message::Request;

/// What the application answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `Retry-After` header, as text.
    pub retry_after: Option<String>,
}

impl Answer {
    fn of(status: http::StatusCode, headers: &http::HeaderMap) -> Answer {
        Answer {
            status: status.as_u16(),
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }
}

/// Why no answer came.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made.
    Connect(String),
    /// No complete answer within the inactivity timeout.
    TimedOut,
    /// The exchange broke off.
    Other(String),
}

/// The application's client; see the module documentation.
pub enum AppClient {
    Plain(Plain),
    Tls(reqwest::Client),
}

impl AppClient {
    pub fn new(config: &Config) -> reqwest::Result<AppClient> {
        let url = reqwest::Url::parse(&config.worker_url).ok();
        let plain = url.as_ref().filter(|u| u.scheme() == "http").and_then(|u| {
            let host = u.host_str()?;
            let port = u.port_or_known_default()?;
            let authority = match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            Some(Plain {
                // `host_str` keeps an IPv6 address in brackets, as connect wants.
                connect_to: format!("{host}:{port}"),
                host: HeaderValue::from_str(&authority).ok()?,
                idle: Mutex::new(Vec::new()),
                max_idle: config.http_connections,
                connect_timeout: config.connect_timeout,
                timeout: config.inactivity_timeout,
            })
        });
        if let Some(plain) = plain {
            return Ok(AppClient::Plain(plain));
        }
        reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.inactivity_timeout)
            .pool_max_idle_per_host(config.http_connections)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .http1_title_case_headers()
            .tcp_nodelay(true)
            .build()
            .map(AppClient::Tls)
    }

    /// POSTs `request` and reads the whole answer.
    pub async fn post(&self, request: Request) -> Result<Answer, Failure> {
        match self {
            AppClient::Plain(p) => p.post(request).await,
            AppClient::Tls(c) => post_with_reqwest(c, request).await,
        }
    }
}

/// Plain HTTP/1.1 to one host, with a pool of idle keep-alive connections.
pub struct Plain {
    /// `host:port` to connect to.
    connect_to: String,
    host: HeaderValue,
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    max_idle: usize,
    connect_timeout: Duration,
    /// The whole exchange, connecting included.
    timeout: Duration,
}

impl Plain {
    async fn post(&self, request: Request) -> Result<Answer, Failure> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::TimedOut),
        }
    }

    async fn exchange(&self, request: Request) -> Result<Answer, Failure> {
        let target = match request.url.query() {
            Some(q) => format!("{}?{q}", request.url.path()),
            None => request.url.path().to_string(),
        };
        let uri = Uri::try_from(target).map_err(|e| Failure::Other(e.to_string()))?;
        let mut outgoing = http::Request::new(Full::new(request.body));
        *outgoing.method_mut() = Method::POST;
        *outgoing.uri_mut() = uri;
        *outgoing.headers_mut() = request.headers;
        outgoing.headers_mut().insert(HOST, self.host.clone());

        // A pooled connection the application closed while idle fails
        // before the request is written; hyper hands the request back and
        // it goes out once more on a fresh connection.
        let (mut sender, reused) = match self.checkout().await {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let response = match sender.try_send_request(outgoing).await {
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
        let answer = Answer::of(response.status(), response.headers());
        // Read the whole answer: it completes the exchange and frees the
        // connection for the next request.
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Other(error_chain(&e)))?;
        self.check_in(sender);
        Ok(answer)
    }

    /// An idle connection that is still open and ready, if any.
    async fn checkout(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        loop {
            let candidate = self.idle.lock().ok()?.pop()?;
            if candidate.is_closed() {
                continue;
            }
            let mut candidate = candidate;
            if candidate.ready().await.is_ok() {
                return Some(candidate);
            }
        }
    }

    fn check_in(&self, sender: http1::SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(sender);
            }
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, Failure> {
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
            .title_case_headers(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection to the application ended");
            }
        });
        Ok(sender)
    }
}

async fn post_with_reqwest(client: &reqwest::Client, request: Request) -> Result<Answer, Failure> {
    let classify = |e: reqwest::Error| {
        if e.is_connect() {
            Failure::Connect(error_chain(&e))
        } else if e.is_timeout() {
            Failure::TimedOut
        } else {
            Failure::Other(error_chain(&e))
        }
    };
    let response = client
        .post(request.url)
        .headers(request.headers)
        .body(request.body)
        .send()
        .await
        .map_err(classify)?;
    let answer = Answer::of(response.status(), response.headers());
    response.bytes().await.map_err(classify)?;
    Ok(answer)
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
