//! The HTTP client that POSTs to the application.
//!
//! For a plain-HTTP application (the usual `http://localhost`), requests go
//! over hyper's HTTP/1.1 connections directly: a small pool of keep-alive
//! connections, no proxy, no redirects, header names in Title-Case as
//! Elastic Beanstalk's daemon sends them. This path costs far less CPU per
//! request than a general-purpose client. An `https://` application is
//! reached through reqwest with the same rules.
//!
//! sqsd needs only the answer's status and `Retry-After`: at most
//! [`DRAIN_LIMIT`] bytes of the body are read (and thrown away), so that the
//! connection can carry the next POST; a longer body is left unread and its
//! connection closed. An application answering with a large body costs the
//! daemon no memory.

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{Method, Uri};
use http_body_util::Full;

use super::request::Request;
use crate::config::Config;
use crate::http1::Pool;
pub use crate::http1::{error_chain, Failure};

/// Most of an answer's body read; see the module documentation.
pub const DRAIN_LIMIT: usize = 64 * 1024;

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

    /// POSTs `request`; the answer's status and `Retry-After`.
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
        let exchange = self.pool.send_for_head(outgoing, DRAIN_LIMIT);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(head)) => Ok(Answer::of(head.status, &head.headers)),
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
    let mut response = client
        .post(request.url)
        .headers(request.headers)
        .body(request.body)
        .send()
        .await
        .map_err(classify)?;
    let answer = Answer::of(response.status(), response.headers());
    // Dropping a response whose body is not read to its end closes its
    // connection instead of returning it to the pool.
    if response
        .content_length()
        .is_some_and(|n| n > DRAIN_LIMIT as u64)
    {
        return Ok(answer);
    }
    let mut drained = 0;
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        drained += chunk.len();
        if drained > DRAIN_LIMIT {
            break;
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::testing::Answering;

    const MIB: u64 = 1024 * 1024;

    fn request(url: &str) -> Request {
        let url = reqwest::Url::parse(url).unwrap();
        Request {
            target: url.path().parse().unwrap(),
            url,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(b"{}"),
        }
    }

    /// Both clients: the pool (`http://`) and reqwest (what `https://` uses,
    /// here over plain HTTP: the body handling is the same).
    fn clients(url: &str) -> [(&'static str, AppClient); 2] {
        let pool = Pool::for_url(url, 4, Duration::from_secs(5), true).unwrap();
        let plain = AppClient::Plain(Plain {
            pool,
            timeout: Duration::from_secs(60),
        });
        let reqwest = reqwest::Client::builder().no_proxy().build().unwrap();
        [("plain", plain), ("reqwest", AppClient::Tls(reqwest))]
    }

    /// The status of an answer with a huge body, without reading that body:
    /// the application stops sending once the socket buffers are full.
    #[tokio::test]
    async fn a_huge_answer_gives_its_status_without_being_read() {
        for exact in [true, false] {
            for index in 0..2 {
                let server = Answering::start(1024 * MIB, exact).await;
                let [plain, tls] = clients(&server.url());
                let (name, client) = if index == 0 { plain } else { tls };
                let answer = client.post(request(&server.url())).await.unwrap();
                assert_eq!(answer.status, 200);
                server.wait_bodies_done().await;
                assert!(
                    server.produced() < 32 * MIB,
                    "{name}, exact={exact}: {} bytes sent",
                    server.produced()
                );
                let answer = client.post(request(&server.url())).await.unwrap();
                assert_eq!(answer.status, 200, "{name}: the next POST works");
            }
        }
    }

    #[tokio::test]
    async fn a_short_answer_keeps_its_connection() {
        for index in 0..2 {
            let server = Answering::start(DRAIN_LIMIT as u64, false).await;
            let [plain, tls] = clients(&server.url());
            let (name, client) = if index == 0 { plain } else { tls };
            for _ in 0..3 {
                let answer = client.post(request(&server.url())).await.unwrap();
                assert_eq!(answer.status, 200);
            }
            assert_eq!(server.connections(), 1, "{name}");
        }
    }
}
