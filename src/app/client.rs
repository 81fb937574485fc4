//! The HTTP client that POSTs to the application.
//!
//! For a plain-HTTP application (the usual `http://localhost`), requests go
//! over hyper's HTTP/1.1 connections directly: a small pool of keep-alive
//! connections, no proxy, no redirects, header names in Title-Case as
//! Elastic Beanstalk's daemon sends them. This path costs far less CPU per
//! request than a general-purpose client. An `https://` application is
//! reached through reqwest with the same rules.

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{Method, Uri};
use http_body_util::Full;

use super::request::Request;
use crate::config::Config;
use crate::http1::Pool;
pub use crate::http1::{error_chain, Failure};

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

/// The application's client; see the module documentation.
pub enum AppClient {
    Plain(Plain),
    Tls(reqwest::Client),
}

impl AppClient {
    pub fn new(config: &Config) -> reqwest::Result<AppClient> {
        let pool = Pool::for_url(
            &config.worker_url,
            config.http_connections,
            config.connect_timeout,
            true,
        );
        if let Some(pool) = pool {
            return Ok(AppClient::Plain(Plain {
                pool,
                timeout: config.inactivity_timeout,
            }));
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

/// Plain HTTP/1.1 to the application, over a pool of keep-alive connections.
pub struct Plain {
    pool: Pool,
    /// The whole exchange, connecting included.
    timeout: Duration,
}

impl Plain {
    async fn post(&self, request: Request) -> Result<Answer, Failure> {
        let mut outgoing = http::Request::new(Full::new(request.body));
        *outgoing.method_mut() = Method::POST;
        *outgoing.uri_mut() = Uri::from(request.target);
        *outgoing.headers_mut() = request.headers;
        match tokio::time::timeout(self.timeout, self.pool.send(outgoing)).await {
            Ok(Ok((head, _body))) => Ok(Answer::of(head.status, &head.headers)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Failure::TimedOut),
        }
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
