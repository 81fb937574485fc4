//! The admin HTTP listener.
//!
//! - `GET /healthz`: 200 while the daemon's loops are alive, 503 otherwise.
//! - `GET /readyz`: 200 once SQS answered the latest receive; 503 with a
//!   JSON reason while starting, during an SQS outage and during shutdown.
//! - `GET /metrics`: Prometheus text format.
//!
//! Anything else is 404; a method other than GET or HEAD is 405.
//!
//! The listener is bounded as all of sqsd's are (`http1::server`): a
//! connection that sends no request within 20 s is closed, and at most 64
//! are open at once, which health checks and a metrics scraper never need.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::metrics::Metrics;
use crate::http1::{serve as serve_http, Limits, HEAD_TIMEOUT};

/// Every answer is immediate; the admin port serves a few local callers.
const LIMITS: Limits = Limits {
    head_timeout: HEAD_TIMEOUT,
    request_timeout: Duration::from_secs(10),
    max_connections: 64,
};

/// State the endpoints read.
#[derive(Clone)]
pub struct Admin {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

/// Binds the admin address; the caller learns the real port (for `:0`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, admin: Admin, stop: CancellationToken) {
    let handler = move |request: Request<Incoming>| {
        let answer = admin.answer(&request);
        async move { answer }
    };
    serve_http("admin", listener, LIMITS, stop, handler).await;
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" if self.health.is_alive() => {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            }
            "/healthz" => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "a core loop stopped\n".into(),
            ),
            "/readyz" => match self.health.readiness() {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/json",
                    "{\"ready\":true}\n".into(),
                ),
                Err(why) => {
                    let body = serde_json::json!({ "ready": false, "reason": why.reason() });
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        format!("{body}\n"),
                    )
                }
            },
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// `sqsd healthcheck`: asks a running daemon's `/healthz`; true when it is 200.
pub async fn probe(addr: SocketAddr, path: &str) -> Result<bool, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            addr.port(),
        )
    } else {
        addr
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        stream.read_to_end(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("{target}: no answer within 5s"))?
        .map_err(|e| format!("{target}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    Ok(status == "200")
}
